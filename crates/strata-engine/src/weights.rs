//! Reporting unusable weights against the spec (the rule itself, and the exact sums,
//! are `strata_functions::weights`).

use strata_functions::{MAX_WEIGHT, MIN_POSITIVE_WEIGHT};
use strata_spec::{Pipeline, SpecError};

/// The error for `count` unusable weights, located at `source.weight_column`.
pub fn invalid_weights_error(pipeline: &Pipeline, count: u64, source_url: &str) -> SpecError {
    pipeline.error_at(
        "source.weight_column",
        format!(
            "{count} rows of source `{source_url}` have an unusable weight in column `{}` \
             (null, NaN, negative, infinite, or outside [{MIN_POSITIVE_WEIGHT:e}, \
             {MAX_WEIGHT:e}]; zero is allowed)",
            pipeline.source.weight_column.as_deref().unwrap_or_default()
        ),
    )
}
