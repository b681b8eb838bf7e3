//! Aggregation operators (`sum`, `avg`, `topk`, `quantile`, `count_values`,
//! …) at one step.

use super::ctx::Evaluator;
use super::state::GroupCache;
use crate::kernels::aggr::{
    acc_add, acc_value, best_k, convertible_to_i64, grouping_key, quantile, Acc,
};
use crate::kernels::float::format_go_float;
use crate::plan::{NodeId, AGG_INPUT, AGG_PARAM};
use crate::value::{exec_err, Elem, Result, Val};
use cairn_common::Labels;
use promql_parser::parser::token::{
    TokenId, T_BOTTOMK, T_COUNT_VALUES, T_LIMITK, T_LIMIT_RATIO, T_QUANTILE, T_TOPK,
};
use promql_parser::parser::{AggregateExpr, LabelModifier};
use rustc_hash::FxHashMap as HashMap;
use std::sync::Arc;

struct Group {
    labels: Arc<Labels>,
    /// The group's id in the node's [`GroupCache`].
    gid: usize,
    acc: Acc,
    drop_name: bool,
    values: Vec<f64>,
}

pub(crate) fn eval_aggregate(ev: &Evaluator, a: &AggregateExpr, id: NodeId, t: i64) -> Result<Val> {
    if let Some(r) = folded(ev, id, t) {
        return r;
    }
    let op = a.op.id();
    let mut param_f = 0.0;
    let mut param_s = String::new();
    if let Some(p) = &a.param {
        if op == T_COUNT_VALUES {
            param_s = ev.eval_string(p, ev.child(id, AGG_PARAM), t)?;
        } else {
            param_f = ev.eval_scalar(p, ev.child(id, AGG_PARAM), t)?;
        }
    }
    let input = ev.eval_vector(&a.expr, ev.child(id, AGG_INPUT), t)?;
    // Delayed name removal: groups are formed on the labels as they are
    // (names not yet dropped); a group drops its name if any member does.

    match op {
        T_TOPK | T_BOTTOMK | T_LIMITK => {
            if param_f.is_nan() {
                return Err(exec_err("Parameter value is NaN"));
            }
            if !convertible_to_i64(param_f) {
                return Err(exec_err(format!("Scalar value {param_f} overflows int64")));
            }
            let k = param_f as i64;
            if k < 1 {
                return Ok(Val::Vector(Vec::new()));
            }
            return Ok(Val::Vector(select_k(op, input, &a.modifier, k as usize, t)));
        }
        T_LIMIT_RATIO => {
            if param_f.is_nan() {
                return Err(exec_err("Ratio value is NaN"));
            }
            let mut r = param_f;
            if !(-1.0..=1.0).contains(&r) {
                ev.warn(format!(
                    "PromQL warning: ratio value should be between -1 and 1, got {}, capping to {}",
                    format_go_float(r),
                    if r < 0.0 { -1 } else { 1 }
                ));
                r = r.clamp(-1.0, 1.0);
            }
            let out = input
                .into_iter()
                .filter(|e| {
                    let s = ratiosampler_offset(&e.labels);
                    if r >= 0.0 {
                        s < r
                    } else {
                        s >= 1.0 + r
                    }
                })
                .collect();
            return Ok(Val::Vector(out));
        }
        T_COUNT_VALUES => {
            if !ev.valid_label_name(&param_s) {
                return Err(exec_err(format!("invalid label name {param_s:?}")));
            }
            let mut groups: Vec<(Labels, f64, bool)> = Vec::new();
            let mut index: HashMap<Labels, usize> = HashMap::default();
            for e in &input {
                let mut b = grouping_key(&e.labels, &a.modifier).builder();
                b.set(&param_s, &format_go_float(e.v));
                let l = b.build();
                match index.get(&l) {
                    Some(&i) => {
                        groups[i].1 += 1.0;
                        groups[i].2 |= e.drop_name;
                    }
                    None => {
                        index.insert(l.clone(), groups.len());
                        groups.push((l, 1.0, e.drop_name));
                    }
                }
            }
            return Ok(Val::Vector(
                groups
                    .into_iter()
                    .map(|(labels, v, drop_name)| Elem {
                        labels: labels.into(),
                        t,
                        v,
                        drop_name,
                    })
                    .collect(),
            ));
        }
        _ => {}
    }
    if op == T_QUANTILE && !(0.0..=1.0).contains(&param_f) {
        let pos = a.param.as_ref().map(|p| ev.pos(p)).unwrap_or_default();
        ev.warn(format!(
            "PromQL warning: quantile value should be between 0 and 1, got {}{pos}",
            format_go_float(param_f)
        ));
    }

    // Each input label set's group is found once per query (by the label
    // set's address); a step only maps groups to its own slots.
    let mut caches = ev.groups.borrow_mut();
    let gc: &mut GroupCache = caches[id].get_or_insert_with(Default::default);
    let mut groups: Vec<Group> = Vec::new();
    let res = fold_groups(op, a, &input, gc, &mut groups);
    for g in &groups {
        gc.slot[g.gid] = u32::MAX;
    }
    drop(caches);
    res?;
    let mut out = Vec::with_capacity(groups.len());
    for g in groups {
        let v = match op {
            T_QUANTILE => {
                let mut vals = g.values;
                quantile(param_f, &mut vals)
            }
            _ => acc_value(op, &g.acc),
        };
        out.push(Elem {
            labels: g.labels,
            t,
            v,
            drop_name: g.drop_name,
        });
    }
    Ok(Val::Vector(out))
}

fn fold_groups(
    op: TokenId,
    a: &AggregateExpr,
    input: &[Elem],
    gc: &mut GroupCache,
    groups: &mut Vec<Group>,
) -> Result<()> {
    for e in input {
        let gid = gc.group_of(&e.labels, |l| grouping_key(l, &a.modifier));
        if gc.slot.len() < gc.keys.len() {
            gc.slot.resize(gc.keys.len(), u32::MAX);
        }
        let gi = match gc.slot[gid] {
            u32::MAX => {
                gc.slot[gid] = groups.len() as u32;
                groups.push(Group {
                    labels: gc.keys[gid].clone(),
                    gid,
                    acc: Acc::default(),
                    drop_name: false,
                    values: Vec::new(),
                });
                groups.len() - 1
            }
            i => i as usize,
        };
        let g = &mut groups[gi];
        g.drop_name |= e.drop_name;
        if op == T_QUANTILE {
            g.values.push(e.v);
        }
        if !acc_add(op, &mut g.acc, e.v) {
            return Err(exec_err(format!("unsupported aggregation {}", a.op)));
        }
    }
    Ok(())
}

/// Prometheus's deterministic per-series sampling offset for `limit_ratio`.
fn ratiosampler_offset(l: &Labels) -> f64 {
    // Prometheus hashes the label set with xxhash64 over its own byte layout;
    // we use a stable hash of the label pairs, which keeps the property that
    // matters (deterministic, uniform in [0,1)).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for lb in l.iter() {
        for b in lb
            .name
            .bytes()
            .chain([0xff])
            .chain(lb.value.bytes())
            .chain([0xff])
        {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x100_0000_01b3);
        }
    }
    (h as f64) / (u64::MAX as f64 + 1.0)
}

fn select_k(
    op: promql_parser::parser::token::TokenId,
    input: Vec<Elem>,
    modifier: &Option<LabelModifier>,
    k: usize,
    t: i64,
) -> Vec<Elem> {
    let mut groups: Vec<Vec<Elem>> = Vec::new();
    let mut index: HashMap<Labels, usize> = HashMap::default();
    for e in input {
        let key = grouping_key(&e.labels, modifier);
        let gi = match index.get(&key) {
            Some(&i) => i,
            None => {
                index.insert(key, groups.len());
                groups.push(Vec::new());
                groups.len() - 1
            }
        };
        groups[gi].push(e);
    }
    let mut out = Vec::new();
    for g in groups {
        if op == T_LIMITK {
            out.extend(g.into_iter().take(k).map(|mut e| {
                e.t = t;
                e
            }));
            continue;
        }
        let mut sel = Vec::new();
        best_k(op == T_TOPK, g.iter().map(|e| e.v), k, &mut sel);
        let mut g: Vec<Option<Elem>> = g.into_iter().map(Some).collect();
        out.extend(sel.iter().filter_map(|&(i, _)| {
            let mut e = g[i].take()?;
            e.t = t;
            Some(e)
        }));
    }
    out
}

/// The folded result of aggregation node `id` at `t`, if there is one.
fn folded(ev: &Evaluator, id: NodeId, t: i64) -> Option<Result<Val>> {
    let p = ev.folded[id].as_ref()?;
    let off = t - ev.start;
    // An instant query's one step has step 0.
    let step = ev.step.max(1);
    let i = (off / step) as usize;
    if off < 0 || off % step != 0 || i >= p.steps {
        return Some(Err(exec_err(
            "internal error: folded aggregation evaluated off its steps",
        )));
    }
    if let Err(e) = ev.add_samples(p.samples[i]) {
        return Some(Err(e));
    }
    Some(Ok(Val::Vector(
        p.order[i]
            .iter()
            .zip(&p.values[i])
            .map(|(&g, &v)| Elem {
                labels: p.keys[g as usize].clone(),
                t,
                v,
                drop_name: p.drop_name,
            })
            .collect(),
    )))
}
