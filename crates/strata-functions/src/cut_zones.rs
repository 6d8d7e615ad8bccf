//! `strata_cut_zones(stratum, h1, h2, weight, windows)`: the one aggregate of a rank-cut
//! pass (see `strata_curate::cut`). Per stratum, each row's primary key `h1` falls in one
//! of five zones around at most two windows: 0 below the first, 1 inside it, 2 between,
//! 3 inside the second, 4 above (a missing window is skipped; a stratum without windows
//! is all zone 4). The result lists, per stratum and zone, the rows, the exact sum of
//! usable weights and the count of unusable ones (null, negative or NaN); inside the
//! windows, per key `(h1, h2)`.
//!
//! `windows` is a literal list of `UInt64`, five per stratum: `stratum, lo1, hi1, lo2,
//! hi2`, where a missing window has `lo > hi` (build it with [`cut_zones`]). It travels
//! with the plan, so the aggregate runs anywhere the function is registered. The list
//! is wrapped in a dictionary: an aggregate's arguments become arrays of its input's
//! length, and a dictionary repeats only its key.
//!
//! The same answer as a join with the window table and a `GROUP BY stratum, zone, k1,
//! k2` with `count(*)` and `sum(CAST(w AS DECIMAL(38, 10)))`, for a fraction of the cost:
//! a stratum is found through a small direct-mapped cache, and only rows inside a
//! window (a few in a hundred) are grouped by key.

use std::sync::Arc;

use foldhash::{HashMap, HashMapExt};

use crate::slots::SlotCache;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Decimal128Array, Int64Array, ListArray, StructArray, UInt8Array,
    UInt64Array,
};
use datafusion::arrow::datatypes::{
    DataType, Decimal128Type, Field, Fields, Float64Type, Int64Type, UInt8Type, UInt64Type,
};
use datafusion::common::{Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Signature, Volatility, function::AccumulatorArgs,
};
use datafusion::physical_expr::expressions::Literal;
use datafusion::prelude::{Expr, lit};

use crate::weights::{
    WEIGHT_PRECISION, WEIGHT_SCALE, exact_weight, exact_weight_type, usable_weight,
};

pub const STRATA_CUT_ZONES: &str = "strata_cut_zones";

/// A stratum's windows, each a closed range of the primary key.
pub type StratumWindows = (u64, [Option<(u64, u64)>; 2]);

/// `strata_cut_zones(stratum, h1, h2, weight, windows)` with `windows` as its literal.
pub fn cut_zones(
    stratum: Expr,
    h1: Expr,
    h2: Expr,
    weight: Expr,
    windows: &[StratumWindows],
) -> Expr {
    let mut flat: Vec<Option<u64>> = Vec::with_capacity(windows.len() * 5);
    for (s, w) in windows {
        flat.push(Some(*s));
        for window in w {
            let (lo, hi) = window.unwrap_or((1, 0));
            flat.extend([Some(lo), Some(hi)]);
        }
    }
    let list = ScalarValue::List(Arc::new(
        ListArray::from_iter_primitive::<UInt64Type, _, _>([Some(flat)]),
    ));
    let windows = ScalarValue::Dictionary(Box::new(DataType::Int32), Box::new(list));
    strata_cut_zones_udaf().call(vec![stratum, h1, h2, weight, lit(windows)])
}

/// The aggregate, for registering in a session and for building expressions.
pub fn strata_cut_zones_udaf() -> AggregateUDF {
    AggregateUDF::new_from_impl(StrataCutZones {
        signature: Signature::any(5, Volatility::Immutable),
    })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct StrataCutZones {
    signature: Signature,
}

fn zone_fields() -> Fields {
    vec![
        Field::new("stratum", DataType::UInt64, false),
        Field::new("zone", DataType::UInt8, false),
        Field::new("k1", DataType::UInt64, false),
        Field::new("k2", DataType::UInt64, false),
        Field::new("rows", DataType::Int64, false),
        Field::new("w", exact_weight_type(), false),
        Field::new("bad", DataType::Int64, false),
    ]
    .into()
}

fn list_type() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(
        DataType::Struct(zone_fields()),
        false,
    )))
}

impl AggregateUDFImpl for StrataCutZones {
    fn name(&self) -> &str {
        STRATA_CUT_ZONES
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match arg_types {
            [_, _, _, _, DataType::Dictionary(_, l)] if matches!(l.as_ref(), DataType::List(f) if f.data_type() == &DataType::UInt64) => {
                Ok(list_type())
            }
            [_, _, _, _, DataType::List(f)] if f.data_type() == &DataType::UInt64 => {
                Ok(list_type())
            }
            _ => plan_err!(
                "{STRATA_CUT_ZONES} takes a stratum, two keys, a weight and a list of windows"
            ),
        }
    }
    fn is_nullable(&self) -> bool {
        false
    }
    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let windows = match args
            .exprs
            .get(4)
            .and_then(|e| e.downcast_ref::<Literal>())
            .map(|l| l.value().clone())
        {
            Some(ScalarValue::Dictionary(_, v)) => Some(*v),
            other => other,
        };
        let Some(ScalarValue::List(list)) = windows else {
            return exec_err!("{STRATA_CUT_ZONES}: the windows must be a literal list");
        };
        let values = list.values();
        let Some(values) = values.as_primitive_opt::<UInt64Type>() else {
            return exec_err!("{STRATA_CUT_ZONES}: the windows must be a list of UInt64");
        };
        if values.len() % 5 != 0 || values.null_count() > 0 {
            return exec_err!(
                "{STRATA_CUT_ZONES}: the windows must be five non-null values per stratum"
            );
        }
        let mut strata = Vec::new();
        let mut index = std::collections::HashMap::new();
        for w in values.values().chunks_exact(5) {
            index.insert(w[0], strata.len() as u32);
            strata.push(Stratum {
                id: w[0],
                windows: [(w[1], w[2]), (w[3], w[4])],
            });
        }
        Ok(Box::new(ZonesAccumulator {
            cache: SlotCache::new(),
            gaps: vec![Gap::default(); (strata.len() + 1) * ZONES],
            strata,
            index,
            inside: HashMap::new(),
        }))
    }
}

/// Zones a stratum's keys fall in around its two windows: below the first, inside it,
/// between the windows, inside the second, above it.
pub const ZONES: usize = 5;

#[derive(Debug, Clone)]
struct Stratum {
    id: u64,
    /// (lo, hi), closed; empty when lo > hi.
    windows: [(u64, u64); 2],
}

/// Rows, exact weight sum (in 10⁻¹⁰) and unusable weights.
#[derive(Debug, Clone, Copy, Default)]
struct Gap {
    rows: i64,
    weight: i128,
    bad: i64,
}

impl Gap {
    fn add(&mut self, o: &Gap) {
        self.rows += o.rows;
        self.weight += o.weight;
        self.bad += o.bad;
    }
}

#[derive(Debug)]
struct ZonesAccumulator {
    strata: Vec<Stratum>,
    index: std::collections::HashMap<u64, u32>,
    /// Stratum id → its index, in front of `index`.
    cache: SlotCache<u64, u32, 1024>,
    /// Per (stratum index, zone), for rows outside the windows; strata without windows
    /// (not in the list) count at index `strata.len()` by their own id in `inside`.
    gaps: Vec<Gap>,
    /// (stratum id, zone, k1, k2) → totals, for rows inside windows and strata not listed
    /// (hashed: a B-tree of tens of thousands of keys costs a cache miss per level for
    /// every row inside a window; sorted once for the output).
    inside: HashMap<(u64, u8, u64, u64), Gap>,
}

/// The zone of primary key `h` in a stratum with `windows` (`None`: a stratum not in the
/// aggregate's list, all zone 4), as the aggregate assigns it.
pub fn zone_of(h: u64, windows: Option<&[Option<(u64, u64)>; 2]>) -> usize {
    windows.map_or(4, |w| zone_in(h, &w.map(|w| w.unwrap_or((1, 0)))) as usize)
}

fn zone_in(h: u64, windows: &[(u64, u64); 2]) -> u8 {
    let [(lo1, hi1), (lo2, hi2)] = *windows;
    if lo1 <= hi1 {
        if h < lo1 {
            return 0;
        }
        if h <= hi1 {
            return 1;
        }
    }
    if lo2 <= hi2 {
        if h < lo2 {
            return 2;
        }
        if h <= hi2 {
            return 3;
        }
    }
    4
}

impl ZonesAccumulator {
    fn stratum(&mut self, id: u64) -> Option<u32> {
        let index = &self.index;
        self.cache
            .get(id, |id| index.get(id).copied().ok_or(()))
            .ok()
    }

    fn add(&mut self, stratum: u64, h1: u64, h2: u64, g: Gap) {
        match self.stratum(stratum) {
            Some(i) => {
                let zone = zone_in(h1, &self.strata[i as usize].windows);
                if zone == 1 || zone == 3 {
                    self.inside
                        .entry((stratum, zone, h1, h2))
                        .or_default()
                        .add(&g);
                } else {
                    self.gaps[i as usize * ZONES + zone as usize].add(&g);
                }
            }
            None => self.inside.entry((stratum, 4, 0, 0)).or_default().add(&g),
        }
    }

    fn output(&self) -> Result<ScalarValue> {
        let mut rows: Vec<((u64, u8, u64, u64), Gap)> = Vec::new();
        for (i, s) in self.strata.iter().enumerate() {
            for zone in 0..ZONES {
                let g = self.gaps[i * ZONES + zone];
                if g.rows > 0 {
                    rows.push(((s.id, zone as u8, 0, 0), g));
                }
            }
        }
        let at = rows.len();
        rows.extend(self.inside.iter().map(|(k, g)| (*k, *g)));
        rows[at..].sort_unstable_by_key(|r| r.0);
        let columns: Vec<ArrayRef> = vec![
            Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.0.0))),
            Arc::new(UInt8Array::from_iter_values(rows.iter().map(|r| r.0.1))),
            Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.0.2))),
            Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.0.3))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1.rows))),
            Arc::new(
                Decimal128Array::from_iter_values(rows.iter().map(|r| r.1.weight))
                    .with_precision_and_scale(WEIGHT_PRECISION, WEIGHT_SCALE)?,
            ),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1.bad))),
        ];
        crate::struct_list::to_value(StructArray::try_new(zone_fields(), columns, None)?)
    }
}

impl Accumulator for ZonesAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let [stratum, h1, h2, w, ..] = values else {
            return exec_err!("{STRATA_CUT_ZONES} takes five arguments");
        };
        let u64s = |a: &ArrayRef| datafusion::arrow::compute::cast(a, &DataType::UInt64);
        let (stratum, h1, h2) = (u64s(stratum)?, u64s(h1)?, u64s(h2)?);
        let (stratum, h1, h2) = (
            stratum.as_primitive::<UInt64Type>(),
            h1.as_primitive::<UInt64Type>(),
            h2.as_primitive::<UInt64Type>(),
        );
        if stratum.null_count() + h1.null_count() + h2.null_count() > 0 {
            return exec_err!("{STRATA_CUT_ZONES}: strata and keys must not be null");
        }
        let w = datafusion::arrow::compute::cast(w, &DataType::Float64)?;
        let w = w.as_primitive::<Float64Type>();
        let nulls = w.nulls().filter(|n| n.null_count() > 0);
        for i in 0..w.len() {
            let v = w.value(i);
            let usable = nulls.is_none_or(|n| n.is_valid(i)) && usable_weight(v);
            let g = if usable {
                Gap {
                    rows: 1,
                    weight: exact_weight(v).unwrap_or(0),
                    bad: 0,
                }
            } else {
                Gap {
                    rows: 1,
                    weight: 0,
                    bad: 1,
                }
            };
            self.add(stratum.value(i), h1.value(i), h2.value(i), g);
        }
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let Some(states) = states.first() else {
            return exec_err!("{STRATA_CUT_ZONES}: no partial state");
        };
        for part in crate::struct_list::rows_of(states, STRATA_CUT_ZONES)? {
            let u64s = |c: usize| part.column(c).as_primitive::<UInt64Type>().clone();
            let (stratum, k1, k2) = (u64s(0), u64s(2), u64s(3));
            let zone = part.column(1).as_primitive::<UInt8Type>();
            let rows = part.column(4).as_primitive::<Int64Type>();
            let weight = part.column(5).as_primitive::<Decimal128Type>();
            let bad = part.column(6).as_primitive::<Int64Type>();
            for r in 0..part.len() {
                let g = Gap {
                    rows: rows.value(r),
                    weight: weight.value(r),
                    bad: bad.value(r),
                };
                let z = zone.value(r);
                // a partial's zones are this accumulator's: the same windows
                match self.stratum(stratum.value(r)) {
                    Some(s) if z != 1 && z != 3 => {
                        self.gaps[s as usize * ZONES + z as usize].add(&g)
                    }
                    _ => self
                        .inside
                        .entry((stratum.value(r), z, k1.value(r), k2.value(r)))
                        .or_default()
                        .add(&g),
                }
            }
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![self.output()?])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        self.output()
    }

    fn size(&self) -> usize {
        size_of_val(self)
            + self.strata.capacity() * size_of::<Stratum>()
            + self.index.capacity() * 16
            + self.cache.size()
            + self.gaps.capacity() * size_of::<Gap>()
            + self.inside.len() * 64
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Float64Array, RecordBatch};
    use datafusion::datasource::MemTable;
    use datafusion::prelude::*;

    use super::*;

    type Row = (u64, u8, u64, u64, i64, i128, i64);

    fn rows_of(batches: &[RecordBatch]) -> Vec<Row> {
        let mut out = Vec::new();
        for b in batches {
            let u = |c: usize| {
                datafusion::arrow::compute::cast(b.column(c), &DataType::UInt64)
                    .unwrap()
                    .as_primitive::<UInt64Type>()
                    .clone()
            };
            let i = |c: usize| {
                datafusion::arrow::compute::cast(b.column(c), &DataType::Int64)
                    .unwrap()
                    .as_primitive::<Int64Type>()
                    .clone()
            };
            let (s, z, k1, k2, n, bad) = (u(0), u(1), u(2), u(3), i(4), i(6));
            let w = b.column(5).as_primitive::<Decimal128Type>();
            for r in 0..b.num_rows() {
                let w = if w.is_null(r) { 0 } else { w.value(r) };
                out.push((
                    s.value(r),
                    z.value(r) as u8,
                    k1.value(r),
                    k2.value(r),
                    n.value(r),
                    w,
                    bad.value(r),
                ));
            }
        }
        out.sort();
        out
    }

    /// The same totals as the join and GROUP BY it replaces, over several partitions,
    /// with one window, two, none, and a stratum missing from the list.
    #[tokio::test]
    async fn equals_join_and_group_by() {
        let mut parts = Vec::new();
        for p in 0..3u64 {
            let n = 2000;
            let stratum = UInt64Array::from_iter_values(
                (0..n).map(|i| [11, 22, 33, 44][(i as usize * 7 + p as usize) % 4]),
            );
            // keys spread over the whole space, some repeated
            let h1 = UInt64Array::from_iter_values(
                (0..n).map(|i: u64| ((i * 37 + p * 5) % 400).wrapping_mul(46_116_860_184_273_879)),
            );
            let h2 = UInt64Array::from_iter_values((0..n).map(|i: u64| i % 3));
            let w = Float64Array::from_iter((0..n).map(|i| match i % 17 {
                0 => None,
                1 => Some(-1.0),
                2 => Some(f64::NAN),
                _ => Some(i as f64 * 0.001 + 0.123_456_789_012_3),
            }));
            let batch = RecordBatch::try_from_iter([
                ("s", Arc::new(stratum) as ArrayRef),
                ("h1", Arc::new(h1) as ArrayRef),
                ("h2", Arc::new(h2) as ArrayRef),
                ("w", Arc::new(w) as ArrayRef),
            ])
            .unwrap();
            parts.push(vec![batch.slice(0, 900), batch.slice(900, 1100)]);
        }
        let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(3));
        ctx.register_udaf(strata_cut_zones_udaf());
        ctx.register_table(
            "t",
            Arc::new(MemTable::try_new(parts[0][0].schema(), parts).unwrap()),
        )
        .unwrap();
        let q = u64::MAX / 4;
        // stratum 11: two windows; 22: the first only; 33: the second only; 44: not listed
        let windows: [StratumWindows; 3] = [
            (11, [Some((q, q + q / 8)), Some((2 * q, 3 * q))]),
            (22, [Some((0, q)), None]),
            (33, [None, Some((q * 3, u64::MAX))]),
        ];
        let mut table = Vec::new();
        for (s, [a, b]) in windows {
            let v =
                |x: Option<u64>| x.map_or("NULL".to_string(), |x| format!("{x}::BIGINT UNSIGNED"));
            table.push(format!(
                "({s}::BIGINT UNSIGNED, {}, {}, {}, {})",
                v(a.map(|w| w.0)),
                v(a.map(|w| w.1)),
                v(b.map(|w| w.0)),
                v(b.map(|w| w.1))
            ));
        }
        let got = ctx
            .table("t")
            .await
            .unwrap()
            .aggregate(
                vec![],
                vec![cut_zones(
                    col("s"),
                    col("h1"),
                    col("h2"),
                    col("w"),
                    &windows,
                )],
            )
            .unwrap()
            .collect()
            .await
            .unwrap();
        let lists = got[0].column(0).as_list::<i32>();
        let got = rows_of(&[RecordBatch::from(lists.value(0).as_struct())]);

        let sql = format!(
            "WITH win(ws, lo1, hi1, lo2, hi2) AS (VALUES {}),
             z AS (SELECT t.*, CASE WHEN h1 < lo1 THEN 0 WHEN h1 <= hi1 THEN 1 WHEN h1 < lo2 THEN 2 WHEN h1 <= hi2 THEN 3 ELSE 4 END AS zone
                   FROM t LEFT JOIN win ON s = ws)
             SELECT s, zone, CASE WHEN zone IN (1, 3) THEN h1 ELSE 0 END AS k1, CASE WHEN zone IN (1, 3) THEN h2 ELSE 0 END AS k2,
                    count(*), sum(CAST(CASE WHEN w >= 0 AND NOT isnan(w) THEN w ELSE 0 END AS DECIMAL(38, 10))),
                    sum(CASE WHEN w >= 0 AND NOT isnan(w) THEN 0 ELSE 1 END)
             FROM z GROUP BY 1, 2, 3, 4",
            table.join(", ")
        );
        let want = rows_of(&ctx.sql(&sql).await.unwrap().collect().await.unwrap());
        assert!(
            want.iter().any(|r| r.1 == 1)
                && want.iter().any(|r| r.1 == 3)
                && want.iter().any(|r| r.0 == 44),
            "{want:?}"
        );
        assert_eq!(got, want);
    }
}
