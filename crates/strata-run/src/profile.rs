//! The profile as data: what `strata profile --format json` writes (a versioned
//! contract, `docs/contracts.md`) and what readers of `profile.json` parse.

use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize};

/// Bumped on any change to the JSON contract that could break a reader.
pub const PROFILE_SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
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

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SourceSummary {
    pub url: String,
    pub files: usize,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabelSummary {
    pub column: String,
    pub positive: serde_json::Value,
}

/// One group of one grouping: e.g. `sex = Female`, or `sex = Female, race = Black`.
#[derive(Debug, Clone, Serialize, Deserialize)]
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

impl<'de> Deserialize<'de> for Attributes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Attributes;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object of attribute values (strings or null)")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<Attributes, A::Error> {
                let mut out = Vec::new();
                // in the object's order: the spec's order of the attributes
                while let Some((k, v)) = m.next_entry::<String, Option<String>>()? {
                    out.push((k, v));
                }
                Ok(Attributes(out))
            }
        }
        d.deserialize_map(Visitor)
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

#[cfg(test)]
mod tests {
    use super::Attributes;

    /// Attributes read back in the order they were written (not sorted by name).
    #[test]
    fn attributes_round_trip_in_order() {
        let a = Attributes(vec![
            ("sex".into(), Some("Female".into())),
            ("race".into(), None),
        ]);
        let text = serde_json::to_string(&a).unwrap();
        assert_eq!(text, r#"{"sex":"Female","race":null}"#);
        let back: Attributes = serde_json::from_str(&text).unwrap();
        assert_eq!(back, a);
    }
}
