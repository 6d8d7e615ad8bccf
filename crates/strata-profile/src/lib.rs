//! Group-representation profile.
//!
//! One DataFusion pass over the needed columns counts the finest cells (the
//! intersection of every protected attribute); each attribute alone and every other
//! intersection is rolled up from those cells here, which is far cheaper than asking
//! the engine for each grouping (`GROUPING SETS`) and gives identical numbers.

mod compute;
mod render;

pub use compute::profile;
pub use render::{Format, render};
pub use strata_run::{GroupStats, PROFILE_SCHEMA_VERSION, Profile};

/// Why a profile could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error(transparent)]
    Engine(#[from] strata_engine::EngineError),
    #[error(transparent)]
    Spec(#[from] strata_spec::SpecError),
}
