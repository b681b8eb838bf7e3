//! Active series per tenant, for `max_active_series` and
//! `max_series_per_metric`: a series is active from its first sample
//! through this gateway until it has had none for [`IDLE`] (Mimir's
//! definition of active, 20 minutes). Counted before replication, so each
//! series counts once whatever the replication factor. A gateway counts the
//! series it sees: in a cluster behind a load balancer that spreads every
//! sender over the gateways each sees all of a tenant's series; senders
//! pinned to gateways by series would see up to N× the limit overall.
//!
//! Tracked only for tenants with a series limit (it costs a map entry of
//! about 40 bytes per active series).

use cairn_common::{IdMap, SeriesId};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long a series stays active without a sample.
pub const IDLE: Duration = Duration::from_secs(20 * 60);

#[derive(Debug, Default)]
struct TenantSeries {
    /// Series → (minute last seen, metric index).
    seen: IdMap<(u32, u32)>,
    metrics: HashMap<String, u32>,
    /// Active series per metric index.
    per_metric: Vec<u64>,
    swept_minute: u32,
}

/// Why a new series was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeriesRefusal {
    PerTenant { limit: u64 },
    PerMetric { limit: u64 },
}

/// The active series of every tracked tenant.
#[derive(Debug)]
pub struct SeriesTracker {
    start: Instant,
    idle_minutes: u32,
    tenants: Mutex<HashMap<String, TenantSeries>>,
}

impl Default for SeriesTracker {
    fn default() -> Self {
        Self::new(IDLE)
    }
}

impl SeriesTracker {
    pub fn new(idle: Duration) -> Self {
        SeriesTracker {
            start: Instant::now(),
            idle_minutes: (idle.as_secs() / 60).max(1) as u32,
            tenants: Mutex::default(),
        }
    }

    fn minute(&self, now: Instant) -> u32 {
        (now.saturating_duration_since(self.start).as_secs() / 60) as u32
    }

    /// Admits each series `(id, metric name)` of one request in order:
    /// known ones are refreshed; a new one is counted unless it would take
    /// the tenant over `max_active` or its metric over `max_per_metric`
    /// (0: off). Returns the refusal for each series (None: admitted).
    pub fn admit<'a>(
        &self,
        tenant: &str,
        max_active: u64,
        max_per_metric: u64,
        now: Instant,
        series: impl Iterator<Item = (SeriesId, &'a str)>,
    ) -> Vec<Option<SeriesRefusal>> {
        let minute = self.minute(now);
        let mut map = self.tenants.lock();
        let t = map.entry(tenant.to_string()).or_default();
        if minute > t.swept_minute {
            // Once a minute: the idle ones go.
            let idle = self.idle_minutes;
            let per_metric = &mut t.per_metric;
            t.seen.retain(|_, (m, metric)| {
                let keep = minute.saturating_sub(*m) < idle;
                if !keep {
                    per_metric[*metric as usize] -= 1;
                }
                keep
            });
            t.swept_minute = minute;
        }
        series
            .map(|(id, metric)| {
                if let Some(e) = t.seen.get_mut(&id) {
                    e.0 = minute;
                    return None;
                }
                if max_active > 0 && t.seen.len() as u64 >= max_active {
                    return Some(SeriesRefusal::PerTenant { limit: max_active });
                }
                let next = t.per_metric.len() as u32;
                let mi = *t.metrics.entry(metric.to_string()).or_insert(next);
                if mi as usize == t.per_metric.len() {
                    t.per_metric.push(0);
                }
                if max_per_metric > 0 && t.per_metric[mi as usize] >= max_per_metric {
                    return Some(SeriesRefusal::PerMetric {
                        limit: max_per_metric,
                    });
                }
                t.per_metric[mi as usize] += 1;
                t.seen.insert(id, (minute, mi));
                None
            })
            .collect()
    }

    /// A tracked tenant's active series (None: not tracked here).
    pub fn active(&self, tenant: &str) -> Option<u64> {
        self.tenants.lock().get(tenant).map(|t| t.seen.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(i: u64) -> SeriesId {
        let n = i.to_string();
        let name = if i.is_multiple_of(2) { "a" } else { "b" };
        SeriesId::of_pairs("t", [("__name__", name), ("i", n.as_str())].into_iter())
    }

    #[test]
    fn limits_count_new_series_and_idle_ones_leave() {
        let tr = SeriesTracker::new(Duration::from_secs(120));
        let t0 = tr.start;
        let metric = |i: u64| if i.is_multiple_of(2) { "a" } else { "b" };
        let r = tr.admit("t", 3, 0, t0, (0..5).map(|i| (id(i), metric(i))));
        assert_eq!(r.iter().filter(|x| x.is_none()).count(), 3);
        assert_eq!(r[3], Some(SeriesRefusal::PerTenant { limit: 3 }));
        // Known series are always admitted.
        let r = tr.admit("t", 3, 0, t0, (0..3).map(|i| (id(i), metric(i))));
        assert!(r.iter().all(|x| x.is_none()));
        assert_eq!(tr.active("t"), Some(3));
        // Per metric: "a" holds 0 and 2.
        let r = tr.admit("t", 0, 2, t0, [(id(4), "a"), (id(5), "b")].into_iter());
        assert_eq!(r, vec![Some(SeriesRefusal::PerMetric { limit: 2 }), None]);
        // At minute 2, those last seen at minute 0 have been idle two minutes: gone.
        tr.admit(
            "t",
            0,
            0,
            t0 + Duration::from_secs(60),
            (0..2).map(|i| (id(i), metric(i))),
        );
        tr.admit("t", 0, 0, t0 + Duration::from_secs(150), std::iter::empty());
        assert_eq!(tr.active("t"), Some(2));
        assert_eq!(tr.active("other"), None);
    }
}
