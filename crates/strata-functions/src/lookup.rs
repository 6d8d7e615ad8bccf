//! `strata_lookup(key, keys, values)`: for each row, the entry of `values` at the
//! position of the row's `key` in `keys` (null where the key is null or not listed). The
//! table is small and built on the driver; `keys` (unsigned integers, distinct) and
//! `values` (any type, one per key) are two list literals of the plan.
//!
//! Curation attaches its per-cell numbers (split cuts, weight factors, sample cuts) to
//! every row this way rather than by joining the cell table: the pass stays one
//! projection (a cluster runs it without an exchange), only the columns a plan reads
//! are built, and a batch's key column is probed once for all of them. Against the hash
//! join it replaced: as fast for reweighing, 7% faster for exact undersampling, which
//! reads more of the table (BENCHMARKS.md, seventh session).

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, ListArray, UInt32Array, UInt64Array};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::compute::{cast, take};
use datafusion::arrow::datatypes::{DataType, Field, UInt64Type};
use datafusion::common::{Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::prelude::{Expr, lit};

use crate::kept::Kept;

pub const STRATA_LOOKUP: &str = "strata_lookup";

/// The UDF, for registering in a session and for building expressions: one instance
/// per process, so every call shares the tables and positions it keeps.
pub fn strata_lookup_udf() -> ScalarUDF {
    static LOOKUP: std::sync::LazyLock<ScalarUDF> = std::sync::LazyLock::new(|| {
        ScalarUDF::new_from_impl(StrataLookup {
            signature: Signature::any(3, Volatility::Immutable),
            tables: Kept::default(),
            positions: Kept::default(),
        })
    });
    LOOKUP.clone()
}

/// A `strata_lookup` call on `key` for a table given as `(key, value)` pairs.
pub fn lookup(key: Expr, keys: &[u64], values: ArrayRef) -> Expr {
    let keys: ArrayRef = Arc::new(UInt64Array::from(keys.to_vec()));
    strata_lookup_udf().call(vec![
        key,
        lit(list_literal(keys)),
        lit(list_literal(values)),
    ])
}

/// A list literal holding one list: `values`.
fn list_literal(values: ArrayRef) -> ScalarValue {
    let field = Arc::new(Field::new_list_field(values.data_type().clone(), true));
    ScalarValue::List(Arc::new(ListArray::new(
        field,
        OffsetBuffer::from_lengths([values.len()]),
        values,
        None,
    )))
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct StrataLookup {
    signature: Signature,
    /// Probe tables already built, by the address and length of their keys: a plan's
    /// literal is the same buffer for every batch, so a table is built once per plan.
    /// The keys are kept, so their address is not reused while cached.
    tables: Kept<Vec<KeptTable>>,
    /// Each row's position for the last key columns looked up: a plan reads several
    /// columns of one table by the same key column, and every call of a batch gets the
    /// same array. The key array is kept, so its address is not reused while cached.
    positions: Kept<std::collections::VecDeque<KeptPositions>>,
}

/// Keys as given (kept alive), their address and length, and their table.
type KeptTable = (ArrayRef, (usize, usize), Arc<KeyTable>);
/// A key column, the table it was looked up in, and each row's position there.
type KeptPositions = (ArrayRef, Arc<KeyTable>, Arc<UInt32Array>);

/// Key columns whose positions are kept (a few per thread running the plan).
const KEPT_POSITIONS: usize = 8;

/// Tables a lookup keeps; older ones are dropped past this (one per column of a plan).
const KEPT_TABLES: usize = 64;

/// Open addressing from distinct keys to their positions, at most half full.
#[derive(Debug)]
struct KeyTable {
    keys: Vec<u64>,
    /// (key, position + 1); 0 marks an empty slot.
    slots: Vec<(u64, u32)>,
    shift: u32,
}

impl KeyTable {
    fn new(keys: &[u64]) -> Result<Self> {
        let bits = (keys.len().max(1) * 2)
            .next_power_of_two()
            .trailing_zeros()
            .max(4);
        let mut table = Self {
            keys: keys.to_vec(),
            slots: vec![(0, 0); 1 << bits],
            shift: 64 - bits,
        };
        for (i, &k) in keys.iter().enumerate() {
            let mut s = table.slot(k);
            while table.slots[s].1 != 0 {
                if table.slots[s].0 == k {
                    return exec_err!("{STRATA_LOOKUP}: key {k} is listed twice");
                }
                s = (s + 1) & (table.slots.len() - 1);
            }
            table.slots[s] = (k, i as u32 + 1);
        }
        Ok(table)
    }

    #[inline]
    fn slot(&self, key: u64) -> usize {
        (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> self.shift) as usize
    }

    #[inline]
    fn get(&self, key: u64) -> Option<u32> {
        let mut s = self.slot(key);
        loop {
            let (k, p) = self.slots[s];
            if p == 0 {
                return None;
            }
            if k == key {
                return Some(p - 1);
            }
            s = (s + 1) & (self.slots.len() - 1);
        }
    }
}

/// The one array inside a list literal.
fn list_values(arg: &ColumnarValue, what: &str) -> Result<ArrayRef> {
    match arg {
        ColumnarValue::Scalar(ScalarValue::List(list)) if list.len() == 1 => Ok(list.value(0)),
        _ => exec_err!("{STRATA_LOOKUP}: the {what} must be a list literal"),
    }
}

impl StrataLookup {
    fn table(&self, keys: &ArrayRef) -> Result<Arc<KeyTable>> {
        // (a cast to the same type keeps the buffers)
        let keys = cast(keys, &DataType::UInt64)?;
        let values = keys.as_primitive::<UInt64Type>();
        if values.null_count() > 0 {
            return exec_err!("{STRATA_LOOKUP}: the keys must not be null");
        }
        let id = (values.values().as_ptr() as usize, values.len());
        let mut tables = self
            .tables
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((.., t)) = tables.iter().find(|(_, at, _)| *at == id) {
            return Ok(t.clone());
        }
        // a plan looks up each column of a table through its own literal: literals with
        // the same keys share one table, so a row's position is found once for them all
        let table = match tables
            .iter()
            .find(|(.., t)| t.keys == values.values().as_ref())
        {
            Some((.., t)) => t.clone(),
            None => Arc::new(KeyTable::new(values.values())?),
        };
        if tables.len() >= KEPT_TABLES {
            tables.remove(0);
        }
        tables.push((keys.clone(), id, table.clone()));
        Ok(table)
    }

    /// Each row's position in `table` (null where its key is null or not listed).
    fn positions(&self, key: &ArrayRef, table: &Arc<KeyTable>) -> Result<Arc<UInt32Array>> {
        let lock = || {
            self.positions
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        let same = |(k, t, _): &&KeptPositions| Arc::ptr_eq(k, key) && Arc::ptr_eq(t, table);
        if let Some((.., p)) = lock().iter().find(same) {
            return Ok(p.clone());
        }
        let keys = cast(key, &DataType::UInt64)?;
        let keys = keys.as_primitive::<UInt64Type>();
        let mut found = Vec::with_capacity(keys.len());
        let mut listed = datafusion::arrow::array::BooleanBufferBuilder::new(keys.len());
        for &k in keys.values() {
            let p = table.get(k);
            found.push(p.unwrap_or(0));
            listed.append(p.is_some());
        }
        let listed = datafusion::arrow::buffer::NullBuffer::new(listed.finish());
        let nulls = datafusion::arrow::buffer::NullBuffer::union(
            keys.nulls(),
            Some(&listed).filter(|n| n.null_count() > 0),
        );
        let positions = Arc::new(UInt32Array::new(found.into(), nulls));
        let mut cached = lock();
        if cached.len() >= KEPT_POSITIONS {
            cached.pop_front();
        }
        cached.push_back((key.clone(), table.clone(), positions.clone()));
        Ok(positions)
    }
}

impl ScalarUDFImpl for StrataLookup {
    fn name(&self) -> &str {
        STRATA_LOOKUP
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match arg_types {
            [k, DataType::List(keys), DataType::List(values)]
                if (k.is_unsigned_integer() || *k == DataType::Null)
                    && keys.data_type().is_unsigned_integer() =>
            {
                Ok(values.data_type().clone())
            }
            [_, _, _] => plan_err!(
                "{STRATA_LOOKUP} takes an unsigned key, a list of unsigned keys and a list of values"
            ),
            _ => plan_err!("{STRATA_LOOKUP} takes a key, the keys and the values"),
        }
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [key, keys, values] = <[ColumnarValue; 3]>::try_from(args.args).map_err(|_| {
            datafusion::error::DataFusionError::Execution(format!(
                "{STRATA_LOOKUP} takes three arguments"
            ))
        })?;
        let (keys, values) = (list_values(&keys, "keys")?, list_values(&values, "values")?);
        if keys.len() != values.len() {
            return exec_err!(
                "{STRATA_LOOKUP}: {} keys but {} values",
                keys.len(),
                values.len()
            );
        }
        let table = self.table(&keys)?;
        let key = key.into_array(args.number_rows)?;
        let positions = self.positions(&key, &table)?;
        Ok(ColumnarValue::Array(take(
            &values,
            positions.as_ref(),
            None,
        )?))
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Float64Array, UInt64Array};
    use datafusion::prelude::*;

    use super::*;

    /// Compared with a left join against the same table, over keys that are listed,
    /// missing and null, in batches that reuse one built table; a second lookup by the
    /// same key column in the same table listed in reverse gives the same values (the
    /// positions kept for the first table are not reused for it), and a third one with
    /// the same keys in a literal of its own (sharing the first's table and positions)
    /// finds its own values.
    #[tokio::test]
    async fn looks_up_like_a_left_join() {
        let ctx = SessionContext::new_with_config(SessionConfig::new().with_batch_size(7));
        ctx.register_udf(strata_lookup_udf());
        let table_keys: Vec<u64> = (0..300).map(|i| i * 7919 + 3).collect();
        let table_values: Vec<Option<f64>> = (0..300)
            .map(|i| (i % 5 != 0).then_some(i as f64 / 2.0))
            .collect();
        let rows: Vec<Option<u64>> = (0..100u64)
            .map(|i| match i % 4 {
                0 => None,
                1 => Some(1),
                _ => Some(table_keys[(i * 13 % 300) as usize]),
            })
            .collect();
        ctx.register_batch(
            "rows",
            datafusion::arrow::record_batch::RecordBatch::try_from_iter([
                ("k", Arc::new(UInt64Array::from(rows.clone())) as ArrayRef),
                (
                    "i",
                    Arc::new(UInt64Array::from_iter_values(0..100)) as ArrayRef,
                ),
            ])
            .unwrap(),
        )
        .unwrap();
        ctx.register_batch(
            "t",
            datafusion::arrow::record_batch::RecordBatch::try_from_iter([
                (
                    "tk",
                    Arc::new(UInt64Array::from(table_keys.clone())) as ArrayRef,
                ),
                (
                    "v",
                    Arc::new(Float64Array::from(table_values.clone())) as ArrayRef,
                ),
            ])
            .unwrap(),
        )
        .unwrap();
        let reversed_keys: Vec<u64> = table_keys.iter().rev().copied().collect();
        let reversed: ArrayRef = Arc::new(Float64Array::from(
            table_values.iter().rev().copied().collect::<Vec<_>>(),
        ));
        let doubled: ArrayRef = Arc::new(Float64Array::from(
            table_values
                .iter()
                .map(|v| v.map(|v| v * 2.0))
                .collect::<Vec<_>>(),
        ));
        let values: ArrayRef = Arc::new(Float64Array::from(table_values));
        let got = ctx
            .table("rows")
            .await
            .unwrap()
            .select(vec![
                col("i"),
                lookup(col("k"), &table_keys, values).alias("v"),
                lookup(col("k"), &reversed_keys, reversed).alias("v2"),
                (lookup(col("k"), &table_keys, doubled) / lit(2.0)).alias("v3"),
            ])
            .unwrap()
            .sort(vec![col("i").sort(true, false)])
            .unwrap()
            .collect()
            .await
            .unwrap();
        let want = ctx
            .sql("SELECT i, v FROM rows LEFT JOIN t ON k = tk ORDER BY i")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let flat = |b: &[datafusion::arrow::record_batch::RecordBatch]| -> Vec<(u64, Option<f64>)> {
            b.iter()
                .flat_map(|b| {
                    let i = b.column(0).as_primitive::<UInt64Type>().clone();
                    let v = b
                        .column(1)
                        .as_primitive::<datafusion::arrow::datatypes::Float64Type>()
                        .clone();
                    (0..b.num_rows()).map(move |r| (i.value(r), v.is_valid(r).then(|| v.value(r))))
                })
                .collect()
        };
        let again: Vec<_> = got.iter().map(|b| b.project(&[0, 2]).unwrap()).collect();
        let halved: Vec<_> = got.iter().map(|b| b.project(&[0, 3]).unwrap()).collect();
        let (got, again, halved, want) = (flat(&got), flat(&again), flat(&halved), flat(&want));
        assert_eq!(again, want);
        assert_eq!(halved, want);
        assert_eq!(got.len(), 100);
        assert_eq!(got, want);
        assert!(
            got.iter().any(|(_, v)| v.is_some())
                && got.iter().filter(|(_, v)| v.is_none()).count() > 25
        );
    }

    #[test]
    fn a_key_listed_twice_is_an_error() {
        let err = KeyTable::new(&[5, 9, 5]).unwrap_err().to_string();
        assert!(err.contains("key 5 is listed twice"), "{err}");
    }
}
