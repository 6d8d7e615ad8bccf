//! The floor for a profile: decode the columns a pipeline's profile reads, and nothing
//! else, through the same engine and source registration strata uses.
//!
//!     scan_floor PIPELINE [--coded]
//!
//! With `--coded`, the group and label columns are read the way `strata profile` reads
//! them (strings as Parquet dictionaries, `Engine::register_coded`); without it, as
//! DataFusion reads them by default (string views). Prints `rows=<n> seconds=<t>` for the
//! scan alone (after the source is opened).

use datafusion::prelude::ident;
use strata_engine::{CODED_SOURCE_TABLE, Engine, EngineOptions, SOURCE_TABLE};
use strata_spec::Pipeline;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args.next().ok_or("usage: scan_floor PIPELINE [--coded]")?;
    let coded = match args.next().as_deref() {
        None => false,
        Some("--coded") => true,
        Some(other) => {
            return Err(format!(
                "unknown argument `{other}`; usage: scan_floor PIPELINE [--coded]"
            )
            .into());
        }
    };
    let pipeline = Pipeline::load(&path)?;
    let engine = Engine::new(&EngineOptions::default())?;
    let source = engine
        .open_source(&pipeline.source.url, &pipeline.storage, SOURCE_TABLE)
        .await?;
    let keys = pipeline.cell_columns();
    let table = if coded {
        engine
            .register_coded(&source, CODED_SOURCE_TABLE, &keys)
            .await?;
        CODED_SOURCE_TABLE
    } else {
        SOURCE_TABLE
    };
    let mut columns: Vec<_> = keys.iter().map(ident).collect();
    if let Some(w) = &pipeline.source.weight_column {
        columns.push(ident(w));
    }
    let started = std::time::Instant::now();
    let df = engine.context().table(table).await?.select(columns)?;
    let rows = strata_benchmarks::drain(df).await?;
    println!("rows={rows} seconds={:.3}", started.elapsed().as_secs_f64());
    Ok(())
}
