//! Writes curated rows as stratified Parquet shards, from a stream in no particular order.
//!
//! Within a split of N rows cut into S = ⌈N / shard_rows⌉ shards, the strata are laid
//! end to end in id order and each stratum's rows are dealt round robin in the order of
//! a seeded shuffle key, starting at the shard where the previous stratum stopped. So
//! every shard holds ⌊c/S⌋ or ⌈c/S⌉ rows of each stratum of c rows, and ⌊N/S⌋ or ⌈N/S⌉
//! rows in all; rows within a shard are in shuffle-key order.
//!
//! Dealing in key order is a sort by key, done here as an external bucket sort in three
//! linear steps over local spill files (Arrow IPC under `$TMPDIR`), so memory stays
//! bounded by a key range and a few shards whatever the size of the data, and no
//! engine-wide sort is needed:
//! 1. **route**: each input partition sends its rows to key ranges (equal slices of the
//!    64-bit key space, about [`RANGE_ROWS`] rows each) and counts rows per stratum;
//! 2. **deal**: range by range in key order, rows are sorted in memory by key and dealt
//!    to shards, then written back grouped by shard;
//! 3. **encode**: shard by shard, its pieces (one per range, already in key order) are
//!    concatenated, encoded as Parquet in fixed chunks of rows counted from the shard's
//!    first row (so bytes never depend on batch boundaries), hashed and uploaded, with
//!    one shard encoding per core.

use std::collections::BTreeMap;

// per-row counters: a fast hasher (the keys are not attacker-controlled)
use foldhash::{HashMap, HashMapExt};
use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::array::{Array, AsArray, RecordBatch, UInt32Array};
use datafusion::arrow::compute::{cast, concat_batches, take_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, Float64Type, Schema, SchemaRef, UInt64Type};
use datafusion::arrow::ipc::reader::FileReader;
use datafusion::arrow::ipc::writer::FileWriter;
use datafusion::execution::SendableRecordBatchStream;
use futures::StreamExt;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use tokio::task::JoinSet;

use crate::destination::Destination;
use crate::manifest::{ShardEntry, StratumCount};
use crate::{PublishError, sha256_hex};

/// Rows handed to the Parquet writer at a time (and so its page-size checks).
const CHUNK_ROWS: usize = 8192;
/// Rows a key range holds on average: the unit of the in-memory sort.
pub const RANGE_ROWS: u64 = 1 << 18;

/// The writer's default memory budget: half the memory available when it starts
/// (Linux `MemAvailable`), or 4 GiB where that cannot be read.
pub fn default_memory_budget() -> usize {
    let available = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().find(|l| l.starts_with("MemAvailable:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<usize>().ok()));
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
    /// The split (`train`, `validation`, `test`), a written column.
    pub split: String,
    /// The row weight, a written column.
    pub weight: String,
    /// Stratum id (UInt64 helper), a key of `ShardSink::strata`.
    pub stratum: String,
    /// A finer id (UInt64 helper) the totals are kept by; may equal `stratum`.
    pub cell: String,
    /// Integer helpers ordering the rows: the first is the shuffle key (uniform over
    /// 64 bits), the others break its ties.
    pub order: Vec<String>,
    /// Optional UInt64 helper: a nonzero id marks rows of a group of identical rows of
    /// which only `ShardSink::trims[id]` are kept (the first in key order).
    pub tie: Option<String>,
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
    /// with equal order keys fail the write, before anything is uploaded.
    pub unique_order: bool,
}

/// Column positions in the stream, shared by the routing tasks.
#[derive(Debug)]
struct Layout {
    split: usize,
    weight: usize,
    stratum: usize,
    cell: usize,
    order: Vec<usize>,
    tie: Option<usize>,
    /// Written columns (no helpers).
    keep: Vec<usize>,
    ranges: u64,
}

/// (split, stratum, tie id) → rows.
type Counts = HashMap<(String, u64, u64), u64>;

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
        Ok(Self { writer, pending: Vec::new(), pending_rows: 0 })
    }

    fn push(&mut self, batch: RecordBatch, path: &Path) -> Result<(), PublishError> {
        self.pending_rows += batch.num_rows();
        self.pending.push(batch);
        if self.pending_rows >= SPILL_BATCH_ROWS { self.flush(path) } else { Ok(()) }
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

/// A dealt range: its pieces in order, one per (split, shard) it holds.
enum Dealt {
    File(PathBuf),
    Batches(Vec<Option<RecordBatch>>),
}

/// What one routing task wrote: its rows by key range, and its counts.
struct Routed {
    files: Vec<(u64, Held)>,
    counts: Counts,
}

/// A split's shards: how many, and the shard each stratum's first row goes to.
struct SplitPlan {
    n_shards: u64,
    offsets: HashMap<u64, u64>,
}

/// (split index, shard) → where its rows lie after dealing: (range, batch in the range's file).
type Pieces = BTreeMap<(usize, u64), Vec<(u64, usize)>>;

impl ShardSink {
    /// Writes the rows of `streams` (the partitions of one plan, run concurrently).
    pub async fn write(self, streams: Vec<SendableRecordBatchStream>) -> Result<SinkOutput, PublishError> {
        let Some(first) = streams.first() else {
            return Err(PublishError::Data { context: "writing shards".into(), message: "no input".into() });
        };
        let input = compact_schema(&first.schema());
        let index_of = |name: &str| {
            input.index_of(name).map_err(|_| PublishError::Data {
                context: "writing shards".into(),
                message: format!("the curated stream has no column `{name}`"),
            })
        };
        let keep: Vec<usize> = (0..input.fields().len()).filter(|&i| !input.field(i).name().starts_with("__")).collect();
        let schema: SchemaRef = Arc::new(input.project(&keep).map_err(data_err("projecting the shard schema"))?);
        let layout = Arc::new(Layout {
            split: index_of(&self.columns.split)?,
            weight: index_of(&self.columns.weight)?,
            stratum: index_of(&self.columns.stratum)?,
            cell: index_of(&self.columns.cell)?,
            order: self.columns.order.iter().map(|c| index_of(c)).collect::<Result<_, _>>()?,
            tie: self.columns.tie.as_deref().map(index_of).transpose()?,
            keep,
            ranges: self.expected_rows.div_ceil(self.range_rows.max(1)).max(1),
        });
        if layout.order.is_empty() {
            return Err(PublishError::Usage("the shard sink needs at least one order column".into()));
        }
        let spill_root = tempfile::Builder::new().prefix("strata-shards-").tempdir().map_err(|e| PublishError::Data {
            context: format!("creating spill files under {}", std::env::temp_dir().display()),
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
        for (p, stream) in streams.into_iter().enumerate() {
            let (layout, dir, budget) = (layout.clone(), spill_root.path().to_path_buf(), budget.clone());
            tasks.spawn(async move { route(stream, &layout, &dir, &budget, p).await });
        }
        let mut files: BTreeMap<u64, Vec<Held>> = BTreeMap::new();
        let mut counts: Counts = HashMap::new();
        while let Some(routed) = tasks.join_next().await {
            let routed = routed.map_err(join_err)??;
            for (range, path) in routed.files {
                files.entry(range).or_default().push(path);
            }
            for (key, n) in routed.counts {
                *counts.entry(key).or_default() += n;
            }
        }
        tracing::debug!(ranges = layout.ranges, elapsed_ms = started.elapsed().as_millis() as u64, "shard rows routed");

        // per split: rows per stratum once ties are trimmed, the shard count, and where
        // each stratum starts
        let names: Vec<String> = {
            let mut s: Vec<String> = counts.keys().map(|(s, _, _)| s.clone()).collect();
            s.sort();
            s.dedup();
            s
        };
        let plans: Vec<SplitPlan> = names
            .iter()
            .map(|split| {
                let mut per_stratum: BTreeMap<u64, u64> = BTreeMap::new();
                for ((s, stratum, tie), n) in &counts {
                    if s == split {
                        let n = if *tie == 0 { *n } else { (*n).min(self.trims.get(tie).copied().unwrap_or(*n)) };
                        *per_stratum.entry(*stratum).or_default() += n;
                    }
                }
                let total: u64 = per_stratum.values().sum();
                let n_shards = total.div_ceil(self.shard_rows.max(1)).max(1);
                let mut offsets = HashMap::new();
                let mut at = 0u64;
                for (stratum, n) in &per_stratum {
                    offsets.insert(*stratum, at % n_shards);
                    at += n;
                }
                SplitPlan { n_shards, offsets }
            })
            .collect();

        // 2. deal, range by range in key order; all splits at once, so rows with equal
        //    keys meet wherever they went
        let started = std::time::Instant::now();
        let mut dealer = Dealer {
            layout: &layout,
            trims: &self.trims,
            names: &names,
            plans: &plans,
            slots: HashMap::new(),
            slot_info: Vec::new(),
            kept: HashMap::new(),
            pieces: BTreeMap::new(),
            strata: HashMap::new(),
            totals: HashMap::new(),
            repeated: 0,
        };
        let spilling = budget.spilling.load(std::sync::atomic::Ordering::Relaxed);
        tracing::debug!(spilling, "dealing shard rows");
        let dealt = deal_ranges(&mut dealer, files, spilling.then(|| spill_root.path().to_path_buf()))?;
        if self.unique_order && dealer.repeated > 0 {
            return Err(PublishError::RepeatedKeys { rows: dealer.repeated });
        }
        tracing::debug!(elapsed_ms = started.elapsed().as_millis() as u64, "shard rows dealt");
        let totals = dealer.totals.into_iter().map(|((s, cell), t)| ((names[s].clone(), cell), t)).collect();
        let mut strata: HashMap<(usize, u64), BTreeMap<u64, (u64, f64)>> = HashMap::new();
        for ((s, shard, stratum), v) in dealer.strata {
            strata.entry((s, shard)).or_default().insert(stratum, v);
        }

        // 3. encode and upload, shard by shard
        let started = std::time::Instant::now();
        let shards = self.encode(&names, &schema, &layout, dealt, dealer.pieces, strata).await?;
        tracing::debug!(elapsed_ms = started.elapsed().as_millis() as u64, "shards encoded and uploaded");
        Ok(SinkOutput { shards, totals, schema })
    }

    async fn encode(
        &self,
        names: &[String],
        schema: &SchemaRef,
        layout: &Layout,
        mut dealt: Vec<Option<Dealt>>,
        pieces: Pieces,
        mut strata: HashMap<(usize, u64), BTreeMap<u64, (u64, f64)>>,
    ) -> Result<Vec<ShardEntry>, PublishError> {
        let mut readers: Vec<Option<(PathBuf, FileReader<BufReader<File>>)>> = Vec::new();
        for d in &dealt {
            readers.push(match d {
                Some(Dealt::File(p)) => {
                    Some((p.clone(), FileReader::try_new_buffered(File::open(p).map_err(spill_err(p))?, None).map_err(spill_err(p))?))
                }
                _ => None,
            });
        }
        let parallel = std::thread::available_parallelism().map_or(2, |n| n.get());
        let mut encoding: JoinSet<Result<(ShardEntry, Bytes), PublishError>> = JoinSet::new();
        let mut uploads: JoinSet<Result<(), PublishError>> = JoinSet::new();
        let mut entries = Vec::new();
        for ((s, index), at) in pieces {
            let mut batches = Vec::with_capacity(at.len());
            for (r, b) in at {
                let batch = match (&mut readers[r as usize], &mut dealt[r as usize]) {
                    (Some((path, reader)), _) => {
                        reader.set_index(b).map_err(spill_err(path))?;
                        reader.next().ok_or_else(|| spill_err(path)("a piece is missing"))?.map_err(spill_err(path))?
                    }
                    (None, Some(Dealt::Batches(pieces))) => pieces[b].take().expect("each piece is read once"),
                    _ => unreachable!("a piece of a range that holds nothing"),
                };
                batches.push(batch.project(&layout.keep).map_err(data_err("gathering a shard"))?);
            }
            let rows = concat_batches(schema, &batches).map_err(data_err("gathering a shard"))?;
            drop(batches);
            let mut counted: Vec<StratumCount> = strata
                .remove(&(s, index))
                .unwrap_or_default()
                .iter()
                .map(|(id, (n, w))| StratumCount { values: self.strata.get(id).cloned().unwrap_or_default(), rows: *n, weight_sum: *w })
                .collect();
            counted.sort_by(|a, b| a.values.cmp(&b.values));
            let split = names[s].clone();
            let path = format!("{split}/part-{index:05}.parquet");
            while encoding.len() >= parallel {
                entries.push(self.upload_next(&mut encoding, &mut uploads).await?);
            }
            encoding.spawn_blocking(move || {
                let bytes = encode(rows.schema(), &rows)?;
                let entry = ShardEntry {
                    path,
                    split,
                    index,
                    rows: rows.num_rows() as u64,
                    bytes: bytes.len() as u64,
                    sha256: sha256_hex(&bytes),
                    strata: counted,
                };
                Ok((entry, bytes))
            });
        }
        while !encoding.is_empty() {
            entries.push(self.upload_next(&mut encoding, &mut uploads).await?);
        }
        while let Some(r) = uploads.join_next().await {
            r.map_err(join_err)??;
        }
        entries.sort_by(|a, b| (&a.split, a.index).cmp(&(&b.split, b.index)));
        Ok(entries)
    }

    /// Waits for the next encoded shard and starts its upload.
    async fn upload_next(
        &self,
        encoding: &mut JoinSet<Result<(ShardEntry, Bytes), PublishError>>,
        uploads: &mut JoinSet<Result<(), PublishError>>,
    ) -> Result<ShardEntry, PublishError> {
        let (entry, bytes) = encoding.join_next().await.expect("a shard is encoding").map_err(join_err)??;
        while uploads.len() >= UPLOADS_IN_FLIGHT {
            if let Some(r) = uploads.join_next().await {
                r.map_err(join_err)??;
            }
        }
        let dest = self.destination.clone();
        let rel = format!("{}/{}", self.run_dir, entry.path);
        uploads.spawn(async move { dest.put(&rel, bytes).await });
        tracing::debug!(shard = %entry.path, rows = entry.rows, bytes = entry.bytes, "shard encoded");
        Ok(entry)
    }
}

/// Step 2 for every range: reading back and sorting, and writing dealt ranges, run on
/// every core; only the walk, which hands out shard positions, runs in range order.
/// Bounded channels keep a few ranges in flight. Dealt ranges go to `spill_dir` when
/// given, else stay in memory.
fn deal_ranges(
    dealer: &mut Dealer<'_>,
    files: BTreeMap<u64, Vec<Held>>,
    spill_dir: Option<PathBuf>,
) -> Result<Vec<Option<Dealt>>, PublishError> {
    let parallel = std::thread::available_parallelism().map_or(2, |n| n.get());
    let ranges: Vec<u64> = files.keys().copied().collect();
    let todo = std::sync::Mutex::new(files);
    let done: std::sync::Mutex<Vec<Option<Dealt>>> = std::sync::Mutex::new((0..dealer.layout.ranges).map(|_| None).collect());
    let (walked_tx, walked_rx) = std::sync::mpsc::sync_channel::<Walked>(parallel);
    let walked_rx = std::sync::Mutex::new(walked_rx);
    let finish_errors: std::sync::Mutex<Vec<PublishError>> = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| -> Result<(), PublishError> {
        let (prepared_tx, prepared_rx) = std::sync::mpsc::sync_channel::<(u64, Result<Option<Prepared>, PublishError>)>(parallel);
        for _ in 0..parallel {
            let (tx, todo, layout) = (prepared_tx.clone(), &todo, dealer.layout);
            scope.spawn(move || {
                loop {
                    let Some((r, inputs)) = todo.lock().expect("not poisoned").pop_first() else { break };
                    if tx.send((r, prepare(layout, r, inputs))).is_err() {
                        break;
                    }
                }
            });
            let (rx, done, errors, spill_dir) = (&walked_rx, &done, &finish_errors, &spill_dir);
            scope.spawn(move || {
                loop {
                    let next = rx.lock().expect("not poisoned").recv();
                    let Ok(walked) = next else { break };
                    let r = walked.range;
                    let out = spill_dir.as_ref().map(|d| d.join(format!("dealt-{r}.arrow")));
                    match finish(walked, out) {
                        Ok(d) => done.lock().expect("not poisoned")[r as usize] = Some(d),
                        Err(e) => errors.lock().expect("not poisoned").push(e),
                    }
                }
            });
        }
        drop(prepared_tx);
        let mut waiting: BTreeMap<u64, Option<Prepared>> = BTreeMap::new();
        for r in ranges {
            while !waiting.contains_key(&r) {
                let (got, p) = prepared_rx.recv().expect("a preparing thread ended early");
                waiting.insert(got, p?);
            }
            if let Some(p) = waiting.remove(&r).flatten()
                && let Some(w) = dealer.walk(p)?
            {
                walked_tx.send(w).expect("the writing threads outlive the walk");
            }
        }
        drop(walked_tx);
        drop(prepared_rx);
        Ok(())
    })?;

    if let Some(e) = finish_errors.into_inner().expect("not poisoned").pop() {
        return Err(e);
    }
    let dealt = done.into_inner().expect("not poisoned");
    Ok(dealt)
}

/// Step 1 for one input partition: rows to key-range spill files, counted.
async fn route(
    mut stream: SendableRecordBatchStream,
    layout: &Layout,
    dir: &Path,
    budget: &Budget,
    partition: usize,
) -> Result<Routed, PublishError> {
    use std::sync::atomic::Ordering::Relaxed;
    let mut open: HashMap<u64, RangeOut> = HashMap::new();
    // bytes this task holds in memory (counted in `budget.held` too)
    let mut mine = 0usize;
    // split names by index: a handful of values, compared per row instead of hashed
    let mut names: Vec<String> = Vec::new();
    let mut counts: HashMap<(usize, u64, u64), u64> = HashMap::new();
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(data_err("computing the curated rows"))?;
        if batch.num_rows() == 0 {
            continue;
        }
        let batch = compact(&batch)?;
        let split = cast(batch.column(layout.split), &DataType::Utf8).map_err(data_err("reading the split column"))?;
        let split = split.as_string::<i32>();
        let key = u64_column(&batch, layout.order[0])?;
        let stratum = u64_column(&batch, layout.stratum)?;
        let tie = layout.tie.map(|i| u64_column(&batch, i)).transpose()?;
        let mut groups: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
        let mut last: Option<((usize, u64, u64), u64)> = None;
        for r in 0..batch.num_rows() {
            let range = ((key.value(r) as u128 * layout.ranges as u128) >> 64) as u64;
            groups.entry(range).or_default().push(r as u32);
            let s = split.value(r);
            let s = match names.iter().position(|n| n == s) {
                Some(i) => i,
                None => {
                    names.push(s.to_string());
                    names.len() - 1
                }
            };
            // rows of one stratum tend to come together: count runs, not rows
            let k = (s, stratum.value(r), tie.as_ref().map_or(0, |t| t.value(r)));
            match &mut last {
                Some((lk, n)) if *lk == k => *n += 1,
                _ => {
                    if let Some((lk, n)) = last.take() {
                        *counts.entry(lk).or_default() += n;
                    }
                    last = Some((k, 1));
                }
            }
        }
        if let Some((lk, n)) = last {
            *counts.entry(lk).or_default() += n;
        }
        // one take puts the batch in range order; each range gets a zero-copy slice
        let mut order: Vec<u32> = Vec::with_capacity(batch.num_rows());
        let mut bounds: Vec<(u64, usize, usize)> = Vec::with_capacity(groups.len());
        for (range, rows) in groups {
            bounds.push((range, order.len(), rows.len()));
            order.extend(rows);
        }
        let sorted = if bounds.len() == 1 {
            batch.clone()
        } else {
            take_record_batch(&batch, &UInt32Array::from(order)).map_err(data_err("routing shard rows"))?
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
                    let mut file = SpillFile::create(&path, &batch.schema())?;
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
                    let file = SpillFile::create(&path, &batch.schema())?;
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
    let counts: Counts = counts.into_iter().map(|((s, stratum, tie), n)| ((names[s].clone(), stratum, tie), n)).collect();
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

/// A (split, stratum) being dealt: where it starts and how many rows it has dealt.
struct Slot {
    split: usize,
    stratum: u64,
    offset: u64,
    n_shards: u64,
    next: u64,
}

/// Step 2: deals each range's rows to the shards of their split.
struct Dealer<'a> {
    layout: &'a Layout,
    trims: &'a std::collections::HashMap<u64, u64>,
    names: &'a [String],
    plans: &'a [SplitPlan],
    /// (split, stratum) → its slot in `slot_info`.
    slots: HashMap<(usize, u64), usize>,
    slot_info: Vec<Slot>,
    /// Tie id → rows kept so far.
    kept: HashMap<u64, u64>,
    pieces: Pieces,
    /// (split, shard, stratum) → (rows, weight sum).
    strata: HashMap<(usize, u64, u64), (u64, f64)>,
    /// (split, cell) → totals.
    totals: HashMap<(usize, u64), StratumTotals>,
    /// Rows whose order keys equal the previous row's.
    repeated: u64,
}

/// A range read back and sorted by key, ready to deal.
struct Prepared {
    range: u64,
    rows: RecordBatch,
    perm: Vec<(u64, u32)>,
    /// Rows whose order keys equal the previous row's.
    repeated: u64,
}

/// A dealt range: its rows' order by (split, shard, key) and each piece's bounds.
struct Walked {
    range: u64,
    rows: RecordBatch,
    order: Vec<u32>,
    bounds: Vec<(usize, usize)>,
}

/// Reads range `range` back (its routed pieces) and sorts it by the order columns.
fn prepare(layout: &Layout, range: u64, inputs: Vec<Held>) -> Result<Option<Prepared>, PublishError> {
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
    let Some(first) = batches.first() else { return Ok(None) };
    let rows = concat_batches(&first.schema(), &batches).map_err(data_err("reading spilled rows"))?;
    drop(batches);

    // sort by the order columns; ties of the shuffle key are rare, so only they are
    // compared on the other columns
    let mut repeated = 0u64;
    let order: Vec<_> = layout.order.iter().map(|&i| u64_column(&rows, i)).collect::<Result<_, _>>()?;
    let mut perm: Vec<(u64, u32)> = order[0].values().iter().enumerate().map(|(i, &k)| (k, i as u32)).collect();
    perm.sort_unstable();
    let same = |a: u32, b: u32| order[1..].iter().all(|c| c.value(a as usize) == c.value(b as usize));
    let mut start = 0;
    while start < perm.len() {
        let mut end = start + 1;
        while end < perm.len() && perm[end].0 == perm[start].0 {
            end += 1;
        }
        if end - start > 1 {
            perm[start..end].sort_by(|a, b| {
                order[1..]
                    .iter()
                    .map(|c| c.value(a.1 as usize).cmp(&c.value(b.1 as usize)))
                    .find(|o| o.is_ne())
                    .unwrap_or_else(|| a.1.cmp(&b.1))
            });
            repeated += perm[start..end].windows(2).filter(|w| same(w[0].1, w[1].1)).count() as u64;
        }
        start = end;
    }

    Ok(Some(Prepared { range, rows, perm, repeated }))
}

/// Writes a walked range grouped by (split, shard): one take, then a slice per piece,
/// kept in memory or written to `out`.
fn finish(walked: Walked, out: Option<PathBuf>) -> Result<Dealt, PublishError> {
    let sorted = take_record_batch(&walked.rows, &UInt32Array::from(walked.order)).map_err(data_err("dealing shard rows"))?;
    drop(walked.rows);
    let pieces: Vec<RecordBatch> = walked.bounds.into_iter().map(|(start, len)| sorted.slice(start, len)).collect();
    Ok(match out {
        Some(out) => {
            let file = File::create(&out).map_err(spill_err(&out))?;
            let mut writer = FileWriter::try_new(BufWriter::new(file), &sorted.schema()).map_err(spill_err(&out))?;
            for piece in &pieces {
                writer.write(piece).map_err(spill_err(&out))?;
            }
            writer.finish().map_err(spill_err(&out))?;
            Dealt::File(out)
        }
        None => Dealt::Batches(pieces.into_iter().map(Some).collect()),
    })
}

impl Dealer<'_> {
    /// Deals a prepared range: walks its rows in key order, giving each the next shard
    /// of its (split, stratum). The only step that must see the ranges in order.
    fn walk(&mut self, prepared: Prepared) -> Result<Option<Walked>, PublishError> {
        let Prepared { range: r, rows, perm, repeated } = prepared;
        self.repeated += repeated;
        let n = rows.num_rows();
        let split = cast(rows.column(self.layout.split), &DataType::Utf8).map_err(data_err("reading the split column"))?;
        let split = split.as_string::<i32>();
        let stratum = u64_column(&rows, self.layout.stratum)?;
        let cell = u64_column(&rows, self.layout.cell)?;
        let tie = self.layout.tie.map(|i| u64_column(&rows, i)).transpose()?;
        let weight = cast(rows.column(self.layout.weight), &DataType::Float64).map_err(data_err("reading the weight column"))?;
        let weight = weight.as_primitive::<Float64Type>();

        // Walking rows in key order touches them at random: read every column the walk
        // needs into one dense slot number per row first, in row order.
        let mut slot_of: Vec<u32> = Vec::with_capacity(n);
        for i in 0..n {
            let sp = self.names.iter().position(|x| x == split.value(i)).expect("every split was counted");
            let key = (sp, stratum.value(i));
            let slot = match self.slots.get(&key) {
                Some(&slot) => slot,
                None => {
                    let plan = &self.plans[sp];
                    self.slot_info.push(Slot {
                        split: sp,
                        stratum: key.1,
                        offset: plan.offsets.get(&key.1).copied().unwrap_or(0),
                        n_shards: plan.n_shards,
                        next: 0,
                    });
                    self.slots.insert(key, self.slot_info.len() - 1);
                    self.slot_info.len() - 1
                }
            };
            slot_of.push(slot as u32);
        }
        let ties = tie.as_ref().filter(|t| t.values().iter().any(|&v| v != 0));
        // sums in key order, so floating-point totals do not depend on how rows arrived
        let mut by_shard: HashMap<(usize, u64), Vec<u32>> = HashMap::new();
        for &(_, i) in &perm {
            let i = i as usize;
            if let Some(t) = ties.map(|t| t.value(i))
                && t != 0
                && let Some(&keep) = self.trims.get(&t)
            {
                let kept = self.kept.entry(t).or_default();
                if *kept >= keep {
                    continue;
                }
                *kept += 1;
            }
            let slot = &mut self.slot_info[slot_of[i] as usize];
            let shard = (slot.offset + slot.next) % slot.n_shards;
            slot.next += 1;
            by_shard.entry((slot.split, shard)).or_default().push(i as u32);
            let w = if weight.is_null(i) { 0.0 } else { weight.value(i) };
            let e = self.strata.entry((slot.split, shard, slot.stratum)).or_default();
            e.0 += 1;
            e.1 += w;
            let t = self.totals.entry((slot.split, cell.value(i))).or_default();
            t.rows += 1;
            t.weight_sum += w;
            t.weight_sq_sum += w * w;
        }
        if by_shard.is_empty() {
            return Ok(None);
        }
        let mut by_shard: Vec<((usize, u64), Vec<u32>)> = by_shard.into_iter().collect();
        by_shard.sort_unstable_by_key(|(k, _)| *k);
        let mut order: Vec<u32> = Vec::with_capacity(n);
        let mut bounds: Vec<(usize, usize)> = Vec::with_capacity(by_shard.len());
        for (b, (key, idx)) in by_shard.into_iter().enumerate() {
            bounds.push((order.len(), idx.len()));
            order.extend(idx);
            self.pieces.entry(key).or_default().push((r, b));
        }
        Ok(Some(Walked { range: r, rows, order, bounds }))
    }
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
    let fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone().with_data_type(compact_type(f.data_type()))).collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

fn compact(batch: &RecordBatch) -> Result<RecordBatch, PublishError> {
    if !batch.schema().fields().iter().any(|f| compact_type(f.data_type()) != *f.data_type()) {
        return Ok(batch.clone());
    }
    let columns = batch
        .columns()
        .iter()
        .map(|c| cast(c, &compact_type(c.data_type())))
        .collect::<Result<Vec<_>, _>>()
        .map_err(data_err("reading the curated rows"))?;
    RecordBatch::try_new(compact_schema(&batch.schema()), columns).map_err(data_err("reading the curated rows"))
}

fn u64_column(batch: &RecordBatch, i: usize) -> Result<datafusion::arrow::array::UInt64Array, PublishError> {
    let name = batch.schema().field(i).name().clone();
    let a = cast(batch.column(i), &DataType::UInt64).map_err(|e| PublishError::Data {
        context: "writing shards".into(),
        message: format!("column `{name}` is not an unsigned integer: {e}"),
    })?;
    Ok(a.as_primitive::<UInt64Type>().clone())
}

/// Encodes one shard: rows reach the writer in `CHUNK_ROWS` pieces from its first row.
fn encode(schema: SchemaRef, rows: &RecordBatch) -> Result<Bytes, PublishError> {
    let props = writer_properties(&schema);
    let mut writer = ArrowWriter::try_new(Vec::new(), schema, Some(props)).map_err(data_err("starting a shard"))?;
    let mut at = 0;
    while at < rows.num_rows() {
        let n = CHUNK_ROWS.min(rows.num_rows() - at);
        writer.write(&rows.slice(at, n)).map_err(data_err("encoding a shard"))?;
        at += n;
    }
    Ok(Bytes::from(writer.into_inner().map_err(data_err("finishing a shard"))?))
}

/// zstd, page statistics and indexes on, a fixed `created_by`: shards are read by
/// engines that prune on statistics, and must hash the same on every machine. Float
/// columns (weights, scores) are nearly always distinct: no dictionary attempt for them.
fn writer_properties(schema: &SchemaRef) -> WriterProperties {
    let mut builder = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).expect("valid zstd level")))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_created_by(format!("strata {}", env!("CARGO_PKG_VERSION")));
    for f in schema.fields() {
        if f.data_type().is_floating() {
            builder = builder.set_column_dictionary_enabled(ColumnPath::from(f.name().as_str()), false);
        }
    }
    builder.build()
}

fn data_err<E: std::fmt::Display>(context: &str) -> impl FnOnce(E) -> PublishError + '_ {
    move |e| PublishError::Data { context: context.to_string(), message: crate::one_line(&e.to_string()) }
}

fn spill_err<E: std::fmt::Display>(path: &Path) -> impl FnOnce(E) -> PublishError + '_ {
    move |e| PublishError::Data { context: format!("spill file {}", path.display()), message: crate::one_line(&e.to_string()) }
}

fn join_err(e: tokio::task::JoinError) -> PublishError {
    PublishError::Data { context: "writing shards".into(), message: e.to_string() }
}
