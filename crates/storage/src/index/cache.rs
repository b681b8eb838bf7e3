//! The cache of decoded label sets by ref.

use cairn_common::{Labels, SeriesId};
use rustc_hash::FxHashMap;
use std::sync::Arc;

/// Decoded label sets of recently selected series, by ref, within a byte
/// budget: two generations, the older dropped whole when the newer fills
/// its half (a hit in the older moves the entry up). A ref's labels never
/// change (refs are not reused), so entries need no invalidation.
pub(super) struct SeriesCache {
    cur: FxHashMap<u64, (SeriesId, Arc<Labels>)>,
    prev: FxHashMap<u64, (SeriesId, Arc<Labels>)>,
    cur_bytes: usize,
    budget: usize,
}

/// Heap bytes of a label set as cached (vector, strings, Arc, map slot).
fn cached_size(l: &Labels) -> usize {
    96 + l
        .iter()
        .map(|x| std::mem::size_of::<cairn_common::Label>() + x.name.len() + x.value.len() + 16)
        .sum::<usize>()
}

impl SeriesCache {
    pub(super) fn get(&mut self, r: u64) -> Option<(SeriesId, Arc<Labels>)> {
        if let Some(v) = self.cur.get(&r) {
            return Some(v.clone());
        }
        let v = self.prev.remove(&r)?;
        self.insert(r, v.clone());
        Some(v)
    }

    pub(super) fn insert(&mut self, r: u64, v: (SeriesId, Arc<Labels>)) {
        if self.budget == 0 {
            return;
        }
        self.cur_bytes += cached_size(&v.1);
        self.cur.insert(r, v);
        if self.cur_bytes > self.budget / 2 {
            self.prev = std::mem::take(&mut self.cur);
            self.cur_bytes = 0;
        }
    }
}

impl SeriesCache {
    pub(super) fn new(budget: usize) -> Self {
        Self {
            cur: FxHashMap::default(),
            prev: FxHashMap::default(),
            cur_bytes: 0,
            budget,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::index::Index;
    use cairn_common::{Labels, MatchOp, Matcher, SeriesId};

    #[test]
    fn small_series_cache_answers_like_no_cache() {
        let d = tempfile::tempdir().unwrap();
        let e = tempfile::tempdir().unwrap();
        // 8 KiB for label sets: a few dozen series, so generations rotate.
        let small = Index::open_with_cache(d.path(), 8 << 10).unwrap();
        let none = Index::open_with_cache(e.path(), 0).unwrap();
        for t in ["t", "u"] {
            let all: Vec<(SeriesId, Labels)> = (0..300)
                .map(|i| {
                    let l = Labels::from_pairs(&[
                        ("__name__", if i % 2 == 0 { "up" } else { "down" }),
                        ("i", &format!("{i:03}")),
                        ("g", &format!("{}", i % 7)),
                    ]);
                    (SeriesId::of(t, &l), l)
                })
                .collect();
            let refs: Vec<(SeriesId, &Labels)> = all.iter().map(|(i, l)| (*i, l)).collect();
            small.add_series(t, &refs).unwrap();
            none.add_series(t, &refs).unwrap();
        }
        for round in 0..3 {
            for g in 0..7 {
                for (t, name) in [("t", "up"), ("u", "down"), ("t", "down")] {
                    let ms = [
                        Matcher::new(MatchOp::Equal, "__name__", name).unwrap(),
                        Matcher::new(MatchOp::RegexMatch, "g", format!("{g}|{}", (g + round) % 7))
                            .unwrap(),
                    ];
                    let a = small.select(t, &ms).unwrap();
                    let b = none.select(t, &ms).unwrap();
                    assert!(!a.is_empty());
                    assert_eq!(a, b, "{t} {name} g={g} round {round}");
                }
            }
        }
    }
}
