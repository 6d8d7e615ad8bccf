//! The per-cell table every pass after the split attaches to its rows by cell id.

use super::*;

/// `(a, b) <= (ta, tb)` in lexicographic order; null (no row is below) when `ta` is null.
///
/// Written as `strata_if(a = ta, b <= tb, a < ta)`, not `a < ta OR (a = ta AND b <= tb)`:
/// DataFusion evaluates the right side of an `OR` whose left side is mostly true on a
/// filtered copy of the whole batch, every column of it (5% of curation's time).
pub(super) fn at_or_below(a: &str, b: &str, ta: &str, tb: &str) -> Expr {
    strata_if_udf().call(vec![
        ident(a).eq(ident(ta)),
        ident(b).lt_eq(ident(tb)),
        ident(a).lt(ident(ta)),
    ])
}

/// Exact resampling of one stratum.
#[derive(Debug, Clone, Copy)]
pub(super) struct SampleCut {
    /// Copies every training row gets.
    pub(super) copies: u64,
    /// The key at or below which a row gets one more.
    pub(super) cut: Option<Key>,
    /// Identical rows straddling that cut: their trim id and key.
    pub(super) tie: Option<(u64, Key)>,
}

/// What later passes need of a cell, joined to its rows by cell id.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct CellRow {
    pub(super) cell: u64,
    /// Keys (split hash, sample hash) of the train and validation cuts.
    pub(super) split: [Option<Key>; 2],
    /// Kamiran–Calders factor of the cell's training rows.
    pub(super) factor: Option<f64>,
    /// Exact resampling: copies of every training row, plus one at or below `sample`.
    pub(super) copies: u64,
    pub(super) sample: Option<Key>,
    /// Identical rows straddling the sample cut: their trim id and key.
    pub(super) tie: Option<(u64, Key)>,
    /// The stratum's planned and available training rows (Bernoulli resampling).
    pub(super) planned: u64,
    pub(super) available: u64,
}

/// What later passes need of every cell, attached to each row by its cell id
/// (`strata_functions::lookup`): the cell ids, and per column one value per cell.
#[derive(Clone)]
pub(super) struct CellTable {
    pub(super) keys: Vec<u64>,
    pub(super) columns: Vec<(&'static str, ArrayRef)>,
}

pub(super) fn cell_table<'a>(rows: impl Iterator<Item = &'a CellRow>) -> CellTable {
    let rows: Vec<&CellRow> = rows.collect();
    let u64s = |name, f: &dyn Fn(&CellRow) -> Option<u64>| {
        (
            name,
            Arc::new(UInt64Array::from(
                rows.iter().map(|r| f(r)).collect::<Vec<_>>(),
            )) as ArrayRef,
        )
    };
    let i64s = |name, f: &dyn Fn(&CellRow) -> i64| {
        (
            name,
            Arc::new(Int64Array::from(
                rows.iter().map(|r| f(r)).collect::<Vec<_>>(),
            )) as ArrayRef,
        )
    };
    let columns = vec![
        u64s("__t1a", &|r| r.split[0].map(|k| k.0)),
        u64s("__t1b", &|r| r.split[0].map(|k| k.1)),
        u64s("__t2a", &|r| r.split[1].map(|k| k.0)),
        u64s("__t2b", &|r| r.split[1].map(|k| k.1)),
        (
            col::FACTOR,
            Arc::new(Float64Array::from(
                rows.iter().map(|r| r.factor).collect::<Vec<_>>(),
            )) as ArrayRef,
        ),
        i64s("__q", &|r| r.copies as i64),
        u64s("__ra", &|r| r.sample.map(|k| k.0)),
        u64s("__rb", &|r| r.sample.map(|k| k.1)),
        u64s("__tie_id", &|r| r.tie.map(|t| t.0)),
        u64s("__tie_a", &|r| r.tie.map(|t| t.1.0)),
        u64s("__tie_b", &|r| r.tie.map(|t| t.1.1)),
        i64s("__k", &|r| r.planned as i64),
        i64s("__n", &|r| r.available as i64),
    ];
    CellTable {
        keys: rows.iter().map(|r| r.cell).collect(),
        columns,
    }
}
