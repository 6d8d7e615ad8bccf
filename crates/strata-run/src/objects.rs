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
