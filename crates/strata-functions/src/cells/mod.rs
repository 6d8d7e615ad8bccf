//! `strata_cells(weight, key, ...)`: one aggregate over the whole input that returns,
//! for every distinct tuple of key values, its rows, the sum and count of its non-null
//! weights and how many are unusable, as a list of structs `{k0, ..., rows, weight,
//! weight_unusable, weight_count, weight_exact, weight_special}` (null keys form their
//! own tuple).
//!
//! It is the profile's `GROUP BY attributes, label` with `count(*)`, `sum(w)`,
//! `count(*) FILTER (WHERE NOT usable(w))` (see `weights::usable_weight`), `count(w)`, made cheap for what profiles group by:
//! a handful of distinct values per column. DataFusion 55 hashes and compares every
//! row's string keys in a generic row-group table (about 0.3 s for 20 million rows over
//! three strings on two cores, most of the profile's time beyond decoding). Here every
//! key column is turned into small integer codes through an exact fingerprint of each
//! value (a short string is its Arrow view: length and bytes in 128 bits), so a row
//! costs a few lookups in tables that stay in the L1 cache. When every key column is a
//! dictionary (the profile reads its strings so, see `coded.rs`; a null key is digit 0,
//! the others one up, taken 64 rows to a validity word without a branch) or an
//! integer column without nulls over a small span, a row's keys are bit fields of one
//! number that indexes a table of tuple ids (`RadixTable`): one shift and `or` per
//! column, then one lookup per row, or, while the table is small, the row's weight is
//! added to its number's sum and only a chunk's distinct numbers are looked up.
//! Otherwise dictionary columns code their few values once per batch, and a row is then
//! one lookup per column; integer columns without nulls look their values up in a table
//! indexed by value while the values span little.
//! It is an ordinary aggregate: partial states per partition, merged by the engine, so
//! the plan runs unchanged on a cluster with the function registered.
//!
//! Weight sums are exact (see [`crate::weights`]): the sum of the weights as
//! `DECIMAL(38, 10)`, so they do not depend on the order rows arrive in. The result
//! carries them as `weight_exact`, with `weight_special` the float sum of weights no
//! decimal holds (infinite, NaN, out of range), and `weight` as the float of both.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Decimal128Array, Float64Array, Int64Array, StructArray,
    downcast_dictionary_array, downcast_integer_array,
};
use datafusion::arrow::datatypes::{
    ArrowNativeType, DataType, Date32Type, Date64Type, Decimal128Type, Field, Fields, Float64Type,
    Int32Type, Int64Type,
};
use datafusion::common::{Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Signature, Volatility, function::AccumulatorArgs,
};
use foldhash::{HashMap, HashMapExt};

use crate::weights::{
    WEIGHT_PRECISION, WEIGHT_SCALE, exact_small_weights, exact_weight, exact_weight_type,
    exact_weight_value, usable_weight,
};

pub(crate) mod coder;
mod column;
mod tuples;

use coder::*;
use column::*;
use tuples::*;

pub const STRATA_CELLS: &str = "strata_cells";

/// The aggregate, for registering in a session and for building expressions.
pub fn strata_cells_udaf() -> AggregateUDF {
    AggregateUDF::new_from_impl(StrataCells {
        signature: Signature::variadic_any(Volatility::Immutable),
    })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct StrataCells {
    signature: Signature,
}

/// The type a key column is reported in: dictionaries by their values.
fn value_type(t: &DataType) -> DataType {
    match t {
        DataType::Dictionary(_, v) => value_type(v),
        t => t.clone(),
    }
}

/// The element type of the result list: key columns `k0..`, then the tallies.
fn cell_fields(key_types: &[DataType]) -> Fields {
    let mut fields: Vec<Field> = key_types
        .iter()
        .enumerate()
        .map(|(i, t)| Field::new(format!("k{i}"), value_type(t), true))
        .collect();
    fields.extend([
        Field::new("rows", DataType::Int64, false),
        Field::new("weight", DataType::Float64, true),
        Field::new("weight_unusable", DataType::Int64, false),
        Field::new("weight_count", DataType::Int64, false),
        Field::new("weight_exact", exact_weight_type(), false),
        Field::new("weight_special", DataType::Float64, false),
    ]);
    fields.into()
}

fn list_type(key_types: &[DataType]) -> DataType {
    DataType::List(Arc::new(Field::new_list_field(
        DataType::Struct(cell_fields(key_types)),
        false,
    )))
}

impl AggregateUDFImpl for StrataCells {
    fn name(&self) -> &str {
        STRATA_CELLS
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match arg_types {
            [w, keys @ ..] if !keys.is_empty() && (w.is_numeric() || *w == DataType::Null) => {
                Ok(list_type(keys))
            }
            [w, _, ..] => plan_err!("{STRATA_CELLS}: the weight must be a number or null, not {w}"),
            _ => plan_err!("{STRATA_CELLS} takes a weight and at least one key column"),
        }
    }
    fn is_nullable(&self) -> bool {
        false
    }
    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let keys: Vec<DataType> = args
            .expr_fields
            .iter()
            .skip(1)
            .map(|f| f.data_type().clone())
            .collect();
        Ok(Box::new(CellsAccumulator::new(&keys)))
    }
}

/// Per tuple of key codes: what `strata_cells` reports.
#[derive(Debug, Clone, Copy)]
struct Tally {
    rows: i64,
    /// Rows whose weight is null (the weight count is the rest).
    weightless: i64,
    /// Σ weight in 10⁻¹⁰, of the weights a decimal holds.
    weight: i128,
    /// Σ of the other non-null weights (0 when there are none).
    special: f64,
    /// Rows whose weight is not null and not `usable_weight` (negative, NaN, ...).
    unusable: i64,
}

impl Default for Tally {
    fn default() -> Self {
        Self {
            rows: 0,
            weightless: 0,
            weight: 0,
            special: 0.0,
            unusable: 0,
        }
    }
}

impl Tally {
    /// Adds an exact weight, or, past what a 128-bit decimal holds, its float.
    #[inline]
    fn add_weight(&mut self, exact: i128, approx: f64) {
        match self.weight.checked_add(exact) {
            Some(sum) => self.weight = sum,
            None => self.special += approx,
        }
    }

    /// Adds a row with a non-null weight, the weight exactly where a decimal holds it.
    #[inline]
    fn add_weighted_row(&mut self, v: f64) {
        self.rows += 1;
        match exact_weight(v) {
            Some(e) => self.add_weight(e, v),
            None => self.special += v,
        }
        self.unusable += i64::from(!usable_weight(v));
    }

    /// Adds a chunk's `rows` rows, whose exact weights sum to `sum` (or which have no
    /// weights: `weighted` false), from [`chunk_sums`].
    fn add_chunk(&mut self, sum: i64, rows: i64, weighted: bool) {
        self.rows += rows;
        if !weighted {
            self.weightless += rows;
        } else if sum != 0 {
            self.add_weight(i128::from(sum), exact_weight_value(i128::from(sum)));
        }
    }

    fn weight_count(&self) -> i64 {
        self.rows - self.weightless
    }

    fn weight_value(&self) -> f64 {
        exact_weight_value(self.weight) + self.special
    }
}

/// Rows per chunk of [`chunk_sums`]: each row adds under 10¹⁵, so a chunk's sum per
/// index fits an `i64`.
const SMALL_CHUNK: usize = 8192;

/// Per index (a tuple id, or a radix number): the exact weight sum (from `exact`, or 0
/// with no weights) and the number of the rows whose index is `index[i]`, into `sums`
/// (cleared, `len` long). For at most [`SMALL_CHUNK`] rows whose weights
/// [`exact_small_weights`] took. Indexes are below `len` by construction.
fn chunk_sums(index: &[u32], exact: Option<&[i64]>, len: usize, sums: &mut Vec<(i64, i64)>) {
    sums.clear();
    if len > LANED_LIMIT {
        sums.resize(len, (0, 0));
        add_rows(index, exact, [sums]);
        return;
    }
    // four tables, one per row of each four: a run of rows of one index (the usual case
    // with skewed groups) makes four chains of adds through memory, not one
    sums.resize(len * 4, (0, 0));
    let (a, rest) = sums.split_at_mut(len);
    let (b, rest) = rest.split_at_mut(len);
    let (c, d) = rest.split_at_mut(len);
    add_rows(index, exact, [&mut *a, &mut *b, &mut *c, &mut *d]);
    for (((a, b), c), d) in a.iter_mut().zip(&*b).zip(&*c).zip(&*d) {
        a.0 += b.0 + c.0 + d.0;
        a.1 += b.1 + c.1 + d.1;
    }
    sums.truncate(len);
}

/// Tables of [`chunk_sums`] for indexes up to this (64 KiB of sums in four).
const LANED_LIMIT: usize = 1 << 10;

/// Adds each row's weight and count to its index's sums, row `i` of each `N` to table
/// `i mod N` (the rows past the last whole `N` to the first).
fn add_rows<const N: usize>(
    index: &[u32],
    exact: Option<&[i64]>,
    mut tables: [&mut [(i64, i64)]; N],
) {
    let whole = index.len() / N * N;
    let (rows, rest) = index.split_at(whole);
    match exact {
        Some(exact) => {
            for (i, e) in rows.chunks_exact(N).zip(exact.chunks_exact(N)) {
                for ((t, &k), &e) in tables.iter_mut().zip(i).zip(e) {
                    let (sum, n) = &mut t[k as usize];
                    *sum += e;
                    *n += 1;
                }
            }
        }
        None => {
            for i in rows.chunks_exact(N) {
                for (t, &k) in tables.iter_mut().zip(i) {
                    t[k as usize].1 += 1;
                }
            }
        }
    }
    if !rest.is_empty() {
        add_rows(rest, exact.map(|e| &e[whole..]), [&mut *tables[0]]);
    }
}

/// Radix tables up to this many entries also index the weight sums of a chunk of rows
/// (64 KiB of sums), so rows need no tuple ids.
const NUMBERED_LIMIT: usize = 1 << 12;

#[derive(Debug)]
struct CellsAccumulator {
    coder: TupleCoder,
    tallies: Vec<Tally>,
    /// Reused per batch: each row's tuple.
    rows: Vec<u32>,
    /// Reused per batch: each row's exact weight.
    exact: Vec<i64>,
    /// Reused per chunk of a batch: each tuple's (or radix number's) exact weight sum
    /// and rows.
    sums: Vec<(i64, i64)>,
}

impl CellsAccumulator {
    fn new(key_types: &[DataType]) -> Self {
        Self {
            coder: TupleCoder::new(key_types),
            tallies: Vec::new(),
            rows: Vec::new(),
            exact: Vec::new(),
            sums: Vec::new(),
        }
    }

    /// Codes every row of `keys` into `self.rows` (tuple ids, growing `tallies`).
    fn code_rows(&mut self, keys: &[ArrayRef]) -> Result<()> {
        self.coder.code(keys, &mut self.rows)?;
        self.tallies.resize(self.coder.len(), Tally::default());
        Ok(())
    }

    /// Adds a batch whose weights are small and not negative (`exact`), or absent, in
    /// chunks of [`SMALL_CHUNK`] rows: summed per radix number when the radix table takes
    /// the keys and is small, then per tuple; otherwise per tuple id.
    fn add_chunked(&mut self, keys: &[ArrayRef], exact: Option<&[i64]>) -> Result<()> {
        self.coder.check_width(keys)?;
        if self.coder.radix_numbers(keys)? {
            if self.coder.radix.ids.len() <= NUMBERED_LIMIT {
                return self.add_by_numbers(keys, exact);
            }
            self.coder.radix_ids(keys, &mut self.rows)?;
        } else {
            self.coder.code_by_columns(keys, &mut self.rows)?;
        }
        self.tallies.resize(self.coder.len(), Tally::default());
        let rows = &self.rows;
        for start in (0..rows.len()).step_by(SMALL_CHUNK) {
            let end = (start + SMALL_CHUNK).min(rows.len());
            chunk_sums(
                &rows[start..end],
                exact.map(|e| &e[start..end]),
                self.tallies.len(),
                &mut self.sums,
            );
            for (tally, &(sum, n)) in self
                .tallies
                .iter_mut()
                .zip(&self.sums)
                .filter(|(_, (_, n))| *n != 0)
            {
                tally.add_chunk(sum, n, exact.is_some());
            }
        }
        Ok(())
    }

    /// [`Self::add_chunked`] over the radix numbers of the batch (just computed): a
    /// row costs its number and one add, and only a chunk's distinct numbers are
    /// looked up. Numbers first met in a chunk get their tuple ids in row order first,
    /// so tuples keep their first-seen order.
    fn add_by_numbers(&mut self, keys: &[ArrayRef], exact: Option<&[i64]>) -> Result<()> {
        let numbers = std::mem::take(&mut self.coder.radix.numbers);
        let entries = self.coder.radix.ids.len();
        for start in (0..numbers.len()).step_by(SMALL_CHUNK) {
            let end = (start + SMALL_CHUNK).min(numbers.len());
            chunk_sums(
                &numbers[start..end],
                exact.map(|e| &e[start..end]),
                entries,
                &mut self.sums,
            );
            let ids = &self.coder.radix.ids;
            if self
                .sums
                .iter()
                .zip(ids)
                .any(|(&(_, n), &id)| n != 0 && id == 0)
            {
                for (row, &number) in numbers.iter().enumerate().take(end).skip(start) {
                    if self.coder.radix.ids[number as usize] == 0 {
                        self.coder.radix_new_row(keys, row, number)?;
                    }
                }
                self.tallies.resize(self.coder.len(), Tally::default());
            }
            for (&(sum, n), &id) in self
                .sums
                .iter()
                .zip(&self.coder.radix.ids)
                .filter(|((_, n), _)| *n != 0)
            {
                self.tallies[id as usize - 1].add_chunk(sum, n, exact.is_some());
            }
        }
        self.coder.radix.numbers = numbers;
        Ok(())
    }

    fn output(&self) -> Result<ScalarValue> {
        let n = self.coder.len();
        let columns = &self.coder.columns;
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(columns.len() + 6);
        for (i, column) in columns.iter().enumerate() {
            arrays.push(column.values_of((0..n).map(|t| self.coder.tuples.key(t)[i]))?);
        }
        let t = &self.tallies;
        arrays.push(Arc::new(Int64Array::from_iter_values(
            t.iter().map(|t| t.rows),
        )));
        arrays.push(Arc::new(
            t.iter()
                .map(|t| (t.weight_count() > 0).then(|| t.weight_value()))
                .collect::<Float64Array>(),
        ));
        arrays.push(Arc::new(Int64Array::from_iter_values(
            t.iter().map(|t| t.unusable),
        )));
        arrays.push(Arc::new(Int64Array::from_iter_values(
            t.iter().map(Tally::weight_count),
        )));
        arrays.push(Arc::new(
            Decimal128Array::from_iter_values(t.iter().map(|t| t.weight))
                .with_precision_and_scale(WEIGHT_PRECISION, WEIGHT_SCALE)?,
        ));
        arrays.push(Arc::new(Float64Array::from_iter_values(
            t.iter().map(|t| t.special),
        )));
        let key_types: Vec<DataType> = columns.iter().map(|c| c.data_type.clone()).collect();
        crate::struct_list::to_value(StructArray::try_new(cell_fields(&key_types), arrays, None)?)
    }
}

impl Accumulator for CellsAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let Some((weight, keys)) = values.split_first() else {
            return exec_err!("{STRATA_CELLS} takes a weight and key columns");
        };
        if weight.data_type() == &DataType::Null {
            return self.add_chunked(keys, None);
        }
        let w = datafusion::arrow::compute::cast(weight, &DataType::Float64)?;
        let w = w.as_primitive::<Float64Type>();
        if w.null_count() == 0 {
            let mut exact = std::mem::take(&mut self.exact);
            let added = if exact_small_weights(w.values(), &mut exact) {
                self.add_chunked(keys, Some(&exact)).map(|()| true)
            } else {
                Ok(false)
            };
            self.exact = exact;
            if added? {
                return Ok(());
            }
        }
        // null, unusable or large weights: row by row
        self.code_rows(keys)?;
        for (i, (&t, &v)) in self.rows.iter().zip(w.values().iter()).enumerate() {
            let tally = &mut self.tallies[t as usize];
            if w.is_null(i) {
                tally.rows += 1;
                tally.weightless += 1;
            } else {
                tally.add_weighted_row(v);
            }
        }
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let Some(states) = states.first() else {
            return exec_err!("{STRATA_CELLS}: no partial state");
        };
        for cells in crate::struct_list::rows_of(states, STRATA_CELLS)? {
            let k = self.coder.columns.len();
            self.code_rows(&cells.columns()[..k])?;
            let rows = cells.column(k).as_primitive::<Int64Type>();
            let unusable = cells.column(k + 2).as_primitive::<Int64Type>();
            let weight_count = cells.column(k + 3).as_primitive::<Int64Type>();
            let (exact, special) = (
                cells.column(k + 4).as_primitive::<Decimal128Type>(),
                cells.column(k + 5).as_primitive::<Float64Type>(),
            );
            for (r, &t) in self.rows.iter().enumerate() {
                let tally = &mut self.tallies[t as usize];
                tally.rows += rows.value(r);
                tally.weightless += rows.value(r) - weight_count.value(r);
                tally.add_weight(exact.value(r), exact_weight_value(exact.value(r)));
                tally.special += special.value(r);
                tally.unusable += unusable.value(r);
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
            + self.coder.size()
            + self.tallies.capacity() * size_of::<Tally>()
            + self.rows.capacity() * 4
            + self.exact.capacity() * 8
            + self.sums.capacity() * 16
    }
}

#[cfg(test)]
mod tests;
