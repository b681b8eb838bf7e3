//! Tenants on a node: the directory the HTTP layer reads them from (the
//! metadata store's tenancy records, as applied on this node, with the
//! config's default limits), the one-member metadata store a single node
//! runs so its tenants, limits and tokens are kept the same way a
//! cluster's are, and the operator CLI (`cairn tenant …`, `cairn token …`)
//! that calls the admin API.

use crate::roles::{BoxFuture, Service};
use anyhow::{anyhow, bail, Context, Result};
use cairn_meta::{Command, Meta, MetaError};
use cairn_tenancy::{Change, ChangeError, Directory, Limits, View, ViewCache};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// The tenancy records of the metadata store running on this node.
#[derive(Debug)]
pub(crate) struct MetaDirectory {
    meta: Arc<OnceLock<Meta>>,
    cache: ViewCache,
}

impl MetaDirectory {
    pub(crate) fn new(meta: Arc<OnceLock<Meta>>, defaults: Limits) -> Arc<Self> {
        Arc::new(MetaDirectory {
            meta,
            cache: ViewCache::new(defaults),
        })
    }
}

fn change_error(e: MetaError) -> ChangeError {
    match e {
        MetaError::Refused(c) => c,
        e => ChangeError::Unavailable(format!(
            "the metadata store cannot take the change now: {e}"
        )),
    }
}

impl Directory for MetaDirectory {
    fn view(&self) -> Arc<View> {
        match self.meta.get() {
            Some(m) => self.cache.view_of(&m.tenancy().borrow()),
            None => self.cache.view_of(&Arc::default()),
        }
    }

    fn change(&self, change: Change) -> BoxFuture<'static, Result<(), ChangeError>> {
        let meta = self.meta.get().cloned();
        Box::pin(async move {
            let meta = meta.ok_or_else(|| {
                ChangeError::Unavailable("the metadata store is not started".into())
            })?;
            meta.propose(Command::Tenancy(change))
                .await
                .map_err(change_error)?;
            // Applied at the leader; a linearizable read returns once it is
            // applied here too, so this node's next answer shows it.
            meta.read_state().await.map_err(change_error)?;
            Ok(())
        })
    }
}

/// The tenants' mapping rules, as the storage node's downsampling pass
/// asks for them: from the directory's view as applied on this node, so a
/// rule changed through the admin API on any node is followed from the
/// next pass on, without a restart.
#[derive(Debug)]
pub(crate) struct DirectoryMapping(pub(crate) Arc<dyn Directory>);

impl cairn_storage::downsample::Mapping for DirectoryMapping {
    fn rules(
        &self,
        tenant: &str,
        labels: &cairn_common::Labels,
    ) -> Vec<cairn_downsample::MatchedMapping> {
        let view = self.0.view();
        if !view.has_tenant(tenant) {
            return Vec::new();
        }
        let t = view.tenant(tenant);
        if t.mapping.is_empty() {
            return Vec::new();
        }
        t.mapping
            .matching(labels.iter().map(|l| (l.name.as_str(), l.value.as_str())))
    }
}

/// A single node's metadata store: one member (it elects itself), in
/// `<data-dir>/meta`, holding tenants, limits and tokens.
pub(crate) struct SingleMeta {
    meta: Arc<OnceLock<Meta>>,
    cfg: Option<cairn_meta::MetaConfig>,
}

impl SingleMeta {
    pub(crate) fn new(data_dir: std::path::PathBuf, shards: u32) -> Result<Self> {
        let node = cairn_cluster::Node::new("local", "127.0.0.1:0", "127.0.0.1:0");
        let placement = cairn_cluster::Placement::initial(vec![node], shards, 1)
            .map_err(|e| anyhow!("a single node's placement: {e}"))?;
        Ok(SingleMeta {
            meta: Arc::default(),
            cfg: Some(cairn_meta::MetaConfig {
                id: 1,
                data_dir,
                peers: [(1, "127.0.0.1:0".to_string())].into_iter().collect(),
                initial_placement: placement,
                snapshot_every: 1000,
            }),
        })
    }

    pub(crate) fn cell(&self) -> Arc<OnceLock<Meta>> {
        self.meta.clone()
    }
}

impl Service for SingleMeta {
    fn name(&self) -> &'static str {
        "meta"
    }

    fn start(&mut self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async {
            if let Some(cfg) = self.cfg.take() {
                let m = Meta::start(cfg).context("starting the metadata store")?;
                let _ = self.meta.set(m);
            }
            Ok(())
        })
    }

    fn stop(&mut self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async {
            if let Some(m) = self.meta.get() {
                m.stop().await;
            }
            Ok(())
        })
    }
}

/// An admin API call: `method path` with an optional JSON body, the
/// bearer token; the answer's status and body. HTTP/1.1 over a plain
/// socket, one request per connection.
fn call(
    url: &str,
    token: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Result<(u16, String)> {
    let hostport = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("--url {url:?}: only http:// URLs are supported"))?
        .trim_end_matches('/');
    let mut s = std::net::TcpStream::connect(hostport)
        .with_context(|| format!("connecting to {hostport}"))?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {hostport}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes())?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    let text = String::from_utf8_lossy(&out);
    let (head, rest) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("{hostport} sent no HTTP answer"))?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow!("{hostport} sent no status line"))?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    Ok((status, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// The operator commands.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum TenantCmd {
    /// Create a tenant: `cairn tenant create team-a --limit ingestion-rate=20000`.
    Create {
        id: String,
        /// NAME=VALUE (repeatable); names as in the config's `limits:`.
        #[arg(long = "limit")]
        limits: Vec<String>,
    },
    /// List tenants.
    List,
    /// Show a tenant.
    Get {
        id: String,
    },
    /// Show a tenant's limits, or change them: `--set ingestion-rate=5000`,
    /// `--unset max-active-series` (back to the default).
    Limits {
        id: String,
        #[arg(long = "set")]
        set: Vec<String>,
        #[arg(long = "unset")]
        unset: Vec<String>,
    },
    /// Refuse the tenant's writes (403) until resumed.
    Suspend {
        id: String,
    },
    Resume {
        id: String,
    },
    /// Delete a tenant (its tokens are revoked; its data stays until retention).
    Delete {
        id: String,
    },
    /// A tenant's usage on the node asked.
    Usage {
        id: String,
    },
    /// Show a tenant's drop rules, or replace them with the JSON list in
    /// FILE (`-`: standard input), e.g. `[{"name": "go", "selector":
    /// "{__name__=~\"go_.*\"}", "action": "drop"}]`.
    DropRules {
        id: String,
        #[arg(long = "set", value_name = "FILE")]
        set: Option<PathBuf>,
    },
    /// Show a tenant's mapping rules (the storage policies its series are
    /// downsampled into), or replace them with the JSON list in FILE
    /// (`-`: standard input), e.g. `[{"name": "dev-raw-only", "selector":
    /// "{env=\"dev\"}", "policies": [], "cutover_ms": 1767225600000}]`
    /// (no `cutover_ms`: from now).
    MappingRules {
        id: String,
        #[arg(long = "set", value_name = "FILE")]
        set: Option<PathBuf>,
    },
    /// Show a tenant's rollup rules, or replace them with the JSON list in
    /// FILE (`-`: standard input), e.g. `[{"name": "svc", "selector":
    /// "{__name__=\"http_requests_total\"}", "by": ["service"], "output":
    /// "service:http_requests:increase", "drop_inputs": true}]`.
    RollupRules {
        id: String,
        #[arg(long = "set", value_name = "FILE")]
        set: Option<PathBuf>,
    },
}

/// The JSON in `file` (`-`: standard input), named in the error.
fn json_file(file: &Path) -> Result<serde_json::Value> {
    let text = if file == Path::new("-") {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading standard input")?;
        s
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?
    };
    serde_json::from_str(&text).with_context(|| format!("{}: not JSON", file.display()))
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum TokenCmd {
    /// Print a fresh random token (e.g. for CAIRN_ADMIN_TOKEN); nothing is stored.
    Generate,
    /// Create a token: `--tenant team-a --scopes write,read`, or an admin
    /// token with `--scopes admin` and no tenant. Printed once.
    Create {
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long, value_delimiter = ',')]
        scopes: Vec<String>,
        #[arg(long, default_value = "")]
        name: String,
    },
    /// List a tenant's tokens (`--tenant`), or the admin tokens.
    List {
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Revoke a token by its id.
    Revoke {
        id: String,
        #[arg(long)]
        tenant: Option<String>,
    },
}

/// Where the admin API is and the admin token to call it with.
#[derive(Debug, clap::Args)]
pub(crate) struct AdminTarget {
    /// The node's HTTP address.
    #[arg(long, global = true, default_value = "http://127.0.0.1:9201")]
    url: String,
    /// The admin token (default: $CAIRN_ADMIN_TOKEN).
    #[arg(long, global = true)]
    token: Option<String>,
}

impl AdminTarget {
    fn token(&self) -> Result<String> {
        self.token
            .clone()
            .or_else(|| std::env::var("CAIRN_ADMIN_TOKEN").ok())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| anyhow!("an admin token is needed: --token or CAIRN_ADMIN_TOKEN"))
    }

    /// Calls the API and prints the answer; an error status is an error.
    fn run(&self, method: &str, path: &str, body: Option<serde_json::Value>) -> Result<()> {
        let b = body.map(|b| b.to_string());
        let (status, text) = call(&self.url, &self.token()?, method, path, b.as_deref())?;
        let pretty = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| serde_json::to_string_pretty(v.get("data").unwrap_or(&v)).ok())
            .unwrap_or_else(|| text.trim().to_string());
        if !(200..300).contains(&status) {
            bail!("{method} {path}: HTTP {status}: {pretty}");
        }
        println!("{pretty}");
        Ok(())
    }
}

fn limit_pairs(pairs: &[String]) -> Result<serde_json::Map<String, serde_json::Value>> {
    let mut m = serde_json::Map::new();
    for p in pairs {
        let (k, v) = p
            .split_once('=')
            .ok_or_else(|| anyhow!("{p:?}: expected NAME=VALUE"))?;
        let v: u64 = v
            .parse()
            .map_err(|_| anyhow!("{p:?}: the value must be a whole number (0: off)"))?;
        m.insert(k.replace('-', "_"), v.into());
    }
    Ok(m)
}

pub(crate) fn tenant_cmd(t: &AdminTarget, cmd: TenantCmd) -> Result<()> {
    use serde_json::json;
    match cmd {
        TenantCmd::Create { id, limits } => t.run(
            "POST",
            "/admin/v1/tenants",
            Some(json!({"id": id, "limits": limit_pairs(&limits)?})),
        ),
        TenantCmd::List => t.run("GET", "/admin/v1/tenants", None),
        TenantCmd::Get { id } => t.run("GET", &format!("/admin/v1/tenants/{id}"), None),
        TenantCmd::Limits { id, set, unset } => {
            let path = format!("/admin/v1/tenants/{id}/limits");
            if set.is_empty() && unset.is_empty() {
                return t.run("GET", &path, None);
            }
            let mut m = limit_pairs(&set)?;
            for u in unset {
                m.insert(u.replace('-', "_"), serde_json::Value::Null);
            }
            t.run("PUT", &path, Some(serde_json::Value::Object(m)))
        }
        TenantCmd::Suspend { id } => t.run(
            "PATCH",
            &format!("/admin/v1/tenants/{id}"),
            Some(json!({"status": "suspended"})),
        ),
        TenantCmd::Resume { id } => t.run(
            "PATCH",
            &format!("/admin/v1/tenants/{id}"),
            Some(json!({"status": "active"})),
        ),
        TenantCmd::Delete { id } => t.run("DELETE", &format!("/admin/v1/tenants/{id}"), None),
        TenantCmd::Usage { id } => t.run("GET", &format!("/admin/v1/tenants/{id}/usage"), None),
        TenantCmd::DropRules { id, set } => {
            let path = format!("/admin/v1/tenants/{id}/drop_rules");
            match set {
                None => t.run("GET", &path, None),
                Some(f) => t.run("PUT", &path, Some(json_file(&f)?)),
            }
        }
        TenantCmd::RollupRules { id, set } => {
            let path = format!("/admin/v1/tenants/{id}/rollup_rules");
            match set {
                None => t.run("GET", &path, None),
                Some(f) => t.run("PUT", &path, Some(json_file(&f)?)),
            }
        }
        TenantCmd::MappingRules { id, set } => {
            let path = format!("/admin/v1/tenants/{id}/mapping_rules");
            match set {
                None => t.run("GET", &path, None),
                Some(f) => t.run("PUT", &path, Some(json_file(&f)?)),
            }
        }
    }
}

pub(crate) fn token_cmd(t: &AdminTarget, cmd: TokenCmd) -> Result<()> {
    use serde_json::json;
    match cmd {
        TokenCmd::Generate => {
            let n = cairn_tenancy::tokens::generate().map_err(|e| anyhow!(e))?;
            println!("{}", n.token);
            Ok(())
        }
        TokenCmd::Create {
            tenant,
            scopes,
            name,
        } => {
            let body = json!({"name": name, "scopes": scopes});
            match tenant {
                Some(id) => t.run(
                    "POST",
                    &format!("/admin/v1/tenants/{id}/tokens"),
                    Some(body),
                ),
                None => t.run("POST", "/admin/v1/tokens", Some(body)),
            }
        }
        TokenCmd::List { tenant } => match tenant {
            Some(id) => t.run("GET", &format!("/admin/v1/tenants/{id}/tokens"), None),
            None => t.run("GET", "/admin/v1/tokens", None),
        },
        TokenCmd::Revoke { id, tenant } => match tenant {
            Some(tn) => t.run(
                "DELETE",
                &format!("/admin/v1/tenants/{tn}/tokens/{id}"),
                None,
            ),
            None => t.run("DELETE", &format!("/admin/v1/tokens/{id}"), None),
        },
    }
}
