//! `strata-scheduler`: Ballista 55's scheduler (its flags: `--help`) with strata's
//! functions, object stores and shard writer in every job's session.

use std::sync::Arc;

use ballista_core::error::BallistaError;
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::{Config, SchedulerConfig};
use ballista_scheduler::scheduler_process::start_server;
use clap::Parser;

fn main() -> ballista_core::error::Result<()> {
    // Ballista's binary runs its planner on deep stacks: plans of many expressions
    // recurse deeply when they are decoded
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_io()
        .enable_time()
        .thread_stack_size(32 * 1024 * 1024)
        .build()
        .map_err(BallistaError::IoError)?;
    runtime.block_on(run())
}

async fn run() -> ballista_core::error::Result<()> {
    let opt = Config::parse();
    strata_cluster::init_logging(&opt.log_level_setting);
    let addr = format!("{}:{}", opt.bind_host, opt.bind_port);
    let addr = addr
        .parse()
        .map_err(|e: std::net::AddrParseError| BallistaError::Configuration(e.to_string()))?;
    let config: SchedulerConfig = opt.try_into()?;
    let mut config =
        config.with_override_session_builder(Arc::new(strata_cluster::scheduler_session));
    // strata's shard writer node, besides Ballista's own
    config.override_logical_codec = Some(Arc::new(strata_engine::cluster::LogicalCodec::default()));
    config.override_physical_codec =
        Some(Arc::new(strata_engine::cluster::PhysicalCodec::default()));
    let cluster = BallistaCluster::new_from_config(&config).await?;
    tracing::info!(%addr, "strata scheduler starting");
    start_server(cluster, addr, Arc::new(config)).await
}
