//! Python's view of JSON values: `json.dumps(value, separators=(',', ':'))` byte for byte, and
//! Python's `==` on the decoded values.
//!
//! Kopf stores its records as JSON strings inside annotations, so "byte-identical with Kopf" means
//! reproducing Python's encoder, which differs from `serde_json` in two visible ways:
//!
//! * `ensure_ascii=True` (the default): every character outside `' '..='~'` is written as a
//!   lowercase `\uXXXX` escape (astral characters as a surrogate pair), so `ü` becomes `\u00fc`;
//! * floats use Python's `repr`: `1e+16`, `1e-05`, `1000000000000000.0`.
//!
//! Python's `==` also differs from `serde_json::Value`'s: `1 == 1.0` and `True == 1` hold in
//! Python, so a diff-base written by a Python tool with `1.0` does not count as a change of `1`.

use serde_json::{Map, Number, Value};
use std::fmt::Write as _;

/// Encodes `value` exactly as Python's `json.dumps(value, separators=(',', ':'))` does.
///
/// Object keys keep their insertion order (the crate enables `serde_json/preserve_order`), like
/// Python dicts.
///
/// # Caveats
///
/// Integers beyond the `u64`/`i64` range are held by `serde_json` as floats and are therefore
/// written as floats (`1e+20`), while Python would write the exact integer.
pub fn dumps(value: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, value);
    out
}

fn write_value(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => write_number(out, n),
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => write_object(out, map),
    }
}

fn write_object(out: &mut String, map: &Map<String, Value>) {
    out.push('{');
    for (i, (key, item)) in map.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_string(out, key);
        out.push(':');
        write_value(out, item);
    }
    out.push('}');
}

fn write_number(out: &mut String, n: &Number) {
    if let Some(i) = n.as_u64() {
        let _ = write!(out, "{i}");
    } else if let Some(i) = n.as_i64() {
        let _ = write!(out, "{i}");
    } else if let Some(f) = n.as_f64() {
        out.push_str(&float_repr(f));
    } else {
        // Only reachable with serde_json's `arbitrary_precision`; its text is the number itself.
        out.push_str(&n.to_string());
    }
}

/// Python's `repr(float)`: the shortest round-tripping digits, in positional notation when the
/// decimal exponent is in `-4..16` and in scientific notation (`1e+16`, `1e-05`) otherwise.
pub(crate) fn float_repr(f: f64) -> String {
    if f.is_nan() {
        return "NaN".to_owned();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.to_owned();
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0.0" } else { "0.0" }.to_owned();
    }
    let (digits, exponent) = shortest_digits(f.abs());
    let n = digits.len() as i32;
    // Python's `decpt`: the value is 0.DIGITS * 10**decpt.
    let decpt = exponent + 1;
    let mut out = String::new();
    if f.is_sign_negative() {
        out.push('-');
    }
    if decpt <= -4 || decpt > 16 {
        out.push_str(&digits[..1]);
        if n > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let sign = if exponent < 0 { '-' } else { '+' };
        let _ = write!(out, "e{sign}{:02}", exponent.abs());
    } else if decpt <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-decpt) as usize));
        out.push_str(&digits);
    } else if decpt >= n {
        out.push_str(&digits);
        out.extend(std::iter::repeat_n('0', (decpt - n) as usize));
        out.push_str(".0");
    } else {
        out.push_str(&digits[..decpt as usize]);
        out.push('.');
        out.push_str(&digits[decpt as usize..]);
    }
    out
}

/// The digits Python's `repr` picks for a finite, non-zero `f` (David Gay's `dtoa`, mode 0):
/// the fewest that read back as `f`, and of those the closest to it, a tie going to the even
/// digit. Returned as `(digits, exponent)`: the value is `d.ddd… × 10^exponent`.
///
/// They are taken from `serde_json`'s float text (the `zmij` algorithm), which picks the same
/// digits; Rust's own `{:e}` rounds a tie up instead: 2⁻²⁵ = 2.98023223876953125e-08 is
/// `2.9802322387695313e-8` there and `2.9802322387695312e-08` in Python.
fn shortest_digits(f: f64) -> (String, i32) {
    let text = Number::from_f64(f).map_or_else(String::new, |n| n.to_string());
    let (mantissa, exponent) = match text.split_once(['e', 'E']) {
        Some((mantissa, exponent)) => (mantissa, exponent.parse::<i32>().unwrap_or(0)),
        None => (text.as_str(), 0),
    };
    let (int, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let all = format!("{int}{fraction}");
    let leading_zeros = all.len() - all.trim_start_matches('0').len();
    let digits = all.trim_start_matches('0').trim_end_matches('0');
    let exponent = exponent + int.len() as i32 - 1 - leading_zeros as i32;
    if digits.is_empty() {
        ("0".to_owned(), 0)
    } else {
        (digits.to_owned(), exponent)
    }
}

fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
        }
    }
    out.push('"');
}

/// Python's `==` on two decoded JSON values.
///
/// Numbers compare by value across int/float (`1 == 1.0`), booleans are the integers 0 and 1
/// (`True == 1`, `False == 0.0`), lists compare item by item, dicts compare as unordered maps.
pub fn py_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Null, Value::Null) => true,
        (Value::String(a), Value::String(b)) => a == b,
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(a, b)| py_eq(a, b))
        }
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len()
                && a.iter()
                    .all(|(key, a)| b.get(key).is_some_and(|b| py_eq(a, b)))
        }
        _ => match (PyNumber::of(a), PyNumber::of(b)) {
            (Some(a), Some(b)) => a.eq(b),
            _ => false,
        },
    }
}

/// Python's `not value` (falsiness) for decoded JSON: `None`, `False`, `0`, `0.0`, `""`, `[]`, `{}`.
pub(crate) fn py_falsy(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f == 0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(items) => items.is_empty(),
        Value::Object(map) => map.is_empty(),
    }
}

/// A JSON number or boolean as Python's numeric tower sees it.
#[derive(Clone, Copy)]
enum PyNumber {
    Int(i128),
    Float(f64),
}

impl PyNumber {
    fn of(value: &Value) -> Option<Self> {
        match value {
            Value::Bool(b) => Some(PyNumber::Int(i128::from(*b))),
            Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Some(PyNumber::Int(i128::from(i)))
                } else if let Some(u) = n.as_u64() {
                    Some(PyNumber::Int(i128::from(u)))
                } else {
                    n.as_f64().map(PyNumber::Float)
                }
            }
            _ => None,
        }
    }

    /// Exact comparison, as Python does it (no rounding of the int to a float).
    fn eq(self, other: Self) -> bool {
        match (self, other) {
            (PyNumber::Int(a), PyNumber::Int(b)) => a == b,
            (PyNumber::Float(a), PyNumber::Float(b)) => a == b,
            (PyNumber::Int(i), PyNumber::Float(f)) | (PyNumber::Float(f), PyNumber::Int(i)) => {
                // Every i64/u64 is far inside the i128 range, and a float this large is integral.
                f.is_finite() && f.fract() == 0.0 && f.abs() < 1.0e38 && f as i128 == i
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn floats_are_written_as_python_repr() {
        // Expected values came from Kopf 1.45.2's Python 3.11: `json.dumps(v)` for each `v`.
        let cases: &[(f64, &str)] = &[
            (0.1, "0.1"),
            (1.5, "1.5"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (123456789012345678.0, "1.2345678901234568e+17"),
            (1e-05, "1e-05"),
            (0.0001, "0.0001"),
            (0.00012345, "0.00012345"),
            (-0.0, "-0.0"),
            (0.0, "0.0"),
            (1e22, "1e+22"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (5e-324, "5e-324"),
            (2.5e-7, "2.5e-07"),
            (100.0, "100.0"),
            (1234567890123456.7, "1234567890123456.8"),
            (12345678901234567.0, "1.2345678901234568e+16"),
            (-3.14e-10, "-3.14e-10"),
            (1e100, "1e+100"),
            (0.3, "0.3"),
            (2.0 / 3.0, "0.6666666666666666"),
            // Ties between two shortest candidates go to the even digit (Rust's `{:e}` rounds
            // them up): found by tests/tests/differential.rs.
            // Exactly …319.25 and …429.625, halfway between two shortest candidates.
            (-(1_119_563_780_174_319.0 + 0.25), "-1119563780174319.2"),
            (-(233_891_771_783_429.0 + 0.625), "-233891771783429.62"),
            (2f64.powi(-25), "2.9802322387695312e-08"),
            (2f64.powi(-24), "5.960464477539063e-08"),
        ];
        for (f, expected) in cases {
            assert_eq!(float_repr(*f), *expected, "for {f:?}");
            assert_eq!(dumps(&json!(f)), *expected, "for {f:?}");
        }
    }

    #[test]
    fn floats_read_back_as_python_wrote_them() {
        // Texts as Python's `json.dumps` (and Go's encoder) write them; serde_json's default
        // parser reads each as a neighbouring float (`float_roundtrip` fixes it): found by
        // tests/tests/differential.rs.
        for text in [
            "4.325595515383728e+47",
            "5.80357504152833e+257",
            // Read as 1.9547373485674198e-18 without the feature, which reads back as the
            // original: a stored essence never equal to its body.
            "1.95473734856742e-18",
            "7.42953907054764e+52",
            "0.30000000000000004",
        ] {
            let value: Value = serde_json::from_str(text).unwrap();
            assert_eq!(dumps(&value), text);
        }
    }

    #[test]
    fn strings_are_ascii_escaped_like_python() {
        // Expected values came from Kopf 1.45.2's Python 3.11 `json.dumps(..., separators=(',', ':'))`.
        let s = "a\"b\\c\n\r\t\u{8}\u{c}\u{0}\u{1f}\u{7f}\u{80}é€😀/<>&'";
        assert_eq!(
            dumps(&json!(s)),
            r#""a\"b\\c\n\r\t\b\f\u0000\u001f\u007f\u0080\u00e9\u20ac\ud83d\ude00/<>&'""#
        );
        let v = json!({"ключ": ["é", 1, true, null, {"": []}]});
        assert_eq!(
            dumps(&v),
            r#"{"\u043a\u043b\u044e\u0447":["\u00e9",1,true,null,{"":[]}]}"#
        );
    }

    #[test]
    fn integers_and_order_are_kept() {
        let v: Value = serde_json::from_str(r#"{"z":1,"a":-2,"m":18446744073709551615}"#).unwrap();
        assert_eq!(dumps(&v), r#"{"z":1,"a":-2,"m":18446744073709551615}"#);
    }

    #[test]
    fn python_equality_crosses_int_float_and_bool() {
        assert!(py_eq(&json!(1), &json!(1.0)));
        assert!(py_eq(&json!(true), &json!(1)));
        assert!(py_eq(&json!(false), &json!(0.0)));
        assert!(py_eq(
            &json!({"a": [1, {"x": 2}]}),
            &json!({"a": [1.0, {"x": 2.0}]})
        ));
        assert!(py_eq(&json!({"a": 1, "b": 2}), &json!({"b": 2, "a": 1})));
        assert!(!py_eq(&json!("1"), &json!(1)));
        assert!(!py_eq(&json!(null), &json!(0)));
        assert!(!py_eq(&json!(1.5), &json!(1)));
        assert!(!py_eq(&json!([1]), &json!([1, 2])));
        assert!(!py_eq(&json!({"a": 1}), &json!({"a": 1, "b": 2})));
        // Python compares int and float exactly: 2**53 + 1 != float(2**53).
        assert!(!py_eq(
            &json!(9007199254740993_i64),
            &json!(9007199254740992.0)
        ));
        assert!(py_eq(
            &json!(9007199254740992_i64),
            &json!(9007199254740992.0)
        ));
    }

    #[test]
    fn falsiness_is_pythons() {
        for v in [
            json!(null),
            json!(false),
            json!(0),
            json!(0.0),
            json!(""),
            json!([]),
            json!({}),
        ] {
            assert!(py_falsy(&v), "{v}");
        }
        for v in [
            json!(true),
            json!(1),
            json!(-0.5),
            json!(" "),
            json!([0]),
            json!({"a": null}),
        ] {
            assert!(!py_falsy(&v), "{v}");
        }
    }
}
