//! Sufficient statistics: what a group's metrics are computed from. Every field is a
//! (weighted) sum over rows, so a group's tally is the sum of its cells' and a bootstrap
//! replicate's is a sum over resampled rows; only ROC AUC needs the scores themselves.

use serde::Serialize;

/// Equal-width calibration bins on [0, 1]: bin `min(floor(10 p), 9)`.
pub const ECE_BINS: usize = 10;

/// Weighted sums over a set of rows.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Tally {
    pub rows: f64,
    pub weight: f64,
    pub tp: f64,
    pub fp: f64,
    pub tn: f64,
    pub fn_: f64,
    /// Σ w · log loss, Σ w · (p - y)², and per calibration bin Σ w, Σ w·p, Σ w·y; only
    /// meaningful when scores were given.
    pub log_loss: f64,
    pub brier: f64,
    pub bins: [[f64; 3]; ECE_BINS],
}

/// One row's contribution, as kept for the bootstrap: 32 bytes (the Brier term is
/// recomputed from the score, a subtraction and a product, rather than kept).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Row {
    /// bit 0: the label is positive; bit 1: the prediction is.
    pub code: u8,
    pub bin: u8,
    /// The label's and the prediction's class (indices into the accumulator's classes),
    /// for multi-class labels.
    pub y_class: u16,
    pub p_class: u16,
    pub w: f64,
    pub log_loss: f64,
    pub score: f64,
}

const _: () = assert!(size_of::<Row>() == 32);

/// sklearn's clipping of probabilities in `log_loss` (`eps="auto"`: float64's epsilon).
const LOG_LOSS_EPS: f64 = f64::EPSILON;

impl Row {
    pub fn new(y: bool, pred: bool, w: f64, score: Option<f64>) -> Self {
        let (log_loss, bin, s) = match score {
            Some(p) => {
                let c = p.clamp(LOG_LOSS_EPS, 1.0 - LOG_LOSS_EPS);
                let ll = if y { -c.ln() } else { -(1.0 - c).ln() };
                let bin = ((p * ECE_BINS as f64).floor() as usize).min(ECE_BINS - 1);
                (ll, bin as u8, p)
            }
            None => (0.0, 0, 0.0),
        };
        Self {
            code: u8::from(y) | (u8::from(pred) << 1),
            bin,
            y_class: 0,
            p_class: 0,
            w,
            log_loss,
            score: s,
        }
    }
}

impl Tally {
    #[inline]
    pub(crate) fn add(&mut self, r: &Row, times: f64) {
        let w = r.w * times;
        self.rows += times;
        self.weight += w;
        match r.code {
            0 => self.tn += w,
            1 => self.fn_ += w,
            2 => self.fp += w,
            _ => self.tp += w,
        }
        self.log_loss += w * r.log_loss;
        let y = f64::from(r.code & 1);
        // (p - t)², as sklearn's brier_score_loss (meaningless, and unused, without scores)
        self.brier += w * ((r.score - y) * (r.score - y));
        let b = &mut self.bins[r.bin as usize];
        b[0] += w;
        b[1] += w * r.score;
        b[2] += w * y;
    }

    pub(crate) fn merge(&mut self, o: &Tally) {
        self.rows += o.rows;
        self.weight += o.weight;
        self.tp += o.tp;
        self.fp += o.fp;
        self.tn += o.tn;
        self.fn_ += o.fn_;
        self.log_loss += o.log_loss;
        self.brier += o.brier;
        for (a, b) in self.bins.iter_mut().zip(&o.bins) {
            for k in 0..3 {
                a[k] += b[k];
            }
        }
    }
}

/// A metric's value, or why it has none.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Value {
    pub value: Option<f64>,
    /// The bootstrap interval, when replicates were drawn and the metric is defined.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lower: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upper: Option<f64>,
    /// Why `value` is null (e.g. "no positive labels").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub undefined: Option<String>,
    /// The bootstrap replicates' values, by replicate (`None` where undefined): what
    /// paired comparisons between models are drawn from. Not written out.
    #[serde(skip)]
    pub samples: Option<std::sync::Arc<Vec<Option<f64>>>>,
}

impl Value {
    pub fn of(v: Result<f64, String>) -> Self {
        match v {
            Ok(v) if v.is_finite() => Self {
                value: Some(v),
                lower: None,
                upper: None,
                undefined: None,
                samples: None,
            },
            Ok(_) => Self::undefined("not a finite number".into()),
            Err(why) => Self::undefined(why),
        }
    }

    pub fn undefined(why: String) -> Self {
        Self {
            value: None,
            lower: None,
            upper: None,
            undefined: Some(why),
            samples: None,
        }
    }
}

pub use strata_spec::EVAL_METRICS as METRICS;

/// Metrics that need scores.
pub const SCORE_METRICS: [&str; 4] = [
    "roc_auc",
    "log_loss",
    "brier_score",
    "expected_calibration_error",
];

fn ratio(num: f64, den: f64, why: &str) -> Result<f64, String> {
    if den > 0.0 {
        Ok(num / den)
    } else {
        Err(why.to_string())
    }
}

impl Tally {
    /// One metric from the sums (ROC AUC is not: it needs the scores).
    pub fn metric(&self, name: &str) -> Result<f64, String> {
        let pos = self.tp + self.fn_;
        let neg = self.fp + self.tn;
        let no_rows = "no rows (or every weight 0)";
        let no_pos = "no positive labels: the rate is undefined";
        let no_neg = "no negative labels: the rate is undefined";
        match name {
            "count" => Ok(self.rows),
            "weighted_count" => Ok(self.weight),
            "accuracy" => ratio(self.tp + self.tn, self.weight, no_rows),
            "selection_rate" => ratio(self.tp + self.fp, self.weight, no_rows),
            "true_positive_rate" => ratio(self.tp, pos, no_pos),
            "false_negative_rate" => ratio(self.fn_, pos, no_pos),
            "false_positive_rate" => ratio(self.fp, neg, no_neg),
            "true_negative_rate" => ratio(self.tn, neg, no_neg),
            "balanced_accuracy" => {
                // sklearn: the mean recall of the classes present
                match (pos > 0.0, neg > 0.0) {
                    (true, true) => Ok((self.tp / pos + self.tn / neg) / 2.0),
                    (true, false) => Ok(self.tp / pos),
                    (false, true) => Ok(self.tn / neg),
                    (false, false) => Err(no_rows.into()),
                }
            }
            "precision" => ratio(
                self.tp,
                self.tp + self.fp,
                "no positive predictions: precision is undefined",
            ),
            "f1" => ratio(
                2.0 * self.tp,
                2.0 * self.tp + self.fp + self.fn_,
                "no positive labels or predictions: F1 is undefined",
            ),
            "log_loss" => ratio(self.log_loss, self.weight, no_rows),
            "brier_score" => ratio(self.brier, self.weight, no_rows),
            "expected_calibration_error" => {
                if self.weight <= 0.0 {
                    return Err(no_rows.into());
                }
                Ok(self
                    .bins
                    .iter()
                    .filter(|b| b[0] > 0.0)
                    .map(|b| b[0] / self.weight * (b[1] / b[0] - b[2] / b[0]).abs())
                    .sum())
            }
            other => Err(format!(
                "`{other}` is not a metric strata computes from counts"
            )),
        }
    }
}

/// ROC AUC as scikit-learn computes it with sample weights: the area under the
/// weighted ROC curve, ties between scores counted half (the trapezoid rule).
pub fn roc_auc(rows: &mut [(f64, bool, f64)]) -> Result<f64, String> {
    rows.sort_by(|a, b| a.0.total_cmp(&b.0));
    sorted_roc_auc(rows, |r| *r)
}

/// [`roc_auc`] of rows held elsewhere, as references: 8 bytes a row instead of 24,
/// sorted the same (stable, by score), so the sums run in the same order.
pub(crate) fn roc_auc_of_rows(rows: &mut [&Row]) -> Result<f64, String> {
    rows.sort_by(|a, b| a.score.total_cmp(&b.score));
    sorted_roc_auc(rows, |r| (r.score, r.code & 1 == 1, r.w))
}

/// The area over rows sorted by score; `get` gives a row's (score, positive, weight).
fn sorted_roc_auc<T>(rows: &[T], get: impl Fn(&T) -> (f64, bool, f64)) -> Result<f64, String> {
    let (mut neg_below, mut area) = (0f64, 0f64);
    let (total_pos, total_neg) = rows.iter().fold((0.0, 0.0), |(p, n), r| {
        let (_, positive, w) = get(r);
        if positive { (p + w, n) } else { (p, n + w) }
    });
    if total_pos <= 0.0 || total_neg <= 0.0 {
        return Err("ROC AUC needs both positive and negative labels".into());
    }
    let mut i = 0;
    while i < rows.len() {
        let score = get(&rows[i]).0;
        let mut j = i;
        let (mut pos, mut neg) = (0.0, 0.0);
        while j < rows.len() && get(&rows[j]).0 == score {
            let (_, positive, w) = get(&rows[j]);
            if positive {
                pos += w;
            } else {
                neg += w;
            }
            j += 1;
        }
        area += pos * (neg_below + neg / 2.0);
        neg_below += neg;
        i = j;
    }
    Ok(area / (total_pos * total_neg))
}
