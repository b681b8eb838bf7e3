//! Real raft groups: RocksDB in temp dirs, tonic on loopback.

use super::*;
use cairn_cluster::{Node, Placement};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn placement(n: usize) -> Placement {
    let nodes = (1..=n)
        .map(|i| {
            Node::new(
                format!("node-{i}"),
                format!("127.0.0.1:1{i}"),
                format!("127.0.0.1:2{i}"),
            )
        })
        .collect();
    Placement::initial(nodes, 8, n.min(3)).unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A member and its gRPC server.
struct Member {
    meta: Meta,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<()>,
}

impl Member {
    async fn start(id: u64, dir: &Path, peers: &BTreeMap<u64, String>, n: usize) -> Member {
        let meta = Meta::start(MetaConfig {
            id,
            data_dir: dir.to_path_buf(),
            peers: peers.clone(),
            initial_placement: placement(n),
            snapshot_every: 5,
        })
        .unwrap();
        let listener = tokio::net::TcpListener::bind(&peers[&id]).await.unwrap();
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let svc = meta.raft_service();
        let server = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming_shutdown(cairn_rpc::Incoming(listener), async {
                    let _ = rx.await;
                })
                .await;
        });
        Member {
            meta,
            stop: Some(stop),
            server,
        }
    }

    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = self.server.await;
        self.meta.stop().await;
    }
}

fn peers(n: u64) -> BTreeMap<u64, String> {
    (1..=n)
        .map(|i| (i, format!("127.0.0.1:{}", free_port())))
        .collect()
}

/// Waits until some member is leader and all alive agree; its id.
async fn leader(members: &[&Member], within: Duration) -> u64 {
    leader_not(members, within, 0).await
}

/// [`leader`], the leader not being `old`.
async fn leader_not(members: &[&Member], within: Duration, old: u64) -> u64 {
    let until = Instant::now() + within;
    loop {
        let ls: Vec<_> = members.iter().map(|m| m.meta.status().leader).collect();
        if let Some(Some(l)) = ls.first() {
            if *l != old && ls.iter().all(|x| *x == Some(*l)) {
                return *l;
            }
        }
        assert!(
            Instant::now() < until,
            "no agreed leader within {within:?}: {ls:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn placement_on(m: &Member, within: Duration) -> Arc<Placement> {
    let until = Instant::now() + within;
    loop {
        if let Some(p) = m.meta.placement().borrow().clone() {
            return p;
        }
        assert!(Instant::now() < until, "no placement within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_member_elects_itself_and_applies() {
    let dir = tempfile::tempdir().unwrap();
    let p = peers(1);
    let m = Member::start(1, dir.path(), &p, 1).await;
    assert_eq!(leader(&[&m], Duration::from_secs(3)).await, 1);
    assert_eq!(
        *placement_on(&m, Duration::from_secs(3)).await,
        placement(1)
    );
    m.meta
        .propose(Command::AddNamespace("5m:1y".into()))
        .await
        .unwrap();
    let s = m.meta.read_state().await.unwrap();
    assert_eq!(s.namespaces, ["5m:1y"]);
    m.stop().await;
    // Reopened: leader again, and a read with no proposal in the new term.
    let m = Member::start(1, dir.path(), &p, 1).await;
    assert_eq!(leader(&[&m], Duration::from_secs(3)).await, 1);
    let s = match m.meta.read_state().await {
        Ok(s) => s,
        Err(e) => panic!("{e}: {:?}", m.meta.status()),
    };
    assert_eq!(s.namespaces, ["5m:1y"]);
    m.stop().await;
}

/// Three members: a leader is elected, the placement is created, a
/// follower's proposal applies everywhere; the leader stopped, a new one is
/// elected within 3 s and proposals go on; all stopped and restarted in
/// another order, the state is back (the placement known before any
/// election) and a majority elects again; a CAS on a stale version is
/// refused; without a quorum a linearizable read times out, saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_elect_replicate_fail_over_and_restart() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let p = peers(3);
    let mut ms = Vec::new();
    for i in 1..=3u64 {
        ms.push(Some(
            Member::start(i, dirs[i as usize - 1].path(), &p, 3).await,
        ));
    }
    let alive = |ms: &Vec<Option<Member>>| -> Vec<usize> {
        (0..ms.len()).filter(|i| ms[*i].is_some()).collect()
    };
    let l = {
        let refs: Vec<&Member> = ms.iter().flatten().collect();
        leader(&refs, Duration::from_secs(5)).await
    };
    for m in ms.iter().flatten() {
        assert_eq!(*placement_on(m, Duration::from_secs(3)).await, placement(3));
    }
    // A follower's proposal.
    let f = (1..=3u64).find(|i| *i != l).unwrap();
    ms[f as usize - 1]
        .as_ref()
        .unwrap()
        .meta
        .propose(Command::AddNamespace("a".into()))
        .await
        .unwrap();
    for m in ms.iter().flatten() {
        let s = m.meta.read_state().await.unwrap();
        assert_eq!(s.namespaces, ["a"]);
    }
    // A stale compare-and-set.
    let e = ms[0]
        .as_ref()
        .unwrap()
        .meta
        .propose(Command::SetPlacement {
            expected_version: 999,
            placement: placement(3),
        })
        .await
        .unwrap_err();
    assert!(matches!(e, MetaError::Refused(_)), "{e}");

    // A tenant created through a follower is on every member's watch
    // within a second; a refusal keeps its kind across the forwarding hop.
    let create = Command::Tenancy(cairn_tenancy::Change::PutTenant {
        expected_version: Some(0),
        tenant: cairn_tenancy::TenantRecord {
            id: "team-a".into(),
            ..Default::default()
        },
    });
    let follower = ms[f as usize - 1].as_ref().unwrap();
    follower.meta.propose(create.clone()).await.unwrap();
    let began = Instant::now();
    for m in ms.iter().flatten() {
        let mut w = m.meta.tenancy();
        while !w.borrow().tenants.contains_key("team-a") {
            assert!(
                began.elapsed() < Duration::from_secs(1),
                "tenant not applied within 1 s"
            );
            let _ = tokio::time::timeout(Duration::from_millis(50), w.changed()).await;
        }
    }
    let e = follower.meta.propose(create).await.unwrap_err();
    assert!(
        matches!(
            e,
            MetaError::Refused(cairn_tenancy::ChangeError::Conflict(_))
        ),
        "{e:?}"
    );

    // The leader goes; a new one within 3 s; proposals go on.
    ms[l as usize - 1].take().unwrap().stop().await;
    let began = Instant::now();
    let l2 = {
        let refs: Vec<&Member> = ms.iter().flatten().collect();
        leader_not(&refs, Duration::from_secs(3), l).await
    };
    eprintln!("new leader {l2} after {:?}", began.elapsed());
    for i in 1..=8 {
        let m = ms[alive(&ms)[0]].as_ref().unwrap();
        m.meta
            .propose(Command::AddNamespace(format!("n{i}")))
            .await
            .unwrap();
    }
    // The old leader comes back and catches up (snapshots every 5 entries).
    ms[l as usize - 1] = Some(Member::start(l, dirs[l as usize - 1].path(), &p, 3).await);
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let s = ms[l as usize - 1].as_ref().unwrap().meta.read_state().await;
        if s.as_ref().is_ok_and(|s| s.namespaces.len() == 9) {
            break;
        }
        assert!(Instant::now() < until, "old leader did not catch up: {s:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Everyone stops; restarted in reverse order: state known at once.
    for m in ms.iter_mut() {
        m.take().unwrap().stop().await;
    }
    for i in (1..=3u64).rev() {
        let m = Member::start(i, dirs[i as usize - 1].path(), &p, 3).await;
        assert_eq!(
            m.meta.placement().borrow().as_deref(),
            Some(&placement(3)),
            "member {i}: placement known before any election"
        );
        ms[i as usize - 1] = Some(m);
        if i == 3 {
            // Alone, no quorum: a linearizable read times out, saying so.
            let e = ms[2].as_ref().unwrap().meta.read_state().await.unwrap_err();
            assert!(matches!(e, MetaError::Timeout(_)), "{e}");
        }
    }
    let refs: Vec<&Member> = ms.iter().flatten().collect();
    leader(&refs, Duration::from_secs(5)).await;
    let s = refs[0].meta.read_state().await.unwrap();
    assert_eq!(s.namespaces.len(), 9);
    for m in ms.iter_mut() {
        m.take().unwrap().stop().await;
    }
}

/// The crash test: a child (this test binary, re-run) proposes entries and
/// aborts at a failpoint between the steps of handling a Ready; the parent
/// reopens the store each time: it never panics, and every entry the
/// child saw applied is still there. Repeated over every failpoint.
#[test]
fn crashes_between_ready_steps_lose_no_committed_entry() {
    if std::env::var("CAIRN_META_CHILD").is_ok() {
        return crash_child();
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let exe = std::env::current_exe().unwrap();
    let mut confirmed: Vec<String> = Vec::new();
    let mut kills = 0;
    for round in 0..12 {
        let point = ["before-persist", "after-persist", "after-apply"][round % 3];
        let out = std::process::Command::new(&exe)
            .args([
                "--exact",
                "tests::crashes_between_ready_steps_lose_no_committed_entry",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env("CAIRN_META_CHILD", dir.path())
            .env("CAIRN_META_CHILD_PORT", port.to_string())
            .env("CAIRN_META_CHILD_ROUND", round.to_string())
            .env("CAIRN_META_FAILPOINT", point)
            .env("CAIRN_META_FAILPOINT_SKIP", (3 + round * 2).to_string())
            .output()
            .unwrap();
        if !out.status.success() {
            kills += 1;
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        confirmed.extend(
            stdout
                .lines()
                .filter_map(|l| l.strip_prefix("APPLIED "))
                .map(str::to_string),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("panicked"),
            "round {round} ({point}): {stderr}"
        );
    }
    assert!(
        kills >= 6,
        "only {kills} of 12 children hit their failpoint"
    );
    // Reopen in this process: every confirmed entry is in the state.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut p = BTreeMap::new();
        p.insert(1, format!("127.0.0.1:{port}"));
        let m = Member::start(1, dir.path(), &p, 1).await;
        leader(&[&m], Duration::from_secs(3)).await;
        let s = match m.meta.read_state().await {
            Ok(s) => s,
            Err(e) => panic!("{e}: {:?}", m.meta.status()),
        };
        for c in &confirmed {
            assert!(
                s.namespaces.contains(c),
                "applied entry {c} lost: {:?}",
                s.namespaces
            );
        }
        assert!(
            confirmed.len() >= 12,
            "only {} entries confirmed",
            confirmed.len()
        );
        m.stop().await;
    });
}

/// The crash child: proposes entries until its failpoint aborts it,
/// printing each one applied.
fn crash_child() {
    let dir = std::path::PathBuf::from(std::env::var("CAIRN_META_CHILD").unwrap());
    let port = std::env::var("CAIRN_META_CHILD_PORT").unwrap();
    let round = std::env::var("CAIRN_META_CHILD_ROUND").unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut p = BTreeMap::new();
        p.insert(1, format!("127.0.0.1:{port}"));
        let m = Member::start(1, &dir, &p, 1).await;
        leader(&[&m], Duration::from_secs(3)).await;
        for i in 0..40 {
            let name = format!("r{round}-{i}");
            if m.meta
                .propose(Command::AddNamespace(name.clone()))
                .await
                .is_ok()
            {
                println!("APPLIED {name}");
            }
        }
        m.stop().await;
    });
}
