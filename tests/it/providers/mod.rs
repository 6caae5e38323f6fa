//! Model provider configurations (`/ai/llm`, `flashback.ai.v1.ProviderService`),
//! on both transports and both backends, one file per concern: managing them
//! (`manage`), routing prompts to them (`routing`), their models and
//! validation (`models`), Anthropic's wire format (`anthropic`). The
//! helpers and the fake providers (real HTTP servers on 127.0.0.1 speaking
//! each API as documented) are here.

mod anthropic;
pub(crate) mod client;
mod dialects;
mod manage;
mod models;
mod routing;

use conversation_service::pb::ai::provider_service_client::ProviderServiceClient;
use serde_json::{Value, json};

use crate::harness::{Actor, TestApp, TestDb, World};

/// The API key the tests store; it must appear nowhere but in the provider's requests.
pub(crate) const SECRET: &str = "sk-provider-secret-7f3a9c";
/// An access key.
const ACCESS_KEY: &str = "AKIA-access-key-51d2";

/// A REST call as `who` with an optional JSON body.
pub(crate) async fn rest(
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

pub(crate) fn create_body(w: &World, name: &str, ai_type: &str) -> Value {
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
    if app.store.sqlite_path().is_none() {
        // PostgreSQL: no row of any table that could carry it holds it.
        #[derive(diesel::QueryableByName)]
        struct Count {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        for table in ["ai_llms", "system_events", "messages", "org_webhooks"] {
            for needle in [SECRET, ACCESS_KEY] {
                let query = diesel::sql_query(format!(
                    "SELECT count(*) AS n FROM {table} t WHERE t::text LIKE '%{needle}%'"
                ));
                let found =
                    with_conn!(&mut conn, |c| query.get_result::<Count>(c).await).expect("scan");
                assert_eq!(found.n, 0, "{table} holds a secret");
            }
        }
    }
    if let Some(path) = app.store.sqlite_path() {
        let main = std::fs::read(path).expect("the database file reads");
        assert!(!contains(&main, SECRET) && !contains(&main, ACCESS_KEY));
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

/// The service with `--provider-allow-private`, so configurations may point
/// at the fake providers on 127.0.0.1.
pub(crate) async fn app_allowing_private(db: TestDb) -> TestApp {
    let mut config = conversation_service::server::Config::local();
    config.secrets.provider_allow_private = true;
    TestApp::spawn_config(db, config).await
}

/// A configuration of the world's workspace, created over REST by its
/// administrator and attached to its repository; its id.
pub(crate) async fn connect_repo(
    app: &TestApp,
    w: &World,
    name: &str,
    ai_type: &str,
    endpoint: &str,
) -> String {
    let mut body = create_body(w, name, ai_type);
    body["endpoint"] = json!(endpoint);
    let (status, created) = rest(
        app,
        &w.ws_admin,
        reqwest::Method::POST,
        "/ai/llm",
        Some(body),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    let id = created["aiLlmId"].as_str().expect("id").to_owned();
    let path = format!("/ai/llm/{id}/repos");
    let (status, _) = rest(
        app,
        &w.ws_admin,
        reqwest::Method::POST,
        &path,
        Some(json!({ "repoId": w.repo })),
    )
    .await;
    assert_eq!(status, 200);
    id
}

/// A prompt streamed over gRPC as `who`: the pieces, and the stored turn.
pub(crate) async fn stream_over_grpc(
    app: &TestApp,
    who: &Actor,
    conversation: uuid::Uuid,
    model: &str,
) -> (
    Vec<String>,
    conversation_service::pb::PromptConversationResponse,
) {
    use conversation_service::pb::stream_prompt_conversation_response::Event;
    let mut events = app
        .grpc()
        .await
        .stream_prompt_conversation(crate::harness::as_actor(
            conversation_service::pb::StreamPromptConversationRequest {
                conversation_id: conversation.to_string(),
                prompt: "stream".into(),
                model: model.into(),
                ..Default::default()
            },
            who,
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
    (deltas, done.expect("the stored turn"))
}

/// Serves `app` on 127.0.0.1; its address.
pub(crate) async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("127.0.0.1:{port}")
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
                json!({ "object": "list", "data": [{ "id": "gpt-test", "object": "model", "created": 1686935002, "owned_by": "organization-owner" }] }),
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
    (serve(app).await, seen)
}

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
        // "overload" in the prompt: Anthropic's 529, or mid-stream its
        // `error` event, as its documentation shows them.
        let overloaded = body["messages"].to_string().contains("overload");
        if overloaded && body["stream"] == true {
            let events = concat!(
                "event: message_start\n",
                "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_2\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-test\",\"usage\":{\"input_tokens\":7,\"output_tokens\":1}}}\n\n",
                "event: content_block_delta\n",
                "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hel\"}}\n\n",
                "event: error\n",
                "data: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n",
            );
            return ([("content-type", "text/event-stream")], events).into_response();
        }
        if overloaded {
            return (StatusCode::from_u16(529).expect("529"), axum::Json(json!({ "type": "error", "error": { "type": "overloaded_error", "message": "Overloaded" } }))).into_response();
        }
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
    (serve(app).await, seen)
}
