use std::collections::BTreeMap;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type};
use datafusion::functions_aggregate::expr_fn::sum;
use datafusion::prelude::*;
use strata_engine::{CODED_SOURCE_TABLE, EngineError, LabelKind, SOURCE_TABLE, SourceTable};
use strata_spec::{LabelValue, MISSING_GROUP, Pipeline};

use crate::ProfileError;
use strata_run::{
    Attributes, GroupStats, LabelSummary, PROFILE_SCHEMA_VERSION as SCHEMA_VERSION, Profile,
    SourceSummary,
};

/// Sums over one cell or group.
#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    rows: u64,
    labelled: u64,
    positives: u64,
    weight: f64,
    weighted_labelled: f64,
    weighted_positives: f64,
}

impl Tally {
    fn add(&mut self, o: &Tally) {
        self.rows += o.rows;
        self.labelled += o.labelled;
        self.positives += o.positives;
        self.weight += o.weight;
        self.weighted_labelled += o.weighted_labelled;
        self.weighted_positives += o.weighted_positives;
    }
}

/// Sort key for a group value: present values in order, the missing group last.
type Key = Vec<(bool, String)>;

/// Profiles the registered `source` table in one pass (see the crate docs).
pub async fn profile(
    engine: &strata_engine::Engine,
    pipeline: &Pipeline,
    source: &SourceTable,
    label_kind: LabelKind,
) -> Result<Profile, ProfileError> {
    let ctx = engine.context();
    let attrs = &pipeline.groups.attributes;
    // group and label columns read as dictionaries: `strata_cells` codes a row with one
    // lookup per column then (crates/strata-engine/src/coded.rs)
    engine
        .register_coded(source, CODED_SOURCE_TABLE, &pipeline.cell_columns())
        .await?;
    let df = ctx
        .table(CODED_SOURCE_TABLE)
        .await
        .map_err(EngineError::datafusion("opening the source table"))?;

    let positive = pipeline.label.positive.as_text();
    debug_assert!(matches!(
        label_kind,
        LabelKind::String | LabelKind::Integer | LabelKind::Boolean
    ));

    // One aggregate over (attributes, label) cells turns every label statistic into a
    // plain count or sum per (cell, label value): no CASE expression runs per row.
    // `strata_cells` is that GROUP BY with codes for the few distinct values of each key
    // (see strata_functions::strata_cells_udaf). Weights are checked with counts of negative
    // and of non-null weights per cell (and a sum, which is NaN if any weight is); only
    // if those look wrong does a second query count the bad rows for the error.
    let weighted = pipeline.source.weight_column.is_some();
    let mut args = vec![match &pipeline.source.weight_column {
        Some(w) => cast(ident(w), DataType::Float64),
        None => lit(datafusion::common::ScalarValue::Float64(None)),
    }];
    args.extend(attrs.iter().map(ident));
    args.push(ident(&pipeline.label.column));

    let started = std::time::Instant::now();
    let result = df
        .aggregate(
            vec![],
            vec![
                strata_functions::strata_cells_udaf()
                    .call(args)
                    .alias("cells"),
            ],
        )
        .map_err(EngineError::datafusion("planning the profile"))?
        .collect()
        .await
        .map_err(EngineError::datafusion(format!(
            "profiling source `{}`",
            source.url
        )))?;
    let cells = strata_functions::aggregate_rows(&result)
        .map_err(EngineError::datafusion("reading profile cells"))?;
    // unweighted: the weight tallies are empty, and would read as missing weights
    let keep: Vec<usize> = (0..=attrs.len() + 1).collect();
    let batches = if weighted {
        cells
    } else {
        cells
            .iter()
            .map(|c| c.project(&keep))
            .collect::<Result<_, _>>()
            .map_err(|e| EngineError::datafusion("reading profile cells")(e.into()))?
    };

    let (cells, suspect_weights) = read_cells(&batches, attrs.len(), &positive)?;
    let bad_weights = if suspect_weights {
        count_invalid_weights(engine, pipeline).await?
    } else {
        0
    };
    tracing::info!(
        cells = cells.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "profile pass done"
    );

    if bad_weights > 0 {
        return Err(
            strata_engine::invalid_weights_error(pipeline, bad_weights, &source.url).into(),
        );
    }

    let mut total = Tally::default();
    for t in cells.values() {
        total.add(t);
    }
    if total.labelled > 0 && total.positives == 0 {
        let seen = distinct_labels(engine, pipeline).await?;
        return Err(pipeline
            .error_at(
                "label.positive",
                format!(
                    "positive value {} never appears in label column `{}` of source `{}` (values seen: {seen})",
                    pipeline.label.positive, pipeline.label.column, source.url
                ),
            )
            .into());
    }

    let mut warnings = Vec::new();
    if total.rows == 0 {
        warnings.push(format!("source `{}` has no rows", source.url));
    }
    if total.rows > 0 && total.labelled == 0 {
        warnings.push(format!(
            "no row has a value in label column `{}`; `strata curate` refuses such a source",
            pipeline.label.column
        ));
    }
    if weighted && total.rows > 0 && total.weight == 0.0 {
        warnings.push(format!(
            "every weight in column `{}` is 0; `strata curate` refuses such a source",
            pipeline.source.weight_column.as_deref().unwrap_or_default()
        ));
    }
    if total.labelled < total.rows {
        warnings.push(format!(
            "{} rows have no value in label column `{}`; rates are over labelled rows",
            total.rows - total.labelled,
            pipeline.label.column
        ));
    }

    let groupings = pipeline.groups.groupings();
    let groups = roll_up(pipeline, &cells, &total, weighted, &mut warnings)?;
    let small: Vec<_> = groups
        .iter()
        .filter(|g| g.small)
        .map(|g| g.attributes.label())
        .collect();
    if !small.is_empty() {
        warnings.push(format!(
            "{} groups have fewer than {} rows (min_group_rows): {}",
            small.len(),
            pipeline.groups.min_group_rows,
            small.join(", ")
        ));
    }

    Ok(Profile {
        schema_version: SCHEMA_VERSION,
        pipeline: pipeline.name.clone(),
        source: SourceSummary {
            url: source.url.clone(),
            files: source.files.len(),
            bytes: source.files.iter().map(|f| f.size).sum(),
        },
        label: LabelSummary {
            column: pipeline.label.column.clone(),
            positive: match &pipeline.label.positive {
                LabelValue::String(s) => serde_json::Value::from(s.as_str()),
                LabelValue::Int(i) => serde_json::Value::from(*i),
                LabelValue::Bool(b) => serde_json::Value::from(*b),
            },
        },
        weight_column: pipeline.source.weight_column.clone(),
        min_group_rows: pipeline.groups.min_group_rows,
        total_rows: total.rows,
        labelled_rows: total.labelled,
        positives: total.positives,
        positive_rate: ratio(total.positives as f64, total.labelled as f64),
        total_weight: weighted.then_some(total.weight),
        groupings: groupings
            .iter()
            .map(|g| g.iter().map(|&i| attrs[i].clone()).collect())
            .collect(),
        groups,
        warnings,
    })
}

fn ratio(num: f64, den: f64) -> Option<f64> {
    (den > 0.0).then(|| num / den)
}

fn display_value((missing, v): &(bool, String)) -> String {
    if *missing {
        MISSING_GROUP.to_string()
    } else {
        v.clone()
    }
}

/// Every grouping's groups, rolled up from the finest cells (the intersection of all
/// attributes): each group's tallies are the sums of its cells', in key order, so the
/// figures are those of a `GROUP BY` per grouping. Reference shares are joined to single
/// attributes; a reference group absent from the data is an error at its key.
fn roll_up(
    pipeline: &Pipeline,
    cells: &BTreeMap<Key, Tally>,
    total: &Tally,
    weighted: bool,
    warnings: &mut Vec<String>,
) -> Result<Vec<GroupStats>, ProfileError> {
    let attrs = &pipeline.groups.attributes;
    let groupings = pipeline.groups.groupings();
    let mut groups = Vec::new();
    for grouping in &groupings {
        let mut rolled: BTreeMap<Key, Tally> = BTreeMap::new();
        for (key, tally) in cells {
            let sub: Key = grouping.iter().map(|&i| key[i].clone()).collect();
            rolled.entry(sub).or_default().add(tally);
        }
        let reference = match grouping.as_slice() {
            [i] => pipeline.groups.reference.get(&attrs[*i]),
            _ => None,
        };
        if let (Some(reference), [i]) = (reference, grouping.as_slice()) {
            let key_name = format!("groups.reference.{}", attrs[*i]);
            for group in reference.keys() {
                let present = rolled.keys().any(|k| display_value(&k[0]) == *group);
                if !present {
                    let seen: Vec<_> = rolled.keys().map(|k| display_value(&k[0])).collect();
                    return Err(pipeline
                        .error_at(
                            &key_name,
                            format!(
                                "group `{group}` does not occur in column `{}` (groups: {})",
                                attrs[*i],
                                seen.join(", ")
                            ),
                        )
                        .into());
                }
            }
        }
        for (key, t) in rolled {
            let attributes = Attributes(
                grouping
                    .iter()
                    .zip(&key)
                    .map(|(&i, (missing, v))| (attrs[i].clone(), (!missing).then(|| v.clone())))
                    .collect(),
            );
            let share = ratio(t.rows as f64, total.rows as f64).unwrap_or(0.0);
            let reference_share = reference.and_then(|r| r.get(&display_value(&key[0])).copied());
            if reference.is_some() && reference_share.is_none() {
                warnings.push(format!(
                    "group {} is not in the reference mix",
                    attributes.label()
                ));
            }
            let small = t.rows < pipeline.groups.min_group_rows;
            groups.push(GroupStats {
                rows: t.rows,
                share,
                weighted_rows: weighted.then_some(t.weight),
                weighted_share: if weighted {
                    ratio(t.weight, total.weight)
                } else {
                    None
                },
                labelled_rows: t.labelled,
                positives: t.positives,
                positive_rate: ratio(t.positives as f64, t.labelled as f64),
                weighted_positive_rate: if weighted {
                    ratio(t.weighted_positives, t.weighted_labelled)
                } else {
                    None
                },
                reference_share,
                representation_ratio: reference_share.and_then(|r| ratio(share, r)),
                gap: reference_share.map(|r| share - r),
                small,
                attributes,
            });
        }
    }
    Ok(groups)
}

/// Reads the aggregated (cell, label value) rows into cells keyed by their attribute
/// values in sort order. Summing in key order keeps float totals identical across runs,
/// whatever order the engine's partitions returned them in. Also says whether any
/// weight may be null or unusable (negative, NaN, infinite, out of range).
fn read_cells(
    batches: &[RecordBatch],
    n_attrs: usize,
    positive: &str,
) -> Result<(BTreeMap<Key, Tally>, bool), ProfileError> {
    // (cell, label) rows, sorted, then folded into cells
    let mut rows: BTreeMap<(Key, Option<String>), (u64, f64)> = BTreeMap::new();
    let mut suspect = false;
    for batch in batches {
        let keys: Vec<_> = (0..=n_attrs)
            .map(|i| datafusion::arrow::compute::cast(batch.column(i), &DataType::Utf8))
            .collect::<Result<_, _>>()
            .map_err(|e| EngineError::datafusion("reading profile cells")(e.into()))?;
        let count = batch
            .column_by_name("rows")
            .map(|c| c.as_primitive::<Int64Type>().clone())
            .expect("rows");
        let float = |name: &str| {
            batch
                .column_by_name(name)
                .map(|c| c.as_primitive::<Float64Type>().clone())
        };
        let weight = float("weight");
        let int = |name: &str| {
            batch
                .column_by_name(name)
                .map(|c| c.as_primitive::<Int64Type>().clone())
        };
        let (weight_count, negative) = (int("weight_count"), int("weight_unusable"));
        for r in 0..batch.num_rows() {
            let text = |i: usize| {
                let k = keys[i].as_string::<i32>();
                (!k.is_null(r)).then(|| k.value(r).to_string())
            };
            let key: Key = (0..n_attrs)
                .map(|i| text(i).map_or((true, String::new()), |v| (false, v)))
                .collect();
            let n = count.value(r) as u64;
            let w = weight
                .as_ref()
                .map_or(0.0, |a| if a.is_null(r) { 0.0 } else { a.value(r) });
            if let (Some(wc), Some(negative)) = (&weight_count, &negative) {
                suspect |= (wc.value(r) as u64) < n || !w.is_finite() || negative.value(r) > 0;
            }
            rows.insert((key, text(n_attrs)), (n, w));
        }
    }
    let mut cells: BTreeMap<Key, Tally> = BTreeMap::new();
    for ((key, label), (n, w)) in rows {
        let is_positive = label.as_deref() == Some(positive);
        cells.entry(key).or_default().add(&Tally {
            rows: n,
            labelled: if label.is_some() { n } else { 0 },
            positives: if is_positive { n } else { 0 },
            weight: w,
            weighted_labelled: if label.is_some() { w } else { 0.0 },
            weighted_positives: if is_positive { w } else { 0.0 },
        });
    }
    Ok((cells, suspect))
}

/// Rows whose weight is null or unusable (`strata_functions::usable_weight`): a second query, run only when the
/// profile pass saw signs of them.
async fn count_invalid_weights(
    engine: &strata_engine::Engine,
    pipeline: &Pipeline,
) -> Result<u64, ProfileError> {
    let Some(w) = &pipeline.source.weight_column else {
        return Ok(0);
    };
    let batches = engine
        .context()
        .table(SOURCE_TABLE)
        .await
        .and_then(|df| {
            df.aggregate(
                vec![],
                vec![
                    sum(strata_functions::invalid_weight(cast(
                        ident(w),
                        DataType::Float64,
                    )))
                    .alias("bad"),
                ],
            )
        })
        .map_err(EngineError::datafusion("counting invalid weights"))?
        .collect()
        .await
        .map_err(EngineError::datafusion("counting invalid weights"))?;
    Ok(batches
        .first()
        .map(|b| b.column(0).as_primitive::<Int64Type>())
        .map_or(0, |a| if a.is_null(0) { 0 } else { a.value(0) as u64 }))
}

/// A few label values, for the error when the positive value never occurs.
async fn distinct_labels(
    engine: &strata_engine::Engine,
    pipeline: &Pipeline,
) -> Result<String, ProfileError> {
    let df = engine
        .context()
        .table(SOURCE_TABLE)
        .await
        .and_then(|df| {
            df.select(vec![
                cast(ident(&pipeline.label.column), DataType::Utf8).alias("v"),
            ])
        })
        .and_then(|df| df.distinct())
        .and_then(|df| df.sort(vec![col("v").sort(true, false)]))
        .and_then(|df| df.limit(0, Some(10)))
        .map_err(EngineError::datafusion("listing label values"))?;
    let batches = df
        .collect()
        .await
        .map_err(EngineError::datafusion("listing label values"))?;
    let mut values = Vec::new();
    for b in &batches {
        let a = b.column(0).as_string::<i32>();
        for i in 0..a.len() {
            if !a.is_null(i) {
                values.push(format!("{:?}", a.value(i)));
            }
        }
    }
    Ok(values.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipeline() -> Pipeline {
        Pipeline::parse(
            "/virtual/p.toml",
            "[source]\nurl = \"memory:///t.parquet\"\nweight_column = \"w\"\n[label]\ncolumn = \"y\"\n\
             positive = 1\n[groups]\nattributes = [\"a\", \"b\"]\nmin_group_rows = 3\n\
             [groups.reference.a]\nx = 0.5\ny = 0.5\n"
                .into(),
        )
        .unwrap()
    }

    /// (a, b, label, weight); `None` is missing.
    type Row = (
        Option<&'static str>,
        Option<&'static str>,
        Option<bool>,
        f64,
    );

    /// The roll-up equals a `GROUP BY` per grouping, here counted row by row: rows,
    /// labels, positives and weights of every group of `a`, `b` and `a × b`, with the
    /// missing value as its own group (sorted last), shares and the reference gap.
    #[test]
    fn roll_up_is_a_group_by_per_grouping() {
        let rows: Vec<Row> = (0..97)
            .map(|i| {
                let a = ["x", "y"][i % 2];
                let b = [Some("p"), Some("q"), None][i % 3];
                let y = [Some(true), Some(false), None, Some(false)][i % 4];
                (Some(a), b, y, 1.0 + (i % 5) as f64)
            })
            .collect();
        let key = |v: Option<&str>| (v.is_none(), v.unwrap_or("").to_string());
        let mut cells: BTreeMap<Key, Tally> = BTreeMap::new();
        let mut total = Tally::default();
        for &(a, b, y, w) in &rows {
            let t = Tally {
                rows: 1,
                labelled: u64::from(y.is_some()),
                positives: u64::from(y == Some(true)),
                weight: w,
                weighted_labelled: if y.is_some() { w } else { 0.0 },
                weighted_positives: if y == Some(true) { w } else { 0.0 },
            };
            cells.entry(vec![key(a), key(b)]).or_default().add(&t);
            total.add(&t);
        }
        let p = pipeline();
        let groups = roll_up(&p, &cells, &total, true, &mut Vec::new()).unwrap();
        assert_eq!(groups.len(), 2 + 3 + 6);
        for g in &groups {
            let wanted = |r: &Row| {
                g.attributes.0.iter().all(|(k, v)| {
                    let have = if k == "a" { r.0 } else { r.1 };
                    have.map(str::to_string) == *v
                })
            };
            let mine: Vec<_> = rows.iter().filter(|r| wanted(r)).collect();
            assert_eq!(g.rows, mine.len() as u64, "{}", g.attributes.label());
            assert_eq!(
                g.labelled_rows,
                mine.iter().filter(|r| r.2.is_some()).count() as u64
            );
            assert_eq!(
                g.positives,
                mine.iter().filter(|r| r.2 == Some(true)).count() as u64
            );
            let w: f64 = mine.iter().map(|r| r.3).sum();
            assert!((g.weighted_rows.unwrap() - w).abs() < 1e-9);
            assert!((g.share - mine.len() as f64 / rows.len() as f64).abs() < 1e-12);
            assert_eq!(g.small, mine.len() < 3);
            if g.attributes.0.len() == 1 && g.attributes.0[0].0 == "a" {
                assert!((g.gap.unwrap() - (g.share - 0.5)).abs() < 1e-12);
            } else {
                assert!(g.reference_share.is_none());
            }
        }
        // the missing group of `b` comes last among b's groups
        let b: Vec<_> = groups
            .iter()
            .filter(|g| g.attributes.0.len() == 1 && g.attributes.0[0].0 == "b")
            .map(|g| g.attributes.0[0].1.clone())
            .collect();
        assert_eq!(b, [Some("p".into()), Some("q".into()), None]);
    }

    /// A reference group the data does not have is an error at its key.
    #[test]
    fn a_reference_group_absent_from_the_data() {
        let mut cells: BTreeMap<Key, Tally> = BTreeMap::new();
        let one = Tally {
            rows: 1,
            ..Tally::default()
        };
        cells.insert(vec![(false, "x".into()), (false, "p".into())], one);
        let e = roll_up(&pipeline(), &cells, &one, true, &mut Vec::new()).unwrap_err();
        assert!(
            e.to_string().contains("groups.reference.a") && e.to_string().contains("`y`"),
            "{e}"
        );
    }
}
