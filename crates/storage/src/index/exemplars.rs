//! Exemplars: `e` id(16) t(8) → value, labels.

use super::keys::{exemplar_time, ts_key};
use super::{db_err, Index};
use crate::enc::{put_labels_within, Bounds, Reader};
use crate::error::Result;
use cairn_common::{Exemplar, SeriesId};
use rocksdb::{Direction, IteratorMode, WriteBatch};

impl Index {
    /// Stores exemplars; `Invalid` for a label set beyond the hard bounds.
    pub fn put_exemplars(&self, items: &[(SeriesId, Exemplar)]) -> Result<()> {
        self.put_exemplars_within(items, Bounds::Hard)
    }

    /// [`put_exemplars`](Self::put_exemplars) for exemplars read back from
    /// the commit log on replay (any label set the decoders accept).
    pub fn put_replayed_exemplars(&self, items: &[(SeriesId, Exemplar)]) -> Result<()> {
        self.put_exemplars_within(items, Bounds::Stored)
    }

    fn put_exemplars_within(&self, items: &[(SeriesId, Exemplar)], bounds: Bounds) -> Result<()> {
        self.recover()?;
        let mut wb = WriteBatch::default();
        put_all(&mut wb, items, bounds)?;
        self.write(wb, "writing exemplars")
    }

    /// Replaces exemplars in one synced batch: those of each `(id, start,
    /// end)` in `clear` (`[start, end]`) are deleted, then `items` stored.
    /// The downsampling pass keeps each window's chosen exemplars this
    /// way, durable before its progress marker moves, so that a window
    /// computed again holds its new choice only.
    pub fn replace_exemplars(
        &self,
        clear: &[(SeriesId, i64, i64)],
        items: &[(SeriesId, Exemplar)],
    ) -> Result<()> {
        if clear.is_empty() && items.is_empty() {
            return Ok(());
        }
        self.recover()?;
        let mut wb = WriteBatch::default();
        for &(id, start, end) in clear {
            wb.delete_range(
                exemplar_key(id, start),
                exemplar_key(id, end.saturating_add(1)),
            );
        }
        put_all(&mut wb, items, Bounds::Hard)?;
        self.write_synced(wb, "replacing exemplars")
    }

    /// Exemplars of `id` in `[start, end]`, by time; entries that do not
    /// decode (key or value) are skipped and counted.
    pub fn exemplars(&self, id: SeriesId, start: i64, end: i64) -> Result<Vec<Exemplar>> {
        let mut prefix = vec![b'e'];
        prefix.extend_from_slice(&id.to_be_bytes());
        let mut from = prefix.clone();
        from.extend_from_slice(&ts_key(start));
        let mut out = Vec::new();
        for item in self
            .db()?
            .iterator(IteratorMode::From(&from, Direction::Forward))
        {
            let (k, v) = item.map_err(db_err("scanning exemplars"))?;
            if !k.starts_with(&prefix) {
                break;
            }
            let t = match exemplar_time(&k) {
                Ok(t) => t,
                Err(e) => {
                    self.skip_entry(&k, &e);
                    continue;
                }
            };
            if t > end {
                break;
            }
            let mut r = Reader::new(&v, "exemplar entry");
            match r
                .u64()
                .and_then(|bits| Ok((f64::from_bits(bits), r.labels()?)))
            {
                Ok((value, labels)) => out.push(Exemplar { labels, value, t }),
                Err(e) => self.skip_entry(&k, &e),
            }
        }
        Ok(out)
    }
}

fn exemplar_key(id: SeriesId, t: i64) -> Vec<u8> {
    let mut k = Vec::with_capacity(25);
    k.push(b'e');
    k.extend_from_slice(&id.to_be_bytes());
    k.extend_from_slice(&ts_key(t));
    k
}

fn put_all(wb: &mut WriteBatch, items: &[(SeriesId, Exemplar)], bounds: Bounds) -> Result<()> {
    for (id, e) in items {
        let mut v = e.value.to_bits().to_le_bytes().to_vec();
        put_labels_within(&mut v, &e.labels, bounds)?;
        wb.put(exemplar_key(*id, e.t), v);
    }
    Ok(())
}
