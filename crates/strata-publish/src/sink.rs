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
//!    the shards are uploaded, a few at a time.

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
use crate::unit_cache::UnitCache;
use strata_run::{Destination, ShardEntry, StratumCount, sha256_hex};

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
/// Rows buffered per (split, range) before a spill write.
const SPILL_BATCH_ROWS: usize = 4096;
/// Shards uploading at once.
const UPLOADS_IN_FLIGHT: usize = 4;

/// Names of the columns the sink reads. Columns whose names start with `__` are
/// helpers: they steer the sink and are not written.
#[derive(Debug, Clone)]
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
    /// The order columns identify a row (a declared unique id went into them): rows
    /// with equal order keys and equal `distinct` values fail the write, before
    /// anything is uploaded.
    pub unique_order: bool,
}

/// Column positions in the stream, shared by the routing tasks, and in the rows they
/// hold: the written columns, the order columns and the weight (where not written),
/// then the row's unit (a `UInt32` number standing for its split, stratum, cell and tie
/// id, which no longer travel with it).
#[derive(Debug)]
struct Layout {
    /// The shuffle key (the first order column).
    key: usize,
    split: usize,
    stratum: usize,
    cell: usize,
    tie: Option<usize>,
    /// Written columns (no helpers).
    keep: Vec<usize>,
    /// Stream columns the routed rows hold, in order: `keep` first (their unit number
    /// follows, at `held.len()`).
    held: Vec<usize>,
    held_schema: SchemaRef,
    /// Positions in the held rows: the order columns, the weight, and the written
    /// columns named `distinct`.
    held_order: Vec<usize>,
    held_weight: usize,
    held_distinct: Vec<usize>,
    /// Written columns held as numbers into a dictionary (`SinkColumns::categorical`),
    /// by position; the dictionaries are in the same order.
    coded: Vec<usize>,
    /// Split names by split index.
    split_names: Vec<String>,
    ranges: u64,
}

/// What rows are counted by while routing: (split, stratum, cell, tie id).
type UnitKey = (String, u64, u64, u64);
/// Rows per unit and key range.
type Counts = HashMap<UnitKey, BTreeMap<u64, u64>>;
/// A unit as routing sees it: (split index, stratum, cell, tie id).
type RouteUnit = (usize, u64, u64, u64);

/// Keys numbered as first met by any routing task, shared by them: the units a routed
/// row stands for, and the values of a categorical column. (The numbering depends on
/// timing; nothing written does.)
#[derive(Debug)]
struct Numbering<K> {
    ids: HashMap<K, u32>,
    keys: Vec<K>,
}

impl<K> Default for Numbering<K> {
    fn default() -> Self {
        Self {
            ids: HashMap::new(),
            keys: Vec::new(),
        }
    }
}

impl<K: std::hash::Hash + Eq + Clone> Numbering<K> {
    fn id<Q: std::hash::Hash + Eq + ToOwned<Owned = K> + ?Sized>(
        &mut self,
        key: &Q,
    ) -> Result<u32, PublishError>
    where
        K: std::borrow::Borrow<Q>,
    {
        if let Some(&id) = self.ids.get(key) {
            return Ok(id);
        }
        let id = u32::try_from(self.keys.len()).map_err(|_| PublishError::Data {
            context: "writing shards".into(),
            message: "more than 2^32 keys to number".into(),
        })?;
        self.keys.push(key.to_owned());
        self.ids.insert(key.to_owned(), id);
        Ok(id)
    }
}

/// The (split, stratum, cell, tie) units met while routing: a routed row holds its
/// unit's number.
type UnitTable = Numbering<RouteUnit>;
/// The values of one categorical column met while routing.
type Dictionary = Numbering<String>;

/// One spill file being written, with rows waiting to fill a batch.
struct SpillFile {
    writer: FileWriter<BufWriter<File>>,
    pending: Vec<RecordBatch>,
    pending_rows: usize,
}

impl SpillFile {
    fn create(path: &Path, schema: &SchemaRef) -> Result<Self, PublishError> {
        let file = File::create(path).map_err(spill_err(path))?;
        let writer = FileWriter::try_new(BufWriter::new(file), schema).map_err(spill_err(path))?;
        Ok(Self {
            writer,
            pending: Vec::new(),
            pending_rows: 0,
        })
    }

    fn push(&mut self, batch: RecordBatch, path: &Path) -> Result<(), PublishError> {
        self.pending_rows += batch.num_rows();
        self.pending.push(batch);
        if self.pending_rows >= SPILL_BATCH_ROWS {
            self.flush(path)
        } else {
            Ok(())
        }
    }

    fn flush(&mut self, path: &Path) -> Result<(), PublishError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let schema = self.pending[0].schema();
        let batch = concat_batches(&schema, &self.pending).map_err(spill_err(path))?;
        self.pending.clear();
        self.pending_rows = 0;
        self.writer.write(&batch).map_err(spill_err(path))
    }

    fn finish(mut self, path: &Path) -> Result<(), PublishError> {
        self.flush(path)?;
        self.writer.finish().map_err(spill_err(path))
    }
}

/// Rows held between steps: in a spill file, or in memory when the sink may use it.
enum Held {
    File(PathBuf),
    Batches(Vec<RecordBatch>),
}

/// The writer's memory: what routing holds, and whether rows go to files.
struct Budget {
    limit: usize,
    held: std::sync::atomic::AtomicUsize,
    spilling: std::sync::atomic::AtomicBool,
}

/// Where routed rows of one key range go while a partition is routed.
enum RangeOut {
    File(PathBuf, SpillFile),
    Batches(Vec<RecordBatch>),
}

/// Numbers a batch's string column by `dictionary`. Short values (12 bytes or fewer,
/// nearly every category) are found by their 16-byte view alone, through a
/// [`UnitCache`] and then this task's map; the shared dictionary is asked once per
/// value and task.
struct Coder<'a> {
    dictionary: &'a std::sync::Mutex<Dictionary>,
    short: HashMap<u128, u32>,
    long: HashMap<String, u32>,
    cache: UnitCache<u128, u32>,
}

impl<'a> Coder<'a> {
    fn new(dictionary: &'a std::sync::Mutex<Dictionary>) -> Self {
        Self {
            dictionary,
            short: HashMap::new(),
            long: HashMap::new(),
            cache: UnitCache::new(),
        }
    }

    fn code(&mut self, column: &ArrayRef) -> Result<ArrayRef, PublishError> {
        let views = cast(column, &DataType::Utf8View)
            .map_err(data_err("numbering a categorical column"))?;
        let views = views.as_string_view();
        let mut codes = Vec::with_capacity(views.len());
        for (i, &view) in views.views().iter().enumerate() {
            if views.is_null(i) {
                codes.push(0);
                continue;
            }
            if (view as u32) <= 12 {
                let (dictionary, short) = (self.dictionary, &mut self.short);
                let id = self.cache.get(view, |view| match short.get(view) {
                    Some(&id) => Ok(id),
                    None => {
                        let id = dictionary
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .id(views.value(i))?;
                        short.insert(*view, id);
                        Ok::<_, PublishError>(id)
                    }
                })?;
                codes.push(id);
            } else {
                let value = views.value(i);
                let id = match self.long.get(value) {
                    Some(&id) => id,
                    None => {
                        let id = self
                            .dictionary
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .id(value)?;
                        self.long.insert(value.to_string(), id);
                        id
                    }
                };
                codes.push(id);
            }
        }
        Ok(Arc::new(UInt32Array::new(
            codes.into(),
            views.nulls().cloned(),
        )))
    }
}

/// The strings of numbered values, by written column position: the dictionary's values
/// in the column's written type.
type Decoded = Vec<Option<ArrayRef>>;

/// A written column as the shards hold it: numbers decoded to their strings.
fn decode(column: &ArrayRef, values: Option<&ArrayRef>) -> Result<ArrayRef, PublishError> {
    match values {
        Some(values) => take(values, column.as_primitive::<UInt32Type>(), None)
            .map_err(data_err("decoding a categorical column")),
        None => Ok(column.clone()),
    }
}

/// What one routing task wrote: its rows by key range, and its rows per (unit number,
/// range).
struct Routed {
    files: Vec<(u64, Held)>,
    counts: Vec<((u32, u32), u64)>,
}

/// A (split, stratum) and how its rows, in key order, are cut into its shards' blocks.
///
/// Shard `k` takes the `k`-th block: `floor(rows / n_shards)` rows, plus one for the
/// `rows mod n_shards` shards starting at `offset` (cyclically). So each shard holds the
/// same counts as dealing the rows round robin from `offset` would give, and since keys
/// are uniform, shard `k`'s rows of every stratum lie near the `k`-th slice of the key
/// space: a shard is complete once the ranges up to there are dealt.
#[derive(Debug, Clone, Copy)]
struct Slot {
    split: usize,
    stratum: u64,
    offset: u64,
    n_shards: u64,
    /// Rows kept of this (split, stratum).
    rows: u64,
    /// Index of its (shard 0) entry in the per-(slot, shard) sums.
    sums_at: usize,
}

impl Slot {
    /// Rows of this stratum in shards `0..k`: where shard `k`'s block starts.
    fn block_start(&self, k: u64) -> u64 {
        let (s, o) = (self.n_shards, self.offset);
        let r = self.rows % s;
        // shards below k among the `r` taking one more row: [o, o + r) modulo s
        let extra = if o + r <= s {
            k.saturating_sub(o).min(r)
        } else {
            k.saturating_sub(o).min(s - o) + k.min(o + r - s)
        };
        k * (self.rows / s) + extra
    }

    fn block_end(&self, k: u64) -> u64 {
        self.block_start(k + 1)
    }

    /// The shard of the row of rank `rank` (0-based, in key order).
    fn shard_at(&self, rank: u64) -> u64 {
        // the first shard whose block ends after `rank`
        let (mut lo, mut hi) = (0, self.n_shards - 1);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.block_end(mid) > rank {
                hi = mid
            } else {
                lo = mid + 1
            }
        }
        lo
    }
}

/// A row's (slot, index of its (split, cell) totals).
type RowUnit = (u32, u32);

/// Where every row goes, worked out from the routing counts before any range is dealt.
struct DealPlan {
    names: Vec<String>,
    slots: Vec<Slot>,
    /// By unit number: the unit's (slot, index of its (split, cell) totals) and tie id.
    units: Vec<(RowUnit, u64)>,
    /// (split, cell) of each totals index.
    cells: Vec<(usize, u64)>,
    /// First shard index of each split, in one numbering of all shards, and its shards.
    shard_base: Vec<usize>,
    split_shards: Vec<u64>,
    /// Entries of the per-(slot, shard) sums.
    n_sums: usize,
    /// Per range: (slot, rows of the slot dealt in earlier ranges).
    starts: Vec<Vec<(u32, u64)>>,
    /// Per range: (tie id, rows of that tie group in earlier ranges).
    tie_before: Vec<HashMap<u64, u64>>,
    /// Per range: the shards (in one numbering of all shards) whose last row lies in it.
    completes: Vec<Vec<usize>>,
}

impl DealPlan {
    /// (split index, shard) of a shard in the one numbering of all shards.
    fn shard_of(&self, global: usize) -> (usize, u64) {
        let s = self.shard_base.partition_point(|&b| b <= global) - 1;
        (s, (global - self.shard_base[s]) as u64)
    }
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
            });
        };
        let input = compact_schema(&first.schema());
        let index_of = |name: &str| {
            input.index_of(name).map_err(|_| PublishError::Data {
                context: "writing shards".into(),
                message: format!("the curated stream has no column `{name}`"),
            })
        };
        let keep: Vec<usize> = (0..input.fields().len())
            .filter(|&i| !input.field(i).name().starts_with("__"))
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
        let spill_root = tempfile::Builder::new()
            .prefix("strata-shards-")
            .tempdir()
            .map_err(|e| PublishError::Data {
                context: format!(
                    "creating spill files under {}",
                    std::env::temp_dir().display()
                ),
                message: e.to_string(),
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
        let work = Work {
            decoded: &decoded,
            layout: &layout,
            plan: &plan,
            sink: &self,
            schema: &schema,
            shard_dir: spill_root.path().to_path_buf(),
            spilling,
            encoded_room: std::sync::atomic::AtomicUsize::new(in_memory),
        };
        let dealt = work.run(files)?;
        if self.unique_order && dealt.repeated > 0 {
            return Err(PublishError::RepeatedKeys {
                rows: dealt.repeated,
            });
        }
        tracing::debug!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "shards dealt and encoded"
        );
        let names = &plan.names;
        let totals = dealt
            .totals
            .iter()
            .zip(&plan.cells)
            .filter(|(t, _)| t.rows > 0)
            .map(|(t, (s, cell))| ((names[*s].clone(), *cell), *t))
            .collect();

        // 3. upload, once every row has been dealt and checked
        let started = std::time::Instant::now();
        let shards = self.upload(dealt.encoded).await?;
        tracing::debug!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "shards uploaded"
        );
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

    /// Uploads the encoded shards, a few at a time, and lists them by split and index.
    async fn upload(&self, encoded: Vec<EncodedShard>) -> Result<Vec<ShardEntry>, PublishError> {
        let mut uploads: JoinSet<Result<(), PublishError>> = JoinSet::new();
        let mut entries = Vec::with_capacity(encoded.len());
        for EncodedShard { entry, bytes } in encoded {
            let bytes = match bytes {
                Encoded::Memory(b) => b,
                Encoded::File(p) => Bytes::from(std::fs::read(&p).map_err(spill_err(&p))?),
            };
            while uploads.len() >= UPLOADS_IN_FLIGHT {
                if let Some(r) = uploads.join_next().await {
                    r.map_err(join_err)??;
                }
            }
            let dest = self.destination.clone();
            let rel = format!("{}/{}", self.run_dir, entry.path);
            uploads.spawn(async move { Ok(dest.put(&rel, bytes).await?) });
            entries.push(entry);
        }
        while let Some(r) = uploads.join_next().await {
            r.map_err(join_err)??;
        }
        entries.sort_by(|a, b| (&a.split, a.index).cmp(&(&b.split, b.index)));
        Ok(entries)
    }
}

/// An encoded shard, in memory or (when the writer spills) in a local file.
enum Encoded {
    Memory(Bytes),
    File(PathBuf),
}

struct EncodedShard {
    entry: ShardEntry,
    bytes: Encoded,
}

/// A complete shard to encode: its pieces in key order.
struct ShardJob {
    split: String,
    index: u64,
    pieces: Vec<RecordBatch>,
    strata: Vec<StratumCount>,
    /// Bytes of the pieces, released from the held total once encoded.
    held: usize,
}

/// Work for the writer's threads; encoding first, as it releases memory.
enum Job {
    Deal(u64, Vec<Held>),
    Encode(ShardJob),
}

/// What a thread hands back to the coordinating thread.
enum Done {
    Dealt(u64, Result<Option<DealtRange>, PublishError>),
    Encoded(Result<EncodedShard, PublishError>, usize),
}

/// The writer's queue of work, shared by its threads.
struct Queue {
    ranges: BTreeMap<u64, Vec<Held>>,
    shards: std::collections::VecDeque<ShardJob>,
    /// Bytes of dealt pieces not yet encoded, and shards being encoded.
    held: usize,
    encoding: usize,
    closed: bool,
}

/// Dealing and encoding: one pass over the ranges in key order, on every core.
struct Work<'a> {
    decoded: &'a Decoded,
    layout: &'a Layout,
    plan: &'a DealPlan,
    sink: &'a ShardSink,
    schema: &'a SchemaRef,
    /// Where encoded shards wait for upload once `encoded_room` (bytes) is used up.
    shard_dir: PathBuf,
    encoded_room: std::sync::atomic::AtomicUsize,
    /// Routed rows are in spill files: dealt rows waiting for their shard are bounded.
    spilling: bool,
}

/// What dealing and encoding produced.
struct DealtAll {
    /// (rows, weight sum) per (slot, shard), at `Slot::sums_at + shard`.
    sums: Vec<(u64, f64)>,
    /// Per (split, cell) of `DealPlan::cells`.
    totals: Vec<StratumTotals>,
    /// Rows whose order keys equal the previous row's.
    repeated: u64,
    encoded: Vec<EncodedShard>,
}

/// One range, dealt: its rows in (split, shard, key) order, one piece per shard.
struct DealtRange {
    /// (shard in one numbering of all shards, its rows, their share of the range's bytes)
    pieces: Vec<(usize, RecordBatch, usize)>,
    /// Per kept row in key order: (index in the sums, index in the totals, weight).
    rows: Vec<(u32, u32, f64)>,
    repeated: u64,
}

impl Work<'_> {
    /// Deals every range (any order, on every core), adds their sums in range order and
    /// hands each shard to be encoded once the range holding its last row is added.
    /// While the writer spills, dealt pieces waiting for their shard are bounded by a
    /// share of the budget: past it, threads encode before they deal further.
    fn run(&self, files: BTreeMap<u64, Vec<Held>>) -> Result<DealtAll, PublishError> {
        let parallel = std::thread::available_parallelism().map_or(2, |n| n.get());
        let order: Vec<u64> = files.keys().copied().collect();
        let queue = std::sync::Mutex::new(Queue {
            ranges: files,
            shards: Default::default(),
            held: 0,
            encoding: 0,
            closed: false,
        });
        let wake = std::sync::Condvar::new();
        let cap = if self.spilling {
            (self.sink.memory_budget / 4).max(128 << 20)
        } else {
            usize::MAX
        };
        std::thread::scope(|scope| {
            let (tx, rx) = std::sync::mpsc::channel::<Done>();
            for _ in 0..parallel {
                let (tx, queue, wake) = (tx.clone(), &queue, &wake);
                scope.spawn(move || self.worker(queue, wake, cap, tx));
            }
            drop(tx);
            // (a panic here too must still close the queue, or the threads wait forever)
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.coordinate(&order, &queue, &wake, rx)
            }))
            .unwrap_or_else(|_| {
                Err(PublishError::Data {
                    context: "writing shards".into(),
                    message: "the coordinating thread panicked".into(),
                })
            });
            let mut q = queue
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            q.closed = true;
            q.ranges.clear();
            q.shards.clear();
            drop(q);
            wake.notify_all();
            result
        })
    }

    fn worker(
        &self,
        queue: &std::sync::Mutex<Queue>,
        wake: &std::sync::Condvar,
        cap: usize,
        tx: std::sync::mpsc::Sender<Done>,
    ) {
        loop {
            let job = {
                let mut q = queue
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                loop {
                    if q.closed {
                        return;
                    }
                    if let Some(shard) = q.shards.pop_front() {
                        q.encoding += 1;
                        break Job::Encode(shard);
                    }
                    // deal further only while pieces fit, or when nothing else can free them
                    if (q.held <= cap || q.encoding == 0)
                        && let Some((r, inputs)) = q.ranges.pop_first()
                    {
                        break Job::Deal(r, inputs);
                    }
                    q = wake
                        .wait(q)
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                }
            };
            // a panic becomes an error: the other threads wait for work, and the
            // coordinating thread for this job's result, so neither may be left waiting
            let caught = |what: &str, e: Box<dyn std::any::Any + Send>| PublishError::Data {
                context: format!("writing shards ({what})"),
                message: e
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| e.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a thread panicked".into()),
            };
            let done = match job {
                Job::Deal(r, inputs) => {
                    let dealt = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        deal_range(
                            self.layout,
                            self.plan,
                            self.decoded,
                            &self.sink.trims,
                            r,
                            inputs,
                        )
                    }));
                    Done::Dealt(r, dealt.unwrap_or_else(|e| Err(caught("dealing", e))))
                }
                Job::Encode(shard) => {
                    let held = shard.held;
                    let encoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        self.encode_shard(shard)
                    }));
                    Done::Encoded(encoded.unwrap_or_else(|e| Err(caught("encoding", e))), held)
                }
            };
            if tx.send(done).is_err() {
                return;
            }
        }
    }

    /// Takes dealt ranges in key order, adds their sums, queues complete shards.
    fn coordinate(
        &self,
        order: &[u64],
        queue: &std::sync::Mutex<Queue>,
        wake: &std::sync::Condvar,
        rx: std::sync::mpsc::Receiver<Done>,
    ) -> Result<DealtAll, PublishError> {
        let plan = self.plan;
        let mut all = DealtAll {
            sums: vec![(0, 0.0); plan.n_sums],
            totals: vec![StratumTotals::default(); plan.cells.len()],
            repeated: 0,
            encoded: Vec::new(),
        };
        // dealt pieces by shard (in one numbering of all shards), with their bytes
        let mut pieces: HashMap<usize, Vec<(RecordBatch, usize)>> = HashMap::new();
        // a range dealt early waits here until the ranges before it are added
        let mut waiting: BTreeMap<u64, Option<DealtRange>> = BTreeMap::new();
        let mut next = 0;
        let (mut queued, mut encoded) = (0usize, 0usize);
        while next < order.len() || encoded < queued {
            let Ok(done) = rx.recv() else {
                return Err(PublishError::Data {
                    context: "writing shards".into(),
                    message: "the writer's threads stopped".into(),
                });
            };
            let mut released = 0;
            match done {
                Done::Dealt(r, got) => {
                    waiting.insert(r, got?);
                }
                Done::Encoded(got, held) => {
                    all.encoded.push(got?);
                    encoded += 1;
                    released = held;
                }
            }
            let (mut ready, mut added) = (Vec::new(), 0);
            while next < order.len()
                && let Some(d) = waiting.remove(&order[next])
            {
                let range = order[next] as usize;
                next += 1;
                if let Some(d) = d {
                    all.repeated += d.repeated;
                    for (at, cell, w) in d.rows {
                        let s = &mut all.sums[at as usize];
                        s.0 += 1;
                        s.1 += w;
                        let t = &mut all.totals[cell as usize];
                        t.rows += 1;
                        t.weight_sum += w;
                        t.weight_sq_sum += w * w;
                    }
                    for (g, piece, bytes) in d.pieces {
                        added += bytes;
                        pieces.entry(g).or_default().push((piece, bytes));
                    }
                }
                for &g in &plan.completes[range] {
                    ready.push(self.shard_job(g, pieces.remove(&g).unwrap_or_default(), &all.sums));
                }
            }
            queued += ready.len();
            let mut q = queue
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if released > 0 {
                q.held -= released;
                q.encoding -= 1;
            }
            q.held += added;
            q.shards.extend(ready);
            drop(q);
            wake.notify_all();
        }
        // every dealt piece belongs to a shard that was encoded: never drop rows silently
        if !pieces.is_empty() {
            return Err(PublishError::Data {
                context: "writing shards".into(),
                message: format!(
                    "rows of {} shards were dealt after the shard was encoded",
                    pieces.len()
                ),
            });
        }
        Ok(all)
    }

    /// Shard `g` (in one numbering of all shards), complete, with its per-stratum sums.
    fn shard_job(
        &self,
        g: usize,
        pieces: Vec<(RecordBatch, usize)>,
        sums: &[(u64, f64)],
    ) -> ShardJob {
        let plan = self.plan;
        let (s, index) = plan.shard_of(g);
        // slots are laid out split by split
        let split_slots = plan.slots.partition_point(|x| x.split < s)
            ..plan.slots.partition_point(|x| x.split <= s);
        let mut strata: Vec<StratumCount> = plan.slots[split_slots]
            .iter()
            .filter_map(|slot| {
                let (n, w) = sums[slot.sums_at + index as usize];
                (n > 0).then(|| StratumCount {
                    values: self
                        .sink
                        .strata
                        .get(&slot.stratum)
                        .cloned()
                        .unwrap_or_default(),
                    rows: n,
                    weight_sum: w,
                })
            })
            .collect();
        strata.sort_by(|a, b| a.values.cmp(&b.values));
        let held = pieces.iter().map(|(_, b)| b).sum();
        ShardJob {
            split: plan.names[s].clone(),
            index,
            pieces: pieces.into_iter().map(|(p, _)| p).collect(),
            strata,
            held,
        }
    }

    /// Encodes a shard, hashes it, and keeps it for upload (in memory while there is
    /// room, else in a local file).
    fn encode_shard(&self, job: ShardJob) -> Result<EncodedShard, PublishError> {
        let ShardJob {
            split,
            index,
            pieces,
            strata,
            ..
        } = job;
        let bytes = encode(
            self.schema.clone(),
            &pieces,
            self.decoded,
            &split,
            &self.sink.columns.distinct,
        )?;
        let path = format!("{split}/part-{index:05}.parquet");
        let entry = ShardEntry {
            path,
            split,
            index,
            rows: pieces.iter().map(|b| b.num_rows() as u64).sum(),
            bytes: bytes.len() as u64,
            sha256: sha256_hex(&bytes),
            strata,
        };
        tracing::debug!(shard = %entry.path, rows = entry.rows, bytes = entry.bytes, "shard encoded");
        let len = bytes.len();
        let room = self.encoded_room.fetch_update(
            std::sync::atomic::Ordering::Relaxed,
            std::sync::atomic::Ordering::Relaxed,
            |r| r.checked_sub(len),
        );
        let bytes = if room.is_ok() {
            Encoded::Memory(bytes)
        } else {
            let p = self
                .shard_dir
                .join(format!("shard-{}-{index}.parquet", entry.split));
            std::fs::write(&p, &bytes).map_err(spill_err(&p))?;
            Encoded::File(p)
        };
        Ok(EncodedShard { entry, bytes })
    }
}

/// Deals one range: sorts it by key and gives each row the next shard of its (split,
/// stratum), counting from the rows of that stratum in earlier ranges.
fn deal_range(
    layout: &Layout,
    plan: &DealPlan,
    decoded: &Decoded,
    trims: &std::collections::HashMap<u64, u64>,
    range: u64,
    inputs: Vec<Held>,
) -> Result<Option<DealtRange>, PublishError> {
    let Some(Prepared {
        rows,
        perm,
        repeated,
    }) = prepare(layout, decoded, inputs)?
    else {
        return Ok(None);
    };
    let n = rows.num_rows();
    let unit = rows
        .column(layout.held.len())
        .as_primitive::<UInt32Type>()
        .clone();
    if let Some(&u) = unit
        .values()
        .iter()
        .find(|&&u| u as usize >= plan.units.len())
    {
        return Err(PublishError::Data {
            context: "dealing shard rows".into(),
            message: format!("a row of unit {u} was not counted while routing"),
        });
    }
    let weight = cast(rows.column(layout.held_weight), &DataType::Float64)
        .map_err(data_err("reading the weight column"))?;
    let weight = weight.as_primitive::<Float64Type>();
    // per slot: the rank of its next row, its shard, and where that shard's block ends
    let mut next: Vec<u64> = vec![0; plan.slots.len()];
    let mut block: Vec<(u64, u64)> = vec![(0, 0); plan.slots.len()];
    for &(slot, before) in &plan.starts[range as usize] {
        let sl = &plan.slots[slot as usize];
        next[slot as usize] = before;
        let shard = sl.shard_at(before);
        block[slot as usize] = (shard, sl.block_end(shard));
    }
    let mut tie_seen: HashMap<u64, u64> = HashMap::new();
    let all_shards = plan.shard_base.last().copied().unwrap_or(0)
        + plan.split_shards.last().copied().unwrap_or(0) as usize;
    let mut lists: Vec<Vec<u32>> = vec![Vec::new(); all_shards];
    let mut kept: Vec<(u32, u32, f64)> = Vec::with_capacity(n);
    for &(_, i) in &perm {
        let i = i as usize;
        let ((slot, cell), t) = plan.units[unit.value(i) as usize];
        // a trimmed group of identical rows keeps its first rows in key order
        if t != 0
            && let Some(&keep) = trims.get(&t)
        {
            let seen = tie_seen.entry(t).or_default();
            let at = plan.tie_before[range as usize]
                .get(&t)
                .copied()
                .unwrap_or(0)
                + *seen;
            *seen += 1;
            if at >= keep {
                continue;
            }
        }
        let sl = &plan.slots[slot as usize];
        let rank = next[slot as usize];
        next[slot as usize] += 1;
        let (shard, end) = &mut block[slot as usize];
        // past its block: the next nonempty block (the counts make rank < rows)
        while rank >= *end && *shard + 1 < sl.n_shards {
            *shard += 1;
            *end = sl.block_end(*shard);
        }
        let shard = *shard;
        lists[plan.shard_base[sl.split] + shard as usize].push(i as u32);
        let w = if weight.is_null(i) {
            0.0
        } else {
            weight.value(i)
        };
        kept.push(((sl.sums_at + shard as usize) as u32, cell, w));
    }

    // one take (of the written columns only) puts the range in (shard, key) order; each
    // piece is a slice of it, and counts its share of the range's bytes
    let mut order: Vec<u32> = Vec::with_capacity(kept.len());
    let mut bounds: Vec<(usize, usize, usize)> = Vec::new();
    for (g, list) in lists.into_iter().enumerate() {
        if !list.is_empty() {
            bounds.push((g, order.len(), list.len()));
            order.extend(list);
        }
    }
    let written = rows
        .project(&(0..layout.keep.len()).collect::<Vec<_>>())
        .map_err(data_err("dealing shard rows"))?;
    drop(rows);
    let sorted = take_record_batch(&written, &UInt32Array::from(order))
        .map_err(data_err("dealing shard rows"))?;
    drop(written);
    let bytes_per_row = sorted.get_array_memory_size() / sorted.num_rows().max(1);
    let pieces = bounds
        .into_iter()
        .map(|(g, start, len)| (g, sorted.slice(start, len), len * bytes_per_row))
        .collect();
    Ok(Some(DealtRange {
        pieces,
        rows: kept,
        repeated,
    }))
}

/// Step 1 for one input partition: rows to key-range spill files, counted.
async fn route(
    mut stream: SendableRecordBatchStream,
    layout: &Layout,
    dir: &Path,
    budget: &Budget,
    table: &std::sync::Mutex<UnitTable>,
    dictionaries: &[std::sync::Mutex<Dictionary>],
    partition: usize,
) -> Result<Routed, PublishError> {
    use std::sync::atomic::Ordering::Relaxed;
    let mut coders: Vec<Coder> = dictionaries.iter().map(Coder::new).collect();
    // the stream positions of the numbered columns, which `compact` leaves as they are
    let coded_input: Vec<usize> = layout.coded.iter().map(|&k| layout.held[k]).collect();
    let mut open: HashMap<u64, RangeOut> = HashMap::new();
    // bytes this task holds in memory (counted in `budget.held` too)
    let mut mine = 0usize;
    // (split, stratum, cell, tie) → its number (asked of the shared table once per
    // unit); rows counted per (number, range)
    let mut unit_ids: HashMap<RouteUnit, u32> = HashMap::new();
    let mut unit_cache = UnitCache::new();
    let ranges = layout.ranges as usize;
    let mut counts = RangeCounts::Dense(Vec::new());
    let mut counted_units = 0usize;
    let mut range_of: Vec<u32> = Vec::new();
    let mut unit_of: Vec<u32> = Vec::new();
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(data_err("computing the curated rows"))?;
        if batch.num_rows() == 0 {
            continue;
        }
        let original = batch;
        let batch = compact(&original, &coded_input)?;
        let n = batch.num_rows();
        let split = split_column(&batch, layout)?;
        let key = u64_column(&batch, layout.key)?;
        let stratum = u64_column(&batch, layout.stratum)?;
        let cell = u64_column(&batch, layout.cell)?;
        let tie = layout.tie.map(|i| u64_column(&batch, i)).transpose()?;
        range_of.clear();
        for r in 0..n {
            let range = ((key.value(r) as u128 * layout.ranges as u128) >> 64) as u32;
            range_of.push(range);
            let s = split.value(r) as usize;
            let k = (
                s,
                stratum.value(r),
                cell.value(r),
                tie.as_ref().map_or(0, |t| t.value(r)),
            );
            let id = unit_cache.get(k, |k| match unit_ids.get(k) {
                Some(&id) => Ok(id),
                None => {
                    let id = table
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .id(k)?;
                    unit_ids.insert(*k, id);
                    Ok::<_, PublishError>(id)
                }
            })?;
            if id as usize >= counted_units {
                counted_units = id as usize + 1;
                counts.grow(counted_units, ranges);
            }
            counts.add(id, range, ranges);
            unit_of.push(id);
        }
        // the rows keep their written columns, order columns and weight, and their unit
        // number in place of the split, stratum, cell and tie
        let mut held: Vec<ArrayRef> = layout
            .held
            .iter()
            .map(|&i| batch.column(i).clone())
            .collect();
        for (&k, coder) in layout.coded.iter().zip(&mut coders) {
            held[k] = coder.code(original.column(layout.held[k]))?;
        }
        held.push(Arc::new(UInt32Array::from(std::mem::take(&mut unit_of))));
        let batch = RecordBatch::try_new(layout.held_schema.clone(), held)
            .map_err(data_err("routing shard rows"))?;
        // one take puts the batch in range order (stable: a counting sort when ranges
        // are few, else a sort); each range gets a zero-copy slice
        let mut order: Vec<u32> = (0..n as u32).collect();
        if (layout.ranges as usize) <= 4 * n {
            let mut at = vec![0u32; layout.ranges as usize + 1];
            for &g in &range_of {
                at[g as usize + 1] += 1;
            }
            for g in 1..at.len() {
                at[g] += at[g - 1];
            }
            for (r, &g) in range_of.iter().enumerate() {
                order[at[g as usize] as usize] = r as u32;
                at[g as usize] += 1;
            }
        } else {
            order.sort_by_key(|&r| range_of[r as usize]);
        }
        let mut bounds: Vec<(u64, usize, usize)> = Vec::new();
        for (i, &r) in order.iter().enumerate() {
            let g = range_of[r as usize] as u64;
            match bounds.last_mut() {
                Some((last, _, len)) if *last == g => *len += 1,
                _ => bounds.push((g, i, 1)),
            }
        }
        let sorted = if bounds.len() == 1 {
            batch.clone()
        } else {
            take_record_batch(&batch, &UInt32Array::from(order))
                .map_err(data_err("routing shard rows"))?
        };
        // past the budget (by this task or another), what is held goes to files and so
        // does everything after it
        if !budget.spilling.load(Relaxed) {
            let size = sorted.get_array_memory_size();
            mine += size;
            let held = budget.held.fetch_add(size, Relaxed) + size;
            if held.saturating_mul(2) > budget.limit {
                budget.spilling.store(true, Relaxed);
            }
        }
        let spilling = budget.spilling.load(Relaxed);
        if spilling && mine > 0 {
            for (range, out) in open.iter_mut() {
                if let RangeOut::Batches(batches) = out {
                    let path = dir.join(format!("routed-{range}-{partition}.arrow"));
                    let mut file = SpillFile::create(&path, &layout.held_schema)?;
                    for b in batches.drain(..) {
                        file.push(b, &path)?;
                    }
                    *out = RangeOut::File(path, file);
                }
            }
            budget.held.fetch_sub(mine, Relaxed);
            mine = 0;
        }
        for (range, start, len) in bounds {
            let part = sorted.slice(start, len);
            let out = match open.entry(range) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => v.insert(if spilling {
                    let path = dir.join(format!("routed-{range}-{partition}.arrow"));
                    let file = SpillFile::create(&path, &layout.held_schema)?;
                    RangeOut::File(path, file)
                } else {
                    RangeOut::Batches(Vec::new())
                }),
            };
            match out {
                RangeOut::File(path, file) => file.push(part, path)?,
                RangeOut::Batches(batches) => batches.push(part),
            }
        }
    }
    let counts = counts.into_entries(ranges);
    let mut files = Vec::new();
    for (range, out) in open {
        files.push((
            range,
            match out {
                RangeOut::File(path, file) => {
                    file.finish(&path)?;
                    Held::File(path)
                }
                RangeOut::Batches(batches) => Held::Batches(batches),
            },
        ));
    }
    Ok(Routed { files, counts })
}

/// Rows per (unit, range) while routing: a dense table (one add per row, no hashing)
/// while units × ranges stays small, a map past that.
enum RangeCounts {
    Dense(Vec<u64>),
    Sparse(HashMap<(u32, u32), u64>),
}

/// Entries past which the dense table gives way to a map (32 MiB of counters).
const DENSE_COUNTS: usize = 1 << 22;

impl RangeCounts {
    /// Room for `units` units.
    fn grow(&mut self, units: usize, ranges: usize) {
        if let RangeCounts::Dense(dense) = self {
            if units * ranges <= DENSE_COUNTS {
                dense.resize(units * ranges, 0);
            } else {
                let entries = std::mem::take(dense)
                    .into_iter()
                    .enumerate()
                    .filter(|(_, n)| *n > 0);
                *self = RangeCounts::Sparse(
                    entries
                        .map(|(i, n)| (((i / ranges) as u32, (i % ranges) as u32), n))
                        .collect(),
                );
            }
        }
    }

    #[inline]
    fn add(&mut self, unit: u32, range: u32, ranges: usize) {
        match self {
            RangeCounts::Dense(dense) => dense[unit as usize * ranges + range as usize] += 1,
            RangeCounts::Sparse(map) => *map.entry((unit, range)).or_default() += 1,
        }
    }

    /// ((unit, range), rows) for every nonzero count.
    fn into_entries(self, ranges: usize) -> Vec<((u32, u32), u64)> {
        match self {
            RangeCounts::Dense(dense) => dense
                .into_iter()
                .enumerate()
                .filter(|(_, n)| *n > 0)
                .map(|(i, n)| (((i / ranges) as u32, (i % ranges) as u32), n))
                .collect(),
            RangeCounts::Sparse(map) => map.into_iter().collect(),
        }
    }
}

/// A range read back and sorted by key, ready to deal.
struct Prepared {
    rows: RecordBatch,
    perm: Vec<(u64, u32)>,
    /// Rows whose order keys equal the previous row's.
    repeated: u64,
}

/// Reads a range back (its routed pieces) and sorts it by the order columns.
fn prepare(
    layout: &Layout,
    decoded: &Decoded,
    inputs: Vec<Held>,
) -> Result<Option<Prepared>, PublishError> {
    let mut batches = Vec::new();
    for input in inputs {
        match input {
            Held::File(path) => {
                let file = File::open(&path).map_err(spill_err(&path))?;
                for b in FileReader::try_new_buffered(file, None).map_err(spill_err(&path))? {
                    batches.push(b.map_err(spill_err(&path))?);
                }
                // removed in the background: unlinking a file still being written
                // back to disk can block for a while
                std::thread::spawn(move || std::fs::remove_file(path));
            }
            Held::Batches(b) => batches.extend(b),
        }
    }
    let Some(first) = batches.first() else {
        return Ok(None);
    };
    let rows =
        concat_batches(&first.schema(), &batches).map_err(data_err("reading spilled rows"))?;
    drop(batches);

    // sort by the shuffle key; its ties are rare, so only they are compared further
    let mut repeated = 0u64;
    let key = u64_column(&rows, layout.held_order[0])?;
    let mut perm: Vec<(u64, u32)> = key
        .values()
        .iter()
        .enumerate()
        .map(|(i, &k)| (k, i as u32))
        .collect();
    perm.sort_unstable();
    let mut start = 0;
    while start < perm.len() {
        let mut end = start + 1;
        while end < perm.len() && perm[end].0 == perm[start].0 {
            end += 1;
        }
        if end - start > 1 {
            repeated += order_ties(&rows, layout, decoded, &mut perm[start..end])?;
        }
        start = end;
    }

    Ok(Some(Prepared {
        rows,
        perm,
        repeated,
    }))
}

/// Orders rows of equal shuffle key by the other order columns, then by their written
/// values, so their order never depends on where they were read (rows equal in all of
/// these are interchangeable: they write the same bytes). Returns the rows equal to the
/// previous one in the order columns and the `distinct` columns.
fn order_ties(
    rows: &RecordBatch,
    layout: &Layout,
    decoded: &Decoded,
    tied: &mut [(u64, u32)],
) -> Result<u64, PublishError> {
    let at = UInt32Array::from_iter_values(tied.iter().map(|t| t.1));
    let pick = |columns: &mut dyn Iterator<Item = usize>| -> Result<Option<datafusion::arrow::row::Rows>, PublishError> {
        // values as written (numbered strings decoded); columns the row format cannot
        // hold are left out of the comparison
        let mut taken = Vec::new();
        for c in columns {
            let column = take(rows.column(c), &at, None).map_err(data_err("ordering rows of equal keys"))?;
            let column = decode(&column, decoded.get(c).and_then(Option::as_ref))?;
            if RowConverter::supports_fields(&[SortField::new(column.data_type().clone())]) {
                taken.push(column);
            }
        }
        let columns = taken;
        if columns.is_empty() {
            return Ok(None);
        }
        let converter = RowConverter::new(columns.iter().map(|c| SortField::new(c.data_type().clone())).collect())
            .map_err(data_err("ordering rows of equal keys"))?;
        converter.convert_columns(&columns).map(Some).map_err(data_err("ordering rows of equal keys"))
    };
    let order = pick(&mut layout.held_order[1..].iter().copied())?;
    let written = pick(&mut (0..layout.keep.len()))?;
    let distinct = pick(&mut layout.held_distinct.iter().copied())?;
    let same = |rows: &Option<datafusion::arrow::row::Rows>, a: usize, b: usize| {
        rows.as_ref().is_none_or(|r| r.row(a) == r.row(b))
    };
    let mut local: Vec<usize> = (0..tied.len()).collect();
    local.sort_by(|&a, &b| {
        let by = |rows: &Option<datafusion::arrow::row::Rows>| {
            rows.as_ref()
                .map_or(std::cmp::Ordering::Equal, |r| r.row(a).cmp(&r.row(b)))
        };
        by(&order)
            .then_with(|| by(&written))
            .then_with(|| tied[a].1.cmp(&tied[b].1))
    });
    let repeated = local
        .windows(2)
        .filter(|w| same(&order, w[0], w[1]) && same(&distinct, w[0], w[1]))
        .count() as u64;
    let sorted: Vec<(u64, u32)> = local.iter().map(|&i| tied[i]).collect();
    tied.copy_from_slice(&sorted);
    Ok(repeated)
}

/// String and binary views become plain arrays: a view array slice or `take` keeps
/// its parent's whole data buffers, which a spill file would copy for every piece.
fn compact_type(t: &DataType) -> DataType {
    match t {
        DataType::Utf8View => DataType::Utf8,
        DataType::BinaryView => DataType::Binary,
        t => t.clone(),
    }
}

fn compact_schema(schema: &SchemaRef) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| {
            f.as_ref()
                .clone()
                .with_data_type(compact_type(f.data_type()))
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// The batch with its views made plain, but for the columns at `skip` (numbered
/// instead), which keep their type; the returned batch carries its own schema.
fn compact(batch: &RecordBatch, skip: &[usize]) -> Result<RecordBatch, PublishError> {
    let fields = batch.schema().fields().clone();
    if !fields
        .iter()
        .enumerate()
        .any(|(i, f)| !skip.contains(&i) && compact_type(f.data_type()) != *f.data_type())
    {
        return Ok(batch.clone());
    }
    let mut columns = Vec::with_capacity(fields.len());
    let mut compacted = Vec::with_capacity(fields.len());
    for (i, (c, f)) in batch.columns().iter().zip(fields.iter()).enumerate() {
        let t = if skip.contains(&i) {
            f.data_type().clone()
        } else {
            compact_type(f.data_type())
        };
        columns.push(cast(c, &t).map_err(data_err("reading the curated rows"))?);
        compacted.push(f.as_ref().clone().with_data_type(t));
    }
    let schema = Arc::new(Schema::new_with_metadata(
        compacted,
        batch.schema().metadata().clone(),
    ));
    RecordBatch::try_new(schema, columns).map_err(data_err("reading the curated rows"))
}

/// The split index of each row, checked against the split names.
fn split_column(batch: &RecordBatch, layout: &Layout) -> Result<UInt8Array, PublishError> {
    let a = cast(batch.column(layout.split), &DataType::UInt8)
        .map_err(data_err("reading the split column"))?;
    let a = a
        .as_primitive::<datafusion::arrow::datatypes::UInt8Type>()
        .clone();
    if a.null_count() > 0
        || a.values()
            .iter()
            .any(|&s| s as usize >= layout.split_names.len())
    {
        return Err(PublishError::Data {
            context: "writing shards".into(),
            message: format!(
                "the split column holds values outside 0..{}",
                layout.split_names.len()
            ),
        });
    }
    Ok(a)
}

fn u64_column(
    batch: &RecordBatch,
    i: usize,
) -> Result<datafusion::arrow::array::UInt64Array, PublishError> {
    let name = batch.schema().field(i).name().clone();
    let a = cast(batch.column(i), &DataType::UInt64).map_err(|e| PublishError::Data {
        context: "writing shards".into(),
        message: format!("column `{name}` is not an unsigned integer: {e}"),
    })?;
    Ok(a.as_primitive::<UInt64Type>().clone())
}

/// Encodes one shard of split `split` from its pieces (the written columns but the
/// split's): rows reach the writer in `CHUNK_ROWS` chunks counted from its first row, so
/// the bytes never depend on where pieces start.
fn encode(
    schema: SchemaRef,
    pieces: &[RecordBatch],
    decoded: &Decoded,
    split: &str,
    distinct: &[String],
) -> Result<Bytes, PublishError> {
    let props = writer_properties(&schema, distinct);
    let mut writer = ArrowWriter::try_new(Vec::new(), schema.clone(), Some(props))
        .map_err(data_err("starting a shard"))?;
    let split_values: ArrayRef = Arc::new(StringArray::from(vec![split; CHUNK_ROWS]));
    let mut chunk: Vec<RecordBatch> = Vec::new();
    let mut chunk_rows = 0;
    let mut write = |chunk: &mut Vec<RecordBatch>| {
        let mut columns: Vec<ArrayRef> = match chunk.as_slice() {
            [one] => one.columns().to_vec(),
            _ => concat_batches(&chunk[0].schema(), chunk.iter())
                .map_err(data_err("gathering a shard"))?
                .columns()
                .to_vec(),
        };
        let n = chunk.iter().map(|b| b.num_rows()).sum();
        chunk.clear();
        for (column, values) in columns.iter_mut().zip(decoded) {
            if values.is_some() {
                *column = decode(column, values.as_ref())?;
            }
        }
        columns.push(split_values.slice(0, n));
        let rows =
            RecordBatch::try_new(schema.clone(), columns).map_err(data_err("gathering a shard"))?;
        writer.write(&rows).map_err(data_err("encoding a shard"))
    };
    for piece in pieces {
        let mut at = 0;
        while at < piece.num_rows() {
            let n = (CHUNK_ROWS - chunk_rows).min(piece.num_rows() - at);
            chunk.push(piece.slice(at, n));
            chunk_rows += n;
            at += n;
            if chunk_rows == CHUNK_ROWS {
                write(&mut chunk)?;
                chunk_rows = 0;
            }
        }
    }
    if chunk_rows > 0 {
        write(&mut chunk)?;
    }
    Ok(Bytes::from(
        writer.into_inner().map_err(data_err("finishing a shard"))?,
    ))
}

/// zstd, page statistics and indexes on, a fixed `created_by`: shards are read by
/// engines that prune on statistics, and must hash the same on every machine. Float
/// columns (weights, scores) are nearly always distinct, and `distinct` columns are: no
/// dictionary attempt for them (it would fill a dictionary page, then fall back).
/// Distinct integers (ids) are written as deltas (`DELTA_BINARY_PACKED`): in shuffled
/// order each delta takes about the bits of the ids' span, a little less than zstd
/// makes of them plain, at a fifth of the time.
fn writer_properties(schema: &SchemaRef, distinct: &[String]) -> WriterProperties {
    let mut builder = WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(3).expect("valid zstd level"),
        ))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_created_by(format!("strata {}", env!("CARGO_PKG_VERSION")));
    for f in schema.fields() {
        if f.data_type().is_floating() || distinct.contains(f.name()) {
            builder =
                builder.set_column_dictionary_enabled(ColumnPath::from(f.name().as_str()), false);
        }
        if f.data_type().is_integer() && distinct.contains(f.name()) {
            builder = builder.set_column_encoding(
                ColumnPath::from(f.name().as_str()),
                Encoding::DELTA_BINARY_PACKED,
            );
        }
    }
    builder.build()
}

fn data_err<E: std::fmt::Display>(context: &str) -> impl FnOnce(E) -> PublishError + '_ {
    move |e| PublishError::Data {
        context: context.to_string(),
        message: crate::one_line(&e.to_string()),
    }
}

fn spill_err<E: std::fmt::Display>(path: &Path) -> impl FnOnce(E) -> PublishError + '_ {
    move |e| PublishError::Data {
        context: format!("spill file {}", path.display()),
        message: crate::one_line(&e.to_string()),
    }
}

fn join_err(e: tokio::task::JoinError) -> PublishError {
    PublishError::Data {
        context: "writing shards".into(),
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Blocks hold the counts round robin from `offset` would give, cover every rank once
    /// in shard order, and `shard_at` finds each rank's block.
    #[test]
    fn blocks_hold_round_robin_counts() {
        for n_shards in [1u64, 2, 3, 7, 32] {
            for rows in [0u64, 1, 5, 31, 32, 33, 100, 1000] {
                for offset in 0..n_shards {
                    let slot = Slot {
                        split: 0,
                        stratum: 0,
                        offset,
                        n_shards,
                        rows,
                        sums_at: 0,
                    };
                    let mut round_robin = vec![0u64; n_shards as usize];
                    for j in 0..rows {
                        round_robin[((offset + j) % n_shards) as usize] += 1;
                    }
                    let mut next = 0;
                    for k in 0..n_shards {
                        let case = (n_shards, rows, offset, k);
                        assert_eq!(slot.block_start(k), next, "{case:?}");
                        assert_eq!(
                            slot.block_end(k) - slot.block_start(k),
                            round_robin[k as usize],
                            "{case:?}"
                        );
                        for rank in slot.block_start(k)..slot.block_end(k) {
                            assert_eq!(slot.shard_at(rank), k, "{case:?} rank {rank}");
                        }
                        next = slot.block_end(k);
                    }
                    assert_eq!(next, rows);
                }
            }
        }
    }

    /// Names numbered in an order that is not theirs.
    const NAMES: [&str; 5] = ["x", "c", "a", "b", "z"];

    /// Held rows of (id, name, shuffle key, unit), as routing keeps them: the id is the
    /// `distinct` column, the name is numbered by [`NAMES`].
    fn held_rows(rows: &[(i64, &str, u64)]) -> (Layout, RecordBatch) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::UInt32, false),
            Field::new("__u", DataType::UInt64, false),
            Field::new("__unit", DataType::UInt32, false),
        ]));
        let layout = Layout {
            key: 2,
            split: 0,
            stratum: 0,
            cell: 0,
            tie: None,
            keep: vec![0, 1],
            held: vec![0, 1, 2],
            held_schema: schema.clone(),
            held_order: vec![2],
            held_weight: 0,
            held_distinct: vec![0],
            coded: vec![1],
            split_names: vec!["train".into()],
            ranges: 1,
        };
        let columns: Vec<ArrayRef> = vec![
            Arc::new(datafusion::arrow::array::Int64Array::from_iter_values(
                rows.iter().map(|r| r.0),
            )),
            Arc::new(UInt32Array::from_iter_values(
                rows.iter()
                    .map(|r| NAMES.iter().position(|n| *n == r.1).unwrap() as u32),
            )),
            Arc::new(datafusion::arrow::array::UInt64Array::from_iter_values(
                rows.iter().map(|r| r.2),
            )),
            Arc::new(UInt32Array::from(vec![0; rows.len()])),
        ];
        (layout, RecordBatch::try_new(schema, columns).unwrap())
    }

    /// Rows of equal shuffle key come out in the order of their written values (numbered
    /// strings by the strings), wherever they were read; rows repeating a `distinct`
    /// value are counted.
    #[test]
    fn ties_of_the_shuffle_key_follow_the_written_values() {
        let rows = [
            (3, "b", 5),
            (1, "a", 5),
            (9, "z", 7),
            (2, "c", 5),
            (1, "a", 5),
            (4, "a", 1),
            (1, "x", 5),
        ];
        let want = vec![
            (4, "a".to_string()),
            (1, "a".into()),
            (1, "a".into()),
            (1, "x".into()),
            (2, "c".into()),
            (3, "b".into()),
            (9, "z".into()),
        ];
        for rotate in 0..rows.len() {
            let mut input = rows.to_vec();
            input.rotate_left(rotate);
            input.swap(0, rotate / 2);
            let (layout, batch) = held_rows(&input);
            let decoded: Decoded = vec![None, Some(Arc::new(StringArray::from(NAMES.to_vec())))];
            let Prepared {
                rows: held,
                perm,
                repeated,
            } = prepare(&layout, &decoded, vec![Held::Batches(vec![batch])])
                .unwrap()
                .unwrap();
            let ids = held
                .column(0)
                .as_primitive::<datafusion::arrow::datatypes::Int64Type>();
            let names = decode(held.column(1), decoded[1].as_ref()).unwrap();
            let names = names.as_string::<i32>();
            let got: Vec<(i64, String)> = perm
                .iter()
                .map(|&(_, i)| (ids.value(i as usize), names.value(i as usize).to_string()))
                .collect();
            assert_eq!(got, want, "input order {input:?}");
            // id 1 three times at key 5: two repeats
            assert_eq!(repeated, 2, "input order {input:?}");
        }
    }

    /// Two routing tasks number one column through a shared dictionary: short and long
    /// values, the empty string and nulls, more values than the cache has slots; the
    /// numbers decode back to the very column.
    #[test]
    fn numbered_strings_decode_to_themselves() {
        let dictionary = std::sync::Mutex::new(Dictionary::default());
        let values: Vec<Option<String>> = (0..500)
            .map(|i| match i % 7 {
                0 => None,
                1 => Some(String::new()),
                2 => Some(format!("a value longer than twelve bytes {}", i % 90)),
                _ => Some(format!("v{}", i % 150)),
            })
            .collect();
        let mut coders = [Coder::new(&dictionary), Coder::new(&dictionary)];
        for (task, half) in [
            (0, &values[..250]),
            (1, &values[250..]),
            (0, &values[100..400]),
        ] {
            let coder = &mut coders[task];
            for view in [true, false] {
                let plain: ArrayRef = Arc::new(StringArray::from(half.to_vec()));
                let column = if view {
                    cast(&plain, &DataType::Utf8View).unwrap()
                } else {
                    plain.clone()
                };
                let codes = coder.code(&column).unwrap();
                let strings: ArrayRef =
                    Arc::new(StringArray::from(dictionary.lock().unwrap().keys.clone()));
                assert_eq!(
                    decode(&codes, Some(&strings)).unwrap().as_ref(),
                    plain.as_ref()
                );
            }
        }
        // one number per distinct value, whichever task met it first
        let distinct: std::collections::HashSet<&String> = values.iter().flatten().collect();
        assert_eq!(dictionary.lock().unwrap().keys.len(), distinct.len());
    }

    /// Counts survive the switch from the dense table to the map.
    #[test]
    fn range_counts_switch_to_a_map_without_losing_counts() {
        let ranges = 1 << 20;
        let mut counts = RangeCounts::Dense(Vec::new());
        let mut want: BTreeMap<(u32, u32), u64> = BTreeMap::new();
        for unit in 0..6u32 {
            counts.grow(unit as usize + 1, ranges);
            for range in [0u32, 7, unit * 1000, (ranges - 1) as u32, 7] {
                counts.add(unit, range, ranges);
                *want.entry((unit, range)).or_default() += 1;
            }
            // past 4 units of 2^20 ranges the table would exceed DENSE_COUNTS
            assert_eq!(
                matches!(counts, RangeCounts::Sparse(_)),
                (unit as usize + 1) * ranges > DENSE_COUNTS,
                "unit {unit}"
            );
        }
        let got: BTreeMap<(u32, u32), u64> = counts.into_entries(ranges).into_iter().collect();
        assert_eq!(got, want);
    }
}
