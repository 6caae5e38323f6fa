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
    connect_repo(&app, &w, "Claude", "ANTHROPIC", &format!("http://{addr}")).await;
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
