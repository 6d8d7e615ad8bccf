//! A direct-mapped cache in front of a map: the one fast table strata's per-row loops
//! use (the cell coder's values, the cut-zone aggregate's strata, the shard writer's
//! units and categories).
//!
//! Rows arrive in file order, where strata and categories interleave row by row, so
//! remembering only the last key misses on nearly every row, and a hash map probe per
//! row was once the largest cost of those loops. Their keys are few (strata × splits, a
//! column's categories) and already uniform hashes or short values, so one multiply
//! picks a slot and a hit costs one compare. Slots are a fixed-size array, so indexing
//! by a slot needs no bounds check.

/// A key a [`SlotCache`] can place.
pub trait SlotKey: Copy + Eq {
    /// A value no real key ever takes: it marks an empty slot. A key equal to it is
    /// never served from the cache (see [`SlotCache::get`]).
    const EMPTY: Self;
    /// Bits that differ between keys, mixed into a slot.
    fn bits(&self) -> u64;
}

impl SlotKey for u64 {
    const EMPTY: Self = u64::MAX;
    fn bits(&self) -> u64 {
        *self
    }
}

/// A 16-byte fingerprint or string view: its top value has a length no value has.
impl SlotKey for u128 {
    const EMPTY: Self = u128::MAX;
    fn bits(&self) -> u64 {
        (*self as u64) ^ (*self >> 64) as u64
    }
}

/// (split, stratum, cell, tie): no split has index `usize::MAX`.
impl SlotKey for (usize, u64, u64, u64) {
    const EMPTY: Self = (usize::MAX, 0, 0, 0);
    fn bits(&self) -> u64 {
        (self.0 as u64) ^ self.1 ^ self.2.rotate_left(21) ^ self.3.rotate_left(42)
    }
}

/// Values of recently looked-up keys, each in the one slot its key hashes to; `SLOTS`
/// is a power of two.
#[derive(Debug, Clone)]
pub struct SlotCache<K, V, const SLOTS: usize> {
    slots: Box<[(K, V); SLOTS]>,
}

impl<K: SlotKey, V: Copy + Default, const SLOTS: usize> Default for SlotCache<K, V, SLOTS> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: SlotKey, V: Copy + Default, const SLOTS: usize> SlotCache<K, V, SLOTS> {
    const SHIFT: u32 = {
        assert!(
            SLOTS.is_power_of_two() && SLOTS > 1,
            "slots: a power of two"
        );
        64 - SLOTS.trailing_zeros()
    };

    pub fn new() -> Self {
        Self {
            slots: Box::new([(K::EMPTY, V::default()); SLOTS]),
        }
    }

    #[inline(always)]
    fn slot(key: &K) -> usize {
        (key.bits().wrapping_mul(0x9E37_79B9_7F4A_7C15) >> Self::SHIFT) as usize
    }

    /// The cached value of `key`, if its slot holds it. `key` must not be
    /// [`SlotKey::EMPTY`] (callers whose keys can take it use [`Self::get`]).
    #[inline(always)]
    pub fn peek(&self, key: K) -> Option<V> {
        let (k, v) = self.slots[Self::slot(&key)];
        (k == key).then_some(v)
    }

    /// Remembers `key`'s value, replacing whatever shared its slot.
    #[inline]
    pub fn put(&mut self, key: K, value: V) {
        if key != K::EMPTY {
            self.slots[Self::slot(&key)] = (key, value);
        }
    }

    /// The value of `key`: from the cache, else from `lookup` (then cached). A failed
    /// lookup is not cached; [`SlotKey::EMPTY`] always goes to `lookup`.
    #[inline]
    pub fn get<E>(&mut self, key: K, lookup: impl FnOnce(&K) -> Result<V, E>) -> Result<V, E> {
        if key != K::EMPTY
            && let Some(v) = self.peek(key)
        {
            return Ok(v);
        }
        let v = lookup(&key)?;
        self.put(key, v);
        Ok(v)
    }

    /// Bytes the slots take.
    pub fn size(&self) -> usize {
        SLOTS * size_of::<(K, V)>()
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
            let mut cache = SlotCache::<_, u32, 1024>::new();
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
            if n < 1024 {
                assert!(
                    asked * 3 < lookups,
                    "{n} keys: the map was asked {asked} times of {lookups}"
                );
            }
        }
        let mut cache = SlotCache::<(usize, u64, u64, u64), u32, 1024>::new();
        let failed: Result<u32, &str> = cache.get((9, 9, 9, 0), |_| Err("missing"));
        assert_eq!(failed, Err("missing"));
        assert_eq!(cache.get((9, 9, 9, 0), |_| Ok::<_, &str>(5)), Ok(5));
        assert_eq!(cache.peek((9, 9, 9, 0)), Some(5));
    }

    /// The empty marker is a key like any other to `get`: never a stale hit.
    #[test]
    fn the_empty_marker_is_never_served_from_the_cache() {
        let mut cache = SlotCache::<u64, u32, 256>::new();
        let mut asked = 0;
        for _ in 0..3 {
            let v = cache.get(u64::MAX, |_| {
                asked += 1;
                Ok::<_, ()>(7)
            });
            assert_eq!(v, Ok(7));
        }
        assert_eq!(asked, 3);
        assert_eq!(cache.peek(5), None);
    }
}
