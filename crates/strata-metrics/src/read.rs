//! Reading predictions: Parquet files on any store, decoded batch by batch into an
//! [`Accumulator`]. Any model's predictions will do: the columns are named.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use arrow::compute::{cast, filter_record_batch};
use arrow::datatypes::{DataType, Float64Type};
use futures::StreamExt;
use object_store::ObjectStore;
use parquet::arrow::ParquetRecordBatchStreamBuilder;
use parquet::arrow::ProjectionMask;
use url::Url;

use crate::{Accumulator, Batch, MetricsError};

/// Which columns hold what.
#[derive(Debug, Clone)]
pub struct Columns {
    pub groups: Vec<String>,
    pub label: String,
    /// The predicted class; `None`: `score >= threshold`.
    pub pred: Option<String>,
    /// The positive class's probability (for ROC AUC, log loss, Brier, calibration).
    pub score: Option<String>,
    /// The score column is a default: files without it have no scores (as multi-class
    /// predictions, which hold one `y_score_<class>` per class).
    pub score_if_present: bool,
    pub weight: Option<String>,
    /// The weight column is a default: files without it count every row 1.
    pub weight_if_present: bool,
    /// Which model made each row's prediction (evaluated per model, side by side), used
    /// where the files have it.
    pub model: Option<String>,
}

/// What was read.
#[derive(Debug)]
pub struct Read {
    /// One accumulator per model, in name order (one, named `None`, without a model
    /// column).
    pub models: Vec<(Option<String>, Accumulator)>,
    /// The weight and score columns used, if any.
    pub weight: Option<String>,
    pub score: Option<String>,
    pub files: Vec<String>,
}

fn col(message: String, column: &str) -> MetricsError {
    MetricsError::Column {
        column: column.to_string(),
        message,
    }
}

fn run_err(e: strata_run::RunError) -> MetricsError {
    MetricsError::Usage(e.to_string())
}

/// A Parquet file of predictions, opened for ranged reads: decoded batch by batch,
/// never held whole.
async fn open(
    store: &Arc<dyn ObjectStore>,
    path: &object_store::path::Path,
    file: &str,
) -> Result<ParquetRecordBatchStreamBuilder<strata_run::ObjectReader>, MetricsError> {
    let object = strata_run::ObjectReader::open(store, path, file)
        .await
        .map_err(run_err)?;
    ParquetRecordBatchStreamBuilder::new(object)
        .await
        .map_err(|e| {
            MetricsError::Usage(format!(
                "{file}: not a readable Parquet file: {}",
                strata_spec::one_line(&e.to_string())
            ))
        })
}

/// Reads every row of the Parquet file or folder `url` names.
pub async fn read_predictions(
    store: &Arc<dyn ObjectStore>,
    url: &Url,
    columns: &Columns,
    positive: &str,
    threshold: f64,
) -> Result<Read, MetricsError> {
    read_predictions_of(store, url, columns, positive, threshold, None).await
}

/// The names in the model column of the files `url` names, in order (`None` when no
/// file has the column): one pass over that column alone, so that the models can then
/// be read one at a time ([`read_predictions_of`]), each model's rows in memory alone.
pub async fn model_names(
    store: &Arc<dyn ObjectStore>,
    url: &Url,
    column: &str,
) -> Result<Option<Vec<String>>, MetricsError> {
    let files = strata_run::list_parquet(store, url)
        .await
        .map_err(run_err)?;
    let mut names: Option<BTreeSet<String>> = None;
    for (path, file) in &files {
        let builder = open(store, path, file).await?;
        let Ok(i) = builder.schema().index_of(column) else {
            continue;
        };
        let mask = ProjectionMask::roots(builder.parquet_schema(), [i]);
        let mut reader = builder
            .with_projection(mask)
            .build()
            .map_err(MetricsError::read(file))?;
        let seen = names.get_or_insert_with(BTreeSet::new);
        while let Some(batch) = reader.next().await {
            let batch = batch.map_err(MetricsError::read(file))?;
            let values = text(&batch, column, file)?;
            for v in values.iter().flatten() {
                if !seen.contains(v) {
                    seen.insert(v.to_string());
                }
            }
        }
    }
    Ok(names.map(|n| n.into_iter().collect()))
}

/// As [`read_predictions`], keeping only the rows of model `only` (all rows with
/// `None`).
pub async fn read_predictions_of(
    store: &Arc<dyn ObjectStore>,
    url: &Url,
    columns: &Columns,
    positive: &str,
    threshold: f64,
    only: Option<&str>,
) -> Result<Read, MetricsError> {
    let files = strata_run::list_parquet(store, url)
        .await
        .map_err(run_err)?;
    let mut models: BTreeMap<Option<String>, Accumulator> = BTreeMap::new();
    let mut classes: BTreeSet<String> = BTreeSet::new();
    let mut positives = 0u64;
    let mut columns = columns.clone();
    let mut weight_seen = None;
    for (path, file) in &files {
        let builder = open(store, path, file).await?;
        let schema = builder.schema().clone();
        if columns.weight_if_present
            && let Some(w) = &columns.weight
        {
            let here = schema.index_of(w).is_ok();
            if *weight_seen.get_or_insert(here) != here {
                return Err(col(
                    format!(
                        "{file}: some prediction files have this weight column and others do not"
                    ),
                    w,
                ));
            }
            if !here {
                columns.weight = None;
            }
        }
        if columns.score_if_present
            && columns.pred.is_some()
            && let Some(sc) = &columns.score
            && schema.index_of(sc).is_err()
        {
            columns.score = None;
        }
        let model = columns
            .model
            .as_ref()
            .filter(|m| schema.index_of(m).is_ok())
            .cloned();
        let mut wanted: Vec<&String> = columns.groups.iter().collect();
        wanted.push(&columns.label);
        wanted.extend(columns.pred.iter());
        wanted.extend(columns.score.iter());
        wanted.extend(columns.weight.iter());
        wanted.extend(model.iter());
        let mut roots = Vec::new();
        for c in &wanted {
            let i = schema.index_of(c).map_err(|_| {
                col(
                    format!(
                        "{file} has no such column (columns: {})",
                        schema
                            .fields()
                            .iter()
                            .map(|f| f.name().as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    c,
                )
            })?;
            if !roots.contains(&i) {
                roots.push(i);
            }
        }
        if columns.pred.is_none() && columns.score.is_none() {
            return Err(MetricsError::Usage(
                "name a prediction column (--pred) or a score column (--score) to derive it from"
                    .into(),
            ));
        }
        let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
        let mut reader = builder
            .with_projection(mask)
            .build()
            .map_err(MetricsError::read(file))?;
        while let Some(batch) = reader.next().await {
            let batch = batch.map_err(MetricsError::read(file))?;
            // the batch split by model (all of it for the one model of a file without)
            let parts: Vec<(Option<String>, RecordBatch)> = match &model {
                None => vec![(None, batch)],
                Some(m) => {
                    let names = text(&batch, m, file)?;
                    if names.null_count() > 0 {
                        return Err(col(format!("{file}: a row has no model name (null)"), m));
                    }
                    let distinct: BTreeSet<&str> = names.iter().flatten().collect();
                    distinct
                        .into_iter()
                        .filter(|name| only.is_none_or(|o| o == *name))
                        .map(|name| {
                            let mask = BooleanArray::from(
                                names.iter().map(|v| v == Some(name)).collect::<Vec<_>>(),
                            );
                            filter_record_batch(&batch, &mask)
                                .map(|part| (Some(name.to_string()), part))
                                .map_err(MetricsError::read(file))
                        })
                        .collect::<Result<_, _>>()?
                }
            };
            for (name, part) in parts {
                positives += add_batch(
                    models.entry(name).or_default(),
                    &part,
                    &columns,
                    positive,
                    threshold,
                    file,
                    &mut classes,
                )?;
            }
        }
    }
    if models.values().all(|a| a.rows == 0) {
        return Err(MetricsError::Usage(format!(
            "{url}: no predictions to evaluate (the files hold no rows)"
        )));
    }
    if positives == 0 && classes.len() <= 2 {
        return Err(col(
            format!(
                "the positive class `{positive}` occurs in neither the labels nor the predictions of {url} (values: {})",
                classes.iter().cloned().collect::<Vec<_>>().join(", ")
            ),
            &columns.label,
        ));
    }
    models.values_mut().for_each(Accumulator::shrink_to_fit);
    Ok(Read {
        models: models.into_iter().collect(),
        weight: columns.weight.clone(),
        score: columns.score.clone(),
        files: files.into_iter().map(|f| f.1).collect(),
    })
}

fn text(
    batch: &RecordBatch,
    name: &str,
    file: &str,
) -> Result<arrow::array::StringArray, MetricsError> {
    let a = batch.column_by_name(name).expect("projected");
    cast(a, &DataType::Utf8)
        .map(|t| t.as_string::<i32>().clone())
        .map_err(|e| col(format!("{file}: cannot read as text: {e}"), name))
}

fn floats(
    batch: &RecordBatch,
    name: &str,
    file: &str,
) -> Result<arrow::array::Float64Array, MetricsError> {
    let a = batch.column_by_name(name).expect("projected");
    if !a.data_type().is_numeric() {
        return Err(col(
            format!("{file}: is {}, not a number", a.data_type()),
            name,
        ));
    }
    cast(a, &DataType::Float64)
        .map(|t| t.as_primitive::<Float64Type>().clone())
        .map_err(|e| col(format!("{file}: cannot read as numbers: {e}"), name))
}

fn add_batch(
    acc: &mut Accumulator,
    batch: &RecordBatch,
    columns: &Columns,
    positive: &str,
    threshold: f64,
    file: &str,
    classes: &mut BTreeSet<String>,
) -> Result<u64, MetricsError> {
    let n = batch.num_rows();
    let label = text(batch, &columns.label, file)?;
    // with a predicted class column, a third class makes the evaluation multi-class;
    // a prediction derived from a score is binary, so its label must be
    let binary_only = columns.pred.is_none();
    let mut note = |v: &str, column: &str| -> Result<(), MetricsError> {
        if !classes.contains(v) {
            classes.insert(v.to_string());
            if binary_only && classes.len() > 2 {
                return Err(col(
                    format!(
                        "{file}: value `{v}` makes a third class ({}), but a prediction derived from a score is binary: name the predicted class column (--pred) for multi-class metrics",
                        classes.iter().cloned().collect::<Vec<_>>().join(", ")
                    ),
                    column,
                ));
            }
        }
        Ok(())
    };
    let mut positives = 0u64;
    for i in 0..n {
        if label.is_valid(i) {
            note(label.value(i), &columns.label)?;
            positives += u64::from(label.value(i) == positive);
        }
    }
    let y_true = BooleanArray::from(
        (0..n)
            .map(|i| label.is_valid(i).then(|| label.value(i) == positive))
            .collect::<Vec<_>>(),
    );
    let score = match &columns.score {
        Some(s) => Some((s.clone(), floats(batch, s, file)?)),
        None => None,
    };
    let mut class_ids: Option<Vec<(u16, u16)>> = None;
    let pred = match &columns.pred {
        Some(p) => {
            let t = text(batch, p, file)?;
            let mut ids = Vec::with_capacity(n);
            for i in 0..n {
                let y = if label.is_valid(i) {
                    acc.class_id(label.value(i))?
                } else {
                    0
                };
                let q = if t.is_valid(i) {
                    acc.class_id(t.value(i))?
                } else {
                    0
                };
                ids.push((y, q));
            }
            class_ids = Some(ids);
            for i in 0..n {
                if t.is_valid(i) {
                    note(t.value(i), p)?;
                    positives += u64::from(t.value(i) == positive);
                }
            }
            (
                p.clone(),
                BooleanArray::from(
                    (0..n)
                        .map(|i| t.is_valid(i).then(|| t.value(i) == positive))
                        .collect::<Vec<_>>(),
                ),
            )
        }
        None => {
            let (name, s) = score.as_ref().expect("checked");
            (
                format!("{name} >= {threshold}"),
                BooleanArray::from(
                    (0..n)
                        .map(|i| s.is_valid(i).then(|| s.value(i) >= threshold))
                        .collect::<Vec<_>>(),
                ),
            )
        }
    };
    if columns.pred.is_none() {
        positives += pred.1.true_count() as u64;
    }
    let weight = match &columns.weight {
        Some(w) => Some((w.clone(), floats(batch, w, file)?)),
        None => None,
    };
    let groups: Vec<_> = columns
        .groups
        .iter()
        .map(|g| {
            (
                g.clone(),
                batch.column_by_name(g).expect("projected").clone(),
            )
        })
        .collect();
    acc.push_arrays(
        Batch {
            groups: &groups,
            y_true: &y_true,
            y_pred: &pred,
            score: score.as_ref(),
            weight: weight.as_ref(),
            classes: class_ids.as_deref(),
        },
        file,
    )?;
    Ok(positives)
}
