//! strata's training stage: a model trained on a published run, as a training cluster
//! would read it, so that curation can be judged by what it does to a real model.
//!
//! - [`train`] verifies the run, fits an [`Encoder`] on the training split, trains an
//!   [`Mlp`] with candle (weighted cross-entropy, AdamW) and returns a [`Trained`]
//!   model, which [`Trained::save`] writes as `encoder.json`, `model.safetensors` and
//!   `train.json` (last, so a folder with `train.json` holds a whole model).
//! - [`Trained::load`] reads such a folder back; [`predict`] scores a split of a run
//!   (or plain Parquet files) and streams the predictions to Parquet.
//!
//! Same shards, spec and seed: byte-identical `model.safetensors` and predictions.
//! The encoding rules, the initialisation and the RNG streams are in `docs/training.md`.

mod data;
mod encoder;
mod fit;
mod model;
mod predict;

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use candle_core::Device;
use object_store::ObjectStore;
use serde::{Deserialize, Serialize};
use strata_run::{Destination, RunError};
use strata_spec::{Pipeline, Shuffle};
use url::Url;

pub use data::VerifiedRun;
pub use encoder::{
    ENCODER_SCHEMA_VERSION, Encoded, Encoder, EncoderFitter, Encoding, Feature, Kind,
    LabelEncoding, WEIGHT_COLUMN, select_features,
};
pub use fit::{
    EpochStats, FitOptions, Fitter, History, Progress, Quiet, Scores, evaluate, fit,
    weighted_cross_entropy,
};
pub use model::Mlp;
pub use predict::{PredictInput, PredictSummary, predict};

/// File names in a model folder.
pub const ENCODER_FILE: &str = "encoder.json";
pub const MODEL_FILE: &str = "model.safetensors";
pub const REPORT_FILE: &str = "train.json";

pub const TRAIN_SCHEMA_VERSION: u32 = 1;

/// Adam's moment decays and epsilon (PyTorch's and Keras's defaults).
const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const EPS: f64 = 1e-8;

/// Why training or prediction failed. Each displays as one line naming the column,
/// shard or file.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Run(#[from] RunError),
    #[error(
        "run {run_url} fails verification ({problems} problem(s); the first: {first}); `strata shards verify` lists them all"
    )]
    Verification {
        run_url: String,
        problems: usize,
        first: String,
    },
    #[error("column `{column}`: {message}")]
    Column { column: String, message: String },
    /// Reading shards or writing predictions. The message shows the cause on one line;
    /// the cause itself, where there is one, is the source.
    #[error("{context}: {message}")]
    Data {
        context: String,
        message: String,
        #[source]
        source: Option<strata_spec::BoxError>,
    },
    #[error("{0}")]
    Model(String),
    #[error("training diverged in epoch {epoch}: the loss is {loss}; lower `train.learning_rate`")]
    Diverged { epoch: u64, loss: f64 },
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("{0}")]
    Usage(String),
}

impl TrainError {
    /// Reading or writing data at `context` failed with `e` (kept as the source).
    pub(crate) fn data(
        context: impl std::fmt::Display,
        e: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Data {
            context: context.to_string(),
            message: strata_spec::one_line(&e.to_string()),
            source: Some(Box::new(e)),
        }
    }
}

/// The device training runs on: the CPU, or with the `cuda` feature the first GPU.
pub fn device(gpu: bool) -> Result<Device, TrainError> {
    if !gpu {
        return Ok(Device::Cpu);
    }
    #[cfg(feature = "cuda")]
    {
        Ok(Device::new_cuda(0)?)
    }
    #[cfg(not(feature = "cuda"))]
    {
        Err(TrainError::Usage(
            "this strata was built without the `cuda` feature; rebuild with `--features cuda` to train on a GPU".into(),
        ))
    }
}

/// The run a model was trained on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRef {
    pub run_id: String,
    pub identity: String,
    pub url: String,
}

/// `train.json`: what was trained, on what, how it went.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainReport {
    pub schema_version: u32,
    pub strata_version: String,
    pub pipeline: String,
    pub seed: u64,
    pub run: RunRef,
    pub device: String,
    /// Threads candle's CPU kernels used (`RAYON_NUM_THREADS`, else the cores).
    pub threads: usize,
    pub hyperparameters: Hyperparameters,
    /// The model's encoded inputs, in order.
    pub inputs: Vec<String>,
    pub classes: Vec<String>,
    pub train_rows: u64,
    pub validation_rows: u64,
    pub epochs: Vec<EpochStats>,
    pub best_epoch: u64,
    pub stopped_early: bool,
    /// Floating-point operations per training row (forward and backward), see
    /// [`Mlp::train_flops_per_row`].
    pub flops_per_row: u64,
    pub wall_seconds: f64,
    pub model_sha256: String,
    pub encoder_sha256: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hyperparameters {
    pub hidden: Vec<u64>,
    pub dropout: f64,
    pub optimizer: String,
    pub learning_rate: f64,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub batch_size: u64,
    pub epochs: u64,
    pub early_stopping_patience: Option<u64>,
    pub sample_weights: bool,
    pub max_categories: u64,
    pub protected_as_features: bool,
    pub init: String,
    /// `train.shuffle`: "rows" (the split in memory) or "shards" (a shard at a time).
    #[serde(default = "rows")]
    pub shuffle: String,
}

fn rows() -> String {
    Shuffle::Rows.as_str().into()
}

/// A trained model: its encoder and weights (and, fresh from [`train`], its report).
#[derive(Debug, Clone)]
pub struct Trained {
    pub encoder: Encoder,
    pub model: Mlp,
    pub report: Option<TrainReport>,
}

/// Options of [`train`] that are not in the spec.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Overrides `train.seed` (which defaults to `curate.seed`).
    pub seed: Option<u64>,
    pub device: Device,
    /// With `train.shuffle = "rows"`, splits that would encode to more than this many
    /// bytes are refused (naming the key that trains them a shard at a time).
    pub memory_limit: Option<usize>,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            seed: None,
            device: Device::Cpu,
            memory_limit: None,
        }
    }
}

/// Trains the spec's model on the run `shards` names (verified first).
pub async fn train(
    spec: &Pipeline,
    store: Arc<dyn ObjectStore>,
    shards: &Url,
    options: &TrainOptions,
    progress: &mut dyn Progress,
) -> Result<Trained, TrainError> {
    let started = Instant::now();
    let run = VerifiedRun::open(store, shards).await?;
    let t = &spec.train;
    let train_shards = run.shards("train");
    let validation_shards = run.shards("validation");
    let context = format!("the training split of {}", run.run.root());
    if train_shards.iter().all(|s| s.rows == 0) {
        return Err(TrainError::Usage(format!(
            "{context} is empty; there is nothing to train on"
        )));
    }
    // The encoder is fitted a shard at a time; with `shuffle = "rows"` the (compressed)
    // shards are kept to be encoded next, with "shards" they are fetched again per epoch.
    let keep = t.shuffle == Shuffle::Rows;
    let mut train_bytes = Vec::with_capacity(if keep { train_shards.len() } else { 0 });
    let mut fitter: Option<EncoderFitter> = None;
    for s in &train_shards {
        let (bytes, url) = (run.fetch(s).await?, run.url_of(s));
        let mut f = match fitter.take() {
            Some(f) => f,
            None => encoder_fitter(spec, &bytes, &url)?,
        };
        let needed = f.needed_columns();
        for batch in data::decode(bytes.clone(), &needed, &url)? {
            f.update(&batch?, &url)?;
        }
        fitter = Some(f);
        if keep {
            train_bytes.push((bytes, url));
        }
    }
    let Some(fitter) = fitter else {
        return Err(TrainError::Usage(format!("{context} has no shards")));
    };
    let mut encoder = fitter.finish(&context)?;
    encoder.id_column = spec.source.id_column.clone();
    encoder.protected_attributes = spec.groups.attributes.clone();
    let encode = |bytes: Bytes, url: &str| -> Result<Encoded, TrainError> {
        let mut all = Encoded::default();
        for batch in data::decode(bytes, &encoder.needed_columns(true), url)? {
            all.append(encoder.encode(&batch?, true, url)?);
        }
        Ok(all)
    };
    let train_count: u64 = train_shards.iter().map(|s| s.rows).sum();
    let validation_count: u64 = validation_shards.iter().map(|s| s.rows).sum();
    if t.early_stopping_patience.is_some() && validation_count == 0 {
        return Err(TrainError::Usage(format!(
            "{}: `train.early_stopping_patience` needs a validation split, and the run has none (set `curate.split.validation`)",
            spec.path.display()
        )));
    }
    if keep && let Some(limit) = options.memory_limit {
        // x, y and w of every row, as `Encoded` holds them
        let need = (train_count + validation_count) * (encoder.width as u64 + 2) * 4;
        if need > limit as u64 {
            return Err(TrainError::Usage(format!(
                "{}: the training and validation splits encode to {} ({} rows × {} inputs, as f32), over the memory limit of {}; set `train.shuffle = \"shards\"` to hold one shard at a time",
                spec.path.display(),
                mib(need),
                train_count + validation_count,
                encoder.width,
                mib(limit as u64)
            )));
        }
    }

    let seed = options
        .seed
        .or(t.seed)
        .or(spec.curate.as_ref().map(|c| c.seed))
        .unwrap_or(0);
    let hidden: Vec<usize> = t.hidden.iter().map(|h| *h as usize).collect();
    let model = Mlp::init(
        encoder.width,
        &hidden,
        encoder.label.classes.len(),
        &mut fit::rng(seed, fit::STREAM_INIT),
        &options.device,
    )?;
    let fit_options = FitOptions {
        seed,
        epochs: t.epochs,
        batch_size: usize::try_from(t.batch_size).unwrap_or(usize::MAX),
        learning_rate: t.learning_rate,
        weight_decay: t.weight_decay,
        dropout: t.dropout,
        early_stopping_patience: t.early_stopping_patience,
        beta1: BETA1,
        beta2: BETA2,
        eps: EPS,
    };
    let history = match t.shuffle {
        Shuffle::Rows => {
            let mut train_rows = Encoded::default();
            for (bytes, url) in train_bytes {
                train_rows.append(encode(bytes, &url)?);
            }
            let mut validation_rows = Encoded::default();
            for s in &validation_shards {
                validation_rows.append(encode(run.fetch(s).await?, &run.url_of(s))?);
            }
            fit(
                &model,
                &train_rows,
                (validation_rows.rows() > 0).then_some(&validation_rows),
                &fit_options,
                progress,
            )?
        }
        Shuffle::Shards => {
            // each epoch: the shards in a seeded order, each shard's rows shuffled
            let mut fitting = Fitter::new(&model, &fit_options)?;
            let mut shard_order: Vec<u32> = (0..train_shards.len() as u32).collect();
            for _ in 0..t.epochs {
                fitting.start_epoch(train_count, progress);
                fitting.shuffle(&mut shard_order);
                for &k in &shard_order {
                    let s = &train_shards[k as usize];
                    if s.rows == 0 {
                        continue;
                    }
                    let block = encode(run.fetch(s).await?, &run.url_of(s))?;
                    let mut order: Vec<u32> = (0..block.rows() as u32).collect();
                    fitting.train_block(&block, &mut order, progress)?;
                }
                let scored = if validation_count > 0 {
                    let mut scores = Scores::default();
                    for s in &validation_shards {
                        let block = encode(run.fetch(s).await?, &run.url_of(s))?;
                        scores.add(&model, &block, &options.device)?;
                    }
                    Some(scores.mean())
                } else {
                    None
                };
                if fitting.end_epoch(scored, progress)? {
                    break;
                }
            }
            fitting.finish()?
        }
    };
    let model_bytes = model.to_safetensors()?;
    let encoder_json = encoder_json(&encoder)?;
    let report = TrainReport {
        schema_version: TRAIN_SCHEMA_VERSION,
        strata_version: env!("CARGO_PKG_VERSION").to_string(),
        pipeline: spec.name.clone(),
        seed,
        run: RunRef {
            run_id: run.manifest.run_id.clone(),
            identity: run.manifest.identity.clone(),
            url: run.run.root().to_string(),
        },
        device: match options.device {
            Device::Cpu => "cpu".into(),
            _ => "cuda:0".into(),
        },
        threads: candle_core::utils::get_num_threads(),
        hyperparameters: Hyperparameters {
            hidden: t.hidden.clone(),
            dropout: t.dropout,
            optimizer: if t.weight_decay == 0.0 {
                "Adam"
            } else {
                "AdamW"
            }
            .into(),
            learning_rate: t.learning_rate,
            weight_decay: t.weight_decay,
            beta1: BETA1,
            beta2: BETA2,
            eps: EPS,
            batch_size: t.batch_size,
            epochs: t.epochs,
            early_stopping_patience: t.early_stopping_patience,
            sample_weights: t.sample_weights,
            max_categories: t.max_categories,
            protected_as_features: t.protected_as_features,
            init: "PyTorch nn.Linear default: uniform in ±1/sqrt(fan_in), weights and biases"
                .into(),
            shuffle: t.shuffle.as_str().into(),
        },
        inputs: encoder.input_names(),
        classes: encoder.label.classes.clone(),
        train_rows: train_count,
        validation_rows: validation_count,
        epochs: history.epochs,
        best_epoch: history.best_epoch,
        stopped_early: history.stopped_early,
        flops_per_row: model.train_flops_per_row(),
        wall_seconds: started.elapsed().as_secs_f64(),
        model_sha256: strata_run::sha256_hex(&model_bytes),
        encoder_sha256: strata_run::sha256_hex(encoder_json.as_bytes()),
    };
    Ok(Trained {
        encoder,
        model,
        report: Some(report),
    })
}

/// The encoder fitter for the features a shard's schema offers (after checking that the
/// protected attributes are there).
fn encoder_fitter(spec: &Pipeline, bytes: &Bytes, url: &str) -> Result<EncoderFitter, TrainError> {
    let schema = data::schema_of(bytes.clone(), url)?;
    let columns = select_features(spec, &schema, url)?;
    for a in &spec.groups.attributes {
        if schema.field_with_name(a).is_err() {
            return Err(TrainError::Column {
                column: a.clone(),
                message: format!("{url} has no such column (a protected attribute)"),
            });
        }
    }
    Ok(EncoderFitter::new(spec, columns))
}

fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / f64::from(1u32 << 20))
}

fn encoder_json(encoder: &Encoder) -> Result<String, TrainError> {
    strata_spec::json::to_string_pretty(encoder)
        .map(|s| s + "\n")
        .map_err(|e| TrainError::Model(format!("cannot write the encoder: {e}")))
}

impl Trained {
    /// Writes the model folder: `encoder.json`, `model.safetensors`, then `train.json`.
    pub async fn save(&self, out: &Destination) -> Result<(), TrainError> {
        out.put(ENCODER_FILE, Bytes::from(encoder_json(&self.encoder)?))
            .await?;
        out.put(MODEL_FILE, Bytes::from(self.model.to_safetensors()?))
            .await?;
        if let Some(report) = &self.report {
            let text = strata_spec::json::to_string_pretty(report)
                .map_err(|e| TrainError::Model(format!("cannot write the report: {e}")))?
                + "\n";
            out.put(REPORT_FILE, Bytes::from(text)).await?;
        }
        Ok(())
    }

    /// Reads a model folder written by [`Trained::save`].
    pub async fn load(from: &Destination, device: &Device) -> Result<Self, TrainError> {
        let missing = |name: &str, why: &str| {
            TrainError::Model(format!("{}: missing; {why}", from.url_of(name)))
        };
        let report = from.get(REPORT_FILE).await?.ok_or_else(|| {
            missing(
                REPORT_FILE,
                "not a strata model folder, or its training did not finish",
            )
        })?;
        let report: TrainReport = serde_json::from_slice(&report).map_err(|e| {
            TrainError::Model(format!(
                "{}: not a strata train.json: {e}",
                from.url_of(REPORT_FILE)
            ))
        })?;
        let enc = from
            .get(ENCODER_FILE)
            .await?
            .ok_or_else(|| missing(ENCODER_FILE, "the model folder is incomplete"))?;
        let encoder: Encoder = serde_json::from_slice(&enc).map_err(|e| {
            TrainError::Model(format!(
                "{}: not a strata encoder: {e}",
                from.url_of(ENCODER_FILE)
            ))
        })?;
        if encoder.schema_version != ENCODER_SCHEMA_VERSION {
            return Err(TrainError::Model(format!(
                "{}: encoder schema version {} is not {ENCODER_SCHEMA_VERSION}, the version this strata reads",
                from.url_of(ENCODER_FILE),
                encoder.schema_version
            )));
        }
        let weights = from
            .get(MODEL_FILE)
            .await?
            .ok_or_else(|| missing(MODEL_FILE, "the model folder is incomplete"))?;
        let model = Mlp::from_safetensors(&weights, device, &from.url_of(MODEL_FILE))?;
        if model.inputs() != encoder.width || model.classes() != encoder.label.classes.len() {
            return Err(TrainError::Model(format!(
                "{}: the model takes {} inputs and gives {} classes, its encoder makes {} inputs of {} classes",
                from.url_of(MODEL_FILE),
                model.inputs(),
                model.classes(),
                encoder.width,
                encoder.label.classes.len()
            )));
        }
        Ok(Self {
            encoder,
            model,
            report: Some(report),
        })
    }
}
