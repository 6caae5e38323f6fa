//! Outages, shutdowns, kills and restarts.

use std::time::{Duration, Instant};

use conversation_service::store::{Backend, Store};
use diesel_async::SimpleAsyncConnection;
use serde_json::json;

use crate::harness::{Process, sqlite_conn};
use crate::harness::{TestApp, TestDb, World, as_actor, orphan_conversations, test_options};
use crate::on_both_backends;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

/// Row 6: while the database cannot be used, both transports answer 503 /
/// UNAVAILABLE quickly; once it is back the service serves again, no restart.
async fn database_outage(db: TestDb) {
    let mut opts = test_options();
    opts.sqlite_busy_timeout = Duration::from_millis(300);
    let app = TestApp::spawn_with(db, opts).await;
    let w = World::build(&app).await;
    let body = json!({ "repoId": w.repo }).to_string();
    assert_eq!(app.post_create(Some(&w.reader.token), &body).await.0, 200);
    assert_eq!(
        probe(&app, "/healthz").await,
        (200, json!({"success": true, "status": "ok"}))
    );
    assert_eq!(
        probe(&app, "/readyz").await,
        (200, json!({"success": true, "status": "ready"}))
    );
    assert_eq!(grpc_health(&app).await, ServingStatus::Serving);

    // Take the database away.
    let mut lock = None;
    match app.db.backend {
        Backend::Postgres => {
            let name = app.db.pg_name.clone().expect("pg name");
            TestDb::pg_admin_exec(&format!(
                "ALTER DATABASE {name} ALLOW_CONNECTIONS false;
                 SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid();"
            ))
            .await;
        }
        Backend::Sqlite => {
            let mut c = sqlite_conn(&app.db).await;
            c.batch_execute("BEGIN EXCLUSIVE").await.expect("lock");
            lock = Some(c);
        }
    }
    let started = Instant::now();
    let (status, reply) = app.post_create(Some(&w.reader.token), &body).await;
    assert_eq!(status, 503, "{reply}");
    assert_eq!(
        reply,
        json!({"success": false, "message": "Service temporarily unavailable"})
    );
    let mut client = app.grpc().await;
    let req = as_actor(
        conversation_service::pb::CreateConversationRequest {
            repo_id: w.repo.to_string(),
        },
        &w.reader,
    );
    let status = client
        .create_conversation(req)
        .await
        .expect_err("unavailable");
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert_eq!(status.message(), "Service temporarily unavailable");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "failed fast: {:?}",
        started.elapsed()
    );
    if app.db.backend == Backend::Postgres {
        // Readiness and gRPC health follow the database (an SQLite file that is
        // locked for writing still serves reads, so it stays ready).
        assert_eq!(
            probe(&app, "/readyz").await,
            (
                503,
                json!({"success": false, "message": "Database unreachable"})
            )
        );
        eventually(|| async { grpc_health(&app).await == ServingStatus::NotServing }).await;
        assert_eq!(probe(&app, "/healthz").await.0, 200, "alive all the same");
    }

    // Bring it back: the next requests succeed without a restart.
    match app.db.backend {
        Backend::Postgres => {
            let name = app.db.pg_name.clone().expect("pg name");
            TestDb::pg_admin_exec(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true")).await;
        }
        Backend::Sqlite => {
            let mut c = lock.take().expect("lock held");
            c.batch_execute("COMMIT").await.expect("unlock");
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, reply) = app.post_create(Some(&w.reader.token), &body).await;
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "not recovered: {status} {reply}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(app.count("conversations").await, 2);
    assert_eq!(app.conversations_without_event().await, 0);
    assert_eq!(probe(&app, "/readyz").await.0, 200);
    eventually(|| async { grpc_health(&app).await == ServingStatus::Serving }).await;
    app.shutdown().await;
}

/// GET a probe route: (status, body).
pub(crate) async fn probe(app: &TestApp, path: &str) -> (u16, serde_json::Value) {
    let res = app
        .http
        .get(format!("{}{path}", app.base))
        .send()
        .await
        .expect("probe answers");
    (res.status().as_u16(), res.json().await.expect("JSON"))
}

/// The gRPC health status of the service.
pub(crate) async fn grpc_health(app: &TestApp) -> ServingStatus {
    let mut client = HealthClient::new(app.channel().await);
    let reply = client
        .check(HealthCheckRequest {
            service: conversation_service::grpc::SERVICE_NAME.into(),
        })
        .await
        .expect("health answers");
    reply.into_inner().status()
}

/// Waits (up to 10 s) until `check` holds.
pub(crate) async fn eventually<F, Fut>(check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(Instant::now() < deadline, "condition not reached in 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A shutdown first reports NOT_SERVING (gRPC health, `/readyz`) while still
/// serving for the shutdown delay, then stops accepting and lets a request in
/// flight finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_requests_in_flight() {
    let config = conversation_service::server::Config {
        shutdown_delay: Duration::from_secs(4),
        ..conversation_service::server::Config::local()
    };
    let app = TestApp::spawn_config(TestDb::sqlite(), config).await;
    let w = World::build(&app).await;
    assert_eq!(probe(&app, "/readyz").await.0, 200);
    // Hold the write lock so the next create waits inside the service.
    let mut lock = sqlite_conn(&app.db).await;
    lock.batch_execute("BEGIN EXCLUSIVE").await.expect("lock");
    let (http, url, token, body) = (
        app.http.clone(),
        format!("{}/conversation", app.base),
        w.reader.token.clone(),
        json!({ "repoId": w.repo }).to_string(),
    );
    let in_flight = tokio::spawn(async move {
        http.post(url)
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("in-flight request answered")
            .status()
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stop = app.running().stop_token();
    let started = Instant::now();
    stop.cancel();
    // During the delay: still answering, but saying it is going away.
    eventually(|| async { grpc_health(&app).await == ServingStatus::NotServing }).await;
    assert_eq!(
        probe(&app, "/readyz").await,
        (503, json!({ "success": false, "message": "Shutting down" }))
    );
    assert_eq!(probe(&app, "/healthz").await.0, 200);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "checked within the delay"
    );
    // After it: no new connections.
    eventually(|| async { reqwest::Client::new().get(&app.base).send().await.is_err() }).await;
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "still accepting until the delay is over"
    );
    lock.batch_execute("COMMIT").await.expect("unlock");
    assert_eq!(in_flight.await.expect("task"), 200);
    let store = app.store.clone();
    let _db = app.shutdown().await;
    assert_eq!(orphan_conversations(&store).await, 0);
}

/// SIGTERM in the middle of a load on both transports: the process exits 0,
/// and every create it acknowledged is stored with its event. Requests are
/// either answered 200 or refused at the connection; none fails otherwise.
async fn sigterm_under_load(db: TestDb) {
    use conversation_service::pb::CreateConversationRequest;
    use conversation_service::pb::conversation_service_client::ConversationServiceClient;
    use std::sync::{Arc, Mutex};

    let process = Process::start_with(
        &db.url,
        &["--shutdown-delay", "300ms"],
        &[("RUST_LOG", "warn")],
    )
    .await;
    let target = demo_caller(&process);
    let acknowledged: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut load = tokio::task::JoinSet::new();
    for i in 0..16 {
        let (target, acknowledged) = (target.clone(), acknowledged.clone());
        let grpc = format!("http://{}", process.grpc);
        load.spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            if i % 2 == 0 {
                let client = reqwest::Client::new();
                while Instant::now() < deadline {
                    let Ok(res) = client
                        .post(format!("{}/conversation", target.http))
                        .header("authorization", format!("Bearer {}", target.token))
                        .header("content-type", "application/json")
                        .body(json!({ "repoId": target.repo }).to_string())
                        .send()
                        .await
                    else {
                        break; // connection refused or closed: the server is going
                    };
                    assert_eq!(res.status(), 200, "only 200 or a refused connection");
                    let body: serde_json::Value = res.json().await.expect("body");
                    let id = body["conversationId"].as_str().expect("id").to_owned();
                    acknowledged.lock().expect("ids").push(id);
                }
            } else {
                let Ok(mut client) = ConversationServiceClient::connect(grpc).await else {
                    return;
                };
                while Instant::now() < deadline {
                    let mut request = tonic::Request::new(CreateConversationRequest {
                        repo_id: target.repo.clone(),
                    });
                    request.metadata_mut().insert(
                        "authorization",
                        format!("Bearer {}", target.token).parse().expect("ascii"),
                    );
                    match client.create_conversation(request).await {
                        Ok(reply) => acknowledged
                            .lock()
                            .expect("ids")
                            .push(reply.into_inner().conversation_id),
                        Err(status) => {
                            // A connection refused or closed (GOAWAY) shows as
                            // a status the client made, carrying its transport
                            // error; the server itself never failed a request.
                            let transport = std::error::Error::source(&status).is_some()
                                || matches!(
                                    status.code(),
                                    tonic::Code::Unavailable | tonic::Code::Cancelled
                                );
                            assert!(
                                transport && status.message() != "Service temporarily unavailable",
                                "only transport failures once the server goes: {status:?}"
                            );
                            break;
                        }
                    }
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let before_signal = acknowledged.lock().expect("ids").len();
    assert!(before_signal > 0, "the load is running");
    let status = process.terminate().await;
    assert!(status.success(), "SIGTERM exits 0, got {status:?}");
    while let Some(r) = load.join_next().await {
        r.expect("load task");
    }
    let acknowledged = acknowledged.lock().expect("ids").clone();
    assert!(
        acknowledged.len() > before_signal,
        "the load ran through the delay"
    );

    let store = Store::open(&db.url, &test_options()).expect("reopen");
    assert_eq!(
        stored_among(&store, &acknowledged).await,
        acknowledged.len(),
        "every acknowledged create is stored"
    );
    assert_eq!(orphan_conversations(&store).await, 0);
}

/// How many of the conversations `ids` are stored.
async fn stored_among(store: &Store, ids: &[String]) -> usize {
    use conversation_service::store::schema::conversations;
    use conversation_service::store::types::SqlUuid;
    use conversation_service::with_conn;
    use diesel::prelude::*;
    use diesel_async::RunQueryDsl;
    let ids: Vec<SqlUuid> = ids
        .iter()
        .map(|id| SqlUuid(id.parse().expect("uuid")))
        .collect();
    let mut conn = store.conn().await.expect("conn");
    let stored = with_conn!(&mut conn, |c| conversations::table
        .filter(conversations::id.eq_any(ids.clone()))
        .count()
        .get_result::<i64>(c)
        .await)
    .expect("count");
    usize::try_from(stored).expect("count")
}

/// Past the limit of requests in flight, both transports refuse at once
/// (REST 503 with Retry-After, gRPC RESOURCE_EXHAUSTED) instead of queueing,
/// while probes still answer; the admitted requests finish normally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_refused_quickly() {
    let config = conversation_service::server::Config {
        max_concurrent_requests: 4,
        ..conversation_service::server::Config::local()
    };
    let mut opts = test_options();
    opts.sqlite_busy_timeout = Duration::from_secs(30);
    let db = TestDb::sqlite();
    let url = db.url.clone();
    let app = std::sync::Arc::new(TestApp::spawn_at(db, &url, opts, config).await);
    let w = World::build(&app).await;
    // Hold the write lock: the first four creates wait inside the service.
    let mut lock = sqlite_conn(&app.db).await;
    lock.batch_execute("BEGIN EXCLUSIVE").await.expect("lock");
    let body = json!({ "repoId": w.repo }).to_string();
    let mut admitted = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let (app, token, body) = (app.clone(), w.reader.token.clone(), body.clone());
        admitted.spawn(async move { app.post_create(Some(&token), &body).await.0 });
    }
    // All four are in: the metrics say so.
    eventually(|| async {
        let text = app
            .http
            .get(format!("{}/metrics", app.base))
            .send()
            .await
            .expect("scrape")
            .text()
            .await
            .expect("text");
        text.contains("conversation_service_requests_in_flight 4\n")
    })
    .await;
    let started = Instant::now();
    for _ in 0..10 {
        let res = app
            .http
            .post(format!("{}/conversation", app.base))
            .header("authorization", format!("Bearer {}", w.reader.token))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .expect("answered");
        assert_eq!(res.status(), 503);
        assert_eq!(res.headers()["retry-after"], "1");
        let reply: serde_json::Value = res.json().await.expect("json");
        assert_eq!(
            reply,
            json!({ "success": false, "message": "Server is busy; retry later" })
        );
        let refused = app
            .grpc()
            .await
            .create_conversation(crate::harness::create_request(&w.reader, w.repo))
            .await
            .expect_err("busy");
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refusals are immediate, took {:?}",
        started.elapsed()
    );
    // Probes are not limited.
    assert_eq!(probe(&app, "/healthz").await.0, 200);
    assert_eq!(grpc_health(&app).await, ServingStatus::Serving);
    lock.batch_execute("COMMIT").await.expect("unlock");
    while let Some(status) = admitted.join_next().await {
        assert_eq!(status.expect("task"), 200, "admitted requests finish");
    }
    assert_eq!(app.count("conversations").await, 4);
    let app = std::sync::Arc::into_inner(app).expect("last handle");
    app.shutdown().await;
}

/// What a client needs to create conversations on a demo process.
fn demo_caller(p: &Process) -> DemoCaller {
    DemoCaller {
        http: p.http.clone(),
        token: p.token.clone(),
        repo: p.repo.clone(),
    }
}

/// What a client needs to create conversations on a demo process.
#[derive(Clone)]
struct DemoCaller {
    http: String,
    token: String,
    repo: String,
}

impl DemoCaller {
    /// POST /conversation; `None` once the server is gone.
    async fn create(&self, client: &reqwest::Client) -> Option<u16> {
        client
            .post(format!("{}/conversation", self.http))
            .header("authorization", format!("Bearer {}", self.token))
            .header("content-type", "application/json")
            .body(json!({ "repoId": self.repo }).to_string())
            .send()
            .await
            .ok()
            .map(|r| r.status().as_u16())
    }
}

/// A process killed with SIGKILL in the middle of a load leaves no
/// conversation without its event and loses nothing it acknowledged; the
/// service starts again on the same database and exits 0 on SIGTERM.
async fn killed_under_load(db: TestDb) {
    let first = Process::start(&db.url).await;
    let client = reqwest::Client::new();
    let caller = demo_caller(&first);
    assert_eq!(caller.create(&client).await, Some(200));

    let acknowledged = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(1));
    let stop_at = Instant::now() + Duration::from_secs(1);
    let mut load = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (client, ack, caller) = (client.clone(), acknowledged.clone(), caller.clone());
        load.spawn(async move {
            for _ in 0..10_000 {
                match caller.create(&client).await {
                    Some(200) => {
                        ack.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    Some(other) => panic!("unexpected status {other} under load"),
                    None => break, // the server is gone
                }
                if Instant::now() > stop_at + Duration::from_secs(5) {
                    break;
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    let mut first = first;
    first.child.start_kill().expect("SIGKILL");
    first.child.wait().await.expect("killed");
    while let Some(r) = load.join_next().await {
        r.expect("load task");
    }
    let acknowledged = acknowledged.load(std::sync::atomic::Ordering::SeqCst);
    assert!(acknowledged > 1, "the load ran before the kill");

    let store = Store::open(&db.url, &test_options()).expect("reopen");
    let conversations = {
        use conversation_service::store::schema::conversations;
        use conversation_service::with_conn;
        use diesel::prelude::*;
        use diesel_async::RunQueryDsl;
        let mut conn = store.conn().await.expect("conn");
        with_conn!(&mut conn, |c| conversations::table
            .count()
            .get_result::<i64>(c)
            .await)
        .expect("count")
    };
    assert!(
        conversations >= acknowledged,
        "{conversations} stored < {acknowledged} acknowledged"
    );
    assert_eq!(orphan_conversations(&store).await, 0);

    let second = Process::start(&db.url).await;
    assert_eq!(demo_caller(&second).create(&client).await, Some(200));
    let status = second.terminate().await;
    assert!(status.success(), "SIGTERM exits 0, got {status:?}");
    drop(db);
}

/// The database goes away in the middle of a load on both transports and
/// comes back (PostgreSQL: a proxy in front of it drops every connection and
/// refuses new ones; SQLite: another process holds the write lock). Meanwhile
/// requests fail fast with 503 / UNAVAILABLE, never 500, and health says
/// NOT_SERVING; afterwards the service serves again by itself. Every create
/// answered 200 is stored with its event.
async fn outage_under_load(db: TestDb) {
    use std::sync::{Arc, Mutex};

    let mut opts = test_options();
    opts.sqlite_busy_timeout = Duration::from_millis(500);
    let proxy = match db.backend {
        Backend::Postgres => {
            let (host, _) = db
                .url
                .split_once("://")
                .expect("url")
                .1
                .split_once('/')
                .expect("path");
            let upstream = host.rsplit_once('@').map_or(host, |(_, h)| h);
            Some(crate::harness::DbProxy::start(upstream.parse().expect("host:port")).await)
        }
        Backend::Sqlite => None,
    };
    let url = proxy
        .as_ref()
        .map_or_else(|| db.url.clone(), |p| p.url(&db.url));
    let app = Arc::new(
        TestApp::spawn_at(
            db,
            &url,
            opts,
            conversation_service::server::Config::local(),
        )
        .await,
    );
    let w = World::build(&app).await;

    #[derive(Default)]
    struct Tally {
        acknowledged: Vec<String>,
        unavailable: usize,
        slowest: Duration,
    }
    let tally: Arc<Mutex<Tally>> = Arc::default();
    let running = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let mut load = tokio::task::JoinSet::new();
    for i in 0..8 {
        let (app, tally, running, reader, repo) = (
            app.clone(),
            tally.clone(),
            running.clone(),
            w.reader.clone(),
            w.repo,
        );
        load.spawn(async move {
            let mut client = app.grpc().await;
            while running.load(std::sync::atomic::Ordering::SeqCst) {
                let started = Instant::now();
                let outcome = if i % 2 == 0 {
                    let (status, body) = app
                        .post_create(Some(&reader.token), &json!({ "repoId": repo }).to_string())
                        .await;
                    match status {
                        200 => Ok(body["conversationId"].as_str().expect("id").to_owned()),
                        503 => Err(body["message"].as_str().expect("message").to_owned()),
                        other => panic!("REST {other} during an outage: {body}"),
                    }
                } else {
                    match client
                        .create_conversation(crate::harness::create_request(&reader, repo))
                        .await
                    {
                        Ok(reply) => Ok(reply.into_inner().conversation_id),
                        Err(s) if s.code() == tonic::Code::Unavailable => {
                            Err(s.message().to_owned())
                        }
                        Err(s) => panic!("gRPC {s:?} during an outage"),
                    }
                };
                let took = started.elapsed();
                {
                    let mut t = tally.lock().expect("tally");
                    t.slowest = t.slowest.max(took);
                    match outcome {
                        Ok(id) => t.acknowledged.push(id),
                        Err(message) => {
                            assert_eq!(message, "Service temporarily unavailable");
                            t.unavailable += 1;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = tally.lock().expect("tally").acknowledged.len();
    assert!(before > 0, "the load runs");

    // Down.
    let mut lock = None;
    match &proxy {
        Some(proxy) => proxy.cut().await,
        None => {
            let mut c = sqlite_conn(&app.db).await;
            c.batch_execute("BEGIN EXCLUSIVE").await.expect("lock");
            lock = Some(c);
        }
    }
    eventually(|| async { tally.lock().expect("tally").unavailable >= 4 }).await;
    if proxy.is_some() {
        eventually(|| async { grpc_health(&app).await == ServingStatus::NotServing }).await;
    }

    // Up again: creates succeed again without a restart.
    match &proxy {
        Some(proxy) => proxy.restore(),
        None => {
            let mut c = lock.take().expect("lock held");
            c.batch_execute("COMMIT").await.expect("unlock");
        }
    }
    let recovered = tally.lock().expect("tally").acknowledged.len();
    eventually(|| async { tally.lock().expect("tally").acknowledged.len() > recovered + 10 }).await;
    eventually(|| async { grpc_health(&app).await == ServingStatus::Serving }).await;
    running.store(false, std::sync::atomic::Ordering::SeqCst);
    while let Some(r) = load.join_next().await {
        r.expect("load task");
    }

    let t = std::mem::take(&mut *tally.lock().expect("tally"));
    assert!(
        t.slowest < Duration::from_secs(5),
        "every request answered within the bounded waits, slowest {:?}",
        t.slowest
    );
    assert_eq!(
        stored_among(&app.store, &t.acknowledged).await,
        t.acknowledged.len(),
        "every acknowledged create is stored"
    );
    assert_eq!(app.conversations_without_event().await, 0);
    Arc::into_inner(app).expect("last handle").shutdown().await;
}

on_both_backends!(
    database_outage,
    killed_under_load,
    sigterm_under_load,
    outage_under_load
);
