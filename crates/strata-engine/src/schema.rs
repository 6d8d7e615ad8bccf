//! Checks that a pipeline's columns exist in the source and have types strata can use,
//! reported against the spec key that names each column.

use datafusion::arrow::datatypes::{DataType, Schema};
use strata_spec::{LabelValue, Pipeline};

use crate::{EngineError, SourceFile, SourceTable};

/// How the label column is compared with the spec's positive value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelKind {
    String,
    Integer,
    Boolean,
}

/// Validates the pipeline's columns against the source: present with a usable type in
/// the merged schema, and present in every file (a file without one would be read as
/// nulls, silently moving its rows into the `(missing)` group, or a model input's values
/// to the imputed mean). Returns the label's kind.
pub fn check_source(pipeline: &Pipeline, source: &SourceTable) -> Result<LabelKind, EngineError> {
    let kind = check_schema(pipeline, &source.schema, &source.url)?;
    let named = pipeline
        .groups
        .attributes
        .iter()
        .map(|a| ("groups.attributes", a))
        .chain([("label.column", &pipeline.label.column)])
        .chain(
            pipeline
                .source
                .weight_column
                .iter()
                .map(|w| ("source.weight_column", w)),
        )
        .chain(
            pipeline
                .source
                .id_column
                .iter()
                .map(|i| ("source.id_column", i)),
        )
        .chain(model_inputs(pipeline));
    for (key, column) in named {
        let missing: Vec<&SourceFile> = source
            .files
            .iter()
            .zip(&source.file_schemas)
            .filter(|(_, schema)| schema.field_with_name(column).is_err())
            .map(|(file, _)| file)
            .collect();
        if let Some(first) = missing.first() {
            return Err(pipeline
                .error_at(
                    key,
                    format!(
                        "column `{column}` is missing from file `{}` ({} of {} files of source \
                         `{}` lack it); every file must have it",
                        first.url,
                        missing.len(),
                        source.files.len(),
                        source.url
                    ),
                )
                .into());
        }
    }
    Ok(kind)
}

/// Validates the pipeline's columns against `schema`, returning the label's kind.
pub fn check_schema(
    pipeline: &Pipeline,
    schema: &Schema,
    source: &str,
) -> Result<LabelKind, EngineError> {
    let find = |key: &str, name: &str| -> Result<DataType, EngineError> {
        schema
            .field_with_name(name)
            .map(|f| f.data_type().clone())
            .map_err(|_| {
                let mut names: Vec<_> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                names.truncate(40);
                pipeline
                    .error_at(
                        key,
                        format!(
                            "column `{name}` not found in source `{source}` (columns: {})",
                            names.join(", ")
                        ),
                    )
                    .into()
            })
    };

    for attribute in &pipeline.groups.attributes {
        let t = find("groups.attributes", attribute)?;
        if !is_groupable(&t) {
            return Err(pipeline
                .error_at(
                    "groups.attributes",
                    format!("protected attribute `{attribute}` has type {t}; use a string, integer, boolean or date column (bin continuous values first)"),
                )
                .into());
        }
    }

    let label_type = find("label.column", &pipeline.label.column)?;
    let kind = match value_type(&label_type) {
        t if t.is_integer() => LabelKind::Integer,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => LabelKind::String,
        DataType::Boolean => LabelKind::Boolean,
        t => {
            return Err(pipeline
                .error_at(
                    "label.column",
                    format!("label column `{}` has type {t}; a label must be a string, integer or boolean column", pipeline.label.column),
                )
                .into());
        }
    };
    let fits = matches!(
        (kind, &pipeline.label.positive),
        (LabelKind::String, LabelValue::String(_))
            | (LabelKind::Integer, LabelValue::Int(_))
            | (LabelKind::Boolean, LabelValue::Bool(_))
    );
    if !fits {
        return Err(pipeline
            .error_at(
                "label.positive",
                format!(
                    "positive value {} does not fit label column `{}` of type {label_type}",
                    pipeline.label.positive, pipeline.label.column
                ),
            )
            .into());
    }

    if let Some(w) = &pipeline.source.weight_column {
        let t = find("source.weight_column", w)?;
        if !(t.is_numeric()) {
            return Err(pipeline
                .error_at(
                    "source.weight_column",
                    format!("weight column `{w}` has type {t}; weights must be numeric"),
                )
                .into());
        }
    }
    if let Some(id) = &pipeline.source.id_column {
        let t = find("source.id_column", id)?;
        if t.is_nested() {
            return Err(pipeline
                .error_at(
                    "source.id_column",
                    format!("id column `{id}` has nested type {t}"),
                )
                .into());
        }
    }
    // the model's inputs: every command that reads the source checks the whole spec, so
    // `strata validate` catches a misnamed input before `strata run` trains
    for (key, column) in model_inputs(pipeline) {
        find(key, column)?;
    }
    Ok(kind)
}

/// The columns `[train]` names, each with its key.
fn model_inputs(pipeline: &Pipeline) -> impl Iterator<Item = (&'static str, &String)> {
    let train = &pipeline.train;
    train
        .features
        .iter()
        .flatten()
        .map(|c| ("train.features", c))
        .chain(train.categorical.iter().map(|c| ("train.categorical", c)))
        .chain(train.numeric.iter().map(|c| ("train.numeric", c)))
}

fn value_type(t: &DataType) -> &DataType {
    match t {
        DataType::Dictionary(_, v) => v,
        other => other,
    }
}

fn is_groupable(t: &DataType) -> bool {
    let t = value_type(t);
    t.is_integer()
        || matches!(
            t,
            DataType::Utf8
                | DataType::LargeUtf8
                | DataType::Utf8View
                | DataType::Boolean
                | DataType::Date32
                | DataType::Date64
        )
}
