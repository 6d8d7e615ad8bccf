//! Pass 2: the curated rows, in no order, into the shard writer, which deals each
//! stratum's rows to the shards in shuffle-key order (docs/publishing.md).

use super::*;
use strata_publish::{ShardWriterNode, SinkSpec};

/// What the writer is told of the plan besides the rows.
pub(super) struct ShardPlan<'a> {
    pub(super) cells: &'a BTreeMap<(GroupKey, LabelKey), Cell>,
    pub(super) table: &'a BTreeMap<u64, CellRow>,
    pub(super) trims: Trims,
    /// Some training rows get more than one copy.
    pub(super) replicate: bool,
    pub(super) shard_rows: u64,
    /// Rows the curated run will hold, for sizing the writer's ranges.
    pub(super) expected_rows: u64,
    pub(super) shard_memory: Option<usize>,
    pub(super) range_rows: Option<u64>,
}

impl Passes<'_> {
    /// Pass 2: plans the curated rows and streams them into the shard writer, which puts
    /// the shards under the run's folder (uncommitted: the manifest comes after).
    pub(super) async fn write_shards(
        &self,
        destination: &Destination,
        run_id: &str,
        plan: ShardPlan<'_>,
    ) -> Result<strata_publish::SinkOutput, CurateError> {
        let group_strata = self.group_strata();
        let mut output_cols = self.source_cols.clone();
        // helpers the writer needs, and no more: every one is copied a few times per row
        // (the stratum is the cell unless resampling by group; trimmed ties exist only
        // when resampling makes them). The shuffle key alone orders the rows: the writer
        // breaks its rare ties on the written values, the row key among them (or the
        // whole row)
        output_cols.extend([ident("sample_weight"), ident(col::SPLIT), ident(col::CELL)]);
        // copy k of a row is keyed by hash(h_sample, h_split, k); replicated rows come
        // once with their number of copies, which the writer makes (not the engine:
        // `unnest` copies every column once more and runs the key's hash per copy)
        let hashed = [col::H_SAMPLE, col::H_SPLIT];
        if plan.replicate {
            output_cols.push(ident(col::COPIES));
            output_cols.extend(hashed.map(ident));
        } else {
            let mut key: Vec<Expr> = hashed.map(ident).to_vec();
            key.push(ident(col::COPY));
            output_cols.push(seeded_hash(self.seed, stream::SHUFFLE, &key).alias(col::SHUFFLE_KEY));
        }
        if group_strata {
            output_cols.push(ident(col::GROUP));
        }
        if !plan.trims.is_empty() {
            output_cols.push(ident(col::TIE));
        }
        let output = self
            .output(Rows::Written, cell_table(plan.table.values()), false)
            .await
            .and_then(|df| {
                // nested, not `AND`: see `at_or_below`
                let factor = pick(
                    is_train(),
                    pick(
                        ident(col::FACTOR).is_not_null(),
                        ident(col::FACTOR),
                        lit(1.0f64),
                    ),
                    lit(1.0f64),
                );
                df.with_column("sample_weight", ident(col::WEIGHT) * factor)?
                    .select(output_cols)
            })
            .map_err(df_err("planning the curated output"))?;

        let started = std::time::Instant::now();
        let strata_values: HashMap<u64, Vec<Option<String>>> = plan
            .cells
            .iter()
            .map(|((g, y), c)| {
                if group_strata {
                    (c.group_id, g.clone())
                } else {
                    let mut v = g.clone();
                    v.push(y.clone());
                    (c.cell_id, v)
                }
            })
            .collect();
        let has_ties = !plan.trims.is_empty();
        let memory_budget = match (self.engine.memory_limit(), plan.shard_memory) {
            (Some(_), _) => Some(0),
            (None, budget) => budget,
        };
        let sink = ShardSink {
            destination: destination.clone(),
            run_dir: Destination::run_dir(run_id),
            columns: SinkColumns {
                split: col::SPLIT.into(),
                split_names: SPLITS.map(String::from).to_vec(),
                split_column: "split".into(),
                weight: "sample_weight".into(),
                stratum: self.stratum_col().into(),
                cell: col::CELL.into(),
                order: vec![col::SHUFFLE_KEY.into()],
                tie: has_ties.then(|| col::TIE.into()),
                distinct: self.pipeline.source.id_column.iter().cloned().collect(),
                // group attributes and label: a few values each
                categorical: self.pipeline.cell_columns(),
                copies: plan.replicate.then(|| strata_publish::SinkCopies {
                    count: col::COPIES.into(),
                    hashed: hashed.map(String::from).to_vec(),
                    seed: derive_seed(self.seed, stream::SHUFFLE),
                }),
            },
            strata: strata_values,
            shard_rows: plan.shard_rows,
            expected_rows: plan.expected_rows,
            range_rows: plan.range_rows.unwrap_or(strata_publish::RANGE_ROWS),
            trims: plan.trims,
            // with a memory limit the writer spills from the start; otherwise past a
            // budget (by default, from the memory of the machine that writes)
            memory_budget: memory_budget.unwrap_or_else(strata_publish::default_memory_budget),
            unique_order: self.pipeline.source.id_column.is_some(),
            spill_dir: self.engine.spill_dir().map(Into::into),
            threads: self.ctx().state().config().target_partitions(),
        };
        let written = if self.engine.is_cluster() {
            // on an executor: the rows never reach this process, only what was written
            let spec = SinkSpec::of(&sink, memory_budget);
            let plan = ShardWriterNode::plan(output.into_unoptimized_plan(), spec)
                .map_err(df_err("planning the shard writer"))?;
            let batches = DataFrame::new(self.ctx().state(), plan)
                .collect()
                .await
                .map_err(df_err("writing shards on the cluster"))?;
            let received: u64 = batches.iter().map(strata_publish::batch_bytes).sum();
            strata_publish::read_written(&batches).map(|w| {
                tracing::info!(
                    writer_input_bytes = w.input_bytes,
                    received_bytes = received,
                    "shards written on the cluster"
                );
                w.output
            })
        } else {
            let physical = output
                .create_physical_plan()
                .await
                .map_err(df_err("planning curation pass 2"))?;
            tracing::debug!(plan = %datafusion::physical_plan::displayable(physical.as_ref()).indent(true), "curation pass 2 plan");
            let streams = datafusion::physical_plan::execute_stream_partitioned(
                physical,
                self.ctx().task_ctx(),
            )
            .map_err(df_err("running curation pass 2"))?;
            sink.write(streams).await
        };
        let written = match written {
            Err(strata_publish::PublishError::RepeatedKeys { rows }) => {
                let id = self
                    .pipeline
                    .source
                    .id_column
                    .as_deref()
                    .unwrap_or_default();
                return Err(self
                    .pipeline
                    .error_at(
                        "source.id_column",
                        format!(
                            "id column `{id}` of source `{}` is not unique: {rows} rows repeat an id",
                            self.source.url
                        ),
                    )
                    .into());
            }
            written => written?,
        };
        tracing::info!(
            shards = written.shards.len(),
            engine = self.engine.name(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "curated shards written"
        );
        Ok(written)
    }
}
