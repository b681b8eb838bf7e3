//! The node's self-metrics (`cairn_storage_*`): counters bumped where things
//! happen ([`Metrics`]) and values read from the node only at scrape time
//! (the head, the commit log, the filesets: a [`GaugeSource`] read by
//! `StoreCollector`), both put into a `prometheus-client` [`Registry`] the
//! caller owns ([`Storage::register_metrics`](crate::Storage::register_metrics)):
//! this crate never renders or serves the exposition itself.
//!
//! Counters are registered without their `_total` suffix and units are
//! given apart (`Unit::Seconds`, `Unit::Bytes`): the encoder appends both,
//! so `samples_appended` is scraped as `cairn_storage_samples_appended_total`.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;
use std::sync::Weak;

/// Counters published on `/metrics`; cheap to bump (one atomic add each).
#[derive(Debug, Default)]
pub struct Metrics {
    pub samples_appended: Counter,
    pub samples_rejected_too_old: Counter,
    pub samples_rejected_out_of_range: Counter,
    pub exemplars_appended: Counter,
    pub series_created: Counter,
    pub flushes: Counter,
    pub flush_failures: Counter,
    pub flush_seconds: Counter<f64, AtomicU64>,
    pub filesets_written: Counter,
    /// Kept for tests and logs; not published.
    pub commitlog_records_replayed: Counter,
    pub commitlog_records_skipped: Counter,
    /// Samples of replayed records dropped because they depend on a
    /// damaged record before them in the segment (record format 2).
    pub commitlog_samples_lost: Counter,
    pub recovery_seconds: Gauge<f64, AtomicU64>,
    pub snapshots: Counter,
    pub snapshot_failures: Counter,
    pub snapshot_seconds: Counter<f64, AtomicU64>,
    /// Bytes of the last head snapshot written.
    pub snapshot_bytes: Gauge,
    /// Block buffers loaded from a head snapshot at the last start.
    pub snapshot_buffers_loaded: Counter,
    /// Downsampling passes that wrote windows, windows written (every
    /// aggregated namespace), and windows marked late (to be written again).
    pub downsample_passes: Counter,
    pub downsample_windows: Counter,
    pub downsample_late_windows: Counter,
    /// Series windows a mapping rule kept out of an aggregated namespace,
    /// and those a dry-run mapping rule would have decided otherwise.
    pub downsample_mapped_out: Counter,
    pub downsample_dry_run_changed: Counter,
}

/// One aggregated namespace's downsampling progress, read at scrape time.
#[derive(Debug, Clone, Default)]
pub struct DownsampleLag {
    pub namespace: String,
    /// How far the written windows trail the newest raw sample, seconds
    /// (None: no pass yet).
    pub lag_seconds: Option<f64>,
    /// Windows the watermark has closed that no pass has written yet.
    pub windows_pending: u64,
    /// Written windows marked to be computed again (late samples).
    pub late_windows_pending: u64,
}

/// Values read from the node at scrape time.
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    pub active_series: usize,
    pub head_bytes: usize,
    pub head_samples: usize,
    pub commitlog_segments: usize,
    pub commitlog_bytes: u64,
    pub filesets: usize,
    pub fileset_bytes: u64,
    pub index_entries_skipped: u64,
    /// Per aggregated namespace, in the config's order.
    pub downsample: Vec<DownsampleLag>,
}

/// What reads [`Gauges`] (the node), at each scrape.
pub trait GaugeSource: Send + Sync {
    fn gauges(&self) -> Gauges;
}

impl Metrics {
    /// Registers the counters (handles to the same atomics) in `reg`, and
    /// a collector that reads `source` at each scrape. The collector holds
    /// it weakly: once it is dropped, it reports nothing.
    pub fn register(&self, reg: &mut Registry, source: Weak<dyn GaugeSource>) {
        for (name, help, c) in [
            (
                "cairn_storage_samples_appended",
                "Samples appended to the head.",
                &self.samples_appended,
            ),
            (
                "cairn_storage_samples_rejected_too_old",
                "Samples refused as older than retention.",
                &self.samples_rejected_too_old,
            ),
            (
                "cairn_storage_samples_rejected_out_of_range",
                "Samples refused as after the latest storable time.",
                &self.samples_rejected_out_of_range,
            ),
            (
                "cairn_storage_commitlog_records_skipped",
                "Commit-log records skipped on replay as corrupt (not torn tails).",
                &self.commitlog_records_skipped,
            ),
            (
                "cairn_storage_commitlog_samples_lost",
                "Samples of replayed commit-log records dropped because they depend on a record skipped as corrupt before them in the segment (a series' ref or previous value).",
                &self.commitlog_samples_lost,
            ),
            (
                "cairn_storage_exemplars_appended",
                "Exemplars stored.",
                &self.exemplars_appended,
            ),
            (
                "cairn_storage_series_created",
                "Series registered in the index.",
                &self.series_created,
            ),
            ("cairn_storage_flushes", "Flush runs.", &self.flushes),
            (
                "cairn_storage_flush_failures",
                "Block flushes that failed.",
                &self.flush_failures,
            ),
            (
                "cairn_storage_filesets_written",
                "Filesets written.",
                &self.filesets_written,
            ),
            (
                "cairn_storage_snapshots",
                "Head snapshots written (each bounds the commit log a restart replays).",
                &self.snapshots,
            ),
            (
                "cairn_storage_snapshot_failures",
                "Head snapshots that failed (the commit log then stays in charge).",
                &self.snapshot_failures,
            ),
            (
                "cairn_storage_downsample_passes",
                "Downsampling passes that wrote windows into the aggregated namespaces.",
                &self.downsample_passes,
            ),
            (
                "cairn_storage_downsample_windows_written",
                "Series windows written as rollups into the aggregated namespaces (late ones again).",
                &self.downsample_windows,
            ),
            (
                "cairn_storage_downsample_late_windows",
                "Already written windows marked to be computed again after a late or backfilled sample.",
                &self.downsample_late_windows,
            ),
            (
                "cairn_storage_downsample_mapped_out_windows",
                "Series windows not written into an aggregated namespace because the tenant's mapping rules keep the series out of it.",
                &self.downsample_mapped_out,
            ),
            (
                "cairn_storage_downsample_dry_run_windows",
                "Series windows a dry-run mapping rule would have written or left out otherwise (nothing was changed).",
                &self.downsample_dry_run_changed,
            ),
            (
                "cairn_storage_snapshot_buffers_loaded",
                "Block buffers loaded from a head snapshot at the last start.",
                &self.snapshot_buffers_loaded,
            ),
        ] {
            // The registry ends every help text with a full stop itself.
            reg.register(name, help.trim_end_matches('.'), c.clone());
        }
        reg.register_with_unit(
            "cairn_storage_flush",
            "Time spent flushing",
            Unit::Seconds,
            self.flush_seconds.clone(),
        );
        reg.register_with_unit(
            "cairn_storage_snapshot",
            "Time spent writing head snapshots",
            Unit::Seconds,
            self.snapshot_seconds.clone(),
        );
        reg.register_with_unit(
            "cairn_storage_snapshot_last",
            "Size of the last head snapshot written",
            Unit::Bytes,
            self.snapshot_bytes.clone(),
        );
        reg.register_with_unit(
            "cairn_storage_recovery",
            "Time the last recovery took",
            Unit::Seconds,
            self.recovery_seconds.clone(),
        );
        reg.register_collector(Box::new(StoreCollector(source)));
    }
}

/// The [`Gauges`], read at scrape time.
struct StoreCollector(Weak<dyn GaugeSource>);

impl std::fmt::Debug for StoreCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreCollector").finish_non_exhaustive()
    }
}

impl Collector for StoreCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(s) = self.0.upgrade() else {
            return Ok(());
        };
        let Gauges {
            active_series: active,
            head_bytes,
            head_samples,
            commitlog_segments: segs,
            commitlog_bytes: seg_bytes,
            filesets: fsn,
            fileset_bytes: fsb,
            index_entries_skipped,
            downsample,
        } = s.gauges();
        if !downsample.is_empty() {
            type Get = fn(&DownsampleLag) -> Option<f64>;
            let families: [(&str, &str, Get); 3] = [
                (
                    "cairn_storage_downsample_lag_seconds",
                    "How far an aggregated namespace's written windows trail the newest raw sample.",
                    |d| d.lag_seconds,
                ),
                (
                    "cairn_storage_downsample_windows_pending",
                    "Windows the watermark has closed that no downsampling pass has written yet.",
                    |d| Some(d.windows_pending as f64),
                ),
                (
                    "cairn_storage_downsample_late_windows_pending",
                    "Written windows marked to be computed again after late samples.",
                    |d| Some(d.late_windows_pending as f64),
                ),
            ];
            for (name, help, get) in families {
                let mut family = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
                for d in &downsample {
                    if let Some(v) = get(d) {
                        let labels = [("namespace", d.namespace.as_str())];
                        ConstGauge::new(v).encode(family.encode_family(&labels)?)?;
                    }
                }
            }
        }
        let skipped = ConstCounter::new(index_entries_skipped);
        skipped.encode(enc.encode_descriptor(
            "cairn_storage_index_entries_skipped",
            "Index entries (series labels, exemplars, metadata) skipped as undecodable.",
            None,
            skipped.metric_type(),
        )?)?;
        let per_series = if active > 0 {
            head_bytes as f64 / active as f64
        } else {
            0.0
        };
        let bytes = Some(&Unit::Bytes);
        for (name, help, unit, v) in [
            (
                "cairn_storage_head_active_series",
                "Series with data in the head.",
                None,
                active as f64,
            ),
            (
                "cairn_storage_head",
                "Approximate head memory.",
                bytes,
                head_bytes as f64,
            ),
            (
                "cairn_storage_head_bytes_per_active_series",
                "Head memory per active series.",
                None,
                per_series,
            ),
            (
                "cairn_storage_head_samples",
                "Samples held in the head.",
                None,
                head_samples as f64,
            ),
            (
                "cairn_storage_commitlog",
                "Commit log bytes on disk.",
                bytes,
                seg_bytes as f64,
            ),
            (
                "cairn_storage_fileset",
                "Fileset bytes on disk.",
                bytes,
                fsb as f64,
            ),
            (
                "cairn_storage_commitlog_segments",
                "Commit log segments on disk.",
                None,
                segs as f64,
            ),
            (
                "cairn_storage_filesets",
                "Filesets on disk.",
                None,
                fsn as f64,
            ),
        ] {
            let g = ConstGauge::new(v);
            g.encode(enc.encode_descriptor(name, help, unit, g.metric_type())?)?;
        }
        Ok(())
    }
}

/// The store's metrics as the exposition text, for tests.
#[cfg(test)]
pub(crate) fn render(s: &std::sync::Arc<crate::Storage>) -> String {
    let mut reg = Registry::default();
    s.register_metrics(&mut reg);
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &reg).expect("writing to a String");
    out
}
