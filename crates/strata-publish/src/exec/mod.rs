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
mod tests;
