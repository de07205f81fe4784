//! Scheduled events (issue #12, part 2): `deliver_at` / `deliver_in` hold
//! an event's deliveries until their time (in the store's due index, so a
//! crash does not lose them), `schedule_key` moves a pending one, and the
//! cancel routes stop it.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::*;

fn auth() -> String {
    format!("Bearer {TOKEN}")
}

async fn post(c: &Client, router: &Router, body: Value) -> Resp {
    c.post_event(router, "acct", &body).await
}

fn reminder(license: &str, schedule: Value) -> Value {
    let mut v = json!({"event": "license.expiring-soon",
                       "payload": {"data": {"id": license, "type": "licenses"}}});
    for (k, x) in schedule.as_object().unwrap() {
        v[k] = x.clone();
    }
    v
}

async fn show(c: &Client, router: &Router, id: &str) -> Value {
    let r = c
        .request(
            "GET",
            &router.url(&format!("/v1/accounts/acct/webhook-events/{id}")),
            &[("authorization", &auth())],
            "",
        )
        .await;
    assert_eq!(r.status, 200);
    r.json()["data"]["attributes"].clone()
}

fn license_of(r: &Received) -> String {
    let v = r.json();
    let doc: Value =
        serde_json::from_str(v["data"]["attributes"]["payload"].as_str().unwrap()).unwrap();
    doc["data"]["id"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_scheduled_3s_ahead_is_not_delivered_at_1s_and_is_by_6s() {
    let rx = Receiver::ok().await;
    let router = Router::start(&(base_config("") + &endpoint("e", &rx.url("/e"), "")), &[]);
    let c = Client::new();
    let sent = Instant::now();
    let r = post(&c, &router, reminder("lic-1", json!({"deliver_in": "3s"}))).await;
    assert_eq!(r.status, 202);
    let id = r.json()["data"]["id"].as_str().unwrap().to_string();
    assert_eq!(r.json()["data"]["attributes"]["status"], "scheduled");
    // An ordinary event meanwhile is delivered at once.
    let now = post(
        &c,
        &router,
        event("user.created", json!({"data": {"id": "u"}})),
    )
    .await;
    assert_eq!(now.status, 202);
    rx.wait_for(Duration::from_secs(5), "the ordinary event", |g| {
        !g.is_empty()
    })
    .await;

    tokio::time::sleep(Duration::from_secs(1).saturating_sub(sent.elapsed())).await;
    assert_eq!(rx.count(), 1, "nothing of the scheduled event at 1 s");
    let a = show(&c, &router, &id).await;
    assert_eq!(a["status"], "scheduled");
    assert!(a["deliverAt"].is_string());
    let table = std::process::Command::new(BIN)
        .args([
            "events",
            "list",
            "--account",
            "acct",
            "--token",
            TOKEN,
            "--url",
        ])
        .arg(router.url(""))
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.contains("scheduled (due "), "{table}");

    let got = rx
        .wait_for(
            Duration::from_secs(6).saturating_sub(sent.elapsed()),
            "the scheduled delivery by 6 s",
            |g| g.len() >= 2,
        )
        .await;
    let late = got
        .iter()
        .find(|r| r.path == "/e" && license_of_opt(r).as_deref() == Some("lic-1"))
        .unwrap();
    let at = late.at.duration_since(sent);
    assert!(
        at >= Duration::from_millis(2900),
        "delivered after {at:?}, before its time"
    );
    let a = show(&c, &router, &id).await;
    assert_eq!(a["status"], "delivered");
    let metrics = String::from_utf8_lossy(
        &c.request("GET", &router.url("/metrics"), &[], "")
            .await
            .body,
    )
    .to_string();
    assert!(
        metrics.contains("switchyard_events_scheduled_total 1"),
        "{metrics}"
    );
}

fn license_of_opt(r: &Received) -> Option<String> {
    let v = r.json();
    let doc: Value = serde_json::from_str(v["data"]["attributes"]["payload"].as_str()?).ok()?;
    doc["data"]["id"].as_str().map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_event_with_the_same_key_replaces_the_pending_one() {
    let rx = Receiver::ok().await;
    let router = Router::start(&(base_config("") + &endpoint("e", &rx.url("/e"), "")), &[]);
    let c = Client::new();
    let key = "license:lic-2:expiring-soon";
    let sent = Instant::now();
    let first = post(
        &c,
        &router,
        reminder(
            "lic-2-old",
            json!({"deliver_in": "2s", "schedule_key": key}),
        ),
    )
    .await;
    assert_eq!(first.status, 202);
    let first_id = first.json()["data"]["id"].as_str().unwrap().to_string();
    // License renewed: move the reminder (one call).
    let second = post(
        &c,
        &router,
        reminder(
            "lic-2-new",
            json!({"deliver_in": "4s", "schedule_key": key}),
        ),
    )
    .await;
    assert_eq!(second.status, 202);
    let second_id = second.json()["data"]["id"].as_str().unwrap().to_string();
    assert_eq!(second.json()["meta"]["replaced"]["id"], first_id.as_str());
    // Another account's key of the same name is another key.
    let other = c
        .request(
            "POST",
            &router.events_url("other"),
            &[
                ("authorization", "Bearer other-token-bbbb"),
                ("content-type", "application/json"),
            ],
            reminder("x", json!({"deliver_in": "1h", "schedule_key": key})).to_string(),
        )
        .await;
    assert_eq!(other.status, 202);
    assert!(other.json()["meta"]["replaced"].is_null());

    tokio::time::sleep(Duration::from_millis(3000).saturating_sub(sent.elapsed())).await;
    assert_eq!(rx.count(), 0, "the replaced event must not be delivered");
    let got = rx
        .wait_for(
            Duration::from_secs(8).saturating_sub(sent.elapsed()),
            "the new reminder",
            |g| !g.is_empty(),
        )
        .await;
    assert!(got[0].at.duration_since(sent) >= Duration::from_millis(3900));
    assert_eq!(license_of(&got[0]), "lic-2-new");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rx.count(), 1);
    let a = show(&c, &router, &first_id).await;
    assert_eq!(a["status"], "cancelled");
    assert_eq!(a["replacedBy"], second_id.as_str());
    assert_eq!(a["deliveries"][0]["status"], "cancelled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_event_is_never_delivered() {
    let rx = Receiver::ok().await;
    let router = Router::start(&(base_config("") + &endpoint("e", &rx.url("/e"), "")), &[]);
    let c = Client::new();
    let by_key = post(
        &c,
        &router,
        reminder(
            "lic-3",
            json!({"deliver_in": "2s", "schedule_key": "license:lic-3"}),
        ),
    )
    .await;
    let by_id = post(&c, &router, reminder("lic-4", json!({"deliver_in": "2s"}))).await;
    let key_id = by_key.json()["data"]["id"].as_str().unwrap().to_string();
    let event_id = by_id.json()["data"]["id"].as_str().unwrap().to_string();
    let h = [("authorization", auth())];
    let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // Another account cannot cancel it.
    let r = c
        .request(
            "DELETE",
            &router.url("/v1/accounts/other/scheduled/license:lic-3"),
            &[("authorization", "Bearer other-token-bbbb")],
            "",
        )
        .await;
    assert_eq!(r.status, 404);
    let r = c
        .request(
            "DELETE",
            &router.url("/v1/accounts/acct/scheduled/license:lic-3"),
            &h,
            "",
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["data"]["id"], key_id.as_str());
    assert_eq!(r.json()["data"]["attributes"]["deliveriesCancelled"], 1);
    let again = c
        .request(
            "DELETE",
            &router.url("/v1/accounts/acct/scheduled/license:lic-3"),
            &h,
            "",
        )
        .await;
    assert_eq!(again.status, 404);
    let r = c
        .request(
            "POST",
            &router.url(&format!(
                "/v1/accounts/acct/webhook-events/{event_id}/actions/cancel"
            )),
            &h,
            "",
        )
        .await;
    assert_eq!(r.status, 200);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(rx.count(), 0, "cancelled events were delivered");
    assert_eq!(show(&c, &router, &key_id).await["status"], "cancelled");
    assert_eq!(show(&c, &router, &event_id).await["status"], "cancelled");
    // A delivered event is not pending: nothing to cancel.
    let done = post(
        &c,
        &router,
        reminder("lic-5", json!({"schedule_key": "license:lic-5"})),
    )
    .await;
    let done_id = done.json()["data"]["id"].as_str().unwrap().to_string();
    rx.wait_for(Duration::from_secs(5), "the immediate event", |g| {
        !g.is_empty()
    })
    .await;
    let r = c
        .request(
            "POST",
            &router.url(&format!(
                "/v1/accounts/acct/webhook-events/{done_id}/actions/cancel"
            )),
            &h,
            "",
        )
        .await;
    assert_eq!(r.status, 404);
    let metrics = String::from_utf8_lossy(
        &c.request("GET", &router.url("/metrics"), &[], "")
            .await
            .body,
    )
    .to_string();
    assert!(
        metrics.contains("switchyard_scheduled_cancelled_total{how=\"cancelled\"} 2"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_scheduling_and_due_time_still_delivers_on_time() {
    let rx = Receiver::ok().await;
    let mut router = Router::start(&(base_config("") + &endpoint("e", &rx.url("/e"), "")), &[]);
    let c = Client::new();
    let sent = Instant::now();
    let r = post(&c, &router, reminder("lic-6", json!({"deliver_in": "4s"}))).await;
    assert_eq!(r.status, 202);
    router.kill9();
    router.spawn();
    tokio::time::sleep(Duration::from_millis(3000).saturating_sub(sent.elapsed())).await;
    assert_eq!(rx.count(), 0);
    let got = rx
        .wait_for(
            Duration::from_secs(9).saturating_sub(sent.elapsed()),
            "the scheduled delivery after the restart",
            |g| !g.is_empty(),
        )
        .await;
    let at = got[0].at.duration_since(sent);
    assert!(at >= Duration::from_millis(3900), "{at:?}");
    assert_eq!(license_of(&got[0]), "lic-6");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rx.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_times_are_refused_and_store_nothing() {
    let rx = Receiver::ok().await;
    let router = Router::start(
        &(base_config("max_schedule_ahead = \"30days\"") + &endpoint("e", &rx.url("/e"), "")),
        &[],
    );
    let c = Client::new();
    let cases: Vec<(Value, u16, Option<&str>)> = vec![
        (json!({"deliver_at": "tomorrow"}), 400, Some("/deliver_at")),
        (json!({"deliver_in": "soon"}), 400, Some("/deliver_in")),
        (json!({"deliver_in": 3600}), 400, Some("/deliver_in")),
        (
            json!({"deliver_in": "1h", "deliver_at": "2030-01-01T00:00:00Z"}),
            400,
            Some("/deliver_in"),
        ),
        (json!({"deliver_in": "31days"}), 422, Some("/deliver_in")),
        (
            json!({"deliver_at": "2999-01-01T00:00:00Z"}),
            422,
            Some("/deliver_at"),
        ),
        (
            json!({"deliver_in": "1h", "schedule_key": "has space"}),
            400,
            Some("/schedule_key"),
        ),
    ];
    for (schedule, status, pointer) in &cases {
        let r = post(&c, &router, reminder("l", schedule.clone())).await;
        assert_eq!(
            r.status,
            *status,
            "{schedule}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(
            r.json()["errors"][0]["source"]["pointer"].as_str(),
            *pointer,
            "{schedule}"
        );
    }
    // A Keygen envelope takes the headers, not members.
    let envelope = json!({"data": {"id": "wh", "type": "webhook-events",
        "attributes": {"event": "license.expiring-soon", "payload": "{\"data\":{\"id\":\"l\"}}"}}});
    let mut with_member = envelope.clone();
    with_member["deliver_in"] = json!("1h");
    assert_eq!(post(&c, &router, with_member).await.status, 400);
    let h = auth();
    let headers = |extra: (&'static str, &'static str)| {
        vec![
            ("authorization", h.clone()),
            ("content-type", "application/json".to_string()),
            (extra.0, extra.1.to_string()),
        ]
    };
    for (extra, status) in [
        (("deliver-in", "45days"), 422),
        (("deliver-at", "noon"), 400),
    ] {
        let hs = headers(extra);
        let hs: Vec<(&str, &str)> = hs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = c
            .request(
                "POST",
                &router.events_url("acct"),
                &hs,
                envelope.to_string(),
            )
            .await;
        assert_eq!(r.status, status, "{extra:?}");
    }
    let r = c
        .request(
            "GET",
            &router.url("/v1/accounts/acct/webhook-events"),
            &[("authorization", &h)],
            "",
        )
        .await;
    assert_eq!(
        r.json()["data"].as_array().unwrap().len(),
        0,
        "nothing stored"
    );
    // The header form works on a Keygen envelope; a past time means now.
    let hs = headers(("deliver-at", "2001-01-01T00:00:00Z"));
    let hs: Vec<(&str, &str)> = hs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = c
        .request(
            "POST",
            &router.events_url("acct"),
            &hs,
            envelope.to_string(),
        )
        .await;
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    rx.wait_for(Duration::from_secs(5), "the past-dated event, now", |g| {
        !g.is_empty()
    })
    .await;
}
