//! An organization's webhook for alerts: set by its administrators (the
//! signing secret is made here, shown once and stored sealed), and the
//! deliverer that sends the outbox's rows as JSON POSTs signed with
//! HMAC-SHA256, at least once, with retries and backoff, through the same
//! private-address guard as providers' endpoints.

use std::time::Duration;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use rand::TryRngCore as _;
use secrecy::{ExposeSecret as _, SecretString};
use sha2::Sha256;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::enforce::Rule;
use crate::domain::Caller;
use crate::error::ApiError;
use crate::secrets::{Field, Keyring, Sealed};
use crate::service::audit::{self, Action, Context, Scope};
use crate::service::{RequestContext, Service};
use crate::store::Store;
use crate::store::policies::{NewAlert, NewDelivery, NewViolation};
use crate::store::types::{SqlUuid, now};
use crate::store::webhooks::{Attempt, DeliveryRow, WebhookRow};

/// The header carrying a delivery's signature: `t=<unix seconds>,v1=<hex
/// HMAC-SHA256 of "<t>.<body>" under the webhook's secret>`.
pub const SIGNATURE_HEADER: &str = "x-flashback-signature";
/// The header naming a delivery (the same on every retry: receivers
/// deduplicate on it).
pub const DELIVERY_HEADER: &str = "x-flashback-delivery";

/// How many due deliveries a deliverer takes at a time.
const BATCH: u32 = 5;

/// How many attempts a delivery gets before it is marked failed.
const MAX_ATTEMPTS: i32 = 10;

/// A webhook as its organization's administrators see it (never its secret).
#[derive(Debug, Clone)]
pub struct WebhookView {
    pub url: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A delivery, as listed.
#[derive(Debug, Clone)]
pub struct DeliveryView {
    pub id: Uuid,
    pub alert_id: Uuid,
    pub status: String,
    pub attempts: i32,
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
}

impl From<DeliveryRow> for DeliveryView {
    fn from(r: DeliveryRow) -> Self {
        DeliveryView {
            next_attempt_at: (r.status == "pending").then_some(r.next_attempt_at),
            id: r.id,
            alert_id: r.alert_id,
            status: r.status,
            attempts: r.attempts,
            last_status: r.last_status,
            last_error: r.last_error,
            created_at: r.created_at,
            delivered_at: r.delivered_at,
        }
    }
}

/// The outbox row of an alert.
pub(super) fn delivery(violation: &NewViolation, alert: &NewAlert, rule: &Rule) -> NewDelivery {
    let body = serde_json::json!({
        "type": "policy.alert",
        "alertId": alert.id.0,
        "violationId": violation.id.0,
        "orgId": violation.org_id.0,
        "workspaceId": violation.workspace_id.0,
        "repoId": violation.repo_id.0,
        "conversationId": violation.conversation_id.map(|c| c.0),
        "userId": violation.user_id.0,
        "policyId": rule.id,
        "policyName": rule.name,
        "severity": violation.severity,
        "block": violation.block,
        "stage": violation.stage,
        "message": alert.message,
        "explanation": violation.explanation,
        "llmType": violation.llm_type,
        "llmModel": violation.llm_model,
        "host": violation.host,
        "timestamp": alert.created_at.0.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    });
    NewDelivery {
        id: SqlUuid(Uuid::now_v7()),
        org_id: violation.org_id,
        alert_id: alert.id,
        body: body.to_string(),
        status: "pending".into(),
        attempts: 0,
        next_attempt_at: alert.created_at,
        last_status: None,
        last_error: None,
        created_at: alert.created_at,
        delivered_at: None,
    }
}

/// The signature header's value for `body` at `t`.
pub fn sign(secret: &str, t: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(format!("{t}.{body}").as_bytes());
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

fn admins_only(caller: &Caller) -> Result<(), ApiError> {
    if caller.role.is_org_admin() {
        Ok(())
    } else {
        Err(ApiError::PermissionDenied(
            "Only organization administrators manage the webhook".into(),
        ))
    }
}

impl Service {
    /// Sets the caller's organization's webhook; its new signing secret
    /// (shown this once).
    pub async fn set_webhook(
        &self,
        caller: &Caller,
        url: &str,
        ctx: &RequestContext,
    ) -> Result<(WebhookView, String), ApiError> {
        admins_only(caller)?;
        let url = crate::egress::check_url(url, self.allow_private)
            .map_err(|e| ApiError::InvalidArgument(e.of("url")))?
            .to_string();
        let keyring = self.keyring()?;
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng
            .try_fill_bytes(&mut bytes)
            .expect("the operating system's random number generator failed");
        let secret = format!(
            "whsec_{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        );
        let sealed = keyring.seal(
            &SecretString::from(secret.clone()),
            caller.org_id,
            Field::WebhookSecret,
        );
        let at = now();
        let mut data = serde_json::Map::new();
        data.insert("url".into(), url.clone().into());
        let event = webhook_event(caller, Action::Updated, data, ctx, at);
        self.store
            .set_webhook(
                caller.org_id,
                url.clone(),
                sealed.bytes,
                sealed.key_id,
                at,
                event,
            )
            .await
            .map_err(ApiError::from_store("Failed to set the webhook"))?;
        let view = WebhookView {
            url,
            created_at: at,
            updated_at: at,
        };
        Ok((view, secret))
    }

    /// The caller's organization's webhook, if any.
    pub async fn get_webhook(&self, caller: &Caller) -> Result<Option<WebhookView>, ApiError> {
        admins_only(caller)?;
        Ok(self
            .store
            .find_webhook(caller.org_id)
            .await
            .map_err(ApiError::from_store("Failed to read the webhook"))?
            .map(|w| WebhookView {
                url: w.url,
                created_at: w.created_at,
                updated_at: w.updated_at,
            }))
    }

    /// Removes the caller's organization's webhook.
    pub async fn delete_webhook(
        &self,
        caller: &Caller,
        ctx: &RequestContext,
    ) -> Result<(), ApiError> {
        admins_only(caller)?;
        let event = webhook_event(caller, Action::Deleted, serde_json::Map::new(), ctx, now());
        let deleted = self
            .store
            .delete_webhook(caller.org_id, event)
            .await
            .map_err(ApiError::from_store("Failed to delete the webhook"))?;
        if deleted {
            Ok(())
        } else {
            Err(ApiError::NotFound("No webhook is set".into()))
        }
    }

    /// A page of the caller's organization's deliveries, and their total.
    pub async fn list_deliveries(
        &self,
        caller: &Caller,
        take: i64,
        skip: i64,
    ) -> Result<(Vec<DeliveryView>, i64), ApiError> {
        admins_only(caller)?;
        let (rows, total) = self
            .store
            .list_deliveries(caller.org_id, take, skip)
            .await
            .map_err(ApiError::from_store("Failed to list deliveries"))?;
        Ok((rows.into_iter().map(DeliveryView::from).collect(), total))
    }
}

fn webhook_event(
    caller: &Caller,
    action: Action,
    data: serde_json::Map<String, serde_json::Value>,
    ctx: &RequestContext,
    at: DateTime<Utc>,
) -> crate::store::conversations::NewEvent {
    let scope = Scope {
        org_id: caller.org_id,
        workspace_id: None,
        user_id: caller.user_id,
    };
    let mut event = audit::event(
        scope,
        Context::Webhook,
        caller.org_id,
        action,
        data,
        ctx,
        at,
    );
    // The operator (the admin CLI) acts as nobody in particular.
    if caller.user_id.is_nil() {
        event.user_id = None;
    }
    event
}

/// How the deliverer works.
#[derive(Debug, Clone, Copy)]
pub struct Deliverer {
    /// How often it looks for due deliveries.
    pub poll: Duration,
    /// The first retry's wait; each next one doubles it, up to an hour.
    pub retry_base: Duration,
    /// Longest one attempt may take.
    pub timeout: Duration,
}

/// Sends due deliveries until `stop`: each leased, sent, and recorded
/// delivered, or retried later (backoff), or failed after 10 attempts.
pub async fn deliver_webhooks(
    store: Store,
    keyring: Option<Keyring>,
    http: reqwest::Client,
    allow_private: bool,
    how: Deliverer,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(how.poll) => {}
        }
        // The batch is sent one after another: its lease covers them all.
        let at = now();
        let lease = at + chrono::TimeDelta::from_std(how.timeout * (BATCH + 1)).unwrap_or_default();
        let due = match store.lease_due_deliveries(at, lease, BATCH.into()).await {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "webhook deliveries could not be read");
                continue;
            }
        };
        for row in due {
            let id = row.id;
            let attempt = attempt(&store, keyring.as_ref(), &http, allow_private, how, row).await;
            if let Err(e) = store.record_attempt(id, lease, attempt, now()).await {
                tracing::warn!(error = %e, delivery = %id, "a webhook attempt could not be recorded");
            }
        }
    }
}

/// One attempt at `row`.
async fn attempt(
    store: &Store,
    keyring: Option<&Keyring>,
    http: &reqwest::Client,
    allow_private: bool,
    how: Deliverer,
    row: DeliveryRow,
) -> Attempt {
    let failed = |status: Option<i32>, error: String| {
        let backoff = how
            .retry_base
            .saturating_mul(1 << row.attempts.clamp(0, 16))
            .min(Duration::from_secs(3600));
        let retry_at = (row.attempts + 1 < MAX_ATTEMPTS)
            .then(|| now() + chrono::TimeDelta::from_std(backoff).unwrap_or_default());
        Attempt::Failed {
            status,
            error,
            retry_at,
        }
    };
    let webhook = match store.find_webhook(row.org_id).await {
        Ok(Some(w)) => w,
        // Removed: nothing to retry for.
        Ok(None) => {
            return Attempt::Failed {
                status: None,
                error: "no webhook is set".into(),
                retry_at: None,
            };
        }
        Err(e) => return failed(None, format!("the webhook could not be read: {e}")),
    };
    if let Err(e) = crate::egress::check_url(&webhook.url, allow_private) {
        return failed(None, e.to_string());
    }
    let Some(secret) = open_secret(keyring, &webhook) else {
        return failed(None, "the webhook's secret does not open".into());
    };
    let t = now().timestamp();
    let sent = http
        .post(&webhook.url)
        .timeout(how.timeout)
        .header("content-type", "application/json")
        .header(SIGNATURE_HEADER, sign(secret.expose_secret(), t, &row.body))
        .header(DELIVERY_HEADER, row.id.to_string())
        .body(row.body.clone())
        .send()
        .await;
    match sent {
        Ok(r) if r.status().is_success() => Attempt::Delivered {
            status: i32::from(r.status().as_u16()),
        },
        Ok(r) => failed(
            Some(i32::from(r.status().as_u16())),
            format!("HTTP {}", r.status().as_u16()),
        ),
        Err(e) => failed(
            None,
            if e.is_timeout() {
                "timed out".into()
            } else {
                "unreachable".into()
            },
        ),
    }
}

fn open_secret(keyring: Option<&Keyring>, webhook: &WebhookRow) -> Option<SecretString> {
    let sealed = Sealed {
        key_id: webhook.secrets_key_id.clone(),
        bytes: webhook.secret_sealed.clone(),
    };
    keyring?
        .open(&sealed, webhook.org_id, Field::WebhookSecret)
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hmac_sha256_of_time_and_body() {
        // The value Python's `hmac.new(key, b"1700000000.{\"a\":1}", sha256)` gives.
        assert_eq!(
            sign("whsec_test", 1_700_000_000, "{\"a\":1}"),
            "t=1700000000,v1=38877139021993b830af32feea6e18a8da83eb2f6e49ee50bd9e4cf4ca4d3789"
        );
        assert_ne!(
            sign("other", 1_700_000_000, "{\"a\":1}"),
            sign("whsec_test", 1_700_000_000, "{\"a\":1}")
        );
    }
}
