//! The rows of an evaluation as they arrive, kept per cell (one value of every
//! protected attribute), from Arrow batches or one row at a time.

use std::collections::BTreeMap;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Float64Array};
use arrow::compute::cast;
use arrow::datatypes::DataType;

use crate::MetricsError;
use crate::tally::{self, Rows};

/// One batch of predictions: group columns (any type castable to text), the label and
/// prediction as booleans (true = positive), optional scores in [0, 1] and weights
/// (finite, >= 0), each with its column's name for errors, and optionally each row's
/// label and prediction classes (for multi-class labels).
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    pub groups: &'a [(String, ArrayRef)],
    pub y_true: &'a BooleanArray,
    pub y_pred: &'a (String, BooleanArray),
    pub score: Option<&'a (String, Float64Array)>,
    pub weight: Option<&'a (String, Float64Array)>,
    pub classes: Option<&'a [(u16, u16)]>,
}

/// Rows of every cell, as they arrive.
#[derive(Debug, Default)]
pub struct Accumulator {
    pub(crate) cells: BTreeMap<Vec<Option<String>>, Rows>,
    pub(crate) has_scores: Option<bool>,
    /// Every class seen in labels and predictions (their text), when pushed with
    /// classes; more than two make the evaluation multi-class.
    pub(crate) classes: Vec<String>,
    /// Rows skipped because their label was null.
    pub null_labels: u64,
    pub rows: u64,
}

impl Accumulator {
    /// The index of a class by its text, added on first sight.
    pub fn class_id(&mut self, class: &str) -> Result<u16, MetricsError> {
        if let Some(i) = self.classes.iter().position(|c| c == class) {
            return Ok(i as u16);
        }
        if self.classes.len() >= usize::from(u16::MAX) {
            return Err(MetricsError::Usage(format!(
                "more than {} classes: not a classification label",
                u16::MAX
            )));
        }
        self.classes.push(class.to_string());
        Ok((self.classes.len() - 1) as u16)
    }

    /// Gives back the room each cell's columns grew into while rows were pushed (up to
    /// as much again as they hold).
    pub fn shrink_to_fit(&mut self) {
        self.cells.values_mut().for_each(Rows::shrink_to_fit);
    }

    /// The classes seen, in order of first sight.
    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    /// One row: its group values (one per attribute; `None` is missing), label,
    /// prediction, weight and, where given, the positive class's score.
    pub fn push(
        &mut self,
        key: Vec<Option<String>>,
        y: bool,
        pred: bool,
        w: f64,
        score: Option<f64>,
    ) {
        self.has_scores.get_or_insert(score.is_some());
        self.rows += 1;
        self.cells
            .entry(key)
            .or_default()
            .push(tally::code(y, pred), w, score, None);
    }

    /// A batch (see [`Batch`]); `context` names the file in errors. Rows with a null
    /// label are counted, not used.
    pub fn push_arrays(&mut self, batch: Batch<'_>, context: &str) -> Result<(), MetricsError> {
        let Batch {
            groups,
            y_true,
            y_pred,
            score,
            weight,
            classes,
        } = batch;
        let text: Vec<_> = groups
            .iter()
            .map(|(name, a)| {
                cast(a, &DataType::Utf8)
                    .map(|t| t.as_string::<i32>().clone())
                    .map_err(|e| MetricsError::Column {
                        column: name.clone(),
                        message: format!("{context}: cannot read as a group: {e}"),
                    })
            })
            .collect::<Result<_, _>>()?;
        for i in 0..y_true.len() {
            if y_true.is_null(i) {
                self.null_labels += 1;
                continue;
            }
            let bad = |column: &str, what: String| MetricsError::Column {
                column: column.to_string(),
                message: format!("{context}: row {i} {what}"),
            };
            if y_pred.1.is_null(i) {
                return Err(bad(&y_pred.0, "has no prediction (null)".into()));
            }
            let s = match score {
                Some((name, s)) => {
                    let v = s.is_valid(i).then(|| s.value(i));
                    match v {
                        Some(v) if (0.0..=1.0).contains(&v) => Some(v),
                        other => {
                            return Err(bad(
                                name,
                                format!(
                                    "has score {}, not a probability in [0, 1]",
                                    other.map_or("null".into(), |v| v.to_string())
                                ),
                            ));
                        }
                    }
                }
                None => None,
            };
            let w = match weight {
                Some((name, w)) => {
                    let v = w.is_valid(i).then(|| w.value(i));
                    match v {
                        Some(v) if v.is_finite() && v >= 0.0 => v,
                        other => {
                            return Err(bad(
                                name,
                                format!(
                                    "has weight {}, not a finite number of at least 0",
                                    other.map_or("null".into(), |v| v.to_string())
                                ),
                            ));
                        }
                    }
                }
                None => 1.0,
            };
            let key: Vec<Option<String>> = text
                .iter()
                .map(|t| t.is_valid(i).then(|| t.value(i).to_string()))
                .collect();
            let code = tally::code(y_true.value(i), y_pred.1.value(i));
            self.has_scores.get_or_insert(s.is_some());
            self.rows += 1;
            self.cells
                .entry(key)
                .or_default()
                .push(code, w, s, classes.map(|c| c[i]));
        }
        Ok(())
    }
}
