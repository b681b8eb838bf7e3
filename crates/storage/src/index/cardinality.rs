//! Cardinality from the postings alone: matchers resolved to refs (those
//! matching the empty string included, by subtracting the refs of the
//! values they refuse), and series counted per label pair by walking one
//! tenant's postings keys — no label set is built, and registry entries
//! are read only for the ids of refs to filter (by shard or time).

use super::keys::{hex, key_text, postings_value, prefix_end, ref_key};
use super::postings::{count_refs, decode_refs, intersect_sorted};
use super::registry::{entry_id, entry_tenant};
use super::{db_err, Index};
use crate::error::{Error, Result};
use cairn_common::{Matcher, SeriesId, METRIC_NAME};
use cairn_storage_api::Cardinality;
use rocksdb::ReadOptions;

/// `a` without the refs of `b` (both ascending).
fn subtract_sorted(a: &[u64], b: &[u64]) -> Vec<u64> {
    let mut out = Vec::with_capacity(a.len());
    let mut j = 0;
    for &r in a {
        while j < b.len() && b[j] < r {
            j += 1;
        }
        if j >= b.len() || b[j] != r {
            out.push(r);
        }
    }
    out
}

impl Index {
    /// Refs (ascending) of `tenant`'s series matching every matcher, from
    /// postings alone: matchers that need a value select postings, as in
    /// [`Index::select`]; one that matches the empty string (which also
    /// holds for series without its label) removes the series whose value
    /// of its label it refuses.
    pub fn matching_refs(&self, tenant: &str, matchers: &[Matcher]) -> Result<Vec<u64>> {
        let mut refs = self.candidate_refs(tenant, matchers)?;
        for m in matchers.iter().filter(|m| m.matches_empty()) {
            if refs.is_empty() {
                break;
            }
            let refused = self.postings_where(tenant, &m.name, "", |v| !m.matches(v))?;
            refs = subtract_sorted(&refs, &refused);
        }
        Ok(refs)
    }

    /// The series id of each of `refs` (ascending) that is `tenant`'s, in
    /// order: registry entries read in one forward walk, ids computed from
    /// their bytes without building label sets.
    pub fn ids_of(&self, tenant: &str, refs: &[u64]) -> Result<Vec<(u64, SeriesId)>> {
        let mut out = Vec::with_capacity(refs.len());
        self.for_each_entry(refs, |r, v| {
            let id = entry_tenant(v).and_then(|t| {
                Ok(if t == tenant.as_bytes() {
                    Some(entry_id(v)?)
                } else {
                    None
                })
            });
            match id {
                Ok(Some(id)) => out.push((r, id)),
                Ok(None) => {}
                Err(e) => self.skip_entry(&ref_key(r), &e),
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// Series counts per label pair of `tenant`'s series — all of them, or
    /// only `refs` (ascending) — from one walk over the tenant's postings
    /// keys: each list decoded, and with `refs`, intersected with them.
    /// Costs one postings read per distinct label pair of the tenant,
    /// whatever `refs` holds.
    pub fn cardinality(&self, tenant: &str, refs: Option<&[u64]>) -> Result<Cardinality> {
        let mut prefix = vec![b'p'];
        prefix.extend_from_slice(tenant.as_bytes());
        prefix.push(0);
        let mut ro = ReadOptions::default();
        ro.set_iterate_upper_bound(prefix_end(&prefix));
        let db = self.db()?;
        let mut it = db.raw_iterator_opt(ro);
        it.seek(&prefix);
        let mut out = Cardinality::default();
        let mut named = 0u64;
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            match self.count_key(k, v, prefix.len(), refs)? {
                Some((name, value, n)) if n > 0 => {
                    if name == METRIC_NAME {
                        named += n;
                    }
                    out.pairs
                        .entry(name.to_string())
                        .or_default()
                        .insert(value.to_string(), n);
                }
                _ => {}
            }
            it.next();
        }
        it.status()
            .map_err(db_err("scanning postings for cardinality"))?;
        out.series = match refs {
            Some(r) => r.len() as u64,
            None => named,
        };
        Ok(out)
    }

    /// The label pair of postings key `k` (after the tenant's `prefix_len`
    /// bytes) and how many of its refs are counted; None for a key that
    /// does not decode (skipped and counted, as elsewhere).
    fn count_key<'k>(
        &self,
        k: &'k [u8],
        v: &[u8],
        prefix_len: usize,
        refs: Option<&[u64]>,
    ) -> Result<Option<(&'k str, &'k str, u64)>> {
        let rest = &k[prefix_len..];
        let Some(end) = rest.iter().position(|&b| b == 0) else {
            let e = Error::Corrupt(format!(
                "index postings key {}: no terminator after the label name",
                hex(k)
            ));
            self.skip_entry(k, &e);
            return Ok(None);
        };
        let name = match key_text("postings", k, prefix_len, &rest[..end]) {
            Ok(n) => n,
            Err(e) => {
                self.skip_entry(k, &e);
                return Ok(None);
            }
        };
        let value = match postings_value(k, prefix_len + end + 1) {
            Ok(v) => v,
            Err(e) => {
                self.skip_entry(k, &e);
                return Ok(None);
            }
        };
        let n = match refs {
            None => count_refs(k, v)?,
            Some(r) => {
                let list = decode_refs(k, v)?;
                if r.len() < list.len() {
                    intersect_sorted(r, &list).len()
                } else {
                    intersect_sorted(&list, r).len()
                }
            }
        };
        Ok(Some((name, value, n as u64)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_common::{Labels, MatchOp};
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        /// Counting from postings agrees with counting the label sets that
        /// a naive scan over the model selects, for every matcher kind.
        #[test]
        fn cardinality_agrees_with_counting_label_sets(
            series in proptest::collection::vec((0u8..3, 0u8..4, 0u8..3, any::<bool>()), 1..60),
            ms in proptest::collection::vec((0u8..4, 0u8..3, 0u8..7), 0..3),
        ) {
            let d = tempfile::tempdir().unwrap();
            let idx = Index::open(d.path()).unwrap();
            let mut model: std::collections::BTreeSet<Labels> = Default::default();
            for (n, a, b, other_tenant) in &series {
                let mut pairs = vec![("__name__".to_string(), format!("m{n}")), ("x".into(), format!("v{a}"))];
                if *b > 0 { pairs.push(("y".into(), format!("w{b}"))); }
                let l = Labels::from_pairs(&pairs);
                let tenant = if *other_tenant { "b" } else { "a" };
                idx.add_series(tenant, &[(SeriesId::of(tenant, &l), &l)]).unwrap();
                if tenant == "a" { model.insert(l); }
            }
            let ops = [MatchOp::Equal, MatchOp::NotEqual, MatchOp::RegexMatch, MatchOp::RegexNoMatch];
            let matchers: Vec<Matcher> = ms.iter().map(|(op, n, v)| {
                let op = ops[*op as usize % 4];
                let name = ["x", "y", "__name__"][*n as usize % 3];
                let value = match (op, v) {
                    (_, 3) => String::new(),
                    (MatchOp::RegexMatch | MatchOp::RegexNoMatch, 4) => "v.*".into(),
                    (MatchOp::RegexMatch | MatchOp::RegexNoMatch, 5) => "w1|".into(),
                    (MatchOp::RegexMatch | MatchOp::RegexNoMatch, 6) => "m[12]".into(),
                    (_, v) => format!("v{v}"),
                };
                Matcher::new(op, name, value).unwrap()
            }).collect();
            let want = Cardinality::of_series(model.iter().filter(|l| {
                matchers.iter().all(|m| m.matches(l.get(&m.name).unwrap_or("")))
            }));
            let refs = idx.matching_refs("a", &matchers).unwrap();
            let with_ids = idx.ids_of("a", &refs).unwrap();
            let got_refs: Vec<u64> = with_ids.iter().map(|(r, _)| *r).collect();
            prop_assert_eq!(&got_refs, &refs);
            let mut got_ids: Vec<SeriesId> = with_ids.iter().map(|(_, id)| *id).collect();
            got_ids.sort();
            let mut want_ids: Vec<SeriesId> = model
                .iter()
                .filter(|l| matchers.iter().all(|m| m.matches(l.get(&m.name).unwrap_or(""))))
                .map(|l| SeriesId::of("a", l))
                .collect();
            want_ids.sort();
            prop_assert_eq!(got_ids, want_ids);
            prop_assert_eq!(&idx.cardinality("a", Some(&refs)).unwrap(), &want);
            if matchers.is_empty() {
                prop_assert_eq!(&idx.cardinality("a", None).unwrap(), &want);
            }
        }
    }

    #[test]
    fn subtraction() {
        assert_eq!(subtract_sorted(&[1, 2, 3, 5, 8], &[0, 2, 5, 9]), [1, 3, 8]);
        assert_eq!(subtract_sorted(&[1, 2], &[]), [1, 2]);
        assert!(subtract_sorted(&[], &[1]).is_empty());
    }
}
