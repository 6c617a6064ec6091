//! `strata snapshotter`'s service through real gRPC on a unix socket: containerd's
//! contract (kinds, labels, error codes, filters, field masks) and parallel pulls.
//! Nothing is mounted: the service hands out mounts, containerd performs them.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use strata::snapshotter::proto::containerd::services::snapshots::v1::{
    self as pb, CommitSnapshotRequest, ListSnapshotsRequest, PrepareSnapshotRequest, RemoveSnapshotRequest,
    StatSnapshotRequest, UpdateSnapshotRequest, UsageRequest, ViewSnapshotRequest,
};
use strata::snapshotter::{HOLDERS, Options, SNAPSHOT_REF, serve};
use strata::store::Store;
use tonic::Code;

use crate::util::grpc::snapshots_client;

fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

fn prepare(key: &str, parent: &str) -> PrepareSnapshotRequest {
    PrepareSnapshotRequest {
        snapshotter: "strata".into(),
        key: key.into(),
        parent: parent.into(),
        labels: HashMap::new(),
    }
}

fn commit(name: &str, key: &str) -> CommitSnapshotRequest {
    CommitSnapshotRequest { snapshotter: "strata".into(), name: name.into(), key: key.into(), labels: HashMap::new() }
}

/// Runs `body` against a snapshotter serving a fresh store, then stops it as SIGTERM
/// would and checks the socket is gone.
fn with_service<F, Fut>(body: F)
where
    F: FnOnce(std::path::PathBuf) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(Store::open(dir.path().join("store")).expect("store"));
    let sock = dir.path().join("run/strata.sock");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    runtime.block_on(async {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn({
            let sock = sock.clone();
            async move { serve(store, &sock, Options::default(), async { stopped.await.unwrap_or(()) }).await }
        });
        while !sock.exists() {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&sock).expect("socket").permissions().mode() & 0o777, 0o600);
        body(sock.clone()).await;
        stop.send(()).expect("server running");
        server.await.expect("join").expect("served and stopped cleanly");
    });
    assert!(!sock.exists(), "the socket is removed on shutdown");
}

async fn list(
    client: &mut pb::snapshots_client::SnapshotsClient<tonic::transport::Channel>,
    filter: &str,
) -> Vec<String> {
    let filters = if filter.is_empty() { vec![] } else { vec![filter.to_owned()] };
    let mut stream =
        client.list(ListSnapshotsRequest { snapshotter: "strata".into(), filters }).await.expect("list").into_inner();
    let mut names = Vec::new();
    while let Some(batch) = stream.message().await.expect("list stream") {
        names.extend(batch.info.into_iter().map(|i| i.name));
    }
    names.sort();
    names
}

#[test]
fn the_service_keeps_containerd_s_contract() {
    with_service(|sock| async move {
        let mut c = snapshots_client(&sock).await;
        let first = c.prepare(prepare("a", "")).await.expect("prepare").into_inner();
        assert_eq!((first.mounts[0].r#type.as_str(), first.mounts[0].options[0].as_str()), ("bind", "rw"));
        assert_eq!(c.prepare(prepare("a", "")).await.expect_err("taken").code(), Code::AlreadyExists);
        assert_eq!(c.prepare(prepare("x", "missing")).await.expect_err("no parent").code(), Code::NotFound);
        assert_eq!(c.prepare(prepare("x", "a")).await.expect_err("active parent").code(), Code::FailedPrecondition);

        // Labels given at commit replace the active snapshot's and round-trip.
        let gc = [("containerd.io/snapshot.ref", "sha256:l1"), ("containerd.io/gc.ref.content.l", "sha256:blob")];
        let request = CommitSnapshotRequest { labels: labels(&gc), ..commit("l1", "a") };
        c.commit(request).await.expect("commit");
        let info = c.stat(StatSnapshotRequest { snapshotter: "strata".into(), key: "l1".into() }).await;
        let info = info.expect("stat").into_inner().info.expect("info");
        assert_eq!((info.kind, info.parent.as_str(), info.labels), (pb::Kind::Committed as i32, "", labels(&gc)));
        assert!(info.created_at.is_some_and(|t| t.seconds > 0));

        let upper = c.prepare(prepare("b", "l1")).await.expect("prepare on l1").into_inner();
        let options = &upper.mounts[0].options;
        assert_eq!(upper.mounts[0].r#type, "overlay");
        assert!(options[0] == "index=off" && options.last().is_some_and(|o| o.starts_with("lowerdir=")), "{options:?}");
        let view = c
            .view(ViewSnapshotRequest {
                snapshotter: "strata".into(),
                key: "v".into(),
                parent: "l1".into(),
                labels: HashMap::new(),
            })
            .await
            .expect("view")
            .into_inner();
        assert_eq!((view.mounts[0].r#type.as_str(), view.mounts[0].options[0].as_str()), ("bind", "ro"));

        // containerd's overlay snapshotter refuses to remove a parent.
        let remove = |key: &str| RemoveSnapshotRequest { snapshotter: "strata".into(), key: key.into() };
        assert_eq!(c.remove(remove("l1")).await.expect_err("has children").code(), Code::FailedPrecondition);
        let missing = c.stat(StatSnapshotRequest { snapshotter: "strata".into(), key: "nope".into() }).await;
        assert_eq!(missing.expect_err("absent").code(), Code::NotFound);

        // Field masks: one label, all labels, and nothing else.
        let update = |pairs: &[(&str, &str)], paths: &[&str]| UpdateSnapshotRequest {
            snapshotter: "strata".into(),
            info: Some(pb::Info { name: "b".into(), labels: labels(pairs), ..Default::default() }),
            update_mask: Some(prost_types::FieldMask { paths: paths.iter().map(|p| (*p).to_owned()).collect() }),
        };
        let got = c.update(update(&[("x", "1"), ("y", "2")], &["labels.x"])).await.expect("update");
        assert_eq!(got.into_inner().info.expect("info").labels, labels(&[("x", "1")]));
        let got = c.update(update(&[("y", "2")], &["labels"])).await.expect("update");
        assert_eq!(got.into_inner().info.expect("info").labels, labels(&[("y", "2")]));
        let refused = c.update(update(&[], &["parent"])).await.expect_err("immutable");
        assert_eq!(refused.code(), Code::InvalidArgument);

        assert_eq!(list(&mut c, "").await, ["b", "l1", "v"]);
        assert_eq!(list(&mut c, "kind==committed").await, ["l1"]);
        assert_eq!(list(&mut c, r#"labels."containerd.io/snapshot.ref"==sha256:l1,parent=="""#).await, ["l1"]);
        assert_eq!(list(&mut c, "parent==l1,kind==view").await, ["v"]);
        let bad = c.list(ListSnapshotsRequest { snapshotter: "strata".into(), filters: vec!["size>1".into()] }).await;
        assert_eq!(bad.err().map(|e| e.code()), Some(Code::InvalidArgument));
        // strata's own labels are neither shown nor settable.
        let sneaky = UpdateSnapshotRequest {
            snapshotter: "strata".into(),
            info: Some(pb::Info { name: "l1".into(), labels: labels(&[(HOLDERS, "99")]), ..Default::default() }),
            update_mask: None,
        };
        let got = c.update(sneaky).await.expect("update").into_inner().info.expect("info");
        assert!(got.labels.is_empty(), "{:?}", got.labels);
        c.usage(UsageRequest { snapshotter: "strata".into(), key: "b".into() }).await.expect("usage");

        for key in ["b", "v", "l1"] {
            c.remove(remove(key)).await.expect("remove");
        }
        assert!(list(&mut c, "").await.is_empty());
    });
}

#[test]
fn parallel_pulls_commit_every_chain_once() {
    with_service(|sock| async move {
        // Eight pulls of five-layer chains side by side, as containerd's unpacker does.
        let pulls = (0..8).map(|pull| {
            let sock = sock.clone();
            tokio::spawn(async move {
                let mut c = snapshots_client(&sock).await;
                let mut parent = String::new();
                for layer in 0..5 {
                    let key = format!("extract-{pull}-{layer}");
                    let name = format!("chain-{pull}-{layer}");
                    c.prepare(prepare(&key, &parent)).await.expect("prepare");
                    c.commit(commit(&name, &key)).await.expect("commit");
                    parent = name;
                }
            })
        });
        for pull in pulls.collect::<Vec<_>>() {
            pull.await.expect("pull");
        }
        // Eight pulls of the same layer race to commit one name: exactly one wins, the
        // others get AlreadyExists (containerd then removes their extract snapshot).
        let racers = (0..8).map(|i| {
            let sock = sock.clone();
            tokio::spawn(async move {
                let mut c = snapshots_client(&sock).await;
                let key = format!("race-{i}");
                c.prepare(prepare(&key, "chain-0-4")).await.expect("prepare");
                c.commit(commit("shared", &key)).await.map(drop).map_err(|e| e.code())
            })
        });
        let mut outcomes = Vec::new();
        for racer in racers.collect::<Vec<_>>() {
            outcomes.push(racer.await.expect("racer"));
        }
        assert_eq!(outcomes.iter().filter(|o| o.is_ok()).count(), 1, "{outcomes:?}");
        assert!(outcomes.iter().all(|o| o.is_ok() || *o == Err(Code::AlreadyExists)), "{outcomes:?}");

        let mut c = snapshots_client(&sock).await;
        let committed = list(&mut c, "kind==committed").await;
        assert_eq!(committed.len(), 8 * 5 + 1, "{committed:?}");
        for pull in 0..8 {
            for layer in 1..5 {
                let parent = format!("chain-{pull}-{}", layer - 1);
                let filter = format!("name==chain-{pull}-{layer},parent=={parent}");
                assert_eq!(list(&mut c, &filter).await.len(), 1, "{filter}");
            }
        }
    });
}

/// A second server on a live socket is refused; a stale one (its server gone) is
/// replaced.
#[test]
fn a_live_socket_is_never_taken_over() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("s.sock");
    let live = strata::snapshotter::bind(&sock).expect("bind");
    let err = strata::snapshotter::bind(&sock).expect_err("live");
    assert!(err.to_string().contains("another server"), "{err}");
    drop(live);
    // The socket file stays behind with nobody listening: a restart replaces it.
    assert!(Path::new(&sock).exists());
    strata::snapshotter::bind(&sock).expect("stale socket replaced").remove();
    assert!(!sock.exists());
}

#[test]
fn a_snapshot_several_namespaces_hold_goes_with_the_last() {
    with_service(|sock| async move {
        let mut c = snapshots_client(&sock).await;
        let remove = |key: &str| RemoveSnapshotRequest { snapshotter: "strata".into(), key: key.into() };
        let stat = |key: &str| StatSnapshotRequest { snapshotter: "strata".into(), key: key.into() };
        // Namespace a pulls a layer; b and c then pull it too and take the fast path.
        let chain = "sha256:0123";
        c.prepare(prepare("a/1/extract-1 sha256:0123", "")).await.expect("prepare");
        let request = CommitSnapshotRequest {
            labels: labels(&[(SNAPSHOT_REF, chain)]),
            ..commit("a/2/sha256:0123", "a/1/extract-1 sha256:0123")
        };
        c.commit(request).await.expect("commit");
        for ns in ["b", "c"] {
            let request = PrepareSnapshotRequest {
                labels: labels(&[(SNAPSHOT_REF, chain)]),
                ..prepare(&format!("{ns}/1/extract-2 sha256:0123"), "")
            };
            assert_eq!(c.prepare(request).await.expect_err("fast path").code(), Code::AlreadyExists);
        }
        // Each namespace's gc removes it once; it stays until the last one does.
        for _ in 0..2 {
            c.remove(remove("a/2/sha256:0123")).await.expect("release");
            c.stat(stat("a/2/sha256:0123")).await.expect("still held");
        }
        c.remove(remove("a/2/sha256:0123")).await.expect("last release");
        assert_eq!(c.stat(stat("a/2/sha256:0123")).await.expect_err("gone").code(), Code::NotFound);
    });
}
