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

/// One cell's rows, column by column, as kept for the bootstrap and ROC AUC: 9 bytes a
/// row for binary labels with scores and no weights, 17 with weights, 4 more with
/// classes. A row's log-loss term and calibration bin are recomputed from its score;
/// the bootstrap keeps the terms of a bounded number of rows ([`Rows::log_losses`]).
#[derive(Debug, Clone, Default)]
pub(crate) struct Rows {
    /// bit 0: the label is positive; bit 1: the prediction is.
    pub code: Vec<u8>,
    /// Scores: empty when none were given.
    pub score: Vec<f64>,
    /// Weights: empty while every weight is 1.
    pub w: Vec<f64>,
    /// The label's and the prediction's class (indices into the accumulator's classes):
    /// empty unless pushed with classes.
    pub classes: Vec<(u16, u16)>,
}

/// sklearn's clipping of probabilities in `log_loss` (`eps="auto"`: float64's epsilon).
const LOG_LOSS_EPS: f64 = f64::EPSILON;

/// Bit 0 of a row's code: the label is positive; bit 1: the prediction is.
pub(crate) fn code(y: bool, pred: bool) -> u8 {
    u8::from(y) | (u8::from(pred) << 1)
}

impl Rows {
    pub fn len(&self) -> usize {
        self.code.len()
    }

    /// Appends a row. A column left empty so far is filled in for the earlier rows
    /// (score 0, weight 1, class 0) the first time a row needs it.
    pub fn push(&mut self, code: u8, w: f64, score: Option<f64>, classes: Option<(u16, u16)>) {
        let n = self.code.len();
        push_column(&mut self.score, n, score, 0.0);
        push_column(&mut self.w, n, (w != 1.0).then_some(w), 1.0);
        push_column(&mut self.classes, n, classes, (0, 0));
        self.code.push(code);
    }

    #[inline]
    pub fn w(&self, i: usize) -> f64 {
        if self.w.is_empty() { 1.0 } else { self.w[i] }
    }

    #[inline]
    pub fn score(&self, i: usize) -> Option<f64> {
        self.score.get(i).copied()
    }

    /// Row `i`'s log-loss term (0 without scores): sklearn's, clipped to `LOG_LOSS_EPS`.
    #[inline]
    pub fn log_loss(&self, i: usize) -> f64 {
        match self.score(i) {
            Some(p) => {
                let c = p.clamp(LOG_LOSS_EPS, 1.0 - LOG_LOSS_EPS);
                if self.code[i] & 1 == 1 {
                    -c.ln()
                } else {
                    -(1.0 - c).ln()
                }
            }
            None => 0.0,
        }
    }

    /// The log-loss terms of the first `at_most` rows (none without scores), for the
    /// bootstrap: each replicate counts about 63 % of the rows, so a thousand
    /// replicates would take each row's logarithm hundreds of times.
    pub fn log_losses(&self, at_most: usize) -> Vec<f64> {
        if self.score.is_empty() {
            return Vec::new();
        }
        (0..self.len().min(at_most))
            .map(|i| self.log_loss(i))
            .collect()
    }

    /// Gives back the room the columns grew into (realloc in place, for large ones).
    pub fn shrink_to_fit(&mut self) {
        self.code.shrink_to_fit();
        self.score.shrink_to_fit();
        self.w.shrink_to_fit();
        self.classes.shrink_to_fit();
    }

    /// The rows' indices in ascending score order, ties in row order (as a stable sort);
    /// 4 bytes a row, sorted in place.
    pub fn by_score(&self) -> Vec<u32> {
        let s = &self.score;
        let mut idx: Vec<u32> = (0..s.len() as u32).collect();
        idx.sort_unstable_by(|&a, &b| s[a as usize].total_cmp(&s[b as usize]).then(a.cmp(&b)));
        idx
    }
}

/// Appends row `n`'s value to a column kept only once some row needs it: the first
/// such row fills in the `default` for the rows before it.
fn push_column<T: Clone>(column: &mut Vec<T>, n: usize, value: Option<T>, default: T) {
    match value {
        Some(v) => {
            column.resize(n, default); // a no-op once the column is kept
            column.push(v);
        }
        None if !column.is_empty() => column.push(default),
        None => {}
    }
}

impl Tally {
    /// Row `i` of `rows`, counted `times`.
    #[inline]
    pub(crate) fn add(&mut self, rows: &Rows, i: usize, times: f64) {
        self.add_with(rows, i, times, rows.log_loss(i));
    }

    /// [`Tally::add`] with row `i`'s log-loss term (`Rows::log_loss`) given.
    #[inline]
    pub(crate) fn add_with(&mut self, rows: &Rows, i: usize, times: f64, log_loss: f64) {
        let code = rows.code[i];
        let w = rows.w(i) * times;
        self.rows += times;
        self.weight += w;
        match code {
            0 => self.tn += w,
            1 => self.fn_ += w,
            2 => self.fp += w,
            _ => self.tp += w,
        }
        let y = f64::from(code & 1);
        // without scores: score 0, log loss 0, bin 0 (meaningless, and unused); a score
        // is in [0, 1], so truncation is its floor
        let (score, bin) = match rows.score(i) {
            Some(p) => (p, ((p * ECE_BINS as f64) as usize).min(ECE_BINS - 1)),
            None => (0.0, 0),
        };
        self.log_loss += w * log_loss;
        // (p - t)², as sklearn's brier_score_loss
        self.brier += w * ((score - y) * (score - y));
        let b = &mut self.bins[bin];
        b[0] += w;
        b[1] += w * score;
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
    sorted_roc_auc(rows.iter().copied())
}

/// [`roc_auc`] of the rows of several cells, each given in score order
/// ([`Rows::by_score`]): merged as a stable sort of the cells' rows, one after another,
/// would order them (by score, then cell, then row), so the sums run in the same order,
/// without a copy of the rows.
pub(crate) fn roc_auc_of_cells(cells: &[(&Rows, &[u32])]) -> Result<f64, String> {
    use std::cmp::{Ordering, Reverse};
    use std::collections::BinaryHeap;
    struct Head(f64, usize);
    impl PartialEq for Head {
        fn eq(&self, o: &Self) -> bool {
            self.cmp(o) == Ordering::Equal
        }
    }
    impl Eq for Head {}
    impl PartialOrd for Head {
        fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
            Some(self.cmp(o))
        }
    }
    impl Ord for Head {
        fn cmp(&self, o: &Self) -> Ordering {
            self.0.total_cmp(&o.0).then(self.1.cmp(&o.1))
        }
    }
    let mut next = vec![0usize; cells.len()];
    let mut heap: BinaryHeap<Reverse<Head>> = cells
        .iter()
        .enumerate()
        .filter_map(|(c, (rows, order))| {
            order
                .first()
                .map(|&i| Reverse(Head(rows.score[i as usize], c)))
        })
        .collect();
    let merged = std::iter::from_fn(|| {
        let Reverse(Head(score, c)) = heap.pop()?;
        let (rows, order) = cells[c];
        let i = order[next[c]] as usize;
        next[c] += 1;
        if let Some(&j) = order.get(next[c]) {
            heap.push(Reverse(Head(rows.score[j as usize], c)));
        }
        Some((score, rows.code[i] & 1 == 1, rows.w(i)))
    });
    sorted_roc_auc(merged)
}

/// The area over (score, positive, weight) rows in ascending score order.
fn sorted_roc_auc(rows: impl Iterator<Item = (f64, bool, f64)>) -> Result<f64, String> {
    let (mut neg_below, mut area) = (0f64, 0f64);
    let (mut total_pos, mut total_neg) = (0f64, 0f64);
    // the tie group being summed: its score and (positive, negative) weight
    let mut tie: Option<(f64, f64, f64)> = None;
    for (score, positive, w) in rows {
        if positive {
            total_pos += w;
        } else {
            total_neg += w;
        }
        match &mut tie {
            Some((s, pos, neg)) if *s == score => {
                if positive {
                    *pos += w;
                } else {
                    *neg += w;
                }
            }
            _ => {
                if let Some((_, pos, neg)) = tie {
                    area += pos * (neg_below + neg / 2.0);
                    neg_below += neg;
                }
                tie = Some(if positive {
                    (score, 0.0 + w, 0.0)
                } else {
                    (score, 0.0, 0.0 + w)
                });
            }
        }
    }
    if let Some((_, pos, neg)) = tie {
        area += pos * (neg_below + neg / 2.0);
    }
    if total_pos <= 0.0 || total_neg <= 0.0 {
        return Err("ROC AUC needs both positive and negative labels".into());
    }
    Ok(area / (total_pos * total_neg))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Weights and scores that start after the first rows are filled in for the earlier
    /// ones (weight 1), and every column lines up with its row: the sums by hand.
    #[test]
    fn columns_started_late_line_up_with_their_rows() {
        let mut rows = Rows::default();
        rows.push(code(true, true), 1.0, Some(0.9), None);
        rows.push(code(false, true), 1.0, Some(0.6), None);
        rows.push(code(false, false), 3.0, Some(0.2), None);
        rows.push(code(true, false), 2.0, Some(0.4), None);
        assert_eq!((rows.w.len(), rows.score.len()), (4, 4));
        let mut t = Tally::default();
        for i in 0..rows.len() {
            t.add(&rows, i, 1.0);
        }
        assert_eq!((t.rows, t.weight), (4.0, 7.0));
        assert_eq!((t.tp, t.fp, t.tn, t.fn_), (1.0, 1.0, 3.0, 2.0));
        // Σ w (p - y)² = 0.1² + 0.6² + 3 · 0.2² + 2 · 0.6²
        assert!((t.brier - 1.21).abs() < 1e-12, "{}", t.brier);
        // Σ w · log loss = -(ln 0.9 + ln 0.4 + 3 ln 0.8 + 2 ln 0.4)
        let want = -(0.9f64.ln() + 0.4f64.ln() + 3.0 * 0.8f64.ln() + 2.0 * 0.4f64.ln());
        assert!((t.log_loss - want).abs() < 1e-12, "{}", t.log_loss);
        // calibration bins floor(10 p): 9, 6, 2, 4, by weight
        let by_bin: Vec<f64> = t.bins.iter().map(|b| b[0]).collect();
        assert_eq!(by_bin, [0.0, 0.0, 3.0, 0.0, 2.0, 0.0, 1.0, 0.0, 0.0, 1.0]);
        // the bootstrap's kept terms: the first rows only, the same values
        assert_eq!(rows.log_losses(2), vec![-(0.9f64.ln()), -(0.4f64.ln())]);
        assert!(Rows::default().log_losses(2).is_empty());
    }

    /// A score of exactly 1 falls in the last calibration bin, and a certain wrong
    /// answer's log loss is clipped as sklearn clips it (-ln ε), not infinite.
    #[test]
    fn edge_scores_stay_in_range() {
        let mut rows = Rows::default();
        rows.push(code(false, true), 1.0, Some(1.0), None);
        let mut t = Tally::default();
        t.add(&rows, 0, 1.0);
        assert_eq!(t.bins[ECE_BINS - 1][0], 1.0);
        assert_eq!(t.log_loss, -(f64::EPSILON.ln()));
    }

    /// Two cells merged in score order: the positive at 0.9 (weight 1) is above all 5
    /// units of negative weight; the positive at 0.4 (weight 2) is above 0.2 (weight 3)
    /// and tied with 0.4 (weight 1, counted half): (5 + 6 + 1) / (3 · 5) = 0.8.
    #[test]
    fn roc_auc_merges_cells_in_score_order_with_ties_counted_half() {
        let mut a = Rows::default();
        a.push(code(true, true), 1.0, Some(0.9), None);
        a.push(code(false, true), 1.0, Some(0.6), None);
        let mut b = Rows::default();
        b.push(code(false, false), 3.0, Some(0.2), None);
        b.push(code(true, false), 2.0, Some(0.4), None);
        b.push(code(false, false), 1.0, Some(0.4), None);
        let (oa, ob) = (a.by_score(), b.by_score());
        assert_eq!(ob, vec![0, 1, 2]);
        let auc = roc_auc_of_cells(&[(&a, &oa), (&b, &ob)]).unwrap();
        assert!((auc - 0.8).abs() < 1e-12, "{auc}");
        assert!(roc_auc_of_cells(&[(&a, &oa[..1])]).is_err());
    }
}
