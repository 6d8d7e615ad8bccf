//! Helpers for the benchmarks in `benchmarks/`; see `BENCHMARKS.md`.

use datafusion::dataframe::DataFrame;
use datafusion::error::Result;
use futures::StreamExt;

/// The allocator strata's CLI uses, so its binaries and these (the scan floor above
/// all) are compared like for like; the floor also scans faster on it than on the
/// system allocator (BENCHMARKS.md, eleventh session).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Runs `df`, draining every partition concurrently (as an aggregate would), and
/// returns the number of rows it produced.
pub async fn drain(df: DataFrame) -> Result<usize> {
    let tasks: Vec<_> = df
        .execute_stream_partitioned()
        .await?
        .into_iter()
        .map(|mut stream| {
            tokio::spawn(async move {
                let mut n = 0usize;
                while let Some(batch) = stream.next().await {
                    n += batch?.num_rows();
                }
                Ok::<_, datafusion::error::DataFusionError>(n)
            })
        })
        .collect();
    let mut rows = 0;
    for t in tasks {
        rows += t
            .await
            .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))??;
    }
    Ok(rows)
}
