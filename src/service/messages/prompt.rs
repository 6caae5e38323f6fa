//! Prompting: the rules, the model call (plain or streamed), and the turn
//! stored in one transaction once the model is done. Nothing is stored when
//! the model fails or a streaming caller leaves first.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use uuid::Uuid;

use super::streams::{OnDisconnect, PromptStream, Sink};
use super::{ContextCache, Message, may_prompt, title_of};
use crate::domain::{Caller, MessageRole};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::provider::{ChatMessage, Completion, ProviderError};
use crate::service::conversations::{conversation_not_found, live_conversation_filter};
use crate::service::policies::{Stage, TurnChecks, TurnFacts};
use crate::service::providers::Route;
use crate::service::usage::budgets::expected_tokens;
use crate::service::usage::{self, Outcome};
use crate::service::{Credentials, RequestContext, Service};
use crate::store::Store;
use crate::store::messages::{NewMessage, NewTurn, Version};
use crate::store::types::now;

/// What a prompt failing inside the service says.
const PROMPT_FAILED: &str = "Failed to prompt the conversation";

/// How many earlier messages a prompt sends as context, at most (the latest).
pub const MAX_CONTEXT_MESSAGES: usize = 200;

/// `PromptConversation`'s input.
#[derive(Debug, Clone)]
pub struct Prompt {
    pub conversation_id: Uuid,
    /// What the user says; kept verbatim, must not be empty.
    pub prompt: String,
    /// The model to ask; must not be empty.
    pub model: String,
    /// What a streamed prompt does if its caller goes away.
    pub on_disconnect: OnDisconnect,
}

/// A stored turn: both messages and the provider's usage.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Turn {
    pub user_message: Message,
    pub assistant_message: Message,
    pub tokens_in: u64,
    pub tokens_out: u64,
}

/// What a streamed prompt yields: pieces as the model writes them, then the
/// stored turn.
#[derive(Debug, Clone)]
pub enum PromptEvent {
    Delta(String),
    Done(Box<Turn>),
}

impl Service {
    /// Checks the prompt against the policies that apply, asks the model,
    /// checks its reply, and stores the turn. `input` is the adapter's
    /// parse, whose error is told only after rule 1 (see
    /// [`Service::prepare_prompt`] for why this takes the credentials).
    pub async fn prompt(
        &self,
        credentials: &Credentials,
        input: Result<Prompt, ApiError>,
        ctx: &RequestContext,
    ) -> Result<Turn, ApiError> {
        let (_, prepared) = self.prepare_prompt(credentials, input, ctx).await?;
        let turn = async {
            let checks = &prepared.checks;
            let mut policy_tokens = checks
                .check(&prepared.prompt.content, Stage::Prompt, false)
                .await?;
            let started = Instant::now();
            let completion = prepared
                .route
                .provider
                .complete(&prepared.model, &prepared.turns)
                .await;
            prepared.answered(completion.as_ref().ok(), started);
            let completion = completion.map_err(|e| prepared.failed(e))?;
            policy_tokens += checks
                .check(&completion.content, Stage::Reply, false)
                .await?;
            prepared.record(completion, policy_tokens).await
        }
        .await;
        if turn.is_err() {
            prepared.abandon(Outcome::Failed).await;
        }
        turn
    }

    /// A prompt whose reply is streamed: the rules first (their refusal is
    /// this call's error), then the pieces as the model writes them and, last,
    /// the stored turn, each numbered and logged so that the stream can be
    /// resumed ([`Service::resume_stream`]). If the caller drops the receiver
    /// before the model is done, the model is stopped and nothing is stored
    /// (unless the prompt is to continue without its caller); if the model
    /// fails, the events end with its error and nothing is stored.
    pub async fn prompt_stream(
        &self,
        credentials: &Credentials,
        input: Result<Prompt, ApiError>,
        ctx: &RequestContext,
    ) -> Result<PromptStream, ApiError> {
        let on_disconnect = input
            .as_ref()
            .map_or(OnDisconnect::Cancel, |i| i.on_disconnect);
        let (caller, mut prepared) = self.prepare_prompt(credentials, input, ctx).await?;
        let prompt_tokens = match prepared
            .checks
            .check(&prepared.prompt.content, Stage::Prompt, false)
            .await
        {
            Ok(tokens) => tokens,
            Err(e) => {
                prepared.abandon(Outcome::Failed).await;
                return Err(e);
            }
        };
        // The model is asked while the stream's start is logged (its first
        // pieces wait in the channel): the caller's first piece waits for
        // the slower of the two, not for both one after the other. Every
        // piece a caller sees is still of a stream that can be resumed.
        let (deltas, pieces) = mpsc::channel::<String>(32);
        let started = Instant::now();
        let generate = {
            let (provider, model) = (prepared.route.provider.clone(), prepared.model.clone());
            let turns = std::mem::take(&mut prepared.turns);
            tokio::spawn(async move { provider.stream(&model, &turns, deltas).await })
        };
        let opened = Sink::open(
            &self.store,
            self.stream_config,
            prepared.id,
            caller.user_id,
            on_disconnect,
        )
        .await;
        let (mut sink, stream) = match opened {
            Ok(opened) => opened,
            Err(e) => {
                generate.abort();
                prepared.abandon(Outcome::Failed).await;
                return Err(e);
            }
        };
        tokio::spawn(async move {
            let forwarded = forward(pieces, &mut sink, &prepared.checks).await;
            let completion = generate.await.unwrap_or_else(|e| {
                tracing::error!(error = %e, "a streamed model call stopped");
                Err(ProviderError::Failed("the model call stopped".into()))
            });
            prepared.answered(completion.as_ref().ok(), started);
            let held = match forwarded {
                Forwarded::Finished { held, tokens } => (held, tokens),
                Forwarded::Left => {
                    prepared.abandon(Outcome::Cancelled).await;
                    sink.cancelled().await;
                    return;
                }
                // A blocking policy cut the reply (its error sent).
                Forwarded::Cut => {
                    prepared.abandon(Outcome::Cancelled).await;
                    return;
                }
            };
            let outcome = match completion {
                Err(ProviderError::Cancelled) => {
                    prepared.abandon(Outcome::Cancelled).await;
                    sink.cancelled().await;
                    return;
                }
                Err(e) => Err(prepared.failed(e)),
                Ok(completion) => {
                    prepared
                        .finish_stream(completion, held.0, prompt_tokens + held.1, &mut sink)
                        .await
                }
            };
            if outcome.is_err() {
                prepared.abandon(Outcome::Failed).await;
            }
            sink.send(outcome).await;
        });
        Ok(stream)
    }

    /// Everything a prompt does before the model is asked: the rules, in
    /// order, and the context to send; and who the caller is.
    ///
    /// For speed, the caller is found by the same store call that reads the
    /// conversation (one round trip on PostgreSQL; see
    /// [`crate::store::Store::find_holder_and_conversation`]), and the
    /// conversation's visibility judged here: that is why prompts take the
    /// caller's [`Credentials`] rather than an authenticated caller.
    async fn prepare_prompt(
        &self,
        credentials: &Credentials,
        input: Result<Prompt, ApiError>,
        ctx: &RequestContext,
    ) -> Result<(Caller, PreparedPrompt), ApiError> {
        // 1 and 2: the caller, then the adapter's parse.
        let input = self.parsed(credentials, input).await?;
        let id = input.conversation_id;
        let found = self
            .store
            .find_holder_and_conversation(self.credential_holder(credentials)?, id)
            .await
            .map_err(ApiError::from_store(PROMPT_FAILED))?;
        let caller = self.holder_caller(found.holder)?;
        // Only an empty prompt or model is refused (as the OpenAPI
        // document's minLength says).
        if input.prompt.is_empty() {
            return Err(ApiError::InvalidArgument("prompt must not be empty".into()));
        }
        if input.model.is_empty() {
            return Err(ApiError::InvalidArgument("model is required".into()));
        }
        crate::service::params::storable([
            ("prompt", input.prompt.as_str()),
            ("model", input.model.as_str()),
        ])?;
        // The conversation, if the caller may see it.
        let visible = live_conversation_filter(&caller, id);
        let (conversation, membership) = found
            .conversation
            .filter(|(row, access)| visible.admits(row, *access))
            .ok_or_else(conversation_not_found)?;
        may_prompt(&caller, membership)?;
        // The rest the turn needs, read at once; refusals still come in the
        // rules' order (the route's, then the budget's).
        let (route, policies, history, budgets) = tokio::join!(
            self.route(conversation.repo_id, &input.model),
            self.policies_of(
                conversation.org_id,
                conversation.workspace_id,
                conversation.repo_id
            ),
            self.context_of(id, Version::of(&conversation)),
            self.turn_budgets(conversation.org_id, conversation.workspace_id),
        );
        let route = route?;
        let facts = TurnFacts {
            org_id: conversation.org_id,
            workspace_id: conversation.workspace_id,
            repo_id: conversation.repo_id,
            conversation_id: id,
            user_id: caller.user_id,
            ai_llm_id: route.ai_llm_id,
            llm_type: route.ai_type.map_or("OTHER", |t| t.as_str()).to_owned(),
            llm_model: input.model.clone(),
            host: route.host.clone().unwrap_or_default(),
        };
        let checks = self.turn_checks(facts, policies?, route.provider.clone(), ctx.clone());
        let mut turns = history?;
        // The prompt as the model is sent it, escaped once: the context
        // kept after the turn takes the same message.
        let prompt = chat_message(MessageRole::User, input.prompt);
        turns.push(prompt.clone());
        // Held before any model call (the judge's included): a budget
        // without room refuses the prompt here.
        let expected = expected_tokens(&turns, self.budget_config.reply_tokens);
        if let Some(reservation) = self.reserve_tokens(&budgets?, expected).await? {
            checks.ledger.reserved(reservation);
        }
        let prepared = PreparedPrompt {
            route,
            checks,
            store: self.store.clone(),
            contexts: self.contexts.clone(),
            metrics: self.metrics().clone(),
            id,
            model: input.model,
            prompt,
            turns,
        };
        Ok((caller, prepared))
    }

    /// The latest earlier messages of a conversation read at `version`,
    /// oldest first: kept from an earlier turn of this process, or read.
    async fn context_of(&self, id: Uuid, version: Version) -> Result<Vec<ChatMessage>, ApiError> {
        if let Some(kept) = self.contexts.get(id, version) {
            return Ok(kept);
        }
        let history: Vec<(i64, ChatMessage)> = self
            .store
            .latest_messages(id, MAX_CONTEXT_MESSAGES as i64)
            .await
            .map_err(ApiError::from_store(PROMPT_FAILED))?
            .into_iter()
            .map(|(seq, role, content)| (seq, chat_message(role, content)))
            .collect();
        self.contexts.put(id, version, &history);
        Ok(history.into_iter().map(|(_, m)| m).collect())
    }
}

/// How handing the model's pieces on ended.
enum Forwarded {
    /// The model is done; what is still held back (checked with the whole
    /// reply), and the policy tokens the checks on the way spent.
    Finished { held: String, tokens: u64 },
    /// The caller left (and the turn is not to go on without them):
    /// dropping the pieces stops the model; nothing is stored.
    Left,
    /// A blocking policy stopped the reply (its error sent); as `Left`.
    Cut,
}

/// Hands the model's pieces on until it is done. When a blocking policy
/// applies, pieces are held back: the reply so far is checked each time
/// `stream_interval` more characters arrived, and only what lies more than
/// `stream_interval` characters before its end is released, so no match of
/// a pattern up to that long is ever partly shown. When a blocking policy is
/// judged by the model, each check waits twice as long as the one before
/// (the judge reads the whole reply so far: checks at 1, 2, 4, ... intervals
/// judge at most twice the reply's length in all, instead of growing with its
/// square).
async fn forward(
    mut pieces: mpsc::Receiver<String>,
    sink: &mut Sink,
    checks: &TurnChecks,
) -> Forwarded {
    let (hold, judged) = (checks.blocks(), checks.judges_blocking());
    let interval = checks.stream_interval;
    let (mut text, mut released, mut unchecked, mut tokens) = (String::new(), 0, 0, 0);
    let mut step = interval;
    loop {
        let piece = tokio::select! {
            piece = pieces.recv() => piece,
            () = sink.left() => return Forwarded::Left,
        };
        let Some(piece) = piece else {
            let held = text.split_off(released);
            return Forwarded::Finished { held, tokens };
        };
        if !hold {
            if !sink.send(Ok(PromptEvent::Delta(piece))).await {
                return Forwarded::Left;
            }
            continue;
        }
        unchecked += piece.chars().count();
        text.push_str(&piece);
        if unchecked < step {
            continue;
        }
        unchecked = 0;
        if judged {
            step = step.saturating_mul(2);
        }
        match checks.check(&text, Stage::Reply, true).await {
            Ok(spent) => tokens += spent,
            Err(e) => {
                sink.send(Err(e)).await;
                return Forwarded::Cut;
            }
        }
        // Up to the `interval`-th character from the end.
        let upto = text
            .char_indices()
            .rev()
            .nth(interval - 1)
            .map_or(0, |(i, _)| i);
        if upto > released {
            let release = text[released..upto].to_owned();
            released = upto;
            if !sink.send(Ok(PromptEvent::Delta(release))).await {
                return Forwarded::Left;
            }
        }
    }
}

/// A prompt that passed the rules, ready for the model.
struct PreparedPrompt {
    route: Route,
    checks: TurnChecks,
    store: Store,
    contexts: ContextCache,
    metrics: Arc<Metrics>,
    id: Uuid,
    model: String,
    /// The caller's prompt (also the last of `turns`).
    prompt: ChatMessage,
    turns: Vec<ChatMessage>,
}

impl PreparedPrompt {
    /// A streamed reply is complete: the whole of it is checked, what was
    /// held back released, and the turn stored.
    async fn finish_stream(
        &self,
        completion: Completion,
        held: String,
        policy_tokens: u64,
        sink: &mut Sink,
    ) -> Result<PromptEvent, ApiError> {
        let checked = self
            .checks
            .check(&completion.content, Stage::Reply, false)
            .await?;
        if !held.is_empty() && !sink.send(Ok(PromptEvent::Delta(held))).await {
            return Err(ApiError::FailedPrecondition(
                "The prompt was cancelled: its caller left before the reply was done".into(),
            ));
        }
        let turn = self.record(completion, policy_tokens + checked).await?;
        Ok(PromptEvent::Done(Box::new(turn)))
    }

    /// The model call is over: its usage (none when it failed) goes to the
    /// turn's ledger.
    fn answered(&self, completion: Option<&Completion>, started: Instant) {
        let (tokens_in, tokens_out) = completion.map_or((0, 0), |c| (c.tokens_in, c.tokens_out));
        self.checks
            .ledger
            .answered(tokens_in, tokens_out, started.elapsed());
    }

    /// The turn ends without being stored: what its calls used is written
    /// alone (with `outcome`, or `blocked` if a policy stopped it), and its
    /// budget reservation settled. A failure to write is logged: the
    /// caller's answer stays the turn's own.
    async fn abandon(&self, outcome: Outcome) {
        let usage = self.checks.ledger.take(outcome, now());
        if usage.is_empty() {
            return;
        }
        let settled = usage.clone();
        match self.store.record_usage(usage).await {
            Ok(()) => usage::settled(&self.metrics, &settled),
            Err(e) => {
                tracing::error!(error = %e, conversation_id = %self.id, "failed to record a turn's usage")
            }
        }
    }

    /// The model call failed: counted, and answered as the caller sees it.
    fn failed(&self, e: ProviderError) -> ApiError {
        let ai_type = self.route.ai_type.map_or("operator", |t| t.as_str());
        self.metrics.provider_failed(ai_type, "prompt", e.reason());
        provider_error(e)
    }

    /// Stores the turn the model completed, and returns it.
    async fn record(
        &self,
        mut completion: Completion,
        policy_tokens: u64,
    ) -> Result<Turn, ApiError> {
        // Who answered: the configuration (its id, type and host), or the
        // operator's provider (no id); and what judging the turn cost.
        if let serde_json::Value::Object(meta) = &mut completion.metadata {
            if policy_tokens > 0 {
                meta.insert("policyTokens".into(), policy_tokens.into());
            }
            meta.insert(
                "aiLlmId".into(),
                self.route.ai_llm_id.map(|id| id.to_string()).into(),
            );
            meta.insert(
                "aiType".into(),
                self.route.ai_type.map(|t| t.as_str().to_owned()).into(),
            );
            meta.insert("host".into(), self.route.host.clone().into());
        }
        let tokens_in = i64::try_from(completion.tokens_in).unwrap_or(i64::MAX);
        let tokens_out = i64::try_from(completion.tokens_out).unwrap_or(i64::MAX);
        let at = now();
        let usage = self.checks.ledger.take(Outcome::Completed, at);
        let turn = NewTurn {
            conversation_id: self.id,
            user: NewMessage {
                id: Uuid::now_v7(),
                role: MessageRole::User,
                content: self.prompt.content.to_string(),
                model: self.model.clone(),
                token_count: tokens_in,
                metadata: serde_json::json!({}),
            },
            assistant: NewMessage {
                id: Uuid::now_v7(),
                role: MessageRole::Assistant,
                content: completion.content,
                model: completion.model,
                token_count: tokens_out,
                metadata: completion.metadata,
            },
            tokens_in,
            tokens_out,
            title: title_of(&self.prompt.content),
            at,
            usage: usage.clone(),
        };
        let stored = self
            .store
            .record_turn(turn.clone())
            .await
            .map_err(ApiError::from_store(PROMPT_FAILED))?;
        let Some(stored) = stored else {
            // Deleted while the model was answering: nothing is kept but
            // what the model calls used.
            let mut usage = usage;
            for row in &mut usage.ledger {
                row.outcome = Outcome::Cancelled.as_str();
            }
            if let Err(e) = self.store.record_usage(usage).await {
                tracing::error!(error = %e, "failed to record a turn's usage");
            }
            return Err(conversation_not_found());
        };
        usage::settled(&self.metrics, &turn.usage);
        self.contexts.stored(
            self.id,
            stored.seq,
            stored.version,
            [
                self.prompt.clone(),
                chat_message(turn.assistant.role, turn.assistant.content.clone()),
            ],
        );
        let message = |m: NewMessage| Message {
            id: m.id,
            conversation_id: self.id,
            role: m.role,
            content: m.content,
            model: m.model,
            token_count: m.token_count,
            metadata: m.metadata,
            created_at: turn.at,
        };
        Ok(Turn {
            user_message: message(turn.user),
            assistant_message: message(turn.assistant),
            tokens_in: completion.tokens_in,
            tokens_out: completion.tokens_out,
        })
    }
}

/// A message as the model is sent it.
fn chat_message(role: MessageRole, content: String) -> ChatMessage {
    ChatMessage {
        role: role.as_str(),
        content: content.into(),
    }
}

/// A provider failure as the caller sees it.
fn provider_error(e: ProviderError) -> ApiError {
    match e {
        ProviderError::Timeout => ApiError::UpstreamTimeout(e.to_string()),
        ProviderError::UnknownModel => ApiError::InvalidArgument(e.to_string()),
        ProviderError::Failed(_) | ProviderError::Cancelled | ProviderError::NoModelList => {
            ApiError::Upstream(e.to_string())
        }
    }
}
