//! Group-representation profile.
//!
//! One DataFusion pass over the needed columns counts the finest cells (the
//! intersection of every protected attribute); each attribute alone and every other
//! intersection is rolled up from those cells here, which is far cheaper than asking
//! the engine for each grouping (`GROUPING SETS`) and gives identical numbers.

mod compute;
mod render;
mod report;

pub use compute::profile;
pub use render::{Format, render};
pub use report::{GroupStats, Profile, SCHEMA_VERSION};

/// Why a profile could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error(transparent)]
    Engine(#[from] strata_engine::EngineError),
    #[error(transparent)]
    Spec(#[from] strata_spec::SpecError),
}
