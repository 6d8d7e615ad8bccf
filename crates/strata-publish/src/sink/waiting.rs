//! Dealt pieces waiting for their shard. A shard is complete once the last row of each
//! of its strata is dealt, and a small stratum's block for a shard can lie far later in
//! key order than the shard's other rows, so pieces of many shards wait at once. While
//! the writer spills, pieces past the dealing cap go to local files (Arrow IPC, in key
//! order), those of the shards that complete last first, and are read back when their
//! shard is encoded: memory stays bounded and every shard keeps its bytes.

use super::*;

/// A dealt piece of a shard: in memory (with the bytes it holds), or a local file of
/// consecutive pieces.
pub(super) enum Piece {
    Memory(RecordBatch, usize),
    File(PathBuf),
}

impl Piece {
    pub(super) fn memory_bytes(&self) -> usize {
        match self {
            Piece::Memory(_, bytes) => *bytes,
            Piece::File(_) => 0,
        }
    }
}

/// A shard's pieces in memory, in key order (files read back and removed).
pub(super) fn load(pieces: Vec<Piece>) -> Result<Vec<RecordBatch>, PublishError> {
    let mut batches = Vec::with_capacity(pieces.len());
    for piece in pieces {
        match piece {
            Piece::Memory(batch, _) => batches.push(batch),
            Piece::File(path) => read_spill(path, &mut batches)?,
        }
    }
    Ok(batches)
}

/// The pieces waiting for their shard (in one numbering of all shards).
pub(super) struct Waiting {
    by_shard: HashMap<usize, Vec<Piece>>,
    /// Bytes of the pieces in memory.
    bytes: usize,
    /// The range whose dealing completes each shard.
    completes_at: HashMap<usize, usize>,
    dir: PathBuf,
    files: usize,
    /// Bytes moved to files so far.
    pub(super) spilled: usize,
}

impl Waiting {
    pub(super) fn new(plan: &DealPlan, dir: PathBuf) -> Self {
        let mut completes_at = HashMap::new();
        for (range, shards) in plan.completes.iter().enumerate() {
            for &g in shards {
                completes_at.insert(g, range);
            }
        }
        Self {
            by_shard: HashMap::new(),
            bytes: 0,
            completes_at,
            dir,
            files: 0,
            spilled: 0,
        }
    }

    pub(super) fn add(&mut self, g: usize, piece: RecordBatch, bytes: usize) {
        self.bytes += bytes;
        self.by_shard
            .entry(g)
            .or_default()
            .push(Piece::Memory(piece, bytes));
    }

    /// Shard `g`'s pieces, now that it is complete.
    pub(super) fn take(&mut self, g: usize) -> Vec<Piece> {
        let pieces = self.by_shard.remove(&g).unwrap_or_default();
        self.bytes -= pieces.iter().map(Piece::memory_bytes).sum::<usize>();
        pieces
    }

    pub(super) fn shards(&self) -> usize {
        self.by_shard.len()
    }

    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Past `cap` bytes in memory, moves the pieces of the shards that complete last to
    /// files until half the cap is left (half: so that it does not write a little on
    /// every range). Returns the bytes released.
    pub(super) fn spill_past(&mut self, cap: usize) -> Result<usize, PublishError> {
        if self.bytes <= cap {
            return Ok(0);
        }
        let mut candidates: Vec<(usize, usize)> = self
            .by_shard
            .iter()
            .filter(|(_, p)| p.iter().any(|p| p.memory_bytes() > 0))
            .map(|(&g, _)| (self.completes_at.get(&g).copied().unwrap_or(usize::MAX), g))
            .collect();
        // the latest first, by shard number among equals (any order gives the same bytes)
        candidates.sort_unstable_by(|a, b| b.cmp(a));
        let before = self.bytes;
        for (_, g) in candidates {
            if self.bytes <= cap / 2 {
                break;
            }
            let pieces = self.by_shard.get_mut(&g).expect("a waiting shard");
            // pieces in memory always follow those in files: they came later
            let first = pieces
                .iter()
                .position(|p| matches!(p, Piece::Memory(..)))
                .expect("a piece in memory");
            let Piece::Memory(batch, _) = &pieces[first] else {
                unreachable!("found above")
            };
            let path = self.dir.join(format!("waiting-{g}-{}.arrow", self.files));
            self.files += 1;
            let file = File::create(&path).map_err(spill_err(&path))?;
            let mut writer = FileWriter::try_new(BufWriter::new(file), &batch.schema())
                .map_err(spill_err(&path))?;
            for piece in pieces.drain(first..) {
                let Piece::Memory(batch, bytes) = piece else {
                    unreachable!("pieces in memory are the last ones")
                };
                writer.write(&batch).map_err(spill_err(&path))?;
                self.bytes -= bytes;
                self.spilled += bytes;
            }
            writer.finish().map_err(spill_err(&path))?;
            pieces.push(Piece::File(path));
        }
        Ok(before - self.bytes)
    }
}
