//! `strata-executor`: Ballista 55's executor (its flags: `--help`) that decodes plans
//! with strata's functions and shard writer, and reads and writes strata's object stores.

use std::sync::Arc;

use ballista_executor::config::Config;
use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
use clap::Parser;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ballista_core::error::Result<()> {
    let opt = Config::parse();
    let mut config: ExecutorProcessConfig = opt.try_into()?;
    strata_cluster::init_logging(&config.special_mod_log_level);
    config.override_function_registry = Some(Arc::new(strata_cluster::function_registry()));
    config.override_logical_codec = Some(Arc::new(strata_engine::cluster::LogicalCodec::default()));
    config.override_physical_codec =
        Some(Arc::new(strata_engine::cluster::PhysicalCodec::default()));
    let work_dir = config.work_dir.clone();
    config.override_runtime_producer = Some(Arc::new(move |_| {
        strata_cluster::runtime(work_dir.as_deref())
    }));
    tracing::info!(
        scheduler = %format!("{}:{}", config.scheduler_host, config.scheduler_port),
        port = config.port,
        "strata executor starting"
    );
    start_executor_process(Arc::new(config)).await
}
