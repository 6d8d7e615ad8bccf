//! The one place strata builds its DataFusion session.
//!
//! Every stage asks the [`Engine`] for a session with the pipeline's object stores
//! registered and its source opened as a table, so swapping the embedded engine for a
//! Ballista session later touches this crate only.

#[cfg(feature = "ballista")]
pub mod cluster;
mod coded;
mod error;
mod mapped;
mod schema;
mod source;
mod store;
mod weights;

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::ScalarValue;
use datafusion::execution::memory_pool::{FairSpillPool, TrackConsumersPool};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::{Expr, LogicalPlanBuilder};
use datafusion::prelude::{DataFrame, SessionConfig, SessionContext, lit};
use object_store::memory::InMemory;

pub use error::one_line;
pub use error::{BoxError, EngineError};
pub use schema::{LabelKind, check_schema, check_source};
pub use source::{SourceFile, SourceTable};
pub use store::object_store_for;
pub use weights::invalid_weights_error;

/// The name every stage's plans use for the pipeline's input.
pub const SOURCE_TABLE: &str = "source";

/// The pipeline's input with its group columns read as dictionaries
/// ([`Engine::register_coded`]).
pub const CODED_SOURCE_TABLE: &str = "strata_source_coded";

/// The most target partitions strata runs with (`--target-partitions` or
/// `DATAFUSION_EXECUTION_TARGET_PARTITIONS`): every partition holds buffers of its own,
/// so far more than cores only costs memory.
pub const MAX_TARGET_PARTITIONS: usize = 1024;

/// The largest batch (rows) strata lets `DATAFUSION_EXECUTION_BATCH_SIZE` set.
pub const MAX_BATCH_SIZE: usize = 1 << 20;

/// Knobs for the session, set from the CLI or the spec.
#[derive(Debug, Clone, Default)]
pub struct EngineOptions {
    /// DataFusion's `target_partitions`; defaults to the number of cores.
    pub target_partitions: Option<usize>,
    /// Memory for query execution, in bytes; sorts and aggregates spill to disk past it.
    pub memory_limit: Option<usize>,
    /// Where spill files go (DataFusion's sorts and aggregates, and the shard writer's
    /// routed rows); created if missing. Default: the system's temporary folder
    /// (`$TMPDIR`).
    pub spill_dir: Option<std::path::PathBuf>,
    /// Where plans run: `None` or `local` (this process), or `df://host:port`, an
    /// Apache Ballista scheduler (needs the `ballista` feature).
    pub engine: Option<String>,
}

/// A DataFusion session configured for strata.
#[derive(Clone)]
pub struct Engine {
    ctx: SessionContext,
    memory: Arc<InMemory>,
    memory_limit: Option<usize>,
    spill_dir: Option<std::path::PathBuf>,
    /// The Ballista engine URL, when plans run on a cluster.
    cluster: Option<String>,
}

impl Engine {
    pub fn new(options: &EngineOptions) -> Result<Self, EngineError> {
        // DataFusion's own settings from `DATAFUSION_*` variables (batch size, ...):
        // they tune speed and memory, never what strata computes
        let mut config = SessionConfig::from_env()
            .map_err(EngineError::datafusion(
                "reading DATAFUSION_* environment settings",
            ))?
            .with_information_schema(true);
        never_trust_parquet_statistics(&mut config);
        if let Some(n) = options.target_partitions {
            if !(1..=MAX_TARGET_PARTITIONS).contains(&n) {
                return Err(EngineError::Config(format!(
                    "target partitions must be from 1 to {MAX_TARGET_PARTITIONS}, not {n}"
                )));
            }
            config = config.with_target_partitions(n);
        } else if config.target_partitions() > MAX_TARGET_PARTITIONS {
            return Err(EngineError::Config(format!(
                "DATAFUSION_EXECUTION_TARGET_PARTITIONS is {}; strata takes at most {MAX_TARGET_PARTITIONS}",
                config.target_partitions()
            )));
        }
        let batch = config.batch_size();
        if !(1..=MAX_BATCH_SIZE).contains(&batch) {
            return Err(EngineError::Config(format!(
                "DATAFUSION_EXECUTION_BATCH_SIZE is {batch}; strata takes 1 to {MAX_BATCH_SIZE}"
            )));
        }
        let mut runtime = RuntimeEnvBuilder::new();
        if let Some(bytes) = options.memory_limit {
            // A fair pool: curation runs two sorts at once (a window's and the output's),
            // and a greedy pool lets the first take everything and starve the other.
            let pool = FairSpillPool::new(bytes);
            let top = std::num::NonZeroUsize::new(5).expect("non-zero");
            runtime = runtime.with_memory_pool(Arc::new(TrackConsumersPool::new(pool, top)));
        }
        if let Some(dir) = &options.spill_dir {
            std::fs::create_dir_all(dir)
                .map_err(|e| EngineError::Config(format!("spill folder {}: {e}", dir.display())))?;
            runtime = runtime.with_temp_file_path(dir);
        }
        let runtime = runtime
            .build_arc()
            .map_err(EngineError::datafusion("building the runtime"))?;
        let cluster = match options.engine.as_deref().map(str::trim) {
            None | Some("local") => None,
            Some(url) => Some(url.to_string()),
        };
        let ctx = match &cluster {
            None => SessionContext::new_with_config_rt(config, runtime),
            Some(url) => remote(url, config, runtime)?,
        };
        // strata's functions registered in every session (and, on a cluster, every
        // executor) so its plans can be shipped as SQL or serialized plans.
        strata_functions::register(&ctx);
        // `memory://` is an in-process store: tests and embedders put objects in it
        // through `Engine::memory_store` and read them back like any other URL.
        let memory = Arc::new(InMemory::new());
        let url = url::Url::parse("memory://").expect("static URL");
        ctx.register_object_store(&url, memory.clone());
        // `file://`: ranged reads mapped, not copied into fresh buffers (docs/engine.md)
        mapped::register(ctx.runtime_env().object_store_registry.as_ref());
        Ok(Self {
            ctx,
            memory,
            memory_limit: options.memory_limit,
            spill_dir: options.spill_dir.clone(),
            cluster,
        })
    }

    /// `local`, or the Ballista engine URL the plans run on.
    pub fn name(&self) -> &str {
        self.cluster.as_deref().unwrap_or("local")
    }

    /// Whether plans run on a Ballista cluster.
    pub fn is_cluster(&self) -> bool {
        self.cluster.is_some()
    }

    /// The DataFusion session: stages build their plans on it.
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// The store for `url` (registered in the session first if it is not yet), for
    /// stages that write objects themselves: shards, manifests, summaries.
    pub fn store_for(
        &self,
        url: &url::Url,
        storage: &strata_spec::StorageOptions,
    ) -> Result<Arc<dyn object_store::ObjectStore>, EngineError> {
        if let Some(store) = object_store_for(url, storage)? {
            self.ctx.register_object_store(url, store);
        }
        let base = datafusion::execution::object_store::ObjectStoreUrl::parse(
            &url[..url::Position::BeforePath],
        )
        .map_err(EngineError::datafusion(format!("output `{url}`")))?;
        self.ctx
            .runtime_env()
            .object_store(base)
            .map_err(EngineError::datafusion(format!("output `{url}`")))
    }

    /// The memory limit set for this run, if any: stages that hold rows themselves
    /// spill to disk when one is set.
    pub fn memory_limit(&self) -> Option<usize> {
        self.memory_limit
    }

    /// Where spill files go, if not the system's temporary folder.
    pub fn spill_dir(&self) -> Option<&std::path::Path> {
        self.spill_dir.as_deref()
    }

    /// Small driver-side rows (a profile, each cell's values) as a frame plans can read:
    /// an in-memory table here, a `VALUES` plan on a cluster, which ships plans and
    /// cannot reach this process's memory. Names and types are kept either way.
    pub fn small_frame(
        &self,
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
    ) -> datafusion::error::Result<DataFrame> {
        if !self.is_cluster() {
            let table = datafusion::datasource::MemTable::try_new(schema, vec![batches])?;
            return self.ctx.read_table(Arc::new(table));
        }
        let mut rows: Vec<Vec<Expr>> = Vec::new();
        for b in &batches {
            for r in 0..b.num_rows() {
                let row = b
                    .columns()
                    .iter()
                    .map(|c| ScalarValue::try_from_array(c, r).map(lit))
                    .collect::<datafusion::error::Result<Vec<_>>>()?;
                rows.push(row);
            }
        }
        let empty = rows.is_empty();
        if empty {
            // one typed row of nulls, filtered out below: VALUES needs a row
            rows.push(
                schema
                    .fields()
                    .iter()
                    .map(|f| ScalarValue::try_from(f.data_type()).map(lit))
                    .collect::<datafusion::error::Result<Vec<_>>>()?,
            );
        }
        // decoded on the scheduler, VALUES names its columns column1, column2, ...:
        // the projection gives them their names (and types) back
        let names: Vec<Expr> = schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| {
                datafusion::prelude::cast(
                    datafusion::prelude::col(format!("column{}", i + 1)),
                    f.data_type().clone(),
                )
                .alias(f.name())
            })
            .collect();
        let mut plan = LogicalPlanBuilder::values(rows)?.project(names)?;
        if empty {
            plan = plan.filter(lit(false))?;
        }
        Ok(DataFrame::new(self.ctx.state(), plan.build()?))
    }

    /// [`Engine::small_frame`] registered as table `name` (replacing one of that name).
    pub fn register_small(&self, name: &str, batch: RecordBatch) -> datafusion::error::Result<()> {
        let frame = self.small_frame(batch.schema(), vec![batch])?;
        self.ctx.deregister_table(name)?;
        self.ctx.register_table(name, frame.into_view())?;
        Ok(())
    }

    /// The store behind `memory://` URLs.
    pub fn memory_store(&self) -> Arc<InMemory> {
        self.memory.clone()
    }
}

/// Parquet's min/max statistics leave NaN out (as the format says), and DataFusion 55
/// trusts them in three places that then change what a query returns: a file whose
/// float column has min = max is read as that constant (its NaNs replaced; the opener's
/// `constant_columns_from_stats`, fed by `collect_statistics`), `min`/`max` answered from
/// the footers, and row groups or pages pruned for predicates only NaN satisfies
/// (apache/datafusion#15812, #24804). strata reads every row of its inputs anyway, so
/// statistics buy it nothing: they are off, whatever the `DATAFUSION_*` variables say.
#[cfg(feature = "ballista")]
fn remote(
    url: &str,
    config: SessionConfig,
    runtime: Arc<datafusion::execution::runtime_env::RuntimeEnv>,
) -> Result<SessionContext, EngineError> {
    cluster::remote_context(cluster::scheduler_address(url)?, config, runtime)
}

#[cfg(not(feature = "ballista"))]
fn remote(
    url: &str,
    _config: SessionConfig,
    _runtime: Arc<datafusion::execution::runtime_env::RuntimeEnv>,
) -> Result<SessionContext, EngineError> {
    Err(EngineError::Config(format!(
        "engine `{url}`: this strata was built without Ballista support \
         (build it with `--features ballista`, README \"Running on a cluster\")"
    )))
}

fn never_trust_parquet_statistics(config: &mut SessionConfig) {
    let options = config.options_mut();
    options.execution.collect_statistics = false;
    options.execution.parquet.pruning = false;
    options.execution.parquet.enable_page_index = false;
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("session_id", &self.ctx.session_id())
            .finish_non_exhaustive()
    }
}
