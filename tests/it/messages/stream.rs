//! Prompting with streaming, on both transports: the pieces add up to the
//! stored reply; a caller who leaves, or a provider that breaks off, leaves
//! no turn.

use std::time::Duration;

use conversation_service::store::Backend;
use serde_json::{Value, json};
use uuid::Uuid;

use super::*;
use crate::harness::{TestApp, TestDb, as_actor};
use crate::on_both_backends;

/// The events of a server-sent-event body: (event, data as JSON).
pub(crate) fn sse_events(body: &str) -> Vec<(String, Value)> {
    body.split("\n\n")
        .filter_map(|block| {
            let mut event = String::new();
            let mut data = None;
            for line in block.lines() {
                if let Some(e) = line.strip_prefix("event:") {
                    event = e.trim().to_owned();
                } else if let Some(d) = line.strip_prefix("data:") {
                    data = serde_json::from_str(d.trim()).ok();
                }
            }
            data.map(|d| (event, d))
        })
        .collect()
}

pub(crate) async fn prompt_events(
    app: &TestApp,
    who: &Actor,
    id: Uuid,
    body: Value,
) -> reqwest::Response {
    app.http
        .post(format!("{}/conversation/{id}/prompt", app.base))
        .header("authorization", format!("Bearer {}", who.token))
        .header("content-type", "application/json")
        .header("accept", "text/event-stream")
        .body(body.to_string())
        .send()
        .await
        .expect("request")
}

async fn grpc_stream(
    app: &TestApp,
    who: &Actor,
    id: Uuid,
    prompt: &str,
    model: &str,
) -> tonic::Streaming<conversation_service::pb::StreamPromptConversationResponse> {
    let request = conversation_service::pb::StreamPromptConversationRequest {
        conversation_id: id.to_string(),
        prompt: prompt.into(),
        model: model.into(),
        ..Default::default()
    };
    app.grpc()
        .await
        .stream_prompt_conversation(as_actor(request, who))
        .await
        .expect("streaming")
        .into_inner()
}

/// Streaming over both transports: the deltas add up to the stored reply,
/// which is what the reply without streaming would have been; a caller who
/// leaves mid-stream, or a provider that breaks off, leaves no turn.
async fn streamed_turns(db: TestDb) {
    use conversation_service::pb::stream_prompt_conversation_response::Event;
    let (app, w, id, _) = with_conversation(db, &[]).await;

    // REST, text/event-stream.
    let body = json!({ "prompt": "stream me please", "model": "echo" });
    let res = prompt_events(&app, &w.reader, id, body).await;
    assert_eq!(res.status(), 200);
    let kind = res.headers()["content-type"].to_str().expect("ascii");
    assert!(kind.starts_with("text/event-stream"), "{kind}");
    let events = sse_events(&res.text().await.expect("body"));
    let (deltas, rest): (Vec<_>, Vec<_>) = events.iter().partition(|(e, _)| e == "delta");
    let streamed: String = deltas
        .iter()
        .map(|(_, d)| d["content"].as_str().expect("piece"))
        .collect();
    assert!(deltas.len() > 2, "several pieces: {deltas:?}");
    assert_eq!(streamed, "echo: stream me please");
    assert_eq!(rest.len(), 1);
    let (kind, done) = rest[0];
    assert_eq!(kind, "done");
    assert_eq!(done["success"], true);
    assert_eq!(done["message"], "echo: stream me please");
    assert_eq!(
        done["assistantMessage"]["content"],
        "echo: stream me please"
    );
    assert_eq!(done["usage"], json!({ "tokensIn": 11, "tokensOut": 4 }));
    let (_, listed) = messages_rest(&app, &w.reader, id, "").await;
    assert_eq!(listed["total"], 2);
    assert_eq!(listed["messages"][1]["content"], "echo: stream me please");
    assert_eq!(listed["title"], "stream me please");

    // gRPC, server streaming.
    let mut stream = grpc_stream(&app, &w.reader, id, "and again", "echo").await;
    let (mut pieces, mut done) = (String::new(), None);
    while let Some(event) = stream.message().await.expect("event") {
        match event.event.expect("event") {
            Event::Delta(piece) => pieces.push_str(&piece),
            Event::Done(reply) => done = Some(reply),
        }
    }
    let done = done.expect("done last");
    assert_eq!(pieces, "echo: and again");
    assert_eq!(done.assistant_message.expect("message").content, pieces);

    // Refusals before the model is asked keep their status.
    let res = prompt_events(
        &app,
        &w.reader,
        id,
        json!({ "prompt": "", "model": "echo" }),
    )
    .await;
    assert_eq!(res.status(), 400);

    // The caller leaves mid-stream: nothing is stored.
    let body = json!({ "prompt": "long one", "model": "slow-stream" });
    let mut res = prompt_events(&app, &w.reader, id, body).await;
    assert_eq!(res.status(), 200);
    let first = res.chunk().await.expect("read").expect("a first event");
    assert!(!first.is_empty());
    drop(res);
    let mut stream = grpc_stream(&app, &w.reader, id, "long two", "slow-stream").await;
    assert!(stream.message().await.expect("event").is_some());
    drop(stream);

    // The provider breaks off: an error event / UNAVAILABLE, nothing stored.
    let res = prompt_events(
        &app,
        &w.reader,
        id,
        json!({ "prompt": "x", "model": "break" }),
    )
    .await;
    let events = sse_events(&res.text().await.expect("body"));
    let last = events.last().expect("events");
    assert_eq!(last.0, "error");
    assert_eq!(
        last.1["message"],
        "The model provider failed: the reply ended before [DONE]"
    );
    let mut stream = grpc_stream(&app, &w.reader, id, "x", "break").await;
    let failed = loop {
        match stream.message().await {
            Ok(Some(_)) => {}
            Ok(None) => break None,
            Err(status) => break Some(status.code()),
        }
    };
    assert_eq!(failed, Some(tonic::Code::Unavailable));

    // Past the slow streams' end: still only the two finished turns.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let (_, listed) = messages_rest(&app, &w.reader, id, "").await;
    assert_eq!(listed["total"], 4, "{listed}");
    let c = conversation(&app, &w.reader, id).await;
    assert_eq!(c["tokensIn"], json!("22"));
    app.shutdown().await;
}

/// A stream whose start cannot be logged fails (500, nothing stored), and
/// the model call already under way for it is stopped, not left to run to
/// its end: the provider sees its reply dropped within a piece or two.
async fn a_stream_that_cannot_start_stops_its_model(db: TestDb) {
    // The provider: 20 pieces, 200 ms apart; records whether it was asked
    // at all and whether its reply body was dropped before it was done.
    #[derive(Default)]
    struct Outcome {
        asked: bool,
        finished: Option<bool>,
    }
    struct Watch(Arc<Mutex<Outcome>>, bool);
    impl Drop for Watch {
        fn drop(&mut self) {
            self.0.lock().expect("outcome").finished = Some(self.1);
        }
    }
    let outcome = Arc::new(Mutex::new(Outcome::default()));
    let seen = outcome.clone();
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(move || {
            seen.lock().expect("outcome").asked = true;
            let watch = Watch(seen.clone(), false);
            async move {
                let body = futures_util::stream::unfold((0, watch), |(i, mut watch)| async move {
                    if i == 20 {
                        watch.1 = true;
                        drop(watch);
                        return None;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    let piece = json!({ "choices": [{ "index": 0, "delta": { "content": "x " }, "finish_reason": null }] });
                    let event = bytes::Bytes::from(format!("data: {piece}\n\n"));
                    Some((Ok::<_, std::convert::Infallible>(event), (i + 1, watch)))
                });
                (
                    [(axum::http::header::CONTENT_TYPE, "text/event-stream")],
                    axum::body::Body::from_stream(body),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/v1", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    // Given all the time the reply takes (no time limit stops it).
    let app = app_with_provider_timeout(db, Some(url), &[], Duration::from_secs(30)).await;
    let w = crate::harness::World::build(&app).await;
    let id = app.create_as(&w.reader, w.repo).await;
    // The stream's log cannot be written. On PostgreSQL the write fails
    // only after half a second, so that the model has surely been asked.
    let refuse = match app.db.backend {
        Backend::Postgres => {
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN PERFORM pg_sleep(0.5); RAISE EXCEPTION 'trigger-refusal'; END $$; \
             CREATE TRIGGER refuse BEFORE INSERT ON prompt_streams \
             FOR EACH ROW EXECUTE FUNCTION refuse()"
        }
        Backend::Sqlite => "ALTER TABLE prompt_streams RENAME TO prompt_streams_away",
    };
    app.db.exec(refuse).await;
    let started = std::time::Instant::now();
    let res = prompt_events(&app, &w.reader, id, json!({ "prompt": "hi", "model": "m" })).await;
    assert_eq!(res.status(), 500);
    let body = res.text().await.expect("body");
    assert!(
        !body.contains("prompt_streams") && !body.contains("trigger-refusal"),
        "internals leaked: {body}"
    );
    // The model call is stopped: its reply dropped unfinished, long before
    // the 4 s it would take, or (when the log failed first) the model was
    // never asked at all.
    loop {
        let (asked, finished) = {
            let now = outcome.lock().expect("outcome");
            (now.asked, now.finished)
        };
        if let Some(finished) = finished {
            assert!(!finished, "the reply ran to its end");
            break;
        }
        if started.elapsed() >= Duration::from_secs(3) {
            assert!(!asked, "the model call still runs");
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(app.db.scalar("SELECT count(*) FROM messages").await, 0);
    app.shutdown().await;
}

/// A conversation deleted while its model answers keeps no turn: the
/// stream ends with 404, no message is stored, its totals stay, and what
/// the model used is recorded as cancelled, not as a turn.
async fn a_conversation_deleted_meanwhile_keeps_no_turn(db: TestDb) {
    // Given all the time the reply takes (23 events, 300 ms apart).
    let (url, _) = fake_provider().await;
    let app =
        app_with_provider_timeout(db, Some(url), &["slow-stream"], Duration::from_secs(30)).await;
    let w = crate::harness::World::build(&app).await;
    let id = app.create_as(&w.reader, w.repo).await;
    let res = prompt_events(
        &app,
        &w.reader,
        id,
        json!({ "prompt": "hi", "model": "slow-stream" }),
    )
    .await;
    assert_eq!(res.status(), 200);
    // While the model answers (a piece every 300 ms).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(delete_rest(&app, &w.reader, id, "").await, 200);
    let events = super::resume::parse_sse(&res.text().await.expect("body"));
    let last = events.last().expect("events");
    assert_eq!(
        (last.event.as_str(), last.data["message"].as_str()),
        ("error", Some("Conversation not found")),
        "{events:?}"
    );
    assert!(events.iter().any(|e| e.event == "delta"), "{events:?}");
    assert_eq!(app.db.scalar("SELECT count(*) FROM messages").await, 0);
    assert_eq!(
        app.db
            .scalar("SELECT coalesce(sum(tokens_in + tokens_out), 0) FROM conversations")
            .await,
        0
    );
    assert_eq!(
        app.db
            .scalar("SELECT count(*) FROM usage_ledger WHERE outcome <> 'cancelled'")
            .await,
        0
    );
    assert!(
        app.db
            .scalar("SELECT count(*) FROM usage_ledger WHERE outcome = 'cancelled'")
            .await
            > 0
    );
    app.shutdown().await;
}

on_both_backends!(
    streamed_turns,
    a_stream_that_cannot_start_stops_its_model,
    a_conversation_deleted_meanwhile_keeps_no_turn
);
