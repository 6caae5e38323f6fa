//! The one schema both backends share (see `types` for the column types).
//! It mirrors `migrations/postgres` and `migrations/sqlite`.

diesel::table! {
    use diesel::sql_types::*;
    use crate::store::types::DbUuid;
    use crate::store::types::DbTime;

    organizations (id) {
        id -> DbUuid,
        name -> Text,
        created_at -> DbTime,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::store::types::DbUuid;
    use crate::store::types::DbTime;

    users (id) {
        id -> DbUuid,
        org_id -> DbUuid,
        email -> Text,
        name -> Nullable<Text>,
        last_name -> Nullable<Text>,
        org_role -> Text,
        disabled_at -> Nullable<DbTime>,
        created_at -> DbTime,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::store::types::DbUuid;
    use crate::store::types::DbTime;

    workspaces (id) {
        id -> DbUuid,
        org_id -> DbUuid,
        name -> Text,
        deleted_at -> Nullable<DbTime>,
        created_at -> DbTime,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::store::types::DbUuid;
    use crate::store::types::DbTime;

    workspace_members (workspace_id, user_id) {
        workspace_id -> DbUuid,
        user_id -> DbUuid,
        access -> Text,
        created_at -> DbTime,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::store::types::DbUuid;
    use crate::store::types::DbTime;

    repos (id) {
        id -> DbUuid,
        org_id -> DbUuid,
        workspace_id -> Nullable<DbUuid>,
        name -> Text,
        disabled_at -> Nullable<DbTime>,
        deleted_at -> Nullable<DbTime>,
        created_at -> DbTime,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::store::types::DbUuid;
    use crate::store::types::DbTime;

    api_tokens (id) {
        id -> DbUuid,
        user_id -> DbUuid,
        name -> Text,
        token_hash -> Binary,
        expires_at -> Nullable<DbTime>,
        revoked_at -> Nullable<DbTime>,
        last_used_at -> Nullable<DbTime>,
        created_at -> DbTime,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::store::types::DbUuid;
    use crate::store::types::DbTime;

    conversations (id) {
        id -> DbUuid,
        org_id -> DbUuid,
        workspace_id -> DbUuid,
        repo_id -> DbUuid,
        created_by -> DbUuid,
        title -> Nullable<Text>,
        tokens_in -> BigInt,
        tokens_out -> BigInt,
        created_at -> DbTime,
        last_updated_at -> DbTime,
        deleted_at -> Nullable<DbTime>,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::store::types::DbUuid;

    /// Kept by triggers on `conversations` (see the migration).
    conversation_counts (org_id, workspace_id, created_by) {
        org_id -> DbUuid,
        workspace_id -> DbUuid,
        created_by -> DbUuid,
        live -> BigInt,
        deleted -> BigInt,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::store::types::DbUuid;
    use crate::store::types::DbTime;
    use crate::store::types::DbJson;

    system_events (id) {
        id -> DbUuid,
        org_id -> DbUuid,
        workspace_id -> Nullable<DbUuid>,
        user_id -> Nullable<DbUuid>,
        context -> Text,
        context_id -> Nullable<DbUuid>,
        event -> Text,
        json_data -> Nullable<DbJson>,
        created_at -> DbTime,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::store::types::DbUuid;
    use crate::store::types::DbTime;

    idempotency_keys (user_id, key) {
        user_id -> DbUuid,
        key -> Text,
        fingerprint -> Binary,
        conversation_id -> DbUuid,
        reply -> Binary,
        created_at -> DbTime,
        expires_at -> DbTime,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::store::types::DbUuid;
    use crate::store::types::DbTime;
    use crate::store::types::DbJson;

    messages (id) {
        id -> DbUuid,
        conversation_id -> DbUuid,
        seq -> BigInt,
        role -> Text,
        content -> Text,
        model -> Text,
        token_count -> BigInt,
        metadata -> DbJson,
        created_at -> DbTime,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::store::types::DbUuid;
    use crate::store::types::DbTime;

    ai_llms (id) {
        id -> DbUuid,
        org_id -> DbUuid,
        workspace_id -> DbUuid,
        created_by -> DbUuid,
        name -> Text,
        ai_type -> Text,
        endpoint -> Text,
        key_sealed -> Nullable<Binary>,
        secret_sealed -> Binary,
        secrets_key_id -> Text,
        validated_at -> Nullable<DbTime>,
        created_at -> DbTime,
        updated_at -> DbTime,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::store::types::DbUuid;
    use crate::store::types::DbTime;

    ai_llm_repos (ai_llm_id, repo_id) {
        ai_llm_id -> DbUuid,
        repo_id -> DbUuid,
        attached_at -> DbTime,
    }
}

diesel::joinable!(ai_llm_repos -> ai_llms (ai_llm_id));
diesel::joinable!(ai_llm_repos -> repos (repo_id));
diesel::joinable!(messages -> conversations (conversation_id));
diesel::joinable!(users -> organizations (org_id));
diesel::joinable!(api_tokens -> users (user_id));
diesel::joinable!(workspace_members -> workspaces (workspace_id));
diesel::joinable!(conversations -> repos (repo_id));
diesel::joinable!(conversations -> users (created_by));

diesel::allow_tables_to_appear_in_same_query!(
    organizations,
    users,
    workspaces,
    workspace_members,
    repos,
    api_tokens,
    conversations,
    conversation_counts,
    system_events,
    idempotency_keys,
    messages,
    ai_llms,
    ai_llm_repos,
);
