//! Apache Ballista processes that know strata: `strata-scheduler` and
//! `strata-executor` are Ballista 55's own scheduler and executor with strata's
//! functions registered (plans name them; a process without them fails with "There is
//! no UDF named …") and strata's object stores ([`ClusterStores`]: `s3://` and the
//! other stores from the process's environment).
//!
//! The client side, `--engine df://host:port`, is `strata-engine`'s `ballista` feature.
//! Deployment, flags and what runs where: docs/cluster.md.

use std::sync::Arc;

use ballista_core::registry::BallistaFunctionRegistry;
use datafusion::common::Result;
use datafusion::execution::SessionState;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::prelude::SessionConfig;

pub use strata_engine::cluster::ClusterStores;

/// Ballista's default functions and strata's: what an executor decodes plans with.
pub fn function_registry() -> BallistaFunctionRegistry {
    let mut registry = BallistaFunctionRegistry::default();
    for udf in strata_functions::scalar_functions() {
        registry
            .scalar_functions
            .insert(udf.name().to_string(), Arc::new(udf));
    }
    for udaf in strata_functions::aggregate_functions() {
        registry
            .aggregate_functions
            .insert(udaf.name().to_string(), Arc::new(udaf));
    }
    registry
}

/// The runtime of a scheduler's or executor's sessions: strata's stores, spill files
/// under `temp_dir` (the executor's work dir) when given.
pub fn runtime(temp_dir: Option<&str>) -> Result<Arc<RuntimeEnv>> {
    let mut builder =
        RuntimeEnvBuilder::new().with_object_store_registry(Arc::new(ClusterStores::new()));
    if let Some(dir) = temp_dir {
        builder = builder.with_temp_file_path(dir);
    }
    builder.build_arc()
}

/// The scheduler's session for a job: Ballista's settings from the client, strata's
/// functions and stores (the scheduler lists the source's files while it plans).
pub fn scheduler_session(config: SessionConfig) -> Result<SessionState> {
    let registry = function_registry();
    Ok(SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(runtime(None)?)
        .with_default_features()
        // plans the shard writer node (it runs on an executor)
        .with_query_planner(Arc::new(strata_publish::StrataQueryPlanner))
        .with_scalar_functions(registry.scalar_functions.into_values().collect())
        .with_aggregate_functions(registry.aggregate_functions.into_values().collect())
        .with_window_functions(registry.window_functions.into_values().collect())
        .build())
}

/// Logging for both processes: `RUST_LOG`, else `default` (Ballista's own flag).
pub fn init_logging(default: &str) {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| default.to_string());
    tracing_subscriber::fmt()
        .with_ansi(false)
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_holds_every_strata_function() {
        let registry = function_registry();
        for name in [
            "strata_hash",
            "strata_group_hash",
            "strata_if",
            "strata_lookup",
        ] {
            assert!(registry.scalar_functions.contains_key(name), "{name}");
        }
        for name in ["strata_cells", "strata_cut_zones"] {
            assert!(registry.aggregate_functions.contains_key(name), "{name}");
        }
        // and Ballista's defaults beside them
        assert!(registry.scalar_functions.contains_key("abs"));
        assert!(registry.aggregate_functions.contains_key("sum"));
    }
}
