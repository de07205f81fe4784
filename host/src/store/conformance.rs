//! The backend conformance suite: one set of tests written against
//! [`Backend`](super::Backend), run against every backend. A backend's test
//! module provides a [`Fixture`] (a fresh, empty store location that can be
//! opened again) and expands [`conformance_tests!`] with it.

use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;
use uuid::Uuid;

use super::*;

/// A fresh store location. `open` may be called again after the previous
/// handle was dropped: it must find everything made durable before.
#[async_trait]
pub trait Fixture: Send + Sync {
    async fn open(&self) -> Store;
}

/// Expands to one `#[tokio::test]` per conformance case.
macro_rules! conformance_tests {
    ($fixture:expr) => {
        $crate::store::conformance::conformance_tests!(@cases $fixture;
            commit_and_read_back, idempotency_window, due_order_and_skip,
            attempt_recording, requeue_and_disable, endpoint_crud,
            prune_final_only, durable_across_reopen, concurrent_commits_all_stored,
            scheduled_events_wait_and_move_by_key, replacements_within_one_group_leave_one_pending,
            batches_in_flight_are_noted_after_a_crash);
    };
    (@cases $fixture:expr; $($case:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let f = $fixture;
                $crate::store::conformance::$case(&f).await;
            }
        )*
    };
}
pub(crate) use conformance_tests;

fn new_event(account: &str, key: Option<&str>, eps: &[(Uuid, &str)]) -> NewEvent {
    NewEvent {
        id: Uuid::now_v7(),
        record: EventRecord {
            account: account.into(),
            event_type: "license.created".into(),
            created_ms: now_ms(),
            source_id: key.map(Into::into),
            payload: br#"{"data":{"id":"1","type":"licenses","attributes":{"name":"x"}}}"#.to_vec(),
            endpoints: eps.iter().map(|(_, n)| n.to_string()).collect(),
        },
        idempotency_key: key.map(Into::into),
        deliveries: eps.iter().map(|(u, n)| (*u, n.to_string())).collect(),
    }
}

/// Commits `n` events each with one delivery to `ep`; their ids in order.
async fn commit_n(store: &Store, ep: Uuid, n: usize) -> Vec<Uuid> {
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        ids.push(
            store
                .commit(new_event("acct", None, &[(ep, "crm")]))
                .await
                .unwrap()
                .id,
        );
    }
    ids
}

fn none(_: Uuid) -> bool {
    false
}

pub async fn commit_and_read_back(f: &dyn Fixture) {
    let store = f.open().await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let ev = new_event("acct", None, &[(a, "crm"), (b, "segment")]);
    let (id, record) = (ev.id, ev.record.clone());
    let c = store.commit(ev).await.unwrap();
    assert_eq!((c.id, c.duplicate), (id, false));
    assert_eq!(store.event("acct", id).await.unwrap(), Some(record));
    assert_eq!(
        store.event("other", id).await.unwrap(),
        None,
        "found through another account"
    );
    let ds = store.deliveries_of(id).await.unwrap();
    assert_eq!(ds.len(), 2);
    for (uid, d) in &ds {
        assert!([a, b].contains(uid));
        assert_eq!(d.status, DeliveryStatus::Delivering);
        assert_eq!(d.attempts, 0);
        assert!(d.due_ms.is_some());
        assert_eq!(d.account, "acct");
    }
    assert_eq!(
        store.delivery(id, a).await.unwrap().unwrap().endpoint,
        "crm"
    );
    assert!(store.delivery(id, Uuid::new_v4()).await.unwrap().is_none());
    assert!(store.attempts(id, a).await.unwrap().is_empty());
    // Pages of an account's events, newest first.
    let mut ids = vec![id];
    for _ in 0..4 {
        ids.push(store.commit(new_event("acct", None, &[])).await.unwrap().id);
    }
    store.commit(new_event("other", None, &[])).await.unwrap();
    ids.reverse();
    let page = store.list_events("acct", None, 3).await.unwrap();
    assert_eq!(page, ids[..3]);
    let rest = store.list_events("acct", Some(page[2]), 10).await.unwrap();
    assert_eq!(rest, ids[3..]);
    // A payload round trips byte for byte, large or empty.
    for payload in [Vec::new(), vec![b'x'; 1 << 20]] {
        let mut ev = new_event("acct", None, &[]);
        ev.record.payload = payload.clone();
        let id = store.commit(ev).await.unwrap().id;
        assert_eq!(
            store.event("acct", id).await.unwrap().unwrap().payload,
            payload
        );
    }
}

pub async fn idempotency_window(f: &dyn Fixture) {
    let store = f.open().await;
    let ep = Uuid::new_v4();
    let first = store
        .commit(new_event("acct", Some("k1"), &[(ep, "crm")]))
        .await
        .unwrap();
    let again = store
        .commit(new_event("acct", Some("k1"), &[(ep, "crm")]))
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(again.id, first.id);
    let other = store
        .commit(new_event("other", Some("k1"), &[(ep, "crm")]))
        .await
        .unwrap();
    assert!(!other.duplicate, "keys are scoped to the account");
    // The duplicate stored nothing: one due entry for the first, one for `other`.
    assert_eq!(store.due_count(ep).await.unwrap(), 2);
    // Concurrent commits with one key: one event stored, every answer names it.
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            s.commit(new_event("acct", Some("race"), &[(ep, "crm")]))
                .await
                .unwrap()
        }));
    }
    let mut ids = HashSet::new();
    let mut fresh = 0;
    for t in tasks {
        let c = t.await.unwrap();
        ids.insert(c.id);
        fresh += usize::from(!c.duplicate);
    }
    assert_eq!((ids.len(), fresh), (1, 1));
    assert_eq!(store.due_count(ep).await.unwrap(), 3);
}

pub async fn due_order_and_skip(f: &dyn Fixture) {
    let store = f.open().await;
    let (ep, other) = (Uuid::new_v4(), Uuid::new_v4());
    let ids = commit_n(&store, ep, 5).await;
    store
        .commit(new_event("acct", None, &[(other, "x")]))
        .await
        .unwrap();
    let now = now_ms() + 1;
    let due = store.due(ep, None, now, 10, &none).await.unwrap();
    assert_eq!(
        due.iter().map(|d| d.event).collect::<Vec<_>>(),
        ids,
        "oldest first, one endpoint"
    );
    assert!(due.windows(2).all(|w| w[0].due_ms <= w[1].due_ms));
    assert_eq!(store.due(ep, None, now, 2, &none).await.unwrap().len(), 2);
    let skip = |e: Uuid| e == ids[0] || e == ids[1];
    let due = store.due(ep, None, now, 10, &skip).await.unwrap();
    assert_eq!(due.iter().map(|d| d.event).collect::<Vec<_>>(), ids[2..]);
    // A cursor: only the entries after it.
    let first_two = store.due(ep, None, now, 2, &none).await.unwrap();
    let rest = store
        .due(ep, Some(first_two[1]), now, 10, &none)
        .await
        .unwrap();
    assert_eq!(rest.iter().map(|d| d.event).collect::<Vec<_>>(), ids[2..]);
    let last = *rest.last().unwrap();
    assert!(
        store
            .due(ep, Some(last), now, 10, &none)
            .await
            .unwrap()
            .is_empty()
    );
    // Nothing is due before it was stored.
    assert!(store.due(ep, None, 0, 10, &none).await.unwrap().is_empty());
    assert_eq!(store.due_count(ep).await.unwrap(), 5);
    assert_eq!(
        store.next_due_ms(ep, 10, &none).await.unwrap(),
        Some(due_of(&store, ids[0], ep).await)
    );
    let all = |_: Uuid| true;
    assert_eq!(store.next_due_ms(ep, 10, &all).await.unwrap(), None);
    assert_eq!(store.due_count(Uuid::new_v4()).await.unwrap(), 0);
    // remove_due drops exactly one entry.
    let d0 = Due {
        event: ids[0],
        due_ms: due_of(&store, ids[0], ep).await,
    };
    store.remove_due(ep, d0).await.unwrap();
    assert_eq!(store.due_count(ep).await.unwrap(), 4);
}

async fn due_of(store: &Store, event: Uuid, ep: Uuid) -> i64 {
    store
        .delivery(event, ep)
        .await
        .unwrap()
        .unwrap()
        .due_ms
        .unwrap()
}

pub async fn attempt_recording(f: &dyn Fixture) {
    let store = f.open().await;
    let ep = Uuid::new_v4();
    let id = store
        .commit(new_event("acct", None, &[(ep, "crm")]))
        .await
        .unwrap()
        .id;
    let mut rec = store.delivery(id, ep).await.unwrap().unwrap();
    let first_due = rec.due_ms.unwrap();
    // A failed attempt: the entry moves to the retry time.
    let retry_at = now_ms() + 60_000;
    rec.attempts = 1;
    rec.status = DeliveryStatus::Failing;
    rec.due_ms = Some(retry_at);
    rec.last_status = Some(500);
    rec.output = Some(StoredOutput {
        body: b"{}".to_vec(),
        content_type: "application/json".into(),
        headers: vec![("x-a".into(), "1".into())],
    });
    let a1 = AttemptRecord {
        at_ms: now_ms(),
        status: Some(500),
        error: None,
        latency_us: 1200,
        response: b"oops".to_vec(),
        batch: None,
    };
    let state = EndpointState {
        consecutive_failures: 1,
        last_error: Some("HTTP 500".into()),
        ..Default::default()
    };
    store
        .record_attempt(AttemptUpdate {
            event: id,
            endpoint: ep,
            old_due_ms: Some(first_due),
            record: &rec,
            attempt: Some(&a1),
            endpoint_state: Some(&state),
        })
        .await
        .unwrap();
    assert_eq!(store.delivery(id, ep).await.unwrap().unwrap(), rec);
    assert!(
        store
            .due(ep, None, now_ms(), 10, &none)
            .await
            .unwrap()
            .is_empty(),
        "not due before the retry"
    );
    let later = store.due(ep, None, retry_at, 10, &none).await.unwrap();
    assert_eq!(
        later,
        vec![Due {
            event: id,
            due_ms: retry_at
        }]
    );
    assert_eq!(store.endpoint_state(ep).await.unwrap(), state);
    assert_eq!(
        store.endpoint_state(Uuid::new_v4()).await.unwrap(),
        EndpointState::default()
    );
    // The retry succeeds: no entry left, two attempts in order.
    rec.attempts = 2;
    rec.status = DeliveryStatus::Delivered;
    rec.due_ms = None;
    rec.output = None;
    let a2 = AttemptRecord {
        status: Some(200),
        response: Vec::new(),
        // A batched attempt: the batch it went in is kept with it.
        batch: Some(BatchRef {
            id: [9; 16],
            size: 250,
        }),
        ..a1.clone()
    };
    store
        .record_attempt(AttemptUpdate {
            event: id,
            endpoint: ep,
            old_due_ms: Some(retry_at),
            record: &rec,
            attempt: Some(&a2),
            endpoint_state: None,
        })
        .await
        .unwrap();
    assert_eq!(store.due_count(ep).await.unwrap(), 0);
    assert_eq!(store.attempts(id, ep).await.unwrap(), vec![a1, a2]);
    assert_eq!(
        store.delivery(id, ep).await.unwrap().unwrap().status,
        DeliveryStatus::Delivered
    );
}

pub async fn requeue_and_disable(f: &dyn Fixture) {
    let store = f.open().await;
    let ep = Uuid::new_v4();
    let id = store
        .commit(new_event("acct", None, &[(ep, "crm")]))
        .await
        .unwrap()
        .id;
    let mut rec = store.delivery(id, ep).await.unwrap().unwrap();
    let old = rec.due_ms.unwrap();
    rec.attempts = 3;
    rec.status = DeliveryStatus::Failed;
    rec.due_ms = None;
    store
        .record_attempt(AttemptUpdate {
            event: id,
            endpoint: ep,
            old_due_ms: Some(old),
            record: &rec,
            attempt: None,
            endpoint_state: None,
        })
        .await
        .unwrap();
    assert_eq!(store.due_count(ep).await.unwrap(), 0);
    let now = now_ms();
    store.requeue(id, ep, rec, now).await.unwrap();
    let back = store.delivery(id, ep).await.unwrap().unwrap();
    assert_eq!(
        (back.status, back.due_ms),
        (DeliveryStatus::Failing, Some(now))
    );
    assert_eq!(store.due(ep, None, now, 10, &none).await.unwrap().len(), 1);
    // disable_pending: every queued delivery but the skipped one.
    let ids: Vec<Uuid> = {
        let mut v = vec![id];
        v.extend(commit_n(&store, ep, 3).await);
        v
    };
    let keep: HashSet<Uuid> = [ids[3]].into();
    let n = store.disable_pending(ep, "gone", keep).await.unwrap();
    assert_eq!(n, 3);
    for e in &ids[..3] {
        let d = store.delivery(*e, ep).await.unwrap().unwrap();
        assert_eq!(
            (d.status, d.reason.as_deref(), d.due_ms),
            (DeliveryStatus::Disabled, Some("gone"), None)
        );
    }
    assert_eq!(
        store.delivery(ids[3], ep).await.unwrap().unwrap().status,
        DeliveryStatus::Delivering
    );
    assert_eq!(store.due_count(ep).await.unwrap(), 1);
}

fn endpoint(account: &str, id: &str) -> StoredEndpoint {
    StoredEndpoint {
        id: id.into(),
        account: account.into(),
        url: "https://example.com/hook".into(),
        subscriptions: vec!["license.*".into()],
        secrets: crate::signing::SecretSet::default(),
        standard_signature: true,
        keygen_signature: false,
        plugins: vec![("redact".into(), serde_json::json!({"fields": ["email"]}))],
        retry_schedule: crate::policy::retry::RetrySchedule::keygen_default(),
        timeout_ms: 5000,
        max_in_flight: 64,
        enabled: true,
        created_ms: 1,
        updated_ms: 2,
        batch: Some(crate::store::StoredBatch {
            max_events: 100,
            max_bytes: 450_000,
            max_wait_ms: 500,
        }),
        rate_limit: Some(50.0),
    }
}

pub async fn endpoint_crud(f: &dyn Fixture) {
    let store = f.open().await;
    let a = endpoint("acct", "crm");
    let b = endpoint("acct", "crm-2");
    let c = endpoint("acc", "t");
    for e in [&a, &b, &c] {
        store.put_api_endpoint(e).await.unwrap();
    }
    assert_eq!(
        store.api_endpoint("acct", "crm").await.unwrap(),
        Some(a.clone())
    );
    assert_eq!(store.api_endpoint("other", "crm").await.unwrap(), None);
    let mut mine = store.api_endpoints(Some("acct")).await.unwrap();
    mine.sort_by(|x, y| x.id.cmp(&y.id));
    assert_eq!(
        mine,
        vec![a.clone(), b.clone()],
        "an account's endpoints only (not `acc`'s)"
    );
    assert_eq!(store.api_endpoints(None).await.unwrap().len(), 3);
    let mut changed = a.clone();
    changed.url = "https://example.com/v2".into();
    changed.enabled = false;
    store.put_api_endpoint(&changed).await.unwrap();
    assert_eq!(
        store.api_endpoint("acct", "crm").await.unwrap(),
        Some(changed)
    );
    assert!(store.delete_api_endpoint("acct", "crm").await.unwrap());
    assert!(!store.delete_api_endpoint("acct", "crm").await.unwrap());
    assert_eq!(store.api_endpoint("acct", "crm").await.unwrap(), None);
    assert_eq!(store.api_endpoints(None).await.unwrap().len(), 2);
}

pub async fn prune_final_only(f: &dyn Fixture) {
    let store = f.open().await;
    let ep = Uuid::new_v4();
    let done = store
        .commit(new_event("acct", None, &[(ep, "crm")]))
        .await
        .unwrap()
        .id;
    let pending = store
        .commit(new_event("acct", None, &[(ep, "crm")]))
        .await
        .unwrap()
        .id;
    let kept_other = store
        .commit(new_event("other", None, &[]))
        .await
        .unwrap()
        .id;
    let mut rec = store.delivery(done, ep).await.unwrap().unwrap();
    let old = rec.due_ms;
    rec.attempts = 1;
    rec.status = DeliveryStatus::Delivered;
    rec.due_ms = None;
    let a = AttemptRecord {
        at_ms: now_ms(),
        status: Some(200),
        error: None,
        latency_us: 1,
        response: vec![],
        batch: None,
    };
    store
        .record_attempt(AttemptUpdate {
            event: done,
            endpoint: ep,
            old_due_ms: old,
            record: &rec,
            attempt: Some(&a),
            endpoint_state: None,
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let late = store.commit(new_event("acct", None, &[])).await.unwrap().id;
    let cutoff = stored_ms(late).unwrap();
    assert_eq!(store.prune("acct", cutoff, 100).await.unwrap(), 1);
    assert!(store.event("acct", done).await.unwrap().is_none());
    assert!(store.delivery(done, ep).await.unwrap().is_none());
    assert!(store.attempts(done, ep).await.unwrap().is_empty());
    assert!(
        store.event("acct", pending).await.unwrap().is_some(),
        "pending deliveries keep their event"
    );
    assert!(
        store.event("acct", late).await.unwrap().is_some(),
        "newer than the cutoff"
    );
    assert!(
        store.event("other", kept_other).await.unwrap().is_some(),
        "another account's"
    );
}

pub async fn durable_across_reopen(f: &dyn Fixture) {
    let ep = Uuid::new_v4();
    let (id, dup_key) = {
        let store = f.open().await;
        let c = store
            .commit(new_event("acct", Some("k"), &[(ep, "crm")]))
            .await
            .unwrap();
        store
            .put_api_endpoint(&endpoint("acct", "crm"))
            .await
            .unwrap();
        (c.id, "k")
    };
    let store = f.open().await;
    assert!(store.event("acct", id).await.unwrap().is_some());
    assert_eq!(store.due_count(ep).await.unwrap(), 1);
    assert!(store.api_endpoint("acct", "crm").await.unwrap().is_some());
    let again = store
        .commit(new_event("acct", Some(dup_key), &[(ep, "crm")]))
        .await
        .unwrap();
    assert!(
        again.duplicate && again.id == id,
        "idempotency keys survive a reopen"
    );
}

pub async fn concurrent_commits_all_stored(f: &dyn Fixture) {
    let store = f.open().await;
    let ep = Uuid::new_v4();
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            s.commit(new_event("acct", None, &[(ep, "x")])).await
        }));
    }
    let mut ids = HashSet::new();
    for t in tasks {
        ids.insert(t.await.unwrap().unwrap().id);
    }
    assert_eq!(ids.len(), 200);
    assert_eq!(store.due_count(ep).await.unwrap(), 200);
    assert_eq!(
        store.list_events("acct", None, 500).await.unwrap().len(),
        200
    );
}

fn sched(due_ms: i64, key: &str) -> Option<Schedule> {
    Some(Schedule {
        due_ms,
        key: Some(key.into()),
    })
}

pub async fn scheduled_events_wait_and_move_by_key(f: &dyn Fixture) {
    let store = f.open().await;
    let ep = Uuid::new_v4();
    let now = now_ms();
    let first = store
        .commit_scheduled(
            new_event("acct", None, &[(ep, "crm")]),
            sched(now + 10_000, "lic:1"),
        )
        .await
        .unwrap();
    assert!(first.replaced.is_none());
    assert!(
        store
            .due(ep, None, now_ms(), 10, &none)
            .await
            .unwrap()
            .is_empty(),
        "not due before its time"
    );
    assert_eq!(
        store
            .due(ep, None, now + 10_000, 10, &none)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        (
            store.due_count(ep).await.unwrap(),
            store.due_count_until(ep, now_ms()).await.unwrap()
        ),
        (1, 0)
    );
    let s = store.schedule("acct", first.id).await.unwrap().unwrap();
    assert_eq!((s.due_ms, s.status(now)), (now + 10_000, Some("scheduled")));
    assert!(store.schedule("other", first.id).await.unwrap().is_none());
    // Same key, same account: the first is cancelled in the same write.
    let second = store
        .commit_scheduled(
            new_event("acct", None, &[(ep, "crm")]),
            sched(now + 20_000, "lic:1"),
        )
        .await
        .unwrap();
    let replaced = second.replaced.unwrap();
    assert_eq!((replaced.event, replaced.deliveries), (first.id, 1));
    let due = store.due(ep, None, now + 60_000, 10, &none).await.unwrap();
    assert_eq!(
        due,
        vec![Due {
            event: second.id,
            due_ms: now + 20_000
        }]
    );
    let d = store.delivery(first.id, ep).await.unwrap().unwrap();
    assert_eq!((d.status, d.due_ms), (DeliveryStatus::Cancelled, None));
    let s = store.schedule("acct", first.id).await.unwrap().unwrap();
    assert_eq!(s.status(now), Some("cancelled"));
    assert_eq!(s.replaced_by, Some(*second.id.as_bytes()));
    // The same key in another account is another key.
    let other = store
        .commit_scheduled(
            new_event("other", None, &[(ep, "crm")]),
            sched(now + 30_000, "lic:1"),
        )
        .await
        .unwrap();
    assert!(other.replaced.is_none());
    // Cancel by key: once.
    let c = store
        .cancel_scheduled("acct", CancelTarget::Key("lic:1".into()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.event, second.id);
    assert!(
        store
            .cancel_scheduled("acct", CancelTarget::Key("lic:1".into()))
            .await
            .unwrap()
            .is_none()
    );
    let due = store.due(ep, None, now + 60_000, 10, &none).await.unwrap();
    assert_eq!(
        due,
        vec![Due {
            event: other.id,
            due_ms: now + 30_000
        }]
    );
    // Cancel by id; another account's id finds nothing.
    assert!(
        store
            .cancel_scheduled("acct", CancelTarget::Event(other.id))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .cancel_scheduled("other", CancelTarget::Event(other.id))
            .await
            .unwrap()
            .is_some()
    );
    // Due within the margin: no longer cancellable, nor replaced.
    let soon = store
        .commit_scheduled(
            new_event("acct", None, &[(ep, "crm")]),
            sched(now_ms() + 100, "lic:2"),
        )
        .await
        .unwrap();
    assert!(
        store
            .cancel_scheduled("acct", CancelTarget::Event(soon.id))
            .await
            .unwrap()
            .is_none()
    );
    let after = store
        .commit_scheduled(
            new_event("acct", None, &[(ep, "crm")]),
            sched(now_ms() + 5000, "lic:2"),
        )
        .await
        .unwrap();
    assert!(after.replaced.is_none());
}

pub async fn replacements_within_one_group_leave_one_pending(f: &dyn Fixture) {
    let store = f.open().await;
    let ep = Uuid::new_v4();
    let now = now_ms();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            s.commit_scheduled(
                new_event("acct", None, &[(ep, "crm")]),
                sched(now + 10_000 + i, "k"),
            )
            .await
            .unwrap()
        }));
    }
    let mut replaced = 0;
    for t in tasks {
        replaced += usize::from(t.await.unwrap().replaced.is_some());
    }
    assert_eq!(replaced, 19);
    let due = store.due(ep, None, now + 60_000, 100, &none).await.unwrap();
    assert_eq!(due.len(), 1, "{due:?}");
}

/// A batch recorded as in flight and never closed (the router died):
/// after a reopen, its members without an attempt of it get one saying so
/// (a pending one stays due, a delivered one stays delivered); a member
/// that recorded the batch's answer is left alone; a closed batch leaves
/// nothing; recovery happens once.
pub async fn batches_in_flight_are_noted_after_a_crash(f: &dyn Fixture) {
    let ep = Uuid::new_v4();
    let (ids, first_due, batch) = {
        let store = f.open().await;
        let ids = commit_n(&store, ep, 3).await;
        let first_due = store.delivery(ids[0], ep).await.unwrap().unwrap().due_ms;
        let batch = BatchJournal {
            id: Uuid::now_v7(),
            ep,
            at_ms: now_ms(),
            events: ids.clone(),
        };
        store.open_batch(&batch).await.unwrap();
        let closed = BatchJournal {
            id: Uuid::now_v7(),
            ..batch.clone()
        };
        store.open_batch(&closed).await.unwrap();
        store.close_batch(closed.id).await.unwrap();
        // ids[1] recorded the batch's answer (failed, retry later);
        // ids[2] was delivered by a later request.
        for (i, status, due) in [
            (1, DeliveryStatus::Failing, Some(now_ms() + 60_000)),
            (2, DeliveryStatus::Delivered, None),
        ] {
            let mut rec = store.delivery(ids[i], ep).await.unwrap().unwrap();
            let old = rec.due_ms;
            rec.attempts = 1;
            rec.status = status;
            rec.due_ms = due;
            rec.last_status = Some(if due.is_some() { 500 } else { 200 });
            let a = AttemptRecord {
                at_ms: now_ms(),
                status: Some(if due.is_some() { 500 } else { 200 }),
                error: None,
                latency_us: 10,
                response: Vec::new(),
                batch: (i == 1).then(|| batch.batch_ref()),
            };
            store
                .record_attempt(AttemptUpdate {
                    event: ids[i],
                    endpoint: ep,
                    old_due_ms: old,
                    record: &rec,
                    attempt: Some(&a),
                    endpoint_state: None,
                })
                .await
                .unwrap();
        }
        store.flush().await.unwrap();
        (ids, first_due, batch)
    };
    let store = f.open().await;
    assert_eq!(store.recover_batches().await.unwrap(), (1, 2));
    let rec = store.delivery(ids[0], ep).await.unwrap().unwrap();
    assert_eq!(rec.attempts, 1);
    assert_eq!(rec.status, DeliveryStatus::Failing);
    assert_eq!(rec.due_ms, first_due, "still due, sent again");
    let log = store.attempts(ids[0], ep).await.unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].batch, Some(batch.batch_ref()));
    assert_eq!(log[0].error, Some(batch.interrupted_error()));
    assert_eq!(
        store.attempts(ids[1], ep).await.unwrap().len(),
        1,
        "answered: nothing to note"
    );
    // Delivered by a later request: the note joins its log, the outcome
    // stays.
    let done = store.delivery(ids[2], ep).await.unwrap().unwrap();
    assert_eq!(
        (done.status, done.due_ms, done.attempts, done.last_status),
        (DeliveryStatus::Delivered, None, 2, Some(200))
    );
    let log = store.attempts(ids[2], ep).await.unwrap();
    assert_eq!(log[1].batch, Some(batch.batch_ref()));
    assert_eq!(store.due_count(ep).await.unwrap(), 2);
    assert_eq!(store.recover_batches().await.unwrap(), (0, 0), "once");
}
