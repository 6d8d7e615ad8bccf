//! Exact rank cuts without sorting.
//!
//! Curation needs, per stratum, the row of rank k by a hash key (the k-th smallest):
//! rows at or below it go to train, or get one more copy. Hash keys are uniform, so the
//! k-th of n lies near k/n of the key space; one aggregate pass counts the rows below,
//! between and above a narrow *window* around each expected position and lists the keys
//! inside the windows only (a few hundred per stratum). The driver then walks those
//! keys to the exact cut. No sort of the data, memory bounded by the windows, and the
//! same answer for any partitioning. A cut that falls outside its window (about one in
//! 10⁹ per cut at [`SIGMAS`] standard deviations) is found again with the window
//! widened to the whole key space.

use std::collections::BTreeMap;

/// A row's order key within its stratum: (primary hash, secondary hash).
pub(crate) type Key = (u64, u64);

/// Half-width of a window in binomial standard deviations of the count below it.
pub(crate) const SIGMAS: f64 = 6.0;
/// Rows added to each half-width, so small strata are looked at whole.
const SLACK_ROWS: f64 = 16.0;

/// A closed range of the primary key.
pub(crate) type Window = (u64, u64);

/// The whole key space: used when a narrow window missed its cut.
pub(crate) const FULL: Window = (0, u64::MAX);

/// Where the row of rank `k` (1-based) among `n` uniform keys almost surely lies;
/// `None` when the cut needs no search (k = 0: nothing below; k = n: everything).
pub(crate) fn window(k: u64, n: u64) -> Option<Window> {
    if k == 0 || k >= n {
        return None;
    }
    let (kf, nf) = (k as f64, n as f64);
    let p = kf / nf;
    let half = (SIGMAS * (nf * p * (1.0 - p)).sqrt() + SLACK_ROWS) / nf;
    // `as` saturates, so the ends clamp to the key space
    let lo = ((p - half).max(0.0) * 18_446_744_073_709_551_616.0) as u64;
    let hi = ((p + half).min(1.0) * 18_446_744_073_709_551_616.0) as u64;
    Some((lo, hi))
}

/// Zones of the key space around two windows, in key order: 0 below the first window,
/// 1 inside it, 2 between, 3 inside the second, 4 above. A missing window is empty.
/// (Overlapping windows leave zone 2 empty and split their union between 1 and 3.) The
/// aggregate that assigns them, and so the one definition, is `strata_cut_zones`.
pub(crate) use strata_functions::ZONES;

/// What one aggregate pass saw of a stratum: rows and weight per zone outside the
/// windows, and per key inside them.
#[derive(Debug, Clone, Default)]
pub(crate) struct Observed {
    pub gaps: [(u64, f64); ZONES],
    pub keys: [BTreeMap<Key, (u64, f64)>; ZONES],
}

impl Observed {
    pub(crate) fn add(&mut self, zone: usize, key: Option<Key>, rows: u64, weight: f64) {
        let e = match key {
            Some(k) if zone == 1 || zone == 3 => self.keys[zone].entry(k).or_default(),
            _ => &mut self.gaps[zone],
        };
        e.0 += rows;
        e.1 += weight;
    }

    /// Takes out rows `add` put in (a key's entry goes once it has no rows left).
    pub(crate) fn remove(&mut self, zone: usize, key: Key, rows: u64, weight: f64) {
        if zone == 1 || zone == 3 {
            if let Some(e) = self.keys[zone].get_mut(&key) {
                e.0 -= rows;
                e.1 -= weight;
                if e.0 == 0 {
                    self.keys[zone].remove(&key);
                }
            }
        } else {
            self.gaps[zone].0 -= rows;
            self.gaps[zone].1 -= weight;
        }
    }

    pub(crate) fn rows(&self) -> u64 {
        self.gaps.iter().map(|g| g.0).sum::<u64>()
            + self
                .keys
                .iter()
                .flat_map(|k| k.values().map(|v| v.0))
                .sum::<u64>()
    }
}

/// The cut at rank k: rows whose key is at or below it are "below".
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Cut {
    /// k = 0: no row is below.
    Nothing,
    /// k = n: every row is below.
    Everything,
    /// The key of the k-th row, its zone, the rows with smaller keys and the rows
    /// with this very key (more than one only for identical rows).
    At {
        key: Key,
        zone: usize,
        before: u64,
        at: u64,
    },
}

impl Cut {
    /// The key as (primary, secondary) threshold columns: `None` for no row.
    pub(crate) fn threshold(&self) -> Option<Key> {
        match self {
            Cut::Nothing => None,
            Cut::Everything => Some((u64::MAX, u64::MAX)),
            Cut::At { key, .. } => Some(*key),
        }
    }

    /// Whether rows of `zone` (with `key` inside windows) are at or below the cut.
    fn covers(&self, zone: usize, key: Option<&Key>) -> bool {
        match self {
            Cut::Nothing => false,
            Cut::Everything => true,
            Cut::At {
                key: k, zone: z, ..
            } => match key {
                Some(key) => key <= k,
                None => zone < *z,
            },
        }
    }
}

/// The cut at rank `k` of `obs`, or `None` when it fell outside the windows.
pub(crate) fn find(obs: &Observed, k: u64) -> Option<Cut> {
    let n = obs.rows();
    if k == 0 {
        return Some(Cut::Nothing);
    }
    if k >= n {
        return Some(Cut::Everything);
    }
    let mut before = 0u64;
    for zone in 0..ZONES {
        if before + obs.gaps[zone].0 >= k {
            return None;
        }
        before += obs.gaps[zone].0;
        for (key, (rows, _)) in &obs.keys[zone] {
            if before + rows >= k {
                return Some(Cut::At {
                    key: *key,
                    zone,
                    before,
                    at: *rows,
                });
            }
            before += rows;
        }
    }
    None
}

/// Rows and weight of `obs` at or below `upper` and not at or below `lower`.
pub(crate) fn between(obs: &Observed, lower: Option<&Cut>, upper: &Cut) -> (u64, f64) {
    let inside = |zone: usize, key: Option<&Key>| {
        upper.covers(zone, key) && !lower.is_some_and(|l| l.covers(zone, key))
    };
    let mut out = (0u64, 0.0f64);
    for zone in 0..ZONES {
        if obs.gaps[zone].0 > 0 && inside(zone, None) {
            out.0 += obs.gaps[zone].0;
            out.1 += obs.gaps[zone].1;
        }
        for (key, (rows, w)) in &obs.keys[zone] {
            if inside(zone, Some(key)) {
                out.0 += rows;
                out.1 += w;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Observes `keys` as one aggregate pass would, with the given windows.
    fn observe(keys: &[Key], windows: [Option<Window>; 2]) -> Observed {
        let mut obs = Observed::default();
        for &k in keys {
            let inside = |w: Option<Window>| w.is_some_and(|(lo, hi)| k.0 >= lo && k.0 <= hi);
            let below = |w: Option<Window>| w.is_some_and(|(lo, _)| k.0 < lo);
            let zone = if below(windows[0]) {
                0
            } else if inside(windows[0]) {
                1
            } else if below(windows[1]) {
                2
            } else if inside(windows[1]) {
                3
            } else {
                4
            };
            obs.add(zone, Some(k), 1, 1.0);
        }
        obs
    }

    fn keys(n: u64, seed: u64) -> Vec<Key> {
        // SplitMix64: uniform keys
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        (0..n).map(|_| (next(), next())).collect()
    }

    #[test]
    fn finds_the_kth_key_as_a_sort_would() {
        for (n, seed) in [(1u64, 1u64), (2, 2), (17, 3), (1000, 4), (100_000, 5)] {
            let ks = keys(n, seed);
            let mut sorted = ks.clone();
            sorted.sort();
            for k in [0, 1, n / 3, n / 2, (n * 4) / 5, n.saturating_sub(1), n] {
                let (k1, k2) = (k, (k + n) / 2);
                let obs = observe(&ks, [window(k1, n), window(k2, n)]);
                let c1 = find(&obs, k1).expect("inside its window");
                let c2 = find(&obs, k2).expect("inside its window");
                for (c, k) in [(c1, k1), (c2, k2)] {
                    match c {
                        Cut::Nothing => assert_eq!(k, 0),
                        Cut::Everything => assert_eq!(k, n),
                        Cut::At {
                            key, before, at, ..
                        } => {
                            assert_eq!(key, sorted[k as usize - 1]);
                            assert_eq!((before, at), (k - 1, 1));
                        }
                    }
                }
                let (below, _) = between(&obs, None, &c1);
                let (mid, _) = between(&obs, Some(&c1), &c2);
                assert_eq!((below, mid), (k1, k2 - k1));
            }
        }
    }

    /// Taking rows out of an observation (zones as the aggregate assigns them) leaves
    /// the observation of the other rows, and so their cut: how pass 1's sample keys lose
    /// the rows that turn out not to be training rows.
    #[test]
    fn removed_rows_leave_the_observation_of_the_rest() {
        let all = keys(5000, 9);
        let windows = [window(1200, 4000), window(3000, 4000)];
        let mut obs = observe(&all, windows);
        let (gone, rest) = all.split_at(1000);
        for &k in gone {
            obs.remove(strata_functions::zone_of(k.0, Some(&windows)), k, 1, 1.0);
        }
        let direct = observe(rest, windows);
        assert_eq!(obs.gaps, direct.gaps);
        assert_eq!(obs.keys, direct.keys);
        let mut sorted = rest.to_vec();
        sorted.sort();
        for k in [1200, 3000] {
            assert!(
                matches!(find(&obs, k), Some(Cut::At { key, .. }) if key == sorted[k as usize - 1]),
                "rank {k}"
            );
        }
    }

    #[test]
    fn a_cut_outside_its_window_is_reported_and_the_full_window_finds_it() {
        let ks = keys(10_000, 9);
        let narrow = Some((0, 1u64 << 40)); // far below where the median lies
        assert_eq!(find(&observe(&ks, [narrow, None]), 5_000), None);
        let mut sorted = ks.clone();
        sorted.sort();
        let cut = find(&observe(&ks, [Some(FULL), None]), 5_000)
            .expect("the full window holds every cut");
        assert_eq!(cut.threshold(), Some(sorted[4_999]));
    }

    #[test]
    fn identical_keys_at_a_cut_stay_together() {
        let mut ks = keys(100, 11);
        ks.sort();
        let dup = ks[49];
        ks.insert(50, dup);
        ks.insert(50, dup); // three rows with the key of rank 50
        let obs = observe(&ks, [Some(FULL), None]);
        let cut = find(&obs, 51).unwrap();
        assert_eq!(
            cut,
            Cut::At {
                key: dup,
                zone: 1,
                before: 49,
                at: 3
            }
        );
        assert_eq!(between(&obs, None, &cut).0, 52);
    }
}
