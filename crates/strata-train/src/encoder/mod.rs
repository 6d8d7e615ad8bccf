//! The feature encoder: which columns feed the model and how each becomes numbers.
//!
//! Fitted once on the training split and saved as `encoder.json`; prediction uses the
//! saved encoder unchanged, so a model never sees inputs encoded differently from the
//! ones it was trained on. The rules are in `docs/training.md`:
//! - numeric: `(x - mean) / std`, with the training split's (weighted) mean and
//!   population standard deviation; a constant column gets `std = 1`;
//! - a null or NaN numeric value is imputed with the training mean (0 after
//!   standardising) and, when the training split had any, flagged in an extra
//!   `<name> missing` input that is 1 for such rows; an infinite value is an error;
//! - categorical: one-hot over the training split's `max_categories` most frequent
//!   values (null is a value of its own), plus one unknown bucket for every other value.

use std::collections::HashMap;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type, Schema};
use serde::{Deserialize, Serialize};
use strata_spec::{ADDED_COLUMNS, Pipeline};

use crate::TrainError;

pub const ENCODER_SCHEMA_VERSION: u32 = 1;

/// The column every shard carries with each row's curated weight.
pub const WEIGHT_COLUMN: &str = "sample_weight";

/// A fitted encoder, as saved in `encoder.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Encoder {
    pub schema_version: u32,
    pub label: LabelEncoding,
    /// The model's inputs in order; each takes [`Feature::width`] encoded columns.
    pub features: Vec<Feature>,
    /// Encoded columns in all: the model's input width.
    pub width: usize,
    /// Whether training weighted rows by `sample_weight` (statistics included).
    pub sample_weights: bool,
    /// The row key predictions carry (`source.id_column`); `None`: the row's position.
    pub id_column: Option<String>,
    /// Columns predictions carry through for per-group evaluation.
    pub protected_attributes: Vec<String>,
}

/// The label's classes: output `i` of the model is the probability of `classes[i]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelEncoding {
    pub column: String,
    /// Arrow's display form of the label's type; `y_pred` is written back in it.
    pub data_type: String,
    /// Each class as text (Arrow's cast of the value to a string). For a binary
    /// label the positive class is last, so `y_score` is output 1.
    pub classes: Vec<String>,
    /// Index of the spec's positive class in `classes`.
    pub positive: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Feature {
    pub name: String,
    /// Arrow's display form of the column's type when the encoder was fitted.
    pub data_type: String,
    #[serde(flatten)]
    pub encoding: Encoding,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Encoding {
    Numeric {
        mean: f64,
        std: f64,
        /// An extra input, 1 where the value was null or NaN.
        missing_indicator: bool,
    },
    Categorical {
        /// One input per category in this order (`null` is the missing value), then
        /// one unknown bucket.
        categories: Vec<Option<String>>,
    },
}

impl Feature {
    /// Encoded columns this feature takes.
    pub fn width(&self) -> usize {
        match &self.encoding {
            Encoding::Numeric {
                missing_indicator, ..
            } => 1 + usize::from(*missing_indicator),
            Encoding::Categorical { categories } => categories.len() + 1,
        }
    }

    /// Names of the encoded columns, e.g. `age`, `age missing`, `workclass=Private`,
    /// `workclass (other)`.
    pub fn input_names(&self) -> Vec<String> {
        match &self.encoding {
            Encoding::Numeric {
                missing_indicator, ..
            } => {
                let mut v = vec![self.name.clone()];
                if *missing_indicator {
                    v.push(format!("{} missing", self.name));
                }
                v
            }
            Encoding::Categorical { categories } => categories
                .iter()
                .map(|c| match c {
                    Some(c) => format!("{}={c}", self.name),
                    None => format!("{} (missing)", self.name),
                })
                .chain(std::iter::once(format!("{} (other)", self.name)))
                .collect(),
        }
    }
}

/// How a column is read, decided from its Arrow type and the spec's overrides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Numeric,
    Categorical,
}

/// The model's input columns and their kinds, from the spec and the shards' schema.
pub fn select_features(
    spec: &Pipeline,
    schema: &Schema,
    context: &str,
) -> Result<Vec<(String, Kind, DataType)>, TrainError> {
    let t = &spec.train;
    let names: Vec<String> = match &t.features {
        Some(f) => f.clone(),
        None => schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .filter(|n| {
                n != &spec.label.column
                    && (t.protected_as_features || !spec.groups.attributes.contains(n))
                    && Some(n) != spec.source.weight_column.as_ref()
                    && Some(n) != spec.source.id_column.as_ref()
                    && !ADDED_COLUMNS.contains(&n.as_str())
            })
            .collect(),
    };
    if names.is_empty() {
        return Err(TrainError::Usage(format!(
            "{context}: no column is left to be a model input once the label, the protected attributes, the id and the weights are set aside; name `train.features`"
        )));
    }
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let field = schema
            .field_with_name(&name)
            .map_err(|_| TrainError::Column {
                column: name.clone(),
                message: format!("{context} has no such column (a feature of `train`)"),
            })?;
        let dt = field.data_type().clone();
        let kind = if t.categorical.contains(&name) {
            Kind::Categorical
        } else if t.numeric.contains(&name) {
            Kind::Numeric
        } else {
            match infer_kind(&dt) {
                Some(k) => k,
                None => {
                    return Err(TrainError::Column {
                        column: name,
                        message: format!(
                            "type {dt} is not a model input strata can encode (numbers and booleans are numeric, strings categorical; name a date or time column in `train.categorical`, or leave it out of `train.features`)"
                        ),
                    });
                }
            }
        };
        check_castable(&name, &dt, kind)?;
        out.push((name, kind, dt));
    }
    Ok(out)
}

fn infer_kind(dt: &DataType) -> Option<Kind> {
    use DataType::*;
    match dt {
        Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 | UInt64 | Float16 | Float32
        | Float64 | Decimal32(..) | Decimal64(..) | Decimal128(..) | Decimal256(..) | Boolean => {
            Some(Kind::Numeric)
        }
        Utf8 | LargeUtf8 | Utf8View => Some(Kind::Categorical),
        Dictionary(_, v) => infer_kind(v).filter(|k| *k == Kind::Categorical),
        _ => None,
    }
}

fn check_castable(name: &str, dt: &DataType, kind: Kind) -> Result<(), TrainError> {
    use DataType::*;
    let nested_or_binary = matches!(
        dt,
        List(_)
            | LargeList(_)
            | ListView(_)
            | LargeListView(_)
            | FixedSizeList(..)
            | Struct(_)
            | Map(..)
            | Union(..)
            | Binary
            | LargeBinary
            | BinaryView
            | FixedSizeBinary(_)
            | Null
    );
    let target = match kind {
        Kind::Numeric => Float64,
        Kind::Categorical => Utf8,
    };
    if nested_or_binary || !arrow::compute::can_cast_types(dt, &target) {
        return Err(TrainError::Column {
            column: name.to_string(),
            message: format!(
                "type {dt} cannot be a {} model input",
                match kind {
                    Kind::Numeric => "numeric",
                    Kind::Categorical => "categorical",
                }
            ),
        });
    }
    Ok(())
}

/// Streaming statistics of the training split, turned into an [`Encoder`] by `finish`.
#[derive(Debug)]
pub struct EncoderFitter {
    columns: Vec<(String, Kind, DataType)>,
    numeric: Vec<Moments>,
    /// Rows per value, and rows with a null, of each categorical column.
    categorical: Vec<(HashMap<String, u64>, u64)>,
    label_column: String,
    label_type: Option<DataType>,
    classes: HashMap<String, u64>,
    weighted: bool,
    max_categories: usize,
    positive: String,
    rows: u64,
}

/// Weighted mean and variance by West's update (stable for large values such as
/// census weights, unlike sums of squares).
#[derive(Debug, Default, Clone, Copy)]
struct Moments {
    weight: f64,
    mean: f64,
    m2: f64,
    missing: u64,
}

impl Moments {
    fn push(&mut self, x: f64, w: f64) {
        if w <= 0.0 {
            return;
        }
        self.weight += w;
        let delta = x - self.mean;
        self.mean += delta * (w / self.weight);
        self.m2 += w * delta * (x - self.mean);
    }
}

impl EncoderFitter {
    pub fn new(spec: &Pipeline, columns: Vec<(String, Kind, DataType)>) -> Self {
        let n = columns.len();
        Self {
            columns,
            numeric: vec![Moments::default(); n],
            categorical: vec![(HashMap::new(), 0); n],
            label_column: spec.label.column.clone(),
            label_type: None,
            classes: HashMap::new(),
            weighted: spec.train.sample_weights,
            max_categories: usize::try_from(spec.train.max_categories).unwrap_or(usize::MAX),
            positive: spec.label.positive.as_text(),
            rows: 0,
        }
    }

    /// The columns a batch must hold: the features, the label and `sample_weight`.
    pub fn needed_columns(&self) -> Vec<String> {
        let mut v: Vec<String> = self.columns.iter().map(|c| c.0.clone()).collect();
        v.push(self.label_column.clone());
        v.push(WEIGHT_COLUMN.to_string());
        v
    }

    /// Adds a batch of the training split; `context` names its shard in errors.
    pub fn update(&mut self, batch: &RecordBatch, context: &str) -> Result<(), TrainError> {
        let weights = row_weights(batch, self.weighted, context)?;
        let label = column(batch, &self.label_column, context)?;
        self.label_type
            .get_or_insert_with(|| label.data_type().clone());
        let text = label_text(&label, &self.label_column, context)?;
        for i in 0..text.len() {
            *self.classes.entry(text.value(i).to_string()).or_default() += 1;
        }
        for (k, (name, kind, _)) in self.columns.iter().enumerate() {
            let array = column(batch, name, context)?;
            match kind {
                Kind::Numeric => {
                    let values = as_f64(&array, name, context)?;
                    let m = &mut self.numeric[k];
                    for (i, w) in weights.iter().enumerate() {
                        let x = values.is_valid(i).then(|| values.value(i));
                        match x {
                            Some(x) if x.is_finite() => m.push(x, *w),
                            Some(x) if x.is_infinite() => {
                                return Err(infinite(name, context, i));
                            }
                            _ => m.missing += 1,
                        }
                    }
                }
                Kind::Categorical => {
                    let values = as_text(&array, name, context)?;
                    let (counts, nulls) = &mut self.categorical[k];
                    for i in 0..values.len() {
                        if values.is_null(i) {
                            *nulls += 1;
                            continue;
                        }
                        // look up by &str first: most rows repeat a known value
                        let s = values.value(i);
                        if let Some(c) = counts.get_mut(s) {
                            *c += 1;
                        } else {
                            counts.insert(s.to_string(), 1);
                        }
                    }
                }
            }
        }
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    pub fn finish(mut self, context: &str) -> Result<Encoder, TrainError> {
        if self.rows == 0 {
            return Err(TrainError::Usage(format!(
                "{context}: the training split is empty; there is nothing to train on"
            )));
        }
        let label_type = self.label_type.expect("rows were seen");
        let mut classes: Vec<String> = self.classes.keys().cloned().collect();
        if classes.len() < 2 {
            return Err(TrainError::Column {
                column: self.label_column,
                message: format!(
                    "{context}: the label has one class only in the training split ({}); a classifier needs two or more",
                    classes.first().map(String::as_str).unwrap_or("")
                ),
            });
        }
        if label_type.is_integer() {
            classes.sort_by_key(|c| c.parse::<i128>().unwrap_or(i128::MAX));
        } else {
            classes.sort();
        }
        let Some(mut positive) = classes.iter().position(|c| *c == self.positive) else {
            return Err(TrainError::Column {
                column: self.label_column,
                message: format!(
                    "{context}: the positive class `{}` (label.positive) is not among the training split's classes {classes:?}",
                    self.positive
                ),
            });
        };
        if classes.len() == 2 && positive == 0 {
            classes.swap(0, 1);
            positive = 1;
        }
        let mut features = Vec::with_capacity(self.columns.len());
        for (k, (name, kind, dt)) in self.columns.into_iter().enumerate() {
            let encoding = match kind {
                Kind::Numeric => {
                    let m = self.numeric[k];
                    let var = if m.weight > 0.0 { m.m2 / m.weight } else { 0.0 };
                    let std = var.max(0.0).sqrt();
                    // a constant column (or one with no usable value) is centred, not scaled
                    let std = if std > 1e-12 * m.mean.abs().max(1.0) {
                        std
                    } else {
                        1.0
                    };
                    Encoding::Numeric {
                        mean: m.mean,
                        std,
                        missing_indicator: m.missing > 0,
                    }
                }
                Kind::Categorical => {
                    let (counts, nulls) = std::mem::take(&mut self.categorical[k]);
                    let mut counts: Vec<(Option<String>, u64)> =
                        counts.into_iter().map(|(v, n)| (Some(v), n)).collect();
                    if nulls > 0 {
                        counts.push((None, nulls));
                    }
                    // most frequent first; ties by value, so the order is the same every run
                    counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
                    counts.truncate(self.max_categories);
                    Encoding::Categorical {
                        categories: counts.into_iter().map(|(v, _)| v).collect(),
                    }
                }
            };
            features.push(Feature {
                name,
                data_type: dt.to_string(),
                encoding,
            });
        }
        let width = features.iter().map(Feature::width).sum();
        Ok(Encoder {
            schema_version: ENCODER_SCHEMA_VERSION,
            label: LabelEncoding {
                column: self.label_column,
                data_type: label_type.to_string(),
                classes,
                positive,
            },
            features,
            width,
            sample_weights: self.weighted,
            id_column: None,
            protected_attributes: Vec::new(),
        })
    }
}

/// Rows of a batch encoded for the model.
#[derive(Debug, Default, Clone)]
pub struct Encoded {
    /// Row-major, `rows × width`.
    pub x: Vec<f32>,
    /// Class index per row (empty when the batch was encoded without labels).
    pub y: Vec<u32>,
    /// Weight per row (1 when training is unweighted).
    pub w: Vec<f32>,
}

impl Encoded {
    pub fn rows(&self) -> usize {
        self.w.len()
    }

    pub fn append(&mut self, other: Encoded) {
        self.x.extend(other.x);
        self.y.extend(other.y);
        self.w.extend(other.w);
    }
}

impl Encoder {
    /// Every column `encode` reads (features, and the label and weight when `labels`).
    pub fn needed_columns(&self, labels: bool) -> Vec<String> {
        let mut v: Vec<String> = self.features.iter().map(|f| f.name.clone()).collect();
        if labels {
            v.push(self.label.column.clone());
            v.push(WEIGHT_COLUMN.to_string());
        }
        v
    }

    /// Checks that `schema` holds every feature in a type this encoder can read.
    pub fn check_schema(&self, schema: &Schema, context: &str) -> Result<(), TrainError> {
        for f in &self.features {
            let field = schema
                .field_with_name(&f.name)
                .map_err(|_| TrainError::Column {
                    column: f.name.clone(),
                    message: format!(
                        "{context} has no such column, but the model was trained with it as an input"
                    ),
                })?;
            let kind = match f.encoding {
                Encoding::Numeric { .. } => Kind::Numeric,
                Encoding::Categorical { .. } => Kind::Categorical,
            };
            let dt = field.data_type();
            if dt.to_string() != f.data_type
                && (kind == Kind::Categorical || infer_kind(dt) != Some(Kind::Numeric))
            {
                return Err(TrainError::Column {
                    column: f.name.clone(),
                    message: format!(
                        "{context} has it as {dt}, but the model was trained on {}",
                        f.data_type
                    ),
                });
            }
            check_castable(&f.name, dt, kind)?;
        }
        Ok(())
    }

    /// Names of the model's encoded inputs, in order.
    pub fn input_names(&self) -> Vec<String> {
        self.features
            .iter()
            .flat_map(Feature::input_names)
            .collect()
    }

    /// Encodes a batch. With `labels`, also the class index and weight of every row
    /// (a label value the training split did not have is an error).
    pub fn encode(
        &self,
        batch: &RecordBatch,
        labels: bool,
        context: &str,
    ) -> Result<Encoded, TrainError> {
        let rows = batch.num_rows();
        let mut x = vec![0f32; rows * self.width];
        let mut offset = 0;
        for f in &self.features {
            let array = column(batch, &f.name, context)?;
            match &f.encoding {
                Encoding::Numeric {
                    mean,
                    std,
                    missing_indicator,
                } => {
                    let values = as_f64(&array, &f.name, context)?;
                    for i in 0..rows {
                        let row = &mut x[i * self.width + offset..];
                        let v = values.is_valid(i).then(|| values.value(i));
                        match v {
                            Some(v) if v.is_finite() => row[0] = ((v - mean) / std) as f32,
                            Some(v) if v.is_infinite() => {
                                return Err(infinite(&f.name, context, i));
                            }
                            _ => {
                                row[0] = 0.0;
                                if *missing_indicator {
                                    row[1] = 1.0;
                                }
                            }
                        }
                    }
                }
                Encoding::Categorical { categories } => {
                    let values = as_text(&array, &f.name, context)?;
                    let index: HashMap<Option<&str>, usize> = categories
                        .iter()
                        .enumerate()
                        .map(|(k, c)| (c.as_deref(), k))
                        .collect();
                    let unknown = categories.len();
                    for i in 0..rows {
                        let v = values.is_valid(i).then(|| values.value(i));
                        let k = index.get(&v).copied().unwrap_or(unknown);
                        x[i * self.width + offset + k] = 1.0;
                    }
                }
            }
            offset += f.width();
        }
        let (y, w) = if labels {
            let label = column(batch, &self.label.column, context)?;
            let text = label_text(&label, &self.label.column, context)?;
            let index: HashMap<&str, u32> = self
                .label
                .classes
                .iter()
                .enumerate()
                .map(|(k, c)| (c.as_str(), k as u32))
                .collect();
            let mut y = Vec::with_capacity(rows);
            for i in 0..rows {
                let v = text.value(i);
                y.push(*index.get(v).ok_or_else(|| TrainError::Column {
                    column: self.label.column.clone(),
                    message: format!(
                        "{context}: row {i} has class `{v}`, which the training split did not have (classes {:?})",
                        self.label.classes
                    ),
                })?);
            }
            let w = row_weights(batch, self.sample_weights, context)?
                .into_iter()
                .map(|w| w as f32)
                .collect();
            (y, w)
        } else {
            (Vec::new(), vec![1.0; rows])
        };
        Ok(Encoded { x, y, w })
    }
}

fn column(batch: &RecordBatch, name: &str, context: &str) -> Result<ArrayRef, TrainError> {
    batch
        .column_by_name(name)
        .cloned()
        .ok_or_else(|| TrainError::Column {
            column: name.to_string(),
            message: format!("{context} has no such column"),
        })
}

/// Each row's weight: `sample_weight` when training is weighted, else 1.
fn row_weights(batch: &RecordBatch, weighted: bool, context: &str) -> Result<Vec<f64>, TrainError> {
    if !weighted {
        return Ok(vec![1.0; batch.num_rows()]);
    }
    let array = column(batch, WEIGHT_COLUMN, context)?;
    let w = as_f64(&array, WEIGHT_COLUMN, context)?;
    (0..w.len())
        .map(|i| {
            let v = w.is_valid(i).then(|| w.value(i));
            match v {
                Some(v) if v.is_finite() && v >= 0.0 => Ok(v),
                other => Err(TrainError::Column {
                    column: WEIGHT_COLUMN.into(),
                    message: format!(
                        "{context}: row {i} has weight {}, not a finite number of at least 0",
                        other.map_or("null".into(), |v| v.to_string())
                    ),
                }),
            }
        })
        .collect()
}

fn label_text(
    label: &ArrayRef,
    name: &str,
    context: &str,
) -> Result<arrow::array::StringArray, TrainError> {
    let text = as_text(label, name, context)?;
    if text.null_count() > 0 {
        let row = (0..text.len()).find(|i| text.is_null(*i)).unwrap_or(0);
        return Err(TrainError::Column {
            column: name.to_string(),
            message: format!(
                "{context}: row {row} has no label (null); a model cannot learn from or be scored on it"
            ),
        });
    }
    Ok(text)
}

fn as_f64(
    array: &ArrayRef,
    name: &str,
    context: &str,
) -> Result<arrow::array::Float64Array, TrainError> {
    let a = cast(array, &DataType::Float64).map_err(|e| TrainError::Column {
        column: name.to_string(),
        message: format!("{context}: cannot read as numbers: {e}"),
    })?;
    Ok(a.as_primitive::<Float64Type>().clone())
}

fn as_text(
    array: &ArrayRef,
    name: &str,
    context: &str,
) -> Result<arrow::array::StringArray, TrainError> {
    let a = cast(array, &DataType::Utf8).map_err(|e| TrainError::Column {
        column: name.to_string(),
        message: format!("{context}: cannot read as text: {e}"),
    })?;
    Ok(a.as_string::<i32>().clone())
}

fn infinite(name: &str, context: &str, row: usize) -> TrainError {
    TrainError::Column {
        column: name.to_string(),
        message: format!(
            "{context}: row {row} is infinite; strata imputes null and NaN but cannot standardise an infinite value (clip or null it in the source)"
        ),
    }
}

#[cfg(test)]
mod tests;
