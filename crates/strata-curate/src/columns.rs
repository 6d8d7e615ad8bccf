//! The helper columns curation's plans add to the source's, by the pass that makes them.
//! They start with `__` and are never written: the shard writer takes the source's
//! columns plus `sample_weight` and `split`. A source column of one of these names would
//! be shadowed, so the names are reserved (see `curate`'s check of the schema).

// --- keyed rows (every pass): hashes of the row key and the cell ids; see
//     `strata_functions::hash` for the streams ---
/// `strata_hash(SPLIT stream, key)`: orders a cell's rows for the split.
pub(crate) const H_SPLIT: &str = "__h_split";
/// `strata_hash(SAMPLE stream, key)`: orders a stratum's rows for resampling.
pub(crate) const H_SAMPLE: &str = "__h_sample";
/// The row's group id (its protected attributes).
pub(crate) const GROUP: &str = "__grp";
/// The row's cell id (attributes and label).
pub(crate) const CELL: &str = "__cell";
/// The row's weight as a float (1 without a weight column).
pub(crate) const WEIGHT: &str = "__w";

// --- pass 0: one row per cell ---
/// A cell's id, hashed once per cell from its values.
pub(crate) const CELL_ID: &str = "__cr_cell";
/// A cell's group id, hashed once per cell.
pub(crate) const CELL_GROUP: &str = "__cr_grp";
/// Rows of a cell.
pub(crate) const CELL_ROWS: &str = "__cell_rows";
/// Rows of a cell with a non-null id.
pub(crate) const CELL_IDS: &str = "__ids";

// --- the cut passes: the stratum and the two keys `strata_cut_zones` orders by ---
pub(crate) const STRATUM: &str = "__stratum";
pub(crate) const KEY1: &str = "__h1";
pub(crate) const KEY2: &str = "__h2";

// --- pass 2: the curated rows ---
/// The row's split: 0 train, 1 validation, 2 test.
pub(crate) const SPLIT: &str = "__split";
/// Copies a resampled row gets, and each copy's number.
pub(crate) const COPIES: &str = "__copies";
pub(crate) const COPY: &str = "__copy";
/// Which of a resampled stratum's tied rows (equal hashes) a copy is, where the sample
/// cut falls among them.
pub(crate) const TIE: &str = "__tie";
/// The shuffle key, `strata_hash(SHUFFLE stream, sample hash, split hash, copy)`: the
/// shard writer's order.
pub(crate) const SHUFFLE_KEY: &str = "__u";
/// A cell's reweighing factor.
pub(crate) const FACTOR: &str = "__factor";

/// Every helper name curation's plans use, these and the ones local to one expression:
/// a source column of one of these names is refused.
pub(crate) const ALL: &[&str] = &[
    H_SPLIT,
    H_SAMPLE,
    GROUP,
    CELL,
    WEIGHT,
    CELL_ID,
    CELL_GROUP,
    CELL_ROWS,
    CELL_IDS,
    STRATUM,
    KEY1,
    KEY2,
    SPLIT,
    COPIES,
    COPY,
    TIE,
    SHUFFLE_KEY,
    FACTOR,
    "__stratum_b",
    "__top",
    "__t1a",
    "__t1b",
    "__t2a",
    "__t2b",
    "__ra",
    "__rb",
    "__q",
    "__n",
    "__k",
    "__tie_a",
    "__tie_b",
    "__tie_id",
    "__unit",
];
