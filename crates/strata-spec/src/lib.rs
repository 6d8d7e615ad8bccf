//! The strata pipeline spec (`pipelines/*.toml`): parsing and the validation that needs
//! no data. Checks against the source's schema live in the engine, which reports them
//! through [`Pipeline::error_at`] so every error still names the file, key and line.

mod curate;
mod error;
mod eval;
pub mod json;
mod model;
mod train;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

pub use curate::{
    Curate, DEFAULT_SHARD_ROWS, Publish, Resample, ShardSize, StratumTarget, parse_size,
};
pub use error::{Location, SpecError};
pub use eval::{
    Bound, Compare, EVAL_DISPARITIES, EVAL_METRICS, Eval, Gate, MAX_REPLICATES, Op, Relative,
};
pub use model::{
    HttpOptions, Intersections, LabelValue, Mode, OnEmpty, RetryOptions, S3Options, SplitFractions,
    StorageOptions, Strategy, Stratify, Target,
};
pub use train::{
    ADDED_COLUMNS, MAX_BATCH_SIZE, MAX_CATEGORIES, MAX_EPOCHS, MAX_HIDDEN_LAYERS, MAX_LAYER_UNITS,
    Shuffle, Train,
};

/// The value of a group whose attribute is null. Missing values form a group of their
/// own and are never dropped; reference shares name it with this key.
pub const MISSING_GROUP: &str = "(missing)";

/// Shares in a reference mix must sum to 1 within this tolerance (census tables are
/// often rounded to three decimals).
pub const SHARE_SUM_TOLERANCE: f64 = 1e-3;

/// The most protected attributes a pipeline may name: profiles cover every combination,
/// 2^n - 1 groupings.
pub const MAX_ATTRIBUTES: usize = 8;

/// A parsed and validated pipeline spec.
#[derive(Debug, Clone)]
pub struct Pipeline {
    /// `name` from the spec, or the file stem.
    pub name: String,
    /// The spec file as given.
    pub path: PathBuf,
    /// The spec file's text, kept so outputs can record a digest of exactly what ran.
    pub text: String,
    pub source: Source,
    pub label: Label,
    pub groups: Groups,
    pub storage: StorageOptions,
    /// `engine`: where the data stages run, `local` (this process, the default) or an
    /// Apache Ballista scheduler, `df://host:port` (the CLI's `--engine` overrides it).
    pub engine: String,
    /// The `[curate]` section, if any.
    pub curate: Option<Curate>,
    /// `[publish]`: how curated splits are cut into shards.
    pub publish: Publish,
    /// `[checks]`: SQL check folders and parameters.
    pub checks: Checks,
    /// `[train]`, defaults filled in when the section is absent.
    pub train: Train,
    /// `[eval]`, defaults filled in when the section is absent.
    pub eval: Eval,
    locations: BTreeMap<String, Location>,
}

/// The validated `[checks]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct Checks {
    /// Folders of `.sql` check files, resolved against the spec's folder.
    pub dirs: Vec<String>,
    /// Values checks bind as `$name` placeholders (never pasted into SQL text).
    pub params: BTreeMap<String, ParamValue>,
    /// Failing rows kept per failed check.
    pub max_failing_rows: u64,
    /// Seconds one check may run before it is cancelled and reported as an error.
    pub timeout_secs: u64,
}

/// Where checks are looked for when the spec names no folder: `sql/` beside the
/// spec's folder (`pipelines/../sql`).
pub const DEFAULT_CHECK_DIR: &str = "../sql/";
pub const DEFAULT_MAX_FAILING_ROWS: u64 = 100;
/// A check's time limit when the spec sets none: ten minutes.
pub const DEFAULT_CHECK_TIMEOUT_SECS: u64 = 600;
/// The longest time limit a check may be given: a day.
pub const MAX_CHECK_TIMEOUT_SECS: u64 = 86_400;

/// A check parameter's value.
#[derive(Debug, Clone, PartialEq)]
pub enum ParamValue {
    String(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    /// The source URL with relative local paths resolved against the spec's folder.
    pub url: String,
    pub weight_column: Option<String>,
    pub id_column: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Label {
    pub column: String,
    pub positive: LabelValue,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Groups {
    pub attributes: Vec<String>,
    pub intersections: Intersections,
    pub min_group_rows: u64,
    /// attribute -> group value (or [`MISSING_GROUP`]) -> reference share.
    pub reference: BTreeMap<String, BTreeMap<String, f64>>,
}

impl Groups {
    /// The groupings to profile, in report order: each attribute alone, in spec order,
    /// then the intersections (by size, then spec order).
    pub fn groupings(&self) -> Vec<Vec<usize>> {
        let n = self.attributes.len();
        let mut out: Vec<Vec<usize>> = (0..n).map(|i| vec![i]).collect();
        let mut combos: Vec<Vec<usize>> = (1u32..(1 << n))
            .map(|mask| (0..n).filter(|i| mask & (1 << i) != 0).collect::<Vec<_>>())
            .filter(|c| c.len() >= 2)
            .filter(|c| match self.intersections {
                Intersections::All => true,
                Intersections::Full => c.len() == n,
                Intersections::None => false,
            })
            .collect();
        combos.sort_by(|a, b| a.len().cmp(&b.len()).then_with(|| a.cmp(b)));
        out.extend(combos);
        out
    }
}

impl Pipeline {
    /// Reads and validates a pipeline file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, SpecError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, text)
    }

    /// Validates spec text as if read from `path` (used for locating relative sources
    /// and in error messages).
    pub fn parse(path: impl AsRef<Path>, text: String) -> Result<Self, SpecError> {
        let path = path.as_ref();
        let reporter = error::Reporter { path, text: &text };
        let raw: model::RawPipeline = toml::from_str(&text).map_err(|e| reporter.toml(&e))?;
        let mut locations = BTreeMap::new();
        let mut locate = |key: &str, span: std::ops::Range<usize>| {
            locations.insert(key.to_string(), Location::of_offset(&text, span.start));
        };

        let url = raw.source.url.get_ref().trim();
        if url.is_empty() {
            return Err(reporter.at(
                Some(raw.source.url.span()),
                "source.url",
                "must not be empty",
            ));
        }
        locate("source.url", raw.source.url.span());
        let url = resolve_url(path, url);

        let mut seen_columns = BTreeSet::new();
        let attributes = raw.groups.attributes.get_ref().clone();
        let attr_span = raw.groups.attributes.span();
        locate("groups.attributes", attr_span.clone());
        if attributes.is_empty() {
            return Err(reporter.at(
                Some(attr_span),
                "groups.attributes",
                "name at least one protected attribute column",
            ));
        }
        if attributes.len() > MAX_ATTRIBUTES {
            return Err(reporter.at(
                Some(attr_span),
                "groups.attributes",
                format!(
                    "at most {MAX_ATTRIBUTES} protected attributes are supported, found {}",
                    attributes.len()
                ),
            ));
        }
        for a in &attributes {
            if a.trim().is_empty() {
                return Err(reporter.at(
                    Some(attr_span.clone()),
                    "groups.attributes",
                    "column names must not be empty",
                ));
            }
            if !seen_columns.insert(a.clone()) {
                return Err(reporter.at(
                    Some(attr_span.clone()),
                    "groups.attributes",
                    format!("column `{a}` is listed twice"),
                ));
            }
        }

        let label_column = raw.label.column.get_ref().clone();
        locate("label.column", raw.label.column.span());
        locate("label.positive", raw.label.positive.span());
        if attributes.contains(&label_column) {
            return Err(reporter.at(
                Some(raw.label.column.span()),
                "label.column",
                format!("`{label_column}` is also a protected attribute; the label must be a different column"),
            ));
        }

        let mut role_column = |key: &str,
                               value: &Option<toml::Spanned<String>>|
         -> Result<Option<String>, SpecError> {
            let Some(v) = value else { return Ok(None) };
            let name = v.get_ref().clone();
            if name.trim().is_empty() {
                return Err(reporter.at(Some(v.span()), key, "column name must not be empty"));
            }
            if attributes.contains(&name) || name == label_column {
                return Err(reporter.at(
                    Some(v.span()),
                    key,
                    format!("`{name}` is already used as a protected attribute or the label"),
                ));
            }
            locations.insert(key.to_string(), Location::of_offset(&text, v.span().start));
            Ok(Some(name))
        };
        let weight_column = role_column("source.weight_column", &raw.source.weight_column)?;
        let id_column = role_column("source.id_column", &raw.source.id_column)?;

        let mut reference = BTreeMap::new();
        for (attribute, shares) in raw.groups.reference {
            let key = format!("groups.reference.{attribute}");
            if !attributes.contains(&attribute) {
                return Err(reporter.at(
                    Some(shares.span()),
                    &key,
                    format!("`{attribute}` is not one of groups.attributes {attributes:?}"),
                ));
            }
            let span = shares.span();
            let shares = shares.into_inner();
            if shares.is_empty() {
                return Err(reporter.at(Some(span), &key, "name at least one group and its share"));
            }
            let mut sum = 0.0;
            for (group, share) in &shares {
                let v = *share.get_ref();
                if !v.is_finite() || !(0.0..=1.0).contains(&v) {
                    return Err(reporter.at(
                        Some(share.span()),
                        &format!("{key}.{group}"),
                        format!("share must be between 0 and 1, found {v}"),
                    ));
                }
                sum += v;
            }
            if (sum - 1.0).abs() > SHARE_SUM_TOLERANCE {
                return Err(reporter.at(
                    Some(span),
                    &key,
                    format!(
                        "shares must sum to 1 (within {SHARE_SUM_TOLERANCE}), they sum to {sum:.6}"
                    ),
                ));
            }
            locations.insert(key, Location::of_offset(&text, span.start));
            reference.insert(
                attribute,
                shares
                    .into_iter()
                    .map(|(g, s)| (g, s.into_inner()))
                    .collect(),
            );
        }

        let retry = &raw.storage.retry;
        for (key, v) in [
            ("storage.retry.retry_timeout_secs", retry.retry_timeout_secs),
            (
                "storage.retry.connect_timeout_secs",
                retry.connect_timeout_secs,
            ),
            (
                "storage.retry.request_timeout_secs",
                retry.request_timeout_secs,
            ),
            (
                "storage.retry.initial_backoff_secs",
                retry.initial_backoff_secs,
            ),
            ("storage.retry.max_backoff_secs", retry.max_backoff_secs),
        ] {
            if !v.is_finite() || v <= 0.0 {
                return Err(reporter.at(
                    None,
                    key,
                    format!("must be a positive number of seconds, found {v}"),
                ));
            }
        }

        let engine = match &raw.engine {
            None => "local".to_string(),
            Some(e) => {
                let v = e.get_ref().trim();
                if v != "local" && !v.starts_with("df://") {
                    return Err(reporter.at(
                        Some(e.span()),
                        "engine",
                        format!("`{v}` is not an engine: `local` or `df://host:port`"),
                    ));
                }
                locations.insert("engine".into(), Location::of_offset(&text, e.span().start));
                v.to_string()
            }
        };

        let curate = match raw.curate {
            None => None,
            Some(c) => {
                locations.insert("curate".into(), Location::of_offset(&text, c.span().start));
                Some(curate::validate_curate(
                    &reporter,
                    c,
                    &attributes,
                    &reference,
                    &mut locations,
                )?)
            }
        };

        let publish = match raw.publish {
            None => Publish::default(),
            Some(p) => {
                let span = p.span();
                locations.insert("publish".into(), Location::of_offset(&text, span.start));
                let p = p.into_inner();
                let shard_bytes = match &p.shard_bytes {
                    None => None,
                    Some(v) => {
                        let bytes = match v.get_ref() {
                            toml::Value::Integer(i) if *i > 0 => Ok(*i as u64),
                            toml::Value::String(s) => parse_size(s),
                            other => Err(format!(
                                "must be a size such as \"128MiB\" or a positive byte count, found {other}"
                            )),
                        };
                        Some(
                            bytes.map_err(|m| {
                                reporter.at(Some(v.span()), "publish.shard_bytes", m)
                            })?,
                        )
                    }
                };
                let shard_size = match (p.shard_rows, shard_bytes) {
                    (Some(_), Some(_)) => {
                        return Err(reporter.at(
                            Some(span),
                            "publish",
                            "set `shard_rows` or `shard_bytes`, not both",
                        ));
                    }
                    (Some(0), None) => {
                        return Err(reporter.at(
                            Some(span),
                            "publish.shard_rows",
                            "must be at least 1",
                        ));
                    }
                    (Some(rows), None) => ShardSize::Rows(rows),
                    (None, Some(bytes)) => ShardSize::Bytes(bytes),
                    (None, None) => Publish::default().shard_size,
                };
                Publish { shard_size }
            }
        };

        let checks = {
            let mut checks = Checks {
                dirs: vec![resolve_url(path, DEFAULT_CHECK_DIR)],
                params: BTreeMap::new(),
                max_failing_rows: DEFAULT_MAX_FAILING_ROWS,
                timeout_secs: DEFAULT_CHECK_TIMEOUT_SECS,
            };
            if let Some(c) = raw.checks {
                let span = c.span();
                locations.insert("checks".into(), Location::of_offset(&text, span.start));
                let c = c.into_inner();
                if let Some(dirs) = c.dirs {
                    if dirs.is_empty() {
                        return Err(reporter.at(
                            Some(span),
                            "checks.dirs",
                            "must name at least one folder (leave the key out for the default `../sql`)",
                        ));
                    }
                    if dirs.iter().any(|d| d.trim().is_empty()) {
                        return Err(reporter.at(
                            Some(span),
                            "checks.dirs",
                            "folder names must not be empty",
                        ));
                    }
                    checks.dirs = dirs.iter().map(|d| resolve_url(path, d)).collect();
                }
                if let Some(n) = c.max_failing_rows {
                    checks.max_failing_rows = n;
                }
                if let Some(t) = c.timeout_secs {
                    if !(1..=MAX_CHECK_TIMEOUT_SECS).contains(&t) {
                        return Err(reporter.at(
                            Some(span),
                            "checks.timeout_secs",
                            format!("must be from 1 to {MAX_CHECK_TIMEOUT_SECS} seconds"),
                        ));
                    }
                    checks.timeout_secs = t;
                }
                for (name, value) in c.params {
                    let key = format!("checks.params.{name}");
                    if name.is_empty()
                        || !name
                            .chars()
                            .all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
                        || name.starts_with(|ch: char| ch.is_ascii_digit())
                    {
                        return Err(reporter.at(
                            Some(value.span()),
                            &key,
                            "parameter names are letters, digits and `_`, not starting with a digit",
                        ));
                    }
                    let v = match value.get_ref() {
                        toml::Value::String(s) => ParamValue::String(s.clone()),
                        toml::Value::Integer(i) => ParamValue::Int(*i),
                        toml::Value::Float(f) => ParamValue::Float(*f),
                        toml::Value::Boolean(b) => ParamValue::Bool(*b),
                        other => {
                            return Err(reporter.at(
                                Some(value.span()),
                                &key,
                                format!(
                                    "must be a string, integer, float or boolean, found {}",
                                    other.type_str()
                                ),
                            ));
                        }
                    };
                    checks.params.insert(name, v);
                }
            }
            checks
        };

        let train = match raw.train {
            None => Train::default(),
            Some(t) => train::validate_train(
                &reporter,
                t,
                &text,
                &mut locations,
                &train::Reserved {
                    label: &label_column,
                    attributes: &attributes,
                    weight: weight_column.as_deref(),
                    id: id_column.as_deref(),
                },
            )?,
        };

        let eval = match raw.eval {
            None => Eval::default(),
            Some(e) => eval::validate_eval(&reporter, e, &text, &mut locations, &attributes)?,
        };

        let name = raw.name.unwrap_or_else(|| {
            path.file_stem()
                .map_or_else(|| "pipeline".into(), |s| s.to_string_lossy().into_owned())
        });
        Ok(Self {
            name,
            path: path.to_path_buf(),
            source: Source {
                url,
                weight_column,
                id_column,
            },
            label: Label {
                column: label_column,
                positive: raw.label.positive.into_inner(),
            },
            groups: Groups {
                attributes,
                intersections: raw.groups.intersections,
                min_group_rows: raw.groups.min_group_rows,
                reference,
            },
            storage: raw.storage,
            engine,
            curate,
            publish,
            checks,
            train,
            eval,
            locations,
            text,
        })
    }

    /// Replaces the source URL (the CLI's `--source`), e.g. to point a nightly job at
    /// today's partition. Relative paths are taken from the current directory.
    pub fn with_source_url(mut self, url: &str) -> Self {
        self.source.url = url.to_string();
        self.locations.remove("source.url");
        self
    }

    /// The columns a cell is keyed by: the protected attributes, then the label.
    pub fn cell_columns(&self) -> Vec<String> {
        let mut columns = self.groups.attributes.clone();
        columns.push(self.label.column.clone());
        columns
    }

    /// An error about `key` of this spec, located at the key's line where known.
    pub fn error_at(&self, key: &str, message: impl Into<String>) -> SpecError {
        SpecError::Invalid {
            path: self.path.clone(),
            location: self.locations.get(key).copied(),
            key: Some(key.to_string()),
            message: message.into(),
        }
    }
}

/// Local paths without a scheme are relative to the spec's folder, so a pipeline runs the
/// same from any working directory; URLs (`s3://`, `file://`, `memory://`, ...) are kept.
fn resolve_url(spec_path: &Path, url: &str) -> String {
    if url.contains("://") || Path::new(url).is_absolute() {
        return url.to_string();
    }
    let base = spec_path.parent().unwrap_or(Path::new(""));
    let joined = base.join(url);
    let absolute = if joined.is_absolute() {
        joined
    } else {
        std::env::current_dir()
            .map(|d| d.join(&joined))
            .unwrap_or(joined)
    };
    let mut s = normalize(&absolute).to_string_lossy().into_owned();
    if url.ends_with('/') && !s.ends_with('/') {
        s.push('/');
    }
    s
}

/// Removes `.` and `..` segments without touching the filesystem (the path may be a glob).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests;

/// `s` for a terminal: control characters (a newline, an escape sequence from the
/// data) written as Rust escapes, so a value can neither break a table nor drive the
/// terminal.
pub fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// A cause kept as a library error's source, so a caller can walk the chain (the
/// message shows it on one line too: the CLI prints a cause only once).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// An error message on one line: object_store, DataFusion and Parquet errors can span
/// several, and a scheduler's log keeps one line per event. Every run of whitespace
/// becomes one space.
pub fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
