//! What the data path reads: a [`View`] of the tenancy state with every
//! tenant's effective limits and compiled rules and the tokens indexed by
//! hash, rebuilt when the state changes; and the [`Directory`] a node gets
//! it from and proposes changes through (the metadata store in the binary,
//! [`LocalDirectory`] in one process).

use crate::limits::Limits;
use crate::mapping::CompiledMapping;
use crate::rollup::CompiledRollups;
use crate::rules::CompiledRules;
use crate::state::{Change, ChangeError, Status, Tenancy};
use crate::tokens::{self, TokenRecord};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// One tenant as the data path sees it (the config's defaults for a
/// tenant with no record).
#[derive(Debug, Clone)]
pub struct TenantView {
    pub id: String,
    pub status: Status,
    pub limits: Limits,
    pub rules: CompiledRules,
    pub mapping: CompiledMapping,
    pub rollups: CompiledRollups,
    pub attribution_label: Option<String>,
    /// 0: no record (defaults only).
    pub version: u64,
}

/// The tenancy state compiled for lookups.
#[derive(Debug, Clone)]
pub struct View {
    pub state: Arc<Tenancy>,
    pub defaults: Limits,
    tenants: HashMap<String, Arc<TenantView>>,
    by_hash: HashMap<String, TokenRecord>,
}

impl View {
    pub fn new(state: Arc<Tenancy>, defaults: Limits) -> View {
        let mut tenants = HashMap::new();
        for (id, t) in &state.tenants {
            // Stored rules were checked when proposed; a rule that no longer
            // compiles (never expected) leaves the tenant without rules.
            let rules = CompiledRules::compile(&t.drop_rules).unwrap_or_default();
            let mapping = CompiledMapping::compile(&t.mapping_rules).unwrap_or_default();
            let rollups = CompiledRollups::compile(&t.rollup_rules).unwrap_or_default();
            tenants.insert(
                id.clone(),
                Arc::new(TenantView {
                    id: id.clone(),
                    status: t.status,
                    limits: defaults.with(&t.limits),
                    rules,
                    mapping,
                    rollups,
                    attribution_label: t.attribution_label.clone(),
                    version: t.version,
                }),
            );
        }
        let by_hash = state
            .tokens
            .values()
            .filter(|t| !t.revoked)
            .map(|t| (t.sha256.clone(), t.clone()))
            .collect();
        View {
            state,
            defaults,
            tenants,
            by_hash,
        }
    }

    /// `id`'s view: its record's, else the defaults.
    pub fn tenant(&self, id: &str) -> Arc<TenantView> {
        self.tenants.get(id).cloned().unwrap_or_else(|| {
            Arc::new(TenantView {
                id: id.to_string(),
                status: Status::Active,
                limits: self.defaults,
                rules: CompiledRules::default(),
                mapping: CompiledMapping::default(),
                rollups: CompiledRollups::default(),
                attribution_label: None,
                version: 0,
            })
        })
    }

    /// True when `id` has a record.
    pub fn has_tenant(&self, id: &str) -> bool {
        self.tenants.contains_key(id)
    }

    /// The live token whose hash is `sha256` (of a presented token), if
    /// any: looked up by hash, the hashes compared in constant time.
    pub fn token(&self, sha256: &str) -> Option<&TokenRecord> {
        let t = self.by_hash.get(sha256)?;
        tokens::same_hash(sha256, &t.sha256).then_some(t)
    }
}

/// A boxed future (the directory is used behind `dyn`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where a node reads tenants from and proposes changes to.
pub trait Directory: Send + Sync + std::fmt::Debug {
    /// The view as last applied on this node (cheap; follows changes).
    fn view(&self) -> Arc<View>;
    /// Proposes `change`; resolves once it is applied on this node.
    fn change(&self, change: Change) -> BoxFuture<'static, Result<(), ChangeError>>;
}

/// A directory held in this process only (tests, tools): changes apply at
/// once and are lost at exit.
#[derive(Debug)]
pub struct LocalDirectory {
    defaults: Limits,
    inner: Mutex<(Tenancy, Arc<View>)>,
}

impl LocalDirectory {
    pub fn new(defaults: Limits) -> Arc<LocalDirectory> {
        let t = Tenancy::default();
        let v = Arc::new(View::new(Arc::new(t.clone()), defaults));
        Arc::new(LocalDirectory {
            defaults,
            inner: Mutex::new((t, v)),
        })
    }
}

impl Directory for LocalDirectory {
    fn view(&self) -> Arc<View> {
        self.inner.lock().1.clone()
    }

    fn change(&self, change: Change) -> BoxFuture<'static, Result<(), ChangeError>> {
        let r = {
            let mut g = self.inner.lock();
            let r = g.0.apply(&change);
            if r.is_ok() {
                g.1 = Arc::new(View::new(Arc::new(g.0.clone()), self.defaults));
            }
            r
        };
        Box::pin(async move { r })
    }
}

/// A view that follows a source of states: rebuilt only when the state
/// it is given is a different one (pointer equality), so a directory over
/// a replicated store can ask for it on every request.
#[derive(Debug)]
pub struct ViewCache {
    defaults: Limits,
    cached: Mutex<Arc<View>>,
}

impl ViewCache {
    pub fn new(defaults: Limits) -> ViewCache {
        ViewCache {
            defaults,
            cached: Mutex::new(Arc::new(View::new(Arc::default(), defaults))),
        }
    }

    /// The view of `state`.
    pub fn view_of(&self, state: &Arc<Tenancy>) -> Arc<View> {
        let mut g = self.cached.lock();
        if !Arc::ptr_eq(&g.state, state) {
            *g = Arc::new(View::new(state.clone(), self.defaults));
        }
        g.clone()
    }
}
