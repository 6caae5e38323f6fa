//! ANTHROPIC configurations speak the Messages API.

use serde_json::json;

use super::*;
use crate::harness::{TestDb, World};
use crate::on_both_backends;

/// An ANTHROPIC configuration speaks the Messages API: its key in
/// `x-api-key`, its usage counted, its streamed events passed on.
async fn anthropic_configurations_speak_the_messages_api(db: TestDb) {
    let (addr, seen) = fake_anthropic().await;
    let app = app_allowing_private(db).await;
    let w = World::build(&app).await;
    let llm = connect_repo(&app, &w, "Claude", "ANTHROPIC", &format!("http://{addr}")).await;
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
    assert_eq!(
        models["models"][0]["created"], 1739923200,
        "created_at, in Unix seconds"
    );
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
    assert_eq!(reply["assistantMessage"]["content"], "Hello from Claude");
    assert_eq!(
        reply["assistantMessage"]["metadata"]["finishReason"],
        "end_turn"
    );
    assert_eq!(reply["usage"], json!({ "tokensIn": 7, "tokensOut": 4 }));

    let (deltas, done) = stream_over_grpc(&app, &w.reader, conversation, "claude-test").await;
    assert_eq!(deltas, ["Hello", " from Claude"]);
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
    // Its errors, plain and mid-stream: 502 / UNAVAILABLE with its words,
    // and nothing stored.
    let (status, reply) = rest(
        &app,
        &w.reader,
        reqwest::Method::POST,
        &path,
        Some(json!({ "prompt": "overload", "model": "claude-test" })),
    )
    .await;
    assert_eq!(
        (status, reply["message"].as_str()),
        (
            502,
            Some("The model provider failed: HTTP 529 overloaded_error Overloaded")
        )
    );
    let mut events = app
        .grpc()
        .await
        .stream_prompt_conversation(crate::harness::as_actor(
            conversation_service::pb::StreamPromptConversationRequest {
                conversation_id: conversation.to_string(),
                prompt: "overload".into(),
                model: "claude-test".into(),
                ..Default::default()
            },
            &w.reader,
        ))
        .await
        .expect("stream")
        .into_inner();
    let first = events.message().await.expect("a piece");
    assert!(first.is_some(), "the piece before the error");
    let failed = events.message().await.expect_err("the error");
    assert_eq!(
        (failed.code(), failed.message()),
        (
            tonic::Code::Unavailable,
            "The model provider failed: overloaded_error Overloaded"
        )
    );
    let (_, messages) = rest(
        &app,
        &w.reader,
        reqwest::Method::GET,
        &format!("/conversation/{conversation}/messages"),
        None,
    )
    .await;
    assert_eq!(
        messages["messages"].as_array().map(Vec::len),
        Some(4),
        "two turns, none from the failures: {messages}"
    );
    // A wrong key: validation names Anthropic's error.
    let (status, _) = rest(
        &app,
        &w.ws_admin,
        reqwest::Method::PUT,
        &format!("/ai/llm/{llm}"),
        Some(json!({ "secret": "sk-ant-wrong" })),
    )
    .await;
    assert_eq!(status, 200);
    let (status, reply) = rest(
        &app,
        &w.ws_admin,
        reqwest::Method::POST,
        &format!("/ai/llm/{llm}/validate"),
        None,
    )
    .await;
    assert_eq!(
        (status, reply["message"].as_str()),
        (
            502,
            Some(
                "The model provider failed: HTTP 401 listing models authentication_error invalid x-api-key"
            )
        )
    );

    let seen = seen.lock().expect("lock").clone();
    assert!(!seen.is_empty());
    let (wrong, right): (Vec<_>, Vec<_>) = seen.iter().partition(|[key, ..]| key == "sk-ant-wrong");
    assert_eq!(wrong.len(), 1, "the validation with the new key");
    for [key, version, authorization] in right {
        assert_eq!(
            (key.as_str(), version.as_str(), authorization.as_str()),
            (SECRET, "2023-06-01", "")
        );
    }
    app.shutdown().await;
}

on_both_backends!(anthropic_configurations_speak_the_messages_api);
