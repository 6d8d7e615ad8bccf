//! The key coder: each key value gets a small integer code (a dictionary's values once
//! per batch, integers by value while they span little, others through an exact 128-bit
//! fingerprint; a short string is its Arrow view), and each row's codes become one tuple
//! id, through a radix table of bit fields when every key allows it. `strata_cells`
//! counts per tuple id; `strata_group_hash` hashes each distinct tuple once.

use datafusion::arrow::array::Int32Array;

use super::*;

/// Rows of key columns → dense ids of their distinct tuples of values (0-based, in the
/// order first seen), kept across batches.
#[derive(Debug)]
pub(crate) struct TupleCoder {
    pub(crate) columns: Vec<ColumnCodes>,
    pub(crate) tuples: TupleCodes,
    /// Reused per batch: the codes of each key column.
    pub(crate) codes: Vec<Vec<u32>>,
    pub(crate) radix: RadixTable,
}

/// Key columns read as the digits of one number per row, each in its own bits: an
/// `Int32` dictionary gives its key (radix: the dictionary's length), or, with null
/// keys, 0 for a null and its key + 1 otherwise (radix: one more), an integer column
/// without nulls its value minus a base (radix: the span of its
/// values). While the bits are few, the number indexes a table of tuple ids, kept across
/// batches of the same dictionaries and spans. A row then costs one shift and `or` per
/// column (a loop the compiler vectorises) and one lookup, instead of a lookup per
/// column, a packing and a lookup; entries are filled as rows meet them, through the
/// general path, so tuples keep their first-seen order.
#[derive(Debug, Default)]
pub(crate) struct RadixTable {
    /// Per key column, what the table's digits mean.
    pub(crate) shape: Vec<Digits>,
    /// Number → tuple id + 1 (0: not met yet).
    pub(crate) ids: Vec<u32>,
    /// Reused per batch: each row's number.
    pub(crate) numbers: Vec<u32>,
}

#[derive(Debug, Clone)]
pub(crate) enum Digits {
    /// Dictionary keys, into these values; with `nulls`, 0 for a null key and the key
    /// + 1 otherwise.
    Keys { values: ArrayRef, nulls: bool },
    /// Integers `base..base + radix`.
    Ints { base: i64, radix: u32 },
}

impl Digits {
    /// The bits its digit takes in a number: enough for the radix (a power of two
    /// per column, so a number is built by shifts, which vectorise on every x86-64,
    /// where multiplies of 32-bit lanes do not).
    pub(crate) fn bits(&self) -> u32 {
        let radix = match self {
            Digits::Keys { values, nulls } => values.len() as u64 + u64::from(*nulls),
            Digits::Ints { radix, .. } => u64::from(*radix),
        };
        64 - radix.saturating_sub(1).leading_zeros()
    }

    /// Whether numbers built with `self` mean what they meant with `other`: the same
    /// dictionary values (equal arrays, as batches of one column chunk hold), or the
    /// same integer span.
    pub(crate) fn same(&self, other: &Digits) -> bool {
        match (self, other) {
            (
                Digits::Keys {
                    values: a,
                    nulls: x,
                },
                Digits::Keys {
                    values: b,
                    nulls: y,
                },
            ) => x == y && same_values(a, b),
            (Digits::Ints { base: a, radix: r }, Digits::Ints { base: b, radix: s }) => {
                a == b && r == s
            }
            _ => false,
        }
    }
}

/// Whether two dictionaries' values are the same (one array, or equal ones, as batches
/// of one column chunk hold).
fn same_values(a: &ArrayRef, b: &ArrayRef) -> bool {
    Arc::ptr_eq(a, b) || a.as_ref() == b.as_ref()
}

/// Bits of a radix table's numbers past which it is not used (2¹⁶ entries, 256 KiB of
/// ids).
pub(crate) const RADIX_BITS: u32 = 16;

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

    pub(crate) fn check_width(&self, keys: &[ArrayRef]) -> Result<()> {
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
    pub(crate) fn code_by_radix(&mut self, keys: &[ArrayRef], out: &mut Vec<u32>) -> Result<bool> {
        if !self.radix_numbers(keys)? {
            return Ok(false);
        }
        self.radix_ids(keys, out)?;
        Ok(true)
    }

    /// The tuple id of every row, from the numbers [`Self::radix_numbers`] just computed.
    pub(crate) fn radix_ids(&mut self, keys: &[ArrayRef], out: &mut Vec<u32>) -> Result<()> {
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
    pub(crate) fn radix_numbers(&mut self, keys: &[ArrayRef]) -> Result<bool> {
        let n = keys.first().map_or(0, |k| k.len());
        if n == 0 {
            return Ok(false);
        }
        let mut shape = Vec::with_capacity(keys.len());
        let mut bits = 0;
        for (j, a) in keys.iter().enumerate() {
            let digits = if let Some(d) = a.as_dictionary_opt::<Int32Type>() {
                let values = d.values().clone();
                // a column keeps its null digit through batches without nulls (no
                // rebuild of the table for a batch that happens to have none)
                let nulls = d.keys().null_count() > 0
                    || matches!(
                        self.radix.shape.get(j),
                        Some(Digits::Keys { values: v, nulls: true }) if same_values(v, &values)
                    );
                Digits::Keys { values, nulls }
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
                Digits::Keys { nulls: false, .. } => {
                    let keys = a.as_dictionary::<Int32Type>().keys().values();
                    for (m, &k) in numbers.iter_mut().zip(keys.iter()) {
                        *m |= (k as u32) << shift;
                    }
                }
                Digits::Keys { nulls: true, .. } => add_nullable_key_digits(
                    a.as_dictionary::<Int32Type>().keys(),
                    shift,
                    digits.bits(),
                    &mut numbers,
                ),
                Digits::Ints { base, .. } => add_integer_digits(a, *base, shift, &mut numbers)?,
            }
            shift += digits.bits();
        }
        self.radix.numbers = numbers;
        Ok(true)
    }

    /// The tuple id of row `row`, whose `number` the radix table has not met: the
    /// general way, for this row alone, then entered in the table.
    pub(crate) fn radix_new_row(
        &mut self,
        keys: &[ArrayRef],
        row: usize,
        number: u32,
    ) -> Result<u32> {
        let one: Vec<ArrayRef> = keys.iter().map(|a| a.slice(row, 1)).collect();
        let mut id = Vec::with_capacity(1);
        self.code_by_columns(&one, &mut id)?;
        if let Some(slot) = self.radix.ids.get_mut(number as usize) {
            *slot = id[0] + 1;
        }
        Ok(id[0])
    }

    /// Codes each column, then the tuples of codes.
    pub(crate) fn code_by_columns(&mut self, keys: &[ArrayRef], out: &mut Vec<u32>) -> Result<()> {
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

    pub(crate) fn size(&self) -> usize {
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
pub(crate) fn known_ids(ids: &[u32], numbers: &[u32], out: &mut [u32]) -> usize {
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
pub(crate) fn integer_range(a: &ArrayRef) -> Result<Option<(i64, i64)>> {
    use datafusion::arrow::compute::{max, min};
    Ok(downcast_integer_array!(
        a => match (min(a), max(a)) {
            (Some(low), Some(high)) => low.to_i64().zip(high.to_i64()),
            _ => None,
        },
        t => return exec_err!("{STRATA_CELLS}: unexpected {t}")
    ))
}

/// Sets each row's key + 1 into its number at bit `shift` (`bits` wide), and 0 for a
/// null key: every row's key first, in a loop without a branch (a null's key, which
/// may be anything, cut to the digit's bits), then the few null rows' digits cleared,
/// found 64 rows to a validity word.
pub(crate) fn add_nullable_key_digits(
    keys: &Int32Array,
    shift: u32,
    bits: u32,
    numbers: &mut [u32],
) {
    let width = (1u32 << bits) - 1;
    for (m, &k) in numbers.iter_mut().zip(keys.values().iter()) {
        *m |= ((k as u32).wrapping_add(1) & width) << shift;
    }
    let Some(valid) = keys.nulls().filter(|v| v.null_count() > 0) else {
        return;
    };
    let clear = !(width << shift);
    let words = valid.inner().bit_chunks();
    let words = words.iter().chain(std::iter::once(words.remainder_bits()));
    for (m, word) in numbers.chunks_mut(64).zip(words) {
        // the last chunk's word has zeros past its rows
        let mut nulls = !word & (u64::MAX >> (64 - m.len()));
        while nulls != 0 {
            m[nulls.trailing_zeros() as usize] &= clear;
            nulls &= nulls - 1;
        }
    }
}

/// Sets each row's `value - base` into its number at bit `shift` (values inside the
/// span).
pub(crate) fn add_integer_digits(
    a: &ArrayRef,
    base: i64,
    shift: u32,
    numbers: &mut [u32],
) -> Result<()> {
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
