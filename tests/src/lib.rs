//! `cairn-e2e`: harness for the end-to-end tests in `tests/tests/e2e.rs`.
//!
//! Owns: starting the real `cairn` binary (`TestServer`) on `127.0.0.1:0` in a
//! temp data dir, killing/restarting it, a tiny blocking HTTP/1.1 client over
//! `std::net::TcpStream` (no HTTP crate: the tests need to send malformed
//! requests byte for byte and the client must stay cheap to compile), and
//! helpers for remote_write and the JSON read endpoints.
//!
//! Must never depend on: any Cairn crate but `cairn-proto` — the tests speak to
//! the server only over the wire, like a real client.
//!
//! The binary is found via `CAIRN_BIN`, else `$CARGO_TARGET_DIR/debug/cairn`,
//! else `$HOME/.cache/cairn-target/debug/cairn`.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use cairn_proto::prompb::{Label, Sample, TimeSeries, WriteRequest};
use prost::Message;

/// How long a server gets to write `http.addr` and turn ready.
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// Options for [`TestServer::spawn`].
#[derive(Clone, Debug, Default)]
pub struct ServerOpts {
    /// Extra environment variables (`CAIRN_INGEST_MAX_BODY_SIZE`, …).
    pub env: Vec<(String, String)>,
    /// YAML text written to a temp file and passed as `--config`.
    pub config_yaml: Option<String>,
}

impl ServerOpts {
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.to_string(), v.to_string()));
        self
    }
    pub fn config(mut self, yaml: &str) -> Self {
        self.config_yaml = Some(yaml.to_string());
        self
    }
}

/// Path of the `cairn` binary under test.
pub fn cairn_bin() -> PathBuf {
    if let Ok(p) = std::env::var("CAIRN_BIN") {
        return PathBuf::from(p);
    }
    let mut candidates = Vec::new();
    if let Ok(t) = std::env::var("CARGO_TARGET_DIR") {
        candidates.push(PathBuf::from(t).join("debug/cairn"));
    }
    if let Ok(h) = std::env::var("HOME") {
        candidates.push(PathBuf::from(h).join(".cache/cairn-target/debug/cairn"));
    }
    for c in &candidates {
        if c.exists() {
            return c.clone();
        }
    }
    panic!(
        "cairn binary not found (set CAIRN_BIN or build it: `cargo build -p cairn`); looked at {candidates:?}"
    );
}

impl std::fmt::Debug for TestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestServer").finish_non_exhaustive()
    }
}

/// A running (or stopped) `cairn serve` over one data dir that survives
/// restarts. Dropping it SIGKILLs the process; on a panicking thread the temp
/// dir is kept and its path printed.
pub struct TestServer {
    root: Option<tempfile::TempDir>,
    data_dir: PathBuf,
    log_path: PathBuf,
    config_path: Option<PathBuf>,
    opts: ServerOpts,
    child: Option<Child>,
    addr: String,
    starts: u32,
}

impl TestServer {
    /// Starts a server in a fresh temp dir and waits until `/-/ready` is 200.
    pub fn spawn(opts: ServerOpts) -> Self {
        let mut s = Self::spawn_inner(opts);
        s.start();
        s
    }

    /// Starts a server like [`TestServer::spawn`] without waiting for it to
    /// turn ready (a cluster member waits for its peers): call
    /// [`TestServer::wait_ready`].
    pub fn spawn_nowait(opts: ServerOpts) -> Self {
        let mut s = Self::spawn_inner(opts);
        s.launch();
        s
    }

    fn spawn_inner(opts: ServerOpts) -> Self {
        let root = tempfile::Builder::new()
            .prefix("cairn-e2e-")
            .tempdir()
            .expect("creating temp dir");
        let data_dir = root.path().join("data");
        fs::create_dir_all(&data_dir).expect("creating data dir");
        let log_path = root.path().join("server.log");
        let config_path = opts.config_yaml.as_ref().map(|yaml| {
            let p = root.path().join("cairn.yaml");
            fs::write(&p, yaml).expect("writing config");
            p
        });
        TestServer {
            root: Some(root),
            data_dir,
            log_path,
            config_path,
            opts,
            child: None,
            addr: String::new(),
            starts: 0,
        }
    }

    fn start(&mut self) {
        self.launch();
        self.wait_ready();
    }

    /// Starts the process again over the same data dir without waiting
    /// (SIGKILLing a running one first).
    pub fn relaunch(&mut self) {
        self.kill9();
        self.launch();
    }

    fn launch(&mut self) {
        assert!(self.child.is_none(), "start() while the server is running");
        self.starts += 1;
        let addr_file = self.data_dir.join("http.addr");
        // A stale address from the previous run must not be mistaken for ours.
        let _ = fs::remove_file(&addr_file);
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("opening server log");
        writeln!(log, "==== cairn-e2e: start #{} ====", self.starts).ok();
        let mut cmd = Command::new(cairn_bin());
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--http-listen")
            .arg("127.0.0.1:0");
        if let Some(c) = &self.config_path {
            cmd.arg("--config").arg(c);
        }
        // Every test server knows the test admin token (a test may set another).
        cmd.env("CAIRN_ADMIN_TOKEN", ADMIN_TOKEN);
        for (k, v) in &self.opts.env {
            cmd.env(k, v);
        }
        cmd.env_remove("CAIRN_DATA_DIR")
            .env_remove("CAIRN_HTTP_LISTEN")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log fd"))
            .stderr(log);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {:?}: {e}", cairn_bin()));
        self.child = Some(child);
    }

    /// Waits for the address file, then for `/-/ready` to answer 200.
    pub fn wait_ready(&mut self) {
        let addr_file = self.data_dir.join("http.addr");
        let deadline = Instant::now() + READY_TIMEOUT;
        // 1. Wait for the address file.
        self.addr = loop {
            if let Ok(s) = fs::read_to_string(&addr_file) {
                let s = s.trim().to_string();
                if !s.is_empty() {
                    break s;
                }
            }
            self.check_alive("waiting for http.addr");
            if Instant::now() > deadline {
                self.fail_start(&format!("{} never appeared", addr_file.display()));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // 2. Wait for readiness (recovery done).
        let ready_url = format!("{}/-/ready", self.url());
        let mut last: String;
        loop {
            match get(&ready_url) {
                Ok(r) if r.status == 200 => break,
                Ok(r) => last = format!("status {}: {}", r.status, r.text()),
                Err(e) => last = format!("error: {e}"),
            }
            self.check_alive("waiting for /-/ready");
            if Instant::now() > deadline {
                self.fail_start(&format!(
                    "/-/ready not 200 after {READY_TIMEOUT:?} (last: {last})"
                ));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn check_alive(&mut self, what: &str) {
        let child = self.child.as_mut().expect("child");
        if let Ok(Some(status)) = child.try_wait() {
            self.child = None;
            let tail = self.log_tail();
            panic!(
                "cairn exited with {status} while {what}; data dir {}\n--- server log tail ---\n{tail}",
                self.data_dir.display()
            );
        }
    }

    fn fail_start(&mut self, why: &str) -> ! {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let tail = self.log_tail();
        panic!(
            "cairn did not start: {why}; data dir {}\n--- server log tail ---\n{tail}",
            self.data_dir.display()
        );
    }

    /// Last ~6 KiB of the server's combined stdout/stderr (all runs).
    pub fn log_tail(&self) -> String {
        let Ok(mut f) = File::open(&self.log_path) else {
            return "(no log)".into();
        };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = f.seek(SeekFrom::Start(len.saturating_sub(6 * 1024)));
        let mut buf = Vec::new();
        let _ = f.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// The server's whole combined stdout/stderr (all runs).
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// `http://127.0.0.1:PORT` of the current run (changes on restart).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().expect("SIGKILL cairn");
            c.wait().expect("reaping cairn");
        }
    }

    /// SIGTERM and wait (at most 60 s) for the exit status.
    pub fn sigterm(&mut self) -> ExitStatus {
        let mut c = self.child.take().expect("sigterm: server not running");
        let pid = c.id() as libc::pid_t;
        // SAFETY: plain kill(2) on the PID of our own, not yet reaped, child.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill(SIGTERM) failed");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(st) = c.try_wait().expect("try_wait") {
                return st;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                panic!(
                    "cairn did not exit within 60 s of SIGTERM\n--- server log tail ---\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sets (Some) or removes (None) an environment variable of the server
    /// for its next start (e.g. `CAIRN_FAILPOINT`).
    pub fn set_env(&mut self, k: &str, v: Option<&str>) {
        self.opts.env.retain(|(name, _)| name != k);
        if let Some(v) = v {
            self.opts.env.push((k.to_string(), v.to_string()));
        }
    }

    /// Waits up to `timeout` for the server process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    self.child = None;
                    return Some(st);
                }
            } else {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Starts the server again over the same data dir (after kill9/sigterm,
    /// or SIGKILLing a still running one first) and waits until ready.
    pub fn restart(&mut self) {
        self.kill9();
        self.start();
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            if let Some(root) = self.root.take() {
                let p = root.keep();
                eprintln!("cairn-e2e: kept test dir {} for inspection", p.display());
            }
        }
    }
}

/// A child process (e.g. Prometheus) killed by PID on drop.
#[derive(Debug)]
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

// ---------------------------------------------------------------- HTTP client

/// A fully read HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response (status {}) is not JSON: {e}: {}",
                self.status,
                self.text()
            )
        })
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn split_url(url: &str) -> (String, String) {
    let rest = url
        .strip_prefix("http://")
        .unwrap_or_else(|| panic!("only http:// URLs: {url}"));
    match rest.find('/') {
        Some(i) => (rest[..i].to_string(), rest[i..].to_string()),
        None => (rest.to_string(), "/".to_string()),
    }
}

/// One HTTP/1.1 request with `Connection: close`; reads the whole response.
/// Only loopback hosts are accepted.
pub fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<Response> {
    let (hostport, path) = split_url(url);
    let addr = hostport
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::other("no address"))?;
    assert!(
        addr.ip().is_loopback(),
        "e2e traffic must stay on loopback: {url}"
    );
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    stream.set_write_timeout(Some(Duration::from_secs(120)))?;
    stream.set_nodelay(true)?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" || method == "PUT" {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    let mut raw = Vec::new();
    if body.len() > 256 * 1024 {
        // The server may answer (413) and close before reading the whole body:
        // write from another thread and read the answer concurrently so the
        // response is not lost to an RST.
        let mut w = stream.try_clone()?;
        let owned = body.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = w.write_all(&owned);
        });
        let r = read_all_lenient(&mut stream, &mut raw);
        let _ = writer.join();
        r?;
    } else {
        stream.write_all(body)?;
        read_all_lenient(&mut stream, &mut raw)?;
    }
    parse_response(&raw)
}

/// Reads to EOF; a reset after some bytes arrived is treated as EOF.
fn read_all_lenient(s: &mut TcpStream, out: &mut Vec<u8>) -> io::Result<()> {
    let mut buf = [0u8; 64 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if !out.is_empty() && e.kind() == io::ErrorKind::ConnectionReset => {
                return Ok(())
            }
            Err(e) => return Err(e),
        }
    }
}

fn parse_response(raw: &[u8]) -> io::Result<Response> {
    let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, m.to_string());
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("incomplete response head"))?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| bad("non-UTF-8 head"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or_else(|| bad("no status line"))?;
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("bad status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let rest = &raw[end + 4..];
    let hdr = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.clone())
    };
    let body = if hdr("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        dechunk(rest).ok_or_else(|| bad("bad chunked body"))?
    } else if let Some(n) = hdr("content-length").and_then(|v| v.parse::<usize>().ok()) {
        if rest.len() < n {
            return Err(bad("truncated body"));
        }
        rest[..n].to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let nl = b.windows(2).position(|w| w == b"\r\n")?;
        let size_s = std::str::from_utf8(&b[..nl]).ok()?;
        let size = usize::from_str_radix(size_s.split(';').next()?.trim(), 16).ok()?;
        b = &b[nl + 2..];
        if size == 0 {
            return Some(out);
        }
        if b.len() < size + 2 {
            return None;
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

pub fn get(url: &str) -> io::Result<Response> {
    request("GET", url, &[], &[])
}

/// GET with an optional `X-Scope-OrgID`; panics on transport errors.
pub fn get_as(url: &str, tenant: Option<&str>) -> Response {
    let h: Vec<(&str, &str)> = tenant.map(|t| ("X-Scope-OrgID", t)).into_iter().collect();
    request("GET", url, &h, &[]).unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

pub fn post(url: &str, headers: &[(&str, &str)], body: &[u8]) -> io::Result<Response> {
    request("POST", url, headers, body)
}

/// The bootstrap admin token every test server starts with (`CAIRN_ADMIN_TOKEN`).
pub const ADMIN_TOKEN: &str = "e2e-admin-token-0123456789";
/// The header that carries it.
pub const ADMIN: &[(&str, &str)] = &[("Authorization", "Bearer e2e-admin-token-0123456789")];

/// `POST /admin/v1/flush` with the admin token.
pub fn flush(base: &str) -> io::Result<Response> {
    request("POST", &format!("{base}/admin/v1/flush"), ADMIN, &[])
}

/// Percent-encodes a query-string component.
pub fn enc(s: &str) -> String {
    let mut o = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                o.push(b as char)
            }
            _ => o.push_str(&format!("%{b:02X}")),
        }
    }
    o
}

// ------------------------------------------------------------ remote write

/// snappy(block) of the protobuf encoding.
pub fn encode_write(req: &WriteRequest) -> Vec<u8> {
    snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .expect("snappy compress")
}

/// POSTs a WriteRequest to `{base}/api/v1/write`; `Err` only on transport
/// errors (connection refused while the server is down, …).
pub fn try_remote_write(
    base: &str,
    tenant: Option<&str>,
    req: &WriteRequest,
) -> io::Result<(u16, String)> {
    try_remote_write_with(base, tenant, &[], req)
}

/// [`try_remote_write`] with extra headers (e.g. `X-Cairn-Write-Consistency`).
pub fn try_remote_write_with(
    base: &str,
    tenant: Option<&str>,
    extra: &[(&str, &str)],
    req: &WriteRequest,
) -> io::Result<(u16, String)> {
    let body = encode_write(req);
    let mut h = vec![
        ("Content-Encoding", "snappy"),
        ("Content-Type", "application/x-protobuf"),
        ("X-Prometheus-Remote-Write-Version", "0.1.0"),
    ];
    if let Some(t) = tenant {
        h.push(("X-Scope-OrgID", t));
    }
    h.extend_from_slice(extra);
    let r = post(&format!("{base}/api/v1/write"), &h, &body)?;
    Ok((r.status, r.text()))
}

/// Like [`try_remote_write`] but panics on transport errors.
pub fn remote_write(base: &str, tenant: Option<&str>, req: &WriteRequest) -> (u16, String) {
    try_remote_write(base, tenant, req).unwrap_or_else(|e| panic!("remote write to {base}: {e}"))
}

/// A series from `(name, value)` pairs, kept in the given order (not sorted).
pub fn series(labels: &[(&str, &str)], samples: &[(i64, f64)]) -> TimeSeries {
    TimeSeries {
        labels: labels.iter().map(|(n, v)| Label::new(n, v)).collect(),
        samples: samples
            .iter()
            .map(|&(timestamp, value)| Sample { value, timestamp })
            .collect(),
        ..Default::default()
    }
}

pub fn write_request(ts: Vec<TimeSeries>) -> WriteRequest {
    WriteRequest {
        timeseries: ts,
        ..Default::default()
    }
}

// ------------------------------------------------------------------- reads

pub type Metric = BTreeMap<String, String>;
/// Series → (timestamp ms, value) in the order the server returned them,
/// lines for the same series concatenated.
pub type Exported = BTreeMap<Metric, Vec<(i64, f64)>>;

pub fn metric(labels: &[(&str, &str)]) -> Metric {
    labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn json_f64(v: &serde_json::Value) -> f64 {
    match v {
        serde_json::Value::Number(n) => n.as_f64().expect("f64"),
        serde_json::Value::String(s) => s
            .parse::<f64>()
            .unwrap_or_else(|_| panic!("value string {s:?} is not a float")),
        other => panic!("unexpected value {other}"),
    }
}

/// `GET /api/v1/export`; start/end in Unix seconds.
pub fn export(base: &str, tenant: Option<&str>, matcher: &str, start: f64, end: f64) -> Exported {
    export_range(base, tenant, matcher, &start.to_string(), &end.to_string())
}

/// `GET /api/v1/export` with start/end passed verbatim (e.g. RFC 3339).
pub fn export_range(
    base: &str,
    tenant: Option<&str>,
    matcher: &str,
    start: &str,
    end: &str,
) -> Exported {
    let url = format!(
        "{base}/api/v1/export?match[]={}&start={}&end={}",
        enc(matcher),
        enc(start),
        enc(end)
    );
    let r = get_as(&url, tenant);
    assert_eq!(r.status, 200, "GET {url}: {}", r.text());
    let mut out = Exported::new();
    for line in r.text().lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("export line is not JSON ({e}): {line}"));
        let m: Metric = v["metric"]
            .as_object()
            .unwrap_or_else(|| panic!("export line without metric: {line}"))
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().expect("label value").to_string()))
            .collect();
        let vals = v["values"].as_array().expect("values array");
        let tss = v["timestamps"].as_array().expect("timestamps array");
        assert_eq!(
            vals.len(),
            tss.len(),
            "values/timestamps length differ: {line}"
        );
        let e = out.entry(m).or_default();
        for (t, x) in tss.iter().zip(vals) {
            e.push((t.as_i64().expect("integer timestamp"), json_f64(x)));
        }
    }
    out
}

/// `data` of a Prometheus-style JSON answer, asserting status 200/success.
pub fn api_data(base: &str, tenant: Option<&str>, path_and_query: &str) -> serde_json::Value {
    let url = format!("{base}{path_and_query}");
    let r = get_as(&url, tenant);
    assert_eq!(r.status, 200, "GET {url}: {}", r.text());
    let j = r.json();
    assert_eq!(j["status"], "success", "GET {url}: {j}");
    j["data"].clone()
}

/// The series of instant query `query` at `time_ms` on `base`, sent with
/// `headers`, each as its JSON text, sorted (equal text, equal floats).
pub fn result_series(
    base: &str,
    query: &str,
    time_ms: i64,
    headers: &[(&str, &str)],
) -> Vec<String> {
    let url = format!(
        "{base}/api/v1/query?query={}&time={}",
        enc(query),
        time_ms as f64 / 1000.0
    );
    let r = request("GET", &url, headers, &[]).unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert_eq!(r.status, 200, "GET {url}: {}", r.text());
    let j = r.json();
    let mut series: Vec<String> = j["data"]["result"]
        .as_array()
        .unwrap_or_else(|| panic!("GET {url}: {j}"))
        .iter()
        .map(|x| x.to_string())
        .collect();
    series.sort();
    series
}

/// Sorted strings from a JSON array of strings.
pub fn strings(v: &serde_json::Value) -> Vec<String> {
    let mut s: Vec<String> = v
        .as_array()
        .unwrap_or_else(|| panic!("expected array: {v}"))
        .iter()
        .map(|x| x.as_str().expect("string").to_string())
        .collect();
    s.sort();
    s
}

/// RFC 3339 (UTC, millisecond precision) of a Unix-ms timestamp.
pub fn rfc3339(ms: i64) -> String {
    let (days, rem) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let (h, mi, sec, milli) = (
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000,
    );
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{sec:02}.{milli:03}Z")
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after epoch")
        .as_millis() as i64
}

/// A free loopback TCP port (bind :0, read, release).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind :0");
    l.local_addr().expect("local addr").port()
}

/// splitmix64: a tiny seeded RNG so a failing run can be replayed by seed.
#[derive(Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `lo..hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo)
    }
}

// ----------------------------------------------------------------- prometheus

/// Path of a Prometheus binary (`PROMETHEUS_BIN`, else `/usr/bin/prometheus`)
/// if one exists.
pub fn prometheus_bin() -> Option<String> {
    let bin = std::env::var("PROMETHEUS_BIN").unwrap_or_else(|_| "/usr/bin/prometheus".into());
    Path::new(&bin).exists().then_some(bin)
}

/// Starts Prometheus with the remote-write receiver and no scrape targets on
/// a free loopback port in `dir`; returns the guard and its base URL once
/// `/-/ready` answers 200.
pub fn spawn_prometheus(bin: &str, dir: &Path) -> (ChildGuard, String) {
    spawn_prometheus_with(bin, dir, "global:\n  scrape_interval: 1m\n")
}

/// Like [`spawn_prometheus`], scraping `target` (`host:port`) every second
/// as job `cairn`.
pub fn spawn_prometheus_scraping(bin: &str, dir: &Path, target: &str) -> (ChildGuard, String) {
    let cfg = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: cairn\n    static_configs:\n      - targets: ['{target}']\n"
    );
    spawn_prometheus_with(bin, dir, &cfg)
}

/// Like [`spawn_prometheus`], with `cfg` as its whole prometheus.yml.
pub fn spawn_prometheus_with(bin: &str, dir: &Path, cfg: &str) -> (ChildGuard, String) {
    spawn_prometheus_on(bin, dir, cfg, free_port())
}

/// Like [`spawn_prometheus_with`], listening on `port` (a config that
/// scrapes Prometheus itself must know it).
pub fn spawn_prometheus_on(bin: &str, dir: &Path, cfg: &str, port: u16) -> (ChildGuard, String) {
    fs::create_dir_all(dir).expect("prometheus dir");
    let cfg_path = dir.join("prometheus.yml");
    fs::write(&cfg_path, cfg).expect("write prometheus.yml");
    let log_path = dir.join("prometheus.log");
    let log = File::create(&log_path).expect("prometheus log");
    let child = Command::new(bin)
        .arg(format!("--config.file={}", cfg_path.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--web.enable-remote-write-receiver")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("dup"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {bin}: {e}"));
    let mut guard = ChildGuard(child);
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !get(&format!("{url}/-/ready")).is_ok_and(|r| r.status == 200) {
        let log = || fs::read_to_string(&log_path).unwrap_or_default();
        if let Ok(Some(st)) = guard.0.try_wait() {
            panic!("prometheus exited ({st}):\n{}", log());
        }
        assert!(
            Instant::now() < deadline,
            "prometheus not ready:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (guard, url)
}

// ----------------------------------------------------------------- cluster

/// The `cluster:` section of member `i` (from 0) of a cluster whose gRPC
/// ports are `grpc`, with `extra` keys appended (indented yaml lines).
pub fn cluster_yaml(i: usize, grpc: &[u16], shards: u32, rf: usize, extra: &str) -> String {
    let mut y = format!("cluster:\n  node-id: node-{}\n  members:\n", i + 1);
    for (j, port) in grpc.iter().enumerate() {
        y.push_str(&format!(
            "    - {{ id: node-{}, http: \"127.0.0.1:{}\", grpc: \"127.0.0.1:{port}\" }}\n",
            j + 1,
            free_port()
        ));
    }
    y.push_str(&format!(
        "  shards: {shards}\n  replication-factor: {rf}\n  replica-timeout: 3s\n{extra}"
    ));
    y
}

/// `n` cairn processes forming one cluster on loopback, each with its own
/// data dir; started together (a member may wait for its peers).
pub fn spawn_cluster(n: usize, shards: u32, rf: usize, extra: &str) -> Vec<TestServer> {
    let grpc: Vec<u16> = (0..n).map(|_| free_port()).collect();
    let mut nodes: Vec<TestServer> = (0..n)
        .map(|i| {
            TestServer::spawn_nowait(
                ServerOpts::default()
                    .env("CAIRN_STORAGE_FSYNC", "always")
                    .config(&cluster_yaml(i, &grpc, shards, rf, extra)),
            )
        })
        .collect();
    for s in &mut nodes {
        s.wait_ready();
    }
    nodes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn parses_chunked_responses() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let r = parse_response(raw).expect("parse");
        assert_eq!((r.status, r.body.as_slice()), (200, &b"abcde"[..]));
    }
}
