//! The router: every route's path written once (the [`path`] constants,
//! which are also the `route` label of `cairn_api_http_requests_total`),
//! with its methods and handler, grouped by the role that mounts them
//! (gateway: writes; query: reads; always on: status, health, metrics,
//! admin); the body limit and the request-metrics layer wrap them all.

use crate::state::AppState;
use crate::tenancy::Need;
use crate::{
    admin, cardinality, export, metadata, metrics_routes, query, remote_read, status, tenants,
    write,
};
use axum::extract::DefaultBodyLimit;
use axum::handler::Handler;
use axum::routing::{delete, get, post, MethodRouter};
use axum::Extension;
use axum::Router;
use cairn_tenancy::Scope;

/// Route paths, as matched (and as counted by the request-metrics layer).
pub mod path {
    pub const WRITE: &str = "/api/v1/write";
    /// Cortex's and older clients' remote-write path.
    pub const WRITE_LEGACY: &str = "/api/v1/prom/remote/write";
    pub const SERIES: &str = "/api/v1/series";
    pub const LABELS: &str = "/api/v1/labels";
    pub const LABEL_VALUES: &str = "/api/v1/label/{name}/values";
    pub const EXPORT: &str = "/api/v1/export";
    pub const QUERY: &str = "/api/v1/query";
    pub const QUERY_RANGE: &str = "/api/v1/query_range";
    pub const QUERY_EXEMPLARS: &str = "/api/v1/query_exemplars";
    pub const METADATA: &str = "/api/v1/metadata";
    pub const FORMAT_QUERY: &str = "/api/v1/format_query";
    pub const BUILDINFO: &str = "/api/v1/status/buildinfo";
    pub const CONFIG: &str = "/api/v1/status/config";
    pub const FLAGS: &str = "/api/v1/status/flags";
    /// Prometheus's TSDB status (cardinality), with VictoriaMetrics's extensions.
    pub const TSDB_STATUS: &str = "/api/v1/status/tsdb";
    /// Mimir's label-names cardinality.
    pub const CARDINALITY_LABEL_NAMES: &str = "/api/v1/cardinality/label_names";
    /// Mimir's label-values cardinality.
    pub const CARDINALITY_LABEL_VALUES: &str = "/api/v1/cardinality/label_values";
    pub const READ: &str = "/api/v1/read";
    pub const FLUSH: &str = "/admin/v1/flush";
    pub const SNAPSHOT: &str = "/admin/v1/snapshot";
    pub const CLUSTER: &str = "/admin/v1/cluster";
    pub const TENANTS: &str = "/admin/v1/tenants";
    pub const TENANT: &str = "/admin/v1/tenants/{id}";
    pub const TENANT_LIMITS: &str = "/admin/v1/tenants/{id}/limits";
    pub const TENANT_RULES: &str = "/admin/v1/tenants/{id}/drop_rules";
    pub const TENANT_MAPPING: &str = "/admin/v1/tenants/{id}/mapping_rules";
    pub const TENANT_ROLLUPS: &str = "/admin/v1/tenants/{id}/rollup_rules";
    pub const TENANT_TOKENS: &str = "/admin/v1/tenants/{id}/tokens";
    pub const TENANT_TOKEN: &str = "/admin/v1/tenants/{id}/tokens/{token}";
    pub const TENANT_USAGE: &str = "/admin/v1/tenants/{id}/usage";
    pub const ADMIN_TOKENS: &str = "/admin/v1/tokens";
    pub const ADMIN_TOKEN: &str = "/admin/v1/tokens/{token}";
    /// Mimir's: the caller's own tenant's limits.
    pub const USER_LIMITS: &str = "/api/v1/user_limits";
    pub const METRICS: &str = "/metrics";
    pub const HEALTHY: &str = "/-/healthy";
    pub const READY: &str = "/-/ready";
}

/// `GET` and `POST` to one handler (Prometheus's read endpoints take both,
/// POST with a form body).
fn get_or_post<H, T>(h: H) -> MethodRouter<AppState>
where
    H: Handler<T, AppState> + Clone,
    T: 'static,
{
    get(h.clone()).post(h)
}

/// Routes not yet given their state and layers: what a role mounts
/// ([`write_routes`], [`read_routes`], [`status_routes`]), merged and
/// finished into a router by [`build`].
pub type Routes = Router<AppState>;

/// The gateway's routes: remote write (both paths); they need the write scope.
pub fn write_routes() -> Routes {
    Router::new()
        .route(path::WRITE, post(write::remote_write))
        .route(path::WRITE_LEGACY, post(write::remote_write))
        .layer(Extension(Need(Scope::Write)))
}

/// The query role's routes: every read (PromQL, series metadata, export,
/// exemplars, remote read, cardinality).
pub fn read_routes() -> Routes {
    Router::new()
        .route(path::SERIES, get_or_post(metadata::series))
        .route(path::LABELS, get_or_post(metadata::labels))
        .route(path::LABEL_VALUES, get(metadata::label_values))
        .route(path::EXPORT, get_or_post(export::export))
        .route(path::QUERY, get_or_post(query::instant_query))
        .route(path::QUERY_RANGE, get_or_post(query::range_query))
        .route(path::QUERY_EXEMPLARS, get_or_post(query::query_exemplars))
        .route(path::METADATA, get(metadata::metadata))
        .route(path::FORMAT_QUERY, get_or_post(query::format_query))
        .route(path::READ, post(remote_read::remote_read))
        .route(path::USER_LIMITS, get(tenants::user_limits))
        .route(
            path::TSDB_STATUS,
            get_or_post(cardinality::tsdb_status_handler),
        )
        .route(
            path::CARDINALITY_LABEL_NAMES,
            get_or_post(cardinality::label_names),
        )
        .route(
            path::CARDINALITY_LABEL_VALUES,
            get_or_post(cardinality::label_values),
        )
        .layer(Extension(Need(Scope::Read)))
}

/// The routes every node serves whatever its roles: status, health,
/// readiness, self-metrics and admin.
pub fn status_routes() -> Routes {
    Router::new()
        .route(path::BUILDINFO, get(status::buildinfo))
        .route(path::CONFIG, get(status::status_config))
        .route(path::FLAGS, get(status::status_flags))
        .route(path::FLUSH, post(admin::flush))
        .route(path::SNAPSHOT, post(admin::snapshot))
        .route(path::CLUSTER, get(admin::cluster))
        .route(path::TENANTS, get(tenants::list).post(tenants::create))
        .route(
            path::TENANT,
            get(tenants::get)
                .put(tenants::put)
                .patch(tenants::patch)
                .delete(tenants::delete),
        )
        .route(
            path::TENANT_LIMITS,
            get(tenants::get_limits).put(tenants::put_limits),
        )
        .route(
            path::TENANT_RULES,
            get(tenants::get_rules).put(tenants::put_rules),
        )
        .route(
            path::TENANT_MAPPING,
            get(tenants::get_mapping).put(tenants::put_mapping),
        )
        .route(
            path::TENANT_ROLLUPS,
            get(tenants::get_rollups).put(tenants::put_rollups),
        )
        .route(
            path::TENANT_TOKENS,
            get(tenants::list_tokens).post(tenants::create_token),
        )
        .route(path::TENANT_TOKEN, delete(tenants::revoke_token))
        .route(path::TENANT_USAGE, get(tenants::usage))
        .route(
            path::ADMIN_TOKENS,
            get(tenants::list_admin_tokens).post(tenants::create_admin_token),
        )
        .route(path::ADMIN_TOKEN, delete(tenants::revoke_admin_token))
        .route(path::METRICS, get(metrics_routes::metrics))
        .route(path::HEALTHY, get(status::healthy))
        .route(path::READY, get(status::ready))
}

/// The router over `routes`: the body limit and the request-metrics layer
/// wrap them all.
pub fn build(routes: Routes, state: AppState) -> Router {
    let limit = state.0.cfg.max_body_size;
    routes
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics_routes::count_requests,
        ))
        .with_state(state)
}

/// The full router: every role's routes.
pub fn router(state: AppState) -> Router {
    build(
        write_routes().merge(read_routes()).merge(status_routes()),
        state,
    )
}
