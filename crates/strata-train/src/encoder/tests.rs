use std::sync::Arc;

use arrow::array::{Float64Array, Int64Array, StringArray};
use arrow::datatypes::Field;

use super::*;

fn spec() -> Pipeline {
    Pipeline::parse(
        "/p/s.toml",
        r#"
[source]
url = "x.parquet"
[label]
column = "y"
positive = "yes"
[groups]
attributes = ["g"]
"#
        .to_string(),
    )
    .unwrap()
}

fn batch() -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("g", DataType::Utf8, true),
        Field::new("x", DataType::Float64, true),
        Field::new("n", DataType::Int64, true),
        Field::new("c", DataType::Utf8, true),
        Field::new("y", DataType::Utf8, false),
        Field::new(WEIGHT_COLUMN, DataType::Float64, false),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(vec!["a", "b", "a", "b"])),
            Arc::new(Float64Array::from(vec![
                Some(1.0),
                None,
                Some(3.0),
                Some(f64::NAN),
            ])),
            Arc::new(Int64Array::from(vec![5, 5, 5, 5])),
            Arc::new(StringArray::from(vec![
                Some("p"),
                Some("q"),
                Some("p"),
                None,
            ])),
            Arc::new(StringArray::from(vec!["yes", "no", "no", "yes"])),
            Arc::new(Float64Array::from(vec![1.0, 2.0, 3.0, 0.0])),
        ],
    )
    .unwrap()
}

#[test]
fn fits_weighted_statistics_and_round_trips_through_json() {
    let spec = spec();
    let b = batch();
    let columns = select_features(&spec, b.schema().as_ref(), "t").unwrap();
    let names: Vec<&str> = columns.iter().map(|c| c.0.as_str()).collect();
    assert_eq!(names, ["x", "n", "c"], "g is protected, y the label");
    let mut fitter = EncoderFitter::new(&spec, columns);
    fitter.update(&b, "t").unwrap();
    let enc = fitter.finish("t").unwrap();
    // x: values 1 (w 1) and 3 (w 3); null and NaN are missing
    let Encoding::Numeric {
        mean,
        std,
        missing_indicator,
    } = enc.features[0].encoding
    else {
        panic!()
    };
    assert_eq!(mean, 2.5);
    assert!((std - (0.75f64).sqrt()).abs() < 1e-15);
    assert!(missing_indicator);
    // a constant column is centred, not scaled
    assert_eq!(
        enc.features[1].encoding,
        Encoding::Numeric {
            mean: 5.0,
            std: 1.0,
            missing_indicator: false
        }
    );
    assert_eq!(
        enc.features[2].encoding,
        Encoding::Categorical {
            categories: vec![Some("p".into()), None, Some("q".into())]
        }
    );
    assert_eq!(enc.width, 2 + 1 + 4);
    assert_eq!(enc.label.classes, ["no", "yes"]);
    assert_eq!(enc.label.positive, 1);

    let json = strata_spec::json::to_string_pretty(&enc).unwrap();
    let back: Encoder = serde_json::from_str(&json).unwrap();
    assert_eq!(back, enc);
    let a = enc.encode(&b, true, "t").unwrap();
    let z = back.encode(&b, true, "t").unwrap();
    assert_eq!(a.x, z.x);
    #[rustfmt::skip]
    let want: Vec<f32> = [
        [(1.0 - 2.5) / 0.75f64.sqrt(), 0.0, 0.0, 1.0, 0.0, 0.0, 0.0],
        [0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
        [(3.0 - 2.5) / 0.75f64.sqrt(), 0.0, 0.0, 1.0, 0.0, 0.0, 0.0],
        [0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0],
    ]
    .iter()
    .flatten()
    .map(|v| *v as f32)
    .collect();
    assert_eq!(a.x, want);
    assert_eq!(a.y, [1, 0, 0, 1]);
    assert_eq!(a.w, [1.0, 2.0, 3.0, 0.0]);
}

#[test]
fn unseen_categories_go_to_the_unknown_bucket_and_infinities_are_refused() {
    let spec = spec();
    let b = batch();
    let columns = select_features(&spec, b.schema().as_ref(), "t").unwrap();
    let mut fitter = EncoderFitter::new(&spec, columns);
    fitter.update(&b, "t").unwrap();
    let enc = fitter.finish("t").unwrap();
    let mut cols: Vec<ArrayRef> = b.columns().to_vec();
    cols[3] = Arc::new(StringArray::from(vec!["zzz", "p", "p", "p"]));
    cols[1] = Arc::new(Float64Array::from(vec![f64::INFINITY, 1.0, 1.0, 1.0]));
    let odd = RecordBatch::try_new(b.schema(), cols).unwrap();
    let e = enc.encode(&odd, true, "shard 0").unwrap_err().to_string();
    assert!(
        e.contains("`x`") && e.contains("infinite") && e.contains("shard 0"),
        "{e}"
    );
    let mut cols: Vec<ArrayRef> = b.columns().to_vec();
    cols[3] = Arc::new(StringArray::from(vec!["zzz", "p", "p", "p"]));
    let unseen = RecordBatch::try_new(b.schema(), cols).unwrap();
    let x = enc.encode(&unseen, false, "t").unwrap().x;
    assert_eq!(&x[3..7], [0.0, 0.0, 0.0, 1.0]);
}

#[test]
fn an_empty_split_or_a_single_class_cannot_be_fitted() {
    let spec = spec();
    let b = batch();
    let columns = select_features(&spec, b.schema().as_ref(), "t").unwrap();
    let e = EncoderFitter::new(&spec, columns.clone())
        .finish("the training split of run r")
        .unwrap_err()
        .to_string();
    assert!(e.contains("empty") && e.contains("run r"), "{e}");
    let mut f = EncoderFitter::new(&spec, columns);
    f.update(&b.slice(1, 2), "t").unwrap(); // "no", "no"
    let e = f.finish("t").unwrap_err().to_string();
    assert!(
        e.starts_with("column `y`") && e.contains("one class"),
        "{e}"
    );
}
