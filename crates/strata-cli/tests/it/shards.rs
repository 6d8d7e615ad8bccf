//! Publishing: identical runs, the commit protocol, `shards verify` and `shards assign`.
//! Shard contents are read back independently by pyarrow in tests/e2e/test_shards.py.

use std::path::Path;

use crate::common::{curate_ok, fails, latest_manifest, publish, repo_root, strata};

fn without_timestamp(mut m: serde_json::Value) -> serde_json::Value {
    m.as_object_mut()
        .unwrap()
        .remove("created_at")
        .expect("created_at");
    m
}

fn run_dir(out: &Path) -> std::path::PathBuf {
    out.join("runs")
        .join(latest_manifest(out)["run_id"].as_str().unwrap())
}

#[test]
fn manifests_are_identical_across_runs_and_partition_counts() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        dir.path().join("a"),
        dir.path().join("b"),
        dir.path().join("c"),
    );
    publish(&a, &["--target-partitions", "1"]);
    publish(&b, &["--target-partitions", "8"]);
    publish(&c, &[]);
    // the shard writer's spill files, and key ranges of 1000 rows instead of one range
    let (d, e) = (dir.path().join("d"), dir.path().join("e"));
    let with_ranges = |out: &Path, extra: &[&str], budget: &str| {
        let mut cmd = strata();
        cmd.env("STRATA_RANGE_ROWS", "1000")
            .env("STRATA_SHARD_MEMORY", budget)
            .arg("-v");
        String::from_utf8_lossy(&curate_ok(cmd, out, extra).stderr).into_owned()
    };
    with_ranges(&d, &["--memory-limit", "64MiB"], "1GiB");
    with_ranges(&e, &[], "1GiB");
    // a budget of 1 MB: rows start in memory and move to spill files part-way through,
    // and dealt rows waiting for their shard past a quarter of it go to files too
    let f = dir.path().join("f");
    let log = with_ranges(&f, &[], "1MB");
    assert!(
        log.contains("dealt pieces waiting for their shard were moved to files"),
        "the waiting pieces' files were not used: {log}"
    );
    // a budget of 0: spill files from the start, without a memory limit
    let g = dir.path().join("g");
    with_ranges(&g, &[], "0");
    let ma = latest_manifest(&a);
    for other in [&d, &e, &f, &g] {
        assert!(
            without_timestamp(ma.clone()) == without_timestamp(latest_manifest(other)),
            "{} differs",
            other.display()
        );
    }
    assert!(
        ma["shards"].as_array().unwrap().len() > 3,
        "Adult at 4000 rows per shard gives several shards"
    );
    assert_eq!(
        without_timestamp(ma.clone()),
        without_timestamp(latest_manifest(&b))
    );
    assert_eq!(
        without_timestamp(ma.clone()),
        without_timestamp(latest_manifest(&c))
    );
    // the manifest's hashes are the files' hashes
    for shard in ma["shards"].as_array().unwrap() {
        let bytes = std::fs::read(run_dir(&a).join(shard["path"].as_str().unwrap())).unwrap();
        assert_eq!(bytes.len() as u64, shard["bytes"].as_u64().unwrap());
        assert_eq!(
            std::fs::read(run_dir(&b).join(shard["path"].as_str().unwrap())).unwrap(),
            bytes
        );
    }
}

#[test]
fn every_shard_holds_every_stratum_within_one_row_of_its_share() {
    let dir = tempfile::tempdir().unwrap();
    publish(dir.path(), &[]);
    let m = latest_manifest(dir.path());
    for split in m["splits"].as_array().unwrap() {
        let name = split["split"].as_str().unwrap();
        let shards: Vec<&serde_json::Value> = m["shards"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["split"] == name)
            .collect();
        let s = shards.len() as f64;
        let n = split["rows"].as_u64().unwrap() as f64;
        let mut totals = std::collections::BTreeMap::<String, (serde_json::Value, u64)>::new();
        for shard in &shards {
            let rows = shard["rows"].as_u64().unwrap() as f64;
            assert!(
                (rows - n / s).abs() < 1.0,
                "{name}: shard of {rows} rows, {n} / {s}"
            );
            for st in shard["strata"].as_array().unwrap() {
                totals
                    .entry(st["values"].to_string())
                    .or_insert_with(|| (st["values"].clone(), 0))
                    .1 += st["rows"].as_u64().unwrap();
            }
        }
        for (stratum, (values, total)) in &totals {
            for shard in &shards {
                let here = shard["strata"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|st| st["values"] == *values)
                    .map_or(0, |st| st["rows"].as_u64().unwrap());
                assert!(
                    (here as f64 - *total as f64 / s).abs() < 1.0,
                    "{name} {stratum}: {here} rows in a shard, {total} / {s}"
                );
            }
        }
    }
}

#[test]
fn a_rerun_is_a_no_op_and_a_different_run_in_the_same_prefix_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path();
    publish(out, &[]);
    let run = run_dir(out);
    let manifest = std::fs::read(run.join("manifest.json")).unwrap();
    let latest = std::fs::read(out.join("_latest")).unwrap();
    let again = publish(out, &[]);
    assert!(again.contains("Already published"), "{again}");
    assert_eq!(
        std::fs::read(run.join("manifest.json")).unwrap(),
        manifest,
        "the committed manifest is kept as is"
    );

    let run_id = run.file_name().unwrap().to_str().unwrap().to_string();
    let spec = repo_root().join("pipelines/adult.toml");
    let f = fails(&[
        "curate",
        spec.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--seed",
        "43",
        "--run-id",
        &run_id,
    ]);
    assert_eq!(f.code, 3);
    assert!(
        f.error
            .contains("already holds the manifest of a different run"),
        "{}",
        f.error
    );
    assert_eq!(
        std::fs::read(run.join("manifest.json")).unwrap(),
        manifest,
        "not overwritten"
    );
    assert_eq!(
        std::fs::read(out.join("_latest")).unwrap(),
        latest,
        "pointer unchanged"
    );

    let f = fails(&[
        "curate",
        spec.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--run-id",
        "../escape",
    ]);
    assert_eq!(f.code, 3);
    assert!(f.error.contains("run id `../escape`"), "{}", f.error);
}

#[test]
fn verify_passes_on_a_fresh_run_and_names_tampered_and_missing_shards() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path();
    publish(out, &[]);
    let ok = strata()
        .args(["shards", "verify"])
        .arg(out)
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).starts_with("ok: run "));

    let run = run_dir(out);
    // same size, one byte changed in the middle of the data
    let victim = run.join("train/part-00001.parquet");
    let mut bytes = std::fs::read(&victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&victim, bytes).unwrap();
    std::fs::remove_file(run.join("test/part-00000.parquet")).unwrap();

    let bad = strata()
        .args(["shards", "verify", "--format", "json"])
        .arg(run.join("manifest.json"))
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&bad.stdout).unwrap();
    assert_eq!(report["ok"], false);
    let problems: Vec<&str> = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("shard train/part-00001.parquet: sha256 is ")),
        "{problems:?}"
    );
    assert!(
        problems.contains(&"shard test/part-00000.parquet: missing"),
        "{problems:?}"
    );
    assert!(
        !problems.iter().any(|p| p.contains("part-00002")),
        "intact shards pass: {problems:?}"
    );
}

#[test]
fn assign_gives_every_training_shard_to_exactly_one_rank() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path();
    publish(out, &[]);
    let m = latest_manifest(out);
    let train: Vec<String> = m["shards"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["split"] == "train")
        .map(|s| s["path"].as_str().unwrap().to_string())
        .collect();
    for world in [1u32, 2, 3, 16] {
        let mut all = Vec::new();
        for rank in 0..world {
            let o = strata()
                .args(["shards", "assign"])
                .arg(out)
                .args([
                    "--world-size",
                    &world.to_string(),
                    "--rank",
                    &rank.to_string(),
                ])
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            let lines: Vec<String> = String::from_utf8(o.stdout)
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect();
            assert!(
                lines.len() as f64 <= (train.len() as f64 / f64::from(world)).ceil(),
                "world {world} rank {rank}: {lines:?}"
            );
            all.extend(lines);
        }
        all.sort();
        let mut want: Vec<String> = train
            .iter()
            .map(|p| {
                format!(
                    "{}{p}",
                    url::Url::from_directory_path(run_dir(out)).unwrap()
                )
            })
            .collect();
        want.sort();
        assert_eq!(all, want, "world {world}");
    }
    let f = fails(&[
        "shards",
        "assign",
        out.to_str().unwrap(),
        "--world-size",
        "2",
        "--rank",
        "2",
    ]);
    assert_eq!(f.code, 3);
    assert!(f.error.contains("--rank 2 is out of range"), "{}", f.error);
}

#[test]
fn verify_of_a_folder_without_a_run_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let f = fails(&["shards", "verify", dir.path().to_str().unwrap()]);
    assert_eq!(f.code, 3);
    assert!(f.error.contains("no committed run"), "{}", f.error);
}
