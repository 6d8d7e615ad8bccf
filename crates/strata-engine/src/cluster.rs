//! The Ballista side of the engine: a session whose plans run on a cluster, and the
//! object-store registry its scheduler and executors resolve URLs with.
//!
//! A `df://host:port` engine builds the same `SessionState` as the embedded one
//! (strata's settings, functions and stores) and hands it to Ballista's query planner,
//! which ships each logical plan to the scheduler. Functions travel by name, so the
//! scheduler and every executor register the same ones (`strata-cluster`); per-cell
//! tables travel inside the plans as literals. What runs where: docs/cluster.md.

use std::sync::Arc;

use ballista_core::extension::{SessionConfigExt, SessionStateExt};
use ballista_core::serde::{BallistaLogicalExtensionCodec, BallistaPhysicalExtensionCodec};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::TableProvider;
use datafusion::common::TableReference;
use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::file_format::FileFormatFactory;
use datafusion::execution::TaskContext;
use datafusion::execution::object_store::{DefaultObjectStoreRegistry, ObjectStoreRegistry};
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::logical_expr::{AggregateUDF, Extension, LogicalPlan, ScalarUDF, WindowUDF};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion_proto::logical_plan::LogicalExtensionCodec;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use object_store::ObjectStore;
use strata_publish::{ShardWriterExec, ShardWriterNode};
use url::Url;

use crate::EngineError;

/// The scheme of a Ballista engine URL.
pub const SCHEME: &str = "df";

/// Ballista's default scheduler port.
pub const DEFAULT_PORT: u16 = 50050;

/// The scheduler address (`http://host:port`) of a `df://host[:port]` engine URL.
pub fn scheduler_address(engine: &str) -> Result<String, EngineError> {
    let bad = |why: &str| {
        EngineError::Config(format!(
            "engine `{engine}`: {why} (expected `local` or `df://host:port`)"
        ))
    };
    let url = Url::parse(engine).map_err(|e| bad(&e.to_string()))?;
    if url.scheme() != SCHEME {
        return Err(bad(&format!("unknown scheme `{}`", url.scheme())));
    }
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| bad("no host"))?;
    if !url.path().trim_matches('/').is_empty() || url.query().is_some() {
        return Err(bad("a scheduler address has no path or query"));
    }
    Ok(format!(
        "http://{host}:{}",
        url.port().unwrap_or(DEFAULT_PORT)
    ))
}

/// A session whose plans run on the Ballista scheduler at `scheduler` (from
/// [`scheduler_address`]), with the embedded engine's settings and runtime.
pub(crate) fn remote_context(
    scheduler: String,
    config: SessionConfig,
    runtime: Arc<RuntimeEnv>,
) -> Result<SessionContext, EngineError> {
    // Ballista's settings first: the one below lives in its namespace
    let mut config = config.upgrade_for_ballista();
    // Ballista 55's adaptive planner lost object stores ("No suitable object store
    // found", fixed after 55.0.0): the static planner runs strata's plans.
    config = config.set_bool(
        ballista_core::config::BALLISTA_ADAPTIVE_PLANNER_ENABLED,
        false,
    );
    let config = config
        .with_ballista_logical_extension_codec(Arc::new(LogicalCodec::default()))
        .with_ballista_physical_extension_codec(Arc::new(PhysicalCodec::default()));
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(runtime)
        .with_default_features()
        .build()
        .upgrade_for_ballista(scheduler)
        .map_err(EngineError::datafusion(
            "connecting to the Ballista scheduler",
        ))?;
    Ok(SessionContext::new_with_state(state))
}

/// Functions travel by name in both codecs; whatever else a codec knows of them is
/// Ballista's.
macro_rules! functions_from_ballista {
    () => {
        fn try_decode_udf(&self, name: &str, buf: &[u8]) -> Result<Arc<ScalarUDF>> {
            self.ballista.try_decode_udf(name, buf)
        }
        fn try_encode_udf(&self, node: &ScalarUDF, buf: &mut Vec<u8>) -> Result<()> {
            self.ballista.try_encode_udf(node, buf)
        }
        fn try_decode_udaf(&self, name: &str, buf: &[u8]) -> Result<Arc<AggregateUDF>> {
            self.ballista.try_decode_udaf(name, buf)
        }
        fn try_encode_udaf(&self, node: &AggregateUDF, buf: &mut Vec<u8>) -> Result<()> {
            self.ballista.try_encode_udaf(node, buf)
        }
        fn try_decode_udwf(&self, name: &str, buf: &[u8]) -> Result<Arc<WindowUDF>> {
            self.ballista.try_decode_udwf(name, buf)
        }
        fn try_encode_udwf(&self, node: &WindowUDF, buf: &mut Vec<u8>) -> Result<()> {
            self.ballista.try_encode_udwf(node, buf)
        }
    };
}

/// Ballista's logical codec, and strata's shard writer node
/// ([`strata_publish::ShardWriterNode`]): what the client encodes plans with and the
/// scheduler decodes them with.
#[derive(Debug, Default)]
pub struct LogicalCodec {
    ballista: BallistaLogicalExtensionCodec,
}

impl LogicalExtensionCodec for LogicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[LogicalPlan],
        ctx: &TaskContext,
    ) -> Result<Extension> {
        match ShardWriterNode::decode(buf)? {
            Some(spec) => {
                let [input] = inputs else {
                    return Err(DataFusionError::Internal(
                        "the shard writer has one input".into(),
                    ));
                };
                Ok(Extension {
                    node: Arc::new(ShardWriterNode::new(input.clone(), spec)?),
                })
            }
            None => self.ballista.try_decode(buf, inputs, ctx),
        }
    }
    fn try_encode(&self, node: &Extension, buf: &mut Vec<u8>) -> Result<()> {
        match node.node.as_any().downcast_ref::<ShardWriterNode>() {
            Some(writer) => {
                buf.extend(ShardWriterNode::encode(writer.spec())?);
                Ok(())
            }
            None => self.ballista.try_encode(node, buf),
        }
    }
    fn try_decode_table_provider(
        &self,
        buf: &[u8],
        table_ref: &TableReference,
        schema: SchemaRef,
        ctx: &TaskContext,
    ) -> Result<Arc<dyn TableProvider>> {
        self.ballista
            .try_decode_table_provider(buf, table_ref, schema, ctx)
    }
    fn try_encode_table_provider(
        &self,
        table_ref: &TableReference,
        node: Arc<dyn TableProvider>,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        self.ballista
            .try_encode_table_provider(table_ref, node, buf)
    }
    fn try_decode_file_format(
        &self,
        buf: &[u8],
        ctx: &TaskContext,
    ) -> Result<Arc<dyn FileFormatFactory>> {
        self.ballista.try_decode_file_format(buf, ctx)
    }
    fn try_encode_file_format(
        &self,
        buf: &mut Vec<u8>,
        node: Arc<dyn FileFormatFactory>,
    ) -> Result<()> {
        self.ballista.try_encode_file_format(buf, node)
    }
    functions_from_ballista!();
}

/// Ballista's physical codec, and strata's shard writer
/// ([`strata_publish::ShardWriterExec`]): what the scheduler encodes stages with and
/// the executors decode them with.
#[derive(Debug, Default)]
pub struct PhysicalCodec {
    ballista: BallistaPhysicalExtensionCodec,
}

impl PhysicalExtensionCodec for PhysicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match ShardWriterNode::decode(buf)? {
            Some(spec) => {
                let [input] = inputs else {
                    return Err(DataFusionError::Internal(
                        "the shard writer has one input".into(),
                    ));
                };
                Ok(Arc::new(ShardWriterExec::try_new(Arc::clone(input), spec)?))
            }
            None => self.ballista.try_decode(buf, inputs, ctx, proto_converter),
        }
    }
    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        match node.downcast_ref::<ShardWriterExec>() {
            Some(writer) => {
                buf.extend(ShardWriterNode::encode(writer.spec())?);
                Ok(())
            }
            None => self.ballista.try_encode(node, buf, proto_converter),
        }
    }
    functions_from_ballista!();
}

/// Object stores by URL for a scheduler or executor: `file://` as `strata` serves it
/// (ranged reads mapped, `crate::mapped`) and stores registered by hand; any other URL
/// strata reads (`s3://`, `gs://`, `az://`, `http(s)://`) gets a store built from the
/// process's environment (`AWS_*`, `GOOGLE_*`, `AZURE_*`), as `strata` itself builds
/// them, kept for the next task. Credentials stay in the environment: nothing here
/// logs them.
#[derive(Debug)]
pub struct ClusterStores {
    known: DefaultObjectStoreRegistry,
}

impl ClusterStores {
    pub fn new() -> Self {
        let known = DefaultObjectStoreRegistry::new();
        crate::mapped::register(&known);
        Self { known }
    }
}

impl Default for ClusterStores {
    fn default() -> Self {
        Self::new()
    }
}

impl ObjectStoreRegistry for ClusterStores {
    fn register_store(
        &self,
        url: &Url,
        store: Arc<dyn ObjectStore>,
    ) -> Option<Arc<dyn ObjectStore>> {
        self.known.register_store(url, store)
    }

    fn deregister_store(&self, url: &Url) -> Result<Arc<dyn ObjectStore>> {
        self.known.deregister_store(url)
    }

    fn get_store(&self, url: &Url) -> Result<Arc<dyn ObjectStore>> {
        if let Ok(store) = self.known.get_store(url) {
            return Ok(store);
        }
        let storage = strata_spec::StorageOptions::default();
        match crate::object_store_for(url, &storage) {
            Ok(Some(store)) => {
                self.known.register_store(url, store.clone());
                Ok(store)
            }
            Ok(None) => self.known.get_store(url),
            Err(e) => Err(DataFusionError::External(Box::new(e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_urls() {
        assert_eq!(
            scheduler_address("df://10.0.0.5:50051").unwrap(),
            "http://10.0.0.5:50051"
        );
        assert_eq!(
            scheduler_address("df://scheduler").unwrap(),
            "http://scheduler:50050"
        );
        for bad in ["df://", "grpc://h:1", "df://h:1/x", "nonsense"] {
            let e = scheduler_address(bad).unwrap_err().to_string();
            assert!(e.contains(bad) && e.contains("df://host:port"), "{e}");
        }
    }

    #[test]
    fn file_urls_resolve_and_unknown_schemes_fail() {
        let stores = ClusterStores::new();
        assert!(
            stores
                .get_store(&Url::parse("file:///tmp/x").unwrap())
                .is_ok()
        );
        assert!(stores.get_store(&Url::parse("ftp://h/x").unwrap()).is_err());
    }
}
