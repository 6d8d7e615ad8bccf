//! Tuples of column codes → dense tuple ids, in the order first seen: a directly
//! indexed table while the packed codes are few bits, hashed folds past that.

use super::*;

/// Bits of a packed tuple index past which tuples are hashed instead (a dense index of
/// 2^16 entries is 256 KiB).
pub(crate) const DENSE_BITS: u32 = 16;

/// Tuples of column codes → dense tuple ids (0-based, in the order first seen).
///
/// While the columns' codes fit [`DENSE_BITS`] bits side by side, a tuple's packed codes
/// index a table directly; the packing widens (and the table is rebuilt) as columns
/// gain values. Past that, up to four codes make one 128-bit hashed key, and a longer
/// tuple is folded four columns at a time, each fold's id starting the next.
#[derive(Debug)]
pub(crate) struct TupleCodes {
    pub(crate) width: usize,
    /// Bits per column of the packed index; empty once tuples are hashed.
    pub(crate) bits: Vec<u32>,
    /// Packed codes → tuple id + 1 (0: not seen).
    pub(crate) dense: Vec<u32>,
    /// One table per fold, when hashed.
    pub(crate) folds: Vec<CodeTable>,
    /// Tuple id → its column codes (`width` each).
    pub(crate) keys: Vec<u32>,
    pub(crate) len: usize,
    pub(crate) packed: Vec<u32>,
}

impl TupleCodes {
    pub(crate) fn new(width: usize) -> Self {
        let bits = vec![1; width];
        let dense = if width as u32 <= DENSE_BITS {
            vec![0; 1 << width]
        } else {
            Vec::new()
        };
        let mut t = Self {
            width,
            bits,
            dense,
            folds: Vec::new(),
            keys: Vec::new(),
            len: 0,
            packed: Vec::new(),
        };
        if t.dense.is_empty() {
            t.switch_to_hashing();
        }
        t
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn size(&self) -> usize {
        self.folds
            .iter()
            .map(|f| f.slots.capacity() * size_of::<(Fingerprint, u32)>())
            .sum::<usize>()
            + (self.keys.capacity() + self.dense.capacity() + self.packed.capacity()) * 4
    }

    pub(crate) fn key(&self, tuple: usize) -> &[u32] {
        &self.keys[tuple * self.width..(tuple + 1) * self.width]
    }

    pub(crate) fn pack(&self, key: &[u32]) -> usize {
        let mut at = 0;
        let mut packed = 0usize;
        for (c, b) in key.iter().zip(&self.bits) {
            packed |= (*c as usize) << at;
            at += b;
        }
        packed
    }

    /// Switches from the dense index to hashed folds, keeping every tuple's id.
    pub(crate) fn switch_to_hashing(&mut self) {
        self.bits.clear();
        self.dense = Vec::new();
        let folds = if self.width <= 4 {
            1
        } else {
            1 + (self.width - 4).div_ceil(3)
        };
        self.folds = (0..folds).map(|_| CodeTable::default()).collect();
        let keys = std::mem::take(&mut self.keys);
        let len = std::mem::replace(&mut self.len, 0);
        let mut out = Vec::new();
        let columns: Vec<Vec<u32>> = (0..self.width)
            .map(|c| (0..len).map(|t| keys[t * self.width + c]).collect())
            .collect();
        self.code_hashed(&columns, &mut out);
        debug_assert_eq!(out, (0..len as u32).collect::<Vec<_>>());
    }

    /// Makes the packed index wide enough for codes up to `max` per column, or gives
    /// it up for hashing.
    pub(crate) fn fit(&mut self, max: &[u32]) {
        if self.bits.is_empty() || max.iter().zip(&self.bits).all(|(m, b)| *m < 1 << b) {
            return;
        }
        for (m, b) in max.iter().zip(self.bits.iter_mut()) {
            *b = (*b).max(32 - m.leading_zeros()).max(1);
        }
        if self.bits.iter().sum::<u32>() > DENSE_BITS {
            return self.switch_to_hashing();
        }
        self.dense = vec![0; 1 << self.bits.iter().sum::<u32>()];
        for t in 0..self.len {
            let at = self.pack(self.key(t));
            self.dense[at] = t as u32 + 1;
        }
    }

    /// Writes the tuple id of each of `rows` rows to `out`. Per column, `codes` holds
    /// every row's code, or, where `by_key` gives the rows' dictionary keys, the code of
    /// each key (a lookup table, shifted in place here); each code is at most that
    /// column's `max`.
    pub(crate) fn code(
        &mut self,
        codes: &mut [Vec<u32>],
        by_key: &[Option<&[i32]>],
        max: &[u32],
        rows: usize,
        out: &mut Vec<u32>,
    ) {
        out.clear();
        self.fit(max);
        if self.bits.is_empty() {
            // hashed tuples take every row's codes
            for (codes, keys) in codes.iter_mut().zip(by_key) {
                if let Some(keys) = keys {
                    let table = std::mem::take(codes);
                    codes.extend(keys.iter().map(|&k| table[k as usize]));
                }
            }
            return self.code_hashed(codes, out);
        }
        // packed indices column by column, then one lookup per row
        self.packed.clear();
        self.packed.resize(rows, 0);
        let mut at = 0;
        for ((c, keys), b) in codes.iter_mut().zip(by_key).zip(&self.bits) {
            match keys {
                Some(keys) => {
                    c.iter_mut().for_each(|code| *code <<= at);
                    // a plain slice, so the loop does not reload the vector's header
                    let table: &[u32] = c;
                    for (p, &k) in self.packed.iter_mut().zip(keys.iter()) {
                        *p |= table[k as usize];
                    }
                }
                None => {
                    for (p, &code) in self.packed.iter_mut().zip(c.iter()) {
                        *p |= code << at;
                    }
                }
            }
            at += b;
        }
        self.ids_of_packed(out);
    }

    /// Writes the tuple id of every packed index in `self.packed` to `out`.
    pub(crate) fn ids_of_packed(&mut self, out: &mut Vec<u32>) {
        let n = self.packed.len();
        out.resize(n, 0);
        let mut r = 0;
        while r < n {
            // rows of known tuples through plain slices (no header reloads, no pushes),
            // up to the next new tuple
            let (packed, dense) = (&self.packed[..], &self.dense[..]);
            for (o, &p) in out[r..].iter_mut().zip(&packed[r..]) {
                match dense[p as usize] {
                    0 => break,
                    id => *o = id - 1,
                }
                r += 1;
            }
            if r < n {
                out[r] = self.new_packed(self.packed[r] as usize) - 1;
                r += 1;
            }
        }
    }

    /// Adds the tuple at a packed index, unpacking its codes; returns its id + 1.
    #[cold]
    pub(crate) fn new_packed(&mut self, slot: usize) -> u32 {
        let mut at = 0;
        for b in &self.bits {
            self.keys.push((slot >> at) as u32 & ((1 << b) - 1));
            at += b;
        }
        self.len += 1;
        self.dense[slot] = self.len as u32;
        self.len as u32
    }

    pub(crate) fn code_hashed(&mut self, codes: &[Vec<u32>], out: &mut Vec<u32>) {
        let n = codes.first().map_or(0, Vec::len);
        let last_fold = self.folds.len() - 1;
        for r in 0..n {
            // each fold keys on the previous fold's id and the next columns' codes
            let (mut id, mut col) = (0u32, 0usize);
            for f in 0..=last_fold {
                let mut key: Fingerprint = 0;
                let mut part = 0;
                if f > 0 {
                    key = id as u128;
                    part = 1;
                }
                while part < 4 && col < self.width {
                    key |= (codes[col][r] as u128) << (32 * part);
                    part += 1;
                    col += 1;
                }
                id = match self.folds[f].get(key) {
                    Some(id) => id,
                    None => {
                        let id = if f == last_fold {
                            self.keys.extend(codes.iter().map(|c| c[r]));
                            self.len += 1;
                            self.len as u32
                        } else {
                            self.folds[f].len as u32 + 1
                        };
                        self.folds[f].insert(key, id);
                        id
                    }
                };
            }
            out.push(id - 1);
        }
    }
}
