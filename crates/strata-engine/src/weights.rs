//! Row weights: the expression that finds unusable weights and the error that reports
//! them, shared by every stage that reads the weight column in its own pass.

use datafusion::arrow::datatypes::DataType;
use datafusion::functions::math::expr_fn::isnan;
use datafusion::prelude::{Expr, cast, lit};
use strata_spec::{Pipeline, SpecError};

/// 1 for a row whose weight (already cast to Float64) is null, negative or NaN, else 0;
/// sum it in the stage's own aggregate so the check costs no extra pass.
pub fn invalid_weight(weight: Expr) -> Expr {
    cast(weight.clone().is_null().or(weight.clone().lt(lit(0.0))).or(isnan(weight)), DataType::Int64)
}

/// The error for `count` unusable weights, located at `source.weight_column`.
pub fn invalid_weights_error(pipeline: &Pipeline, count: u64, source_url: &str) -> SpecError {
    pipeline.error_at(
        "source.weight_column",
        format!(
            "{count} rows of source `{source_url}` have a null, negative or NaN weight in column `{}`",
            pipeline.source.weight_column.as_deref().unwrap_or_default()
        ),
    )
}
