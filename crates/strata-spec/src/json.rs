//! strata's JSON outputs (profile, curation summary, manifest, check results) are
//! written through here, so they share two rules: pretty-printed with a stable key
//! order, and no negative zero (an empty float sum is `-0.0` in Rust, which JSON
//! readers print as `-0`).

use serde::Serialize;
use serde_json::Value;

/// `value` as pretty-printed JSON, with every `-0.0` written as `0.0`.
pub fn to_string_pretty<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<String> {
    let mut tree = serde_json::to_value(value)?;
    no_negative_zero(&mut tree);
    serde_json::to_string_pretty(&tree)
}

fn no_negative_zero(v: &mut Value) {
    match v {
        Value::Number(n) if n.as_f64().is_some_and(|f| f == 0.0 && f.is_sign_negative()) => {
            *v = Value::from(0.0);
        }
        Value::Array(items) => items.iter_mut().for_each(no_negative_zero),
        Value::Object(fields) => fields.values_mut().for_each(no_negative_zero),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn negative_zero_is_written_as_zero() {
        let v = serde_json::json!({"a": -0.0, "b": [1.5, -0.0, {"c": -0.0}], "d": 0, "e": -1.0});
        let text = super::to_string_pretty(&v).unwrap();
        assert!(!text.contains("-0"), "{text}");
        assert!(text.contains("-1.0"), "{text}");
        // key order kept
        assert!(text.find("\"a\"") < text.find("\"e\""));
    }
}
