//! Encoding a shard as Parquet: fixed chunks of rows counted from its first row, so its
//! bytes never depend on where its pieces start.

use super::*;

/// Encodes one shard of split `split` from its pieces (the written columns but the
/// split's): rows reach the writer in `CHUNK_ROWS` chunks counted from its first row, so
/// the bytes never depend on where pieces start.
pub(super) fn encode(
    schema: SchemaRef,
    pieces: &[RecordBatch],
    decoded: &Decoded,
    split: &str,
    distinct: &[String],
) -> Result<Bytes, PublishError> {
    let props = writer_properties(&schema, distinct);
    let mut writer = ArrowWriter::try_new(Vec::new(), schema.clone(), Some(props))
        .map_err(data_err("starting a shard"))?;
    let split_values: ArrayRef = Arc::new(StringArray::from(vec![split; CHUNK_ROWS]));
    let mut chunk: Vec<RecordBatch> = Vec::new();
    let mut chunk_rows = 0;
    let mut write = |chunk: &mut Vec<RecordBatch>| {
        let mut columns: Vec<ArrayRef> = match chunk.as_slice() {
            [one] => one.columns().to_vec(),
            _ => concat_batches(&chunk[0].schema(), chunk.iter())
                .map_err(data_err("gathering a shard"))?
                .columns()
                .to_vec(),
        };
        let n = chunk.iter().map(|b| b.num_rows()).sum();
        chunk.clear();
        for (column, values) in columns.iter_mut().zip(decoded) {
            if values.is_some() {
                *column = decode(column, values.as_ref())?;
            }
        }
        columns.push(split_values.slice(0, n));
        let rows =
            RecordBatch::try_new(schema.clone(), columns).map_err(data_err("gathering a shard"))?;
        writer.write(&rows).map_err(data_err("encoding a shard"))
    };
    for piece in pieces {
        let mut at = 0;
        while at < piece.num_rows() {
            let n = (CHUNK_ROWS - chunk_rows).min(piece.num_rows() - at);
            chunk.push(piece.slice(at, n));
            chunk_rows += n;
            at += n;
            if chunk_rows == CHUNK_ROWS {
                write(&mut chunk)?;
                chunk_rows = 0;
            }
        }
    }
    if chunk_rows > 0 {
        write(&mut chunk)?;
    }
    Ok(Bytes::from(
        writer.into_inner().map_err(data_err("finishing a shard"))?,
    ))
}

/// zstd, page statistics and indexes on, a fixed `created_by`: shards are read by
/// engines that prune on statistics, and must hash the same on every machine. Float
/// columns (weights, scores) are nearly always distinct, and `distinct` columns are: no
/// dictionary attempt for them (it would fill a dictionary page, then fall back).
/// Distinct integers (ids) are written as deltas (`DELTA_BINARY_PACKED`): in shuffled
/// order each delta takes about the bits of the ids' span, a little less than zstd
/// makes of them plain, at a fifth of the time.
pub(super) fn writer_properties(schema: &SchemaRef, distinct: &[String]) -> WriterProperties {
    let mut builder = WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(3).expect("valid zstd level"),
        ))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_created_by(format!("strata {}", env!("CARGO_PKG_VERSION")));
    for f in schema.fields() {
        if f.data_type().is_floating() || distinct.contains(f.name()) {
            builder =
                builder.set_column_dictionary_enabled(ColumnPath::from(f.name().as_str()), false);
        }
        if f.data_type().is_integer() && distinct.contains(f.name()) {
            builder = builder.set_column_encoding(
                ColumnPath::from(f.name().as_str()),
                Encoding::DELTA_BINARY_PACKED,
            );
        }
    }
    builder.build()
}
