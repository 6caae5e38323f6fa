//! Managing configurations: who may, secrets never shown nor stored in
//! plain text, refusals that store nothing, deletes refused while in use.

use conversation_service::pb::ai::{
    AttachRepositoryRequest, CreateProviderRequest, DeleteProviderRequest, DetachRepositoryRequest,
    ListProvidersRequest, UpdateProviderRequest,
};
use serde_json::{Value, json};
use tonic::Code;
use uuid::Uuid;

use super::*;
use crate::harness::{TestApp, TestDb, World, as_actor};
use crate::on_both_backends;

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
        (
            json!({ "endpoint": null, "aiType": "OTHER" }),
            400,
            "endpoint is required for AWS and OTHER configurations",
        ),
        (
            json!({ "endpoint": "", "aiType": "AWS" }),
            400,
            "endpoint is required for AWS and OTHER configurations",
        ),
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
        "1 sealed secret(s) (AI configurations, webhooks) are stored, but no secrets key is configured: give --secrets-key-file or SECRETS_KEY"
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
