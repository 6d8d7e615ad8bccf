//! The tables every check can query, registered in the session before a stage runs:
//! `source`, `profile`, `curated`, `curation`, and per stage `data` (the stage's rows)
//! and `roles` (the stage's rows under standard names, for checks that work on any
//! pipeline).

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray, UInt64Array,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::ScalarValue;
use datafusion::prelude::*;
use strata_engine::SOURCE_TABLE;
use strata_profile::Profile;
use strata_spec::{MISSING_GROUP, Pipeline};

use crate::file::Stage;

pub const PROFILE_TABLE: &str = "profile";
pub const CURATED_TABLE: &str = "curated";
pub const CURATION_TABLE: &str = "curation";
pub const DATA_VIEW: &str = "data";
pub const ROLES_VIEW: &str = "roles";

/// `profile`: one row per group of every grouping. Attribute columns hold the group's
/// value (`(missing)` for the missing-value group) and are null when the attribute is
/// not part of the grouping.
pub fn profile_batch(
    pipeline: &Pipeline,
    profile: &Profile,
) -> datafusion::error::Result<RecordBatch> {
    let attrs = &pipeline.groups.attributes;
    let mut fields = vec![
        Field::new("grouping", DataType::Utf8, false),
        Field::new("group", DataType::Utf8, false),
        Field::new("arity", DataType::Int64, false),
        Field::new("missing", DataType::Boolean, false),
    ];
    fields.extend(attrs.iter().map(|a| Field::new(a, DataType::Utf8, true)));
    for (name, t) in [
        ("rows", DataType::Int64),
        ("share", DataType::Float64),
        ("weighted_rows", DataType::Float64),
        ("weighted_share", DataType::Float64),
        ("labelled_rows", DataType::Int64),
        ("positives", DataType::Int64),
        ("positive_rate", DataType::Float64),
        ("weighted_positive_rate", DataType::Float64),
        ("reference_share", DataType::Float64),
        ("representation_ratio", DataType::Float64),
        ("gap", DataType::Float64),
        ("small", DataType::Boolean),
    ] {
        fields.push(Field::new(name, t, true));
    }
    let g = &profile.groups;
    let text = |f: &dyn Fn(&strata_profile::GroupStats) -> String| -> ArrayRef {
        Arc::new(StringArray::from(g.iter().map(f).collect::<Vec<_>>()))
    };
    let float = |f: &dyn Fn(&strata_profile::GroupStats) -> Option<f64>| -> ArrayRef {
        Arc::new(Float64Array::from(g.iter().map(f).collect::<Vec<_>>()))
    };
    let int = |f: &dyn Fn(&strata_profile::GroupStats) -> u64| -> ArrayRef {
        Arc::new(Int64Array::from(
            g.iter().map(|x| f(x) as i64).collect::<Vec<_>>(),
        ))
    };
    let mut columns: Vec<ArrayRef> = vec![
        text(&|x| {
            x.attributes
                .0
                .iter()
                .map(|(k, _)| k.as_str())
                .collect::<Vec<_>>()
                .join(" × ")
        }),
        text(&|x| {
            x.attributes
                .0
                .iter()
                .map(|(_, v)| v.as_deref().unwrap_or(MISSING_GROUP))
                .collect::<Vec<_>>()
                .join(" × ")
        }),
        int(&|x| x.attributes.0.len() as u64),
        Arc::new(BooleanArray::from(
            g.iter()
                .map(|x| x.attributes.0.iter().any(|(_, v)| v.is_none()))
                .collect::<Vec<_>>(),
        )),
    ];
    for a in attrs {
        columns.push(Arc::new(StringArray::from(
            g.iter()
                .map(|x| {
                    x.attributes
                        .0
                        .iter()
                        .find(|(k, _)| k == a)
                        .map(|(_, v)| v.clone().unwrap_or_else(|| MISSING_GROUP.to_string()))
                })
                .collect::<Vec<_>>(),
        )));
    }
    columns.extend([
        int(&|x| x.rows),
        float(&|x| Some(x.share)),
        float(&|x| x.weighted_rows),
        float(&|x| x.weighted_share),
        int(&|x| x.labelled_rows),
        int(&|x| x.positives),
        float(&|x| x.positive_rate),
        float(&|x| x.weighted_positive_rate),
        float(&|x| x.reference_share),
        float(&|x| x.representation_ratio),
        float(&|x| x.gap),
        Arc::new(BooleanArray::from(
            g.iter().map(|x| x.small).collect::<Vec<_>>(),
        )),
    ]);
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

/// `curation`: one row per training stratum of the run's `curation.json`. Stratum
/// columns hold values as text (`(missing)` for the missing group).
pub fn curation_batch(summary: &serde_json::Value) -> datafusion::error::Result<RecordBatch> {
    let columns: Vec<String> = summary["stratum_columns"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let strata: Vec<&serde_json::Value> = summary["strata"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let mut fields: Vec<Field> = columns
        .iter()
        .map(|c| Field::new(c, DataType::Utf8, true))
        .collect();
    let mut arrays: Vec<ArrayRef> = columns
        .iter()
        .map(|c| {
            Arc::new(StringArray::from(
                strata
                    .iter()
                    .map(|s| match &s["stratum"][c] {
                        serde_json::Value::Null => Some(MISSING_GROUP.to_string()),
                        serde_json::Value::String(v) => Some(v.clone()),
                        other => Some(other.to_string()),
                    })
                    .collect::<Vec<_>>(),
            )) as ArrayRef
        })
        .collect();
    for name in ["rows_before", "planned_rows", "rows_after"] {
        fields.push(Field::new(name, DataType::UInt64, true));
        arrays.push(Arc::new(UInt64Array::from(
            strata.iter().map(|s| s[name].as_u64()).collect::<Vec<_>>(),
        )));
    }
    for name in [
        "share_before",
        "target_share",
        "share_after",
        "weight_sum",
        "effective_rows",
        "replication",
        "weight_factor",
    ] {
        fields.push(Field::new(name, DataType::Float64, true));
        arrays.push(Arc::new(Float64Array::from(
            strata.iter().map(|s| s[name].as_f64()).collect::<Vec<_>>(),
        )));
    }
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)?)
}

/// Registers `data` and `roles` for `stage` (replacing the previous stage's).
pub async fn register_stage_views(
    ctx: &SessionContext,
    pipeline: &Pipeline,
    stage: Stage,
) -> datafusion::error::Result<()> {
    let table = match stage {
        Stage::Source => SOURCE_TABLE,
        Stage::Curated => CURATED_TABLE,
    };
    let df = ctx.table(table).await?;
    let _ = ctx.deregister_table(DATA_VIEW)?;
    let _ = ctx.deregister_table(ROLES_VIEW)?;
    ctx.register_table(DATA_VIEW, df.clone().into_view())?;
    let text = |c: &Option<String>| {
        c.as_ref().map_or_else(
            || lit(ScalarValue::Utf8(None)),
            |c| cast(ident(c), DataType::Utf8),
        )
    };
    let float = |c: Option<&str>| {
        c.map_or_else(
            || lit(ScalarValue::Float64(None)),
            |c| cast(ident(c), DataType::Float64),
        )
    };
    let curated = stage == Stage::Curated;
    let roles = df.select(vec![
        cast(ident(&pipeline.label.column), DataType::Utf8).alias("label"),
        float(pipeline.source.weight_column.as_deref()).alias("weight"),
        text(&pipeline.source.id_column).alias("id"),
        float(curated.then_some("sample_weight")).alias("sample_weight"),
        if curated {
            cast(ident("split"), DataType::Utf8)
        } else {
            lit(ScalarValue::Utf8(None))
        }
        .alias("split"),
    ])?;
    ctx.register_table(ROLES_VIEW, roles.into_view())?;
    Ok(())
}
