//! A source table whose group columns are read as dictionaries.
//!
//! Parquet stores low-cardinality strings (sexes, races, age bands) dictionary-encoded:
//! each page holds a few distinct values and one small integer per row. Read as plain
//! strings, every row's value is copied out of the dictionary, and then `strata_cells`
//! fingerprints it back into a code. Read as `Dictionary(Int32, Utf8)`, the reader
//! hands over the integers and the few values as they are stored, and a row costs one
//! lookup (see `cells.rs`).
//!
//! arrow-rs reads a column as a dictionary when the schema it is given says so, and
//! DataFusion 55 passes a file's `PartitionedFile::arrow_schema` to the reader. A
//! listing table builds its files itself, so [`CodedTable`] scans through one and then
//! gives each file of the plan its coded schema. The values read are the same either way.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::Session;
use datafusion::common::Result;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::datasource::physical_plan::{FileGroupPartitioner, FileScanConfig};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use object_store::path::Path;

/// The type coded columns are read as.
pub(crate) fn coded_type() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
}

/// Whether a column of this type can be read coded: strings, which Parquet's readers
/// turn into dictionaries directly.
fn can_code(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    )
}

/// `schema` with the string columns among `columns` coded.
pub(crate) fn coded_schema(schema: &Schema, columns: &[String]) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| {
            if columns.iter().any(|c| c == f.name()) && can_code(f.data_type()) {
                f.as_ref().clone().with_data_type(coded_type())
            } else {
                f.as_ref().clone()
            }
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// Partitions of a coded scan per target partition (core).
const PARTITIONS_PER_TARGET: usize = 4;

/// A table read through `inner` (a listing table over Parquet files, with a coded
/// schema), each file with its own coded schema from `hints`.
#[derive(Debug)]
pub(crate) struct CodedTable {
    inner: Arc<dyn TableProvider>,
    /// File path → that file's schema with the coded columns.
    hints: HashMap<Path, SchemaRef>,
}

impl CodedTable {
    pub(crate) fn new(inner: Arc<dyn TableProvider>, hints: HashMap<Path, SchemaRef>) -> Self {
        Self { inner, hints }
    }

    /// `plan` with every file the hints know given its coded schema, and its files cut
    /// into `partitions` groups of equal bytes.
    fn hinted(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        partitions: usize,
        min_size: usize,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let rewritten = plan.transform_up(|node| {
            let Some(exec) = node.downcast_ref::<DataSourceExec>() else {
                return Ok(Transformed::no(node));
            };
            let Some(config) = exec.data_source().downcast_ref::<FileScanConfig>() else {
                return Ok(Transformed::no(node));
            };
            let mut config = config.clone();
            if config.output_partitioning.is_none()
                && let Some(groups) = FileGroupPartitioner::new()
                    .with_target_partitions(partitions)
                    .with_repartition_file_min_size(min_size)
                    .repartition_file_groups(&config.file_groups)
            {
                config.file_groups = groups;
            }
            for group in config.file_groups.iter_mut() {
                for i in 0..group.len() {
                    let file = &mut group[i];
                    if let Some(hint) = self.hints.get(&file.object_meta.location) {
                        file.arrow_schema = Some(hint.clone());
                    }
                }
            }
            let exec = exec.clone().with_data_source(Arc::new(config));
            Ok(Transformed::yes(Arc::new(exec) as Arc<dyn ExecutionPlan>))
        })?;
        Ok(rewritten.data)
    }
}

#[async_trait]
impl TableProvider for CodedTable {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        self.inner.supports_filters_pushdown(filters)
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        // Several partitions per target partition: the tables coded reads feed one
        // aggregate whose partial states merge at once, and with several partitions
        // per core one decodes while another waits for a read, and the last byte
        // ranges of the scan are shorter (two and four measured in BENCHMARKS.md).
        let options = state.config_options();
        let partitions = options
            .execution
            .target_partitions
            .saturating_mul(PARTITIONS_PER_TARGET);
        let min_size = options.optimizer.repartition_file_min_size;
        self.hinted(
            self.inner.scan(state, projection, filters, limit).await?,
            partitions,
            min_size,
        )
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{ArrayRef, AsArray, Int64Array, RecordBatch, StringArray};
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::parquet::arrow::ArrowWriter;

    use super::*;
    use crate::{CODED_SOURCE_TABLE, Engine, EngineOptions, SOURCE_TABLE};

    fn write(path: &std::path::Path, columns: Vec<(&str, ArrayRef)>) {
        let batch = RecordBatch::try_from_iter(columns).unwrap();
        let mut writer =
            ArrowWriter::try_new(std::fs::File::create(path).unwrap(), batch.schema(), None)
                .unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
    }

    /// Three files, one with a column the others lack and one with nulls: the coded
    /// table reads the same values as the plain one, and its group column as a
    /// dictionary.
    #[tokio::test]
    async fn coded_scans_read_the_same_values() {
        let dir = tempfile::tempdir().unwrap();
        let strings = |v: &[Option<&str>]| Arc::new(StringArray::from(v.to_vec())) as ArrayRef;
        let ints = |v: &[i64]| Arc::new(Int64Array::from(v.to_vec())) as ArrayRef;
        write(
            &dir.path().join("a.parquet"),
            vec![
                ("g", strings(&[Some("x"), Some("y"), Some("x")])),
                ("n", ints(&[1, 2, 3])),
            ],
        );
        write(
            &dir.path().join("b.parquet"),
            vec![
                ("g", strings(&[Some("y"), Some("z")])),
                ("n", ints(&[4, 5])),
                ("extra", strings(&[Some("e"), None])),
            ],
        );
        write(
            &dir.path().join("c.parquet"),
            vec![
                ("n", ints(&[6, 7])),
                ("g", strings(&[None, Some("a value longer than twelve")])),
            ],
        );

        let engine = Engine::new(&EngineOptions::default()).unwrap();
        let url = format!("{}/", dir.path().display());
        let source = engine
            .open_source(&url, &strata_spec::StorageOptions::default(), SOURCE_TABLE)
            .await
            .unwrap();
        let schema = engine
            .register_coded(
                &source,
                CODED_SOURCE_TABLE,
                &["g".to_string(), "n".to_string()],
            )
            .await
            .unwrap();
        assert_eq!(
            schema.field_with_name("g").unwrap().data_type(),
            &coded_type()
        );
        assert_eq!(
            schema.field_with_name("n").unwrap().data_type(),
            &DataType::Int64,
            "only strings are coded"
        );

        let ctx = engine.context();
        let query = |table: &str| {
            format!("SELECT n, g, CAST(g AS VARCHAR) AS text, extra FROM {table} ORDER BY n")
        };
        let plain = ctx
            .sql(&query(SOURCE_TABLE))
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let coded = ctx
            .sql(&query(CODED_SOURCE_TABLE))
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let text = |b: &[RecordBatch]| {
            let projected: Vec<RecordBatch> =
                b.iter().map(|b| b.project(&[0, 2, 3]).unwrap()).collect();
            pretty_format_batches(&projected).unwrap().to_string()
        };
        assert_eq!(text(&coded), text(&plain));
        assert_eq!(coded.iter().map(RecordBatch::num_rows).sum::<usize>(), 7);
        assert!(text(&coded).contains("a value longer than twelve"));
        for b in &coded {
            assert!(
                b.column(1).as_any_dictionary_opt().is_some(),
                "the group column is read as a dictionary"
            );
        }
        // every file of the plan carries its own coded schema for the reader (without
        // it the reader would decode strings and DataFusion cast them back)
        let plan = ctx
            .sql(&format!("SELECT g FROM {CODED_SOURCE_TABLE}"))
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap();
        let mut hinted = Vec::new();
        plan.apply(|node| {
            if let Some(config) = node
                .downcast_ref::<DataSourceExec>()
                .and_then(|e| e.data_source().downcast_ref::<FileScanConfig>())
            {
                for file in config.file_groups.iter().flat_map(|g| g.iter()) {
                    let hint = file
                        .arrow_schema
                        .as_ref()
                        .expect("a coded schema for every file");
                    assert_eq!(
                        hint.field_with_name("g").unwrap().data_type(),
                        &coded_type()
                    );
                    hinted.push((file.object_meta.location.to_string(), hint.fields().len()));
                }
            }
            Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
        })
        .unwrap();
        hinted.sort();
        let names: Vec<(&str, usize)> = hinted
            .iter()
            .map(|(p, n)| (p.rsplit('/').next().unwrap(), *n))
            .collect();
        assert_eq!(
            names,
            [("a.parquet", 2), ("b.parquet", 3), ("c.parquet", 2)]
        );

        // files past the minimum size are cut into byte ranges, several partitions per
        // core, and the scan still reads every row once
        ctx.sql("SET datafusion.optimizer.repartition_file_min_size = 1")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let plan = ctx
            .sql(&query(CODED_SOURCE_TABLE))
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap();
        let mut groups = 0;
        plan.apply(|node| {
            if let Some(config) = node
                .downcast_ref::<DataSourceExec>()
                .and_then(|e| e.data_source().downcast_ref::<FileScanConfig>())
            {
                // byte ranges: DataFusion's EnforceDistribution may regroup them by
                // target partitions (it does when the file statistics, which strata
                // turns off, cannot say the input is small)
                groups += config.file_groups.iter().map(|g| g.len()).sum::<usize>();
                assert!(
                    config
                        .file_groups
                        .iter()
                        .flat_map(|g| g.iter())
                        .all(|f| f.arrow_schema.is_some())
                );
            }
            Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
        })
        .unwrap();
        assert!(groups > 3, "three small files cut into {groups} ranges");
        let split = ctx
            .sql(&query(CODED_SOURCE_TABLE))
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        assert_eq!(text(&split), text(&plain));
    }
}
