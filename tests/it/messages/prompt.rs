//! Prompting without streaming: messages, token totals, titles, access
//! (may_prompt), provider failures and timeouts, concurrent prompts.

use conversation_service::pb::{ListMessagesRequest, StreamPromptConversationRequest};
use serde_json::{Value, json};
use uuid::Uuid;

use super::*;
use crate::harness::{TestDb, World, as_actor};
use crate::on_both_backends;

/// Two turns, one per transport: the context sent, the stored messages, the
/// totals, the title.
async fn turns_are_stored(db: TestDb) {
    let (app, w, id, seen) = with_conversation(db, &[]).await;
    let before = conversation(&app, &w.reader, id).await;

    let (status, first) = prompt_rest(
        &app,
        &w.reader,
        id,
        json!({ "prompt": "How do I add a route?\nWith axum.", "model": "echo" }),
    )
    .await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["success"], true);
    // The platform client's SendPromptResponse: `message` is the reply
    // text; the stored messages travel in their own fields.
    assert_eq!(first["message"], "echo: How do I add a route?\nWith axum.");
    assert_eq!(first["assistantMessage"]["role"], "assistant");
    assert_eq!(
        first["assistantMessage"]["content"],
        "echo: How do I add a route?\nWith axum."
    );
    assert_eq!(first["assistantMessage"]["model"], "echo-2026");
    assert_eq!(first["assistantMessage"]["tokenCount"], 7);
    assert_eq!(
        first["assistantMessage"]["metadata"]["finishReason"],
        "stop"
    );
    assert_eq!(first["userMessage"]["role"], "user");
    assert_eq!(first["userMessage"]["tokenCount"], 10);
    assert_eq!(first["usage"], json!({ "tokensIn": 10, "tokensOut": 7 }));

    let reply = app
        .grpc()
        .await
        .prompt_conversation(prompt_request(&w.reader, id, "And a middleware?", "echo"))
        .await
        .expect("prompted over gRPC")
        .into_inner();
    let usage = reply.usage.expect("usage");
    assert_eq!((usage.tokens_in, usage.tokens_out), (30, 7));
    // The second call carried the first turn as context, and the key.
    {
        let seen = seen.lock().expect("seen");
        let sent = &seen.requests[1]["messages"];
        assert_eq!(
            sent,
            &json!([
                { "role": "user", "content": "How do I add a route?\nWith axum." },
                { "role": "assistant", "content": "echo: How do I add a route?\nWith axum." },
                { "role": "user", "content": "And a middleware?" },
            ])
        );
        assert_eq!(seen.requests[1]["stream"], false);
        assert!(
            seen.authorization
                .iter()
                .all(|a| a == &format!("Bearer {API_KEY}"))
        );
    }

    let (status, listed) = messages_rest(&app, &w.reader, id, "").await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["title"], "How do I add a route?");
    assert_eq!(listed["total"], 4);
    assert_eq!(
        fields(&listed["messages"], "role"),
        ["user", "assistant", "user", "assistant"]
    );
    assert_eq!(listed["messages"][3]["content"], "echo: And a middleware?");
    assert_eq!(listed["messages"][0]["conversationId"], id.to_string());
    let (_, page) = messages_rest(&app, &w.reader, id, "take=2&skip=1").await;
    assert_eq!(
        fields(&page["messages"], "content"),
        [
            "echo: How do I add a route?\nWith axum.",
            "And a middleware?"
        ]
    );
    let over_grpc = app
        .grpc()
        .await
        .list_messages(as_actor(
            ListMessagesRequest {
                conversation_id: id.to_string(),
                take: Some(1),
                skip: None,
            },
            &w.reader,
        ))
        .await
        .expect("listed")
        .into_inner();
    assert_eq!((over_grpc.total, over_grpc.messages.len()), (4, 1));

    let after = conversation(&app, &w.reader, id).await;
    assert_eq!(
        (after["tokensIn"].clone(), after["tokensOut"].clone()),
        (json!("40"), json!("14"))
    );
    assert_eq!(after["title"], "How do I add a route?");
    assert!(after["lastUpdatedAt"].as_str() > before["lastUpdatedAt"].as_str());

    // A hard delete takes the messages with it.
    assert_eq!(
        delete_rest(&app, &w.reader, id, "hardDelete=true").await,
        200
    );
    let (_, left) = app.store.list_messages(id, 100, 0).await.expect("messages");
    assert_eq!(left, 0, "messages removed with their conversation");
    app.shutdown().await;
}

/// Refusals store nothing and say why: bad bodies, no provider, provider
/// failure (502, its secrets kept out) and timeout (504), access.
async fn refusals_store_nothing(db: TestDb) {
    let (app, w, id, _) = with_conversation(db, &["echo", "fail", "slow"]).await;
    let others = app.create_as(&w.writer, w.repo).await;
    let expired = Actor {
        id: w.reader.id,
        token: w.expired_token.clone(),
    };
    let revoked = Actor {
        id: w.reader.id,
        token: w.revoked_token.clone(),
    };
    const REFUSED: &str = "Missing or invalid access token";
    let cases: Vec<(&Actor, Uuid, Value, u16, &str)> = vec![
        // Rule 1 first, even before a bad body.
        (
            &expired,
            id,
            json!({ "prompt": "hi", "model": "echo" }),
            401,
            REFUSED,
        ),
        (
            &revoked,
            id,
            json!({ "prompt": "hi", "model": "echo" }),
            401,
            REFUSED,
        ),
        (
            &w.disabled,
            id,
            json!({ "prompt": "", "model": "echo" }),
            401,
            REFUSED,
        ),
        // Another organization's owner sees nothing of this one.
        (
            &w.other_org_user,
            id,
            json!({ "prompt": "hi", "model": "echo" }),
            404,
            "Conversation not found",
        ),
        (
            &w.reader,
            id,
            json!({ "prompt": "", "model": "echo" }),
            400,
            "prompt must not be empty",
        ),
        (
            &w.reader,
            id,
            json!({ "prompt": "hi" }),
            400,
            "model is required",
        ),
        (
            &w.reader,
            id,
            json!({ "prompt": "hi", "model": "gpt-9" }),
            400,
            "model is not one of the allowed models",
        ),
        (
            &w.reader,
            id,
            json!({ "prompt": 5, "model": "echo" }),
            400,
            "prompt must be a string",
        ),
        (
            &w.reader,
            id,
            json!({ "prompt": "hi", "model": "fail" }),
            502,
            "The model provider failed: HTTP 500 server_error the GPU caught fire",
        ),
        (
            &w.reader,
            id,
            json!({ "prompt": "hi", "model": "slow" }),
            504,
            "The model provider did not answer in time",
        ),
        (
            &w.reader,
            others,
            json!({ "prompt": "hi", "model": "echo" }),
            404,
            "Conversation not found",
        ),
        (
            &w.reader,
            Uuid::now_v7(),
            json!({ "prompt": "hi", "model": "echo" }),
            404,
            "Conversation not found",
        ),
    ];
    for (who, target, body, status, message) in cases {
        let (got, reply) = prompt_rest(&app, who, target, body.clone()).await;
        assert_eq!(
            (got, reply["message"].as_str()),
            (status, Some(message)),
            "{body}"
        );
        assert!(!reply.to_string().contains(API_KEY));
    }
    let (status, _) = messages_rest(&app, &w.reader, id, "").await;
    assert_eq!(status, 200);
    let c = conversation(&app, &w.reader, id).await;
    assert_eq!(
        (c["tokensIn"].clone(), c["title"].clone()),
        (json!("0"), Value::Null)
    );
    let (_, listed) = messages_rest(&app, &w.reader, id, "").await;
    assert_eq!(listed["total"], 0, "nothing stored");

    // Over gRPC: the same callers refused, the provider's failure is
    // UNAVAILABLE, its timeout DEADLINE_EXCEEDED.
    let mut client = app.grpc().await;
    for (who, code) in [
        (&expired, tonic::Code::Unauthenticated),
        (&revoked, tonic::Code::Unauthenticated),
        (&w.disabled, tonic::Code::Unauthenticated),
        (&w.other_org_user, tonic::Code::NotFound),
    ] {
        let status = client
            .prompt_conversation(prompt_request(who, id, "hi", "echo"))
            .await
            .expect_err("refused");
        assert_eq!(status.code(), code);
        let status = client
            .stream_prompt_conversation(as_actor(
                StreamPromptConversationRequest {
                    conversation_id: id.to_string(),
                    prompt: "hi".into(),
                    model: "echo".into(),
                    on_disconnect: 0,
                },
                who,
            ))
            .await
            .expect_err("refused");
        assert_eq!(status.code(), code);
    }
    for (model, code) in [
        ("fail", tonic::Code::Unavailable),
        ("slow", tonic::Code::DeadlineExceeded),
    ] {
        let status = client
            .prompt_conversation(prompt_request(&w.reader, id, "hi", model))
            .await
            .expect_err("refused");
        assert_eq!(status.code(), code);
    }

    // Administrators may prompt what they can see; a reader who lost the
    // workspace may not prompt their own any more; deleted is 404.
    let (status, _) = prompt_rest(
        &app,
        &w.ws_admin,
        others,
        json!({ "prompt": "hi", "model": "echo" }),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = prompt_rest(
        &app,
        &w.org_admin,
        others,
        json!({ "prompt": "hi", "model": "echo" }),
    )
    .await;
    assert_eq!(status, 200);
    app.db
        .exec(&format!(
            "DELETE FROM workspace_members WHERE user_id = {}",
            app.db.uuid_literal(w.writer.id)
        ))
        .await;
    let (status, reply) = prompt_rest(
        &app,
        &w.writer,
        others,
        json!({ "prompt": "hi", "model": "echo" }),
    )
    .await;
    assert_eq!(
        (status, reply["message"].as_str()),
        (403, Some("Insufficient permissions for this workspace"))
    );
    assert_eq!(delete_rest(&app, &w.reader, id, "").await, 200);
    let (status, _) = prompt_rest(
        &app,
        &w.reader,
        id,
        json!({ "prompt": "hi", "model": "echo" }),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = messages_rest(&app, &w.reader, id, "").await;
    assert_eq!(status, 404);
    app.shutdown().await;
}

/// A model the provider does not know (its 404), with no allow list, is a 400.
async fn unknown_model(db: TestDb) {
    let (app, w, id, _) = with_conversation(db, &[]).await;
    let (status, reply) = prompt_rest(
        &app,
        &w.reader,
        id,
        json!({ "prompt": "hi", "model": "missing" }),
    )
    .await;
    assert_eq!(
        (status, reply["message"].as_str()),
        (400, Some("The model provider does not know this model"))
    );
    let refused = app
        .grpc()
        .await
        .prompt_conversation(prompt_request(&w.reader, id, "hi", "missing"))
        .await
        .expect_err("unknown model");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    let (_, listed) = messages_rest(&app, &w.reader, id, "").await;
    assert_eq!(listed["total"], 0, "nothing stored");
    app.shutdown().await;
}

/// Without any provider (no configuration attached, no operator provider),
/// prompting is a clear 400 / INVALID_ARGUMENT.
async fn no_provider(db: TestDb) {
    let app = app_with_provider(db, None, &[]).await;
    let w = World::build(&app).await;
    let id = app.create_as(&w.reader, w.repo).await;
    let (status, reply) = prompt_rest(
        &app,
        &w.reader,
        id,
        json!({ "prompt": "hi", "model": "echo" }),
    )
    .await;
    // Issue 14: a repository with no configuration attached uses the
    // operator's provider; with neither, the prompt is refused.
    assert_eq!(
        (status, reply["message"].as_str()),
        (400, Some("No AI provider is attached to this repository"))
    );
    app.shutdown().await;
}

/// Ten prompts to one conversation at once: twenty messages, each user
/// message followed by its own answer, and every token counted.
async fn concurrent_prompts(db: TestDb) {
    let (app, w, id, _) = with_conversation(db, &[]).await;
    let app = Arc::new(app);
    let mut prompts = tokio::task::JoinSet::new();
    for i in 0..10 {
        let (app, reader) = (app.clone(), w.reader.clone());
        prompts.spawn(async move {
            let (status, reply) = prompt_rest(
                &app,
                &reader,
                id,
                json!({ "prompt": format!("question {i}"), "model": "echo" }),
            )
            .await;
            assert_eq!(status, 200, "{reply}");
            reply["usage"]["tokensIn"].as_u64().expect("usage")
        });
    }
    let mut tokens_in = 0;
    while let Some(t) = prompts.join_next().await {
        tokens_in += t.expect("prompt");
    }
    let (_, listed) = messages_rest(&app, &w.reader, id, "take=100").await;
    let messages = listed["messages"].as_array().expect("messages");
    assert_eq!(messages.len(), 20);
    for pair in messages.chunks(2) {
        assert_eq!(
            (pair[0]["role"].as_str(), pair[1]["role"].as_str()),
            (Some("user"), Some("assistant"))
        );
        assert_eq!(
            pair[1]["content"].as_str().expect("answer"),
            format!("echo: {}", pair[0]["content"].as_str().expect("question"))
        );
    }
    let c = conversation(&app, &w.reader, id).await;
    assert_eq!(c["tokensIn"], json!(tokens_in.to_string()));
    assert_eq!(c["tokensOut"], json!("70"));
    Arc::into_inner(app).expect("last handle").shutdown().await;
}

/// A turn's context is the conversation's latest 200 messages, oldest
/// first (read newest first from the index, no count, no `OFFSET`). The 250
/// messages are written by hand, without moving the conversation's
/// `last_seq` (as a replica running older code would, during a rolling
/// upgrade): the turn is still numbered after them.
async fn context_is_the_latest_messages(db: TestDb) {
    let (app, w, id, seen) = with_conversation(db, &[]).await;
    let sql = match app.db.backend {
        conversation_service::store::Backend::Postgres => format!(
            "INSERT INTO messages (id, conversation_id, seq, role, content, model, token_count, metadata, created_at) \
             SELECT gen_random_uuid(), {c}, i, CASE WHEN i % 2 = 1 THEN 'user' ELSE 'assistant' END, \
             'm' || i, 'echo', 1, '{{}}'::jsonb, now() FROM generate_series(1, 250) AS i",
            c = app.db.uuid_literal(id)
        ),
        conversation_service::store::Backend::Sqlite => format!(
            "WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < 250) \
             INSERT INTO messages (id, conversation_id, seq, role, content, model, token_count, metadata, created_at) \
             SELECT randomblob(16), {c}, i, CASE WHEN i % 2 = 1 THEN 'user' ELSE 'assistant' END, \
             'm' || i, 'echo', 1, '{{}}', strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z' FROM seq",
            c = app.db.uuid_literal(id)
        ),
    };
    app.db.exec(&sql).await;
    let (status, reply) = prompt_rest(
        &app,
        &w.reader,
        id,
        json!({ "prompt": "next", "model": "echo" }),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let sent = seen.lock().expect("seen").requests[0]["messages"].clone();
    let contents = fields(&sent, "content");
    // The latest 200 of the 250 (51 to 250), oldest first, then the prompt.
    let history: Vec<String> = (51..=250).map(|i| format!("m{i}")).collect();
    let tail = &contents[contents.len() - 201..];
    assert_eq!(
        &tail[..200],
        history.iter().map(String::as_str).collect::<Vec<_>>()
    );
    assert_eq!(tail[200], "next");
    assert!(!contents.contains(&"m50"), "{contents:?}");
    // A page deep into the messages is the range after `skip`; the total
    // counts the turn just stored.
    let (status, page) = messages_rest(&app, &w.reader, id, "take=5&skip=248").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["total"], 252);
    assert_eq!(
        fields(&page["messages"], "content"),
        ["m249", "m250", "next", "echo: next"]
    );
    let deep = app
        .grpc()
        .await
        .list_messages(as_actor(
            ListMessagesRequest {
                conversation_id: id.to_string(),
                take: Some(5),
                skip: Some(248),
            },
            &w.reader,
        ))
        .await
        .expect("listed over gRPC")
        .into_inner();
    let contents: Vec<&str> = deep.messages.iter().map(|m| m.content.as_str()).collect();
    assert_eq!(
        (deep.total, contents),
        (252, vec!["m249", "m250", "next", "echo: next"])
    );
    let (_, past) = messages_rest(&app, &w.reader, id, "take=5&skip=252").await;
    assert_eq!(
        (past["total"].clone(), past["messages"].clone()),
        (json!(252), json!([]))
    );
    app.shutdown().await;
}

/// A turn's context is kept by the process that stored the turn before it
/// (the next turn reads no messages), and served only at the
/// conversation's version: a turn stored by another replica is in the next
/// context here.
async fn kept_contexts_see_other_replicas(db: TestDb) {
    let (app, w, id, seen, url) = one_connection_app(db).await;
    let other = crate::harness::Process::start_with(
        &app.db.url,
        &["--provider-url", &url],
        &[("RUST_LOG", "warn")],
    )
    .await;
    let log = crate::harness::StatementLog::attach(&app).await;
    let here = |prompt: &'static str| {
        prompt_rest(
            &app,
            &w.reader,
            id,
            json!({ "prompt": prompt, "model": "echo" }),
        )
    };
    let (status, reply) = here("first").await;
    assert_eq!(status, 200, "{reply}");
    let mark = log.mark();
    let (status, reply) = here("second").await;
    assert_eq!(status, 200, "{reply}");
    let reads: Vec<String> = log
        .sent_since(mark)
        .into_iter()
        .map(|sql| sql.replace(['"', '`'], ""))
        .filter(|sql| sql.starts_with("SELECT") && sql.contains("messages.content"))
        .collect();
    assert!(
        reads.is_empty(),
        "the kept context was read again: {reads:#?}"
    );
    let elsewhere = reqwest::Client::new()
        .post(format!("{}/conversation/{id}/prompt", other.http))
        .header("authorization", format!("Bearer {}", w.reader.token))
        .json(&json!({ "prompt": "elsewhere", "model": "echo" }))
        .send()
        .await
        .expect("prompt on the other replica");
    assert_eq!(elsewhere.status(), 200);
    // Over gRPC here: the kept context is the service's, whatever the
    // transport.
    app.grpc()
        .await
        .prompt_conversation(prompt_request(&w.reader, id, "third", "echo"))
        .await
        .expect("prompted over gRPC");
    let sent: Vec<Vec<String>> = seen
        .lock()
        .expect("seen")
        .requests
        .iter()
        .map(|r| {
            fields(&r["messages"], "content")
                .into_iter()
                .map(str::to_owned)
                .collect()
        })
        .collect();
    let turns = |prompts: &[&str]| -> Vec<String> {
        prompts
            .iter()
            .flat_map(|p| [p.to_string(), format!("echo: {p}")])
            .collect()
    };
    let mut second = turns(&["first"]);
    second.push("second".into());
    let mut third = turns(&["first", "second", "elsewhere"]);
    third.push("third".into());
    assert_eq!(sent.len(), 4, "{sent:#?}");
    assert_eq!(sent[1], second);
    assert_eq!(sent[3], third);
    drop(other);
    app.shutdown().await;
}

/// Every statement of a turn (plain on both transports, streamed, and the
/// listing of its messages) is prepared once per connection and reused
/// after: none is parsed and planned anew per turn.
async fn turn_statements_are_prepared_once(db: TestDb) {
    let (app, w, id, _, _) = one_connection_app(db).await;
    let log = crate::harness::StatementLog::attach(&app).await;
    let mut second_round = 0;
    for round in 0..2 {
        if round == 1 {
            second_round = log.mark();
        }
        let body = json!({ "prompt": format!("round {round}"), "model": "echo" });
        let (status, reply) = prompt_rest(&app, &w.reader, id, body.clone()).await;
        assert_eq!(status, 200, "{reply}");
        app.grpc()
            .await
            .prompt_conversation(prompt_request(&w.reader, id, "over gRPC", "echo"))
            .await
            .expect("prompted over gRPC");
        let streamed = super::stream::prompt_events(&app, &w.reader, id, body).await;
        assert_eq!(streamed.status(), 200);
        let events = super::stream::sse_events(&streamed.text().await.expect("body"));
        assert!(events.iter().any(|(e, _)| e == "done"), "{events:?}");
        let (status, _) = messages_rest(&app, &w.reader, id, "take=2&skip=1").await;
        assert_eq!(status, 200);
        // The stream's log is written behind the events: let it settle.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let sent = log.sent_since(second_round);
    assert!(
        sent.iter().any(|sql| sql
            .replace(['"', '`'], "")
            .contains("INSERT INTO messages ")),
        "the second round stores turns: {sent:#?}"
    );
    let fresh = log.unprepared_since(second_round);
    assert!(
        fresh.is_empty(),
        "prepared again for every turn: {fresh:#?}"
    );
    let (_, listed) = messages_rest(&app, &w.reader, id, "take=1").await;
    assert_eq!(listed["total"], 12);
    app.shutdown().await;
}

/// A turn whose last write fails (its rollups, refused by a trigger) stores
/// nothing, over either transport: no message, no token, no ledger row, no
/// message number taken, nothing kept for the next turn's context; the
/// caller is told of a failure without its cause. The next turn is stored as
/// if the failed ones never were.
async fn a_turn_that_cannot_be_stored_leaves_nothing(db: TestDb) {
    let (app, w, id, seen) = with_conversation(db, &["echo"]).await;
    let refuse = match app.db.backend {
        conversation_service::store::Backend::Postgres => {
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'trigger-refusal'; END $$; \
             CREATE TRIGGER refuse BEFORE INSERT ON usage_rollups \
             FOR EACH ROW EXECUTE FUNCTION refuse();"
        }
        conversation_service::store::Backend::Sqlite => {
            "CREATE TRIGGER refuse BEFORE INSERT ON usage_rollups \
             BEGIN SELECT RAISE(ABORT, 'trigger-refusal'); END;"
        }
    };
    app.db.exec(refuse).await;
    let body = json!({ "prompt": "lost", "model": "echo" });
    let (status, reply) = prompt_rest(&app, &w.reader, id, body).await;
    assert_eq!(status, 500, "{reply}");
    assert!(!reply.to_string().contains("trigger-refusal"), "{reply}");
    let refused = app
        .grpc()
        .await
        .prompt_conversation(prompt_request(&w.reader, id, "lost too", "echo"))
        .await
        .expect_err("the turn is not stored");
    assert_eq!(refused.code(), tonic::Code::Internal, "{refused:?}");
    assert!(
        !refused.message().contains("trigger-refusal"),
        "{refused:?}"
    );
    assert_eq!(
        seen.lock().expect("seen").requests.len(),
        2,
        "the model was asked twice"
    );
    for table in ["messages", "usage_ledger", "usage_rollups"] {
        let rows = app
            .db
            .scalar(&format!("SELECT count(*) FROM {table}"))
            .await;
        assert_eq!(rows, 0, "{table}");
    }
    let c = conversation(&app, &w.reader, id).await;
    assert_eq!(c["tokensIn"], json!("0"), "{c}");
    assert_eq!(c["tokensOut"], json!("0"), "{c}");
    assert_eq!(c["title"], Value::Null, "{c}");

    let pg = app.db.backend == conversation_service::store::Backend::Postgres;
    let on = if pg { " ON usage_rollups" } else { "" };
    app.db.exec(&format!("DROP TRIGGER refuse{on}")).await;
    let body = json!({ "prompt": "kept", "model": "echo" });
    let (status, reply) = prompt_rest(&app, &w.reader, id, body).await;
    assert_eq!(status, 200, "{reply}");
    let sent = seen.lock().expect("seen").requests[2]["messages"].clone();
    assert_eq!(
        fields(&sent, "content"),
        ["kept"],
        "nothing of the failed turns"
    );
    let (_, listed) = messages_rest(&app, &w.reader, id, "take=10").await;
    assert_eq!(listed["total"], 2, "{listed}");
    assert_eq!(
        fields(&listed["messages"], "content"),
        ["kept", "echo: kept"]
    );
    let seqs = "SELECT sum(seq) FROM messages";
    assert_eq!(app.db.scalar(seqs).await, 3, "numbered 1 and 2");
    assert_eq!(app.db.scalar("SELECT count(*) FROM usage_ledger").await, 1);
    app.shutdown().await;
}

on_both_backends!(
    a_turn_that_cannot_be_stored_leaves_nothing,
    context_is_the_latest_messages,
    kept_contexts_see_other_replicas,
    turn_statements_are_prepared_once,
    turns_are_stored,
    refusals_store_nothing,
    no_provider,
    unknown_model,
    concurrent_prompts
);
