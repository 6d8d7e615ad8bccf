//! Routing: each input partition sends its rows to key ranges and counts rows per
//! stratum and range.

use super::*;

/// Step 1 for one input partition: rows to key-range spill files, counted.
pub(super) async fn route(
    mut stream: SendableRecordBatchStream,
    layout: &Layout,
    dir: &Path,
    budget: &Budget,
    table: &std::sync::Mutex<UnitTable>,
    dictionaries: &[std::sync::Mutex<Dictionary>],
    partition: usize,
) -> Result<Routed, PublishError> {
    use std::sync::atomic::Ordering::Relaxed;
    let mut coders: Vec<Coder> = dictionaries.iter().map(Coder::new).collect();
    // the stream positions of the numbered columns, which `compact` leaves as they are
    let coded_input: Vec<usize> = layout.coded.iter().map(|&k| layout.held[k]).collect();
    let mut open: HashMap<u64, RangeOut> = HashMap::new();
    // bytes this task holds in memory (counted in `budget.held` too)
    let mut mine = 0usize;
    // (split, stratum, cell, tie) → its number (asked of the shared table once per
    // unit); rows counted per (number, range)
    let mut unit_ids: HashMap<RouteUnit, u32> = HashMap::new();
    let mut unit_cache = SlotCache::<_, _, CACHE_SLOTS>::new();
    let ranges = layout.ranges as usize;
    let batch_rows = spill_batch_rows(layout.ranges);
    let mut counts = RangeCounts::Dense(Vec::new());
    let mut counted_units = 0usize;
    let mut range_of: Vec<u32> = Vec::new();
    let mut unit_of: Vec<u32> = Vec::new();
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(data_err("computing the curated rows"))?;
        if batch.num_rows() == 0 {
            continue;
        }
        // rows standing for their copies are routed in pieces of a bounded number of
        // copies, each copy taken once, straight into its range's place
        let pieces = match &layout.copies {
            None => vec![(batch, Vec::new())],
            Some(c) => copy_pieces(&batch, c.count)?,
        };
        for (original, counts_of) in pieces {
            let batch = compact(&original, &coded_input)?;
            let n = batch.num_rows();
            // each routed row's row in the batch (`None`: the same row), and its key
            let (rep, key) = match &layout.copies {
                None => (None, u64_column(&batch, layout.key)?),
                Some(c) => {
                    let (rep, keys) = copies_of(&batch, &counts_of, c)?;
                    (Some(rep), keys)
                }
            };
            let m = rep.as_ref().map_or(n, Vec::len);
            if m == 0 {
                continue;
            }
            let split = split_column(&batch, layout)?;
            let stratum = u64_column(&batch, layout.stratum)?;
            let cell = u64_column(&batch, layout.cell)?;
            let tie = layout.tie.map(|i| u64_column(&batch, i)).transpose()?;
            range_of.clear();
            for j in 0..m {
                let r = rep.as_ref().map_or(j, |rep| rep[j] as usize);
                let range = ((key.value(j) as u128 * layout.ranges as u128) >> 64) as u32;
                range_of.push(range);
                let s = split.value(r) as usize;
                let k = (
                    s,
                    stratum.value(r),
                    cell.value(r),
                    tie.as_ref().map_or(0, |t| t.value(r)),
                );
                let id = unit_cache.get(k, |k| match unit_ids.get(k) {
                    Some(&id) => Ok(id),
                    None => {
                        let id = table
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .id(k)?;
                        unit_ids.insert(*k, id);
                        Ok::<_, PublishError>(id)
                    }
                })?;
                if id as usize >= counted_units {
                    counted_units = id as usize + 1;
                    counts.grow(counted_units, ranges);
                }
                counts.add(id, range, ranges);
                unit_of.push(id);
            }
            // the rows keep their written columns, order columns and weight, and their unit
            // number in place of the split, stratum, cell and tie; a made key and the units
            // are per routed row, the rest per batch row
            let mut per_routed = vec![false; layout.held.len() + 1];
            let mut held: Vec<ArrayRef> = Vec::with_capacity(layout.held.len() + 1);
            for (h, &i) in layout.held.iter().enumerate() {
                if rep.is_some() && i == layout.key {
                    held.push(Arc::new(key.clone()));
                    per_routed[h] = true;
                } else {
                    held.push(batch.column(i).clone());
                }
            }
            for (&k, coder) in layout.coded.iter().zip(&mut coders) {
                held[k] = coder.code(original.column(layout.held[k]))?;
            }
            held.push(Arc::new(UInt32Array::from(std::mem::take(&mut unit_of))));
            per_routed[layout.held.len()] = true;
            // one take puts the rows in range order (stable: a counting sort when ranges
            // are few, else a sort); each range gets a zero-copy slice
            let mut order: Vec<u32> = (0..m as u32).collect();
            if (layout.ranges as usize) <= 4 * m {
                let mut at = vec![0u32; layout.ranges as usize + 1];
                for &g in &range_of {
                    at[g as usize + 1] += 1;
                }
                for g in 1..at.len() {
                    at[g] += at[g - 1];
                }
                for (r, &g) in range_of.iter().enumerate() {
                    order[at[g as usize] as usize] = r as u32;
                    at[g as usize] += 1;
                }
            } else {
                order.sort_by_key(|&r| range_of[r as usize]);
            }
            let mut bounds: Vec<(u64, usize, usize)> = Vec::new();
            for (i, &r) in order.iter().enumerate() {
                let g = range_of[r as usize] as u64;
                match bounds.last_mut() {
                    Some((last, _, len)) if *last == g => *len += 1,
                    _ => bounds.push((g, i, 1)),
                }
            }
            let sorted = if rep.is_none() && bounds.len() == 1 {
                held
            } else {
                // a copy's columns are its batch row's, taken once
                let source = rep.as_ref().map(|rep| {
                    UInt32Array::from_iter_values(order.iter().map(|&j| rep[j as usize]))
                });
                let order = UInt32Array::from(order);
                held.iter()
                    .zip(&per_routed)
                    .map(|(c, &routed)| {
                        let at = match (&source, routed) {
                            (Some(source), false) => source,
                            _ => &order,
                        };
                        take(c.as_ref(), at, None)
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(data_err("routing shard rows"))?
            };
            let sorted = RecordBatch::try_new(layout.held_schema.clone(), sorted)
                .map_err(data_err("routing shard rows"))?;
            // past the budget (by this task or another), what is held goes to files and so
            // does everything after it
            if !budget.spilling.load(Relaxed) {
                let size = sorted.get_array_memory_size();
                mine += size;
                let held = budget.held.fetch_add(size, Relaxed) + size;
                if held.saturating_mul(2) > budget.limit {
                    budget.spilling.store(true, Relaxed);
                }
            }
            let spilling = budget.spilling.load(Relaxed);
            if spilling && mine > 0 {
                for (range, out) in open.iter_mut() {
                    if let RangeOut::Batches(batches) = out {
                        let path = dir.join(format!("routed-{range}-{partition}.arrow"));
                        let mut file = SpillFile::create(&path, &layout.held_schema, batch_rows)?;
                        for b in batches.drain(..) {
                            file.push(b, &path)?;
                        }
                        *out = RangeOut::File(path, file);
                    }
                }
                budget.held.fetch_sub(mine, Relaxed);
                mine = 0;
            }
            for (range, start, len) in bounds {
                let part = sorted.slice(start, len);
                let out = match open.entry(range) {
                    std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::hash_map::Entry::Vacant(v) => v.insert(if spilling {
                        let path = dir.join(format!("routed-{range}-{partition}.arrow"));
                        let file = SpillFile::create(&path, &layout.held_schema, batch_rows)?;
                        RangeOut::File(path, file)
                    } else {
                        RangeOut::Batches(Vec::new())
                    }),
                };
                match out {
                    RangeOut::File(path, file) => file.push(part, path)?,
                    RangeOut::Batches(batches) => batches.push(part),
                }
            }
        }
    }
    let counts = counts.into_entries(ranges);
    let mut files = Vec::new();
    for (range, out) in open {
        files.push((
            range,
            match out {
                RangeOut::File(path, file) => {
                    file.finish(&path)?;
                    Held::File(path)
                }
                RangeOut::Batches(batches) => Held::Batches(batches),
            },
        ));
    }
    Ok(Routed { files, counts })
}

/// Routed rows made per piece of a batch of copied rows, at most (a row of more copies is
/// a piece of its own).
const COPIES_PER_PIECE: usize = 1 << 16;

/// A batch of rows standing for their copies, cut into pieces of at most
/// [`COPIES_PER_PIECE`] copies, each with its rows' copy counts.
fn copy_pieces(
    batch: &RecordBatch,
    count: usize,
) -> Result<Vec<(RecordBatch, Vec<u32>)>, PublishError> {
    let name = batch.schema().field(count).name().clone();
    let bad = |what: &str| PublishError::Data {
        context: "writing shards".into(),
        message: format!("the copies column `{name}` {what}"),
        source: None,
    };
    let counts = cast(batch.column(count), &DataType::Int64)
        .map_err(|e| bad(&format!("is not an integer: {e}")))?;
    let counts = counts.as_primitive::<datafusion::arrow::datatypes::Int64Type>();
    if counts.null_count() > 0 {
        return Err(bad("holds nulls"));
    }
    let counts: Vec<u32> = counts
        .values()
        .iter()
        .map(|&k| u32::try_from(k))
        .collect::<Result<_, _>>()
        .map_err(|_| bad("holds values outside 0..2^32"))?;
    let mut pieces = Vec::new();
    let (mut start, mut copies) = (0, 0usize);
    for (r, &k) in counts.iter().enumerate() {
        if copies + k as usize > COPIES_PER_PIECE && r > start {
            pieces.push((batch.slice(start, r - start), counts[start..r].to_vec()));
            (start, copies) = (r, 0);
        }
        copies += k as usize;
    }
    pieces.push((
        batch.slice(start, counts.len() - start),
        counts[start..].to_vec(),
    ));
    Ok(pieces)
}

/// The copies of a piece's rows: each copy's row in the piece and its shuffle key.
fn copies_of(
    batch: &RecordBatch,
    counts: &[u32],
    copies: &CopiesLayout,
) -> Result<(Vec<u32>, datafusion::arrow::array::UInt64Array), PublishError> {
    let total: usize = counts.iter().map(|&k| k as usize).sum();
    let (mut rep, mut number) = (Vec::with_capacity(total), Vec::with_capacity(total));
    for (r, &k) in counts.iter().enumerate() {
        rep.extend(std::iter::repeat_n(r as u32, k as usize));
        number.extend(0..k as i64);
    }
    let hashed: Vec<ArrayRef> = copies
        .hashed
        .iter()
        .map(|&i| batch.column(i).clone())
        .collect();
    let keys = strata_functions::hash_copies(copies.seed, &hashed, &rep, &number)
        .map_err(data_err("hashing copied rows"))?;
    Ok((rep, keys.into()))
}

/// A range read back and sorted by key, ready to deal.
pub(super) struct Prepared {
    pub(super) rows: RecordBatch,
    pub(super) perm: Vec<(u64, u32)>,
    /// Rows whose order keys equal the previous row's.
    pub(super) repeated: u64,
}

/// Reads a range back (its routed pieces) and sorts it by the order columns.
pub(super) fn prepare(
    layout: &Layout,
    decoded: &Decoded,
    inputs: Vec<Held>,
) -> Result<Option<Prepared>, PublishError> {
    let mut batches = Vec::new();
    for input in inputs {
        match input {
            Held::File(path) => read_spill(path, &mut batches)?,
            Held::Batches(b) => batches.extend(b),
        }
    }
    let Some(first) = batches.first() else {
        return Ok(None);
    };
    let rows =
        concat_batches(&first.schema(), &batches).map_err(data_err("reading spilled rows"))?;
    drop(batches);

    // sort by the shuffle key; its ties are rare, so only they are compared further
    let mut repeated = 0u64;
    let key = u64_column(&rows, layout.held_order[0])?;
    let mut perm: Vec<(u64, u32)> = key
        .values()
        .iter()
        .enumerate()
        .map(|(i, &k)| (k, i as u32))
        .collect();
    perm.sort_unstable();
    let mut start = 0;
    while start < perm.len() {
        let mut end = start + 1;
        while end < perm.len() && perm[end].0 == perm[start].0 {
            end += 1;
        }
        if end - start > 1 {
            repeated += order_ties(&rows, layout, decoded, &mut perm[start..end])?;
        }
        start = end;
    }

    Ok(Some(Prepared {
        rows,
        perm,
        repeated,
    }))
}

/// Orders rows of equal shuffle key by the other order columns, then by their written
/// values, so their order never depends on where they were read (rows equal in all of
/// these are interchangeable: they write the same bytes). Returns the rows equal to the
/// previous one in the order columns and the `distinct` columns.
pub(super) fn order_ties(
    rows: &RecordBatch,
    layout: &Layout,
    decoded: &Decoded,
    tied: &mut [(u64, u32)],
) -> Result<u64, PublishError> {
    let at = UInt32Array::from_iter_values(tied.iter().map(|t| t.1));
    let pick = |columns: &mut dyn Iterator<Item = usize>| -> Result<Option<datafusion::arrow::row::Rows>, PublishError> {
        // values as written (numbered strings decoded); columns the row format cannot
        // hold are left out of the comparison
        let mut taken = Vec::new();
        for c in columns {
            let column = take(rows.column(c), &at, None).map_err(data_err("ordering rows of equal keys"))?;
            let column = decode(&column, decoded.get(c).and_then(Option::as_ref))?;
            if RowConverter::supports_fields(&[SortField::new(column.data_type().clone())]) {
                taken.push(column);
            }
        }
        let columns = taken;
        if columns.is_empty() {
            return Ok(None);
        }
        let converter = RowConverter::new(columns.iter().map(|c| SortField::new(c.data_type().clone())).collect())
            .map_err(data_err("ordering rows of equal keys"))?;
        converter.convert_columns(&columns).map(Some).map_err(data_err("ordering rows of equal keys"))
    };
    let order = pick(&mut layout.held_order[1..].iter().copied())?;
    let written = pick(&mut (0..layout.keep.len()))?;
    let distinct = pick(&mut layout.held_distinct.iter().copied())?;
    let same = |rows: &Option<datafusion::arrow::row::Rows>, a: usize, b: usize| {
        rows.as_ref().is_none_or(|r| r.row(a) == r.row(b))
    };
    let mut local: Vec<usize> = (0..tied.len()).collect();
    local.sort_by(|&a, &b| {
        let by = |rows: &Option<datafusion::arrow::row::Rows>| {
            rows.as_ref()
                .map_or(std::cmp::Ordering::Equal, |r| r.row(a).cmp(&r.row(b)))
        };
        by(&order)
            .then_with(|| by(&written))
            .then_with(|| tied[a].1.cmp(&tied[b].1))
    });
    let repeated = local
        .windows(2)
        .filter(|w| same(&order, w[0], w[1]) && same(&distinct, w[0], w[1]))
        .count() as u64;
    let sorted: Vec<(u64, u32)> = local.iter().map(|&i| tied[i]).collect();
    tied.copy_from_slice(&sorted);
    Ok(repeated)
}

/// The split index of each row, checked against the split names.
pub(super) fn split_column(
    batch: &RecordBatch,
    layout: &Layout,
) -> Result<UInt8Array, PublishError> {
    let a = cast(batch.column(layout.split), &DataType::UInt8)
        .map_err(data_err("reading the split column"))?;
    let a = a
        .as_primitive::<datafusion::arrow::datatypes::UInt8Type>()
        .clone();
    if a.null_count() > 0
        || a.values()
            .iter()
            .any(|&s| s as usize >= layout.split_names.len())
    {
        return Err(PublishError::Data {
            context: "writing shards".into(),
            message: format!(
                "the split column holds values outside 0..{}",
                layout.split_names.len()
            ),
            source: None,
        });
    }
    Ok(a)
}

pub(super) fn u64_column(
    batch: &RecordBatch,
    i: usize,
) -> Result<datafusion::arrow::array::UInt64Array, PublishError> {
    let name = batch.schema().field(i).name().clone();
    let a = cast(batch.column(i), &DataType::UInt64).map_err(|e| PublishError::Data {
        context: "writing shards".into(),
        message: format!("column `{name}` is not an unsigned integer: {e}"),
        source: None,
    })?;
    Ok(a.as_primitive::<UInt64Type>().clone())
}
