//! `[train]`: the model strata trains on a published run, and how its inputs are encoded.
//!
//! Everything has a default, so a spec without the section trains the classic recipe:
//! one hidden layer of 128 ReLU units, dropout 0.2, softmax, Adam at 1e-3, batch 128,
//! 5 epochs, cross-entropy weighted by `sample_weight`.

use std::collections::BTreeSet;

use serde::Deserialize;
use toml::Spanned;

use crate::error::Reporter;
use crate::{Location, SpecError};

/// The most hidden layers a spec may ask for.
pub const MAX_HIDDEN_LAYERS: usize = 16;
/// The widest hidden layer a spec may ask for.
pub const MAX_LAYER_UNITS: u64 = 65_536;
/// The largest batch a spec may ask for.
pub const MAX_BATCH_SIZE: u64 = 1 << 20;
/// The most epochs a spec may ask for.
pub const MAX_EPOCHS: u64 = 100_000;
/// The most categories a categorical feature may keep (the rest share the unknown bucket).
pub const MAX_CATEGORIES: u64 = 1 << 20;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTrain {
    pub features: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    pub categorical: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    pub numeric: Option<Spanned<Vec<String>>>,
    pub protected_as_features: Option<bool>,
    pub max_categories: Option<Spanned<u64>>,
    pub hidden: Option<Spanned<Vec<u64>>>,
    pub dropout: Option<Spanned<f64>>,
    pub learning_rate: Option<Spanned<f64>>,
    pub weight_decay: Option<Spanned<f64>>,
    pub batch_size: Option<Spanned<u64>>,
    pub epochs: Option<Spanned<u64>>,
    pub early_stopping_patience: Option<Spanned<u64>>,
    pub sample_weights: Option<bool>,
    pub seed: Option<u64>,
    pub shuffle: Option<Spanned<String>>,
}

/// The validated `[train]` section (defaults filled in).
#[derive(Debug, Clone, PartialEq)]
pub struct Train {
    /// The model's input columns; `None`: every column that is not the label, a
    /// protected attribute (unless `protected_as_features`), the id, a weight or a
    /// column strata adds (`sample_weight`, `split`).
    pub features: Option<Vec<String>>,
    /// Columns encoded one-hot whatever their Arrow type (e.g. integer codes).
    pub categorical: Vec<String>,
    /// Columns standardised as numbers whatever their Arrow type would suggest.
    pub numeric: Vec<String>,
    /// Whether the protected attributes are model inputs (default: not).
    pub protected_as_features: bool,
    /// Categories kept per categorical feature, the most frequent first; the others
    /// share the unknown bucket.
    pub max_categories: u64,
    /// Units of each hidden layer; empty is a softmax (multinomial logistic) regression.
    pub hidden: Vec<u64>,
    pub dropout: f64,
    pub learning_rate: f64,
    /// AdamW's decoupled weight decay; 0 is Adam.
    pub weight_decay: f64,
    pub batch_size: u64,
    pub epochs: u64,
    /// Stop after this many epochs without a lower validation loss, keeping the best
    /// epoch's weights; `None`: train every epoch.
    pub early_stopping_patience: Option<u64>,
    /// Weight each row's loss by `sample_weight` (false: every row counts 1, the
    /// unweighted baseline).
    pub sample_weights: bool,
    /// The seed of initial weights, dropout masks and batch order (default: `curate.seed`).
    pub seed: Option<u64>,
    /// How batches are drawn: every training row held in memory and shuffled together,
    /// or shard by shard (memory for one shard, whatever the split's size).
    pub shuffle: Shuffle,
}

/// `train.shuffle`: where the training rows live while the model trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Shuffle {
    /// `"rows"`: the whole training split encoded in memory, its rows shuffled together
    /// each epoch (as a PyTorch `DataLoader(shuffle=True)` over a `TensorDataset`).
    #[default]
    Rows,
    /// `"shards"`: each epoch visits the shards in a seeded order, decoding one at a
    /// time and shuffling its rows (as WebDataset or `tf.data` over shard files); memory
    /// holds one shard, so a split of any size trains.
    Shards,
}

impl Shuffle {
    pub fn as_str(self) -> &'static str {
        match self {
            Shuffle::Rows => "rows",
            Shuffle::Shards => "shards",
        }
    }
}

impl Default for Train {
    fn default() -> Self {
        Self {
            features: None,
            categorical: Vec::new(),
            numeric: Vec::new(),
            protected_as_features: false,
            max_categories: 100,
            hidden: vec![128],
            dropout: 0.2,
            learning_rate: 1e-3,
            weight_decay: 0.0,
            batch_size: 128,
            epochs: 5,
            early_stopping_patience: None,
            sample_weights: true,
            seed: None,
            shuffle: Shuffle::Rows,
        }
    }
}

/// Columns strata adds to every shard; never model inputs.
pub const ADDED_COLUMNS: [&str; 2] = ["sample_weight", "split"];

pub(crate) fn validate_train(
    reporter: &Reporter<'_>,
    raw: Spanned<RawTrain>,
    text: &str,
    locations: &mut std::collections::BTreeMap<String, Location>,
    reserved: &Reserved<'_>,
) -> Result<Train, SpecError> {
    let span = raw.span();
    locations.insert("train".into(), Location::of_offset(text, span.start));
    let raw = raw.into_inner();
    let mut t = Train::default();
    let protected_as_features = raw.protected_as_features.unwrap_or(false);
    t.protected_as_features = protected_as_features;

    let names = |key: &str, v: &Spanned<Vec<String>>| -> Result<Vec<String>, SpecError> {
        let mut seen = BTreeSet::new();
        for name in v.get_ref() {
            let err = |m: String| reporter.at(Some(v.span()), key, m);
            if name.trim().is_empty() {
                return Err(err("column names must not be empty".into()));
            }
            if !seen.insert(name) {
                return Err(err(format!("column `{name}` is listed twice")));
            }
            if let Some(role) = reserved.role(name, protected_as_features) {
                return Err(err(format!(
                    "`{name}` is {role}, not a model input{}",
                    if role == "a protected attribute" {
                        " (set `train.protected_as_features = true` to use the protected attributes as inputs)"
                    } else {
                        ""
                    }
                )));
            }
        }
        Ok(v.get_ref().clone())
    };
    if let Some(f) = &raw.features {
        if f.get_ref().is_empty() {
            return Err(reporter.at(
                Some(f.span()),
                "train.features",
                "name at least one column (leave the key out for every eligible column)",
            ));
        }
        t.features = Some(names("train.features", f)?);
    }
    if let Some(c) = &raw.categorical {
        t.categorical = names("train.categorical", c)?;
    }
    if let Some(n) = &raw.numeric {
        t.numeric = names("train.numeric", n)?;
        if let Some(both) = t.numeric.iter().find(|c| t.categorical.contains(c)) {
            return Err(reporter.at(
                Some(n.span()),
                "train.numeric",
                format!("`{both}` is also in `train.categorical`; a column is one or the other"),
            ));
        }
    }
    // the engine checks these columns against the source's schema, at their lines
    for (key, v) in [
        ("train.features", &raw.features),
        ("train.categorical", &raw.categorical),
        ("train.numeric", &raw.numeric),
    ] {
        if let Some(v) = v {
            locations.insert(key.into(), Location::of_offset(text, v.span().start));
        }
    }
    if let Some(features) = &t.features
        && let Some(stray) = t
            .categorical
            .iter()
            .chain(&t.numeric)
            .find(|c| !features.contains(c))
    {
        return Err(reporter.at(
            raw.features.as_ref().map(Spanned::span),
            "train.features",
            format!("`{stray}` is typed in `train.categorical` or `train.numeric` but is not one of the features"),
        ));
    }

    let int = |key: &str, v: &Spanned<u64>, lo: u64, hi: u64| -> Result<u64, SpecError> {
        let x = *v.get_ref();
        if !(lo..=hi).contains(&x) {
            return Err(reporter.at(
                Some(v.span()),
                key,
                format!("must be from {lo} to {hi}, found {x}"),
            ));
        }
        Ok(x)
    };
    if let Some(v) = &raw.max_categories {
        t.max_categories = int("train.max_categories", v, 1, MAX_CATEGORIES)?;
    }
    if let Some(v) = &raw.batch_size {
        t.batch_size = int("train.batch_size", v, 1, MAX_BATCH_SIZE)?;
    }
    if let Some(v) = &raw.epochs {
        t.epochs = int("train.epochs", v, 1, MAX_EPOCHS)?;
    }
    if let Some(v) = &raw.early_stopping_patience {
        t.early_stopping_patience = Some(int("train.early_stopping_patience", v, 1, MAX_EPOCHS)?);
    }
    if let Some(h) = &raw.hidden {
        if h.get_ref().len() > MAX_HIDDEN_LAYERS {
            return Err(reporter.at(
                Some(h.span()),
                "train.hidden",
                format!("at most {MAX_HIDDEN_LAYERS} hidden layers"),
            ));
        }
        if let Some(bad) = h
            .get_ref()
            .iter()
            .find(|u| !(1..=MAX_LAYER_UNITS).contains(*u))
        {
            return Err(reporter.at(
                Some(h.span()),
                "train.hidden",
                format!("a layer has 1 to {MAX_LAYER_UNITS} units, found {bad}"),
            ));
        }
        t.hidden = h.get_ref().clone();
    }
    let float = |key: &str, v: &Spanned<f64>, ok: fn(f64) -> bool, what: &str| {
        let x = *v.get_ref();
        if x.is_finite() && ok(x) {
            Ok(x)
        } else {
            Err(reporter.at(Some(v.span()), key, format!("{what}, found {x}")))
        }
    };
    if let Some(v) = &raw.dropout {
        t.dropout = float(
            "train.dropout",
            v,
            |x| (0.0..1.0).contains(&x),
            "must be at least 0 and below 1",
        )?;
    }
    if let Some(v) = &raw.learning_rate {
        t.learning_rate = float(
            "train.learning_rate",
            v,
            |x| x > 0.0 && x <= 10.0,
            "must be above 0 and at most 10",
        )?;
    }
    if let Some(v) = &raw.weight_decay {
        t.weight_decay = float(
            "train.weight_decay",
            v,
            |x| (0.0..=1.0).contains(&x),
            "must be from 0 to 1",
        )?;
    }
    if let Some(w) = raw.sample_weights {
        t.sample_weights = w;
    }
    t.seed = raw.seed;
    if let Some(v) = &raw.shuffle {
        t.shuffle = match v.get_ref().as_str() {
            "rows" => Shuffle::Rows,
            "shards" => Shuffle::Shards,
            other => {
                return Err(reporter.at(
                    Some(v.span()),
                    "train.shuffle",
                    format!("expected \"rows\" or \"shards\", found \"{other}\""),
                ));
            }
        };
    }
    Ok(t)
}

/// The columns that have a role other than model input.
#[derive(Debug)]
pub(crate) struct Reserved<'a> {
    pub label: &'a str,
    pub attributes: &'a [String],
    pub weight: Option<&'a str>,
    pub id: Option<&'a str>,
}

impl Reserved<'_> {
    fn role(&self, name: &str, protected_as_features: bool) -> Option<&'static str> {
        if name == self.label {
            Some("the label")
        } else if !protected_as_features && self.attributes.iter().any(|a| a == name) {
            Some("a protected attribute")
        } else if Some(name) == self.weight {
            Some("the source weight column")
        } else if Some(name) == self.id {
            Some("the id column")
        } else if ADDED_COLUMNS.contains(&name) {
            Some("a column strata adds to every shard")
        } else {
            None
        }
    }
}
