//! Hostile-input suite: attacks on a real `cairn serve` over loopback (issue
//! "Hardening"). Each attack must get a 4xx/503 naming the limit (or be
//! handled as Prometheus handles it), the server must stay up with its RSS
//! under a stated bound, and a canary tenant written beforehand must read back
//! intact. Areas live in `hostile/*.rs`; shared helpers are here.

use cairn_e2e::*;

#[path = "hostile/http.rs"]
mod http;
#[path = "hostile/ingest.rs"]
mod ingest;
#[path = "hostile/query.rs"]
mod query;
#[path = "hostile/storage.rs"]
mod storage;

impl std::fmt::Debug for Canary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Canary").finish_non_exhaustive()
    }
}

/// A tenant written before an attack and checked after it.
pub struct Canary {
    pub tenant: &'static str,
    pub want: Exported,
    t0: i64,
}

impl Canary {
    /// Writes 3 series × 20 samples (15 s apart, ending now) to tenant `canary`.
    pub fn write(base: &str) -> Canary {
        let t0 = now_ms() - 20 * 15_000;
        let mut want = Exported::new();
        let mut ts = Vec::new();
        for i in 0..3 {
            let name = format!("canary_{i}");
            let samples: Vec<(i64, f64)> = (0..20)
                .map(|k| (t0 + k * 15_000, (i * 100 + k) as f64))
                .collect();
            want.insert(
                [("__name__", name.as_str()), ("job", "canary")]
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                samples.clone(),
            );
            ts.push(series(&[("__name__", &name), ("job", "canary")], &samples));
        }
        let (code, body) = remote_write(base, Some("canary"), &write_request(ts));
        assert_eq!(code, 204, "canary write: {body}");
        Canary {
            tenant: "canary",
            want,
            t0,
        }
    }

    /// Asserts the canary's samples read back bit-exactly.
    pub fn check(&self, base: &str, ctx: &str) {
        let got = export(
            base,
            Some(self.tenant),
            r#"{job="canary"}"#,
            (self.t0 - 1000) as f64 / 1000.0,
            (now_ms() + 60_000) as f64 / 1000.0,
        );
        assert_eq!(got, self.want, "canary changed after {ctx}");
    }
}

/// Resident set size of `pid` in MiB (from /proc/PID/status VmRSS).
pub fn rss_mib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib / 1024)
}

/// Peak resident set size of `pid` in MiB (VmHWM).
pub fn peak_rss_mib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib / 1024)
}

/// Asserts the server answers `/-/healthy` (it stayed up).
pub fn assert_up(base: &str, ctx: &str) {
    let r = get(&format!("{base}/-/healthy"))
        .unwrap_or_else(|e| panic!("server down after {ctx}: {e}"));
    assert_eq!(r.status, 200, "healthy after {ctx}");
}
