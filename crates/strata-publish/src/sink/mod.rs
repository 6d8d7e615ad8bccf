//! Writes curated rows as stratified Parquet shards, from a stream in no particular order.
//!
//! Within a split of N rows cut into S = ⌈N / shard_rows⌉ shards, each stratum's rows,
//! in the order of a seeded shuffle key, are cut into S consecutive blocks, block k to
//! shard k: ⌊c/S⌋ rows each, plus one for c mod S of them, which start after the
//! previous stratum's (strata in id order). So every shard holds ⌊c/S⌋ or ⌈c/S⌉ rows of
//! each stratum of c rows, and ⌊N/S⌋ or ⌈N/S⌉ rows in all; rows within a shard are in
//! shuffle-key order. Keys are uniform, so shard k's rows of every stratum lie near the
//! k-th slice of the key space.
//!
//! That is a sort by key, done here as an external bucket sort in linear steps over
//! local spill files (Arrow IPC under `$TMPDIR`), so memory stays bounded by a few key
//! ranges and shards whatever the size of the data, and no engine-wide sort is needed:
//! 1. **route**: each input partition sends its rows to key ranges (equal slices of the
//!    64-bit key space, about [`RANGE_ROWS`] rows each) and counts rows per stratum. A
//!    routed row is held compactly, since every byte of it is copied a few times and
//!    held until its range is dealt: its written columns (categorical strings as
//!    numbers into one dictionary per column), its order columns, and one unit number
//!    for its split, stratum, cell and tie (the numbers depend on timing; nothing
//!    written does);
//! 2. **deal and encode**: each range is sorted in memory by key and its rows given to
//!    shards. A row's shard follows from its rank in its stratum, which is the rows of
//!    its stratum in earlier ranges (counted while routing) plus its place in its own
//!    range: so ranges are dealt on every core at once, and only the weight sums run in
//!    key order. The counts also say which range holds each shard's last row: once the
//!    ranges up to it are dealt, the shard is encoded (on the same threads), from its
//!    pieces in key order, as Parquet in fixed chunks of rows counted from its first row
//!    (so bytes never depend on where pieces start), and hashed. Rows of equal key
//!    (rare) are ordered by their other order columns, then by their written values;
//! 3. **upload**: once every row has been dealt (and a declared unique key checked),
//!    the shards encoded so far are uploaded, a few at a time, and each later one as
//!    soon as it is encoded.

use std::collections::BTreeMap;

// per-row counters: a fast hasher (the keys are not attacker-controlled)
use foldhash::{HashMap, HashMapExt};
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, RecordBatch, StringArray, UInt8Array, UInt32Array,
};
use datafusion::arrow::compute::take;
use datafusion::arrow::compute::{cast, concat_batches, take_record_batch};
use datafusion::arrow::datatypes::{
    DataType, Field, Float64Type, Schema, SchemaRef, UInt32Type, UInt64Type,
};
use datafusion::arrow::ipc::reader::FileReader;
use datafusion::arrow::ipc::writer::FileWriter;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::execution::SendableRecordBatchStream;
use futures::StreamExt;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use tokio::task::JoinSet;

use crate::PublishError;
use strata_functions::SlotCache;
use strata_run::{Destination, ShardEntry, StratumCount, sha256_hex};

mod code;
mod deal;
mod encode;
mod layout;
mod pool;
mod route;
mod spill;
mod waiting;

use code::*;
use deal::*;
use encode::*;
use layout::*;
use pool::*;
use route::*;
use spill::*;
use waiting::*;

/// Slots of the routing loops' caches: room for a few hundred units or categories with
/// few collisions.
const CACHE_SLOTS: usize = 1024;
/// Rows handed to the Parquet writer at a time (and so its page-size checks).
const CHUNK_ROWS: usize = 8192;
/// Rows a key range holds on average: the unit of the in-memory sort.
pub const RANGE_ROWS: u64 = 1 << 18;

/// The writer's default memory budget: half the memory available when it starts
/// (Linux `MemAvailable`), or 4 GiB where that cannot be read.
pub fn default_memory_budget() -> usize {
    let available = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        m.lines()
            .find(|l| l.starts_with("MemAvailable:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<usize>().ok())
    });
    available.map_or(4 << 30, |kib| kib.saturating_mul(1024) / 2)
}
/// Rows buffered per range before a spill write, at most.
const SPILL_BATCH_ROWS: usize = 4096;
/// Rows a routing task keeps waiting for spill writes over all its ranges. A waiting
/// row is a slice of the batch it came from, which lives until the last of its ranges
/// writes: with a threshold per range of this over the ranges, a batch lives about
/// this many rows, whatever the number of ranges (so the size of the data).
const SPILL_PENDING_ROWS: usize = 1 << 19;

/// The spill-write threshold of each range when there are `ranges` of them.
fn spill_batch_rows(ranges: u64) -> usize {
    (SPILL_PENDING_ROWS / ranges.max(1) as usize).clamp(256, SPILL_BATCH_ROWS)
}
/// Shards uploading at once.
const UPLOADS_IN_FLIGHT: usize = 4;

/// Names of the columns the sink reads. The helpers among them (`split`, `stratum`,
/// `cell`, `order`, `tie`) steer the sink and are not written; every other column of the
/// stream is.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SinkColumns {
    /// The split, as an index into `split_names` (an integer helper). Rows of a shard
    /// share one split, so the sink writes its name itself: a `split_column` of plain
    /// strings after the stream's written columns.
    pub split: String,
    pub split_names: Vec<String>,
    pub split_column: String,
    /// The row weight, a written column.
    pub weight: String,
    /// Stratum id (UInt64 helper), a key of `ShardSink::strata`.
    pub stratum: String,
    /// A finer id (UInt64 helper) the totals are kept by; may equal `stratum`.
    pub cell: String,
    /// Integer helpers ordering the rows: the first is the shuffle key (uniform over
    /// 64 bits), the others break its ties; rows still tied are ordered by their
    /// written values (rows equal in all of them are interchangeable).
    pub order: Vec<String>,
    /// Optional UInt64 helper: a nonzero id marks rows of a group of identical rows of
    /// which only `ShardSink::trims[id]` are kept (the first in key order).
    pub tie: Option<String>,
    /// Written columns whose values are all distinct (a declared unique id): encoded
    /// without trying a dictionary first, like float columns, and integers as deltas.
    /// With `ShardSink::unique_order`, rows equal in the order columns and in these
    /// fail the write.
    pub distinct: Vec<String>,
    /// Written string columns of few distinct values (group attributes, labels): the
    /// routed rows hold them as numbers into one dictionary per column, a quarter of the
    /// bytes or less, and each shard gets the strings back as it is encoded. (Other
    /// columns named here are held as they are.)
    pub categorical: Vec<String>,
    /// Rows written several times: each input row stands for its copies, and the sink
    /// makes them and their shuffle keys (the first order column, then not in the
    /// stream). `None`: every row is written once, as it comes.
    #[serde(default)]
    pub copies: Option<SinkCopies>,
}

/// How the sink replicates rows (`SinkColumns::copies`): copy `k` of a row (`k` from 0)
/// gets the shuffle key `strata_hash(seed, hashed…, k)`, the value the engine gives it
/// after `unnest(range(0, count))`, so the shards are the bytes they would be had the
/// copies come in the stream, without the engine building and copying them.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SinkCopies {
    /// Integer helper: how many copies of the row to write (0 writes none).
    pub count: String,
    /// Helpers hashed, in order, before the copy number.
    pub hashed: Vec<String>,
    /// The hash's seed (`strata_hash`'s first argument).
    pub seed: u64,
}

impl SinkColumns {
    /// The helper columns: read, never written.
    fn helpers(&self) -> Vec<&str> {
        let mut h = vec![
            self.split.as_str(),
            self.stratum.as_str(),
            self.cell.as_str(),
        ];
        h.extend(self.order.iter().map(String::as_str));
        h.extend(self.tie.as_deref());
        if let Some(c) = &self.copies {
            h.push(c.count.as_str());
            h.extend(c.hashed.iter().map(String::as_str));
        }
        h
    }
}

/// Rows and weights of one (split, stratum) over all its shards.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StratumTotals {
    pub rows: u64,
    pub weight_sum: f64,
    pub weight_sq_sum: f64,
}

/// What the sink wrote.
#[derive(Debug)]
pub struct SinkOutput {
    /// By split name, then shard index.
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
    pub strata: std::collections::HashMap<u64, Vec<Option<String>>>,
    /// Target rows per shard: a split of N rows gets ⌈N / shard_rows⌉ shards.
    pub shard_rows: u64,
    /// About how many rows the stream holds, and how many a key range should hold
    /// ([`RANGE_ROWS`] unless tuning): together they set the number of ranges, which
    /// changes speed and memory, never the output.
    pub expected_rows: u64,
    pub range_rows: u64,
    /// Tie id → rows of that tie group to keep.
    pub trims: std::collections::HashMap<u64, u64>,
    /// Bytes the writer may hold in memory between its steps (about twice the routed
    /// rows); past it, and from the start when 0, rows go to spill files under `$TMPDIR`.
    pub memory_budget: usize,
    /// Where the spill files go (`None`: `$TMPDIR`).
    pub spill_dir: Option<PathBuf>,
    /// The order columns identify a row (a declared unique id went into them): rows
    /// with equal order keys and equal `distinct` values fail the write, before
    /// anything is uploaded.
    pub unique_order: bool,
    /// Worker threads dealing and encoding (the engine's target partitions; 0: every
    /// core).
    pub threads: usize,
}

impl ShardSink {
    /// Writes the rows of `streams` (the partitions of one plan, run concurrently).
    pub async fn write(
        self,
        streams: Vec<SendableRecordBatchStream>,
    ) -> Result<SinkOutput, PublishError> {
        let Some(first) = streams.first() else {
            return Err(PublishError::Data {
                context: "writing shards".into(),
                message: "no input".into(),
                source: None,
            });
        };
        let mut input = compact_schema(&first.schema());
        if self.columns.copies.is_some() {
            // the shuffle key is made per copy: a column after the stream's
            let key = self.columns.order.first().ok_or_else(|| {
                PublishError::Usage("the shard sink needs at least one order column".into())
            })?;
            if input.index_of(key).is_ok() {
                return Err(PublishError::Usage(format!(
                    "the shard sink makes the shuffle key `{key}` of copied rows, and the stream has one"
                )));
            }
            let mut fields: Vec<Field> =
                input.fields().iter().map(|f| f.as_ref().clone()).collect();
            fields.push(Field::new(key, DataType::UInt64, false));
            input = Arc::new(Schema::new_with_metadata(fields, input.metadata().clone()));
        }
        let index_of = |name: &str| {
            input.index_of(name).map_err(|_| PublishError::Data {
                context: "writing shards".into(),
                message: format!("the curated stream has no column `{name}`"),
                source: None,
            })
        };
        // every column but the helpers the sink is told of is written, whatever its
        // name (a source's `__index_level_0__` too)
        let helpers = self.columns.helpers();
        let keep: Vec<usize> = (0..input.fields().len())
            .filter(|&i| !helpers.contains(&input.field(i).name().as_str()))
            .collect();
        let written = input
            .project(&keep)
            .map_err(data_err("projecting the shard schema"))?;
        let mut fields: Vec<Field> = written
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields.push(Field::new(
            &self.columns.split_column,
            DataType::Utf8,
            false,
        ));
        let schema: SchemaRef = Arc::new(Schema::new_with_metadata(
            fields,
            written.metadata().clone(),
        ));
        let order: Vec<usize> = self
            .columns
            .order
            .iter()
            .map(|c| index_of(c))
            .collect::<Result<_, _>>()?;
        if order.is_empty() {
            return Err(PublishError::Usage(
                "the shard sink needs at least one order column".into(),
            ));
        }
        let weight = index_of(&self.columns.weight)?;
        let mut held = keep.clone();
        let mut held_at = |i: usize| match held.iter().position(|&h| h == i) {
            Some(at) => at,
            None => {
                held.push(i);
                held.len() - 1
            }
        };
        let held_order: Vec<usize> = order.iter().map(|&i| held_at(i)).collect();
        let held_weight = held_at(weight);
        let held_distinct: Vec<usize> = self
            .columns
            .distinct
            .iter()
            .filter_map(|c| input.index_of(c).ok())
            .filter_map(|i| keep.iter().position(|&k| k == i))
            .collect();
        let is_string =
            |t: &DataType| matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View);
        let coded: Vec<usize> = (0..keep.len())
            .filter(|&k| {
                self.columns
                    .categorical
                    .contains(input.field(keep[k]).name())
                    && is_string(input.field(keep[k]).data_type())
            })
            .collect();
        let mut held_fields: Vec<Field> = held
            .iter()
            .map(|&i| input.field(i).as_ref().clone())
            .collect();
        for &k in &coded {
            held_fields[k] = held_fields[k].clone().with_data_type(DataType::UInt32);
        }
        held_fields.push(Field::new("__unit", DataType::UInt32, false));
        let layout = Arc::new(Layout {
            key: order[0],
            split: index_of(&self.columns.split)?,
            stratum: index_of(&self.columns.stratum)?,
            cell: index_of(&self.columns.cell)?,
            tie: self.columns.tie.as_deref().map(index_of).transpose()?,
            copies: match &self.columns.copies {
                Some(c) => Some(CopiesLayout {
                    count: index_of(&c.count)?,
                    hashed: c
                        .hashed
                        .iter()
                        .map(|h| index_of(h))
                        .collect::<Result<_, _>>()?,
                    seed: c.seed,
                }),
                None => None,
            },
            held,
            held_schema: Arc::new(Schema::new(held_fields)),
            held_order,
            held_weight,
            held_distinct,
            coded,
            keep,
            split_names: self.columns.split_names.clone(),
            ranges: self.expected_rows.div_ceil(self.range_rows.max(1)).max(1),
        });
        let spill_parent = self.spill_dir.clone().unwrap_or_else(std::env::temp_dir);
        let spill_root = tempfile::Builder::new()
            .prefix("strata-shards-")
            .tempdir_in(&spill_parent)
            .map_err(|e| PublishError::Data {
                context: format!("creating spill files under {}", spill_parent.display()),
                message: e.to_string(),
                source: Some(Box::new(e)),
            })?;
        let budget = Arc::new(Budget {
            limit: self.memory_budget,
            held: std::sync::atomic::AtomicUsize::new(0),
            spilling: std::sync::atomic::AtomicBool::new(self.memory_budget == 0),
        });

        // 1. route
        let started = std::time::Instant::now();
        let mut tasks = JoinSet::new();
        let units = Arc::new(std::sync::Mutex::new(UnitTable::default()));
        let dictionaries: Arc<Vec<std::sync::Mutex<Dictionary>>> =
            Arc::new(layout.coded.iter().map(|_| Default::default()).collect());
        for (p, stream) in streams.into_iter().enumerate() {
            let (layout, dir, budget, units, dictionaries) = (
                layout.clone(),
                spill_root.path().to_path_buf(),
                budget.clone(),
                units.clone(),
                dictionaries.clone(),
            );
            tasks.spawn(async move {
                route(stream, &layout, &dir, &budget, &units, &dictionaries, p).await
            });
        }
        let mut files: BTreeMap<u64, Vec<Held>> = BTreeMap::new();
        let mut by_number: HashMap<u32, BTreeMap<u64, u64>> = HashMap::new();
        while let Some(routed) = tasks.join_next().await {
            let routed = routed.map_err(join_err)??;
            for (range, path) in routed.files {
                files.entry(range).or_default().push(path);
            }
            for ((unit, range), n) in routed.counts {
                *by_number
                    .entry(unit)
                    .or_default()
                    .entry(range as u64)
                    .or_default() += n;
            }
        }
        let unit_keys = std::mem::take(
            &mut units
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .keys,
        );
        let mut decoded: Decoded = vec![None; layout.keep.len()];
        for (&k, dictionary) in layout.coded.iter().zip(dictionaries.iter()) {
            let values = std::mem::take(
                &mut dictionary
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .keys,
            );
            let values: ArrayRef = Arc::new(StringArray::from(values));
            decoded[k] = Some(
                cast(&values, schema.field(k).data_type())
                    .map_err(data_err("decoding a categorical column"))?,
            );
        }
        let counts: Counts = by_number
            .into_iter()
            .map(|(unit, by_range)| {
                let (s, stratum, cell, tie) = unit_keys[unit as usize];
                (
                    (layout.split_names[s].clone(), stratum, cell, tie),
                    by_range,
                )
            })
            .collect();
        tracing::debug!(
            ranges = layout.ranges,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "shard rows routed"
        );
        let plan = self.plan(&counts, layout.ranges, &unit_keys, &layout.split_names);

        // 2. deal every range and encode every shard once its last range is dealt, on
        // every core; weights are summed in key order
        let started = std::time::Instant::now();
        let spilling = budget.spilling.load(std::sync::atomic::Ordering::Relaxed);
        tracing::debug!(spilling, "dealing and encoding shards");
        // encoded shards wait for upload in memory up to a quarter of the budget, then
        // in local files (from the start when spilling)
        let in_memory = if spilling { 0 } else { self.memory_budget / 4 };
        let fault = Fault::from_env()?;
        // the workers block on their queue: they run on threads of their own, off the
        // async runtime, which keeps serving the other tasks (uploads, the engine)
        let sink = Arc::new(self);
        // shards upload while the last ones are still encoding, from the moment every
        // range is dealt (and a declared unique key checked): nothing is uploaded for a
        // write that fails that check
        let (upload, uploads) = tokio::sync::mpsc::unbounded_channel();
        let uploader = {
            let sink = sink.clone();
            tokio::spawn(async move { sink.upload(uploads).await })
        };
        let worked = {
            let (sink, layout, schema) = (sink.clone(), layout.clone(), schema.clone());
            let shard_dir = spill_root.path().to_path_buf();
            tokio::task::spawn_blocking(move || {
                let work = Work {
                    decoded: &decoded,
                    layout: &layout,
                    plan: &plan,
                    sink: &sink,
                    schema: &schema,
                    shard_dir,
                    spilling,
                    encoded_room: std::sync::atomic::AtomicUsize::new(in_memory),
                    fault,
                    upload,
                };
                work.run(files).map(|dealt| (dealt, plan))
            })
            .await
            .map_err(join_err)
            .and_then(|r| r)
        };
        let dealt_at = started.elapsed();
        // the uploader ends once the workers' sender is gone; an upload's own error
        // says more than the workers' "uploads stopped"
        let (shards, uploaded) = uploader.await.map_err(join_err)?;
        let (dealt, plan) = match uploaded.and(worked) {
            Ok(worked) => worked,
            Err(e) => {
                // a shard encoding failed (or an upload) after the first uploads began:
                // what was uploaded goes, as nothing of a failed write may stay
                sink.delete(&shards).await;
                return Err(e);
            }
        };
        if sink.unique_order && dealt.repeated > 0 {
            return Err(PublishError::RepeatedKeys {
                rows: dealt.repeated,
            });
        }
        tracing::debug!(
            elapsed_ms = dealt_at.as_millis() as u64,
            "shards dealt and encoded"
        );
        tracing::debug!(
            elapsed_ms = (started.elapsed() - dealt_at).as_millis() as u64,
            "last shards uploaded"
        );
        let names = &plan.names;
        let totals = dealt
            .totals
            .iter()
            .zip(&plan.cells)
            .filter(|(t, _)| t.rows > 0)
            .map(|(t, (s, cell))| ((names[*s].clone(), *cell), *t))
            .collect();
        Ok(SinkOutput {
            shards,
            totals,
            schema,
        })
    }

    /// Works out every (split, stratum)'s shards and where each range's rows of it start,
    /// from the routing counts. A trimmed group of identical rows keeps its first rows in
    /// key order, so it counts the rows kept of it in each range.
    /// `unit_keys` are the units by number, with split indices into `split_names`.
    fn plan(
        &self,
        counts: &Counts,
        ranges: u64,
        unit_keys: &[RouteUnit],
        split_names: &[String],
    ) -> DealPlan {
        let mut names: Vec<String> = counts.keys().map(|(s, ..)| s.clone()).collect();
        names.sort();
        names.dedup();
        let split_of = |s: &str| names.iter().position(|n| n == s).expect("a counted split");
        let mut kept: BTreeMap<(usize, u64), BTreeMap<u64, u64>> = BTreeMap::new();
        let mut tie_before: Vec<HashMap<u64, u64>> = (0..ranges).map(|_| HashMap::new()).collect();
        let mut units: BTreeMap<(usize, u64, u64), ()> = BTreeMap::new();
        for ((split, stratum, cell, tie), by_range) in counts {
            let s = split_of(split);
            units.insert((s, *stratum, *cell), ());
            let into = kept.entry((s, *stratum)).or_default();
            let keep = if *tie == 0 {
                None
            } else {
                self.trims.get(tie).copied()
            };
            let mut before = 0u64;
            for (&range, &n) in by_range {
                let k = match keep {
                    Some(keep) => {
                        tie_before[range as usize].insert(*tie, before);
                        n.min(keep.saturating_sub(before))
                    }
                    None => n,
                };
                before += n;
                *into.entry(range).or_default() += k;
            }
        }
        let mut slots = Vec::new();
        let mut slot_of: HashMap<(usize, u64), u32> = HashMap::new();
        let mut starts: Vec<Vec<(u32, u64)>> = (0..ranges).map(|_| Vec::new()).collect();
        let (mut shard_base, mut split_shards) = (Vec::new(), Vec::new());
        let (mut n_sums, mut all_shards) = (0usize, 0usize);
        // the last range holding a row of each shard (in one numbering of all shards)
        let mut last_range: Vec<Option<u64>> = Vec::new();
        for s in 0..names.len() {
            let strata: Vec<_> = kept.range((s, 0)..=(s, u64::MAX)).collect();
            let total: u64 = strata
                .iter()
                .map(|(_, by_range)| by_range.values().sum::<u64>())
                .sum();
            let n_shards = total.div_ceil(self.shard_rows.max(1)).max(1);
            shard_base.push(all_shards);
            split_shards.push(n_shards);
            all_shards += n_shards as usize;
            last_range.resize(all_shards, None);
            // strata laid end to end in id order: each one's extra rows go to the shards
            // after the previous one's
            let mut at = 0u64;
            for (&(_, stratum), by_range) in strata {
                let id = slots.len() as u32;
                let rows: u64 = by_range.values().sum();
                let slot = Slot {
                    split: s,
                    stratum,
                    offset: at % n_shards,
                    n_shards,
                    rows,
                    sums_at: n_sums,
                };
                n_sums += n_shards as usize;
                slot_of.insert((s, stratum), id);
                let mut before = 0;
                let mut shard = 0;
                for (&range, &n) in by_range {
                    starts[range as usize].push((id, before));
                    before += n;
                    // shards whose block of this stratum ends in this range
                    while shard < n_shards && slot.block_end(shard) <= before {
                        if slot.block_end(shard) > slot.block_start(shard) {
                            let last = &mut last_range[shard_base[s] + shard as usize];
                            *last = Some(last.map_or(range, |l| l.max(range)));
                        }
                        shard += 1;
                    }
                }
                slots.push(slot);
                at += before;
            }
        }
        let mut completes: Vec<Vec<usize>> = (0..ranges).map(|_| Vec::new()).collect();
        for (g, last) in last_range.iter().enumerate() {
            if let Some(r) = last {
                completes[*r as usize].push(g);
            }
        }
        let mut cells = Vec::new();
        let mut cell_of: HashMap<(usize, u64), u32> = HashMap::new();
        let row_units: HashMap<(usize, u64, u64), RowUnit> = units
            .into_keys()
            .map(|(s, stratum, cell)| {
                let t = *cell_of.entry((s, cell)).or_insert_with(|| {
                    cells.push((s, cell));
                    (cells.len() - 1) as u32
                });
                ((s, stratum, cell), (slot_of[&(s, stratum)], t))
            })
            .collect();
        // every numbered unit was counted, so it has a slot
        let units = unit_keys
            .iter()
            .map(|&(s, stratum, cell, tie)| {
                (row_units[&(split_of(&split_names[s]), stratum, cell)], tie)
            })
            .collect();
        DealPlan {
            names,
            slots,
            units,
            cells,
            shard_base,
            split_shards,
            n_sums,
            starts,
            tie_before,
            completes,
        }
    }

    /// Uploads the encoded shards as the workers hand them over, a few at a time, and
    /// lists them by split and index: every shard handed over (uploaded, or perhaps
    /// not where the uploads failed), and whether all uploads succeeded.
    async fn upload(
        &self,
        mut encoded: tokio::sync::mpsc::UnboundedReceiver<EncodedShard>,
    ) -> (Vec<ShardEntry>, Result<(), PublishError>) {
        let mut uploads: JoinSet<Result<(), PublishError>> = JoinSet::new();
        let mut entries = Vec::new();
        let mut result = Ok(());
        'shards: while let Some(EncodedShard { entry, bytes }) = encoded.recv().await {
            while uploads.len() >= UPLOADS_IN_FLIGHT {
                if let Some(r) = uploads.join_next().await
                    && let Err(e) = r.map_err(join_err).and_then(|r| r)
                {
                    result = Err(e);
                    break 'shards;
                }
            }
            let (dest, rel) = (self.destination.clone(), self.shard_rel(&entry));
            uploads.spawn(async move {
                let bytes = match bytes {
                    Encoded::Memory(b) => b,
                    // a spilled shard is read off the runtime's threads: the engine and
                    // the other uploads keep running while it is read
                    Encoded::File(p) => tokio::task::spawn_blocking(move || {
                        std::fs::read(&p).map(Bytes::from).map_err(spill_err(&p))
                    })
                    .await
                    .map_err(join_err)??,
                };
                Ok(dest.put(&rel, bytes).await?)
            });
            entries.push(entry);
        }
        // (dropping the receiver on a failure stops the workers' hand-overs)
        drop(encoded);
        while let Some(r) = uploads.join_next().await {
            if let Err(e) = r.map_err(join_err).and_then(|r| r)
                && result.is_ok()
            {
                result = Err(e);
            }
        }
        entries.sort_by(|a, b| (&a.split, a.index).cmp(&(&b.split, b.index)));
        (entries, result)
    }

    /// A shard's path under the destination root.
    fn shard_rel(&self, entry: &ShardEntry) -> String {
        format!("{}/{}", self.run_dir, entry.path)
    }

    /// Deletes these shards, as far as the store lets it (a failed write is already
    /// being reported; a shard left behind is overwritten by the next run, and no
    /// manifest ever names it).
    async fn delete(&self, shards: &[ShardEntry]) {
        for entry in shards {
            if let Err(e) = self.destination.delete(&self.shard_rel(entry)).await {
                tracing::warn!(error = %e, "a shard of the failed write was left behind");
            }
        }
    }
}

fn data_err<E: std::error::Error + Send + Sync + 'static>(
    context: &str,
) -> impl FnOnce(E) -> PublishError + '_ {
    move |e| PublishError::Data {
        context: context.to_string(),
        message: crate::one_line(&e.to_string()),
        source: Some(Box::new(e)),
    }
}

fn spill_err<E: std::error::Error + Send + Sync + 'static>(
    path: &Path,
) -> impl FnOnce(E) -> PublishError + '_ {
    move |e| PublishError::Data {
        context: format!("spill file {}", path.display()),
        message: crate::one_line(&e.to_string()),
        source: Some(Box::new(e)),
    }
}

fn join_err(e: tokio::task::JoinError) -> PublishError {
    PublishError::Data {
        context: "writing shards".into(),
        message: e.to_string(),
        source: Some(Box::new(e)),
    }
}

#[cfg(test)]
mod tests;
