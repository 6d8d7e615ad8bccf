use super::*;

/// Rows waiting for spill writes stay near a fixed total however many ranges there
/// are (the few-range case keeps full batches; very many ranges keep a floor).
#[test]
fn pending_spill_rows_do_not_grow_with_the_ranges() {
    assert_eq!(spill_batch_rows(1), SPILL_BATCH_ROWS);
    assert_eq!(spill_batch_rows(76), SPILL_BATCH_ROWS);
    for ranges in [300u64, 763, 2_000] {
        let pending = spill_batch_rows(ranges) * ranges as usize;
        assert!(
            pending <= SPILL_PENDING_ROWS,
            "{ranges} ranges: {pending} rows"
        );
        assert!(
            pending * 2 > SPILL_PENDING_ROWS,
            "{ranges} ranges: {pending} rows"
        );
    }
    assert_eq!(spill_batch_rows(1 << 20), 256);
}

/// Blocks hold the counts round robin from `offset` would give, cover every rank once
/// in shard order, and `shard_at` finds each rank's block.
#[test]
fn blocks_hold_round_robin_counts() {
    for n_shards in [1u64, 2, 3, 7, 32] {
        for rows in [0u64, 1, 5, 31, 32, 33, 100, 1000] {
            for offset in 0..n_shards {
                let slot = Slot {
                    split: 0,
                    stratum: 0,
                    offset,
                    n_shards,
                    rows,
                    sums_at: 0,
                };
                let mut round_robin = vec![0u64; n_shards as usize];
                for j in 0..rows {
                    round_robin[((offset + j) % n_shards) as usize] += 1;
                }
                let mut next = 0;
                for k in 0..n_shards {
                    let case = (n_shards, rows, offset, k);
                    assert_eq!(slot.block_start(k), next, "{case:?}");
                    assert_eq!(
                        slot.block_end(k) - slot.block_start(k),
                        round_robin[k as usize],
                        "{case:?}"
                    );
                    for rank in slot.block_start(k)..slot.block_end(k) {
                        assert_eq!(slot.shard_at(rank), k, "{case:?} rank {rank}");
                    }
                    next = slot.block_end(k);
                }
                assert_eq!(next, rows);
            }
        }
    }
}

/// Names numbered in an order that is not theirs.
const NAMES: [&str; 5] = ["x", "c", "a", "b", "z"];

/// Held rows of (id, name, shuffle key, unit), as routing keeps them: the id is the
/// `distinct` column, the name is numbered by [`NAMES`].
fn held_rows(rows: &[(i64, &str, u64)]) -> (Layout, RecordBatch) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::UInt32, false),
        Field::new("__u", DataType::UInt64, false),
        Field::new("__unit", DataType::UInt32, false),
    ]));
    let layout = Layout {
        key: 2,
        split: 0,
        stratum: 0,
        cell: 0,
        tie: None,
        copies: None,
        keep: vec![0, 1],
        held: vec![0, 1, 2],
        held_schema: schema.clone(),
        held_order: vec![2],
        held_weight: 0,
        held_distinct: vec![0],
        coded: vec![1],
        split_names: vec!["train".into()],
        ranges: 1,
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(datafusion::arrow::array::Int64Array::from_iter_values(
            rows.iter().map(|r| r.0),
        )),
        Arc::new(UInt32Array::from_iter_values(
            rows.iter()
                .map(|r| NAMES.iter().position(|n| *n == r.1).unwrap() as u32),
        )),
        Arc::new(datafusion::arrow::array::UInt64Array::from_iter_values(
            rows.iter().map(|r| r.2),
        )),
        Arc::new(UInt32Array::from(vec![0; rows.len()])),
    ];
    (layout, RecordBatch::try_new(schema, columns).unwrap())
}

/// Rows of equal shuffle key come out in the order of their written values (numbered
/// strings by the strings), wherever they were read; rows repeating a `distinct`
/// value are counted.
#[test]
fn ties_of_the_shuffle_key_follow_the_written_values() {
    let rows = [
        (3, "b", 5),
        (1, "a", 5),
        (9, "z", 7),
        (2, "c", 5),
        (1, "a", 5),
        (4, "a", 1),
        (1, "x", 5),
    ];
    let want = vec![
        (4, "a".to_string()),
        (1, "a".into()),
        (1, "a".into()),
        (1, "x".into()),
        (2, "c".into()),
        (3, "b".into()),
        (9, "z".into()),
    ];
    for rotate in 0..rows.len() {
        let mut input = rows.to_vec();
        input.rotate_left(rotate);
        input.swap(0, rotate / 2);
        let (layout, batch) = held_rows(&input);
        let decoded: Decoded = vec![None, Some(Arc::new(StringArray::from(NAMES.to_vec())))];
        let Prepared {
            rows: held,
            perm,
            repeated,
        } = prepare(&layout, &decoded, vec![Held::Batches(vec![batch])])
            .unwrap()
            .unwrap();
        let ids = held
            .column(0)
            .as_primitive::<datafusion::arrow::datatypes::Int64Type>();
        let names = decode(held.column(1), decoded[1].as_ref()).unwrap();
        let names = names.as_string::<i32>();
        let got: Vec<(i64, String)> = perm
            .iter()
            .map(|&(_, i)| (ids.value(i as usize), names.value(i as usize).to_string()))
            .collect();
        assert_eq!(got, want, "input order {input:?}");
        // id 1 three times at key 5: two repeats
        assert_eq!(repeated, 2, "input order {input:?}");
    }
}

/// Two routing tasks number one column through a shared dictionary: short and long
/// values, the empty string and nulls, more values than the cache has slots; the
/// numbers decode back to the very column.
#[test]
fn numbered_strings_decode_to_themselves() {
    let dictionary = std::sync::Mutex::new(Dictionary::default());
    let values: Vec<Option<String>> = (0..500)
        .map(|i| match i % 7 {
            0 => None,
            1 => Some(String::new()),
            2 => Some(format!("a value longer than twelve bytes {}", i % 90)),
            _ => Some(format!("v{}", i % 150)),
        })
        .collect();
    let mut coders = [Coder::new(&dictionary), Coder::new(&dictionary)];
    for (task, half) in [
        (0, &values[..250]),
        (1, &values[250..]),
        (0, &values[100..400]),
    ] {
        let coder = &mut coders[task];
        for view in [true, false] {
            let plain: ArrayRef = Arc::new(StringArray::from(half.to_vec()));
            let column = if view {
                cast(&plain, &DataType::Utf8View).unwrap()
            } else {
                plain.clone()
            };
            let codes = coder.code(&column).unwrap();
            let strings: ArrayRef =
                Arc::new(StringArray::from(dictionary.lock().unwrap().keys.clone()));
            assert_eq!(
                decode(&codes, Some(&strings)).unwrap().as_ref(),
                plain.as_ref()
            );
        }
    }
    // one number per distinct value, whichever task met it first
    let distinct: std::collections::HashSet<&String> = values.iter().flatten().collect();
    assert_eq!(dictionary.lock().unwrap().keys.len(), distinct.len());
}

/// Counts survive the switch from the dense table to the map.
#[test]
fn range_counts_switch_to_a_map_without_losing_counts() {
    let ranges = 1 << 20;
    let mut counts = RangeCounts::Dense(Vec::new());
    let mut want: BTreeMap<(u32, u32), u64> = BTreeMap::new();
    for unit in 0..6u32 {
        counts.grow(unit as usize + 1, ranges);
        for range in [0u32, 7, unit * 1000, (ranges - 1) as u32, 7] {
            counts.add(unit, range, ranges);
            *want.entry((unit, range)).or_default() += 1;
        }
        // past 4 units of 2^20 ranges the table would exceed DENSE_COUNTS
        assert_eq!(
            matches!(counts, RangeCounts::Sparse(_)),
            (unit as usize + 1) * ranges > DENSE_COUNTS,
            "unit {unit}"
        );
    }
    let got: BTreeMap<(u32, u32), u64> = counts.into_entries(ranges).into_iter().collect();
    assert_eq!(got, want);
}
