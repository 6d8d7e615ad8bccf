//! Reading rows for training and prediction: the splits of a verified published run,
//! or plain Parquet files. Each shard is fetched whole and decoded batch by batch,
//! so memory holds one shard's bytes and one batch of rows at a time.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use bytes::Bytes;
use object_store::ObjectStore;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use strata_run::{Destination, Manifest, ShardEntry};
use url::Url;

use crate::TrainError;

/// Rows per decoded batch.
const BATCH_ROWS: usize = 8192;

/// A published run whose every shard matched its manifest when opened.
#[derive(Debug, Clone)]
pub struct VerifiedRun {
    pub run: Destination,
    pub manifest: Manifest,
}

impl VerifiedRun {
    /// Finds the run `url` names (an output root following `_latest`, a run folder or a
    /// manifest URL) and verifies it as `strata shards verify` does: every shard's size,
    /// sha256, rows and stratum counts. Any mismatch is an error.
    pub async fn open(store: Arc<dyn ObjectStore>, url: &Url) -> Result<Self, TrainError> {
        let report = strata_run::verify(store.clone(), url).await?;
        if let Some(first) = report.problems.first() {
            return Err(TrainError::Verification {
                run_url: report.run_url,
                problems: report.problems.len(),
                first: first.clone(),
            });
        }
        let root = Url::parse(&report.run_url)
            .map_err(|e| TrainError::Usage(format!("`{}`: {e}", report.run_url)))?;
        Ok(Self {
            run: Destination::new(store, root),
            manifest: report.manifest,
        })
    }

    /// The shards of `split` in manifest order (by index).
    pub fn shards(&self, split: &str) -> Vec<ShardEntry> {
        let mut v: Vec<ShardEntry> = self
            .manifest
            .shards
            .iter()
            .filter(|s| s.split == split)
            .cloned()
            .collect();
        v.sort_by_key(|s| s.index);
        v
    }

    /// The bytes of one shard.
    pub async fn fetch(&self, shard: &ShardEntry) -> Result<Bytes, TrainError> {
        self.run
            .get(&shard.path)
            .await?
            .ok_or_else(|| TrainError::Data {
                context: self.run.url_of(&shard.path),
                message: "disappeared after verification".into(),
                source: None,
            })
    }

    pub fn url_of(&self, shard: &ShardEntry) -> String {
        self.run.url_of(&shard.path)
    }
}

/// The Arrow schema of a Parquet file.
pub fn schema_of(bytes: Bytes, context: &str) -> Result<SchemaRef, TrainError> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .map_err(|e| TrainError::data(context, e))?;
    Ok(builder.schema().clone())
}

/// Decodes the named columns of a Parquet file, in batches.
pub fn decode(
    bytes: Bytes,
    columns: &[String],
    context: &str,
) -> Result<impl Iterator<Item = Result<RecordBatch, TrainError>>, TrainError> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .map_err(|e| TrainError::data(context, e))?;
    let schema = builder.schema().clone();
    let mut roots = Vec::with_capacity(columns.len());
    for c in columns {
        let i = schema.index_of(c).map_err(|_| TrainError::Column {
            column: c.clone(),
            message: format!("{context} has no such column"),
        })?;
        if !roots.contains(&i) {
            roots.push(i);
        }
    }
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
    let reader = builder
        .with_projection(mask)
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(|e| TrainError::data(context, e))?;
    let context = context.to_string();
    Ok(reader.map(move |b| b.map_err(|e| TrainError::data(&context, e))))
}

/// The Parquet files a plain input URL names (see [`strata_run::list_parquet`]).
pub async fn list_parquet(
    store: &Arc<dyn ObjectStore>,
    url: &Url,
) -> Result<Vec<(object_store::path::Path, String)>, TrainError> {
    Ok(strata_run::list_parquet(store, url).await?)
}

/// The bytes of one object.
pub async fn fetch_object(
    store: &Arc<dyn ObjectStore>,
    path: &object_store::path::Path,
    context: &str,
) -> Result<Bytes, TrainError> {
    Ok(strata_run::fetch_object(store, path, context).await?)
}
