//! Row weights: the expression that finds unusable weights and the error that reports
//! them, shared by every stage that reads the weight column in its own pass, and the
//! one way strata sums weights exactly.
//!
//! Weight sums are exact: a float sum's last digits depend on the order of its
//! additions, and DataFusion hands file ranges to partitions as they free up, so rows
//! reach partitions in a different order from run to run. Weight sums set profile
//! figures and Kamiran–Calders factors, and strata promises byte-identical outputs, so
//! every weight is rounded to 10 decimals and summed as a 128-bit decimal, what SQL's
//! `sum(CAST(w AS DECIMAL(38, 10)))` computes (up to 10²⁸).

use datafusion::arrow::datatypes::{DataType, Decimal128Type};
use datafusion::functions::math::expr_fn::isnan;
use datafusion::prelude::{Expr, cast, lit};

/// The smallest positive weight strata accepts: the exact sums count in units of
/// 10⁻¹⁰, so a weight of 10⁻⁶ is held to within 0.005 %, and smaller ones would be
/// rounded away (a column of them would sum to zero).
pub const MIN_POSITIVE_WEIGHT: f64 = 1e-6;

/// The largest weight strata accepts: 10⁹ rows of it still sum well inside the exact
/// sums' 10²⁸, and every product with a reweighing factor stays finite.
pub const MAX_WEIGHT: f64 = 1e15;

/// Whether a (non-null) weight is one every stage can carry: zero, or a finite number
/// in [[`MIN_POSITIVE_WEIGHT`], [`MAX_WEIGHT`]]. NaN, infinities and negatives are not.
#[inline]
pub fn usable_weight(v: f64) -> bool {
    v == 0.0 || (MIN_POSITIVE_WEIGHT..=MAX_WEIGHT).contains(&v)
}

/// 1 for a row whose weight (already cast to Float64) is null or not
/// [`usable_weight`], else 0; sum it in the stage's own aggregate so the check costs no
/// extra pass.
pub fn invalid_weight(weight: Expr) -> Expr {
    let usable = weight.clone().eq(lit(0.0)).or(weight
        .clone()
        .gt_eq(lit(MIN_POSITIVE_WEIGHT))
        .and(weight.clone().lt_eq(lit(MAX_WEIGHT))));
    // NaN is tested on its own: DataFusion orders it above every number
    cast(
        weight.clone().is_null().or(isnan(weight)).or(!usable),
        DataType::Int64,
    )
}

/// Scale of the exact weight sums: weights are summed as multiples of 10⁻¹⁰.
pub const WEIGHT_SCALE: i8 = 10;
pub(crate) const WEIGHT_PRECISION: u8 = 38;

/// The type of an exact weight sum.
pub(crate) fn exact_weight_type() -> DataType {
    DataType::Decimal128(WEIGHT_PRECISION, WEIGHT_SCALE)
}

/// One weight as the integer multiple of 10⁻¹⁰ nearest to it, as SQL's
/// `CAST(w AS DECIMAL(38, 10))` (arrow's cast) gives it: `(v · 10¹⁰).round()`, half away
/// from zero, or `None` where no such decimal holds it (not finite, out of range).
/// Per value, for aggregates that read every row: arrow's cast writes a whole array and
/// calls `round` per value.
#[inline]
pub(crate) fn exact_weight(v: f64) -> Option<i128> {
    let scaled = v * 1e10;
    if scaled.abs() < SMALL {
        return Some(i128::from(round_small(scaled)));
    }
    exact_weight_slow(scaled)
}

/// Writes every weight's [`exact_weight`] to `out` (resized) and says whether every weight was
/// small and usable: zero or at least [`MIN_POSITIVE_WEIGHT`], and under 10⁵ (so under 10¹⁵ units, and 9,000
/// of them sum in an `i64`). Where one is not, `out` holds garbage. A loop with nothing
/// else in it, so the compiler vectorises it; for batches of weights without nulls.
pub(crate) fn exact_small_weights(weights: &[f64], out: &mut Vec<i64>) -> bool {
    out.clear();
    out.resize(weights.len(), 0);
    // a local flag and plain slices, so the loop keeps them in registers
    let mut fits = true;
    for (o, &v) in out.iter_mut().zip(weights) {
        let scaled = v * 1e10;
        // zero, or positive and at least the smallest usable weight
        fits &= ((v == 0.0) | (v >= MIN_POSITIVE_WEIGHT)) & (scaled < SMALL);
        *o = round_small_non_negative(scaled);
    }
    fits
}

/// Scaled weights below this (10⁵ as a weight) take the fast rounding.
const SMALL: f64 = 1e15;

/// `x` rounded to the nearest integer, ties to even, for |x| < 2⁵¹, without a float to
/// integer conversion, and `x` minus that (exact): adding 1.5 · 2⁵² leaves the rounded
/// value in the low bits of the sum.
#[inline(always)]
fn round_even(x: f64) -> (i64, f64) {
    const MAGIC: f64 = 6_755_399_441_055_744.0;
    let y = x + MAGIC;
    (y.to_bits() as i64 - MAGIC.to_bits() as i64, x - (y - MAGIC))
}

/// `x.round()` (half away from zero) as an integer, for |x| < 2⁵¹: [`round_even`], and
/// one more step away from zero for a tie it took toward zero.
#[inline(always)]
fn round_small(x: f64) -> i64 {
    let (even, rest) = round_even(x);
    even + i64::from(rest == 0.5 && x > 0.0) - i64::from(rest == -0.5 && x < 0.0)
}

/// [`round_small`] for x ≥ 0.
#[inline(always)]
fn round_small_non_negative(x: f64) -> i64 {
    let (even, rest) = round_even(x);
    even + i64::from(rest == 0.5)
}

#[cold]
fn exact_weight_slow(scaled: f64) -> Option<i128> {
    use datafusion::arrow::datatypes::DecimalType;
    let rounded = scaled.round();
    // what `i128::from_f64` accepts: finite, and inside i128's range
    let v = (rounded.is_finite() && rounded.abs() < 2f64.powi(127)).then_some(rounded as i128)?;
    Decimal128Type::is_valid_decimal_precision(v, WEIGHT_PRECISION).then_some(v)
}

/// An exact sum (in 10⁻¹⁰) as a float.
pub(crate) fn exact_weight_value(sum: i128) -> f64 {
    sum as f64 / 10f64.powi(WEIGHT_SCALE as i32)
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Array, AsArray, Float64Array};

    use super::*;

    /// The inlined conversion is arrow's cast, value for value.
    #[test]
    fn exact_weight_is_the_cast() {
        let mut values = vec![
            0.0,
            -0.0,
            1.0,
            0.1,
            0.123_456_789_05,
            0.123_456_789_15,
            -0.123_456_789_05,
            2.5e-11,
            5e-11,
            -5e-11,
            4.999_999_999e-11,
            0.49999999999999994e-10,
            1e4,
            99_999.999_999_999_95,
            1e5,
            1.5e6,
            123_456.789_012_345,
            1e17,
            9.999e27,
            1e28,
            1e29,
            -1e29,
            f64::MAX,
            f64::MIN_POSITIVE,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ];
        // and many ordinary weights
        values.extend((0..10_000).map(|i| (i as f64 * 0.731_3).sin() * 10f64.powi(i % 12 - 6)));
        let cast = datafusion::arrow::compute::cast(
            &Float64Array::from(values.clone()),
            &exact_weight_type(),
        )
        .unwrap();
        let cast = cast.as_primitive::<Decimal128Type>();
        for (i, v) in values.iter().enumerate() {
            let want = cast.is_valid(i).then(|| cast.value(i));
            assert_eq!(exact_weight(*v), want, "{v:e}");
        }
        // the batch loop gives the same values for small weights not below zero, and
        // says whether all were
        let mut out = Vec::new();
        assert!(!exact_small_weights(&values, &mut out));
        for (v, e) in values
            .iter()
            .zip(&out)
            .filter(|(v, _)| **v == 0.0 || (MIN_POSITIVE_WEIGHT..1e5).contains(*v))
        {
            assert_eq!(exact_weight(*v), Some(i128::from(*e)), "{v:e}");
        }
        let small: Vec<f64> = values.iter().copied().filter(|v| v.abs() < 1e5).collect();
        assert!(!exact_small_weights(&small, &mut out), "negative weights");
        let positive: Vec<f64> = small
            .iter()
            .map(|v| v.abs())
            .filter(|v| *v == 0.0 || *v >= MIN_POSITIVE_WEIGHT)
            .collect();
        assert!(exact_small_weights(&positive, &mut out));
        assert!(
            !exact_small_weights(&[1.0, 1e-11], &mut out),
            "a weight below the minimum"
        );
        for too_big in [1e5, f64::NAN, f64::INFINITY] {
            assert!(!exact_small_weights(&[1.0, too_big], &mut out), "{too_big}");
        }
    }

    /// Ties and their neighbours round half away from zero, up to the fast path's limit.
    #[test]
    fn small_rounding_is_round() {
        let mut xs = vec![
            0.0,
            -0.0,
            0.5,
            -0.5,
            1.5,
            -1.5,
            2.5,
            -2.5,
            0.49999999999999994,
            -0.49999999999999994,
            1e15 - 0.5,
            -(1e15 - 0.5),
        ];
        for k in [
            1.0,
            2.0,
            3.0,
            1023.0,
            4_503_599_627_370.0,
            999_999_999_999_999.0,
        ] {
            for d in [0.5, 0.25, 0.75, 1e-9] {
                xs.extend([k + d, k - d, -(k + d), -(k - d)]);
            }
        }
        xs.extend((0..100_000).map(|i| (i as f64 * 0.618_034).sin() * 10f64.powi(i % 16)));
        for x in xs {
            assert_eq!(round_small(x), x.round() as i64, "{x:e}");
            if x >= 0.0 {
                assert_eq!(round_small_non_negative(x), x.round() as i64, "{x:e}");
            }
        }
    }
}
