//! `strata_hash(seed, col, ...)`: the 64-bit row hash every sampling decision uses.
//!
//! Defined independently of engine, partitioning and file layout, so the same rows are
//! chosen on a laptop or a cluster: XXH3-64 with the given seed over a canonical
//! encoding of the argument values, in argument order:
//!
//! | value | bytes |
//! | --- | --- |
//! | null | `0x00` |
//! | integer (any width, signed or not, up to `i64::MAX`) | `0x02` + i64 little-endian |
//! | unsigned integer above `i64::MAX` | `0x03` + u64 little-endian |
//! | float | `0x04` + f64 bits little-endian (`-0.0` as `0.0`, every NaN as one NaN) |
//! | boolean | `0x05` + `0x00`/`0x01` |
//! | string, and any other type via its string form | `0x01` + u64 length little-endian + UTF-8 bytes |
//!
//! A Python reimplementation: `xxhash.xxh3_64_intdigest(encoded, seed=seed)`
//! (`tests/e2e/strata_hash.py`).
//!
//! Each of curation's decisions hashes with a seed of its own, [`derive_seed`]`(seed,
//! stream)` from the user's seed, so the decisions are independent of each other:
//!
//! | stream | constant | hashes | decides |
//! | ---: | --- | --- | --- |
//! | 1 | [`stream::SPLIT`] | the row key | the split (rows ordered by it within a cell) |
//! | 2 | [`stream::SAMPLE`] | the row key | which rows a resampled stratum keeps or copies |
//! | 3 | [`stream::GROUP`] | the protected attributes | the group id |
//! | 4 | [`stream::CELL`] | attributes and label | the cell id |
//! | 5 | [`stream::SHUFFLE`] | the sample and split hashes and the copy number | a row's shard block and its place in the shard |

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array, StringArray, StringViewArray,
    UInt64Array,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type, UInt64Type};
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use twox_hash::XxHash3_64;

/// The hash streams of the table above.
pub mod stream {
    pub const SPLIT: u64 = 1;
    pub const SAMPLE: u64 = 2;
    pub const GROUP: u64 = 3;
    pub const CELL: u64 = 4;
    pub const SHUFFLE: u64 = 5;
}

/// Derives independent 64-bit seeds from the user's seed (SplitMix64 finaliser), one
/// per [`stream`], so the split and the sample use unrelated hashes of the same key.
pub fn derive_seed(seed: u64, stream: u64) -> u64 {
    let mut z = seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) & (i64::MAX as u64)
}

pub const STRATA_HASH: &str = "strata_hash";
pub const STRATA_GROUP_HASH: &str = "strata_group_hash";

/// The UDF, for registering in a session and for building expressions.
pub fn strata_hash_udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(StrataHash {
        signature: Signature::variadic_any(Volatility::Immutable),
    })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct StrataHash {
    signature: Signature,
}

/// `strata_group_hash(seed, col, ...)`: the value of `strata_hash` with the same
/// arguments, computed once per distinct tuple of values in a batch. For columns of
/// few distinct values (groups, cells), where `strata_hash` would encode and hash the
/// same strings row after row, rows are coded to their tuples instead (see
/// `crate::cells`) and each tuple hashed once.
pub fn strata_group_hash_udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(StrataGroupHash {
        signature: Signature::variadic_any(Volatility::Immutable),
        idle: Default::default(),
    })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct StrataGroupHash {
    signature: Signature,
    /// Coders not in use, kept between batches so that a value is coded and a tuple
    /// hashed once per partition rather than once per batch.
    idle: crate::kept::Kept<Vec<GroupHasher>>,
}

/// Tuples past which a coder is not kept: the columns were not few-valued after all.
const MAX_KEPT_TUPLES: usize = 1 << 16;

/// A coder for one seed and argument types, with each tuple's hash once known.
#[derive(Debug)]
struct GroupHasher {
    seed: u64,
    types: Vec<DataType>,
    coder: crate::cells::coder::TupleCoder,
    hashes: Vec<Option<u64>>,
}

/// The seed literal and the value columns (as arrays of the batch's rows) of a call to
/// one of the hash functions.
fn seed_and_arrays(name: &str, args: ScalarFunctionArgs) -> Result<(u64, Vec<ArrayRef>)> {
    let n = args.number_rows;
    let mut iter = args.args.into_iter();
    let seed = match iter.next() {
        Some(ColumnarValue::Scalar(ScalarValue::UInt64(Some(s)))) => s,
        Some(ColumnarValue::Scalar(ScalarValue::Int64(Some(s)))) if s >= 0 => s as u64,
        _ => {
            return exec_err!(
                "{name}: the first argument must be a non-negative integer seed literal"
            );
        }
    };
    Ok((seed, iter.map(|v| v.into_array(n)).collect::<Result<_>>()?))
}

impl ScalarUDFImpl for StrataGroupHash {
    fn name(&self) -> &str {
        STRATA_GROUP_HASH
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::UInt64)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let (seed, arrays) = seed_and_arrays(STRATA_GROUP_HASH, args)?;
        let types: Vec<DataType> = arrays.iter().map(|a| a.data_type().clone()).collect();
        let kept = {
            let mut idle = self.idle.lock().map_err(|_| {
                datafusion::error::DataFusionError::Internal("a poisoned lock".into())
            })?;
            idle.iter()
                .position(|g| g.seed == seed && g.types == types)
                .map(|i| idle.swap_remove(i))
        };
        let mut g = kept.unwrap_or_else(|| GroupHasher {
            seed,
            coder: crate::cells::coder::TupleCoder::new(&types),
            types,
            hashes: Vec::new(),
        });
        let mut tuples = Vec::with_capacity(n);
        g.coder.code(&arrays, &mut tuples)?;
        g.hashes.resize(g.coder.len(), None);
        let mut out = Vec::with_capacity(n);
        let mut buf = Vec::with_capacity(64);
        for (row, &t) in tuples.iter().enumerate() {
            let h = match g.hashes[t as usize] {
                Some(h) => h,
                None => {
                    buf.clear();
                    for a in &arrays {
                        encode(&canonical(&a.slice(row, 1))?, 0, &mut buf);
                    }
                    let h = XxHash3_64::oneshot_with_seed(seed, &buf);
                    g.hashes[t as usize] = Some(h);
                    h
                }
            };
            out.push(h);
        }
        if g.coder.len() <= MAX_KEPT_TUPLES
            && let Ok(mut idle) = self.idle.lock()
        {
            idle.push(g);
        }
        Ok(ColumnarValue::Array(Arc::new(UInt64Array::from(out))))
    }
}

/// One argument column in its canonical class, downcast once per batch so the per-row
/// loop does no dynamic dispatch.
enum Canon {
    Null,
    Int(Int64Array),
    UInt(UInt64Array),
    Float(Float64Array),
    Bool(BooleanArray),
    Str(StringArray),
    View(StringViewArray),
}

fn canonical(a: &ArrayRef) -> Result<Canon> {
    let t = match a.data_type() {
        DataType::Dictionary(_, v) => v.as_ref().clone(),
        t => t.clone(),
    };
    Ok(match t {
        DataType::Null => Canon::Null,
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32 => Canon::Int(
            cast(a, &DataType::Int64)?
                .as_primitive::<Int64Type>()
                .clone(),
        ),
        DataType::UInt64 => Canon::UInt(
            cast(a, &DataType::UInt64)?
                .as_primitive::<UInt64Type>()
                .clone(),
        ),
        DataType::Float16 | DataType::Float32 | DataType::Float64 => Canon::Float(
            cast(a, &DataType::Float64)?
                .as_primitive::<Float64Type>()
                .clone(),
        ),
        DataType::Boolean => Canon::Bool(cast(a, &DataType::Boolean)?.as_boolean().clone()),
        DataType::Utf8View if !matches!(a.data_type(), DataType::Dictionary(..)) => {
            Canon::View(a.as_string_view().clone())
        }
        _ => Canon::Str(cast(a, &DataType::Utf8)?.as_string::<i32>().clone()),
    })
}

impl ScalarUDFImpl for StrataHash {
    fn name(&self) -> &str {
        STRATA_HASH
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::UInt64)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let (seed, arrays) = seed_and_arrays(STRATA_HASH, args)?;
        let columns: Vec<Canon> = arrays.iter().map(canonical).collect::<Result<_>>()?;
        if let Some(out) = hash_integers(seed, &columns, n) {
            return Ok(ColumnarValue::Array(Arc::new(UInt64Array::from(out))));
        }
        let mut out = Vec::with_capacity(n);
        let mut buf = Vec::with_capacity(64);
        for row in 0..n {
            buf.clear();
            for c in &columns {
                encode(c, row, &mut buf);
            }
            out.push(XxHash3_64::oneshot_with_seed(seed, &buf));
        }
        Ok(ColumnarValue::Array(Arc::new(UInt64Array::from(out))))
    }
}

/// `strata_hash(seed, columns…, k)` for copy `k` of a row, for every copy, without
/// building the copies: output `j` hashes row `rows[j]` of `columns` followed by the copy
/// number `copies[j]` (an `Int64`). The shard writer replicates resampled rows with it,
/// giving each copy the shuffle key the engine would have given it after
/// `unnest(range(0, copies))`, for a fraction of the copying.
pub fn hash_copies(
    seed: u64,
    columns: &[ArrayRef],
    rows: &[u32],
    copies: &[i64],
) -> Result<Vec<u64>> {
    if rows.len() != copies.len() {
        return exec_err!(
            "hash_copies: {} rows but {} copy numbers",
            rows.len(),
            copies.len()
        );
    }
    let canon: Vec<Canon> = columns.iter().map(canonical).collect::<Result<_>>()?;
    let ints: Option<Vec<Ints>> = canon
        .iter()
        .map(|c| match c {
            Canon::Int(a) if a.null_count() == 0 => Some(Ints::Signed(a.values())),
            Canon::UInt(a) if a.null_count() == 0 => Some(Ints::Unsigned(a.values())),
            _ => None,
        })
        .collect();
    let copy = |j: usize| (0x02u8, copies[j] as u64);
    let at = |j: usize| rows[j] as usize;
    match ints.as_deref() {
        Some([]) => {
            return Ok((0..rows.len())
                .map(|j| hash_words(seed, [copy(j)]))
                .collect());
        }
        Some([a]) => {
            return Ok((0..rows.len())
                .map(|j| hash_words(seed, [a.at(at(j)), copy(j)]))
                .collect());
        }
        Some([a, b]) => {
            return Ok((0..rows.len())
                .map(|j| hash_words(seed, [a.at(at(j)), b.at(at(j)), copy(j)]))
                .collect());
        }
        _ => {}
    }
    let copy_column = Canon::Int(Int64Array::from(copies.to_vec()));
    let mut buf = Vec::with_capacity(64);
    Ok((0..rows.len())
        .map(|j| {
            buf.clear();
            for c in &canon {
                encode(c, at(j), &mut buf);
            }
            encode(&copy_column, j, &mut buf);
            XxHash3_64::oneshot_with_seed(seed, &buf)
        })
        .collect())
}

/// The common case of ids and hashes of hashes: one to three integer columns without
/// nulls, encoded into a fixed buffer on the stack (the same bytes as [`encode`]).
fn hash_integers(seed: u64, columns: &[Canon], n: usize) -> Option<Vec<u64>> {
    let mut values: Vec<Ints> = Vec::with_capacity(columns.len());
    for c in columns {
        match c {
            Canon::Int(a) if a.null_count() == 0 => values.push(Ints::Signed(a.values())),
            Canon::UInt(a) if a.null_count() == 0 => values.push(Ints::Unsigned(a.values())),
            _ => return None,
        }
    }
    Some(match values.as_slice() {
        [a] => (0..n).map(|r| hash_words(seed, [a.at(r)])).collect(),
        [a, b] => (0..n)
            .map(|r| hash_words(seed, [a.at(r), b.at(r)]))
            .collect(),
        [a, b, c] => (0..n)
            .map(|r| hash_words(seed, [a.at(r), b.at(r), c.at(r)]))
            .collect(),
        _ => return None,
    })
}

/// An integer column without nulls.
enum Ints<'a> {
    Signed(&'a [i64]),
    Unsigned(&'a [u64]),
}

impl Ints<'_> {
    /// A row's tag and value bits, as [`encode`] writes them.
    #[inline(always)]
    fn at(&self, row: usize) -> (u8, u64) {
        match self {
            Ints::Signed(v) => (0x02, v[row] as u64),
            // unsigned above i64::MAX gets its own tag, as in `encode`
            Ints::Unsigned(v) => (
                if v[row] <= i64::MAX as u64 {
                    0x02
                } else {
                    0x03
                },
                v[row],
            ),
        }
    }
}

/// XXH3 of `K` integers in the canonical encoding (tag byte, then 8 bytes little-endian,
/// per value). The `9 K` bytes are assembled in two 128-bit words and written with two
/// stores: writing them byte-wise made the hash's first loads wait on store forwarding
/// (the loads straddle several small stores).
#[inline(always)]
fn hash_words<const K: usize>(seed: u64, values: [(u8, u64); K]) -> u64 {
    let mut words = [0u128; 2];
    for (j, &(tag, v)) in values.iter().enumerate() {
        let (tag, v) = (tag as u128, v as u128);
        let at = 72 * j as u32; // bit offset of this value's tag
        let (word, bit) = ((at / 128) as usize, at % 128);
        words[word] |= tag << bit;
        // the 64 value bits start 8 bits later and may run into the next word
        let start = bit + 8;
        if start < 128 {
            words[word] |= v << start;
            if start > 64 {
                words[word + 1] |= v >> (128 - start);
            }
        } else {
            words[word + 1] |= v << (start - 128);
        }
    }
    let mut buf = [0u8; 32];
    buf[..16].copy_from_slice(&words[0].to_le_bytes());
    buf[16..].copy_from_slice(&words[1].to_le_bytes());
    XxHash3_64::oneshot_with_seed(seed, &buf[..9 * K])
}

fn encode(c: &Canon, row: usize, buf: &mut Vec<u8>) {
    let is_null = match c {
        Canon::Null => true,
        Canon::Int(a) => a.is_null(row),
        Canon::UInt(a) => a.is_null(row),
        Canon::Float(a) => a.is_null(row),
        Canon::Bool(a) => a.is_null(row),
        Canon::Str(a) => a.is_null(row),
        Canon::View(a) => a.is_null(row),
    };
    if is_null {
        buf.push(0x00);
        return;
    }
    let string = |buf: &mut Vec<u8>, s: &str| {
        buf.push(0x01);
        buf.extend_from_slice(&(s.len() as u64).to_le_bytes());
        buf.extend_from_slice(s.as_bytes());
    };
    match c {
        Canon::Null => unreachable!("handled above"),
        Canon::Int(a) => {
            buf.push(0x02);
            buf.extend_from_slice(&a.value(row).to_le_bytes());
        }
        Canon::UInt(a) => {
            let v = a.value(row);
            match i64::try_from(v) {
                Ok(i) => {
                    buf.push(0x02);
                    buf.extend_from_slice(&i.to_le_bytes());
                }
                Err(_) => {
                    buf.push(0x03);
                    buf.extend_from_slice(&v.to_le_bytes());
                }
            }
        }
        Canon::Float(a) => {
            let v = a.value(row);
            let v = if v == 0.0 {
                0.0
            } else if v.is_nan() {
                f64::NAN
            } else {
                v
            };
            buf.push(0x04);
            buf.extend_from_slice(&v.to_bits().to_le_bytes());
        }
        Canon::Bool(a) => {
            buf.push(0x05);
            buf.push(u8::from(a.value(row)));
        }
        Canon::Str(a) => string(buf, a.value(row)),
        Canon::View(a) => string(buf, a.value(row)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference values computed by hand from the documented encoding.
    #[test]
    fn encoding_is_the_documented_one() {
        let mut expected = vec![0x02];
        expected.extend_from_slice(&7i64.to_le_bytes());
        expected.push(0x01);
        expected.extend_from_slice(&2u64.to_le_bytes());
        expected.extend_from_slice(b"ab");
        expected.push(0x00);
        let ints: ArrayRef = Arc::new(datafusion::arrow::array::Int32Array::from(vec![7]));
        let strs: ArrayRef = Arc::new(StringArray::from(vec!["ab"]));
        let nulls: ArrayRef = Arc::new(StringArray::from(vec![None::<&str>]));
        let mut buf = Vec::new();
        for a in [&ints, &strs, &nulls] {
            encode(&canonical(a).unwrap(), 0, &mut buf);
        }
        assert_eq!(buf, expected);
    }

    #[test]
    fn integer_widths_hash_alike() {
        let a: ArrayRef = Arc::new(datafusion::arrow::array::Int32Array::from(vec![-5]));
        let b: ArrayRef = Arc::new(Int64Array::from(vec![-5]));
        let (mut x, mut y) = (Vec::new(), Vec::new());
        encode(&canonical(&a).unwrap(), 0, &mut x);
        encode(&canonical(&b).unwrap(), 0, &mut y);
        assert_eq!(x, y);
    }

    /// The integer fast path gives the bytes of the general encoding.
    #[test]
    fn integer_fast_path_matches_the_encoding() {
        let ints: ArrayRef = Arc::new(Int64Array::from(vec![0, -1, i64::MAX, i64::MIN, 42]));
        let big: ArrayRef = Arc::new(UInt64Array::from(vec![
            0,
            1,
            u64::MAX,
            i64::MAX as u64,
            (i64::MAX as u64) + 1,
        ]));
        let small: ArrayRef = Arc::new(datafusion::arrow::array::Int8Array::from(vec![
            -3, 0, 7, 1, -128,
        ]));
        for cols in [
            vec![&ints],
            vec![&big],
            vec![&ints, &big, &small],
            vec![&small, &ints],
            vec![&small, &ints, &big],
            vec![&big, &big],
        ] {
            let canon: Vec<Canon> = cols.iter().map(|a| canonical(a).unwrap()).collect();
            let fast = hash_integers(9, &canon, 5).expect("integers take the fast path");
            for (row, h) in fast.iter().enumerate() {
                let mut buf = Vec::new();
                for c in &canon {
                    encode(c, row, &mut buf);
                }
                assert_eq!(*h, XxHash3_64::oneshot_with_seed(9, &buf), "row {row}");
            }
        }
        let nulls: ArrayRef = Arc::new(Int64Array::from(vec![Some(1), None]));
        assert!(hash_integers(9, &[canonical(&nulls).unwrap()], 2).is_none());
        // pseudo-random values put every byte value at every byte position of the
        // assembled words (splitmix64)
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let z = (state ^ (state >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            let z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        let n = 2_000;
        let signed: ArrayRef =
            Arc::new(Int64Array::from_iter_values((0..n).map(|_| next() as i64)));
        let unsigned: ArrayRef = Arc::new(UInt64Array::from_iter_values((0..n).map(|_| next())));
        for cols in [
            vec![&signed],
            vec![&unsigned, &signed],
            vec![&signed, &unsigned, &unsigned],
        ] {
            let canon: Vec<Canon> = cols.iter().map(|a| canonical(a).unwrap()).collect();
            let fast = hash_integers(u64::MAX, &canon, n).expect("integers take the fast path");
            for (row, h) in fast.iter().enumerate() {
                let mut buf = Vec::new();
                canon.iter().for_each(|c| encode(c, row, &mut buf));
                assert_eq!(
                    *h,
                    XxHash3_64::oneshot_with_seed(u64::MAX, &buf),
                    "row {row} of {} columns",
                    cols.len()
                );
            }
        }
    }

    /// The once-per-tuple hash equals the row hash, for every kind of column.
    #[tokio::test]
    async fn group_hash_equals_row_hash() {
        use datafusion::prelude::*;
        let n = 300;
        let long = "a value longer than twelve bytes";
        let s: StringViewArray = (0..n)
            .map(|i| [None, Some("Female"), Some(long), Some("x")][i % 4])
            .collect();
        let t: StringArray = (0..n)
            .map(|i| [Some("a"), None, Some(long)][i % 3])
            .collect();
        let d: datafusion::arrow::array::DictionaryArray<datafusion::arrow::datatypes::Int16Type> =
            (0..n)
                .map(|i| [Some("p"), Some(long), None, Some("q"), Some("r")][i % 5])
                .collect();
        let y = datafusion::arrow::array::Int32Array::from_iter(
            (0..n).map(|i| (i % 7 != 0).then_some((i % 3) as i32 - 1)),
        );
        let b = BooleanArray::from_iter((0..n).map(|i| (i % 11 != 0).then_some(i % 2 == 0)));
        let f = Float64Array::from_iter(
            (0..n).map(|i| [Some(0.0), Some(-0.0), Some(f64::NAN), None, Some(2.5)][i % 5]),
        );
        // no nulls: the coder's radix table (a coded scan's columns)
        let e: datafusion::arrow::array::DictionaryArray<datafusion::arrow::datatypes::Int32Type> =
            (0..n).map(|i| ["p", long, "q"][i % 3]).collect();
        let z = datafusion::arrow::array::Int8Array::from_iter_values(
            (0..n).map(|i| (i % 4) as i8 - 1),
        );
        // null keys: the radix table's null digit (a coded scan's nullable columns)
        let m: datafusion::arrow::array::DictionaryArray<datafusion::arrow::datatypes::Int32Type> =
            (0..n)
                .map(|i| (i % 7 != 2).then_some(["u", long, "v"][i % 3]))
                .collect();
        let batch = datafusion::arrow::record_batch::RecordBatch::try_from_iter([
            ("e", Arc::new(e) as ArrayRef),
            ("z", Arc::new(z) as ArrayRef),
            ("m", Arc::new(m) as ArrayRef),
            ("s", Arc::new(s) as ArrayRef),
            ("t", Arc::new(t) as ArrayRef),
            ("d", Arc::new(d) as ArrayRef),
            ("y", Arc::new(y) as ArrayRef),
            ("b", Arc::new(b) as ArrayRef),
            ("f", Arc::new(f) as ArrayRef),
        ])
        .unwrap();
        let ctx = SessionContext::new();
        ctx.register_udf(strata_hash_udf());
        ctx.register_udf(strata_group_hash_udf());
        // a second table of the same types: its batches reuse the coders the first left
        ctx.register_batch("u", batch.slice(101, 150)).unwrap();
        ctx.register_batch("t", batch).unwrap();
        for (cols, table) in [
            "s",
            "s, t, d, y",
            "y, b, f",
            "d, 'lit', s, t, y, b, f",
            "e, z",
            "z, e, s",
            "m, z, e",
            "e, m",
        ]
        .iter()
        .flat_map(|c| [(c, "t"), (c, "u"), (c, "t")])
        {
            let sql = format!(
                "SELECT {STRATA_GROUP_HASH}(7, {cols}) AS a, {STRATA_HASH}(7, {cols}) AS b FROM {table}"
            );
            let rows = ctx.sql(&sql).await.unwrap().collect().await.unwrap();
            assert_eq!(
                rows[0].column(0).as_ref(),
                rows[0].column(1).as_ref(),
                "{sql}"
            );
            let distinct = rows[0]
                .column(0)
                .as_primitive::<UInt64Type>()
                .values()
                .iter()
                .collect::<std::collections::BTreeSet<_>>()
                .len();
            assert!(distinct > 3, "{cols}: {distinct} distinct hashes");
        }
    }

    /// A row's copies hash as `strata_hash` of the unnested rows would: integer
    /// columns (the fast path) and others (the general encoding), nulls included.
    #[test]
    fn copies_hash_as_unnested_rows() {
        let h: ArrayRef = Arc::new(UInt64Array::from(vec![3, u64::MAX, 0, 1 << 63]));
        let g: ArrayRef = Arc::new(Int64Array::from(vec![-1, 5, 9, i64::MIN]));
        let s: ArrayRef = Arc::new(StringArray::from(vec![
            Some("a"),
            None,
            Some("bc"),
            Some(""),
        ]));
        let n: ArrayRef = Arc::new(Int64Array::from(vec![Some(1), None, Some(2), Some(3)]));
        let rows = [0u32, 0, 0, 2, 3, 3, 1];
        let copies = [0i64, 1, 2, 0, 0, 1, 0];
        let udf = strata_hash_udf();
        for cols in [
            vec![],
            vec![&h],
            vec![&h, &g],
            vec![&g, &s],
            vec![&n, &h],
            vec![&h, &g, &g],
        ] {
            let columns: Vec<ArrayRef> = cols.iter().map(|c| (*c).clone()).collect();
            let got = hash_copies(11, &columns, &rows, &copies).unwrap();
            // the unnested rows, hashed by the UDF
            let at = datafusion::arrow::array::UInt32Array::from(rows.to_vec());
            let mut args = vec![ColumnarValue::Scalar(ScalarValue::UInt64(Some(11)))];
            for c in &columns {
                let taken = datafusion::arrow::compute::take(c, &at, None).unwrap();
                args.push(ColumnarValue::Array(taken));
            }
            args.push(ColumnarValue::Array(Arc::new(Int64Array::from(
                copies.to_vec(),
            ))));
            let fields = args
                .iter()
                .map(|a| {
                    Arc::new(datafusion::arrow::datatypes::Field::new(
                        "a",
                        a.data_type(),
                        true,
                    ))
                })
                .collect();
            let want = udf
                .invoke_with_args(ScalarFunctionArgs {
                    args,
                    arg_fields: fields,
                    number_rows: rows.len(),
                    return_field: Arc::new(datafusion::arrow::datatypes::Field::new(
                        "h",
                        DataType::UInt64,
                        false,
                    )),
                    config_options: Default::default(),
                })
                .unwrap()
                .into_array(rows.len())
                .unwrap();
            assert_eq!(
                got,
                want.as_primitive::<UInt64Type>().values().to_vec(),
                "{} columns",
                cols.len()
            );
        }
        assert!(hash_copies(11, &[], &[0], &[]).is_err());
    }

    #[test]
    fn string_layouts_hash_alike() {
        let values = vec![
            Some("Female"),
            None,
            Some("a much longer string than twelve bytes"),
        ];
        let plain: ArrayRef = Arc::new(StringArray::from(values.clone()));
        let view: ArrayRef = Arc::new(StringViewArray::from(values.clone()));
        let dict: ArrayRef =
            Arc::new(
                values
                    .into_iter()
                    .collect::<datafusion::arrow::array::DictionaryArray<
                        datafusion::arrow::datatypes::Int32Type,
                    >>(),
            );
        for row in 0..3 {
            let (mut x, mut y, mut z) = (Vec::new(), Vec::new(), Vec::new());
            encode(&canonical(&plain).unwrap(), row, &mut x);
            encode(&canonical(&view).unwrap(), row, &mut y);
            encode(&canonical(&dict).unwrap(), row, &mut z);
            assert_eq!((&x, &x), (&y, &z), "row {row}");
        }
    }
}
