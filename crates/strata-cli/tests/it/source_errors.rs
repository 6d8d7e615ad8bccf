//! Source and schema problems: one clear line naming the file, key or column; exit 3.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Float64Array, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;

use crate::common::{adult_spec, adult_train, fails, write_parquet, write_spec};

fn with_source(url: &str) -> (tempfile::TempDir, String) {
    let spec = adult_spec().replace(&adult_train().display().to_string(), url);
    let (dir, path) = write_spec(&spec);
    (dir, path.display().to_string())
}

#[test]
fn missing_file() {
    let (_d, spec) = with_source("/nonexistent/adult.parquet");
    let f = fails(&["profile", &spec]);
    assert_eq!(f.code, 3);
    assert!(
        f.error
            .contains("source `file:///nonexistent/adult.parquet`"),
        "{}",
        f.error
    );
    assert!(f.error.contains("no such file"), "{}", f.error);
}

#[test]
fn prefix_without_parquet() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("data.csv"), "a,b\n1,2\n").unwrap();
    let url = format!("{}/", dir.path().display());
    let (_d, spec) = with_source(&url);
    let f = fails(&["profile", &spec]);
    assert_eq!(f.code, 3);
    assert!(f.error.contains("no `.parquet` files found"), "{}", f.error);
    assert!(
        f.error.contains(&dir.path().display().to_string()),
        "{}",
        f.error
    );
}

#[test]
fn corrupt_parquet_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(adult_train(), dir.path().join("a.parquet")).unwrap();
    std::fs::write(
        dir.path().join("b.parquet"),
        b"PAR1 this is not parquet at all",
    )
    .unwrap();
    let (_d, spec) = with_source(&format!("{}/", dir.path().display()));
    let f = fails(&["validate", &spec]);
    assert_eq!(f.code, 3);
    assert!(
        f.error.contains("b.parquet`: not a readable Parquet file"),
        "{}",
        f.error
    );
}

#[test]
fn protected_attribute_absent() {
    let (_d, spec) =
        write_spec(&adult_spec().replace(r#"["sex", "race"]"#, r#"["sex", "race", "gender"]"#));
    let f = fails(&["validate", &spec.display().to_string()]);
    assert_eq!(f.code, 3);
    assert!(
        f.error
            .contains(":16:14: key `groups.attributes`: column `gender` not found"),
        "{}",
        f.error
    );
}

#[test]
fn model_input_absent() {
    // `strata validate` checks `[train]`'s columns as `strata run` does, at their line
    for (key, line) in [
        ("features", r#"features = ["age", "nosuch"]"#),
        ("categorical", r#"categorical = ["nosuch"]"#),
        ("numeric", r#"numeric = ["nosuch"]"#),
    ] {
        let spec = adult_spec().replace("epochs = 5\n", &format!("epochs = 5\n{line}\n"));
        let at = spec.lines().position(|l| l == line).expect("the line") + 1;
        let col = line.find('[').expect("an array") + 1;
        let (_d, spec) = write_spec(&spec);
        let f = fails(&["validate", &spec.display().to_string()]);
        assert_eq!(f.code, 3, "{}", f.error);
        let want = format!(":{at}:{col}: key `train.{key}`: column `nosuch` not found in source");
        assert!(f.error.contains(&want), "{want}\n{}", f.error);
    }
}

#[test]
fn label_absent() {
    let (_d, spec) =
        write_spec(&adult_spec().replace(r#"column = "income""#, r#"column = "salary""#));
    let f = fails(&["profile", &spec.display().to_string()]);
    assert_eq!(f.code, 3);
    assert!(
        f.error
            .contains(":12:10: key `label.column`: column `salary` not found"),
        "{}",
        f.error
    );
}

#[test]
fn positive_value_of_the_wrong_type() {
    let (_d, spec) = write_spec(&adult_spec().replace(r#"positive = ">50K""#, "positive = 1"));
    let f = fails(&["validate", &spec.display().to_string()]);
    assert_eq!(f.code, 3);
    assert!(
        f.error
            .contains("key `label.positive`: positive value 1 does not fit label column `income`"),
        "{}",
        f.error
    );
}

#[test]
fn positive_value_never_seen() {
    let (_d, spec) =
        write_spec(&adult_spec().replace(r#"positive = ">50K""#, r#"positive = ">50k""#));
    let f = fails(&["profile", &spec.display().to_string()]);
    assert_eq!(f.code, 3);
    assert!(
        f.error
            .contains(r#"key `label.positive`: positive value ">50k" never appears"#),
        "{}",
        f.error
    );
    assert!(
        f.error.contains(r#"values seen: "<=50K", ">50K""#),
        "{}",
        f.error
    );
}

#[test]
fn reference_naming_an_unknown_group() {
    let spec = adult_spec().replace("Other = 0.039", "Other = 0.029\nMartian = 0.01");
    let (_d, spec) = write_spec(&spec);
    let f = fails(&["profile", &spec.display().to_string()]);
    assert_eq!(f.code, 3);
    assert!(
        f.error.contains(
            "key `groups.reference.race`: group `Martian` does not occur in column `race`"
        ),
        "{}",
        f.error
    );
}

/// A tiny table with a float label and a negative weight, for the type and value checks.
fn odd_table(dir: &std::path::Path) -> String {
    let schema = Arc::new(Schema::new(vec![
        Field::new("sex", DataType::Utf8, true),
        Field::new("race", DataType::Utf8, true),
        Field::new("score", DataType::Float64, true),
        Field::new("income", DataType::Utf8, true),
        Field::new("fnlwgt", DataType::Int64, true),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(vec!["Male", "Female", "Female"])),
            Arc::new(StringArray::from(vec!["White", "Black", "Other"])),
            Arc::new(Float64Array::from(vec![0.1, 0.9, 0.5])),
            Arc::new(StringArray::from(vec![">50K", "<=50K", ">50K"])),
            Arc::new(Int64Array::from(vec![10, -3, 4])),
        ],
    )
    .unwrap();
    let path = dir.join("odd.parquet");
    write_parquet(&path, &batch);
    path.display().to_string()
}

#[test]
fn label_of_an_unusable_type() {
    let dir = tempfile::tempdir().unwrap();
    let data = odd_table(dir.path());
    let spec = adult_spec()
        .replace(&adult_train().display().to_string(), &data)
        .replace(r#"column = "income""#, r#"column = "score""#);
    let (_d, spec) = write_spec(&spec);
    let f = fails(&["validate", &spec.display().to_string()]);
    assert_eq!(f.code, 3);
    assert!(
        f.error
            .contains("key `label.column`: label column `score` has type Float64"),
        "{}",
        f.error
    );
}

#[test]
fn negative_weights_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let data = odd_table(dir.path());
    let spec = adult_spec()
        .replace(&adult_train().display().to_string(), &data)
        .replace("[groups.reference.sex]\nFemale = 0.513\nMale = 0.487\n", "")
        .replace("[groups.reference.race]\nWhite = 0.803\nBlack = 0.121\nAsian-Pac-Islander = 0.029\nAmer-Indian-Eskimo = 0.008\nOther = 0.039\n", "");
    let (_d, spec) = write_spec(&spec);
    let f = fails(&["profile", &spec.display().to_string()]);
    assert_eq!(f.code, 3);
    assert!(
        f.error
            .contains("key `source.weight_column`: 1 rows of source"),
        "{}",
        f.error
    );
}

#[test]
fn s3_endpoint_refusing_connections_fails_after_bounded_retries() {
    // Port 9 (discard) is closed on loopback: every connection is refused at once.
    let spec = adult_spec().replace(
        &adult_train().display().to_string(),
        "s3://no-such-bucket/adult/",
    ) + "\n[storage.s3]\nendpoint = \"http://127.0.0.1:9\"\nallow_http = true\npath_style = true\nregion = \"us-east-1\"\n\n[storage.retry]\nmax_retries = 2\nretry_timeout_secs = 5\n";
    let (_d, spec) = write_spec(&spec);
    let started = Instant::now();
    let out = crate::common::strata()
        .args(["profile", &spec.display().to_string()])
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .timeout(Duration::from_secs(120))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
    let error = stderr
        .lines()
        .find(|l| l.starts_with("error:"))
        .expect("an error line");
    assert!(error.contains("s3://no-such-bucket/adult/"), "{error}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn null_and_nan_weights_are_counted_with_the_negative_ones() {
    let dir = tempfile::tempdir().unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("sex", DataType::Utf8, true),
        Field::new("race", DataType::Utf8, true),
        Field::new("income", DataType::Utf8, true),
        Field::new("fnlwgt", DataType::Float64, true),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(vec![
                "Male", "Female", "Female", "Male", "Male", "Female",
            ])),
            Arc::new(StringArray::from(vec![
                "White", "Black", "Other", "White", "White", "Black",
            ])),
            Arc::new(StringArray::from(vec![
                ">50K", "<=50K", ">50K", "<=50K", ">50K", ">50K",
            ])),
            Arc::new(Float64Array::from(vec![
                Some(1.0),
                Some(f64::NAN),
                None,
                Some(-2.0),
                Some(5.0),
                Some(0.5),
            ])),
        ],
    )
    .unwrap();
    let path = dir.path().join("weights.parquet");
    write_parquet(&path, &batch);
    let spec = adult_spec()
        .replace(&adult_train().display().to_string(), &path.display().to_string())
        .replace("[groups.reference.sex]\nFemale = 0.513\nMale = 0.487\n", "")
        .replace("[groups.reference.race]\nWhite = 0.803\nBlack = 0.121\nAsian-Pac-Islander = 0.029\nAmer-Indian-Eskimo = 0.008\nOther = 0.039\n", "");
    let (_d, spec) = write_spec(&spec);
    let f = fails(&["profile", &spec.display().to_string()]);
    assert_eq!(f.code, 3);
    assert!(
        f.error
            .contains("key `source.weight_column`: 3 rows of source"),
        "{}",
        f.error
    );
}

/// DataFusion's settings come from `DATAFUSION_*` variables; a bad one is one line that
/// names the setting (DataFusion's own message spans several, repeating its causes).
#[test]
fn bad_datafusion_setting_is_one_line() {
    let (_d, spec) = write_spec(&adult_spec());
    let out = crate::common::strata()
        .env("DATAFUSION_EXECUTION_BATCH_SIZE", "abc")
        .args(["profile", &spec.display().to_string()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("error: reading DATAFUSION_* environment settings: "),
        "{stderr}"
    );
    assert!(
        stderr.contains("datafusion.execution.batch_size") && stderr.contains("'abc'"),
        "{stderr}"
    );
}
