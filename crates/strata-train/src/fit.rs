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

/// Trains `model` on `train` (every row's `w` its weight), evaluating on `validation`:
/// the whole split as one block, its rows shuffled together each epoch.
pub fn fit(
    model: &Mlp,
    train: &Encoded,
    validation: Option<&Encoded>,
    options: &FitOptions,
    progress: &mut dyn Progress,
) -> Result<History, TrainError> {
    let device = model.device().clone();
    let mut fitter = Fitter::new(model, options)?;
    // one order, reshuffled from where the last epoch left it
    let mut order: Vec<u32> = (0..train.rows() as u32).collect();
    for _ in 0..options.epochs {
        fitter.start_epoch(train.rows() as u64, progress);
        fitter.train_block(train, &mut order, progress)?;
        let scored = match validation {
            Some(v) if v.rows() > 0 => Some(evaluate(model, v, &device)?),
            _ => None,
        };
        if fitter.end_epoch(scored, progress)? {
            break;
        }
    }
    fitter.finish()
}

/// A training run driven a block of rows at a time, so that rows can come from memory
/// ([`fit`]) or a shard at a time (`train.shuffle = "shards"`). Each epoch:
/// [`start_epoch`](Self::start_epoch), [`train_block`](Self::train_block) for every
/// block (in an order from [`shuffle`](Self::shuffle)), then
/// [`end_epoch`](Self::end_epoch) with the validation scores.
pub struct Fitter<'m> {
    model: &'m Mlp,
    options: FitOptions,
    device: Device,
    opt: AdamW,
    order_rng: ChaCha8Rng,
    dropout_rng: ChaCha8Rng,
    keep: f64,
    scale: f32,
    xb: Vec<f32>,
    history: History,
    best: Option<(f64, Vec<Tensor>)>,
    since_best: u64,
    epoch: u64,
    epoch_rows: u64,
    seconds: f64,
    loss_sum: f64,
    correct: f64,
    weight_total: f64,
}

impl std::fmt::Debug for Fitter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fitter")
            .field("options", &self.options)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl<'m> Fitter<'m> {
    pub fn new(model: &'m Mlp, options: &FitOptions) -> Result<Self, TrainError> {
        let opt = AdamW::new(
            model.vars(),
            ParamsAdamW {
                lr: options.learning_rate,
                beta1: options.beta1,
                beta2: options.beta2,
                eps: options.eps,
                weight_decay: options.weight_decay,
            },
        )?;
        let keep = 1.0 - options.dropout;
        Ok(Self {
            model,
            options: options.clone(),
            device: model.device().clone(),
            opt,
            order_rng: rng(options.seed, STREAM_ORDER),
            dropout_rng: rng(options.seed, STREAM_DROPOUT),
            keep,
            scale: (1.0 / keep) as f32,
            xb: Vec::with_capacity(options.batch_size * model.inputs()),
            history: History {
                epochs: Vec::new(),
                best_epoch: 0,
                stopped_early: false,
            },
            best: None,
            since_best: 0,
            epoch: 0,
            epoch_rows: 0,
            seconds: 0.0,
            loss_sum: 0.0,
            correct: 0.0,
            weight_total: 0.0,
        })
    }

    /// Starts the next epoch, which will train on `rows` rows.
    pub fn start_epoch(&mut self, rows: u64, progress: &mut dyn Progress) {
        self.epoch += 1;
        self.epoch_rows = rows;
        self.seconds = 0.0;
        (self.loss_sum, self.correct, self.weight_total) = (0.0, 0.0, 0.0);
        progress.epoch_start(self.epoch, self.options.epochs, rows);
    }

    /// Shuffles `v` with the batch-order stream (the order of the shards, say).
    pub fn shuffle(&mut self, v: &mut [u32]) {
        shuffle(v, &mut self.order_rng);
    }

    /// Shuffles `order` (indices into `block`'s rows) and takes a step per batch of it.
    pub fn train_block(
        &mut self,
        block: &Encoded,
        order: &mut [u32],
        progress: &mut dyn Progress,
    ) -> Result<(), TrainError> {
        let started = Instant::now();
        let width = self.model.inputs();
        let hidden = self.model.hidden();
        let device = self.device.clone();
        shuffle(order, &mut self.order_rng);
        for chunk in order.chunks(self.options.batch_size) {
            let b = chunk.len();
            self.xb.clear();
            let mut yb = Vec::with_capacity(b);
            let mut wb = Vec::with_capacity(b);
            for &i in chunk {
                let i = i as usize;
                self.xb
                    .extend_from_slice(&block.x[i * width..(i + 1) * width]);
                yb.push(block.y[i]);
                wb.push(block.w[i]);
            }
            let weight_sum: f64 = wb.iter().map(|w| f64::from(*w)).sum();
            if weight_sum <= 0.0 {
                // every row weighs 0: nothing to learn, and no step (Adam's moments
                // would still move the weights on a zero gradient)
                progress.rows_done(b as u64);
                continue;
            }
            let x = f32_tensor(self.xb.clone(), b, width, &device)?;
            let (dropout, keep, scale) = (self.options.dropout, self.keep, self.scale);
            let dropout_rng = &mut self.dropout_rng;
            let masks = hidden
                .iter()
                .map(|&h| {
                    let m: Vec<f32> = (0..b * h)
                        .map(|_| {
                            if dropout == 0.0 || keep_draw(dropout_rng) < keep {
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
            let logits = self.model.logits(&x, &masks)?;
            let loss = weighted_cross_entropy(&logits, &y, &w, weight_sum)?;
            self.opt.backward_step(&loss)?;
            let l = f64::from(loss.to_scalar::<f32>()?);
            if !l.is_finite() {
                return Err(TrainError::Diverged {
                    epoch: self.epoch,
                    loss: l,
                });
            }
            self.loss_sum += l * weight_sum;
            self.weight_total += weight_sum;
            let pred = logits.argmax(D::Minus1)?.to_vec1::<u32>()?;
            self.correct += pred
                .iter()
                .zip(&yb)
                .zip(&wb)
                .filter(|((p, y), _)| p == y)
                .map(|(_, w)| f64::from(*w))
                .sum::<f64>();
            progress.rows_done(b as u64);
        }
        self.seconds += started.elapsed().as_secs_f64();
        Ok(())
    }

    /// Ends the epoch with the validation split's (loss, accuracy), if there is one.
    /// Returns whether training stops here (early stopping).
    pub fn end_epoch(
        &mut self,
        validation: Option<(f64, f64)>,
        progress: &mut dyn Progress,
    ) -> Result<bool, TrainError> {
        let epoch = self.epoch;
        let of_weight = |x: f64| {
            if self.weight_total > 0.0 {
                x / self.weight_total
            } else {
                0.0
            }
        };
        let stats = EpochStats {
            epoch,
            train_loss: of_weight(self.loss_sum),
            train_accuracy: of_weight(self.correct),
            validation_loss: validation.map(|v| v.0),
            validation_accuracy: validation.map(|v| v.1),
            seconds: self.seconds,
            rows_per_second: self.epoch_rows as f64 / self.seconds.max(1e-9),
        };
        progress.epoch_end(&stats);
        self.history.epochs.push(stats);
        self.history.best_epoch = epoch;
        if let (Some(patience), Some((vl, _))) = (self.options.early_stopping_patience, validation)
        {
            if self.best.as_ref().is_none_or(|(b, _)| vl < *b) {
                self.best = Some((vl, self.model.snapshot()?));
                self.since_best = 0;
            } else {
                self.since_best += 1;
            }
            if self.best.is_some() {
                self.history.best_epoch = epoch - self.since_best;
            }
            if self.since_best >= patience {
                self.history.stopped_early = epoch < self.options.epochs;
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// How training ended; the model holds the best epoch's weights.
    pub fn finish(self) -> Result<History, TrainError> {
        if let Some((_, weights)) = &self.best {
            self.model.restore(weights)?;
        }
        Ok(self.history)
    }
}

/// Weighted mean cross-entropy and weighted accuracy of `model` on `data`.
pub fn evaluate(model: &Mlp, data: &Encoded, device: &Device) -> Result<(f64, f64), TrainError> {
    Ok(Scores::of(model, data, device)?.mean())
}

/// Sums of weighted cross-entropy, weighted correct rows and weight, so that a split
/// scored a block at a time gives the same means as one pass.
#[derive(Debug, Clone, Copy, Default)]
pub struct Scores {
    pub loss: f64,
    pub correct: f64,
    pub weight: f64,
}

impl Scores {
    /// The sums over `data`, in row order.
    pub fn of(model: &Mlp, data: &Encoded, device: &Device) -> Result<Self, TrainError> {
        let mut s = Self::default();
        s.add(model, data, device)?;
        Ok(s)
    }

    /// Adds `data`'s rows, in order.
    pub fn add(&mut self, model: &Mlp, data: &Encoded, device: &Device) -> Result<(), TrainError> {
        let width = model.inputs();
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
                self.loss -= w * f64::from(row[y]);
                if argmax(row) == y {
                    self.correct += w;
                }
                self.weight += w;
            }
            start = end;
        }
        Ok(())
    }

    /// (weighted mean loss, weighted accuracy); zeros when nothing weighs.
    pub fn mean(&self) -> (f64, f64) {
        if self.weight <= 0.0 {
            return (0.0, 0.0);
        }
        (self.loss / self.weight, self.correct / self.weight)
    }
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

    /// The toy split in blocks, trained as `train.shuffle = "shards"` does: each epoch
    /// the blocks in a seeded order, each block's rows shuffled from `0..n`.
    fn trained_in_blocks(seed: u64, blocks: usize) -> (Mlp, History) {
        let d = Device::Cpu;
        let model = Mlp::init(3, &[16], 2, &mut rng(seed, STREAM_INIT), &d).unwrap();
        let train = toy(400, 1);
        let validation = toy(100, 2);
        let per = 400 / blocks;
        let parts: Vec<Encoded> = (0..blocks)
            .map(|b| Encoded {
                x: train.x[b * per * 3..(b + 1) * per * 3].to_vec(),
                y: train.y[b * per..(b + 1) * per].to_vec(),
                w: train.w[b * per..(b + 1) * per].to_vec(),
            })
            .collect();
        let o = options(seed);
        let mut f = Fitter::new(&model, &o).unwrap();
        let mut block_order: Vec<u32> = (0..blocks as u32).collect();
        for _ in 0..o.epochs {
            f.start_epoch(400, &mut Quiet);
            f.shuffle(&mut block_order);
            for &k in &block_order {
                let part = &parts[k as usize];
                let mut order: Vec<u32> = (0..part.rows() as u32).collect();
                f.train_block(part, &mut order, &mut Quiet).unwrap();
            }
            // scored a block at a time: the same sums as one pass
            let mut scores = Scores::default();
            scores.add(&model, &toy(50, 2), &d).unwrap();
            let mut rest = toy(100, 2);
            rest.x.drain(..50 * 3);
            rest.y.drain(..50);
            rest.w.drain(..50);
            scores.add(&model, &rest, &d).unwrap();
            let whole = evaluate(&model, &validation, &d).unwrap();
            let (l, a) = scores.mean();
            assert!((l - whole.0).abs() < 1e-12 && (a - whole.1).abs() < 1e-12);
            assert!(!f.end_epoch(Some((l, a)), &mut Quiet).unwrap());
        }
        let h = f.finish().unwrap();
        (model, h)
    }

    #[test]
    fn blocks_learn_and_are_fixed_by_the_seed() {
        let (a, ha) = trained_in_blocks(3, 4);
        let (b, _) = trained_in_blocks(3, 4);
        let (c, _) = trained_in_blocks(4, 4);
        let bytes = a.to_safetensors().unwrap();
        assert_eq!(bytes, b.to_safetensors().unwrap());
        assert_ne!(bytes, c.to_safetensors().unwrap());
        assert_eq!(ha.epochs.len(), 3);
        assert!(
            ha.epochs.last().unwrap().validation_accuracy.unwrap() > 0.8,
            "{ha:?}"
        );
        // the blocks' order matters: other blocks, another model
        let (two, _) = trained_in_blocks(3, 2);
        assert_ne!(bytes, two.to_safetensors().unwrap());
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
