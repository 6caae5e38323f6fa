//! The official TypeScript client's usage and feed calls (`getAiStatsDaily`,
//! `getAiStatsMinute`, `getAiLlmStats`, `getSystemEvents`,
//! `markSystemEventAsRead`, `markSystemEventAsUnread`), made as its
//! `makeRequest` makes them (see `providers::client`), each reply checked
//! against its TypeScript interface (`types/ai/stats.ts`,
//! `types/ai/aillm.ts`, `types/platform/systemevent.ts`).

use serde_json::{Value, json};

use crate::harness::{TestDb, World};
use crate::on_both_backends;
use crate::policies::fake_model;
use crate::providers::client::{call, fields, string};
use crate::providers::{app_allowing_private, connect_repo, rest};

/// `AiStatsData`.
fn ai_stats_data(v: &Value) {
    let strings = [
        "repoId",
        "aiLlmId",
        "repoAiApiKeyId",
        "tokensIn",
        "tokensOut",
        "llmTokensIn",
        "llmTokensOut",
        "llmType",
        "llmModel",
        "host",
        "userUuid",
        "conversationUuid",
    ];
    let numbers = [
        "timestamp",
        "activeConversations",
        "apiCalls",
        "policyViolations",
        "numAlerts",
        "numBlocks",
        "numSeverityLow",
        "numSeverityMedium",
        "numSeverityHigh",
        "latency_ms",
    ];
    let all: Vec<&str> = strings.iter().chain(&numbers).copied().collect();
    fields(v, &all, &[]);
    for f in strings {
        string(&v[f]);
    }
    for f in numbers {
        assert!(v[f].is_i64(), "{f} is a number: {v}");
    }
}

/// `SystemEventResponse` (our ids are UUID strings, passed through).
fn system_event(v: &Value) {
    fields(
        v,
        &[
            "id",
            "timestamp",
            "contextId",
            "context",
            "event",
            "orgId",
            "userId",
            "userName",
            "userEmail",
            "workspaceId",
            "jsonData",
            "showUnread",
        ],
        &[],
    );
    for f in [
        "id",
        "timestamp",
        "contextId",
        "context",
        "event",
        "orgId",
        "userId",
        "userName",
        "userEmail",
    ] {
        string(&v[f]);
    }
    for f in ["workspaceId", "jsonData"] {
        assert!(v[f].is_null() || v[f].is_string(), "{f}: string | null");
    }
    assert!(v["showUnread"].is_boolean());
}

async fn the_clients_usage_calls(db: TestDb) {
    let (model, _) = fake_model("Fine.").await;
    let app = app_allowing_private(db).await;
    let w = World::build(&app).await;
    let config = connect_repo(&app, &w, "Local", "OTHER", &format!("http://{model}/v1")).await;
    let id = app.create_as(&w.reader, w.repo).await;
    let (status, _) = rest(
        &app,
        &w.reader,
        reqwest::Method::POST,
        &format!("/conversation/{id}/prompt"),
        Some(json!({ "prompt": "hi", "model": "gpt-test" })),
    )
    .await;
    assert_eq!(status, 200);

    // getAiStatsDaily / getAiStatsMinute: dates as toISOString(), lists
    // joined with commas.
    let now = chrono::Utc::now();
    let iso =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    for (path, start) in [
        ("aistats/daily", now - chrono::TimeDelta::days(7)),
        ("aistats/minute", now - chrono::TimeDelta::minutes(30)),
    ] {
        let query = json!({
            "startDate": iso(start),
            "endDate": iso(now + chrono::TimeDelta::seconds(5)),
            "repoId": format!("{},{}", w.repo, w.other_org_repo),
            "aiLlmId": config,
            "llmModel": "gpt-test",
            "userUuid": w.reader.id.to_string(),
            "conversationUuid": id.to_string(),
        });
        let (status, reply) = call(&app, &w.org_admin, "GET", path, Some(query)).await;
        assert_eq!(status, 200, "{path}: {reply}");
        fields(&reply, &["success", "data"], &["message"]);
        assert_eq!(reply["success"], true);
        let rows = reply["data"].as_array().expect("rows");
        assert_eq!(rows.len(), 1, "{path}: {reply}");
        ai_stats_data(&rows[0]);
        assert_eq!(
            (rows[0]["tokensIn"].as_str(), rows[0]["apiCalls"].as_i64()),
            (Some("5"), Some(1))
        );
        // The client sends no parameters it was not given.
        let (status, reply) = call(&app, &w.reader, "GET", path, None).await;
        assert_eq!(
            (status, reply["data"].as_array().map(Vec::len)),
            (200, Some(1))
        );
    }

    // getAiLlmStats, with and without an id.
    for query in [Some(json!({ "aiLlmId": config })), None] {
        let (status, reply) = call(&app, &w.ws_admin, "GET", "ai/llm/stats", query).await;
        assert_eq!(status, 200, "{reply}");
        fields(&reply, &["success", "stats"], &[]);
        let stats = &reply["stats"][0];
        let totals = [
            "totalApiCalls",
            "totalTokensIn",
            "totalTokensOut",
            "totalLlmTokensIn",
            "totalLlmTokensOut",
            "totalPolicyViolations",
            "totalAlerts",
            "totalBlocks",
        ];
        let mut all = vec!["aiLlmId"];
        all.extend(totals);
        fields(stats, &all, &[]);
        for f in all {
            string(&stats[f]);
        }
        assert_eq!(
            (stats["aiLlmId"].as_str(), stats["totalTokensOut"].as_str()),
            (Some(config.as_str()), Some("3"))
        );
    }

    // getSystemEvents, markSystemEventAsRead (one id, a list) and
    // markSystemEventAsUnread.
    let body = json!({ "skip": 0, "take": 20, "context": 13, "showUnread": true });
    let (status, reply) = call(
        &app,
        &w.org_admin,
        "POST",
        "systemevent",
        Some(body.clone()),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    fields(&reply, &["events", "total", "skip", "take"], &["success"]);
    assert_eq!(
        (
            reply["total"].as_i64(),
            reply["skip"].as_i64(),
            reply["take"].as_i64()
        ),
        (Some(1), Some(0), Some(20))
    );
    let event = &reply["events"][0];
    system_event(event);
    assert_eq!(
        (event["context"].as_str(), event["event"].as_str()),
        (Some("conversation"), Some("created"))
    );
    let event_id = string(&event["id"]).to_owned();
    let (status, reply) = call(
        &app,
        &w.org_admin,
        "POST",
        "systemevent/read",
        Some(json!({ "id": event_id })),
    )
    .await;
    assert_eq!((status, &reply), (200, &json!({ "success": true })));
    let (_, after) = call(
        &app,
        &w.org_admin,
        "POST",
        "systemevent",
        Some(body.clone()),
    )
    .await;
    assert_eq!(after["total"], 0);
    let (status, reply) = call(
        &app,
        &w.org_admin,
        "DELETE",
        "systemevent/read",
        Some(json!({ "ids": [event_id] })),
    )
    .await;
    assert_eq!((status, &reply), (200, &json!({ "success": true })));
    let (_, after) = call(&app, &w.org_admin, "POST", "systemevent", Some(body)).await;
    assert_eq!(after["total"], 1);
    let (status, reply) = call(
        &app,
        &w.org_admin,
        "POST",
        "systemevent/read",
        Some(json!({ "ids": [event_id] })),
    )
    .await;
    assert_eq!((status, reply["success"].as_bool()), (200, Some(true)));
}

on_both_backends!(the_clients_usage_calls);
