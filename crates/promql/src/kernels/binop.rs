//! Binary-operator kernels: applying an operator to two floats, match
//! signatures and result label sets.

use cairn_common::{Labels, METRIC_NAME};
use promql_parser::label::Labels as PLabels;
use promql_parser::parser::token::{
    TokenId, T_ADD, T_ATAN2, T_DIV, T_EQLC, T_GTE, T_GTR, T_LSS, T_LTE, T_MOD, T_MUL, T_NEQ, T_POW,
    T_SUB,
};
use promql_parser::parser::{LabelModifier, VectorMatchCardinality};

pub(crate) fn is_comparison(op: TokenId) -> bool {
    matches!(op, T_EQLC | T_NEQ | T_GTR | T_LSS | T_GTE | T_LTE)
}

/// Applies `op`; for comparisons returns (lhs, keep).
pub(crate) fn apply(op: TokenId, l: f64, r: f64) -> (f64, bool) {
    match op {
        T_ADD => (l + r, true),
        T_SUB => (l - r, true),
        T_MUL => (l * r, true),
        T_DIV => (l / r, true),
        T_MOD => (l % r, true),
        T_POW => (l.powf(r), true),
        T_ATAN2 => (l.atan2(r), true),
        T_EQLC => (l, l == r),
        T_NEQ => (l, l != r),
        T_GTR => (l, l > r),
        T_LSS => (l, l < r),
        T_GTE => (l, l >= r),
        T_LTE => (l, l <= r),
        _ => (f64::NAN, false),
    }
}

pub(crate) fn names(ls: &PLabels) -> Vec<&str> {
    ls.labels.iter().map(|s| s.as_str()).collect()
}

/// The matching signature of a series' labels.
pub(crate) fn signature(l: &Labels, matching: &Option<LabelModifier>) -> Labels {
    match matching {
        Some(LabelModifier::Include(ls)) => l.keep_only(&names(ls)),
        Some(LabelModifier::Exclude(ls)) => {
            let mut n = names(ls);
            n.push(METRIC_NAME);
            l.without(&n)
        }
        None => l.without_metric_name(),
    }
}

pub(crate) fn result_metric(
    lhs: &Labels,
    rhs: &Labels,
    matching: &Option<LabelModifier>,
    card: &VectorMatchCardinality,
    include: &[String],
) -> Labels {
    let mut l = lhs.clone();
    if matches!(card, VectorMatchCardinality::OneToOne) {
        match matching {
            Some(LabelModifier::Include(ls)) => l = l.keep_only(&names(ls)),
            Some(LabelModifier::Exclude(ls)) => l = l.without(&names(ls)),
            None => {}
        }
    }
    if include.is_empty() {
        return l;
    }
    let mut b = l.builder();
    for n in include {
        match rhs.get(n) {
            Some(v) => {
                b.set(n, v);
            }
            None => {
                b.del(n);
            }
        }
    }
    b.build()
}
