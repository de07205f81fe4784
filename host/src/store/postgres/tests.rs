//! The conformance suite against a real PostgreSQL: each fixture is a
//! fresh database in the cluster `SWITCHYARD_TEST_DATABASE_URL` names
//! (`tests/ci/postgres.sh` starts one; `tests/run.sh` does it for you).

use super::*;
use crate::store::Store;
use crate::store::conformance::{Fixture, conformance_tests};

/// The admin URL of the test cluster.
pub(crate) fn admin_url() -> String {
    std::env::var("SWITCHYARD_TEST_DATABASE_URL").unwrap_or_else(|_| {
        panic!(
            "SWITCHYARD_TEST_DATABASE_URL is not set: these tests need a PostgreSQL cluster. \
             Run `eval \"$(bash tests/ci/postgres.sh start)\"` first (or `bash tests/run.sh`)"
        )
    })
}

/// A new, empty database in the test cluster; its URL.
pub(crate) async fn fresh_database() -> String {
    let admin = admin_url();
    let (client, conn) = tokio_postgres::connect(&admin, NoTls)
        .await
        .expect("connecting to the test cluster");
    tokio::spawn(conn);
    let name = format!("sy_{}", Uuid::new_v4().simple());
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("creating a test database");
    let mut cfg: tokio_postgres::Config = admin.parse().unwrap();
    cfg.dbname(&name);
    let host = match &cfg.get_hosts()[0] {
        tokio_postgres::config::Host::Tcp(h) => h.clone(),
        tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
    };
    format!(
        "postgres://{}@{host}:{}/{name}",
        cfg.get_user().unwrap_or("postgres"),
        cfg.get_ports().first().copied().unwrap_or(5432)
    )
}

struct PgFixture(tokio::sync::OnceCell<String>);

fn pg_fixture() -> PgFixture {
    PgFixture(tokio::sync::OnceCell::new())
}

#[async_trait]
impl Fixture for PgFixture {
    async fn open(&self) -> Store {
        let url = self.0.get_or_init(fresh_database).await.clone();
        let cfg = PostgresConfig {
            url,
            pool_size: 8,
            lease: Duration::from_secs(30),
        };
        Arc::new(
            PgStore::open(&cfg)
                .await
                .expect("opening the PostgreSQL store"),
        )
    }
}

conformance_tests!(pg_fixture());

async fn open(url: &str, lease: Duration) -> PgStore {
    PgStore::open(&PostgresConfig {
        url: url.to_string(),
        pool_size: 4,
        lease,
    })
    .await
    .unwrap()
}

fn event(eps: &[Uuid]) -> NewEvent {
    NewEvent {
        id: Uuid::now_v7(),
        record: EventRecord {
            account: "acct".into(),
            event_type: "license.created".into(),
            created_ms: now_ms(),
            source_id: None,
            payload: b"{}".to_vec(),
            endpoints: eps.iter().map(|_| "crm".to_string()).collect(),
        },
        idempotency_key: None,
        deliveries: eps.iter().map(|u| (*u, "crm".to_string())).collect(),
    }
}

/// Two nodes on one database never take the same delivery while their
/// claims are live; a node's claims lapse after its lease, and renewing
/// keeps them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_are_exclusive_renewable_and_lapse() {
    let url = fresh_database().await;
    let lease = Duration::from_secs(2);
    let (a, b) = (open(&url, lease).await, open(&url, lease).await);
    let ep = Uuid::new_v4();
    // Committed by node A: claimed by A at once (A sends it first).
    let first = a.commit(event(&[ep])).await.unwrap().id;
    let none = |_: Uuid| false;
    assert!(
        b.take_due(ep, None, now_ms(), 10, &none)
            .await
            .unwrap()
            .is_empty(),
        "B took A's fresh delivery"
    );
    // Scheduled (unclaimed) work is split between the nodes.
    for _ in 0..20 {
        let ev = event(&[ep]);
        let due_ms = now_ms() + 300;
        a.commit_scheduled(ev, Some(Schedule { due_ms, key: None }))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let held_by_a = |e: Uuid| e == first;
    let ta = a
        .take_due(ep, None, now_ms(), 12, &held_by_a)
        .await
        .unwrap();
    let tb = b.take_due(ep, None, now_ms(), 100, &none).await.unwrap();
    assert_eq!(ta.len(), 12);
    assert_eq!(tb.len(), 8, "B takes what A did not: {tb:?}");
    let sa: HashSet<Uuid> = ta.iter().map(|d| d.event).chain([first]).collect();
    let sb: HashSet<Uuid> = tb.iter().map(|d| d.event).collect();
    assert!(sa.is_disjoint(&sb), "a delivery claimed twice");
    // A renews what it holds; B's claims lapse and A takes them over.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let held: Vec<(Uuid, Uuid)> = sa.iter().map(|e| (ep, *e)).collect();
    a.renew(&held).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let a_holds = |e: Uuid| sa.contains(&e);
    let again = a.take_due(ep, None, now_ms(), 100, &a_holds).await.unwrap();
    let got: HashSet<Uuid> = again.iter().map(|d| d.event).collect();
    assert_eq!(got, sb, "only B's lapsed claims move to A");
    // Released claims are free at once; `leave` frees everything.
    let one = ta[0].event;
    b.release(ep, &[one]).await.unwrap();
    assert!(
        b.take_due(ep, None, now_ms(), 100, &none)
            .await
            .unwrap()
            .is_empty(),
        "release is only for one's own claims"
    );
    a.release(ep, &[one]).await.unwrap();
    let took = b.take_due(ep, None, now_ms(), 100, &none).await.unwrap();
    assert_eq!(took.iter().map(|d| d.event).collect::<Vec<_>>(), vec![one]);
    a.leave().await.unwrap();
    let b_holds = |e: Uuid| e == one;
    assert_eq!(
        b.take_due(ep, None, now_ms(), 100, &b_holds)
            .await
            .unwrap()
            .len(),
        20,
        "after A left, B takes all it held"
    );
}

/// Two nodes starting at once on an empty database: one migrates, both
/// open; a database from a newer binary is refused with a clear message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_run_once_and_newer_schemas_are_refused() {
    let url = fresh_database().await;
    let cfg = PostgresConfig {
        url: url.clone(),
        pool_size: 2,
        lease: Duration::from_secs(30),
    };
    let (a, b) = tokio::join!(PgStore::open(&cfg), PgStore::open(&cfg));
    let (a, b) = (a.unwrap(), b.unwrap());
    let rows = a
        .query("SELECT version FROM switchyard_schema", &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), schema::VERSION as usize, "each migration once");
    a.exec(
        "INSERT INTO switchyard_schema (version, name) VALUES ($1, 'from the future')",
        &[&(schema::VERSION + 1)],
    )
    .await
    .unwrap();
    drop((a, b));
    let err = PgStore::open(&PostgresConfig {
        url,
        pool_size: 2,
        lease: Duration::from_secs(30),
    })
    .await
    .err()
    .expect("a newer schema was opened");
    assert!(err.to_string().contains("newer than this binary"), "{err}");
}
