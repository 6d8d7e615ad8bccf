//! Plain Parquet inputs (predictions, files to score): listing and fetching objects.

use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use url::Url;

use crate::{RunError, one_line};

fn store_err(url: &str, e: object_store::Error) -> RunError {
    RunError::Store {
        url: url.to_string(),
        message: one_line(&e.to_string()),
        source: e,
    }
}

/// The Parquet files a URL names: the file itself (a path ending in `.parquet`), or
/// every `.parquet` object under the folder, in path order; with each file's URL.
pub async fn list_parquet(
    store: &Arc<dyn ObjectStore>,
    url: &Url,
) -> Result<Vec<(Path, String)>, RunError> {
    let path =
        Path::from_url_path(url.path()).map_err(|e| RunError::Usage(format!("`{url}`: {e}")))?;
    if url.path().ends_with(".parquet") {
        return Ok(vec![(path, url.to_string())]);
    }
    let mut files: Vec<Path> = store
        .list(Some(&path))
        .map_ok(|m| m.location)
        .try_filter(|p| futures::future::ready(p.as_ref().ends_with(".parquet")))
        .try_collect()
        .await
        .map_err(|e| store_err(url.as_str(), e))?;
    files.sort();
    if files.is_empty() {
        return Err(RunError::Data {
            context: url.to_string(),
            message: "holds no .parquet file".into(),
            source: None,
        });
    }
    let mut base = url.clone();
    base.set_path("/");
    Ok(files
        .into_iter()
        .map(|p| {
            let u = format!("{}{}", base, p.as_ref());
            (p, u)
        })
        .collect())
}

/// The bytes of one object; `url` names it in errors.
pub async fn fetch_object(
    store: &Arc<dyn ObjectStore>,
    path: &Path,
    url: &str,
) -> Result<Bytes, RunError> {
    let r = store.get(path).await.map_err(|e| store_err(url, e))?;
    r.bytes().await.map_err(|e| store_err(url, e))
}

/// Ranged reads of one Parquet object, for `ParquetRecordBatchStreamBuilder`: a file is
/// decoded batch by batch without ever being held whole (parquet 59 asks readers to
/// implement `AsyncFileReader` themselves; this is its `object_store` example, with the
/// size known up front so the footer is one ranged read on every store).
#[derive(Debug, Clone)]
pub struct ObjectReader {
    store: Arc<dyn ObjectStore>,
    path: Path,
    size: u64,
}

impl ObjectReader {
    /// Heads the object for its size; `url` names it in errors.
    pub async fn open(
        store: &Arc<dyn ObjectStore>,
        path: &Path,
        url: &str,
    ) -> Result<Self, RunError> {
        let size = store.head(path).await.map_err(|e| store_err(url, e))?.size;
        Ok(Self {
            store: store.clone(),
            path: path.clone(),
            size,
        })
    }
}

fn parquet_err(e: object_store::Error) -> parquet::errors::ParquetError {
    parquet::errors::ParquetError::External(Box::new(e))
}

impl parquet::arrow::async_reader::AsyncFileReader for ObjectReader {
    fn get_bytes(
        &mut self,
        range: std::ops::Range<u64>,
    ) -> futures::future::BoxFuture<'_, parquet::errors::Result<Bytes>> {
        Box::pin(async move {
            self.store
                .get_range(&self.path, range)
                .await
                .map_err(parquet_err)
        })
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<std::ops::Range<u64>>,
    ) -> futures::future::BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        Box::pin(async move {
            self.store
                .get_ranges(&self.path, &ranges)
                .await
                .map_err(parquet_err)
        })
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a parquet::arrow::arrow_reader::ArrowReaderOptions>,
    ) -> futures::future::BoxFuture<
        'a,
        parquet::errors::Result<Arc<parquet::file::metadata::ParquetMetaData>>,
    > {
        Box::pin(async move {
            let size = self.size;
            let metadata = parquet::file::metadata::ParquetMetaDataReader::new()
                .with_arrow_reader_options(options)
                .load_and_finish(self, size)
                .await?;
            Ok(Arc::new(metadata))
        })
    }
}
