//! A direct-mapped cache in front of a map, for per-row lookups of a few hundred keys.
//!
//! Routing numbers every row's (split, stratum, cell, tie) unit and its categorical
//! strings (by their 16-byte views). Rows arrive in file order, where strata interleave
//! row by row, so remembering only the last key misses on nearly every row, and a hash
//! map probe per row was once the largest cost of the writer's per-row loops. The keys
//! are few (strata × splits, a column's categories) and their ids are already uniform
//! hashes or short values, so one multiply picks a slot, and a hit costs one compare.

/// Slots of the cache: room for a few hundred units with few collisions.
const SLOT_BITS: u32 = 10;

/// A key the cache can place: its ids are 64-bit hashes or small integers.
pub(crate) trait Slotted: Copy + Eq {
    /// Bits that differ between keys, mixed into a slot by [`UnitCache`].
    fn bits(&self) -> u64;
}

/// A string's 16-byte view (values of up to 12 bytes are inline, so the view is the value).
impl Slotted for u128 {
    fn bits(&self) -> u64 {
        (*self as u64) ^ (*self >> 64) as u64
    }
}

impl Slotted for (usize, u64, u64, u64) {
    fn bits(&self) -> u64 {
        (self.0 as u64) ^ self.1 ^ self.2.rotate_left(21) ^ self.3.rotate_left(42)
    }
}

/// Values of recently looked-up keys, each in the slot its key hashes to.
#[derive(Debug)]
pub(crate) struct UnitCache<K, V> {
    slots: Vec<Option<(K, V)>>,
}

impl<K: Slotted, V: Copy> UnitCache<K, V> {
    pub(crate) fn new() -> Self {
        Self {
            slots: vec![None; 1 << SLOT_BITS],
        }
    }

    /// The value of `key`: from the cache, else from `lookup` (then cached). A failed
    /// lookup is not cached.
    #[inline]
    pub(crate) fn get<E>(
        &mut self,
        key: K,
        lookup: impl FnOnce(&K) -> Result<V, E>,
    ) -> Result<V, E> {
        let slot = (key.bits().wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - SLOT_BITS)) as usize;
        match self.slots[slot] {
            Some((k, v)) if k == key => Ok(v),
            _ => {
                let v = lookup(&key)?;
                self.slots[slot] = Some((key, v));
                Ok(v)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Whatever collides, every lookup returns the map's value; with fewer keys than
    /// slots, most lookups are served by the cache.
    #[test]
    fn cache_returns_the_maps_values() {
        for n in [300u64, 3000] {
            let keys: Vec<(usize, u64, u64, u64)> = (0..n)
                .map(|i| {
                    (
                        (i % 3) as usize,
                        i.wrapping_mul(0x2545_F491_4F6C_DD1D),
                        i / 7,
                        i % 2,
                    )
                })
                .collect();
            let map: HashMap<_, u32> = keys
                .iter()
                .enumerate()
                .map(|(i, k)| (*k, i as u32))
                .collect();
            let mut cache = UnitCache::new();
            let (mut asked, mut lookups) = (0, 0);
            for _ in 0..3 {
                for k in keys.iter().rev().chain(keys.iter()) {
                    lookups += 1;
                    let got = cache.get(*k, |k| {
                        asked += 1;
                        Ok::<_, ()>(map[k])
                    });
                    assert_eq!(got, Ok(map[k]), "{n} keys");
                }
            }
            assert!(
                asked >= keys.len(),
                "{n} keys: every key is looked up once at least"
            );
            if n < 1 << SLOT_BITS {
                assert!(
                    asked * 3 < lookups,
                    "{n} keys: the map was asked {asked} times of {lookups}"
                );
            }
        }
        let mut cache = UnitCache::new();
        let failed: Result<u32, &str> = cache.get((9, 9, 9, 0), |_| Err("missing"));
        assert_eq!(failed, Err("missing"));
        assert_eq!(cache.get((9, 9, 9, 0), |_| Ok::<_, &str>(5)), Ok(5));
    }
}
