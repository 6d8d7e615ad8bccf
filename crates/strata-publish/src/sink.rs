//! Writes a sorted stream of curated rows as Parquet shards.
//!
//! The stream arrives ordered by (split, shard, shuffle key); the sink cuts it where
//! (split, shard) changes, encodes each shard in memory, hashes it and uploads it while
//! the next one is encoded. Rows reach the Parquet writer in fixed chunks counted from
//! the shard's first row, so the bytes never depend on how the engine batched them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::compute::{cast, concat_batches};
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type, SchemaRef, UInt64Type};
use datafusion::execution::SendableRecordBatchStream;
use futures::StreamExt;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use tokio::task::JoinSet;

use crate::destination::Destination;
use crate::manifest::{ShardEntry, StratumCount};
use crate::{PublishError, sha256_hex};

/// Rows handed to the Parquet writer at a time (and so its page-size checks).
const CHUNK_ROWS: usize = 8192;
/// Shards uploading while the next is encoded.
const UPLOADS_IN_FLIGHT: usize = 4;

/// Names of the columns the sink reads. Columns whose names start with `__` are
/// helpers: they steer the sink and are not written.
#[derive(Debug, Clone)]
pub struct SinkColumns {
    /// The split (`train`, `validation`, `test`), a written column.
    pub split: String,
    /// The row weight, a written column.
    pub weight: String,
    /// Shard index within the split (integer helper).
    pub shard: String,
    /// Stratum id (UInt64 helper), a key of `ShardSink::strata`.
    pub stratum: String,
    /// A finer id (UInt64 helper) the totals are kept by; may equal `stratum`.
    pub cell: String,
}

/// Rows and weights of one (split, stratum) over all its shards.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StratumTotals {
    pub rows: u64,
    pub weight_sum: f64,
    pub weight_sq_sum: f64,
}

/// What the sink wrote.
#[derive(Debug)]
pub struct SinkOutput {
    /// In write order: by split as the stream ordered them, then shard index.
    pub shards: Vec<ShardEntry>,
    /// Keyed by (split, cell id).
    pub totals: BTreeMap<(String, u64), StratumTotals>,
    /// The written schema (helpers removed).
    pub schema: SchemaRef,
}

/// Writes shards of one run under `run_dir` of a destination.
#[derive(Debug)]
pub struct ShardSink {
    pub destination: Destination,
    /// The run folder, relative to the destination root.
    pub run_dir: String,
    pub columns: SinkColumns,
    /// Stratum id → its values (one per stratum column, `None` for missing).
    pub strata: HashMap<u64, Vec<Option<String>>>,
}

struct OpenShard {
    split: String,
    index: u64,
    schema: SchemaRef,
    writer: ArrowWriter<Vec<u8>>,
    pending: Vec<RecordBatch>,
    pending_rows: usize,
    rows: u64,
    strata: BTreeMap<u64, (u64, f64)>,
}

impl ShardSink {
    pub async fn write(self, mut stream: SendableRecordBatchStream) -> Result<SinkOutput, PublishError> {
        let input = stream.schema();
        let keep: Vec<usize> = (0..input.fields().len()).filter(|&i| !input.field(i).name().starts_with("__")).collect();
        let schema: SchemaRef = Arc::new(input.project(&keep).map_err(data_err("projecting the shard schema"))?);
        let index_of = |name: &str| {
            input.index_of(name).map_err(|_| PublishError::Data {
                context: "writing shards".into(),
                message: format!("the curated stream has no column `{name}`"),
            })
        };
        let (split_i, weight_i, shard_i, stratum_i, cell_i) = (
            index_of(&self.columns.split)?,
            index_of(&self.columns.weight)?,
            index_of(&self.columns.shard)?,
            index_of(&self.columns.stratum)?,
            index_of(&self.columns.cell)?,
        );

        let mut current: Option<OpenShard> = None;
        let mut shards = Vec::new();
        let mut totals: BTreeMap<(String, u64), StratumTotals> = BTreeMap::new();
        let mut uploads: JoinSet<Result<(), PublishError>> = JoinSet::new();

        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(data_err("computing the curated rows"))?;
            if batch.num_rows() == 0 {
                continue;
            }
            let split = cast(batch.column(split_i), &DataType::Utf8).map_err(data_err("reading the split column"))?;
            let split = split.as_string::<i32>();
            let shard = cast(batch.column(shard_i), &DataType::Int64).map_err(data_err("reading the shard column"))?;
            let shard = shard.as_primitive::<Int64Type>();
            let weight = cast(batch.column(weight_i), &DataType::Float64).map_err(data_err("reading the weight column"))?;
            let weight = weight.as_primitive::<Float64Type>();
            let stratum = batch.column(stratum_i).as_primitive::<UInt64Type>();
            let cell = batch.column(cell_i).as_primitive::<UInt64Type>();
            let data = batch.project(&keep).map_err(data_err("projecting shard rows"))?;

            let mut start = 0;
            while start < batch.num_rows() {
                let (s, k) = (split.value(start), shard.value(start) as u64);
                let mut end = start + 1;
                while end < batch.num_rows() && split.value(end) == s && shard.value(end) as u64 == k {
                    end += 1;
                }
                let same = current.as_ref().is_some_and(|c| c.split == s && c.index == k);
                if !same {
                    if let Some(done) = current.take() {
                        shards.push(self.finish(done, &mut uploads).await?);
                    }
                    current = Some(OpenShard {
                        split: s.to_string(),
                        index: k,
                        schema: schema.clone(),
                        writer: ArrowWriter::try_new(Vec::new(), schema.clone(), Some(writer_properties()))
                            .map_err(data_err("starting a shard"))?,
                        pending: Vec::new(),
                        pending_rows: 0,
                        rows: 0,
                        strata: BTreeMap::new(),
                    });
                }
                let open = current.as_mut().expect("opened above");
                for r in start..end {
                    let w = if weight.is_null(r) { 0.0 } else { weight.value(r) };
                    let e = open.strata.entry(stratum.value(r)).or_default();
                    e.0 += 1;
                    e.1 += w;
                    let t = totals.entry((s.to_string(), cell.value(r))).or_default();
                    t.rows += 1;
                    t.weight_sum += w;
                    t.weight_sq_sum += w * w;
                }
                open.rows += (end - start) as u64;
                open.pending.push(data.slice(start, end - start));
                open.pending_rows += end - start;
                if open.pending_rows >= CHUNK_ROWS {
                    write_chunks(open, &schema, false)?;
                }
                start = end;
            }
        }
        if let Some(done) = current.take() {
            shards.push(self.finish(done, &mut uploads).await?);
        }
        while let Some(r) = uploads.join_next().await {
            r.map_err(|e| PublishError::Data { context: "uploading a shard".into(), message: e.to_string() })??;
        }
        Ok(SinkOutput { shards, totals, schema })
    }

    async fn finish(&self, mut open: OpenShard, uploads: &mut JoinSet<Result<(), PublishError>>) -> Result<ShardEntry, PublishError> {
        let schema = open.schema.clone();
        write_chunks(&mut open, &schema, true)?;
        let bytes = Bytes::from(open.writer.into_inner().map_err(data_err("finishing a shard"))?);
        let path = format!("{}/part-{:05}.parquet", open.split, open.index);
        let mut strata: Vec<StratumCount> = open
            .strata
            .iter()
            .map(|(id, (rows, w))| StratumCount { values: self.strata.get(id).cloned().unwrap_or_default(), rows: *rows, weight_sum: *w })
            .collect();
        strata.sort_by(|a, b| a.values.cmp(&b.values));
        let entry = ShardEntry {
            path: path.clone(),
            split: open.split.clone(),
            index: open.index,
            rows: open.rows,
            bytes: bytes.len() as u64,
            sha256: sha256_hex(&bytes),
            strata,
        };
        while uploads.len() >= UPLOADS_IN_FLIGHT {
            if let Some(r) = uploads.join_next().await {
                r.map_err(|e| PublishError::Data { context: "uploading a shard".into(), message: e.to_string() })??;
            }
        }
        let dest = self.destination.clone();
        let rel = format!("{}/{path}", self.run_dir);
        uploads.spawn(async move { dest.put(&rel, bytes).await });
        tracing::debug!(shard = %entry.path, rows = entry.rows, bytes = entry.bytes, "shard encoded");
        Ok(entry)
    }
}

/// Hands pending rows to the writer in `CHUNK_ROWS` pieces; the remainder waits unless
/// this is the end of the shard.
fn write_chunks(open: &mut OpenShard, schema: &SchemaRef, last: bool) -> Result<(), PublishError> {
    if open.pending.is_empty() {
        return Ok(());
    }
    let all = concat_batches(schema, &open.pending).map_err(data_err("buffering shard rows"))?;
    open.pending.clear();
    let mut at = 0;
    while all.num_rows() - at >= CHUNK_ROWS {
        open.writer.write(&all.slice(at, CHUNK_ROWS)).map_err(data_err("encoding a shard"))?;
        at += CHUNK_ROWS;
    }
    let rest = all.num_rows() - at;
    if rest > 0 {
        if last {
            open.writer.write(&all.slice(at, rest)).map_err(data_err("encoding a shard"))?;
        } else {
            open.pending.push(all.slice(at, rest));
        }
    }
    open.pending_rows = if last { 0 } else { rest };
    Ok(())
}

/// zstd, page statistics and indexes on, a fixed `created_by`: shards are read by
/// engines that prune on statistics, and must hash the same on every machine.
fn writer_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).expect("valid zstd level")))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_created_by(format!("strata {}", env!("CARGO_PKG_VERSION")))
        .build()
}

fn data_err<E: std::fmt::Display>(context: &str) -> impl FnOnce(E) -> PublishError + '_ {
    move |e| PublishError::Data { context: context.to_string(), message: crate::one_line(&e.to_string()) }
}
