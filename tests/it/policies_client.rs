//! The official TypeScript client's policy calls (`createPolicy`,
//! `getPolicies`, `getPolicy`, `updatePolicy`, `deletePolicy`,
//! `getPolicyViolations`, `getPolicyViolationsByPolicyId`, `getPolicyAlerts`,
//! `getPolicyAlertsByPolicyId`), made as its `makeRequest` makes them (see
//! `providers::client`), each reply checked against its TypeScript interface
//! (`types/ai/policy.ts`).

use serde_json::{Value, json};

use crate::harness::{TestDb, World};
use crate::on_both_backends;
use crate::providers::client::{call, fields, string};
use crate::providers::{app_allowing_private, connect_repo, serve};

/// `PolicyDTO` (and our `patterns`).
fn policy_dto(v: &Value) {
    fields(
        v,
        &[
            "id",
            "orgId",
            "name",
            "content",
            "riskType",
            "actionType",
            "createdBy",
            "createdAt",
            "lastUpdatedBy",
            "lastUpdatedAt",
            "workspaceId",
            "repoId",
        ],
        &["workspace", "repo", "patterns"],
    );
    for f in [
        "id",
        "orgId",
        "name",
        "content",
        "createdAt",
        "lastUpdatedAt",
    ] {
        string(&v[f]);
    }
    assert!(["LOW", "MEDIUM", "HIGH"].contains(&string(&v["riskType"])));
    assert!(v["actionType"].is_i64());
    for person in [&v["createdBy"], &v["lastUpdatedBy"]] {
        fields(person, &["id", "name", "lastName", "email"], &[]);
        for f in ["id", "name", "lastName", "email"] {
            string(&person[f]);
        }
    }
    for f in ["workspaceId", "repoId"] {
        assert!(v[f].is_null() || v[f].is_string(), "{f}: string | null");
    }
    for f in ["workspace", "repo"] {
        if let Some(named) = v.get(f).filter(|n| !n.is_null()) {
            fields(named, &["id", "name"], &[]);
        }
    }
}

/// The fields a violation and an alert share.
const SHARED: [&str; 14] = [
    "id",
    "policyId",
    "policyName",
    "timestamp",
    "conversationId",
    "repoId",
    "repoName",
    "userId",
    "userName",
    "repoAiApiKeyId",
    "repoAiApiKeyName",
    "llmType",
    "llmModel",
    "host",
];

fn shared(v: &Value) {
    for f in SHARED.iter().filter(|f| **f != "conversationId") {
        string(&v[*f]);
    }
    assert!(v["conversationId"].is_null() || v["conversationId"].is_string());
    chrono::DateTime::parse_from_rfc3339(string(&v["timestamp"])).expect("timestamp");
}

/// `PolicyViolationDTO`.
fn violation_dto(v: &Value) {
    let mut required = SHARED.to_vec();
    required.extend(["explanation", "severity", "block"]);
    fields(v, &required, &[]);
    shared(v);
    string(&v["explanation"]);
    assert!(v["severity"].is_null() || ["LOW", "MEDIUM", "HIGH"].contains(&string(&v["severity"])));
    assert!(v["block"].is_boolean());
}

/// `PolicyAlertDTO`.
fn alert_dto(v: &Value) {
    let mut required = SHARED.to_vec();
    required.push("message");
    fields(v, &required, &[]);
    shared(v);
    string(&v["message"]);
}

/// `{success, violations|alerts, total, skip, take}`.
fn page(v: &Value, list: &str) -> Vec<Value> {
    fields(v, &["success", list, "total", "skip", "take"], &[]);
    for f in ["total", "skip", "take"] {
        assert!(v[f].is_i64(), "{f}: number");
    }
    v[list].as_array().expect("array").clone()
}

/// The client's policy calls, in the order an administrator's screens make them.
async fn the_official_clients_policy_calls(db: TestDb) {
    let model = {
        let chat = || async {
            axum::Json(json!({
                "id": "c1", "model": "gpt-test",
                "choices": [{ "message": { "role": "assistant", "content": "ok" }, "finish_reason": "stop" }],
                "usage": { "prompt_tokens": 1, "completion_tokens": 1 },
            }))
        };
        let models =
            || async { axum::Json(json!({ "object": "list", "data": [{ "id": "gpt-test" }] })) };
        serve(
            axum::Router::new()
                .route("/v1/models", axum::routing::get(models))
                .route("/v1/chat/completions", axum::routing::post(chat)),
        )
        .await
    };
    let app = app_allowing_private(db).await;
    let w = World::build(&app).await;
    connect_repo(&app, &w, "Local", "OTHER", &format!("http://{model}/v1")).await;

    // createPolicy, with the client's optional nulls.
    let body = json!({
        "name": "No keys", "content": "Never share API keys.", "riskType": "HIGH", "actionType": 2,
        "orgId": w.org, "workspaceId": null, "repoId": null, "patterns": ["sk-[a-z]{10,}"],
    });
    let (status, reply) = call(&app, &w.org_admin, "POST", "policy", Some(body)).await;
    assert_eq!(status, 200, "{reply}");
    fields(&reply, &["success", "policy"], &[]);
    policy_dto(&reply["policy"]);
    let id = string(&reply["policy"]["id"]).to_owned();
    let body = json!({
        "name": "Repo", "content": "Be kind.", "riskType": "LOW", "actionType": 0,
        "orgId": w.org, "workspaceId": w.workspace, "repoId": w.repo,
    });
    let (status, reply) = call(&app, &w.ws_admin, "POST", "policy", Some(body)).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["policy"]["repo"]["name"], "app");

    // getPolicies: the query built by hand, then GET without data.
    let path = format!(
        "policy?orgId={}&workspaceId={}&repoId={}",
        w.org, w.workspace, w.repo
    );
    let (status, reply) = call(&app, &w.reader, "GET", &path, None).await;
    assert_eq!(status, 200);
    fields(&reply, &["success", "policies"], &[]);
    let listed = reply["policies"].as_array().expect("array");
    assert_eq!(listed.len(), 1);
    listed.iter().for_each(policy_dto);

    // getPolicy, updatePolicy.
    let (status, reply) = call(&app, &w.reader, "GET", &format!("policy/{id}"), None).await;
    assert_eq!(status, 200);
    policy_dto(&reply["policy"]);
    let (status, reply) = call(
        &app,
        &w.org_admin,
        "PUT",
        &format!("policy/{id}"),
        Some(json!({ "riskType": "MEDIUM" })),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["policy"]["riskType"], "MEDIUM");

    // A blocked prompt, then the violation and alert lists as the client asks.
    let conversation = app.create_as(&w.reader, w.repo).await;
    let (status, _) = call(
        &app,
        &w.reader,
        "POST",
        &format!("conversation/{conversation}/prompt"),
        Some(json!({ "prompt": "my key sk-abcdefghijklmnop", "model": "gpt-test" })),
    )
    .await;
    assert_eq!(status, 400);
    let query = format!(
        "workspaceId={}&take=10&skip=0&llmType=OTHER&llmModel=gpt-test&severity=MEDIUM,HIGH&block=true",
        w.workspace
    );
    for path in [
        format!("policy/violations?{query}&policyId={id}"),
        format!("policy/{id}/violations?{query}"),
    ] {
        let (status, reply) = call(&app, &w.reader, "GET", &path, None).await;
        assert_eq!(status, 200, "{reply}");
        let violations = page(&reply, "violations");
        assert_eq!(violations.len(), 1, "{path}");
        violations.iter().for_each(violation_dto);
    }
    let query = format!(
        "workspaceId={}&take=10&skip=0&llmType=OTHER&host=127.0.0.1",
        w.workspace
    );
    for path in [
        format!("policy/alerts?{query}&policyId={id}"),
        format!("policy/{id}/alerts?{query}"),
    ] {
        let (status, reply) = call(&app, &w.reader, "GET", &path, None).await;
        assert_eq!(status, 200, "{reply}");
        let alerts = page(&reply, "alerts");
        assert_eq!(alerts.len(), 1, "{path}");
        alerts.iter().for_each(alert_dto);
    }

    // deletePolicy: a DELETE without data; `ActionResponse`.
    let (status, reply) = call(&app, &w.org_admin, "DELETE", &format!("policy/{id}"), None).await;
    assert_eq!(status, 200);
    fields(&reply, &["success"], &["message"]);
    let (status, reply) = call(&app, &w.org_admin, "GET", &format!("policy/{id}"), None).await;
    assert_eq!(status, 404);
    fields(&reply, &["success", "message"], &[]);
    app.shutdown().await;
}

on_both_backends!(the_official_clients_policy_calls);
