//! Routed rows past the memory budget: Arrow IPC spill files under `$TMPDIR`.

use super::*;

/// One spill file being written, with rows waiting to fill a batch.
pub(super) struct SpillFile {
    pub(super) writer: FileWriter<BufWriter<File>>,
    pub(super) pending: Vec<RecordBatch>,
    pub(super) pending_rows: usize,
    /// Rows past which the pending ones are written (`spill_batch_rows`).
    pub(super) batch_rows: usize,
}

impl SpillFile {
    pub(super) fn create(
        path: &Path,
        schema: &SchemaRef,
        batch_rows: usize,
    ) -> Result<Self, PublishError> {
        let file = File::create(path).map_err(spill_err(path))?;
        let writer = FileWriter::try_new(BufWriter::new(file), schema).map_err(spill_err(path))?;
        Ok(Self {
            writer,
            pending: Vec::new(),
            pending_rows: 0,
            batch_rows,
        })
    }

    pub(super) fn push(&mut self, batch: RecordBatch, path: &Path) -> Result<(), PublishError> {
        self.pending_rows += batch.num_rows();
        self.pending.push(batch);
        if self.pending_rows >= self.batch_rows {
            self.flush(path)
        } else {
            Ok(())
        }
    }

    pub(super) fn flush(&mut self, path: &Path) -> Result<(), PublishError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let schema = self.pending[0].schema();
        let batch = concat_batches(&schema, &self.pending).map_err(spill_err(path))?;
        self.pending.clear();
        self.pending_rows = 0;
        self.writer.write(&batch).map_err(spill_err(path))
    }

    pub(super) fn finish(mut self, path: &Path) -> Result<(), PublishError> {
        self.flush(path)?;
        self.writer.finish().map_err(spill_err(path))
    }
}

/// The batches of a spill file, appended to `batches`; the file is then removed in the
/// background (unlinking a file still being written back to disk can block a while).
pub(super) fn read_spill(
    path: PathBuf,
    batches: &mut Vec<RecordBatch>,
) -> Result<(), PublishError> {
    let file = File::open(&path).map_err(spill_err(&path))?;
    for b in FileReader::try_new_buffered(file, None).map_err(spill_err(&path))? {
        batches.push(b.map_err(spill_err(&path))?);
    }
    std::thread::spawn(move || std::fs::remove_file(path));
    Ok(())
}

/// Rows held between steps: in a spill file, or in memory when the sink may use it.
pub(super) enum Held {
    File(PathBuf),
    Batches(Vec<RecordBatch>),
}

/// The writer's memory: what routing holds, and whether rows go to files.
pub(super) struct Budget {
    pub(super) limit: usize,
    pub(super) held: std::sync::atomic::AtomicUsize,
    pub(super) spilling: std::sync::atomic::AtomicBool,
}

/// Where routed rows of one key range go while a partition is routed.
pub(super) enum RangeOut {
    File(PathBuf, SpillFile),
    Batches(Vec<RecordBatch>),
}
