//! The compact form of a routed row: categorical strings as numbers into one dictionary
//! per column, decoded back as each shard is encoded.

use super::*;

/// Numbers a batch's string column by `dictionary`. Short values (12 bytes or fewer,
/// nearly every category) are found by their 16-byte view alone, through a
/// [`SlotCache`] and then this task's map; the shared dictionary is asked once per
/// value and task.
pub(super) struct Coder<'a> {
    pub(super) dictionary: &'a std::sync::Mutex<Dictionary>,
    pub(super) short: HashMap<u128, u32>,
    pub(super) long: HashMap<String, u32>,
    pub(super) cache: SlotCache<u128, u32, CACHE_SLOTS>,
}

impl<'a> Coder<'a> {
    pub(super) fn new(dictionary: &'a std::sync::Mutex<Dictionary>) -> Self {
        Self {
            dictionary,
            short: HashMap::new(),
            long: HashMap::new(),
            cache: SlotCache::new(),
        }
    }

    pub(super) fn code(&mut self, column: &ArrayRef) -> Result<ArrayRef, PublishError> {
        let views = cast(column, &DataType::Utf8View)
            .map_err(data_err("numbering a categorical column"))?;
        let views = views.as_string_view();
        let mut codes = Vec::with_capacity(views.len());
        for (i, &view) in views.views().iter().enumerate() {
            if views.is_null(i) {
                codes.push(0);
                continue;
            }
            if (view as u32) <= 12 {
                let (dictionary, short) = (self.dictionary, &mut self.short);
                let id = self.cache.get(view, |view| match short.get(view) {
                    Some(&id) => Ok(id),
                    None => {
                        let id = dictionary
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .id(views.value(i))?;
                        short.insert(*view, id);
                        Ok::<_, PublishError>(id)
                    }
                })?;
                codes.push(id);
            } else {
                let value = views.value(i);
                let id = match self.long.get(value) {
                    Some(&id) => id,
                    None => {
                        let id = self
                            .dictionary
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .id(value)?;
                        self.long.insert(value.to_string(), id);
                        id
                    }
                };
                codes.push(id);
            }
        }
        Ok(Arc::new(UInt32Array::new(
            codes.into(),
            views.nulls().cloned(),
        )))
    }
}

/// The strings of numbered values, by written column position: the dictionary's values
/// in the column's written type.
pub(super) type Decoded = Vec<Option<ArrayRef>>;

/// A written column as the shards hold it: numbers decoded to their strings.
pub(super) fn decode(
    column: &ArrayRef,
    values: Option<&ArrayRef>,
) -> Result<ArrayRef, PublishError> {
    match values {
        Some(values) => take(values, column.as_primitive::<UInt32Type>(), None)
            .map_err(data_err("decoding a categorical column")),
        None => Ok(column.clone()),
    }
}

/// String and binary views become plain arrays: a view array slice or `take` keeps
/// its parent's whole data buffers, which a spill file would copy for every piece.
pub(super) fn compact_type(t: &DataType) -> DataType {
    match t {
        DataType::Utf8View => DataType::Utf8,
        DataType::BinaryView => DataType::Binary,
        t => t.clone(),
    }
}

pub(super) fn compact_schema(schema: &SchemaRef) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| {
            f.as_ref()
                .clone()
                .with_data_type(compact_type(f.data_type()))
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// The batch with its views made plain, but for the columns at `skip` (numbered
/// instead), which keep their type; the returned batch carries its own schema.
pub(super) fn compact(batch: &RecordBatch, skip: &[usize]) -> Result<RecordBatch, PublishError> {
    let fields = batch.schema().fields().clone();
    if !fields
        .iter()
        .enumerate()
        .any(|(i, f)| !skip.contains(&i) && compact_type(f.data_type()) != *f.data_type())
    {
        return Ok(batch.clone());
    }
    let mut columns = Vec::with_capacity(fields.len());
    let mut compacted = Vec::with_capacity(fields.len());
    for (i, (c, f)) in batch.columns().iter().zip(fields.iter()).enumerate() {
        let t = if skip.contains(&i) {
            f.data_type().clone()
        } else {
            compact_type(f.data_type())
        };
        columns.push(cast(c, &t).map_err(data_err("reading the curated rows"))?);
        compacted.push(f.as_ref().clone().with_data_type(t));
    }
    let schema = Arc::new(Schema::new_with_metadata(
        compacted,
        batch.schema().metadata().clone(),
    ));
    RecordBatch::try_new(schema, columns).map_err(data_err("reading the curated rows"))
}
