//! `strata shards verify`: re-reads a published run and checks it against its manifest.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Array, AsArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStore;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use url::Url;

use crate::destination::{Destination, resolve};
use crate::manifest::{Manifest, ShardEntry};
use crate::{RunError, sha256_hex};

/// Shards checked at once.
const CHECKS_IN_FLIGHT: usize = 4;

/// The outcome of a verification: `problems` is empty when the run is intact.
#[derive(Debug)]
pub struct VerifyReport {
    /// The run folder that was checked.
    pub run_url: String,
    pub manifest: Manifest,
    /// One line per problem, each naming the shard and what differs.
    pub problems: Vec<String>,
}

/// Checks every shard of the run `url` names (see [`resolve`]): that it exists, its size,
/// its SHA-256, its row count and its per-stratum rows and weight sums.
pub async fn verify(store: Arc<dyn ObjectStore>, url: &Url) -> Result<VerifyReport, RunError> {
    let (run, manifest) = resolve(store, url).await?;
    let checks = futures::stream::iter(
        manifest
            .shards
            .iter()
            .map(|s| check_shard(&run, &manifest, s)),
    )
    .buffered(CHECKS_IN_FLIGHT)
    .try_collect::<Vec<_>>()
    .await?;
    let mut problems: Vec<String> = checks.into_iter().flatten().collect();
    for totals in &manifest.splits {
        let shards: Vec<&ShardEntry> = manifest
            .shards
            .iter()
            .filter(|s| s.split == totals.split)
            .collect();
        let rows: u64 = shards.iter().map(|s| s.rows).sum();
        if shards.len() as u64 != totals.shards || rows != totals.rows {
            problems.push(format!(
                "split {}: the manifest's totals say {} shards and {} rows, its shards add up to {} and {rows}",
                totals.split,
                totals.shards,
                totals.rows,
                shards.len()
            ));
        }
    }
    Ok(VerifyReport {
        run_url: run.root().to_string(),
        manifest,
        problems,
    })
}

async fn check_shard(
    run: &Destination,
    manifest: &Manifest,
    shard: &ShardEntry,
) -> Result<Vec<String>, RunError> {
    let name = &shard.path;
    let Some(bytes) = run.get(name).await? else {
        return Ok(vec![format!("shard {name}: missing")]);
    };
    let mut problems = Vec::new();
    if bytes.len() as u64 != shard.bytes {
        problems.push(format!(
            "shard {name}: size is {} bytes, the manifest says {}",
            bytes.len(),
            shard.bytes
        ));
    }
    let sha = sha256_hex(&bytes);
    if sha != shard.sha256 {
        problems.push(format!(
            "shard {name}: sha256 is {sha}, the manifest says {}",
            shard.sha256
        ));
    }
    match tally(bytes, &manifest.stratum_columns) {
        Err(message) => problems.push(format!("shard {name}: not readable as Parquet: {message}")),
        Ok((rows, strata)) => {
            if rows != shard.rows {
                problems.push(format!(
                    "shard {name}: holds {rows} rows, the manifest says {}",
                    shard.rows
                ));
            }
            let expected: BTreeMap<&Vec<Option<String>>, (u64, f64)> = shard
                .strata
                .iter()
                .map(|s| (&s.values, (s.rows, s.weight_sum)))
                .collect();
            for (values, (rows, w)) in &strata {
                match expected.get(values) {
                    None => problems.push(format!(
                        "shard {name}: stratum {} has {rows} rows, the manifest lists none",
                        show(values)
                    )),
                    Some((want, want_w)) => {
                        if rows != want {
                            problems.push(format!("shard {name}: stratum {} has {rows} rows, the manifest says {want}", show(values)));
                        } else if (w - want_w).abs() > 1e-9 * want_w.abs().max(1.0) {
                            problems.push(format!("shard {name}: stratum {} has weight sum {w}, the manifest says {want_w}", show(values)));
                        }
                    }
                }
            }
            for (values, (want, _)) in &expected {
                if !strata.contains_key(*values) {
                    problems.push(format!(
                        "shard {name}: stratum {} is absent, the manifest says {want} rows",
                        show(values)
                    ));
                }
            }
        }
    }
    Ok(problems)
}

type Tally = BTreeMap<Vec<Option<String>>, (u64, f64)>;

/// Rows, and rows and weight sums per stratum, read from the shard's own bytes.
fn tally(bytes: Bytes, stratum_columns: &[String]) -> Result<(u64, Tally), String> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(|e| e.to_string())?;
    let rows = builder.metadata().file_metadata().num_rows() as u64;
    let arrow_schema = builder.schema().clone();
    let mut wanted: Vec<&str> = stratum_columns.iter().map(String::as_str).collect();
    wanted.push("sample_weight");
    let mut roots = Vec::new();
    for name in &wanted {
        roots.push(
            arrow_schema
                .index_of(name)
                .map_err(|_| format!("no column `{name}`"))?,
        );
    }
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
    let reader = builder
        .with_projection(mask)
        .build()
        .map_err(|e| e.to_string())?;
    let mut out: Tally = BTreeMap::new();
    for batch in reader {
        let batch = batch.map_err(|e| e.to_string())?;
        let text: Vec<_> = stratum_columns
            .iter()
            .map(|c| {
                cast(batch.column_by_name(c).expect("projected"), &DataType::Utf8)
                    .map_err(|e| e.to_string())
            })
            .collect::<Result<_, _>>()?;
        let w = cast(
            batch.column_by_name("sample_weight").expect("projected"),
            &DataType::Float64,
        )
        .map_err(|e| e.to_string())?;
        let w = w.as_primitive::<Float64Type>();
        for r in 0..batch.num_rows() {
            let key: Vec<Option<String>> = text
                .iter()
                .map(|a| {
                    let a = a.as_string::<i32>();
                    (!a.is_null(r)).then(|| a.value(r).to_string())
                })
                .collect();
            let e = out.entry(key).or_default();
            e.0 += 1;
            e.1 += if w.is_null(r) { 0.0 } else { w.value(r) };
        }
    }
    Ok((rows, out))
}

fn show(values: &[Option<String>]) -> String {
    let parts: Vec<&str> = values
        .iter()
        .map(|v| v.as_deref().unwrap_or("(missing)"))
        .collect();
    format!("({})", parts.join(", "))
}
