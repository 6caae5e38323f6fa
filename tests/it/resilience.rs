//! Outages, shutdowns, kills and restarts.

use std::process::Stdio;
use std::time::{Duration, Instant};

use conversation_service::store::{Backend, Store};
use diesel_async::{AsyncConnection, SimpleAsyncConnection};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::harness::{TestApp, TestDb, World, as_actor, orphan_conversations, test_options};
use crate::on_both_backends;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

type SqliteConn =
    diesel_async::sync_connection_wrapper::SyncConnectionWrapper<diesel::SqliteConnection>;

async fn sqlite_conn(db: &TestDb) -> SqliteConn {
    SqliteConn::establish(db.url.strip_prefix("sqlite://").expect("sqlite url"))
        .await
        .expect("connect")
}

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
async fn probe(app: &TestApp, path: &str) -> (u16, serde_json::Value) {
    let res = app
        .http
        .get(format!("{}{path}", app.base))
        .send()
        .await
        .expect("probe answers");
    (res.status().as_u16(), res.json().await.expect("JSON"))
}

/// The gRPC health status of the service.
async fn grpc_health(app: &TestApp) -> ServingStatus {
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
async fn eventually<F, Fut>(check: F)
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

/// A shutdown lets a request in flight finish, and then stops listening.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_requests_in_flight() {
    let app = TestApp::spawn(TestDb::sqlite()).await;
    let w = World::build(&app).await;
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
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stop = app.running().stop_token();
    stop.cancel();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refused = reqwest::Client::new().get(&app.base).send().await;
    assert!(refused.is_err(), "no new connections once shutdown starts");
    lock.batch_execute("COMMIT").await.expect("unlock");
    assert_eq!(in_flight.await.expect("task"), 200);
    let store = app.store.clone();
    app.shutdown().await;
    assert_eq!(orphan_conversations(&store).await, 0);
}

/// The service binary, started with `serve --demo` on ephemeral ports.
struct Process {
    child: Child,
    http: String,
    token: String,
    repo: String,
}

impl Process {
    async fn start(database_url: &str) -> Process {
        let mut child = Command::new(env!("CARGO_BIN_EXE_conversation-service"))
            .args([
                "serve",
                "--demo",
                "--http-addr",
                "127.0.0.1:0",
                "--grpc-addr",
                "127.0.0.1:0",
            ])
            .env("DATABASE_URL", database_url)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("binary starts");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let (mut http, mut token, mut repo) = (None, None, None);
        while http.is_none() {
            let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
                .await
                .expect("demo block in time")
                .expect("stdout readable")
                .expect("demo block printed");
            let field = |prefix: &str| line.strip_prefix(prefix).map(|v| v.trim().to_owned());
            token = token.or(field("token:"));
            repo = repo.or(field("repoId:"));
            http = field("HTTP:");
        }
        // Keep reading, as a terminal would, so the rest of the block is not cut off.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Process {
            child,
            http: http.expect("http"),
            token: token.expect("token printed"),
            repo: repo.expect("repo printed"),
        }
    }

    fn caller(&self) -> DemoCaller {
        DemoCaller {
            http: self.http.clone(),
            token: self.token.clone(),
            repo: self.repo.clone(),
        }
    }

    async fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().expect("running").to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .expect("kill runs");
        assert!(sent.success());
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("exits in time")
            .expect("exit status")
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
    let caller = first.caller();
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
    assert_eq!(second.caller().create(&client).await, Some(200));
    let status = second.terminate().await;
    assert!(status.success(), "SIGTERM exits 0, got {status:?}");
    drop(db);
}

on_both_backends!(database_outage, killed_under_load);
