//! strata's aggregates (`strata_cells`, `strata_cut_zones`) return their rows as one
//! value: a list of structs. These helpers make that value and read it back, in the
//! accumulators' merges and in the stages that collect the results.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, ListArray, RecordBatch, StructArray};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::datatypes::Field;
use datafusion::common::{Result, ScalarValue, exec_err};

/// `rows` as an aggregate's value: a list with one element per row.
pub(crate) fn to_value(rows: StructArray) -> Result<ScalarValue> {
    let n = rows.len();
    let list = ListArray::try_new(
        Arc::new(Field::new_list_field(rows.data_type().clone(), false)),
        OffsetBuffer::from_lengths([n]),
        Arc::new(rows),
        None,
    )?;
    Ok(ScalarValue::List(Arc::new(list)))
}

/// The rows of every non-null value of a column of such lists (partial states).
pub(crate) fn rows_of(values: &ArrayRef, function: &str) -> Result<Vec<StructArray>> {
    let Some(lists) = values.as_list_opt::<i32>() else {
        return exec_err!("{function}: a value is not a list");
    };
    let mut out = Vec::new();
    for i in (0..lists.len()).filter(|&i| lists.is_valid(i)) {
        match lists.value(i).as_struct_opt() {
            Some(rows) => out.push(rows.clone()),
            None => return exec_err!("{function}: a value is not a list of structs"),
        }
    }
    Ok(out)
}

/// The rows of a collected query whose first column is such an aggregate, as batches.
pub fn aggregate_rows(batches: &[RecordBatch]) -> Result<Vec<RecordBatch>> {
    let mut out = Vec::new();
    for b in batches.iter().filter(|b| b.num_columns() > 0) {
        out.extend(
            rows_of(b.column(0), "an aggregate")?
                .iter()
                .map(RecordBatch::from),
        );
    }
    Ok(out)
}
