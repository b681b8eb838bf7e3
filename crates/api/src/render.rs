//! Answers written as Prometheus writes them, byte for byte (the e2e test
//! `json_is_byte_identical_to_prometheus` compares with a real one):
//! sample values as strings per Prometheus's `jsonutil.MarshalValue` (Go's
//! shortest `'f'` form, `'e'` below 1e-6 and from 1e21; `"NaN"`, `"+Inf"`),
//! timestamps as Unix seconds with a 3-digit millisecond fraction when
//! non-zero (`jsonutil.MarshalTimestamp`), `warnings`/`infos` only when
//! non-empty; label sets and exemplars as JSON objects.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use cairn_common::{ExemplarSeries, Labels};
use cairn_promql::{QueryResult, Value as PValue};
use serde_json::{json, Value};

/// Appends `v` as Prometheus writes a sample value (without quotes), i.e.
/// its `jsonutil.MarshalValue` (see [`cairn_common::gofmt::write_json_float`]).
pub(crate) fn write_float(out: &mut String, v: f64) {
    cairn_common::gofmt::write_json_float(out, v);
}

/// `v` formatted by [`write_float`].
pub fn format_float(v: f64) -> String {
    let mut s = String::new();
    write_float(&mut s, v);
    s
}

/// Appends a millisecond timestamp as Prometheus's `MarshalTimestamp` does:
/// whole seconds, then `.` and three fraction digits when the fraction is
/// non-zero (`1700000000`, `1700000000.500`, `-0.001`). A JSON number.
pub fn write_timestamp(out: &mut String, t_ms: i64) {
    if t_ms < 0 {
        out.push('-');
    }
    let a = t_ms.unsigned_abs();
    out.push_str(itoa::Buffer::new().format(a / 1000));
    let frac = a % 1000;
    if frac != 0 {
        let d = [
            b'.',
            b'0' + (frac / 100) as u8,
            b'0' + (frac / 10 % 10) as u8,
            b'0' + (frac % 10) as u8,
        ];
        out.push_str(std::str::from_utf8(&d).unwrap_or(""));
    }
}

fn write_json_str(out: &mut String, s: &str) {
    // serde_json escapes exactly what JSON requires; writing into a String
    // cannot fail, and a &str always serialises.
    if let Ok(q) = serde_json::to_string(s) {
        out.push_str(&q);
    }
}

fn write_labels(out: &mut String, l: &Labels) {
    out.push('{');
    for (i, lb) in l.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_json_str(out, &lb.name);
        out.push(':');
        write_json_str(out, &lb.value);
    }
    out.push('}');
}

/// `[t,"v"]`.
fn write_point(out: &mut String, t: i64, v: f64) {
    out.push('[');
    write_timestamp(out, t);
    out.push_str(",\"");
    write_float(out, v);
    out.push_str("\"]");
}

/// The `data` object of a query answer: `{"resultType":…,"result":…}`.
pub(crate) fn write_data(out: &mut String, value: &PValue) {
    out.push_str("{\"resultType\":\"");
    out.push_str(value.type_name());
    out.push_str("\",\"result\":");
    match value {
        PValue::Scalar { t, v } => write_point(out, *t, *v),
        PValue::String { t, v } => {
            out.push('[');
            write_timestamp(out, *t);
            out.push(',');
            write_json_str(out, v);
            out.push(']');
        }
        PValue::Vector(samples) => {
            out.push('[');
            for (i, s) in samples.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str("{\"metric\":");
                write_labels(out, &s.labels);
                out.push_str(",\"value\":");
                write_point(out, s.t, s.v);
                out.push('}');
            }
            out.push(']');
        }
        PValue::Matrix(series) => {
            out.push('[');
            for (i, s) in series.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str("{\"metric\":");
                write_labels(out, &s.labels);
                out.push_str(",\"values\":[");
                for (j, p) in s.samples.iter().enumerate() {
                    if j > 0 {
                        out.push(',');
                    }
                    write_point(out, p.t, p.v);
                }
                out.push_str("]}");
            }
            out.push(']');
        }
    }
    out.push('}');
}

fn write_str_array(out: &mut String, key: &str, items: &[String]) {
    if items.is_empty() {
        return;
    }
    out.push_str(",\"");
    out.push_str(key);
    out.push_str("\":[");
    for (i, w) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_json_str(out, w);
    }
    out.push(']');
}

/// The whole success body of a query answer.
pub(crate) fn render_result(r: &QueryResult) -> String {
    let points = match &r.value {
        PValue::Matrix(m) => m.iter().map(|s| s.samples.len()).sum::<usize>(),
        PValue::Vector(v) => v.len(),
        _ => 1,
    };
    let mut out = String::with_capacity(64 + points * 32);
    out.push_str("{\"status\":\"success\",\"data\":");
    write_data(&mut out, &r.value);
    write_str_array(&mut out, "warnings", &r.warnings);
    write_str_array(&mut out, "infos", &r.infos);
    out.push('}');
    out
}

/// A 200 answer whose body is already JSON.
pub(crate) fn json_response(body: String) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// `{"status":"success","data":…}`.
pub(crate) fn success(data: Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        json!({"status": "success", "data": data}).to_string(),
    )
        .into_response()
}

/// A label set as a JSON object.
pub(crate) fn labels_json(l: &Labels) -> Value {
    Value::Object(
        l.iter()
            .map(|l| (l.name.clone(), Value::String(l.value.clone())))
            .collect(),
    )
}

/// Prometheus's exemplar answer: `[{"seriesLabels":{…},"exemplars":[…]}]`.
pub(crate) fn exemplars_json(series: &[ExemplarSeries]) -> Value {
    Value::Array(
        series
            .iter()
            .map(|s| {
                json!({
                    "seriesLabels": labels_json(&s.labels),
                    "exemplars": s.exemplars.iter().map(|e| json!({
                        "labels": labels_json(&e.labels),
                        "value": format_float(e.value),
                        "timestamp": timestamp_number(e.t),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect(),
    )
}

/// A timestamp as a JSON number with Prometheus's digits.
fn timestamp_number(t_ms: i64) -> Value {
    let mut s = String::new();
    write_timestamp(&mut s, t_ms);
    serde_json::from_str(&s).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The previous, `format!`-based float writer: Rust's shortest
    /// round-trip digits laid out as Go's `FormatFloat(v, 'f'/'e', -1)`.
    fn reference_float(v: f64) -> String {
        if v.is_nan() {
            return "NaN".into();
        } else if v == f64::INFINITY {
            return "+Inf".into();
        } else if v == f64::NEG_INFINITY {
            return "-Inf".into();
        }
        let a = v.abs();
        if a != 0.0 && !(1e-6..1e21).contains(&a) {
            let e = format!("{v:e}");
            let (mant, exp) = e.split_once('e').unwrap();
            let (sign, digits) = match exp.strip_prefix('-') {
                Some(d) => ('-', d),
                None => ('+', exp),
            };
            format!("{mant}e{sign}{digits:0>2}")
        } else {
            format!("{v}")
        }
    }

    #[test]
    fn floats_are_written_as_go_writes_them() {
        let fixed = [
            (0.0, "0"),
            (-0.0, "-0"),
            (1.0, "1"),
            (-2.5, "-2.5"),
            (0.1, "0.1"),
            (1e-6, "0.000001"),
            (1e-7, "1e-07"),
            (2.025e22, "2.025e+22"),
            (1e21, "1e+21"),
            (1e20, "100000000000000000000"),
            (123456.789, "123456.789"),
            (5e-324, "5e-324"),
            (f64::MAX, "1.7976931348623157e+308"),
            (1.5e300, "1.5e+300"),
            // Exactly halfway between two shortest forms: Go rounds to
            // even (84418043664819.125; checked against Prometheus 2.42).
            (f64::from_bits(0x42d3_31c6_e056_6cc8), "84418043664819.12"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
        ];
        for (v, want) in fixed {
            assert_eq!(format_float(v), want, "{v:?}");
        }
        // Random bit patterns and decimal-looking values: the same layout
        // and length as the reference writer, and the value read back;
        // the digits differ only where two shortest forms are equally
        // near (Rust's `Display` rounds those up, Go to even).
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for i in 0..300_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = match i % 3 {
                0 => f64::from_bits(x),
                1 => (x % 10_000_000) as f64 / 10f64.powi((x % 13) as i32),
                _ => (x >> 11) as f64 * 10f64.powi((x % 40) as i32 - 20),
            };
            if !v.is_finite() {
                continue;
            }
            let (got, want) = (format_float(v), reference_float(v));
            if got != want {
                assert_eq!(got.len(), want.len(), "{v:?}: {got} vs {want}");
                let back: f64 = got.parse().unwrap();
                assert_eq!(back.to_bits(), v.to_bits(), "{v:?}: {got}");
                assert!(got.contains('e') == want.contains('e'), "{got} vs {want}");
            }
        }
    }

    #[test]
    fn timestamps_are_written_as_prometheus_writes_them() {
        for (t, want) in [
            (1_700_000_000_000, "1700000000"),
            (1_700_000_000_500, "1700000000.500"),
            (1_700_000_000_007, "1700000000.007"),
            (-1, "-0.001"),
            (0, "0"),
        ] {
            let mut s = String::new();
            write_timestamp(&mut s, t);
            assert_eq!(s, want);
        }
    }

    #[test]
    fn floats_format_like_go() {
        for (v, want) in [
            (1.0, "1"),
            (-0.0, "-0"),
            (0.1, "0.1"),
            (0.000001, "0.000001"),
            (1.5e-7, "1.5e-07"),
            (-2.5e-10, "-2.5e-10"),
            (1e21, "1e+21"),
            (2.025e22, "2.025e+22"),
            (999999999999999900000.0, "999999999999999900000"),
            (123456789.125, "123456789.125"),
            (1.0 / 3.0, "0.3333333333333333"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
            (f64::MAX, "1.7976931348623157e+308"),
            (5e-324, "5e-324"),
        ] {
            assert_eq!(format_float(v), want, "{v:e}");
            if v.is_finite() {
                assert_eq!(want.parse::<f64>().unwrap().to_bits(), v.to_bits());
            }
        }
    }

    #[test]
    fn timestamps_format_like_prometheus() {
        let ts = |t| {
            let mut s = String::new();
            write_timestamp(&mut s, t);
            s
        };
        assert_eq!(ts(1_700_000_000_000), "1700000000");
        assert_eq!(ts(1_700_000_000_500), "1700000000.500");
        assert_eq!(ts(1_700_000_000_005), "1700000000.005");
        assert_eq!(ts(0), "0");
        assert_eq!(ts(-1), "-0.001");
        assert_eq!(ts(-1_500), "-1.500");
        assert_eq!(ts(i64::MIN), "-9223372036854775.808");
        // Always a valid JSON number.
        for t in [1_700_000_000_500, -1, i64::MIN, i64::MAX] {
            let v: serde_json::Value = serde_json::from_str(&ts(t)).unwrap();
            assert!(v.is_number());
        }
    }

    #[test]
    fn result_shapes() {
        use cairn_common::Sample;
        use cairn_promql::{InstantSample, RangeSeries};
        let l = Labels::from_pairs(&[("__name__", "up"), ("job", "a\"b")]);
        let r = QueryResult {
            value: PValue::Vector(vec![InstantSample {
                labels: l.clone(),
                t: 1_700_000_000_500,
                v: f64::NAN,
            }]),
            warnings: vec![],
            infos: vec!["PromQL info: x".into()],
            resolution: None,
        };
        assert_eq!(
            render_result(&r),
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"__name__":"up","job":"a\"b"},"value":[1700000000.500,"NaN"]}]},"infos":["PromQL info: x"]}"#
        );
        let r = QueryResult {
            value: PValue::Matrix(vec![RangeSeries {
                labels: l,
                samples: vec![Sample::new(1000, 1.0), Sample::new(2000, f64::NEG_INFINITY)],
            }]),
            warnings: vec!["w".into()],
            infos: vec![],
            resolution: None,
        };
        assert_eq!(
            render_result(&r),
            r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"__name__":"up","job":"a\"b"},"values":[[1,"1"],[2,"-Inf"]]}]},"warnings":["w"]}"#
        );
        let r = QueryResult {
            value: PValue::Scalar { t: 5, v: 2.0 },
            warnings: vec![],
            infos: vec![],
            resolution: None,
        };
        assert_eq!(
            render_result(&r),
            r#"{"status":"success","data":{"resultType":"scalar","result":[0.005,"2"]}}"#
        );
        let r = QueryResult {
            value: PValue::String {
                t: 1000,
                v: "hi".into(),
            },
            warnings: vec![],
            infos: vec![],
            resolution: None,
        };
        assert!(render_result(&r).contains(r#""result":[1,"hi"]"#));
    }
}
