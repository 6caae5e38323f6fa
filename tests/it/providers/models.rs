//! A repository's models, validation and availability.

use serde_json::json;

use super::*;
use crate::harness::{TestDb, World, as_actor};
use crate::on_both_backends;

/// The models a repository may use come from its configurations' providers
/// (one that fails is left out); validating makes a real call and makes a
/// configuration available, until its endpoint or secret changes.
async fn models_validation_and_availability(db: TestDb) {
    use conversation_service::pb::ai::{ListModelsRequest, ValidateProviderRequest};
    let (addr, _) = fake_openai().await;
    let app = app_allowing_private(db).await;
    let w = World::build(&app).await;
    let mut ids = Vec::new();
    for (name, endpoint) in [
        ("Local", format!("http://{addr}/v1")),
        ("Broken", "http://127.0.0.1:1/v1".to_owned()),
    ] {
        let id = connect_repo(&app, &w, name, "OTHER", &endpoint).await;
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
        json!([{ "id": "gpt-test", "name": "gpt-test", "created": 1686935002, "aiType": "OTHER", "llmType": "OTHER", "llmProvider": "Local" }])
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

    // Moving the endpoint takes the secret again (else whoever may edit a
    // configuration could send its key elsewhere); then it must validate again.
    let moved = json!({ "endpoint": format!("http://{addr}/v1/") });
    let (status, body) = rest(
        &app,
        &w.ws_admin,
        reqwest::Method::PUT,
        &format!("/ai/llm/{local}"),
        Some(moved),
    )
    .await;
    assert_eq!(
        (status, body["message"].as_str()),
        (
            400,
            Some("Changing endpoint or aiType needs the secret again")
        )
    );
    let moved = json!({ "endpoint": format!("http://{addr}/v1/"), "secret": SECRET });
    let (status, _) = rest(
        &app,
        &w.ws_admin,
        reqwest::Method::PUT,
        &format!("/ai/llm/{local}"),
        Some(moved),
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
