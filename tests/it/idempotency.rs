//! Idempotency keys on CreateConversation: retries replay the first reply,
//! even when they race each other across replicas; a key reused for another
//! request is 409; keys are the caller's own and expire; failures are not
//! remembered.

use std::time::Duration;

use conversation_service::pb::{CreateConversationRequest, CreateConversationResponse};
use conversation_service::server::{self, Config};
use conversation_service::store::Store;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::harness::{Actor, TestApp, TestDb, World, as_actor, test_options};
use crate::on_both_backends;

const REUSED: &str = "Idempotency-Key was already used for a different request";

/// POST /conversation with an Idempotency-Key.
async fn rest(app: &TestApp, base: &str, who: &Actor, key: &str, repo: Uuid) -> (u16, Value) {
    let res = app
        .http
        .post(format!("{base}/conversation"))
        .header("authorization", format!("Bearer {}", who.token))
        .header("content-type", "application/json")
        .header("idempotency-key", key)
        .body(json!({ "repoId": repo }).to_string())
        .send()
        .await
        .expect("request");
    (res.status().as_u16(), res.json().await.expect("json"))
}

/// CreateConversation with `idempotency-key` metadata.
async fn grpc(
    app: &TestApp,
    who: &Actor,
    key: &str,
    repo: Uuid,
) -> Result<CreateConversationResponse, tonic::Status> {
    let mut request = as_actor(
        CreateConversationRequest {
            repo_id: repo.to_string(),
        },
        who,
    );
    request
        .metadata_mut()
        .insert("idempotency-key", key.parse().expect("ascii"));
    app.grpc()
        .await
        .create_conversation(request)
        .await
        .map(tonic::Response::into_inner)
}

async fn replays_and_refusals(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let w = World::build(&app).await;
    let base = app.base.clone();

    // REST: the retry gets the same id; one conversation, one event.
    let (status, first) = rest(&app, &base, &w.reader, "order-1", w.repo).await;
    assert_eq!(status, 200, "{first}");
    let (status, again) = rest(&app, &base, &w.reader, "order-1", w.repo).await;
    assert_eq!((status, &again), (200, &first));
    assert_eq!(app.count("conversations").await, 1);
    assert_eq!(app.count("system_events").await, 1);

    // gRPC: the whole reply is replayed, byte for byte the same message; and
    // the key is the caller's whichever transport sent it.
    let reply = grpc(&app, &w.reader, "order-2", w.repo)
        .await
        .expect("created");
    let retry = grpc(&app, &w.reader, "order-2", w.repo)
        .await
        .expect("replayed");
    assert_eq!(retry, reply);
    let over_grpc = grpc(&app, &w.reader, "order-1", w.repo)
        .await
        .expect("replayed");
    assert_eq!(json!(over_grpc.conversation_id), first["conversationId"]);
    assert_eq!(app.count("conversations").await, 2);

    // The same key for another request: 409 / ALREADY_EXISTS, nothing written.
    let (status, body) = rest(&app, &base, &w.reader, "order-1", w.orphan_repo).await;
    assert_eq!(
        (status, body),
        (409, json!({ "success": false, "message": REUSED }))
    );
    let refused = grpc(&app, &w.reader, "order-2", w.disabled_repo)
        .await
        .expect_err("reused");
    assert_eq!(
        (refused.code(), refused.message()),
        (tonic::Code::AlreadyExists, REUSED)
    );

    // Keys are per caller: another user's "order-1" is theirs.
    let (status, theirs) = rest(&app, &base, &w.writer, "order-1", w.repo).await;
    assert_eq!(status, 200);
    assert_ne!(theirs["conversationId"], first["conversationId"]);

    // Failures are not remembered: a refused create leaves the key free.
    let (status, _) = rest(&app, &base, &w.reader, "order-3", w.other_org_repo).await;
    assert_eq!(status, 404);
    let (status, _) = rest(&app, &base, &w.reader, "order-3", w.disabled_repo).await;
    assert_eq!(status, 400);
    let (status, _) = rest(&app, &base, &w.reader, "order-3", w.repo).await;
    assert_eq!(status, 200);
    assert_eq!(app.count("conversations").await, 4);

    // A malformed key is a 400, after authentication.
    for bad in [
        "x".repeat(256),
        "has space".to_owned(),
        "tab\tbed".to_owned(),
    ] {
        let Ok(value) = reqwest::header::HeaderValue::from_str(&bad) else {
            continue;
        };
        for token in [Some(&w.reader.token), None] {
            let mut req = app
                .http
                .post(format!("{base}/conversation"))
                .header("content-type", "application/json")
                .header("idempotency-key", value.clone())
                .body(json!({ "repoId": w.repo }).to_string());
            if let Some(t) = token {
                req = req.header("authorization", format!("Bearer {t}"));
            }
            let res = req.send().await.expect("request");
            let expected = if token.is_some() { 400 } else { 401 };
            assert_eq!(res.status(), expected, "{bad:?}");
        }
    }
    let twice = app
        .http
        .post(format!("{base}/conversation"))
        .header("authorization", format!("Bearer {}", w.reader.token))
        .header("content-type", "application/json")
        .header("idempotency-key", "a")
        .header("idempotency-key", "b")
        .body(json!({ "repoId": w.repo }).to_string())
        .send()
        .await
        .expect("request");
    assert_eq!(twice.status(), 400);
    let body: Value = twice.json().await.expect("json");
    assert_eq!(body["message"], "Idempotency-Key must be given once");
    assert_eq!(app.count("conversations").await, 4);
    assert_eq!(app.conversations_without_event().await, 0);
    app.shutdown().await;
}

/// Forty retries of one key at once, half on a second replica sharing the
/// database, half over gRPC: one conversation, forty identical answers.
async fn racing_retries_across_replicas(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let w = World::build(&app).await;
    let replica_store = Store::open(&app.db.url, &test_options()).expect("store");
    let replica = server::start(replica_store, Config::local())
        .await
        .expect("replica");
    let replica_base = format!("http://{}", replica.http_addr);
    let app = std::sync::Arc::new(app);
    let mut racers = tokio::task::JoinSet::new();
    for i in 0..40 {
        let (app, base, reader, repo) = (
            app.clone(),
            if i % 2 == 0 {
                app.base.clone()
            } else {
                replica_base.clone()
            },
            w.reader.clone(),
            w.repo,
        );
        racers.spawn(async move {
            if i % 4 == 1 {
                let reply = grpc(&app, &reader, "same-key", repo)
                    .await
                    .expect("created or replayed");
                reply.conversation_id
            } else {
                let (status, body) = rest(&app, &base, &reader, "same-key", repo).await;
                assert_eq!(status, 200, "{body}");
                body["conversationId"].as_str().expect("id").to_owned()
            }
        });
    }
    let mut ids = Vec::new();
    while let Some(id) = racers.join_next().await {
        ids.push(id.expect("racer"));
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 1, "one conversation id for every racer: {ids:?}");
    assert_eq!(app.count("conversations").await, 1);
    assert_eq!(app.count("system_events").await, 1);
    replica.shutdown().await.expect("replica stops");
    let app = std::sync::Arc::into_inner(app).expect("last handle");
    app.shutdown().await;
}

/// A key expires after the configured time, and can then be used again.
async fn keys_expire(db: TestDb) {
    let config = Config {
        idempotency_ttl: Duration::from_secs(1),
        ..Config::local()
    };
    let app = TestApp::spawn_config(db, config).await;
    let w = World::build(&app).await;
    let base = app.base.clone();
    let (_, first) = rest(&app, &base, &w.reader, "short-lived", w.repo).await;
    let (status, _) = rest(&app, &base, &w.reader, "short-lived", w.disabled_repo).await;
    assert_eq!(status, 409, "still live");
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let (status, second) = rest(&app, &base, &w.reader, "short-lived", w.repo).await;
    assert_eq!(status, 200);
    assert_ne!(
        second["conversationId"], first["conversationId"],
        "a new create"
    );
    // The sweeper deletes expired keys by itself (it runs every second here).
    let since_ever = chrono::DateTime::UNIX_EPOCH;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while app
        .store
        .find_idempotency_key(w.reader.id, "short-lived".into(), since_ever)
        .await
        .expect("lookup")
        .is_some()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the sweeper deleted the expired key"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    app.shutdown().await;
}

on_both_backends!(
    replays_and_refusals,
    racing_retries_across_replicas,
    keys_expire
);
