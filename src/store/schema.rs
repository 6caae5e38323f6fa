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
        /// The `seq` of its last message (0 before its first).
        last_seq -> BigInt,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::store::types::DbUuid;

    /// Kept by triggers on `conversations` (see the migration).
    conversation_counts (org_id, workspace_id, repo_id, created_by) {
        org_id -> DbUuid,
        workspace_id -> DbUuid,
        repo_id -> DbUuid,
        created_by -> DbUuid,
        live -> BigInt,
        deleted -> BigInt,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::store::types::DbUuid;

    /// `conversation_counts` per day of creation (days since the Unix epoch).
    conversation_day_counts (org_id, day, workspace_id, repo_id, created_by) {
        org_id -> DbUuid,
        day -> BigInt,
        workspace_id -> DbUuid,
        repo_id -> DbUuid,
        created_by -> DbUuid,
        live -> BigInt,
        deleted -> BigInt,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::store::types::DbUuid;

    /// `conversation_counts` per hour of creation (hours since the Unix epoch).
    conversation_hour_counts (org_id, hour, workspace_id, repo_id, created_by) {
        org_id -> DbUuid,
        hour -> BigInt,
        workspace_id -> DbUuid,
        repo_id -> DbUuid,
        created_by -> DbUuid,
        live -> BigInt,
        deleted -> BigInt,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::store::types::DbUuid;

    /// `conversation_counts` per ten minutes of creation (slots since the
    /// Unix epoch; PostgreSQL only, see migration `count_slots`).
    conversation_slot_counts (org_id, slot, workspace_id, repo_id, created_by) {
        org_id -> DbUuid,
        slot -> BigInt,
        workspace_id -> DbUuid,
        repo_id -> DbUuid,
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

diesel::table! {
    use diesel::sql_types::*;
    use crate::store::types::DbUuid;
    use crate::store::types::DbTime;

    policies (id) {
        id -> DbUuid,
        org_id -> DbUuid,
        workspace_id -> Nullable<DbUuid>,
        repo_id -> Nullable<DbUuid>,
        name -> Text,
        content -> Text,
        patterns -> Text,
        risk_type -> Text,
        action_type -> Integer,
        created_by -> DbUuid,
        created_at -> DbTime,
        updated_by -> DbUuid,
        updated_at -> DbTime,
        deleted_at -> Nullable<DbTime>,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::store::types::DbUuid;
    use crate::store::types::DbTime;

    policy_violations (id) {
        id -> DbUuid,
        org_id -> DbUuid,
        workspace_id -> DbUuid,
        repo_id -> DbUuid,
        policy_id -> DbUuid,
        conversation_id -> Nullable<DbUuid>,
        user_id -> DbUuid,
        stage -> Text,
        explanation -> Text,
        severity -> Text,
        block -> Bool,
        ai_llm_id -> Nullable<DbUuid>,
        llm_type -> Text,
        llm_model -> Text,
        host -> Text,
        created_at -> DbTime,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::store::types::DbUuid;
    use crate::store::types::DbTime;

    policy_alerts (id) {
        id -> DbUuid,
        violation_id -> DbUuid,
        message -> Text,
        created_at -> DbTime,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::store::types::DbUuid;
    use crate::store::types::DbTime;

    org_webhooks (org_id) {
        org_id -> DbUuid,
        url -> Text,
        secret_sealed -> Binary,
        secrets_key_id -> Text,
        created_at -> DbTime,
        updated_at -> DbTime,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::store::types::DbUuid;
    use crate::store::types::DbTime;

    webhook_deliveries (id) {
        id -> DbUuid,
        org_id -> DbUuid,
        alert_id -> DbUuid,
        body -> Text,
        status -> Text,
        attempts -> Integer,
        next_attempt_at -> DbTime,
        last_status -> Nullable<Integer>,
        last_error -> Nullable<Text>,
        created_at -> DbTime,
        delivered_at -> Nullable<DbTime>,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::store::types::DbUuid;
    use crate::store::types::DbTime;

    usage_ledger (id) {
        id -> DbUuid,
        org_id -> DbUuid,
        workspace_id -> DbUuid,
        repo_id -> DbUuid,
        conversation_id -> DbUuid,
        user_id -> DbUuid,
        ai_llm_id -> Nullable<DbUuid>,
        kind -> Text,
        llm_type -> Text,
        llm_model -> Text,
        host -> Text,
        tokens_in -> BigInt,
        tokens_out -> BigInt,
        policy_tokens -> BigInt,
        latency_ms -> BigInt,
        outcome -> Text,
        created_at -> DbTime,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::store::types::DbUuid;
    use crate::store::types::DbTime;

    usage_rollups (conversation_id, user_id, grain, bucket, ai_llm_id, llm_type, llm_model, host) {
        grain -> Text,
        bucket -> DbTime,
        org_id -> DbUuid,
        workspace_id -> DbUuid,
        repo_id -> DbUuid,
        conversation_id -> DbUuid,
        user_id -> DbUuid,
        ai_llm_id -> DbUuid,
        llm_type -> Text,
        llm_model -> Text,
        host -> Text,
        tokens_in -> BigInt,
        tokens_out -> BigInt,
        llm_tokens_in -> BigInt,
        llm_tokens_out -> BigInt,
        api_calls -> BigInt,
        latency_ms -> BigInt,
        violations -> BigInt,
        alerts -> BigInt,
        blocks -> BigInt,
        severity_low -> BigInt,
        severity_medium -> BigInt,
        severity_high -> BigInt,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::store::types::DbUuid;
    use crate::store::types::DbTime;

    budgets (id) {
        id -> DbUuid,
        org_id -> DbUuid,
        scope -> Text,
        scope_id -> DbUuid,
        period -> Text,
        tokens -> BigInt,
        updated_by -> DbUuid,
        created_at -> DbTime,
        updated_at -> DbTime,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::store::types::DbUuid;
    use crate::store::types::DbTime;

    budget_spend (budget_id, period_start) {
        budget_id -> DbUuid,
        period_start -> DbTime,
        used -> BigInt,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::store::types::DbUuid;
    use crate::store::types::DbTime;

    budget_reservations (id) {
        id -> DbUuid,
        budget_id -> DbUuid,
        period_start -> DbTime,
        tokens -> BigInt,
        expires_at -> DbTime,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::store::types::DbUuid;
    use crate::store::types::DbTime;

    system_event_reads (user_id, event_id) {
        user_id -> DbUuid,
        event_id -> DbUuid,
        read_at -> DbTime,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::store::types::DbUuid;
    use crate::store::types::DbTime;

    service_replicas (id) {
        id -> DbUuid,
        started_at -> DbTime,
        seen_at -> DbTime,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::store::types::DbUuid;
    use crate::store::types::DbTime;

    prompt_streams (turn_id) {
        turn_id -> DbUuid,
        conversation_id -> DbUuid,
        user_id -> DbUuid,
        replica_id -> DbUuid,
        started_at -> DbTime,
        finished_at -> Nullable<DbTime>,
        expires_at -> DbTime,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::store::types::DbUuid;

    prompt_stream_events (turn_id, seq) {
        turn_id -> DbUuid,
        seq -> BigInt,
        kind -> Text,
        data -> Text,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::store::types::DbUuid;

    conversation_count_deltas (id) {
        id -> BigInt,
        org_id -> DbUuid,
        workspace_id -> DbUuid,
        repo_id -> DbUuid,
        created_by -> DbUuid,
        /// The ten minutes of creation (since the Unix epoch).
        slot -> BigInt,
        live -> BigInt,
        deleted -> BigInt,
    }
}

diesel::joinable!(ai_llm_repos -> ai_llms (ai_llm_id));
diesel::joinable!(prompt_stream_events -> prompt_streams (turn_id));
diesel::joinable!(system_events -> users (user_id));
diesel::joinable!(policy_alerts -> policy_violations (violation_id));
diesel::joinable!(policy_violations -> policies (policy_id));
diesel::joinable!(ai_llm_repos -> repos (repo_id));
diesel::joinable!(messages -> conversations (conversation_id));
diesel::joinable!(users -> organizations (org_id));
diesel::joinable!(api_tokens -> users (user_id));
diesel::joinable!(workspace_members -> workspaces (workspace_id));
diesel::joinable!(conversations -> repos (repo_id));
diesel::joinable!(conversations -> users (created_by));

diesel::allow_tables_to_appear_in_same_query!(
    conversation_count_deltas,
    conversation_day_counts,
    conversation_hour_counts,
    conversation_slot_counts,
    prompt_streams,
    prompt_stream_events,
    service_replicas,
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
    policies,
    policy_violations,
    policy_alerts,
    org_webhooks,
    webhook_deliveries,
    usage_ledger,
    usage_rollups,
    budgets,
    budget_spend,
    budget_reservations,
    system_event_reads,
);
