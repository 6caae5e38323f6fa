//! Resumable streams, on both transports and both backends: a stream cut
//! mid-way and resumed from the last event received gives every event
//! exactly once; the turn goes on without its caller when asked to, and is
//! cancelled (with resumers told so) when not; a finished stream can be
//! read again; a dead replica's stream ends with an error.

use std::time::Duration;

use conversation_service::pb::stream_prompt_conversation_response::Event;
use conversation_service::pb::{
    OnDisconnect, ResumePromptStreamRequest, StreamPromptConversationRequest,
    resume_prompt_stream_response::Event as Resumed,
};
use conversation_service::store::streams::StreamRow;
use serde_json::{Value, json};
use uuid::Uuid;

use super::stream::prompt_events;
use super::*;
use crate::harness::{TestDb, as_actor};
use crate::on_both_backends;

/// One server-sent event: its id (`turn:seq`), name and data.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sse {
    pub id: String,
    pub event: String,
    pub data: Value,
}

/// The complete events in `text` (those followed by a blank line).
pub(crate) fn parse_sse(text: &str) -> Vec<Sse> {
    let complete = match text.rfind("\n\n") {
        Some(end) => &text[..end],
        None => return Vec::new(),
    };
    complete
        .split("\n\n")
        .filter_map(|block| {
            let (mut id, mut event, mut data) = (String::new(), String::new(), None);
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("event:") {
                    event = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data = serde_json::from_str(v.trim()).ok();
                }
            }
            data.map(|data| Sse { id, event, data })
        })
        .collect()
}

/// Reads a streamed reply until `n` events have come; returns them (the
/// connection is then dropped: the stream is cut).
pub(crate) async fn first_events(mut res: reqwest::Response, n: usize) -> Vec<Sse> {
    let mut text = String::new();
    loop {
        let events = parse_sse(&text);
        if events.len() >= n {
            return events;
        }
        let chunk = res.chunk().await.expect("read").expect("more events");
        text.push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
    }
}

/// The turn a streamed prompt's reply names (`Prompt-Turn-Id`).
pub(crate) fn turn_of(res: &reqwest::Response) -> String {
    res.headers()["prompt-turn-id"]
        .to_str()
        .expect("ascii")
        .to_owned()
}

/// GET .../prompt/{turn}/events with `Last-Event-ID` (or a query).
pub(crate) async fn resume_rest(
    base: &str,
    token: &str,
    id: Uuid,
    turn: &str,
    last_event_id: Option<&str>,
    query: &str,
) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .get(format!(
            "{base}/conversation/{id}/prompt/{turn}/events{query}"
        ))
        .bearer_auth(token);
    if let Some(last) = last_event_id {
        req = req.header("last-event-id", last);
    }
    req.send().await.expect("resume")
}

/// The seq of an event id `turn:seq`.
pub(crate) fn seq_of(id: &str) -> u64 {
    id.rsplit(':')
        .next()
        .and_then(|s| s.parse().ok())
        .expect("turn:seq")
}

/// The events received before a cut and after resuming are the slow
/// model's whole reply, numbered 1, 2, ... with no gap or duplicate, done last.
pub(crate) fn assert_whole(head: &[Sse], rest: &[Sse]) {
    let all: Vec<&Sse> = head.iter().chain(rest).collect();
    let seqs: Vec<u64> = all.iter().map(|e| seq_of(&e.id)).collect();
    assert_eq!(
        seqs,
        (1..=all.len() as u64).collect::<Vec<_>>(),
        "no gap, no duplicate"
    );
    let text: String = all
        .iter()
        .filter(|e| e.event == "delta")
        .map(|e| e.data["content"].as_str().expect("piece"))
        .collect();
    assert_eq!(text, slow_reply(), "{rest:?}");
    assert_eq!(all.last().expect("events").event, "done");
}

/// The slow model's whole reply.
pub(crate) fn slow_reply() -> String {
    (0..20).map(|i| format!("{i} ")).collect()
}

async fn resumed_streams(db: TestDb) {
    // The slow model takes 6 s: more than the other tests' time limit.
    let (url, _) = fake_provider().await;
    let app = app_with_provider_timeout(db, Some(url), &[], Duration::from_secs(30)).await;
    let w = World::build(&app).await;
    let id = app.create_as(&w.reader, w.repo).await;

    // REST: cut after two events, resumed from the second.
    let body =
        json!({ "prompt": "keep going", "model": "slow-stream", "onDisconnect": "continue" });
    let res = prompt_events(&app, &w.reader, id, body).await;
    assert_eq!(res.status(), 200);
    let turn = turn_of(&res);
    let head = first_events(res, 2).await;
    assert_eq!(head[0].id, format!("{turn}:1"));
    assert_eq!(head[1].id, format!("{turn}:2"));
    tokio::time::sleep(Duration::from_millis(700)).await;
    let res = resume_rest(&app.base, &w.reader.token, id, &turn, Some(&head[1].id), "").await;
    assert_eq!(res.status(), 200);
    let rest = parse_sse(&res.text().await.expect("body"));
    assert_whole(&head, &rest);
    let done = rest.last().expect("events");
    assert_eq!(done.event, "done");
    assert_eq!(done.data["assistantMessage"]["content"], slow_reply());
    // The caller left, the turn went on and was stored.
    let (_, listed) = messages_rest(&app, &w.reader, id, "").await;
    assert_eq!(listed["total"], 2, "{listed}");

    // A finished stream reads again from the start (?after=0), and from
    // any point.
    let res = resume_rest(&app.base, &w.reader.token, id, &turn, None, "?after=0").await;
    let again = parse_sse(&res.text().await.expect("body"));
    assert_eq!(again.len(), head.len() + rest.len());
    assert_eq!(&again[2..], &rest[..]);
    let res = resume_rest(&app.base, &w.reader.token, id, &turn, None, "?after=5").await;
    assert_eq!(
        seq_of(&parse_sse(&res.text().await.expect("body"))[0].id),
        6
    );

    // gRPC: the same, with ResumePromptStream.
    let request = StreamPromptConversationRequest {
        conversation_id: id.to_string(),
        prompt: "over grpc".into(),
        model: "slow-stream".into(),
        on_disconnect: OnDisconnect::Continue.into(),
    };
    let stream = app
        .grpc()
        .await
        .stream_prompt_conversation(as_actor(request, &w.reader))
        .await
        .expect("streaming");
    let grpc_turn = stream
        .metadata()
        .get("turn-id")
        .expect("turn-id")
        .to_str()
        .expect("ascii")
        .to_owned();
    let mut stream = stream.into_inner();
    let mut pieces = String::new();
    let mut last = 0;
    for _ in 0..3 {
        let event = stream.message().await.expect("event").expect("an event");
        assert_eq!(event.turn_id, grpc_turn);
        assert_eq!(event.seq, last + 1);
        last = event.seq;
        if let Some(Event::Delta(piece)) = event.event {
            pieces.push_str(&piece);
        }
    }
    drop(stream);
    let resume = ResumePromptStreamRequest {
        conversation_id: id.to_string(),
        turn_id: grpc_turn.clone(),
        after: last,
    };
    let mut resumed = app
        .grpc()
        .await
        .resume_prompt_stream(as_actor(resume, &w.reader))
        .await
        .expect("resumed")
        .into_inner();
    let mut done = None;
    while let Some(event) = resumed.message().await.expect("event") {
        assert_eq!(event.seq, last + 1, "in order, once each");
        last = event.seq;
        match event.event.expect("event") {
            Resumed::Delta(piece) => pieces.push_str(&piece),
            Resumed::Done(turn) => done = Some(turn),
        }
    }
    assert_eq!(pieces, slow_reply());
    let done = done.expect("done last");
    assert_eq!(
        done.assistant_message.expect("message").content,
        slow_reply()
    );

    // By default the turn stops when its caller leaves: resumers are told
    // so, and nothing is stored.
    let body = json!({ "prompt": "stop if I leave", "model": "slow-stream" });
    let res = prompt_events(&app, &w.reader, id, body).await;
    let turn = turn_of(&res);
    let head = first_events(res, 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let res = resume_rest(&app.base, &w.reader.token, id, &turn, Some(&head[0].id), "").await;
    let rest = parse_sse(&res.text().await.expect("body"));
    let end = rest.last().expect("an end");
    assert_eq!(end.event, "error");
    assert_eq!(
        end.data["message"],
        "The prompt was cancelled: its caller left before the reply was done"
    );
    let (_, listed) = messages_rest(&app, &w.reader, id, "").await;
    assert_eq!(listed["total"], 4, "only the two turns that went on");

    // What cannot be resumed.
    let unknown = Uuid::now_v7().to_string();
    let res = resume_rest(&app.base, &w.reader.token, id, &unknown, None, "").await;
    assert_eq!(res.status(), 404);
    assert_eq!(
        res.json::<Value>().await.expect("JSON"),
        json!({"success": false, "message": "Prompt stream not found"})
    );
    let res = resume_rest(&app.base, &w.reader.token, id, &turn, Some("nonsense"), "").await;
    assert_eq!(res.status(), 400);
    let res = resume_rest(&app.base, &w.other_org_user.token, id, &turn, None, "").await;
    assert_eq!(
        res.status(),
        404,
        "another organization's stream is not found"
    );
    let body = json!({ "prompt": "x", "model": "echo", "onDisconnect": "later" });
    let res = prompt_events(&app, &w.reader, id, body).await;
    assert_eq!(res.status(), 400);
    assert_eq!(
        res.json::<Value>().await.expect("JSON")["message"],
        "onDisconnect must be \"cancel\" or \"continue\""
    );

    // A stream whose replica stopped (no heartbeat) ends with an error.
    let dead = Uuid::now_v7();
    let started = conversation_service::store::types::now() - chrono::TimeDelta::minutes(1);
    app.store
        .start_stream(StreamRow {
            turn_id: dead,
            conversation_id: id,
            user_id: w.reader.id,
            replica_id: Uuid::now_v7(),
            started_at: started,
            finished_at: None,
            expires_at: started + chrono::TimeDelta::hours(1),
        })
        .await
        .expect("a stream");
    let res = resume_rest(&app.base, &w.reader.token, id, &dead.to_string(), None, "").await;
    let events = parse_sse(&res.text().await.expect("body"));
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event, "error");
    assert_eq!(
        events[0].data["message"],
        "The replica running this prompt stopped before the reply was done; nothing was stored"
    );
    app.shutdown().await;
}

on_both_backends!(resumed_streams);
