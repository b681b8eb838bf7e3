//! Binary operators: arithmetic, comparison (with and without `bool`), and
//! the set operators, with `on`/`ignoring` and `group_left`/`group_right`
//! vector matching.

use super::ctx::Evaluator;
use super::state::BinCache;
use crate::kernels::binop::{apply, is_comparison, names, result_metric, signature};
use crate::plan::NodeId;
use crate::value::{exec_err, go_labels, Elem, Result, Val};
use cairn_common::{Labels, METRIC_NAME};
use promql_parser::parser::token::TokenId;
use promql_parser::parser::token::{T_LAND, T_LOR, T_LUNLESS};
use promql_parser::parser::{BinaryExpr, LabelModifier, VectorMatchCardinality};
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

/// The signature id of `e` (over its effective labels).
fn sig_id(bc: &mut BinCache, e: &Elem, matching: &Option<LabelModifier>) -> u32 {
    let drop = e.drop_name;
    bc.sig_id(&e.labels, drop, |l| {
        if drop {
            signature(&l.without_metric_name(), matching)
        } else {
            signature(l, matching)
        }
    })
}

pub(crate) fn eval_binary(ev: &Evaluator, b: &BinaryExpr, id: NodeId, t: i64) -> Result<Val> {
    let op = b.op.id();
    let return_bool = b.modifier.as_ref().is_some_and(|m| m.return_bool);
    let lhs = ev.eval(&b.lhs, ev.child(id, 0), t)?;
    let rhs = ev.eval(&b.rhs, ev.child(id, 1), t)?;
    match (lhs, rhs) {
        (Val::Scalar(l), Val::Scalar(r)) => {
            let (v, keep) = apply(op, l, r);
            if is_comparison(op) {
                return Ok(Val::Scalar(if keep { 1.0 } else { 0.0 }));
            }
            Ok(Val::Scalar(v))
        }
        (Val::Vector(v), Val::Scalar(s)) => {
            Ok(Val::Vector(vector_scalar(op, v, s, false, return_bool, t)))
        }
        (Val::Scalar(s), Val::Vector(v)) => {
            Ok(Val::Vector(vector_scalar(op, v, s, true, return_bool, t)))
        }
        (Val::Vector(l), Val::Vector(r)) => {
            let matching = b.modifier.as_ref().and_then(|m| m.matching.clone());
            // Signatures are computed once per label set per query.
            let mut bins = ev.bins.borrow_mut();
            let bc = bins[id].get_or_insert_with(Default::default);
            match op {
                T_LAND => {
                    let sigs: HashSet<u32> = r.iter().map(|e| sig_id(bc, e, &matching)).collect();
                    Ok(Val::Vector(
                        l.into_iter()
                            .filter(|e| sigs.contains(&sig_id(bc, e, &matching)))
                            .collect(),
                    ))
                }
                T_LUNLESS => {
                    let sigs: HashSet<u32> = r.iter().map(|e| sig_id(bc, e, &matching)).collect();
                    Ok(Val::Vector(
                        l.into_iter()
                            .filter(|e| !sigs.contains(&sig_id(bc, e, &matching)))
                            .collect(),
                    ))
                }
                T_LOR => {
                    let sigs: HashSet<u32> = l.iter().map(|e| sig_id(bc, e, &matching)).collect();
                    let mut out = l;
                    out.extend(
                        r.into_iter()
                            .filter(|e| !sigs.contains(&sig_id(bc, e, &matching))),
                    );
                    Ok(Val::Vector(out))
                }
                _ => {
                    let card = b
                        .modifier
                        .as_ref()
                        .map(|m| m.card.clone())
                        .unwrap_or(VectorMatchCardinality::OneToOne);
                    let fill = b.modifier.as_ref().map(|m| m.fill_values.clone());
                    vector_vector(bc, op, l, r, &matching, &card, return_bool, fill, t)
                        .map(Val::Vector)
                }
            }
        }
        (l, r) => Err(exec_err(format!(
            "binary operator not allowed between {} and {}",
            l.type_name(),
            r.type_name()
        ))),
    }
}

fn vector_scalar(
    op: TokenId,
    v: Vec<Elem>,
    s: f64,
    swap: bool,
    return_bool: bool,
    t: i64,
) -> Vec<Elem> {
    let cmp = is_comparison(op);
    let mut out = Vec::with_capacity(v.len());
    for mut e in v {
        let (l, r) = if swap { (s, e.v) } else { (e.v, s) };
        let (mut val, keep) = apply(op, l, r);
        if cmp && swap {
            val = r;
        }
        if return_bool {
            val = if keep { 1.0 } else { 0.0 };
        } else if !keep {
            continue;
        }
        e.v = val;
        e.t = t;
        if !cmp || return_bool {
            e.drop_name = true;
        }
        out.push(e);
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn vector_vector(
    bc: &mut BinCache,
    op: TokenId,
    lhs: Vec<Elem>,
    rhs: Vec<Elem>,
    matching: &Option<LabelModifier>,
    card: &VectorMatchCardinality,
    return_bool: bool,
    fill: Option<promql_parser::parser::VectorMatchFillValues>,
    t: i64,
) -> Result<Vec<Elem>> {
    let one_to_many = matches!(card, VectorMatchCardinality::OneToMany(_));
    let (lhs, rhs) = if one_to_many { (rhs, lhs) } else { (lhs, rhs) };
    let include: Vec<String> = match card {
        VectorMatchCardinality::ManyToOne(ls) | VectorMatchCardinality::OneToMany(ls) => {
            ls.labels.clone()
        }
        _ => Vec::new(),
    };
    let (fill_l, fill_r) = match &fill {
        Some(f) => {
            if one_to_many {
                (f.rhs, f.lhs)
            } else {
                (f.lhs, f.rhs)
            }
        }
        None => (None, None),
    };
    let is_cmp = is_comparison(op);
    // All rhs samples by signature; the rhs is the "one" side.
    let mut right: HashMap<u32, usize> = HashMap::default();
    right.reserve(rhs.len());
    let rsigs: Vec<u32> = rhs.iter().map(|e| sig_id(bc, e, matching)).collect();
    let lsigs: Vec<u32> = lhs.iter().map(|e| sig_id(bc, e, matching)).collect();
    for (i, rs) in rhs.iter().enumerate() {
        let sig = rsigs[i];
        if let Some(&j) = right.get(&sig) {
            let one_side = if one_to_many { "left" } else { "right" };
            let matched = match matching {
                Some(LabelModifier::Include(ls)) => rs.labels.keep_only(&names(ls)),
                Some(LabelModifier::Exclude(ls)) => {
                    let mut n = names(ls);
                    n.push(METRIC_NAME);
                    rs.labels.without(&n)
                }
                None => rs.labels.without_metric_name(),
            };
            let (mut first, mut second) = (&rs.labels, &rhs[j].labels);
            if second < first {
                std::mem::swap(&mut first, &mut second);
            }
            return Err(exec_err(format!(
                "found duplicate series for the match group {} on the {} hand-side of the operation: [{}, {}];many-to-many matching not allowed: matching labels must be unique on one side",
                go_labels(&matched),
                one_side,
                go_labels(first),
                go_labels(second)
            )));
        }
        right.insert(sig, i);
    }
    let mut matched_one: HashSet<u32> = HashSet::default();
    let mut matched_many: HashMap<u32, HashSet<Labels>> = HashMap::default();
    let mut rhs_used: HashSet<u32> = HashSet::default();
    let mut out = Vec::with_capacity(lhs.len());
    let one_to_one = matches!(card, VectorMatchCardinality::OneToOne);
    if one_to_one {
        // Duplicates on the lhs are an error even when the comparison
        // would filter them out.
        let mut seen: HashSet<u32> = HashSet::default();
        for &sig in &lsigs {
            if right.contains_key(&sig) && !seen.insert(sig) {
                return Err(exec_err(
                    "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)",
                ));
            }
        }
    }
    let result = &mut bc.result;
    let mut emit = |ls: &Elem, rs: &Elem, lv: f64, rv: f64, sig: u32| -> Result<()> {
        let (fl, fr) = if one_to_many { (rv, lv) } else { (lv, rv) };
        let (mut val, keep) = apply(op, fl, fr);
        if return_bool {
            val = if keep { 1.0 } else { 0.0 };
        } else if !keep {
            return Ok(());
        }
        let metric: std::sync::Arc<Labels> = if include.is_empty() {
            // Depends on the lhs labels alone: shared across steps.
            result.get_or(&ls.labels, |l| {
                result_metric(l, &rs.labels, matching, card, &include).into()
            })
        } else {
            result_metric(&ls.labels, &rs.labels, matching, card, &include).into()
        };
        if one_to_one {
            matched_one.insert(sig);
        } else {
            let set = matched_many.entry(sig).or_default();
            if !set.insert((*metric).clone()) {
                return Err(exec_err(
                    "multiple matches for labels: grouping labels must ensure unique matches",
                ));
            }
        }
        out.push(Elem {
            labels: metric,
            t,
            v: val,
            drop_name: return_bool || !is_cmp || ls.drop_name,
        });
        Ok(())
    };
    for (ls, &sig) in lhs.iter().zip(&lsigs) {
        match right.get(&sig) {
            Some(&ri) => {
                if fill_l.is_some() {
                    rhs_used.insert(sig);
                }
                let rs = &rhs[ri];
                emit(ls, rs, ls.v, rs.v, sig)?;
            }
            None => {
                if let Some(fv) = fill_r {
                    let fake = Elem {
                        labels: Labels::empty().into(),
                        t,
                        v: fv,
                        drop_name: false,
                    };
                    emit(ls, &fake, ls.v, fv, sig)?;
                }
            }
        }
    }
    if let Some(fv) = fill_l {
        for (rs, &sig) in rhs.iter().zip(&rsigs) {
            if rhs_used.contains(&sig) {
                continue;
            }
            let fake = Elem {
                labels: rs.labels.clone(),
                t,
                v: fv,
                drop_name: rs.drop_name,
            };
            let (fl, fr) = (fv, rs.v);
            let (l, r) = if one_to_many { (fr, fl) } else { (fl, fr) };
            let (mut val, keep) = apply(op, l, r);
            if return_bool {
                val = if keep { 1.0 } else { 0.0 };
            } else if !keep {
                continue;
            }
            let metric = match matching {
                Some(LabelModifier::Include(ls)) => rs.labels.keep_only(&names(ls)),
                _ => signature(&rs.labels, matching),
            };
            let _ = fake;
            out.push(Elem {
                labels: metric.into(),
                t,
                v: val,
                drop_name: true,
            });
        }
    }
    Ok(out)
}
