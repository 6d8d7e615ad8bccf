//! `strata synth`: a skewed, labelled dataset with known group structure, as zstd
//! Parquet files on any object store, deterministic by seed.
//!
//! Rows are a function of the seed and their number alone ([`census::batch`]), so
//! files are generated and written in parallel, each streaming row groups to the store
//! (a multipart upload), and memory stays at a few row groups per writer whatever the
//! number of rows. The preset's structure: docs/synth.md.

pub mod census;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::StreamExt;
use object_store::ObjectStore;
use object_store::path::Path;
use parquet::arrow::AsyncArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

/// Rows generated at a time.
const BATCH_ROWS: usize = 64 * 1024;

/// The datasets strata can generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// Census-like people: sex, race and age band (with missing values), features with
    /// signal, a weight, a 0/1 label whose rate depends on the groups.
    #[default]
    Census,
}

#[derive(Debug, Clone)]
pub struct SynthOptions {
    pub rows: u64,
    /// Files to cut the rows into (equal, the last shorter); each is written by one
    /// worker.
    pub files: usize,
    pub seed: u64,
    pub preset: Preset,
    /// Rows per Parquet row group.
    pub row_group_rows: usize,
    /// Files written at once (0: every core).
    pub threads: usize,
}

impl Default for SynthOptions {
    fn default() -> Self {
        Self {
            rows: 1_000_000,
            files: 1,
            seed: 0,
            preset: Preset::Census,
            row_group_rows: 1 << 20,
            threads: 0,
        }
    }
}

/// One written file.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SynthFile {
    /// Its name under the output folder.
    pub name: String,
    pub rows: u64,
}

/// What was written.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Synthesized {
    pub preset: Preset,
    pub seed: u64,
    pub rows: u64,
    pub files: Vec<SynthFile>,
}

#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    #[error("{0}")]
    Usage(String),
    #[error("writing `{file}`: {source}")]
    Write {
        file: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// The files of `options`: (name, first row, rows).
pub fn layout(options: &SynthOptions) -> Result<Vec<(String, u64, u64)>, SynthError> {
    if options.files == 0 {
        return Err(SynthError::Usage("--files must be at least 1".into()));
    }
    if options.rows == 0 {
        return Err(SynthError::Usage("--rows must be at least 1".into()));
    }
    if options.files as u64 > options.rows {
        return Err(SynthError::Usage(format!(
            "--files {} is more than --rows {}",
            options.files, options.rows
        )));
    }
    let per_file = options.rows.div_ceil(options.files as u64);
    Ok((0..options.files as u64)
        .map(|f| f * per_file)
        .take_while(|&start| start < options.rows)
        .enumerate()
        .map(|(f, start)| {
            let rows = per_file.min(options.rows - start);
            (format!("part-{f:05}.parquet"), start, rows)
        })
        .collect())
}

/// Writes the dataset under `folder` of `store`; `done` is told of every batch's rows.
pub async fn synthesize(
    store: Arc<dyn ObjectStore>,
    folder: &Path,
    options: &SynthOptions,
    done: Arc<dyn Fn(u64) + Send + Sync>,
) -> Result<Synthesized, SynthError> {
    let files = layout(options)?;
    let threads = match options.threads {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    };
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(3).expect("a valid level"),
        ))
        .set_max_row_group_row_count(Some(options.row_group_rows.max(1)))
        .build();
    let handle = tokio::runtime::Handle::current();
    let rows_written = Arc::new(AtomicU64::new(0));
    let results: Vec<Result<SynthFile, SynthError>> = futures::stream::iter(files)
        .map(|(name, start, rows)| {
            let store = Arc::clone(&store);
            let path = folder.clone().join(name.as_str());
            let props = props.clone();
            let handle = handle.clone();
            let done = Arc::clone(&done);
            let rows_written = Arc::clone(&rows_written);
            let seed = options.seed;
            // generating and encoding are CPU work: each file on a blocking thread,
            // which drives its upload on the runtime
            let task = tokio::task::spawn_blocking(move || {
                handle.block_on(async move {
                    let err = |e: Box<dyn std::error::Error + Send + Sync>| SynthError::Write {
                        file: path.to_string(),
                        source: e,
                    };
                    let writer = object_store::buffered::BufWriter::new(store, path.clone());
                    let mut writer =
                        AsyncArrowWriter::try_new(writer, census::schema(), Some(props))
                            .map_err(|e| err(e.into()))?;
                    let mut at = start;
                    while at < start + rows {
                        let n = (start + rows - at).min(BATCH_ROWS as u64) as usize;
                        writer
                            .write(&census::batch(seed, at, n))
                            .await
                            .map_err(|e| err(e.into()))?;
                        at += n as u64;
                        rows_written.fetch_add(n as u64, Ordering::Relaxed);
                        done(n as u64);
                    }
                    writer.close().await.map_err(|e| err(e.into()))?;
                    tracing::debug!(file = %path, rows, "file written");
                    Ok(SynthFile { name, rows })
                })
            });
            async move {
                task.await.map_err(|e| SynthError::Write {
                    file: "a worker".into(),
                    source: e.into(),
                })?
            }
        })
        .buffered(threads)
        .collect()
        .await;
    let files = results.into_iter().collect::<Result<Vec<_>, _>>()?;
    Ok(Synthesized {
        preset: options.preset,
        seed: options.seed,
        rows: rows_written.load(Ordering::Relaxed),
        files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt;
    use object_store::memory::InMemory;

    #[test]
    fn files_cover_every_row_once() {
        for (rows, files) in [(10u64, 3usize), (9, 3), (1, 1), (7, 7), (1000, 6)] {
            let l = layout(&SynthOptions {
                rows,
                files,
                ..Default::default()
            })
            .unwrap();
            let mut next = 0;
            for (_, start, n) in &l {
                assert_eq!(*start, next);
                assert!(*n > 0);
                next += n;
            }
            assert_eq!(next, rows, "{rows} rows in {files} files");
        }
        assert!(
            layout(&SynthOptions {
                rows: 2,
                files: 3,
                ..Default::default()
            })
            .is_err()
        );
        assert!(
            layout(&SynthOptions {
                files: 0,
                ..Default::default()
            })
            .is_err()
        );
    }

    /// The same options give the same bytes, with any number of workers.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn same_seed_same_bytes() {
        let mut got = Vec::new();
        for threads in [1, 3] {
            let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
            let options = SynthOptions {
                rows: 300_000,
                files: 3,
                seed: 5,
                row_group_rows: 50_000,
                threads,
                ..Default::default()
            };
            let out = synthesize(
                Arc::clone(&store),
                &Path::from("d"),
                &options,
                Arc::new(|_| {}),
            )
            .await
            .unwrap();
            assert_eq!(out.rows, 300_000);
            let mut bytes = Vec::new();
            for f in &out.files {
                let p = Path::from("d").join(f.name.as_str());
                bytes.push(store.get(&p).await.unwrap().bytes().await.unwrap());
            }
            got.push(bytes);
        }
        assert_eq!(got[0], got[1]);
    }
}
