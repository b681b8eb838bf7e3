//! Folded aggregations: `aggr by (…) (f(selector[r]))` and `aggr by (…)
//! (selector)` in a range query,
//! computed while the selector is read in batches, series by series, so
//! its samples are never all held — here, or, when the store pushes
//! aggregations down (a cluster), partially on the nodes holding the data
//! ([`partial`] is what a node computes), their partials merged here.

use super::ctx::{note_later, note_not_counter, Evaluator};
use super::serieswise::{instant_values, range_fn_values, steps};
use super::state::Folded;
use super::step;
use crate::ast::{fold_shape, FoldInput};
use crate::fetch::{fetched, select_batched, storage_err};
use crate::kernels::aggr::{acc_add, acc_merge, acc_value, grouping_key, Acc};
use crate::plan::{NodeId, Nodes, Strategy};
use crate::value::{too_many_samples, QueryError, Result};
use cairn_common::{Labels, Matcher, SeriesData, SeriesId};
use cairn_storage_api::{
    decode_batch, next_batch, AggregateRequest, PartialAggregate, PartialCell, PartialGroup,
    SampleDigest, SelectRequest, SeriesReader, StoreError,
};
use promql_parser::parser::token::{TokenId, T_AVG, T_COUNT, T_GROUP, T_MAX, T_MIN, T_SUM};
use promql_parser::parser::{AggregateExpr, Expr};
use rustc_hash::FxHashMap as HashMap;
use std::sync::Arc;

/// One group's accumulators over the steps `first..first + accs.len()`.
struct GroupAccs {
    first: usize,
    accs: Vec<Acc>,
}

impl GroupAccs {
    /// Widens the accumulators to cover steps `from..to`; returns the cells
    /// added.
    fn widen(&mut self, from: usize, to: usize) -> usize {
        if self.accs.is_empty() {
            self.first = from;
        }
        let mut grown = 0;
        if from < self.first {
            let grow = self.first - from;
            self.accs
                .splice(0..0, std::iter::repeat_n(Acc::default(), grow));
            self.first = from;
            grown += grow;
        }
        if to > self.first + self.accs.len() {
            let grow = to - self.first - self.accs.len();
            self.accs.resize(self.accs.len() + grow, Acc::default());
            grown += grow;
        }
        grown
    }
}

/// The state of one aggregation folded over the series read so far.
struct Folder<'a> {
    ev: &'a Evaluator,
    a: &'a AggregateExpr,
    input: FoldInput<'a>,
    op: TokenId,
    index: HashMap<Labels, u32>,
    keys: Vec<Arc<Labels>>,
    groups: Vec<GroupAccs>,
    /// Per step: its groups in the order their first value came.
    order: Vec<Vec<u32>>,
    samples: Vec<usize>,
    odd: Vec<String>,
    vals: Vec<Option<f64>>,
    cells: usize,
    /// Samples and series read.
    mine: usize,
    series: usize,
    /// With a tenant: each series' digest, named by its id in that tenant.
    digests: Option<(&'a str, Vec<SampleDigest>)>,
}

impl<'a> Folder<'a> {
    fn new(
        ev: &'a Evaluator,
        a: &'a AggregateExpr,
        input: FoldInput<'a>,
        digests_of: Option<&'a str>,
    ) -> Self {
        let steps = steps(ev);
        Folder {
            ev,
            a,
            input,
            op: a.op.id(),
            index: HashMap::default(),
            keys: Vec::new(),
            groups: Vec::new(),
            order: vec![Vec::new(); steps],
            samples: vec![0usize; steps],
            odd: Vec::new(),
            vals: Vec::new(),
            cells: 0,
            mine: 0,
            series: 0,
            digests: digests_of.map(|t| (t, Vec::new())),
        }
    }

    /// Folds a batch in; `before`: the samples the query read before this
    /// selector. Ok(false) when folding saves nothing (accumulators past
    /// `floor_cells` and half the samples read).
    fn feed(&mut self, batch: Vec<SeriesData>, before: usize, floor_cells: usize) -> Result<bool> {
        let ev = self.ev;
        self.mine += batch.iter().map(|s| s.samples.len()).sum::<usize>();
        self.series += batch.len();
        if before + self.mine > ev.max_samples {
            return Err(too_many_samples());
        }
        ev.check_deadline()?;
        if let Some((tenant, d)) = &mut self.digests {
            for s in &batch {
                let mut g = SampleDigest::of(&s.samples);
                g.series = Some(SeriesId::of(tenant, &s.labels));
                d.push(g);
            }
        }
        let range = matches!(self.input, FoldInput::Range(..));
        let name = self.input.selector().name.as_deref();
        for sd in fetched(batch, range, name) {
            let vals = &mut self.vals;
            let first = match self.input {
                FoldInput::Range(rf, ms) => {
                    let (first, seen) = range_fn_values(ev, rf, ms, &sd, &mut self.samples, vals);
                    if seen {
                        note_later(&mut self.odd, rf, &sd);
                    }
                    first
                }
                FoldInput::Instant(vs) => instant_values(ev, vs, &sd, &mut self.samples, vals),
            };
            let Some(lo) = vals.iter().position(Option::is_some) else {
                continue;
            };
            let hi = vals.iter().rposition(Option::is_some).map_or(lo, |h| h + 1);
            let k = grouping_key(&sd.labels, &self.a.modifier);
            let g = match self.index.get(&k) {
                Some(&g) => g as usize,
                None => {
                    self.keys.push(Arc::new(k.clone()));
                    self.index.insert(k, self.keys.len() as u32 - 1);
                    self.groups.push(GroupAccs {
                        first: first + lo,
                        accs: Vec::new(),
                    });
                    self.keys.len() - 1
                }
            };
            // Widen the group's steps to this series' (rarely forward:
            // series mostly have similar spans).
            let ga = &mut self.groups[g];
            let (from, to) = (first + lo, first + hi);
            self.cells += ga.widen(from, to);
            for (i, v) in (from..to).zip(&vals[lo..hi]) {
                if let Some(v) = *v {
                    let acc = &mut ga.accs[i - ga.first];
                    if !acc.seen() {
                        self.order[i].push(g as u32);
                    }
                    acc_add(self.op, acc, v);
                }
            }
        }
        // Accumulators (40 bytes) beyond half the samples read (16 bytes):
        // folding saves nothing here.
        Ok(self.cells <= floor_cells.max(self.mine / 2))
    }

    /// The aggregation's results at every step.
    fn into_folded(self) -> Folded {
        let (op, groups) = (self.op, &self.groups);
        let values = self
            .order
            .iter()
            .enumerate()
            .map(|(i, gs)| {
                gs.iter()
                    .map(|&g| {
                        let ga = &groups[g as usize];
                        acc_value(op, &ga.accs[i - ga.first])
                    })
                    .collect()
            })
            .collect();
        note_odd(self.ev, self.a, &self.odd);
        Folded {
            steps: self.order.len(),
            keys: self.keys,
            values,
            order: self.order,
            samples: self.samples,
            drop_name: drops_name(self.input),
        }
    }

    /// The accumulators as they stand, for a caller merging them with
    /// other stores' (a node's answer to a pushed-down aggregation).
    fn into_partial(self) -> PartialAggregate {
        PartialAggregate {
            groups: self
                .keys
                .iter()
                .zip(self.groups)
                .map(|(k, g)| PartialGroup {
                    labels: (**k).clone(),
                    first: g.first as u32,
                    cells: g.accs.iter().map(cell_of).collect(),
                })
                .collect(),
            series: self.series as u64,
            samples: self.mine as u64,
            step_samples: self.samples.iter().map(|&n| n as u64).collect(),
            not_counters: self.odd,
            digests: self.digests.map(|(_, d)| d).unwrap_or_default(),
            shard_sums: Vec::new(),
        }
    }
}

fn cell_of(a: &Acc) -> PartialCell {
    PartialCell {
        value: a.value,
        kahan_c: a.kahan_c,
        mean: a.mean,
        count: a.count,
        incremental_mean: a.incremental_mean,
    }
}

fn acc_of(c: &PartialCell) -> Acc {
    Acc {
        value: c.value,
        kahan_c: c.kahan_c,
        mean: c.mean,
        count: c.count,
        incremental_mean: c.incremental_mean,
    }
}

fn drops_name(input: FoldInput<'_>) -> bool {
    match input {
        FoldInput::Range(rf, _) => !rf.keeps_name(),
        FoldInput::Instant(_) => false,
    }
}

/// The "might not be a counter" infos for the metric names in `odd`.
fn note_odd(ev: &Evaluator, a: &AggregateExpr, odd: &[String]) {
    for n in odd {
        let Expr::Call(c) = a.expr.as_ref() else {
            break;
        };
        note_not_counter(ev, n, &c.args.args[0]);
    }
}

/// The aggregations whose partials merge exactly: one accumulator per
/// group and step that two stores' accumulators combine into.
fn mergeable(op: TokenId) -> bool {
    matches!(op, T_SUM | T_AVG | T_MIN | T_MAX | T_COUNT | T_GROUP)
}

/// For an aggregation of [`fold_shape`] in a range query: reads the
/// selector's series (`matchers` over `[mint, maxt]`) in batches and folds
/// each series, as it arrives, into one accumulator per group and step:
/// `f` is computed over the series' steps with a sliding window, its group
/// found once. Only a batch of samples is held, never the selector's whole
/// data, and no per-step input vectors are built. Series are folded in the
/// source's order — the order the step path folds them, but that a store
/// may leave them unsorted for a fold (the storage node skips its label
/// sort), so sums may differ from the step path's in the last bits. Adds
/// the samples read to `loaded` (the query's sample limit).
///
/// A store that pushes aggregations down (a cluster) is asked first for
/// the partials of the aggregations that merge exactly; they are merged
/// here by group and step.
///
/// Returns false, leaving `ev` and `loaded` as they were, when the
/// accumulators, past `floor_cells`, would outgrow the samples they
/// summarise (about as many groups as series, with a step near the scrape
/// interval): the caller then fetches the selector for the step path.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn fold(
    ev: &mut Evaluator,
    src: &dyn SeriesReader,
    tenant: &str,
    (id, a): (NodeId, &AggregateExpr),
    matchers: &[Matcher],
    mint: i64,
    maxt: i64,
    loaded: &mut usize,
    floor_cells: usize,
) -> Result<bool> {
    let Some(input) = fold_shape(a) else {
        return Ok(false);
    };
    if ev.end < ev.start || (ev.step <= 0 && ev.end != ev.start) {
        return Ok(false);
    }
    if let Some(p) = pushed_down(ev, src, tenant, a, matchers, mint, maxt, *loaded).await? {
        *loaded += p.samples as usize;
        ev.folded[id] = Some(Box::new(merged(ev, a, input, p)?));
        return Ok(true);
    }
    let vs = input.selector();
    let ev_ref: &Evaluator = ev;
    let mut folder = Folder::new(ev_ref, a, input, None);
    let mut failed: Option<QueryError> = None;
    let mut abandoned = false;
    let before = *loaded;
    let mut feed = |batch: Vec<SeriesData>| -> bool {
        match folder.feed(batch, before, floor_cells) {
            Ok(more) => {
                abandoned = !more;
                more
            }
            Err(e) => {
                failed = Some(e);
                false
            }
        }
    };
    select_batched(src, tenant, vs, matchers, mint, maxt, &mut feed).await?;
    if let Some(e) = failed {
        return Err(e);
    }
    if abandoned {
        return Ok(false);
    }
    *loaded += folder.mine;
    let folded = folder.into_folded();
    ev.folded[id] = Some(Box::new(folded));
    Ok(true)
}

/// The store's partial aggregation of `a`, when it pushes aggregations
/// down and `a` is one whose partials merge exactly (its text, sent to
/// the nodes, parsed back to the same expression).
#[allow(clippy::too_many_arguments)]
async fn pushed_down(
    ev: &Evaluator,
    src: &dyn SeriesReader,
    tenant: &str,
    a: &AggregateExpr,
    matchers: &[Matcher],
    mint: i64,
    maxt: i64,
    loaded: usize,
) -> Result<Option<PartialAggregate>> {
    if !mergeable(a.op.id()) {
        return Ok(None);
    }
    let text = Expr::Aggregate(a.clone()).to_string();
    match promql_parser::parser::parse(&text) {
        Ok(Expr::Aggregate(b)) if b == *a => {}
        _ => return Ok(None),
    }
    let req = AggregateRequest {
        select: SelectRequest::new(tenant, matchers.to_vec(), mint, maxt),
        query: text,
        start: ev.start,
        end: ev.end,
        step: ev.step,
        lookback: ev.lookback,
        max_samples: ev.max_samples.saturating_sub(loaded),
        digests: false,
    };
    let vs = fold_shape(a).map(|i| i.selector());
    let p = src.aggregate(req).await.map_err(|e| match vs {
        Some(vs) => storage_err(vs, e),
        None => storage_err(&"aggregation", e),
    })?;
    if let Some(p) = &p {
        if loaded + p.samples as usize > ev.max_samples {
            return Err(too_many_samples());
        }
    }
    Ok(p)
}

/// Partials (from several stores; a group may come more than once) merged
/// by group and step into the aggregation's results, groups in label
/// order.
fn merged(
    ev: &Evaluator,
    a: &AggregateExpr,
    input: FoldInput<'_>,
    p: PartialAggregate,
) -> Result<Folded> {
    let op = a.op.id();
    let steps = steps(ev);
    let mut at: HashMap<Labels, usize> = HashMap::default();
    let mut groups: Vec<(Labels, GroupAccs)> = Vec::new();
    for pg in p.groups {
        let first = pg.first as usize;
        if first + pg.cells.len() > steps {
            return Err(QueryError::Storage(format!(
                "a partial aggregation answered steps {first}..{} of a query with {steps}",
                first + pg.cells.len()
            )));
        }
        if pg.cells.is_empty() {
            continue;
        }
        let g = match at.get(&pg.labels) {
            Some(&g) => g,
            None => {
                at.insert(pg.labels.clone(), groups.len());
                groups.push((
                    pg.labels,
                    GroupAccs {
                        first,
                        accs: Vec::new(),
                    },
                ));
                groups.len() - 1
            }
        };
        let ga = &mut groups[g].1;
        ga.widen(first, first + pg.cells.len());
        for (i, c) in pg.cells.iter().enumerate() {
            if c.count > 0.0 {
                acc_merge(op, &mut ga.accs[first + i - ga.first], &acc_of(c));
            }
        }
    }
    groups.sort_by(|x, y| x.0.cmp(&y.0));
    let mut order: Vec<Vec<u32>> = vec![Vec::new(); steps];
    let mut values: Vec<Vec<f64>> = vec![Vec::new(); steps];
    for (g, (_, ga)) in groups.iter().enumerate() {
        for (j, acc) in ga.accs.iter().enumerate() {
            if acc.seen() {
                order[ga.first + j].push(g as u32);
                values[ga.first + j].push(acc_value(op, acc));
            }
        }
    }
    let mut odd = p.not_counters;
    odd.sort();
    odd.dedup();
    note_odd(ev, a, &odd);
    let mut samples: Vec<usize> = p.step_samples.iter().map(|&n| n as usize).collect();
    samples.resize(steps, 0);
    Ok(Folded {
        steps,
        keys: groups.into_iter().map(|(k, _)| Arc::new(k)).collect(),
        values,
        order,
        samples,
        drop_name: drops_name(input),
    })
}

/// What a node computes for a pushed-down aggregation: `req.query` (an
/// aggregation whose partials merge, of [`fold_shape`]) folded over the
/// series `store` selects for `req.select`, its accumulators returned as
/// they stand (with each series' digest when asked), or `None` when
/// folding would not make the answer smaller than the series. Runs on the
/// calling thread (a blocking-pool or read-pool thread).
pub(crate) fn partial(
    store: &dyn SeriesReader,
    req: &AggregateRequest,
    floor_cells: usize,
) -> std::result::Result<Option<PartialAggregate>, StoreError> {
    const MAX_TEXT: usize = 64 * 1024;
    if req.query.len() > MAX_TEXT {
        return Err(StoreError::invalid(format!(
            "a pushed-down aggregation is {} bytes long, more than {MAX_TEXT}",
            req.query.len()
        )));
    }
    if req.step < 0 || req.end < req.start || (req.step == 0 && req.end != req.start) {
        return Err(StoreError::invalid(format!(
            "a pushed-down aggregation's steps are not a range: start {}, end {}, step {}",
            req.start, req.end, req.step
        )));
    }
    // Accumulators are allocated per step: a peer asks for no more than a
    // partial may answer (a day at one-second steps; a range query has at
    // most 11,000).
    const MAX_STEPS: i64 = 86_400;
    if req.step > 0 && (req.end - req.start) / req.step >= MAX_STEPS {
        return Err(StoreError::invalid(format!(
            "a pushed-down aggregation of more than {MAX_STEPS} steps: start {}, end {}, step {}",
            req.start, req.end, req.step
        )));
    }
    let expr = promql_parser::parser::parse(&req.query).map_err(|e| {
        StoreError::invalid(format!("a pushed-down aggregation does not parse: {e}"))
    })?;
    let Expr::Aggregate(a) = &expr else {
        return Err(StoreError::invalid(format!(
            "a pushed-down aggregation is not an aggregation: {}",
            req.query
        )));
    };
    let Some(input) = fold_shape(a).filter(|_| mergeable(a.op.id())) else {
        return Err(StoreError::invalid(format!(
            "this aggregation cannot be computed in parts: {}",
            req.query
        )));
    };
    let nodes = Nodes::of(&expr);
    let strategy = vec![Strategy::Steps; nodes.len()];
    let deadline = req
        .select
        .deadline
        .unwrap_or_else(|| std::time::Instant::now() + std::time::Duration::from_secs(120));
    let ev = Evaluator::new(
        &req.query,
        nodes,
        strategy,
        req.start,
        req.end,
        // One step at `start` for an instant query (`steps` counts them).
        if req.step == 0 { 1 } else { req.step },
        req.lookback,
        60_000,
        deadline,
        None,
        req.max_samples,
        step::eval,
    );
    let mut folder = Folder::new(
        &ev,
        a,
        input,
        req.digests.then_some(req.select.tenant.as_str()),
    );
    let (mint, maxt) = (req.select.start, req.select.end);
    let mut sums = Vec::new();
    let as_store = |e: QueryError| match e {
        QueryError::TooManySamples(m) => {
            StoreError::new(cairn_storage_api::ErrorKind::LimitExceeded, m)
        }
        QueryError::Timeout(m) => StoreError::new(cairn_storage_api::ErrorKind::Timeout, m),
        other => StoreError::internal(other.to_string()),
    };
    let done = cairn_storage_api::block_on(async {
        // Before the series: a sample read may be missing from the sums,
        // never one the sums count from the data read.
        if req.digests {
            sums = store.shard_sums(req.select.clone()).await?;
        }
        let mut stream = store.select(req.select.clone()).await?;
        while let Some(batch) = next_batch(&mut stream).await {
            let batch = decode_batch(batch?, mint, maxt)?;
            if !folder.feed(batch, 0, floor_cells).map_err(as_store)? {
                return Ok::<bool, StoreError>(false);
            }
        }
        Ok(true)
    })?;
    Ok(done.then(|| {
        let mut p = folder.into_partial();
        p.shard_sums = sums;
        p
    }))
}
