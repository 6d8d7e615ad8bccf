//! The codes of one key column: each distinct value a small integer, in the order first
//! seen, through an exact 128-bit fingerprint of short values (a short string is its
//! Arrow view) in an open-addressing table behind a direct-mapped cache, integers by
//! value while they span little, longer bytes by a map of their own.

use super::*;
use crate::slots::SlotCache;

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
