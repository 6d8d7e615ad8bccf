//! Pass 0: rows per cell, each cell's values and ids, read in one aggregate over the
//! source (docs/curation.md, "How it runs").

use super::*;

/// Group by-columns of an aggregate as optional strings (missing group = `None`).
pub(super) fn string_columns(
    batch: &RecordBatch,
    n: usize,
) -> Result<Vec<Vec<Option<String>>>, CurateError> {
    (0..n)
        .map(|i| {
            let a = datafusion::arrow::compute::cast(batch.column(i), &DataType::Utf8)
                .map_err(|e| df_err("reading cells")(e.into()))?;
            let a = a.as_string::<i32>();
            Ok((0..a.len())
                .map(|r| (!a.is_null(r)).then(|| a.value(r).to_string()))
                .collect())
        })
        .collect()
}

/// Pass 0: rows per cell, and each cell's values, so later passes group by the cell id
/// alone. One `strata_cells` aggregate (`strata_functions::strata_cells_udaf`) over the
/// source read with its group and label strings as dictionaries; its weight is 1 for
/// rows with an id, so the weight sum counts them (null ids fail the run; duplicates
/// show up where the shard writer sorts rows by their hashes). A source with nothing to
/// curate fails here.
pub(super) async fn count_cells(
    engine: &Engine,
    pipeline: &Pipeline,
    source: &SourceTable,
    seed: u64,
) -> Result<HashMap<u64, CellKey>, CurateError> {
    let ctx = engine.context();
    let attrs = &pipeline.groups.attributes;
    let cell_columns = pipeline.cell_columns();
    let cell_cols: Vec<Expr> = cell_columns.iter().map(ident).collect();
    let call = |stream: u64, cols: &[Expr]| seeded_hash(seed, stream, cols);
    let mut pass0_args = vec![match &pipeline.source.id_column {
        Some(id) => cast(ident(id).is_not_null(), DataType::Float64),
        None => lit(1.0f64),
    }];
    pass0_args.extend(cell_cols.iter().cloned());
    let started = std::time::Instant::now();
    // read with the group and label strings as dictionaries, as the profile does
    // (strata_engine's `coded` module): `strata_cells` then codes a row by key lookups;
    // the cells' values come out as plain strings, which hash like the views later
    // passes read
    engine
        .register_coded(source, CODED_SOURCE_TABLE, &cell_columns)
        .await?;
    let pass0 = ctx
        .table(CODED_SOURCE_TABLE)
        .await
        .and_then(|df| {
            df.aggregate(
                vec![],
                vec![
                    strata_functions::strata_cells_udaf()
                        .call(pass0_args)
                        .alias("cells"),
                ],
            )
        })
        .map_err(df_err("planning curation"))?
        .collect()
        .await
        .map_err(df_err("curation pass 0 (rows per cell)"))?;
    let pass0 =
        cells_batches(&pass0, attrs.len()).map_err(df_err("curation pass 0 (rows per cell)"))?;
    // the cell and group ids, hashed once per cell rather than once per row
    let pass0 = if pass0.iter().all(|b| b.num_rows() == 0) {
        Vec::new()
    } else {
        let g: Vec<Expr> = (0..attrs.len()).map(|i| ident(format!("g{i}"))).collect();
        let mut gy = g.clone();
        gy.push(ident("y"));
        engine
            .small_frame(pass0[0].schema(), pass0)
            .and_then(|df| {
                df.with_column(col::CELL_ID, call(stream::CELL, &gy))?
                    .with_column(col::CELL_GROUP, call(stream::GROUP, &g))
            })
            .map_err(df_err("planning curation"))?
            .collect()
            .await
            .map_err(df_err("curation pass 0 (cell ids)"))?
    };
    let cell_keys = read_cell_keys(&pass0, attrs.len())?;
    if let Some(id) = &pipeline.source.id_column {
        let nulls: u64 = cell_keys.values().map(|c| c.rows - c.ids).sum();
        if nulls > 0 {
            return Err(pipeline
                .error_at(
                    "source.id_column",
                    format!(
                        "{nulls} rows of source `{}` have a null id in column `{id}`",
                        source.url
                    ),
                )
                .into());
        }
    }
    tracing::info!(
        cells = cell_keys.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "curation pass 0 done"
    );
    nothing_to_curate(pipeline, source, &cell_keys)?;
    Ok(cell_keys)
}

/// `strata_hash` of `cols` with the seed of `stream`.
pub(super) fn seeded_hash(seed: u64, stream: u64, cols: &[Expr]) -> Expr {
    let mut args = vec![lit(derive_seed(seed, stream))];
    args.extend(cols.iter().cloned());
    strata_hash_udf().call(args)
}

/// A cell as pass 0 saw it: its values, its group's id and its rows.
#[derive(Debug, Clone)]
pub(super) struct CellKey {
    pub(super) key: (GroupKey, LabelKey),
    pub(super) group: u64,
    pub(super) rows: u64,
    /// Rows with a non-null id (all rows when there is no id column).
    pub(super) ids: u64,
}

/// The cells of a `strata_cells(weight, g0.., y)` result as batches of `g0..`, `y`,
/// `__cell_rows` and `__ids` (the weight sum: rows with an id).
pub(super) fn cells_batches(
    result: &[RecordBatch],
    n_attrs: usize,
) -> datafusion::error::Result<Vec<RecordBatch>> {
    let mut out = Vec::new();
    for cells in strata_functions::aggregate_rows(result)? {
        if cells.num_rows() == 0 {
            continue;
        }
        let mut fields: Vec<Field> = Vec::new();
        let mut columns: Vec<ArrayRef> = Vec::new();
        for k in 0..=n_attrs {
            let name = if k < n_attrs {
                format!("g{k}")
            } else {
                "y".to_string()
            };
            fields.push(Field::new(name, cells.column(k).data_type().clone(), true));
            columns.push(cells.column(k).clone());
        }
        let rows = cells.column(n_attrs + 1).clone();
        let ids = datafusion::arrow::compute::cast(cells.column(n_attrs + 2), &DataType::Int64)?;
        fields.extend([
            Field::new(col::CELL_ROWS, DataType::Int64, false),
            Field::new(col::CELL_IDS, DataType::Int64, true),
        ]);
        columns.extend([rows, ids]);
        out.push(RecordBatch::try_new(
            Arc::new(Schema::new(fields)),
            columns,
        )?);
    }
    Ok(out)
}

/// Pass 0's cells by cell id. Fails if two different cells hash to one id.
/// A source curation cannot work on is an error before anything is written: no rows,
/// no labelled row, or a positive value that no row has (the profile only warns).
pub(super) fn nothing_to_curate(
    pipeline: &Pipeline,
    source: &SourceTable,
    cells: &HashMap<u64, CellKey>,
) -> Result<(), CurateError> {
    let rows: u64 = cells.values().map(|c| c.rows).sum();
    if rows == 0 {
        return Err(EngineError::bad_source(
            source.url.clone(),
            "has no rows; there is nothing to curate",
        )
        .into());
    }
    let labels: std::collections::BTreeSet<&str> =
        cells.values().filter_map(|c| c.key.1.as_deref()).collect();
    let label = &pipeline.label.column;
    if labels.is_empty() {
        return Err(pipeline
            .error_at(
                "label.column",
                format!(
                    "every row of source `{}` has a null label in column `{label}`; \
                     there is nothing to curate",
                    source.url
                ),
            )
            .into());
    }
    let positive = pipeline.label.positive.as_text();
    if !labels.contains(positive.as_str()) {
        let seen: Vec<&str> = labels.iter().take(20).copied().collect();
        return Err(pipeline
            .error_at(
                "label.positive",
                format!(
                    "positive value {} never appears in label column `{label}` of source `{}` \
                     (values seen: {})",
                    pipeline.label.positive,
                    source.url,
                    seen.join(", ")
                ),
            )
            .into());
    }
    Ok(())
}

pub(super) fn read_cell_keys(
    batches: &[RecordBatch],
    n_attrs: usize,
) -> Result<HashMap<u64, CellKey>, CurateError> {
    let mut out: HashMap<u64, CellKey> = HashMap::new();
    for b in batches {
        let keys = string_columns(b, n_attrs + 1)?;
        let cell_ids = b
            .column_by_name(col::CELL_ID)
            .expect(col::CELL_ID)
            .as_primitive::<UInt64Type>();
        let group_ids = b
            .column_by_name(col::CELL_GROUP)
            .expect(col::CELL_GROUP)
            .as_primitive::<UInt64Type>();
        let rows = b
            .column_by_name(col::CELL_ROWS)
            .expect(col::CELL_ROWS)
            .as_primitive::<Int64Type>();
        let ids = b
            .column_by_name(col::CELL_IDS)
            .expect(col::CELL_IDS)
            .as_primitive::<Int64Type>();
        for r in 0..b.num_rows() {
            let g: GroupKey = keys[..n_attrs].iter().map(|k| k[r].clone()).collect();
            let key = (g, keys[n_attrs][r].clone());
            let cell = CellKey {
                key: key.clone(),
                group: group_ids.value(r),
                rows: rows.value(r) as u64,
                ids: ids.value(r) as u64,
            };
            if let Some(other) = out.insert(cell_ids.value(r), cell)
                && other.key != key
            {
                return Err(CurateError::IdCollision {
                    first: format!("{:?}", other.key),
                    second: format!("{key:?}"),
                });
            }
        }
    }
    Ok(out)
}

/// Scale of [`exact_sum`]: weights are summed as multiples of 10⁻¹⁰ (as in
/// `strata_cut_zones`).
use strata_functions::WEIGHT_SCALE;

/// Σ weight, exactly: floating-point sums depend on the order rows are added, i.e. on
/// partitioning and batching, and the weight sums fix the Kamiran–Calders factors and
/// so the output bytes. Each weight is rounded to 10 decimals and summed as a 128-bit
/// decimal (up to 10²⁸); unusable weights count as 0 (they are reported separately).
pub(super) fn exact_sum(w: Expr) -> Expr {
    let usable = strata_if_udf().call(vec![
        strata_functions::invalid_weight(w.clone()).eq(lit(0i64)),
        w,
        lit(0.0f64),
    ]);
    sum(cast(usable, DataType::Decimal128(38, WEIGHT_SCALE)))
}

/// The values of an [`exact_sum`] column as floats (null as 0).
pub(super) fn decimal_sums(a: &ArrayRef) -> Vec<f64> {
    let a = a.as_primitive::<datafusion::arrow::datatypes::Decimal128Type>();
    (0..a.len())
        .map(|i| {
            if a.is_null(i) {
                0.0
            } else {
                a.value(i) as f64 / 10f64.powi(WEIGHT_SCALE as i32)
            }
        })
        .collect()
}
