//! The facade end to end on the shipped UCI Adult data: the crate docs' example, run
//! for real, its counts checked against the raw UCI file read here as plain text.
//!
//! (This is a test, not a doctest: `cargo test --doc` builds every dependency a second
//! time, nine minutes on the reference machine, for one example.)

use std::path::PathBuf;

fn repo() -> PathBuf {
    // the runner's value, not the one compiled in: a test binary reused from a build of
    // the same sources at another path (CI's bare clones) must not look there
    PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or(env!("CARGO_MANIFEST_DIR").into()))
        .join("../..")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_pipeline_runs_adult_and_agrees_with_the_raw_file() {
    // `adult.data`: one comma-separated record per line, sex the tenth field
    let raw = std::fs::read_to_string(repo().join("data/raw/adult/adult.data")).unwrap();
    let records: Vec<Vec<&str>> = raw
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split(',').map(str::trim).collect())
        .collect();
    let female = records.iter().filter(|r| r[9] == "Female").count() as u64;
    let out = tempfile::tempdir().unwrap();
    let out_url = out.path().join("adult-curated").display().to_string();

    // the example of the crate docs
    let pipeline = strata::Pipeline::open(repo().join("pipelines/adult.toml"), &Default::default())
        .await
        .unwrap();
    let profile = pipeline.profile().await.unwrap();
    let published = pipeline
        .curate(&strata::CurateOptions {
            out: out_url,
            ..Default::default()
        })
        .await
        .unwrap();
    let checks = pipeline
        .check(strata::CheckOptions {
            out: Some(published.run_url.clone()),
            profile: Some(profile.clone()),
            ..strata::CheckOptions::default()
        })
        .await
        .unwrap();
    assert!(!checks.any_error());

    assert_eq!(profile.total_rows, records.len() as u64);
    assert_eq!(profile.total_rows, 32_561);
    let sex_female = profile
        .groups
        .iter()
        .find(|g| g.attributes.0 == [("sex".to_string(), Some("Female".to_string()))])
        .unwrap();
    assert_eq!(sex_female.rows, female);
    // reweighing keeps every row: the shards hold the source's rows, once each
    let shard_rows: u64 = published.manifest.shards.iter().map(|s| s.rows).sum();
    assert_eq!(shard_rows, records.len() as u64);
    assert!(!published.already_published);
}
