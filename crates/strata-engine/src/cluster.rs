//! The Ballista side of the engine: a session whose plans run on a cluster, and the
//! object-store registry its scheduler and executors resolve URLs with.
//!
//! A `df://host:port` engine builds the same `SessionState` as the embedded one
//! (strata's settings, functions and stores) and hands it to Ballista's query planner,
//! which ships each logical plan to the scheduler. Functions travel by name, so the
//! scheduler and every executor register the same ones (`strata-cluster`); per-cell
//! tables travel inside the plans as literals. What runs where: docs/cluster.md.

use std::sync::Arc;

use ballista_core::extension::SessionStateExt;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::object_store::{DefaultObjectStoreRegistry, ObjectStoreRegistry};
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use object_store::ObjectStore;
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
    let mut config = ballista_core::extension::SessionConfigExt::upgrade_for_ballista(config);
    // Ballista 55's adaptive planner lost object stores ("No suitable object store
    // found", fixed after 55.0.0): the static planner runs strata's plans.
    config = config.set_bool(
        ballista_core::config::BALLISTA_ADAPTIVE_PLANNER_ENABLED,
        false,
    );
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

/// Object stores by URL for a scheduler or executor: `file://` and stores registered
/// by hand as DataFusion's default registry serves them; any other URL strata reads
/// (`s3://`, `gs://`, `az://`, `http(s)://`) gets a store built from the process's
/// environment (`AWS_*`, `GOOGLE_*`, `AZURE_*`), as `strata` itself builds them, kept
/// for the next task. Credentials stay in the environment: nothing here logs them.
#[derive(Debug, Default)]
pub struct ClusterStores {
    known: DefaultObjectStoreRegistry,
}

impl ClusterStores {
    pub fn new() -> Self {
        Self::default()
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
