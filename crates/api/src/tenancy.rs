//! Tenancy in the HTTP layer: who a request is (`cairn_tenancy::authenticate`
//! over the node's directory and auth policy, the scope a route needs set
//! by its group as a [`Need`] extension), the write gate every remote write
//! passes after validation, and the per-tenant counters (`/metrics` and the
//! admin API's usage).

use crate::error::ApiError;
use axum::http::{header, HeaderMap, StatusCode};
use cairn_tenancy::{AuthPolicy, Caller, Credentials, Directory, Gate, LocalDirectory, Scope};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// Where a node's tenants come from and how it authenticates.
#[derive(Debug, Clone)]
pub struct TenancyConfig {
    pub directory: Arc<dyn Directory>,
    pub policy: AuthPolicy,
}

impl Default for TenancyConfig {
    /// In-process tenants with no limits; anonymous reads and writes, and
    /// no admin token (admin endpoints refuse).
    fn default() -> Self {
        TenancyConfig {
            directory: LocalDirectory::new(cairn_tenancy::Limits::default()),
            policy: AuthPolicy {
                anonymous: true,
                admin_sha256: None,
            },
        }
    }
}

/// The scope a route group's requests need (an extension set on the group).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Need(pub Scope);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TenantLabel {
    pub tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct DiscardLabels {
    pub tenant: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct AttributedLabels {
    pub tenant: String,
    /// The tenant's attribution label (e.g. `team`).
    pub label: String,
    /// Its value; `__missing__` for series without it, `__overflow__`
    /// past [`ATTRIBUTION_CAP`] distinct values.
    pub value: String,
}

/// Distinct values of a tenant's attribution label counted on their own.
pub(crate) const ATTRIBUTION_CAP: usize = 2000;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RuleLabels {
    pub tenant: String,
    pub rule: String,
    pub dry_run: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RollupLabels {
    pub tenant: String,
    pub rule: String,
    pub outcome: &'static str,
}

/// Distinct input and output series a rollup rule met, each counted up to
/// [`ROLLUP_SERIES_CAP`].
#[derive(Debug, Default)]
struct RollupSeries {
    inputs_dropped: std::collections::HashSet<u128>,
    outputs: std::collections::HashSet<u128>,
}

/// Distinct series of one rollup rule counted (each kind); past it the
/// count is a lower bound.
pub(crate) const ROLLUP_SERIES_CAP: usize = 100_000;

/// Per-tenant counters.
#[derive(Debug, Default)]
pub(crate) struct TenantMetrics {
    pub received: Family<TenantLabel, Counter>,
    pub stored: Family<TenantLabel, Counter>,
    pub discarded: Family<DiscardLabels, Counter>,
    pub by_rule: Family<RuleLabels, Counter>,
    pub queries: Family<TenantLabel, Counter>,
    /// Active series of tenants with a series limit, as of their last write.
    pub active_series: Family<TenantLabel, prometheus_client::metrics::gauge::Gauge>,
    pub attributed_received: Family<AttributedLabels, Counter>,
    pub attributed_stored: Family<AttributedLabels, Counter>,
    /// Each tenant's attribution values counted so far (to cap them).
    attributed_values: Mutex<HashMap<String, std::collections::HashSet<String>>>,
    /// Samples of each rollup rule by outcome (copied, inputs_dropped, too_old).
    pub rollup_samples: Family<RollupLabels, Counter>,
    /// Series each rollup rule met, by (tenant, rule).
    rollup_series: Mutex<HashMap<(String, String), RollupSeries>>,
}

impl TenantMetrics {
    pub(crate) fn register(&self, r: &mut Registry) {
        r.register(
            "cairn_received_samples",
            "Valid samples and exemplars received by tenant, before its limits",
            self.received.clone(),
        );
        r.register(
            "cairn_stored_samples",
            "Samples stored by tenant",
            self.stored.clone(),
        );
        r.register(
            "cairn_discarded_samples",
            "Samples and exemplars discarded by tenant and reason",
            self.discarded.clone(),
        );
        r.register(
            "cairn_drop_rule_samples",
            "Samples each drop rule dropped or shed (dry_run=\"true\": would have)",
            self.by_rule.clone(),
        );
        r.register(
            "cairn_attributed_received_samples",
            "Samples and exemplars received, by tenant and the value of its attribution label",
            self.attributed_received.clone(),
        );
        r.register(
            "cairn_attributed_stored_samples",
            "Samples and exemplars passed by the tenant's limits to the store, by attribution label value",
            self.attributed_stored.clone(),
        );
        r.register(
            "cairn_active_series",
            "Active series (a sample in the last 20 minutes) of tenants with a series limit, counted by this gateway as of the tenant's last write",
            self.active_series.clone(),
        );
        r.register(
            "cairn_rollup_rule_samples",
            "Samples matched by a tenant's rollup rule, by outcome: copied (rolled up), inputs_dropped (of those, left out of raw), too_old (older than the inputs' horizon: kept raw, not rolled up)",
            self.rollup_samples.clone(),
        );
        r.register(
            "cairn_tenant_queries",
            "Reads (queries, series, labels, export, remote read) by tenant",
            self.queries.clone(),
        );
    }

    /// Records what a write did with each rollup rule's matches.
    pub(crate) fn rollups(&self, tenant: &str, tally: &[crate::write::RuleTally]) {
        if tally.is_empty() {
            return;
        }
        let mut series = self
            .rollup_series
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for t in tally {
            for (outcome, n) in [
                ("copied", t.copied),
                ("inputs_dropped", t.dropped),
                ("too_old", t.too_old),
            ] {
                let c = self.rollup_samples.get_or_create(&RollupLabels {
                    tenant: tenant.to_string(),
                    rule: t.rule.clone(),
                    outcome,
                });
                c.inc_by(n);
            }
            let e = series
                .entry((tenant.to_string(), t.rule.clone()))
                .or_default();
            for (set, ids) in [
                (&mut e.inputs_dropped, &t.inputs_dropped),
                (&mut e.outputs, &t.outputs),
            ] {
                for id in ids {
                    if set.len() >= ROLLUP_SERIES_CAP {
                        break;
                    }
                    set.insert(*id);
                }
            }
        }
    }

    /// Each rollup rule of `tenant` this gateway has seen: samples by
    /// outcome and the series it saved (inputs left out of raw less the
    /// outputs written instead).
    fn rollup_usage(&self, tenant: &str) -> serde_json::Value {
        let series = self
            .rollup_series
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut rules: Vec<&String> = series
            .keys()
            .filter(|(t, _)| t == tenant)
            .map(|(_, r)| r)
            .collect();
        rules.sort();
        let out: Vec<serde_json::Value> = rules
            .into_iter()
            .map(|rule| {
                let n = |outcome: &'static str| {
                    self.rollup_samples
                        .get_or_create(&RollupLabels {
                            tenant: tenant.to_string(),
                            rule: rule.clone(),
                            outcome,
                        })
                        .get()
                };
                let s = &series[&(tenant.to_string(), rule.clone())];
                let (inputs, outputs) = (s.inputs_dropped.len(), s.outputs.len());
                serde_json::json!({
                    "rule": rule,
                    "samples_copied": n("copied"),
                    "input_samples_dropped": n("inputs_dropped"),
                    "samples_too_old": n("too_old"),
                    "input_series_dropped": inputs,
                    "output_series": outputs,
                    "series_saved": inputs.saturating_sub(outputs),
                    "series_counts_capped": inputs >= ROLLUP_SERIES_CAP || outputs >= ROLLUP_SERIES_CAP,
                })
            })
            .collect();
        serde_json::Value::Array(out)
    }

    pub(crate) fn discard(&self, tenant: &str, reason: cairn_tenancy::Reason, n: u64) {
        if n > 0 {
            self.discarded
                .get_or_create(&DiscardLabels {
                    tenant: tenant.to_string(),
                    reason: reason.as_str().to_string(),
                })
                .inc_by(n);
        }
    }

    pub(crate) fn rules(&self, tenant: &str, by_rule: &[(String, bool, u64)]) {
        for (rule, dry, n) in by_rule {
            self.by_rule
                .get_or_create(&RuleLabels {
                    tenant: tenant.to_string(),
                    rule: rule.clone(),
                    dry_run: dry.to_string(),
                })
                .inc_by(*n);
        }
    }

    /// Counts `batch`'s samples and exemplars by the value of `label`
    /// into `stored` (else `received`): the first [`ATTRIBUTION_CAP`]
    /// values on their own, the rest as `__overflow__`, series without the
    /// label as `__missing__`.
    pub(crate) fn attribute(
        &self,
        tenant: &str,
        label: &str,
        batch: &cairn_common::PreparedBatch,
        stored: bool,
    ) {
        let mut by: HashMap<&str, u64> = HashMap::new();
        for s in &batch.series {
            let v = s
                .labels
                .pairs()
                .find(|(n, _)| *n == label)
                .map_or("__missing__", |(_, v)| v);
            *by.entry(v).or_default() += (s.samples.len() + s.exemplars.len()) as u64;
        }
        let family = if stored {
            &self.attributed_stored
        } else {
            &self.attributed_received
        };
        let mut known = self
            .attributed_values
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let known = known.entry(tenant.to_string()).or_default();
        for (v, n) in by {
            let value = if v == "__missing__" || known.contains(v) {
                v
            } else if known.len() < ATTRIBUTION_CAP {
                known.insert(v.to_string());
                v
            } else {
                "__overflow__"
            };
            family
                .get_or_create(&AttributedLabels {
                    tenant: tenant.to_string(),
                    label: label.to_string(),
                    value: value.to_string(),
                })
                .inc_by(n);
        }
    }

    /// A tenant's attributed counters, by value.
    fn attributed(&self, tenant: &str, label: &str) -> serde_json::Value {
        let known = self
            .attributed_values
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(tenant)
            .cloned()
            .unwrap_or_default();
        let mut out = serde_json::Map::new();
        for v in known
            .iter()
            .map(String::as_str)
            .chain(["__missing__", "__overflow__"])
        {
            let key = AttributedLabels {
                tenant: tenant.to_string(),
                label: label.to_string(),
                value: v.to_string(),
            };
            let (r, s) = (
                self.attributed_received.get_or_create(&key).get(),
                self.attributed_stored.get_or_create(&key).get(),
            );
            if r + s > 0 {
                out.insert(
                    v.to_string(),
                    serde_json::json!({"samples_received": r, "samples_stored": s}),
                );
            }
        }
        serde_json::json!({"label": label, "by_value": out})
    }

    fn tenant_counter(f: &Family<TenantLabel, Counter>, tenant: &str) -> u64 {
        f.get_or_create(&TenantLabel {
            tenant: tenant.to_string(),
        })
        .get()
    }

    /// A tenant's counters, for the admin API's usage (`attribution`: its
    /// attribution label, if it has one).
    pub(crate) fn usage(&self, tenant: &str, attribution: Option<&str>) -> serde_json::Value {
        let mut discarded = serde_json::Map::new();
        for r in cairn_tenancy::Reason::ALL {
            let n = self
                .discarded
                .get_or_create(&DiscardLabels {
                    tenant: tenant.to_string(),
                    reason: r.as_str().to_string(),
                })
                .get();
            if n > 0 {
                discarded.insert(r.as_str().to_string(), n.into());
            }
        }
        serde_json::json!({
            "samples_received": Self::tenant_counter(&self.received, tenant),
            "samples_stored": Self::tenant_counter(&self.stored, tenant),
            "samples_discarded": discarded,
            "queries": Self::tenant_counter(&self.queries, tenant),
            "attribution": attribution.map(|l| self.attributed(tenant, l)),
            "rollup_rules": self.rollup_usage(tenant),
        })
    }
}

/// The tenancy part of the router's state.
#[derive(Debug)]
pub(crate) struct Tenants {
    pub directory: Arc<dyn Directory>,
    pub policy: AuthPolicy,
    pub gate: Gate,
    pub metrics: TenantMetrics,
    /// Reads running per tenant (`max_concurrent_queries`).
    running: Mutex<HashMap<String, usize>>,
    /// Each tenant's share of the write turns.
    /// Kept while the tenant has writes in flight (the count of them), so
    /// tenants that come and go leave no entry behind.
    write_shares: Mutex<HashMap<String, (Arc<tokio::sync::Semaphore>, usize)>>,
}

impl Tenants {
    pub(crate) fn new(cfg: TenancyConfig) -> Tenants {
        Tenants {
            directory: cfg.directory,
            policy: cfg.policy,
            gate: Gate::new(),
            metrics: TenantMetrics::default(),
            running: Mutex::default(),
            write_shares: Mutex::default(),
        }
    }

    /// `tenant`'s share of the node's `slots` write turns: all but one when
    /// there are several.
    pub(crate) fn write_share(self: &Arc<Self>, tenant: &str, slots: usize) -> WriteShare {
        let mut g = self
            .write_shares
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let e = g.entry(tenant.to_string()).or_insert_with(|| {
            (
                Arc::new(tokio::sync::Semaphore::new(slots.saturating_sub(1).max(1))),
                0,
            )
        });
        e.1 += 1;
        WriteShare {
            sem: e.0.clone(),
            tenants: self.clone(),
            tenant: tenant.to_string(),
        }
    }

    #[cfg(test)]
    pub(crate) fn write_shares_is_empty(&self) -> bool {
        self.write_shares
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }

    /// Who the request with `headers` is, for a route needing `need`.
    pub(crate) fn authenticate(
        &self,
        headers: &HeaderMap,
        need: Scope,
    ) -> Result<Caller, ApiError> {
        let bearer = match headers.get(header::AUTHORIZATION) {
            None => None,
            Some(v) => {
                let v = v.to_str().unwrap_or("");
                let (scheme, rest) = v.split_once(' ').unwrap_or((v, ""));
                if !scheme.eq_ignore_ascii_case("bearer") || rest.trim().is_empty() {
                    return Err(ApiError::json(
                        StatusCode::UNAUTHORIZED,
                        "unauthorized",
                        "the Authorization header must be `Bearer <token>` (err-cairn-token-malformed)",
                    ));
                }
                Some(rest.trim())
            }
        };
        let org = headers
            .get("x-scope-orgid")
            .map(|v| v.to_str().unwrap_or("\u{fffd}"));
        let view = self.directory.view();
        cairn_tenancy::authenticate(
            &view,
            &self.policy,
            Credentials {
                bearer,
                org_id: org,
            },
            need,
        )
        .map_err(|e| {
            let (status, kind) = match e.http_status() {
                401 => (StatusCode::UNAUTHORIZED, "unauthorized"),
                403 => (StatusCode::FORBIDDEN, "forbidden"),
                _ => (StatusCode::BAD_REQUEST, "bad_data"),
            };
            ApiError::json(status, kind, e.to_string())
        })
    }

    /// A turn among `tenant`'s running reads (`max_concurrent_queries`, 0:
    /// no bound); 429 naming the limit when none is free.
    pub(crate) fn read_turn(self: &Arc<Self>, tenant: &str) -> Result<ReadTurn, ApiError> {
        self.metrics
            .queries
            .get_or_create(&TenantLabel {
                tenant: tenant.to_string(),
            })
            .inc();
        let max = self
            .directory
            .view()
            .tenant(tenant)
            .limits
            .max_concurrent_queries;
        let mut g = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        let n = g.entry(tenant.to_string()).or_insert(0);
        if max > 0 && *n as u64 >= max {
            return Err(ApiError::Limited {
                body: format!(
                    "tenant {tenant:?} already runs {n} reads, its limit of concurrent queries (err-cairn-max-concurrent-queries). {}\n",
                    cairn_tenancy::adjust(tenant, "max_concurrent_queries")
                ),
                retry_after: 1,
            });
        }
        *n += 1;
        Ok(ReadTurn {
            tenants: self.clone(),
            tenant: tenant.to_string(),
        })
    }
}

/// A write's hold on its tenant's share of the write turns (`sem`); the
/// tenant's entry goes with its last write.
#[derive(Debug)]
pub(crate) struct WriteShare {
    pub sem: Arc<tokio::sync::Semaphore>,
    tenants: Arc<Tenants>,
    tenant: String,
}

impl Drop for WriteShare {
    fn drop(&mut self) {
        let mut g = self
            .tenants
            .write_shares
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(e) = g.get_mut(&self.tenant) {
            e.1 = e.1.saturating_sub(1);
            if e.1 == 0 {
                g.remove(&self.tenant);
            }
        }
    }
}

/// One running read of a tenant; ends when dropped.
#[derive(Debug)]
pub(crate) struct ReadTurn {
    tenants: Arc<Tenants>,
    tenant: String,
}

impl Drop for ReadTurn {
    fn drop(&mut self) {
        let mut g = self
            .tenants
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = g.get_mut(&self.tenant) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                g.remove(&self.tenant);
            }
        }
    }
}
