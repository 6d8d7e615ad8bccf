//! Cut passes: the rows at given ranks of each stratum, found by counting around
//! hash windows (`crate::cut`), never by sorting.

use super::*;

/// Per stratum: what one pass saw and the cuts at the given ranks. `targets` maps a
/// stratum to its rows and ranks (at most two); `rows` yields `__stratum`, `__h1` (the
/// primary key), `__h2` and `__w`. Strata whose cut fell outside its window are looked
/// at again over the whole key space. Also returns the count of unusable weights.
pub(super) async fn find_cuts<F, Fut>(
    rows: F,
    targets: &BTreeMap<u64, (u64, Vec<u64>)>,
    paths: CutPaths,
    what: &str,
) -> Result<(Found, u64), CurateError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = datafusion::error::Result<DataFrame>>,
{
    let mut windows = windows_of(targets);
    if paths == CutPaths::FullWindow {
        // no window at first: every cut inside a stratum misses, as about one in 10⁹
        // does, and is found again over the whole key space
        windows.values_mut().for_each(|w| *w = [None, None]);
    }
    for _ in 0..2 {
        let df = rows().await.map_err(df_err(what))?;
        let (observed, bad) = observe(df, &windows, what).await?;
        let (out, missed) = cuts_at(&observed, targets);
        if missed.is_empty() {
            return Ok((out, bad));
        }
        tracing::info!(
            strata = missed.len(),
            "{what}: a cut fell outside its window; looking again over the whole key space"
        );
        for s in missed {
            windows.insert(s, [Some(cut::FULL), None]);
        }
    }
    Err(CurateError::SourceChanged {
        pass: what.to_string(),
    })
}

/// The ways to the cuts (`STRATA_CUT_PATHS`, for tests): by default exact resampling
/// finds its sample cuts in the split's pass when it can; `separate` always runs pass
/// 1b; `full-window` starts every cut pass without windows, so the cuts are found by
/// the retry over the whole key space. Every way gives the same cuts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) enum CutPaths {
    #[default]
    Merged,
    Separate,
    FullWindow,
}

/// Per stratum: what a pass observed and the cuts found in it.
pub(super) type Found = BTreeMap<u64, (Observed, Vec<Cut>)>;

/// Each target's observation and its cuts at the target's ranks, and the targets with a
/// cut outside its window.
pub(super) fn cuts_at(
    observed: &HashMap<u64, Observed>,
    targets: &BTreeMap<u64, (u64, Vec<u64>)>,
) -> (Found, Vec<u64>) {
    let mut out = BTreeMap::new();
    let mut missed = Vec::new();
    for (s, (_, ks)) in targets {
        let obs = observed.get(s).cloned().unwrap_or_default();
        match ks
            .iter()
            .map(|&k| cut::find(&obs, k))
            .collect::<Option<Vec<Cut>>>()
        {
            Some(cuts) => {
                out.insert(*s, (obs, cuts));
            }
            None => missed.push(*s),
        }
    }
    (out, missed)
}

/// One `strata_cut_zones` aggregate (strata_functions::strata_cut_zones_udaf) of the named
/// columns and `__w`, the windows travelling as its literal.
pub(super) fn zones(
    stratum: &str,
    h1: &str,
    h2: &str,
    windows: &BTreeMap<u64, [Option<Window>; 2]>,
) -> Expr {
    let windows: Vec<strata_functions::StratumWindows> =
        windows.iter().map(|(s, w)| (*s, *w)).collect();
    strata_functions::cut_zones(
        ident(stratum),
        ident(h1),
        ident(h2),
        ident(col::WEIGHT),
        &windows,
    )
}

/// Each target's windows: around each of its ranks, where the row of that rank almost
/// surely lies.
pub(super) fn windows_of(
    targets: &BTreeMap<u64, (u64, Vec<u64>)>,
) -> BTreeMap<u64, [Option<Window>; 2]> {
    targets
        .iter()
        .map(|(s, (n, ks))| {
            (
                *s,
                [
                    ks.first().and_then(|&k| cut::window(k, *n)),
                    ks.get(1).and_then(|&k| cut::window(k, *n)),
                ],
            )
        })
        .collect()
}

/// Exact resampling's cuts: per stratum of n training rows and k planned, rank k mod n.
pub(super) fn sample_targets(
    strata_plan: &BTreeMap<u64, (u64, u64)>,
) -> BTreeMap<u64, (u64, Vec<u64>)> {
    strata_plan
        .iter()
        .filter(|(_, (_, n))| *n > 0)
        .map(|(s, (k, n))| (*s, (*n, vec![k % n])))
        .collect()
}

/// One aggregate pass: per stratum, rows and weights per zone, keys inside windows.
pub(super) async fn observe(
    rows: DataFrame,
    windows: &BTreeMap<u64, [Option<Window>; 2]>,
    what: &str,
) -> Result<(HashMap<u64, Observed>, u64), CurateError> {
    let zones = zones(col::STRATUM, col::KEY1, col::KEY2, windows);
    let batches = rows
        .aggregate(vec![], vec![zones.alias("zones")])
        .map_err(df_err(what))?
        .collect()
        .await
        .map_err(df_err(what))?;
    read_zones(&batches, "zones", what)
}

/// What a `strata_cut_zones` aggregate named `name` saw, and its unusable weights.
pub(super) fn read_zones(
    batches: &[RecordBatch],
    name: &str,
    what: &str,
) -> Result<(HashMap<u64, Observed>, u64), CurateError> {
    let batches: Vec<RecordBatch> = batches
        .iter()
        .map(|b| {
            b.project(&[b
                .schema()
                .index_of(name)
                .expect("an aggregate of that name")])
        })
        .collect::<Result<_, _>>()
        .map_err(|e| df_err(what)(e.into()))?;
    let mut out: HashMap<u64, Observed> = HashMap::new();
    let mut bad = 0u64;
    for part in strata_functions::aggregate_rows(&batches).map_err(df_err(what))? {
        let col = |name: &str| part.column_by_name(name).expect("a zones column");
        let stratum = col("stratum").as_primitive::<UInt64Type>();
        let zone = col("zone").as_primitive::<datafusion::arrow::datatypes::UInt8Type>();
        let (k1, k2) = (
            col("k1").as_primitive::<UInt64Type>(),
            col("k2").as_primitive::<UInt64Type>(),
        );
        let rows = col("rows").as_primitive::<Int64Type>();
        let w = decimal_sums(col("w"));
        let bad_col = col("bad").as_primitive::<Int64Type>();
        for (r, &weight) in w.iter().enumerate() {
            out.entry(stratum.value(r)).or_default().add(
                zone.value(r) as usize,
                Some((k1.value(r), k2.value(r))),
                rows.value(r) as u64,
                weight,
            );
            bad += bad_col.value(r) as u64;
        }
    }
    Ok((out, bad))
}
