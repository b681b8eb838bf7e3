//! The `process_*` metrics every Prometheus-instrumented server exposes
//! (CPU, memory, open files, start time), read from `/proc/self` on Linux
//! at each scrape through a `prometheus-client` collector, and left out
//! elsewhere.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
#[cfg(target_os = "linux")]
use prometheus_client::registry::Unit;

/// Reads the process's figures at each scrape.
#[derive(Debug)]
pub(crate) struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        #[cfg(target_os = "linux")]
        return linux(enc);
        #[cfg(not(target_os = "linux"))]
        {
            let _ = enc;
            Ok(())
        }
    }
}

/// One gauge, `name` + `_` + `unit` if there is one.
#[cfg(target_os = "linux")]
fn gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&prometheus_client::registry::Unit>,
    v: f64,
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(v);
    g.encode(enc.encode_descriptor(name, help, unit, g.metric_type())?)
}

#[cfg(target_os = "linux")]
fn linux(mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
    // SAFETY: sysconf takes an integer and returns one; no memory is touched.
    #[allow(unsafe_code)]
    let (ticks, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK).max(1) as f64,
            libc::sysconf(libc::_SC_PAGESIZE).max(1) as f64,
        )
    };
    let seconds = Some(&Unit::Seconds);
    let bytes = Some(&Unit::Bytes);
    // /proc/self/stat: fields after the parenthesised command name.
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        if let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) {
            let f: Vec<&str> = rest.split_whitespace().collect();
            let num = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok());
            // utime, stime (fields 14, 15 of stat; 11, 12 here), starttime
            // (22; 19 here), vsize (23; 20), rss pages (24; 21).
            if let (Some(u), Some(s)) = (num(11), num(12)) {
                let c = ConstCounter::new((u + s) / ticks);
                c.encode(enc.encode_descriptor(
                    "process_cpu",
                    "Total user and system CPU time spent in seconds.",
                    seconds,
                    c.metric_type(),
                )?)?;
            }
            if let (Some(start), Some(boot)) = (num(19), boot_time()) {
                gauge(
                    &mut enc,
                    "process_start_time",
                    "Start time of the process since unix epoch in seconds.",
                    seconds,
                    boot + start / ticks,
                )?;
            }
            if let Some(v) = num(20) {
                gauge(
                    &mut enc,
                    "process_virtual_memory",
                    "Virtual memory size in bytes.",
                    bytes,
                    v,
                )?;
            }
            if let Some(r) = num(21) {
                gauge(
                    &mut enc,
                    "process_resident_memory",
                    "Resident memory size in bytes.",
                    bytes,
                    r * page,
                )?;
            }
        }
    }
    if let Ok(d) = std::fs::read_dir("/proc/self/fd") {
        gauge(
            &mut enc,
            "process_open_fds",
            "Number of open file descriptors.",
            None,
            d.count() as f64,
        )?;
    }
    if let Ok(limits) = std::fs::read_to_string("/proc/self/limits") {
        let max = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .and_then(|l| l.split_whitespace().nth(3))
            .and_then(|v| v.parse::<f64>().ok());
        if let Some(m) = max {
            gauge(
                &mut enc,
                "process_max_fds",
                "Maximum number of open file descriptors.",
                None,
                m,
            )?;
        }
    }
    Ok(())
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
        let mut reg = prometheus_client::registry::Registry::default();
        reg.register_collector(Box::new(super::ProcessCollector));
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, &reg).unwrap();
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
