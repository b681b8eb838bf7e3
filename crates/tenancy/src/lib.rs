//! `cairn-tenancy`: tenants that cannot hurt each other.
//!
//! Owns: the records the metadata store replicates ([`Tenancy`]: tenants
//! with their status, limit overrides and drop rules; tokens as hashes) and
//! the [`Change`]s the admin API proposes (versioned, compare-and-set);
//! per-tenant [`Limits`] (0: off; defaults from config); [`DropRule`]s
//! (drop always, or shed by priority when over the rate; dry runs count
//! only); [`MappingRule`]s (the storage policies a selector's series are
//! downsampled into, from a cutover time); [`RollupRule`]s (counters summed
//! by some of their labels into a new series per window); bearer tokens (`tokens`: generated from the OS's randomness,
//! SHA-256 at rest, compared in constant time) and who a request is
//! ([`authenticate`]); the per-tenant GCRA [`RateLimiter`] that keeps its
//! state across limit changes; the write [`Gate`] that applies a tenant's
//! limits and rules to a validated batch and says what it discarded and
//! why; and the [`View`] a node reads all of it from, behind a
//! [`Directory`] (the metadata store in the binary, [`LocalDirectory`]
//! in one process).
//!
//! Must never depend on: the storage engine, the HTTP layer, the metadata
//! store's raft machinery — it is pure logic over `cairn-common`'s types.

mod auth;
mod config;
mod gate;
mod gcra;
mod limits;
mod mapping;
mod rollup;
mod rules;
mod series;
mod state;
pub mod tokens;
mod view;

pub use auth::{authenticate, AuthError, AuthPolicy, Caller, Credentials};
pub use config::{AuthSection, LimitsSection, MIN_ADMIN_TOKEN};
pub use gate::{adjust, retry_after_secs, Admitted, Gate, OverLimit, Reason, Refused};
pub use gcra::{RateLimiter, Verdict};
pub use limits::{check_overrides, Limits};
pub use mapping::{check_mapping_rules, keeps, CompiledMapping, MappingRule, MatchedMapping};
pub use rollup::{check_rollup_rules, CompiledRollups, RollupRule, INPUT_LABEL};
pub use rules::{check_rules, Class, CompiledRules, DropRule, RuleAction};
pub use series::{SeriesRefusal, SeriesTracker, IDLE};
pub use state::{Change, ChangeError, Status, Tenancy, TenantRecord};
pub use tokens::{NewToken, Scope, TokenRecord};
pub use view::{BoxFuture, Directory, LocalDirectory, TenantView, View, ViewCache};
