//! `strata predict`: scores rows with a trained model and streams the predictions to
//! one Parquet file (a multipart upload, which the store makes visible only once
//! complete: a failed run leaves no file).

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Float64Array, RecordBatch, StringArray, UInt64Array};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use bytes::Bytes;
use candle_core::Tensor;
use object_store::ObjectStore;
use object_store::path::Path;
use parquet::arrow::AsyncArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use url::Url;

use crate::data::{self, VerifiedRun};
use crate::encoder::WEIGHT_COLUMN;
use crate::fit::argmax;
use crate::model::f32_tensor;
use crate::{TrainError, Trained};

/// Where the rows to score come from.
#[derive(Debug, Clone)]
pub enum PredictInput {
    /// A split of a published run (verified first), in manifest order.
    Run { url: Url, split: String },
    /// Plain Parquet: a file, or every `.parquet` file under a folder, in path order.
    Files { url: Url },
}

/// What a prediction run wrote.
#[derive(Debug, Clone)]
pub struct PredictSummary {
    pub out_url: String,
    pub rows: u64,
    /// Files scored.
    pub files: usize,
    /// Unweighted share of rows whose predicted class is the true one.
    pub accuracy: f64,
}

/// The name of the row key column when the model has no id column.
pub const ROW_COLUMN: &str = "row";

/// Scores `input` with `trained` and writes the predictions to `out` (a `.parquet` URL,
/// or a folder URL ending in `/`, which gets `predictions.parquet`).
pub async fn predict(
    trained: &Trained,
    store: Arc<dyn ObjectStore>,
    input: &PredictInput,
    out_store: Arc<dyn ObjectStore>,
    out: &Url,
) -> Result<PredictSummary, TrainError> {
    let sources: Vec<(Source, String)> = match input {
        PredictInput::Run { url, split } => {
            let run = VerifiedRun::open(store.clone(), url).await?;
            let shards = run.shards(split);
            if shards.is_empty() {
                let splits: Vec<&str> = run
                    .manifest
                    .splits
                    .iter()
                    .map(|s| s.split.as_str())
                    .collect();
                return Err(TrainError::Usage(format!(
                    "run {} has no shards of split `{split}` (its splits: {})",
                    run.run.root(),
                    splits.join(", ")
                )));
            }
            let run = Arc::new(run);
            shards
                .into_iter()
                .map(|s| {
                    let url = run.url_of(&s);
                    (Source::Shard(run.clone(), s), url)
                })
                .collect()
        }
        PredictInput::Files { url } => data::list_parquet(&store, url)
            .await?
            .into_iter()
            .map(|(p, u)| (Source::Object(store.clone(), p), u))
            .collect(),
    };
    let mut out_url = out.clone();
    if out_url.path().ends_with('/') {
        out_url.set_path(&format!("{}predictions.parquet", out_url.path()));
    }
    let out_path = Path::from_url_path(out_url.path())
        .map_err(|e| TrainError::Usage(format!("`{out_url}`: {e}")))?;

    let enc = &trained.encoder;
    let first = sources[0].0.fetch(&sources[0].1).await?;
    let schema = data::schema_of(first.clone(), &sources[0].1)?;
    let layout = Layout::new(trained, &schema, &sources[0].1)?;

    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .build();
    let writer = object_store::buffered::BufWriter::new(out_store, out_path);
    let mut writer = AsyncArrowWriter::try_new(writer, layout.out_schema.clone(), Some(props))
        .map_err(|e| TrainError::data(&out_url, e))?;
    let (mut rows, mut correct) = (0u64, 0u64);
    let mut first = Some(first);
    for (source, url) in &sources {
        let bytes = match first.take() {
            Some(b) => b,
            None => source.fetch(url).await?,
        };
        let here = data::schema_of(bytes.clone(), url)?;
        enc.check_schema(&here, url)?;
        for batch in data::decode(bytes, &layout.read, url)? {
            let batch = batch?;
            let (out_batch, right) = layout.score(trained, &batch, rows, url)?;
            rows += batch.num_rows() as u64;
            correct += right;
            writer
                .write(&out_batch)
                .await
                .map_err(|e| TrainError::data(&out_url, e))?;
        }
    }
    writer
        .close()
        .await
        .map_err(|e| TrainError::data(&out_url, e))?;
    Ok(PredictSummary {
        out_url: out_url.to_string(),
        rows,
        files: sources.len(),
        accuracy: if rows > 0 {
            correct as f64 / rows as f64
        } else {
            0.0
        },
    })
}

enum Source {
    Shard(Arc<VerifiedRun>, strata_run::ShardEntry),
    Object(Arc<dyn ObjectStore>, Path),
}

impl Source {
    async fn fetch(&self, url: &str) -> Result<Bytes, TrainError> {
        match self {
            Self::Shard(run, s) => run.fetch(s).await,
            Self::Object(store, p) => data::fetch_object(store, p, url).await,
        }
    }
}

/// The columns read and written.
struct Layout {
    read: Vec<String>,
    out_schema: SchemaRef,
    label_type: DataType,
    has_weight: bool,
}

impl Layout {
    fn new(trained: &Trained, schema: &Schema, context: &str) -> Result<Self, TrainError> {
        let enc = &trained.encoder;
        enc.check_schema(schema, context)?;
        let field = |name: &str, role: &str| {
            schema
                .field_with_name(name)
                .cloned()
                .map_err(|_| TrainError::Column {
                    column: name.to_string(),
                    message: format!("{context} has no such column ({role} of the model)"),
                })
        };
        let mut read = enc.needed_columns(false);
        let mut fields = Vec::new();
        match &enc.id_column {
            Some(id) => {
                fields.push(field(id, "the id column")?);
                read.push(id.clone());
            }
            None => fields.push(Field::new(ROW_COLUMN, DataType::UInt64, false)),
        }
        for a in &enc.protected_attributes {
            fields.push(field(a, "a protected attribute")?);
            read.push(a.clone());
        }
        let label = field(&enc.label.column, "the label")?;
        read.push(enc.label.column.clone());
        let label_type = label.data_type().clone();
        fields.push(Field::new(
            "y_true",
            label_type.clone(),
            label.is_nullable(),
        ));
        fields.push(Field::new("y_pred", label_type.clone(), false));
        if enc.label.classes.len() == 2 {
            fields.push(Field::new("y_score", DataType::Float64, false));
        } else {
            for c in &enc.label.classes {
                fields.push(Field::new(format!("y_score_{c}"), DataType::Float64, false));
            }
        }
        fields.push(Field::new(WEIGHT_COLUMN, DataType::Float64, true));
        let has_weight = schema.field_with_name(WEIGHT_COLUMN).is_ok();
        if has_weight {
            read.push(WEIGHT_COLUMN.to_string());
        }
        Ok(Self {
            read,
            out_schema: Arc::new(Schema::new(fields)),
            label_type,
            has_weight,
        })
    }

    /// The prediction rows of `batch`, and how many were right.
    fn score(
        &self,
        trained: &Trained,
        batch: &RecordBatch,
        first_row: u64,
        context: &str,
    ) -> Result<(RecordBatch, u64), TrainError> {
        let enc = &trained.encoder;
        let n = batch.num_rows();
        let encoded = enc.encode(batch, false, context)?;
        let x: Tensor = f32_tensor(encoded.x, n, enc.width, trained.model.device())?;
        let probs = trained.model.probabilities(&x)?.to_vec2::<f32>()?;
        let classes = &enc.label.classes;
        let predicted: Vec<usize> = probs.iter().map(|p| argmax(p)).collect();
        let mut columns: Vec<ArrayRef> = Vec::new();
        match &enc.id_column {
            Some(id) => columns.push(batch.column_by_name(id).expect("read").clone()),
            None => columns.push(Arc::new(UInt64Array::from_iter_values(
                first_row..first_row + n as u64,
            ))),
        }
        for a in &enc.protected_attributes {
            columns.push(batch.column_by_name(a).expect("read").clone());
        }
        let y_true = batch
            .column_by_name(&enc.label.column)
            .expect("read")
            .clone();
        let y_pred_text = StringArray::from_iter_values(predicted.iter().map(|k| &classes[*k]));
        let y_pred = cast(&y_pred_text, &self.label_type).map_err(|e| TrainError::Column {
            column: enc.label.column.clone(),
            message: format!("cannot write a predicted class as {}: {e}", self.label_type),
        })?;
        let true_text = cast(&y_true, &DataType::Utf8).map_err(|e| TrainError::Column {
            column: enc.label.column.clone(),
            message: format!("{context}: cannot read as text: {e}"),
        })?;
        let true_text = true_text
            .as_any()
            .downcast_ref::<StringArray>()
            .expect("cast to Utf8");
        let right = predicted
            .iter()
            .enumerate()
            .filter(|(i, k)| true_text.is_valid(*i) && true_text.value(*i) == classes[**k])
            .count() as u64;
        columns.push(y_true);
        columns.push(y_pred);
        if classes.len() == 2 {
            columns.push(Arc::new(Float64Array::from_iter_values(
                probs.iter().map(|p| f64::from(p[enc.label.positive])),
            )));
        } else {
            for k in 0..classes.len() {
                columns.push(Arc::new(Float64Array::from_iter_values(
                    probs.iter().map(|p| f64::from(p[k])),
                )));
            }
        }
        if self.has_weight {
            columns.push(
                cast(
                    batch.column_by_name(WEIGHT_COLUMN).expect("read"),
                    &DataType::Float64,
                )
                .map_err(|e| TrainError::Column {
                    column: WEIGHT_COLUMN.into(),
                    message: format!("{context}: {e}"),
                })?,
            );
        } else {
            columns.push(Arc::new(Float64Array::from_iter_values(
                std::iter::repeat_n(1.0, n),
            )));
        }
        let out = RecordBatch::try_new(self.out_schema.clone(), columns)
            .map_err(|e| TrainError::data(context, e))?;
        Ok((out, right))
    }
}
