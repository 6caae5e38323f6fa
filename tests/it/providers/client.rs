//! The official TypeScript client's provider calls (`createAiLlm`,
//! `getAiLlms`, `getAvailableAiLlms`, `updateAiLlm`, `validateAiLlm`,
//! `getAiModels`, `deleteAiLlm`), made as its `makeRequest` makes them: the
//! path relative to the base URL, `Authorization: Bearer`, a JSON body with
//! `Content-Type: application/json` only when there is data, a GET's data as
//! its query, and no body or content type for a POST or DELETE without data.
//! Each reply is checked against the client's TypeScript interface (its
//! fields, their JSON types, which are optional or nullable). The client is
//! not published where this machine can install it, so its requests are
//! reproduced here from its source (`src/api/client.ts`, `types/ai/aillm.ts`).

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::*;
use crate::harness::{TestDb, World};
use crate::on_both_backends;

/// One call as the client's `makeRequest` sends it; the status and reply.
pub(crate) async fn call(
    app: &TestApp,
    who: &Actor,
    method: &str,
    path: &str,
    data: Option<Value>,
) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut url = reqwest::Url::parse(&format!("{}/{path}", app.base)).expect("url");
    let req = if method == reqwest::Method::GET {
        if let Some(Value::Object(data)) = &data {
            let mut query = url.query_pairs_mut();
            for (k, v) in data.iter().filter(|(_, v)| !v.is_null()) {
                let v = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
                query.append_pair(k, &v);
            }
        }
        app.http.request(method, url)
    } else {
        let req = app.http.request(method, url);
        match &data {
            Some(data) => req
                .header("content-type", "application/json")
                .body(data.to_string()),
            None => req,
        }
    };
    let res = req
        .header("authorization", format!("Bearer {}", who.token))
        .send()
        .await
        .expect("request");
    let status = res.status().as_u16();
    let text = res.text().await.expect("body");
    assert!(!text.contains(SECRET), "a reply carried the secret: {text}");
    (status, serde_json::from_str(&text).expect("JSON"))
}

/// The reply's fields are exactly `required` plus any of `optional`.
pub(crate) fn fields(v: &Value, required: &[&str], optional: &[&str]) {
    let got: BTreeSet<&str> = v
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    let need: BTreeSet<&str> = required.iter().copied().collect();
    let may: BTreeSet<&str> = need.iter().chain(optional).copied().collect();
    assert!(need.is_subset(&got), "{v} lacks some of {need:?}");
    assert!(got.is_subset(&may), "{v} has fields beyond {may:?}");
}

pub(crate) fn string(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("{v} is not a string"))
}

/// `AiLlmDTO`.
fn ai_llm_dto(v: &Value) {
    fields(
        v,
        &[
            "id",
            "orgId",
            "workspaceId",
            "userId",
            "name",
            "aiType",
            "endpoint",
            "key",
            "createdAt",
        ],
        &["apiKeyId", "repos"],
    );
    for f in ["id", "orgId", "workspaceId", "userId", "name", "endpoint"] {
        string(&v[f]);
    }
    assert!(["OPENAI", "GOOGLE", "ANTHROPIC", "AWS", "OTHER"].contains(&string(&v["aiType"])));
    assert!(v["key"].is_null() || v["key"].is_string());
    chrono::DateTime::parse_from_rfc3339(string(&v["createdAt"])).expect("createdAt");
    for repo in v["repos"].as_array().into_iter().flatten() {
        fields(repo, &["id", "name", "createdAt"], &[]);
        string(&repo["id"]);
        string(&repo["name"]);
        string(&repo["createdAt"]);
    }
}

/// `{success, aiLlmId, message?}` (create and update).
fn ai_llm_id_reply(v: &Value) -> String {
    fields(v, &["success", "aiLlmId"], &["message"]);
    assert_eq!(v["success"], true);
    string(&v["aiLlmId"]).to_owned()
}

/// The client's calls, in the order an administrator's screen makes them.
async fn the_official_clients_provider_calls(db: TestDb) {
    let (addr, _) = fake_openai().await;
    let app = app_allowing_private(db).await;
    let w = World::build(&app).await;

    // createAiLlm, with what the client's CreateAiLlmRequest allows: a null
    // endpoint (the provider's public API), a null key, an apiKeyUuid we do
    // not use.
    let (status, reply) = call(
        &app,
        &w.ws_admin,
        "POST",
        "ai/llm",
        Some(json!({
            "name": "OpenAI", "aiType": "OPENAI", "endpoint": null, "key": null,
            "secret": SECRET, "apiKeyUuid": "ignored", "workspaceId": w.workspace,
        })),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let public = ai_llm_id_reply(&reply);
    let (status, reply) = call(
        &app,
        &w.ws_admin,
        "POST",
        "ai/llm",
        Some(json!({
            "name": "Local", "aiType": "OTHER", "endpoint": format!("http://{addr}/v1"),
            "secret": SECRET, "workspaceId": w.workspace,
        })),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let local = ai_llm_id_reply(&reply);
    let path = format!("ai/llm/{local}/repos");
    let (status, _) = call(
        &app,
        &w.ws_admin,
        "POST",
        &path,
        Some(json!({ "repoId": w.repo })),
    )
    .await;
    assert_eq!(status, 200);

    // getAiLlms(workspaceId)
    let query = json!({ "workspaceId": w.workspace });
    let (status, reply) = call(&app, &w.reader, "GET", "ai/llm", Some(query)).await;
    assert_eq!(status, 200);
    fields(&reply, &["success", "aiLlms"], &[]);
    let listed = reply["aiLlms"].as_array().expect("array");
    assert_eq!(listed.len(), 2);
    listed.iter().for_each(ai_llm_dto);
    let openai = listed
        .iter()
        .find(|l| l["id"] == public.as_str())
        .expect("listed");
    assert_eq!(openai["endpoint"], "https://api.openai.com/v1");

    // updateAiLlm
    let path = format!("ai/llm/{public}");
    let (status, reply) = call(
        &app,
        &w.ws_admin,
        "PUT",
        &path,
        Some(json!({ "name": "OpenAI (prod)" })),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(ai_llm_id_reply(&reply), public);

    // validateAiLlm: a POST without data, so without body or content type.
    let (status, reply) = call(
        &app,
        &w.ws_admin,
        "POST",
        &format!("ai/llm/{local}/validate"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    fields(&reply, &["success", "message"], &[]);
    string(&reply["message"]);

    // getAvailableAiLlms
    let (status, reply) = call(&app, &w.reader, "GET", "ai/llm/available", None).await;
    assert_eq!(status, 200);
    fields(&reply, &["success", "aiLlms"], &[]);
    let available = reply["aiLlms"].as_array().expect("array");
    available.iter().for_each(ai_llm_dto);
    assert_eq!(available.len(), 1);
    assert_eq!(available[0]["id"], local.as_str());

    // getAiModels
    let (status, reply) = call(
        &app,
        &w.reader,
        "POST",
        "ai/models",
        Some(json!({ "repoId": w.repo })),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    fields(&reply, &["success", "models"], &[]);
    for model in reply["models"].as_array().expect("array") {
        fields(
            model,
            &["id", "name", "aiType", "llmType", "llmProvider"],
            &["created"],
        );
        for f in ["id", "name", "llmType", "llmProvider"] {
            string(&model[f]);
        }
        assert!(
            model.get("created").is_none_or(Value::is_i64),
            "created?: number"
        );
    }
    assert_eq!(reply["models"][0]["id"], "gpt-test");

    // deleteAiLlm: a DELETE without data.
    let (status, reply) = call(
        &app,
        &w.ws_admin,
        "DELETE",
        &format!("ai/llm/{public}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    fields(&reply, &["success"], &["message"]);
    assert_eq!(reply["success"], true);
    // An error is the client's `{success: false, message}` too.
    let (status, reply) = call(
        &app,
        &w.ws_admin,
        "DELETE",
        &format!("ai/llm/{local}"),
        None,
    )
    .await;
    assert_eq!(status, 403);
    fields(&reply, &["success", "message"], &[]);
    assert_eq!(reply["success"], false);
    app.shutdown().await;
}

on_both_backends!(the_official_clients_provider_calls);
