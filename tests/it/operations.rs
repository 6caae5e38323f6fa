//! What operators rely on: metrics, request log lines, the OpenAPI document,
//! TLS on both listeners, request timeouts, and the command line's settings.

use std::sync::Arc;
use std::time::{Duration, Instant};

use conversation_service::pb::CreateConversationRequest;
use conversation_service::pb::conversation_service_client::ConversationServiceClient;
use conversation_service::server::Config;
use conversation_service::store::Backend;
use diesel_async::SimpleAsyncConnection;
use serde_json::{Value, json};

use crate::harness::{Process, TestApp, TestDb, World, as_actor};
use crate::on_both_backends;

/// The value of one sample line (`name{labels} value`) in a scrape.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        line.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}

async fn scrape(app: &TestApp, base: &str) -> String {
    let res = app
        .http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("scrape");
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    res.text().await.expect("text")
}

/// Requests by transport, method and code; latency histograms; the pool;
/// conversations created; SQLite's writer. Unknown routes are one label, not
/// one per path.
async fn metrics(db: TestDb) {
    let on_sqlite = db.backend == Backend::Sqlite;
    let app = TestApp::spawn(db).await;
    let w = World::build(&app).await;
    let body = json!({ "repoId": w.repo }).to_string();
    assert_eq!(app.post_create(Some(&w.reader.token), &body).await.0, 200);
    assert_eq!(app.post_create(Some(&w.reader.token), &body).await.0, 200);
    assert_eq!(app.post_create(None, &body).await.0, 401);
    app.create_as(&w.writer, w.repo).await;
    let refused = app
        .grpc()
        .await
        .create_conversation(CreateConversationRequest {
            repo_id: w.repo.to_string(),
        })
        .await
        .expect_err("no token");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    for path in ["/nope", "/also/nope", "/wp-admin.php"] {
        let res = app
            .http
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .expect("get");
        assert_eq!(res.status(), 404);
    }

    // Background work (the health watcher's ping, a token's last-use stamp)
    // may hold the pool's connections for a moment: scrape once it has let
    // them go (within 2 s), so the pool figures below are not a race.
    let mut text = scrape(&app, &app.base).await;
    for _ in 0..40 {
        let idle = sample(
            &text,
            r#"conversation_service_db_pool_connections{state="idle"}"#,
        );
        if idle.is_some_and(|n| n >= 1.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        text = scrape(&app, &app.base).await;
    }
    let count =
        |series: &str| sample(&text, series).unwrap_or_else(|| panic!("{series} in\n{text}"));
    let create = "/flashback.conversation.v1.ConversationService/CreateConversation";
    assert_eq!(
        count(
            r#"conversation_service_requests_total{transport="http",method="POST /conversation",code="200"}"#
        ),
        2.0
    );
    assert_eq!(
        count(
            r#"conversation_service_requests_total{transport="http",method="POST /conversation",code="401"}"#
        ),
        1.0
    );
    assert_eq!(
        count(&format!(
            r#"conversation_service_requests_total{{transport="grpc",method="{create}",code="OK"}}"#
        )),
        1.0
    );
    assert_eq!(
        count(&format!(
            r#"conversation_service_requests_total{{transport="grpc",method="{create}",code="UNAUTHENTICATED"}}"#
        )),
        1.0
    );
    assert_eq!(
        count(r#"conversation_service_requests_total{transport="http",method="other",code="404"}"#),
        3.0
    );
    assert!(!text.contains("wp-admin"), "paths are not labels");
    assert_eq!(
        count("conversation_service_conversations_created_total"),
        3.0
    );
    assert_eq!(
        count(
            r#"conversation_service_request_duration_seconds_count{transport="http",method="POST /conversation"}"#
        ),
        3.0
    );
    assert_eq!(
        count(
            r#"conversation_service_request_duration_seconds_bucket{le="+Inf",transport="http",method="POST /conversation"}"#
        ),
        3.0
    );
    assert!(count(r#"conversation_service_db_pool_connections{state="idle"}"#) >= 1.0);
    // Two background tasks may each hold a connection for a moment (the
    // health watcher's ping, the token's last-use stamp): present, small.
    assert!(count(r#"conversation_service_db_pool_connections{state="in_use"}"#) <= 2.0);
    assert_eq!(count("conversation_service_db_pool_waiting"), 0.0);
    assert!(count("conversation_service_db_pool_max") >= 1.0);
    let (jobs, commits) = (
        count("conversation_service_sqlite_writer_jobs_total"),
        count("conversation_service_sqlite_writer_commits_total"),
    );
    if on_sqlite {
        // The three creates at least, one after another.
        assert!(jobs >= 3.0, "{jobs}");
        assert!(
            (1.0..=jobs).contains(&commits),
            "{commits} commits of {jobs}"
        );
    } else {
        assert_eq!((jobs, commits), (0.0, 0.0), "no writer thread");
    }
    assert!(text.ends_with("# EOF\n"));
    // The checkpointer's thread copies those commits into the database file
    // within a tenth of a second.
    let checkpoints = "conversation_service_sqlite_writer_checkpoints_total";
    let mut made = sample(&text, checkpoints).unwrap_or_else(|| panic!("{checkpoints}"));
    for _ in 0..100 {
        if made >= 1.0 || !on_sqlite {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        made = sample(&scrape(&app, &app.base).await, checkpoints).expect("checkpoints");
    }
    assert_eq!(made >= 1.0, on_sqlite, "{made} checkpoints");
    app.shutdown().await;
}

on_both_backends!(metrics);

/// `--metrics-addr`: the metrics move to a listener of their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_on_their_own_address() {
    let config = Config {
        metrics_addr: Some("127.0.0.1:0".parse().expect("addr")),
        ..Config::local()
    };
    let app = TestApp::spawn_config(TestDb::sqlite(), config).await;
    let own = format!(
        "http://{}",
        app.running().metrics_addr.expect("metrics addr")
    );
    let text = scrape(&app, &own).await;
    assert!(text.contains("conversation_service_db_pool_max"));
    let res = app
        .http
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .expect("get");
    assert_eq!(res.status(), 404, "not on the API port");
    app.shutdown().await;
}

/// One JSON log line per request on both transports, with method, code,
/// latency and the caller's request id; and no secret in the logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_request_logs() {
    let db = TestDb::sqlite();
    let secret = "jwt-secret-that-must-never-be-printed-0123456789";
    let process = Process::start_with(
        &db.url,
        &["--log-format", "json"],
        &[("RUST_LOG", "debug"), ("JWT_SECRET", secret)],
    )
    .await;
    let client = reqwest::Client::new();
    let res = client
        .post(format!("{}/conversation", process.http))
        .header("authorization", format!("Bearer {}", process.token))
        .header("content-type", "application/json")
        .header("x-request-id", "rest-log-1")
        .body(json!({ "repoId": process.repo }).to_string())
        .send()
        .await
        .expect("create");
    assert_eq!(res.status(), 200);
    let mut grpc = ConversationServiceClient::connect(format!("http://{}", process.grpc))
        .await
        .expect("connect");
    let mut request = tonic::Request::new(CreateConversationRequest {
        repo_id: "not-a-uuid".into(),
    });
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", process.token).parse().expect("ascii"),
    );
    request
        .metadata_mut()
        .insert("x-request-id", "grpc-log-1".parse().expect("ascii"));
    let status = grpc
        .create_conversation(request)
        .await
        .expect_err("invalid");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);

    let find = async |id: &str| -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let lines = process.logs();
            if let Some(line) = lines.iter().find_map(|l| {
                serde_json::from_str::<Value>(l)
                    .ok()
                    .filter(|v| v["target"] == "request" && v["request_id"] == id)
            }) {
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "no request line for {id} in {lines:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let rest = find("rest-log-1").await;
    assert_eq!(rest["level"], "INFO");
    assert_eq!(rest["transport"], "http");
    assert_eq!(rest["method"], "POST /conversation");
    assert_eq!(rest["code"], "200");
    assert_eq!(rest["path"], "/conversation");
    assert!(rest["latency_ms"].as_f64().expect("latency") > 0.0);
    assert!(rest["timestamp"].is_string());
    let grpc_line = find("grpc-log-1").await;
    assert_eq!(grpc_line["transport"], "grpc");
    assert_eq!(
        grpc_line["method"],
        "/flashback.conversation.v1.ConversationService/CreateConversation"
    );
    assert_eq!(grpc_line["code"], "INVALID_ARGUMENT");
    // A JWT signed with another secret: refused, the reason logged at debug.
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({ "sub": uuid::Uuid::now_v7(), "exp": chrono::Utc::now().timestamp() + 60 }),
        &jsonwebtoken::EncodingKey::from_secret(b"not-the-secret-not-the-secret-0123456789"),
    )
    .expect("signs");
    let refused = client
        .get(format!("{}/conversation", process.http))
        .header("authorization", format!("Bearer {forged}"))
        .header("x-request-id", "jwt-log-1")
        .send()
        .await
        .expect("answered");
    assert_eq!(refused.status(), 401);
    assert_eq!(find("jwt-log-1").await["code"], "401");
    let logs = process.logs().join("\n");
    assert!(
        logs.contains("JWT refused"),
        "the refusal's reason is logged at debug"
    );
    assert!(!logs.contains(secret), "the JWT secret is not logged");
    assert!(!logs.contains(&process.token), "tokens are not logged");
    let status = process.terminate().await;
    assert!(status.success());
}

/// `--help` lists every setting with its environment variable and default,
/// and hides the values of secret ones even when they are set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_lists_every_setting_and_hides_secrets() {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_conversation-service"))
        .args(["serve", "--help"])
        .env("JWT_SECRET", "do-not-show-this-secret-anywhere-0123456789")
        .env(
            "DATABASE_URL",
            "postgres://app:hunter2@db.internal/conversations",
        )
        .output()
        .await
        .expect("runs");
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).expect("utf-8");
    for (flag, env) in [
        ("--database-url", "DATABASE_URL"),
        ("--database-pool-size", "DATABASE_POOL_SIZE"),
        ("--database-acquire-timeout", "DATABASE_ACQUIRE_TIMEOUT"),
        ("--log-format", "LOG_FORMAT"),
        ("--log", "RUST_LOG"),
        ("--http-addr", "HTTP_ADDR"),
        ("--grpc-addr", "GRPC_ADDR"),
        ("--metrics-addr", "METRICS_ADDR"),
        ("--tls-cert", "TLS_CERT"),
        ("--tls-key", "TLS_KEY"),
        ("--request-timeout", "REQUEST_TIMEOUT"),
        ("--shutdown-delay", "SHUTDOWN_DELAY"),
        ("--shutdown-grace", "SHUTDOWN_GRACE"),
        ("--jwt-secret", "JWT_SECRET"),
        ("--jwt-public-key", "JWT_PUBLIC_KEY"),
        ("--jwt-jwks", "JWT_JWKS"),
        ("--jwt-algorithms", "JWT_ALGORITHMS"),
        ("--jwt-issuer", "JWT_ISSUER"),
        ("--jwt-audience", "JWT_AUDIENCE"),
        ("--jwt-leeway", "JWT_LEEWAY"),
        ("--demo", "DEMO"),
    ] {
        assert!(
            help.contains(&format!("{flag} <"))
                || help.contains(&format!("{flag}\n"))
                || help.contains(&format!("{flag} ")),
            "{flag} in\n{help}"
        );
        assert!(help.contains(&format!("[env: {env}")), "{env} in\n{help}");
    }
    for default in [
        "127.0.0.1:8080",
        "127.0.0.1:50051",
        "[default: 15s]",
        "[default: 30s]",
        "[default: 1s]",
        "[default: text]",
    ] {
        assert!(help.contains(default), "{default} in\n{help}");
    }
    assert!(!help.contains("do-not-show-this-secret"), "secret hidden");
    assert!(!help.contains("hunter2"), "database password hidden");
}

/// A request that outlives `--request-timeout` gets 504 / DEADLINE_EXCEEDED,
/// not an endless wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_time_out() {
    let config = Config {
        request_timeout: Duration::from_millis(400),
        ..Config::local()
    };
    let app = TestApp::spawn_config(TestDb::sqlite(), config).await;
    let w = World::build(&app).await;
    let mut lock = crate::harness::sqlite_conn(&app.db).await;
    lock.batch_execute("BEGIN EXCLUSIVE").await.expect("lock");
    let started = Instant::now();
    let (status, body) = app
        .post_create(
            Some(&w.reader.token),
            &json!({ "repoId": w.repo }).to_string(),
        )
        .await;
    assert_eq!(
        (status, body),
        (
            504,
            json!({ "success": false, "message": "Request timed out" })
        )
    );
    let refused = app
        .grpc()
        .await
        .create_conversation(crate::harness::create_request(&w.reader, w.repo))
        .await
        .expect_err("times out");
    assert_eq!(refused.code(), tonic::Code::DeadlineExceeded);
    assert_eq!(refused.message(), "Request timed out");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "answered promptly"
    );
    lock.batch_execute("ROLLBACK").await.expect("unlock");
    app.shutdown().await;
}

/// gRPC messages have the REST body limit: a larger one is refused unread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_messages_are_limited() {
    let app = TestApp::spawn(TestDb::sqlite()).await;
    let w = World::build(&app).await;
    let huge = CreateConversationRequest {
        repo_id: "x".repeat(conversation_service::protocol::BODY_LIMIT + 1),
    };
    let refused = app
        .grpc()
        .await
        .create_conversation(as_actor(huge, &w.reader))
        .await
        .expect_err("too large");
    assert_eq!(refused.code(), tonic::Code::OutOfRange, "{refused:?}");
    assert_eq!(app.count("conversations").await, 0);
    app.create_as(&w.reader, w.repo).await;
    app.shutdown().await;
}

/// A self-signed certificate for localhost, written as PEM files.
fn self_signed(dir: &std::path::Path) -> (conversation_service::tls::TlsFiles, Vec<u8>) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
    let files = conversation_service::tls::TlsFiles {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    std::fs::write(&files.cert, ck.cert.pem()).expect("write");
    std::fs::write(&files.key, ck.signing_key.serialize_pem()).expect("write");
    (files, ck.cert.der().to_vec())
}

/// With `--tls-cert` and `--tls-key`, both listeners speak TLS only: REST
/// over HTTPS (HTTP/1.1 and HTTP/2 by ALPN) and gRPC over TLS.
async fn tls_on_both_listeners(db: TestDb) {
    use tokio_rustls::rustls::{ClientConfig, RootCertStore, pki_types::CertificateDer};
    let dir = tempfile::tempdir().expect("dir");
    let (files, der) = self_signed(dir.path());
    let config = Config {
        tls: Some(files),
        ..Config::local()
    };
    let mut app = TestApp::spawn_config(db, config).await;
    assert!(app.base.starts_with("https://"));
    app.http = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_der(&der).expect("cert"))
        .build()
        .expect("client");
    let port = app.running().http_addr.port();
    app.base = format!("https://localhost:{port}");
    let w = World::build(&app).await;
    let (status, body) = app
        .post_create(
            Some(&w.reader.token),
            &json!({ "repoId": w.repo }).to_string(),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .await;
    assert!(
        plain.is_err() || plain.is_ok_and(|r| !r.status().is_success()),
        "no plaintext"
    );

    // gRPC over TLS, ALPN h2, trusting only our certificate.
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from(der)).expect("root");
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut client_config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    client_config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));
    let grpc_addr = app.grpc_addr;
    let channel = tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_| {
            let connector = connector.clone();
            async move {
                let tcp = tokio::net::TcpStream::connect(grpc_addr).await?;
                let name = tokio_rustls::rustls::pki_types::ServerName::try_from("localhost")
                    .expect("name");
                let tls = connector.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
            }
        }))
        .await
        .expect("TLS channel");
    let reply = ConversationServiceClient::new(channel)
        .create_conversation(crate::harness::create_request(&w.reader, w.repo))
        .await
        .expect("created over TLS");
    assert!(!reply.into_inner().conversation_id.is_empty());
    let plain = ConversationServiceClient::connect(format!("http://{grpc_addr}")).await;
    let refused = match plain {
        Err(_) => true,
        Ok(mut c) => c
            .create_conversation(crate::harness::create_request(&w.reader, w.repo))
            .await
            .is_err(),
    };
    assert!(refused, "no plaintext gRPC");
    assert_eq!(app.count("conversations").await, 2);
    app.shutdown().await;
}

on_both_backends!(tls_on_both_listeners);

/// A bad TLS setup stops the start with a reason, before anything listens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tls_files_are_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let (files, _) = self_signed(dir.path());
    let swapped = conversation_service::tls::TlsFiles {
        cert: files.key.clone(),
        key: files.cert.clone(),
    };
    let missing = conversation_service::tls::TlsFiles {
        cert: dir.path().join("nope.pem"),
        key: files.key,
    };
    let db = TestDb::sqlite();
    for (files, expected) in [
        (swapped, "cannot read a PEM certificate"),
        (missing, "nope.pem"),
    ] {
        let store =
            conversation_service::store::Store::open(&db.url, &crate::harness::test_options())
                .expect("store");
        let error = conversation_service::server::start(
            store,
            Config {
                tls: Some(files),
                ..Config::local()
            },
        )
        .await
        .err()
        .expect("refused")
        .to_string();
        assert!(
            error.contains(expected),
            "{error:?} should say {expected:?}"
        );
    }
}
