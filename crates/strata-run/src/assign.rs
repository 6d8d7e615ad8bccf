//! Spreading a run's shards over the ranks of a training job.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::RunError;

/// The largest `--world-size` strata takes.
pub const MAX_WORLD_SIZE: u64 = 1 << 24;
use crate::manifest::{Manifest, ShardEntry};

/// The shards rank `rank` of `world_size` reads from `split`.
///
/// The rule, so any reader can reproduce it: take the split's shards by descending rows,
/// then by path; give each in turn to the rank with the fewest rows so far (the lowest
/// rank on ties). Shards of a split hold equal rows (±1), so this deals them out
/// round-robin and every rank's row count is within one shard of every other's. Each
/// shard carries the target mix, so every rank's data does too.
pub fn assign<'m>(
    manifest: &'m Manifest,
    split: &str,
    world_size: u64,
    rank: u64,
) -> Result<Vec<&'m ShardEntry>, RunError> {
    if world_size == 0 {
        return Err(RunError::Usage("--world-size must be at least 1".into()));
    }
    if world_size > MAX_WORLD_SIZE {
        return Err(RunError::Usage(format!(
            "--world-size {world_size} is over the maximum of {MAX_WORLD_SIZE}"
        )));
    }
    if rank >= world_size {
        return Err(RunError::Usage(format!(
            "--rank {rank} is out of range for --world-size {world_size} (ranks are 0..{world_size})"
        )));
    }
    if !manifest.splits.iter().any(|s| s.split == split) {
        let known: Vec<&str> = manifest.splits.iter().map(|s| s.split.as_str()).collect();
        return Err(RunError::Usage(format!(
            "the run has no split `{split}` (it has {})",
            known.join(", ")
        )));
    }
    let mut shards: Vec<&ShardEntry> = manifest
        .shards
        .iter()
        .filter(|s| s.split == split)
        .collect();
    shards.sort_by(|a, b| b.rows.cmp(&a.rows).then_with(|| a.path.cmp(&b.path)));
    // The rank with the fewest rows so far, lowest on ties: ranks never given a shard
    // (load 0) are taken in order from `fresh`, the others wait in a heap, so the work
    // grows with the shards, not with the world size.
    let mut touched: BinaryHeap<Reverse<(u64, u64)>> = BinaryHeap::new();
    let mut fresh = 0u64;
    let mut mine = Vec::new();
    for shard in shards {
        let r = match touched.peek() {
            Some(&Reverse((load, r))) if fresh >= world_size || (load, r) < (0, fresh) => {
                touched.pop();
                touched.push(Reverse((load + shard.rows, r)));
                r
            }
            _ => {
                fresh += 1;
                touched.push(Reverse((shard.rows, fresh - 1)));
                fresh - 1
            }
        };
        if r == rank {
            mine.push(shard);
        }
    }
    mine.sort_by_key(|s| s.index);
    Ok(mine)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::SplitTotals;

    fn manifest(rows: &[u64]) -> Manifest {
        Manifest {
            schema_version: 1,
            run_id: "r".into(),
            identity: "i".into(),
            created_at: String::new(),
            strata_version: String::new(),
            pipeline: "p".into(),
            seed: 0,
            spec_sha256: String::new(),
            source: String::new(),
            inputs: vec![],
            schema: vec![],
            stratum_columns: vec![],
            target_shard_rows: 10,
            summary: String::new(),
            splits: vec![SplitTotals {
                split: "train".into(),
                shards: rows.len() as u64,
                rows: rows.iter().sum(),
                bytes: 0,
                weight_sum: 0.0,
            }],
            shards: rows
                .iter()
                .enumerate()
                .map(|(i, r)| ShardEntry {
                    path: format!("train/part-{i:05}.parquet"),
                    split: "train".into(),
                    index: i as u64,
                    rows: *r,
                    bytes: 0,
                    sha256: String::new(),
                    strata: vec![],
                })
                .collect(),
        }
    }

    #[test]
    fn every_shard_goes_to_exactly_one_rank_and_loads_stay_within_one_shard() {
        let m = manifest(&[11, 11, 11, 10, 10, 10, 10]);
        for world in 1..=9u64 {
            let mut seen = vec![];
            let mut loads = vec![];
            for rank in 0..world {
                let mine = assign(&m, "train", world, rank).unwrap();
                loads.push(mine.iter().map(|s| s.rows).sum::<u64>());
                seen.extend(mine.iter().map(|s| s.index));
            }
            seen.sort_unstable();
            assert_eq!(seen, (0..7).collect::<Vec<_>>(), "world {world}");
            let (lo, hi) = (loads.iter().min().unwrap(), loads.iter().max().unwrap());
            assert!(hi - lo <= 11, "world {world}: loads {loads:?}");
        }
    }

    /// The rule as documented, rank by rank over a load table: what the heap must give.
    fn by_the_rule(m: &Manifest, world: u64, rank: u64) -> Vec<u64> {
        let mut shards: Vec<&ShardEntry> = m.shards.iter().collect();
        shards.sort_by(|a, b| b.rows.cmp(&a.rows).then_with(|| a.path.cmp(&b.path)));
        let mut load = vec![0u64; world as usize];
        let mut mine = vec![];
        for s in shards {
            let r = (0..world as usize).min_by_key(|&i| (load[i], i)).unwrap();
            load[r] += s.rows;
            if r as u64 == rank {
                mine.push(s.index);
            }
        }
        mine.sort_unstable();
        mine
    }

    #[test]
    fn the_heap_follows_the_rule() {
        for rows in [
            vec![11, 11, 11, 10, 10, 10, 10],
            vec![0, 0, 3, 7, 1, 0, 9, 9, 2],
            vec![5; 20],
            vec![100, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
        ] {
            let m = manifest(&rows);
            for world in 1..=13u64 {
                for rank in 0..world {
                    let got: Vec<u64> = assign(&m, "train", world, rank)
                        .unwrap()
                        .iter()
                        .map(|s| s.index)
                        .collect();
                    assert_eq!(got, by_the_rule(&m, world, rank), "{rows:?}, world {world}");
                }
            }
        }
        // a huge world costs nothing: the last rank gets no shard
        let m = manifest(&[5, 5]);
        assert!(
            assign(&m, "train", MAX_WORLD_SIZE, MAX_WORLD_SIZE - 1)
                .unwrap()
                .is_empty()
        );
        assert!(assign(&m, "train", MAX_WORLD_SIZE + 1, 0).is_err());
    }

    #[test]
    fn bad_ranks_and_splits_are_usage_errors() {
        let m = manifest(&[5]);
        assert!(assign(&m, "train", 0, 0).is_err());
        assert!(
            assign(&m, "train", 2, 2)
                .unwrap_err()
                .to_string()
                .contains("out of range")
        );
        assert!(
            assign(&m, "nope", 1, 0)
                .unwrap_err()
                .to_string()
                .contains("no split `nope`")
        );
    }
}
