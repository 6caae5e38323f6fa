//! Governance policies on both transports and both backends: managing them,
//! enforcing them on prompts (patterns, a fake judge speaking Chat
//! Completions, blocks before the model and while a reply streams, judge
//! failures), the violations and alerts they leave, and the webhook that
//! carries alerts out (signed, retried).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse as _;
use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{TestApp, TestDb, World, as_actor};
use crate::on_both_backends;
use crate::providers::{connect_repo, rest, serve};

/// A model on 127.0.0.1 offering `gpt-test` that answers `reply` (streamed
/// in pieces of 8 characters); counts the completions it was asked for.
pub(crate) async fn fake_model(reply: &'static str) -> (String, Arc<Mutex<u32>>) {
    let asked = Arc::new(Mutex::new(0u32));
    let models = || async {
        axum::Json(json!({ "object": "list", "data": [{ "id": "gpt-test", "object": "model" }] }))
    };
    let chat = {
        let asked = asked.clone();
        move |axum::Json(body): axum::Json<Value>| async move {
            *asked.lock().expect("lock") += 1;
            let usage = json!({ "prompt_tokens": 5, "completion_tokens": 3 });
            if body["stream"] != true {
                return axum::Json(json!({
                    "id": "c1", "model": "gpt-test",
                    "choices": [{ "message": { "role": "assistant", "content": reply }, "finish_reason": "stop" }],
                    "usage": usage,
                }))
                .into_response();
            }
            let mut events = String::new();
            for piece in reply.as_bytes().chunks(8) {
                let piece = std::str::from_utf8(piece).expect("ASCII");
                events += &format!(
                    "data: {}\n\n",
                    json!({ "choices": [{ "delta": { "content": piece } }] })
                );
            }
            events += &format!(
                "data: {}\n\ndata: [DONE]\n\n",
                json!({ "choices": [], "usage": usage })
            );
            ([("content-type", "text/event-stream")], events).into_response()
        }
    };
    let app = axum::Router::new()
        .route("/v1/models", axum::routing::get(models))
        .route("/v1/chat/completions", axum::routing::post(chat));
    (serve(app).await, asked)
}

/// A judge on 127.0.0.1: for every policy id in the request, violated when
/// the content between the markers says "confidential"; 4 tokens in, 2 out.
/// Records the requests.
pub(crate) async fn fake_judge() -> (String, Arc<Mutex<Vec<Value>>>) {
    let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
    let chat = {
        let seen = seen.clone();
        move |axum::Json(body): axum::Json<Value>| async move {
            seen.lock().expect("lock").push(body.clone());
            let text = body["messages"][0]["content"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let content = text.rsplit("<<<CONTENT-").next().unwrap_or_default();
            let violated = content.contains("confidential");
            let results: Vec<Value> = text
                .lines()
                .filter_map(|l| l.trim().strip_prefix("- policyId: "))
                .map(|id| json!({ "policyId": id, "violated": violated, "explanation": "It shares confidential data." }))
                .collect();
            axum::Json(json!({
                "id": "j1", "model": "judge",
                "choices": [{ "message": { "role": "assistant", "content": json!({ "results": results }).to_string() }, "finish_reason": "stop" }],
                "usage": { "prompt_tokens": 4, "completion_tokens": 2 },
            }))
        }
    };
    let app = axum::Router::new().route("/v1/chat/completions", axum::routing::post(chat));
    (serve(app).await, seen)
}

/// The service allowing private endpoints, judging with `judge`, checking
/// streamed replies every 10 characters, retrying webhooks after 100 ms.
pub(crate) async fn app_with_judge(db: TestDb, judge: &str) -> TestApp {
    let mut config = conversation_service::server::Config::local();
    config.secrets.provider_allow_private = true;
    config.policy.policy_judge_url = Some(format!("http://{judge}/v1"));
    config.policy.policy_judge_model = Some("judge-model".into());
    config.policy.policy_judge_timeout = Duration::from_secs(2);
    config.policy.policy_stream_interval = 10;
    config.policy.webhook_retry_base = Duration::from_millis(100);
    TestApp::spawn_config(db, config).await
}

pub(crate) fn policy(w: &World, name: &str, action: i64, scope: Value) -> Value {
    let mut body = json!({
        "name": name, "content": format!("{name}: never share confidential data."),
        "riskType": "HIGH", "actionType": action, "orgId": w.org,
    });
    if let (Value::Object(b), Value::Object(s)) = (&mut body, scope) {
        b.extend(s);
    }
    body
}

/// How many messages a conversation holds, and its totals.
async fn conversation_state(app: &TestApp, w: &World, id: uuid::Uuid) -> (usize, Value, Value) {
    let (_, messages) = rest(
        app,
        &w.reader,
        Method::GET,
        &format!("/conversation/{id}/messages"),
        None,
    )
    .await;
    let (_, c) = rest(
        app,
        &w.reader,
        Method::GET,
        &format!("/conversation/{id}"),
        None,
    )
    .await;
    (
        messages["messages"].as_array().map_or(0, Vec::len),
        c["conversation"]["tokensIn"].clone(),
        c["conversation"]["tokensOut"].clone(),
    )
}

/// Creating, reading, changing and deleting policies, with who may.
async fn managing_policies(db: TestDb) {
    let (judge, _) = fake_judge().await;
    let app = app_with_judge(db, &judge).await;
    let w = World::build(&app).await;
    let post = |who, body| rest(&app, who, Method::POST, "/policy", Some(body));

    let (status, org_policy) = post(&w.org_admin, policy(&w, "Org", 0, json!({}))).await;
    assert_eq!(status, 200, "{org_policy}");
    let p = &org_policy["policy"];
    assert_eq!(
        (
            p["workspaceId"].clone(),
            p["repo"].clone(),
            p["actionType"].clone()
        ),
        (Value::Null, Value::Null, json!(0))
    );
    assert_eq!(p["createdBy"]["id"], w.org_admin.id.to_string());
    let (status, body) = post(&w.ws_admin, policy(&w, "Org by ws admin", 0, json!({}))).await;
    assert_eq!(
        (status, body["message"].as_str()),
        (
            403,
            Some("Insufficient permissions to manage policies of this scope")
        )
    );
    let (status, ws_policy) = post(
        &w.ws_admin,
        policy(&w, "Ws", 1, json!({ "workspaceId": w.workspace })),
    )
    .await;
    assert_eq!(status, 200, "{ws_policy}");
    let (status, repo_policy) = post(&w.ws_admin, policy(&w, "Repo", 2, json!({ "workspaceId": w.workspace, "repoId": w.repo, "patterns": ["AKIA[0-9A-Z]{16}"] }))).await;
    assert_eq!(status, 200, "{repo_policy}");
    assert_eq!(repo_policy["policy"]["repo"]["id"], w.repo.to_string());
    assert_eq!(
        repo_policy["policy"]["patterns"],
        json!(["AKIA[0-9A-Z]{16}"])
    );
    let (status, _) = post(
        &w.reader,
        policy(&w, "Reader", 0, json!({ "workspaceId": w.workspace })),
    )
    .await;
    assert_eq!(status, 403);

    // Lists per scope; a reader sees them, the other organization nothing.
    assert_eq!(
        names(&app, &w.reader, format!("orgId={}", w.org)).await,
        ["Org"]
    );
    assert_eq!(
        names(
            &app,
            &w.reader,
            format!("orgId={}&workspaceId={}", w.org, w.workspace)
        )
        .await,
        ["Ws"]
    );
    assert_eq!(
        names(
            &app,
            &w.reader,
            format!(
                "orgId={}&workspaceId={}&repoId={}",
                w.org, w.workspace, w.repo
            )
        )
        .await,
        ["Repo"]
    );
    assert!(
        names(&app, &w.other_org_user, format!("orgId={}", w.org))
            .await
            .is_empty()
    );
    assert!(
        names(
            &app,
            &w.outsider,
            format!("orgId={}&workspaceId={}", w.org, w.workspace)
        )
        .await
        .is_empty()
    );
    let ws_id = ws_policy["policy"]["id"].as_str().expect("id").to_owned();
    let (status, _) = rest(
        &app,
        &w.other_org_user,
        Method::GET,
        &format!("/policy/{ws_id}"),
        None,
    )
    .await;
    assert_eq!(status, 404);

    // Update: who and when recorded; the scope never changes; not empty.
    let path = format!("/policy/{ws_id}");
    let (status, body) = rest(
        &app,
        &w.ws_admin,
        Method::PUT,
        &path,
        Some(json!({ "actionType": 2, "name": "Ws blocks" })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (
            body["policy"]["actionType"].clone(),
            body["policy"]["name"].clone()
        ),
        (json!(2), json!("Ws blocks"))
    );
    assert_eq!(
        body["policy"]["lastUpdatedBy"]["id"],
        w.ws_admin.id.to_string()
    );
    for (patch, message) in [
        (
            json!({ "workspaceId": null, "repoId": w.repo }),
            "The scope of a policy never changes (orgId, workspaceId, repoId)",
        ),
        (
            json!({}),
            "Nothing to update: give name, content, patterns, riskType or actionType",
        ),
        (
            json!({ "riskType": "SEVERE" }),
            "riskType must be one of LOW, MEDIUM, HIGH",
        ),
    ] {
        let (status, body) = rest(&app, &w.ws_admin, Method::PUT, &path, Some(patch.clone())).await;
        assert_eq!(
            (status, body["message"].as_str()),
            (400, Some(message)),
            "{patch}"
        );
    }

    // Bad input stores nothing.
    let other_ws_repo = w.other_org_repo;
    for (body, status, message) in [
        (
            json!({ "riskType": "SEVERE" }),
            400,
            "riskType must be one of LOW, MEDIUM, HIGH",
        ),
        (
            json!({ "actionType": 3 }),
            400,
            "actionType must be 0 (log), 1 (alert) or 2 (block)",
        ),
        (
            json!({ "actionType": "block" }),
            400,
            "actionType must be an integer",
        ),
        (
            json!({ "patterns": ["(unclosed"] }),
            400,
            "pattern \"(unclosed\" is not a valid regular expression: error: unclosed group",
        ),
        (
            json!({ "patterns": "x" }),
            400,
            "patterns must be a list of strings",
        ),
        (
            json!({ "repoId": w.orphan_repo }),
            400,
            "The repository belongs to no workspace",
        ),
        (
            json!({ "workspaceId": w.workspace, "repoId": w.orphan_repo }),
            400,
            "The repository belongs to no workspace",
        ),
        (
            json!({ "workspaceId": w.workspace, "repoId": other_ws_repo }),
            404,
            "Repository not found",
        ),
        (
            json!({ "workspaceId": uuid::Uuid::now_v7() }),
            404,
            "Workspace not found",
        ),
        (
            json!({ "orgId": uuid::Uuid::now_v7() }),
            404,
            "Organization not found",
        ),
        (
            json!({ "content": "", "patterns": [] }),
            400,
            "content is required (or patterns that decide the policy)",
        ),
        (
            json!({ "content": "a\0b" }),
            400,
            "content must not contain NUL characters",
        ),
    ] {
        let mut full = policy(&w, "Bad", 0, json!({}));
        full.as_object_mut()
            .expect("object")
            .extend(body.as_object().expect("object").clone());
        let (got, reply) = post(&w.org_admin, full).await;
        assert_eq!(
            (got, reply["message"].as_str()),
            (status, Some(message)),
            "{body}"
        );
    }
    assert_eq!(
        names(&app, &w.org_admin, format!("orgId={}", w.org)).await,
        ["Org"]
    );
    // A repository policy may leave its workspace out: the repository's.
    let (status, body) = post(
        &w.ws_admin,
        policy(&w, "Repo only", 0, json!({ "repoId": w.repo })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["policy"]["workspaceId"], w.workspace.to_string());
    assert_eq!(
        names(
            &app,
            &w.reader,
            format!("orgId={}&repoId={}", w.org, w.repo)
        )
        .await,
        ["Repo", "Repo only"]
    );

    // Delete is soft: gone from lists and reads; events for each change.
    let (status, _) = rest(&app, &w.reader, Method::DELETE, &path, None).await;
    assert_eq!(status, 403);
    let (status, _) = rest(&app, &w.ws_admin, Method::DELETE, &path, None).await;
    assert_eq!(status, 200);
    let (status, _) = rest(&app, &w.ws_admin, Method::GET, &path, None).await;
    assert_eq!(status, 404);
    assert!(
        names(
            &app,
            &w.org_admin,
            format!("orgId={}&workspaceId={}", w.org, w.workspace)
        )
        .await
        .is_empty()
    );
    assert_eq!(
        events(&app, "policy").await,
        6,
        "4 created, 1 updated, 1 deleted"
    );
    app.shutdown().await;
}

/// The names of the policies `q` lists for `who`.
async fn names(app: &TestApp, who: &crate::harness::Actor, q: String) -> Vec<String> {
    let (status, body) = rest(app, who, Method::GET, &format!("/policy?{q}"), None).await;
    assert_eq!(status, 200, "{body}");
    body["policies"]
        .as_array()
        .expect("array")
        .iter()
        .map(|p| p["name"].as_str().expect("name").to_owned())
        .collect()
}

/// How many events of `context` are stored.
async fn events(app: &TestApp, context: &str) -> i64 {
    use conversation_service::store::schema::system_events;
    use conversation_service::with_conn;
    use diesel::prelude::*;
    use diesel_async::RunQueryDsl;
    let mut conn = app.store.conn().await.expect("conn");
    let context = context.to_owned();
    with_conn!(&mut conn, |c| system_events::table
        .filter(system_events::context.eq(context))
        .count()
        .get_result::<i64>(c)
        .await)
    .expect("count")
}

/// A blocking pattern policy stops a prompt before the model (REST and
/// gRPC), recording a violation and an alert and nothing else; a judged log
/// policy lets a turn through and records its violation; policy tokens stay
/// out of the conversation's totals.
async fn prompts_are_judged(db: TestDb) {
    let (judge, judged) = fake_judge().await;
    let (model, asked) = fake_model("All good.").await;
    let app = app_with_judge(db, &judge).await;
    let w = World::build(&app).await;
    connect_repo(&app, &w, "Local", "OTHER", &format!("http://{model}/v1")).await;
    let keys = json!({ "patterns": ["sk-[A-Za-z0-9]{20,}"], "content": "" });
    let (status, _) = rest(
        &app,
        &w.org_admin,
        Method::POST,
        "/policy",
        Some(policy(&w, "No keys", 2, keys)),
    )
    .await;
    assert_eq!(status, 200);
    let conversation = app.create_as(&w.reader, w.repo).await;
    let path = format!("/conversation/{conversation}/prompt");
    let secret = "here: sk-abcdefghijklmnopqrstuvwx";
    let (status, body) = rest(
        &app,
        &w.reader,
        Method::POST,
        &path,
        Some(json!({ "prompt": secret, "model": "gpt-test" })),
    )
    .await;
    assert_eq!(
        (status, body["message"].as_str()),
        (
            400,
            Some(
                "Blocked by policy \"No keys\": The prompt matches pattern \"sk-[A-Za-z0-9]{20,}\" of policy \"No keys\""
            )
        )
    );
    let refused = app
        .grpc()
        .await
        .prompt_conversation(as_actor(
            conversation_service::pb::PromptConversationRequest {
                conversation_id: conversation.to_string(),
                prompt: secret.into(),
                model: "gpt-test".into(),
            },
            &w.reader,
        ))
        .await
        .expect_err("blocked");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(
        refused
            .message()
            .starts_with("Blocked by policy \"No keys\""),
        "{}",
        refused.message()
    );
    assert_eq!(
        *asked.lock().expect("lock"),
        0,
        "the model was never called"
    );
    assert!(
        judged.lock().expect("lock").is_empty(),
        "patterns need no judge"
    );
    assert_eq!(
        conversation_state(&app, &w, conversation).await,
        (0, json!("0"), json!("0"))
    );

    // A judged log policy at workspace level: the turn goes on, recorded.
    let (status, _) = rest(
        &app,
        &w.ws_admin,
        Method::POST,
        "/policy",
        Some(policy(
            &w,
            "Confidential",
            0,
            json!({ "workspaceId": w.workspace }),
        )),
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = rest(
        &app,
        &w.reader,
        Method::POST,
        &path,
        Some(json!({ "prompt": "this is confidential", "model": "gpt-test" })),
    )
    .await;
    assert_eq!(
        (status, body["message"].as_str()),
        (200, Some("All good.")),
        "{body}"
    );
    assert_eq!(
        body["assistantMessage"]["metadata"]["policyTokens"], 12,
        "two judge calls of 6 tokens"
    );
    assert_eq!(
        conversation_state(&app, &w, conversation).await,
        (2, json!("5"), json!("3")),
        "policy tokens are not the conversation's"
    );
    let asked_judge = judged.lock().expect("lock")[0].clone();
    assert_eq!(asked_judge["model"], "judge-model");
    assert_eq!(asked_judge["response_format"]["type"], "json_schema");

    // The record: two blocked (no alert for a log), newest first, filtered.
    let (status, page) = rest(&app, &w.org_admin, Method::GET, "/policy/violations", None).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(
        (
            page["total"].clone(),
            page["take"].clone(),
            page["skip"].clone()
        ),
        (json!(3), json!(50), json!(0))
    );
    let v = &page["violations"];
    assert_eq!(
        (
            v[0]["policyName"].clone(),
            v[0]["block"].clone(),
            v[0]["severity"].clone()
        ),
        (json!("Confidential"), json!(false), json!("HIGH"))
    );
    assert_eq!(v[0]["explanation"], "It shares confidential data.");
    assert_eq!(
        (v[1]["policyName"].clone(), v[1]["block"].clone()),
        (json!("No keys"), json!(true))
    );
    assert_eq!(v[1]["llmType"], "OTHER");
    assert_eq!(v[1]["llmModel"], "gpt-test");
    assert_eq!(v[1]["host"], "127.0.0.1");
    assert_eq!(v[1]["conversationId"], conversation.to_string());
    assert_eq!(
        (v[0]["repoName"].as_str(), v[1]["repoName"].as_str()),
        (Some("app"), Some("app"))
    );
    let query = |q: &str| {
        let app = &app;
        let who = &w.org_admin;
        let q = q.to_owned();
        async move {
            rest(
                app,
                who,
                Method::GET,
                &format!("/policy/violations?{q}"),
                None,
            )
            .await
        }
    };
    assert_eq!(query("block=true").await.1["total"], 2);
    assert_eq!(query("severity=LOW,MEDIUM").await.1["total"], 0);
    assert_eq!(query("severity=HIGH,LOW").await.1["total"], 3);
    assert_eq!(query("from=2000-01-01").await.1["total"], 3);
    assert_eq!(query("block=false").await.1["total"], 1);
    assert_eq!(
        query("take=1&skip=1").await.1["violations"][0]["policyName"],
        "No keys"
    );
    assert_eq!(
        query("host=example.com,127.0.0.1&llmModel=gpt-test")
            .await
            .1["total"],
        3
    );
    assert_eq!(query("from=2999-01-01").await.1["total"], 0);
    for (q, message) in [
        ("take=101", "take must be between 1 and 100"),
        ("severity=SEVERE", "severity must list LOW, MEDIUM or HIGH"),
        ("block=maybe", "block must be true or false"),
        (
            "from=yesterday",
            "from must be an ISO 8601 date or date-time (e.g. 2026-01-31 or 2026-01-31T12:00:00Z)",
        ),
        ("repoId=nope", "repoId must be a UUID"),
        ("llmModel=a%00b", "llmModel must not contain NUL characters"),
    ] {
        let (status, body) = query(q).await;
        assert_eq!(
            (status, body["message"].as_str()),
            (400, Some(message)),
            "{q}"
        );
    }
    let (_, alerts) = rest(&app, &w.org_admin, Method::GET, "/policy/alerts", None).await;
    assert_eq!(alerts["total"], 2, "blocks alert, logs do not");
    assert!(
        alerts["alerts"][0]["message"]
            .as_str()
            .expect("message")
            .starts_with("Policy \"No keys\" violated by the prompt")
    );
    assert!(alerts["alerts"][0].get("explanation").is_none());
    let (_, theirs) = rest(
        &app,
        &w.other_org_user,
        Method::GET,
        "/policy/violations",
        None,
    )
    .await;
    assert_eq!(theirs["total"], 0);
    let (_, outsider) = rest(
        &app,
        &w.outsider,
        Method::GET,
        &format!("/policy/violations?workspaceId={}", w.workspace),
        None,
    )
    .await;
    assert_eq!(
        outsider["total"], 0,
        "an unreachable workspace gives an empty page"
    );
    // A conversation deleted for good leaves its violations, unlinked.
    let (status, _) = rest(
        &app,
        &w.reader,
        Method::DELETE,
        &format!("/conversation/{conversation}?hardDelete=true"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (_, page) = rest(&app, &w.org_admin, Method::GET, "/policy/violations", None).await;
    assert_eq!(page["total"], 3);
    assert!(
        page["violations"]
            .as_array()
            .expect("array")
            .iter()
            .all(|v| v["conversationId"].is_null())
    );
    assert_eq!(events(&app, "policyviolation").await, 3);
    assert_eq!(events(&app, "policyalert").await, 2);
    app.shutdown().await;
}

/// A reply that breaks a blocking policy while it streams is cut: the
/// stream ends with the block, no piece of the offending text was sent,
/// and nothing is stored.
async fn replies_are_cut_while_they_stream(db: TestDb) {
    let (judge, _) = fake_judge().await;
    let (model, _) = fake_model("Sure, the launch code is RED-42-ALPHA, keep it safe.").await;
    let app = app_with_judge(db, &judge).await;
    let w = World::build(&app).await;
    connect_repo(&app, &w, "Local", "OTHER", &format!("http://{model}/v1")).await;
    let codes = json!({ "patterns": ["RED-[0-9]+-ALPHA"], "workspaceId": w.workspace });
    let (status, created) = rest(
        &app,
        &w.ws_admin,
        Method::POST,
        "/policy",
        Some(policy(&w, "Launch codes", 2, codes)),
    )
    .await;
    assert_eq!(status, 200);
    let conversation = app.create_as(&w.reader, w.repo).await;

    // REST, streamed: deltas then an error event; the code never sent.
    let res = crate::messages::stream::prompt_events(
        &app,
        &w.reader,
        conversation,
        json!({ "prompt": "the code?", "model": "gpt-test" }),
    )
    .await;
    assert_eq!(res.status(), 200);
    let events = crate::messages::stream::sse_events(&res.text().await.expect("events"));
    let (last, deltas) = events.split_last().expect("events");
    assert!(!deltas.is_empty(), "pieces before the block: {events:?}");
    let shown: String = deltas
        .iter()
        .map(|(kind, data)| {
            assert_eq!(kind, "delta");
            data["content"].as_str().expect("content").to_owned()
        })
        .collect();
    assert!(!shown.contains("RED-"), "{shown}");
    assert_eq!(last.0, "error");
    assert!(
        last.1["message"]
            .as_str()
            .expect("message")
            .starts_with("Blocked by policy \"Launch codes\""),
        "{last:?}"
    );
    // gRPC, streamed: the status ends it.
    let mut events = app
        .grpc()
        .await
        .stream_prompt_conversation(as_actor(
            conversation_service::pb::StreamPromptConversationRequest {
                conversation_id: conversation.to_string(),
                prompt: "again".into(),
                model: "gpt-test".into(),
                ..Default::default()
            },
            &w.reader,
        ))
        .await
        .expect("stream")
        .into_inner();
    let mut text = String::new();
    let end = loop {
        match events.message().await {
            Ok(Some(e)) => {
                if let Some(
                    conversation_service::pb::stream_prompt_conversation_response::Event::Delta(d),
                ) = e.event
                {
                    text += &d;
                }
            }
            Ok(None) => panic!("the stream ended without the block"),
            Err(status) => break status,
        }
    };
    assert_eq!(end.code(), tonic::Code::FailedPrecondition, "{end:?}");
    assert!(!text.is_empty() && !text.contains("RED-"), "{text}");
    assert_eq!(
        conversation_state(&app, &w, conversation).await,
        (0, json!("0"), json!("0"))
    );
    let (_, page) = rest(
        &app,
        &w.ws_admin,
        Method::GET,
        "/policy/violations?block=true",
        None,
    )
    .await;
    assert_eq!(page["total"], 2);
    // Deleted, the policy no longer applies: the same reply streams whole.
    let id = created["policy"]["id"].as_str().expect("id");
    let (status, _) = rest(
        &app,
        &w.ws_admin,
        Method::DELETE,
        &format!("/policy/{id}"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (deltas, done) =
        crate::providers::stream_over_grpc(&app, &w.reader, conversation, "gpt-test").await;
    assert!(deltas.concat().contains("RED-42-ALPHA"));
    assert!(done.assistant_message.is_some());
    assert_eq!(conversation_state(&app, &w, conversation).await.0, 2);
    app.shutdown().await;
}

/// A judged blocking policy also cuts a streamed reply: checks come at 1,
/// 2, 4, ... intervals, the violating text is never shown, nothing is stored.
async fn judged_replies_are_cut_while_they_stream(db: TestDb) {
    let (judge, judged) = fake_judge().await;
    let reply = "Here is the summary you asked for. This part is confidential and must not leave. The rest is filler text that goes on for a while longer.";
    let (model, _) = fake_model(reply).await;
    let app = app_with_judge(db, &judge).await;
    let w = World::build(&app).await;
    connect_repo(&app, &w, "Local", "OTHER", &format!("http://{model}/v1")).await;
    let body = policy(&w, "Confidential", 2, json!({ "workspaceId": w.workspace }));
    let (status, _) = rest(&app, &w.ws_admin, Method::POST, "/policy", Some(body)).await;
    assert_eq!(status, 200);
    let conversation = app.create_as(&w.reader, w.repo).await;
    let res = crate::messages::stream::prompt_events(
        &app,
        &w.reader,
        conversation,
        json!({ "prompt": "summarize", "model": "gpt-test" }),
    )
    .await;
    assert_eq!(res.status(), 200);
    let events = crate::messages::stream::sse_events(&res.text().await.expect("events"));
    let (last, deltas) = events.split_last().expect("events");
    let shown: String = deltas
        .iter()
        .map(|(_, d)| d["content"].as_str().expect("content").to_owned())
        .collect();
    assert!(!shown.contains("confidential"), "{shown}");
    assert!(
        reply.starts_with(&shown),
        "only checked text, in order: {shown}"
    );
    assert_eq!(last.0, "error", "{events:?}");
    assert!(
        last.1["message"]
            .as_str()
            .expect("message")
            .starts_with("Blocked by policy \"Confidential\"")
    );
    assert_eq!(
        conversation_state(&app, &w, conversation).await,
        (0, json!("0"), json!("0"))
    );
    // The prompt, then the reply at 10, 20 (+10), 40 (+20) and 80 (+40)
    // characters: not one call per 10 characters.
    let calls = judged.lock().expect("lock").len();
    assert!((2..=6).contains(&calls), "{calls} judge calls");
    app.shutdown().await;
}

/// A judge that answers something other than a judgment has failed: a
/// blocking policy fails closed.
async fn malformed_judgments_fail_closed(db: TestDb) {
    // The "judge" is a model that answers prose.
    let (model, asked) = fake_model("I think it is fine.").await;
    let app = app_with_judge(db, &model).await;
    let w = World::build(&app).await;
    connect_repo(&app, &w, "Local", "OTHER", &format!("http://{model}/v1")).await;
    let (status, _) = rest(
        &app,
        &w.org_admin,
        Method::POST,
        "/policy",
        Some(policy(&w, "Judged", 2, json!({}))),
    )
    .await;
    assert_eq!(status, 200);
    let conversation = app.create_as(&w.reader, w.repo).await;
    let (status, body) = rest(
        &app,
        &w.reader,
        Method::POST,
        &format!("/conversation/{conversation}/prompt"),
        Some(json!({ "prompt": "hello", "model": "gpt-test" })),
    )
    .await;
    assert_eq!(
        (status, body["message"].as_str()),
        (503, Some("Policy evaluation unavailable"))
    );
    assert_eq!(
        *asked.lock().expect("lock"),
        1,
        "the judge call only; the model was not asked"
    );
    app.shutdown().await;
}

/// When the judge is unreachable, a judged blocking policy fails closed
/// (503, nothing sent to the model or stored) and a logging one open (the
/// turn goes on); both are counted.
async fn judges_fail_safe(db: TestDb) {
    let (model, asked) = fake_model("fine").await;
    let app = app_with_judge(db, "127.0.0.1:1").await;
    let w = World::build(&app).await;
    connect_repo(&app, &w, "Local", "OTHER", &format!("http://{model}/v1")).await;
    let (status, blocking) = rest(
        &app,
        &w.org_admin,
        Method::POST,
        "/policy",
        Some(policy(&w, "Judged block", 2, json!({}))),
    )
    .await;
    assert_eq!(status, 200);
    let conversation = app.create_as(&w.reader, w.repo).await;
    let path = format!("/conversation/{conversation}/prompt");
    let (status, body) = rest(
        &app,
        &w.reader,
        Method::POST,
        &path,
        Some(json!({ "prompt": "hello", "model": "gpt-test" })),
    )
    .await;
    assert_eq!(
        (status, body["message"].as_str()),
        (503, Some("Policy evaluation unavailable"))
    );
    let closed = app
        .grpc()
        .await
        .prompt_conversation(as_actor(
            conversation_service::pb::PromptConversationRequest {
                conversation_id: conversation.to_string(),
                prompt: "hello".into(),
                model: "gpt-test".into(),
            },
            &w.reader,
        ))
        .await
        .expect_err("fails closed");
    assert_eq!(
        (closed.code(), closed.message()),
        (tonic::Code::Unavailable, "Policy evaluation unavailable")
    );
    assert_eq!(*asked.lock().expect("lock"), 0, "nothing sent to the model");
    assert_eq!(
        conversation_state(&app, &w, conversation).await,
        (0, json!("0"), json!("0"))
    );
    let id = blocking["policy"]["id"].as_str().expect("id");
    let (status, _) = rest(
        &app,
        &w.org_admin,
        Method::PUT,
        &format!("/policy/{id}"),
        Some(json!({ "actionType": 0 })),
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = rest(
        &app,
        &w.reader,
        Method::POST,
        &path,
        Some(json!({ "prompt": "hello", "model": "gpt-test" })),
    )
    .await;
    assert_eq!(
        (status, body["message"].as_str()),
        (200, Some("fine")),
        "{body}"
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
        metrics.contains(
            "conversation_service_policy_judge_failures_total{outcome=\"fail_closed\"} 2"
        ),
        "{metrics}"
    );
    assert!(
        metrics
            .contains("conversation_service_policy_judge_failures_total{outcome=\"fail_open\"} 2"),
        "{metrics}"
    );
    app.shutdown().await;
}

/// An alerting pattern policy ("Passwords") and a prompt that breaks it: the
/// turn goes on, an alert is raised.
async fn raise_an_alert(app: &TestApp, w: &World) {
    let alerting = json!({ "patterns": ["(?i)password"], "content": "" });
    let body = policy(w, "Passwords", 1, alerting);
    let (status, _) = rest(app, &w.org_admin, Method::POST, "/policy", Some(body)).await;
    assert_eq!(status, 200);
    let conversation = app.create_as(&w.reader, w.repo).await;
    let path = format!("/conversation/{conversation}/prompt");
    let prompt = json!({ "prompt": "my Password is hunter2", "model": "gpt-test" });
    let (status, _) = rest(app, &w.reader, Method::POST, &path, Some(prompt)).await;
    assert_eq!(status, 200, "an alert lets the turn go on");
}

/// An alert reaches the organization's webhook as a signed JSON POST,
/// retried until the receiver answers 2xx; deliveries can be listed.
async fn alerts_reach_the_webhook(db: TestDb) {
    let (judge, _) = fake_judge().await;
    let (model, _) = fake_model("ok").await;
    let received: Arc<Mutex<Vec<(HeaderMap, String)>>> = Arc::default();
    let receiver = {
        let received = received.clone();
        let hook = move |headers: HeaderMap, body: String| async move {
            let mut got = received.lock().expect("lock");
            got.push((headers, body));
            if got.len() < 3 {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::NO_CONTENT
            }
        };
        serve(axum::Router::new().route("/hook", axum::routing::post(hook))).await
    };
    let app = app_with_judge(db, &judge).await;
    let w = World::build(&app).await;
    connect_repo(&app, &w, "Local", "OTHER", &format!("http://{model}/v1")).await;
    let url = format!("http://{receiver}/hook");
    let (status, body) = rest(
        &app,
        &w.ws_admin,
        Method::PUT,
        "/org/webhook",
        Some(json!({ "url": url })),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let (status, set) = rest(
        &app,
        &w.org_admin,
        Method::PUT,
        "/org/webhook",
        Some(json!({ "url": url })),
    )
    .await;
    assert_eq!(status, 200, "{set}");
    let secret = set["secret"].as_str().expect("secret").to_owned();
    let (_, shown) = rest(&app, &w.org_admin, Method::GET, "/org/webhook", None).await;
    assert_eq!(shown["webhook"]["url"], url);
    assert!(
        !shown.to_string().contains(&secret),
        "the secret is shown once"
    );
    raise_an_alert(&app, &w).await;

    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while received.lock().expect("lock").len() < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "the webhook was not retried until delivered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = received.lock().expect("lock").clone();
    let ids: Vec<_> = got
        .iter()
        .map(|(h, _)| h["x-flashback-delivery"].clone())
        .collect();
    assert!(
        ids.windows(2).all(|p| p[0] == p[1]),
        "one delivery, retried"
    );
    for (headers, body) in &got {
        let signature = headers["x-flashback-signature"].to_str().expect("ascii");
        let t: i64 = signature
            .split(',')
            .next()
            .and_then(|t| t.strip_prefix("t="))
            .expect("t")
            .parse()
            .expect("time");
        use hmac::Mac as _;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("key");
        mac.update(format!("{t}.{body}").as_bytes());
        let expected = format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()));
        assert_eq!(signature, expected);
        let age = chrono::Utc::now().timestamp() - t;
        assert!((0..60).contains(&age), "a fresh timestamp: {age} s old");
        let event: Value = serde_json::from_str(body).expect("JSON");
        assert_eq!(
            (
                event["type"].clone(),
                event["policyName"].clone(),
                event["block"].clone()
            ),
            (json!("policy.alert"), json!("Passwords"), json!(false))
        );
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let deliveries = loop {
        let (_, page) = rest(
            &app,
            &w.org_admin,
            Method::GET,
            "/org/webhook/deliveries",
            None,
        )
        .await;
        if page["deliveries"][0]["status"] == "delivered" || std::time::Instant::now() > deadline {
            break page;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(deliveries["total"], 1);
    let d = &deliveries["deliveries"][0];
    assert_eq!(
        (
            d["status"].clone(),
            d["attempts"].clone(),
            d["lastStatus"].clone()
        ),
        (json!("delivered"), json!(3), json!(204))
    );
    app.shutdown().await;
}

/// The same rules over gRPC: managing policies, the webhook, listing
/// violations and alerts, with the same messages and codes.
async fn policies_over_grpc(db: TestDb) {
    use conversation_service::pb::ai::policy_service_client::PolicyServiceClient;
    use conversation_service::pb::ai::{
        CreatePolicyRequest, DeletePolicyRequest, GetPolicyRequest, GetWebhookRequest,
        ListAlertsRequest, ListDeliveriesRequest, ListPoliciesRequest, ListViolationsRequest,
        SetWebhookRequest, UpdatePolicyRequest, ViolationFilter,
    };
    let (judge, _) = fake_judge().await;
    let (model, asked) = fake_model("fine").await;
    let app = app_with_judge(db, &judge).await;
    let w = World::build(&app).await;
    connect_repo(&app, &w, "Local", "OTHER", &format!("http://{model}/v1")).await;
    let mut client = PolicyServiceClient::new(app.channel().await);
    let create = |name: &str, action: i32, workspace: bool| CreatePolicyRequest {
        org_id: w.org.to_string(),
        workspace_id: if workspace {
            w.workspace.to_string()
        } else {
            String::new()
        },
        name: name.into(),
        content: String::new(),
        risk_type: "MEDIUM".into(),
        action_type: action,
        patterns: vec!["TOP-SECRET".into()],
        ..Default::default()
    };
    let refused = client
        .create_policy(as_actor(create("Org", 2, false), &w.ws_admin))
        .await
        .expect_err("workspace admins do not manage organization policies");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    for (mut bad, code, message) in [
        (
            create("Bad", 3, false),
            tonic::Code::InvalidArgument,
            "actionType must be 0 (log), 1 (alert) or 2 (block)",
        ),
        (
            create("Bad", 0, false),
            tonic::Code::InvalidArgument,
            "riskType must be one of LOW, MEDIUM, HIGH",
        ),
        (
            create("Bad", 0, false),
            tonic::Code::InvalidArgument,
            "pattern \"(\" is not a valid regular expression: error: unclosed group",
        ),
    ] {
        if message.starts_with("riskType") {
            bad.risk_type = "SEVERE".into();
        }
        if message.starts_with("pattern") {
            bad.patterns = vec!["(".into()];
        }
        let status = client
            .create_policy(as_actor(bad, &w.org_admin))
            .await
            .expect_err("refused");
        assert_eq!((status.code(), status.message()), (code, message));
    }
    let created = client
        .create_policy(as_actor(create("Secrets", 1, true), &w.ws_admin))
        .await
        .expect("created")
        .into_inner()
        .policy
        .expect("policy");
    assert_eq!(
        (created.workspace_id.as_str(), created.action_type),
        (w.workspace.to_string().as_str(), 1)
    );
    let listed = client
        .list_policies(as_actor(
            ListPoliciesRequest {
                org_id: w.org.to_string(),
                workspace_id: w.workspace.to_string(),
                repo_id: String::new(),
            },
            &w.reader,
        ))
        .await
        .expect("listed")
        .into_inner()
        .policies;
    assert_eq!(
        listed.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
        ["Secrets"]
    );
    let hidden = client
        .get_policy(as_actor(
            GetPolicyRequest {
                id: created.id.clone(),
            },
            &w.other_org_user,
        ))
        .await
        .expect_err("another organization");
    assert_eq!(hidden.code(), tonic::Code::NotFound);
    let updated = client
        .update_policy(as_actor(
            UpdatePolicyRequest {
                id: created.id.clone(),
                action_type: Some(2),
                ..Default::default()
            },
            &w.ws_admin,
        ))
        .await
        .expect("updated")
        .into_inner()
        .policy
        .expect("policy");
    assert_eq!(updated.action_type, 2);
    let empty = client
        .update_policy(as_actor(
            UpdatePolicyRequest {
                id: created.id.clone(),
                ..Default::default()
            },
            &w.ws_admin,
        ))
        .await
        .expect_err("nothing to update");
    assert_eq!(empty.code(), tonic::Code::InvalidArgument);

    // A webhook, then a blocked prompt: its violation and alert, listed.
    let set = client
        .set_webhook(as_actor(
            SetWebhookRequest {
                url: "http://127.0.0.1:1/hook".into(),
            },
            &w.org_admin,
        ))
        .await
        .expect("set")
        .into_inner();
    assert!(set.secret.starts_with("whsec_"));
    let shown = client
        .get_webhook(as_actor(GetWebhookRequest {}, &w.org_admin))
        .await
        .expect("shown")
        .into_inner();
    assert_eq!(
        shown.webhook.expect("webhook").url,
        "http://127.0.0.1:1/hook"
    );
    let denied = client
        .get_webhook(as_actor(GetWebhookRequest {}, &w.reader))
        .await
        .expect_err("admins only");
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    let conversation = app.create_as(&w.reader, w.repo).await;
    let (status, _) = rest(
        &app,
        &w.reader,
        Method::POST,
        &format!("/conversation/{conversation}/prompt"),
        Some(json!({ "prompt": "the TOP-SECRET plan", "model": "gpt-test" })),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(*asked.lock().expect("lock"), 0);
    let violations = client
        .list_violations(as_actor(
            ListViolationsRequest {
                filter: Some(ViolationFilter {
                    workspace_id: w.workspace.to_string(),
                    ..Default::default()
                }),
                severities: vec!["MEDIUM".into()],
                block: Some(true),
            },
            &w.reader,
        ))
        .await
        .expect("violations")
        .into_inner();
    assert_eq!(violations.total, 1);
    assert_eq!(
        (
            violations.violations[0].policy_name.as_str(),
            violations.violations[0].block
        ),
        ("Secrets", true)
    );
    let none = client
        .list_violations(as_actor(
            ListViolationsRequest {
                severities: vec!["HIGH".into()],
                ..Default::default()
            },
            &w.org_admin,
        ))
        .await
        .expect("violations")
        .into_inner();
    assert_eq!(none.total, 0);
    let bad = client
        .list_violations(as_actor(
            ListViolationsRequest {
                severities: vec!["SEVERE".into()],
                ..Default::default()
            },
            &w.org_admin,
        ))
        .await
        .expect_err("bad severity");
    assert_eq!(
        (bad.code(), bad.message()),
        (
            tonic::Code::InvalidArgument,
            "severity must list LOW, MEDIUM or HIGH"
        )
    );
    let alerts = client
        .list_alerts(as_actor(ListAlertsRequest { filter: None }, &w.org_admin))
        .await
        .expect("alerts")
        .into_inner();
    assert_eq!(alerts.total, 1);
    assert!(
        alerts.alerts[0]
            .message
            .starts_with("Policy \"Secrets\" violated by the prompt")
    );
    assert_eq!(alerts.alerts[0].violation_id, violations.violations[0].id);
    let theirs = client
        .list_alerts(as_actor(
            ListAlertsRequest { filter: None },
            &w.other_org_user,
        ))
        .await
        .expect("alerts")
        .into_inner();
    assert_eq!(theirs.total, 0);
    let deliveries = client
        .list_deliveries(as_actor(
            ListDeliveriesRequest { take: 0, skip: 0 },
            &w.org_admin,
        ))
        .await
        .expect("deliveries")
        .into_inner();
    assert_eq!(
        (deliveries.total, deliveries.deliveries[0].alert_id.as_str()),
        (1, alerts.alerts[0].id.as_str())
    );
    client
        .delete_policy(as_actor(
            DeletePolicyRequest {
                id: created.id.clone(),
            },
            &w.ws_admin,
        ))
        .await
        .expect("deleted");
    let gone = client
        .get_policy(as_actor(GetPolicyRequest { id: created.id }, &w.ws_admin))
        .await
        .expect_err("deleted");
    assert_eq!(gone.code(), tonic::Code::NotFound);
    app.shutdown().await;
}

/// Deliveries live in the database: one pending when the service stops is
/// delivered by the next start.
async fn webhook_deliveries_survive_a_restart(db: TestDb) {
    let (judge, _) = fake_judge().await;
    let (model, _) = fake_model("ok").await;
    let open = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let received: Arc<Mutex<u32>> = Arc::default();
    let receiver = {
        let (open, received) = (open.clone(), received.clone());
        let hook = move || async move {
            *received.lock().expect("lock") += 1;
            if open.load(std::sync::atomic::Ordering::SeqCst) {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            }
        };
        serve(axum::Router::new().route("/hook", axum::routing::post(hook))).await
    };
    let key = conversation_service::secrets::MasterKey::generate().1;
    let config = |judge: &str| {
        let mut config = conversation_service::server::Config::local();
        config.secrets.provider_allow_private = true;
        config.secrets.secrets_key = Some(key.clone());
        config.policy.policy_judge_url = Some(format!("http://{judge}/v1"));
        config.policy.policy_judge_model = Some("judge-model".into());
        config.policy.webhook_retry_base = Duration::from_millis(100);
        config
    };
    let app = TestApp::spawn_config(db, config(&judge)).await;
    let w = World::build(&app).await;
    connect_repo(&app, &w, "Local", "OTHER", &format!("http://{model}/v1")).await;
    let url = format!("http://{receiver}/hook");
    let (status, _) = rest(
        &app,
        &w.org_admin,
        Method::PUT,
        "/org/webhook",
        Some(json!({ "url": url })),
    )
    .await;
    assert_eq!(status, 200);
    raise_an_alert(&app, &w).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while *received.lock().expect("lock") == 0 {
        assert!(std::time::Instant::now() < deadline, "no attempt was made");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let db = app.shutdown().await;
    open.store(true, std::sync::atomic::Ordering::SeqCst);
    let app = TestApp::spawn_config(db, config(&judge)).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, page) = rest(
            &app,
            &w.org_admin,
            Method::GET,
            "/org/webhook/deliveries",
            None,
        )
        .await;
        if page["deliveries"][0]["status"] == "delivered" {
            assert_eq!(page["total"], 1);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not delivered after the restart: {page}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.shutdown().await;
}

on_both_backends!(
    webhook_deliveries_survive_a_restart,
    managing_policies,
    policies_over_grpc,
    prompts_are_judged,
    replies_are_cut_while_they_stream,
    judged_replies_are_cut_while_they_stream,
    malformed_judgments_fail_closed,
    judges_fail_safe,
    alerts_reach_the_webhook
);
