//! The training loop: seeded batch order and dropout, the weighted loss, AdamW, epochs
//! with optional early stopping.
//!
//! Three ChaCha8 streams of the seed (init 1, batch order 2, dropout 3) supply every
//! random number, so a seed fixes the model bit for bit; candle's own RNG is never used.

use std::time::Instant;

use candle_core::{D, Device, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::TrainError;
use crate::encoder::Encoded;
use crate::model::{Mlp, f32_tensor};

pub(crate) const STREAM_INIT: u64 = 1;
const STREAM_ORDER: u64 = 2;
const STREAM_DROPOUT: u64 = 3;

/// Rows scored at once when evaluating (no gradients are kept).
const EVAL_ROWS: usize = 8192;

/// A ChaCha8 generator for one purpose of a seed.
pub(crate) fn rng(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    r.set_stream(stream);
    r
}

/// The cross-entropy of `logits` (`[rows, classes]`) against `targets` (`[rows]`, u32),
/// weighted: `sum(w_i * ce_i) / weight_sum`. Rows of weight 0 add nothing, to the loss
/// or to the gradient.
pub fn weighted_cross_entropy(
    logits: &Tensor,
    targets: &Tensor,
    weights: &Tensor,
    weight_sum: f64,
) -> candle_core::Result<Tensor> {
    let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let picked = logp.gather(&targets.unsqueeze(1)?, 1)?.squeeze(1)?;
    (picked * weights)?
        .sum_all()?
        .affine(-1.0 / weight_sum, 0.0)
}

/// Hyperparameters of one training run.
#[derive(Debug, Clone, Serialize)]
pub struct FitOptions {
    pub seed: u64,
    pub epochs: u64,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub weight_decay: f64,
    pub dropout: f64,
    pub early_stopping_patience: Option<u64>,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
}

/// What one epoch did.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EpochStats {
    pub epoch: u64,
    /// Weighted mean of the batches' losses, with dropout on, as the epoch trained.
    pub train_loss: f64,
    /// Weighted share of rows whose arg-max class was right, as the epoch trained.
    pub train_accuracy: f64,
    /// On the validation split after the epoch, without dropout; `None` without one.
    pub validation_loss: Option<f64>,
    pub validation_accuracy: Option<f64>,
    /// Seconds the epoch's training steps took (evaluation excluded).
    pub seconds: f64,
    pub rows_per_second: f64,
}

/// Told how training goes; the CLI draws progress bars or writes log lines.
pub trait Progress {
    fn epoch_start(&mut self, _epoch: u64, _epochs: u64, _rows: u64) {}
    fn rows_done(&mut self, _rows: u64) {}
    fn epoch_end(&mut self, _stats: &EpochStats) {}
}

/// A [`Progress`] that says nothing.
#[derive(Debug, Default)]
pub struct Quiet;
impl Progress for Quiet {}

/// How training ended.
#[derive(Debug, Clone, Serialize)]
pub struct History {
    pub epochs: Vec<EpochStats>,
    /// The epoch whose weights the model holds (the lowest validation loss with early
    /// stopping; the last otherwise).
    pub best_epoch: u64,
    pub stopped_early: bool,
}

/// Trains `model` on `train` (every row's `w` its weight), evaluating on `validation`.
pub fn fit(
    model: &Mlp,
    train: &Encoded,
    validation: Option<&Encoded>,
    options: &FitOptions,
    progress: &mut dyn Progress,
) -> Result<History, TrainError> {
    let device = model.device().clone();
    let width = model.inputs();
    let hidden = model.hidden();
    let rows = train.rows();
    let mut opt = AdamW::new(
        model.vars(),
        ParamsAdamW {
            lr: options.learning_rate,
            beta1: options.beta1,
            beta2: options.beta2,
            eps: options.eps,
            weight_decay: options.weight_decay,
        },
    )?;
    let mut order_rng = rng(options.seed, STREAM_ORDER);
    let mut dropout_rng = rng(options.seed, STREAM_DROPOUT);
    let keep = 1.0 - options.dropout;
    let scale = (1.0 / keep) as f32;

    let mut order: Vec<u32> = (0..rows as u32).collect();
    let mut history = History {
        epochs: Vec::new(),
        best_epoch: 0,
        stopped_early: false,
    };
    let mut best: Option<(f64, Vec<Tensor>)> = None;
    let mut since_best = 0;
    let mut xb: Vec<f32> = Vec::with_capacity(options.batch_size * width);
    for epoch in 1..=options.epochs {
        progress.epoch_start(epoch, options.epochs, rows as u64);
        let started = Instant::now();
        shuffle(&mut order, &mut order_rng);
        let (mut loss_sum, mut correct, mut weight_total) = (0f64, 0f64, 0f64);
        for chunk in order.chunks(options.batch_size) {
            let b = chunk.len();
            xb.clear();
            let mut yb = Vec::with_capacity(b);
            let mut wb = Vec::with_capacity(b);
            for &i in chunk {
                let i = i as usize;
                xb.extend_from_slice(&train.x[i * width..(i + 1) * width]);
                yb.push(train.y[i]);
                wb.push(train.w[i]);
            }
            let weight_sum: f64 = wb.iter().map(|w| f64::from(*w)).sum();
            if weight_sum <= 0.0 {
                // every row weighs 0: nothing to learn, and no step (Adam's moments
                // would still move the weights on a zero gradient)
                progress.rows_done(b as u64);
                continue;
            }
            let x = f32_tensor(xb.clone(), b, width, &device)?;
            let masks = hidden
                .iter()
                .map(|&h| {
                    let m: Vec<f32> = (0..b * h)
                        .map(|_| {
                            if options.dropout == 0.0 || keep_draw(&mut dropout_rng) < keep {
                                scale
                            } else {
                                0.0
                            }
                        })
                        .collect();
                    f32_tensor(m, b, h, &device)
                })
                .collect::<candle_core::Result<Vec<_>>>()?;
            let y = Tensor::from_vec(yb.clone(), b, &device)?;
            let w = Tensor::from_vec(wb.clone(), b, &device)?;
            let logits = model.logits(&x, &masks)?;
            let loss = weighted_cross_entropy(&logits, &y, &w, weight_sum)?;
            opt.backward_step(&loss)?;
            let l = f64::from(loss.to_scalar::<f32>()?);
            if !l.is_finite() {
                return Err(TrainError::Diverged { epoch, loss: l });
            }
            loss_sum += l * weight_sum;
            weight_total += weight_sum;
            let pred = logits.argmax(D::Minus1)?.to_vec1::<u32>()?;
            correct += pred
                .iter()
                .zip(&yb)
                .zip(&wb)
                .filter(|((p, y), _)| p == y)
                .map(|(_, w)| f64::from(*w))
                .sum::<f64>();
            progress.rows_done(b as u64);
        }
        let seconds = started.elapsed().as_secs_f64();
        let (validation_loss, validation_accuracy) = match validation {
            Some(v) if v.rows() > 0 => {
                let (l, a) = evaluate(model, v, &device)?;
                (Some(l), Some(a))
            }
            _ => (None, None),
        };
        let stats = EpochStats {
            epoch,
            train_loss: if weight_total > 0.0 {
                loss_sum / weight_total
            } else {
                0.0
            },
            train_accuracy: if weight_total > 0.0 {
                correct / weight_total
            } else {
                0.0
            },
            validation_loss,
            validation_accuracy,
            seconds,
            rows_per_second: rows as f64 / seconds.max(1e-9),
        };
        progress.epoch_end(&stats);
        history.epochs.push(stats);
        history.best_epoch = epoch;
        if let (Some(patience), Some(vl)) = (options.early_stopping_patience, validation_loss) {
            if best.as_ref().is_none_or(|(b, _)| vl < *b) {
                best = Some((vl, model.snapshot()?));
                since_best = 0;
            } else {
                since_best += 1;
            }
            if let Some((_, _)) = &best {
                history.best_epoch = epoch - since_best;
            }
            if since_best >= patience {
                history.stopped_early = epoch < options.epochs;
                break;
            }
        }
    }
    if let Some((_, weights)) = &best {
        model.restore(weights)?;
    }
    Ok(history)
}

/// Weighted mean cross-entropy and weighted accuracy of `model` on `data`.
pub fn evaluate(model: &Mlp, data: &Encoded, device: &Device) -> Result<(f64, f64), TrainError> {
    let width = model.inputs();
    let (mut loss, mut correct, mut total) = (0f64, 0f64, 0f64);
    let rows = data.rows();
    let mut start = 0;
    while start < rows {
        let end = (start + EVAL_ROWS).min(rows);
        let b = end - start;
        let x = f32_tensor(
            data.x[start * width..end * width].to_vec(),
            b,
            width,
            device,
        )?;
        let logits = model.logits(&x, &[])?;
        let logp = candle_nn::ops::log_softmax(&logits, D::Minus1)?.to_vec2::<f32>()?;
        for (i, row) in logp.iter().enumerate() {
            let w = f64::from(data.w[start + i]);
            let y = data.y[start + i] as usize;
            loss -= w * f64::from(row[y]);
            let best = argmax(row);
            if best == y {
                correct += w;
            }
            total += w;
        }
        start = end;
    }
    if total <= 0.0 {
        return Ok((0.0, 0.0));
    }
    Ok((loss / total, correct / total))
}

/// Index of the largest value (the first, on ties: as `argmax` in candle and numpy).
pub(crate) fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (k, v) in row.iter().enumerate() {
        if *v > row[best] {
            best = k;
        }
    }
    best
}

/// A uniform draw in [0, 1) with 24 bits, for a dropout decision.
fn keep_draw(rng: &mut impl RngCore) -> f64 {
    f64::from(rng.next_u32() >> 8) * (1.0 / f64::from(1u32 << 24))
}

/// Fisher–Yates, with `j` taken as the high word of a 64×64-bit product (Lemire's
/// mapping, without rejection: a bias below 2^-32 for any split size strata handles).
fn shuffle(v: &mut [u32], rng: &mut impl RngCore) {
    for i in (1..v.len()).rev() {
        let j = ((u128::from(rng.next_u64()) * (i as u128 + 1)) >> 64) as usize;
        v.swap(i, j);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_loss_matches_a_hand_computation() {
        let d = Device::Cpu;
        let logits = Tensor::new(&[[2.0f32, 0.0], [0.0, 1.0], [1.0, 1.0]], &d).unwrap();
        let y = Tensor::new(&[0u32, 0, 1], &d).unwrap();
        let w = Tensor::new(&[1.0f32, 3.0, 0.5], &d).unwrap();
        let got = weighted_cross_entropy(&logits, &y, &w, 4.5)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        // ce_i = log(sum exp) - logit_y
        let ce = |a: f64, b: f64, pick: f64| (a.exp() + b.exp()).ln() - pick;
        let want =
            (1.0 * ce(2.0, 0.0, 2.0) + 3.0 * ce(0.0, 1.0, 0.0) + 0.5 * ce(1.0, 1.0, 1.0)) / 4.5;
        assert!((f64::from(got) - want).abs() < 1e-6, "{got} vs {want}");
    }

    #[test]
    fn zero_weight_rows_do_not_touch_the_gradient() {
        let d = Device::Cpu;
        let mut r = rng(7, STREAM_INIT);
        let model = Mlp::init(5, &[8], 3, &mut r, &d).unwrap();
        let rows = |n: usize, r: &mut ChaCha8Rng| -> Vec<f32> {
            (0..n * 5)
                .map(|_| crate::model::unit_f64(r) as f32 - 0.5)
                .collect()
        };
        let kept = rows(4, &mut r);
        let extra = rows(3, &mut r);
        let grads_of = |x: Vec<f32>, y: Vec<u32>, w: Vec<f32>| {
            let n = w.len();
            let sum: f64 = w.iter().map(|v| f64::from(*v)).sum();
            let x = f32_tensor(x, n, 5, &d).unwrap();
            let logits = model.logits(&x, &[]).unwrap();
            let loss = weighted_cross_entropy(
                &logits,
                &Tensor::from_vec(y, n, &d).unwrap(),
                &Tensor::from_vec(w, n, &d).unwrap(),
                sum,
            )
            .unwrap();
            let g = loss.backward().unwrap();
            model
                .vars()
                .iter()
                .map(|v| {
                    g.get(v)
                        .unwrap()
                        .flatten_all()
                        .unwrap()
                        .to_vec1::<f32>()
                        .unwrap()
                })
                .collect::<Vec<_>>()
        };
        let base = grads_of(kept.clone(), vec![0, 1, 2, 1], vec![1.0, 2.0, 0.5, 1.5]);
        let mut x = kept;
        x.extend(extra);
        let padded = grads_of(
            x,
            vec![0, 1, 2, 1, 2, 0, 1],
            vec![1.0, 2.0, 0.5, 1.5, 0.0, 0.0, 0.0],
        );
        for (a, b) in base.iter().zip(&padded) {
            for (p, q) in a.iter().zip(b) {
                assert!((p - q).abs() <= 1e-7 * p.abs().max(1.0), "{p} vs {q}");
            }
        }
    }

    #[test]
    fn shuffle_is_a_permutation_fixed_by_the_seed() {
        let mut a: Vec<u32> = (0..1000).collect();
        let mut b = a.clone();
        shuffle(&mut a, &mut rng(1, STREAM_ORDER));
        shuffle(&mut b, &mut rng(1, STREAM_ORDER));
        assert_eq!(a, b);
        let mut c: Vec<u32> = (0..1000).collect();
        shuffle(&mut c, &mut rng(2, STREAM_ORDER));
        assert_ne!(a, c);
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..1000).collect::<Vec<_>>());
    }

    fn toy(rows: usize, seed: u64) -> Encoded {
        let mut r = rng(seed, 9);
        let mut e = Encoded::default();
        for _ in 0..rows {
            let a = crate::model::unit_f64(&mut r) as f32;
            let b = crate::model::unit_f64(&mut r) as f32;
            e.x.extend([a, b, a * b]);
            e.y.push(u32::from(a + b > 1.0));
            e.w.push(1.0);
        }
        e
    }

    fn options(seed: u64) -> FitOptions {
        FitOptions {
            seed,
            epochs: 3,
            batch_size: 16,
            learning_rate: 1e-2,
            weight_decay: 0.0,
            dropout: 0.2,
            early_stopping_patience: None,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }

    fn trained(seed: u64) -> (Mlp, History) {
        let d = Device::Cpu;
        let model = Mlp::init(3, &[16], 2, &mut rng(seed, STREAM_INIT), &d).unwrap();
        let h = fit(
            &model,
            &toy(400, 1),
            Some(&toy(100, 2)),
            &options(seed),
            &mut Quiet,
        )
        .unwrap();
        (model, h)
    }

    #[test]
    fn one_seed_one_model_another_seed_another() {
        let (a, ha) = trained(3);
        let (b, _) = trained(3);
        let (c, _) = trained(4);
        let bytes = a.to_safetensors().unwrap();
        assert_eq!(bytes, b.to_safetensors().unwrap());
        assert_ne!(bytes, c.to_safetensors().unwrap());
        // it learned: the toy rule is easy
        assert!(
            ha.epochs.last().unwrap().validation_accuracy.unwrap() > 0.8,
            "{ha:?}"
        );
        // and the checkpoint reads back to the same weights
        let back = Mlp::from_safetensors(&bytes, &Device::Cpu, "t").unwrap();
        assert_eq!(back.to_safetensors().unwrap(), bytes);
        assert_eq!(
            (back.inputs(), back.hidden(), back.classes()),
            (3, vec![16], 2)
        );
    }

    #[test]
    fn early_stopping_keeps_the_best_epoch() {
        let d = Device::Cpu;
        let model = Mlp::init(3, &[8], 2, &mut rng(5, STREAM_INIT), &d).unwrap();
        let mut o = options(5);
        o.epochs = 30;
        o.learning_rate = 0.05;
        o.early_stopping_patience = Some(2);
        let validation = toy(100, 2);
        let h = fit(&model, &toy(200, 1), Some(&validation), &o, &mut Quiet).unwrap();
        let best = h
            .epochs
            .iter()
            .min_by(|a, b| a.validation_loss.partial_cmp(&b.validation_loss).unwrap())
            .unwrap();
        assert_eq!(h.best_epoch, best.epoch);
        let (loss, _) = evaluate(&model, &validation, &d).unwrap();
        assert!(
            (loss - best.validation_loss.unwrap()).abs() < 1e-6,
            "{loss} vs {best:?}"
        );
        if h.stopped_early {
            assert_eq!(h.epochs.len() as u64, h.best_epoch + 2);
        }
    }

    #[test]
    fn init_follows_pytorchs_linear_bounds() {
        let m = Mlp::init(100, &[50], 3, &mut rng(1, STREAM_INIT), &Device::Cpu).unwrap();
        for (v, fan_in) in m.vars().iter().zip([100f32, 100.0, 50.0, 50.0]) {
            let values = v
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let bound = 1.0 / fan_in.sqrt();
            assert!(values.iter().all(|x| x.abs() <= bound));
            // spread over the whole interval, not a corner of it
            let max = values.iter().fold(0f32, |a, x| a.max(x.abs()));
            assert!(values.len() < 50 || max > 0.9 * bound);
        }
    }
}
