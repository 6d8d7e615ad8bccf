//! strata as a library, as `deltalake` is to delta-rs's crates: one [`Pipeline`] opens a
//! spec's source once (engine, object stores, schema checks) and runs its stages, each
//! handing its results to the next in memory. The `strata` binary is a thin front over
//! it; an embedder (an Airflow operator, a notebook, `strata run`) calls the same.
//!
//! ```ignore
//! let pipeline = strata::Pipeline::open("pipelines/adult.toml", &Default::default()).await?;
//! let profile = pipeline.profile().await?;
//! let published = pipeline
//!     .curate(&strata::CurateOptions { out: "/tmp/adult-curated".into(), ..Default::default() })
//!     .await?;
//! let checks = pipeline
//!     .check(strata::CheckOptions {
//!         out: Some(published.run_url.clone()),
//!         profile: Some(profile),
//!         ..strata::CheckOptions::default()
//!     })
//!     .await?;
//! assert!(!checks.any_error());
//! ```
//!
//! (`tests/pipeline.rs` runs this on the shipped Adult data and checks what it returns.)

use std::path::Path;

pub use strata_check::{CheckOptions, CheckRun, StageSelection};
pub use strata_curate::{CurateOptions, Published};
pub use strata_engine::{EngineOptions, LabelKind, SourceTable};
pub use strata_run::{Curation, Manifest, Profile};
pub use strata_spec as spec;

use strata_engine::{Engine, SOURCE_TABLE};

/// Why a stage could not run. Each displays as one line; the stage's own error is the
/// source.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Spec(#[from] strata_spec::SpecError),
    #[error(transparent)]
    Engine(#[from] strata_engine::EngineError),
    #[error(transparent)]
    Profile(#[from] strata_profile::ProfileError),
    #[error(transparent)]
    Curate(#[from] strata_curate::CurateError),
    #[error(transparent)]
    Check(#[from] strata_check::CheckError),
    #[error(transparent)]
    Run(#[from] strata_run::RunError),
}

/// A pipeline spec with its source opened and its schema checked (every named column in
/// every file), in a session of its own.
#[derive(Debug)]
pub struct Pipeline {
    spec: strata_spec::Pipeline,
    engine: Engine,
    source: SourceTable,
    label_kind: LabelKind,
}

impl Pipeline {
    /// Loads the spec at `path` and opens its source.
    pub async fn open(path: impl AsRef<Path>, options: &EngineOptions) -> Result<Self, Error> {
        Self::from_spec(strata_spec::Pipeline::load(path)?, options).await
    }

    /// Opens the source of an already loaded spec (e.g. one whose source URL was
    /// overridden with [`strata_spec::Pipeline::with_source_url`]).
    pub async fn from_spec(
        spec: strata_spec::Pipeline,
        options: &EngineOptions,
    ) -> Result<Self, Error> {
        let engine = Engine::new(options)?;
        let source = engine
            .open_source(&spec.source.url, &spec.storage, SOURCE_TABLE)
            .await?;
        let label_kind = strata_engine::check_source(&spec, &source)?;
        Ok(Self {
            spec,
            engine,
            source,
            label_kind,
        })
    }

    pub fn spec(&self) -> &strata_spec::Pipeline {
        &self.spec
    }

    /// The files read and their merged schema.
    pub fn source(&self) -> &SourceTable {
        &self.source
    }

    pub fn label_kind(&self) -> LabelKind {
        self.label_kind
    }

    /// The group-representation profile of the source.
    pub async fn profile(&self) -> Result<Profile, Error> {
        let done =
            strata_profile::profile(&self.engine, &self.spec, &self.source, self.label_kind).await;
        self.located(done.map_err(Error::from)).await
    }

    /// Split, curate and publish (or find the run already published).
    pub async fn curate(&self, options: &CurateOptions) -> Result<Published, Error> {
        let done = strata_curate::curate(&self.engine, &self.spec, &self.source, options).await;
        self.located(done.map_err(Error::from)).await
    }

    /// The SQL checks; a profile in `options` is used as it is instead of computed again.
    pub async fn check(&self, options: CheckOptions) -> Result<CheckRun, Error> {
        let done = strata_check::check(
            &self.engine,
            &self.spec,
            &self.source,
            self.label_kind,
            &options,
        )
        .await;
        self.located(done.map_err(Error::from)).await
    }

    /// A stage that failed on bytes that are not UTF-8 (the Parquet reader names neither
    /// file nor column) fails naming both.
    async fn located<T>(&self, done: Result<T, Error>) -> Result<T, Error> {
        let Err(e) = done else { return done };
        let text = e.to_string().to_ascii_lowercase();
        if !(text.contains("utf-8") || text.contains("utf8")) {
            return Err(e);
        }
        match self.engine.find_invalid_utf8(&self.source).await {
            Some((file, column)) => {
                let message = format!(
                    "column `{column}` holds bytes that are not valid UTF-8, which a string \
                     column must be ({})",
                    strata_engine::one_line(&e.to_string())
                );
                Err(Error::Engine(
                    strata_engine::EngineError::bad_source(file, message).caused_by(e),
                ))
            }
            None => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adult() -> std::path::PathBuf {
        // the runner's value, not the one compiled in: a test binary reused from a build
        // of the same sources at another path (CI's bare clones) must not look there
        Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap_or(env!("CARGO_MANIFEST_DIR").into()))
            .join("../../pipelines/adult.toml")
    }

    /// The stages in one session, the profile handed to the checks in memory: the same
    /// check results as when the checks compute it themselves, and the published run is
    /// the one `curate` reports.
    #[tokio::test]
    async fn stages_hand_their_results_on() {
        let pipeline = Pipeline::open(adult(), &EngineOptions::default())
            .await
            .unwrap();
        let profile = pipeline.profile().await.unwrap();
        assert_eq!(profile.total_rows, 32_561);
        let out = std::env::temp_dir().join(format!("strata-facade-{}", std::process::id()));
        let published = pipeline
            .curate(&CurateOptions {
                out: out.display().to_string(),
                ..CurateOptions::default()
            })
            .await
            .unwrap();
        let with = pipeline
            .check(CheckOptions {
                out: Some(published.run_url.clone()),
                profile: Some(profile),
                ..CheckOptions::default()
            })
            .await
            .unwrap();
        let without = pipeline
            .check(CheckOptions {
                out: Some(published.run_url.clone()),
                ..CheckOptions::default()
            })
            .await
            .unwrap();
        let statuses = |r: &CheckRun| {
            r.results
                .iter()
                .map(|c| (c.check.name.clone(), c.status, c.failing_rows))
                .collect::<Vec<_>>()
        };
        assert!(!with.results.is_empty());
        assert_eq!(statuses(&with), statuses(&without));
        assert!(
            with.results
                .iter()
                .any(|c| c.stage == strata_check::Stage::Curated)
        );
        std::fs::remove_dir_all(&out).ok();
    }
}
