//! What the passes after pass 0 share: the session, the source rows with their keys
//! (hashes for the split, the sample, the cell and the group), the per-cell table
//! attached to them, and the shape of the curation (docs/curation.md, "How it runs").

use super::*;

/// The curation's passes over the source, and what they have in common.
pub(super) struct Passes<'a> {
    pub(super) engine: &'a Engine,
    pub(super) pipeline: &'a Pipeline,
    pub(super) source: &'a SourceTable,
    pub(super) spec: &'a strata_spec::Curate,
    pub(super) seed: u64,
    /// The source's columns and the keys (`col::H_SPLIT`, `H_SAMPLE`, `GROUP`, `CELL`,
    /// `WEIGHT`).
    keyed_cols: Vec<Expr>,
    /// The source's columns alone.
    pub(super) source_cols: Vec<Expr>,
    pub(super) resample: bool,
    /// Exact (not Bernoulli) resampling.
    pub(super) exact: bool,
    pub(super) reweigh_after: bool,
    /// Resampling stratifies by group × label (else by group alone).
    pub(super) stratify_label: bool,
    pub(super) paths: CutPaths,
}

impl<'a> Passes<'a> {
    pub(super) fn new(
        engine: &'a Engine,
        pipeline: &'a Pipeline,
        source: &'a SourceTable,
        spec: &'a strata_spec::Curate,
        seed: u64,
        paths: CutPaths,
    ) -> Self {
        let hash = |stream: u64, cols: &[Expr]| seeded_hash(seed, stream, cols);
        // the same hash for columns of few values, computed once per distinct tuple
        let group_hash = strata_functions::strata_group_hash_udf();
        let group_call = |stream: u64, cols: &[Expr]| {
            let mut args = vec![lit(derive_seed(seed, stream))];
            args.extend(cols.iter().cloned());
            group_hash.call(args)
        };
        let source_cols: Vec<Expr> = source
            .schema
            .fields()
            .iter()
            .map(|f| ident(f.name()))
            .collect();
        let key_cols: Vec<Expr> = match &pipeline.source.id_column {
            Some(id) => vec![ident(id)],
            None => source_cols.clone(),
        };
        let attr_cols: Vec<Expr> = pipeline.groups.attributes.iter().map(ident).collect();
        let cell_cols: Vec<Expr> = pipeline.cell_columns().iter().map(ident).collect();
        let weight = match &pipeline.source.weight_column {
            Some(w) => cast(ident(w), DataType::Float64),
            None => lit(1.0f64),
        };
        let mut keyed_cols = source_cols.clone();
        keyed_cols.extend([
            hash(stream::SPLIT, &key_cols).alias(col::H_SPLIT),
            hash(stream::SAMPLE, &key_cols).alias(col::H_SAMPLE),
            group_call(stream::GROUP, &attr_cols).alias(col::GROUP),
            group_call(stream::CELL, &cell_cols).alias(col::CELL),
            weight.alias(col::WEIGHT),
        ]);
        let resample = matches!(spec.strategy, Strategy::Resample);
        let stratify_label = match (&spec.resample, spec.strategy) {
            (Some(r), Strategy::Resample) => r.stratify == Stratify::GroupsLabel,
            _ => true,
        };
        let (exact, reweigh_after) = spec
            .resample
            .as_ref()
            .map_or((true, false), |r| (r.exact, r.reweigh_after));
        Self {
            engine,
            pipeline,
            source,
            spec,
            seed,
            keyed_cols,
            source_cols,
            resample,
            exact,
            reweigh_after,
            stratify_label,
            paths,
        }
    }

    pub(super) fn ctx(&self) -> &SessionContext {
        self.engine.context()
    }

    /// Shard strata are the curation's strata: (group, label) cells, or groups when
    /// resampling by group only.
    pub(super) fn group_strata(&self) -> bool {
        self.resample && !self.stratify_label
    }

    /// The column holding each row's stratum.
    pub(super) fn stratum_col(&self) -> &'static str {
        if self.group_strata() {
            col::GROUP
        } else {
            col::CELL
        }
    }

    pub(super) fn stratum_of(&self, c: &Cell) -> u64 {
        if self.group_strata() {
            c.group_id
        } else {
            c.cell_id
        }
    }

    /// Stratum → (rows planned, training rows) of exact resampling.
    pub(super) fn strata_plan(
        &self,
        cells: &BTreeMap<(GroupKey, LabelKey), Cell>,
        plans: &BTreeMap<(GroupKey, LabelKey), Planned>,
    ) -> BTreeMap<u64, (u64, u64)> {
        let mut strata_plan: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
        for (k, c) in cells {
            let p = plans.get(k).copied().unwrap_or_default();
            strata_plan.insert(self.stratum_of(c), (p.planned, p.available));
        }
        strata_plan
    }

    /// The source rows with their keys, read from `rows`.
    pub(super) async fn keyed(&self, rows: Rows) -> datafusion::error::Result<DataFrame> {
        self.ctx()
            .table(rows.table())
            .await?
            .select(self.keyed_cols.clone())
    }

    /// The keyed rows with the cell table's columns and their split, as an index into
    /// SPLITS (choices by `strata_if`, not CASE: see strata_functions::strata_if_udf).
    pub(super) async fn joined(
        &self,
        rows: Rows,
        table: CellTable,
    ) -> datafusion::error::Result<DataFrame> {
        let df = self.keyed(rows).await?;
        let mut columns: Vec<Expr> = df
            .schema()
            .columns()
            .into_iter()
            .map(Expr::Column)
            .collect();
        columns.extend(
            table
                .columns
                .into_iter()
                .map(|(name, values)| lookup(ident(col::CELL), &table.keys, values).alias(name)),
        );
        df.select(columns)?.with_column(
            col::SPLIT,
            pick(
                at_or_below(col::H_SPLIT, col::H_SAMPLE, "__t1a", "__t1b"),
                lit(0u8),
                pick(
                    at_or_below(col::H_SPLIT, col::H_SAMPLE, "__t2a", "__t2b"),
                    lit(1u8),
                    lit(2u8),
                ),
            ),
        )
    }

    /// The curated rows: the joined rows with their copies (`col::COPIES`, one row per
    /// copy numbered `col::COPY` when some are replicated) and trimmed ties marked.
    pub(super) async fn output(
        &self,
        rows: Rows,
        table: CellTable,
        replicate: bool,
    ) -> datafusion::error::Result<DataFrame> {
        let mut df = self.joined(rows, table).await?;
        let copies = if !self.resample {
            lit(1i64)
        } else if self.exact {
            let extra = pick(
                at_or_below(col::H_SAMPLE, col::H_SPLIT, "__ra", "__rb"),
                lit(1i64),
                lit(0i64),
            );
            pick(is_train(), ident("__q") + extra, lit(1i64))
        } else {
            let p = cast(ident("__k"), DataType::Float64) / cast(ident("__n"), DataType::Float64);
            let u = cast(ident(col::H_SAMPLE), DataType::Float64)
                / lit(18_446_744_073_709_551_616.0f64);
            let extra = pick(u.lt(p.clone() - floor(p.clone())), lit(1i64), lit(0i64));
            pick(
                is_train(),
                cast(floor(p), DataType::Int64) + extra,
                lit(1i64),
            )
        };
        df = df
            .with_column(col::COPIES, copies)?
            .filter(ident(col::COPIES).gt(lit(0i64)))?;
        df = if replicate {
            df.with_column(col::COPY, range(lit(0i64), ident(col::COPIES), lit(1i64)))?
                .unnest_columns(&[col::COPY])?
        } else {
            df.with_column(col::COPY, lit(0i64))?
        };
        let in_tie = is_train()
            .and(ident(col::H_SAMPLE).eq(ident("__tie_a")))
            .and(ident(col::H_SPLIT).eq(ident("__tie_b")));
        df.with_column(col::TIE, pick(in_tie, ident("__tie_id"), lit(0u64)))
    }
}

/// `then` where `cond` holds, else `otherwise` (`strata_if`).
pub(super) fn pick(cond: Expr, then: Expr, otherwise: Expr) -> Expr {
    strata_if_udf().call(vec![cond, then, otherwise])
}

/// Whether a joined row is a training row.
pub(super) fn is_train() -> Expr {
    ident(col::SPLIT).eq(lit(0u8))
}

/// Which table a pass reads the source rows from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rows {
    /// As they are: the pass writes their values (pass 2).
    Written,
    /// With the group and label columns read as dictionaries
    /// (`strata_engine::CODED_SOURCE_TABLE`, registered by pass 0): for the passes that
    /// only hash and count rows. Hashes are defined on values, so a row's keys are the
    /// same either way (`strata_functions::hash`), and the group hashes code a
    /// dictionary's few values instead of every row's string.
    Keys,
}

impl Rows {
    fn table(self) -> &'static str {
        match self {
            Rows::Written => SOURCE_TABLE,
            Rows::Keys => CODED_SOURCE_TABLE,
        }
    }
}
