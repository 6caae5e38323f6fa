//! The message rpcs' conversions: protobuf requests into the prompt and
//! list inputs, turns, pages and streamed events back into protobuf.

use tonic::Status;

use super::call::timestamp;
use crate::error::ApiError;
use crate::pb::{self, ListMessagesRequest};
use crate::service::messages::{
    ListMessages, Message, MessagePage, OnDisconnect, Prompt, PromptEvent, PromptStream, Turn,
};
use crate::service::params::{self, Page};

/// A prompt's input, from either prompt rpc's request (the same fields).
pub fn prompt_input(
    conversation_id: &str,
    prompt: &str,
    model: &str,
    on_disconnect: pb::OnDisconnect,
) -> Result<Prompt, ApiError> {
    Ok(Prompt {
        conversation_id: params::uuid("conversationId", conversation_id)?,
        prompt: prompt.to_owned(),
        model: model.to_owned(),
        on_disconnect: match on_disconnect {
            pb::OnDisconnect::Continue => OnDisconnect::Continue,
            pb::OnDisconnect::Unspecified | pb::OnDisconnect::Cancel => OnDisconnect::Cancel,
        },
    })
}

/// `ListMessages`'s input.
pub fn list_input(r: &ListMessagesRequest) -> Result<ListMessages, ApiError> {
    Ok(ListMessages {
        conversation_id: params::uuid("conversationId", &r.conversation_id)?,
        page: Page::new(r.take, r.skip)?,
    })
}

/// A stored message as protobuf.
pub fn message_pb(row: Message) -> pb::Message {
    pb::Message {
        id: row.id.to_string(),
        conversation_id: row.conversation_id.to_string(),
        role: row.role.as_str().to_owned(),
        content: row.content,
        token_count: u64::try_from(row.token_count).unwrap_or_default(),
        model: row.model,
        metadata_json: row.metadata.to_string(),
        created_at: Some(timestamp(row.created_at)),
    }
}

/// A stored turn as protobuf.
pub fn turn_pb(turn: Turn) -> pb::PromptConversationResponse {
    pb::PromptConversationResponse {
        user_message: Some(message_pb(turn.user_message)),
        assistant_message: Some(message_pb(turn.assistant_message)),
        usage: Some(pb::Usage {
            tokens_in: turn.tokens_in,
            tokens_out: turn.tokens_out,
        }),
    }
}

/// A page of messages as protobuf.
pub fn page_pb(page: MessagePage) -> pb::ListMessagesResponse {
    pb::ListMessagesResponse {
        messages: page.messages.into_iter().map(message_pb).collect(),
        title: page.title.unwrap_or_default(),
        total: page.total,
    }
}

/// A streamed prompt's events as the rpc's stream: deltas, then the turn;
/// an error ends it with its status. Each event carries the turn id and its
/// seq; `event` builds the rpc's message from them.
pub fn event_stream<T>(
    stream: PromptStream,
    event: fn(Option<Event>, String, u64) -> T,
) -> EventStream<T>
where
    T: Send + 'static,
{
    use futures_util::StreamExt as _;
    let (turn_id, events) = stream.until_last();
    let turn_id = turn_id.to_string();
    Box::pin(events.map(move |item| {
        let e = match item.event.map_err(Status::from)? {
            PromptEvent::Delta(piece) => Event::Delta(piece),
            PromptEvent::Done(turn) => Event::Done(turn_pb(*turn)),
        };
        Ok(event(Some(e), turn_id.clone(), item.seq))
    }))
}

/// One event of a prompt's stream (both stream rpcs have the same fields).
pub type Event = pb::stream_prompt_conversation_response::Event;

/// A stream of an rpc's events.
pub type EventStream<T> =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<T, Status>> + Send>>;

/// `StreamPromptConversation`'s event.
pub fn prompt_event(
    event: Option<Event>,
    turn_id: String,
    seq: u64,
) -> pb::StreamPromptConversationResponse {
    pb::StreamPromptConversationResponse {
        event,
        turn_id,
        seq,
    }
}

/// `ResumePromptStream`'s event: the same, in its own message.
pub fn resumed_event(
    event: Option<Event>,
    turn_id: String,
    seq: u64,
) -> pb::ResumePromptStreamResponse {
    use pb::resume_prompt_stream_response::Event as Resumed;
    pb::ResumePromptStreamResponse {
        event: event.map(|e| match e {
            Event::Delta(piece) => Resumed::Delta(piece),
            Event::Done(turn) => Resumed::Done(turn),
        }),
        turn_id,
        seq,
    }
}
