//! A conversation's messages: prompting (plain and streamed) against a real
//! HTTP server that speaks the Chat Completions protocol (started here on
//! 127.0.0.1), and listing. The fake provider and the helpers are here.

mod prompt;
pub(crate) mod resume;
pub(crate) mod stream;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use conversation_service::pb::PromptConversationRequest;
use conversation_service::provider::ProviderConfig;
use conversation_service::server::Config;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::harness::{Actor, TestApp, TestDb, World, as_actor};

const API_KEY: &str = "sk-test-provider-key-never-shown";

/// What the fake provider saw.
#[derive(Default)]
pub struct Seen {
    requests: Vec<Value>,
    authorization: Vec<String>,
}

/// A Chat Completions server whose behaviour the model name picks: `echo`
/// answers "echo: <last message>", `fail` answers 500, `slow` never in time.
pub async fn fake_provider() -> (String, Arc<Mutex<Seen>>) {
    async fn complete(
        State(seen): State<Arc<Mutex<Seen>>>,
        headers: HeaderMap,
        Json(body): Json<Value>,
    ) -> axum::response::Response {
        {
            let mut seen = seen.lock().expect("seen");
            seen.requests.push(body.clone());
            seen.authorization.push(
                headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned(),
            );
        }
        let messages = body["messages"].as_array().cloned().unwrap_or_default();
        let last = messages
            .last()
            .and_then(|m| m["content"].as_str())
            .unwrap_or_default()
            .to_owned();
        let model = body["model"].as_str().unwrap_or_default().to_owned();
        if body["stream"] == true && model != "fail" {
            return streamed(model, last);
        }
        match model.as_str() {
            "fail" => (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({ "error": { "type": "server_error", "message": "the GPU caught fire" } })),
            )
                .into_response(),
            "missing" => (
                StatusCode::NOT_FOUND,
                Json(json!({ "error": { "type": "invalid_request_error", "code": "model_not_found", "message": "no such model" } })),
            )
                .into_response(),
            "slow" => {
                tokio::time::sleep(Duration::from_secs(5)).await;
                StatusCode::OK.into_response()
            }
            model => Json(json!({
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "model": format!("{model}-2026"),
                "choices": [{ "index": 0, "finish_reason": "stop",
                    "message": { "role": "assistant", "content": format!("echo: {last}") } }],
                "usage": { "prompt_tokens": 10 * messages.len(), "completion_tokens": 7, "total_tokens": 0 },
            }))
            .into_response(),
        }
    }
    /// Server-sent events: "echo: " and then the prompt word by word, a
    /// finish, the usage, [DONE]. `slow-stream` takes 300 ms per piece and
    /// sends 20; `break` stops after one piece without [DONE].
    fn streamed(model: String, last: String) -> axum::response::Response {
        let chunk = |v: Value| bytes::Bytes::from(format!("data: {v}\n\n"));
        let mut pieces = vec!["echo: ".to_owned()];
        pieces.extend(last.split_inclusive(' ').map(str::to_owned));
        if model == "slow-stream" {
            pieces = (0..20).map(|i| format!("{i} ")).collect();
        }
        let mut events: Vec<bytes::Bytes> = pieces
            .iter()
            .map(|p| {
                chunk(json!({ "id": "chatcmpl-s", "model": format!("{model}-2026"),
                    "choices": [{ "index": 0, "delta": { "content": p }, "finish_reason": null }] }))
            })
            .collect();
        if model == "break" {
            events.truncate(1);
        } else {
            events.push(chunk(
                json!({ "choices": [{ "index": 0, "delta": {}, "finish_reason": "stop" }] }),
            ));
            events.push(chunk(json!({ "choices": [], "usage": { "prompt_tokens": 11, "completion_tokens": pieces.len() } })));
            events.push(bytes::Bytes::from_static(b"data: [DONE]\n\n"));
        }
        let delay = if model == "slow-stream" { 300 } else { 5 };
        let body = futures_util::stream::unfold(events.into_iter(), move |mut rest| async move {
            let next = rest.next()?;
            tokio::time::sleep(Duration::from_millis(delay)).await;
            Some((Ok::<_, std::convert::Infallible>(next), rest))
        });
        (
            [(axum::http::header::CONTENT_TYPE, "text/event-stream")],
            axum::body::Body::from_stream(body),
        )
            .into_response()
    }
    let seen = Arc::new(Mutex::new(Seen::default()));
    let app = axum::Router::new()
        .route("/v1/chat/completions", axum::routing::post(complete))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/v1"), seen)
}

async fn app_with_provider(db: TestDb, url: Option<String>, models: &[&str]) -> TestApp {
    app_with_provider_timeout(db, url, models, Duration::from_secs(1)).await
}

/// As [`app_with_provider`], with the provider's time limit.
async fn app_with_provider_timeout(
    db: TestDb,
    url: Option<String>,
    models: &[&str],
    timeout: Duration,
) -> TestApp {
    TestApp::spawn_config(db, provider_config(url, models, timeout)).await
}

/// The service's settings with the operator's provider at `url`.
fn provider_config(url: Option<String>, models: &[&str], timeout: Duration) -> Config {
    Config {
        provider: ProviderConfig {
            base_url: url,
            api_key: Some(API_KEY.into()),
            models: models.iter().map(|m| (*m).to_owned()).collect(),
            timeout,
        },
        ..Config::local()
    }
}

/// A PromptConversation request as `who`.
fn prompt_request(
    who: &Actor,
    id: Uuid,
    prompt: impl Into<String>,
    model: impl Into<String>,
) -> tonic::Request<PromptConversationRequest> {
    as_actor(
        PromptConversationRequest {
            conversation_id: id.to_string(),
            prompt: prompt.into(),
            model: model.into(),
        },
        who,
    )
}

/// A service with the fake provider (and `models` allowed), its world, and
/// a conversation of the reader's.
async fn with_conversation(
    db: TestDb,
    models: &[&str],
) -> (TestApp, World, Uuid, Arc<Mutex<Seen>>) {
    let (url, seen) = fake_provider().await;
    let app = app_with_provider(db, Some(url), models).await;
    let w = World::build(&app).await;
    let id = app.create_as(&w.reader, w.repo).await;
    (app, w, id, seen)
}

/// The string `field` of each item of the JSON array `list`.
fn fields<'a>(list: &'a Value, field: &str) -> Vec<&'a str> {
    list.as_array()
        .expect("an array")
        .iter()
        .map(|item| item[field].as_str().expect("a string"))
        .collect()
}

/// A service whose pool holds one connection (for [`crate::harness::StatementLog`]),
/// the fake provider as the operator's, and a conversation of the world's reader.
async fn one_connection_app(db: TestDb) -> (TestApp, World, Uuid, Arc<Mutex<Seen>>, String) {
    let (url, seen) = fake_provider().await;
    let mut opts = crate::harness::test_options();
    opts.pool_size = 1;
    let config = provider_config(Some(url.clone()), &[], Duration::from_secs(1));
    let app = TestApp::spawn_full(db, opts, config).await;
    let w = World::build(&app).await;
    let id = app.create_as(&w.reader, w.repo).await;
    (app, w, id, seen, url)
}

async fn prompt_rest(app: &TestApp, who: &Actor, id: Uuid, body: Value) -> (u16, Value) {
    let res = app
        .http
        .post(format!("{}/conversation/{id}/prompt", app.base))
        .header("authorization", format!("Bearer {}", who.token))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("request");
    (res.status().as_u16(), res.json().await.expect("json"))
}

/// Deletes a conversation over REST (`query`: e.g. `hardDelete=true`);
/// the status.
async fn delete_rest(app: &TestApp, who: &Actor, id: Uuid, query: &str) -> u16 {
    app.http
        .delete(format!("{}/conversation/{id}?{query}", app.base))
        .header("authorization", format!("Bearer {}", who.token))
        .send()
        .await
        .expect("delete")
        .status()
        .as_u16()
}

async fn messages_rest(app: &TestApp, who: &Actor, id: Uuid, query: &str) -> (u16, Value) {
    let res = app
        .http
        .get(format!("{}/conversation/{id}/messages?{query}", app.base))
        .header("authorization", format!("Bearer {}", who.token))
        .send()
        .await
        .expect("request");
    (res.status().as_u16(), res.json().await.expect("json"))
}

async fn conversation(app: &TestApp, who: &Actor, id: Uuid) -> Value {
    let res = app
        .http
        .get(format!("{}/conversation/{id}", app.base))
        .header("authorization", format!("Bearer {}", who.token))
        .send()
        .await
        .expect("request");
    res.json::<Value>().await.expect("json")["conversation"].clone()
}
