//! Spec problems: one located line each, exit code 3, nothing read.

use crate::common::{adult_spec, fails, write_spec};

fn rejects(spec: &str, expected: &[&str]) -> String {
    let (_dir, path) = write_spec(spec);
    let p = path.display().to_string();
    for cmd in ["validate", "profile"] {
        let f = fails(&[cmd, &p]);
        assert_eq!(f.code, 3, "{}", f.error);
        assert!(
            f.error.contains(&p),
            "error should name the file: {}",
            f.error
        );
        for e in expected {
            assert!(f.error.contains(e), "expected `{e}` in: {}", f.error);
        }
    }
    fails(&["validate", &p]).error
}

#[test]
fn malformed_toml() {
    let e = rejects(&adult_spec().replace("[label]", "[label"), &[]);
    assert!(e.contains(".toml:11:"), "should name the line: {e}");
}

#[test]
fn unknown_key() {
    let e = rejects(
        &adult_spec().replace("min_group_rows = 50", "min_group_row = 50"),
        &["unknown field `min_group_row`"],
    );
    assert!(e.contains(".toml:18:1:"), "{e}");
}

#[test]
fn missing_key() {
    rejects(
        &adult_spec().replace("positive = \">50K\"", ""),
        &["missing field `positive`"],
    );
}

#[test]
fn reference_shares_not_summing_to_one() {
    rejects(
        &adult_spec().replace("Male = 0.487", "Male = 0.387"),
        &["key `groups.reference.sex`", "sum to 1"],
    );
}

#[test]
fn reference_for_an_unprotected_column() {
    rejects(
        &adult_spec().replace("[groups.reference.sex]", "[groups.reference.age]"),
        &["key `groups.reference.age`"],
    );
}

#[test]
fn missing_spec_file() {
    let f = fails(&["profile", "/nonexistent/pipeline.toml"]);
    assert_eq!(f.code, 3);
    assert!(
        f.error
            .contains("/nonexistent/pipeline.toml: cannot read pipeline spec"),
        "{}",
        f.error
    );
}

#[test]
fn usage_errors_exit_2() {
    let out = crate::common::strata().args(["profile"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = crate::common::strata()
        .args(["profile", "x.toml", "--format", "yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
