//! Configuration: embedded defaults (`config/cairn.yaml`), then the file given
//! with `--config`, then `CAIRN_…` environment variables, then flags.

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use serde_yaml::{Mapping, Value};
use std::path::PathBuf;
use std::time::Duration;

pub(crate) const DEFAULT_YAML: &str = include_str!("../../../config/cairn.yaml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct HttpConfig {
    pub listen: String,
    pub header_read_timeout: String,
    pub idle_timeout: String,
    pub body_read_timeout: String,
    pub max_connections: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct StorageSection {
    pub data_dir: PathBuf,
    pub fsync: String,
    pub block_size: String,
    pub buffer_past: String,
    pub retention: String,
    pub num_shards: u32,
    pub flush_interval: String,
    pub head_max_bytes: String,
    pub commitlog_segment_size: String,
    pub index_cache_size: String,
    /// A damaged commit-log record refuses the start instead of being
    /// skipped and counted (default false).
    #[serde(default)]
    pub strict_replay: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct IngestSection {
    pub max_body_size: String,
    pub max_decoded_size: String,
    pub max_labels_per_series: usize,
    pub max_label_name_length: usize,
    pub max_label_value_length: usize,
    pub max_series_per_request: usize,
    pub max_new_series_per_request: usize,
    pub max_future: String,
    pub max_concurrency: usize,
    pub max_queue_duration: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct QuerySection {
    pub lookback_delta: String,
    pub max_samples: usize,
    pub timeout: String,
    pub max_length: String,
    pub max_nesting_depth: usize,
    pub max_concurrency: usize,
    pub max_queued: usize,
    pub remote_read_sample_limit: usize,
    pub remote_read_concurrent_limit: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct Config {
    pub http: HttpConfig,
    pub storage: StorageSection,
    pub ingest: IngestSection,
    pub query: QuerySection,
}

/// Parses `2h`, `30d`, `10ms`, `1m30s`.
pub(crate) fn parse_duration(key: &str, s: &str) -> Result<Duration> {
    let ms = cairn_common::duration::parse_units_ms(s.trim()).ok_or_else(|| {
        anyhow!("config key {key}: {s:?} is not a duration (e.g. 10ms, 15s, 2h, 30d)")
    })?;
    Ok(Duration::from_millis(ms as u64))
}

/// Parses `64MiB`, `1GiB`, `512KiB`, `1MB`, `1000`.
pub(crate) fn parse_size(key: &str, s: &str) -> Result<u64> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| anyhow!("config key {key}: {s:?} is not a size (e.g. 64MiB)"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" => 1000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        u => bail!("config key {key}: unknown size unit {u:?} in {s:?} (use B, KiB, MiB, GiB)"),
    };
    n.checked_mul(mult)
        .ok_or_else(|| anyhow!("config key {key}: {s:?} is too large"))
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
                "CONFIG" | "FAILPOINT" | "LOG" => {}
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
        let cfg: Config = serde_yaml::from_value(v).context("invalid configuration")?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks every value and names the bad key.
    pub(crate) fn validate(&self) -> Result<()> {
        self.listen_addr()?;
        self.server_options()?;
        self.storage_config()?;
        self.max_body_size()?;
        self.ingest_limits()?;
        self.engine_options()?;
        let q = &self.query;
        for (key, v) in [
            ("query.max-concurrency", q.max_concurrency),
            ("query.remote-read-sample-limit", q.remote_read_sample_limit),
            (
                "query.remote-read-concurrent-limit",
                q.remote_read_concurrent_limit,
            ),
        ] {
            if v == 0 {
                bail!("config key {key}: must be positive");
            }
        }
        if q.max_concurrency > 1024 {
            bail!("config key query.max-concurrency: at most 1024 (each query thread reserves a 64 MiB stack)");
        }
        Ok(())
    }

    /// `:9201` means all interfaces.
    pub(crate) fn listen_addr(&self) -> Result<std::net::SocketAddr> {
        let l = &self.http.listen;
        let full = if l.starts_with(':') {
            format!("0.0.0.0{l}")
        } else {
            l.clone()
        };
        full.parse().map_err(|_| {
            anyhow!("config key http.listen: {l:?} is not an address like :9201 or 127.0.0.1:9201")
        })
    }

    /// The HTTP server's timeouts and connection cap from the `http:` section.
    pub(crate) fn server_options(&self) -> Result<cairn_api::ServerOptions> {
        let h = &self.http;
        let positive = |key: &str, v: &str| -> Result<Duration> {
            let d = parse_duration(key, v)?;
            if d.is_zero() {
                bail!("config key {key}: must be positive");
            }
            Ok(d)
        };
        if h.max_connections == 0 {
            bail!("config key http.max-connections: must be positive");
        }
        Ok(cairn_api::ServerOptions {
            header_read_timeout: positive("http.header-read-timeout", &h.header_read_timeout)?,
            idle_timeout: positive("http.idle-timeout", &h.idle_timeout)?,
            body_read_timeout: positive("http.body-read-timeout", &h.body_read_timeout)?,
            max_connections: h.max_connections,
        })
    }

    /// The PromQL engine's options from the `query:` section.
    pub(crate) fn engine_options(&self) -> Result<cairn_promql::EngineOptions> {
        let lookback = parse_duration("query.lookback-delta", &self.query.lookback_delta)?;
        if lookback.is_zero() {
            bail!("config key query.lookback-delta: must be positive");
        }
        if self.query.max_samples == 0 {
            bail!("config key query.max-samples: must be positive");
        }
        let max_length = parse_size("query.max-length", &self.query.max_length)? as usize;
        if max_length == 0 {
            bail!("config key query.max-length: must be positive");
        }
        // The read threads' stack holds this many levels with a wide margin
        // (measured: a level costs well under 8 KiB in a debug build).
        if self.query.max_nesting_depth == 0 || self.query.max_nesting_depth > 4000 {
            bail!("config key query.max-nesting-depth: must be 1..=4000");
        }
        Ok(cairn_promql::EngineOptions {
            lookback_delta_ms: lookback.as_millis() as i64,
            max_samples: self.query.max_samples,
            timeout: parse_duration("query.timeout", &self.query.timeout)?,
            max_query_length: max_length,
            max_nesting_depth: self.query.max_nesting_depth,
        })
    }

    /// The HTTP layer's settings (body size, read pool, ingest and query
    /// limits) from the `ingest:` and `query:` sections.
    pub(crate) fn api_config(&self) -> Result<cairn_api::ApiConfig> {
        Ok(cairn_api::ApiConfig {
            max_body_size: self.max_body_size()?,
            engine: self.engine_options()?,
            max_concurrency: self.query.max_concurrency,
            max_queued: self.query.max_queued,
            ingest: self.ingest_limits()?,
            remote_read_sample_limit: self.query.remote_read_sample_limit,
            remote_read_concurrent_limit: self.query.remote_read_concurrent_limit,
            write_concurrency: self.ingest.max_concurrency,
            write_queue_wait: parse_duration(
                "ingest.max-queue-duration",
                &self.ingest.max_queue_duration,
            )?,
        })
    }

    /// The ingest limits from the `ingest:` section, checked against the
    /// bounds the on-disk encodings hold.
    pub(crate) fn ingest_limits(&self) -> Result<cairn_common::IngestLimits> {
        let i = &self.ingest;
        let l = cairn_common::IngestLimits {
            max_labels_per_series: i.max_labels_per_series,
            max_label_name_length: i.max_label_name_length,
            max_label_value_length: i.max_label_value_length,
            max_series_per_request: i.max_series_per_request,
            max_new_series_per_request: i.max_new_series_per_request,
            max_decoded_size: parse_size("ingest.max-decoded-size", &i.max_decoded_size)? as usize,
            max_future_ms: parse_duration("ingest.max-future", &i.max_future)?.as_millis() as i64,
        };
        l.validate().map_err(|e| anyhow!("config key {e}"))?;
        Ok(l)
    }

    pub(crate) fn max_body_size(&self) -> Result<usize> {
        Ok(parse_size("ingest.max-body-size", &self.ingest.max_body_size)? as usize)
    }

    pub(crate) fn storage_config(&self) -> Result<cairn_storage::StorageConfig> {
        let s = &self.storage;
        let mut c = cairn_storage::StorageConfig::new(&s.data_dir);
        c.fsync = match s.fsync.as_str() {
            "always" => cairn_storage::FsyncPolicy::Always,
            other => {
                let d = parse_duration("storage.fsync", other)
                    .map_err(|_| anyhow!("config key storage.fsync: {other:?} must be \"always\" or a period like 10ms"))?;
                if d.is_zero() {
                    cairn_storage::FsyncPolicy::Always
                } else {
                    cairn_storage::FsyncPolicy::Periodic(d)
                }
            }
        };
        // storage.block-size and storage.retention are the raw namespace's.
        let block = parse_duration("storage.block-size", &s.block_size)?;
        if block < Duration::from_secs(60) {
            bail!("config key storage.block-size: must be at least 1m");
        }
        c.buffer_past = parse_duration("storage.buffer-past", &s.buffer_past)?;
        let retention = parse_duration("storage.retention", &s.retention)?;
        if retention < block {
            bail!("config key storage.retention: must be at least storage.block-size");
        }
        let raw = c.raw_mut();
        raw.block = block;
        raw.retention = retention;
        if s.num_shards == 0 || s.num_shards > 4096 {
            bail!("config key storage.num-shards: must be 1..=4096");
        }
        c.num_shards = s.num_shards;
        c.flush_interval = parse_duration("storage.flush-interval", &s.flush_interval)?;
        c.head_max_bytes = parse_size("storage.head-max-bytes", &s.head_max_bytes)?;
        c.max_segment_bytes =
            parse_size("storage.commitlog-segment-size", &s.commitlog_segment_size)?;
        c.index_cache_bytes = parse_size("storage.index-cache-size", &s.index_cache_size)?;
        c.max_new_series_per_request = self.ingest.max_new_series_per_request;
        c.strict_replay = s.strict_replay;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_in_config_dir_loads() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config");
        let mut n = 0;
        for e in std::fs::read_dir(dir).unwrap() {
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
        assert!(n >= 2);
    }

    /// The embedded config is the documented default: what it sets must be
    /// what each component's own default is, so the two cannot drift.
    #[test]
    fn embedded_config_equals_the_code_defaults() {
        let c = Config::load(&Overrides::default(), &[]).unwrap();
        assert_eq!(
            c.ingest_limits().unwrap(),
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
        assert_eq!(c.max_body_size().unwrap(), 1 << 20);
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
}
