//! `strata eval`.

use serde::Serialize;
use strata_engine::{Engine, EngineOptions};
use strata_metrics::{Columns, EvalOptions, Evaluation, GateResult};

use crate::Outcome;
use crate::cli::{EvalArgs, OutputFormat};
use crate::commands::{print_stdout, write_atomically};

/// `eval.json`.
#[derive(Debug, Serialize)]
struct EvalJson<'a> {
    schema_version: u32,
    strata_version: &'static str,
    pipeline: Option<String>,
    predictions: String,
    files: &'a [String],
    label: &'a str,
    positive: &'a str,
    prediction: String,
    score: Option<&'a str>,
    weight: Option<&'a str>,
    /// The model column, when the predictions have one.
    model_column: Option<&'a str>,
    /// One evaluation per model, in name order.
    models: &'a [Evaluation],
    gates: &'a [GateResult],
    passed: bool,
    /// Groups the training data had (the spec's reference mix, the curation's strata)
    /// that the predictions lack.
    absent_groups: &'a [AbsentGroup],
}

#[derive(Debug, Serialize)]
struct AbsentGroup {
    model: Option<String>,
    attribute: String,
    group: String,
    known_from: &'static str,
}

/// Per attribute, the groups the spec's reference and the curation name, and where
/// each is known from.
fn expected_groups(
    spec: Option<&strata_spec::Pipeline>,
    curation: Option<&serde_json::Value>,
    attributes: &[String],
) -> Vec<(String, String, &'static str)> {
    let mut out: Vec<(String, String, &'static str)> = Vec::new();
    let mut add = |a: &str, g: String, from: &'static str| {
        if !out.iter().any(|(x, y, _)| x == a && *y == g) {
            out.push((a.to_string(), g, from));
        }
    };
    if let Some(c) = curation
        .and_then(|c| c.get("strata"))
        .and_then(|s| s.as_array())
    {
        for s in c {
            if let Some(map) = s.get("stratum").and_then(|m| m.as_object()) {
                for (k, v) in map {
                    if attributes.contains(k) {
                        let g = match v {
                            serde_json::Value::Null => strata_spec::MISSING_GROUP.to_string(),
                            serde_json::Value::String(t) => t.clone(),
                            other => other.to_string(),
                        };
                        add(k, g, "curation");
                    }
                }
            }
        }
    }
    if let Some(s) = spec {
        for (a, groups) in &s.groups.reference {
            if attributes.contains(a) {
                for (g, share) in groups {
                    if *share > 0.0 {
                        add(a, g.clone(), "groups.reference");
                    }
                }
            }
        }
    }
    out
}

fn column(name: &str) -> Option<String> {
    (name != "none").then(|| name.to_string())
}

/// An evaluation, rendered every way it is written.
pub struct EvalRun {
    pub json_text: String,
    pub table: String,
    pub markdown: String,
    pub html: String,
    pub evaluations: Vec<Evaluation>,
    pub gates: Vec<GateResult>,
    pub passed: bool,
}

/// What `strata run` hands an evaluation besides the arguments.
#[derive(Default)]
pub struct EvalContext {
    /// curation.json, already read: (its name for errors, its contents).
    pub curation: Option<(String, serde_json::Value)>,
    /// Facts the report shows first (the run, its stages).
    pub facts: Vec<(String, String)>,
    pub title: Option<String>,
    pub checks: Vec<strata_report::CheckLine>,
}

pub async fn eval(args: EvalArgs) -> anyhow::Result<Outcome> {
    let curation = match &args.curation {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("{}: cannot read: {e}", path.display()))?;
            let json: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| anyhow::anyhow!("{}: not JSON: {e}", path.display()))?;
            Some((path.display().to_string(), json))
        }
        None => None,
    };
    let run = evaluate(
        &args,
        EvalContext {
            curation,
            ..Default::default()
        },
    )
    .await?;
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("{}: cannot create the folder: {e}", dir.display()))?;
        write_atomically(&dir.join("eval.json"), run.json_text.as_bytes())?;
        write_atomically(&dir.join("eval.md"), run.markdown.as_bytes())?;
        write_atomically(&dir.join("report.html"), run.html.as_bytes())?;
    }
    print_stdout(&match args.format {
        OutputFormat::Json => run.json_text,
        OutputFormat::Markdown => run.markdown,
        OutputFormat::Table => run.table,
    })?;
    for g in run.gates.iter().filter(|g| !g.passed) {
        tracing::error!(gate = %g.line(), "gate failed");
    }
    Ok(if run.passed {
        Outcome::Success
    } else {
        Outcome::Failed
    })
}

/// Reads the predictions, evaluates every model, judges the gates and renders it all.
pub async fn evaluate(args: &EvalArgs, context: EvalContext) -> anyhow::Result<EvalRun> {
    let spec = match &args.pipeline {
        Some(p) => Some(strata_spec::Pipeline::load(p)?),
        None => None,
    };
    let curation = context.curation;
    let groups = if !args.groups.is_empty() {
        args.groups.clone()
    } else if let Some(s) = &spec {
        s.groups.attributes.clone()
    } else {
        anyhow::bail!("name the protected attributes with --group COL (or give a pipeline spec)");
    };
    let positive = match (&args.positive, &spec) {
        (Some(p), _) => p.clone(),
        (None, Some(s)) => s.label.positive.as_text(),
        (None, None) => {
            anyhow::bail!("name the positive label with --positive VALUE (or give a pipeline spec)")
        }
    };
    let e = spec.as_ref().map(|s| s.eval.clone()).unwrap_or_default();
    let storage = spec.as_ref().map(|s| s.storage.clone()).unwrap_or_default();
    let url = strata_run::parse_location(&args.predictions)?;
    let engine = Engine::new(&EngineOptions::default())?;
    let store = engine.store_for(&url, &storage)?;
    let columns = Columns {
        groups: groups.clone(),
        label: args.label.clone(),
        pred: column(&args.pred),
        score: column(args.score.as_deref().unwrap_or("y_score")),
        score_if_present: args.score.is_none(),
        weight: column(args.weight.as_deref().unwrap_or("sample_weight")),
        weight_if_present: args.weight.is_none(),
        model: column(&args.model_column),
    };
    let threshold = args.threshold.unwrap_or(e.threshold);
    let n = groups.len();
    let groupings = match &spec {
        Some(s) if args.groups.is_empty() => s.groups.groupings(),
        _ => strata_spec::Groups {
            attributes: groups.clone(),
            intersections: strata_spec::Intersections::All,
            min_group_rows: 0,
            reference: Default::default(),
        }
        .groupings(),
    };
    debug_assert!(groupings.iter().all(|g| g.iter().all(|i| *i < n)));
    let options = EvalOptions {
        attributes: groups,
        groupings,
        replicates: args.replicates.unwrap_or(e.replicates),
        confidence: e.confidence,
        seed: args
            .seed
            .or(e.seed)
            .or(spec
                .as_ref()
                .and_then(|s| s.curate.as_ref().map(|c| c.seed)))
            .unwrap_or(0),
        min_group_rows: args
            .min_group_rows
            .or(e.min_group_rows)
            .or(spec.as_ref().map(|s| s.groups.min_group_rows))
            .unwrap_or(30),
        reference: e.reference_groups.clone(),
    };
    // Several models are read one at a time, so that memory holds one model's rows
    // (docs/evaluation.md, "Memory and speed").
    let names = match columns.model.as_deref() {
        Some(m) => strata_metrics::model_names(&store, &url, m).await?,
        None => None,
    };
    let passes: Vec<Option<&str>> = match &names {
        Some(n) if n.len() > 1 => n.iter().map(|m| Some(m.as_str())).collect(),
        _ => vec![None],
    };
    let mut evaluations = Vec::new();
    let (mut null_labels, mut has_models) = (0u64, false);
    let mut first: Option<strata_metrics::Read> = None;
    for only in passes {
        let mut read =
            strata_metrics::read_predictions_of(&store, &url, &columns, &positive, threshold, only)
                .await?;
        for (model, acc) in std::mem::take(&mut read.models) {
            null_labels += acc.null_labels;
            has_models |= model.is_some();
            let mut ev = strata_metrics::evaluate(&acc, &options).map_err(|err| match &model {
                Some(m) => anyhow::anyhow!("model `{m}`: {err}"),
                None => err.into(),
            })?;
            ev.model = model;
            evaluations.push(ev);
        }
        first.get_or_insert(read);
    }
    let Some(read) = first else {
        anyhow::bail!("{url}: no predictions to evaluate");
    };
    if null_labels > 0 {
        tracing::warn!(rows = null_labels, column = %args.label, "rows without a label are left out of every metric");
    }
    let gates = strata_metrics::judge(&evaluations, &e.gates)?;
    let mut absent = Vec::new();
    for (attribute, group, known_from) in expected_groups(
        spec.as_ref(),
        curation.as_ref().map(|c| &c.1),
        &options.attributes,
    ) {
        for ev in &evaluations {
            let present = ev
                .groupings
                .iter()
                .find(|g| g.attributes == [attribute.clone()])
                .is_some_and(|g| g.groups.iter().any(|x| x.group == group));
            if !present {
                tracing::warn!(model = ev.model.as_deref().unwrap_or(""), %attribute, %group, known_from, "a group of the training data is absent from the predictions");
                absent.push(AbsentGroup {
                    model: ev.model.clone(),
                    attribute: attribute.clone(),
                    group: group.clone(),
                    known_from,
                });
            }
        }
    }
    let passed = gates.iter().all(|g| g.passed);
    let json = EvalJson {
        schema_version: strata_metrics::EVAL_SCHEMA_VERSION,
        strata_version: env!("CARGO_PKG_VERSION"),
        pipeline: spec.as_ref().map(|s| s.name.clone()),
        predictions: url.to_string(),
        files: &read.files,
        label: &args.label,
        positive: &positive,
        prediction: columns.pred.clone().unwrap_or_else(|| {
            format!(
                "{} >= {threshold}",
                args.score.as_deref().unwrap_or("y_score")
            )
        }),
        score: read.score.as_deref(),
        weight: read.weight.as_deref(),
        model_column: columns.model.as_deref().filter(|_| has_models),
        models: &evaluations,
        gates: &gates,
        passed,
        absent_groups: &absent,
    };
    let json_text = strata_spec::json::to_string_pretty(&json)? + "\n";
    let table = strata_metrics::render::table(&evaluations, &gates);
    let markdown = strata_metrics::render::markdown(&evaluations, &gates);
    let html;
    {
        let representation = match &curation {
            Some((path, json)) => Some(strata_report::Representation::from_curation(json, path)?),
            None => None,
        };
        let mut facts = context.facts;
        facts.extend([
            ("predictions".to_string(), url.to_string()),
            ("files".to_string(), read.files.len().to_string()),
            (
                "label".to_string(),
                format!("{} (positive: {positive})", args.label),
            ),
            ("prediction".to_string(), json.prediction.clone()),
        ]);
        if let Some(s) = &spec {
            facts.insert(0, ("pipeline".to_string(), s.name.clone()));
        }
        if let Some(s) = &read.score {
            facts.push(("score".to_string(), s.clone()));
        }
        if let Some(w) = &read.weight {
            facts.push(("weight".to_string(), w.clone()));
        }
        facts.push((
            "rows".to_string(),
            evaluations
                .iter()
                .map(|e| match &e.model {
                    Some(m) => format!("{m}: {}", e.rows),
                    None => e.rows.to_string(),
                })
                .collect::<Vec<_>>()
                .join("; "),
        ));
        facts.push(("strata".to_string(), env!("CARGO_PKG_VERSION").to_string()));
        html = strata_report::html(&strata_report::Report {
            title: context.title.clone().unwrap_or_else(|| match &spec {
                Some(s) => format!("Evaluation: {}", s.name),
                None => "Evaluation".to_string(),
            }),
            facts,
            evaluations: &evaluations,
            gates: &gates,
            representation: representation.as_ref(),
            checks: context.checks.clone(),
        })?;
    }
    Ok(EvalRun {
        json_text,
        table,
        markdown,
        html,
        evaluations,
        gates,
        passed,
    })
}
