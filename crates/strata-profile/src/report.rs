//! The profile as data: what `--format json` writes (a versioned contract, see the
//! README) and what the other formats render.

use serde::Serialize;
use serde::ser::SerializeMap;

/// Bumped on any change to the JSON contract that could break a reader.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize)]
pub struct Profile {
    pub schema_version: u32,
    pub pipeline: String,
    pub source: SourceSummary,
    pub label: LabelSummary,
    pub weight_column: Option<String>,
    pub min_group_rows: u64,
    pub total_rows: u64,
    /// Rows whose label is not null.
    pub labelled_rows: u64,
    pub positives: u64,
    pub positive_rate: Option<f64>,
    pub total_weight: Option<f64>,
    /// The groupings profiled, in the order their groups appear in `groups`.
    pub groupings: Vec<Vec<String>>,
    pub groups: Vec<GroupStats>,
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SourceSummary {
    pub url: String,
    pub files: usize,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct LabelSummary {
    pub column: String,
    pub positive: serde_json::Value,
}

/// One group of one grouping: e.g. `sex = Female`, or `sex = Female, race = Black`.
#[derive(Debug, Clone, Serialize)]
pub struct GroupStats {
    /// Column -> value, in spec order; `null` is the explicit missing-value group.
    pub attributes: Attributes,
    pub rows: u64,
    /// rows / total_rows.
    pub share: f64,
    /// Sum of the weight column over the group's rows (with a weight column).
    pub weighted_rows: Option<f64>,
    pub weighted_share: Option<f64>,
    pub labelled_rows: u64,
    pub positives: u64,
    /// positives / labelled_rows; `null` when no row of the group has a label.
    pub positive_rate: Option<f64>,
    pub weighted_positive_rate: Option<f64>,
    /// The spec's reference share (single attributes only).
    pub reference_share: Option<f64>,
    /// share / reference_share.
    pub representation_ratio: Option<f64>,
    /// share - reference_share.
    pub gap: Option<f64>,
    /// Fewer rows than `min_group_rows`: its rates are too noisy to trust.
    pub small: bool,
}

/// A group's attribute values, serialized as a JSON object in spec order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attributes(pub Vec<(String, Option<String>)>);

impl Serialize for Attributes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl Attributes {
    /// `sex=Female × race=Black`, with missing values shown as `(missing)`.
    pub fn label(&self) -> String {
        self.0
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_deref().unwrap_or(strata_spec::MISSING_GROUP)))
            .collect::<Vec<_>>()
            .join(" × ")
    }
}

impl Profile {
    /// The groups of one grouping, in report order.
    pub fn groups_of<'a>(
        &'a self,
        grouping: &'a [String],
    ) -> impl Iterator<Item = &'a GroupStats> + 'a {
        self.groups.iter().filter(move |g| {
            g.attributes.0.len() == grouping.len()
                && g.attributes
                    .0
                    .iter()
                    .zip(grouping)
                    .all(|((k, _), a)| k == a)
        })
    }
}
