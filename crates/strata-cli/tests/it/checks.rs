//! `strata check`: bad check files are one-line errors naming the file and line; a check
//! that cannot run is an `error` result while the others still run. The ready checks and
//! the JUnit/JSON contracts are exercised against purpose-built data in tests/e2e.

use std::path::Path;

use crate::common::{adult_spec, fails, strata, write_spec};

/// A copy of the Adult pipeline whose checks are the files `checks` (name, text).
fn pipeline_with_checks(checks: &[(&str, &str)]) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let sql = dir.path().join("sql");
    std::fs::create_dir(&sql).unwrap();
    for (name, text) in checks {
        std::fs::write(sql.join(name), text).unwrap();
    }
    let spec = adult_spec().replace(
        "[checks.params]",
        &format!(
            "[checks]\ndirs = [\"{}\"]\n\n[checks.params]",
            sql.display()
        ),
    );
    let path = dir.path().join("pipeline.toml");
    std::fs::write(&path, spec).unwrap();
    (dir, path)
}

fn check_json(spec: &Path) -> (i32, serde_json::Value) {
    let json = spec.with_file_name("result.json");
    let o = strata()
        .args(["check", "--stage", "source", "--json"])
        .arg(&json)
        .arg(spec)
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&o.stderr).contains("panicked"));
    (
        o.status.code().unwrap(),
        serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap(),
    )
}

#[test]
fn unknown_metadata_keys_and_malformed_thresholds_name_the_file_and_line() {
    let (_d, spec) = pipeline_with_checks(&[(
        "typo.sql",
        "-- name: typo\n-- stage: source\n-- severty: warn\nSELECT 1\n",
    )]);
    let f = fails(&["check", spec.to_str().unwrap()]);
    assert_eq!(f.code, 3);
    assert!(
        f.error
            .contains("typo.sql:3: unknown metadata key `severty`"),
        "{}",
        f.error
    );

    let (_d, spec) = pipeline_with_checks(&[(
        "t.sql",
        "-- name: t\n-- stage: source\n-- error_if: more than 3\nSELECT 1\n",
    )]);
    let f = fails(&["check", spec.to_str().unwrap()]);
    assert_eq!(f.code, 3);
    assert!(
        f.error
            .contains("t.sql:3: error_if: `more than 3` is not a threshold"),
        "{}",
        f.error
    );

    let (_d, spec) =
        pipeline_with_checks(&[("s.sql", "-- name: s\n-- stage: everywhere\nSELECT 1\n")]);
    let f = fails(&["check", spec.to_str().unwrap()]);
    assert!(
        f.error
            .contains("s.sql:2: stage must be `source`, `curated` or `both`"),
        "{}",
        f.error
    );

    let (_d, spec) = pipeline_with_checks(&[("n.sql", "-- name: n\nSELECT 1\n")]);
    let f = fails(&["check", spec.to_str().unwrap()]);
    assert!(
        f.error
            .contains("n.sql:1: missing metadata `-- stage: source|curated|both`"),
        "{}",
        f.error
    );
}

#[test]
fn a_check_that_cannot_run_is_an_error_result_and_the_others_still_run() {
    let (_d, spec) = pipeline_with_checks(&[
        (
            "a_unknown_column.sql",
            "-- name: unknown_column\n-- stage: source\nSELECT *\nFROM source\nWHERE no_such_column > 3\n",
        ),
        (
            "b_missing_param.sql",
            "-- name: missing_param\n-- stage: source\nSELECT *\nFROM source\nWHERE age > $undeclared\n",
        ),
        (
            "c_ddl.sql",
            "-- name: ddl\n-- stage: source\nCREATE TABLE x AS SELECT 1\n",
        ),
        (
            "d_ok.sql",
            "-- name: ok\n-- stage: source\nSELECT * FROM source WHERE age < 0\n",
        ),
    ]);
    let (code, result) = check_json(&spec);
    assert_eq!(code, 3);
    let by = |name: &str| {
        result["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(by("ok")["status"], "pass");
    let unknown = by("unknown_column");
    assert_eq!(unknown["status"], "error");
    assert!(
        unknown["message"]
            .as_str()
            .unwrap()
            .contains("a_unknown_column.sql:5: Schema error: No field named no_such_column"),
        "{unknown}"
    );
    let param = by("missing_param")["message"].as_str().unwrap().to_string();
    assert!(
        param.contains("b_missing_param.sql:5: ") && param.contains("undeclared"),
        "{param}"
    );
    assert!(
        by("ddl")["message"]
            .as_str()
            .unwrap()
            .contains("DDL not supported"),
        "{}",
        by("ddl")
    );
}

#[test]
fn curated_stage_without_out_is_a_usage_error_and_all_skips_it() {
    let (_d, spec) = pipeline_with_checks(&[(
        "c.sql",
        "-- name: c\n-- stage: curated\nSELECT * FROM curated WHERE sample_weight < 0\n",
    )]);
    let f = fails(&["check", spec.to_str().unwrap(), "--stage", "curated"]);
    assert_eq!(f.code, 3);
    assert!(
        f.error.contains("--stage curated needs --out URL"),
        "{}",
        f.error
    );
    let json = spec.with_file_name("r.json");
    let o = strata()
        .args(["check", "--json"])
        .arg(&json)
        .arg(&spec)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(r["checks"][0]["status"], "skipped");
}

#[test]
fn the_ready_checks_run_on_adult_from_the_default_folder() {
    let (_d, spec) = write_spec(&adult_spec());
    // the spec was moved, so point it back at the repository's sql/ folder
    let text = std::fs::read_to_string(&spec).unwrap().replace(
        "[checks.params]",
        &format!(
            "[checks]\ndirs = [\"{}\"]\n\n[checks.params]",
            crate::common::repo_root().join("sql").display()
        ),
    );
    std::fs::write(&spec, text).unwrap();
    let (code, result) = check_json(&spec);
    assert_eq!(code, 0, "{result}");
    let names: Vec<&str> = result["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "duplicate_ids",
            "label_values_allowed",
            "min_rows_per_group",
            "min_rows_per_group_label",
            "protected_null_rate"
        ]
    );
}
