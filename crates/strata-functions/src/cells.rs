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
//! dictionary without null keys (the profile reads its keys so, see `coded.rs`) or an
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
    downcast_integer_array,
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
    sums.resize(len, (0, 0));
    match exact {
        Some(exact) => {
            for (&k, &e) in index.iter().zip(exact) {
                let (sum, n) = &mut sums[k as usize];
                *sum += e;
                *n += 1;
            }
        }
        None => index.iter().for_each(|&k| sums[k as usize].1 += 1),
    }
}

/// Rows of key columns → dense ids of their distinct tuples of values (0-based, in the
/// order first seen), kept across batches.
#[derive(Debug)]
pub(crate) struct TupleCoder {
    columns: Vec<ColumnCodes>,
    tuples: TupleCodes,
    /// Reused per batch: the codes of each key column.
    codes: Vec<Vec<u32>>,
    radix: RadixTable,
}

/// Key columns read as the digits of one number per row, each in its own bits: an
/// `Int32` dictionary without null keys gives its key (radix: the dictionary's length),
/// an integer column without nulls its value minus a base (radix: the span of its
/// values). While the bits are few, the number indexes a table of tuple ids, kept across
/// batches of the same dictionaries and spans. A row then costs one shift and `or` per
/// column (a loop the compiler vectorises) and one lookup, instead of a lookup per
/// column, a packing and a lookup; entries are filled as rows meet them, through the
/// general path, so tuples keep their first-seen order.
#[derive(Debug, Default)]
struct RadixTable {
    /// Per key column, what the table's digits mean.
    shape: Vec<Digits>,
    /// Number → tuple id + 1 (0: not met yet).
    ids: Vec<u32>,
    /// Reused per batch: each row's number.
    numbers: Vec<u32>,
}

#[derive(Debug, Clone)]
enum Digits {
    /// Dictionary keys, into these values.
    Keys(ArrayRef),
    /// Integers `base..base + radix`.
    Ints { base: i64, radix: u32 },
}

impl Digits {
    /// The bits its digit takes in a number: enough for the radix (a power of two
    /// per column, so a number is built by shifts, which vectorise on every x86-64,
    /// where multiplies of 32-bit lanes do not).
    fn bits(&self) -> u32 {
        let radix = match self {
            Digits::Keys(values) => values.len() as u64,
            Digits::Ints { radix, .. } => u64::from(*radix),
        };
        64 - radix.saturating_sub(1).leading_zeros()
    }

    /// Whether numbers built with `self` mean what they meant with `other`: the same
    /// dictionary values (equal arrays, as batches of one column chunk hold), or the
    /// same integer span.
    fn same(&self, other: &Digits) -> bool {
        match (self, other) {
            (Digits::Keys(a), Digits::Keys(b)) => Arc::ptr_eq(a, b) || a.as_ref() == b.as_ref(),
            (Digits::Ints { base: a, radix: r }, Digits::Ints { base: b, radix: s }) => {
                a == b && r == s
            }
            _ => false,
        }
    }
}

/// Bits of a radix table's numbers past which it is not used (2¹⁶ entries, 256 KiB of
/// ids).
const RADIX_BITS: u32 = 16;

impl TupleCoder {
    /// A coder for key columns of these types.
    pub(crate) fn new(key_types: &[DataType]) -> Self {
        Self {
            columns: key_types
                .iter()
                .map(|t| ColumnCodes::new(value_type(t)))
                .collect(),
            tuples: TupleCodes::new(key_types.len()),
            codes: vec![Vec::new(); key_types.len()],
            radix: RadixTable::default(),
        }
    }

    /// Tuples seen so far.
    pub(crate) fn len(&self) -> usize {
        self.tuples.len()
    }

    /// Writes the tuple id of every row of `keys` to `out`.
    pub(crate) fn code(&mut self, keys: &[ArrayRef], out: &mut Vec<u32>) -> Result<()> {
        self.check_width(keys)?;
        if self.code_by_radix(keys, out)? {
            return Ok(());
        }
        self.code_by_columns(keys, out)
    }

    fn check_width(&self, keys: &[ArrayRef]) -> Result<()> {
        if keys.len() != self.columns.len() {
            return exec_err!(
                "expected {} key columns, got {}",
                self.columns.len(),
                keys.len()
            );
        }
        Ok(())
    }

    /// [`RadixTable`]'s way, when every key column allows it; `false` (and nothing
    /// written) when one does not.
    fn code_by_radix(&mut self, keys: &[ArrayRef], out: &mut Vec<u32>) -> Result<bool> {
        if !self.radix_numbers(keys)? {
            return Ok(false);
        }
        self.radix_ids(keys, out)?;
        Ok(true)
    }

    /// The tuple id of every row, from the numbers [`Self::radix_numbers`] just computed.
    fn radix_ids(&mut self, keys: &[ArrayRef], out: &mut Vec<u32>) -> Result<()> {
        let numbers = std::mem::take(&mut self.radix.numbers);
        let n = numbers.len();
        out.clear();
        out.resize(n, 0);
        let mut row = 0;
        while row < n {
            row += known_ids(&self.radix.ids, &numbers[row..], &mut out[row..]);
            if row < n {
                out[row] = self.radix_new_row(keys, row, numbers[row])?;
                row += 1;
            }
        }
        self.radix.numbers = numbers;
        Ok(())
    }

    /// Each row's number in the radix table, into `self.radix.numbers` (the table reset
    /// when the batch's digits mean something else); `false` (and nothing changed) when
    /// a key column does not allow the table.
    fn radix_numbers(&mut self, keys: &[ArrayRef]) -> Result<bool> {
        let n = keys.first().map_or(0, |k| k.len());
        if n == 0 {
            return Ok(false);
        }
        let mut shape = Vec::with_capacity(keys.len());
        let mut bits = 0;
        for (j, a) in keys.iter().enumerate() {
            let digits = if let Some(d) = a
                .as_dictionary_opt::<Int32Type>()
                .filter(|d| d.keys().null_count() == 0)
            {
                Digits::Keys(d.values().clone())
            } else if a.data_type().is_integer() && a.null_count() == 0 {
                let Some((low, high)) = integer_range(a)? else {
                    return Ok(false);
                };
                match self.radix.shape.get(j) {
                    // inside the table's span: keep it (no rebuild for a batch without
                    // one of the values)
                    Some(&Digits::Ints { base, radix })
                        if base <= low
                            && i128::from(high) < i128::from(base) + i128::from(radix) =>
                    {
                        Digits::Ints { base, radix }
                    }
                    _ => match u32::try_from(i128::from(high) - i128::from(low) + 1) {
                        Ok(radix) if radix <= 1 << RADIX_BITS => Digits::Ints { base: low, radix },
                        _ => return Ok(false),
                    },
                }
            } else {
                return Ok(false);
            };
            bits += digits.bits();
            if bits > RADIX_BITS {
                return Ok(false);
            }
            shape.push(digits);
        }
        let radix = &mut self.radix;
        if radix.shape.len() != shape.len()
            || !radix.shape.iter().zip(&shape).all(|(a, b)| a.same(b))
        {
            radix.shape = shape;
            radix.ids.clear();
            radix.ids.resize(1 << bits, 0);
        }
        let mut numbers = std::mem::take(&mut radix.numbers);
        numbers.clear();
        numbers.resize(n, 0);
        let mut shift = 0;
        for (a, digits) in keys.iter().zip(&radix.shape) {
            match digits {
                Digits::Keys(_) => {
                    let keys = a.as_dictionary::<Int32Type>().keys().values();
                    for (m, &k) in numbers.iter_mut().zip(keys.iter()) {
                        *m |= (k as u32) << shift;
                    }
                }
                Digits::Ints { base, .. } => add_integer_digits(a, *base, shift, &mut numbers)?,
            }
            shift += digits.bits();
        }
        self.radix.numbers = numbers;
        Ok(true)
    }

    /// The tuple id of row `row`, whose `number` the radix table has not met: the
    /// general way, for this row alone, then entered in the table.
    fn radix_new_row(&mut self, keys: &[ArrayRef], row: usize, number: u32) -> Result<u32> {
        let one: Vec<ArrayRef> = keys.iter().map(|a| a.slice(row, 1)).collect();
        let mut id = Vec::with_capacity(1);
        self.code_by_columns(&one, &mut id)?;
        if let Some(slot) = self.radix.ids.get_mut(number as usize) {
            *slot = id[0] + 1;
        }
        Ok(id[0])
    }

    /// Codes each column, then the tuples of codes.
    fn code_by_columns(&mut self, keys: &[ArrayRef], out: &mut Vec<u32>) -> Result<()> {
        // An `Int32` dictionary without null keys (what the coded scan yields) has only
        // its few values coded, and each row's code is then a lookup by its key; any
        // other column has every row coded.
        let mut by_key: Vec<Option<&[i32]>> = Vec::with_capacity(keys.len());
        for ((column, array), codes) in self.columns.iter_mut().zip(keys).zip(self.codes.iter_mut())
        {
            codes.clear();
            match array
                .as_dictionary_opt::<Int32Type>()
                .filter(|d| d.keys().null_count() == 0)
            {
                Some(d) => {
                    column.code(d.values(), codes)?;
                    by_key.push(Some(d.keys().values()));
                }
                None => {
                    column.code(array, codes)?;
                    by_key.push(None);
                }
            }
        }
        let cardinality: Vec<u32> = self.columns.iter().map(|c| c.values.len() as u32).collect();
        let rows = keys.first().map_or(0, |k| k.len());
        self.tuples
            .code(&mut self.codes, &by_key, &cardinality, rows, out);
        Ok(())
    }

    fn size(&self) -> usize {
        self.columns.iter().map(ColumnCodes::size).sum::<usize>()
            + self.tuples.size()
            + self.codes.iter().map(|c| c.capacity() * 4).sum::<usize>()
            + (self.radix.ids.capacity() + self.radix.numbers.capacity()) * 4
    }
}

/// Writes the tuple ids of the leading rows whose numbers the table has met, through
/// plain slices (no header reloads, no pushes, the counter in a register); returns how
/// many rows that was.
#[inline]
fn known_ids(ids: &[u32], numbers: &[u32], out: &mut [u32]) -> usize {
    for (i, (o, &m)) in out.iter_mut().zip(numbers).enumerate() {
        match ids.get(m as usize) {
            Some(&id) if id != 0 => *o = id - 1,
            _ => return i,
        }
    }
    numbers.len().min(out.len())
}

/// The least and greatest value of an integer column without nulls, as `i64` (`None`
/// for an empty column or an unsigned value past `i64::MAX`).
fn integer_range(a: &ArrayRef) -> Result<Option<(i64, i64)>> {
    use datafusion::arrow::compute::{max, min};
    Ok(downcast_integer_array!(
        a => match (min(a), max(a)) {
            (Some(low), Some(high)) => low.to_i64().zip(high.to_i64()),
            _ => None,
        },
        t => return exec_err!("{STRATA_CELLS}: unexpected {t}")
    ))
}

/// Sets each row's `value - base` into its number at bit `shift` (values inside the
/// span).
fn add_integer_digits(a: &ArrayRef, base: i64, shift: u32, numbers: &mut [u32]) -> Result<()> {
    downcast_integer_array!(
        a => {
            for (m, v) in numbers.iter_mut().zip(a.values().iter()) {
                let digit = v.to_i64().unwrap_or(base).wrapping_sub(base) as u32;
                *m |= digit << shift;
            }
        },
        t => return exec_err!("{STRATA_CELLS}: unexpected {t}")
    );
    Ok(())
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

/// An exact 128-bit stand-in for a short value: for bytes of up to 12, their Arrow
/// string view (length in the low 32 bits, then the bytes); for integers, their bits.
type Fingerprint = u128;

fn short_bytes(b: &[u8]) -> Option<Fingerprint> {
    (b.len() <= 12).then(|| {
        let mut buf = [0u8; 16];
        buf[..4].copy_from_slice(&(b.len() as u32).to_le_bytes());
        buf[4..4 + b.len()].copy_from_slice(b);
        u128::from_le_bytes(buf)
    })
}

/// No value has this fingerprint: its length or high bits are out of range.
const EMPTY: Fingerprint = u128::MAX;

fn mix(key: Fingerprint) -> u64 {
    (key as u64 ^ (key >> 64) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

#[inline(always)]
fn cache_slot(key: Fingerprint) -> usize {
    (mix(key) >> (64 - CACHE_BITS)) as usize
}

/// Open addressing from fingerprints to nonzero codes, sized to stay mostly empty.
#[derive(Debug, Default)]
struct CodeTable {
    slots: Vec<(Fingerprint, u32)>,
    len: usize,
}

impl CodeTable {
    fn slot(&self, key: Fingerprint) -> usize {
        (mix(key) >> (64 - self.slots.len().trailing_zeros())) as usize
    }

    fn get(&self, key: Fingerprint) -> Option<u32> {
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.slots.len() - 1;
        let mut i = self.slot(key);
        loop {
            let (k, code) = self.slots[i];
            if code == 0 {
                return None;
            }
            if k == key {
                return Some(code);
            }
            i = (i + 1) & mask;
        }
    }

    fn insert(&mut self, key: Fingerprint, code: u32) {
        if (self.len + 1) * 4 > self.slots.len() {
            let grown = vec![(0, 0); (self.slots.len() * 2).max(64)];
            let old = std::mem::replace(&mut self.slots, grown);
            self.len = 0;
            for (k, c) in old.into_iter().filter(|(_, c)| *c != 0) {
                self.insert(k, c);
            }
        }
        let mask = self.slots.len() - 1;
        let mut i = self.slot(key);
        while self.slots[i].1 != 0 {
            i = (i + 1) & mask;
        }
        self.slots[i] = (key, code);
        self.len += 1;
    }
}

/// Slots of a column's direct-mapped cache in front of its code table.
const CACHE_BITS: u32 = 8;

/// The codes of one key column: 0 for null, then one per distinct value in the order
/// first seen. Rows look up a small direct-mapped cache first (one multiply, one
/// compare), which holds every value when a column has few.
#[derive(Debug)]
struct ColumnCodes {
    data_type: DataType,
    /// Code − 1 → the value.
    values: Vec<ScalarValue>,
    /// A fixed-size array, so indexing by a slot below its length needs no bounds check.
    cache: Box<[(Fingerprint, u32); 1 << CACHE_BITS]>,
    short: CodeTable,
    long: HashMap<Box<[u8]>, u32>,
    /// Integer columns: the codes of the values `small_base..` (0: not coded yet), while
    /// the values seen span under [`SMALL_SPAN`]; `None` once they do not.
    small: Option<(i64, Vec<u32>)>,
}

/// Widest span of integer values a column codes by a direct table.
const SMALL_SPAN: i64 = 1024;

impl ColumnCodes {
    fn new(data_type: DataType) -> Self {
        Self {
            data_type,
            values: Vec::new(),
            cache: Box::new([(EMPTY, 0); 1 << CACHE_BITS]),
            short: CodeTable::default(),
            long: HashMap::new(),
            small: Some((0, Vec::new())),
        }
    }

    /// Codes of an integer column without nulls, given each row's value as an `i64`
    /// (bit for bit: distinct values stay distinct): looked up in the direct table,
    /// the rest coded by fingerprint and added to the table while its span allows.
    fn by_small_ints(
        &mut self,
        array: &dyn Array,
        value: impl Fn(usize) -> i64,
        out: &mut Vec<u32>,
    ) -> Result<()> {
        const MISS: u32 = u32::MAX;
        let n = array.len();
        let start = out.len();
        out.resize(start + n, MISS);
        let mut misses = false;
        if let Some((base, table)) = &self.small {
            let table: &[u32] = table;
            for (i, code) in out[start..].iter_mut().enumerate() {
                match table.get(value(i).wrapping_sub(*base) as u64 as usize) {
                    Some(&c) if c != 0 => *code = c,
                    _ => misses = true,
                }
            }
        } else {
            misses = true;
        }
        if !misses {
            return Ok(());
        }
        for i in 0..n {
            if out[start + i] == MISS {
                let v = value(i);
                let key = v as u64 as u128;
                let code = match self.cached(key) {
                    Some(code) => code,
                    None => self.by_fingerprint(key, array, i)?,
                };
                out[start + i] = code;
                self.remember_small(v, code);
            }
        }
        Ok(())
    }

    /// Puts an integer's code in the direct table, widening it, or gives the table up
    /// when the values seen span [`SMALL_SPAN`] or more.
    #[cold]
    fn remember_small(&mut self, v: i64, code: u32) {
        let Some((base, table)) = &mut self.small else {
            return;
        };
        if table.is_empty() {
            *base = v;
        }
        let low = (*base).min(v);
        let high = (*base + table.len() as i64 - 1).max(v);
        if high.checked_sub(low).is_none_or(|span| span >= SMALL_SPAN) {
            self.small = None;
            return;
        }
        if low < *base || table.is_empty() {
            let mut widened = vec![0; (*base - low) as usize];
            widened.extend_from_slice(table);
            *table = widened;
            *base = low;
        }
        table.resize((high - low + 1) as usize, 0);
        table[(v - low) as usize] = code;
    }

    fn size(&self) -> usize {
        self.values.iter().map(ScalarValue::size).sum::<usize>()
            + (self.cache.len() + self.short.slots.capacity()) * size_of::<(Fingerprint, u32)>()
            + self.long.keys().map(|k| k.len() + 32).sum::<usize>()
    }

    fn cached(&self, key: Fingerprint) -> Option<u32> {
        let (k, code) = self.cache[cache_slot(key)];
        (k == key).then_some(code)
    }

    fn new_code(&mut self, array: &dyn Array, row: usize) -> Result<u32> {
        self.values.push(ScalarValue::try_from_array(array, row)?);
        Ok(self.values.len() as u32)
    }

    /// The code of a short value missing from the cache (and now in it).
    #[cold]
    fn by_fingerprint(&mut self, key: Fingerprint, array: &dyn Array, row: usize) -> Result<u32> {
        let code = match self.short.get(key) {
            Some(code) => code,
            None => {
                let code = self.new_code(array, row)?;
                self.short.insert(key, code);
                code
            }
        };
        self.cache[cache_slot(key)] = (key, code);
        Ok(code)
    }

    fn by_bytes(&mut self, bytes: &[u8], array: &dyn Array, row: usize) -> Result<u32> {
        if let Some(key) = short_bytes(bytes) {
            return match self.cached(key) {
                Some(code) => Ok(code),
                None => self.by_fingerprint(key, array, row),
            };
        }
        match self.long.get(bytes) {
            Some(&code) => Ok(code),
            None => {
                let code = self.new_code(array, row)?;
                self.long.insert(bytes.into(), code);
                Ok(code)
            }
        }
    }

    /// Codes of rows given by their fingerprints (`None`: a long value, coded by
    /// `long(row)`). Null rows (per `array`'s logical nulls) get 0. A first loop serves
    /// every row it can from the cache, with no branch but the compare; a second one, only
    /// when needed, codes the rest and the nulls.
    fn by_rows<'a>(
        &mut self,
        array: &dyn Array,
        out: &mut Vec<u32>,
        fingerprint: impl Fn(usize) -> Option<Fingerprint>,
        long: impl Fn(usize) -> &'a [u8],
    ) -> Result<()> {
        const MISS: u32 = u32::MAX;
        let n = array.len();
        let start = out.len();
        out.resize(start + n, MISS);
        let rows = &mut out[start..];
        let mut misses = false;
        for (i, code) in rows.iter_mut().enumerate() {
            if let Some(key) = fingerprint(i) {
                let (k, c) = self.cache[cache_slot(key)];
                if k == key {
                    *code = c;
                    continue;
                }
            }
            misses = true;
        }
        let nulls = array.logical_nulls().filter(|n| n.null_count() > 0);
        if !misses && nulls.is_none() {
            return Ok(());
        }
        for i in 0..n {
            if nulls.as_ref().is_some_and(|n| n.is_null(i)) {
                out[start + i] = 0;
            } else if out[start + i] == MISS {
                // a value first seen in this batch is in the cache from then on
                out[start + i] = match fingerprint(i) {
                    Some(key) => match self.cached(key) {
                        Some(code) => code,
                        None => self.by_fingerprint(key, array, i)?,
                    },
                    None => self.by_bytes(long(i), array, i)?,
                };
            }
        }
        Ok(())
    }

    /// Appends the code of every row of `array` to `out`.
    fn code(&mut self, array: &ArrayRef, out: &mut Vec<u32>) -> Result<()> {
        let a = array.as_ref();
        macro_rules! bytes_rows {
            ($arr:expr) => {{
                let arr = $arr;
                self.by_rows(
                    a,
                    out,
                    |i| short_bytes(arr.value(i).as_ref()),
                    |i| arr.value(i).as_ref(),
                )
            }};
        }
        macro_rules! bits_rows {
            ($values:expr) => {{
                let values = $values;
                self.by_rows(a, out, |i| Some(values[i] as u64 as u128), |_| &[])
            }};
        }
        match a.data_type() {
            DataType::Utf8View => {
                let s = a.as_string_view();
                // an inline view (up to 12 bytes) holds the whole value
                self.by_rows(
                    a,
                    out,
                    |i| Some(s.views()[i]).filter(|v| *v as u32 <= 12),
                    |i| s.value(i).as_bytes(),
                )
            }
            DataType::BinaryView => {
                let b = a.as_binary_view();
                self.by_rows(
                    a,
                    out,
                    |i| Some(b.views()[i]).filter(|v| *v as u32 <= 12),
                    |i| b.value(i),
                )
            }
            DataType::Utf8 => bytes_rows!(a.as_string::<i32>()),
            DataType::LargeUtf8 => bytes_rows!(a.as_string::<i64>()),
            DataType::Binary => bytes_rows!(a.as_binary::<i32>()),
            DataType::LargeBinary => bytes_rows!(a.as_binary::<i64>()),
            DataType::Boolean => {
                let b = a.as_boolean();
                self.by_rows(a, out, |i| Some(b.value(i) as u128), |_| &[])
            }
            DataType::Date32 => bits_rows!(a.as_primitive::<Date32Type>().values()),
            DataType::Date64 => bits_rows!(a.as_primitive::<Date64Type>().values()),
            DataType::Dictionary(..) => {
                let dict = a.as_any_dictionary();
                let mut value_codes = Vec::with_capacity(dict.values().len());
                self.code(dict.values(), &mut value_codes)?;
                let nulls = a.logical_nulls();
                if value_codes.is_empty() {
                    out.extend(std::iter::repeat_n(0, a.len()));
                } else {
                    for (i, k) in dict.normalized_keys().into_iter().enumerate() {
                        out.push(if nulls.as_ref().is_none_or(|n| n.is_valid(i)) {
                            value_codes[k]
                        } else {
                            0
                        });
                    }
                }
                Ok(())
            }
            t if t.is_integer() && a.null_count() == 0 => downcast_integer_array!(
                a => {
                    let values = a.values();
                    self.by_small_ints(a, |i| values[i] as i64, out)
                },
                t => exec_err!("{STRATA_CELLS}: unexpected {t}")
            ),
            t if t.is_integer() => {
                downcast_integer_array!(a => bits_rows!(a.values()), t => exec_err!("{STRATA_CELLS}: unexpected {t}"))
            }
            // anything else by its text (exact for the types groups allow)
            _ => {
                let text = datafusion::arrow::compute::cast(a, &DataType::Utf8)?;
                // values are kept in the column's own type: `by_rows` reads them from `a`
                bytes_rows!(text.as_string::<i32>())
            }
        }
    }

    /// The values of `codes` as one array of the column's type.
    fn values_of(&self, codes: impl Iterator<Item = u32>) -> Result<ArrayRef> {
        let null = ScalarValue::try_from(&self.data_type)?;
        let scalars: Vec<ScalarValue> = codes
            .map(|c| {
                if c == 0 {
                    null.clone()
                } else {
                    self.values[c as usize - 1].clone()
                }
            })
            .collect();
        if scalars.is_empty() {
            return Ok(datafusion::arrow::array::new_empty_array(&self.data_type));
        }
        ScalarValue::iter_to_array(scalars)
    }
}

/// Bits of a packed tuple index past which tuples are hashed instead (a dense index of
/// 2^16 entries is 256 KiB).
const DENSE_BITS: u32 = 16;

/// Tuples of column codes → dense tuple ids (0-based, in the order first seen).
///
/// While the columns' codes fit [`DENSE_BITS`] bits side by side, a tuple's packed codes
/// index a table directly; the packing widens (and the table is rebuilt) as columns
/// gain values. Past that, up to four codes make one 128-bit hashed key, and a longer
/// tuple is folded four columns at a time, each fold's id starting the next.
#[derive(Debug)]
struct TupleCodes {
    width: usize,
    /// Bits per column of the packed index; empty once tuples are hashed.
    bits: Vec<u32>,
    /// Packed codes → tuple id + 1 (0: not seen).
    dense: Vec<u32>,
    /// One table per fold, when hashed.
    folds: Vec<CodeTable>,
    /// Tuple id → its column codes (`width` each).
    keys: Vec<u32>,
    len: usize,
    packed: Vec<u32>,
}

impl TupleCodes {
    fn new(width: usize) -> Self {
        let bits = vec![1; width];
        let dense = if width as u32 <= DENSE_BITS {
            vec![0; 1 << width]
        } else {
            Vec::new()
        };
        let mut t = Self {
            width,
            bits,
            dense,
            folds: Vec::new(),
            keys: Vec::new(),
            len: 0,
            packed: Vec::new(),
        };
        if t.dense.is_empty() {
            t.switch_to_hashing();
        }
        t
    }

    fn len(&self) -> usize {
        self.len
    }

    fn size(&self) -> usize {
        self.folds
            .iter()
            .map(|f| f.slots.capacity() * size_of::<(Fingerprint, u32)>())
            .sum::<usize>()
            + (self.keys.capacity() + self.dense.capacity() + self.packed.capacity()) * 4
    }

    fn key(&self, tuple: usize) -> &[u32] {
        &self.keys[tuple * self.width..(tuple + 1) * self.width]
    }

    fn pack(&self, key: &[u32]) -> usize {
        let mut at = 0;
        let mut packed = 0usize;
        for (c, b) in key.iter().zip(&self.bits) {
            packed |= (*c as usize) << at;
            at += b;
        }
        packed
    }

    /// Switches from the dense index to hashed folds, keeping every tuple's id.
    fn switch_to_hashing(&mut self) {
        self.bits.clear();
        self.dense = Vec::new();
        let folds = if self.width <= 4 {
            1
        } else {
            1 + (self.width - 4).div_ceil(3)
        };
        self.folds = (0..folds).map(|_| CodeTable::default()).collect();
        let keys = std::mem::take(&mut self.keys);
        let len = std::mem::replace(&mut self.len, 0);
        let mut out = Vec::new();
        let columns: Vec<Vec<u32>> = (0..self.width)
            .map(|c| (0..len).map(|t| keys[t * self.width + c]).collect())
            .collect();
        self.code_hashed(&columns, &mut out);
        debug_assert_eq!(out, (0..len as u32).collect::<Vec<_>>());
    }

    /// Makes the packed index wide enough for codes up to `max` per column, or gives
    /// it up for hashing.
    fn fit(&mut self, max: &[u32]) {
        if self.bits.is_empty() || max.iter().zip(&self.bits).all(|(m, b)| *m < 1 << b) {
            return;
        }
        for (m, b) in max.iter().zip(self.bits.iter_mut()) {
            *b = (*b).max(32 - m.leading_zeros()).max(1);
        }
        if self.bits.iter().sum::<u32>() > DENSE_BITS {
            return self.switch_to_hashing();
        }
        self.dense = vec![0; 1 << self.bits.iter().sum::<u32>()];
        for t in 0..self.len {
            let at = self.pack(self.key(t));
            self.dense[at] = t as u32 + 1;
        }
    }

    /// Writes the tuple id of each of `rows` rows to `out`. Per column, `codes` holds
    /// every row's code, or, where `by_key` gives the rows' dictionary keys, the code of
    /// each key (a lookup table, shifted in place here); each code is at most that
    /// column's `max`.
    fn code(
        &mut self,
        codes: &mut [Vec<u32>],
        by_key: &[Option<&[i32]>],
        max: &[u32],
        rows: usize,
        out: &mut Vec<u32>,
    ) {
        out.clear();
        self.fit(max);
        if self.bits.is_empty() {
            // hashed tuples take every row's codes
            for (codes, keys) in codes.iter_mut().zip(by_key) {
                if let Some(keys) = keys {
                    let table = std::mem::take(codes);
                    codes.extend(keys.iter().map(|&k| table[k as usize]));
                }
            }
            return self.code_hashed(codes, out);
        }
        // packed indices column by column, then one lookup per row
        self.packed.clear();
        self.packed.resize(rows, 0);
        let mut at = 0;
        for ((c, keys), b) in codes.iter_mut().zip(by_key).zip(&self.bits) {
            match keys {
                Some(keys) => {
                    c.iter_mut().for_each(|code| *code <<= at);
                    // a plain slice, so the loop does not reload the vector's header
                    let table: &[u32] = c;
                    for (p, &k) in self.packed.iter_mut().zip(keys.iter()) {
                        *p |= table[k as usize];
                    }
                }
                None => {
                    for (p, &code) in self.packed.iter_mut().zip(c.iter()) {
                        *p |= code << at;
                    }
                }
            }
            at += b;
        }
        self.ids_of_packed(out);
    }

    /// Writes the tuple id of every packed index in `self.packed` to `out`.
    fn ids_of_packed(&mut self, out: &mut Vec<u32>) {
        let n = self.packed.len();
        out.resize(n, 0);
        let mut r = 0;
        while r < n {
            // rows of known tuples through plain slices (no header reloads, no pushes),
            // up to the next new tuple
            let (packed, dense) = (&self.packed[..], &self.dense[..]);
            for (o, &p) in out[r..].iter_mut().zip(&packed[r..]) {
                match dense[p as usize] {
                    0 => break,
                    id => *o = id - 1,
                }
                r += 1;
            }
            if r < n {
                out[r] = self.new_packed(self.packed[r] as usize) - 1;
                r += 1;
            }
        }
    }

    /// Adds the tuple at a packed index, unpacking its codes; returns its id + 1.
    #[cold]
    fn new_packed(&mut self, slot: usize) -> u32 {
        let mut at = 0;
        for b in &self.bits {
            self.keys.push((slot >> at) as u32 & ((1 << b) - 1));
            at += b;
        }
        self.len += 1;
        self.dense[slot] = self.len as u32;
        self.len as u32
    }

    fn code_hashed(&mut self, codes: &[Vec<u32>], out: &mut Vec<u32>) {
        let n = codes.first().map_or(0, Vec::len);
        let last_fold = self.folds.len() - 1;
        for r in 0..n {
            // each fold keys on the previous fold's id and the next columns' codes
            let (mut id, mut col) = (0u32, 0usize);
            for f in 0..=last_fold {
                let mut key: Fingerprint = 0;
                let mut part = 0;
                if f > 0 {
                    key = id as u128;
                    part = 1;
                }
                while part < 4 && col < self.width {
                    key |= (codes[col][r] as u128) << (32 * part);
                    part += 1;
                    col += 1;
                }
                id = match self.folds[f].get(key) {
                    Some(id) => id,
                    None => {
                        let id = if f == last_fold {
                            self.keys.extend(codes.iter().map(|c| c[r]));
                            self.len += 1;
                            self.len as u32
                        } else {
                            self.folds[f].len as u32 + 1
                        };
                        self.folds[f].insert(key, id);
                        id
                    }
                };
            }
            out.push(id - 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use datafusion::arrow::array::{
        BooleanArray, DictionaryArray, Int32Array, RecordBatch, StringArray, StringViewArray,
        UInt64Array,
    };
    use datafusion::arrow::datatypes::{Int8Type, Schema};
    use datafusion::datasource::MemTable;
    use datafusion::prelude::*;

    use super::*;

    type Row = (
        Vec<Option<String>>,
        i64,
        Option<String>,
        Option<String>,
        i64,
    );

    /// Rows of a result as text, sorted, floats to 10 decimals (the tests' weights are
    /// binary fractions, so their float sums are exact in any order, and a weight off by
    /// one unit of the exact sums shows).
    fn rows_of(batches: &[RecordBatch], keys: usize) -> Vec<Row> {
        let mut out = Vec::new();
        for b in batches {
            let text = |i: usize| {
                let a = datafusion::arrow::compute::cast(b.column(i), &DataType::Utf8).unwrap();
                let a = a.as_string::<i32>().clone();
                (0..a.len())
                    .map(move |r| a.is_valid(r).then(|| a.value(r).to_string()))
                    .collect::<Vec<_>>()
            };
            let float = |i: usize| {
                let a = b.column(i).as_primitive::<Float64Type>().clone();
                (0..a.len())
                    .map(move |r| a.is_valid(r).then(|| format!("{:.10}", a.value(r))))
                    .collect::<Vec<_>>()
            };
            let k: Vec<Vec<Option<String>>> = (0..keys).map(text).collect();
            let (w, negative) = (float(keys + 1), text(keys + 2));
            let (rows, count) = (
                b.column(keys).as_primitive::<Int64Type>(),
                b.column(keys + 3).as_primitive::<Int64Type>(),
            );
            for r in 0..b.num_rows() {
                out.push((
                    k.iter().map(|c| c[r].clone()).collect(),
                    rows.value(r),
                    w[r].clone(),
                    negative[r].clone(),
                    count.value(r),
                ));
            }
        }
        out.sort();
        out
    }

    /// The one value of an aggregate query, as a batch of its cells.
    async fn cells(ctx: &SessionContext, sql: &str) -> Vec<RecordBatch> {
        let result = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        assert_eq!(
            result.iter().map(|b| b.num_rows()).sum::<usize>(),
            1,
            "{sql}"
        );
        let lists = result
            .iter()
            .find(|b| b.num_rows() == 1)
            .unwrap()
            .column(0)
            .as_list::<i32>()
            .clone();
        vec![RecordBatch::from(lists.value(0).as_struct())]
    }

    /// Several partitions with every kind of key: views (short and long), plain strings,
    /// dictionaries, integers, booleans, nulls everywhere, null weights. The result must
    /// equal DataFusion's own GROUP BY.
    #[tokio::test]
    async fn equals_group_by() {
        let long = "a value longer than twelve bytes";
        let mut parts = Vec::new();
        for p in 0..3 {
            let n = 500 + p * 37;
            let pick = |i: usize, m: usize| (i * 7 + p * 3) % m;
            let s: StringViewArray = (0..n)
                .map(|i| match pick(i, 5) {
                    0 => None,
                    1 => Some(long),
                    2 => Some("x"),
                    3 => Some("yy"),
                    _ => Some("twelve bytes"),
                })
                .collect();
            let t: StringArray = (0..n)
                .map(|i| match pick(i, 4) {
                    0 => None,
                    1 => Some(long),
                    _ => Some(["a", "b"][i % 2]),
                })
                .collect();
            let d: DictionaryArray<Int8Type> = (0..n)
                .map(|i| match pick(i, 6) {
                    0 => None,
                    k => Some(["p", "q", "r", "s", long][k - 1]),
                })
                .collect();
            // no null keys, a null among the values: the Int32 fast path
            let e = DictionaryArray::<Int32Type>::try_new(
                Int32Array::from_iter_values((0..n).map(|i| pick(i, 6) as i32)),
                Arc::new(StringArray::from(vec![
                    Some("u"),
                    None,
                    Some(long),
                    Some("v"),
                    Some("w"),
                    Some("x"),
                ])),
            )
            .unwrap();
            // another, with null keys in one partition only: batches of that partition
            // take the general path, the others the dictionary path, into the same cells
            let f = DictionaryArray::<Int32Type>::try_new(
                Int32Array::from_iter(
                    (0..n).map(|i| (p != 1 || i % 7 != 0).then_some(pick(i, 3) as i32)),
                ),
                Arc::new(StringArray::from(vec!["f0", "f1", "f2"])),
            )
            .unwrap();
            let y =
                Int32Array::from_iter((0..n).map(|i| (i % 3 != 0).then_some((i % 5) as i32 - 2)));
            let b = BooleanArray::from_iter((0..n).map(|i| (i % 11 != 0).then_some(i % 2 == 0)));
            let w = Float64Array::from_iter(
                (0..n).map(|i| (i % 13 != 0).then_some(i as f64 * 0.25 - 10.0)),
            );
            // weights without nulls (the chunked path); one of 10⁵ or more in one partition
            // and a negative one in another send their chunks down the per-row path
            let v = Float64Array::from_iter_values((0..n).map(|i| match (p, i) {
                (2, 100) => 2.5e5,
                (1, 7) => -3.0,
                _ => (i % 17) as f64 * 0.5,
            }));
            // integers without nulls: small negative ones, ones far apart, and unsigned
            // 64-bit ones past i64
            // (with nulls in one partition: its batches take the general way into the same codes)
            let z = Int32Array::from_iter(
                (0..n).map(|i| (p != 1 || i % 5 != 0).then_some((pick(i, 4) as i32) - 1)),
            );
            let wide = Int64Array::from_iter_values((0..n).map(|i| (i % 3) as i64 * 5_000 - 7));
            let u = UInt64Array::from_iter_values((0..n).map(|i| u64::MAX - (i % 3) as u64));
            // many distinct values: past the dense index and the caches
            let many =
                Int64Array::from_iter_values((0..n).map(|i| ((i * 7919) % 401) as i64 - 200));
            let batch = RecordBatch::try_from_iter_with_nullable(
                [
                    ("s", Arc::new(s) as ArrayRef),
                    ("t", Arc::new(t) as ArrayRef),
                    ("d", Arc::new(d) as ArrayRef),
                    ("e", Arc::new(e) as ArrayRef),
                    ("f", Arc::new(f) as ArrayRef),
                    ("y", Arc::new(y) as ArrayRef),
                    ("b", Arc::new(b) as ArrayRef),
                    ("w", Arc::new(w) as ArrayRef),
                    ("v", Arc::new(v) as ArrayRef),
                    ("z", Arc::new(z) as ArrayRef),
                    ("wide", Arc::new(wide) as ArrayRef),
                    ("u", Arc::new(u) as ArrayRef),
                    ("many", Arc::new(many) as ArrayRef),
                ]
                .map(|(name, array)| (name, array, true)),
            )
            .unwrap();
            // two batches per partition
            parts.push(vec![batch.slice(0, n / 2), batch.slice(n / 2, n - n / 2)]);
        }
        let schema: Arc<Schema> = parts[0][0].schema();
        let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(3));
        ctx.register_udaf(strata_cells_udaf());
        ctx.register_table(
            "t",
            Arc::new(MemTable::try_new(schema, parts).expect("a table")),
        )
        .unwrap();
        for keys in [
            vec!["s"],
            vec!["s", "t", "d", "y"],
            vec!["s", "t", "d", "y", "b"],
            vec!["y", "b", "d", "t", "s", "y % 2", "upper(t)"],
            vec!["many", "s"],
            vec!["e"],
            vec!["e", "f"],
            // past the dense index: hashed tuples, dictionary codes expanded per row
            vec!["many", "e", "f", "s", "t", "d"],
            vec!["e", "d", "s"],
            vec!["CAST(many AS VARCHAR)"],
            vec!["z", "s"],
            vec!["wide", "z", "e"],
            vec!["u", "z"],
        ] {
            for weight in ["w", "v"] {
                let list = keys.join(", ");
                let got = rows_of(
                    &cells(
                        &ctx,
                        &format!("SELECT {STRATA_CELLS}({weight}, {list}) FROM t"),
                    )
                    .await,
                    keys.len(),
                );
                let sql = format!(
                    "SELECT {list}, count(*), sum({weight}), sum(CASE WHEN {weight} IS NOT NULL AND NOT ({weight} = 0 OR ({weight} >= 1e-6 AND {weight} <= 1e15)) THEN 1 ELSE 0 END), count({weight}) FROM t GROUP BY {list}"
                );
                let want = rows_of(
                    &ctx.sql(&sql).await.unwrap().collect().await.unwrap(),
                    keys.len(),
                );
                assert!(want.len() > 4, "{list}: the data must have several groups");
                assert_eq!(got, want, "{weight}; {list}");
            }
        }
        // without a weight: rows only
        let got: BTreeMap<Vec<Option<String>>, i64> = rows_of(
            &cells(&ctx, &format!("SELECT {STRATA_CELLS}(NULL, s, y) FROM t")).await,
            2,
        )
        .into_iter()
        .map(|r| (r.0, r.1))
        .collect();
        let want: BTreeMap<Vec<Option<String>>, i64> = rows_of(
            &ctx.sql("SELECT s, y, count(*), sum(w), sum(CASE WHEN w IS NOT NULL AND NOT (w = 0 OR (w >= 1e-6 AND w <= 1e15)) THEN 1 ELSE 0 END), count(w) FROM t GROUP BY s, y")
                .await
                .unwrap()
                .collect()
                .await
                .unwrap(),
            2,
        )
        .into_iter()
        .map(|r| (r.0, r.1))
        .collect();
        assert_eq!(got, want);
    }

    /// Weight sums are the same to the bit however the rows are split and ordered, and
    /// equal SQL's exact decimal sum; plain float sums of the same rows differ.
    #[tokio::test]
    async fn weight_sums_do_not_depend_on_order() {
        let n = 4000usize;
        let key: Vec<&str> = (0..n).map(|i| ["a", "b", "c"][i % 3]).collect();
        // magnitudes far apart, so a float sum's rounding depends on its order
        let w: Vec<f64> = (0..n)
            .map(|i| [1e9 + 0.123_456_7, 0.1, 3.3e-3, 77.7][i % 4] * (1.0 + i as f64 * 1e-4))
            .collect();
        let batch = |rows: &[usize]| {
            RecordBatch::try_from_iter([
                (
                    "k",
                    Arc::new(StringArray::from_iter_values(rows.iter().map(|&i| key[i])))
                        as ArrayRef,
                ),
                (
                    "w",
                    Arc::new(Float64Array::from_iter_values(rows.iter().map(|&i| w[i])))
                        as ArrayRef,
                ),
            ])
            .unwrap()
        };
        let forward: Vec<usize> = (0..n).collect();
        let shuffled: Vec<usize> = (0..n).map(|i| (i * 1237) % n).collect();
        let float_sums = |order: &[usize]| {
            let mut sums = BTreeMap::new();
            order
                .iter()
                .for_each(|&i| *sums.entry(key[i]).or_insert(0.0) += w[i]);
            sums
        };
        assert_ne!(
            float_sums(&forward),
            float_sums(&shuffled),
            "the data must expose a float sum's order"
        );

        let weights = |partitions: Vec<Vec<RecordBatch>>| async move {
            let ctx = SessionContext::new_with_config(
                SessionConfig::new().with_target_partitions(partitions.len()),
            );
            ctx.register_udaf(strata_cells_udaf());
            ctx.register_table(
                "t",
                Arc::new(MemTable::try_new(partitions[0][0].schema(), partitions).unwrap()),
            )
            .unwrap();
            let cells = cells(&ctx, &format!("SELECT {STRATA_CELLS}(w, k) FROM t"))
                .await
                .remove(0);
            let sql =
                "SELECT k, CAST(sum(CAST(w AS DECIMAL(38, 10))) AS VARCHAR) FROM t GROUP BY k";
            let decimal = ctx.sql(sql).await.unwrap().collect().await.unwrap();
            let mut want = BTreeMap::new();
            for b in &decimal {
                let text = |i: usize| {
                    datafusion::arrow::compute::cast(b.column(i), &DataType::Utf8).unwrap()
                };
                let (k, sum) = (text(0), text(1));
                for r in 0..b.num_rows() {
                    want.insert(
                        k.as_string::<i32>().value(r).to_string(),
                        sum.as_string::<i32>().value(r).to_string(),
                    );
                }
            }
            let mut got = BTreeMap::new();
            let (exact, weight) = (
                cells.column(5).as_primitive::<Decimal128Type>(),
                cells.column(2).as_primitive::<Float64Type>(),
            );
            for r in 0..cells.num_rows() {
                let k = cells.column(0).as_string::<i32>().value(r).to_string();
                assert_eq!(
                    exact.value_as_string(r),
                    want[&k],
                    "{k}: the exact sum is SQL's decimal sum"
                );
                got.insert(k, weight.value(r).to_bits());
            }
            got
        };
        let one = weights(vec![vec![batch(&forward)]]).await;
        assert_eq!(one.len(), 3);
        let chunks: Vec<Vec<RecordBatch>> = shuffled
            .chunks(n / 4)
            .map(|c| vec![batch(&c[..c.len() / 2]), batch(&c[c.len() / 2..])])
            .collect();
        assert_eq!(weights(chunks).await, one);
    }

    /// Tuple ids stay put while the packed index widens and then gives way to hashing.
    #[test]
    fn tuple_ids_survive_a_wider_index() {
        for width in [2, 6] {
            let mut tuples = TupleCodes::new(width);
            let mut seen: BTreeMap<Vec<u32>, u32> = BTreeMap::new();
            // small codes, then codes that need 9 bits, then 17
            for max in [3u32, 300, 70_000] {
                let codes: Vec<Vec<u32>> = (0..width)
                    .map(|c| {
                        (0..50u32)
                            .map(|r| {
                                if r == 49 {
                                    max
                                } else {
                                    (r * (c as u32 + 3)) % (max + 1)
                                }
                            })
                            .collect()
                    })
                    .collect();
                let mut out = Vec::new();
                tuples.code(
                    &mut codes.clone(),
                    &vec![None; width],
                    &vec![max; width],
                    50,
                    &mut out,
                );
                for (r, &id) in out.iter().enumerate() {
                    let key: Vec<u32> = codes.iter().map(|c| c[r]).collect();
                    assert_eq!(*seen.entry(key.clone()).or_insert(id), id, "{key:?}");
                    assert_eq!(tuples.key(id as usize), key.as_slice());
                }
            }
            assert_eq!(tuples.len(), seen.len());
            assert!(
                tuples.bits.is_empty(),
                "17 bits per column must switch to hashing"
            );
        }
    }

    /// The radix table gives every row the tuple id the general path gives, in the same
    /// first-seen order, across batches whose dictionaries are shared, equal but
    /// separate, or different, whose integer spans stay, grow on either side or go
    /// negative, and batches that cannot take it (a null key, plain strings) in
    /// between; with the integer column as the low digit and as the high one.
    #[test]
    fn radix_table_equals_the_general_path() {
        let dict = |keys: Vec<i32>, values: &ArrayRef| -> ArrayRef {
            Arc::new(
                DictionaryArray::<Int32Type>::try_new(Int32Array::from(keys), values.clone())
                    .unwrap(),
            )
        };
        let strings = |v: &[&str]| -> ArrayRef { Arc::new(StringArray::from(v.to_vec())) };
        let abc = strings(&["a", "b", "c"]);
        let abc_again = strings(&["a", "b", "c"]);
        let reordered = strings(&["c", "x", "a", "b"]);
        let small =
            |v: Vec<i8>| -> ArrayRef { Arc::new(datafusion::arrow::array::Int8Array::from(v)) };
        let n = 64;
        let pattern = |m: usize, shift: usize| (0..n).map(move |r| ((r * 7 + shift) % m) as i32);
        let labels = |m: usize, shift: usize, low: i8| {
            small(pattern(m, shift).map(|v| v as i8 + low).collect())
        };
        let batches: Vec<(Vec<ArrayRef>, bool)> = vec![
            (
                vec![dict(pattern(3, 0).collect(), &abc), labels(2, 1, 0)],
                true,
            ),
            // the same values in another array, and one label only (inside the span)
            (
                vec![dict(pattern(3, 2).collect(), &abc_again), small(vec![1; n])],
                true,
            ),
            // another dictionary over the same label span: the same strings under other
            // keys, and a new one
            (
                vec![dict(pattern(4, 1).collect(), &reordered), labels(2, 0, 0)],
                true,
            ),
            // the span grows upward, then downward
            (
                vec![dict(pattern(4, 3).collect(), &reordered), labels(3, 0, 0)],
                true,
            ),
            (
                vec![dict(pattern(3, 1).collect(), &abc), labels(4, 2, -2)],
                true,
            ),
            // a null key: the general path
            (
                vec![
                    Arc::new(
                        DictionaryArray::<Int32Type>::try_new(
                            Int32Array::from(vec![Some(0), None]),
                            abc.clone(),
                        )
                        .unwrap(),
                    ),
                    small(vec![0, 5]),
                ],
                false,
            ),
            // plain strings: the general path
            (vec![strings(&["b", "z"]), small(vec![0, 1])], false),
            // a wide span (256 values): a bigger table
            (vec![dict(vec![0, 1], &abc), small(vec![-128, 127])], true),
            (
                vec![dict(pattern(3, 1).collect(), &abc), labels(2, 0, 0)],
                true,
            ),
        ];
        let dictionary = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
        for label_first in [false, true] {
            let order = |mut keys: Vec<ArrayRef>| {
                if label_first {
                    keys.reverse();
                }
                keys
            };
            let types = order(vec![
                Arc::new(StringArray::from(Vec::<&str>::new())) as ArrayRef,
                small(vec![]),
            ])
            .iter()
            .map(|a| {
                if a.data_type() == &DataType::Utf8 {
                    dictionary.clone()
                } else {
                    DataType::Int8
                }
            })
            .collect::<Vec<_>>();
            let (mut radix, mut general) = (TupleCoder::new(&types), TupleCoder::new(&types));
            for (i, (keys, takes_radix)) in batches.iter().enumerate() {
                let keys = order(keys.clone());
                let (mut a, mut b) = (Vec::new(), Vec::new());
                assert_eq!(
                    radix.code_by_radix(&keys, &mut a).unwrap(),
                    *takes_radix,
                    "batch {i}"
                );
                if !takes_radix {
                    radix.code_by_columns(&keys, &mut a).unwrap();
                }
                general.code_by_columns(&keys, &mut b).unwrap();
                assert_eq!(a, b, "batch {i}, label first: {label_first}");
                assert_eq!(radix.len(), general.len(), "batch {i}");
            }
        }
        // integers spanning more than the limit are not the radix table's
        let ints = |v: Vec<i64>| -> ArrayRef { Arc::new(Int64Array::from(v)) };
        let mut coder = TupleCoder::new(&[DataType::Int64]);
        assert!(
            !coder
                .code_by_radix(&[ints(vec![0, 1 << 20])], &mut Vec::new())
                .unwrap()
        );
        assert!(
            coder
                .code_by_radix(&[ints(vec![-5, 3, -5])], &mut Vec::new())
                .unwrap()
        );
    }

    /// The accumulator's chunked sums (per radix number, per tuple id) and its row by
    /// row path give what a row-by-row reference gives, tuples in first-seen order: in
    /// batches of several chunks whose later chunks bring new tuples, across a label
    /// span that grows, a radix table past the numbered limit, and a negative weight;
    /// with weights and without.
    #[test]
    fn chunked_sums_equal_row_by_row() {
        let values: ArrayRef = Arc::new(StringArray::from(vec!["a", "b", "c", "d"]));
        let values_again: ArrayRef = Arc::new(StringArray::from(vec!["a", "b", "c", "d"]));
        let weight_of = |i: usize| ((i * 13) % 97) as f64 * 0.37 + 0.001;
        // (dictionary, each row's key, label, weight)
        type Rows = Vec<(i32, i16, f64)>;
        let batches: Vec<(ArrayRef, Rows)> = vec![
            // "d" first met in the second chunk, label 2 in the third
            (
                values.clone(),
                (0..20_000)
                    .map(|i| {
                        (
                            (i % if i < 9_000 { 3 } else { 4 }) as i32,
                            (i * 7 % if i < 17_000 { 2 } else { 3 }) as i16,
                            weight_of(i),
                        )
                    })
                    .collect(),
            ),
            // equal values in another array; the label span grows downward
            (
                values_again,
                (0..9_000)
                    .map(|i| ((i % 4) as i32, (i % 4) as i16 - 1, weight_of(i)))
                    .collect(),
            ),
            // a span of 5,000 labels: a table past the numbered limit
            (
                values.clone(),
                (0..10_000)
                    .map(|i| ((i / 5_000) as i32, (i % 5_000) as i16, weight_of(i)))
                    .collect(),
            ),
            // a negative weight: row by row
            (
                values.clone(),
                (0..3_000)
                    .map(|i| {
                        (
                            (i % 4) as i32,
                            (i % 2) as i16,
                            if i == 1_500 { -2.0 } else { weight_of(i) },
                        )
                    })
                    .collect(),
            ),
        ];
        let dictionary = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
        for weighted in [true, false] {
            let mut acc = CellsAccumulator::new(&[dictionary.clone(), DataType::Int16]);
            // the reference: tuples in first-seen order, their rows and exact weight sums
            let mut want: Vec<((String, i16), i64, i128)> = Vec::new();
            let mut index = std::collections::HashMap::new();
            for (dict, rows) in &batches {
                for &(k, label, w) in rows {
                    let key = (dict.as_string::<i32>().value(k as usize).to_string(), label);
                    let t = *index.entry(key.clone()).or_insert_with(|| {
                        want.push((key, 0, 0));
                        want.len() - 1
                    });
                    want[t].1 += 1;
                    want[t].2 += if weighted {
                        exact_weight(w).unwrap()
                    } else {
                        0
                    };
                }
                let keys = Int32Array::from_iter_values(rows.iter().map(|r| r.0));
                let weight: ArrayRef = if weighted {
                    Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.2)))
                } else {
                    Arc::new(datafusion::arrow::array::NullArray::new(rows.len()))
                };
                acc.update_batch(&[
                    weight,
                    Arc::new(DictionaryArray::<Int32Type>::try_new(keys, dict.clone()).unwrap()),
                    Arc::new(datafusion::arrow::array::Int16Array::from_iter_values(
                        rows.iter().map(|r| r.1),
                    )),
                ])
                .unwrap();
            }
            let cells = crate::struct_list::rows_of(
                &acc.evaluate().unwrap().to_array().unwrap(),
                STRATA_CELLS,
            )
            .unwrap()
            .remove(0);
            let (rows, exact) = (
                cells.column(2).as_primitive::<Int64Type>(),
                cells.column(6).as_primitive::<Decimal128Type>(),
            );
            let got: Vec<((String, i16), i64, i128)> = (0..cells.len())
                .map(|r| {
                    let key = (
                        cells.column(0).as_string::<i32>().value(r).to_string(),
                        cells
                            .column(1)
                            .as_primitive::<datafusion::arrow::datatypes::Int16Type>()
                            .value(r),
                    );
                    (key, rows.value(r), exact.value(r))
                })
                .collect();
            assert!(got.len() > 10_000, "the data must have many tuples");
            assert_eq!(got, want, "weighted: {weighted}");
            let weight_count = cells.column(5).as_primitive::<Int64Type>();
            assert!(
                (0..cells.len())
                    .all(|r| weight_count.value(r) == if weighted { rows.value(r) } else { 0 })
            );
        }
    }

    #[test]
    fn short_bytes_are_views() {
        let v = StringViewArray::from(vec!["", "abc", "twelve bytes"]);
        for (i, s) in ["", "abc", "twelve bytes"].iter().enumerate() {
            assert_eq!(short_bytes(s.as_bytes()), Some(v.views()[i]));
        }
        assert_eq!(short_bytes(b"thirteen byte"), None);
    }
}
