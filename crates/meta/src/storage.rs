//! The raft log, hard state, conf state and snapshot in RocksDB
//! (`<data-dir>/meta`): every change one synced write batch.
//!
//! Keys: `e` + index (big-endian) → entry; `hs` → hard state; `cs` → conf
//! state; `snap` → the latest snapshot (its metadata gives the term of the
//! entry before the first kept one).

use prost011::Message as _;
use raft::prelude::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, StorageError};
use rocksdb::{WriteBatch, WriteOptions, DB};
use std::path::Path;
use std::sync::{Arc, RwLock};

const HARD_STATE: &[u8] = b"hs";
const CONF_STATE: &[u8] = b"cs";
const SNAPSHOT: &[u8] = b"snap";

fn entry_key(index: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = b'e';
    k[1..].copy_from_slice(&index.to_be_bytes());
    k
}

/// What is cached of the durable state.
#[derive(Debug, Default)]
struct Cached {
    hard: HardState,
    conf: ConfState,
    snapshot_meta: SnapshotMetadata,
    /// First and last index of the entries kept (last < first: none).
    first: u64,
    last: u64,
}

/// The raft storage; clones share it.
#[derive(Clone)]
pub(crate) struct RocksStorage {
    db: Arc<DB>,
    cached: Arc<RwLock<Cached>>,
}

impl std::fmt::Debug for RocksStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksStorage").finish_non_exhaustive()
    }
}

fn synced() -> WriteOptions {
    let mut o = WriteOptions::default();
    o.set_sync(true);
    o
}

fn decode<M: prost011::Message + Default>(b: &[u8], what: &str) -> Result<M, String> {
    M::decode(b).map_err(|e| format!("meta store: {what} does not decode: {e}"))
}

impl RocksStorage {
    /// Opens (or creates) the store under `dir`. A fresh store starts with
    /// `voters` as its configuration.
    pub(crate) fn open(dir: &Path, voters: &[u64]) -> Result<Self, String> {
        let mut opts = rocksdb::Options::default();
        opts.create_if_missing(true);
        let db = DB::open(&opts, dir)
            .map_err(|e| format!("opening the meta store {}: {e}", dir.display()))?;
        let get = |k: &[u8]| {
            db.get(k)
                .map_err(|e| format!("reading the meta store: {e}"))
        };
        let mut c = Cached::default();
        if let Some(b) = get(HARD_STATE)? {
            c.hard = decode(&b, "hard state")?;
        }
        match get(CONF_STATE)? {
            Some(b) => c.conf = decode(&b, "conf state")?,
            None => {
                c.conf = ConfState {
                    voters: voters.to_vec(),
                    ..Default::default()
                };
                db.put_opt(CONF_STATE, c.conf.encode_to_vec(), &synced())
                    .map_err(|e| format!("writing the meta store: {e}"))?;
            }
        }
        if let Some(b) = get(SNAPSHOT)? {
            let s: Snapshot = decode(&b, "snapshot")?;
            c.snapshot_meta = s.metadata.unwrap_or_default();
        }
        c.first = c.snapshot_meta.index + 1;
        c.last = c.snapshot_meta.index;
        {
            let mut it = db.raw_iterator();
            it.seek_for_prev(entry_key(u64::MAX));
            if it.valid() {
                if let Some(k) = it.key() {
                    if k.len() == 9 && k[0] == b'e' {
                        let mut b = [0u8; 8];
                        b.copy_from_slice(&k[1..]);
                        c.last = u64::from_be_bytes(b).max(c.last);
                    }
                }
            }
        }
        Ok(RocksStorage {
            db: Arc::new(db),
            cached: Arc::new(RwLock::new(c)),
        })
    }

    fn cached(&self) -> std::sync::RwLockReadGuard<'_, Cached> {
        self.cached.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn hard_state(&self) -> HardState {
        self.cached().hard.clone()
    }

    /// The stored snapshot (empty if none).
    pub(crate) fn stored_snapshot(&self) -> Result<Snapshot, String> {
        match self
            .db
            .get(SNAPSHOT)
            .map_err(|e| format!("reading the meta store: {e}"))?
        {
            Some(b) => decode(&b, "snapshot"),
            None => Ok(Snapshot::default()),
        }
    }

    /// Persists one Ready in one synced batch: `entries` appended (the
    /// conflicting suffix after them deleted), the hard state if changed.
    pub(crate) fn persist(
        &self,
        entries: &[Entry],
        hard: Option<&HardState>,
    ) -> Result<(), String> {
        if entries.is_empty() && hard.is_none() {
            return Ok(());
        }
        let mut wb = WriteBatch::default();
        let mut c = self.cached.write().unwrap_or_else(|p| p.into_inner());
        let mut last = c.last;
        if let (Some(first), Some(end)) = (entries.first(), entries.last()) {
            // Entries past the new ones are a conflicting suffix: gone.
            for i in end.index + 1..=c.last {
                wb.delete(entry_key(i));
            }
            for e in entries {
                wb.put(entry_key(e.index), e.encode_to_vec());
            }
            last = end.index;
            debug_assert!(first.index >= c.first || c.last < c.first);
        }
        if let Some(h) = hard {
            wb.put(HARD_STATE, h.encode_to_vec());
        }
        self.db
            .write_opt(wb, &synced())
            .map_err(|e| format!("writing the meta store: {e}"))?;
        c.last = last;
        if let Some(h) = hard {
            c.hard = h.clone();
        }
        Ok(())
    }

    /// Updates the commit index (a LightReady's), synced.
    pub(crate) fn set_commit(&self, commit: u64) -> Result<(), String> {
        let mut h = self.hard_state();
        if h.commit >= commit {
            return Ok(());
        }
        h.commit = commit;
        self.persist(&[], Some(&h))
    }

    /// Installs a snapshot (ours, made after applying, or the leader's):
    /// stored; entries up to its index dropped; with `received`, every
    /// entry dropped and the commit index raised to it.
    pub(crate) fn install_snapshot(&self, snap: &Snapshot, received: bool) -> Result<(), String> {
        let meta = snap.metadata.clone().unwrap_or_default();
        let mut wb = WriteBatch::default();
        let mut c = self.cached.write().unwrap_or_else(|p| p.into_inner());
        if meta.index <= c.snapshot_meta.index && !received {
            return Ok(());
        }
        let upto = if received {
            c.last.max(meta.index)
        } else {
            meta.index
        };
        for i in c.first..=upto {
            wb.delete(entry_key(i));
        }
        wb.put(SNAPSHOT, snap.encode_to_vec());
        let conf = meta.conf_state.clone().unwrap_or_default();
        wb.put(CONF_STATE, conf.encode_to_vec());
        let mut hard = c.hard.clone();
        if received {
            hard.commit = hard.commit.max(meta.index);
            hard.term = hard.term.max(meta.term);
            wb.put(HARD_STATE, hard.encode_to_vec());
        }
        self.db
            .write_opt(wb, &synced())
            .map_err(|e| format!("writing the meta store: {e}"))?;
        c.first = meta.index + 1;
        if received || c.last < meta.index {
            c.last = meta.index;
        }
        c.conf = conf;
        c.hard = hard;
        c.snapshot_meta = meta;
        Ok(())
    }

    fn entry(&self, index: u64) -> raft::Result<Entry> {
        let b = self
            .db
            .get(entry_key(index))
            .map_err(|e| raft::Error::Store(StorageError::Other(Box::new(e))))?
            .ok_or(raft::Error::Store(StorageError::Unavailable))?;
        Entry::decode(&b[..]).map_err(|e| raft::Error::Store(StorageError::Other(Box::new(e))))
    }
}

impl raft::Storage for RocksStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let c = self.cached();
        Ok(RaftState::new(c.hard.clone(), c.conf.clone()))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _ctx: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let (first, last) = {
            let c = self.cached();
            (c.first, c.last)
        };
        if low < first {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > last + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let mut out = Vec::with_capacity((high - low) as usize);
        for i in low..high {
            out.push(self.entry(i)?);
        }
        raft::util::limit_size(&mut out, max_size.into());
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let (first, last, snap) = {
            let c = self.cached();
            (c.first, c.last, c.snapshot_meta.clone())
        };
        if idx == snap.index {
            return Ok(snap.term);
        }
        if idx < first {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if idx > last {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        Ok(self.entry(idx)?.term)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.cached().first)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.cached().last)
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let s = self
            .stored_snapshot()
            .map_err(|e| raft::Error::Store(StorageError::Other(e.into())))?;
        let idx = s.metadata.as_ref().map_or(0, |m| m.index);
        if idx < request_index || idx == 0 {
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::Storage;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            data: format!("e{index}").into_bytes(),
            ..Default::default()
        }
    }

    /// Entries and hard state survive a reopen; a conflicting suffix is
    /// replaced; compacted entries say so.
    #[test]
    fn entries_and_hard_state_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = RocksStorage::open(dir.path(), &[1, 2, 3]).unwrap();
            let es: Vec<_> = (1..=5).map(|i| entry(i, 1)).collect();
            let hs = HardState {
                term: 1,
                vote: 1,
                commit: 3,
            };
            s.persist(&es, Some(&hs)).unwrap();
            // A new leader overwrites 4..: 4 at term 2, 5 gone.
            s.persist(&[entry(4, 2)], None).unwrap();
        }
        let s = RocksStorage::open(dir.path(), &[9]).unwrap();
        let st = s.initial_state().unwrap();
        assert_eq!(st.hard_state.commit, 3);
        assert_eq!(st.conf_state.voters, vec![1, 2, 3]);
        assert_eq!(s.last_index().unwrap(), 4);
        assert_eq!(s.term(4).unwrap(), 2);
        let got = s
            .entries(1, 5, None, GetEntriesContext::empty(false))
            .unwrap();
        assert_eq!(got.len(), 4);
        assert!(s
            .entries(1, 6, None, GetEntriesContext::empty(false))
            .is_err());

        let snap = Snapshot {
            data: b"state".to_vec(),
            metadata: Some(SnapshotMetadata {
                index: 3,
                term: 1,
                conf_state: Some(st.conf_state.clone()),
            }),
        };
        s.install_snapshot(&snap, false).unwrap();
        assert_eq!(s.first_index().unwrap(), 4);
        assert_eq!(s.term(3).unwrap(), 1);
        assert!(matches!(
            s.entries(2, 4, None, GetEntriesContext::empty(false)),
            Err(raft::Error::Store(StorageError::Compacted))
        ));
        drop(s);
        let s = RocksStorage::open(dir.path(), &[9]).unwrap();
        assert_eq!((s.first_index().unwrap(), s.last_index().unwrap()), (4, 4));
        assert_eq!(s.snapshot(3, 2).unwrap().data, b"state");
    }
}
