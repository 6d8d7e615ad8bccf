//! The writer's worker threads: dealing ranges and encoding shards as soon as the ranges
//! they need are dealt, off the async runtime.

use super::*;

/// An encoded shard, in memory or (when the writer spills) in a local file.
pub(super) enum Encoded {
    Memory(Bytes),
    File(PathBuf),
}

pub(super) struct EncodedShard {
    pub(super) entry: ShardEntry,
    pub(super) bytes: Encoded,
}

/// A complete shard to encode: its pieces in key order.
pub(super) struct ShardJob {
    pub(super) split: String,
    pub(super) index: u64,
    pub(super) pieces: Vec<Piece>,
    pub(super) strata: Vec<StratumCount>,
    /// Bytes of the pieces, released from the held total once encoded.
    pub(super) held: usize,
}

/// Work for the writer's threads; encoding first, as it releases memory.
pub(super) enum Job {
    Deal(u64, Vec<Held>),
    Encode(ShardJob),
}

/// What a thread hands back to the coordinating thread.
pub(super) enum Done {
    Dealt(u64, Result<Option<DealtRange>, PublishError>),
    Encoded(Result<EncodedShard, PublishError>, usize),
}

/// The writer's queue of work, shared by its threads.
pub(super) struct Queue {
    pub(super) ranges: BTreeMap<u64, Vec<Held>>,
    pub(super) shards: std::collections::VecDeque<ShardJob>,
    /// Bytes of dealt pieces not yet encoded, and shards being encoded.
    pub(super) held: usize,
    pub(super) encoding: usize,
    pub(super) closed: bool,
}

/// Dealing and encoding: one pass over the ranges in key order, on every core.
pub(super) struct Work<'a> {
    pub(super) decoded: &'a Decoded,
    pub(super) layout: &'a Layout,
    pub(super) plan: &'a DealPlan,
    pub(super) sink: &'a ShardSink,
    pub(super) schema: &'a SchemaRef,
    /// Where encoded shards wait for upload once `encoded_room` (bytes) is used up.
    pub(super) shard_dir: PathBuf,
    pub(super) encoded_room: std::sync::atomic::AtomicUsize,
    /// Routed rows are in spill files: dealt rows waiting for their shard are bounded.
    pub(super) spilling: bool,
    /// A failure to inject (tests of the failure paths only).
    pub(super) fault: Option<Fault>,
    /// The uploader: every shard goes there once all ranges are dealt and checked.
    pub(super) upload: tokio::sync::mpsc::UnboundedSender<EncodedShard>,
}

/// `STRATA_SINK_FAULT`, for the tests of the writer's failure paths: a worker panics
/// while dealing or encoding, or returns an error. The write must end in an error,
/// never hang, and commit nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fault {
    DealPanic,
    EncodePanic,
    EncodeError,
}

impl Fault {
    pub(super) fn from_env() -> Result<Option<Self>, PublishError> {
        match std::env::var("STRATA_SINK_FAULT").as_deref() {
            Err(_) => Ok(None),
            Ok("deal-panic") => Ok(Some(Self::DealPanic)),
            Ok("encode-panic") => Ok(Some(Self::EncodePanic)),
            Ok("encode-error") => Ok(Some(Self::EncodeError)),
            Ok(other) => Err(PublishError::Usage(format!(
                "STRATA_SINK_FAULT=`{other}`: one of deal-panic, encode-panic, encode-error"
            ))),
        }
    }
}

/// What dealing and encoding produced.
pub(super) struct DealtAll {
    /// (rows, weight sum) per (slot, shard), at `Slot::sums_at + shard`.
    pub(super) sums: Vec<(u64, f64)>,
    /// Per (split, cell) of `DealPlan::cells`.
    pub(super) totals: Vec<StratumTotals>,
    /// Rows whose order keys equal the previous row's.
    pub(super) repeated: u64,
}

/// One range, dealt: its rows in (split, shard, key) order, one piece per shard.
pub(super) struct DealtRange {
    /// (shard in one numbering of all shards, its rows, their share of the range's bytes)
    pub(super) pieces: Vec<(usize, RecordBatch, usize)>,
    /// Per kept row in key order: (index in the sums, index in the totals, weight).
    pub(super) rows: Vec<(u32, u32, f64)>,
    pub(super) repeated: u64,
}

impl Work<'_> {
    /// Bytes of dealt pieces the writer holds before it deals further and, while it
    /// spills, before pieces waiting for their shard go to files: a quarter of the
    /// budget, or 128 MiB when the budget is 0 (a memory limit: DataFusion's pool holds
    /// the rest).
    fn deal_cap(&self) -> usize {
        match (self.spilling, self.sink.memory_budget) {
            (false, _) => usize::MAX,
            (true, 0) => 128 << 20,
            (true, budget) => budget / 4,
        }
    }

    /// Deals every range (any order, on every core), adds their sums in range order and
    /// hands each shard to be encoded once the range holding its last row is added.
    /// While the writer spills, dealt pieces waiting for their shard are bounded by a
    /// share of the budget: past it, threads encode before they deal further.
    pub(super) fn run(&self, files: BTreeMap<u64, Vec<Held>>) -> Result<DealtAll, PublishError> {
        let parallel = match self.sink.threads {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        let order: Vec<u64> = files.keys().copied().collect();
        let queue = std::sync::Mutex::new(Queue {
            ranges: files,
            shards: Default::default(),
            held: 0,
            encoding: 0,
            closed: false,
        });
        let wake = std::sync::Condvar::new();
        let cap = self.deal_cap();
        std::thread::scope(|scope| {
            let (tx, rx) = std::sync::mpsc::channel::<Done>();
            for _ in 0..parallel {
                let (tx, queue, wake) = (tx.clone(), &queue, &wake);
                scope.spawn(move || self.worker(queue, wake, cap, tx));
            }
            drop(tx);
            // (a panic here too must still close the queue, or the threads wait forever)
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.coordinate(&order, &queue, &wake, cap, rx)
            }))
            .unwrap_or_else(|_| {
                Err(PublishError::Data {
                    context: "writing shards".into(),
                    message: "the coordinating thread panicked".into(),
                    source: None,
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

    pub(super) fn worker(
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
                source: None,
            };
            let done = match job {
                Job::Deal(r, inputs) => {
                    let dealt = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        if self.fault == Some(Fault::DealPanic) {
                            panic!("injected fault while dealing (STRATA_SINK_FAULT)");
                        }
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
                        match self.fault {
                            Some(Fault::EncodePanic) => {
                                panic!("injected fault while encoding (STRATA_SINK_FAULT)")
                            }
                            Some(Fault::EncodeError) => Err(PublishError::Data {
                                context: "writing shards (encoding)".into(),
                                message: "injected error (STRATA_SINK_FAULT)".into(),
                                source: None,
                            }),
                            _ => self.encode_shard(shard),
                        }
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
    pub(super) fn coordinate(
        &self,
        order: &[u64],
        queue: &std::sync::Mutex<Queue>,
        wake: &std::sync::Condvar,
        cap: usize,
        rx: std::sync::mpsc::Receiver<Done>,
    ) -> Result<DealtAll, PublishError> {
        let plan = self.plan;
        let mut all = DealtAll {
            sums: vec![(0, 0.0); plan.n_sums],
            totals: vec![StratumTotals::default(); plan.cells.len()],
            repeated: 0,
        };
        // shards encoded before every range is dealt wait here: a repeated key, found
        // only then, fails the write before anything is uploaded
        let mut encoded_early: Option<Vec<EncodedShard>> = Some(Vec::new());
        let mut pieces = Waiting::new(plan, self.shard_dir.clone());
        // a range dealt early waits here until the ranges before it are added
        let mut waiting: BTreeMap<u64, Option<DealtRange>> = BTreeMap::new();
        let mut next = 0;
        let (mut queued, mut encoded) = (0usize, 0usize);
        while next < order.len() || encoded < queued {
            let Ok(done) = rx.recv() else {
                return Err(PublishError::Data {
                    context: "writing shards".into(),
                    message: "the writer's threads stopped".into(),
                    source: None,
                });
            };
            let mut released = 0;
            match done {
                Done::Dealt(r, got) => {
                    waiting.insert(r, got?);
                }
                Done::Encoded(got, held) => {
                    let shard = got?;
                    match &mut encoded_early {
                        Some(early) => early.push(shard),
                        None => self.hand_over(shard)?,
                    }
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
                        pieces.add(g, piece, bytes);
                    }
                }
                for &g in &plan.completes[range] {
                    ready.push(self.shard_job(g, pieces.take(g), &all.sums));
                }
                if next % 64 == 0 {
                    // what waits for its shard: the writer's memory while it deals
                    tracing::debug!(
                        ranges_added = next,
                        shards_waiting = pieces.shards(),
                        waiting_bytes = pieces.bytes(),
                        spilled_bytes = pieces.spilled,
                        "dealing"
                    );
                }
            }
            // past the cap, what waits longest goes to files (in spill mode only)
            let spilled = pieces.spill_past(cap)?;
            queued += ready.len();
            let mut q = queue
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if released > 0 {
                q.held -= released;
                q.encoding -= 1;
            }
            q.held += added;
            q.held -= spilled;
            q.shards.extend(ready);
            drop(q);
            wake.notify_all();
            // (without ranges nothing is encoded, so nothing waits past the loop)
            if next == order.len() {
                self.release(&mut encoded_early, all.repeated)?;
            }
        }
        if pieces.spilled > 0 {
            tracing::debug!(
                spilled_bytes = pieces.spilled,
                "dealt pieces waiting for their shard were moved to files"
            );
        }
        // every dealt piece belongs to a shard that was encoded: never drop rows silently
        if pieces.shards() > 0 {
            return Err(PublishError::Data {
                context: "writing shards".into(),
                message: format!(
                    "rows of {} shards were dealt after the shard was encoded",
                    pieces.shards()
                ),
                source: None,
            });
        }
        Ok(all)
    }

    /// Once every range is dealt: hands the shards encoded so far to the uploader, and
    /// from then on each one as it is encoded; keeps them back when a declared unique
    /// key repeats (the write fails before anything is uploaded).
    fn release(
        &self,
        early: &mut Option<Vec<EncodedShard>>,
        repeated: u64,
    ) -> Result<(), PublishError> {
        if self.sink.unique_order && repeated > 0 {
            return Ok(());
        }
        for shard in early.take().into_iter().flatten() {
            self.hand_over(shard)?;
        }
        Ok(())
    }

    fn hand_over(&self, shard: EncodedShard) -> Result<(), PublishError> {
        // the uploader stops taking shards only when an upload failed: its error is
        // the one reported
        self.upload.send(shard).map_err(|_| PublishError::Data {
            context: "writing shards".into(),
            message: "the uploads stopped".into(),
            source: None,
        })
    }

    /// Shard `g` (in one numbering of all shards), complete, with its per-stratum sums.
    pub(super) fn shard_job(&self, g: usize, pieces: Vec<Piece>, sums: &[(u64, f64)]) -> ShardJob {
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
        let held = pieces.iter().map(Piece::memory_bytes).sum();
        ShardJob {
            split: plan.names[s].clone(),
            index,
            pieces,
            strata,
            held,
        }
    }

    /// Encodes a shard, hashes it, and keeps it for upload (in memory while there is
    /// room, else in a local file).
    pub(super) fn encode_shard(&self, job: ShardJob) -> Result<EncodedShard, PublishError> {
        let ShardJob {
            split,
            index,
            pieces,
            strata,
            ..
        } = job;
        let pieces = load(pieces)?;
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
