use super::*;

const VALID: &str = r#"
name = "demo"

[source]
url = "../data/x.parquet"
weight_column = "w"

[label]
column = "income"
positive = ">50K"

[groups]
attributes = ["sex", "race"]
min_group_rows = 10

[groups.reference.sex]
Male = 0.49
Female = 0.51
"#;

fn parse(text: &str) -> Result<Pipeline, SpecError> {
    Pipeline::parse("/specs/pipelines/demo.toml", text.to_string())
}

fn err(text: &str) -> String {
    parse(text)
        .expect_err("spec should be rejected")
        .to_string()
}

#[test]
fn parses_a_valid_spec_and_resolves_relative_sources_against_its_folder() {
    let p = parse(VALID).unwrap();
    assert_eq!(p.name, "demo");
    assert_eq!(p.source.url, "/specs/data/x.parquet");
    assert_eq!(p.source.weight_column.as_deref(), Some("w"));
    assert_eq!(p.label.positive, LabelValue::String(">50K".into()));
    assert_eq!(p.groups.min_group_rows, 10);
    assert_eq!(p.groups.reference["sex"]["Female"], 0.51);
    assert_eq!(p.storage.retry.max_retries, 3);
}

#[test]
fn urls_with_a_scheme_are_kept_verbatim() {
    let p = parse(&VALID.replace("../data/x.parquet", "s3://bucket/adult/")).unwrap();
    assert_eq!(p.source.url, "s3://bucket/adult/");
}

#[test]
fn groupings_cover_each_attribute_then_every_intersection() {
    let mut p = parse(
        &VALID
            .replace(r#"["sex", "race"]"#, r#"["a", "b", "c"]"#)
            .replace("[groups.reference.sex]\nMale = 0.49\nFemale = 0.51\n", ""),
    )
    .unwrap();
    assert_eq!(
        p.groups.groupings(),
        vec![
            vec![0],
            vec![1],
            vec![2],
            vec![0, 1],
            vec![0, 2],
            vec![1, 2],
            vec![0, 1, 2]
        ]
    );
    p.groups.intersections = Intersections::Full;
    assert_eq!(
        p.groups.groupings(),
        vec![vec![0], vec![1], vec![2], vec![0, 1, 2]]
    );
    p.groups.intersections = Intersections::None;
    assert_eq!(p.groups.groupings(), vec![vec![0], vec![1], vec![2]]);
}

#[test]
fn unknown_keys_name_the_file_line_and_key() {
    let e = err(&VALID.replace("min_group_rows = 10", "min_group_rowz = 10"));
    assert!(
        e.starts_with("/specs/pipelines/demo.toml:14:1: unknown field `min_group_rowz`"),
        "{e}"
    );
    assert_eq!(e.lines().count(), 1, "{e}");
}

#[test]
fn malformed_toml_is_one_located_line() {
    let e = err("[source\nurl = 1");
    assert!(e.starts_with("/specs/pipelines/demo.toml:1:"), "{e}");
    assert_eq!(e.lines().count(), 1, "{e}");
}

#[test]
fn missing_sections_are_reported() {
    let e = err("[source]\nurl = \"x\"\n");
    assert!(e.contains("missing field `label`"), "{e}");
}

#[test]
fn reference_shares_must_sum_to_one() {
    let e = err(&VALID.replace("Female = 0.51", "Female = 0.41"));
    assert!(
        e.contains(":16:1: key `groups.reference.sex`: shares must sum to 1"),
        "{e}"
    );
}

#[test]
fn reference_for_an_unknown_attribute_is_rejected() {
    let e = err(&VALID.replace("[groups.reference.sex]", "[groups.reference.age]"));
    assert!(
        e.contains("key `groups.reference.age`: `age` is not one of groups.attributes"),
        "{e}"
    );
}

#[test]
fn reference_shares_out_of_range_are_rejected() {
    let e = err(&VALID
        .replace("Male = 0.49", "Male = -0.49")
        .replace("Female = 0.51", "Female = 1.49"));
    assert!(
        e.contains("key `groups.reference.sex.Female`: share must be between 0 and 1"),
        "{e}"
    );
}

#[test]
fn label_cannot_be_a_protected_attribute() {
    let e = err(&VALID.replace("column = \"income\"", "column = \"sex\""));
    assert!(e.contains(":9:10: key `label.column`"), "{e}");
}

#[test]
fn attributes_must_be_distinct_and_non_empty() {
    assert!(err(&VALID.replace(r#"["sex", "race"]"#, "[]")).contains("at least one"));
    assert!(
        err(&VALID.replace(r#"["sex", "race"]"#, r#"["sex", "sex"]"#)).contains("listed twice")
    );
}

#[test]
fn positive_label_values_keep_their_toml_type() {
    let p = parse(&VALID.replace(r#"positive = ">50K""#, "positive = 1")).unwrap();
    assert_eq!(p.label.positive, LabelValue::Int(1));
    let p = parse(&VALID.replace(r#"positive = ">50K""#, "positive = true")).unwrap();
    assert_eq!(p.label.positive, LabelValue::Bool(true));
}

#[test]
fn error_at_points_at_the_key_line() {
    let p = parse(VALID).unwrap();
    let e = p
        .error_at("label.column", "column `income` not found")
        .to_string();
    assert_eq!(
        e,
        "/specs/pipelines/demo.toml:9:10: key `label.column`: column `income` not found"
    );
}

#[test]
fn unreadable_file_names_the_path() {
    let e = Pipeline::load("/nonexistent/p.toml")
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("/nonexistent/p.toml: cannot read pipeline spec"),
        "{e}"
    );
}

#[test]
fn publish_takes_rows_or_a_byte_size() {
    assert_eq!(
        parse(VALID).unwrap().publish.shard_size,
        ShardSize::Rows(DEFAULT_SHARD_ROWS)
    );
    let rows = parse(&format!("{VALID}\n[publish]\nshard_rows = 1000\n")).unwrap();
    assert_eq!(rows.publish.shard_size, ShardSize::Rows(1000));
    let bytes = parse(&format!("{VALID}\n[publish]\nshard_bytes = \"64MiB\"\n")).unwrap();
    assert_eq!(bytes.publish.shard_size, ShardSize::Bytes(64 * 1024 * 1024));
    let plain = parse(&format!("{VALID}\n[publish]\nshard_bytes = 1000000\n")).unwrap();
    assert_eq!(plain.publish.shard_size, ShardSize::Bytes(1_000_000));
}

#[test]
fn publish_errors_name_the_key() {
    let both = err(&format!(
        "{VALID}\n[publish]\nshard_rows = 10\nshard_bytes = \"1MiB\"\n"
    ));
    assert!(
        both.contains("key `publish`: set `shard_rows` or `shard_bytes`, not both"),
        "{both}"
    );
    let zero = err(&format!("{VALID}\n[publish]\nshard_rows = 0\n"));
    assert!(
        zero.contains("key `publish.shard_rows`: must be at least 1"),
        "{zero}"
    );
    let unit = err(&format!(
        "{VALID}\n[publish]\nshard_bytes = \"12 parsecs\"\n"
    ));
    assert!(
        unit.contains("demo.toml:21:15: key `publish.shard_bytes`: unknown size unit `parsecs`"),
        "{unit}"
    );
    let unknown = err(&format!("{VALID}\n[publish]\nshards = 3\n"));
    assert!(unknown.contains("unknown field `shards`"), "{unknown}");
}

#[test]
fn train_defaults_are_the_classic_recipe() {
    let t = parse(VALID).unwrap().train;
    assert_eq!(t.hidden, vec![128]);
    assert_eq!(t.dropout, 0.2);
    assert_eq!(t.learning_rate, 1e-3);
    assert_eq!(t.weight_decay, 0.0);
    assert_eq!(t.batch_size, 128);
    assert_eq!(t.epochs, 5);
    assert!(t.sample_weights && !t.protected_as_features && t.features.is_none());
}

#[test]
fn train_section_is_validated_and_located() {
    let with = |section: &str| format!("{VALID}\n[train]\n{section}\n");
    let t = parse(&with(
        "hidden = [64, 32]\nepochs = 3\nshuffle = \"shards\"\nfeatures = [\"age\", \"zip\"]\ncategorical = [\"zip\"]",
    ))
    .unwrap()
    .train;
    assert_eq!(t.hidden, vec![64, 32]);
    assert_eq!(t.shuffle, Shuffle::Shards);
    assert_eq!(t.categorical, vec!["zip".to_string()]);
    for (section, key, needle) in [
        ("dropout = 1.0", "train.dropout", "below 1"),
        ("learning_rate = 0.0", "train.learning_rate", "above 0"),
        ("epochs = 0", "train.epochs", "from 1"),
        (
            "shuffle = \"batches\"",
            "train.shuffle",
            "expected \"rows\" or \"shards\"",
        ),
        ("hidden = [0]", "train.hidden", "1 to 65536 units"),
        (
            "features = [\"sex\"]",
            "train.features",
            "protected_as_features",
        ),
        ("features = [\"income\"]", "train.features", "the label"),
        ("features = [\"w\"]", "train.features", "weight column"),
        (
            "features = [\"sample_weight\"]",
            "train.features",
            "strata adds",
        ),
        (
            "numeric = [\"a\"]\ncategorical = [\"a\"]",
            "train.numeric",
            "one or the other",
        ),
        (
            "features = [\"age\"]\ncategorical = [\"zip\"]",
            "train.features",
            "not one of the features",
        ),
        ("batch = 3", "`batch`", "unknown field"),
    ] {
        let e = err(&with(section));
        assert!(e.contains(key) && e.contains(needle), "{section}: {e}");
        assert!(e.starts_with("/specs/pipelines/demo.toml:"), "{e}");
    }
    // with the option, protected attributes may be inputs
    let t = parse(&with(
        "protected_as_features = true\nfeatures = [\"sex\", \"age\"]",
    ))
    .unwrap();
    assert_eq!(
        t.train.features.unwrap(),
        vec!["sex".to_string(), "age".to_string()]
    );
}

#[test]
fn eval_section_and_gates_are_validated_and_located() {
    let with = |section: &str| format!("{VALID}\n[eval]\n{section}\n");
    let e = parse(&with(
        "replicates = 200\nconfidence = 0.9\n\
         [[eval.gates]]\nmetric = \"demographic_parity_difference\"\ngrouping = \"sex × race\"\nop = \"<=\"\nvalue = 0.1\non = \"upper\"\n\
         [[eval.gates]]\nmetric = \"accuracy\"\ncompare = \"difference\"\nop = \">=\"\nvalue = -0.02\n\
         [[eval.gates]]\nmetric = \"accuracy\"\ngrouping = \"sex\"\ngroup = \"Female\"\nop = \">=\"\nvalue = 0.7\nmodel = \"curated\"",
    ))
    .unwrap()
    .eval;
    assert_eq!((e.replicates, e.confidence), (200, 0.9));
    assert_eq!(
        e.gates[0].grouping,
        vec!["sex".to_string(), "race".to_string()]
    );
    assert_eq!((e.gates[0].op, e.gates[0].on), (Op::Le, Bound::Upper));
    assert_eq!(
        e.gates[1].relative,
        Some(Relative {
            baseline: "baseline".into(),
            compare: Compare::Difference
        })
    );
    assert_eq!(e.gates[2].group.as_deref(), Some("Female"));
    assert_eq!(e.gates[2].key, "eval.gates[2]");
    let gate = |body: &str| with(&format!("[[eval.gates]]\n{body}"));
    for (text, key, needle) in [
        (with("confidence = 1.0"), "eval.confidence", "below 1"),
        (with("threshold = 2.0"), "eval.threshold", "from 0 to 1"),
        (
            gate("metric = \"fairness\"\nop = \">=\"\nvalue = 1"),
            "eval.gates[0]",
            "`fairness` is not a metric",
        ),
        (
            gate("metric = \"accuracy\"\ngrouping = \"sex\"\nop = \">=\"\nvalue = 1"),
            "eval.gates[0]",
            "not a disparity",
        ),
        (
            gate(
                "metric = \"demographic_parity_ratio\"\ngrouping = \"age\"\nop = \">=\"\nvalue = 1",
            ),
            "eval.gates[0]",
            "`age`",
        ),
        (
            gate("metric = \"accuracy\"\ngroup = \"Female\"\nop = \">=\"\nvalue = 1"),
            "eval.gates[0]",
            "needs `grouping`",
        ),
        (
            gate("metric = \"accuracy\"\nop = \"=\"\nvalue = 1"),
            "eval.gates[0]",
            "op `=`",
        ),
        (
            gate("metric = \"accuracy\"\ncompare = \"percent\"\nop = \">=\"\nvalue = 1"),
            "eval.gates[0]",
            "compare `percent`",
        ),
        (
            gate(
                "metric = \"accuracy\"\ncompare = \"ratio\"\nmodel = \"baseline\"\nop = \">=\"\nvalue = 1",
            ),
            "eval.gates[0]",
            "both `baseline`",
        ),
    ] {
        let message = err(&text);
        assert!(
            message.contains(key) && message.contains(needle),
            "{message}"
        );
        assert!(message.contains("demo.toml:"), "{message}");
    }
}
