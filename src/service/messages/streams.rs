//! Resumable streams. Every streamed prompt is a turn with an id; its events
//! are numbered (1, 2, ...; the last is `done` or `error`) and logged in the
//! database ([`crate::store::streams`]) as they go out, in batches. A client
//! that lost its stream asks any replica for the events after the last it
//! has ([`Service::resume_stream`]): the logged ones, then the rest as they
//! are logged (polled), with no gap and no duplicate. A turn may keep running
//! when its caller leaves (`OnDisconnect::Continue`); by default it stops and
//! stores nothing, as before, and its log ends with an `error` event saying
//! so. If the replica running a turn dies, resumers get an `error` event once
//! its heartbeat is [`OWNER_TIMEOUT`] old.

use std::time::Duration;

use chrono::TimeDelta;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::{PromptEvent, Turn};
use crate::domain::Caller;
use crate::error::ApiError;
use crate::service::Service;
use crate::store::Store;
use crate::store::streams::{StreamEventRow, StreamRow};
use crate::store::types::now;

/// How often a resumer looks for events not yet logged.
const POLL: Duration = Duration::from_millis(50);
/// How long the log writer gathers events before writing them.
const FLUSH_EVERY: Duration = Duration::from_millis(20);
/// Events read at once by a resumer.
const BATCH: i64 = 500;
/// A replica whose heartbeat is older than this is taken for dead.
pub const OWNER_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a replica writes its heartbeat.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);

/// What a streamed turn does when its caller goes away.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OnDisconnect {
    /// Stop the model; store nothing (the default).
    #[default]
    Cancel,
    /// Keep going: the turn is stored, and can be resumed.
    Continue,
}

impl OnDisconnect {
    /// From the API's words (`cancel`, `continue`); `field` names it in the error.
    pub fn parse(field: &str, value: &str) -> Result<OnDisconnect, ApiError> {
        match value {
            "cancel" => Ok(OnDisconnect::Cancel),
            "continue" => Ok(OnDisconnect::Continue),
            _ => Err(ApiError::InvalidArgument(format!(
                "{field} must be \"cancel\" or \"continue\""
            ))),
        }
    }
}

/// One event of a streamed prompt, with its place in the turn.
#[derive(Debug)]
pub struct Sequenced {
    pub seq: u64,
    pub event: Result<PromptEvent, ApiError>,
}

/// A streamed prompt (or a resumed one): its turn and its events.
#[derive(Debug)]
pub struct PromptStream {
    pub turn_id: Uuid,
    pub events: mpsc::Receiver<Sequenced>,
}

impl PromptStream {
    /// Its events, ending with the last one (the turn, or an error) rather
    /// than when the turn's task lets go of the channel: a transport then
    /// closes the response together with the last event (HTTP/2 sends the
    /// trailers right behind it), so a client that stops reading at the
    /// last event leaves nothing unread (no stream reset, which an HTTP/2
    /// client counts against the connection, and an HTTP/1.1 connection
    /// that can be reused).
    pub fn until_last(
        self,
    ) -> (
        Uuid,
        impl futures_util::Stream<Item = Sequenced> + Send + 'static,
    ) {
        let events =
            futures_util::stream::unfold((self.events, false), |(mut events, ended)| async move {
                if ended {
                    return None;
                }
                let item = events.recv().await?;
                let last = !matches!(item.event, Ok(PromptEvent::Delta(_)));
                Some((item, (events, last)))
            });
        (self.turn_id, events)
    }
}

/// How long streams are kept once finished, and how long a running one may
/// take at most.
#[derive(Debug, Clone, Copy)]
pub struct StreamConfig {
    pub retention: Duration,
    pub turn_limit: Duration,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            retention: Duration::from_secs(600),
            turn_limit: Duration::from_secs(300),
        }
    }
}

fn delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

/// Where a streamed turn's events go: its caller (while there) and the log.
pub(super) struct Sink {
    seq: u64,
    caller: Option<mpsc::Sender<Sequenced>>,
    on_disconnect: OnDisconnect,
    log: mpsc::UnboundedSender<StreamEventRow>,
}

impl Sink {
    /// Logs the start of a turn; returns its sink and the caller's stream.
    pub(super) async fn open(
        store: &Store,
        config: StreamConfig,
        conversation_id: Uuid,
        user_id: Uuid,
        on_disconnect: OnDisconnect,
    ) -> Result<(Sink, PromptStream), ApiError> {
        let turn_id = Uuid::now_v7();
        let at = now();
        store
            .start_stream(StreamRow {
                turn_id,
                conversation_id,
                user_id,
                replica_id: store.replica_id(),
                started_at: at,
                finished_at: None,
                expires_at: at + delta(config.turn_limit + config.retention),
            })
            .await
            .map_err(ApiError::from_store("Failed to prompt the conversation"))?;
        let (caller, events) = mpsc::channel(32);
        let sink = Sink {
            seq: 0,
            caller: Some(caller),
            on_disconnect,
            log: spawn_log_writer(store.clone(), turn_id, config.retention),
        };
        Ok((sink, PromptStream { turn_id, events }))
    }

    /// Sends the next event; false when the turn should stop (its caller
    /// left and it is not to continue without them).
    pub(super) async fn send(&mut self, event: Result<PromptEvent, ApiError>) -> bool {
        self.seq += 1;
        let _ = self.log.send(log_row(self.seq, &event));
        let Some(caller) = &self.caller else {
            return true;
        };
        if caller
            .send(Sequenced {
                seq: self.seq,
                event,
            })
            .await
            .is_ok()
        {
            return true;
        }
        self.caller = None;
        self.on_disconnect == OnDisconnect::Continue
    }

    /// Resolves when the turn should stop for want of its caller.
    pub(super) async fn left(&self) {
        match (&self.caller, self.on_disconnect) {
            (Some(caller), OnDisconnect::Cancel) => caller.closed().await,
            _ => std::future::pending().await,
        }
    }

    /// The turn stopped because its caller left: resumers are told.
    pub(super) async fn cancelled(mut self) {
        let _ = self
            .send(Err(ApiError::FailedPrecondition(
                "The prompt was cancelled: its caller left before the reply was done".into(),
            )))
            .await;
    }
}

/// An event as logged.
fn log_row(seq: u64, event: &Result<PromptEvent, ApiError>) -> StreamEventRow {
    let (kind, data) = match event {
        Ok(PromptEvent::Delta(piece)) => ("delta", piece.clone()),
        Ok(PromptEvent::Done(turn)) => ("done", serde_json::to_string(turn).unwrap_or_default()),
        Err(e) => (
            "error",
            serde_json::json!({ "kind": e.kind(), "message": e.to_string() }).to_string(),
        ),
    };
    StreamEventRow {
        seq: i64::try_from(seq).unwrap_or(i64::MAX),
        kind: kind.to_owned(),
        data,
    }
}

/// A logged event as sent again; whether it is the last.
fn relayed(row: StreamEventRow) -> (Result<PromptEvent, ApiError>, bool) {
    match row.kind.as_str() {
        "delta" => (Ok(PromptEvent::Delta(row.data)), false),
        "done" => match serde_json::from_str::<Turn>(&row.data) {
            Ok(turn) => (Ok(PromptEvent::Done(Box::new(turn))), true),
            Err(e) => (Err(log_unreadable(e.to_string())), true),
        },
        _ => {
            let error: serde_json::Value = serde_json::from_str(&row.data).unwrap_or_default();
            let text = |k: &str| error[k].as_str().unwrap_or_default().to_owned();
            (Err(ApiError::relayed(&text("kind"), text("message"))), true)
        }
    }
}

fn log_unreadable(detail: String) -> ApiError {
    ApiError::Internal {
        public: "Failed to resume the prompt's stream",
        detail,
    }
}

/// The task that writes a turn's events to the log, gathering those that
/// come within [`FLUSH_EVERY`] into one write; done after the last event.
/// A write that fails is tried again with the next (nothing is skipped).
fn spawn_log_writer(
    store: Store,
    turn_id: Uuid,
    retention: Duration,
) -> mpsc::UnboundedSender<StreamEventRow> {
    let (log, mut rows) = mpsc::unbounded_channel::<StreamEventRow>();
    tokio::spawn(async move {
        let mut pending: Vec<StreamEventRow> = Vec::new();
        let mut open = true;
        while open || !pending.is_empty() {
            if pending.is_empty() {
                match rows.recv().await {
                    Some(row) => pending.push(row),
                    None => return,
                }
            }
            tokio::time::sleep(FLUSH_EVERY).await;
            loop {
                match rows.try_recv() {
                    Ok(row) => pending.push(row),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            }
            let last = pending.last().is_some_and(|r| r.kind != "delta");
            let at = now();
            let finished = last.then(|| (at, at + delta(retention)));
            match store
                .append_stream(turn_id, pending.clone(), finished)
                .await
            {
                Ok(()) => {
                    pending.clear();
                    if last {
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, %turn_id, "failed to log a prompt's stream; trying again");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    });
    log
}

impl Service {
    /// The events of a streamed prompt after `after` (0: all of them), from
    /// any replica: those logged, then the rest as they come, to the last.
    /// The caller must be able to see the conversation, as for its messages.
    pub async fn resume_stream(
        &self,
        caller: &Caller,
        conversation_id: Uuid,
        turn_id: Uuid,
        after: u64,
    ) -> Result<PromptStream, ApiError> {
        const FAILED: &str = "Failed to resume the prompt's stream";
        self.live_conversation(caller, conversation_id, FAILED)
            .await?;
        let not_found = || ApiError::NotFound("Prompt stream not found".into());
        let mut last = i64::try_from(after).map_err(|_| not_found())?;
        let read = self
            .store
            .read_stream(turn_id, last, BATCH, now())
            .await
            .map_err(ApiError::from_store(FAILED))?
            .filter(|r| r.stream.conversation_id == conversation_id)
            .ok_or_else(not_found)?;
        let (tx, events) = mpsc::channel(32);
        let store = self.store.clone();
        tokio::spawn(async move {
            let mut read = read;
            loop {
                for row in std::mem::take(&mut read.events) {
                    last = row.seq;
                    let (event, end) = relayed(row);
                    let seq = u64::try_from(last).unwrap_or_default();
                    if tx.send(Sequenced { seq, event }).await.is_err() || end {
                        return;
                    }
                }
                if read.stream.finished_at.is_some() {
                    return;
                }
                let at = now();
                let owner_alive = match read.owner_seen_at {
                    Some(seen) => at - seen < delta(OWNER_TIMEOUT),
                    None => at - read.stream.started_at < delta(OWNER_TIMEOUT),
                };
                // The last event, made here (it is not in the log).
                let end = async |e: ApiError| {
                    let seq = u64::try_from(last + 1).unwrap_or_default();
                    let _ = tx.send(Sequenced { seq, event: Err(e) }).await;
                };
                if !owner_alive || at >= read.stream.expires_at {
                    end(ApiError::DependencyUnavailable(
                        "The replica running this prompt stopped before the reply was done; \
                         nothing was stored"
                            .into(),
                    ))
                    .await;
                    return;
                }
                tokio::select! {
                    () = tx.closed() => return,
                    () = tokio::time::sleep(POLL) => {}
                }
                read = match store.read_stream(turn_id, last, BATCH, now()).await {
                    Ok(Some(read)) => read,
                    Ok(None) => {
                        end(not_found()).await;
                        return;
                    }
                    Err(e) => {
                        end(ApiError::from_store(FAILED)(e)).await;
                        return;
                    }
                };
            }
        });
        Ok(PromptStream { turn_id, events })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The events end with the last one (the turn, or an error), though the
    /// turn's task still holds the channel (as it does while it cleans up);
    /// deltas alone go on until the channel closes.
    #[tokio::test]
    async fn events_end_with_the_last_one() {
        use futures_util::StreamExt as _;
        let message = |role| crate::store::messages::MessageRow {
            id: Uuid::now_v7(),
            conversation_id: Uuid::now_v7(),
            role,
            content: "text".into(),
            model: "m".into(),
            token_count: 1,
            metadata: serde_json::json!({}),
            created_at: chrono::Utc::now(),
        };
        let done = PromptEvent::Done(Box::new(Turn {
            user_message: message(crate::domain::MessageRole::User),
            assistant_message: message(crate::domain::MessageRole::Assistant),
            tokens_in: 1,
            tokens_out: 1,
        }));
        let failed = Err(ApiError::Upstream("the model failed".into()));
        for (last, ends_by_itself) in [
            (Ok(done), true),
            (failed, true),
            (Ok(PromptEvent::Delta("more".into())), false),
        ] {
            let (sender, events) = mpsc::channel(4);
            for (seq, event) in [(1, Ok(PromptEvent::Delta("piece".into()))), (2, last)] {
                sender.send(Sequenced { seq, event }).await.expect("open");
            }
            let (_, events) = PromptStream {
                turn_id: Uuid::now_v7(),
                events,
            }
            .until_last();
            // A turn that ended still holds the channel; deltas alone end
            // when it is closed.
            let held = if ends_by_itself {
                Some(sender)
            } else {
                drop(sender);
                None
            };
            let read = events.map(|item| item.seq).collect::<Vec<_>>();
            let seen = tokio::time::timeout(std::time::Duration::from_secs(5), read)
                .await
                .expect("the events end");
            drop(held);
            assert_eq!(seen, [1, 2]);
        }
    }

    #[test]
    fn logged_events_read_back_as_they_were() {
        let row = log_row(3, &Ok(PromptEvent::Delta("piece".into())));
        assert_eq!(
            (row.seq, row.kind.as_str(), row.data.as_str()),
            (3, "delta", "piece")
        );
        let (event, end) = relayed(row);
        assert!(matches!(event, Ok(PromptEvent::Delta(p)) if p == "piece"));
        assert!(!end);
        let error = log_row(
            4,
            &Err(ApiError::Upstream("The model provider failed".into())),
        );
        let (event, end) = relayed(error);
        assert!(end);
        let e = event.expect_err("an error");
        assert!(matches!(e, ApiError::Upstream(_)), "{e:?}");
        assert_eq!(e.to_string(), "The model provider failed");
        assert_eq!(
            OnDisconnect::parse("onDisconnect", "continue").expect("ok"),
            OnDisconnect::Continue
        );
        assert!(OnDisconnect::parse("onDisconnect", "later").is_err());
    }
}
