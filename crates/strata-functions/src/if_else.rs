//! `strata_if(condition, then, otherwise)`: `then` where the condition is true, else
//! `otherwise` (a null condition counts as false), on whole columns with Arrow's `zip`.
//!
//! DataFusion evaluates `CASE` (and `coalesce`, `nvl2`, which it rewrites to `CASE`)
//! branch by branch, filtering the rows each branch sees and merging them back: about a
//! tenth of curation's CPU went there. Curation's branches are columns and literals,
//! cheaper to take whole than to filter.

use datafusion::arrow::array::{Array, AsArray, BooleanArray};
use datafusion::arrow::compute::kernels::zip::zip;
use datafusion::arrow::compute::prep_null_mask_filter;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

pub const STRATA_IF: &str = "strata_if";

/// The UDF, for registering in a session and for building expressions.
pub fn strata_if_udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(StrataIf {
        signature: Signature::any(3, Volatility::Immutable),
    })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct StrataIf {
    signature: Signature,
}

impl ScalarUDFImpl for StrataIf {
    fn name(&self) -> &str {
        STRATA_IF
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match arg_types {
            [DataType::Boolean | DataType::Null, a, b] if a == b => Ok(a.clone()),
            [DataType::Boolean | DataType::Null, a, b] => {
                plan_err!("{STRATA_IF}: both branches must have one type, not {a} and {b}")
            }
            [c, ..] => plan_err!("{STRATA_IF}: the condition must be a boolean, not {c}"),
            _ => plan_err!("{STRATA_IF} takes a condition and two values"),
        }
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let [condition, then, otherwise] =
            <[ColumnarValue; 3]>::try_from(args.args).map_err(|_| {
                datafusion::error::DataFusionError::Execution(format!(
                    "{STRATA_IF} takes three arguments"
                ))
            })?;
        let mask = match condition {
            ColumnarValue::Scalar(ScalarValue::Boolean(Some(true))) => return Ok(then),
            ColumnarValue::Scalar(ScalarValue::Boolean(_) | ScalarValue::Null) => {
                return Ok(otherwise);
            }
            ColumnarValue::Scalar(s) => {
                return exec_err!(
                    "{STRATA_IF}: the condition must be a boolean, not {}",
                    s.data_type()
                );
            }
            ColumnarValue::Array(a) => a,
        };
        let Some(mask) = mask.as_boolean_opt() else {
            return exec_err!(
                "{STRATA_IF}: the condition must be a boolean, not {}",
                mask.data_type()
            );
        };
        let mask: BooleanArray = if mask.null_count() > 0 {
            prep_null_mask_filter(mask)
        } else {
            mask.clone()
        };
        let out = match (&then, &otherwise) {
            (ColumnarValue::Array(a), ColumnarValue::Array(b)) => zip(&mask, a, b)?,
            (ColumnarValue::Array(a), ColumnarValue::Scalar(b)) => zip(&mask, a, &b.to_scalar()?)?,
            (ColumnarValue::Scalar(a), ColumnarValue::Array(b)) => zip(&mask, &a.to_scalar()?, b)?,
            (ColumnarValue::Scalar(a), ColumnarValue::Scalar(b)) => {
                zip(&mask, &a.to_scalar()?, &b.to_scalar()?)?
            }
        };
        debug_assert_eq!(out.len(), n);
        Ok(ColumnarValue::Array(out))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Float64Array, Int64Array};
    use datafusion::prelude::*;

    use super::*;

    /// Compared with the same choice written as `CASE`, nulls included.
    #[tokio::test]
    async fn picks_like_case() {
        let ctx = SessionContext::new();
        ctx.register_udf(strata_if_udf());
        let c = BooleanArray::from(vec![Some(true), Some(false), None, Some(true)]);
        let x = Float64Array::from(vec![Some(1.5), Some(2.5), Some(3.5), None]);
        let y = Int64Array::from(vec![10, 20, 30, 40]);
        let batch = datafusion::arrow::record_batch::RecordBatch::try_from_iter([
            ("c", Arc::new(c) as Arc<dyn Array>),
            ("x", Arc::new(x) as Arc<dyn Array>),
            ("y", Arc::new(y) as Arc<dyn Array>),
        ])
        .unwrap();
        ctx.register_batch("t", batch).unwrap();
        for (pick, case) in [
            ("strata_if(c, x, 9.0)", "CASE WHEN c THEN x ELSE 9.0 END"),
            (
                "strata_if(c, y, y * 2)",
                "CASE WHEN c THEN y ELSE y * 2 END",
            ),
            (
                "strata_if(NOT c, 1.0, x)",
                "CASE WHEN NOT c THEN 1.0 ELSE x END",
            ),
            ("strata_if(true, y, 0)", "y"),
        ] {
            let sql = format!("SELECT {pick} AS a, {case} AS b FROM t");
            let rows = ctx.sql(&sql).await.unwrap().collect().await.unwrap();
            let (a, b) = (rows[0].column(0), rows[0].column(1));
            assert_eq!(a.as_ref(), b.as_ref(), "{sql}");
        }
        let err = ctx
            .sql("SELECT strata_if(c, x, y) FROM t")
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("both branches"), "{err}");
    }
}
