//! Times SQL statements against a pipeline's source, through strata's engine: a probe
//! for trying plan variants (settings, casts, groupings) without rebuilding strata.
//!
//!     sql_timer PIPELINE 'SQL' ['SQL' ...]
//!
//! Each statement runs once in order (`SET ...` statements change the session for the
//! ones after); prints `seconds=<t> rows=<n>` per statement.

use strata_engine::{Engine, EngineOptions, SOURCE_TABLE};
use strata_spec::Pipeline;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args.next().ok_or("usage: sql_timer PIPELINE SQL...")?;
    let pipeline = Pipeline::load(&path)?;
    let engine = Engine::new(&EngineOptions::default())?;
    engine
        .open_source(&pipeline.source.url, &pipeline.storage, SOURCE_TABLE)
        .await?;
    for sql in args {
        let started = std::time::Instant::now();
        let df = engine.context().sql(&sql).await?;
        let rows = strata_benchmarks::drain(df).await?;
        println!(
            "seconds={:.3} rows={rows} sql={sql}",
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
