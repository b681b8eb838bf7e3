//! The config sections this crate owns, as written: `http:` (the server's
//! limits, [`ServerOptions`], and the listen address) and `query:` (the
//! read pool and the engine's options), which with `cairn-ingest`'s
//! `ingest:` (the body limit, ingest limits, write turns) make
//! [`ApiConfig`]. Defaults: the embedded `config/cairn.yaml`, which a test
//! in the binary keeps equal to `ServerOptions::default()` and
//! `ApiConfig::default()`.

use crate::server::ServerOptions;
use crate::state::ApiConfig;
use cairn_common::config::{ByteSize, ConfigError, Duration};
use cairn_ingest::IngestSection;
use serde::Deserialize;

/// `http:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct HttpSection {
    /// `:9201` means all interfaces.
    pub listen: String,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub body_read_timeout: Duration,
    pub max_connections: usize,
}

impl HttpSection {
    /// Checks every value; the error names the bad key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.listen_addr()?;
        self.server_options().map(|_| ())
    }

    /// `http.listen` as a socket address (`:9201`: all interfaces).
    pub fn listen_addr(&self) -> Result<std::net::SocketAddr, ConfigError> {
        let l = &self.listen;
        let full = if l.starts_with(':') {
            format!("0.0.0.0{l}")
        } else {
            l.clone()
        };
        full.parse().map_err(|_| {
            ConfigError::new(
                "http.listen",
                format!("{l:?} is not an address like :9201 or 127.0.0.1:9201"),
            )
        })
    }

    /// The server's timeouts and connection cap.
    pub fn server_options(&self) -> Result<ServerOptions, ConfigError> {
        if self.max_connections == 0 {
            return Err(ConfigError::new("http.max-connections", "must be positive"));
        }
        Ok(ServerOptions {
            header_read_timeout: self
                .header_read_timeout
                .positive("http.header-read-timeout")?,
            idle_timeout: self.idle_timeout.positive("http.idle-timeout")?,
            body_read_timeout: self.body_read_timeout.positive("http.body-read-timeout")?,
            max_connections: self.max_connections,
        })
    }
}

/// `query:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct QuerySection {
    pub lookback_delta: Duration,
    pub max_samples: usize,
    pub timeout: Duration,
    pub max_length: ByteSize,
    pub max_nesting_depth: usize,
    pub max_concurrency: usize,
    pub max_queued: usize,
    pub remote_read_sample_limit: usize,
    pub remote_read_concurrent_limit: usize,
}

impl QuerySection {
    /// The PromQL engine's options.
    pub fn engine_options(&self) -> Result<cairn_promql::EngineOptions, ConfigError> {
        let lookback = self.lookback_delta.positive("query.lookback-delta")?;
        if self.max_samples == 0 {
            return Err(ConfigError::new("query.max-samples", "must be positive"));
        }
        let max_length = self.max_length.as_usize();
        if max_length == 0 {
            return Err(ConfigError::new("query.max-length", "must be positive"));
        }
        // The read threads' stack holds this many levels with a wide margin
        // (measured: a level costs well under 8 KiB in a debug build).
        if self.max_nesting_depth == 0 || self.max_nesting_depth > 4000 {
            return Err(ConfigError::new(
                "query.max-nesting-depth",
                "must be 1..=4000",
            ));
        }
        Ok(cairn_promql::EngineOptions {
            lookback_delta_ms: i64::try_from(lookback.as_millis()).unwrap_or(i64::MAX),
            max_samples: self.max_samples,
            timeout: self.timeout.get(),
            max_query_length: max_length,
            max_nesting_depth: self.max_nesting_depth,
            max_series: 0,
            // Set from the storage section by the binary.
            ..Default::default()
        })
    }

    /// Checks every value; the error names the bad key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.engine_options()?;
        for (key, v) in [
            ("query.max-concurrency", self.max_concurrency),
            (
                "query.remote-read-sample-limit",
                self.remote_read_sample_limit,
            ),
            (
                "query.remote-read-concurrent-limit",
                self.remote_read_concurrent_limit,
            ),
        ] {
            if v == 0 {
                return Err(ConfigError::new(key, "must be positive"));
            }
        }
        if self.max_concurrency > 1024 {
            return Err(ConfigError::new(
                "query.max-concurrency",
                "at most 1024 (each query thread reserves a 64 MiB stack)",
            ));
        }
        Ok(())
    }
}

/// The HTTP layer's settings from the `ingest:` and `query:` sections.
pub fn api_config(ingest: &IngestSection, query: &QuerySection) -> Result<ApiConfig, ConfigError> {
    Ok(ApiConfig {
        max_body_size: ingest.max_body_size.as_usize(),
        engine: query.engine_options()?,
        max_concurrency: query.max_concurrency,
        max_queued: query.max_queued,
        ingest: ingest.limits()?,
        remote_read_sample_limit: query.remote_read_sample_limit,
        remote_read_concurrent_limit: query.remote_read_concurrent_limit,
        write_concurrency: ingest.max_concurrency,
        write_queue_wait: ingest.max_queue_duration.get(),
        label_set_cache: ingest.label_set_cache,
        // Set from the cluster section by the binary.
        write_consistency: cairn_storage_api::WriteLevel::default(),
        // Set from the storage section by the binary.
        rollup_input_horizon_ms: None,
    })
}
