//! Where a routed row goes: the split's shard layout, and the numbering of routing's units
//! (split, stratum, cell, tie) and of categorical values.

use super::*;

/// Column positions in the stream, shared by the routing tasks, and in the rows they
/// hold: the written columns, the order columns and the weight (where not written),
/// then the row's unit (a `UInt32` number standing for its split, stratum, cell and tie
/// id, which no longer travel with it).
#[derive(Debug)]
pub(super) struct Layout {
    /// The shuffle key (the first order column).
    pub(super) key: usize,
    pub(super) split: usize,
    pub(super) stratum: usize,
    pub(super) cell: usize,
    pub(super) tie: Option<usize>,
    /// Rows stand for their copies, and `key` is made per copy (`SinkColumns::copies`).
    pub(super) copies: Option<CopiesLayout>,
    /// Written columns (no helpers).
    pub(super) keep: Vec<usize>,
    /// Stream columns the routed rows hold, in order: `keep` first (their unit number
    /// follows, at `held.len()`).
    pub(super) held: Vec<usize>,
    pub(super) held_schema: SchemaRef,
    /// Positions in the held rows: the order columns, the weight, and the written
    /// columns named `distinct`.
    pub(super) held_order: Vec<usize>,
    pub(super) held_weight: usize,
    pub(super) held_distinct: Vec<usize>,
    /// Written columns held as numbers into a dictionary (`SinkColumns::categorical`),
    /// by position; the dictionaries are in the same order.
    pub(super) coded: Vec<usize>,
    /// Split names by split index.
    pub(super) split_names: Vec<String>,
    pub(super) ranges: u64,
}

/// Stream positions of `SinkCopies`' helpers.
#[derive(Debug)]
pub(super) struct CopiesLayout {
    pub(super) count: usize,
    pub(super) hashed: Vec<usize>,
    pub(super) seed: u64,
}

/// What rows are counted by while routing: (split, stratum, cell, tie id).
pub(super) type UnitKey = (String, u64, u64, u64);
/// Rows per unit and key range.
pub(super) type Counts = HashMap<UnitKey, BTreeMap<u64, u64>>;
/// A unit as routing sees it: (split index, stratum, cell, tie id).
pub(super) type RouteUnit = (usize, u64, u64, u64);

/// Keys numbered as first met by any routing task, shared by them: the units a routed
/// row stands for, and the values of a categorical column. (The numbering depends on
/// timing; nothing written does.)
#[derive(Debug)]
pub(super) struct Numbering<K> {
    pub(super) ids: HashMap<K, u32>,
    pub(super) keys: Vec<K>,
}

impl<K> Default for Numbering<K> {
    fn default() -> Self {
        Self {
            ids: HashMap::new(),
            keys: Vec::new(),
        }
    }
}

impl<K: std::hash::Hash + Eq + Clone> Numbering<K> {
    pub(super) fn id<Q: std::hash::Hash + Eq + ToOwned<Owned = K> + ?Sized>(
        &mut self,
        key: &Q,
    ) -> Result<u32, PublishError>
    where
        K: std::borrow::Borrow<Q>,
    {
        if let Some(&id) = self.ids.get(key) {
            return Ok(id);
        }
        let id = u32::try_from(self.keys.len()).map_err(|_| PublishError::Data {
            context: "writing shards".into(),
            message: "more than 2^32 keys to number".into(),
            source: None,
        })?;
        self.keys.push(key.to_owned());
        self.ids.insert(key.to_owned(), id);
        Ok(id)
    }
}

/// The (split, stratum, cell, tie) units met while routing: a routed row holds its
/// unit's number.
pub(super) type UnitTable = Numbering<RouteUnit>;
/// The values of one categorical column met while routing.
pub(super) type Dictionary = Numbering<String>;
