//! The `[curate]` and `[publish]` sections, validated: the strategy and its split,
//! the resampling targets, and how big shards are.

use std::collections::{BTreeMap, BTreeSet};

use crate::SHARE_SUM_TOLERANCE;
use crate::error::{self, Location, SpecError};
use crate::model::{self, Mode, OnEmpty, SplitFractions, Strategy, Stratify, Target};

/// The validated `[publish]` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Publish {
    pub shard_size: ShardSize,
}

impl Default for Publish {
    fn default() -> Self {
        Self {
            shard_size: ShardSize::Rows(DEFAULT_SHARD_ROWS),
        }
    }
}

/// Rows per shard when the spec sets neither `shard_rows` nor `shard_bytes`.
pub const DEFAULT_SHARD_ROWS: u64 = 500_000;

/// How big a shard should be. Shards of one split hold equal row counts (±1), so a
/// byte target is turned into rows from the source's compressed bytes per row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardSize {
    Rows(u64),
    Bytes(u64),
}

/// The validated `[curate]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct Curate {
    pub strategy: Strategy,
    pub seed: u64,
    pub split: SplitFractions,
    pub on_empty: OnEmpty,
    /// Present exactly when `strategy = "resample"` (defaults filled in).
    pub resample: Option<Resample>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Resample {
    pub target: Target,
    pub stratify: Stratify,
    pub mode: Mode,
    /// Requested total rows (hybrid mode).
    pub total: Option<u64>,
    pub exact: bool,
    pub max_replication: f64,
    pub reweigh_after: bool,
    /// Explicit targets (`target = "shares"` or `"counts"`).
    pub strata: Vec<StratumTarget>,
}

/// An explicit target for one group of the full intersection.
#[derive(Debug, Clone, PartialEq)]
pub struct StratumTarget {
    /// One value per protected attribute, in spec order
    /// ([`MISSING_GROUP`](crate::MISSING_GROUP) for null).
    pub values: Vec<String>,
    pub share: Option<f64>,
    pub count: Option<u64>,
}

pub(crate) fn validate_curate(
    reporter: &error::Reporter<'_>,
    curate: toml::Spanned<model::RawCurate>,
    attributes: &[String],
    reference: &BTreeMap<String, BTreeMap<String, f64>>,
    locations: &mut BTreeMap<String, Location>,
) -> Result<Curate, SpecError> {
    let raw = curate.into_inner();
    let split = match raw.split {
        None => SplitFractions::default(),
        Some(s) => {
            let span = s.span();
            locations.insert(
                "curate.split".into(),
                Location::of_offset(reporter.text, span.start),
            );
            let f = s.into_inner();
            for (k, v) in [
                ("train", f.train),
                ("validation", f.validation),
                ("test", f.test),
            ] {
                if !v.is_finite() || !(0.0..=1.0).contains(&v) {
                    return Err(reporter.at(
                        Some(span.clone()),
                        &format!("curate.split.{k}"),
                        format!("must be between 0 and 1, found {v}"),
                    ));
                }
            }
            let sum = f.train + f.validation + f.test;
            if (sum - 1.0).abs() > 1e-9 {
                return Err(reporter.at(
                    Some(span),
                    "curate.split",
                    format!("train + validation + test must sum to 1, they sum to {sum}"),
                ));
            }
            if f.train == 0.0 {
                return Err(reporter.at(
                    Some(span),
                    "curate.split.train",
                    "the training split must not be empty",
                ));
            }
            f
        }
    };
    let resample = match (raw.strategy, raw.resample) {
        (Strategy::Reweigh, Some(r)) => {
            return Err(reporter.at(
                Some(r.span()),
                "curate.resample",
                "only used with strategy = \"resample\"",
            ));
        }
        (Strategy::Reweigh, None) => None,
        (Strategy::Resample, None) => Some(Resample {
            target: Target::Uniform,
            stratify: Stratify::GroupsLabel,
            mode: Mode::Undersample,
            total: None,
            exact: true,
            max_replication: 10.0,
            reweigh_after: false,
            strata: Vec::new(),
        }),
        (Strategy::Resample, Some(r)) => {
            let span = r.span();
            locations.insert(
                "curate.resample".into(),
                Location::of_offset(reporter.text, span.start),
            );
            let r = r.into_inner();
            let at = |key: &str, msg: String| reporter.at(Some(span.clone()), key, msg);
            match (r.mode, r.total) {
                (Mode::Hybrid, None) => {
                    return Err(at(
                        "curate.resample.total",
                        "hybrid mode needs a total row count".into(),
                    ));
                }
                (Mode::Hybrid, Some(0)) => {
                    return Err(at("curate.resample.total", "must be at least 1".into()));
                }
                (Mode::Undersample | Mode::Oversample, Some(_)) => {
                    return Err(at(
                        "curate.resample.total",
                        "only used with mode = \"hybrid\"".into(),
                    ));
                }
                _ => {}
            }
            if !r.max_replication.is_finite() || r.max_replication < 1.0 {
                return Err(at(
                    "curate.resample.max_replication",
                    format!("must be at least 1, found {}", r.max_replication),
                ));
            }
            if r.target == Target::Reference
                && let Some(a) = attributes.iter().find(|a| !reference.contains_key(*a))
            {
                return Err(at(
                    "curate.resample.target",
                    format!("target = \"reference\" needs [groups.reference.{a}]"),
                ));
            }
            let explicit = matches!(r.target, Target::Shares | Target::Counts);
            if explicit && r.strata.is_empty() {
                return Err(at(
                    "curate.resample.strata",
                    "an explicit target needs [[curate.resample.strata]] entries".into(),
                ));
            }
            if !explicit && !r.strata.is_empty() {
                return Err(at(
                    "curate.resample.strata",
                    "only used with target = \"shares\" or \"counts\"".into(),
                ));
            }
            let mut strata = Vec::new();
            let mut seen = BTreeSet::new();
            let mut share_sum = 0.0;
            for entry in r.strata {
                let espan = entry.span();
                let e = entry.into_inner();
                let key = "curate.resample.strata";
                let mut values = Vec::new();
                for a in attributes {
                    let v = e.groups.get(a).ok_or_else(|| {
                        reporter.at(
                            Some(espan.clone()),
                            key,
                            format!("entry does not name attribute `{a}`"),
                        )
                    })?;
                    values.push(match v {
                        toml::Value::String(s) => s.clone(),
                        toml::Value::Integer(i) => i.to_string(),
                        toml::Value::Boolean(b) => b.to_string(),
                        other => {
                            return Err(reporter.at(
                                Some(espan.clone()),
                                key,
                                format!(
                                    "`{a}` must be a string, integer or boolean, found {}",
                                    other.type_str()
                                ),
                            ));
                        }
                    });
                }
                if let Some(extra) = e.groups.keys().find(|k| !attributes.contains(k)) {
                    return Err(reporter.at(
                        Some(espan.clone()),
                        key,
                        format!("`{extra}` is neither a protected attribute nor `share`/`count`"),
                    ));
                }
                if !seen.insert(values.clone()) {
                    return Err(reporter.at(
                        Some(espan.clone()),
                        key,
                        format!("group {values:?} is listed twice"),
                    ));
                }
                match (r.target, e.share, e.count) {
                    (Target::Shares, Some(share), None) => {
                        if !share.is_finite() || !(0.0..=1.0).contains(&share) {
                            return Err(reporter.at(
                                Some(espan.clone()),
                                key,
                                format!("share must be between 0 and 1, found {share}"),
                            ));
                        }
                        share_sum += share;
                    }
                    (Target::Counts, None, Some(_)) => {}
                    (Target::Shares, _, _) => {
                        return Err(reporter.at(
                            Some(espan.clone()),
                            key,
                            "with target = \"shares\" each entry needs `share` (and no `count`)",
                        ));
                    }
                    _ => {
                        return Err(reporter.at(
                            Some(espan.clone()),
                            key,
                            "with target = \"counts\" each entry needs `count` (and no `share`)",
                        ));
                    }
                }
                strata.push(StratumTarget {
                    values,
                    share: e.share,
                    count: e.count,
                });
            }
            if r.target == Target::Shares && (share_sum - 1.0).abs() > SHARE_SUM_TOLERANCE {
                return Err(at(
                    "curate.resample.strata",
                    format!(
                        "shares must sum to 1 (within {SHARE_SUM_TOLERANCE}), they sum to {share_sum:.6}"
                    ),
                ));
            }
            Some(Resample {
                target: r.target,
                stratify: r.stratify,
                mode: r.mode,
                total: r.total,
                exact: r.exact,
                max_replication: r.max_replication,
                reweigh_after: r.reweigh_after,
                strata,
            })
        }
    };
    Ok(Curate {
        strategy: raw.strategy,
        seed: raw.seed,
        split,
        on_empty: raw.on_empty,
        resample,
    })
}

/// Parses a size: `1024`, `512KiB`, `64MiB`, `2GiB` (also KB/MB/GB as powers of 1000).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size such as 512MiB"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kib" | "k" => 1024.0,
        "mib" | "m" => 1024.0 * 1024.0,
        "gib" | "g" => 1024.0 * 1024.0 * 1024.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        other => {
            return Err(format!(
                "unknown size unit `{other}` in `{s}` (use KiB, MiB or GiB)"
            ));
        }
    };
    let bytes = n * mult;
    if !bytes.is_finite() || bytes < 1.0 {
        return Err(format!("`{s}` must be a positive size"));
    }
    Ok(bytes as u64)
}
