//! GOOGLE and AWS configurations: Chat Completions at Gemini's and
//! Bedrock's OpenAI-compatible endpoints, each with its own quirks, against
//! fakes that answer as those providers document: Gemini lists its models as
//! `models/<id>` and may answer errors inside a one-element array; Bedrock's
//! `bedrock-runtime` serves no model list (404) and answers AWS-style errors
//! (`{"Message": ...}`).

use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse as _;
use serde_json::{Value, json};

use super::*;
use crate::harness::{TestDb, World};
use crate::on_both_backends;

/// A completion as Chat Completions answers it, plain or streamed.
fn completion(body: &Value, text: &str) -> axum::response::Response {
    if body["stream"] == true {
        let events = format!(
            "data: {}\n\ndata: {}\n\ndata: [DONE]\n\n",
            json!({ "id": "c1", "model": body["model"], "choices": [{ "index": 0, "delta": { "role": "assistant", "content": text } }] }),
            json!({ "id": "c1", "choices": [{ "index": 0, "delta": {}, "finish_reason": "stop" }], "usage": { "prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5 } }),
        );
        return ([("content-type", "text/event-stream")], events).into_response();
    }
    axum::Json(json!({
        "id": "c1", "object": "chat.completion", "model": body["model"],
        "choices": [{ "index": 0, "message": { "role": "assistant", "content": text }, "finish_reason": "stop" }],
        "usage": { "prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5 },
    }))
    .into_response()
}

fn bearer(headers: &HeaderMap) -> String {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Gemini's OpenAI-compatible endpoint under `/v1beta/openai`: its list
/// names `models/gemini-test`, its completions take `gemini-test`; a prompt
/// saying "exhaust" gets its 429 in the array form.
async fn fake_gemini() -> String {
    let models = |headers: HeaderMap| async move {
        if bearer(&headers) != format!("Bearer {SECRET}") {
            return (StatusCode::UNAUTHORIZED, axum::Json(json!([{ "error": { "code": 401, "message": "API key not valid.", "status": "UNAUTHENTICATED" } }]))).into_response();
        }
        axum::Json(json!({ "object": "list", "data": [{ "id": "models/gemini-test", "object": "model", "owned_by": "google" }] })).into_response()
    };
    let chat = |axum::Json(body): axum::Json<Value>| async move {
        if body["model"] != "gemini-test" {
            return (StatusCode::BAD_REQUEST, "unexpected model").into_response();
        }
        if body["messages"].to_string().contains("exhaust") {
            return (StatusCode::TOO_MANY_REQUESTS, axum::Json(json!([{ "error": { "code": 429, "message": "Resource has been exhausted (e.g. check quota).", "status": "RESOURCE_EXHAUSTED" } }]))).into_response();
        }
        completion(&body, "from Gemini")
    };
    let app = axum::Router::new()
        .route("/v1beta/openai/models", axum::routing::get(models))
        .route("/v1beta/openai/chat/completions", axum::routing::post(chat));
    serve(app).await
}

/// Bedrock's `bedrock-runtime` OpenAI-compatible endpoint under
/// `/openai/v1`: no model list; a wrong key is a 403 whose message quotes
/// the key back; a request without a model is a 400. Counts completions.
async fn fake_bedrock() -> (String, Arc<Mutex<Vec<String>>>) {
    let asked: Arc<Mutex<Vec<String>>> = Arc::default();
    let chat = {
        let asked = asked.clone();
        move |headers: HeaderMap, axum::Json(body): axum::Json<Value>| async move {
            let auth = bearer(&headers);
            if auth != format!("Bearer {SECRET}") {
                let key = auth.trim_start_matches("Bearer ");
                return (StatusCode::FORBIDDEN, axum::Json(json!({ "Message": format!("Authentication failed: API Key {key} is not valid.") }))).into_response();
            }
            let model = body["model"].as_str().unwrap_or_default().to_owned();
            if model.is_empty() {
                return (StatusCode::BAD_REQUEST, axum::Json(json!({ "error": { "code": "validation_error", "message": "model: field required", "type": "invalid_request_error" } }))).into_response();
            }
            asked.lock().expect("lock").push(model);
            completion(&body, "from Bedrock")
        }
    };
    let app = axum::Router::new().route("/openai/v1/chat/completions", axum::routing::post(chat));
    (serve(app).await, asked)
}

/// GOOGLE and AWS configurations: models, routing, plain and streamed
/// replies, validation, and the providers' errors as they word them (the
/// key a provider quotes back never reaches the caller).
async fn gemini_and_bedrock(db: TestDb) {
    let gemini = fake_gemini().await;
    let (bedrock, asked) = fake_bedrock().await;
    let app = app_allowing_private(db).await;
    let w = World::build(&app).await;
    let google = connect_repo(
        &app,
        &w,
        "Gemini",
        "GOOGLE",
        &format!("http://{gemini}/v1beta/openai"),
    )
    .await;
    let aws = connect_repo(
        &app,
        &w,
        "Bedrock",
        "AWS",
        &format!("http://{bedrock}/openai/v1"),
    )
    .await;

    // Gemini's models, as its completions take them; Bedrock lists none.
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
        json!([{ "id": "gemini-test", "name": "gemini-test", "aiType": "GOOGLE", "llmType": "GOOGLE", "llmProvider": "Gemini" }])
    );

    let conversation = app.create_as(&w.reader, w.repo).await;
    let path = format!("/conversation/{conversation}/prompt");
    let prompt = |text: &str, model: &str| Some(json!({ "prompt": text, "model": model }));
    let (status, reply) = rest(
        &app,
        &w.reader,
        reqwest::Method::POST,
        &path,
        prompt("hi", "gemini-test"),
    )
    .await;
    assert_eq!(
        (status, reply["message"].as_str()),
        (200, Some("from Gemini")),
        "{reply}"
    );
    assert_eq!(
        reply["assistantMessage"]["metadata"]["aiLlmId"],
        google.as_str()
    );
    assert_eq!(reply["assistantMessage"]["metadata"]["aiType"], "GOOGLE");
    // A model no list names goes to the configuration that lists none.
    let bedrock_model = "openai.gpt-oss-20b-1:0";
    let (status, reply) = rest(
        &app,
        &w.reader,
        reqwest::Method::POST,
        &path,
        prompt("hi", bedrock_model),
    )
    .await;
    assert_eq!(
        (status, reply["message"].as_str()),
        (200, Some("from Bedrock")),
        "{reply}"
    );
    assert_eq!(
        reply["assistantMessage"]["metadata"]["aiLlmId"],
        aws.as_str()
    );
    assert_eq!(reply["usage"], json!({ "tokensIn": 3, "tokensOut": 2 }));
    for (model, text) in [
        ("gemini-test", "from Gemini"),
        (bedrock_model, "from Bedrock"),
    ] {
        let (deltas, done) = stream_over_grpc(&app, &w.reader, conversation, model).await;
        assert_eq!(deltas, [text]);
        assert_eq!(done.assistant_message.expect("message").content, text);
    }
    assert_eq!(
        asked.lock().expect("lock").as_slice(),
        [bedrock_model, bedrock_model]
    );

    // Gemini's error, read from its array form.
    let (status, reply) = rest(
        &app,
        &w.reader,
        reqwest::Method::POST,
        &path,
        prompt("exhaust it", "gemini-test"),
    )
    .await;
    assert_eq!(
        (status, reply["message"].as_str()),
        (
            502,
            Some(
                "The model provider failed: HTTP 429 RESOURCE_EXHAUSTED Resource has been exhausted (e.g. check quota)."
            )
        )
    );

    // Validating a configuration that lists no models checks its key.
    let validate = format!("/ai/llm/{aws}/validate");
    let (status, body) = rest(&app, &w.ws_admin, reqwest::Method::POST, &validate, None).await;
    assert_eq!(
        (status, body["message"].as_str()),
        (
            200,
            Some("The provider accepted the credentials (it lists no models)")
        )
    );
    let wrong = "bedrock-key-that-is-wrong-93c1";
    let (status, _) = rest(
        &app,
        &w.ws_admin,
        reqwest::Method::PUT,
        &format!("/ai/llm/{aws}"),
        Some(json!({ "secret": wrong })),
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = rest(&app, &w.ws_admin, reqwest::Method::POST, &validate, None).await;
    assert_eq!(
        (status, body["message"].as_str()),
        (
            502,
            Some(
                "The model provider failed: HTTP 403 checking the credentials Authentication failed: API Key [redacted] is not valid."
            )
        )
    );
    assert!(!body.to_string().contains(wrong));
    // Over gRPC as over REST: moving a stored key elsewhere takes it again.
    let moved = grpc(&app)
        .await
        .update_provider(crate::harness::as_actor(
            conversation_service::pb::ai::UpdateProviderRequest {
                id: aws.clone(),
                endpoint: Some("https://elsewhere.example.test/v1".into()),
                ..Default::default()
            },
            &w.ws_admin,
        ))
        .await
        .expect_err("needs the secret");
    assert_eq!(
        (moved.code(), moved.message()),
        (
            tonic::Code::InvalidArgument,
            "Changing endpoint or aiType needs the secret again"
        )
    );
    let (status, body) = rest(
        &app,
        &w.ws_admin,
        reqwest::Method::POST,
        &format!("/ai/llm/{google}/validate"),
        None,
    )
    .await;
    assert_eq!(
        (status, body["message"].as_str()),
        (200, Some("The provider answered: 1 model(s) available"))
    );
    app.shutdown().await;
}

/// A provider whose model list fails is left out, counted in the metrics,
/// and not asked again for a while: the next prompts do not wait for it.
async fn failing_providers_are_counted_and_not_asked_each_time(db: TestDb) {
    let (good, _) = fake_openai().await;
    let listed = Arc::new(Mutex::new(0u32));
    let dead = {
        let listed = listed.clone();
        let models = move || async move {
            *listed.lock().expect("lock") += 1;
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                axum::Json(json!({ "error": { "message": "boom", "type": "server_error" } })),
            )
        };
        serve(axum::Router::new().route("/v1/models", axum::routing::get(models))).await
    };
    let app = app_allowing_private(db).await;
    let w = World::build(&app).await;
    connect_repo(&app, &w, "Dead", "OPENAI", &format!("http://{dead}/v1")).await;
    connect_repo(&app, &w, "Good", "OTHER", &format!("http://{good}/v1")).await;
    let conversation = app.create_as(&w.reader, w.repo).await;
    for _ in 0..3 {
        let (status, reply) = rest(
            &app,
            &w.reader,
            reqwest::Method::POST,
            &format!("/conversation/{conversation}/prompt"),
            Some(json!({ "prompt": "hi", "model": "gpt-test" })),
        )
        .await;
        assert_eq!((status, reply["message"].as_str()), (200, Some("routed!")));
    }
    assert_eq!(
        *listed.lock().expect("lock"),
        1,
        "asked once, then left out for a while"
    );
    let metrics = app
        .http
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains(r#"conversation_service_provider_failures_total{ai_type="OPENAI",operation="models",reason="failed"} 1"#),
        "{metrics}"
    );
    app.shutdown().await;
}

/// Requests that call a provider may take the provider's time, not just the
/// request timeout; other requests keep the request timeout.
async fn provider_calls_have_the_providers_time(db: TestDb) {
    let slow = {
        let models = || async {
            axum::Json(
                json!({ "object": "list", "data": [{ "id": "slow-model", "object": "model" }] }),
            )
        };
        let chat = |axum::Json(body): axum::Json<Value>| async move {
            tokio::time::sleep(std::time::Duration::from_millis(1600)).await;
            completion(&body, "worth the wait")
        };
        serve(
            axum::Router::new()
                .route("/v1/models", axum::routing::get(models))
                .route("/v1/chat/completions", axum::routing::post(chat)),
        )
        .await
    };
    let mut config = conversation_service::server::Config::local();
    config.secrets.provider_allow_private = true;
    config.request_timeout = std::time::Duration::from_secs(1);
    config.provider.timeout = std::time::Duration::from_secs(10);
    let app = crate::harness::TestApp::spawn_config(db, config).await;
    let w = World::build(&app).await;
    connect_repo(&app, &w, "Slow", "OTHER", &format!("http://{slow}/v1")).await;
    let conversation = app.create_as(&w.reader, w.repo).await;
    let (status, reply) = rest(
        &app,
        &w.reader,
        reqwest::Method::POST,
        &format!("/conversation/{conversation}/prompt"),
        Some(json!({ "prompt": "hi", "model": "slow-model" })),
    )
    .await;
    assert_eq!(
        (status, reply["message"].as_str()),
        (200, Some("worth the wait")),
        "{reply}"
    );
    let (deltas, _) = stream_over_grpc(&app, &w.reader, conversation, "slow-model").await;
    assert_eq!(deltas, ["worth the wait"]);
    let plain = app
        .grpc()
        .await
        .prompt_conversation(crate::harness::as_actor(
            conversation_service::pb::PromptConversationRequest {
                conversation_id: conversation.to_string(),
                prompt: "again".into(),
                model: "slow-model".into(),
            },
            &w.reader,
        ))
        .await
        .expect("the prompt outlives the request timeout");
    assert_eq!(
        plain
            .into_inner()
            .assistant_message
            .expect("message")
            .content,
        "worth the wait"
    );
    app.shutdown().await;
}

on_both_backends!(
    gemini_and_bedrock,
    failing_providers_are_counted_and_not_asked_each_time,
    provider_calls_have_the_providers_time
);
