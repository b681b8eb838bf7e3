//! The `process_*` metrics every Prometheus-instrumented server exposes
//! (CPU, memory, open files, start time), read from `/proc/self` on Linux
//! and left out elsewhere.

use std::fmt::Write as _;

/// Appends the process metrics in Prometheus text format.
pub(crate) fn render(out: &mut String) {
    #[cfg(target_os = "linux")]
    linux(out);
    #[cfg(not(target_os = "linux"))]
    let _ = out;
}

#[cfg(target_os = "linux")]
fn linux(out: &mut String) {
    // SAFETY: sysconf takes an integer and returns one; no memory is touched.
    #[allow(unsafe_code)]
    let (ticks, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK).max(1) as f64,
            libc::sysconf(libc::_SC_PAGESIZE).max(1) as f64,
        )
    };
    let mut put = |name: &str, kind: &str, help: &str, v: f64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
        );
    };
    // /proc/self/stat: fields after the parenthesised command name.
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        if let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) {
            let f: Vec<&str> = rest.split_whitespace().collect();
            let num = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok());
            // utime, stime (fields 14, 15 of stat; 11, 12 here), starttime
            // (22; 19 here), vsize (23; 20), rss pages (24; 21).
            if let (Some(u), Some(s)) = (num(11), num(12)) {
                put(
                    "process_cpu_seconds_total",
                    "counter",
                    "Total user and system CPU time spent in seconds.",
                    (u + s) / ticks,
                );
            }
            if let (Some(start), Some(boot)) = (num(19), boot_time()) {
                put(
                    "process_start_time_seconds",
                    "gauge",
                    "Start time of the process since unix epoch in seconds.",
                    boot + start / ticks,
                );
            }
            if let Some(v) = num(20) {
                put(
                    "process_virtual_memory_bytes",
                    "gauge",
                    "Virtual memory size in bytes.",
                    v,
                );
            }
            if let Some(r) = num(21) {
                put(
                    "process_resident_memory_bytes",
                    "gauge",
                    "Resident memory size in bytes.",
                    r * page,
                );
            }
        }
    }
    if let Ok(d) = std::fs::read_dir("/proc/self/fd") {
        put(
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            d.count() as f64,
        );
    }
    if let Ok(limits) = std::fs::read_to_string("/proc/self/limits") {
        let max = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .and_then(|l| l.split_whitespace().nth(3))
            .and_then(|v| v.parse::<f64>().ok());
        if let Some(m) = max {
            put(
                "process_max_fds",
                "gauge",
                "Maximum number of open file descriptors.",
                m,
            );
        }
    }
}

#[cfg(target_os = "linux")]
fn boot_time() -> Option<f64> {
    std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(target_os = "linux")]
    fn process_metrics_are_read() {
        let mut s = String::new();
        super::render(&mut s);
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_max_fds",
            "process_start_time_seconds",
        ] {
            let v: f64 = s
                .lines()
                .find_map(|l| l.strip_prefix(name).and_then(|r| r.trim().parse().ok()))
                .unwrap_or_else(|| panic!("{name} missing in {s}"));
            // A fresh test process may not have used a clock tick of CPU yet.
            let min_ok = if name == "process_cpu_seconds_total" {
                v >= 0.0
            } else {
                v > 0.0
            };
            assert!(min_ok, "{name} = {v}");
        }
    }
}
