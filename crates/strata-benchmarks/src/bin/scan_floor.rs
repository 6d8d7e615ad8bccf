//! The floor for a profile: decode the columns a pipeline's profile reads, and nothing
//! else, through the same engine and source registration strata uses.
//!
//!     scan_floor PIPELINE
//!
//! Prints `rows=<n> seconds=<t>` for the scan alone (after the source is opened).

use datafusion::prelude::ident;
use strata_engine::{Engine, EngineOptions, SOURCE_TABLE};
use strata_spec::Pipeline;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args().nth(1).ok_or("usage: scan_floor PIPELINE")?;
    let pipeline = Pipeline::load(&path)?;
    let engine = Engine::new(&EngineOptions::default())?;
    engine.open_source(&pipeline.source.url, &pipeline.storage, SOURCE_TABLE).await?;
    let mut columns: Vec<_> = pipeline.groups.attributes.iter().map(ident).collect();
    columns.push(ident(&pipeline.label.column));
    if let Some(w) = &pipeline.source.weight_column {
        columns.push(ident(w));
    }
    let started = std::time::Instant::now();
    let df = engine.context().table(SOURCE_TABLE).await?.select(columns)?;
    let rows = strata_benchmarks::drain(df).await?;
    println!("rows={rows} seconds={:.3}", started.elapsed().as_secs_f64());
    Ok(())
}
