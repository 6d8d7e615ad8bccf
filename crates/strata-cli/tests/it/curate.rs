//! `strata curate`: determinism across partitioning and file layout, and bad input that
//! must fail before anything is written. Weights and counts are checked against
//! independent computations in tests/e2e.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;

use crate::common::{adult_spec, adult_train, fails, repo_root, strata, write_parquet, write_spec};

fn curate_ok(spec: &Path, out: &Path, extra: &[&str]) -> serde_json::Value {
    let o = strata()
        .arg("curate")
        .arg(spec)
        .arg("--out")
        .arg(out)
        .args(["--format", "json"])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "curate failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Every shard's bytes, in the order of the run's manifest (found through `_latest`).
fn curated_bytes(out: &Path) -> Vec<u8> {
    let manifest = crate::common::latest_manifest(out);
    let run = out.join("runs").join(manifest["run_id"].as_str().unwrap());
    let mut bytes = Vec::new();
    for shard in manifest["shards"].as_array().unwrap() {
        bytes.extend(std::fs::read(run.join(shard["path"].as_str().unwrap())).unwrap());
    }
    assert!(!bytes.is_empty());
    bytes
}

#[test]
fn same_bytes_for_any_partitioning() {
    let dir = tempfile::tempdir().unwrap();
    let spec = repo_root().join("pipelines/adult-census-mix.toml");
    let mut outputs = Vec::new();
    for n in ["1", "2", "8"] {
        let out = dir.path().join(format!("p{n}"));
        curate_ok(&spec, &out, &["--target-partitions", n]);
        outputs.push(curated_bytes(&out));
    }
    assert!(
        outputs.iter().all(|o| *o == outputs[0]),
        "output differs across --target-partitions"
    );
}

#[test]
fn same_bytes_for_one_file_or_many() {
    let dir = tempfile::tempdir().unwrap();
    // Adult's training split as three files of uneven size
    let file = std::fs::File::open(adult_train()).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .with_batch_size(11_000)
        .build()
        .unwrap();
    let many = dir.path().join("many");
    std::fs::create_dir(&many).unwrap();
    for (i, batch) in reader.enumerate() {
        write_parquet(&many.join(format!("part-{i}.parquet")), &batch.unwrap());
    }
    assert_eq!(std::fs::read_dir(&many).unwrap().count(), 3);
    let spec_text = adult_spec();
    let (_d1, one_spec) = write_spec(&spec_text);
    let (_d2, many_spec) = write_spec(&spec_text.replace(
        &adult_train().display().to_string(),
        &format!("{}/", many.display()),
    ));
    let (a, b) = (dir.path().join("one-out"), dir.path().join("many-out"));
    curate_ok(&one_spec, &a, &[]);
    curate_ok(&many_spec, &b, &[]);
    assert_eq!(curated_bytes(&a), curated_bytes(&b));
}

#[test]
fn the_seed_changes_the_sample_and_the_same_seed_repeats_it() {
    let dir = tempfile::tempdir().unwrap();
    let spec = repo_root().join("pipelines/adult.toml");
    let (a, b, c) = (
        dir.path().join("a"),
        dir.path().join("b"),
        dir.path().join("c"),
    );
    curate_ok(&spec, &a, &[]);
    curate_ok(&spec, &b, &[]);
    curate_ok(&spec, &c, &["--seed", "43"]);
    assert_eq!(curated_bytes(&a), curated_bytes(&b));
    assert_ne!(curated_bytes(&a), curated_bytes(&c));
    let summary = |p: &Path| {
        let run = crate::common::latest_manifest(p)["run_id"]
            .as_str()
            .unwrap()
            .to_string();
        let mut v: serde_json::Value = serde_json::from_slice(
            &std::fs::read(p.join("runs").join(run).join("curation.json")).unwrap(),
        )
        .unwrap();
        v.as_object_mut().unwrap().remove("output");
        v
    };
    assert_eq!(summary(&a), summary(&b));
}

#[test]
fn undersample_uniform_plans_equal_groups() {
    let dir = tempfile::tempdir().unwrap();
    let spec = adult_spec().replace("strategy = \"reweigh\"", "strategy = \"resample\"")
        + "\n[curate.resample]\ntarget = \"uniform\"\nstratify = \"groups\"\nmode = \"undersample\"\n";
    let (_d, spec) = write_spec(&spec);
    let s = curate_ok(&spec, &dir.path().join("out"), &[]);
    let strata = s["strata"].as_array().unwrap();
    assert_eq!(strata.len(), 10);
    let rows: Vec<u64> = strata
        .iter()
        .map(|x| x["rows_after"].as_u64().unwrap())
        .collect();
    let before: Vec<u64> = strata
        .iter()
        .map(|x| x["rows_before"].as_u64().unwrap())
        .collect();
    // every group is cut to the smallest group's training rows
    let min = *before.iter().min().unwrap();
    assert!(rows.iter().all(|&r| r == min), "{rows:?} vs min {min}");
}

/// Runs curate expecting a one-line error (exit 3) and an empty output folder.
fn curate_fails(spec: &str, expected: &str) {
    let (_d, path) = write_spec(spec);
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("out");
    let f = fails(&[
        "curate",
        path.to_str().unwrap(),
        "--out",
        target.to_str().unwrap(),
    ]);
    assert_eq!(f.code, 3, "{}", f.error);
    assert!(
        f.error.contains(expected),
        "expected `{expected}` in: {}",
        f.error
    );
    let written = std::fs::read_dir(&target).map(|d| d.count()).unwrap_or(0);
    assert_eq!(written, 0, "nothing may be written on bad input");
}

fn resample(extra: &str) -> String {
    adult_spec().replace("strategy = \"reweigh\"", "strategy = \"resample\"")
        + "\n[curate.resample]\n"
        + extra
}

#[test]
fn target_naming_a_group_that_does_not_exist() {
    let spec = resample(
        "target = \"shares\"\nstratify = \"groups\"\n[[curate.resample.strata]]\nsex = \"Female\"\nrace = \"Martian\"\nshare = 0.5\n[[curate.resample.strata]]\nsex = \"Male\"\nrace = \"White\"\nshare = 0.5\n",
    );
    curate_fails(
        &spec,
        "group sex=Female × race=Martian which does not occur in the data",
    );
}

#[test]
fn target_shares_not_summing_to_one() {
    let spec = resample(
        "target = \"shares\"\n[[curate.resample.strata]]\nsex = \"Female\"\nrace = \"White\"\nshare = 0.5\n[[curate.resample.strata]]\nsex = \"Male\"\nrace = \"White\"\nshare = 0.4\n",
    );
    curate_fails(&spec, "key `curate.resample.strata`: shares must sum to 1");
}

#[test]
fn replication_over_the_cap() {
    let spec = resample("target = \"uniform\"\nmode = \"oversample\"\nmax_replication = 10\n");
    curate_fails(
        &spec,
        "key `curate.resample.max_replication`: stratum sex=Female × race=Amer-Indian-Eskimo × income=<=50K needs replication factor",
    );
}

#[test]
fn split_fractions_not_summing_to_one() {
    let spec = adult_spec().replace("test = 0.1", "test = 0.2");
    curate_fails(
        &spec,
        "key `curate.split`: train + validation + test must sum to 1",
    );
}

fn small_table(dir: &Path, ids: Vec<i64>, weights: Vec<i64>) -> String {
    let n = ids.len();
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("sex", DataType::Utf8, true),
        Field::new("race", DataType::Utf8, true),
        Field::new("income", DataType::Utf8, true),
        Field::new("fnlwgt", DataType::Int64, true),
    ]));
    let sexes: Vec<&str> = (0..n)
        .map(|i| if i % 2 == 0 { "Male" } else { "Female" })
        .collect();
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(ids)),
            Arc::new(StringArray::from(sexes)),
            Arc::new(StringArray::from(vec!["White"; n])),
            Arc::new(StringArray::from(
                (0..n)
                    .map(|i| if i % 3 == 0 { ">50K" } else { "<=50K" })
                    .collect::<Vec<_>>(),
            )),
            Arc::new(Int64Array::from(weights)),
        ],
    )
    .unwrap();
    let path = dir.join("small.parquet");
    write_parquet(&path, &batch);
    path.display().to_string()
}

fn small_spec(data: &str) -> String {
    adult_spec()
        .replace(&adult_train().display().to_string(), data)
        .replace("weight_column = \"fnlwgt\"", "weight_column = \"fnlwgt\"\nid_column = \"id\"")
        .replace("[groups.reference.race]\nWhite = 0.803\nBlack = 0.121\nAsian-Pac-Islander = 0.029\nAmer-Indian-Eskimo = 0.008\nOther = 0.039\n", "")
}

#[test]
fn duplicate_ids_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let data = small_table(dir.path(), vec![1, 2, 3, 3, 4, 5], vec![1; 6]);
    curate_fails(
        &small_spec(&data),
        "key `source.id_column`: id column `id` of source",
    );
}

#[test]
fn negative_weights_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let data = small_table(dir.path(), vec![1, 2, 3, 4, 5, 6], vec![1, 1, -2, 1, 1, 1]);
    curate_fails(
        &small_spec(&data),
        "key `source.weight_column`: 1 rows of source",
    );
}

#[test]
fn a_positive_target_on_a_group_without_training_rows() {
    // two rows only: the 80/10/10 split puts nothing of a one-row cell into test, but a
    // 10/45/45 split leaves the single Female row out of train.
    let dir = tempfile::tempdir().unwrap();
    let data = small_table(dir.path(), vec![1, 2, 3], vec![1, 1, 1]);
    let spec = small_spec(&data)
        .replace(
            "train = 0.8\nvalidation = 0.1\ntest = 0.1",
            "train = 0.1\nvalidation = 0.45\ntest = 0.45",
        )
        .replace("strategy = \"reweigh\"", "strategy = \"resample\"")
        + "\n[curate.resample]\ntarget = \"uniform\"\nstratify = \"groups\"\n";
    curate_fails(
        &spec,
        "has no rows in the training split but a positive target",
    );
}

#[test]
fn no_curate_section() {
    let spec = adult_spec();
    let spec = &spec[..spec.find("\n[curate]").unwrap()];
    curate_fails(spec, "key `curate`: the pipeline has no [curate] section");
}

#[test]
fn explicit_counts_beyond_the_rows_are_capped_when_undersampling() {
    let dir = tempfile::tempdir().unwrap();
    let spec = resample(
        "target = \"counts\"\nstratify = \"groups\"\nmode = \"undersample\"\n[[curate.resample.strata]]\nsex = \"Female\"\nrace = \"Other\"\ncount = 1000\n[[curate.resample.strata]]\nsex = \"Male\"\nrace = \"White\"\ncount = 500\n",
    );
    let (_d, spec) = write_spec(&spec);
    let s = curate_ok(&spec, &dir.path().join("out"), &[]);
    let strata = s["strata"].as_array().unwrap();
    let rows = |sex: &str, race: &str| {
        strata
            .iter()
            .find(|x| x["stratum"]["sex"] == sex && x["stratum"]["race"] == race)
            .map(|x| {
                (
                    x["rows_before"].as_u64().unwrap(),
                    x["rows_after"].as_u64().unwrap(),
                )
            })
            .unwrap()
    };
    let (other_before, other_after) = rows("Female", "Other");
    assert!(other_before < 1000);
    assert_eq!(
        other_after, other_before,
        "all of the group's rows, no replication"
    );
    assert_eq!(rows("Male", "White").1, 500);
    assert_eq!(
        rows("Female", "White").1,
        0,
        "groups without a target are left out of train"
    );
    let warnings: Vec<&str> = s["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("a target of 1000; undersampling keeps")),
        "{warnings:?}"
    );
}

#[test]
fn identical_rows_keep_exact_counts_and_stay_on_one_side_of_the_split() {
    // no id column and six distinct rows, each repeated about 67 times: every cut of the
    // split and of the sample falls inside a group of identical rows
    let dir = tempfile::tempdir().unwrap();
    let n = 400;
    let data = small_table(
        dir.path(),
        (0..n).map(|i| i % 6).collect(),
        vec![1; n as usize],
    );
    let spec = small_spec(&data)
        .replace("\nid_column = \"id\"", "")
        .replace("strategy = \"reweigh\"", "strategy = \"resample\"")
        + "\n[curate.resample]\ntarget = \"uniform\"\nmode = \"hybrid\"\ntotal = 301\nexact = true\n";
    let (_d, spec) = write_spec(&spec);
    let mut bytes = Vec::new();
    for parts in ["1", "3"] {
        let out = dir.path().join(format!("out{parts}"));
        let summary = curate_ok(&spec, &out, &["--target-partitions", parts]);
        let strata = summary["strata"].as_array().unwrap();
        assert!(!strata.is_empty());
        for s in strata {
            assert_eq!(
                s["rows_after"], s["planned_rows"],
                "stratum {}",
                s["stratum"]
            );
        }
        let total: u64 = strata
            .iter()
            .map(|s| s["rows_after"].as_u64().unwrap())
            .sum();
        assert_eq!(total, 301);
        // the shards hold what the summary says
        let manifest = crate::common::latest_manifest(&out);
        let train: u64 = manifest["shards"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["split"] == "train")
            .map(|s| s["rows"].as_u64().unwrap())
            .sum();
        assert_eq!(train, 301);
        // identical rows never straddle train and test: each distinct row is in one split
        let warnings = summary["warnings"].as_array().unwrap();
        assert!(
            warnings
                .iter()
                .any(|w| w.as_str().unwrap().contains("identical rows at the")),
            "{warnings:?}"
        );
        let run = out.join("runs").join(manifest["run_id"].as_str().unwrap());
        let mut ids_by_split: std::collections::BTreeMap<String, std::collections::BTreeSet<i64>> =
            Default::default();
        for shard in manifest["shards"].as_array().unwrap() {
            let file = std::fs::File::open(run.join(shard["path"].as_str().unwrap())).unwrap();
            for batch in
                parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                    .unwrap()
                    .build()
                    .unwrap()
            {
                let batch = batch.unwrap();
                let ids = batch
                    .column_by_name("id")
                    .unwrap()
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap()
                    .clone();
                ids_by_split
                    .entry(shard["split"].as_str().unwrap().to_string())
                    .or_default()
                    .extend(ids.values().iter().copied());
            }
        }
        let train = &ids_by_split["train"];
        for (split, ids) in &ids_by_split {
            if split != "train" {
                assert!(train.is_disjoint(ids), "a row is in train and in {split}");
            }
        }
        bytes.push(curated_bytes(&out));
    }
    assert_eq!(
        bytes[0], bytes[1],
        "trimming identical rows depends on the partitioning"
    );
}

#[test]
fn fractional_weights_give_the_same_bytes_for_any_partitioning() {
    // Kamiran–Calders factors come from weight sums; with fractional weights a float sum
    // would depend on the order rows are added, so on partitioning and memory limits
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("sex", DataType::Utf8, true),
        Field::new("race", DataType::Utf8, true),
        Field::new("income", DataType::Utf8, true),
        Field::new("fnlwgt", DataType::Float64, true),
    ]));
    for part in 0..4i64 {
        let ids: Vec<i64> = (part * 5_000..(part + 1) * 5_000).collect();
        let pick = |i: i64, m: i64| ((i * 2_654_435_761) >> 7).rem_euclid(m);
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(ids.clone())),
                Arc::new(StringArray::from(
                    ids.iter()
                        .map(|&i| ["Male", "Female"][pick(i, 2) as usize])
                        .collect::<Vec<_>>(),
                )),
                Arc::new(StringArray::from(
                    ids.iter()
                        .map(|&i| ["White", "Black", "Other"][pick(i, 3) as usize])
                        .collect::<Vec<_>>(),
                )),
                Arc::new(StringArray::from(
                    ids.iter()
                        .map(|&i| if pick(i + 7, 4) == 0 { ">50K" } else { "<=50K" })
                        .collect::<Vec<_>>(),
                )),
                Arc::new(arrow::array::Float64Array::from(
                    ids.iter()
                        .map(|&i| 0.1 + (i as f64 * 0.618_033_988_7).fract() * 3.7)
                        .collect::<Vec<_>>(),
                )),
            ],
        )
        .unwrap();
        write_parquet(&data.join(format!("part-{part}.parquet")), &batch);
    }
    let (_d, spec) = write_spec(&small_spec(&format!("{}/", data.display())));
    let spill = dir.path().join("spill/here");
    let spill_arg = spill.to_str().unwrap();
    let mut outputs = Vec::new();
    for extra in [
        &["--target-partitions", "1"][..],
        &["--target-partitions", "4"],
        &["--memory-limit", "64MiB"],
        &["--memory-limit", "64MiB", "--spill-dir", spill_arg],
    ] {
        let out = dir.path().join(format!("out{}", outputs.len()));
        curate_ok(&spec, &out, extra);
        outputs.push(curated_bytes(&out));
    }
    assert!(
        outputs.iter().all(|o| *o == outputs[0]),
        "output differs across partitionings"
    );
    // the spill folder was made, and nothing is left in it
    assert_eq!(std::fs::read_dir(&spill).unwrap().count(), 0);
}

/// A spill folder that cannot be made fails the command with its path, before anything
/// is written.
#[test]
fn an_unusable_spill_folder_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "not a folder").unwrap();
    let spill = file.join("spill");
    let target = dir.path().join("out");
    let o = strata()
        .arg("curate")
        .arg(repo_root().join("pipelines/adult.toml"))
        .arg("--out")
        .arg(&target)
        .arg("--spill-dir")
        .arg(&spill)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].contains(&spill.display().to_string()),
        "{}",
        errors[0]
    );
    assert!(!target.exists(), "nothing may be written");
}

/// A tuning variable that does not parse fails the run with its name, before anything
/// is written, rather than falling back to the default.
#[test]
fn unparsable_tuning_variables_are_named() {
    for (name, value) in [
        ("STRATA_SHARD_MEMORY", "lots"),
        ("STRATA_SHARD_MEMORY", "-1GiB"),
        ("STRATA_RANGE_ROWS", "0"),
        ("STRATA_RANGE_ROWS", "1e6"),
    ] {
        let out = tempfile::tempdir().unwrap();
        let target = out.path().join("out");
        let o = strata()
            .env(name, value)
            .arg("curate")
            .arg(repo_root().join("pipelines/adult.toml"))
            .arg("--out")
            .arg(&target)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(3), "{name}={value}: {stderr}");
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(errors.len(), 1, "{name}={value}: {stderr}");
        assert!(
            errors[0].contains(&format!("{name}=`{value}`")),
            "{name}={value}: {}",
            errors[0]
        );
        let written = std::fs::read_dir(&target)
            .map(|d| {
                d.filter(|e| e.as_ref().unwrap().file_name() != "_latest")
                    .count()
            })
            .unwrap_or(0);
        assert_eq!(written, 0, "{name}={value}: nothing may be written");
    }
}
