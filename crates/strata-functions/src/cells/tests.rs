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
        let y = Int32Array::from_iter((0..n).map(|i| (i % 3 != 0).then_some((i % 5) as i32 - 2)));
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
        let many = Int64Array::from_iter_values((0..n).map(|i| ((i * 7919) % 401) as i64 - 200));
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
                Arc::new(StringArray::from_iter_values(rows.iter().map(|&i| key[i]))) as ArrayRef,
            ),
            (
                "w",
                Arc::new(Float64Array::from_iter_values(rows.iter().map(|&i| w[i]))) as ArrayRef,
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
        let sql = "SELECT k, CAST(sum(CAST(w AS DECIMAL(38, 10))) AS VARCHAR) FROM t GROUP BY k";
        let decimal = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        let mut want = BTreeMap::new();
        for b in &decimal {
            let text =
                |i: usize| datafusion::arrow::compute::cast(b.column(i), &DataType::Utf8).unwrap();
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
            DictionaryArray::<Int32Type>::try_new(Int32Array::from(keys), values.clone()).unwrap(),
        )
    };
    let nullable = |keys: Vec<Option<i32>>, values: &ArrayRef| -> ArrayRef {
        Arc::new(
            DictionaryArray::<Int32Type>::try_new(Int32Array::from(keys), values.clone()).unwrap(),
        )
    };
    let strings = |v: &[&str]| -> ArrayRef { Arc::new(StringArray::from(v.to_vec())) };
    let abc = strings(&["a", "b", "c"]);
    let abc_again = strings(&["a", "b", "c"]);
    let reordered = strings(&["c", "x", "a", "b"]);
    let small = |v: Vec<i8>| -> ArrayRef { Arc::new(datafusion::arrow::array::Int8Array::from(v)) };
    let n = 64;
    let pattern = |m: usize, shift: usize| (0..n).map(move |r| ((r * 7 + shift) % m) as i32);
    let labels =
        |m: usize, shift: usize, low: i8| small(pattern(m, shift).map(|v| v as i8 + low).collect());
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
        // null keys: a digit of their own, in batches of 150 rows (not a multiple of
        // the 64-row validity words), sliced at an odd offset, then again without nulls
        // over the same dictionary and with a null's key out of range
        (
            vec![
                nullable(
                    (0..153)
                        .map(|r| (r % 5 != 1 && r % 7 != 3).then_some(r % 3))
                        .collect(),
                    &abc,
                )
                .slice(3, 150),
                small((0..150).map(|r| (r % 3 / 2) as i8).collect()),
            ],
            true,
        ),
        (
            vec![dict(pattern(3, 2).collect(), &abc_again), labels(2, 0, 0)],
            true,
        ),
        (
            vec![
                nullable(
                    (0..n)
                        .map(|r| (r % 11 != 4).then_some((r % 4) as i32))
                        .collect(),
                    &reordered,
                ),
                labels(2, 1, 0),
            ],
            true,
        ),
        (
            vec![
                Arc::new(DictionaryArray::<Int32Type>::new(
                    Int32Array::new(vec![0, 99].into(), Some(vec![true, false].into())),
                    abc.clone(),
                )),
                small(vec![0, 5]),
            ],
            true,
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
        let cells =
            crate::struct_list::rows_of(&acc.evaluate().unwrap().to_array().unwrap(), STRATA_CELLS)
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

/// A dictionary column with null keys and a null value codes each string as its
/// plain form does and every null as 0, whatever key a null slot holds.
#[test]
fn nullable_dictionaries_code_like_their_strings() {
    let values: ArrayRef = Arc::new(StringArray::from(vec![Some("b"), None, Some("a")]));
    let keys = Int32Array::from(vec![Some(2), None, Some(0), Some(1), None, Some(2)]);
    let dict: ArrayRef = Arc::new(DictionaryArray::<Int32Type>::try_new(keys, values).unwrap());
    let plain: ArrayRef = Arc::new(StringArray::from(vec![
        Some("a"),
        None,
        Some("b"),
        None,
        None,
        Some("a"),
    ]));
    let mut codes = ColumnCodes::new(DataType::Utf8);
    let (mut by_dict, mut by_plain) = (Vec::new(), Vec::new());
    codes.code(&dict, &mut by_dict).unwrap();
    codes.code(&plain, &mut by_plain).unwrap();
    assert_eq!(by_dict, by_plain);
    // numbered in the dictionary's order ("b", then "a"); nulls 0
    assert_eq!(by_dict, vec![2, 0, 1, 0, 0, 2]);
}

#[test]
fn short_bytes_are_views() {
    let v = StringViewArray::from(vec!["", "abc", "twelve bytes"]);
    for (i, s) in ["", "abc", "twelve bytes"].iter().enumerate() {
        assert_eq!(short_bytes(s.as_bytes()), Some(v.views()[i]));
    }
    assert_eq!(short_bytes(b"thirteen byte"), None);
}
