//! Prompting a conversation against a real HTTP server that speaks the Chat
//! Completions protocol (started here on 127.0.0.1): messages, token totals,
//! titles, access, provider failures and timeouts, concurrent prompts.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use conversation_service::pb::{ListMessagesRequest, PromptConversationRequest};
use conversation_service::provider::ProviderConfig;
use conversation_service::server::Config;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::harness::{Actor, TestApp, TestDb, World, as_actor};
use crate::on_both_backends;

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
    let config = Config {
        provider: ProviderConfig {
            base_url: url,
            api_key: Some(API_KEY.into()),
            models: models.iter().map(|m| (*m).to_owned()).collect(),
            timeout: Duration::from_secs(1),
        },
        ..Config::local()
    };
    TestApp::spawn_config(db, config).await
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

/// Two turns, one per transport: the context sent, the stored messages, the
/// totals, the title.
async fn turns_are_stored(db: TestDb) {
    let (app, w, id, seen) = with_conversation(db, &[]).await;
    let before = conversation(&app, &w.reader, id).await;

    let (status, first) = prompt_rest(
        &app,
        &w.reader,
        id,
        json!({ "prompt": "How do I add a route?\nWith axum.", "model": "echo" }),
    )
    .await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["success"], true);
    assert_eq!(first["message"]["role"], "assistant");
    assert_eq!(
        first["message"]["content"],
        "echo: How do I add a route?\nWith axum."
    );
    assert_eq!(first["message"]["model"], "echo-2026");
    assert_eq!(first["message"]["tokenCount"], 7);
    assert_eq!(first["message"]["metadata"]["finishReason"], "stop");
    assert_eq!(first["userMessage"]["role"], "user");
    assert_eq!(first["userMessage"]["tokenCount"], 10);
    assert_eq!(first["usage"], json!({ "tokensIn": 10, "tokensOut": 7 }));

    let reply = app
        .grpc()
        .await
        .prompt_conversation(prompt_request(&w.reader, id, "And a middleware?", "echo"))
        .await
        .expect("prompted over gRPC")
        .into_inner();
    let usage = reply.usage.expect("usage");
    assert_eq!((usage.tokens_in, usage.tokens_out), (30, 7));
    // The second call carried the first turn as context, and the key.
    {
        let seen = seen.lock().expect("seen");
        let sent = &seen.requests[1]["messages"];
        assert_eq!(
            sent,
            &json!([
                { "role": "user", "content": "How do I add a route?\nWith axum." },
                { "role": "assistant", "content": "echo: How do I add a route?\nWith axum." },
                { "role": "user", "content": "And a middleware?" },
            ])
        );
        assert_eq!(seen.requests[1]["stream"], false);
        assert!(
            seen.authorization
                .iter()
                .all(|a| a == &format!("Bearer {API_KEY}"))
        );
    }

    let (status, listed) = messages_rest(&app, &w.reader, id, "").await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["title"], "How do I add a route?");
    assert_eq!(listed["total"], 4);
    let roles: Vec<&str> = listed["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["role"].as_str().expect("role"))
        .collect();
    assert_eq!(roles, ["user", "assistant", "user", "assistant"]);
    assert_eq!(listed["messages"][3]["content"], "echo: And a middleware?");
    assert_eq!(listed["messages"][0]["conversationId"], id.to_string());
    let (_, page) = messages_rest(&app, &w.reader, id, "take=2&skip=1").await;
    let page: Vec<&str> = page["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["content"].as_str().expect("content"))
        .collect();
    assert_eq!(
        page,
        [
            "echo: How do I add a route?\nWith axum.",
            "And a middleware?"
        ]
    );
    let over_grpc = app
        .grpc()
        .await
        .list_messages(as_actor(
            ListMessagesRequest {
                conversation_id: id.to_string(),
                take: Some(1),
                skip: None,
            },
            &w.reader,
        ))
        .await
        .expect("listed")
        .into_inner();
    assert_eq!((over_grpc.total, over_grpc.messages.len()), (4, 1));

    let after = conversation(&app, &w.reader, id).await;
    assert_eq!(
        (after["tokensIn"].clone(), after["tokensOut"].clone()),
        (json!("40"), json!("14"))
    );
    assert_eq!(after["title"], "How do I add a route?");
    assert!(after["lastUpdatedAt"].as_str() > before["lastUpdatedAt"].as_str());

    // A hard delete takes the messages with it.
    let res = app
        .http
        .delete(format!("{}/conversation/{id}?hardDelete=true", app.base))
        .header("authorization", format!("Bearer {}", w.reader.token))
        .send()
        .await
        .expect("delete");
    assert_eq!(res.status(), 200);
    let (_, left) = app.store.list_messages(id, 100, 0).await.expect("messages");
    assert_eq!(left, 0, "messages removed with their conversation");
    app.shutdown().await;
}

/// Refusals store nothing and say why: bad bodies, no provider, provider
/// failure (502, its secrets kept out) and timeout (504), access.
async fn refusals_store_nothing(db: TestDb) {
    let (app, w, id, _) = with_conversation(db, &["echo", "fail", "slow"]).await;
    let others = app.create_as(&w.writer, w.repo).await;
    let cases: Vec<(&Actor, Uuid, Value, u16, &str)> = vec![
        (
            &w.reader,
            id,
            json!({ "prompt": "", "model": "echo" }),
            400,
            "prompt must not be empty",
        ),
        (
            &w.reader,
            id,
            json!({ "prompt": "hi" }),
            400,
            "model is required",
        ),
        (
            &w.reader,
            id,
            json!({ "prompt": "hi", "model": "gpt-9" }),
            400,
            "model is not one of the allowed models",
        ),
        (
            &w.reader,
            id,
            json!({ "prompt": 5, "model": "echo" }),
            400,
            "prompt must be a string",
        ),
        (
            &w.reader,
            id,
            json!({ "prompt": "hi", "model": "fail" }),
            502,
            "The model provider failed: HTTP 500 server_error the GPU caught fire",
        ),
        (
            &w.reader,
            id,
            json!({ "prompt": "hi", "model": "slow" }),
            504,
            "The model provider did not answer in time",
        ),
        (
            &w.reader,
            others,
            json!({ "prompt": "hi", "model": "echo" }),
            404,
            "Conversation not found",
        ),
        (
            &w.reader,
            Uuid::now_v7(),
            json!({ "prompt": "hi", "model": "echo" }),
            404,
            "Conversation not found",
        ),
    ];
    for (who, target, body, status, message) in cases {
        let (got, reply) = prompt_rest(&app, who, target, body.clone()).await;
        assert_eq!(
            (got, reply["message"].as_str()),
            (status, Some(message)),
            "{body}"
        );
        assert!(!reply.to_string().contains(API_KEY));
    }
    let (status, _) = messages_rest(&app, &w.reader, id, "").await;
    assert_eq!(status, 200);
    let c = conversation(&app, &w.reader, id).await;
    assert_eq!(
        (c["tokensIn"].clone(), c["title"].clone()),
        (json!("0"), Value::Null)
    );
    let (_, listed) = messages_rest(&app, &w.reader, id, "").await;
    assert_eq!(listed["total"], 0, "nothing stored");

    // Over gRPC: the provider's failure is UNAVAILABLE, its timeout DEADLINE_EXCEEDED.
    let mut client = app.grpc().await;
    for (model, code) in [
        ("fail", tonic::Code::Unavailable),
        ("slow", tonic::Code::DeadlineExceeded),
    ] {
        let status = client
            .prompt_conversation(prompt_request(&w.reader, id, "hi", model))
            .await
            .expect_err("refused");
        assert_eq!(status.code(), code);
    }

    // Administrators may prompt what they can see; a reader who lost the
    // workspace may not prompt their own any more; deleted is 404.
    let (status, _) = prompt_rest(
        &app,
        &w.ws_admin,
        others,
        json!({ "prompt": "hi", "model": "echo" }),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = prompt_rest(
        &app,
        &w.org_admin,
        others,
        json!({ "prompt": "hi", "model": "echo" }),
    )
    .await;
    assert_eq!(status, 200);
    app.db
        .exec(&format!(
            "DELETE FROM workspace_members WHERE user_id = {}",
            app.db.uuid_literal(w.writer.id)
        ))
        .await;
    let (status, reply) = prompt_rest(
        &app,
        &w.writer,
        others,
        json!({ "prompt": "hi", "model": "echo" }),
    )
    .await;
    assert_eq!(
        (status, reply["message"].as_str()),
        (403, Some("Insufficient permissions for this workspace"))
    );
    let res = app
        .http
        .delete(format!("{}/conversation/{id}", app.base))
        .header("authorization", format!("Bearer {}", w.reader.token))
        .send()
        .await
        .expect("delete");
    assert_eq!(res.status(), 200);
    let (status, _) = prompt_rest(
        &app,
        &w.reader,
        id,
        json!({ "prompt": "hi", "model": "echo" }),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = messages_rest(&app, &w.reader, id, "").await;
    assert_eq!(status, 404);
    app.shutdown().await;
}

/// A model the provider does not know (its 404), with no allow list, is a 400.
async fn unknown_model(db: TestDb) {
    let (app, w, id, _) = with_conversation(db, &[]).await;
    let (status, reply) = prompt_rest(
        &app,
        &w.reader,
        id,
        json!({ "prompt": "hi", "model": "missing" }),
    )
    .await;
    assert_eq!(
        (status, reply["message"].as_str()),
        (400, Some("The model provider does not know this model"))
    );
    let refused = app
        .grpc()
        .await
        .prompt_conversation(prompt_request(&w.reader, id, "hi", "missing"))
        .await
        .expect_err("unknown model");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    let (_, listed) = messages_rest(&app, &w.reader, id, "").await;
    assert_eq!(listed["total"], 0, "nothing stored");
    app.shutdown().await;
}

/// Without a provider, prompting is a clear 501 / UNIMPLEMENTED.
async fn no_provider(db: TestDb) {
    let app = app_with_provider(db, None, &[]).await;
    let w = World::build(&app).await;
    let id = app.create_as(&w.reader, w.repo).await;
    let (status, reply) = prompt_rest(
        &app,
        &w.reader,
        id,
        json!({ "prompt": "hi", "model": "echo" }),
    )
    .await;
    assert_eq!(
        (status, reply["message"].as_str()),
        (501, Some("No model provider is configured on this service"))
    );
    app.shutdown().await;
}

/// Ten prompts to one conversation at once: twenty messages, each user
/// message followed by its own answer, and every token counted.
async fn concurrent_prompts(db: TestDb) {
    let (app, w, id, _) = with_conversation(db, &[]).await;
    let app = Arc::new(app);
    let mut prompts = tokio::task::JoinSet::new();
    for i in 0..10 {
        let (app, reader) = (app.clone(), w.reader.clone());
        prompts.spawn(async move {
            let (status, reply) = prompt_rest(
                &app,
                &reader,
                id,
                json!({ "prompt": format!("question {i}"), "model": "echo" }),
            )
            .await;
            assert_eq!(status, 200, "{reply}");
            reply["usage"]["tokensIn"].as_u64().expect("usage")
        });
    }
    let mut tokens_in = 0;
    while let Some(t) = prompts.join_next().await {
        tokens_in += t.expect("prompt");
    }
    let (_, listed) = messages_rest(&app, &w.reader, id, "take=100").await;
    let messages = listed["messages"].as_array().expect("messages");
    assert_eq!(messages.len(), 20);
    for pair in messages.chunks(2) {
        assert_eq!(
            (pair[0]["role"].as_str(), pair[1]["role"].as_str()),
            (Some("user"), Some("assistant"))
        );
        assert_eq!(
            pair[1]["content"].as_str().expect("answer"),
            format!("echo: {}", pair[0]["content"].as_str().expect("question"))
        );
    }
    let c = conversation(&app, &w.reader, id).await;
    assert_eq!(c["tokensIn"], json!(tokens_in.to_string()));
    assert_eq!(c["tokensOut"], json!("70"));
    Arc::into_inner(app).expect("last handle").shutdown().await;
}

on_both_backends!(
    turns_are_stored,
    refusals_store_nothing,
    no_provider,
    unknown_model,
    concurrent_prompts
);

/// The events of a server-sent-event body: (event, data as JSON).
fn sse_events(body: &str) -> Vec<(String, Value)> {
    body.split("\n\n")
        .filter_map(|block| {
            let mut event = String::new();
            let mut data = None;
            for line in block.lines() {
                if let Some(e) = line.strip_prefix("event:") {
                    event = e.trim().to_owned();
                } else if let Some(d) = line.strip_prefix("data:") {
                    data = serde_json::from_str(d.trim()).ok();
                }
            }
            data.map(|d| (event, d))
        })
        .collect()
}

async fn prompt_events(app: &TestApp, who: &Actor, id: Uuid, body: Value) -> reqwest::Response {
    app.http
        .post(format!("{}/conversation/{id}/prompt", app.base))
        .header("authorization", format!("Bearer {}", who.token))
        .header("content-type", "application/json")
        .header("accept", "text/event-stream")
        .body(body.to_string())
        .send()
        .await
        .expect("request")
}

async fn grpc_stream(
    app: &TestApp,
    who: &Actor,
    id: Uuid,
    prompt: &str,
    model: &str,
) -> tonic::Streaming<conversation_service::pb::StreamPromptConversationResponse> {
    let request = conversation_service::pb::StreamPromptConversationRequest {
        conversation_id: id.to_string(),
        prompt: prompt.into(),
        model: model.into(),
    };
    app.grpc()
        .await
        .stream_prompt_conversation(as_actor(request, who))
        .await
        .expect("streaming")
        .into_inner()
}

/// Streaming over both transports: the deltas add up to the stored reply,
/// which is what the reply without streaming would have been; a caller who
/// leaves mid-stream, or a provider that breaks off, leaves no turn.
async fn streamed_turns(db: TestDb) {
    use conversation_service::pb::stream_prompt_conversation_response::Event;
    let (app, w, id, _) = with_conversation(db, &[]).await;

    // REST, text/event-stream.
    let body = json!({ "prompt": "stream me please", "model": "echo" });
    let res = prompt_events(&app, &w.reader, id, body).await;
    assert_eq!(res.status(), 200);
    let kind = res.headers()["content-type"].to_str().expect("ascii");
    assert!(kind.starts_with("text/event-stream"), "{kind}");
    let events = sse_events(&res.text().await.expect("body"));
    let (deltas, rest): (Vec<_>, Vec<_>) = events.iter().partition(|(e, _)| e == "delta");
    let streamed: String = deltas
        .iter()
        .map(|(_, d)| d["content"].as_str().expect("piece"))
        .collect();
    assert!(deltas.len() > 2, "several pieces: {deltas:?}");
    assert_eq!(streamed, "echo: stream me please");
    assert_eq!(rest.len(), 1);
    let (kind, done) = rest[0];
    assert_eq!(kind, "done");
    assert_eq!(done["success"], true);
    assert_eq!(done["message"]["content"], "echo: stream me please");
    assert_eq!(done["usage"], json!({ "tokensIn": 11, "tokensOut": 4 }));
    let (_, listed) = messages_rest(&app, &w.reader, id, "").await;
    assert_eq!(listed["total"], 2);
    assert_eq!(listed["messages"][1]["content"], "echo: stream me please");
    assert_eq!(listed["title"], "stream me please");

    // gRPC, server streaming.
    let mut stream = grpc_stream(&app, &w.reader, id, "and again", "echo").await;
    let (mut pieces, mut done) = (String::new(), None);
    while let Some(event) = stream.message().await.expect("event") {
        match event.event.expect("event") {
            Event::Delta(piece) => pieces.push_str(&piece),
            Event::Done(reply) => done = Some(reply),
        }
    }
    let done = done.expect("done last");
    assert_eq!(pieces, "echo: and again");
    assert_eq!(done.assistant_message.expect("message").content, pieces);

    // Refusals before the model is asked keep their status.
    let res = prompt_events(
        &app,
        &w.reader,
        id,
        json!({ "prompt": "", "model": "echo" }),
    )
    .await;
    assert_eq!(res.status(), 400);

    // The caller leaves mid-stream: nothing is stored.
    let body = json!({ "prompt": "long one", "model": "slow-stream" });
    let mut res = prompt_events(&app, &w.reader, id, body).await;
    assert_eq!(res.status(), 200);
    let first = res.chunk().await.expect("read").expect("a first event");
    assert!(!first.is_empty());
    drop(res);
    let mut stream = grpc_stream(&app, &w.reader, id, "long two", "slow-stream").await;
    assert!(stream.message().await.expect("event").is_some());
    drop(stream);

    // The provider breaks off: an error event / UNAVAILABLE, nothing stored.
    let res = prompt_events(
        &app,
        &w.reader,
        id,
        json!({ "prompt": "x", "model": "break" }),
    )
    .await;
    let events = sse_events(&res.text().await.expect("body"));
    let last = events.last().expect("events");
    assert_eq!(last.0, "error");
    assert_eq!(
        last.1["message"],
        "The model provider failed: the reply ended before [DONE]"
    );
    let mut stream = grpc_stream(&app, &w.reader, id, "x", "break").await;
    let failed = loop {
        match stream.message().await {
            Ok(Some(_)) => {}
            Ok(None) => break None,
            Err(status) => break Some(status.code()),
        }
    };
    assert_eq!(failed, Some(tonic::Code::Unavailable));

    // Past the slow streams' end: still only the two finished turns.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let (_, listed) = messages_rest(&app, &w.reader, id, "").await;
    assert_eq!(listed["total"], 4, "{listed}");
    let c = conversation(&app, &w.reader, id).await;
    assert_eq!(c["tokensIn"], json!("22"));
    app.shutdown().await;
}

on_both_backends!(streamed_turns);
