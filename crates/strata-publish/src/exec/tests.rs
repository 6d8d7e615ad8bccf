use super::*;
use datafusion::arrow::array::{Float64Array, Int64Array, UInt8Array, UInt64Array};
use datafusion::datasource::MemTable;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use object_store::memory::InMemory;
use object_store::{ObjectStore, ObjectStoreExt};

/// Rows of (split, stratum, key, weight, id, name), in batches of 97.
fn batches(n: u64) -> (SchemaRef, Vec<RecordBatch>) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("__split", DataType::UInt8, false),
        Field::new("__stratum", DataType::UInt64, false),
        Field::new("__key", DataType::UInt64, false),
        Field::new("weight", DataType::Float64, false),
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
    ]));
    let mix = |i: u64| i.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17);
    let ids: Vec<u64> = (0..n).collect();
    let batches = ids
        .chunks(97)
        .map(|c| {
            RecordBatch::try_new(
                Arc::clone(&schema),
                vec![
                    Arc::new(UInt8Array::from_iter_values(
                        c.iter().map(|i| (i % 5 == 0) as u8),
                    )),
                    Arc::new(UInt64Array::from_iter_values(c.iter().map(|i| 10 + i % 3))),
                    Arc::new(UInt64Array::from_iter_values(c.iter().map(|&i| mix(i)))),
                    Arc::new(Float64Array::from_iter_values(
                        c.iter().map(|&i| 0.5 + (i % 7) as f64),
                    )),
                    Arc::new(Int64Array::from_iter_values(c.iter().map(|&i| i as i64))),
                    Arc::new(StringArray::from_iter(
                        c.iter()
                            .map(|i| (i % 11 != 0).then(|| format!("n{}", i % 4))),
                    )),
                ],
            )
            .unwrap()
        })
        .collect();
    (schema, batches)
}

fn sink(store: Arc<dyn ObjectStore>, root: &str) -> ShardSink {
    ShardSink {
        destination: Destination::new(store, url::Url::parse(root).unwrap()),
        run_dir: "runs/r".into(),
        columns: SinkColumns {
            split: "__split".into(),
            split_names: vec!["train".into(), "test".into()],
            split_column: "split".into(),
            weight: "weight".into(),
            stratum: "__stratum".into(),
            cell: "__stratum".into(),
            order: vec!["__key".into()],
            tie: None,
            distinct: vec!["id".into()],
            categorical: vec!["name".into()],
            copies: None,
        },
        strata: (10..13).map(|s| (s, vec![Some(format!("s{s}"))])).collect(),
        shard_rows: 700,
        expected_rows: 5000,
        range_rows: 512,
        trims: Default::default(),
        memory_budget: 1 << 30,
        unique_order: true,
        spill_dir: None,
        threads: 2,
    }
}

async fn files(store: &dyn ObjectStore, prefix: &str) -> Vec<(String, bytes::Bytes)> {
    use futures::TryStreamExt;
    let prefix = object_store::path::Path::from(prefix);
    let mut metas: Vec<_> = store.list(Some(&prefix)).try_collect().await.unwrap();
    metas.sort_by(|a, b| a.location.cmp(&b.location));
    let mut out = Vec::new();
    for m in metas {
        let bytes = store.get(&m.location).await.unwrap().bytes().await.unwrap();
        out.push((m.location.to_string(), bytes));
    }
    out
}

/// The files under `want` and under `got` (at least 8) have the same names and bytes.
async fn assert_same_shards(store: &dyn ObjectStore, want: &str, got: &str) {
    let (want_files, got_files) = (files(store, want).await, files(store, got).await);
    assert!(want_files.len() >= 8, "{} shards", want_files.len());
    assert_eq!(want_files.len(), got_files.len());
    for ((a, x), (b, y)) in want_files.iter().zip(&got_files) {
        assert_eq!(a.strip_prefix(want), b.strip_prefix(got));
        assert!(x == y, "{a} and {b} differ");
    }
}

/// The node, planned by a session with [`StrataQueryPlanner`] over an input of
/// three partitions, writes the very bytes the sink writes from one stream, and
/// reports the sink's output; its encoding round-trips.
#[tokio::test]
async fn the_plan_node_writes_what_the_sink_writes() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let (schema, all) = batches(5000);
    let direct = sink(Arc::clone(&store), "memory:///direct/");
    let input = Box::pin(RecordBatchStreamAdapter::new(
        Arc::clone(&schema),
        futures::stream::iter(all.clone().into_iter().map(Ok)),
    ));
    let want = direct.write(vec![input]).await.unwrap();

    let spec = SinkSpec::of(&sink(Arc::clone(&store), "memory:///node/"), Some(1 << 30));
    assert_eq!(
        ShardWriterNode::decode(&ShardWriterNode::encode(&spec).unwrap()).unwrap(),
        Some(spec.clone())
    );
    assert_eq!(ShardWriterNode::decode(b"something else").unwrap(), None);

    let state = SessionStateBuilder::new()
        .with_config(SessionConfig::new().with_target_partitions(3))
        .with_default_features()
        .with_query_planner(Arc::new(StrataQueryPlanner))
        .build();
    let ctx = SessionContext::new_with_state(state);
    ctx.register_object_store(&url::Url::parse("memory://").unwrap(), Arc::clone(&store));
    let thirds: Vec<Vec<RecordBatch>> = (0..3)
        .map(|p| all.iter().skip(p).step_by(3).cloned().collect())
        .collect();
    ctx.register_table("rows", Arc::new(MemTable::try_new(schema, thirds).unwrap()))
        .unwrap();
    let rows = ctx.table("rows").await.unwrap().into_unoptimized_plan();
    let plan = ShardWriterNode::plan(rows, spec).unwrap();
    let batches = datafusion::dataframe::DataFrame::new(ctx.state(), plan)
        .collect()
        .await
        .unwrap();
    let got = read_written(&batches).unwrap();
    assert_eq!(got.output.shards, want.shards);
    assert_eq!(got.output.totals, want.totals);
    assert_eq!(got.output.schema, want.schema);
    assert!(got.input_bytes > 5000 * 8 * 4, "{}", got.input_bytes);

    assert_same_shards(store.as_ref(), "direct", "node").await;
}

/// Rows standing for their copies (`SinkColumns::copies`) write the very bytes of
/// the copies made by the engine, `unnest(range(0, copies))` keyed by
/// `strata_hash(seed, h, copy)`, as curation made them before the sink did.
#[tokio::test]
async fn copies_made_by_the_sink_write_the_engine_copies_bytes() {
    use datafusion::functions_nested::expr_fn::range;
    use datafusion::prelude::{col, lit};
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let (schema, all) = batches(3000);
    let ctx = SessionContext::new();
    ctx.register_table(
        "rows",
        Arc::new(MemTable::try_new(schema, vec![all]).unwrap()),
    )
    .unwrap();
    // the key column becomes the hashed helper, and 0 to 3 copies per row (some rows
    // of many more, so that a batch is cut into pieces)
    let copies = datafusion::prelude::when((col("id") % lit(101i64)).eq(lit(0i64)), lit(40_000i64))
        .otherwise(col("id") % lit(4i64))
        .unwrap();
    let base = ctx
        .table("rows")
        .await
        .unwrap()
        .with_column_renamed("__key", "__h")
        .unwrap()
        .with_column("__copies", copies)
        .unwrap();
    let seed = 7u64;
    let unnested = base
        .clone()
        .with_column("__copy", range(lit(0i64), col("__copies"), lit(1i64)))
        .unwrap()
        .unnest_columns(&["__copy"])
        .unwrap()
        .with_column(
            "__key",
            strata_functions::strata_hash_udf().call(vec![lit(seed), col("__h"), col("__copy")]),
        )
        .unwrap()
        .drop_columns(&["__h", "__copies", "__copy"])
        .unwrap();
    let write = |df: datafusion::dataframe::DataFrame, root: &'static str, copies: bool| {
        let store = Arc::clone(&store);
        async move {
            let mut sink = sink(store, root);
            sink.expected_rows = 3000 * 2;
            sink.shard_rows = 5000;
            // copies share their id
            sink.unique_order = false;
            if copies {
                sink.columns.copies = Some(crate::SinkCopies {
                    count: "__copies".into(),
                    hashed: vec!["__h".into()],
                    seed,
                });
            }
            let streams = df.execute_stream_partitioned().await.unwrap();
            sink.write(streams).await.unwrap()
        }
    };
    let want = write(unnested, "memory:///engine/", false).await;
    let got = write(base, "memory:///sink/", true).await;
    assert_eq!(got.totals, want.totals);
    assert_eq!(got.schema, want.schema);
    let rows: u64 = want.totals.values().map(|t| t.rows).sum();
    assert_eq!(
        rows,
        (0..3000u64)
            .map(|i| if i % 101 == 0 { 40_000 } else { i % 4 })
            .sum::<u64>()
    );
    assert_same_shards(store.as_ref(), "engine", "sink").await;
}

fn stream_of(schema: SchemaRef, batches: Vec<RecordBatch>) -> SendableRecordBatchStream {
    Box::pin(RecordBatchStreamAdapter::new(
        schema,
        futures::stream::iter(batches.into_iter().map(Ok)),
    ))
}

/// Shards upload while the last ones encode, but only once every range is dealt: a
/// declared unique key that repeats (found while dealing) fails the write with
/// nothing uploaded, though most shards were encoded by then; the same rows without
/// the promise are written.
#[tokio::test]
async fn a_repeated_key_fails_the_write_before_any_upload() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let (schema, mut all) = batches(5000);
    // the last batch again (53 rows: 5,000 in batches of 97): rows whose key and id
    // each repeat another row's
    let last = all.last().unwrap().clone();
    let dup = last.num_rows() as u64;
    assert_eq!(dup, 53);
    all.push(last);
    let mut refused = sink(Arc::clone(&store), "memory:///unique/");
    refused.expected_rows = 5000 + dup;
    let got = refused
        .write(vec![stream_of(schema.clone(), all.clone())])
        .await;
    assert!(
        matches!(got, Err(PublishError::RepeatedKeys { rows }) if rows == dup),
        "{:?}",
        got.err()
    );
    assert!(files(store.as_ref(), "unique").await.is_empty());

    let mut kept = sink(Arc::clone(&store), "memory:///kept/");
    kept.expected_rows = 5000 + dup;
    kept.unique_order = false;
    let written = kept.write(vec![stream_of(schema, all)]).await.unwrap();
    let shards = files(store.as_ref(), "kept").await;
    assert!(shards.len() >= 8, "{} shards", shards.len());
    assert_eq!(shards.len(), written.shards.len());
    let rows: u64 = written.shards.iter().map(|s| s.rows).sum();
    assert_eq!(rows, 5000 + dup);
}

/// An upload that fails ends the write with that upload's error (the object it
/// could not write), not the workers' "uploads stopped", and the shards uploaded
/// before it are deleted: nothing of the failed write stays.
#[tokio::test]
async fn a_failing_upload_reports_its_own_error_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // the test split's folder is a file: its shards' uploads fail, the train
    // split's succeed
    let run = dir.path().join("runs/r");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::write(run.join("test"), b"a file").unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(object_store::local::LocalFileSystem::new());
    let root = url::Url::from_directory_path(dir.path()).unwrap();
    let (schema, all) = batches(5000);
    let err = sink(store, root.as_str())
        .write(vec![stream_of(schema, all)])
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("runs/r/test/part-"), "{err}");
    assert!(!err.contains("uploads stopped"), "{err}");
    let train = run.join("train");
    let left: Vec<_> = std::fs::read_dir(&train)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}
