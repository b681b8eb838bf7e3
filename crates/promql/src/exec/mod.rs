//! Running a plan: the evaluator's state and its node evaluators.
//!
//! Layers, lowest first (each imports only those before it):
//! `state` (per-node state: cursors, caches, values computed ahead) →
//! `ctx` (the [`Evaluator`](ctx::Evaluator): fetched data, settings, selectors,
//! annotations) → `aggr`, `binop`, `call` (one node at one step) → `serieswise`
//! (a node at every step at once) → `step` (the dispatcher) → `fold`
//! (aggregations folded while their selector is read) → `run` (validate,
//! plan, fetch, execute).

pub(crate) mod aggr;
pub(crate) mod binop;
pub(crate) mod call;
pub(crate) mod ctx;
pub(crate) mod fold;
pub(crate) mod run;
pub(crate) mod serieswise;
pub(crate) mod state;
pub(crate) mod step;
