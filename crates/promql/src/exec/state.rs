//! Per-node evaluation state kept across steps: selector cursors, label
//! caches of aggregations and binary operators, and values computed ahead
//! of the step loop (folded aggregations, series-wise columns).

use cairn_common::Labels;
use rustc_hash::FxHashMap;
use std::sync::Arc;

/// Sliding-window cursors of one range selector: per series, the sample
/// indices `[lo, hi)` of the window ending at `last_te`.
pub(crate) struct Windows {
    pub last_te: i64,
    pub cur: Vec<(usize, usize)>,
}

/// Cursors of one instant selector: per series, the number of samples at
/// or before `last_te`.
pub(crate) struct Cursors {
    pub last_te: i64,
    pub idx: Vec<usize>,
}

/// Label sets derived from a shared label set, keyed by the source `Arc`'s
/// address (the `Arc` is kept so the address stays unique).
#[derive(Default)]
pub(crate) struct PtrCache<V> {
    map: FxHashMap<usize, (Arc<Labels>, V)>,
}

impl<V: Clone> PtrCache<V> {
    /// Looks `l` up by address; on a miss computes the value and, when `l`
    /// is shared (held elsewhere too, so likely seen again), remembers it.
    pub(crate) fn get_or(&mut self, l: &Arc<Labels>, f: impl FnOnce(&Labels) -> V) -> V {
        self.get_or_tagged(l, false, f)
    }

    /// The same, with a one-bit tag in the key (the address is aligned).
    pub(crate) fn get_or_tagged(
        &mut self,
        l: &Arc<Labels>,
        tag: bool,
        f: impl FnOnce(&Labels) -> V,
    ) -> V {
        let k = Arc::as_ptr(l) as usize | usize::from(tag);
        if let Some((_, v)) = self.map.get(&k) {
            return v.clone();
        }
        let v = f(l);
        if Arc::strong_count(l) > 1 {
            if self.map.len() > 1 << 20 {
                self.map.clear();
            }
            self.map.insert(k, (l.clone(), v.clone()));
        }
        v
    }
}

/// Per-aggregation state kept across steps: each input label set's group.
#[derive(Default)]
pub(crate) struct GroupCache {
    pub by_ptr: PtrCache<u32>,
    pub index: FxHashMap<Labels, u32>,
    pub keys: Vec<Arc<Labels>>,
    /// Scratch: global group → slot in the current step's groups.
    pub slot: Vec<u32>,
}

impl GroupCache {
    pub(crate) fn group_of(
        &mut self,
        l: &Arc<Labels>,
        key: impl FnOnce(&Labels) -> Labels,
    ) -> usize {
        let (index, keys) = (&mut self.index, &mut self.keys);
        self.by_ptr.get_or(l, |l| {
            let k = key(l);
            if let Some(&g) = index.get(&k) {
                return g;
            }
            let g = keys.len() as u32;
            keys.push(Arc::new(k.clone()));
            index.insert(k, g);
            g
        }) as usize
    }
}

/// Per binary-operator state kept across steps: match signatures as small
/// ids, by (label set, drop_name); one-to-one result label sets.
#[derive(Default)]
pub(crate) struct BinCache {
    sig: PtrCache<u32>,
    ids: FxHashMap<Labels, u32>,
    pub result: PtrCache<Arc<Labels>>,
}

impl BinCache {
    /// The id of `sig(labels)`; `drop_name` is part of the key since the
    /// signature is taken over the effective labels.
    pub(crate) fn sig_id(
        &mut self,
        l: &Arc<Labels>,
        drop_name: bool,
        sig: impl FnOnce(&Labels) -> Labels,
    ) -> u32 {
        let ids = &mut self.ids;
        self.sig.get_or_tagged(l, drop_name, |l| {
            let k = sig(l);
            let n = ids.len() as u32;
            *ids.entry(k).or_insert(n)
        })
    }
}

/// An aggregation's results at every step of a range query, computed
/// series by series ahead of the step loop.
pub(crate) struct Folded {
    pub steps: usize,
    /// Per group: its output label set.
    pub keys: Vec<Arc<Labels>>,
    /// Per step: the results, aligned with `order`.
    pub values: Vec<Vec<f64>>,
    /// Per step: its groups in order of their first input series.
    pub order: Vec<Vec<u32>>,
    /// Per step: the samples its windows held (for the sample limit).
    pub samples: Vec<usize>,
    pub drop_name: bool,
}

/// One series' values at every step.
pub(crate) struct Col {
    pub labels: Arc<Labels>,
    /// Delayed `__name__` removal, as in [`Elem`].
    pub drop_name: bool,
    /// The step of `vals[0]`; no step outside `first..first + vals.len()`
    /// has a value (a long range over short-lived series stays small).
    pub first: usize,
    pub vals: Vec<Option<f64>>,
}

impl Col {
    /// A column of `vals` from step `first`, trimmed to its present
    /// values; `None` if there are none.
    pub(crate) fn new(
        labels: Arc<Labels>,
        drop_name: bool,
        first: usize,
        vals: Vec<Option<f64>>,
    ) -> Option<Col> {
        Col {
            labels,
            drop_name,
            first,
            vals,
        }
        .trimmed()
    }

    pub(crate) fn trimmed(mut self) -> Option<Col> {
        let a = self.vals.iter().position(Option::is_some)?;
        let b = self
            .vals
            .iter()
            .rposition(Option::is_some)
            .map_or(0, |b| b + 1);
        self.vals.truncate(b);
        self.vals.drain(..a);
        self.first += a;
        Some(self)
    }

    pub(crate) fn end(&self) -> usize {
        self.first + self.vals.len()
    }

    pub(crate) fn get(&self, i: usize) -> Option<f64> {
        i.checked_sub(self.first)
            .and_then(|j| self.vals.get(j).copied().flatten())
    }
}

/// A node's value at every step of the range query.
pub(crate) struct Cols {
    pub series: Vec<Col>,
    /// Per step: the samples the selectors beneath loaded (sample limit).
    pub samples: Vec<usize>,
    /// Whether each step's present values are in the order the step path
    /// produces them (aggregations and `topk` order their groups once for
    /// the whole range, not per step).
    pub exact_order: bool,
}
