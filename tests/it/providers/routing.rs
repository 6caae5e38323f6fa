//! Routing a prompt to the repository's configuration that offers its model.

use serde_json::json;

use super::*;
use crate::harness::{TestApp, TestDb, World, as_actor};
use crate::on_both_backends;

/// A prompt's model goes to the repository's configuration that offers it,
/// with the configuration's secret; the stored answer says who answered.
async fn prompts_go_to_the_repository_provider(db: TestDb) {
    let (addr, seen) = fake_openai().await;
    let app = app_allowing_private(db).await;
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
    assert_eq!(reply["assistantMessage"]["content"], "routed!");
    assert_eq!(
        reply["assistantMessage"]["metadata"]["aiLlmId"],
        llm.as_str()
    );
    assert_eq!(reply["assistantMessage"]["metadata"]["aiType"], "OTHER");
    assert_eq!(reply["assistantMessage"]["metadata"]["host"], "127.0.0.1");
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
    // A name is checked when it is called, not when it is stored.
    connect_repo(
        &app,
        &w,
        "Sneaky",
        "OPENAI",
        &format!("http://localhost:{port}/v1"),
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
