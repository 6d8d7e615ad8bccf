//! The curation's publishing pass, around the shard writer: where the run goes and
//! whether it is already there (its identity), and the commit (summary, then manifest
//! create-if-absent, then `_latest`; `strata_run::Destination` holds the protocol).

use strata_engine::{Engine, SourceTable};
use strata_publish::SinkOutput;
use strata_run::{
    ColumnSchema, Curation, Destination, Existing, InputFile, MANIFEST_FILE,
    MANIFEST_SCHEMA_VERSION, Manifest, ShardEntry, SplitTotals, sha256_hex,
};
use strata_spec::Pipeline;

use crate::CurateError;
use crate::curate::{CurateOptions, Published, SPLITS, SUMMARY_FILE};

/// Where a curation publishes.
pub(crate) enum Opened {
    /// This very run (same identity) is committed there already: its summary and
    /// manifest, `_latest` pointed at it again.
    Already(Box<Published>),
    /// A run to write.
    New { destination: Destination, run: Run },
}

/// Resolves `--out`, makes a local folder (failing now rather than after the passes),
/// and finds whether the run is already published.
pub(crate) async fn open_run(
    engine: &Engine,
    pipeline: &Pipeline,
    source: &SourceTable,
    seed: u64,
    options: &CurateOptions,
) -> Result<Opened, CurateError> {
    let root = strata_run::parse_location(&options.out)?;
    if root.scheme() == "file"
        && let Ok(dir) = root.to_file_path()
    {
        std::fs::create_dir_all(&dir).map_err(|e| CurateError::Output {
            url: root.to_string(),
            message: format!("cannot create the folder: {e}"),
            source: Some(e.into()),
        })?;
    }
    let store = engine.store_for(&root, &pipeline.storage)?;
    let destination = Destination::new(store, root);
    let identity = identity(pipeline, source, seed);
    let run_id = match &options.run_id {
        Some(id) => check_run_id(id)?,
        None => identity[..16].to_string(),
    };
    let run = Run {
        url: destination.url_of(&format!("{}/", Destination::run_dir(&run_id))),
        run_id,
        identity,
    };
    if let Existing::Same(manifest) = destination.existing(&run.run_id, &run.identity).await? {
        let rel = format!("{}/{SUMMARY_FILE}", Destination::run_dir(&run.run_id));
        let bytes = destination.get(&rel).await?.ok_or_else(|| CurateError::Output {
            url: destination.url_of(&rel),
            message: "the run's manifest exists but its summary is missing; run `strata shards verify`".into(),
            source: None,
        })?;
        let curation: Curation =
            serde_json::from_slice(&bytes).map_err(|e| CurateError::Output {
                url: destination.url_of(&rel),
                message: format!("not a curation summary: {e}"),
                source: Some(e.into()),
            })?;
        destination.point_latest(&manifest).await?;
        tracing::info!(run = %run.url, "this run is already published (same spec, seed and inputs); nothing to do");
        return Ok(Opened::Already(Box::new(Published {
            curation,
            manifest: *manifest,
            run_url: run.url,
            already_published: true,
        })));
    }
    Ok(Opened::New { destination, run })
}

/// What the commit needs: the run, its summary and what the shard writer wrote.
pub(crate) struct Commit<'a> {
    pub(crate) destination: &'a Destination,
    pub(crate) run: Run,
    pub(crate) pipeline: &'a Pipeline,
    pub(crate) source: &'a SourceTable,
    pub(crate) seed: u64,
    pub(crate) summary: Curation,
    pub(crate) written: SinkOutput,
    pub(crate) stratum_columns: Vec<String>,
    pub(crate) shard_rows: u64,
}

/// Writes the summary, then commits the manifest, then points `_latest` at the run.
pub(crate) async fn commit_run(c: Commit<'_>) -> Result<Published, CurateError> {
    let Commit {
        destination,
        run,
        pipeline,
        source,
        seed,
        summary,
        written,
        stratum_columns,
        shard_rows,
    } = c;
    let summary_json = strata_spec::json::to_string_pretty(&summary)
        .expect("a summary always serializes")
        .into_bytes();
    destination
        .put(
            &format!("{}/{SUMMARY_FILE}", Destination::run_dir(&run.run_id)),
            summary_json.into(),
        )
        .await?;

    let mut shards = written.shards;
    shards.sort_by_key(|s| (split_index(&s.split), s.index));
    let splits = split_totals(&shards);
    let manifest = Manifest {
        schema_version: MANIFEST_SCHEMA_VERSION,
        run_id: run.run_id.clone(),
        identity: run.identity.clone(),
        created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        strata_version: env!("CARGO_PKG_VERSION").to_string(),
        pipeline: pipeline.name.clone(),
        seed,
        spec_sha256: sha256_hex(pipeline.text.as_bytes()),
        source: source.url.clone(),
        inputs: input_files(source),
        schema: written
            .schema
            .fields()
            .iter()
            .map(|f| ColumnSchema {
                name: f.name().clone(),
                data_type: f.data_type().to_string(),
                nullable: f.is_nullable(),
            })
            .collect(),
        stratum_columns,
        target_shard_rows: shard_rows,
        summary: SUMMARY_FILE.to_string(),
        splits,
        shards,
    };
    destination.commit(&manifest).await?;
    tracing::info!(manifest = %destination.url_of(&format!("{}/{MANIFEST_FILE}", Destination::run_dir(&run.run_id))), "run committed");
    Ok(Published {
        curation: summary,
        manifest,
        run_url: run.url,
        already_published: false,
    })
}

/// Per split, in split order: its shards, rows, bytes and weight sum.
fn split_totals(shards: &[ShardEntry]) -> Vec<SplitTotals> {
    SPLITS
        .iter()
        .map(|name| {
            let mine: Vec<&ShardEntry> = shards.iter().filter(|s| s.split == *name).collect();
            SplitTotals {
                split: (*name).to_string(),
                shards: mine.len() as u64,
                rows: mine.iter().map(|s| s.rows).sum(),
                bytes: mine.iter().map(|s| s.bytes).sum(),
                weight_sum: mine
                    .iter()
                    .flat_map(|s| s.strata.iter().map(|c| c.weight_sum))
                    .sum(),
            }
        })
        .collect()
}

fn split_index(s: &str) -> usize {
    SPLITS.iter().position(|x| *x == s).unwrap_or(2)
}

/// The run this curation publishes: its id, its identity and its folder's URL.
pub(crate) struct Run {
    pub(crate) run_id: String,
    pub(crate) identity: String,
    pub(crate) url: String,
}
fn input_files(source: &SourceTable) -> Vec<InputFile> {
    source
        .files
        .iter()
        .map(|f| InputFile {
            url: f.url.clone(),
            size: f.size,
            e_tag: f.e_tag.clone(),
            last_modified: f.last_modified.clone(),
        })
        .collect()
}
/// SHA-256 over everything that fixes the output bytes; equal identities give equal runs.
fn identity(pipeline: &Pipeline, source: &SourceTable, seed: u64) -> String {
    let doc = serde_json::json!({
        "strata_version": env!("CARGO_PKG_VERSION"),
        "spec_sha256": sha256_hex(pipeline.text.as_bytes()),
        "source": source.url,
        "inputs": input_files(source),
        "seed": seed,
    });
    sha256_hex(doc.to_string().as_bytes())
}

/// Run ids become object key segments: keep them to a portable alphabet.
fn check_run_id(id: &str) -> Result<String, CurateError> {
    if strata_run::valid_run_id(id) {
        Ok(id.to_string())
    } else {
        Err(CurateError::RunId(id.to_string()))
    }
}
