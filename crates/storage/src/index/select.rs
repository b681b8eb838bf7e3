//! Matchers to series: postings lookups and scans, intersections, label
//! sets from the cache or the registry; label names and values.

use super::keys::{key_text, postings_prefix, postings_value, prefix_end, ref_key};
use super::postings::{decode_refs, intersect_sorted, union_sorted};
use super::registry::{decode_entry, entry_tenant};
use super::{db_err, prefix_iter, Index};
use crate::error::Result;
use cairn_common::{Labels, MatchOp, Matcher, SeriesId, METRIC_NAME};
use rocksdb::ReadOptions;
use std::sync::Arc;

impl Index {
    /// The refs of one label pair, ascending.
    pub(super) fn postings_eq(&self, tenant: &str, name: &str, value: &str) -> Result<Vec<u64>> {
        let key = postings_prefix(tenant, name, Some(value));
        match self
            .db()?
            .get_pinned(&key)
            .map_err(db_err("reading postings"))?
        {
            Some(v) => decode_refs(&key, &v),
            None => Ok(Vec::new()),
        }
    }

    /// Refs of series with label `name` whose value satisfies `pred`.
    /// Only values starting with `value_prefix` are scanned.
    pub(super) fn postings_where(
        &self,
        tenant: &str,
        name: &str,
        value_prefix: &str,
        pred: impl Fn(&str) -> bool,
    ) -> Result<Vec<u64>> {
        let prefix = postings_prefix(tenant, name, None);
        let mut scan = prefix.clone();
        scan.extend_from_slice(value_prefix.as_bytes());
        let mut lists = Vec::new();
        for item in prefix_iter(&*self.db()?, &scan) {
            let (k, v) = item.map_err(db_err("scanning postings"))?;
            let value = match postings_value(&k, prefix.len()) {
                Ok(value) => value,
                Err(e) => {
                    self.skip_entry(&k, &e);
                    continue;
                }
            };
            if pred(value) {
                lists.push(decode_refs(&k, &v)?);
            }
        }
        Ok(union_sorted(lists))
    }

    /// Refs (ascending) of `tenant`'s series that every matcher needing a
    /// value selects (postings, smallest set first); all the tenant's series
    /// when none does. Matchers that match the empty string are left to the
    /// caller.
    pub(crate) fn candidate_refs(&self, tenant: &str, matchers: &[Matcher]) -> Result<Vec<u64>> {
        let mut sets: Vec<Vec<u64>> = Vec::new();
        for m in matchers.iter().filter(|m| !m.matches_empty()) {
            let set = match m.op {
                MatchOp::Equal => self.postings_eq(tenant, &m.name, &m.value)?,
                MatchOp::RegexMatch if m.set_matches().is_some() => {
                    let mut lists = Vec::new();
                    for v in m.set_matches().unwrap_or_default() {
                        lists.push(self.postings_eq(tenant, &m.name, &v)?);
                    }
                    union_sorted(lists)
                }
                _ => {
                    self.postings_where(tenant, &m.name, m.literal_prefix().unwrap_or(""), |v| {
                        m.matches(v)
                    })?
                }
            };
            if set.is_empty() {
                return Ok(Vec::new());
            }
            sets.push(set);
        }
        Ok(if sets.is_empty() {
            // Every series has a metric name, so its postings list them all.
            self.postings_where(tenant, METRIC_NAME, "", |_| true)?
        } else {
            sets.sort_by_key(Vec::len);
            let mut it = sets.into_iter();
            let first = it.next().unwrap_or_default();
            it.fold(first, |acc, s| intersect_sorted(&acc, &s))
        })
    }

    /// Series of `tenant` matching every matcher, with their labels, sorted
    /// by labels. Matchers that match the empty string are checked against the
    /// labels; the others select postings, smallest set first.
    pub fn select(
        &self,
        tenant: &str,
        matchers: &[Matcher],
    ) -> Result<Vec<(SeriesId, Arc<Labels>)>> {
        self.select_where(tenant, matchers, None, true)
    }

    /// [`select`](Self::select) of the series in the shards (of
    /// `shards.0`) that `shards.1` takes, when given — refs whose shard
    /// [`track_shards`](Self::track_shards) knows dropped before their
    /// labels are read, the others after — sorted by labels only when
    /// `sorted`.
    pub fn select_where(
        &self,
        tenant: &str,
        matchers: &[Matcher],
        shards: Option<(u32, &dyn Fn(u32) -> bool)>,
        sorted: bool,
    ) -> Result<Vec<(SeriesId, Arc<Labels>)>> {
        let mut candidates = self.candidate_refs(tenant, matchers)?;
        if let Some((n, keep)) = shards {
            // A node asked for a third of the shards decodes a third.
            self.retain_shards(&mut candidates, n, keep);
        }
        let mut out = Vec::with_capacity(candidates.len());
        let mut missing = Vec::new();
        {
            let mut cache = self.series_cache.lock();
            for &r in &candidates {
                match cache.get(r) {
                    Some(v) => out.push(v),
                    None => missing.push(r),
                }
            }
        }
        if !missing.is_empty() {
            let mut got = Vec::with_capacity(missing.len());
            self.for_each_entry(&missing, |r, v| {
                // Postings are per tenant; the check guards against damage.
                let decoded = entry_tenant(v).and_then(|t| {
                    Ok(if t == tenant.as_bytes() {
                        Some(decode_entry(v)?)
                    } else {
                        None
                    })
                });
                match decoded {
                    Ok(Some(e)) => got.push((r, (e.id(), Arc::new(e.labels)))),
                    Ok(None) => {}
                    Err(e) => self.skip_entry(&ref_key(r), &e),
                }
                Ok(())
            })?;
            let mut cache = self.series_cache.lock();
            for (r, v) in got {
                cache.insert(r, v.clone());
                out.push(v);
            }
        }
        // Postings already enforce the matchers that need a value; those
        // that match the empty string are checked against the labels.
        let checks: Vec<&Matcher> = matchers.iter().filter(|m| m.matches_empty()).collect();
        out.retain(|(id, l)| {
            shards.is_none_or(|(n, keep)| keep(id.shard(n)))
                && checks
                    .iter()
                    .all(|m| m.matches(l.get(&m.name).unwrap_or("")))
        });
        if sorted {
            // Label sets are distinct, so an unstable sort gives the same order.
            out.sort_unstable_by(|a, b| a.1.cmp(&b.1));
        }
        Ok(out)
    }

    /// Calls `f` with the registry entry of each ref (ascending) that has
    /// one: one iterator, stepping over near gaps and seeking over far ones.
    pub(super) fn for_each_entry(
        &self,
        refs: &[u64],
        mut f: impl FnMut(u64, &[u8]) -> Result<()>,
    ) -> Result<()> {
        let (Some(&lo), Some(&hi)) = (refs.first(), refs.last()) else {
            return Ok(());
        };
        let mut ro = ReadOptions::default();
        let mut upper = ref_key(hi).to_vec();
        upper.push(0);
        ro.set_iterate_upper_bound(upper);
        let db = self.db()?;
        let mut it = db.raw_iterator_opt(ro);
        it.seek(ref_key(lo));
        for &r in refs {
            let want = ref_key(r);
            let mut steps = 0;
            while let Some(k) = it.key() {
                match k.cmp(want.as_slice()) {
                    std::cmp::Ordering::Less if steps < 8 => {
                        it.next();
                        steps += 1;
                    }
                    std::cmp::Ordering::Less => {
                        it.seek(want);
                        break;
                    }
                    _ => break,
                }
            }
            if it.key() == Some(want.as_slice()) {
                if let Some(v) = it.value() {
                    f(r, v)?;
                }
            }
        }
        it.status().map_err(db_err("reading series entries"))
    }

    /// Distinct label names of a tenant's series (all, when no matchers).
    pub fn label_names(&self, tenant: &str) -> Result<Vec<String>> {
        let mut prefix = vec![b'p'];
        prefix.extend_from_slice(tenant.as_bytes());
        prefix.push(0);
        let mut names = Vec::new();
        let mut ro = ReadOptions::default();
        ro.set_iterate_upper_bound(prefix_end(&prefix));
        let db = self.db()?;
        let mut it = db.raw_iterator_opt(ro);
        it.seek(&prefix);
        while let Some(k) = it.key() {
            let rest = &k[prefix.len()..];
            let Some(end) = rest.iter().position(|&b| b == 0) else {
                let e = crate::error::Error::Corrupt(format!(
                    "index postings key {}: no terminator after the label name",
                    super::keys::hex(k)
                ));
                self.skip_entry(k, &e);
                it.next();
                continue;
            };
            // Skip past every key of this name: name + 1 (the byte after the separator).
            let mut seek = prefix.clone();
            seek.extend_from_slice(&rest[..end]);
            seek.push(1);
            match key_text("postings", k, prefix.len(), &rest[..end]) {
                Ok(name) => names.push(name.to_string()),
                Err(e) => self.skip_entry(k, &e),
            }
            it.seek(&seek);
        }
        it.status().map_err(db_err("scanning label names"))?;
        Ok(names)
    }

    /// Distinct values of label `name` (all of the tenant's series).
    pub fn label_values(&self, tenant: &str, name: &str) -> Result<Vec<String>> {
        let prefix = postings_prefix(tenant, name, None);
        let mut ro = ReadOptions::default();
        ro.set_iterate_upper_bound(prefix_end(&prefix));
        let db = self.db()?;
        let mut it = db.raw_iterator_opt(ro);
        it.seek(&prefix);
        let mut values = Vec::new();
        while let Some(k) = it.key() {
            match postings_value(k, prefix.len()) {
                Ok(v) => values.push(v.to_string()),
                Err(e) => self.skip_entry(k, &e),
            }
            it.next();
        }
        it.status().map_err(db_err("scanning label values"))?;
        Ok(values)
    }
}

#[cfg(test)]
mod tests {
    use super::super::postings::encode_refs;
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn build_matcher(op: u8, mname: u8, val: u8) -> (Matcher, &'static str) {
        let ops = [
            MatchOp::Equal,
            MatchOp::NotEqual,
            MatchOp::RegexMatch,
            MatchOp::RegexNoMatch,
        ];
        let op = ops[op as usize % 4];
        let value = match val {
            3 => String::new(),
            4 => "v.*".to_string(),
            // Literal prefixes: the index scans only values starting with them.
            5 => "v1.*".to_string(),
            6 => "v[12]".to_string(),
            _ => format!("w{val}|v{val}"),
        };
        let value = if matches!(op, MatchOp::Equal | MatchOp::NotEqual) {
            value.split('|').next().unwrap_or("").to_string()
        } else {
            value
        };
        let lname = ["x", "y", "__name__"][mname as usize % 3];
        (Matcher::new(op, lname, value).unwrap(), lname)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        /// The index answers like a naive scan over a Vec of label sets, with
        /// series added in several batches (some repeated, some with ids that
        /// are not the label hash) and the index reopened in between.
        #[test]
        fn select_agrees_with_naive_model(
            series in proptest::collection::vec(
                (0u8..3, 0u8..4, 0u8..3, any::<bool>(), any::<bool>()), 1..60),
            batch in 1usize..7,
            reopen_at in 0usize..60,
            ms in proptest::collection::vec((0u8..4, 0u8..3, 0u8..7), 1..3),
        ) {
            let d = tempfile::tempdir().unwrap();
            let mut idx = Index::open(d.path()).unwrap();
            let mut model: BTreeMap<Labels, SeriesId> = BTreeMap::new();
            let mut all: BTreeMap<SeriesId, (String, Labels)> = BTreeMap::new();
            let mut items = Vec::new();
            for (n, a, b, tenant_b, odd_id) in &series {
                let tenant = if *tenant_b { "b" } else { "a" };
                let mut pairs = vec![("__name__".to_string(), format!("m{n}")), ("x".into(), format!("v{a}"))];
                if *b > 0 { pairs.push(("y".into(), format!("w{b}"))); }
                let labels = Labels::from_pairs(&pairs);
                let mut id = SeriesId::of(tenant, &labels);
                if *odd_id { id = SeriesId(id.0 ^ 0x5a5a); }
                if let Some((t, l)) = all.get(&id) {
                    // Same id again: the same series (the generator repeats).
                    prop_assert!(t == tenant && *l == labels);
                } else if all.values().any(|(t, l)| t == tenant && *l == labels) {
                    continue; // the other id of these labels: skip
                }
                all.insert(id, (tenant.to_string(), labels.clone()));
                if tenant == "a" { model.insert(labels.clone(), id); }
                items.push((tenant, id, labels));
            }
            for (ci, chunk) in items.chunks(batch).enumerate() {
                if ci * batch >= reopen_at && ci * batch < reopen_at + batch {
                    drop(idx);
                    idx = Index::open(d.path()).unwrap();
                }
                for tenant in ["a", "b"] {
                    let refs: Vec<(SeriesId, &Labels)> = chunk
                        .iter()
                        .filter(|(t, _, _)| *t == tenant)
                        .map(|(_, id, l)| (*id, l))
                        .collect();
                    idx.add_series(tenant, &refs).unwrap();
                    // Registering again is a no-op.
                    idx.add_series(tenant, &refs).unwrap();
                }
            }
            let matchers: Vec<(Matcher, &str)> = ms.iter().map(|(op, n, v)| build_matcher(*op, *n, *v)).collect();
            let ms: Vec<Matcher> = matchers.iter().map(|(m, _)| m.clone()).collect();
            let got: Vec<(SeriesId, Labels)> = idx
                .select("a", &ms)
                .unwrap()
                .into_iter()
                .map(|(i, l)| (i, Arc::unwrap_or_clone(l)))
                .collect();
            let want: Vec<(SeriesId, Labels)> = model
                .iter()
                .filter(|(l, _)| matchers.iter().all(|(m, n)| m.matches(l.get(n).unwrap_or(""))))
                .map(|(l, id)| (*id, l.clone()))
                .collect();
            prop_assert_eq!(got, want);
            // Ids and labels survive a reopen; refs are distinct.
            drop(idx);
            let idx = Index::open(d.path()).unwrap();
            let mut ids = idx.all_series_ids().unwrap();
            ids.sort();
            prop_assert_eq!(ids, all.keys().copied().collect::<Vec<_>>());
            for (id, (t, l)) in &all {
                prop_assert_eq!(idx.series_labels(*id).unwrap(), Some((t.clone(), l.clone())));
            }
            let refs: std::collections::HashSet<u64> =
                all.keys().map(|id| idx.lookup(*id).unwrap().unwrap().0).collect();
            prop_assert_eq!(refs.len(), all.len());
            let every: Vec<Labels> = idx.select("a", &[]).unwrap().into_iter().map(|(_, l)| Arc::unwrap_or_clone(l)).collect();
            prop_assert_eq!(every, model.keys().cloned().collect::<Vec<_>>());
        }

        /// The merge operator is a set union whatever the operand order.
        #[test]
        fn merge_is_union(lists in proptest::collection::vec(
            proptest::collection::btree_set(0u64..300, 0..20), 1..6)) {
            let d = tempfile::tempdir().unwrap();
            let idx = Index::open(d.path()).unwrap();
            let mut want = std::collections::BTreeSet::new();
            for (i, l) in lists.iter().enumerate() {
                let refs: Vec<u64> = l.iter().copied().collect();
                let mut v = Vec::new();
                encode_refs(&mut v, &refs);
                idx.db().unwrap().merge(b"pt\0n\0v\0", &v).unwrap();
                want.extend(refs);
                if i == 2 {
                    idx.persist().unwrap();
                }
            }
            let got = idx.postings_eq("t", "n", "v").unwrap();
            prop_assert_eq!(got, want.into_iter().collect::<Vec<_>>());
        }
    }
}
