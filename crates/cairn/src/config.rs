//! Configuration: embedded defaults (`config/cairn.yaml`), then the file given
//! with `--config`, then `CAIRN_…` environment variables, then flags.
//!
//! The binary's [`Config`] only composes the sections each crate owns
//! (`cairn_api::config::{HttpSection, QuerySection}`, `cairn_ingest::IngestSection`,
//! `cairn_storage::StorageSection`): their keys, value types (durations and
//! sizes, `cairn_common::config`) and `validate()`. The environment overlay
//! takes its sections from the embedded yaml, so it needs no list of them.

use anyhow::{anyhow, Context, Result};
use cairn_api::config::{HttpSection, QuerySection};
use cairn_cluster::ClusterSection;
use cairn_ingest::IngestSection;
use cairn_storage::StorageSection;
use cairn_tenancy::{AuthSection, LimitsSection};
use serde::Deserialize;
use serde_yaml::{Mapping, Value};
use std::path::PathBuf;

pub(crate) const DEFAULT_YAML: &str = include_str!("../../../config/cairn.yaml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct Config {
    pub http: HttpSection,
    pub storage: StorageSection,
    pub ingest: IngestSection,
    pub query: QuerySection,
    pub cluster: ClusterSection,
    pub auth: AuthSection,
    pub limits: LimitsSection,
}

fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Mapping(b), Value::Mapping(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(bv) => merge(bv, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

fn set(root: &mut Value, section: &str, key: &str, value: &str) {
    if let Value::Mapping(m) = root {
        let sec = m
            .entry(Value::String(section.into()))
            .or_insert_with(|| Value::Mapping(Mapping::new()));
        if let Value::Mapping(s) = sec {
            // Numbers stay numbers for the numeric keys, booleans booleans.
            let v = match value {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                _ => value
                    .parse::<u64>()
                    .map(|n| Value::Number(n.into()))
                    .unwrap_or_else(|_| Value::String(value.into())),
            };
            s.insert(Value::String(key.into()), v);
        }
    }
}

/// Flags from the command line (None = not given).
#[derive(Debug, Default, Clone)]
pub(crate) struct Overrides {
    pub config_file: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    pub http_listen: Option<String>,
}

impl Config {
    pub(crate) fn load(flags: &Overrides, env: &[(String, String)]) -> Result<Config> {
        let mut v: Value = serde_yaml::from_str(DEFAULT_YAML).context("embedded default config")?;
        // The sections an environment variable may set: those of the
        // embedded default, so a new section needs no list kept here.
        let sections: Vec<String> = v
            .as_mapping()
            .map(|m| {
                m.keys()
                    .filter_map(|k| k.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        if let Some(path) = &flags.config_file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading config file {}", path.display()))?;
            let file: Value = serde_yaml::from_str(&text)
                .with_context(|| format!("parsing config file {}", path.display()))?;
            if !file.is_null() {
                merge(&mut v, file);
            }
        }
        for (k, val) in env {
            let Some(rest) = k.strip_prefix("CAIRN_") else {
                continue;
            };
            match rest {
                "DATA_DIR" => set(&mut v, "storage", "data-dir", val),
                "HTTP_LISTEN" => set(&mut v, "http", "listen", val),
                "CONFIG" | "FAILPOINT" | "LOG" | "ADMIN_TOKEN" => {}
                _ => {
                    let Some((sec, key)) = rest.split_once('_') else {
                        continue;
                    };
                    let sec = sec.to_ascii_lowercase();
                    let key = key.to_ascii_lowercase().replace('_', "-");
                    // Other tools' CAIRN_* variables (CAIRN_BIN, CAIRN_E2E_SEED, …)
                    // are not config; a known section with an unknown key is
                    // refused by deny_unknown_fields, naming the key.
                    if !sections.contains(&sec) {
                        continue;
                    }
                    set(&mut v, &sec, &key, val);
                }
            }
        }
        if let Some(d) = &flags.data_dir {
            set(&mut v, "storage", "data-dir", &d.to_string_lossy());
        }
        if let Some(l) = &flags.http_listen {
            set(&mut v, "http", "listen", l);
        }
        // The error names the key where a value did not deserialise
        // (`storage.retention: "forever" is not a duration …`).
        let cfg: Config = serde_path_to_error::deserialize(v).map_err(|e| {
            let path = e.path().to_string();
            anyhow!(
                "invalid configuration: config key {path}: {}",
                e.into_inner()
            )
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks every section; the error names the bad key.
    pub(crate) fn validate(&self) -> Result<()> {
        self.http.validate()?;
        self.storage.validate()?;
        self.ingest.validate()?;
        self.query.validate()?;
        self.cluster.validate()?;
        self.limits.validate()?;
        Ok(())
    }

    pub(crate) fn listen_addr(&self) -> Result<std::net::SocketAddr> {
        Ok(self.http.listen_addr()?)
    }

    /// The HTTP server's timeouts and connection cap from the `http:` section.
    pub(crate) fn server_options(&self) -> Result<cairn_api::ServerOptions> {
        Ok(self.http.server_options()?)
    }

    /// The HTTP layer's settings (body size, read pool, ingest and query
    /// limits) from the `ingest:` and `query:` sections.
    /// The engine reads the downsampled namespaces of `storage:`.
    pub(crate) fn api_config(&self) -> Result<cairn_api::ApiConfig> {
        let mut c = cairn_api::config::api_config(&self.ingest, &self.query)?;
        let storage = self.storage_config()?;
        let pass_ms = storage.flush_interval.as_millis() as i64;
        c.rollup_input_horizon_ms = storage.rollup_input_horizon().map(|h| h.as_millis() as i64);
        for ns in storage.namespaces {
            match ns.resolution {
                None => c.engine.raw_retention_ms = ns.retention_ms(),
                Some(r) => {
                    let r = r.as_millis() as i64;
                    c.engine.namespaces.push(cairn_promql::SourceNamespace {
                        resolution_ms: r,
                        retention_ms: ns.retention_ms(),
                        // The open window, the lateness (R + 1m), a pass.
                        lag_ms: 2 * r + 60_000 + pass_ms,
                        name: ns.name,
                    })
                }
            }
        }
        Ok(c)
    }

    /// The storage node's configuration from the `storage:` section (and
    /// `ingest.max-new-series-per-request`, which the store enforces).
    /// In a cluster the store has the cluster's shards (`cluster.shards`),
    /// so a series' shard is the same on every node.
    pub(crate) fn storage_config(&self) -> Result<cairn_storage::StorageConfig> {
        let mut c = self
            .storage
            .to_config(self.ingest.max_new_series_per_request)?;
        if self.cluster.is_cluster() {
            c.num_shards = self.cluster.shards;
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn every_file_in_config_dir_loads() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config");
        let mut n = 0;
        let files = std::fs::read_dir(root)
            .unwrap()
            .chain(std::fs::read_dir(format!("{root}/cluster")).unwrap())
            .chain(std::fs::read_dir(format!("{root}/examples")).unwrap());
        for e in files {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "yaml") {
                let flags = Overrides {
                    config_file: Some(p.clone()),
                    ..Default::default()
                };
                Config::load(&flags, &[]).unwrap_or_else(|e| panic!("{}: {e:#}", p.display()));
                n += 1;
            }
        }
        assert!(n >= 6);
    }

    /// The embedded config is the documented default: what it sets must be
    /// what each component's own default is, so the two cannot drift.
    #[test]
    fn embedded_config_equals_the_code_defaults() {
        let c = Config::load(&Overrides::default(), &[]).unwrap();
        assert_eq!(
            c.ingest.limits().unwrap(),
            cairn_common::IngestLimits::default()
        );
        assert_eq!(
            format!("{:?}", c.api_config().unwrap()),
            format!("{:?}", cairn_api::ApiConfig::default())
        );
        assert_eq!(
            format!("{:?}", c.storage_config().unwrap()),
            format!(
                "{:?}",
                cairn_storage::StorageConfig::new(&c.storage.data_dir)
            )
        );
        assert_eq!(
            c.server_options().unwrap(),
            cairn_api::ServerOptions::default()
        );
        // Every limit is listed, and off.
        assert_eq!(c.limits.0.len(), cairn_tenancy::Limits::NAMES.len());
        assert_eq!(
            c.limits.to_limits().unwrap(),
            cairn_tenancy::Limits::default()
        );
        assert!(c.auth.anonymous);
    }

    /// The local cluster's files: node ids 1–3, the same members, gRPC on
    /// 9301–9303, and the store with the cluster's shards.
    #[test]
    fn cluster_files_describe_one_cluster() {
        let mut placements = Vec::new();
        for i in 1..=3 {
            let flags = Overrides {
                config_file: Some(
                    format!(
                        "{}/../../config/cluster/node-{i}.yaml",
                        env!("CARGO_MANIFEST_DIR")
                    )
                    .into(),
                ),
                ..Default::default()
            };
            let c = Config::load(&flags, &[]).unwrap();
            assert_eq!(c.cluster.raft_id(), Some(i));
            assert_eq!(
                c.cluster.grpc_listen_addr().unwrap(),
                format!("127.0.0.1:930{i}")
            );
            assert_eq!(c.storage_config().unwrap().num_shards, c.cluster.shards);
            placements.push(c.cluster.initial_placement().unwrap());
        }
        assert!(placements.windows(2).all(|w| w[0] == w[1]));
        // A node id that is not a member is refused, naming the key.
        let env = [("CAIRN_CLUSTER_NODE_ID".to_string(), "node-1".to_string())];
        assert!(
            Config::load(&Overrides::default(), &env).is_ok(),
            "no members: single node"
        );
    }

    /// `storage.block-size` and `storage.retention` set the raw namespace,
    /// the only one in the list.
    #[test]
    fn block_size_and_retention_set_the_raw_namespace() {
        let env = vec![
            ("CAIRN_STORAGE_RETENTION".to_string(), "7d".to_string()),
            ("CAIRN_STORAGE_BLOCK_SIZE".to_string(), "1h".to_string()),
        ];
        let c = Config::load(&Overrides::default(), &env).unwrap();
        let sc = c.storage_config().unwrap();
        assert_eq!(
            sc.namespaces,
            vec![cairn_storage::Namespace::raw(
                Duration::from_secs(3600),
                Duration::from_secs(7 * 86_400)
            )]
        );
    }

    /// `storage.namespaces` adds aggregated namespaces after `raw`, each a
    /// policy or a policy with its block; a bad entry names its place.
    #[test]
    fn storage_namespaces_add_aggregated_namespaces() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ns.yaml");
        std::fs::write(
            &file,
            "storage:\n  namespaces:\n    - 5m:1y\n    - policy: 1h:5y\n      block-size: 30d\n",
        )
        .unwrap();
        let flags = Overrides {
            config_file: Some(file.clone()),
            ..Default::default()
        };
        let sc = Config::load(&flags, &[]).unwrap().storage_config().unwrap();
        let got: Vec<(&str, Option<u64>, u64, u64)> = sc
            .namespaces
            .iter()
            .map(|n| {
                (
                    n.name.as_str(),
                    n.resolution.map(|r| r.as_secs()),
                    n.retention.as_secs() / 86_400,
                    n.block.as_secs() / 3600,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("raw", None, 30, 2),
                ("agg_5m_1y", Some(300), 365, 24),
                ("agg_1h_5y", Some(3600), 5 * 365, 30 * 24),
            ]
        );
        for (yaml, needle) in [
            ("    - 5m\n", "storage.namespaces[0]"),
            ("    - 5m:1y\n    - 300s:365d\n", "agg_5m_1y"),
            ("    - raw:7d\n", "storage.retention"),
            ("    - 1m:1h\n", "block"),
            (
                "    - policy: 5m:1y\n      block-size: 10s\n",
                "at least 1m",
            ),
        ] {
            std::fs::write(&file, format!("storage:\n  namespaces:\n{yaml}")).unwrap();
            let e = format!("{:#}", Config::load(&flags, &[]).unwrap_err());
            assert!(e.contains(needle), "{yaml:?}: {e}");
        }
    }

    #[test]
    fn env_overrides_file_and_flags_override_env() {
        let env = vec![
            ("CAIRN_INGEST_MAX_BODY_SIZE".to_string(), "1MiB".to_string()),
            ("CAIRN_DATA_DIR".to_string(), "/env".to_string()),
            ("CAIRN_STORAGE_FSYNC".to_string(), "10ms".to_string()),
        ];
        let flags = Overrides {
            data_dir: Some("/flag".into()),
            ..Default::default()
        };
        let c = Config::load(&flags, &env).unwrap();
        assert_eq!(c.api_config().unwrap().max_body_size, 1 << 20);
        assert_eq!(c.storage.data_dir, PathBuf::from("/flag"));
        assert_eq!(
            c.storage_config().unwrap().fsync,
            cairn_storage::FsyncPolicy::Periodic(Duration::from_millis(10))
        );
        let other = vec![("CAIRN_E2E_SEED".to_string(), "7".to_string())];
        assert!(Config::load(&Overrides::default(), &other).is_ok());
        let typo = vec![("CAIRN_STORAGE_RETENTON".to_string(), "7d".to_string())];
        let e = format!(
            "{:#}",
            Config::load(&Overrides::default(), &typo).unwrap_err()
        );
        assert!(e.contains("retenton"), "{e}");
        let bad = vec![("CAIRN_STORAGE_RETENTION".to_string(), "forever".to_string())];
        let e = Config::load(&Overrides::default(), &bad)
            .unwrap_err()
            .to_string();
        assert!(e.contains("storage.retention"), "{e}");
    }

    #[test]
    fn http_limits_load_and_bad_values_name_the_key() {
        let c = Config::load(&Overrides::default(), &[]).unwrap();
        assert_eq!(
            c.server_options().unwrap(),
            cairn_api::ServerOptions::default()
        );
        let env = vec![
            ("CAIRN_HTTP_MAX_CONNECTIONS".to_string(), "50".to_string()),
            ("CAIRN_HTTP_IDLE_TIMEOUT".to_string(), "1m30s".to_string()),
        ];
        let o = Config::load(&Overrides::default(), &env)
            .unwrap()
            .server_options()
            .unwrap();
        assert_eq!(o.max_connections, 50);
        assert_eq!(o.idle_timeout, Duration::from_secs(90));
        for (k, v, key) in [
            ("CAIRN_HTTP_MAX_CONNECTIONS", "0", "http.max-connections"),
            (
                "CAIRN_HTTP_HEADER_READ_TIMEOUT",
                "0s",
                "http.header-read-timeout",
            ),
            (
                "CAIRN_HTTP_BODY_READ_TIMEOUT",
                "soon",
                "http.body-read-timeout",
            ),
        ] {
            let e = format!(
                "{:#}",
                Config::load(&Overrides::default(), &[(k.to_string(), v.to_string())]).unwrap_err()
            );
            assert!(e.contains(key), "{e}");
        }
    }

    /// A value of the wrong form is refused by the section's own types,
    /// naming `section.key`; a range error by the section's `validate()`.
    #[test]
    fn typed_values_name_their_key() {
        for (k, v, key) in [
            ("CAIRN_STORAGE_FSYNC", "sometimes", "storage.fsync"),
            (
                "CAIRN_STORAGE_HEAD_MAX_BYTES",
                "4 parsecs",
                "storage.head-max-bytes",
            ),
            ("CAIRN_STORAGE_NUM_SHARDS", "0", "storage.num-shards"),
            ("CAIRN_STORAGE_BLOCK_SIZE", "10s", "storage.block-size"),
            ("CAIRN_QUERY_MAX_LENGTH", "lots", "query.max-length"),
            (
                "CAIRN_QUERY_MAX_CONCURRENCY",
                "2000",
                "query.max-concurrency",
            ),
            ("CAIRN_INGEST_MAX_FUTURE", "later", "ingest.max-future"),
            (
                "CAIRN_INGEST_MAX_LABELS_PER_SERIES",
                "0",
                "ingest.max-labels-per-series",
            ),
            ("CAIRN_HTTP_LISTEN", "nowhere", "http.listen"),
        ] {
            let e = format!(
                "{:#}",
                Config::load(&Overrides::default(), &[(k.to_string(), v.to_string())]).unwrap_err()
            );
            assert!(e.contains(&format!("config key {key}")), "{k}={v}: {e}");
        }
        // A size may be a plain number of bytes.
        let env = [("CAIRN_QUERY_MAX_LENGTH".to_string(), "1000".to_string())];
        let c = Config::load(&Overrides::default(), &env).unwrap();
        assert_eq!(c.api_config().unwrap().engine.max_query_length, 1000);
    }
}
