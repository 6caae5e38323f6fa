//! Enforcing policies on a turn: the policies of the conversation's
//! organization, workspace and repository (read through a short-lived cache
//! that any change in this process clears), checked on the prompt before the
//! model and on the reply after it (and while it streams, when a blocking
//! policy applies). Patterns decide locally; policies without patterns go to
//! the judge. A violation is recorded (with its alert and the alert's webhook
//! deliveries, in one transaction); a blocking one stops the turn.

use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use uuid::Uuid;

use super::judge::{Judge, JudgeError};
use crate::domain::{ActionType, RiskType};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::service::RequestContext;
use crate::service::audit::{self, Action, Context, Scope};
use crate::service::cache::ReadCache;
use crate::service::usage::{Outcome, TurnLedger, ViolationCounts};
use crate::store::Store;
use crate::store::policies::{Findings, NewAlert, NewViolation, PolicyRow};
use crate::store::types::{SqlTime, SqlUuid, now};

/// How policies are enforced (`serve`'s `--policy-*` flags).
#[derive(Debug, Clone)]
pub struct PolicyConfig {
    /// A Chat Completions API base for the judge; the conversation's own
    /// provider when `None`.
    pub judge_url: Option<String>,
    /// The judge's model; the prompt's model when `None`.
    pub judge_model: Option<String>,
    pub judge_api_key: Option<SecretString>,
    /// Longest a judge call may take (then it counts as failed).
    pub judge_timeout: Duration,
    /// While a reply streams and a blocking policy applies, it is checked
    /// each time this many more characters have arrived.
    pub stream_interval: usize,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            judge_url: None,
            judge_model: None,
            judge_api_key: None,
            judge_timeout: Duration::from_secs(10),
            stream_interval: 400,
        }
    }
}

/// A policy, ready to check.
#[derive(Debug)]
pub struct Rule {
    pub id: Uuid,
    pub name: String,
    pub content: String,
    pub risk: RiskType,
    pub action: ActionType,
    /// Compiled, beside their text (a policy with patterns is decided by them).
    pub patterns: Vec<(String, regex::Regex)>,
}

impl Rule {
    fn from_row(row: PolicyRow) -> Rule {
        // Patterns were checked when written; one that no longer reads or
        // compiles (a store edited by hand) is logged, never silently judged.
        let patterns: Vec<String> = row.pattern_list().unwrap_or_else(|e| {
            tracing::error!(policy_id = %row.id, error = %e, "a policy's patterns do not read");
            Vec::new()
        });
        let patterns = patterns
            .into_iter()
            .filter_map(|p| match super::compile(&p) {
                Ok(re) => Some((p, re)),
                Err(e) => {
                    tracing::error!(policy_id = %row.id, error = %e, "a policy's pattern does not compile");
                    None
                }
            })
            .collect();
        Rule {
            patterns,
            id: row.id,
            name: row.name,
            content: row.content,
            risk: row.risk_type,
            action: ActionType::from_number(row.action_type.into()).unwrap_or(ActionType::Log),
        }
    }

    #[cfg(test)]
    pub fn for_tests(name: &str) -> Rule {
        Rule {
            id: Uuid::now_v7(),
            name: name.into(),
            content: "Never share secrets.".into(),
            risk: RiskType::High,
            action: ActionType::Block,
            patterns: Vec::new(),
        }
    }
}

/// The policies that apply to one repository.
#[derive(Debug, Default)]
pub struct PolicySet {
    pub rules: Vec<Rule>,
}

/// Each repository's policies, for a short while.
pub type PolicyCache = ReadCache<Uuid, Arc<PolicySet>>;

/// What a check looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Prompt,
    Reply,
}

impl Stage {
    fn as_str(self) -> &'static str {
        match self {
            Stage::Prompt => "prompt",
            Stage::Reply => "reply",
        }
    }
}

/// Who, where and with which provider a turn runs: what its violations say.
#[derive(Debug, Clone)]
pub struct TurnFacts {
    pub org_id: Uuid,
    pub workspace_id: Uuid,
    pub repo_id: Uuid,
    pub conversation_id: Uuid,
    pub user_id: Uuid,
    pub ai_llm_id: Option<Uuid>,
    pub llm_type: String,
    pub llm_model: String,
    pub host: String,
}

/// A turn's policy checks: its policies, its judge, where findings go.
#[derive(Clone)]
pub struct TurnChecks {
    pub(crate) store: Store,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) set: Arc<PolicySet>,
    pub(crate) judge: Judge,
    pub(crate) facts: TurnFacts,
    pub(crate) request: RequestContext,
    pub(crate) stream_interval: usize,
    /// The turn's model calls, for the usage ledger.
    pub(crate) ledger: TurnLedger,
}

/// A policy a check found violated, and why.
struct Finding<'a> {
    rule: &'a Rule,
    explanation: String,
}

/// What a failed or unavailable judgment answers, when it matters.
const EVALUATION_UNAVAILABLE: &str = "Policy evaluation unavailable";

impl TurnChecks {
    /// Whether a blocking policy applies (then a streamed reply is held back
    /// until checked).
    pub fn blocks(&self) -> bool {
        self.set.rules.iter().any(|r| r.action == ActionType::Block)
    }

    /// Whether a blocking policy is judged by the model (then a streamed
    /// reply's checks grow further apart).
    pub fn judges_blocking(&self) -> bool {
        self.set
            .rules
            .iter()
            .any(|r| r.action == ActionType::Block && r.patterns.is_empty())
    }

    /// Checks `text` against the policies (only the blocking ones when
    /// `only_blocking`), records what it finds, and answers the turn's fate:
    /// the policy tokens spent, or the block, or 503 when a blocking policy
    /// could not be judged.
    pub async fn check(
        &self,
        text: &str,
        stage: Stage,
        only_blocking: bool,
    ) -> Result<u64, ApiError> {
        let rules: Vec<&Rule> = self
            .set
            .rules
            .iter()
            .filter(|r| !only_blocking || r.action == ActionType::Block)
            .collect();
        if rules.is_empty() {
            return Ok(0);
        }
        let mut findings = matches(&rules, text, stage);
        let mut tokens = 0;
        let mut unavailable = false;
        let judged: Vec<&Rule> = rules
            .iter()
            .copied()
            .filter(|r| r.patterns.is_empty())
            .collect();
        let blocked = findings.iter().any(|f| f.rule.action == ActionType::Block);
        if !judged.is_empty() && !blocked {
            let judgment = self.judge.judge(&judged, text, stage).await;
            self.ledger
                .judged(judgment.tokens_in, judgment.tokens_out, judgment.latency);
            tokens = judgment.tokens();
            self.metrics.policy_tokens(tokens);
            match judgment.verdicts {
                Ok(verdicts) => {
                    for verdict in verdicts.into_iter().filter(|v| v.violated) {
                        if let Some(rule) = judged.iter().find(|r| r.id == verdict.policy_id) {
                            findings.push(Finding {
                                rule,
                                explanation: verdict.explanation,
                            });
                        }
                    }
                }
                Err(e) => unavailable = self.judge_failed(&judged, &e),
            }
        }
        self.record(&findings, stage).await?;
        if let Some(block) = findings.iter().find(|f| f.rule.action == ActionType::Block) {
            return Err(ApiError::FailedPrecondition(format!(
                "Blocked by policy \"{}\": {}",
                block.rule.name, block.explanation
            )));
        }
        if unavailable {
            return Err(ApiError::DependencyUnavailable(
                EVALUATION_UNAVAILABLE.into(),
            ));
        }
        Ok(tokens)
    }

    /// A judge call failed: blocking policies fail closed (true: the turn
    /// stops), the others open (logged and counted).
    fn judge_failed(&self, judged: &[&Rule], e: &JudgeError) -> bool {
        let closed = judged.iter().any(|r| r.action == ActionType::Block);
        let outcome = if closed { "fail_closed" } else { "fail_open" };
        tracing::warn!(error = %e, outcome, repo_id = %self.facts.repo_id, "policy judge failed");
        self.metrics.policy_judge_failed(outcome);
        closed
    }

    /// Writes the findings: a violation each, an alert for those of
    /// alerting and blocking policies, their events, and a webhook delivery
    /// per alert when the organization has a webhook.
    async fn record(&self, findings: &[Finding<'_>], stage: Stage) -> Result<(), ApiError> {
        if findings.is_empty() {
            return Ok(());
        }
        const FAILED: &str = "Failed to record a policy violation";
        let webhook = if findings.iter().any(|f| f.rule.action != ActionType::Log) {
            self.store
                .find_webhook(self.facts.org_id)
                .await
                .map_err(ApiError::from_store(FAILED))?
        } else {
            None
        };
        let at = now();
        let mut out = Findings::default();
        let mut counts = ViolationCounts::default();
        for finding in findings {
            let violation = self.violation(finding, stage, at);
            counts.violations += 1;
            match finding.rule.risk {
                RiskType::Low => counts.low += 1,
                RiskType::Medium => counts.medium += 1,
                RiskType::High => counts.high += 1,
            }
            match finding.rule.action {
                ActionType::Log => {}
                ActionType::Alert => counts.alerts += 1,
                ActionType::Block => {
                    counts.alerts += 1;
                    counts.blocks += 1;
                }
            }
            out.events
                .push(self.event(Context::PolicyViolation, &violation, finding, at));
            if finding.rule.action != ActionType::Log {
                let alert = NewAlert {
                    id: SqlUuid(Uuid::now_v7()),
                    violation_id: violation.id,
                    message: format!(
                        "Policy \"{}\" violated by the {}: {}",
                        finding.rule.name,
                        stage.as_str(),
                        finding.explanation
                    ),
                    created_at: SqlTime(at),
                };
                out.events
                    .push(self.event(Context::PolicyAlert, &violation, finding, at));
                if webhook.is_some() {
                    out.deliveries.push(super::webhooks::delivery(
                        &violation,
                        &alert,
                        finding.rule,
                    ));
                }
                out.alerts.push(alert);
            }
            out.violations.push(violation);
        }
        // A blocked turn ends here: its calls are written with its violations.
        if counts.blocks > 0 {
            self.ledger.block();
            out.usage = self.ledger.take(Outcome::Blocked, at);
        }
        out.usage
            .rollups
            .extend(self.ledger.violation_rollups(counts, at));
        let usage = out.usage.clone();
        self.store
            .record_findings(out)
            .await
            .map_err(ApiError::from_store(FAILED))?;
        crate::service::usage::settled(&self.metrics, &usage);
        Ok(())
    }

    fn violation(
        &self,
        finding: &Finding<'_>,
        stage: Stage,
        at: chrono::DateTime<chrono::Utc>,
    ) -> NewViolation {
        let f = &self.facts;
        NewViolation {
            id: SqlUuid(Uuid::now_v7()),
            org_id: SqlUuid(f.org_id),
            workspace_id: SqlUuid(f.workspace_id),
            repo_id: SqlUuid(f.repo_id),
            policy_id: SqlUuid(finding.rule.id),
            conversation_id: Some(SqlUuid(f.conversation_id)),
            user_id: SqlUuid(f.user_id),
            stage: stage.as_str().into(),
            explanation: finding.explanation.clone(),
            severity: finding.rule.risk.as_str().into(),
            block: finding.rule.action == ActionType::Block,
            ai_llm_id: f.ai_llm_id.map(SqlUuid),
            llm_type: f.llm_type.clone(),
            llm_model: f.llm_model.clone(),
            host: f.host.clone(),
            created_at: SqlTime(at),
        }
    }

    fn event(
        &self,
        context: Context,
        violation: &NewViolation,
        finding: &Finding<'_>,
        at: chrono::DateTime<chrono::Utc>,
    ) -> crate::store::conversations::NewEvent {
        let mut data = serde_json::Map::new();
        data.insert("policyId".into(), finding.rule.id.to_string().into());
        data.insert("policyName".into(), finding.rule.name.clone().into());
        data.insert(
            "conversationId".into(),
            self.facts.conversation_id.to_string().into(),
        );
        data.insert("repoId".into(), self.facts.repo_id.to_string().into());
        data.insert("stage".into(), violation.stage.clone().into());
        data.insert("severity".into(), violation.severity.clone().into());
        data.insert("block".into(), violation.block.into());
        let scope = Scope {
            org_id: self.facts.org_id,
            workspace_id: Some(self.facts.workspace_id),
            user_id: self.facts.user_id,
        };
        audit::event(
            scope,
            context,
            violation.id.0,
            Action::Created,
            data,
            &self.request,
            at,
        )
    }
}

/// The pattern policies among `rules` that `text` matches: the first
/// matching pattern of each.
fn matches<'a>(rules: &[&'a Rule], text: &str, stage: Stage) -> Vec<Finding<'a>> {
    rules
        .iter()
        .filter_map(|rule| {
            let (pattern, _) = rule.patterns.iter().find(|(_, re)| re.is_match(text))?;
            Some(Finding {
                rule,
                explanation: format!(
                    "The {} matches pattern {pattern:?} of policy \"{}\"",
                    stage.as_str(),
                    rule.name
                ),
            })
        })
        .collect()
}

impl crate::service::Service {
    /// The policies that apply to a repository (cached briefly).
    pub(crate) async fn policies_of(
        &self,
        org_id: Uuid,
        workspace_id: Uuid,
        repo_id: Uuid,
    ) -> Result<Arc<PolicySet>, ApiError> {
        let store = self.store.clone();
        self.policy_cache
            .get_or_load(repo_id, || async move {
                let rows = store
                    .applicable_policies(org_id, workspace_id, repo_id)
                    .await
                    .map_err(ApiError::from_store("Failed to read policies"))?;
                Ok(Arc::new(PolicySet {
                    rules: rows.into_iter().map(Rule::from_row).collect(),
                }))
            })
            .await
    }

    /// The checks of a turn: its policies and its judge (the configured one,
    /// else the turn's own provider and model).
    pub(crate) fn turn_checks(
        &self,
        facts: TurnFacts,
        set: Arc<PolicySet>,
        provider: Arc<crate::provider::Provider>,
        request: RequestContext,
    ) -> TurnChecks {
        let config = &self.policy_config;
        let judge = Judge {
            provider: self.judge_provider.clone().unwrap_or(provider),
            model: config
                .judge_model
                .clone()
                .unwrap_or_else(|| facts.llm_model.clone()),
            timeout: config.judge_timeout,
        };
        TurnChecks {
            ledger: TurnLedger::new(facts.clone(), self.store.clone()),
            store: self.store.clone(),
            metrics: self.metrics.clone(),
            set,
            judge,
            facts,
            request,
            stream_interval: config.stream_interval.max(1),
        }
    }
}
