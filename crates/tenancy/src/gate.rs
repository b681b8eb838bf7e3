//! The write gate: a tenant's limits and rules applied to a validated
//! batch, in this order — label limits (series refused, the rest kept),
//! exemplars per request, drop rules, then the ingestion rate on what is
//! left (samples + exemplars), shedding the lowest-priority series first
//! when over it. Every sample it takes out is reported with its reason, so
//! the caller counts it (`cairn_discarded_samples_total{tenant,reason}`).

use crate::gcra::RateLimiter;
use crate::rules::Class;
use crate::series::{SeriesRefusal, SeriesTracker};
use crate::view::TenantView;
use cairn_common::PreparedBatch;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Why samples were discarded (the `reason` label; snake_case, frozen).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    RateLimited,
    BurstExceeded,
    PerTenantSeriesLimit,
    PerMetricSeriesLimit,
    MaxLabelNamesPerSeries,
    LabelNameTooLong,
    LabelValueTooLong,
    TooManyExemplars,
    DropRule,
    PriorityShed,
    /// Refused by validation before the gate (bad labels, too far in the future, …).
    InvalidSeries,
    /// Refused by the store (older than retention, out of range).
    StoreRejected,
}

impl Reason {
    pub const ALL: [Reason; 12] = [
        Reason::RateLimited,
        Reason::BurstExceeded,
        Reason::PerTenantSeriesLimit,
        Reason::PerMetricSeriesLimit,
        Reason::MaxLabelNamesPerSeries,
        Reason::LabelNameTooLong,
        Reason::LabelValueTooLong,
        Reason::TooManyExemplars,
        Reason::DropRule,
        Reason::PriorityShed,
        Reason::InvalidSeries,
        Reason::StoreRejected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::RateLimited => "rate_limited",
            Reason::BurstExceeded => "burst_exceeded",
            Reason::PerTenantSeriesLimit => "per_tenant_series_limit",
            Reason::PerMetricSeriesLimit => "per_metric_series_limit",
            Reason::MaxLabelNamesPerSeries => "max_label_names_per_series",
            Reason::LabelNameTooLong => "label_name_too_long",
            Reason::LabelValueTooLong => "label_value_too_long",
            Reason::TooManyExemplars => "too_many_exemplars",
            Reason::DropRule => "drop_rule",
            Reason::PriorityShed => "priority_shed",
            Reason::InvalidSeries => "invalid_series",
            Reason::StoreRejected => "store_rejected",
        }
    }
}

/// How to change a limit, for the end of a message.
pub fn adjust(tenant: &str, limit: &str) -> String {
    format!(
        "To adjust the related per-tenant limit, set {limit} for tenant {tenant:?} (PUT /admin/v1/tenants/{tenant}/limits) or limits.{} in the config for every tenant",
        limit.replace('_', "-")
    )
}

/// A series refused by a limit (answered 400; the rest is stored).
#[derive(Debug, Clone, PartialEq)]
pub struct Refused {
    pub series: String,
    pub reason: String,
    pub samples: usize,
}

/// What the gate let through and what it took out.
#[derive(Debug, Default, PartialEq)]
pub struct Admitted {
    /// Samples (exemplars counted as samples) taken out, by reason.
    pub discarded: Vec<(Reason, u64)>,
    /// Series refused by a label or exemplar limit: the 400's lines.
    pub refused: Vec<Refused>,
    /// Samples each rule dropped or shed (by rule name), and which of
    /// those were dry runs (counted only).
    pub by_rule: Vec<(String, bool, u64)>,
}

/// The whole request refused for its rate (HTTP 429).
#[derive(Debug, Clone, PartialEq)]
pub enum OverLimit {
    /// Over the rate now; it fits after `retry_after`.
    Rate {
        retry_after: Duration,
        message: String,
        samples: u64,
        by_rule: Vec<(String, bool, u64)>,
    },
    /// Larger than the burst: it never fits.
    Burst { message: String, samples: u64 },
}

impl OverLimit {
    pub fn samples(&self) -> u64 {
        match self {
            OverLimit::Rate { samples, .. } | OverLimit::Burst { samples, .. } => *samples,
        }
    }
}

/// The gate of one node: the rate limiter and the number of gateways the
/// tenant's rate is shared among.
#[derive(Debug)]
pub struct Gate {
    limiter: RateLimiter,
    gateways: AtomicUsize,
    series: SeriesTracker,
}

impl Default for Gate {
    fn default() -> Self {
        Self::new()
    }
}

fn add(v: &mut Vec<(Reason, u64)>, r: Reason, n: u64) {
    if n == 0 {
        return;
    }
    match v.iter_mut().find(|(x, _)| *x == r) {
        Some((_, c)) => *c += n,
        None => v.push((r, n)),
    }
}

fn add_rule(v: &mut Vec<(String, bool, u64)>, name: &str, dry: bool, n: u64) {
    match v.iter_mut().find(|(x, d, _)| x == name && *d == dry) {
        Some((_, _, c)) => *c += n,
        None => v.push((name.to_string(), dry, n)),
    }
}

impl Admitted {
    /// Series `s` refused for `reason` (`msg` the 400's line), counted.
    fn refuse(&mut self, s: &cairn_common::PreparedSeries, reason: Reason, msg: String) {
        add(
            &mut self.discarded,
            reason,
            (s.samples.len() + s.exemplars.len()) as u64,
        );
        self.refused.push(Refused {
            series: text(&s.labels),
            reason: msg,
            samples: s.samples.len(),
        });
    }
}

/// Keeps the series whose flag in `gone` (by position) is false.
fn remove_marked(batch: &mut PreparedBatch, gone: &[bool]) {
    if gone.iter().any(|g| *g) {
        let mut i = 0;
        batch.series.retain(|_| {
            i += 1;
            !gone[i - 1]
        });
    }
}

fn text(pairs: &cairn_common::LazyLabels) -> String {
    let mut s = String::from("{");
    for (i, (n, v)) in pairs.pairs().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        s.push_str(n);
        s.push_str("=\"");
        s.push_str(v);
        s.push('"');
    }
    s.push('}');
    cairn_common::limits::truncate_str(&s, 512).into_owned()
}

impl Gate {
    pub fn new() -> Gate {
        Gate {
            limiter: RateLimiter::new(),
            gateways: AtomicUsize::new(1),
            series: SeriesTracker::default(),
        }
    }

    /// Sets how many gateways share each tenant's rate (at least 1).
    pub fn set_gateways(&self, n: usize) {
        self.gateways.store(n.max(1), Ordering::Relaxed);
    }

    pub fn gateways(&self) -> usize {
        self.gateways.load(Ordering::Relaxed)
    }

    /// A tenant's active series as this gateway counts them (None: the
    /// tenant has no series limit, so none are tracked).
    pub fn active_series(&self, tenant: &str) -> Option<u64> {
        self.series.active(tenant)
    }

    /// Series limits on what passed the rate: a new series over
    /// `max_active_series` or `max_series_per_metric` is refused (400 for
    /// it; the rest stored), counted by reason.
    fn series_limits(
        &self,
        t: &TenantView,
        batch: &mut PreparedBatch,
        now: Instant,
        out: &mut Admitted,
    ) {
        let l = &t.limits;
        if l.max_active_series == 0 && l.max_series_per_metric == 0 {
            return;
        }
        let verdicts = self.series.admit(
            &t.id,
            l.max_active_series,
            l.max_series_per_metric,
            now,
            batch.series.iter().map(|s| {
                let name = s
                    .labels
                    .pairs()
                    .find(|(n, _)| *n == cairn_common::METRIC_NAME)
                    .map_or("", |(_, v)| v);
                (s.id, name)
            }),
        );
        if verdicts.iter().all(Option::is_none) {
            return;
        }
        let mut i = 0;
        batch.series.retain(|s| {
            let v = verdicts[i];
            i += 1;
            let Some(v) = v else { return true };
            let (reason, msg) = match v {
                SeriesRefusal::PerTenant { limit } => (
                    Reason::PerTenantSeriesLimit,
                    format!(
                        "per-tenant series limit of {limit} exceeded: tenant {:?} has {limit} active series (with a sample in the last 20 minutes) and this one is new (err-cairn-max-series-per-tenant). {}",
                        t.id,
                        adjust(&t.id, "max_active_series")
                    ),
                ),
                SeriesRefusal::PerMetric { limit } => (
                    Reason::PerMetricSeriesLimit,
                    format!(
                        "per-metric series limit of {limit} exceeded: this metric has {limit} active series and this one is new (err-cairn-max-series-per-metric). {}",
                        adjust(&t.id, "max_series_per_metric")
                    ),
                ),
            };
            out.refuse(s, reason, msg);
            false
        });
    }

    /// Applies `t`'s limits and rules to `batch` (changed in place to what
    /// may be stored). `Err`: the rest of the request is over the rate and
    /// nothing of it is to be stored.
    pub fn admit(
        &self,
        t: &TenantView,
        batch: &mut PreparedBatch,
        now: Instant,
    ) -> Result<Admitted, OverLimit> {
        let l = &t.limits;
        let mut out = Admitted::default();
        // Label limits: the series is refused, the rest kept.
        if l.max_label_names_per_series > 0
            || l.max_label_name_length > 0
            || l.max_label_value_length > 0
        {
            batch.series.retain(|s| {
                let n = s.labels.pairs().count() as u64;
                let why = if l.max_label_names_per_series > 0 && n > l.max_label_names_per_series {
                    Some((
                        Reason::MaxLabelNamesPerSeries,
                        format!(
                            "received a series whose number of labels exceeds the limit (actual: {n}, limit: {}) (err-cairn-max-label-names-per-series). {}",
                            l.max_label_names_per_series,
                            adjust(&t.id, "max_label_names_per_series")
                        ),
                    ))
                } else {
                    s.labels.pairs().find_map(|(name, value)| {
                        if l.max_label_name_length > 0 && name.len() as u64 > l.max_label_name_length {
                            Some((
                                Reason::LabelNameTooLong,
                                format!(
                                    "received a series whose label name length exceeds the limit (actual: {}, limit: {}) label: {:?} (err-cairn-label-name-too-long). {}",
                                    name.len(),
                                    l.max_label_name_length,
                                    cairn_common::limits::truncate_str(name, 200),
                                    adjust(&t.id, "max_label_name_length")
                                ),
                            ))
                        } else if l.max_label_value_length > 0
                            && value.len() as u64 > l.max_label_value_length
                        {
                            Some((
                                Reason::LabelValueTooLong,
                                format!(
                                    "received a series whose label value length exceeds the limit (actual: {}, limit: {}) label: {name:?} (err-cairn-label-value-too-long). {}",
                                    value.len(),
                                    l.max_label_value_length,
                                    adjust(&t.id, "max_label_value_length")
                                ),
                            ))
                        } else {
                            None
                        }
                    })
                };
                match why {
                    None => true,
                    Some((reason, msg)) => {
                        out.refuse(s, reason, msg);
                        false
                    }
                }
            });
        }
        // Exemplars past the per-request limit are dropped (samples kept).
        if l.max_exemplars_per_request > 0 {
            let mut left = l.max_exemplars_per_request as usize;
            let mut cut = 0usize;
            for s in batch.series.iter_mut() {
                let keep = s.exemplars.len().min(left);
                left -= keep;
                cut += s.exemplars.len() - keep;
                s.exemplars.truncate(keep);
            }
            if cut > 0 {
                add(&mut out.discarded, Reason::TooManyExemplars, cut as u64);
                out.refused.push(Refused {
                    series: "(this request)".into(),
                    reason: format!(
                        "{cut} exemplar(s) past the limit of {} per request were not stored (err-cairn-max-exemplars-per-request). {}",
                        l.max_exemplars_per_request,
                        adjust(&t.id, "max_exemplars_per_request")
                    ),
                    samples: 0,
                });
            }
        }
        // Drop rules, and which series may be shed.
        let mut shed: Vec<(i32, bool, usize, u64)> = Vec::new(); // (priority, dry run, series index, rule index)
        if !t.rules.is_empty() {
            let mut dropped = vec![false; batch.series.len()];
            for (i, s) in batch.series.iter().enumerate() {
                let n = (s.samples.len() + s.exemplars.len()) as u64;
                match t.rules.classify(s.labels.pairs()) {
                    Class::Keep => {}
                    Class::Drop { rule, dry_run } => {
                        add_rule(&mut out.by_rule, &t.rules.rule(rule).name, dry_run, n);
                        if !dry_run {
                            add(&mut out.discarded, Reason::DropRule, n);
                            dropped[i] = true;
                        }
                    }
                    Class::Shed {
                        rule,
                        priority,
                        dry_run,
                    } => shed.push((priority, dry_run, i, rule as u64)),
                }
            }
            if dropped.iter().any(|d| *d) {
                // Indices shift: renumber the sheddable ones.
                let mut new_index = vec![0usize; batch.series.len()];
                let mut k = 0;
                for (i, d) in dropped.iter().enumerate() {
                    new_index[i] = k;
                    if !d {
                        k += 1;
                    }
                }
                for s in shed.iter_mut() {
                    s.2 = new_index[s.2];
                }
                remove_marked(batch, &dropped);
            }
        }
        // The rate, on what would be stored.
        let n: u64 = batch
            .series
            .iter()
            .map(|s| (s.samples.len() + s.exemplars.len()) as u64)
            .sum();
        if l.ingestion_rate == 0 || n == 0 {
            self.series_limits(t, batch, now, &mut out);
            return Ok(out);
        }
        let rate = l.ingestion_rate as f64 / self.gateways() as f64;
        let burst = l.burst();
        let size = |i: usize| {
            let s = &batch.series[i];
            (s.samples.len() + s.exemplars.len()) as u64
        };
        // Lowest priority first; within a priority, the last series first.
        shed.sort_by(|a, b| a.0.cmp(&b.0).then(b.2.cmp(&a.2)));
        let plan = self
            .limiter
            .take_with(&t.id, rate, burst, now, |available| {
                if n <= available {
                    return (n, Ok(Vec::new()));
                }
                // Shed until the rest fits. A dry-run rule is planned and
                // charged as a real one (so it counts exactly what it would
                // shed) but what it would shed is stored anyway.
                let mut left = n;
                let mut plan = Vec::new();
                for &(_, dry, i, rule) in &shed {
                    if left <= available {
                        break;
                    }
                    let k = size(i);
                    left -= k;
                    plan.push((i, dry, rule, k));
                }
                if left <= available {
                    (left, Ok(plan))
                } else {
                    (0, Err((left, available)))
                }
            });
        match plan {
            Ok(plan) => {
                let mut gone = vec![false; batch.series.len()];
                for (i, dry, rule, k) in plan {
                    add_rule(&mut out.by_rule, &t.rules.rule(rule as usize).name, dry, k);
                    if !dry {
                        add(&mut out.discarded, Reason::PriorityShed, k);
                        gone[i] = true;
                    }
                }
                remove_marked(batch, &gone);
                self.series_limits(t, batch, now, &mut out);
                Ok(out)
            }
            Err((rest, available)) => {
                let by_rule = out.by_rule;
                if rest > burst {
                    Err(OverLimit::Burst {
                        message: format!(
                            "the request has been rejected because its size ({rest} samples and exemplars) exceeds the tenant's maximum allowed burst of {burst}, and waiting will never let it in: send smaller requests (Prometheus: queue_config.max_samples_per_send) or raise the burst (err-cairn-tenant-max-request-size-exceeds-burst). {}",
                            adjust(&t.id, "ingestion_burst_size")
                        ),
                        samples: n,
                    })
                } else {
                    let wait = (rest - available) as f64 / rate;
                    Err(OverLimit::Rate {
                        retry_after: Duration::from_secs_f64(wait),
                        message: format!(
                            "the request has been rejected because tenant {:?} exceeded the ingestion rate limit, set to {} samples/s (this gateway's share: {} of {} gateways) with a maximum allowed burst of {burst} (err-cairn-tenant-max-ingestion-rate). {}",
                            t.id,
                            l.ingestion_rate,
                            format_rate(rate),
                            self.gateways(),
                            adjust(&t.id, "ingestion_rate")
                        ),
                        samples: n,
                        by_rule,
                    })
                }
            }
        }
    }
}

fn format_rate(r: f64) -> String {
    if r.fract() == 0.0 {
        format!("{r:.0}/s")
    } else {
        format!("{r:.1}/s")
    }
}

/// Seconds for a 429's `Retry-After`: the wait rounded up, 1 to 96 s.
pub fn retry_after_secs(d: Duration) -> u64 {
    (d.as_secs_f64().ceil() as u64).clamp(1, 96)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{CompiledRules, DropRule, RuleAction};
    use crate::{Limits, Status};
    use cairn_common::{Labels, Sample, SeriesWrite};

    fn tenant(limits: Limits, rules: &[DropRule]) -> TenantView {
        TenantView {
            id: "a".into(),
            status: Status::Active,
            limits,
            rules: CompiledRules::compile(rules).unwrap(),
            mapping: Default::default(),
            rollups: Default::default(),
            attribution_label: None,
            version: 1,
        }
    }

    /// (metric name, other labels, samples) of one series.
    type Spec<'a> = (&'a str, &'a [(&'a str, &'a str)], usize);

    fn batch(series: &[Spec<'_>]) -> PreparedBatch {
        let mut b = Vec::new();
        for (name, extra, n) in series {
            let mut ls = vec![("__name__", *name)];
            ls.extend(extra.iter().copied());
            b.push(SeriesWrite {
                labels: Labels::from_pairs(&ls),
                samples: (0..*n).map(|i| Sample::new(i as i64, 1.0)).collect(),
                exemplars: vec![],
            });
        }
        PreparedBatch::from_series("a", b, vec![])
    }

    fn names(b: &PreparedBatch) -> Vec<String> {
        b.series
            .iter()
            .map(|s| s.labels.pairs().next().unwrap().1.to_string())
            .collect()
    }

    #[test]
    fn label_limits_refuse_the_series_and_keep_the_rest() {
        let g = Gate::new();
        let t = tenant(
            Limits {
                max_label_names_per_series: 2,
                max_label_value_length: 5,
                ..Limits::default()
            },
            &[],
        );
        let mut b = batch(&[
            ("ok", &[("a", "1")], 3),
            ("many", &[("a", "1"), ("b", "2")], 4),
            ("long", &[("a", "123456")], 5),
        ]);
        let a = g.admit(&t, &mut b, Instant::now()).unwrap();
        assert_eq!(names(&b), ["ok"]);
        assert_eq!(
            a.discarded,
            vec![
                (Reason::MaxLabelNamesPerSeries, 4),
                (Reason::LabelValueTooLong, 5)
            ]
        );
        assert!(a.refused[0]
            .reason
            .contains("err-cairn-max-label-names-per-series"));
        assert!(a.refused[0]
            .reason
            .contains("PUT /admin/v1/tenants/a/limits"));
    }

    #[test]
    fn over_the_rate_sheds_lowest_priority_first_then_refuses() {
        let g = Gate::new();
        let rules = [
            DropRule {
                name: "go".into(),
                selector: r#"{__name__=~"go_.*"}"#.into(),
                action: RuleAction::Shed,
                priority: 0,
                dry_run: false,
            },
            DropRule {
                name: "dev".into(),
                selector: r#"{env="dev"}"#.into(),
                action: RuleAction::Shed,
                priority: 1,
                dry_run: false,
            },
            DropRule {
                name: "junk".into(),
                selector: r#"{__name__="junk"}"#.into(),
                action: RuleAction::Drop,
                priority: 0,
                dry_run: false,
            },
        ];
        let t = tenant(
            Limits {
                ingestion_rate: 10,
                ingestion_burst_size: 100,
                ..Limits::default()
            },
            &rules,
        );
        let now = Instant::now();
        // 130 offered, 100 fit: the go_ series (20) and one dev (15) go.
        let mut b = batch(&[
            ("junk", &[], 7),
            ("up", &[], 50),
            ("go_gc", &[], 20),
            ("x", &[("env", "dev")], 15),
            ("y", &[("env", "dev")], 15),
            ("z", &[], 30),
        ]);
        let a = g.admit(&t, &mut b, now).unwrap();
        assert_eq!(names(&b), ["up", "x", "z"]);
        assert_eq!(
            a.discarded,
            vec![(Reason::DropRule, 7), (Reason::PriorityShed, 35)]
        );
        // The bucket is empty: only unsheddable series left → 429.
        let mut b = batch(&[("up", &[], 10)]);
        match g.admit(&t, &mut b, now) {
            Err(OverLimit::Rate {
                retry_after,
                message,
                ..
            }) => {
                assert!((retry_after.as_secs_f64() - 0.5).abs() < 1e-6);
                assert!(
                    message.contains("err-cairn-tenant-max-ingestion-rate"),
                    "{message}"
                );
                assert_eq!(retry_after_secs(retry_after), 1);
            }
            r => panic!("{r:?}"),
        }
        let mut b = batch(&[("up", &[], 101)]);
        assert!(matches!(
            g.admit(&t, &mut b, now),
            Err(OverLimit::Burst { .. })
        ));
    }

    #[test]
    fn a_dry_run_sheds_nothing_and_counts_the_same() {
        let mk = |dry_run| {
            tenant(
                Limits {
                    ingestion_rate: 10,
                    ingestion_burst_size: 200,
                    ..Limits::default()
                },
                &[DropRule {
                    name: "go".into(),
                    selector: r#"{__name__=~"go_.*"}"#.into(),
                    action: RuleAction::Shed,
                    priority: 0,
                    dry_run,
                }],
            )
        };
        let now = Instant::now();
        let offered = || batch(&[("up", &[], 50), ("go_a", &[], 30), ("go_b", &[], 30)]);
        // 100 of the 200 taken first: 110 offered, 100 fit; go_b (30) goes,
        // or with a dry run is counted, charged, and stored.
        let gate = |t: &TenantView| {
            let g = Gate::new();
            g.admit(t, &mut batch(&[("up", &[], 100)]), now).unwrap();
            g
        };
        let t = mk(false);
        let real = gate(&t).admit(&t, &mut offered(), now).unwrap();
        assert_eq!(real.by_rule, vec![("go".to_string(), false, 30)]);
        let t = mk(true);
        let mut b = offered();
        let dry = gate(&t).admit(&t, &mut b, now).unwrap();
        assert_eq!(dry.by_rule, vec![("go".to_string(), true, 30)]);
        assert_eq!(dry.discarded, vec![]);
        assert_eq!(names(&b), ["up", "go_a", "go_b"]);
    }

    #[test]
    fn a_new_series_over_the_limit_is_refused_and_the_rest_kept() {
        let g = Gate::new();
        let t = tenant(
            Limits {
                max_active_series: 2,
                ..Limits::default()
            },
            &[],
        );
        let now = Instant::now();
        let mut b = batch(&[("a", &[], 1), ("b", &[], 1), ("c", &[], 4)]);
        let a = g.admit(&t, &mut b, now).unwrap();
        assert_eq!(names(&b), ["a", "b"]);
        assert_eq!(a.discarded, vec![(Reason::PerTenantSeriesLimit, 4)]);
        assert!(a.refused[0]
            .reason
            .contains("err-cairn-max-series-per-tenant"));
        assert_eq!(g.active_series("a"), Some(2));
        // Known series still come in.
        let mut b = batch(&[("b", &[], 1)]);
        assert_eq!(g.admit(&t, &mut b, now).unwrap().discarded, vec![]);
    }

    #[test]
    fn the_rate_is_shared_among_gateways() {
        let g = Gate::new();
        g.set_gateways(4);
        let t = tenant(
            Limits {
                ingestion_rate: 400,
                ingestion_burst_size: 10,
                ..Limits::default()
            },
            &[],
        );
        let now = Instant::now();
        assert!(g.admit(&t, &mut batch(&[("up", &[], 10)]), now).is_ok());
        match g.admit(&t, &mut batch(&[("up", &[], 10)]), now) {
            Err(OverLimit::Rate { retry_after, .. }) => {
                assert!((retry_after.as_secs_f64() - 0.1).abs() < 1e-6)
            }
            r => panic!("{r:?}"),
        }
    }
}
