//! The key coder: each key value gets a small integer code (a dictionary's values once
//! per batch, integers by value while they span little, others through an exact 128-bit
//! fingerprint; a short string is its Arrow view), and each row's codes become one tuple
//! id, through a radix table of bit fields when every key allows it. `strata_cells`
//! counts per tuple id; `strata_group_hash` hashes each distinct tuple once.

use datafusion::arrow::array::Int32Array;

use super::*;
use crate::slots::SlotCache;

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

/// An exact 128-bit stand-in for a short value: for bytes of up to 12, their Arrow
/// string view (length in the low 32 bits, then the bytes); for integers, their bits.
pub(crate) type Fingerprint = u128;

pub(crate) fn short_bytes(b: &[u8]) -> Option<Fingerprint> {
    (b.len() <= 12).then(|| {
        let mut buf = [0u8; 16];
        buf[..4].copy_from_slice(&(b.len() as u32).to_le_bytes());
        buf[4..4 + b.len()].copy_from_slice(b);
        u128::from_le_bytes(buf)
    })
}

pub(crate) fn mix(key: Fingerprint) -> u64 {
    (key as u64 ^ (key >> 64) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Open addressing from fingerprints to nonzero codes, sized to stay mostly empty.
#[derive(Debug, Default)]
pub(crate) struct CodeTable {
    pub(crate) slots: Vec<(Fingerprint, u32)>,
    pub(crate) len: usize,
}

impl CodeTable {
    pub(crate) fn slot(&self, key: Fingerprint) -> usize {
        (mix(key) >> (64 - self.slots.len().trailing_zeros())) as usize
    }

    pub(crate) fn get(&self, key: Fingerprint) -> Option<u32> {
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

    pub(crate) fn insert(&mut self, key: Fingerprint, code: u32) {
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
pub(crate) const CACHE_SLOTS: usize = 256;

/// The codes of one key column: 0 for null, then one per distinct value in the order
/// first seen. Rows look up a small direct-mapped cache first (one multiply, one
/// compare), which holds every value when a column has few.
#[derive(Debug)]
pub(crate) struct ColumnCodes {
    pub(crate) data_type: DataType,
    /// Code − 1 → the value.
    pub(crate) values: Vec<ScalarValue>,
    /// No fingerprint is `u128::MAX` (the cache's empty marker): its length would be
    /// out of range.
    pub(crate) cache: SlotCache<Fingerprint, u32, CACHE_SLOTS>,
    pub(crate) short: CodeTable,
    pub(crate) long: HashMap<Box<[u8]>, u32>,
    /// Integer columns: the codes of the values `small_base..` (0: not coded yet), while
    /// the values seen span under [`SMALL_SPAN`]; `None` once they do not.
    pub(crate) small: Option<(i64, Vec<u32>)>,
}

/// Widest span of integer values a column codes by a direct table.
pub(crate) const SMALL_SPAN: i64 = 1024;

impl ColumnCodes {
    pub(crate) fn new(data_type: DataType) -> Self {
        Self {
            data_type,
            values: Vec::new(),
            cache: SlotCache::new(),
            short: CodeTable::default(),
            long: HashMap::new(),
            small: Some((0, Vec::new())),
        }
    }

    /// Codes of an integer column without nulls, given each row's value as an `i64`
    /// (bit for bit: distinct values stay distinct): looked up in the direct table,
    /// the rest coded by fingerprint and added to the table while its span allows.
    pub(crate) fn by_small_ints(
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
    pub(crate) fn remember_small(&mut self, v: i64, code: u32) {
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

    pub(crate) fn size(&self) -> usize {
        self.values.iter().map(ScalarValue::size).sum::<usize>()
            + self.cache.size()
            + self.short.slots.capacity() * size_of::<(Fingerprint, u32)>()
            + self.long.keys().map(|k| k.len() + 32).sum::<usize>()
    }

    pub(crate) fn cached(&self, key: Fingerprint) -> Option<u32> {
        self.cache.peek(key)
    }

    pub(crate) fn new_code(&mut self, array: &dyn Array, row: usize) -> Result<u32> {
        self.values.push(ScalarValue::try_from_array(array, row)?);
        Ok(self.values.len() as u32)
    }

    /// The code of a short value missing from the cache (and now in it).
    #[cold]
    pub(crate) fn by_fingerprint(
        &mut self,
        key: Fingerprint,
        array: &dyn Array,
        row: usize,
    ) -> Result<u32> {
        let code = match self.short.get(key) {
            Some(code) => code,
            None => {
                let code = self.new_code(array, row)?;
                self.short.insert(key, code);
                code
            }
        };
        self.cache.put(key, code);
        Ok(code)
    }

    pub(crate) fn by_bytes(&mut self, bytes: &[u8], array: &dyn Array, row: usize) -> Result<u32> {
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
    pub(crate) fn by_rows<'a>(
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
            if let Some(key) = fingerprint(i)
                && let Some(c) = self.cache.peek(key)
            {
                *code = c;
                continue;
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
    pub(crate) fn code(&mut self, array: &ArrayRef, out: &mut Vec<u32>) -> Result<()> {
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
            // a dictionary's values coded once; its keys read in place and only the
            // valid rows looked up
            DataType::Dictionary(..) => downcast_dictionary_array!(
                a => {
                    let mut value_codes = Vec::with_capacity(a.values().len());
                    self.code(a.values(), &mut value_codes)?;
                    let keys = a.keys().values();
                    let code_of = |i: usize| value_codes.get(keys[i].as_usize()).copied().unwrap_or(0);
                    let start = out.len();
                    match a.logical_nulls() {
                        None => out.extend((0..keys.len()).map(code_of)),
                        Some(nulls) => {
                            out.resize(start + keys.len(), 0);
                            let rows = &mut out[start..];
                            for i in nulls.valid_indices() {
                                rows[i] = code_of(i);
                            }
                        }
                    }
                    Ok(())
                },
                t => exec_err!("{STRATA_CELLS}: unexpected {t}")
            ),
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
    pub(crate) fn values_of(&self, codes: impl Iterator<Item = u32>) -> Result<ArrayRef> {
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
pub(crate) const DENSE_BITS: u32 = 16;

/// Tuples of column codes → dense tuple ids (0-based, in the order first seen).
///
/// While the columns' codes fit [`DENSE_BITS`] bits side by side, a tuple's packed codes
/// index a table directly; the packing widens (and the table is rebuilt) as columns
/// gain values. Past that, up to four codes make one 128-bit hashed key, and a longer
/// tuple is folded four columns at a time, each fold's id starting the next.
#[derive(Debug)]
pub(crate) struct TupleCodes {
    pub(crate) width: usize,
    /// Bits per column of the packed index; empty once tuples are hashed.
    pub(crate) bits: Vec<u32>,
    /// Packed codes → tuple id + 1 (0: not seen).
    pub(crate) dense: Vec<u32>,
    /// One table per fold, when hashed.
    pub(crate) folds: Vec<CodeTable>,
    /// Tuple id → its column codes (`width` each).
    pub(crate) keys: Vec<u32>,
    pub(crate) len: usize,
    pub(crate) packed: Vec<u32>,
}

impl TupleCodes {
    pub(crate) fn new(width: usize) -> Self {
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

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn size(&self) -> usize {
        self.folds
            .iter()
            .map(|f| f.slots.capacity() * size_of::<(Fingerprint, u32)>())
            .sum::<usize>()
            + (self.keys.capacity() + self.dense.capacity() + self.packed.capacity()) * 4
    }

    pub(crate) fn key(&self, tuple: usize) -> &[u32] {
        &self.keys[tuple * self.width..(tuple + 1) * self.width]
    }

    pub(crate) fn pack(&self, key: &[u32]) -> usize {
        let mut at = 0;
        let mut packed = 0usize;
        for (c, b) in key.iter().zip(&self.bits) {
            packed |= (*c as usize) << at;
            at += b;
        }
        packed
    }

    /// Switches from the dense index to hashed folds, keeping every tuple's id.
    pub(crate) fn switch_to_hashing(&mut self) {
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
    pub(crate) fn fit(&mut self, max: &[u32]) {
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
    pub(crate) fn code(
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
    pub(crate) fn ids_of_packed(&mut self, out: &mut Vec<u32>) {
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
    pub(crate) fn new_packed(&mut self, slot: usize) -> u32 {
        let mut at = 0;
        for b in &self.bits {
            self.keys.push((slot >> at) as u32 & ((1 << b) - 1));
            at += b;
        }
        self.len += 1;
        self.dense[slot] = self.len as u32;
        self.len as u32
    }

    pub(crate) fn code_hashed(&mut self, codes: &[Vec<u32>], out: &mut Vec<u32>) {
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
