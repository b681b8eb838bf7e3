//! The node's self-metrics: counters bumped where things happen, gauges
//! read at scrape time, rendered as Prometheus text (`cairn_storage_*`).

use std::sync::atomic::{AtomicU64, Ordering};

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Counters published on `/metrics`.
#[derive(Default)]
pub struct Metrics {
    pub samples_appended: AtomicU64,
    pub samples_rejected_too_old: AtomicU64,
    pub samples_rejected_out_of_range: AtomicU64,
    pub exemplars_appended: AtomicU64,
    pub series_created: AtomicU64,
    pub flushes: AtomicU64,
    pub flush_failures: AtomicU64,
    pub flush_seconds_total_ms: AtomicU64,
    pub filesets_written: AtomicU64,
    pub commitlog_records_replayed: AtomicU64,
    pub commitlog_records_skipped: AtomicU64,
    pub recovery_ms: AtomicU64,
}

/// Values read from the node at scrape time.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gauges {
    pub active_series: usize,
    pub head_bytes: usize,
    pub head_samples: usize,
    pub commitlog_segments: usize,
    pub commitlog_bytes: u64,
    pub filesets: usize,
    pub fileset_bytes: u64,
    pub index_entries_skipped: u64,
}

impl Metrics {
    /// The counters and `g` in Prometheus text format.
    pub fn render(&self, g: &Gauges, out: &mut String) {
        use std::fmt::Write;
        let m = self;
        let c = |v: &AtomicU64| v.load(Ordering::Relaxed);
        let Gauges {
            active_series: active,
            head_bytes,
            head_samples,
            commitlog_segments: segs,
            commitlog_bytes: seg_bytes,
            filesets: fsn,
            fileset_bytes: fsb,
            index_entries_skipped,
        } = *g;
        let rows: [(&str, &str, &str, f64); 17] = [
            (
                "cairn_storage_samples_appended_total",
                "counter",
                "Samples appended to the head.",
                c(&m.samples_appended) as f64,
            ),
            (
                "cairn_storage_samples_rejected_too_old_total",
                "counter",
                "Samples refused as older than retention.",
                c(&m.samples_rejected_too_old) as f64,
            ),
            (
                "cairn_storage_samples_rejected_out_of_range_total",
                "counter",
                "Samples refused as after the latest storable time.",
                c(&m.samples_rejected_out_of_range) as f64,
            ),
            (
                "cairn_storage_commitlog_records_skipped_total",
                "counter",
                "Commit-log records skipped on replay as corrupt (not torn tails).",
                c(&m.commitlog_records_skipped) as f64,
            ),
            (
                "cairn_storage_index_entries_skipped_total",
                "counter",
                "Index entries (series labels, exemplars, metadata) skipped as undecodable.",
                index_entries_skipped as f64,
            ),
            (
                "cairn_storage_exemplars_appended_total",
                "counter",
                "Exemplars stored.",
                c(&m.exemplars_appended) as f64,
            ),
            (
                "cairn_storage_series_created_total",
                "counter",
                "Series registered in the index.",
                c(&m.series_created) as f64,
            ),
            (
                "cairn_storage_flushes_total",
                "counter",
                "Flush runs.",
                c(&m.flushes) as f64,
            ),
            (
                "cairn_storage_flush_failures_total",
                "counter",
                "Block flushes that failed.",
                c(&m.flush_failures) as f64,
            ),
            (
                "cairn_storage_flush_seconds_total",
                "counter",
                "Time spent flushing.",
                c(&m.flush_seconds_total_ms) as f64 / 1000.0,
            ),
            (
                "cairn_storage_filesets_written_total",
                "counter",
                "Filesets written.",
                c(&m.filesets_written) as f64,
            ),
            (
                "cairn_storage_head_active_series",
                "gauge",
                "Series with data in the head.",
                active as f64,
            ),
            (
                "cairn_storage_head_bytes",
                "gauge",
                "Approximate head memory.",
                head_bytes as f64,
            ),
            (
                "cairn_storage_head_bytes_per_active_series",
                "gauge",
                "Head memory per active series.",
                if active > 0 {
                    head_bytes as f64 / active as f64
                } else {
                    0.0
                },
            ),
            (
                "cairn_storage_head_samples",
                "gauge",
                "Samples held in the head.",
                head_samples as f64,
            ),
            (
                "cairn_storage_commitlog_bytes",
                "gauge",
                "Commit log bytes on disk.",
                seg_bytes as f64,
            ),
            (
                "cairn_storage_fileset_bytes",
                "gauge",
                "Fileset bytes on disk.",
                fsb as f64,
            ),
        ];
        for (name, kind, help, v) in rows {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        }
        let _ = writeln!(out, "# HELP cairn_storage_commitlog_segments Commit log segments on disk.\n# TYPE cairn_storage_commitlog_segments gauge\ncairn_storage_commitlog_segments {segs}");
        let _ = writeln!(out, "# HELP cairn_storage_filesets Filesets on disk.\n# TYPE cairn_storage_filesets gauge\ncairn_storage_filesets {fsn}");
        let _ = writeln!(out, "# HELP cairn_storage_recovery_seconds Time the last recovery took.\n# TYPE cairn_storage_recovery_seconds gauge\ncairn_storage_recovery_seconds {}", c(&m.recovery_ms) as f64 / 1000.0);
    }
}
