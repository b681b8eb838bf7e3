//! The label index and series registry, in RocksDB.
//!
//! Keys (one column family, prefixed by kind):
//! - `s` id(16)                                  → tenant, labels   (series registry)
//! - `p` tenant 0 name 0 value 0 id(16)          → ""               (postings)
//! - `e` id(16) t(8, big-endian, sign-flipped)   → value, labels    (exemplars)
//! - `m` tenant 0 metric                         → type, help, unit (metadata)
//!
//! Tenant, label names and values are valid UTF-8 without NUL (ingest
//! validates that), so `0` separates key parts unambiguously.

use crate::enc::{put_bytes, put_labels, Reader};
use crate::{Error, Result};
use cairn_common::{
    Exemplar, Labels, MatchOp, Matcher, MetricMetadata, MetricType, SeriesId, METRIC_NAME,
};
use rocksdb::{Direction, IteratorMode, Options, WriteBatch, DB};
use std::collections::HashSet;
use std::path::Path;

pub struct Index {
    db: DB,
}

fn db_err(context: &str) -> impl FnOnce(rocksdb::Error) -> Error + '_ {
    move |e| Error::Index(format!("{context}: {e}"))
}

fn series_key(id: SeriesId) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[0] = b's';
    k[1..].copy_from_slice(&id.to_be_bytes());
    k
}

fn postings_prefix(tenant: &str, name: &str, value: Option<&str>) -> Vec<u8> {
    let mut k = Vec::with_capacity(3 + tenant.len() + name.len() + value.map_or(0, str::len) + 1);
    k.push(b'p');
    k.extend_from_slice(tenant.as_bytes());
    k.push(0);
    k.extend_from_slice(name.as_bytes());
    k.push(0);
    if let Some(v) = value {
        k.extend_from_slice(v.as_bytes());
        k.push(0);
    }
    k
}

fn ts_key(t: i64) -> [u8; 8] {
    ((t as u64) ^ (1 << 63)).to_be_bytes()
}

fn metadata_key(tenant: &str, metric: &str) -> Vec<u8> {
    let mut k = vec![b'm'];
    k.extend_from_slice(tenant.as_bytes());
    k.push(0);
    k.extend_from_slice(metric.as_bytes());
    k
}

impl Index {
    pub fn open(path: &Path) -> Result<Self> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.set_keep_log_file_num(2);
        opts.set_max_log_file_size(1 << 20);
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        opts.set_bottommost_compression_type(rocksdb::DBCompressionType::Zstd);
        opts.set_write_buffer_size(32 << 20);
        opts.set_max_background_jobs(2);
        let db = DB::open(&opts, path).map_err(|e| {
            Error::Index(format!("opening RocksDB index at {}: {e}", path.display()))
        })?;
        Ok(Self { db })
    }

    /// Every registered series id (startup: the write path's known set).
    pub fn all_series_ids(&self) -> Result<Vec<SeriesId>> {
        let mut out = Vec::new();
        for item in self
            .db
            .iterator(IteratorMode::From(b"s", Direction::Forward))
        {
            let (k, _) = item.map_err(db_err("scanning series registry"))?;
            if k.first() != Some(&b's') {
                break;
            }
            if let Ok(b) = <[u8; 16]>::try_from(&k[1..]) {
                out.push(SeriesId::from_be_bytes(b));
            }
        }
        Ok(out)
    }

    /// Registers new series (registry + postings) in one batch. A registered
    /// id whose stored labels differ is a hash collision and is refused.
    pub fn add_series(&self, tenant: &str, series: &[(SeriesId, &Labels)]) -> Result<()> {
        let mut wb = WriteBatch::default();
        for (id, labels) in series {
            if let Some((t, existing)) = self.series_labels(*id)? {
                if t == tenant && &existing == *labels {
                    continue;
                }
                return Err(Error::Invalid(format!(
                    "series id collision: {labels} collides with {existing} (tenant {t})"
                )));
            }
            let mut v = Vec::new();
            put_bytes(&mut v, tenant.as_bytes());
            put_labels(&mut v, labels);
            wb.put(series_key(*id), v);
            for l in labels.iter() {
                let mut k = postings_prefix(tenant, &l.name, Some(&l.value));
                k.extend_from_slice(&id.to_be_bytes());
                wb.put(k, b"");
            }
        }
        self.db.write(wb).map_err(db_err("writing series to index"))
    }

    pub fn series_labels(&self, id: SeriesId) -> Result<Option<(String, Labels)>> {
        let Some(v) = self
            .db
            .get_pinned(series_key(id))
            .map_err(db_err("reading series labels"))?
        else {
            return Ok(None);
        };
        let mut r = Reader::new(&v, "index series entry");
        let tenant = r.string()?;
        let labels = r.labels()?;
        Ok(Some((tenant, labels)))
    }

    /// Ids of series with label `name` whose value satisfies `pred`.
    fn postings_where(
        &self,
        tenant: &str,
        name: &str,
        pred: impl Fn(&str) -> bool,
    ) -> Result<HashSet<SeriesId>> {
        let prefix = postings_prefix(tenant, name, None);
        let mut out = HashSet::new();
        for item in self
            .db
            .iterator(IteratorMode::From(&prefix, Direction::Forward))
        {
            let (k, _) = item.map_err(db_err("scanning postings"))?;
            if !k.starts_with(&prefix) {
                break;
            }
            let rest = &k[prefix.len()..];
            if rest.len() < 17 {
                continue;
            }
            let value = &rest[..rest.len() - 17];
            let Ok(value) = std::str::from_utf8(value) else {
                continue;
            };
            if pred(value) {
                let id: [u8; 16] = rest[rest.len() - 16..]
                    .try_into()
                    .map_err(|_| Error::Corrupt("postings key".into()))?;
                out.insert(SeriesId::from_be_bytes(id));
            }
        }
        Ok(out)
    }

    fn postings_eq(&self, tenant: &str, name: &str, value: &str) -> Result<HashSet<SeriesId>> {
        let prefix = postings_prefix(tenant, name, Some(value));
        let mut out = HashSet::new();
        for item in self
            .db
            .iterator(IteratorMode::From(&prefix, Direction::Forward))
        {
            let (k, _) = item.map_err(db_err("scanning postings"))?;
            if !k.starts_with(&prefix) {
                break;
            }
            if let Ok(id) = <[u8; 16]>::try_from(&k[prefix.len()..]) {
                out.insert(SeriesId::from_be_bytes(id));
            }
        }
        Ok(out)
    }

    /// Series of `tenant` matching every matcher, with their labels, sorted
    /// by labels. Matchers that match the empty string are checked against the
    /// labels; the others select postings, smallest set first.
    pub fn select(&self, tenant: &str, matchers: &[Matcher]) -> Result<Vec<(SeriesId, Labels)>> {
        let mut sets: Vec<HashSet<SeriesId>> = Vec::new();
        for m in matchers.iter().filter(|m| !m.matches_empty()) {
            let set = match m.op {
                MatchOp::Equal => self.postings_eq(tenant, &m.name, &m.value)?,
                MatchOp::RegexMatch if m.set_matches().is_some() => {
                    let mut s = HashSet::new();
                    for v in m.set_matches().unwrap_or_default() {
                        s.extend(self.postings_eq(tenant, &m.name, &v)?);
                    }
                    s
                }
                _ => self.postings_where(tenant, &m.name, |v| m.matches(v))?,
            };
            if set.is_empty() {
                return Ok(Vec::new());
            }
            sets.push(set);
        }
        let candidates: HashSet<SeriesId> = if sets.is_empty() {
            // Every series has a metric name, so its postings list them all.
            self.postings_where(tenant, METRIC_NAME, |_| true)?
        } else {
            sets.sort_by_key(|s| s.len());
            let mut it = sets.into_iter();
            let first = it.next().unwrap_or_default();
            it.fold(first, |acc, s| {
                acc.into_iter().filter(|id| s.contains(id)).collect()
            })
        };
        let mut out = Vec::with_capacity(candidates.len());
        for id in candidates {
            if let Some((t, labels)) = self.series_labels(id)? {
                if t == tenant
                    && matchers
                        .iter()
                        .all(|m| m.matches(labels.get(&m.name).unwrap_or("")))
                {
                    out.push((id, labels));
                }
            }
        }
        out.sort_by(|a, b| a.1.cmp(&b.1));
        Ok(out)
    }

    /// Distinct label names of a tenant's series (all, when no matchers).
    pub fn label_names(&self, tenant: &str) -> Result<Vec<String>> {
        let mut prefix = vec![b'p'];
        prefix.extend_from_slice(tenant.as_bytes());
        prefix.push(0);
        let mut names = Vec::new();
        let mut seek = prefix.clone();
        loop {
            let mut iter = self
                .db
                .iterator(IteratorMode::From(&seek, Direction::Forward));
            let Some(item) = iter.next() else { break };
            let (k, _) = item.map_err(db_err("scanning label names"))?;
            if !k.starts_with(&prefix) {
                break;
            }
            let rest = &k[prefix.len()..];
            let Some(end) = rest.iter().position(|&b| b == 0) else {
                break;
            };
            let name = String::from_utf8_lossy(&rest[..end]).to_string();
            // Skip past every key of this name: name + 1 (the byte after the separator).
            seek = prefix.clone();
            seek.extend_from_slice(name.as_bytes());
            seek.push(1);
            names.push(name);
        }
        Ok(names)
    }

    /// Distinct values of label `name` (all of the tenant's series).
    pub fn label_values(&self, tenant: &str, name: &str) -> Result<Vec<String>> {
        let prefix = postings_prefix(tenant, name, None);
        let mut values = Vec::new();
        let mut seek = prefix.clone();
        loop {
            let mut iter = self
                .db
                .iterator(IteratorMode::From(&seek, Direction::Forward));
            let Some(item) = iter.next() else { break };
            let (k, _) = item.map_err(db_err("scanning label values"))?;
            if !k.starts_with(&prefix) {
                break;
            }
            let rest = &k[prefix.len()..];
            if rest.len() < 17 {
                break;
            }
            let value = String::from_utf8_lossy(&rest[..rest.len() - 17]).to_string();
            seek = prefix.clone();
            seek.extend_from_slice(value.as_bytes());
            seek.push(1);
            values.push(value);
        }
        Ok(values)
    }

    pub fn put_exemplars(&self, items: &[(SeriesId, Exemplar)]) -> Result<()> {
        let mut wb = WriteBatch::default();
        for (id, e) in items {
            let mut k = Vec::with_capacity(25);
            k.push(b'e');
            k.extend_from_slice(&id.to_be_bytes());
            k.extend_from_slice(&ts_key(e.t));
            let mut v = e.value.to_bits().to_le_bytes().to_vec();
            put_labels(&mut v, &e.labels);
            wb.put(k, v);
        }
        self.db.write(wb).map_err(db_err("writing exemplars"))
    }

    pub fn exemplars(&self, id: SeriesId, start: i64, end: i64) -> Result<Vec<Exemplar>> {
        let mut prefix = vec![b'e'];
        prefix.extend_from_slice(&id.to_be_bytes());
        let mut from = prefix.clone();
        from.extend_from_slice(&ts_key(start));
        let mut out = Vec::new();
        for item in self
            .db
            .iterator(IteratorMode::From(&from, Direction::Forward))
        {
            let (k, v) = item.map_err(db_err("scanning exemplars"))?;
            if !k.starts_with(&prefix) || k.len() != 25 {
                break;
            }
            let t =
                (u64::from_be_bytes(k[17..25].try_into().unwrap_or_default()) ^ (1 << 63)) as i64;
            if t > end {
                break;
            }
            let mut r = Reader::new(&v, "exemplar entry");
            let value = f64::from_bits(r.u64()?);
            let labels = r.labels()?;
            out.push(Exemplar { labels, value, t });
        }
        Ok(out)
    }

    pub fn put_metadata(&self, tenant: &str, items: &[(String, MetricMetadata)]) -> Result<()> {
        let mut wb = WriteBatch::default();
        for (name, md) in items {
            let mut v = Vec::new();
            put_bytes(&mut v, md.metric_type.as_str().as_bytes());
            put_bytes(&mut v, md.help.as_bytes());
            put_bytes(&mut v, md.unit.as_bytes());
            wb.put(metadata_key(tenant, name), v);
        }
        self.db.write(wb).map_err(db_err("writing metadata"))
    }

    pub fn metadata(
        &self,
        tenant: &str,
        metric: Option<&str>,
    ) -> Result<Vec<(String, MetricMetadata)>> {
        let prefix = metadata_key(tenant, metric.unwrap_or(""));
        let mut out = Vec::new();
        for item in self
            .db
            .iterator(IteratorMode::From(&prefix, Direction::Forward))
        {
            let (k, v) = item.map_err(db_err("scanning metadata"))?;
            if !k.starts_with(&prefix) {
                break;
            }
            let base = metadata_key(tenant, "").len();
            let name = String::from_utf8_lossy(&k[base..]).to_string();
            if metric.is_some_and(|m| m != name) {
                continue;
            }
            let mut r = Reader::new(&v, "metadata entry");
            let metric_type = MetricType::parse(&r.string()?);
            let help = r.string()?;
            let unit = r.string()?;
            out.push((
                name,
                MetricMetadata {
                    metric_type,
                    help,
                    unit,
                },
            ));
        }
        Ok(out)
    }

    /// Flushes memtables so the index no longer needs the commit log.
    pub fn persist(&self) -> Result<()> {
        self.db.flush().map_err(db_err("flushing index"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]
        /// The index answers like a naive scan over a Vec of label sets.
        #[test]
        fn select_agrees_with_naive_model(
            series in proptest::collection::vec(
                (0u8..3, 0u8..4, 0u8..3, any::<bool>()), 1..40),
            mname in 0u8..3, op in 0u8..4, val in 0u8..4,
        ) {
            let d = tempfile::tempdir().unwrap();
            let idx = Index::open(d.path()).unwrap();
            let mut model: BTreeMap<Labels, SeriesId> = BTreeMap::new();
            for (n, a, b, tenant_b) in &series {
                let tenant = if *tenant_b { "b" } else { "a" };
                let mut pairs = vec![("__name__".to_string(), format!("m{n}")), ("x".into(), format!("v{a}"))];
                if *b > 0 { pairs.push(("y".into(), format!("w{b}"))); }
                let labels = Labels::from_pairs(&pairs);
                let id = SeriesId::of(tenant, &labels);
                idx.add_series(tenant, &[(id, &labels)]).unwrap();
                if tenant == "a" { model.insert(labels, id); }
            }
            let ops = [MatchOp::Equal, MatchOp::NotEqual, MatchOp::RegexMatch, MatchOp::RegexNoMatch];
            let value = if val == 3 { String::new() } else { format!("w{val}|v{val}") };
            let value = if matches!(ops[op as usize], MatchOp::Equal | MatchOp::NotEqual) { value.split('|').next().unwrap_or("").to_string() } else { value };
            let lname = ["x", "y", "__name__"][mname as usize];
            let m = Matcher::new(ops[op as usize], lname, value).unwrap();
            let got: Vec<Labels> = idx.select("a", std::slice::from_ref(&m)).unwrap().into_iter().map(|(_, l)| l).collect();
            let want: Vec<Labels> = model.keys().filter(|l| m.matches(l.get(lname).unwrap_or(""))).cloned().collect();
            prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn names_values_exemplars_metadata() {
        let d = tempfile::tempdir().unwrap();
        let idx = Index::open(d.path()).unwrap();
        let l1 = Labels::from_pairs(&[("__name__", "up"), ("job", "a")]);
        let l2 = Labels::from_pairs(&[("__name__", "up"), ("job", "b"), ("zone", "z")]);
        let (i1, i2) = (SeriesId::of("t", &l1), SeriesId::of("t", &l2));
        idx.add_series("t", &[(i1, &l1), (i2, &l2)]).unwrap();
        idx.add_series("u", &[(SeriesId::of("u", &l1), &l1)])
            .unwrap();
        assert_eq!(
            idx.label_names("t").unwrap(),
            vec!["__name__", "job", "zone"]
        );
        assert_eq!(idx.label_values("t", "job").unwrap(), vec!["a", "b"]);
        assert_eq!(idx.label_values("u", "job").unwrap(), vec!["a"]);
        assert_eq!(idx.all_series_ids().unwrap().len(), 3);
        let ex = Exemplar {
            labels: Labels::from_pairs(&[("trace_id", "abc")]),
            value: 1.5,
            t: -5,
        };
        idx.put_exemplars(&[(i1, ex.clone())]).unwrap();
        assert_eq!(idx.exemplars(i1, -10, 10).unwrap(), vec![ex]);
        assert!(idx.exemplars(i1, 0, 10).unwrap().is_empty());
        let md = MetricMetadata {
            metric_type: MetricType::Counter,
            help: "h".into(),
            unit: String::new(),
        };
        idx.put_metadata("t", &[("up".into(), md.clone())]).unwrap();
        assert_eq!(
            idx.metadata("t", Some("up")).unwrap(),
            vec![("up".to_string(), md)]
        );
        assert!(idx.metadata("u", None).unwrap().is_empty());
    }
}
