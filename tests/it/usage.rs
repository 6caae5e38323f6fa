//! Usage on both transports and both backends: the ledger and its rollups
//! after known prompts against a fake provider and judge with known usage
//! (exact, also under concurrency), the statistics and who sees them,
//! budgets that refuse prompts before the model, and the event feed with
//! each reader's read state.

use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::harness::{Actor, TestApp, TestDb, World, as_actor};
use crate::messages::stream::{prompt_events, sse_events};
use crate::on_both_backends;
use crate::policies::{app_with_judge, fake_judge, fake_model, policy};
use crate::providers::{connect_repo, rest};
use conversation_service::pb::ai::usage_service_client::UsageServiceClient;

/// The fake model's usage per call (prompt_tokens, completion_tokens), and
/// the fake judge's.
const MODEL: (i64, i64) = (5, 3);
const JUDGE: (i64, i64) = (4, 2);

fn num(v: &Value) -> i64 {
    match v {
        Value::String(s) => s.parse().expect("a decimal string"),
        v => v.as_i64().expect("a number"),
    }
}

/// A column's sum over the rows of `data` that `keep` keeps.
fn total(data: &Value, field: &str, keep: impl Fn(&Value) -> bool) -> i64 {
    data.as_array()
        .expect("rows")
        .iter()
        .filter(|r| keep(r))
        .map(|r| num(&r[field]))
        .sum()
}

async fn stats(app: &TestApp, who: &Actor, grain: &str, query: &str) -> (u16, Value) {
    rest(
        app,
        who,
        Method::GET,
        &format!("/aistats/{grain}?{query}"),
        None,
    )
    .await
}

async fn prompt(app: &TestApp, who: &Actor, id: Uuid, text: &str) -> (u16, Value) {
    rest(
        app,
        who,
        Method::POST,
        &format!("/conversation/{id}/prompt"),
        Some(json!({ "prompt": text, "model": "gpt-test" })),
    )
    .await
}

async fn grpc_prompt(
    app: &TestApp,
    who: &Actor,
    id: Uuid,
    text: &str,
) -> Result<(), tonic::Status> {
    app.grpc()
        .await
        .prompt_conversation(as_actor(
            conversation_service::pb::PromptConversationRequest {
                conversation_id: id.to_string(),
                prompt: text.into(),
                model: "gpt-test".into(),
            },
            who,
        ))
        .await
        .map(|_| ())
}

/// A one-row SQL sum over the ledger.
async fn ledger(app: &TestApp, select: &str) -> i64 {
    app.db
        .scalar(&format!("SELECT {select} FROM usage_ledger"))
        .await
}

/// After known prompts (REST, gRPC, streamed) with a judged log policy,
/// the ledger, the daily and minute statistics and the configuration's
/// totals all agree to the token, per user, conversation and model; each
/// user sees what they may, another tenant nothing; bad parameters are
/// named.
async fn statistics_add_up(db: TestDb) {
    let (judge, _) = fake_judge().await;
    let (model, asked) = fake_model("All good.").await;
    let app = app_with_judge(db, &judge).await;
    let w = World::build(&app).await;
    let config = connect_repo(&app, &w, "Local", "OTHER", &format!("http://{model}/v1")).await;
    let (status, _) = rest(
        &app,
        &w.org_admin,
        Method::POST,
        "/policy",
        Some(policy(&w, "Log", 0, json!({}))),
    )
    .await;
    assert_eq!(status, 200);
    let mine = app.create_as(&w.reader, w.repo).await;
    let theirs = app.create_as(&w.writer, w.repo).await;
    for text in ["one", "two", "this is confidential"] {
        assert_eq!(prompt(&app, &w.reader, mine, text).await.0, 200);
    }
    for text in ["three", "four"] {
        grpc_prompt(&app, &w.writer, theirs, text)
            .await
            .expect("prompted");
    }
    let streamed = prompt_events(
        &app,
        &w.writer,
        theirs,
        json!({ "prompt": "five", "model": "gpt-test" }),
    )
    .await
    .text()
    .await
    .expect("body");
    assert_eq!(sse_events(&streamed).last().expect("done").0, "done");
    assert_eq!(*asked.lock().expect("lock"), 6);

    // The ledger: 6 turns, each judged twice (prompt and reply).
    let (turns, judged) = (6, 12);
    assert_eq!(ledger(&app, "COUNT(*)").await, turns + judged);
    assert_eq!(
        ledger(&app, "COALESCE(SUM(tokens_in), 0)").await,
        turns * MODEL.0 + judged * JUDGE.0
    );
    assert_eq!(
        ledger(&app, "COALESCE(SUM(policy_tokens), 0)").await,
        judged * (JUDGE.0 + JUDGE.1)
    );
    assert_eq!(
        app.db
            .scalar(
                "SELECT COUNT(*) FROM usage_ledger WHERE kind = 'prompt' AND outcome = 'completed'"
            )
            .await,
        turns
    );
    // The conversations' totals agree with the ledger's prompt rows.
    assert_eq!(
        app.db
            .scalar("SELECT SUM(tokens_in) FROM conversations")
            .await,
        app.db
            .scalar("SELECT SUM(tokens_in) FROM usage_ledger WHERE kind = 'prompt'")
            .await
    );

    for grain in ["daily", "minute"] {
        let (status, body) = stats(&app, &w.org_admin, grain, "").await;
        assert_eq!(status, 200, "{body}");
        let data = &body["data"];
        let all = |_: &Value| true;
        assert_eq!(total(data, "tokensIn", all), turns * MODEL.0, "{grain}");
        assert_eq!(total(data, "tokensOut", all), turns * MODEL.1);
        assert_eq!(
            total(data, "llmTokensIn", all),
            turns * MODEL.0 + judged * JUDGE.0
        );
        assert_eq!(
            total(data, "llmTokensOut", all),
            turns * MODEL.1 + judged * JUDGE.1
        );
        assert_eq!(total(data, "apiCalls", all), turns + judged);
        assert_eq!(total(data, "policyViolations", all), 1);
        assert_eq!(total(data, "numSeverityHigh", all), 1);
        let of = |id: Uuid| move |r: &Value| r["conversationUuid"] == id.to_string();
        assert_eq!(total(data, "tokensIn", of(mine)), 3 * MODEL.0);
        assert_eq!(total(data, "tokensIn", of(theirs)), 3 * MODEL.0);
        let by = |u: &Actor| {
            let id = u.id.to_string();
            move |r: &Value| r["userUuid"] == id
        };
        assert_eq!(total(data, "apiCalls", by(&w.reader)), 9);
        for row in data.as_array().expect("rows") {
            assert_eq!(row["repoId"], w.repo.to_string());
            assert_eq!(row["aiLlmId"], config);
            assert_eq!(row["llmModel"], "gpt-test");
            assert_eq!(row["llmType"], "OTHER");
            assert_eq!(row["host"], model.split(':').next().expect("host"));
            assert_eq!(row["repoAiApiKeyId"], "");
            assert!(row["timestamp"].as_i64().expect("epoch") > 1_700_000_000);
        }

        // Filters.
        let (_, only) = stats(
            &app,
            &w.org_admin,
            grain,
            &format!("userUuid={}", w.reader.id),
        )
        .await;
        assert_eq!(total(&only["data"], "tokensIn", all), 3 * MODEL.0);
        let (_, only) = stats(
            &app,
            &w.org_admin,
            grain,
            &format!("conversationUuid={theirs},{mine}&llmModel=gpt-test"),
        )
        .await;
        assert_eq!(total(&only["data"], "tokensIn", all), turns * MODEL.0);
        let (_, none) = stats(&app, &w.org_admin, grain, "llmModel=other").await;
        assert_eq!(none["data"], json!([]));
        let (_, none) = stats(
            &app,
            &w.org_admin,
            grain,
            &format!("repoAiApiKeyId={}", Uuid::now_v7()),
        )
        .await;
        assert_eq!(none["data"], json!([]));

        // Who sees what: the reader their own; the workspace administrator
        // the workspace; another organization and a non-member nothing.
        let (_, own) = stats(&app, &w.reader, grain, "").await;
        assert_eq!(total(&own["data"], "tokensIn", all), 3 * MODEL.0);
        let (_, ws) = stats(&app, &w.ws_admin, grain, "").await;
        assert_eq!(total(&ws["data"], "tokensIn", all), turns * MODEL.0);
        for stranger in [&w.other_org_user, &w.outsider] {
            let (status, none) = stats(&app, stranger, grain, "").await;
            assert_eq!((status, &none["data"]), (200, &json!([])));
        }
    }

    // gRPC gives the same rows.
    let mut client = UsageServiceClient::new(app.channel().await);
    let daily = client
        .get_daily_stats(as_actor(
            conversation_service::pb::ai::GetDailyStatsRequest { query: None },
            &w.org_admin,
        ))
        .await
        .expect("stats")
        .into_inner();
    assert_eq!(
        daily.data.iter().map(|r| r.llm_tokens_in).sum::<u64>(),
        u64::try_from(turns * MODEL.0 + judged * JUDGE.0).expect("positive")
    );
    let minute = client
        .get_minute_stats(as_actor(
            conversation_service::pb::ai::GetMinuteStatsRequest {
                query: Some(conversation_service::pb::ai::StatsQuery {
                    user_uuid: w.writer.id.to_string(),
                    ..Default::default()
                }),
            },
            &w.org_admin,
        ))
        .await
        .expect("stats")
        .into_inner();
    assert_eq!(minute.data.iter().map(|r| r.tokens_in).sum::<u64>(), 15);

    // The configuration's totals.
    let (status, body) = rest(
        &app,
        &w.ws_admin,
        Method::GET,
        &format!("/ai/llm/stats?aiLlmId={config}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let t = &body["stats"][0];
    assert_eq!(
        (
            t["aiLlmId"].as_str(),
            num(&t["totalApiCalls"]),
            num(&t["totalTokensIn"]),
            num(&t["totalLlmTokensOut"]),
            num(&t["totalPolicyViolations"]),
            num(&t["totalAlerts"]),
        ),
        (
            Some(config.as_str()),
            turns + judged,
            turns * MODEL.0,
            turns * MODEL.1 + judged * JUDGE.1,
            1,
            0
        )
    );
    let llm = client
        .get_ai_llm_stats(as_actor(
            conversation_service::pb::ai::GetAiLlmStatsRequest {
                ai_llm_id: String::new(),
            },
            &w.org_admin,
        ))
        .await
        .expect("stats")
        .into_inner();
    assert_eq!(llm.stats.len(), 1);
    assert_eq!(llm.stats[0].total_tokens_in, 30);
    let (status, _) = rest(
        &app,
        &w.other_org_user,
        Method::GET,
        &format!("/ai/llm/stats?aiLlmId={config}"),
        None,
    )
    .await;
    assert_eq!(status, 404);

    // Bad input, named, on both transports.
    for (query, message) in [
        (
            "startDate=2026-11-02&endDate=2026-11-01",
            "startDate must be before endDate",
        ),
        (
            "startDate=yesterday",
            "startDate must be an ISO 8601 date or date-time (e.g. 2026-01-31 or 2026-01-31T12:00:00Z)",
        ),
        (
            "repoId=not-a-uuid",
            "repoId must be a comma-separated list of UUIDs",
        ),
        (
            "userUuid=7,8",
            "userUuid must be a comma-separated list of UUIDs",
        ),
        (
            "startDate=2024-01-01&endDate=2026-01-01",
            "startDate to endDate must span at most 366 days for daily statistics",
        ),
    ] {
        let (status, body) = stats(&app, &w.org_admin, "daily", query).await;
        assert_eq!(
            (status, body["message"].as_str()),
            (400, Some(message)),
            "{query}"
        );
    }
    let (status, body) = stats(
        &app,
        &w.org_admin,
        "minute",
        "startDate=2026-11-01T00:00:00Z&endDate=2026-11-03T00:00:00Z",
    )
    .await;
    assert_eq!(
        (status, body["message"].as_str()),
        (
            400,
            Some("startDate to endDate must span at most 24 hours for minute statistics")
        )
    );
    let refused = client
        .get_daily_stats(as_actor(
            conversation_service::pb::ai::GetDailyStatsRequest {
                query: Some(conversation_service::pb::ai::StatsQuery {
                    conversation_uuid: "x".into(),
                    ..Default::default()
                }),
            },
            &w.org_admin,
        ))
        .await
        .expect_err("refused");
    assert_eq!(
        (refused.code(), refused.message()),
        (
            tonic::Code::InvalidArgument,
            "conversationUuid must be a comma-separated list of UUIDs"
        )
    );
}

/// Many prompts at once, on one conversation and across several: the
/// ledger, the rollups and the conversations' totals match the provider's
/// usage to the token.
async fn concurrent_usage_is_exact(db: TestDb) {
    let (model, asked) = fake_model("Fine.").await;
    let app = crate::providers::app_allowing_private(db).await;
    let w = World::build(&app).await;
    connect_repo(&app, &w, "Local", "OTHER", &format!("http://{model}/v1")).await;
    let shared = app.create_as(&w.reader, w.repo).await;
    let mut conversations = vec![shared; 12];
    for _ in 0..4 {
        let own = app.create_as(&w.reader, w.repo).await;
        conversations.extend([own; 3]);
    }
    let calls = conversations.iter().map(|id| {
        let (app, who) = (&app, &w.reader);
        async move { prompt(app, who, *id, "count me").await.0 }
    });
    let statuses = futures_util::future::join_all(calls).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let n = i64::try_from(conversations.len()).expect("small");
    assert_eq!(i64::from(*asked.lock().expect("lock")), n);
    assert_eq!(ledger(&app, "SUM(tokens_in)").await, n * MODEL.0);
    assert_eq!(ledger(&app, "SUM(tokens_out)").await, n * MODEL.1);
    assert_eq!(
        app.db
            .scalar("SELECT SUM(tokens_in) FROM conversations")
            .await,
        n * MODEL.0
    );
    assert_eq!(
        app.db
            .scalar("SELECT SUM(api_calls) FROM usage_rollups WHERE grain = 'day'")
            .await,
        n
    );
    assert_eq!(
        app.db
            .scalar("SELECT SUM(tokens_out) FROM usage_rollups WHERE grain = 'minute'")
            .await,
        n * MODEL.1
    );
    let (_, body) = stats(&app, &w.org_admin, "daily", "").await;
    assert_eq!(total(&body["data"], "tokensIn", |_| true), n * MODEL.0);
    assert_eq!(
        total(&body["data"], "tokensIn", |r| r["conversationUuid"]
            == shared.to_string()),
        12 * MODEL.0
    );
    // A budget set now starts from what the period already used.
    let (status, set) = set_budget(
        &app,
        &w.org_admin,
        json!({ "period": "month", "tokens": 100_000 }),
    )
    .await;
    assert_eq!(status, 200, "{set}");
    assert_eq!(num(&set["budget"]["used"]), n * (MODEL.0 + MODEL.1));
}

async fn set_budget(app: &TestApp, who: &Actor, body: Value) -> (u16, Value) {
    rest(app, who, Method::PUT, "/budget", Some(body)).await
}

/// The service with replies counted as `reply_tokens` in reservations.
async fn app_with_budgets(db: TestDb, reply_tokens: u32) -> TestApp {
    app_with_budgets_and_key(db, reply_tokens, None).await
}

/// The same, with the master key given (so a restarted service opens what
/// the one before it sealed).
async fn app_with_budgets_and_key(
    db: TestDb,
    reply_tokens: u32,
    key: Option<secrecy::SecretString>,
) -> TestApp {
    let mut config = conversation_service::server::Config::local();
    config.secrets.provider_allow_private = true;
    config.secrets.secrets_key = key;
    config.policy.budget_reply_tokens = reply_tokens;
    TestApp::spawn_config(db, config).await
}

/// A workspace budget lets prompts through until it is spent, then refuses
/// them before the model (429 with Retry-After, gRPC RESOURCE_EXHAUSTED);
/// only organization administrators manage budgets; bad budgets are named;
/// clearing one lets prompts through again; metrics show the spend.
async fn budgets_stop_prompts_before_the_model(db: TestDb) {
    let (model, asked) = fake_model("All good.").await;
    let key = conversation_service::secrets::MasterKey::generate().1;
    let app = app_with_budgets_and_key(db, 10, Some(key.clone())).await;
    let w = World::build(&app).await;
    connect_repo(&app, &w, "Local", "OTHER", &format!("http://{model}/v1")).await;
    for (body, status, message) in [
        (
            json!({ "period": "day", "tokens": -5 }),
            400,
            "tokens must be between 1 and 1000000000000000",
        ),
        (
            json!({ "period": "day", "tokens": 0 }),
            400,
            "tokens must be between 1 and 1000000000000000",
        ),
        (
            json!({ "period": "day", "tokens": 10_000_000_000_000_000_i64 }),
            400,
            "tokens must be between 1 and 1000000000000000",
        ),
        (
            json!({ "period": "day", "tokens": "many" }),
            400,
            "tokens must be an integer",
        ),
        (
            json!({ "period": "week", "tokens": 5 }),
            400,
            "period must be \"day\" or \"month\"",
        ),
        (json!({ "tokens": 5 }), 400, "period is required"),
        (json!({ "period": "day" }), 400, "tokens is required"),
        (
            json!({ "period": "day", "tokens": 5, "workspaceId": "nope" }),
            400,
            "workspaceId must be a UUID",
        ),
        (
            json!({ "period": "day", "tokens": 5, "workspaceId": Uuid::now_v7() }),
            404,
            "Workspace not found",
        ),
    ] {
        let (got, reply) = set_budget(&app, &w.org_admin, body.clone()).await;
        assert_eq!(
            (got, reply["message"].as_str()),
            (status, Some(message)),
            "{body}"
        );
    }
    let (status, reply) = set_budget(
        &app,
        &w.ws_admin,
        json!({ "period": "day", "tokens": 40, "workspaceId": w.workspace }),
    )
    .await;
    assert_eq!(
        (status, reply["message"].as_str()),
        (403, Some("Only organization administrators manage budgets"))
    );
    let (status, reply) = set_budget(
        &app,
        &w.other_org_user,
        json!({ "period": "day", "tokens": 40, "workspaceId": w.workspace }),
    )
    .await;
    assert_eq!(status, 404, "{reply}");
    assert_eq!(app.db.scalar("SELECT COUNT(*) FROM budgets").await, 0);

    let (status, reply) = set_budget(
        &app,
        &w.org_admin,
        json!({ "period": "day", "tokens": 40, "workspaceId": w.workspace }),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let budget_id = reply["budget"]["id"].as_str().expect("id").to_owned();
    assert_eq!(
        (
            reply["budget"]["tokens"].as_str(),
            reply["budget"]["used"].as_str()
        ),
        (Some("40"), Some("0"))
    );

    let id = app.create_as(&w.reader, w.repo).await;
    let mut passed = 0;
    let refused = loop {
        let res = app
            .http
            .post(format!("{}/conversation/{id}/prompt", app.base))
            .header("authorization", format!("Bearer {}", w.reader.token))
            .json(&json!({ "prompt": "hi", "model": "gpt-test" }))
            .send()
            .await
            .expect("request");
        if res.status() != 200 {
            break res;
        }
        passed += 1;
        assert!(passed < 10, "the budget never refused");
    };
    assert!(passed >= 1);
    assert_eq!(refused.status(), 429);
    let retry: u64 = refused.headers()["retry-after"]
        .to_str()
        .expect("text")
        .parse()
        .expect("seconds");
    assert!((1..=86_400).contains(&retry), "{retry}");
    let body: Value = refused.json().await.expect("JSON");
    let message = body["message"].as_str().expect("message");
    assert!(
        message.starts_with(&format!(
            "Token budget exceeded: the daily token budget of workspace {} (40 tokens) has {} used",
            w.workspace,
            passed * (MODEL.0 + MODEL.1)
        )),
        "{message}"
    );
    // No model call for the refused prompt, nothing stored for it.
    assert_eq!(i64::from(*asked.lock().expect("lock")), passed);
    assert_eq!(ledger(&app, "COUNT(*)").await, passed);
    let status = grpc_prompt(&app, &w.reader, id, "hi")
        .await
        .expect_err("refused");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert!(status.metadata().get("retry-after").is_some());
    assert_eq!(i64::from(*asked.lock().expect("lock")), passed);
    // The budget holds across a restart: it is rows, not memory.
    let app = app_with_budgets_and_key(app.shutdown().await, 10, Some(key)).await;
    assert_eq!(prompt(&app, &w.reader, id, "hi").await.0, 429);
    assert_eq!(i64::from(*asked.lock().expect("lock")), passed);

    // The spend, through the API and the metrics.
    let (_, list) = rest(&app, &w.org_admin, Method::GET, "/budget", None).await;
    let b = &list["budgets"][0];
    assert_eq!(
        (b["id"].as_str(), num(&b["used"]), num(&b["reserved"])),
        (Some(budget_id.as_str()), passed * 8, 0)
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
        metrics.lines().any(
            |l| l.starts_with("conversation_service_budget_used_tokens{")
                && l.contains(&budget_id)
                && l.ends_with(&format!(" {}", passed * 8))
        ),
        "{metrics}"
    );
    let (status, _) = rest(&app, &w.reader, Method::GET, "/budget", None).await;
    assert_eq!(status, 403);

    // An organization budget applies too; clearing the workspace's lets
    // prompts through.
    let clear = format!("/budget?workspaceId={}&period=day", w.workspace);
    for expected in [200, 404] {
        let (status, _) = rest(&app, &w.org_admin, Method::DELETE, &clear, None).await;
        assert_eq!(status, expected, "the second clear finds none");
    }
    assert_eq!(prompt(&app, &w.reader, id, "hi").await.0, 200);
    let (status, _) = set_budget(
        &app,
        &w.org_admin,
        json!({ "period": "month", "tokens": 1 }),
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = prompt(&app, &w.reader, id, "hi").await;
    assert_eq!(status, 429);
    assert!(
        body["message"]
            .as_str()
            .expect("message")
            .contains(&format!(
                "the monthly token budget of organization {}",
                w.org
            ))
    );

    // gRPC manages budgets with the same rules.
    let mut client = UsageServiceClient::new(app.channel().await);
    let set = client
        .set_budget(as_actor(
            conversation_service::pb::ai::SetBudgetRequest {
                workspace_id: w.workspace.to_string(),
                period: "month".into(),
                tokens: 1_000,
            },
            &w.owner,
        ))
        .await
        .expect("set")
        .into_inner();
    assert_eq!(set.budget.expect("budget").tokens, 1_000);
    let bad = client
        .set_budget(as_actor(
            conversation_service::pb::ai::SetBudgetRequest {
                workspace_id: String::new(),
                period: "day".into(),
                tokens: -1,
            },
            &w.owner,
        ))
        .await
        .expect_err("refused");
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    let listed = client
        .list_budgets(as_actor(
            conversation_service::pb::ai::ListBudgetsRequest::default(),
            &w.org_admin,
        ))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.budgets.len(), 2);
    client
        .clear_budget(as_actor(
            conversation_service::pb::ai::ClearBudgetRequest {
                workspace_id: String::new(),
                period: "month".into(),
            },
            &w.org_admin,
        ))
        .await
        .expect("cleared");
    let denied = client
        .list_budgets(as_actor(
            conversation_service::pb::ai::ListBudgetsRequest::default(),
            &w.writer,
        ))
        .await
        .expect_err("denied");
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
}

/// 40 prompts at once against a small budget: what they spent passes the
/// budget by at most one reservation; each refused prompt reached no model.
async fn concurrent_prompts_hold_a_small_budget(db: TestDb) {
    let (model, asked) = fake_model("Fine.").await;
    let app = app_with_budgets(db, 10).await;
    let w = World::build(&app).await;
    connect_repo(&app, &w, "Local", "OTHER", &format!("http://{model}/v1")).await;
    let budget = 100;
    let (status, _) = set_budget(
        &app,
        &w.org_admin,
        json!({ "period": "day", "tokens": budget, "workspaceId": w.workspace }),
    )
    .await;
    assert_eq!(status, 200);
    let mut conversations = Vec::new();
    for _ in 0..40 {
        conversations.push(app.create_as(&w.reader, w.repo).await);
    }
    let calls = conversations.iter().map(|id| {
        let (app, who) = (&app, &w.reader);
        async move { prompt(app, who, *id, "count me").await.0 }
    });
    let statuses = futures_util::future::join_all(calls).await;
    let passed = statuses.iter().filter(|s| **s == 200).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(passed + refused, 40, "{statuses:?}");
    assert!(passed >= 1 && refused >= 1, "{statuses:?}");
    assert_eq!(
        usize::try_from(*asked.lock().expect("lock")).expect("small"),
        passed
    );
    // One reservation: "count me" (8 bytes: 2 + 4 for the message) and the
    // reply's 10.
    let reservation = 16;
    let spent = ledger(&app, "SUM(tokens_in + tokens_out)").await;
    assert!(spent <= budget + reservation, "spent {spent}");
    let (_, list) = rest(&app, &w.org_admin, Method::GET, "/budget", None).await;
    assert_eq!(num(&list["budgets"][0]["used"]), spent);
    assert_eq!(num(&list["budgets"][0]["reserved"]), 0);
    assert_eq!(
        app.db
            .scalar("SELECT COUNT(*) FROM budget_reservations")
            .await,
        0
    );
}

async fn feed(app: &TestApp, who: &Actor, body: Value) -> (u16, Value) {
    rest(app, who, Method::POST, "/systemevent", Some(body)).await
}

fn contexts(page: &Value) -> Vec<String> {
    page["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            format!(
                "{}/{}",
                e["context"].as_str().expect("context"),
                e["event"].as_str().expect("event")
            )
        })
        .collect()
}

/// The feed lists conversation and configuration events as each user may
/// see them, with read state per user; filters and bad input.
async fn the_feed_has_read_state(db: TestDb) {
    let app = crate::providers::app_allowing_private(db).await;
    let w = World::build(&app).await;
    let config = connect_repo(&app, &w, "Local", "OTHER", "http://127.0.0.1:9/v1").await;
    let conversation = app.create_as(&w.reader, w.repo).await;
    let (status, _) = rest(
        &app,
        &w.reader,
        Method::DELETE,
        &format!("/conversation/{conversation}"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let page = json!({ "skip": 0, "take": 20 });

    let (status, all) = feed(&app, &w.org_admin, page.clone()).await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(
        contexts(&all),
        [
            "conversation/deleted",
            "conversation/created",
            "aillm/attached",
            "aillm/created"
        ]
    );
    assert_eq!(all["total"], 4);
    let first = &all["events"][0];
    assert_eq!(first["showUnread"], true);
    assert_eq!(first["userId"], w.reader.id.to_string());
    assert!(first["userName"].as_str().expect("name").ends_with(" Test"));
    assert!(first["userEmail"].as_str().expect("email").contains('@'));
    assert_eq!(first["contextId"], conversation.to_string());
    assert_eq!(first["workspaceId"], w.workspace.to_string());
    let data: Value =
        serde_json::from_str(first["jsonData"].as_str().expect("JSON text")).expect("JSON");
    assert_eq!(data["transport"], "http");

    // Filters: the platform's numbers.
    let (_, only) = feed(
        &app,
        &w.org_admin,
        json!({ "skip": 0, "take": 20, "context": 13 }),
    )
    .await;
    assert_eq!(
        contexts(&only),
        ["conversation/deleted", "conversation/created"]
    );
    let (_, only) = feed(
        &app,
        &w.org_admin,
        json!({ "skip": 0, "take": 20, "context": 11, "event": 0 }),
    )
    .await;
    assert_eq!(contexts(&only), ["aillm/created"]);
    let (_, only) = feed(
        &app,
        &w.org_admin,
        json!({ "skip": 0, "take": 20, "contextId": config }),
    )
    .await;
    assert_eq!(only["total"], 2);
    let (_, only) = feed(
        &app,
        &w.org_admin,
        json!({ "skip": 1, "take": 1, "userId": w.reader.id }),
    )
    .await;
    assert_eq!(
        (contexts(&only), only["total"].clone()),
        (vec!["conversation/created".to_owned()], json!(2))
    );

    // Who sees what.
    let (_, own) = feed(&app, &w.reader, page.clone()).await;
    assert_eq!(
        contexts(&own),
        ["conversation/deleted", "conversation/created"]
    );
    let (_, ws) = feed(&app, &w.ws_admin, page.clone()).await;
    assert_eq!(ws["total"], 4);
    for stranger in [&w.other_org_user, &w.outsider] {
        let (_, none) = feed(&app, stranger, page.clone()).await;
        assert_eq!(none["total"], 0);
    }

    // Read state is per user.
    let ids: Vec<String> = all["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["id"].as_str().expect("id").to_owned())
        .collect();
    let (status, reply) = rest(
        &app,
        &w.org_admin,
        Method::POST,
        "/systemevent/read",
        Some(json!({ "ids": ids[..2] })),
    )
    .await;
    assert_eq!((status, reply), (200, json!({ "success": true })));
    let (_, unread) = feed(
        &app,
        &w.org_admin,
        json!({ "skip": 0, "take": 20, "showUnread": true }),
    )
    .await;
    assert_eq!(contexts(&unread), ["aillm/attached", "aillm/created"]);
    let (_, theirs) = feed(
        &app,
        &w.ws_admin,
        json!({ "skip": 0, "take": 20, "showUnread": true }),
    )
    .await;
    assert_eq!(theirs["total"], 4);
    let (status, _) = rest(
        &app,
        &w.org_admin,
        Method::DELETE,
        "/systemevent/read",
        Some(json!({ "id": ids[0] })),
    )
    .await;
    assert_eq!(status, 200);
    let (_, unread) = feed(
        &app,
        &w.org_admin,
        json!({ "skip": 0, "take": 20, "showUnread": true }),
    )
    .await;
    assert_eq!(unread["total"], 3);
    // Marking an event one cannot see changes nothing.
    let (status, _) = rest(
        &app,
        &w.other_org_user,
        Method::POST,
        "/systemevent/read",
        Some(json!({ "ids": ids })),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        app.db
            .scalar(&format!(
                "SELECT COUNT(*) FROM system_event_reads WHERE user_id = {}",
                app.db.uuid_literal(w.other_org_user.id)
            ))
            .await,
        0
    );

    // Bad input.
    for (body, message) in [
        (
            json!({ "skip": 0, "take": 101 }),
            "take must be between 1 and 100",
        ),
        (json!({ "skip": -1, "take": 5 }), "skip must be 0 or more"),
        (
            json!({ "take": 5, "context": 18 }),
            "context must be a number from 0 to 17",
        ),
        (
            json!({ "take": 5, "event": 9 }),
            "event must be a number from 0 to 4",
        ),
        (
            json!({ "take": 5, "from_timestamp": "2026-11-02T00:00:00Z", "to_timestamp": "2026-11-01T00:00:00Z" }),
            "from_timestamp must be before to_timestamp",
        ),
        (
            json!({ "take": 5, "from_timestamp": "soon" }),
            "from_timestamp must be an ISO 8601 date or date-time (e.g. 2026-01-31 or 2026-01-31T12:00:00Z)",
        ),
        (json!({ "take": 5, "userId": "7" }), "userId must be a UUID"),
        (
            json!({ "take": 5, "showUnread": "yes" }),
            "showUnread must be true or false",
        ),
    ] {
        let (status, reply) = feed(&app, &w.org_admin, body.clone()).await;
        assert_eq!(
            (status, reply["message"].as_str()),
            (400, Some(message)),
            "{body}"
        );
    }
    for body in [
        json!({}),
        json!({ "ids": ["x"] }),
        json!({ "id": 7 }),
        json!({ "id": Uuid::now_v7(), "ids": [] }),
    ] {
        let (status, _) = rest(
            &app,
            &w.org_admin,
            Method::POST,
            "/systemevent/read",
            Some(body.clone()),
        )
        .await;
        assert_eq!(status, 400, "{body}");
    }

    // gRPC: the same page and read state.
    use conversation_service::pb::ai::system_event_service_client::SystemEventServiceClient;
    let mut client = SystemEventServiceClient::new(app.channel().await);
    let listed = client
        .list_system_events(as_actor(
            conversation_service::pb::ai::ListSystemEventsRequest {
                take: 20,
                show_unread: true,
                ..Default::default()
            },
            &w.org_admin,
        ))
        .await
        .expect("events")
        .into_inner();
    assert_eq!(listed.total, 3);
    client
        .mark_system_events_read(as_actor(
            conversation_service::pb::ai::MarkSystemEventsReadRequest { ids: ids.clone() },
            &w.org_admin,
        ))
        .await
        .expect("marked");
    let listed = client
        .list_system_events(as_actor(
            conversation_service::pb::ai::ListSystemEventsRequest {
                take: 20,
                show_unread: true,
                ..Default::default()
            },
            &w.org_admin,
        ))
        .await
        .expect("events")
        .into_inner();
    assert_eq!(listed.total, 0);
    let bad = client
        .list_system_events(as_actor(
            conversation_service::pb::ai::ListSystemEventsRequest {
                context: Some(40),
                ..Default::default()
            },
            &w.org_admin,
        ))
        .await
        .expect_err("refused");
    assert_eq!(
        (bad.code(), bad.message()),
        (
            tonic::Code::InvalidArgument,
            "context must be a number from 0 to 17"
        )
    );
}

on_both_backends!(
    statistics_add_up,
    concurrent_usage_is_exact,
    budgets_stop_prompts_before_the_model,
    concurrent_prompts_hold_a_small_budget,
    the_feed_has_read_state,
);

/// A prompt whose caller gives up while the model answers (here a gRPC
/// deadline: the server drops the call) releases its reservation at once.
async fn a_dropped_prompt_releases_its_reservation(db: TestDb) {
    let models = || async {
        axum::Json(json!({ "object": "list", "data": [{ "id": "gpt-test", "object": "model" }] }))
    };
    let slow = axum::Router::new().route("/v1/models", axum::routing::get(models)).route(
        "/v1/chat/completions",
        axum::routing::post(|| async {
            tokio::time::sleep(std::time::Duration::from_secs(3)).await;
            axum::Json(json!({
                "id": "c1", "model": "gpt-test",
                "choices": [{ "message": { "role": "assistant", "content": "late" }, "finish_reason": "stop" }],
                "usage": { "prompt_tokens": 5, "completion_tokens": 3 },
            }))
        }),
    );
    let model = crate::providers::serve(slow).await;
    let app = app_with_budgets(db, 10).await;
    let w = World::build(&app).await;
    connect_repo(&app, &w, "Local", "OTHER", &format!("http://{model}/v1")).await;
    let (status, _) = set_budget(
        &app,
        &w.org_admin,
        json!({ "period": "day", "tokens": 1000 }),
    )
    .await;
    assert_eq!(status, 200);
    let id = app.create_as(&w.reader, w.repo).await;
    let mut request = as_actor(
        conversation_service::pb::PromptConversationRequest {
            conversation_id: id.to_string(),
            prompt: "hi".into(),
            model: "gpt-test".into(),
        },
        &w.reader,
    );
    request.set_timeout(std::time::Duration::from_millis(500));
    let status = app
        .grpc()
        .await
        .prompt_conversation(request)
        .await
        .expect_err("the deadline passes first");
    // The client's own timer may fire first; the server's (from the same
    // grpc-timeout) drops the call either way.
    assert!(
        [tonic::Code::DeadlineExceeded, tonic::Code::Cancelled].contains(&status.code()),
        "{status:?}"
    );
    let mut held = -1;
    for _ in 0..50 {
        held = app
            .db
            .scalar("SELECT COUNT(*) FROM budget_reservations")
            .await;
        if held == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(held, 0, "the reservation is released");
    let (_, list) = rest(&app, &w.org_admin, Method::GET, "/budget", None).await;
    assert_eq!(
        (
            num(&list["budgets"][0]["used"]),
            num(&list["budgets"][0]["reserved"])
        ),
        (0, 0)
    );
}

on_both_backends!(a_dropped_prompt_releases_its_reservation);
