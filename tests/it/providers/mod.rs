//! Model provider configurations (`/ai/llm`, `flashback.ai.v1.ProviderService`):
//! who may see and manage them, secrets sealed at rest and never shown, the
//! private-address guard, attachments, refusals that store nothing; on both
//! transports and both backends.

use conversation_service::pb::ai::provider_service_client::ProviderServiceClient;
use conversation_service::pb::ai::{
    AttachRepositoryRequest, CreateProviderRequest, DeleteProviderRequest, DetachRepositoryRequest,
    ListProvidersRequest, UpdateProviderRequest,
};
use serde_json::{Value, json};
use tonic::Code;
use uuid::Uuid;

use crate::harness::{Actor, TestApp, TestDb, World, as_actor};
use crate::on_both_backends;

/// The API key the tests store; it must appear nowhere but in the provider's requests.
const SECRET: &str = "sk-provider-secret-7f3a9c";
/// An access key.
const ACCESS_KEY: &str = "AKIA-access-key-51d2";

/// A REST call as `who` with an optional JSON body.
async fn rest(
    app: &TestApp,
    who: &Actor,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = app
        .http
        .request(method, format!("{}{path}", app.base))
        .header("authorization", format!("Bearer {}", who.token));
    if let Some(body) = body {
        req = req.json(&body);
    }
    let res = req.send().await.expect("request");
    let status = res.status().as_u16();
    let text = res.text().await.expect("body");
    assert!(!text.contains(SECRET), "a reply carried the secret: {text}");
    (status, serde_json::from_str(&text).expect("JSON"))
}

async fn grpc(app: &TestApp) -> ProviderServiceClient<tonic::transport::Channel> {
    ProviderServiceClient::new(app.channel().await)
}

fn create_body(w: &World, name: &str, ai_type: &str) -> Value {
    json!({
        "name": name,
        "aiType": ai_type,
        "endpoint": "https://api.example.test/v1",
        "secret": SECRET,
        "workspaceId": w.workspace,
    })
}

/// How many configurations and `aillm` events are stored.
async fn stored(app: &TestApp) -> (i64, i64) {
    use conversation_service::store::schema::{ai_llms, system_events};
    use conversation_service::with_conn;
    use diesel::prelude::*;
    use diesel_async::RunQueryDsl;
    let mut conn = app.store.conn().await.expect("conn");
    let configs = with_conn!(&mut conn, |c| ai_llms::table
        .count()
        .get_result::<i64>(c)
        .await)
    .expect("count");
    let events = with_conn!(&mut conn, |c| system_events::table
        .filter(system_events::context.eq("aillm"))
        .count()
        .get_result::<i64>(c)
        .await)
    .expect("count");
    (configs, events)
}

/// The secret is nowhere in the database: not in any column (PostgreSQL)
/// and not in the file or its WAL (SQLite).
async fn secret_not_stored(app: &TestApp) {
    use conversation_service::store::schema::ai_llms;
    use conversation_service::with_conn;
    use diesel::prelude::*;
    use diesel_async::RunQueryDsl;
    let mut conn = app.store.conn().await.expect("conn");
    let sealed: Vec<(Vec<u8>, Option<Vec<u8>>, String)> = with_conn!(&mut conn, |c| {
        ai_llms::table
            .select((
                ai_llms::secret_sealed,
                ai_llms::key_sealed,
                ai_llms::endpoint,
            ))
            .load(c)
            .await
    })
    .expect("rows");
    assert!(!sealed.is_empty());
    let contains =
        |hay: &[u8], needle: &str| hay.windows(needle.len()).any(|w| w == needle.as_bytes());
    for (secret, key, _) in &sealed {
        assert!(!contains(secret, SECRET) && !contains(secret, ACCESS_KEY));
        if let Some(key) = key {
            assert!(!contains(key, ACCESS_KEY));
        }
    }
    if let Some(path) = app.store.sqlite_path() {
        for file in [path.to_path_buf(), path.with_extension("db-wal")] {
            if let Ok(bytes) = std::fs::read(&file) {
                assert!(
                    !contains(&bytes, SECRET),
                    "{} holds the secret",
                    file.display()
                );
                assert!(
                    !contains(&bytes, ACCESS_KEY),
                    "{} holds the key",
                    file.display()
                );
            }
        }
    }
}

/// A workspace administrator (REST) and an organization administrator
/// (gRPC) connect providers; members list them without secrets; attach and
/// detach on both transports; every change has its event.
async fn admins_connect_and_attach(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let w = World::build(&app).await;
    let (status, body) = rest(
        &app,
        &w.ws_admin,
        reqwest::Method::POST,
        "/ai/llm",
        Some(create_body(&w, "OpenAI prod", "OPENAI")),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let openai: Uuid = body["aiLlmId"].as_str().expect("id").parse().expect("uuid");
    let created = grpc(&app)
        .await
        .create_provider(as_actor(
            CreateProviderRequest {
                workspace_id: w.workspace.to_string(),
                name: "Claude".into(),
                ai_type: "ANTHROPIC".into(),
                endpoint: "https://api.anthropic.test".into(),
                key: Some(ACCESS_KEY.into()),
                secret: SECRET.into(),
            },
            &w.org_admin,
        ))
        .await
        .expect("created over gRPC")
        .into_inner();
    let claude: Uuid = created.ai_llm_id.parse().expect("uuid");

    // Attach: REST by the workspace admin, gRPC by the org admin.
    let (status, body) = rest(
        &app,
        &w.ws_admin,
        reqwest::Method::POST,
        &format!("/ai/llm/{openai}/repos"),
        Some(json!({ "repoId": w.repo })),
    )
    .await;
    assert_eq!((status, body), (200, json!({ "success": true })));
    grpc(&app)
        .await
        .attach_repository(as_actor(
            AttachRepositoryRequest {
                id: claude.to_string(),
                repo_id: w.repo.to_string(),
            },
            &w.org_admin,
        ))
        .await
        .expect("attached over gRPC");

    // A reader lists them: names, kinds, masked key, repos; never secrets.
    let (status, body) = rest(
        &app,
        &w.reader,
        reqwest::Method::GET,
        &format!("/ai/llm?workspaceId={}", w.workspace),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let list = body["aiLlms"].as_array().expect("list");
    let names: Vec<&str> = list
        .iter()
        .map(|c| c["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["Claude", "OpenAI prod"], "by name");
    assert_eq!(list[0]["aiType"], "ANTHROPIC");
    assert_eq!(list[0]["key"], "********", "the access key is masked");
    assert_eq!(list[1]["key"], Value::Null);
    assert_eq!(list[1]["endpoint"], "https://api.example.test/v1");
    assert_eq!(list[1]["userId"], w.ws_admin.id.to_string());
    assert_eq!(list[1]["repos"][0]["id"], w.repo.to_string());
    assert_eq!(list[1]["repos"][0]["name"], "app");
    assert!(list[1].get("secret").is_none());
    let over_grpc = grpc(&app)
        .await
        .list_providers(as_actor(ListProvidersRequest::default(), &w.writer))
        .await
        .expect("listed")
        .into_inner()
        .providers;
    assert_eq!(over_grpc.len(), 2);
    assert!(over_grpc[0].has_key && !over_grpc[1].has_key);
    assert_eq!(over_grpc[0].repos[0].id, w.repo.to_string());

    // Detach over gRPC, then REST shows no repository.
    grpc(&app)
        .await
        .detach_repository(as_actor(
            DetachRepositoryRequest {
                id: claude.to_string(),
                repo_id: w.repo.to_string(),
            },
            &w.ws_admin,
        ))
        .await
        .expect("detached");
    let (_, body) = rest(&app, &w.reader, reqwest::Method::GET, "/ai/llm", None).await;
    assert_eq!(body["aiLlms"][0]["repos"], json!([]));

    // Update the name over REST and the secret over gRPC.
    let (status, _) = rest(
        &app,
        &w.ws_admin,
        reqwest::Method::PUT,
        &format!("/ai/llm/{openai}"),
        Some(json!({ "name": "OpenAI" })),
    )
    .await;
    assert_eq!(status, 200);
    grpc(&app)
        .await
        .update_provider(as_actor(
            UpdateProviderRequest {
                id: claude.to_string(),
                secret: Some(format!("{SECRET}-2")),
                ..Default::default()
            },
            &w.ws_admin,
        ))
        .await
        .expect("updated");
    secret_not_stored(&app).await;
    // created 2, attached 2, detached 1, updated 2
    assert_eq!(stored(&app).await, (2, 7));
    app.shutdown().await;
}

/// Members with READ or WRITE see but cannot manage; anyone else sees
/// nothing and gets 404 for a configuration.
async fn who_may(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let w = World::build(&app).await;
    let (_, body) = rest(
        &app,
        &w.ws_admin,
        reqwest::Method::POST,
        "/ai/llm",
        Some(create_body(&w, "Main", "OTHER")),
    )
    .await;
    let id = body["aiLlmId"].as_str().expect("id").to_owned();

    for reader in [&w.reader, &w.writer] {
        let (status, body) = rest(
            &app,
            reader,
            reqwest::Method::POST,
            "/ai/llm",
            Some(create_body(&w, "Mine", "OPENAI")),
        )
        .await;
        assert_eq!(
            (status, body["message"].as_str()),
            (403, Some("Insufficient permissions for this workspace"))
        );
        let (status, _) = rest(
            &app,
            reader,
            reqwest::Method::PUT,
            &format!("/ai/llm/{id}"),
            Some(json!({ "name": "x" })),
        )
        .await;
        assert_eq!(status, 403);
        let (status, _) = rest(
            &app,
            reader,
            reqwest::Method::DELETE,
            &format!("/ai/llm/{id}"),
            None,
        )
        .await;
        assert_eq!(status, 403);
    }
    for stranger in [&w.outsider, &w.other_org_user] {
        let (status, body) = rest(&app, stranger, reqwest::Method::GET, "/ai/llm", None).await;
        assert_eq!((status, body["aiLlms"].clone()), (200, json!([])));
        let (status, body) = rest(
            &app,
            stranger,
            reqwest::Method::GET,
            &format!("/ai/llm?workspaceId={}", w.workspace),
            None,
        )
        .await;
        assert_eq!(
            (status, body["aiLlms"].clone()),
            (200, json!([])),
            "an unreachable workspace is empty"
        );
        let (status, body) = rest(
            &app,
            stranger,
            reqwest::Method::PUT,
            &format!("/ai/llm/{id}"),
            Some(json!({ "name": "x" })),
        )
        .await;
        assert_eq!(
            (status, body["message"].as_str()),
            (404, Some("AI configuration not found"))
        );
        let (status, _) = rest(
            &app,
            stranger,
            reqwest::Method::POST,
            "/ai/llm",
            Some(create_body(&w, "Theirs", "OPENAI")),
        )
        .await;
        assert_eq!(status, 404, "another workspace is not found");
        let denied = grpc(&app)
            .await
            .delete_provider(as_actor(DeleteProviderRequest { id: id.clone() }, stranger))
            .await
            .expect_err("not theirs");
        assert_eq!(denied.code(), Code::NotFound);
    }
    let unauthenticated = app
        .http
        .get(format!("{}/ai/llm", app.base))
        .send()
        .await
        .expect("get");
    assert_eq!(unauthenticated.status(), 401);
    assert_eq!(stored(&app).await, (1, 1));
    app.shutdown().await;
}

/// Bad input is refused with a clear message, and nothing is stored.
async fn bad_input_stores_nothing(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let w = World::build(&app).await;
    let body = |patch: Value| {
        let mut b = create_body(&w, "Bad", "OPENAI");
        for (k, v) in patch.as_object().expect("object") {
            if v.is_null() {
                b.as_object_mut().expect("object").remove(k);
            } else {
                b[k] = v.clone();
            }
        }
        b
    };
    let cases = [
        (
            json!({ "aiType": "MISTRAL" }),
            400,
            "aiType must be one of OPENAI, GOOGLE, ANTHROPIC, AWS, OTHER",
        ),
        (json!({ "aiType": null }), 400, "aiType is required"),
        (json!({ "secret": null }), 400, "secret is required"),
        (json!({ "secret": "  " }), 400, "secret must not be empty"),
        (json!({ "name": "" }), 400, "name is required"),
        (json!({ "name": 5 }), 400, "name must be a string"),
        (
            json!({ "endpoint": "not a url" }),
            400,
            "endpoint is not a valid URL",
        ),
        (
            json!({ "endpoint": "ftp://example.test" }),
            400,
            "endpoint must be an http or https URL",
        ),
        (
            json!({ "endpoint": "http://127.0.0.1:11434/v1" }),
            400,
            "endpoint reaches a private, loopback, link-local or otherwise internal address",
        ),
        (
            json!({ "endpoint": "http://169.254.169.254/latest" }),
            400,
            "endpoint reaches a private, loopback, link-local or otherwise internal address",
        ),
        (json!({ "endpoint": null }), 400, "endpoint is required"),
        (
            json!({ "workspaceId": "ws-1" }),
            400,
            "workspaceId must be a UUID",
        ),
        (
            json!({ "workspaceId": Uuid::now_v7() }),
            404,
            "Workspace not found",
        ),
    ];
    for (patch, status, message) in cases {
        let (got, reply) = rest(
            &app,
            &w.ws_admin,
            reqwest::Method::POST,
            "/ai/llm",
            Some(body(patch.clone())),
        )
        .await;
        assert_eq!(
            (got, reply["message"].as_str()),
            (status, Some(message)),
            "{patch}"
        );
    }
    let refused = grpc(&app)
        .await
        .create_provider(as_actor(
            CreateProviderRequest {
                workspace_id: w.workspace.to_string(),
                name: "Bad".into(),
                ai_type: "OPENAI".into(),
                endpoint: "http://[::1]:8000".into(),
                key: None,
                secret: SECRET.into(),
            },
            &w.ws_admin,
        ))
        .await
        .expect_err("loopback");
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert_eq!(stored(&app).await, (0, 0));

    // A real one, then its duplicate, attachments and updates that cannot be.
    let (_, created) = rest(
        &app,
        &w.ws_admin,
        reqwest::Method::POST,
        "/ai/llm",
        Some(create_body(&w, "Main", "OPENAI")),
    )
    .await;
    let id = created["aiLlmId"].as_str().expect("id").to_owned();
    let (status, reply) = rest(
        &app,
        &w.ws_admin,
        reqwest::Method::POST,
        "/ai/llm",
        Some(create_body(&w, "Main", "GOOGLE")),
    )
    .await;
    assert_eq!(
        (status, reply["message"].as_str()),
        (
            409,
            Some("An AI configuration with this name already exists in the workspace")
        )
    );
    let path = format!("/ai/llm/{id}/repos");
    let attach = async |repo: Uuid| {
        rest(
            &app,
            &w.ws_admin,
            reqwest::Method::POST,
            &path,
            Some(json!({ "repoId": repo })),
        )
        .await
    };
    let (status, reply) = attach(w.orphan_repo).await;
    assert_eq!(
        (status, reply["message"].as_str()),
        (
            400,
            Some("Repository does not belong to the AI configuration's workspace")
        )
    );
    let (status, _) = attach(w.other_org_repo).await;
    assert_eq!(
        status, 404,
        "another organization's repository is not found"
    );
    let (status, _) = attach(Uuid::now_v7()).await;
    assert_eq!(status, 404);
    let (status, reply) = rest(
        &app,
        &w.ws_admin,
        reqwest::Method::PUT,
        &format!("/ai/llm/{id}"),
        Some(json!({})),
    )
    .await;
    assert_eq!(
        (status, reply["message"].as_str()),
        (
            400,
            Some("Nothing to update: give name, aiType, endpoint, key or secret")
        )
    );
    let (status, _) = rest(
        &app,
        &w.ws_admin,
        reqwest::Method::PUT,
        &format!("/ai/llm/{}", Uuid::now_v7()),
        Some(json!({ "name": "x" })),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = rest(
        &app,
        &w.ws_admin,
        reqwest::Method::DELETE,
        &format!("/ai/llm/{id}/repos/{}", w.repo),
        None,
    )
    .await;
    assert_eq!(status, 404, "not attached");
    assert_eq!(stored(&app).await, (1, 1));
    app.shutdown().await;
}

/// A configuration in use cannot be deleted; once detached, it can.
async fn in_use_cannot_be_deleted(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let w = World::build(&app).await;
    let (_, created) = rest(
        &app,
        &w.ws_admin,
        reqwest::Method::POST,
        "/ai/llm",
        Some(create_body(&w, "Main", "OPENAI")),
    )
    .await;
    let id = created["aiLlmId"].as_str().expect("id").to_owned();
    let (status, _) = rest(
        &app,
        &w.ws_admin,
        reqwest::Method::POST,
        &format!("/ai/llm/{id}/repos"),
        Some(json!({ "repoId": w.repo })),
    )
    .await;
    assert_eq!(status, 200);
    let (status, reply) = rest(
        &app,
        &w.org_admin,
        reqwest::Method::DELETE,
        &format!("/ai/llm/{id}"),
        None,
    )
    .await;
    assert_eq!(
        (status, reply["message"].as_str()),
        (
            403,
            Some("AI configuration is in use by 1 repository; detach it first")
        )
    );
    let refused = grpc(&app)
        .await
        .delete_provider(as_actor(
            DeleteProviderRequest { id: id.clone() },
            &w.ws_admin,
        ))
        .await
        .expect_err("in use");
    assert_eq!(refused.code(), Code::PermissionDenied);
    let (status, _) = rest(
        &app,
        &w.ws_admin,
        reqwest::Method::DELETE,
        &format!("/ai/llm/{id}/repos/{}", w.repo),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, reply) = rest(
        &app,
        &w.ws_admin,
        reqwest::Method::DELETE,
        &format!("/ai/llm/{id}"),
        None,
    )
    .await;
    assert_eq!((status, reply), (200, json!({ "success": true })));
    let (_, body) = rest(&app, &w.ws_admin, reqwest::Method::GET, "/ai/llm", None).await;
    assert_eq!(body["aiLlms"], json!([]));
    // created, attached, detached, deleted
    assert_eq!(stored(&app).await, (0, 4));
    app.shutdown().await;
}

on_both_backends!(
    admins_connect_and_attach,
    who_may,
    bad_input_stores_nothing,
    in_use_cannot_be_deleted
);

/// On PostgreSQL there is no default key: without one, creating a
/// configuration answers 501, and once configurations exist the service
/// refuses to start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_needs_a_secrets_key_once_configurations_exist() {
    use conversation_service::server::{self, Config};
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let app = TestApp::spawn(db).await;
    let w = World::build(&app).await;
    let (status, _) = rest(
        &app,
        &w.ws_admin,
        reqwest::Method::POST,
        "/ai/llm",
        Some(create_body(&w, "Main", "OPENAI")),
    )
    .await;
    assert_eq!(status, 200, "the harness gives PostgreSQL services a key");
    let store = app.store.clone();
    let db = app.shutdown().await;
    let refused = server::start(store, Config::local())
        .await
        .err()
        .expect("no key, but sealed secrets: refused");
    assert_eq!(
        refused.to_string(),
        "1 AI configuration(s) hold sealed secrets, but no secrets key is configured: give --secrets-key-file or SECRETS_KEY"
    );
    drop(db);

    // With no configuration yet, it starts, and a create says what is missing.
    let db = TestDb::postgres().await.expect("PostgreSQL answered above");
    let store = conversation_service::store::Store::open(&db.url, &crate::harness::test_options())
        .expect("open");
    store.migrate().await.expect("migrate");
    let running = server::start(store.clone(), Config::local())
        .await
        .expect("starts without a key");
    let app = TestApp::spawn(db).await; // for World and the clients
    let w = World::build(&app).await;
    let res = app
        .http
        .post(format!("http://{}/ai/llm", running.http_addr))
        .header("authorization", format!("Bearer {}", w.ws_admin.token))
        .json(&create_body(&w, "Main", "OPENAI"))
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), 501);
    let body: Value = res.json().await.expect("json");
    assert_eq!(
        body["message"],
        "No secrets key is configured on this service (--secrets-key-file or SECRETS_KEY)"
    );
    running.shutdown().await.expect("stops");
    app.shutdown().await;
}

/// What the fake provider saw: each request's path and `authorization`.
type Seen = std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>;

/// An OpenAI-compatible provider on 127.0.0.1 offering `gpt-test`:
/// `GET /v1/models` and `POST /v1/chat/completions` (plain and streamed),
/// answering "routed!".
async fn fake_openai() -> (String, Seen) {
    use axum::http::HeaderMap;
    let seen = Seen::default();
    let record = |seen: Seen, path: &'static str| {
        move |headers: HeaderMap| {
            let auth = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            seen.lock().expect("lock").push((path.to_owned(), auth));
        }
    };
    let models = {
        let record = record(seen.clone(), "models");
        move |headers: HeaderMap| async move {
            record(headers);
            axum::Json(
                json!({ "object": "list", "data": [{ "id": "gpt-test", "object": "model" }] }),
            )
        }
    };
    let chat = {
        let record = record(seen.clone(), "chat");
        move |headers: HeaderMap, axum::Json(body): axum::Json<Value>| async move {
            record(headers);
            use axum::response::IntoResponse as _;
            if body["stream"] == true {
                let events = concat!(
                    "data: {\"id\":\"c1\",\"model\":\"gpt-test\",\"choices\":[{\"delta\":{\"content\":\"routed\"}}]}\n\n",
                    "data: {\"choices\":[{\"delta\":{\"content\":\"!\"},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2}}\n\n",
                    "data: [DONE]\n\n",
                );
                ([("content-type", "text/event-stream")], events).into_response()
            } else {
                axum::Json(json!({
                    "id": "c1",
                    "model": "gpt-test",
                    "choices": [{ "message": { "role": "assistant", "content": "routed!" }, "finish_reason": "stop" }],
                    "usage": { "prompt_tokens": 5, "completion_tokens": 2 },
                }))
                .into_response()
            }
        }
    };
    let app = axum::Router::new()
        .route("/v1/models", axum::routing::get(models))
        .route("/v1/chat/completions", axum::routing::post(chat));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("127.0.0.1:{port}"), seen)
}

/// A prompt's model goes to the repository's configuration that offers it,
/// with the configuration's secret; the stored answer says who answered.
async fn prompts_go_to_the_repository_provider(db: TestDb) {
    use conversation_service::server::Config;
    let (addr, seen) = fake_openai().await;
    let mut config = Config::local();
    config.secrets.provider_allow_private = true;
    let app = TestApp::spawn_config(db, config).await;
    let w = World::build(&app).await;
    let mut body = create_body(&w, "Local", "OTHER");
    body["endpoint"] = json!(format!("http://{addr}/v1"));
    let (status, created) = rest(
        &app,
        &w.ws_admin,
        reqwest::Method::POST,
        "/ai/llm",
        Some(body),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    let llm = created["aiLlmId"].as_str().expect("id").to_owned();
    let conversation = app.create_as(&w.reader, w.repo).await;
    let prompt = |model: &str| json!({ "prompt": "hello", "model": model });
    let path = format!("/conversation/{conversation}/prompt");

    // Not attached yet, no operator provider: refused.
    let (status, reply) = rest(
        &app,
        &w.reader,
        reqwest::Method::POST,
        &path,
        Some(prompt("gpt-test")),
    )
    .await;
    assert_eq!(
        (status, reply["message"].as_str()),
        (400, Some("No AI provider is attached to this repository"))
    );
    let (status, _) = rest(
        &app,
        &w.ws_admin,
        reqwest::Method::POST,
        &format!("/ai/llm/{llm}/repos"),
        Some(json!({ "repoId": w.repo })),
    )
    .await;
    assert_eq!(status, 200);

    // REST, plain.
    let (status, reply) = rest(
        &app,
        &w.reader,
        reqwest::Method::POST,
        &path,
        Some(prompt("gpt-test")),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["message"]["content"], "routed!");
    assert_eq!(reply["message"]["metadata"]["aiLlmId"], llm.as_str());
    assert_eq!(reply["message"]["metadata"]["aiType"], "OTHER");
    assert_eq!(reply["message"]["metadata"]["host"], "127.0.0.1");
    // gRPC, plain.
    let turn = app
        .grpc()
        .await
        .prompt_conversation(as_actor(
            conversation_service::pb::PromptConversationRequest {
                conversation_id: conversation.to_string(),
                prompt: "again".into(),
                model: "gpt-test".into(),
            },
            &w.reader,
        ))
        .await
        .expect("prompted over gRPC")
        .into_inner();
    let assistant = turn.assistant_message.expect("assistant");
    assert_eq!(assistant.content, "routed!");
    assert!(assistant.metadata_json.contains(&llm));
    // REST, streamed.
    let res = app
        .http
        .post(format!("{}{path}", app.base))
        .header("authorization", format!("Bearer {}", w.reader.token))
        .header("accept", "text/event-stream")
        .json(&prompt("gpt-test"))
        .send()
        .await
        .expect("stream");
    let events = res.text().await.expect("events");
    assert!(
        events.contains("event: done") && events.contains("routed!"),
        "{events}"
    );
    // A model it does not offer.
    let (status, reply) = rest(
        &app,
        &w.reader,
        reqwest::Method::POST,
        &path,
        Some(prompt("other")),
    )
    .await;
    assert_eq!(
        (status, reply["message"].as_str()),
        (
            400,
            Some("Model \"other\" is not available for this repository")
        )
    );

    // The provider got the configuration's secret, and only it; the model
    // list was asked once (cached), the completions three times.
    let seen = seen.lock().expect("lock").clone();
    assert!(
        seen.iter()
            .all(|(_, auth)| auth == &format!("Bearer {SECRET}")),
        "{seen:?}"
    );
    let count = |p: &str| seen.iter().filter(|(path, _)| path == p).count();
    assert_eq!((count("models"), count("chat")), (1, 3));
    let (_, messages) = rest(
        &app,
        &w.reader,
        reqwest::Method::GET,
        &format!("/conversation/{conversation}/messages"),
        None,
    )
    .await;
    assert_eq!(messages["total"], 6);
    app.shutdown().await;
}

/// Without `--provider-allow-private`, a configuration whose name resolves
/// to loopback is never called: it offers no model.
async fn private_endpoints_are_not_called(db: TestDb) {
    let (addr, seen) = fake_openai().await;
    let app = TestApp::spawn(db).await;
    let w = World::build(&app).await;
    let port = addr.rsplit(':').next().expect("port");
    let mut body = create_body(&w, "Sneaky", "OPENAI");
    body["endpoint"] = json!(format!("http://localhost:{port}/v1"));
    let (status, created) = rest(
        &app,
        &w.ws_admin,
        reqwest::Method::POST,
        "/ai/llm",
        Some(body),
    )
    .await;
    assert_eq!(
        status, 200,
        "a name is checked when it is called: {created}"
    );
    let llm = created["aiLlmId"].as_str().expect("id").to_owned();
    rest(
        &app,
        &w.ws_admin,
        reqwest::Method::POST,
        &format!("/ai/llm/{llm}/repos"),
        Some(json!({ "repoId": w.repo })),
    )
    .await;
    let conversation = app.create_as(&w.reader, w.repo).await;
    let (status, reply) = rest(
        &app,
        &w.reader,
        reqwest::Method::POST,
        &format!("/conversation/{conversation}/prompt"),
        Some(json!({ "prompt": "hi", "model": "gpt-test" })),
    )
    .await;
    assert_eq!(
        (status, reply["message"].as_str()),
        (
            400,
            Some("Model \"gpt-test\" is not available for this repository")
        )
    );
    assert!(
        seen.lock().expect("lock").is_empty(),
        "nothing reached the loopback server"
    );
    app.shutdown().await;
}

on_both_backends!(
    prompts_go_to_the_repository_provider,
    private_endpoints_are_not_called
);

/// The models a repository may use come from its configurations' providers
/// (one that fails is left out); validating makes a real call and makes a
/// configuration available, until its endpoint or secret changes.
async fn models_validation_and_availability(db: TestDb) {
    use conversation_service::pb::ai::{ListModelsRequest, ValidateProviderRequest};
    use conversation_service::server::Config;
    let (addr, _) = fake_openai().await;
    let mut config = Config::local();
    config.secrets.provider_allow_private = true;
    let app = TestApp::spawn_config(db, config).await;
    let w = World::build(&app).await;
    let mut ids = Vec::new();
    for (name, endpoint) in [
        ("Local", format!("http://{addr}/v1")),
        ("Broken", "http://127.0.0.1:1/v1".to_owned()),
    ] {
        let mut body = create_body(&w, name, "OTHER");
        body["endpoint"] = json!(endpoint);
        let (_, created) = rest(
            &app,
            &w.ws_admin,
            reqwest::Method::POST,
            "/ai/llm",
            Some(body),
        )
        .await;
        let id = created["aiLlmId"].as_str().expect("id").to_owned();
        let (status, _) = rest(
            &app,
            &w.ws_admin,
            reqwest::Method::POST,
            &format!("/ai/llm/{id}/repos"),
            Some(json!({ "repoId": w.repo })),
        )
        .await;
        assert_eq!(status, 200);
        ids.push(id);
    }
    let (local, broken) = (&ids[0], &ids[1]);

    let (status, body) = rest(
        &app,
        &w.reader,
        reqwest::Method::POST,
        "/ai/models",
        Some(json!({ "repoId": w.repo })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["models"],
        json!([{ "id": "gpt-test", "name": "gpt-test", "created": null, "aiType": "OTHER", "llmType": "OTHER", "llmProvider": "Local" }])
    );
    let (_, body) = rest(
        &app,
        &w.reader,
        reqwest::Method::POST,
        "/ai/models",
        Some(json!({ "repoId": w.repo, "aiType": "ANTHROPIC" })),
    )
    .await;
    assert_eq!(body["models"], json!([]));
    let over_grpc = grpc(&app)
        .await
        .list_models(as_actor(
            ListModelsRequest {
                repo_id: w.repo.to_string(),
                ..Default::default()
            },
            &w.writer,
        ))
        .await
        .expect("models")
        .into_inner()
        .models;
    assert_eq!(over_grpc.len(), 1);
    assert_eq!(
        (over_grpc[0].id.as_str(), over_grpc[0].ai_llm_id.as_str()),
        ("gpt-test", local.as_str())
    );
    for (who, repo) in [(&w.outsider, w.repo), (&w.reader, w.other_org_repo)] {
        let (status, body) = rest(
            &app,
            who,
            reqwest::Method::POST,
            "/ai/models",
            Some(json!({ "repoId": repo })),
        )
        .await;
        assert_eq!(
            (status, body["message"].as_str()),
            (404, Some("Repository not found"))
        );
    }

    // Nothing validated yet: nothing available.
    let (_, body) = rest(
        &app,
        &w.reader,
        reqwest::Method::GET,
        "/ai/llm/available",
        None,
    )
    .await;
    assert_eq!(body["aiLlms"], json!([]));
    let (status, body) = rest(
        &app,
        &w.reader,
        reqwest::Method::POST,
        &format!("/ai/llm/{local}/validate"),
        None,
    )
    .await;
    assert_eq!(
        status, 403,
        "validating uses the secret: managers only: {body}"
    );
    let (status, body) = rest(
        &app,
        &w.ws_admin,
        reqwest::Method::POST,
        &format!("/ai/llm/{local}/validate"),
        None,
    )
    .await;
    assert_eq!(
        (status, body),
        (
            200,
            json!({ "success": true, "message": "The provider answered: 1 model(s) available" })
        )
    );
    let (status, body) = rest(
        &app,
        &w.ws_admin,
        reqwest::Method::POST,
        &format!("/ai/llm/{broken}/validate"),
        None,
    )
    .await;
    assert_eq!(
        (status, body["message"].as_str()),
        (502, Some("The model provider failed: unreachable"))
    );
    let validated = grpc(&app)
        .await
        .validate_provider(as_actor(
            ValidateProviderRequest { id: local.clone() },
            &w.org_admin,
        ))
        .await
        .expect("validated")
        .into_inner();
    assert_eq!(
        validated.message,
        "The provider answered: 1 model(s) available"
    );
    let (_, body) = rest(
        &app,
        &w.reader,
        reqwest::Method::GET,
        "/ai/llm/available",
        None,
    )
    .await;
    let names: Vec<&str> = body["aiLlms"]
        .as_array()
        .expect("list")
        .iter()
        .map(|c| c["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["Local"]);

    // A new endpoint must validate again.
    let (status, _) = rest(
        &app,
        &w.ws_admin,
        reqwest::Method::PUT,
        &format!("/ai/llm/{local}"),
        Some(json!({ "endpoint": format!("http://{addr}/v1/") })),
    )
    .await;
    assert_eq!(status, 200);
    let (_, body) = rest(
        &app,
        &w.reader,
        reqwest::Method::GET,
        "/ai/llm/available",
        None,
    )
    .await;
    assert_eq!(body["aiLlms"], json!([]));
    app.shutdown().await;
}

on_both_backends!(models_validation_and_availability);

/// An Anthropic Messages API on 127.0.0.1 offering `claude-test`, answering
/// as Anthropic documents it (plain and streamed), refusing a wrong key.
/// Records each request's `x-api-key`, `anthropic-version` and
/// `authorization`.
async fn fake_anthropic() -> (String, std::sync::Arc<std::sync::Mutex<Vec<[String; 3]>>>) {
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::IntoResponse as _;
    let seen: std::sync::Arc<std::sync::Mutex<Vec<[String; 3]>>> = Default::default();
    let check = {
        let seen = seen.clone();
        move |headers: &HeaderMap| {
            let h = |n: &str| {
                headers
                    .get(n)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned()
            };
            seen.lock().expect("lock").push([
                h("x-api-key"),
                h("anthropic-version"),
                h("authorization"),
            ]);
            h("x-api-key") == SECRET
        }
    };
    let unauthorized = || {
        (StatusCode::UNAUTHORIZED, axum::Json(json!({ "type": "error", "error": { "type": "authentication_error", "message": "invalid x-api-key" } }))).into_response()
    };
    let models = {
        let check = check.clone();
        move |headers: HeaderMap| async move {
            if !check(&headers) {
                return unauthorized();
            }
            axum::Json(json!({
                "data": [{ "type": "model", "id": "claude-test", "display_name": "Claude Test", "created_at": "2025-02-19T00:00:00Z" }],
                "has_more": false, "first_id": "claude-test", "last_id": "claude-test",
            }))
            .into_response()
        }
    };
    let messages = move |headers: HeaderMap, axum::Json(body): axum::Json<Value>| async move {
        if !check(&headers) {
            return unauthorized();
        }
        if body["model"] != "claude-test" {
            return (StatusCode::NOT_FOUND, axum::Json(json!({ "type": "error", "error": { "type": "not_found_error", "message": "model: unknown" } }))).into_response();
        }
        assert!(
            body["max_tokens"].as_u64().is_some(),
            "max_tokens is required"
        );
        if body["stream"] == true {
            let events = concat!(
                "event: message_start\n",
                "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-test\",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":7,\"output_tokens\":1}}}\n\n",
                "event: content_block_start\n",
                "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
                "event: ping\n",
                "data: {\"type\": \"ping\"}\n\n",
                "event: content_block_delta\n",
                "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}\n\n",
                "event: content_block_delta\n",
                "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\" from Claude\"}}\n\n",
                "event: content_block_stop\n",
                "data: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
                "event: message_delta\n",
                "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":4}}\n\n",
                "event: message_stop\n",
                "data: {\"type\":\"message_stop\"}\n\n",
            );
            return ([("content-type", "text/event-stream")], events).into_response();
        }
        axum::Json(json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-test",
            "content": [{ "type": "text", "text": "Hello from Claude" }],
            "stop_reason": "end_turn", "stop_sequence": null,
            "usage": { "input_tokens": 7, "output_tokens": 4 },
        }))
        .into_response()
    };
    let app = axum::Router::new()
        .route("/v1/models", axum::routing::get(models))
        .route("/v1/messages", axum::routing::post(messages));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("127.0.0.1:{port}"), seen)
}

/// An ANTHROPIC configuration speaks the Messages API: its key in
/// `x-api-key`, its usage counted, its streamed events passed on.
async fn anthropic_configurations_speak_the_messages_api(db: TestDb) {
    use conversation_service::pb::stream_prompt_conversation_response::Event;
    use conversation_service::server::Config;
    let (addr, seen) = fake_anthropic().await;
    let mut config = Config::local();
    config.secrets.provider_allow_private = true;
    let app = TestApp::spawn_config(db, config).await;
    let w = World::build(&app).await;
    let mut body = create_body(&w, "Claude", "ANTHROPIC");
    body["endpoint"] = json!(format!("http://{addr}"));
    let (_, created) = rest(
        &app,
        &w.ws_admin,
        reqwest::Method::POST,
        "/ai/llm",
        Some(body),
    )
    .await;
    let llm = created["aiLlmId"].as_str().expect("id").to_owned();
    rest(
        &app,
        &w.ws_admin,
        reqwest::Method::POST,
        &format!("/ai/llm/{llm}/repos"),
        Some(json!({ "repoId": w.repo })),
    )
    .await;
    let (_, models) = rest(
        &app,
        &w.reader,
        reqwest::Method::POST,
        "/ai/models",
        Some(json!({ "repoId": w.repo })),
    )
    .await;
    assert_eq!(models["models"][0]["id"], "claude-test");
    assert_eq!(models["models"][0]["aiType"], "ANTHROPIC");
    let conversation = app.create_as(&w.reader, w.repo).await;
    let path = format!("/conversation/{conversation}/prompt");

    let (status, reply) = rest(
        &app,
        &w.reader,
        reqwest::Method::POST,
        &path,
        Some(json!({ "prompt": "hi", "model": "claude-test" })),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["message"]["content"], "Hello from Claude");
    assert_eq!(reply["message"]["metadata"]["finishReason"], "end_turn");
    assert_eq!(reply["usage"], json!({ "tokensIn": 7, "tokensOut": 4 }));

    let mut events = app
        .grpc()
        .await
        .stream_prompt_conversation(as_actor(
            conversation_service::pb::StreamPromptConversationRequest {
                conversation_id: conversation.to_string(),
                prompt: "stream".into(),
                model: "claude-test".into(),
            },
            &w.reader,
        ))
        .await
        .expect("stream")
        .into_inner();
    let (mut deltas, mut done) = (Vec::new(), None);
    while let Some(event) = events.message().await.expect("event") {
        match event.event.expect("event") {
            Event::Delta(piece) => deltas.push(piece),
            Event::Done(turn) => done = Some(turn),
        }
    }
    assert_eq!(deltas, ["Hello", " from Claude"]);
    let done = done.expect("done");
    assert_eq!(
        done.assistant_message.expect("message").content,
        "Hello from Claude"
    );
    assert_eq!(done.usage.expect("usage").tokens_in, 7);

    let (status, reply) = rest(
        &app,
        &w.reader,
        reqwest::Method::GET,
        &format!("/conversation/{conversation}"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        (
            reply["conversation"]["tokensIn"].clone(),
            reply["conversation"]["tokensOut"].clone()
        ),
        (json!("14"), json!("8"))
    );
    let seen = seen.lock().expect("lock").clone();
    assert!(!seen.is_empty());
    for [key, version, authorization] in seen {
        assert_eq!(
            (key.as_str(), version.as_str(), authorization.as_str()),
            (SECRET, "2023-06-01", "")
        );
    }
    app.shutdown().await;
}

on_both_backends!(anthropic_configurations_speak_the_messages_api);
