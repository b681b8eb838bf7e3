//! The raft loop: one thread owns the `RawNode`, ticking every 100 ms and
//! handling each Ready in raft-rs's order, with the one change its users
//! learned to make: entries and hard state are persisted (one synced batch)
//! *before* committed entries are applied, so the applied index never runs
//! ahead of the durable commit index.

use crate::input::{Input, PROPOSE_TIMEOUT};
use crate::model::{MetaConfig, MetaError, MetaStatus};
use crate::state::{Command, Envelope, MetaState};
use crate::storage::RocksStorage;
use crate::transport::Outbound;
use cairn_cluster::Placement;
use raft::prelude::{Entry, EntryType, Message, Snapshot, SnapshotMetadata};
use raft::{RawNode, StateRole};
use std::collections::HashMap;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};

const TICK: Duration = Duration::from_millis(100);
/// A read-index request without an answer by then failed (raft-rs drops
/// them silently without a leader).
pub(crate) const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// A slog drain that forwards raft-rs's log to tracing.
struct TracingDrain;

impl slog::Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;
    fn log(&self, r: &slog::Record<'_>, _: &slog::OwnedKVList) -> Result<(), slog::Never> {
        match r.level() {
            slog::Level::Critical | slog::Level::Error => {
                tracing::error!(target: "raft", "{}", r.msg())
            }
            slog::Level::Warning => tracing::warn!(target: "raft", "{}", r.msg()),
            slog::Level::Info => tracing::info!(target: "raft", "{}", r.msg()),
            _ => tracing::debug!(target: "raft", "{}", r.msg()),
        }
        Ok(())
    }
}

/// Where the loop publishes what it applied.
pub(crate) struct Publish {
    pub(crate) placement: watch::Sender<Option<Arc<Placement>>>,
    pub(crate) tenancy: watch::Sender<Arc<cairn_tenancy::Tenancy>>,
    pub(crate) status: watch::Sender<MetaStatus>,
}

pub(crate) struct Loop {
    raw: RawNode<RocksStorage>,
    store: RocksStorage,
    state: MetaState,
    id: u64,
    cfg_placement: Placement,
    snapshot_every: u64,
    out: Outbound,
    publish: Publish,
    next_id: u64,
    pending: HashMap<u64, (oneshot::Sender<Result<(), MetaError>>, Instant)>,
    reads: HashMap<u64, (oneshot::Sender<Result<MetaState, MetaError>>, Instant)>,
    /// Reads whose index is known, waiting for it to be applied.
    read_ready: Vec<(u64, oneshot::Sender<Result<MetaState, MetaError>>)>,
    last_init: Option<Instant>,
    was_leader: bool,
    /// Index of the latest snapshot (ours or the leader's).
    snapshot_at: u64,
}

impl Loop {
    /// Opens the store and rebuilds the state from the snapshot and the
    /// committed log, so the placement is known before any election.
    pub(crate) fn open(
        cfg: &MetaConfig,
        out: Outbound,
        publish: Publish,
    ) -> Result<Loop, MetaError> {
        let voters: Vec<u64> = cfg.peers.keys().copied().collect();
        let dir = cfg.data_dir.join("meta");
        std::fs::create_dir_all(&dir)
            .map_err(|e| MetaError::Store(format!("creating {}: {e}", dir.display())))?;
        let store = RocksStorage::open(&dir, &voters).map_err(MetaError::Store)?;
        let snap = store.stored_snapshot().map_err(MetaError::Store)?;
        let mut state = if snap.data.is_empty() {
            MetaState::default()
        } else {
            serde_json::from_slice(&snap.data)
                .map_err(|e| MetaError::Store(format!("meta snapshot does not decode: {e}")))?
        };
        let commit = store.hard_state().commit;
        let first =
            raft::Storage::first_index(&store).map_err(|e| MetaError::Store(e.to_string()))?;
        if commit >= first {
            let entries = raft::Storage::entries(
                &store,
                first.max(state.applied + 1),
                commit + 1,
                None,
                raft::GetEntriesContext::empty(false),
            )
            .map_err(|e| MetaError::Store(format!("replaying the meta log: {e}")))?;
            for e in &entries {
                apply_entry(&mut state, e);
            }
        }
        state.applied = state.applied.max(commit);
        let config = raft::Config {
            id: cfg.id,
            election_tick: 10,
            heartbeat_tick: 3,
            applied: state.applied,
            check_quorum: true,
            pre_vote: true,
            read_only_option: raft::ReadOnlyOption::Safe,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            ..Default::default()
        };
        config
            .validate()
            .map_err(|e| MetaError::Store(format!("raft config: {e}")))?;
        let logger = slog::Logger::root(slog::Fuse(TracingDrain), slog::o!());
        let mut raw = RawNode::new(&config, store.clone(), &logger)
            .map_err(|e| MetaError::Store(format!("starting raft: {e}")))?;
        if voters == [cfg.id] {
            // The only voter elects itself at once.
            let _ = raw.campaign();
        }
        let l = Loop {
            raw,
            store,
            state,
            id: cfg.id,
            cfg_placement: cfg.initial_placement.clone(),
            snapshot_every: cfg.snapshot_every.max(1),
            out,
            publish,
            next_id: 1,
            pending: HashMap::new(),
            reads: HashMap::new(),
            read_ready: Vec::new(),
            last_init: None,
            was_leader: false,
            snapshot_at: snap.metadata.as_ref().map_or(0, |m| m.index),
        };
        l.publish();
        Ok(l)
    }

    /// Runs until Stop (or every sender is gone).
    pub(crate) fn run(mut self, rx: Receiver<Input>) {
        let mut next_tick = Instant::now() + TICK;
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            match rx.recv_timeout(wait) {
                Ok(Input::Stop) | Err(RecvTimeoutError::Disconnected) => break,
                Ok(input) => self.handle(input),
                Err(RecvTimeoutError::Timeout) => {}
            }
            if Instant::now() >= next_tick {
                self.raw.tick();
                self.housekeeping();
                next_tick = Instant::now() + TICK;
            }
            if let Err(e) = self.on_ready() {
                // A write that failed leaves the node unable to go on
                // safely: stop, so a restart recovers from what is durable.
                tracing::error!(%e, "meta: persisting raft state failed; stopping the meta loop");
                break;
            }
        }
        for (_, (tx, _)) in self.pending.drain() {
            let _ = tx.send(Err(MetaError::Stopped));
        }
        for (_, (tx, _)) in self.reads.drain() {
            let _ = tx.send(Err(MetaError::Stopped));
        }
    }

    fn handle(&mut self, input: Input) {
        match input {
            Input::Raft(msgs) => {
                for m in msgs {
                    if let Err(e) = self.raw.step(m) {
                        tracing::debug!(%e, "meta: raft message refused");
                    }
                }
            }
            Input::Propose(cmd, tx) => {
                if self.raw.raft.state != StateRole::Leader {
                    let _ = tx.send(Err(MetaError::NotLeader(self.leader())));
                    return;
                }
                let id = self.next_id;
                self.next_id += 1;
                let env = Envelope {
                    node: self.id,
                    id,
                    cmd,
                };
                let data = match serde_json::to_vec(&env) {
                    Ok(d) => d,
                    Err(e) => {
                        let _ = tx.send(Err(MetaError::Refused(
                            cairn_tenancy::ChangeError::Invalid(e.to_string()),
                        )));
                        return;
                    }
                };
                match self.raw.propose(vec![], data) {
                    Ok(()) => {
                        self.pending
                            .insert(id, (tx, Instant::now() + PROPOSE_TIMEOUT));
                    }
                    Err(e) => {
                        let _ = tx.send(Err(MetaError::Unavailable(format!("proposing: {e}"))));
                    }
                }
            }
            Input::Read(tx) => {
                let id = self.next_id;
                self.next_id += 1;
                self.raw.read_index(id.to_be_bytes().to_vec());
                self.reads.insert(id, (tx, Instant::now() + READ_TIMEOUT));
            }
            Input::Unreachable(peer) => self.raw.report_unreachable(peer),
            Input::Stop => {}
        }
    }

    fn leader(&self) -> Option<u64> {
        match self.raw.raft.leader_id {
            0 => None,
            id => Some(id),
        }
    }

    /// Timeouts, leadership changes, and the initial placement.
    fn housekeeping(&mut self) {
        let now = Instant::now();
        for (_, (tx, _)) in self.pending.extract_if(|_, (_, deadline)| *deadline <= now) {
            let _ = tx.send(Err(MetaError::Timeout(
                "proposal not applied within 5s".into(),
            )));
        }
        // raft-rs drops a read index silently without a leader, or before
        // the leader has committed in its term: ask again until answered.
        let again: Vec<u64> = self
            .reads
            .iter()
            .filter(|(_, (_, d))| *d < now + READ_TIMEOUT - Duration::from_millis(200))
            .map(|(id, _)| *id)
            .collect();
        for id in again {
            self.raw.read_index(id.to_be_bytes().to_vec());
        }
        for (_, (tx, _)) in self.reads.extract_if(|_, (_, deadline)| *deadline <= now) {
            let _ = tx.send(Err(MetaError::Timeout(
                "linearizable read not confirmed within 2s (no meta leader with a quorum?)".into(),
            )));
        }
        let leader = self.raw.raft.state == StateRole::Leader;
        if self.was_leader && !leader {
            for (_, (tx, _)) in self.pending.drain() {
                let _ = tx.send(Err(MetaError::LeadershipLost));
            }
        }
        self.was_leader = leader;
        // The cluster's creation: the first leader proposes the placement
        // every member computed from the same config.
        if leader
            && self.state.placement.is_none()
            && self
                .last_init
                .is_none_or(|t| t.elapsed() > Duration::from_secs(1))
        {
            self.last_init = Some(now);
            let env = Envelope {
                node: self.id,
                id: 0,
                cmd: Command::InitPlacement(self.cfg_placement.clone()),
            };
            if let Ok(data) = serde_json::to_vec(&env) {
                let _ = self.raw.propose(vec![], data);
            }
        }
        self.publish_status();
    }

    fn send(&mut self, msgs: Vec<Message>) {
        for m in msgs {
            self.out.send(m);
        }
    }

    fn on_ready(&mut self) -> Result<(), String> {
        if !self.raw.has_ready() {
            return Ok(());
        }
        let mut rd = self.raw.ready();
        // 1. Messages a leader may send before persisting.
        let msgs = rd.take_messages();
        self.send(msgs);
        // 2. A snapshot from the leader: state replaced, log dropped.
        if !rd.snapshot().is_empty() {
            let snap = rd.snapshot().clone();
            self.state = serde_json::from_slice(&snap.data)
                .map_err(|e| format!("meta snapshot from the leader does not decode: {e}"))?;
            self.store.install_snapshot(&snap, true)?;
            self.snapshot_at = snap.metadata.as_ref().map_or(0, |m| m.index);
            self.publish();
        }
        // 3. Entries and hard state: one synced batch, before applying.
        crate::fault::failpoint("before-persist");
        self.store.persist(rd.entries(), rd.hs())?;
        crate::fault::failpoint("after-persist");
        // 4. Read states: answered once applied.
        for rs in rd.take_read_states() {
            let mut b = [0u8; 8];
            if rs.request_ctx.len() == 8 {
                b.copy_from_slice(&rs.request_ctx);
                if let Some((tx, _)) = self.reads.remove(&u64::from_be_bytes(b)) {
                    self.read_ready.push((rs.index, tx));
                }
            }
        }
        // 5. Committed entries.
        let committed = rd.take_committed_entries();
        self.apply(committed)?;
        crate::fault::failpoint("after-apply");
        // 6. Messages sent only once persisted.
        let msgs = rd.take_persisted_messages();
        self.send(msgs);
        // 7. Advance.
        let mut light = self.raw.advance(rd);
        if let Some(c) = light.commit_index() {
            self.store.set_commit(c)?;
        }
        let msgs = light.take_messages();
        self.send(msgs);
        let committed = light.take_committed_entries();
        self.apply(committed)?;
        self.raw.advance_apply();
        self.answer_reads();
        Ok(())
    }

    fn apply(&mut self, entries: Vec<Entry>) -> Result<(), String> {
        if entries.is_empty() {
            return Ok(());
        }
        let before = (
            self.state.placement.as_ref().map(Placement::version),
            self.state.tenancy_changes,
        );
        for e in &entries {
            if let Some((node, id, result)) = apply_entry(&mut self.state, e) {
                if node == self.id {
                    if let Some((tx, _)) = self.pending.remove(&id) {
                        let _ = tx.send(result.map_err(MetaError::Refused));
                    }
                }
            }
        }
        if (
            self.state.placement.as_ref().map(Placement::version),
            self.state.tenancy_changes,
        ) != before
        {
            self.publish();
        }
        if self.state.applied >= self.snapshot_at + self.snapshot_every {
            self.snapshot()?;
        }
        Ok(())
    }

    /// A snapshot of the applied state; the log before it compacted.
    fn snapshot(&mut self) -> Result<(), String> {
        let index = self.state.applied;
        let term = raft::Storage::term(&self.store, index).map_err(|e| e.to_string())?;
        let snap = Snapshot {
            data: serde_json::to_vec(&self.state).map_err(|e| e.to_string())?,
            metadata: Some(SnapshotMetadata {
                conf_state: Some(self.raw.raft.prs().conf().to_conf_state()),
                index,
                term,
            }),
        };
        self.store.install_snapshot(&snap, false)?;
        self.snapshot_at = index;
        Ok(())
    }

    fn answer_reads(&mut self) {
        let applied = self.state.applied;
        let mut i = 0;
        while i < self.read_ready.len() {
            if self.read_ready[i].0 <= applied {
                let (_, tx) = self.read_ready.swap_remove(i);
                let _ = tx.send(Ok(self.state.clone()));
            } else {
                i += 1;
            }
        }
    }

    fn publish(&self) {
        let p = self.state.placement.clone().map(Arc::new);
        let changed = self.publish.placement.borrow().as_deref() != p.as_deref();
        if changed {
            self.publish.placement.send_replace(p);
        }
        if **self.publish.tenancy.borrow() != self.state.tenancy {
            self.publish
                .tenancy
                .send_replace(Arc::new(self.state.tenancy.clone()));
        }
        self.publish_status();
    }

    fn publish_status(&self) {
        let r = &self.raw.raft;
        let s = MetaStatus {
            id: self.id,
            leader: self.leader(),
            term: r.term,
            role: format!("{:?}", r.state).to_lowercase(),
            commit: r.raft_log.committed,
            applied: self.state.applied,
            placement_version: self.state.placement.as_ref().map(Placement::version),
        };
        self.publish.status.send_if_modified(|cur| {
            if *cur != s {
                *cur = s;
                true
            } else {
                false
            }
        });
    }
}

/// Applies one entry; for a command, who proposed it, its id and the result.
fn apply_entry(
    state: &mut MetaState,
    e: &Entry,
) -> Option<(u64, u64, Result<(), cairn_tenancy::ChangeError>)> {
    state.applied = state.applied.max(e.index);
    if e.entry_type != EntryType::EntryNormal as i32 || e.data.is_empty() {
        return None;
    }
    match serde_json::from_slice::<Envelope>(&e.data) {
        Ok(env) => {
            let r = state.apply(&env.cmd);
            Some((env.node, env.id, r))
        }
        Err(err) => {
            tracing::error!(index = e.index, %err, "meta: a committed entry does not decode; skipped");
            None
        }
    }
}
