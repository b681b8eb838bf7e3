//! Per-tenant limits: every limit is a `u64` and `0` means off. The
//! defaults come from config (`limits:`, keys with dashes); a tenant's
//! overrides (`/admin/v1/tenants/{id}/limits`, keys with underscores — the
//! same names) are kept in the metadata store and win over the defaults.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

macro_rules! limits {
    ($( $(#[$doc:meta])* $name:ident ),* $(,)?) => {
        /// One tenant's limits (0: off).
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct Limits {
            $( $(#[$doc])* pub $name: u64, )*
        }

        impl Limits {
            /// Every limit's name (as in the admin API; config writes `_` as `-`).
            pub const NAMES: &'static [&'static str] = &[$(stringify!($name)),*];

            /// The limit called `name` (underscores or dashes).
            pub fn get(&self, name: &str) -> Option<u64> {
                match name.replace('-', "_").as_str() {
                    $( stringify!($name) => Some(self.$name), )*
                    _ => None,
                }
            }

            /// Sets the limit called `name`; false when there is none.
            pub fn set(&mut self, name: &str, v: u64) -> bool {
                match name.replace('-', "_").as_str() {
                    $( stringify!($name) => { self.$name = v; true } )*
                    _ => false,
                }
            }
        }
    };
}

limits! {
    /// Samples and exemplars per second a tenant may write (per cluster:
    /// each gateway enforces its share).
    ingestion_rate,
    /// Samples and exemplars a tenant may write at once above its rate (0
    /// with a rate: one second's worth). A request larger than this never
    /// fits and gets its own answer.
    ingestion_burst_size,
    /// Series with samples in the head, counted once however many replicas
    /// hold them.
    max_active_series,
    /// Active series of one metric name.
    max_series_per_metric,
    /// Labels of one series, `__name__` included.
    max_label_names_per_series,
    /// Bytes of a label name.
    max_label_name_length,
    /// Bytes of a label value.
    max_label_value_length,
    /// Exemplars in one write request.
    max_exemplars_per_request,
    /// Bytes of one write request's body as sent (compressed).
    max_request_bytes,
    /// Series one query may select.
    max_series_per_query,
    /// Samples one query may hold at once (the engine's max-samples).
    max_samples_per_query,
    /// Seconds one query may run.
    query_timeout_seconds,
    /// Queries of the tenant running at once on one node.
    max_concurrent_queries,
}

impl Limits {
    /// `self` with `overrides` applied; an unknown name is skipped (the
    /// admin API refuses them before they are stored).
    pub fn with(&self, overrides: &BTreeMap<String, u64>) -> Limits {
        let mut l = *self;
        for (k, v) in overrides {
            l.set(k, *v);
        }
        l
    }

    /// Mimir's defaults, for a service shared by many tenants
    /// (`config/examples/multi-tenant.yaml`).
    pub fn shared_service() -> Limits {
        Limits {
            ingestion_rate: 10_000,
            ingestion_burst_size: 200_000,
            max_active_series: 150_000,
            max_label_names_per_series: 30,
            max_label_name_length: 1024,
            max_label_value_length: 2048,
            max_request_bytes: 10 << 20,
            ..Limits::default()
        }
    }

    /// The burst a rate is enforced with: the configured one, or one
    /// second's worth when none is.
    pub fn burst(&self) -> u64 {
        if self.ingestion_burst_size > 0 {
            self.ingestion_burst_size
        } else {
            self.ingestion_rate
        }
    }
}

/// Checks override names and returns them normalised (underscores); the
/// error names the first unknown one and lists the known ones.
pub fn check_overrides(o: &BTreeMap<String, u64>) -> Result<BTreeMap<String, u64>, String> {
    let mut out = BTreeMap::new();
    for (k, v) in o {
        let n = k.replace('-', "_");
        if !Limits::NAMES.contains(&n.as_str()) {
            return Err(format!(
                "unknown limit {k:?} (known: {})",
                Limits::NAMES.join(", ")
            ));
        }
        out.insert(n, *v);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_win_and_names_are_checked() {
        let d = Limits::shared_service();
        let mut o = BTreeMap::new();
        o.insert("ingestion-rate".to_string(), 5);
        let o = check_overrides(&o).unwrap();
        assert_eq!(o.keys().next().unwrap(), "ingestion_rate");
        let l = d.with(&o);
        assert_eq!(l.ingestion_rate, 5);
        assert_eq!(l.ingestion_burst_size, 200_000);
        let mut bad = BTreeMap::new();
        bad.insert("ingestion_rat".to_string(), 1);
        let e = check_overrides(&bad).unwrap_err();
        assert!(
            e.contains("ingestion_rat") && e.contains("max_active_series"),
            "{e}"
        );
        assert_eq!(Limits::NAMES.len(), 13);
        for n in Limits::NAMES {
            assert!(d.get(n).is_some(), "{n}");
        }
    }

    #[test]
    fn burst_defaults_to_one_second() {
        let l = Limits {
            ingestion_rate: 100,
            ..Limits::default()
        };
        assert_eq!(l.burst(), 100);
    }
}
