//! strata's DataFusion functions: what every session strata builds registers, and what
//! every Ballista executor must register to run strata's plans.
//!
//! | function | kind | what |
//! | --- | --- | --- |
//! | `strata_hash(seed, values…)` | scalar | XXH3-64 over a canonical encoding of the values (`hash`) |
//! | `strata_group_hash(seed, values…)` | scalar | the same value, computed once per distinct tuple |
//! | `strata_if(cond, then, otherwise)` | scalar | `then` where `cond` holds, on whole columns |
//! | `strata_lookup(key, keys, values)` | scalar | a per-key value from a table that travels with the plan |
//! | `strata_cells(weight, keys…)` | aggregate | rows and exact weight sums per distinct key tuple (`cells`) |
//! | `strata_cut_zones(stratum, h1, h2, weight, windows)` | aggregate | rows, weights and window keys per cut zone (`cut_zones`) |
//!
//! Weights are summed exactly (`weights`), so every figure computed from them is the
//! same for any partitioning.

mod cells;
mod cut_zones;
mod hash;
mod if_else;
mod kept;
mod lookup;
mod slots;
mod struct_list;
mod weights;

use datafusion::prelude::SessionContext;

pub use cells::{STRATA_CELLS, strata_cells_udaf};
pub use cut_zones::{
    STRATA_CUT_ZONES, StratumWindows, ZONES, cut_zones, strata_cut_zones_udaf, zone_of,
};
pub use hash::{
    STRATA_GROUP_HASH, STRATA_HASH, derive_seed, hash_copies, strata_group_hash_udf,
    strata_hash_udf, stream,
};
pub use if_else::{STRATA_IF, strata_if_udf};
pub use lookup::{STRATA_LOOKUP, lookup, strata_lookup_udf};
pub use slots::{SlotCache, SlotKey};
pub use struct_list::aggregate_rows;
pub use weights::{MAX_WEIGHT, MIN_POSITIVE_WEIGHT, WEIGHT_SCALE, invalid_weight, usable_weight};

/// Registers every strata function in `ctx` (a session, or an executor's function
/// registry through its session), so plans naming them can be planned and shipped.
pub fn register(ctx: &SessionContext) {
    for udf in scalar_functions() {
        ctx.register_udf(udf);
    }
    for udaf in aggregate_functions() {
        ctx.register_udaf(udaf);
    }
}

/// strata's scalar functions, for registries other than a session's (a Ballista
/// executor's).
pub fn scalar_functions() -> Vec<datafusion::logical_expr::ScalarUDF> {
    vec![
        strata_hash_udf(),
        strata_group_hash_udf(),
        strata_if_udf(),
        strata_lookup_udf(),
    ]
}

/// strata's aggregate functions, for registries other than a session's.
pub fn aggregate_functions() -> Vec<datafusion::logical_expr::AggregateUDF> {
    vec![strata_cells_udaf(), strata_cut_zones_udaf()]
}
