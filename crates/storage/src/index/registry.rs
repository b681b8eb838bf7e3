//! The series registry: ref → (tenant, labels [, id]) entries, the id → refs
//! lookup keys, and registration (which also writes the postings).

use super::keys::{id_key, postings_prefix, ref_key};
use super::postings::{decode_refs, encode_refs};
use super::{db_err, prefix_iter, Index};
use crate::enc::{put_bytes, put_labels_within, Bounds, Reader};
use crate::error::{Error, Result};
use cairn_common::{Labels, SeriesId};
use rocksdb::WriteBatch;
use std::collections::{BTreeMap, HashMap};

/// A decoded registry entry.
pub(super) struct Entry {
    pub(super) tenant: String,
    pub(super) labels: Labels,
    /// Present only when the id is not `SeriesId::of(tenant, labels)`.
    id: Option<SeriesId>,
}

impl Entry {
    pub(super) fn id(&self) -> SeriesId {
        self.id
            .unwrap_or_else(|| SeriesId::of(&self.tenant, &self.labels))
    }
}

/// A registry entry; `Invalid` when the labels are beyond `bounds` (the
/// hard ones for new series; for series replayed from the commit log, what the
/// decoder accepts, so nothing is stored that cannot be read back).
pub(super) fn encode_entry(
    tenant: &str,
    labels: &Labels,
    id: SeriesId,
    bounds: Bounds,
) -> Result<Vec<u8>> {
    let mut v = Vec::with_capacity(16 + labels.len() * 24);
    put_bytes(&mut v, tenant.as_bytes());
    put_labels_within(&mut v, labels, bounds)?;
    if SeriesId::of(tenant, labels) != id {
        v.extend_from_slice(&id.to_be_bytes());
    }
    Ok(v)
}

pub(super) fn decode_entry(v: &[u8]) -> Result<Entry> {
    let mut r = Reader::new(v, "index series entry");
    let tenant = r.string()?;
    let labels = r.labels()?;
    let id = if r.is_empty() {
        None
    } else {
        Some(SeriesId::from_be_bytes(r.fixed::<16>()?))
    };
    Ok(Entry { tenant, labels, id })
}

/// The id of an encoded registry entry, without building its labels.
pub(super) fn entry_id(v: &[u8]) -> Result<SeriesId> {
    let mut r = Reader::new(v, "index series entry");
    let tenant = std::str::from_utf8(r.bytes()?)
        .map_err(|_| Error::Corrupt("index series entry: tenant not UTF-8".into()))?;
    let n = r.uvarint()?;
    let mut pairs = Vec::with_capacity(n.min(256) as usize);
    for _ in 0..n {
        pairs.push((r.bytes()?, r.bytes()?));
    }
    if r.is_empty() {
        Ok(SeriesId::of_bytes(tenant, pairs.into_iter()))
    } else {
        Ok(SeriesId::from_be_bytes(r.fixed::<16>()?))
    }
}

/// The tenant of an encoded registry entry, without decoding the labels.
pub(super) fn entry_tenant(v: &[u8]) -> Result<&[u8]> {
    Reader::new(v, "index series entry").bytes()
}

impl Index {
    /// Keeps each ref's shard (of `num_shards`, at most 65,535) from now
    /// on, the registered series' read from the registry now.
    pub fn track_shards(&self, num_shards: u32) -> Result<()> {
        if num_shards == 0 || num_shards >= u32::from(u16::MAX) {
            return Ok(());
        }
        let next = *self.next_ref.lock();
        let mut table = vec![u16::MAX; next as usize];
        for item in prefix_iter(&*self.db()?, b"r") {
            let (k, v) = item.map_err(db_err("scanning series registry"))?;
            if let (Ok(r), Ok(id)) = (super::ref_of_key(&k), entry_id(&v)) {
                if let Some(slot) = table.get_mut(r as usize) {
                    *slot = id.shard(num_shards) as u16;
                }
            }
        }
        *self.ref_shards.write() = (num_shards, table);
        Ok(())
    }

    /// Drops the refs whose shard (of `num_shards`) is known and `keep`
    /// refuses; one lock for them all.
    pub(super) fn retain_shards(
        &self,
        refs: &mut Vec<u64>,
        num_shards: u32,
        keep: &dyn Fn(u32) -> bool,
    ) {
        let t = self.ref_shards.read();
        if t.0 != num_shards {
            return;
        }
        refs.retain(|&r| match t.1.get(r as usize) {
            Some(&s) if s != u16::MAX => keep(u32::from(s)),
            _ => true,
        });
    }

    /// Every registered series id (startup: the write path's known set).
    pub fn all_series_ids(&self) -> Result<Vec<SeriesId>> {
        let mut out = Vec::new();
        for item in prefix_iter(&*self.db()?, b"r") {
            let (k, v) = item.map_err(db_err("scanning series registry"))?;
            match entry_id(&v) {
                Ok(id) => out.push(id),
                Err(e) => self.skip_entry(&k, &e),
            }
        }
        Ok(out)
    }

    /// The ref and registry entry of `id`.
    pub(super) fn lookup(&self, id: SeriesId) -> Result<Option<(u64, Entry)>> {
        let db = self.db()?;
        let Some(v) = db
            .get_pinned(id_key(id))
            .map_err(db_err("reading series ref"))?
        else {
            return Ok(None);
        };
        for r in decode_refs(&id_key(id), &v)? {
            match self.entry(r) {
                Ok(Some(e)) if e.id() == id => return Ok(Some((r, e))),
                Ok(_) => {}
                Err(e @ Error::Corrupt(_)) => self.skip_entry(&ref_key(r), &e),
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    fn entry(&self, r: u64) -> Result<Option<Entry>> {
        let db = self.db()?;
        let Some(v) = db
            .get_pinned(ref_key(r))
            .map_err(db_err("reading series labels"))?
        else {
            return Ok(None);
        };
        Ok(Some(decode_entry(&v)?))
    }

    /// Adds registry and postings entries for the series not yet registered
    /// to `wb`, assigning refs from `next`; returns the next free ref.
    fn register(
        &self,
        wb: &mut WriteBatch,
        mut next: u64,
        tenant: &str,
        series: &[(SeriesId, &Labels)],
        bounds: Bounds,
        new_ids: &mut Vec<SeriesId>,
    ) -> Result<u64> {
        let mut postings: BTreeMap<Vec<u8>, Vec<u64>> = BTreeMap::new();
        let mut batch: HashMap<SeriesId, &Labels> = HashMap::new();
        for &(id, labels) in series {
            if let Some(&prev) = batch.get(&id) {
                if prev == labels {
                    continue;
                }
                return Err(Error::Invalid(format!(
                    "series id collision: {labels} collides with {prev} (tenant {tenant})"
                )));
            }
            if let Some((_, e)) = self.lookup(id)? {
                if e.tenant == tenant && &e.labels == labels {
                    continue;
                }
                return Err(Error::Invalid(format!(
                    "series id collision: {labels} collides with {} (tenant {})",
                    e.labels, e.tenant
                )));
            }
            batch.insert(id, labels);
            new_ids.push(id);
            let r = next;
            next += 1;
            let mut rv = Vec::with_capacity(3);
            encode_refs(&mut rv, &[r]);
            wb.merge(id_key(id), rv);
            wb.put(ref_key(r), encode_entry(tenant, labels, id, bounds)?);
            for l in labels.iter() {
                postings
                    .entry(postings_prefix(tenant, &l.name, Some(&l.value)))
                    .or_default()
                    .push(r);
            }
        }
        let mut v = Vec::new();
        for (k, refs) in postings {
            v.clear();
            encode_refs(&mut v, &refs);
            wb.merge(k, &v);
        }
        Ok(next)
    }

    /// Registers new series (registry + postings) in one batch. A registered
    /// id whose stored labels differ is a hash collision and is refused, so
    /// is a label set beyond the hard bounds (`Invalid`).
    pub fn add_series(&self, tenant: &str, series: &[(SeriesId, &Labels)]) -> Result<()> {
        self.add_series_within(tenant, series, Bounds::Hard)
    }

    /// [`add_series`](Self::add_series) for series read back from the
    /// commit log on replay: any label set the decoders accept, since a
    /// release before the hard bounds may have written it.
    pub fn add_replayed_series(&self, tenant: &str, series: &[(SeriesId, &Labels)]) -> Result<()> {
        self.add_series_within(tenant, series, Bounds::Stored)
    }

    fn add_series_within(
        &self,
        tenant: &str,
        series: &[(SeriesId, &Labels)],
        bounds: Bounds,
    ) -> Result<()> {
        self.recover()?;
        let mut next = self.next_ref.lock();
        let mut wb = WriteBatch::default();
        let mut new_ids = Vec::new();
        let n = self.register(&mut wb, *next, tenant, series, bounds, &mut new_ids)?;
        if n == *next {
            return Ok(());
        }
        self.write(wb, "writing series to index")?;
        self.postings_dirty
            .store(true, std::sync::atomic::Ordering::Relaxed);
        {
            let mut t = self.ref_shards.write();
            let shards = t.0;
            if shards > 0 {
                // The refs just taken, `*next` on, in order.
                if t.1.len() as u64 == *next {
                    t.1.extend(new_ids.iter().map(|id| id.shard(shards) as u16));
                } else {
                    t.1.resize(n as usize, u16::MAX);
                }
            }
        }
        *next = n;
        Ok(())
    }

    pub fn series_labels(&self, id: SeriesId) -> Result<Option<(String, Labels)>> {
        Ok(self.lookup(id)?.map(|(_, e)| (e.tenant, e.labels)))
    }
}

/// Fuzzing: a registry entry value. Its decoders must agree: the id read
/// without building labels is the decoded entry's id, the tenant read alone
/// is its tenant.
pub(crate) fn fuzz_entry(v: &[u8]) {
    let Ok(e) = decode_entry(v) else {
        return;
    };
    assert_eq!(
        entry_id(v).ok(),
        Some(e.id()),
        "entry_id of a decodable entry"
    );
    assert_eq!(entry_tenant(v).ok(), Some(e.tenant.as_bytes()));
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_common::limits::hard;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Registry entries round-trip over the accepted domain: any tenant,
        /// label sets up to the hard bounds, ids that are or are not the
        /// label hash.
        #[test]
        fn entries_round_trip_over_the_accepted_domain(
            tenant in "\\PC{0,16}",
            n in prop_oneof![4 => 0usize..6, 1 => Just(hard::MAX_LABELS)],
            name_len in prop_oneof![3 => 4usize..12, 1 => Just(hard::MAX_LABEL_NAME_BYTES)],
            value in prop_oneof![3 => "\\PC{0,8}", 1 => Just("v".repeat(hard::MAX_LABEL_VALUE_BYTES))],
            odd_id in proptest::option::of(any::<u128>()),
        ) {
            let v: Vec<cairn_common::Label> = (0..n)
                .map(|i| {
                    let nl = if i < 2 { name_len } else { 6 };
                    let name = format!("{i:04}{}", "n".repeat(nl - 4));
                    let value = if i < 2 { value.clone() } else { format!("{i}") };
                    cairn_common::Label::new(name, value)
                })
                .collect();
            let labels = Labels::from_sorted_unchecked(v);
            let id = odd_id.map_or_else(|| SeriesId::of(&tenant, &labels), SeriesId);
            let bytes = encode_entry(&tenant, &labels, id, Bounds::Hard).unwrap();
            let e = decode_entry(&bytes).unwrap();
            prop_assert_eq!(&e.tenant, &tenant);
            prop_assert_eq!(&e.labels, &labels);
            prop_assert_eq!(e.id(), id);
            prop_assert_eq!(entry_id(&bytes).unwrap(), id);
            prop_assert_eq!(entry_tenant(&bytes).unwrap(), tenant.as_bytes());
        }
    }

    #[test]
    fn entries_beyond_the_bounds_are_not_encoded() {
        let v: Vec<cairn_common::Label> = (0..=hard::MAX_LABELS)
            .map(|i| cairn_common::Label::new(format!("l{i:05}"), "x"))
            .collect();
        let labels = Labels::from_sorted_unchecked(v);
        let id = SeriesId::of("t", &labels);
        assert!(matches!(
            encode_entry("t", &labels, id, Bounds::Hard),
            Err(Error::Invalid(_))
        ));
        let d = tempfile::tempdir().unwrap();
        let idx = Index::open(d.path()).unwrap();
        assert!(matches!(
            idx.add_series("t", &[(id, &labels)]),
            Err(Error::Invalid(_))
        ));
        assert!(idx.all_series_ids().unwrap().is_empty());
    }

    #[test]
    fn collision_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let idx = Index::open(d.path()).unwrap();
        let l1 = Labels::from_pairs(&[("__name__", "up"), ("job", "a")]);
        let l2 = Labels::from_pairs(&[("__name__", "up"), ("job", "b")]);
        let id = SeriesId::of("t", &l1);
        idx.add_series("t", &[(id, &l1)]).unwrap();
        assert!(idx.add_series("t", &[(id, &l2)]).is_err());
        assert!(idx.add_series("u", &[(id, &l1)]).is_err());
        let other = SeriesId(7);
        assert!(idx.add_series("t", &[(other, &l2), (other, &l1)]).is_err());
        assert_eq!(idx.all_series_ids().unwrap(), vec![id]);
    }

    #[test]
    fn ids_sharing_a_lookup_key() {
        let d = tempfile::tempdir().unwrap();
        let l1 = Labels::from_pairs(&[("__name__", "up"), ("job", "a")]);
        let l2 = Labels::from_pairs(&[("__name__", "up"), ("job", "b")]);
        let l3 = Labels::from_pairs(&[("__name__", "up"), ("job", "c")]);
        let (i1, i2, i3) = (
            SeriesId(1 << 64),
            SeriesId((1 << 64) | 1),
            SeriesId(5 << 64),
        );
        {
            let idx = Index::open(d.path()).unwrap();
            idx.add_series("t", &[(i1, &l1), (i2, &l2)]).unwrap();
            idx.add_series("t", &[(i3, &l3)]).unwrap();
            assert!(idx.add_series("t", &[(i2, &l1)]).is_err());
            idx.persist().unwrap();
        }
        let idx = Index::open(d.path()).unwrap();
        idx.add_series("t", &[(i2, &l2), (i1, &l1)]).unwrap();
        assert_eq!(idx.series_labels(i1).unwrap(), Some(("t".into(), l1)));
        assert_eq!(idx.series_labels(i2).unwrap(), Some(("t".into(), l2)));
        assert_eq!(idx.series_labels(SeriesId((1 << 64) | 2)).unwrap(), None);
        let mut ids = idx.all_series_ids().unwrap();
        ids.sort();
        assert_eq!(ids, vec![i1, i2, i3]);
        assert_eq!(*idx.next_ref.lock(), 3);
    }
}
