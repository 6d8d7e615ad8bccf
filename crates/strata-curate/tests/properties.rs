//! Property tests of curation on generated tables, run end to end through DataFusion
//! (in-process `memory://` store): whatever the group sizes, exact resampling hits every
//! planned count, hybrid mode hits the requested total, and reweighing makes the weighted
//! label rate equal across groups while keeping the total weight.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{AsArray, Float64Array, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Float64Type, Schema};
use object_store::ObjectStoreExt;
use object_store::path::Path;
use proptest::prelude::*;
use strata_engine::{Engine, EngineOptions, SOURCE_TABLE};
use strata_spec::Pipeline;

/// Rows per (group, label) cell: groups g0..gN, labels 0/1.
fn table(cells: &[(u32, u32)]) -> RecordBatch {
    let (mut ids, mut groups, mut labels, mut weights) = (vec![], vec![], vec![], vec![]);
    let mut id = 0i64;
    for (g, (neg, pos)) in cells.iter().enumerate() {
        for (label, n) in [(0i64, *neg), (1, *pos)] {
            for _ in 0..n {
                ids.push(id);
                groups.push(format!("g{g}"));
                labels.push(label);
                weights.push(1.0 + (id % 7) as f64 / 2.0);
                id += 1;
            }
        }
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("group", DataType::Utf8, false),
        Field::new("label", DataType::Int64, false),
        Field::new("w", DataType::Float64, false),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(ids)),
            Arc::new(StringArray::from(groups)),
            Arc::new(Int64Array::from(labels)),
            Arc::new(Float64Array::from(weights)),
        ],
    )
    .unwrap()
}

fn spec(curate: &str) -> Pipeline {
    let text = format!(
        "[source]\nurl = \"memory:///in/data.parquet\"\nid_column = \"id\"\nweight_column = \"w\"\n\n[label]\ncolumn = \"label\"\npositive = 1\n\n[groups]\nattributes = [\"group\"]\n\n{curate}"
    );
    Pipeline::parse("/virtual/pipeline.toml", text).unwrap()
}

/// Runs curate on `batch`, returning the curated rows read back.
fn run(batch: &RecordBatch, pipeline: &Pipeline) -> Vec<RecordBatch> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let engine = Engine::new(&EngineOptions {
            target_partitions: Some(3),
            memory_limit: None,
            spill_dir: None,
            engine: None,
        })
        .unwrap();
        let mut buf = Vec::new();
        let mut w = parquet::arrow::ArrowWriter::try_new(&mut buf, batch.schema(), None).unwrap();
        w.write(batch).unwrap();
        w.close().unwrap();
        engine
            .memory_store()
            .put(&Path::from("in/data.parquet"), buf.into())
            .await
            .unwrap();
        let source = engine
            .open_source(&pipeline.source.url, &pipeline.storage, SOURCE_TABLE)
            .await
            .unwrap();
        let options = strata_curate::CurateOptions {
            seed: None,
            out: "memory:///out/".into(),
            run_id: Some("run".into()),
        };
        let published = strata_curate::curate(&engine, pipeline, &source, &options)
            .await
            .unwrap();
        if published.manifest.shards.is_empty() {
            // nothing curated at all (tiny tables): a run with no shards
            return Vec::new();
        }
        // exactly the manifest's shards
        let urls: Vec<String> = published
            .manifest
            .shards
            .iter()
            .map(|s| format!("memory:///out/runs/run/{}", s.path))
            .collect();
        let df = engine
            .context()
            .read_parquet(urls, datafusion::prelude::ParquetReadOptions::default())
            .await
            .unwrap();
        df.collect().await.unwrap()
    })
}

/// (group, label, split) -> (rows, Σ sample_weight, Σ w)
fn tally(batches: &[RecordBatch]) -> BTreeMap<(String, i64, String), (u64, f64, f64)> {
    let mut out = BTreeMap::new();
    for b in batches {
        let g =
            datafusion::arrow::compute::cast(b.column_by_name("group").unwrap(), &DataType::Utf8)
                .unwrap();
        let g = g.as_string::<i32>();
        let y = b
            .column_by_name("label")
            .unwrap()
            .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
            .clone();
        let s =
            datafusion::arrow::compute::cast(b.column_by_name("split").unwrap(), &DataType::Utf8)
                .unwrap();
        let s = s.as_string::<i32>();
        let sw = b
            .column_by_name("sample_weight")
            .unwrap()
            .as_primitive::<Float64Type>()
            .clone();
        let w = b
            .column_by_name("w")
            .unwrap()
            .as_primitive::<Float64Type>()
            .clone();
        for r in 0..b.num_rows() {
            let e: &mut (u64, f64, f64) = out
                .entry((g.value(r).to_string(), y.value(r), s.value(r).to_string()))
                .or_default();
            e.0 += 1;
            e.1 += sw.value(r);
            e.2 += w.value(r);
        }
    }
    out
}

fn train_split_rows(n: u32) -> u64 {
    (f64::from(n) * 0.8 + 0.5).floor() as u64
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn exact_hybrid_hits_the_total_and_every_planned_count(cells in prop::collection::vec((5u32..60, 5u32..60), 2..5), total in 50u64..400) {
        let batch = table(&cells);
        let pipeline = spec(&format!(
            "[curate]\nstrategy = \"resample\"\nseed = 3\n[curate.resample]\ntarget = \"uniform\"\nstratify = \"groups_label\"\nmode = \"hybrid\"\ntotal = {total}\nmax_replication = 1000\n"
        ));
        let got = tally(&run(&batch, &pipeline));
        let train: u64 = got.iter().filter(|(k, _)| k.2 == "train").map(|(_, v)| v.0).sum();
        prop_assert_eq!(train, total);
        // uniform over groups: group totals within 1 of total / groups
        let groups = cells.len() as f64;
        for g in 0..cells.len() {
            let n: u64 = got.iter().filter(|(k, _)| k.0 == format!("g{g}") && k.2 == "train").map(|(_, v)| v.0).sum();
            prop_assert!((n as f64 - total as f64 / groups).abs() <= 1.0, "group {} got {}", g, n);
        }
        // validation and test untouched: each cell keeps n - train rows
        for (g, (neg, pos)) in cells.iter().enumerate() {
            for (y, n) in [(0, *neg), (1, *pos)] {
                let other: u64 = got.iter().filter(|(k, _)| k.0 == format!("g{g}") && k.1 == y && k.2 != "train").map(|(_, v)| v.0).sum();
                prop_assert_eq!(other, u64::from(n) - train_split_rows(n));
            }
        }
    }

    #[test]
    fn exact_undersample_gives_every_group_the_smallest_groups_rows(cells in prop::collection::vec((5u32..60, 5u32..60), 2..5)) {
        let batch = table(&cells);
        let pipeline = spec("[curate]\nstrategy = \"resample\"\nseed = 5\n[curate.resample]\ntarget = \"uniform\"\nstratify = \"groups\"\nmode = \"undersample\"\n");
        let got = tally(&run(&batch, &pipeline));
        let available: Vec<u64> = cells.iter().map(|(a, b)| train_split_rows(*a) + train_split_rows(*b)).collect();
        let min = *available.iter().min().unwrap();
        for g in 0..cells.len() {
            let n: u64 = got.iter().filter(|(k, _)| k.0 == format!("g{g}") && k.2 == "train").map(|(_, v)| v.0).sum();
            prop_assert_eq!(n, min, "group {}", g);
        }
    }

    #[test]
    fn reweighing_equalises_weighted_label_rates(cells in prop::collection::vec((5u32..60, 5u32..60), 2..5)) {
        let batch = table(&cells);
        let pipeline = spec("[curate]\nstrategy = \"reweigh\"\nseed = 9\n");
        let got = tally(&run(&batch, &pipeline));
        let train: Vec<_> = got.iter().filter(|(k, _)| k.2 == "train").collect();
        let (before, after): (f64, f64) = train.iter().fold((0.0, 0.0), |acc, (_, v)| (acc.0 + v.2, acc.1 + v.1));
        prop_assert!((before - after).abs() < 1e-9 * before);
        let overall: f64 = train.iter().filter(|(k, _)| k.1 == 1).map(|(_, v)| v.1).sum::<f64>() / after;
        for g in 0..cells.len() {
            let gw: f64 = train.iter().filter(|(k, _)| k.0 == format!("g{g}")).map(|(_, v)| v.1).sum();
            let gp: f64 = train.iter().filter(|(k, _)| k.0 == format!("g{g}") && k.1 == 1).map(|(_, v)| v.1).sum();
            prop_assert!((gp / gw - overall).abs() < 1e-9, "group {} rate {} vs {}", g, gp / gw, overall);
        }
    }
}
