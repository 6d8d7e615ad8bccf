//! Shared helpers: the binary, the repository's data, and scratch pipelines.

use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;

pub fn repo_root() -> PathBuf {
    // the runner's value, not the one compiled in: a test binary reused from a build of
    // the same sources at another path (CI's bare clones) must not look there
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or(env!("CARGO_MANIFEST_DIR").into());
    Path::new(&dir)
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

pub fn adult_train() -> PathBuf {
    repo_root().join("data/adult/train.parquet")
}

pub fn strata() -> Command {
    let mut cmd = Command::cargo_bin("strata").expect("the strata binary is built");
    cmd.env_remove("STRATA_LOG").env_remove("STRATA_LOG_FORMAT");
    cmd
}

/// A pipeline spec like `pipelines/adult.toml` with the source made absolute, for
/// tests to mutate with string replacements.
pub fn adult_spec() -> String {
    std::fs::read_to_string(repo_root().join("pipelines/adult.toml"))
        .expect("pipelines/adult.toml")
        .replace(
            "../data/adult/train.parquet",
            &adult_train().display().to_string(),
        )
}

/// Writes `text` as `name` in a fresh temporary folder, returning both.
pub fn write_spec(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("pipeline.toml");
    std::fs::write(&path, text).expect("write spec");
    (dir, path)
}

/// The outcome of a failing command: its exit code and its one `error:` line.
#[derive(Debug)]
pub struct Failure {
    pub code: i32,
    pub error: String,
}

/// Runs `strata ARGS`, expecting failure with exactly one `error:` line on stderr,
/// no panic, and nothing on stdout.
pub fn fails(args: &[&str]) -> Failure {
    let out: Output = strata().args(args).output().expect("run strata");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected failure for {args:?}; stderr: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "strata panicked: {stderr}");
    assert!(
        out.stdout.is_empty(),
        "stdout should be empty on failure: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let errors: Vec<_> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "expected one error line, stderr: {stderr}");
    Failure {
        code: out.status.code().expect("exit code"),
        error: errors[0].to_string(),
    }
}

/// Writes a small Parquet file with the given columns.
pub fn write_parquet(path: &Path, batch: &arrow::record_batch::RecordBatch) {
    let file = std::fs::File::create(path).expect("create parquet");
    let mut w = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).expect("writer");
    w.write(batch).expect("write batch");
    w.close().expect("close");
}

/// The manifest of the run `out/_latest` points at.
pub fn latest_manifest(out: &Path) -> serde_json::Value {
    let latest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("_latest")).expect("_latest")).unwrap();
    serde_json::from_slice(
        &std::fs::read(out.join(latest["manifest"].as_str().unwrap())).expect("manifest"),
    )
    .unwrap()
}

/// `strata curate pipelines/adult.toml --out OUT EXTRA...` on `cmd` (the binary with
/// its environment and global flags), expected to succeed: its output.
pub fn curate_ok(mut cmd: Command, out: &Path, extra: &[&str]) -> Output {
    let o = cmd
        .arg("curate")
        .arg(repo_root().join("pipelines/adult.toml"))
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "curate failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// `strata curate pipelines/adult.toml --out OUT EXTRA...`, expected to succeed: its stdout.
pub fn publish(out: &Path, extra: &[&str]) -> String {
    String::from_utf8(curate_ok(strata(), out, extra).stdout).unwrap()
}
