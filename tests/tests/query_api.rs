//! End-to-end tests of the PromQL HTTP API against the real binary:
//! the requests Grafana's Prometheus data source makes, with the response
//! shapes it parses; error status codes; remote read round trips.

use cairn_e2e::*;
use cairn_proto::prompb;
use prost::Message;
use serde_json::Value;

const FORM: (&str, &str) = ("Content-Type", "application/x-www-form-urlencoded");

fn secs(ms: i64) -> f64 {
    ms as f64 / 1000.0
}

/// A form POST (Grafana's default method) with an optional tenant.
fn post_form(url: &str, tenant: Option<&str>, form: &str) -> Response {
    let mut h = vec![FORM];
    if let Some(t) = tenant {
        h.push(("X-Scope-OrgID", t));
    }
    post(url, &h, form.as_bytes()).unwrap_or_else(|e| panic!("POST {url}: {e}"))
}

/// Status 200, `"status":"success"`, and the JSON body.
fn ok_json(r: &Response, what: &str) -> Value {
    assert_eq!(r.status, 200, "{what}: {}", r.text());
    assert_eq!(
        r.header("content-type"),
        Some("application/json"),
        "{what}: content type"
    );
    let j = r.json();
    assert_eq!(j["status"], "success", "{what}: {j}");
    j
}

/// An error answer: the status code and Prometheus's error shape.
fn assert_api_error(r: &Response, status: u16, kind: &str, what: &str) -> String {
    assert_eq!(r.status, status, "{what}: {}", r.text());
    let j = r.json();
    assert_eq!(j["status"], "error", "{what}: {j}");
    assert_eq!(j["errorType"], kind, "{what}: {j}");
    let msg = j["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: error is not a string: {j}"));
    assert!(!msg.is_empty(), "{what}: empty error message");
    msg.to_string()
}

/// A `[t, "v"]` pair as Grafana reads it: numeric seconds and a string value.
fn point(p: &Value, what: &str) -> (f64, f64) {
    let a = p
        .as_array()
        .unwrap_or_else(|| panic!("{what}: point is not an array: {p}"));
    assert_eq!(a.len(), 2, "{what}: {p}");
    let t = a[0]
        .as_f64()
        .unwrap_or_else(|| panic!("{what}: timestamp is not a number: {p}"));
    let s = a[1]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: value is not a string: {p}"));
    let v = match s {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other
            .parse()
            .unwrap_or_else(|_| panic!("{what}: bad value {other:?}")),
    };
    (t, v)
}

fn labels_of(v: &Value) -> Metric {
    v.as_object()
        .unwrap_or_else(|| panic!("labels are not an object: {v}"))
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.as_str().expect("label value is a string").to_string(),
            )
        })
        .collect()
}

struct Data {
    /// First and last sample timestamps (ms), 15 s apart.
    t0: i64,
    t1: i64,
    exemplar_t: i64,
}

/// Writes two counters (`http_requests_total`, +10 and +5 per 15 s), a gauge,
/// an exemplar with a trace_id and the counter's metadata.
fn load(base: &str, tenant: Option<&str>) -> Data {
    let (d, req) = data_request();
    let (st, body) = remote_write(base, tenant, &req);
    assert_eq!(st, 204, "remote write: {body}");
    d
}

fn data_request() -> (Data, WriteRequest) {
    let now = now_ms();
    // Whole seconds, 5 minutes back: well inside the writable window.
    let t0 = (now / 15_000) * 15_000 - 300_000;
    let n = 21;
    let pts = |step: f64| -> Vec<(i64, f64)> {
        (0..n).map(|i| (t0 + i * 15_000, i as f64 * step)).collect()
    };
    let mut a = series(
        &[
            ("__name__", "http_requests_total"),
            ("instance", "a"),
            ("job", "api"),
        ],
        &pts(10.0),
    );
    let exemplar_t = t0 + 10 * 15_000 + 500;
    a.exemplars.push(prompb::Exemplar {
        labels: vec![Label::new("trace_id", "4bf92f3577b34da6a3ce929d0e0e4736")],
        value: 1.0,
        timestamp: exemplar_t,
    });
    let b = series(
        &[
            ("__name__", "http_requests_total"),
            ("instance", "b"),
            ("job", "api"),
        ],
        &pts(5.0),
    );
    let g = series(
        &[("__name__", "temperature_celsius"), ("job", "node")],
        &(0..n).map(|i| (t0 + i * 15_000, 20.25)).collect::<Vec<_>>(),
    );
    let mut req = write_request(vec![a, b, g]);
    req.metadata.push(prompb::MetricMetadata {
        r#type: 1,
        metric_family_name: "http_requests_total".into(),
        help: "Total HTTP requests.".into(),
        unit: "".into(),
    });
    req.metadata.push(prompb::MetricMetadata {
        r#type: 2,
        metric_family_name: "temperature_celsius".into(),
        help: "Room temperature.".into(),
        unit: "celsius".into(),
    });
    let d = Data {
        t0,
        t1: t0 + (n - 1) * 15_000,
        exemplar_t,
    };
    (d, req)
}

#[test]
fn grafana_data_source_requests() {
    let s = TestServer::spawn(ServerOpts::default());
    let base = s.url();
    let d = load(&base, None);
    let (start, end) = (d.t0 / 1000 - 60, d.t1 / 1000 + 60);
    let range = format!("start={start}&end={end}");

    // Health check: `1+1` as an instant query, expects a scalar.
    let r = get_as(
        &format!("{base}/api/v1/query?query=1%2B1&time={}", secs(now_ms())),
        None,
    );
    let j = ok_json(&r, "health check");
    assert_eq!(j["data"]["resultType"], "scalar", "{j}");
    let (t, v) = point(&j["data"]["result"], "health check");
    assert_eq!(v, 2.0);
    assert!((t - secs(now_ms())).abs() < 60.0, "{j}");
    assert!(
        j.get("warnings").is_none() && j.get("infos").is_none(),
        "{j}"
    );

    // Build info: Grafana reads data.version (semver) to pick features.
    let j = ok_json(
        &get_as(&format!("{base}/api/v1/status/buildinfo"), None),
        "buildinfo",
    );
    let version = j["data"]["version"].as_str().expect("version string");
    let major: u32 = version.split('.').next().unwrap().parse().expect("semver");
    assert!(major >= 2, "{version}");
    for k in ["revision", "branch", "buildUser", "buildDate", "goVersion"] {
        assert!(j["data"][k].is_string(), "buildinfo.{k}: {j}");
    }

    // Metrics browser: labels, label values, series.
    let j = ok_json(
        &get_as(&format!("{base}/api/v1/labels?{range}"), None),
        "labels",
    );
    assert_eq!(
        strings(&j["data"]),
        vec!["__name__", "instance", "job"],
        "{j}"
    );
    let j = ok_json(
        &get_as(&format!("{base}/api/v1/label/job/values?{range}"), None),
        "label values",
    );
    assert_eq!(strings(&j["data"]), vec!["api", "node"]);
    let j = ok_json(
        &get_as(
            &format!("{base}/api/v1/label/__name__/values?{range}"),
            None,
        ),
        "metric names",
    );
    assert_eq!(
        strings(&j["data"]),
        vec!["http_requests_total", "temperature_celsius"]
    );
    let j = ok_json(
        &get_as(
            &format!(
                "{base}/api/v1/series?match[]={}&{range}",
                enc(r#"http_requests_total{job="api"}"#)
            ),
            None,
        ),
        "series",
    );
    let got: Vec<Metric> = j["data"]
        .as_array()
        .expect("array")
        .iter()
        .map(labels_of)
        .collect();
    assert_eq!(got.len(), 2, "{j}");
    assert_eq!(got[0]["instance"], "a");

    // Metadata: map of metric name to [{type, help, unit}].
    let j = ok_json(
        &get_as(&format!("{base}/api/v1/metadata"), None),
        "metadata",
    );
    let m = &j["data"]["http_requests_total"][0];
    assert_eq!(m["type"], "counter", "{j}");
    assert_eq!(m["help"], "Total HTTP requests.", "{j}");
    assert_eq!(m["unit"], "", "{j}");
    assert_eq!(
        j["data"]["temperature_celsius"][0]["unit"], "celsius",
        "{j}"
    );
    let j = ok_json(
        &get_as(
            &format!("{base}/api/v1/metadata?metric=temperature_celsius"),
            None,
        ),
        "metadata?metric",
    );
    assert_eq!(j["data"].as_object().unwrap().len(), 1, "{j}");
    let j = ok_json(
        &get_as(&format!("{base}/api/v1/metadata?limit=1"), None),
        "metadata?limit",
    );
    assert_eq!(j["data"].as_object().unwrap().len(), 1, "{j}");

    // Range query as Grafana sends it: POST form, integer seconds, step in seconds.
    let step = 15;
    let qr_start = d.t0 / 1000 + 60;
    let qr_end = d.t1 / 1000;
    let r = post_form(
        &format!("{base}/api/v1/query_range"),
        None,
        &format!(
            "query={}&start={qr_start}&end={qr_end}&step={step}",
            enc("rate(http_requests_total[1m])")
        ),
    );
    let j = ok_json(&r, "query_range");
    assert_eq!(j["data"]["resultType"], "matrix", "{j}");
    let result = j["data"]["result"].as_array().expect("result array");
    assert_eq!(result.len(), 2, "{j}");
    for (s, per_s) in result.iter().zip([10.0 / 15.0, 5.0 / 15.0]) {
        let m = labels_of(&s["metric"]);
        assert!(!m.contains_key("__name__"), "rate keeps no name: {m:?}");
        assert_eq!(m["job"], "api");
        let vals = s["values"].as_array().expect("values array");
        assert_eq!(vals.len() as i64, (qr_end - qr_start) / step + 1, "{s}");
        for (k, p) in vals.iter().enumerate() {
            let (t, v) = point(p, "query_range point");
            assert_eq!(t, (qr_start + k as i64 * step) as f64);
            assert!((v - per_s).abs() < 1e-9, "rate {v} != {per_s} in {s}");
        }
    }

    // Instant query as a POST form; the answer's time is the `time` given.
    let r = post_form(
        &format!("{base}/api/v1/query"),
        None,
        &format!(
            "query={}&time={}",
            enc("sum by (job) (http_requests_total)"),
            secs(d.t1)
        ),
    );
    let j = ok_json(&r, "query");
    assert_eq!(j["data"]["resultType"], "vector", "{j}");
    let v = &j["data"]["result"][0];
    assert_eq!(labels_of(&v["metric"]), metric(&[("job", "api")]));
    assert_eq!(point(&v["value"], "query"), (secs(d.t1), 300.0));

    // Non-finite values and fractional timestamps come out as Prometheus writes them.
    let t_frac = d.t1 + 500;
    let r = get_as(
        &format!(
            "{base}/api/v1/query?query={}&time={}",
            enc("temperature_celsius / 0 or -temperature_celsius{job=\"x\"}"),
            secs(t_frac)
        ),
        None,
    );
    let body = ok_json(&r, "inf").to_string();
    assert!(body.contains("\"+Inf\""), "{body}");
    let raw = r.text();
    assert!(
        raw.contains(&format!("[{}.500,\"+Inf\"]", t_frac / 1000)),
        "timestamp format: {raw}"
    );
    let j = ok_json(
        &get_as(
            &format!("{base}/api/v1/query?query={}&time=100", enc("0/0")),
            None,
        ),
        "NaN",
    );
    assert_eq!(j["data"]["result"][1], "NaN");
    let j = ok_json(
        &get_as(
            &format!("{base}/api/v1/query?query={}&time=100", enc("-1/0")),
            None,
        ),
        "-Inf",
    );
    assert_eq!(j["data"]["result"][1], "-Inf");
    let j = ok_json(
        &get_as(
            &format!("{base}/api/v1/query?query={}&time=100", enc("\"hi\"")),
            None,
        ),
        "string",
    );
    assert_eq!(j["data"]["resultType"], "string");
    assert_eq!(j["data"]["result"][1], "hi");

    // Range vector of an instant query: matrix of raw samples.
    let j = ok_json(
        &get_as(
            &format!(
                "{base}/api/v1/query?query={}&time={}",
                enc("http_requests_total{instance=\"a\"}[1m]"),
                secs(d.t1)
            ),
            None,
        ),
        "range selector",
    );
    assert_eq!(j["data"]["resultType"], "matrix");
    let vals = j["data"]["result"][0]["values"].as_array().unwrap();
    assert_eq!(vals.len(), 4, "(t-60s, t] holds 4 samples: {j}");
    assert_eq!(point(&vals[3], "raw"), (secs(d.t1), 200.0));

    // Exemplars as Grafana asks for them (POST form).
    let r = post_form(
        &format!("{base}/api/v1/query_exemplars"),
        None,
        &format!(
            "query={}&start={start}&end={end}",
            enc("sum(rate(http_requests_total{job=\"api\"}[1m]))")
        ),
    );
    let j = ok_json(&r, "query_exemplars");
    let ex = j["data"].as_array().expect("exemplar array");
    assert_eq!(ex.len(), 1, "{j}");
    assert_eq!(
        labels_of(&ex[0]["seriesLabels"]),
        metric(&[
            ("__name__", "http_requests_total"),
            ("instance", "a"),
            ("job", "api")
        ])
    );
    let e = &ex[0]["exemplars"][0];
    assert_eq!(
        labels_of(&e["labels"]),
        metric(&[("trace_id", "4bf92f3577b34da6a3ce929d0e0e4736")])
    );
    assert_eq!(e["value"], "1", "{j}");
    assert_eq!(e["timestamp"].as_f64(), Some(secs(d.exemplar_t)), "{j}");
    // Outside the range: none, but still an array.
    let j = ok_json(
        &get_as(
            &format!(
                "{base}/api/v1/query_exemplars?query=http_requests_total&start={}&end={}",
                start - 3600,
                start - 1800
            ),
            None,
        ),
        "query_exemplars outside range",
    );
    assert_eq!(j["data"], serde_json::json!([]));

    // Query formatting.
    let j = ok_json(
        &get_as(
            &format!(
                "{base}/api/v1/format_query?query={}",
                enc("sum(rate(http_requests_total[5m]))by(job)")
            ),
            None,
        ),
        "format_query",
    );
    assert_eq!(j["data"], "sum by (job) (rate(http_requests_total[5m]))");

    // Status endpoints exist with their shapes.
    let j = ok_json(
        &get_as(&format!("{base}/api/v1/status/config"), None),
        "config",
    );
    assert!(j["data"]["yaml"].is_string());
    let j = ok_json(
        &get_as(&format!("{base}/api/v1/status/flags"), None),
        "flags",
    );
    assert!(j["data"].is_object());

    // Another tenant sees nothing of this.
    let j = ok_json(
        &get_as(
            &format!(
                "{base}/api/v1/query?query=http_requests_total&time={}",
                secs(d.t1)
            ),
            Some("other"),
        ),
        "other tenant",
    );
    assert_eq!(j["data"]["result"], serde_json::json!([]));
}

/// The same data in Cairn and a real Prometheus: the query answers must be
/// the same bytes (values, timestamps with fractions, NaN/Inf spellings,
/// scalar/string/vector/matrix shapes). Skipped without a Prometheus binary.
#[test]
fn json_is_byte_identical_to_prometheus() {
    let Some(bin) = prometheus_bin() else {
        eprintln!("\n!!!!!! SKIPPING json_is_byte_identical_to_prometheus: no prometheus binary (apt-get install prometheus) !!!!!!\n");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (_prom_guard, prom) = spawn_prometheus(&bin, dir.path());
    let s = TestServer::spawn(ServerOpts::default());
    let cairn = s.url();
    let (d, mut req) = data_request();
    let (st, body) = remote_write(&cairn, None, &req);
    assert_eq!(st, 204, "cairn: {body}");
    // Prometheus 2.x without exemplar storage: send samples only.
    req.metadata.clear();
    for ts in &mut req.timeseries {
        ts.exemplars.clear();
    }
    let (st, body) = remote_write(&prom, None, &req);
    assert_eq!(st, 204, "prometheus: {body}");

    // Off the sample grid, with a millisecond fraction.
    let t = secs(d.t1 - 7_500 + 1);
    let mut urls: Vec<String> = [
        "1+1",
        "0/0",
        "-1/0",
        "\"hi\"",
        "http_requests_total",
        "temperature_celsius / 0",
        "-temperature_celsius / 0",
        "temperature_celsius * 1e21",
        "temperature_celsius / 3e9",
        "sum by (job) (http_requests_total)",
        "rate(http_requests_total[1m])",
        "http_requests_total{instance=\"a\"}[1m]",
        "nothing_here",
    ]
    .iter()
    .map(|q| format!("/api/v1/query?query={}&time={t}", enc(q)))
    .collect();
    let (start, end) = (secs(d.t0 + 250), secs(d.t1));
    for q in [
        "rate(http_requests_total[1m])",
        "temperature_celsius",
        "http_requests_total / 7",
    ] {
        urls.push(format!(
            "/api/v1/query_range?query={}&start={start}&end={end}&step=15",
            enc(q)
        ));
    }
    let mut checked = 0;
    for u in &urls {
        let a = get_as(&format!("{cairn}{u}"), None);
        let b = get_as(&format!("{prom}{u}"), None);
        assert_eq!(
            a.status,
            b.status,
            "{u}: cairn {} / prometheus {}",
            a.text(),
            b.text()
        );
        assert_eq!(
            a.text(),
            b.text(),
            "{u}: bodies differ (left cairn, right prometheus)"
        );
        checked += 1;
    }
    // Parse errors: the same status, errorType and message, position
    // included (the keys are in another order: compared as JSON).
    for u in [
        "1+",
        "up{job=}",
        "sum by (job) up",
        "up up",
        "a + on b",
        "up{a=\"b\" c=\"d\"}",
        "sum without(a,,)(x)",
    ]
    .iter()
    .map(|q| format!("/api/v1/query?query={}&time={t}", enc(q)))
    .chain([
        format!(
            "/api/v1/query_range?query={}&start={start}&end={end}&step=15",
            enc("1+")
        ),
        format!(
            "/api/v1/query_range?query={}&start={start}&end={end}&step=15",
            enc("up[5m]")
        ),
        format!("/api/v1/format_query?query={}", enc("up{job=}")),
        format!("/api/v1/query_exemplars?query={}", enc("sum by (job) up")),
    ]) {
        let a = get_as(&format!("{cairn}{u}"), None);
        let b = get_as(&format!("{prom}{u}"), None);
        assert_eq!(
            (a.status, a.json()),
            (b.status, b.json()),
            "{u}: left cairn, right prometheus"
        );
        checked += 1;
    }
    eprintln!("json_is_byte_identical_to_prometheus: {checked} answers identical");
}

#[test]
fn query_errors_have_prometheus_codes() {
    let s = TestServer::spawn(ServerOpts::default());
    let base = s.url();
    let d = load(&base, None);
    let t = secs(d.t1);
    let q = |query: &str, extra: &str| {
        get_as(
            &format!("{base}/api/v1/query?query={}&time={t}{extra}", enc(query)),
            None,
        )
    };
    let msg = assert_api_error(&q("sum(", ""), 400, "bad_data", "parse error");
    assert!(msg.contains("parenthesis"), "{msg}");
    assert_api_error(
        &get_as(
            &format!("{base}/api/v1/query?query=up&time=yesterday"),
            None,
        ),
        400,
        "bad_data",
        "bad time",
    );
    assert_api_error(&q("up", "&timeout=soon"), 400, "bad_data", "bad timeout");
    assert_api_error(&q("up", "&limit=-3"), 400, "bad_data", "bad limit");
    // Many-to-many matching is an execution error (422).
    let msg = assert_api_error(
        &q("http_requests_total + on(job) http_requests_total", ""),
        422,
        "execution",
        "many-to-many",
    );
    assert!(msg.contains("many-to-many"), "{msg}");

    let qr = |params: &str| {
        post_form(
            &format!("{base}/api/v1/query_range"),
            None,
            &format!("query=http_requests_total&{params}"),
        )
    };
    let msg = assert_api_error(
        &qr(&format!("start={t}&end={t}&step=abc")),
        400,
        "bad_data",
        "bad step",
    );
    assert!(msg.contains("step"), "{msg}");
    let msg = assert_api_error(
        &qr(&format!("start={t}&end={t}&step=0")),
        400,
        "bad_data",
        "zero step",
    );
    assert!(msg.contains("zero or negative"), "{msg}");
    let msg = assert_api_error(
        &qr(&format!("start={}&end={t}&step=1", t - 86_400.0)),
        400,
        "bad_data",
        "too many points",
    );
    assert_eq!(
        msg,
        "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)"
    );
    assert_api_error(
        &qr(&format!("start={t}&end={}&step=15", t - 60.0)),
        400,
        "bad_data",
        "end before start",
    );
    assert_api_error(
        &qr(&format!("end={t}&step=15")),
        400,
        "bad_data",
        "no start",
    );
    // `step` as a duration and RFC 3339 bounds are accepted.
    let r = qr(&format!(
        "start={}&end={}&step=1m",
        enc(&rfc3339(d.t0)),
        enc(&rfc3339(d.t1))
    ));
    let j = ok_json(&r, "duration step");
    assert_eq!(
        j["data"]["result"][0]["values"].as_array().unwrap().len(),
        6,
        "{j}"
    );
    // Exemplars and format_query reject bad PromQL the same way.
    assert_api_error(
        &get_as(
            &format!("{base}/api/v1/query_exemplars?query={}", enc("rate(")),
            None,
        ),
        400,
        "bad_data",
        "exemplars parse error",
    );
    assert_api_error(
        &get_as(
            &format!("{base}/api/v1/format_query?query={}", enc("a +")),
            None,
        ),
        400,
        "bad_data",
        "format_query parse error",
    );
    assert_api_error(
        &get_as(&format!("{base}/api/v1/metadata?limit=x"), None),
        400,
        "bad_data",
        "metadata limit",
    );
}

// ------------------------------------------------------------ remote read

fn matcher(kind: i32, name: &str, value: &str) -> prompb::LabelMatcher {
    prompb::LabelMatcher {
        r#type: kind,
        name: name.into(),
        value: value.into(),
    }
}

fn remote_read(base: &str, tenant: Option<&str>, req: &prompb::ReadRequest) -> Response {
    let body = snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .expect("snappy");
    remote_read_raw(base, tenant, &body)
}

fn remote_read_raw(base: &str, tenant: Option<&str>, body: &[u8]) -> Response {
    let mut h = vec![
        ("Content-Type", "application/x-protobuf"),
        ("Content-Encoding", "snappy"),
        ("X-Prometheus-Remote-Read-Version", "0.1.0"),
    ];
    if let Some(t) = tenant {
        h.push(("X-Scope-OrgID", t));
    }
    post(&format!("{base}/api/v1/read"), &h, body).expect("POST /api/v1/read")
}

fn decode_read(r: &Response) -> prompb::ReadResponse {
    assert_eq!(r.status, 200, "remote read: {}", r.text());
    assert_eq!(r.header("content-type"), Some("application/x-protobuf"));
    assert_eq!(r.header("content-encoding"), Some("snappy"));
    let raw = snap::raw::Decoder::new()
        .decompress_vec(&r.body)
        .expect("snappy response");
    prompb::ReadResponse::decode(raw.as_slice()).expect("ReadResponse")
}

fn ts_labels(ts: &prompb::TimeSeries) -> Metric {
    ts.labels
        .iter()
        .map(|l| {
            (
                String::from_utf8(l.name.clone()).unwrap(),
                String::from_utf8(l.value.clone()).unwrap(),
            )
        })
        .collect()
}

#[test]
fn remote_read_round_trip_and_errors() {
    let s = TestServer::spawn(ServerOpts::default());
    let base = s.url();
    let d = load(&base, None);
    load(&base, Some("t2"));

    let req = prompb::ReadRequest {
        queries: vec![
            prompb::Query {
                start_timestamp_ms: d.t0,
                end_timestamp_ms: d.t1,
                matchers: vec![
                    matcher(0, "__name__", "http_requests_total"),
                    matcher(0, "instance", "a"),
                ],
                hints: None,
            },
            prompb::Query {
                // Only the last minute, both counters (regex), and not the gauge.
                start_timestamp_ms: d.t1 - 59_999,
                end_timestamp_ms: d.t1,
                matchers: vec![
                    matcher(2, "__name__", "http_.+"),
                    matcher(1, "instance", "nope"),
                ],
                hints: None,
            },
        ],
        accepted_response_types: vec![0],
    };
    let resp = decode_read(&remote_read(&base, None, &req));
    assert_eq!(resp.results.len(), 2);
    let q0 = &resp.results[0].timeseries;
    assert_eq!(q0.len(), 1);
    assert_eq!(
        ts_labels(&q0[0]),
        metric(&[
            ("__name__", "http_requests_total"),
            ("instance", "a"),
            ("job", "api")
        ])
    );
    let want: Vec<(i64, f64)> = (0..21)
        .map(|i| (d.t0 + i * 15_000, i as f64 * 10.0))
        .collect();
    let got: Vec<(i64, f64)> = q0[0]
        .samples
        .iter()
        .map(|s| (s.timestamp, s.value))
        .collect();
    assert_eq!(got, want);
    let q1 = &resp.results[1].timeseries;
    assert_eq!(q1.len(), 2, "{q1:?}");
    for ts in q1 {
        assert_eq!(ts.samples.len(), 4, "last minute: {ts:?}");
        assert_eq!(ts_labels(ts)["__name__"], "http_requests_total");
    }

    // Tenants are isolated; an unknown tenant reads nothing.
    let resp = decode_read(&remote_read(&base, Some("t2"), &req));
    assert_eq!(resp.results[0].timeseries.len(), 1);
    let resp = decode_read(&remote_read(&base, Some("nobody"), &req));
    assert!(resp.results.iter().all(|r| r.timeseries.is_empty()));

    // An empty accepted list means SAMPLES (remote read 0.1.0 clients).
    let mut plain = req.clone();
    plain.accepted_response_types.clear();
    assert_eq!(
        decode_read(&remote_read(&base, None, &plain)).results.len(),
        2
    );

    // Errors: plain-text 400s that say what is wrong.
    let r = remote_read_raw(&base, None, b"this is not snappy");
    assert_eq!(r.status, 400, "{}", r.text());
    let junk = snap::raw::Encoder::new().compress_vec(&[0xff; 32]).unwrap();
    let r = remote_read_raw(&base, None, &junk);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("ReadRequest"), "{}", r.text());
    let mut chunks = req.clone();
    chunks.accepted_response_types = vec![1];
    let r = remote_read(&base, None, &chunks);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("SAMPLES"), "{}", r.text());
    let mut bad_re = req.clone();
    bad_re.queries[0]
        .matchers
        .push(matcher(2, "job", "(unclosed"));
    let r = remote_read(&base, None, &bad_re);
    assert_eq!(r.status, 400, "{}", r.text());
    let mut empty = req;
    empty.queries[0].matchers = vec![matcher(2, "job", ".*")];
    let r = remote_read(&base, None, &empty);
    assert_eq!(r.status, 400, "{}", r.text());
}

/// The series of a range query's matrix: labels text → (t s, value).
fn matrix(j: &Value) -> std::collections::BTreeMap<String, Vec<(f64, f64)>> {
    j["data"]["result"]
        .as_array()
        .unwrap_or_else(|| panic!("no matrix: {j}"))
        .iter()
        .map(|s| {
            let pts = s["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    let v: f64 = p[1].as_str().unwrap().parse().unwrap();
                    (p[0].as_f64().unwrap(), v)
                })
                .collect();
            (s["metric"].to_string(), pts)
        })
        .collect()
}

#[test]
fn downsampled_namespaces_answer_range_functions_from_their_rollups() {
    const M: i64 = 60_000;
    let s =
        TestServer::spawn(ServerOpts::default().config("storage:\n  namespaces: [\"1m:30d\"]\n"));
    let base = s.url();
    let now = now_ms();
    let t0 = now - now.rem_euclid(5 * M) - 180 * M;
    // Scrapes every 15 s, off the window edges by 1 s: a steady counter
    // (+3 per scrape) reset once, and a jittery gauge.
    let mut rng = Rng::new(7);
    let (mut counter, mut gauge) = (Vec::new(), Vec::new());
    let mut c = 0.0;
    for k in 0..(175 * 4) {
        let t = t0 + 1000 + k * 15_000;
        c = if k == 300 { 1.0 } else { c + 3.0 };
        counter.push((t, c));
        gauge.push((t, rng.range(0, 1000) as f64 / 10.0));
    }
    // A classic histogram: cumulative buckets of latencies observed at
    // random, each bucket a counter.
    let les = ["0.1", "0.5", "1", "+Inf"];
    let mut buckets: Vec<Vec<(i64, f64)>> = vec![Vec::new(); les.len()];
    let mut cum = [0.0; 4];
    for k in 0..(175 * 4) {
        let t = t0 + 1000 + k * 15_000;
        for _ in 0..rng.range(5, 20) {
            let x = rng.range(0, 1500) as f64 / 1000.0;
            for (i, le) in les.iter().enumerate() {
                if *le == "+Inf" || x <= le.parse::<f64>().unwrap() {
                    cum[i] += 1.0;
                }
            }
        }
        for i in 0..les.len() {
            buckets[i].push((t, cum[i]));
        }
    }
    let mut ts = vec![
        series(&[("__name__", "req_total"), ("job", "a")], &counter),
        series(&[("__name__", "temp"), ("job", "a")], &gauge),
    ];
    for (le, b) in les.iter().zip(&buckets) {
        ts.push(series(
            &[("__name__", "lat_bucket"), ("job", "a"), ("le", le)],
            b,
        ));
    }
    let req = write_request(ts);
    assert_eq!(remote_write(&base, None, &req).0, 204);
    assert_eq!(flush(&base).unwrap().status, 200);

    let (start, end) = (secs(t0 + 30 * M), secs(t0 + 150 * M));
    let q = |query: &str, res: &str| {
        let url = format!(
            "{base}/api/v1/query_range?query={}&start={start}&end={end}&step=300&max_source_resolution={res}",
            enc(query)
        );
        let r = get_as(&url, None);
        let j = ok_json(&r, query);
        (r.header("x-cairn-resolution").map(str::to_string), j)
    };
    for query in [
        "sum_over_time(temp[10m])",
        "count_over_time(temp[10m])",
        "max_over_time(temp[10m])",
        "min_over_time(temp[30m])",
        "avg_over_time(temp[10m])",
        "last_over_time(temp[10m])",
        "resets(req_total[30m])",
    ] {
        let (res, j) = q(query, "auto");
        assert_eq!(res.as_deref(), Some("1m"), "{query}: {j}");
        assert!(
            j["infos"].to_string().contains("resolution 1m"),
            "{query}: {j}"
        );
        let (raw_res, raw) = q(query, "raw");
        assert_eq!(raw_res.as_deref(), Some("raw"), "{query}");
        let (a, b) = (matrix(&j), matrix(&raw));
        assert_eq!(a.len(), 1, "{query}: {j}");
        assert_eq!(
            a.keys().collect::<Vec<_>>(),
            b.keys().collect::<Vec<_>>(),
            "{query}"
        );
        for (k, pts) in &a {
            assert_eq!(pts.len(), b[k].len(), "{query}: {j} vs {raw}");
            for (x, y) in pts.iter().zip(&b[k]) {
                assert_eq!(x.0, y.0, "{query}");
                let tol = 1e-9 * y.1.abs().max(1.0);
                assert!(
                    (x.1 - y.1).abs() <= tol,
                    "{query} at {}: {} vs raw {}",
                    x.0,
                    x.1,
                    y.1
                );
            }
        }
    }
    // Counter rates and increases (through the reset) and a quantile of
    // bucket increases, within 1 %.
    for query in [
        "rate(req_total[20m])",
        "increase(req_total[20m])",
        "histogram_quantile(0.9, sum by (le) (increase(lat_bucket[30m])))",
    ] {
        let (res, j) = q(query, "auto");
        assert_eq!(res.as_deref(), Some("1m"), "{query}");
        let (a, b) = (matrix(&j), matrix(&q(query, "raw").1));
        let (x, y) = (a.values().next().unwrap(), b.values().next().unwrap());
        assert_eq!(x.len(), y.len(), "{query}");
        for (x, y) in x.iter().zip(y) {
            assert!(
                (x.1 - y.1).abs() <= 0.01 * y.1.abs(),
                "{query} at {}: {} vs raw {}",
                x.0,
                x.1,
                y.1
            );
        }
    }
    // A range ending now: its last steps lie past what is downsampled yet
    // and are read raw — the whole answer equals raw's.
    let now_s = secs(now_ms());
    let tail = |res: &str| {
        let url = format!(
            "{base}/api/v1/query_range?query={}&start={}&end={now_s}&step=60&max_source_resolution={res}",
            enc("max_over_time(temp[10m])"),
            secs(t0 + 100 * M)
        );
        let r = get_as(&url, None);
        (
            r.header("x-cairn-resolution").map(str::to_string),
            matrix(&ok_json(&r, "tail")),
        )
    };
    let (res, a) = tail("auto");
    assert_eq!(res.as_deref(), Some("1m"));
    assert_eq!(a, tail("raw").1, "a range ending now, rollups then raw");
    // An average over several metrics would collide in Σsum ÷ Σcount: raw.
    assert_eq!(
        q(r#"sum(avg_over_time({job="a"}[10m]))"#, "auto")
            .0
            .as_deref(),
        Some("raw")
    );
    // A step finer than the resolution, or a range under 2R, reads raw;
    // a bad max_source_resolution is a 400 naming it.
    let url = format!(
        "{base}/api/v1/query_range?query={}&start={start}&end={end}&step=30",
        enc("sum_over_time(temp[10m])")
    );
    assert_eq!(get_as(&url, None).header("x-cairn-resolution"), Some("raw"));
    assert_eq!(q("rate(req_total[1m])", "auto").0.as_deref(), Some("raw"));
    let r = get_as(
        &format!("{base}/api/v1/query?query=temp&max_source_resolution=fast"),
        None,
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("max_source_resolution"), "{}", r.text());
    // A namespace the node does not hold is the query's fault: 400 naming it.
    let r = get_as(
        &format!(
            "{base}/api/v1/query?query={}",
            enc(r#"temp{__namespace__="agg_9m_1d"}"#)
        ),
        None,
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("agg_9m_1d"), "{}", r.text());
}

/// Instant queries whose lookback reaches past raw retention read the
/// rollups (the `last` rollup for a bare selector, within the lookback) and
/// answer as raw does: raw retention 1h, data from 55 minutes ago, queries
/// at 51 minutes ago with a 10m lookback.
#[test]
fn instant_queries_past_raw_retention_see_the_rollups_within_lookback() {
    const M: i64 = 60_000;
    let s = TestServer::spawn(
        ServerOpts::default()
            .config("storage:\n  retention: 1h\n  block-size: 1h\n  namespaces: [\"1m:30d\"]\n"),
    );
    let base = s.url();
    let now = now_ms();
    let t0 = now - now.rem_euclid(M) - 55 * M;
    let mut rng = Rng::new(11);
    let ts: Vec<TimeSeries> = ["a", "b", "c"]
        .iter()
        .map(|job| {
            let samples: Vec<(i64, f64)> = (0..200)
                .map(|k| (t0 + 1000 + k * 15_000, rng.range(0, 1000) as f64 / 8.0))
                .collect();
            series(&[("__name__", "temp"), ("job", job)], &samples)
        })
        .collect();
    assert_eq!(remote_write(&base, None, &write_request(ts)).0, 204);
    assert_eq!(flush(&base).unwrap().status, 200);
    let at = t0 + 4 * M;
    let instant = |q: &str, res: &str| {
        let url = format!(
            "{base}/api/v1/query?query={}&time={}&lookback_delta=10m&max_source_resolution={res}",
            enc(q),
            secs(at)
        );
        let r = get_as(&url, None);
        let j = ok_json(&r, q);
        let mut v: Vec<String> = j["data"]["result"]
            .as_array()
            .unwrap_or_else(|| panic!("{q}: {j}"))
            .iter()
            .map(|x| x.to_string())
            .collect();
        v.sort();
        (r.header("x-cairn-resolution").map(str::to_string), v)
    };
    for q in [
        "temp",
        "sum(temp)",
        "max_over_time(temp[4m])",
        "count_over_time(temp[4m])",
    ] {
        let (res, coarse) = instant(q, "auto");
        assert_eq!(res.as_deref(), Some("1m"), "{q}: raw no longer reaches");
        let (raw_res, raw) = instant(q, "raw");
        assert_eq!(raw_res.as_deref(), Some("raw"));
        assert_eq!(raw.len(), if q.starts_with("sum") { 1 } else { 3 }, "{q}");
        assert_eq!(coarse, raw, "{q}");
    }
}
