//! The shard writer as a plan node, so that on a Ballista cluster it runs on an
//! executor and only the shards' metadata comes back to the driver (docs/cluster.md).
//!
//! [`ShardWriterNode`] (logical) wraps the curated rows' plan; [`ShardWriterPlanner`]
//! turns it into [`ShardWriterExec`], which takes its whole input in one task (on
//! Ballista: a stage boundary, so every executor computes and shuffles its share of
//! the rows first) and runs [`ShardSink`] over all its input partitions at once. Its
//! output is one row: the sink's output as JSON, and the written schema as Arrow IPC.
//! The sink's bytes depend only on the rows it receives, never on their order or
//! partitioning, so the shards are those of the embedded engine.
//!
//! Plans travel between client, scheduler and executors encoded: the node's encoding
//! is [`ShardWriterNode::encode`] / [`ShardWriterNode::decode`] (its [`SinkSpec`] as
//! JSON), which strata-engine's Ballista codecs call.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use datafusion::arrow::array::{BinaryArray, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DFSchema, DFSchemaRef, DataFusionError, Result};
use datafusion::execution::context::QueryPlanner;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{
    Expr, LogicalPlan, UserDefinedLogicalNode, UserDefinedLogicalNodeCore,
};
use datafusion::physical_expr::{EquivalenceProperties, Partitioning, PhysicalExpr};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, Distribution, ExecutionPlan, ExecutionPlanProperties,
    PlanProperties,
};
use datafusion::physical_planner::{DefaultPhysicalPlanner, ExtensionPlanner, PhysicalPlanner};
use serde::{Deserialize, Serialize};
use strata_run::{Destination, ShardEntry};

use crate::{PublishError, ShardSink, SinkColumns, SinkOutput, StratumTotals};

/// Everything a [`ShardSink`] is built from but its store, which each process opens
/// from the output URL itself (its own credentials, never in the plan).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SinkSpec {
    /// The output root (`Destination::root`).
    pub root: String,
    pub run_dir: String,
    pub columns: SinkColumns,
    /// Sorted by stratum id, so the encoding is deterministic.
    pub strata: Vec<(u64, Vec<Option<String>>)>,
    pub shard_rows: u64,
    pub expected_rows: u64,
    pub range_rows: u64,
    pub trims: Vec<(u64, u64)>,
    /// `None`: the default budget of the machine that writes.
    pub memory_budget: Option<usize>,
    pub unique_order: bool,
}

impl SinkSpec {
    /// The spec of `sink` (its store left out); `memory_budget` as the caller decides.
    pub fn of(sink: &ShardSink, memory_budget: Option<usize>) -> Self {
        let mut strata: Vec<_> = sink.strata.iter().map(|(k, v)| (*k, v.clone())).collect();
        strata.sort();
        let mut trims: Vec<_> = sink.trims.iter().map(|(k, v)| (*k, *v)).collect();
        trims.sort();
        Self {
            root: sink.destination.root().to_string(),
            run_dir: sink.run_dir.clone(),
            columns: sink.columns.clone(),
            strata,
            shard_rows: sink.shard_rows,
            expected_rows: sink.expected_rows,
            range_rows: sink.range_rows,
            trims,
            memory_budget,
            unique_order: sink.unique_order,
        }
    }

    fn sink(&self, destination: Destination) -> ShardSink {
        ShardSink {
            destination,
            run_dir: self.run_dir.clone(),
            columns: self.columns.clone(),
            strata: self.strata.iter().cloned().collect(),
            shard_rows: self.shard_rows,
            expected_rows: self.expected_rows,
            range_rows: self.range_rows,
            trims: self.trims.iter().copied().collect(),
            memory_budget: self
                .memory_budget
                .unwrap_or_else(crate::default_memory_budget),
            unique_order: self.unique_order,
            // the executor's own temporary folder
            spill_dir: None,
            // every core of the machine that writes
            threads: 0,
        }
    }
}

/// The node's one output row, as JSON.
#[derive(Debug, Serialize, Deserialize)]
enum Written {
    Shards {
        shards: Vec<ShardEntry>,
        totals: Vec<(String, u64, StratumTotals)>,
        /// Arrow bytes the writer received (what a driver-side writer would have had
        /// streamed to it).
        input_bytes: u64,
    },
    /// The sink's [`PublishError::RepeatedKeys`], kept apart so the driver names the
    /// id column as it does locally.
    RepeatedKeys { rows: u64 },
}

/// What [`ShardWriterExec`] returned, read back by the driver.
#[derive(Debug)]
pub struct RemoteWritten {
    pub output: SinkOutput,
    pub input_bytes: u64,
}

/// Reads the batches a [`ShardWriterNode`]'s plan returned.
pub fn read_written(batches: &[RecordBatch]) -> Result<RemoteWritten, PublishError> {
    let bad = |message: String| PublishError::Data {
        context: "reading the shard writer's result".into(),
        message,
        source: None,
    };
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let batch = batches
        .iter()
        .find(|b| b.num_rows() > 0)
        .filter(|_| rows == 1)
        .ok_or_else(|| bad(format!("{rows} result rows, not 1")))?;
    let json = batch.column(0).as_any().downcast_ref::<StringArray>();
    let ipc = batch.column(1).as_any().downcast_ref::<BinaryArray>();
    let (Some(json), Some(ipc)) = (json, ipc) else {
        return Err(bad("unexpected result columns".into()));
    };
    let written: Written =
        serde_json::from_str(json.value(0)).map_err(|e| bad(format!("not a result: {e}")))?;
    let schema = StreamReader::try_new(std::io::Cursor::new(ipc.value(0)), None)
        .map_err(|e| bad(format!("not a schema: {e}")))?
        .schema();
    match written {
        Written::RepeatedKeys { rows } => Err(PublishError::RepeatedKeys { rows }),
        Written::Shards {
            shards,
            totals,
            input_bytes,
        } => Ok(RemoteWritten {
            output: SinkOutput {
                shards,
                totals: totals.into_iter().map(|(s, c, t)| ((s, c), t)).collect(),
                schema,
            },
            input_bytes,
        }),
    }
}

fn result_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("written", DataType::Utf8, false),
        Field::new("schema", DataType::Binary, false),
    ]))
}

/// The logical node: the curated rows' plan, written as shards by `spec`.
#[derive(Debug, Clone)]
pub struct ShardWriterNode {
    input: LogicalPlan,
    spec: SinkSpec,
    /// The spec's encoding, which identifies the node (equality, hashing, ordering).
    spec_json: String,
    schema: DFSchemaRef,
}

impl ShardWriterNode {
    pub fn new(input: LogicalPlan, spec: SinkSpec) -> Result<Self> {
        let spec_json = serde_json::to_string(&spec)
            .map_err(|e| DataFusionError::Internal(format!("encoding the shard writer: {e}")))?;
        Ok(Self {
            input,
            spec,
            spec_json,
            schema: Arc::new(DFSchema::try_from(result_schema().as_ref().clone())?),
        })
    }

    /// A plan whose one output row says what was written ([`read_written`]).
    pub fn plan(input: LogicalPlan, spec: SinkSpec) -> Result<LogicalPlan> {
        Ok(LogicalPlan::Extension(
            datafusion::logical_expr::Extension {
                node: Arc::new(Self::new(input, spec)?),
            },
        ))
    }

    /// Wire format of the node (without its input, which the codecs carry).
    const TAG: &'static [u8] = b"strata-shard-writer/1\n";

    /// `node`'s bytes when it is a shard writer (the logical or the physical one).
    pub fn encode(spec: &SinkSpec) -> Result<Vec<u8>> {
        let mut buf = Self::TAG.to_vec();
        serde_json::to_writer(&mut buf, spec)
            .map_err(|e| DataFusionError::Internal(format!("encoding the shard writer: {e}")))?;
        Ok(buf)
    }

    /// The spec in `buf` when it holds a shard writer; `None` for any other node.
    pub fn decode(buf: &[u8]) -> Result<Option<SinkSpec>> {
        let Some(json) = buf.strip_prefix(Self::TAG) else {
            return Ok(None);
        };
        serde_json::from_slice(json)
            .map(Some)
            .map_err(|e| DataFusionError::Internal(format!("decoding the shard writer: {e}")))
    }

    pub fn spec(&self) -> &SinkSpec {
        &self.spec
    }
}

impl PartialEq for ShardWriterNode {
    fn eq(&self, other: &Self) -> bool {
        self.spec_json == other.spec_json && self.input == other.input
    }
}
impl Eq for ShardWriterNode {}
impl Hash for ShardWriterNode {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.spec_json.hash(state);
        self.input.hash(state);
    }
}
impl PartialOrd for ShardWriterNode {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        match self.spec_json.partial_cmp(&other.spec_json) {
            Some(std::cmp::Ordering::Equal) => self.input.partial_cmp(&other.input),
            o => o,
        }
    }
}

impl UserDefinedLogicalNodeCore for ShardWriterNode {
    fn name(&self) -> &str {
        "ShardWriter"
    }
    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![&self.input]
    }
    fn schema(&self) -> &DFSchemaRef {
        &self.schema
    }
    fn expressions(&self) -> Vec<Expr> {
        vec![]
    }
    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "ShardWriter: {}{}", self.spec.root, self.spec.run_dir)
    }
    fn with_exprs_and_inputs(
        &self,
        _exprs: Vec<Expr>,
        mut inputs: Vec<LogicalPlan>,
    ) -> Result<Self> {
        let input = inputs
            .pop()
            .ok_or_else(|| DataFusionError::Internal("the shard writer has one input".into()))?;
        Ok(Self {
            input,
            ..self.clone()
        })
    }
    fn supports_limit_pushdown(&self) -> bool {
        false
    }
}

/// Plans [`ShardWriterNode`] as [`ShardWriterExec`].
#[derive(Debug, Default)]
pub struct ShardWriterPlanner;

#[async_trait::async_trait]
impl ExtensionPlanner for ShardWriterPlanner {
    async fn plan_extension(
        &self,
        _planner: &dyn PhysicalPlanner,
        node: &dyn UserDefinedLogicalNode,
        _logical_inputs: &[&LogicalPlan],
        physical_inputs: &[Arc<dyn ExecutionPlan>],
        _session: &dyn datafusion::catalog::Session,
        _planning_ctx: &datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        let Some(node) = node.as_any().downcast_ref::<ShardWriterNode>() else {
            return Ok(None);
        };
        let [input] = physical_inputs else {
            return Err(DataFusionError::Internal(
                "the shard writer has one input".into(),
            ));
        };
        Ok(Some(Arc::new(ShardWriterExec::try_new(
            Arc::clone(input),
            node.spec.clone(),
        )?)))
    }
}

/// DataFusion's planner with the shard writer: the query planner of every session
/// that plans a [`ShardWriterNode`] (the embedded engine's and the Ballista scheduler's).
#[derive(Debug, Default)]
pub struct StrataQueryPlanner;

#[async_trait::async_trait]
impl QueryPlanner for StrataQueryPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session: &dyn datafusion::catalog::Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        DefaultPhysicalPlanner::with_extension_planners(vec![Arc::new(ShardWriterPlanner)])
            .create_physical_plan(logical_plan, session)
            .await
    }
}

/// Runs the shard writer over every partition of its input, in one task.
#[derive(Debug)]
pub struct ShardWriterExec {
    input: Arc<dyn ExecutionPlan>,
    spec: SinkSpec,
    properties: Arc<PlanProperties>,
}

impl ShardWriterExec {
    pub fn try_new(input: Arc<dyn ExecutionPlan>, spec: SinkSpec) -> Result<Self> {
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(result_schema()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Final,
            Boundedness::Bounded,
        ));
        Ok(Self {
            input,
            spec,
            properties,
        })
    }

    pub fn spec(&self) -> &SinkSpec {
        &self.spec
    }
}

impl DisplayAs for ShardWriterExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "ShardWriterExec: {}{}",
            self.spec.root, self.spec.run_dir
        )
    }
}

impl ExecutionPlan for ShardWriterExec {
    fn name(&self) -> &str {
        "ShardWriterExec"
    }
    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }
    /// The whole input in one task: on Ballista, a stage boundary (the planner puts a
    /// `CoalescePartitionsExec` here, where Ballista cuts stages), and a task that
    /// reads every upstream partition rather than its own slice.
    fn required_input_distribution(&self) -> Vec<Distribution> {
        vec![Distribution::SinglePartition]
    }
    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }
    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }
    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        let _ = f;
        Ok(TreeNodeRecursion::Continue)
    }
    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let input = children
            .pop()
            .ok_or_else(|| DataFusionError::Internal("the shard writer has one input".into()))?;
        Ok(Arc::new(Self::try_new(input, self.spec.clone())?))
    }
    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!(
                "the shard writer has one partition, not {partition}"
            )));
        }
        let received = Arc::new(std::sync::atomic::AtomicU64::new(0));
        // the merge the planner put below asks for nothing the sink needs (it takes
        // partitions in any order): its input's partitions are routed concurrently
        let input = match self.input.downcast_ref::<CoalescePartitionsExec>() {
            Some(merge) => Arc::clone(merge.input()),
            None => Arc::clone(&self.input),
        };
        let streams = (0..input.output_partitioning().partition_count())
            .map(|i| {
                let stream = input.execute(i, Arc::clone(&context))?;
                Ok(counted(stream, Arc::clone(&received)))
            })
            .collect::<Result<Vec<_>>>()?;
        let root = url::Url::parse(&self.spec.root)
            .map_err(|e| DataFusionError::Plan(format!("output `{}`: {e}", self.spec.root)))?;
        let store = context
            .runtime_env()
            .object_store_registry
            .get_store(&root)?;
        let sink = self.spec.sink(Destination::new(store, root));
        let written = async move {
            let result = match sink.write(streams).await {
                Ok(out) => (
                    Written::Shards {
                        shards: out.shards,
                        totals: out
                            .totals
                            .into_iter()
                            .map(|((s, c), t)| (s, c, t))
                            .collect(),
                        input_bytes: received.load(std::sync::atomic::Ordering::Relaxed),
                    },
                    out.schema,
                ),
                Err(PublishError::RepeatedKeys { rows }) => {
                    (Written::RepeatedKeys { rows }, Arc::new(Schema::empty()))
                }
                Err(e) => return Err(DataFusionError::External(Box::new(e))),
            };
            result_batch(&result.0, &result.1)
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            result_schema(),
            futures::stream::once(written),
        )))
    }
}

fn result_batch(written: &Written, schema: &Schema) -> Result<RecordBatch> {
    let json = serde_json::to_string(written).map_err(|e| {
        DataFusionError::Internal(format!("encoding the shard writer's result: {e}"))
    })?;
    let mut ipc = Vec::new();
    StreamWriter::try_new(&mut ipc, schema)?.finish()?;
    Ok(RecordBatch::try_new(
        result_schema(),
        vec![
            Arc::new(StringArray::from(vec![json])),
            Arc::new(BinaryArray::from_vec(vec![ipc.as_slice()])),
        ],
    )?)
}

/// The bytes of `batch`'s values (of its slices, not of buffers it shares with others).
pub fn batch_bytes(batch: &RecordBatch) -> u64 {
    batch
        .columns()
        .iter()
        .map(|c| c.to_data().get_slice_memory_size().unwrap_or(0) as u64)
        .sum()
}

/// `stream`, adding the Arrow bytes of its batches to `received`.
fn counted(
    stream: SendableRecordBatchStream,
    received: Arc<std::sync::atomic::AtomicU64>,
) -> SendableRecordBatchStream {
    use futures::StreamExt;
    let schema = stream.schema();
    Box::pin(RecordBatchStreamAdapter::new(
        schema,
        stream.inspect(move |batch| {
            if let Ok(batch) = batch {
                received.fetch_add(batch_bytes(batch), std::sync::atomic::Ordering::Relaxed);
            }
        }),
    ))
}

#[cfg(test)]
mod tests {
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
        let copies =
            datafusion::prelude::when((col("id") % lit(101i64)).eq(lit(0i64)), lit(40_000i64))
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
                strata_functions::strata_hash_udf().call(vec![
                    lit(seed),
                    col("__h"),
                    col("__copy"),
                ]),
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
}
