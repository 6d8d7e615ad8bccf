//! `strata profile` on the shipped Adult data. The numbers themselves are checked
//! against an independent computation from the raw UCI files in tests/e2e; here the
//! contracts: formats, determinism, and what a reader can rely on.

use serde_json::Value;

use crate::common::{repo_root, strata};

fn profile(args: &[&str]) -> String {
    let pipeline = repo_root().join("pipelines/adult.toml");
    let out = strata()
        .arg("profile")
        .arg(&pipeline)
        .args(args)
        .output()
        .expect("run strata");
    assert!(
        out.status.success(),
        "strata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

fn json(args: &[&str]) -> Value {
    let mut all = vec!["--format", "json"];
    all.extend_from_slice(args);
    serde_json::from_str(&profile(&all)).expect("valid JSON")
}

fn portable(s: &str) -> String {
    s.replace(&repo_root().display().to_string(), "[REPO]")
}

#[test]
fn table_output() {
    insta::assert_snapshot!("adult_table", portable(&profile(&[])));
}

#[test]
fn markdown_output() {
    insta::assert_snapshot!(
        "adult_markdown",
        portable(&profile(&["--format", "markdown"]))
    );
}

#[test]
fn json_contract() {
    let p = json(&[]);
    assert_eq!(p["schema_version"], 1);
    assert_eq!(p["total_rows"], 32561);
    assert_eq!(p["label"]["column"], "income");
    assert_eq!(p["label"]["positive"], ">50K");
    assert_eq!(
        p["groupings"],
        serde_json::json!([["sex"], ["race"], ["sex", "race"]])
    );
    let groups = p["groups"].as_array().unwrap();
    // 2 sexes + 5 races + every (sex, race) pair that occurs (all 10 do in Adult).
    assert_eq!(groups.len(), 2 + 5 + 10);
    for g in groups {
        for key in [
            "attributes",
            "rows",
            "share",
            "positive_rate",
            "weighted_share",
            "reference_share",
            "gap",
            "small",
        ] {
            assert!(g.get(key).is_some(), "group lacks `{key}`: {g}");
        }
    }
    // Each grouping's rows add up to the total, and shares to 1.
    for grouping in p["groupings"].as_array().unwrap() {
        let names: Vec<_> = grouping
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        let of: Vec<_> = groups
            .iter()
            .filter(|g| {
                g["attributes"]
                    .as_object()
                    .unwrap()
                    .keys()
                    .map(String::as_str)
                    .eq(names.iter().copied())
            })
            .collect();
        let rows: u64 = of.iter().map(|g| g["rows"].as_u64().unwrap()).sum();
        let share: f64 = of.iter().map(|g| g["share"].as_f64().unwrap()).sum();
        assert_eq!(rows, 32561, "{grouping}");
        assert!((share - 1.0).abs() < 1e-9, "{grouping}: {share}");
    }
    // Stable order: attributes in spec order, values sorted.
    let first: Vec<_> = groups
        .iter()
        .take(2)
        .map(|g| g["attributes"]["sex"].as_str().unwrap())
        .collect();
    assert_eq!(first, ["Female", "Male"]);
    let pair = &groups[7]["attributes"];
    assert_eq!(
        pair.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["sex", "race"]
    );
    // Reference shares only for single attributes; gap = share - reference.
    let female = &groups[0];
    assert_eq!(female["reference_share"], 0.513);
    let gap = female["share"].as_f64().unwrap() - 0.513;
    assert!((female["gap"].as_f64().unwrap() - gap).abs() < 1e-12);
    assert!(groups[7]["reference_share"].is_null());
}

#[test]
fn small_groups_are_flagged() {
    let spec = crate::common::adult_spec().replace("min_group_rows = 50", "min_group_rows = 150");
    let (_dir, path) = crate::common::write_spec(&spec);
    let out = strata()
        .arg("profile")
        .arg(&path)
        .args(["--format", "json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let p: Value = serde_json::from_slice(&out.stdout).unwrap();
    let small: Vec<_> = p["groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["small"].as_bool().unwrap())
        .map(|g| g["rows"].as_u64().unwrap())
        .collect();
    // Female × Amer-Indian-Eskimo (119) and Female × Other (109) in the training split
    assert_eq!(small, [119, 109]);
    let warned = p["warnings"].as_array().unwrap().iter().any(|w| {
        w.as_str()
            .unwrap()
            .contains("2 groups have fewer than 150 rows")
    });
    assert!(warned);
}

#[test]
fn output_is_identical_for_any_partitioning() {
    let one = profile(&["--format", "json", "--target-partitions", "1"]);
    let eight = profile(&["--format", "json", "--target-partitions", "8"]);
    assert_eq!(one, eight);
    assert_eq!(one, profile(&["--format", "json"]));
}

#[test]
fn out_writes_the_file_and_nothing_to_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("profile.json");
    let stdout = profile(&["--format", "json", "--out", file.to_str().unwrap()]);
    assert!(stdout.is_empty());
    let written: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(written["total_rows"], 32561);
    // Only the file itself: no temporary left behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn validate_reports_the_source() {
    let pipeline = repo_root().join("pipelines/adult.toml");
    let out = strata().arg("validate").arg(&pipeline).output().unwrap();
    assert!(out.status.success());
    let s = String::from_utf8(out.stdout).unwrap();
    assert!(s.starts_with("ok: "), "{s}");
    assert!(s.contains("1 file, 15 columns"), "{s}");
}

#[test]
fn json_logs_are_one_object_per_line() {
    let pipeline = repo_root().join("pipelines/adult.toml");
    let out = strata()
        .args(["--log-format", "json", "profile"])
        .arg(&pipeline)
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<_> = stderr.lines().collect();
    assert!(!lines.is_empty());
    for l in lines {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(
            v.get("level").is_some() && v.get("message").is_some(),
            "{l}"
        );
    }
}

/// A reader of `profile.json` gets every field back through `strata_run::Profile` (the
/// contract type, without DataFusion): written again, it is the same JSON. (Compared as
/// JSON values: serde_json without `float_roundtrip` may read a float's last digit
/// differently from the text, the same way for both sides.)
#[test]
fn profile_json_reads_back_as_the_contract_type() {
    let text = profile(&["--format", "json"]);
    let parsed: strata_run::Profile = serde_json::from_str(&text).expect("a Profile");
    assert_eq!(parsed.total_rows, 32_561, "UCI Adult's training split");
    assert_eq!(
        parsed.groupings,
        [vec!["sex"], vec!["race"], vec!["sex", "race"]]
    );
    let want: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(serde_json::to_value(&parsed).unwrap(), want);
}

/// The same for `curation.json` and the manifest of a published run.
#[test]
fn curation_and_manifest_read_back_as_the_contract_types() {
    let out = tempfile::tempdir().unwrap();
    let stdout = crate::common::publish(out.path(), &["--format", "json"]);
    let curation: strata_run::Curation = serde_json::from_str(&stdout).expect("a Curation");
    assert_eq!(
        curation.splits.iter().map(|s| s.rows_after).sum::<u64>(),
        32_561,
        "reweighing keeps every row"
    );
    let want: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(serde_json::to_value(&curation).unwrap(), want);
    let manifest = crate::common::latest_manifest(out.path());
    let typed: strata_run::Manifest = serde_json::from_value(manifest.clone()).expect("a Manifest");
    assert_eq!(
        typed.shards.len(),
        manifest["shards"].as_array().unwrap().len()
    );
}
