//! Folded aggregations: `aggr by (…) (f(selector[r]))` and `aggr by (…)
//! (selector)` in a range query,
//! computed while the selector is read in batches, series by series, so
//! its samples are never all held.

use super::ctx::{note_later, note_not_counter, Evaluator};
use super::serieswise::{instant_values, range_fn_values, steps};
use super::state::Folded;
use crate::ast::{fold_shape, FoldInput};
use crate::fetch::{fetched, select_batched};
use crate::kernels::aggr::{acc_add, acc_value, grouping_key, Acc};
use crate::plan::NodeId;
use crate::value::{too_many_samples, QueryError, Result};
use cairn_common::{Labels, Matcher, SeriesData};
use cairn_storage_api::SeriesReader;
use promql_parser::parser::AggregateExpr;
use rustc_hash::FxHashMap as HashMap;
use std::sync::Arc;

/// One group's accumulators over the steps `first..first + accs.len()`.
struct GroupAccs {
    first: usize,
    accs: Vec<Acc>,
}

/// For an aggregation of [`fold_shape`] in a range query: reads the
/// selector's series (`matchers` over `[mint, maxt]`) in batches and folds
/// each series, as it arrives, into one accumulator per group and step:
/// `f` is computed over the series' steps with a sliding window, its group
/// found once. Only a batch of samples is held, never the selector's whole
/// data, and no per-step input vectors are built. Series are folded in the
/// order the step path folds them (the source's order), so results are
/// identical. Adds the samples read to `loaded` (the query's sample limit).
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
    if ev.step <= 0 || ev.end < ev.start {
        return Ok(false);
    }
    let op = a.op.id();
    let steps = steps(ev);
    let vs = input.selector();
    let name = vs.name.as_deref();
    let mut index: HashMap<Labels, u32> = HashMap::default();
    let mut keys: Vec<Arc<Labels>> = Vec::new();
    let mut groups: Vec<GroupAccs> = Vec::new();
    let mut order: Vec<Vec<u32>> = vec![Vec::new(); steps];
    let mut samples = vec![0usize; steps];
    let mut odd: Vec<String> = Vec::new();
    let mut vals: Vec<Option<f64>> = Vec::new();
    let (mut cells, mut mine) = (0usize, 0usize);
    let mut failed: Option<QueryError> = None;
    let mut abandoned = false;
    let before = *loaded;
    let ev_ref: &Evaluator = ev;
    let mut fold = |batch: Vec<SeriesData>| -> bool {
        mine += batch.iter().map(|s| s.samples.len()).sum::<usize>();
        if before + mine > ev_ref.max_samples {
            failed = Some(too_many_samples());
            return false;
        }
        if let Err(e) = ev_ref.check_deadline() {
            failed = Some(e);
            return false;
        }
        let range = matches!(input, FoldInput::Range(..));
        for sd in fetched(batch, range, name) {
            let first = match input {
                FoldInput::Range(rf, ms) => {
                    let (first, seen) =
                        range_fn_values(ev_ref, rf, ms, &sd, &mut samples, &mut vals);
                    if seen {
                        note_later(&mut odd, rf, &sd);
                    }
                    first
                }
                FoldInput::Instant(vs) => instant_values(ev_ref, vs, &sd, &mut samples, &mut vals),
            };
            let Some(lo) = vals.iter().position(Option::is_some) else {
                continue;
            };
            let hi = vals.iter().rposition(Option::is_some).map_or(lo, |h| h + 1);
            let k = grouping_key(&sd.labels, &a.modifier);
            let g = match index.get(&k) {
                Some(&g) => g as usize,
                None => {
                    keys.push(Arc::new(k.clone()));
                    index.insert(k, keys.len() as u32 - 1);
                    groups.push(GroupAccs {
                        first: first + lo,
                        accs: Vec::new(),
                    });
                    keys.len() - 1
                }
            };
            // Widen the group's steps to this series' (rarely forward:
            // series come in label order, mostly with similar spans).
            let ga = &mut groups[g];
            let (from, to) = (first + lo, first + hi);
            if ga.accs.is_empty() {
                ga.first = from;
            }
            if from < ga.first {
                let grow = ga.first - from;
                ga.accs
                    .splice(0..0, std::iter::repeat_n(Acc::default(), grow));
                ga.first = from;
                cells += grow;
            }
            if to > ga.first + ga.accs.len() {
                let grow = to - ga.first - ga.accs.len();
                ga.accs.resize(ga.accs.len() + grow, Acc::default());
                cells += grow;
            }
            for (i, v) in (from..to).zip(&vals[lo..hi]) {
                if let Some(v) = *v {
                    let acc = &mut ga.accs[i - ga.first];
                    if !acc.seen() {
                        order[i].push(g as u32);
                    }
                    acc_add(op, acc, v);
                }
            }
        }
        // Accumulators (40 bytes) beyond half the samples read (16 bytes):
        // folding saves nothing here.
        if cells > floor_cells.max(mine / 2) {
            abandoned = true;
            return false;
        }
        true
    };
    select_batched(src, tenant, vs, matchers, mint, maxt, &mut fold).await?;
    if let Some(e) = failed {
        return Err(e);
    }
    if abandoned {
        return Ok(false);
    }
    *loaded += mine;
    let values = order
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
    let arg = a.expr.as_ref();
    for n in &odd {
        let promql_parser::parser::Expr::Call(c) = arg else {
            break;
        };
        note_not_counter(ev, n, &c.args.args[0]);
    }
    ev.folded[id] = Some(Box::new(Folded {
        steps,
        keys,
        values,
        order,
        samples,
        drop_name: match input {
            FoldInput::Range(rf, _) => !rf.keeps_name(),
            FoldInput::Instant(_) => false,
        },
    }));
    Ok(true)
}
