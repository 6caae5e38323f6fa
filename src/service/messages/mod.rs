//! A conversation's messages: prompting a model (plain or streamed) and
//! listing the turns. Who may prompt is named here ([`may_prompt`]).

mod context;
mod list;
mod prompt;
mod streams;

pub use context::ContextCache;
pub use list::ListMessages;
pub use prompt::{MAX_CONTEXT_MESSAGES, Prompt, PromptEvent, Turn};
pub use streams::{HEARTBEAT_EVERY, OnDisconnect, PromptStream, Sequenced, StreamConfig};

use crate::domain::{Access, Caller};
use crate::error::ApiError;

/// A stored message as the operations return it.
pub use crate::store::messages::MessageRow as Message;

/// A page of a conversation's messages, oldest first, with its title.
#[derive(Debug, Clone)]
pub struct MessagePage {
    pub messages: Vec<Message>,
    pub title: Option<String>,
    pub total: u64,
}

/// Who may prompt a conversation: who may see it (their own; administrators,
/// any in reach; found by [`may_see_conversations`]), and only while they
/// can read its workspace (`membership`: the caller's access there, if any).
///
/// [`may_see_conversations`]: crate::service::conversations::may_see_conversations
pub fn may_prompt(caller: &Caller, membership: Option<Access>) -> Result<(), ApiError> {
    if caller.role.is_org_admin() || membership.is_some() {
        Ok(())
    } else {
        Err(ApiError::PermissionDenied(
            "Insufficient permissions for this workspace".into(),
        ))
    }
}

/// A conversation's title from its first prompt: its first non-blank line, at
/// most 80 characters; none for a blank prompt.
pub fn title_of(prompt: &str) -> Option<String> {
    let line = prompt.lines().map(str::trim).find(|l| !l.is_empty())?;
    let mut title: String = line.chars().take(80).collect();
    if line.chars().count() > 80 {
        title.push('…');
    }
    Some(title)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_are_the_first_line_cut_at_80() {
        assert_eq!(title_of("\n  Hello\nworld"), Some("Hello".into()));
        assert_eq!(title_of(" \n\t"), None);
        let long = "x".repeat(100);
        assert_eq!(
            title_of(&long).expect("title").chars().count(),
            81,
            "80 and an ellipsis"
        );
    }
}
