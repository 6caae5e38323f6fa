//! Usage statistics: the rollups per time bucket and dimension set
//! (`/aistats/daily`, `/aistats/minute`) and each provider configuration's
//! totals (`/ai/llm/stats`). Organization administrators see their whole
//! organization; other users their own usage and that of the workspaces
//! they administer.

use chrono::{DateTime, TimeDelta, Utc};
use uuid::Uuid;

use super::Grain;
use crate::domain::Caller;
use crate::error::ApiError;
use crate::service::Service;
use crate::service::params::{self, Bound, comma_list, uuid_list};
use crate::store::types::now;
use crate::store::usage::{AiLlmTotals, Rollup, StatsFilter, UsageScope};

/// A statistics query as it arrives (the platform's parameters, as text).
#[derive(Debug, Clone, Default)]
pub struct StatsQuery {
    pub start_date: Option<String>,
    pub end_date: Option<String>,
    pub repo_id: Option<String>,
    pub ai_llm_id: Option<String>,
    pub repo_ai_api_key_id: Option<String>,
    pub hosts: Option<String>,
    pub llm_type: Option<String>,
    pub llm_model: Option<String>,
    pub user_uuid: Option<String>,
    pub conversation_uuid: Option<String>,
}

impl Grain {
    /// The range a query without dates covers, and the longest one allowed.
    fn ranges(self) -> (TimeDelta, TimeDelta, &'static str) {
        match self {
            Grain::Day => (TimeDelta::days(30), TimeDelta::days(366), "366 days"),
            Grain::Minute => (TimeDelta::hours(1), TimeDelta::hours(24), "24 hours"),
        }
    }
}

/// One row of statistics: a time bucket and a dimension set.
pub type StatsRow = Rollup;

impl Rollup {
    /// The configuration's id as the platform shows it: empty for the
    /// operator's provider (the nil UUID in the rollups).
    pub fn ai_llm_text(&self) -> String {
        if self.ai_llm_id.is_nil() {
            String::new()
        } else {
            self.ai_llm_id.to_string()
        }
    }

    /// The calls' mean latency, in milliseconds.
    pub fn mean_latency_ms(&self) -> i64 {
        if self.api_calls > 0 {
            self.latency_ms / self.api_calls
        } else {
            0
        }
    }
}

impl Service {
    /// The statistics of one grain the caller may see, oldest bucket first.
    pub async fn usage_stats(
        &self,
        caller: &Caller,
        grain: Grain,
        query: StatsQuery,
    ) -> Result<Vec<StatsRow>, ApiError> {
        let (from, to) = stats_range(grain, &query, now())?;
        // Our configurations have no per-repository API keys: asking for
        // some matches nothing.
        let key_ids = uuid_list("repoAiApiKeyId", query.repo_ai_api_key_id.as_deref())?;
        let filter = StatsFilter {
            grain: grain.as_str(),
            org_id: caller.org_id,
            scope: if caller.role.is_org_admin() {
                UsageScope::Org
            } else {
                UsageScope::Member(caller.user_id)
            },
            from,
            to,
            repo_ids: uuid_list("repoId", query.repo_id.as_deref())?,
            ai_llm_ids: uuid_list("aiLlmId", query.ai_llm_id.as_deref())?,
            hosts: text_list("hosts", query.hosts.as_deref())?,
            llm_types: text_list("llmType", query.llm_type.as_deref())?,
            llm_models: text_list("llmModel", query.llm_model.as_deref())?,
            user_ids: uuid_list("userUuid", query.user_uuid.as_deref())?,
            conversation_ids: uuid_list("conversationUuid", query.conversation_uuid.as_deref())?,
        };
        if !key_ids.is_empty() {
            return Ok(Vec::new());
        }
        self.store
            .usage_stats(filter)
            .await
            .map_err(ApiError::from_store("Failed to read usage statistics"))
    }

    /// Each provider configuration's totals: `ai_llm_id`'s, or those of
    /// every configuration the caller can see.
    pub async fn ai_llm_stats(
        &self,
        caller: &Caller,
        ai_llm_id: Option<Uuid>,
    ) -> Result<Vec<AiLlmTotals>, ApiError> {
        const FAILED: &str = "Failed to read usage statistics";
        let member = (!caller.role.is_org_admin()).then_some(caller.user_id);
        let visible = self
            .store
            .list_ai_llms(caller.org_id, member, None)
            .await
            .map_err(ApiError::from_store(FAILED))?;
        let ids: Vec<Uuid> = visible
            .iter()
            .map(|c| c.id)
            .filter(|id| ai_llm_id.is_none_or(|wanted| wanted == *id))
            .collect();
        if ai_llm_id.is_some() && ids.is_empty() {
            return Err(ApiError::NotFound("AI configuration not found".into()));
        }
        let totals = self
            .store
            .ai_llm_totals(ids.clone())
            .await
            .map_err(ApiError::from_store(FAILED))?;
        // A configuration never used has zeros.
        Ok(ids
            .into_iter()
            .map(|id| {
                totals
                    .iter()
                    .find(|t| t.ai_llm_id == id)
                    .cloned()
                    .unwrap_or(AiLlmTotals {
                        ai_llm_id: id,
                        api_calls: 0,
                        tokens_in: 0,
                        tokens_out: 0,
                        llm_tokens_in: 0,
                        llm_tokens_out: 0,
                        violations: 0,
                        alerts: 0,
                        blocks: 0,
                    })
            })
            .collect())
    }
}

/// A comma list of names; NUL (no stored text has one) is refused.
fn text_list(name: &str, value: Option<&str>) -> Result<Vec<String>, ApiError> {
    let list = comma_list(value);
    if list.iter().any(|v| v.contains('\0')) {
        return Err(ApiError::InvalidArgument(format!(
            "{name} must not contain NUL characters"
        )));
    }
    Ok(list)
}

/// The half-open range of buckets a query covers: `startDate` (inclusive)
/// to `endDate` (inclusive, as the platform's dates), defaulting to the last
/// 30 days (daily) or hour (minute) before now; inverted or too long ranges
/// are refused.
fn stats_range(
    grain: Grain,
    query: &StatsQuery,
    now: DateTime<Utc>,
) -> Result<(DateTime<Utc>, DateTime<Utc>), ApiError> {
    let (default, longest, longest_text) = grain.ranges();
    let start = params::time_bound("startDate", query.start_date.as_deref(), Bound::Start)?;
    let end = params::time_bound("endDate", query.end_date.as_deref(), Bound::End)?;
    let to = end.unwrap_or(now);
    let from = start.unwrap_or(to - default);
    // Buckets that start within the range.
    let from_bucket = grain.bucket(from);
    if from >= to {
        return Err(ApiError::InvalidArgument(
            "startDate must be before endDate".into(),
        ));
    }
    if to - from > longest {
        return Err(ApiError::InvalidArgument(format!(
            "startDate to endDate must span at most {longest_text} for {} statistics",
            match grain {
                Grain::Day => "daily",
                Grain::Minute => "minute",
            }
        )));
    }
    Ok((from_bucket, to))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(start: Option<&str>, end: Option<&str>) -> StatsQuery {
        StatsQuery {
            start_date: start.map(str::to_owned),
            end_date: end.map(str::to_owned),
            ..StatsQuery::default()
        }
    }

    #[test]
    fn ranges_default_and_are_checked() {
        let now = "2026-11-29T12:34:56Z".parse().expect("valid");
        let (from, to) = stats_range(Grain::Day, &query(None, None), now).expect("valid");
        assert_eq!(to, now);
        assert_eq!(from.to_rfc3339(), "2026-10-30T00:00:00+00:00");
        let (from, _) = stats_range(Grain::Minute, &query(None, None), now).expect("valid");
        assert_eq!(from.to_rfc3339(), "2026-11-29T11:34:00+00:00");
        let inverted = stats_range(
            Grain::Day,
            &query(Some("2026-11-02"), Some("2026-11-01")),
            now,
        );
        assert!(
            inverted
                .expect_err("refused")
                .to_string()
                .contains("startDate")
        );
        let long = stats_range(
            Grain::Minute,
            &query(Some("2026-11-01T00:00:00Z"), Some("2026-11-03T00:00:00Z")),
            now,
        );
        assert!(long.expect_err("refused").to_string().contains("24 hours"));
        let bad = stats_range(Grain::Day, &query(Some("yesterday"), None), now);
        assert!(bad.expect_err("refused").to_string().contains("startDate"));
        // A whole day given as both ends is that day.
        let (from, to) = stats_range(
            Grain::Day,
            &query(Some("2026-11-01"), Some("2026-11-01")),
            now,
        )
        .expect("valid");
        assert_eq!((to - from).num_hours(), 24);
    }
}
