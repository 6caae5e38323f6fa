//! Conversations: create, list, get, delete. The rules of who may see and
//! who may delete are here, as named functions; each action has its file.

mod create;
mod delete;
mod get;
mod list;

pub use create::CreateConversation;
pub use delete::DeleteConversation;
pub use get::GetConversation;
pub(crate) use get::live_conversation_filter;
pub use list::ListConversations;

use crate::domain::Caller;
use crate::error::ApiError;
use crate::store::conversations::{ConversationFilter, Visibility};

/// A conversation as the operations return it: the row with its repository's
/// name and its creator.
pub use crate::store::conversations::ConversationRow as Conversation;

/// A page of conversations and how many match in all.
#[derive(Debug, Clone)]
pub struct ConversationPage {
    pub conversations: Vec<Conversation>,
    pub total: u64,
}

/// The conversations `caller` may see, before any filter: organization
/// administrators and owners see their whole organization; everyone else
/// their own and all of those in workspaces they administer.
pub fn may_see_conversations(caller: &Caller) -> ConversationFilter {
    let visibility = if caller.role.is_org_admin() {
        Visibility::Organization
    } else {
        Visibility::OwnAndAdministered {
            user_id: caller.user_id,
        }
    };
    ConversationFilter::visible(caller.org_id, visibility)
}

/// The conversations `caller` may delete: exactly those they may see (the
/// creator, administrators of its workspace, organization administrators).
pub fn may_delete_conversation(caller: &Caller) -> ConversationFilter {
    may_see_conversations(caller)
}

/// What an id that names nothing the caller may see answers.
pub(crate) fn conversation_not_found() -> ApiError {
    ApiError::NotFound("Conversation not found".into())
}
