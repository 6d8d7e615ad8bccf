//! Dealing a key range: its rows sorted by key and given to shards by their rank in
//! their stratum (rows of the stratum in earlier ranges, from the counts, plus their
//! place in this range).

use super::*;

/// What one routing task wrote: its rows by key range, and its rows per (unit number,
/// range).
pub(super) struct Routed {
    pub(super) files: Vec<(u64, Held)>,
    pub(super) counts: Vec<((u32, u32), u64)>,
}

/// A (split, stratum) and how its rows, in key order, are cut into its shards' blocks.
///
/// Shard `k` takes the `k`-th block: `floor(rows / n_shards)` rows, plus one for the
/// `rows mod n_shards` shards starting at `offset` (cyclically). So each shard holds the
/// same counts as dealing the rows round robin from `offset` would give, and since keys
/// are uniform, shard `k`'s rows of every stratum lie near the `k`-th slice of the key
/// space: a shard is complete once the ranges up to there are dealt.
#[derive(Debug, Clone, Copy)]
pub(super) struct Slot {
    pub(super) split: usize,
    pub(super) stratum: u64,
    pub(super) offset: u64,
    pub(super) n_shards: u64,
    /// Rows kept of this (split, stratum).
    pub(super) rows: u64,
    /// Index of its (shard 0) entry in the per-(slot, shard) sums.
    pub(super) sums_at: usize,
}

impl Slot {
    /// Rows of this stratum in shards `0..k`: where shard `k`'s block starts.
    pub(super) fn block_start(&self, k: u64) -> u64 {
        let (s, o) = (self.n_shards, self.offset);
        let r = self.rows % s;
        // shards below k among the `r` taking one more row: [o, o + r) modulo s
        let extra = if o + r <= s {
            k.saturating_sub(o).min(r)
        } else {
            k.saturating_sub(o).min(s - o) + k.min(o + r - s)
        };
        k * (self.rows / s) + extra
    }

    pub(super) fn block_end(&self, k: u64) -> u64 {
        self.block_start(k + 1)
    }

    /// The shard of the row of rank `rank` (0-based, in key order).
    pub(super) fn shard_at(&self, rank: u64) -> u64 {
        // the first shard whose block ends after `rank`
        let (mut lo, mut hi) = (0, self.n_shards - 1);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.block_end(mid) > rank {
                hi = mid
            } else {
                lo = mid + 1
            }
        }
        lo
    }
}

/// A row's (slot, index of its (split, cell) totals).
pub(super) type RowUnit = (u32, u32);

/// Where every row goes, worked out from the routing counts before any range is dealt.
pub(super) struct DealPlan {
    pub(super) names: Vec<String>,
    pub(super) slots: Vec<Slot>,
    /// By unit number: the unit's (slot, index of its (split, cell) totals) and tie id.
    pub(super) units: Vec<(RowUnit, u64)>,
    /// (split, cell) of each totals index.
    pub(super) cells: Vec<(usize, u64)>,
    /// First shard index of each split, in one numbering of all shards, and its shards.
    pub(super) shard_base: Vec<usize>,
    pub(super) split_shards: Vec<u64>,
    /// Entries of the per-(slot, shard) sums.
    pub(super) n_sums: usize,
    /// Per range: (slot, rows of the slot dealt in earlier ranges).
    pub(super) starts: Vec<Vec<(u32, u64)>>,
    /// Per range: (tie id, rows of that tie group in earlier ranges).
    pub(super) tie_before: Vec<HashMap<u64, u64>>,
    /// Per range: the shards (in one numbering of all shards) whose last row lies in it.
    pub(super) completes: Vec<Vec<usize>>,
}

impl DealPlan {
    /// (split index, shard) of a shard in the one numbering of all shards.
    pub(super) fn shard_of(&self, global: usize) -> (usize, u64) {
        let s = self.shard_base.partition_point(|&b| b <= global) - 1;
        (s, (global - self.shard_base[s]) as u64)
    }
}

/// Deals one range: sorts it by key and gives each row the next shard of its (split,
/// stratum), counting from the rows of that stratum in earlier ranges.
pub(super) fn deal_range(
    layout: &Layout,
    plan: &DealPlan,
    decoded: &Decoded,
    trims: &std::collections::HashMap<u64, u64>,
    range: u64,
    inputs: Vec<Held>,
) -> Result<Option<DealtRange>, PublishError> {
    let Some(Prepared {
        rows,
        perm,
        repeated,
    }) = prepare(layout, decoded, inputs)?
    else {
        return Ok(None);
    };
    let n = rows.num_rows();
    let unit = rows
        .column(layout.held.len())
        .as_primitive::<UInt32Type>()
        .clone();
    if let Some(&u) = unit
        .values()
        .iter()
        .find(|&&u| u as usize >= plan.units.len())
    {
        return Err(PublishError::Data {
            context: "dealing shard rows".into(),
            message: format!("a row of unit {u} was not counted while routing"),
            source: None,
        });
    }
    let weight = cast(rows.column(layout.held_weight), &DataType::Float64)
        .map_err(data_err("reading the weight column"))?;
    let weight = weight.as_primitive::<Float64Type>();
    // per slot: the rank of its next row, its shard, and where that shard's block ends
    let mut next: Vec<u64> = vec![0; plan.slots.len()];
    let mut block: Vec<(u64, u64)> = vec![(0, 0); plan.slots.len()];
    for &(slot, before) in &plan.starts[range as usize] {
        let sl = &plan.slots[slot as usize];
        next[slot as usize] = before;
        let shard = sl.shard_at(before);
        block[slot as usize] = (shard, sl.block_end(shard));
    }
    let mut tie_seen: HashMap<u64, u64> = HashMap::new();
    let all_shards = plan.shard_base.last().copied().unwrap_or(0)
        + plan.split_shards.last().copied().unwrap_or(0) as usize;
    let mut lists: Vec<Vec<u32>> = vec![Vec::new(); all_shards];
    let mut kept: Vec<(u32, u32, f64)> = Vec::with_capacity(n);
    for &(_, i) in &perm {
        let i = i as usize;
        let ((slot, cell), t) = plan.units[unit.value(i) as usize];
        // a trimmed group of identical rows keeps its first rows in key order
        if t != 0
            && let Some(&keep) = trims.get(&t)
        {
            let seen = tie_seen.entry(t).or_default();
            let at = plan.tie_before[range as usize]
                .get(&t)
                .copied()
                .unwrap_or(0)
                + *seen;
            *seen += 1;
            if at >= keep {
                continue;
            }
        }
        let sl = &plan.slots[slot as usize];
        let rank = next[slot as usize];
        next[slot as usize] += 1;
        let (shard, end) = &mut block[slot as usize];
        // past its block: the next nonempty block (the counts make rank < rows)
        while rank >= *end && *shard + 1 < sl.n_shards {
            *shard += 1;
            *end = sl.block_end(*shard);
        }
        let shard = *shard;
        lists[plan.shard_base[sl.split] + shard as usize].push(i as u32);
        let w = if weight.is_null(i) {
            0.0
        } else {
            weight.value(i)
        };
        kept.push(((sl.sums_at + shard as usize) as u32, cell, w));
    }

    // a take per shard (of the written columns only) gives each piece buffers of its
    // own: a slice of one take of the whole range would keep all of the range alive
    // until its last piece's shard is encoded, which for a shard completing late (a
    // small stratum's rows lie anywhere in key order) pinned a range per waiting shard
    let written = rows
        .project(&(0..layout.keep.len()).collect::<Vec<_>>())
        .map_err(data_err("dealing shard rows"))?;
    drop(rows);
    let mut pieces = Vec::new();
    for (g, list) in lists.into_iter().enumerate() {
        if !list.is_empty() {
            let piece = take_record_batch(&written, &UInt32Array::from(list))
                .map_err(data_err("dealing shard rows"))?;
            let bytes = piece.get_array_memory_size();
            pieces.push((g, piece, bytes));
        }
    }
    Ok(Some(DealtRange {
        pieces,
        rows: kept,
        repeated,
    }))
}

/// Rows per (unit, range) while routing: a dense table (one add per row, no hashing)
/// while units × ranges stays small, a map past that.
pub(super) enum RangeCounts {
    Dense(Vec<u64>),
    Sparse(HashMap<(u32, u32), u64>),
}

/// Entries past which the dense table gives way to a map (32 MiB of counters).
pub(super) const DENSE_COUNTS: usize = 1 << 22;

impl RangeCounts {
    /// Room for `units` units.
    pub(super) fn grow(&mut self, units: usize, ranges: usize) {
        if let RangeCounts::Dense(dense) = self {
            if units * ranges <= DENSE_COUNTS {
                dense.resize(units * ranges, 0);
            } else {
                let entries = std::mem::take(dense)
                    .into_iter()
                    .enumerate()
                    .filter(|(_, n)| *n > 0);
                *self = RangeCounts::Sparse(
                    entries
                        .map(|(i, n)| (((i / ranges) as u32, (i % ranges) as u32), n))
                        .collect(),
                );
            }
        }
    }

    #[inline]
    pub(super) fn add(&mut self, unit: u32, range: u32, ranges: usize) {
        match self {
            RangeCounts::Dense(dense) => dense[unit as usize * ranges + range as usize] += 1,
            RangeCounts::Sparse(map) => *map.entry((unit, range)).or_default() += 1,
        }
    }

    /// ((unit, range), rows) for every nonzero count.
    pub(super) fn into_entries(self, ranges: usize) -> Vec<((u32, u32), u64)> {
        match self {
            RangeCounts::Dense(dense) => dense
                .into_iter()
                .enumerate()
                .filter(|(_, n)| *n > 0)
                .map(|(i, n)| (((i / ranges) as u32, (i % ranges) as u32), n))
                .collect(),
            RangeCounts::Sparse(map) => map.into_iter().collect(),
        }
    }
}
