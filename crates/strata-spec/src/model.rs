//! The pipeline spec as written in `pipelines/*.toml`.
//!
//! Every struct denies unknown fields: a misspelt key is an error, never silently ignored.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

/// The raw, deserialized form of a pipeline file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPipeline {
    pub name: Option<String>,
    pub engine: Option<Spanned<String>>,
    pub source: RawSource,
    pub label: RawLabel,
    pub groups: RawGroups,
    #[serde(default)]
    pub storage: StorageOptions,
    pub curate: Option<Spanned<RawCurate>>,
    pub publish: Option<Spanned<RawPublish>>,
    pub checks: Option<Spanned<RawChecks>>,
    pub train: Option<Spanned<crate::train::RawTrain>>,
    pub eval: Option<Spanned<crate::eval::RawEval>>,
}

/// `[checks]`: where the SQL checks live and the values they may bind.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawChecks {
    pub dirs: Option<Vec<String>>,
    #[serde(default)]
    pub params: BTreeMap<String, Spanned<toml::Value>>,
    pub max_failing_rows: Option<u64>,
    pub timeout_secs: Option<u64>,
}

/// `[publish]`: how curated splits are cut into shards.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPublish {
    pub shard_rows: Option<u64>,
    pub shard_bytes: Option<Spanned<toml::Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCurate {
    pub strategy: Strategy,
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub split: Option<Spanned<SplitFractions>>,
    #[serde(default)]
    pub resample: Option<Spanned<RawResample>>,
    #[serde(default)]
    pub on_empty: OnEmpty,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawResample {
    #[serde(default)]
    pub target: Target,
    #[serde(default)]
    pub stratify: Stratify,
    #[serde(default)]
    pub mode: Mode,
    pub total: Option<u64>,
    #[serde(default = "default_exact")]
    pub exact: bool,
    #[serde(default = "default_max_replication")]
    pub max_replication: f64,
    #[serde(default)]
    pub reweigh_after: bool,
    #[serde(default)]
    pub strata: Vec<Spanned<RawStratumTarget>>,
}

fn default_exact() -> bool {
    true
}

fn default_max_replication() -> f64 {
    10.0
}

/// One `[[curate.resample.strata]]` entry: group values plus `share` or `count`.
#[derive(Debug, Deserialize)]
pub(crate) struct RawStratumTarget {
    pub share: Option<f64>,
    pub count: Option<u64>,
    #[serde(flatten)]
    pub groups: BTreeMap<String, toml::Value>,
}

/// How the training split is curated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Kamiran–Calders weights: group and label independent under the weights.
    Reweigh,
    /// Stratified resampling to a target group mix.
    Resample,
}

/// Fractions of the deterministic train / validation / test split; they must sum to 1.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitFractions {
    pub train: f64,
    #[serde(default)]
    pub validation: f64,
    #[serde(default)]
    pub test: f64,
}

impl Default for SplitFractions {
    fn default() -> Self {
        Self {
            train: 0.8,
            validation: 0.1,
            test: 0.1,
        }
    }
}

/// The target mix of a resample.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// Every group the same share.
    #[default]
    Uniform,
    /// The spec's reference shares; intersections take the product of the attributes'
    /// reference shares (independence).
    Reference,
    /// Explicit `share` per group in `[[curate.resample.strata]]`.
    Shares,
    /// Explicit `count` per group in `[[curate.resample.strata]]`.
    Counts,
}

/// What a resample stratum is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stratify {
    /// The intersection of the protected attributes; each group's label mix is kept.
    Groups,
    /// The intersection × label: each group's target is spread over its labels in the
    /// group's own label proportions, and each (group, label) cell is sampled exactly.
    #[default]
    GroupsLabel,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Shrink to the largest total every stratum can supply without replication.
    #[default]
    Undersample,
    /// Grow to the smallest total that keeps every row of the most over-represented
    /// stratum, replicating rows in the others.
    Oversample,
    /// Reach `total` rows, shrinking large strata and growing small ones.
    Hybrid,
}

/// What to do with a stratum that has a positive target but no rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnEmpty {
    /// Fail the job.
    #[default]
    Error,
    /// Drop the stratum from the target, renormalise the others, and warn.
    Skip,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSource {
    pub url: Spanned<String>,
    pub weight_column: Option<Spanned<String>>,
    pub id_column: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLabel {
    pub column: Spanned<String>,
    pub positive: Spanned<LabelValue>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGroups {
    pub attributes: Spanned<Vec<String>>,
    #[serde(default)]
    pub intersections: Intersections,
    #[serde(default = "default_min_group_rows")]
    pub min_group_rows: u64,
    #[serde(default)]
    pub reference: BTreeMap<String, Spanned<BTreeMap<String, Spanned<f64>>>>,
}

fn default_min_group_rows() -> u64 {
    30
}

/// The label value counted as positive. Its TOML type must fit the label column's type.
#[derive(Debug, Clone, PartialEq)]
pub enum LabelValue {
    Bool(bool),
    Int(i64),
    String(String),
}

/// By hand rather than `untagged`, so a float or a table says what a label may be
/// instead of "did not match any variant".
impl<'de> Deserialize<'de> for LabelValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = LabelValue;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(
                    "a string, an integer or a boolean, like the label column (a float \
                     label is not supported: bin it or use integer classes)",
                )
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<LabelValue, E> {
                Ok(LabelValue::Bool(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<LabelValue, E> {
                Ok(LabelValue::Int(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<LabelValue, E> {
                i64::try_from(v)
                    .map(LabelValue::Int)
                    .map_err(|_| E::custom(format!("{v} is larger than a 64-bit integer")))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<LabelValue, E> {
                Ok(LabelValue::String(v.to_string()))
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl LabelValue {
    /// The value as the label column's text form (what a cast to a string gives):
    /// `>50K`, `1`, `true`.
    pub fn as_text(&self) -> String {
        match self {
            Self::String(s) => s.clone(),
            Self::Int(i) => i.to_string(),
            Self::Bool(b) => b.to_string(),
        }
    }
}

impl std::fmt::Display for LabelValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Bool(b) => write!(f, "{b}"),
            Self::Int(i) => write!(f, "{i}"),
            Self::String(s) => write!(f, "{s:?}"),
        }
    }
}

/// Which combinations of protected attributes are profiled besides each attribute alone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Intersections {
    /// Every combination of two or more attributes (for 3 attributes: 3 pairs and the triple).
    #[default]
    All,
    /// Only the intersection of all attributes.
    Full,
    /// No intersections: each attribute alone.
    None,
}

/// How strata talks to object storage; applies to every store a pipeline reads or writes.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageOptions {
    #[serde(default)]
    pub s3: S3Options,
    #[serde(default)]
    pub http: HttpOptions,
    #[serde(default)]
    pub retry: RetryOptions,
}

/// Plain HTTP(S) stores (`http://`, `https://` sources).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpOptions {
    /// Allow unencrypted `http://` URLs; falls back to `STRATA_ALLOW_HTTP`. Off by
    /// default, as object_store has it: a typo should not send data in clear text.
    pub allow_http: Option<bool>,
}

/// S3-compatible store settings. Each falls back to the standard `AWS_*` environment
/// variable (`AWS_ENDPOINT_URL`/`AWS_ENDPOINT`, `AWS_REGION`, `AWS_ALLOW_HTTP`, ...).
/// Credentials are only ever taken from the environment, never from the spec.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Options {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// Path-style requests (`http://host/bucket/key`), as most S3-compatible servers want.
    pub path_style: Option<bool>,
    /// Allow plain `http://` endpoints (local test servers).
    pub allow_http: Option<bool>,
}

/// Bounded retries: a store that refuses connections fails the job after these limits
/// instead of hanging a scheduler slot.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryOptions {
    #[serde(default = "RetryOptions::default_max_retries")]
    pub max_retries: usize,
    #[serde(default = "RetryOptions::default_retry_timeout_secs")]
    pub retry_timeout_secs: f64,
    #[serde(default = "RetryOptions::default_connect_timeout_secs")]
    pub connect_timeout_secs: f64,
    #[serde(default = "RetryOptions::default_request_timeout_secs")]
    pub request_timeout_secs: f64,
    /// First wait between retries; it doubles up to `max_backoff_secs`.
    #[serde(default = "RetryOptions::default_initial_backoff_secs")]
    pub initial_backoff_secs: f64,
    #[serde(default = "RetryOptions::default_max_backoff_secs")]
    pub max_backoff_secs: f64,
}

impl RetryOptions {
    fn default_max_retries() -> usize {
        3
    }
    fn default_retry_timeout_secs() -> f64 {
        15.0
    }
    fn default_connect_timeout_secs() -> f64 {
        5.0
    }
    fn default_request_timeout_secs() -> f64 {
        120.0
    }
    fn default_initial_backoff_secs() -> f64 {
        0.1
    }
    fn default_max_backoff_secs() -> f64 {
        5.0
    }
}

impl Default for RetryOptions {
    fn default() -> Self {
        Self {
            max_retries: Self::default_max_retries(),
            retry_timeout_secs: Self::default_retry_timeout_secs(),
            connect_timeout_secs: Self::default_connect_timeout_secs(),
            request_timeout_secs: Self::default_request_timeout_secs(),
            initial_backoff_secs: Self::default_initial_backoff_secs(),
            max_backoff_secs: Self::default_max_backoff_secs(),
        }
    }
}
