//! Organizations' webhooks (`org_webhooks`) and the outbox of deliveries
//! (`webhook_deliveries`): rows written with the alerts they carry, taken by
//! a deliverer that leases each one before sending it, so that replicas
//! sharing the database do not send the same delivery at once.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use futures_util::FutureExt as _;
use uuid::Uuid;

use super::conversations::NewEvent;
use super::schema::{org_webhooks, system_events, webhook_deliveries};
use super::types::{SqlTime, SqlUuid};
use super::{Store, StoreError};
use crate::{with_conn, write_tx};

/// An organization's webhook (its secret sealed).
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = org_webhooks, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct WebhookRow {
    pub org_id: Uuid,
    pub url: String,
    pub secret_sealed: Vec<u8>,
    pub secrets_key_id: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A delivery as stored.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = webhook_deliveries, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct DeliveryRow {
    pub id: Uuid,
    pub org_id: Uuid,
    pub alert_id: Uuid,
    pub body: String,
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
}

/// How a delivery attempt ended.
#[derive(Debug, Clone)]
pub enum Attempt {
    Delivered {
        status: i32,
    },
    /// Failed; tried again at `retry_at`, or given up when `None`.
    Failed {
        status: Option<i32>,
        error: String,
        retry_at: Option<DateTime<Utc>>,
    },
}

impl Store {
    /// An organization's webhook.
    pub async fn find_webhook(&self, org_id: Uuid) -> Result<Option<WebhookRow>, StoreError> {
        self.run(move |conn| {
            async move {
                let query = org_webhooks::table.filter(org_webhooks::org_id.eq(SqlUuid(org_id)));
                Ok(with_conn!(&mut *conn, |c| query
                    .select(WebhookRow::as_select())
                    .first(c)
                    .await
                    .optional())?)
            }
            .boxed()
        })
        .await
    }

    /// Sets (or replaces) an organization's webhook, with its audit event.
    #[allow(clippy::too_many_arguments)]
    pub async fn set_webhook(
        &self,
        org_id: Uuid,
        url: String,
        secret_sealed: Vec<u8>,
        secrets_key_id: String,
        at: DateTime<Utc>,
        event: NewEvent,
    ) -> Result<(), StoreError> {
        self.run(move |conn| {
            async move {
                // One row per organization: a new URL and secret replace
                // the old ones (created_at kept), also under concurrent sets.
                write_tx!(&mut *conn, |c| {
                    diesel::insert_into(org_webhooks::table)
                        .values((
                            org_webhooks::org_id.eq(SqlUuid(org_id)),
                            org_webhooks::url.eq(&url),
                            org_webhooks::secret_sealed.eq(&secret_sealed),
                            org_webhooks::secrets_key_id.eq(&secrets_key_id),
                            org_webhooks::created_at.eq(SqlTime(at)),
                            org_webhooks::updated_at.eq(SqlTime(at)),
                        ))
                        .on_conflict(org_webhooks::org_id)
                        .do_update()
                        .set((
                            org_webhooks::url.eq(&url),
                            org_webhooks::secret_sealed.eq(&secret_sealed),
                            org_webhooks::secrets_key_id.eq(&secrets_key_id),
                            org_webhooks::updated_at.eq(SqlTime(at)),
                        ))
                        .execute(c)
                        .await?;
                    diesel::insert_into(system_events::table)
                        .values(&event)
                        .execute(c)
                        .await?;
                    Ok(())
                })
            }
            .boxed()
        })
        .await
    }

    /// Every webhook (for re-sealing their secrets with a new key).
    pub async fn all_webhooks(&self) -> Result<Vec<WebhookRow>, StoreError> {
        self.run(move |conn| {
            async move {
                Ok(with_conn!(&mut *conn, |c| org_webhooks::table
                    .select(WebhookRow::as_select())
                    .load(c)
                    .await)?)
            }
            .boxed()
        })
        .await
    }

    /// Replaces a webhook's sealed secret if it is still `seen` (see
    /// `reseal_ai_llm`); whether it was replaced.
    pub async fn reseal_webhook(
        &self,
        org_id: Uuid,
        seen: Vec<u8>,
        secret_sealed: Vec<u8>,
        secrets_key_id: String,
    ) -> Result<bool, StoreError> {
        self.run(move |conn| {
            async move {
                let row = org_webhooks::table
                    .filter(org_webhooks::org_id.eq(SqlUuid(org_id)))
                    .filter(org_webhooks::secret_sealed.eq(seen));
                let update = diesel::update(row).set((
                    org_webhooks::secret_sealed.eq(secret_sealed),
                    org_webhooks::secrets_key_id.eq(secrets_key_id),
                ));
                write_tx!(&mut *conn, |c| Ok(update.execute(c).await? == 1))
            }
            .boxed()
        })
        .await
    }

    /// Removes an organization's webhook (pending deliveries then fail when
    /// their turn comes), with its audit event; false if there was none.
    pub async fn delete_webhook(&self, org_id: Uuid, event: NewEvent) -> Result<bool, StoreError> {
        self.run(move |conn| {
            async move {
                write_tx!(&mut *conn, |c| {
                    let gone = diesel::delete(
                        org_webhooks::table.filter(org_webhooks::org_id.eq(SqlUuid(org_id))),
                    )
                    .execute(c)
                    .await?;
                    if gone == 0 {
                        return Ok(false);
                    }
                    diesel::insert_into(system_events::table)
                        .values(&event)
                        .execute(c)
                        .await?;
                    Ok(true)
                })
            }
            .boxed()
        })
        .await
    }

    /// A page of an organization's deliveries, newest first, and how many
    /// there are.
    pub async fn list_deliveries(
        &self,
        org_id: Uuid,
        take: i64,
        skip: i64,
    ) -> Result<(Vec<DeliveryRow>, i64), StoreError> {
        self.run(move |conn| {
            async move {
                let of_org = webhook_deliveries::org_id.eq(SqlUuid(org_id));
                Ok(with_conn!(&mut *conn, |c| {
                    let total = webhook_deliveries::table
                        .filter(of_org)
                        .count()
                        .get_result::<i64>(c)
                        .await?;
                    let rows = webhook_deliveries::table
                        .filter(of_org)
                        .order((
                            webhook_deliveries::created_at.desc(),
                            webhook_deliveries::id.desc(),
                        ))
                        .limit(take)
                        .offset(skip)
                        .select(DeliveryRow::as_select())
                        .load(c)
                        .await?;
                    Ok::<_, diesel::result::Error>((rows, total))
                })?)
            }
            .boxed()
        })
        .await
    }

    /// Takes up to `limit` pending deliveries that are due, leasing each
    /// until `lease_until` (a delivery another replica leased first is
    /// left to it). Nothing due: one read, no write.
    pub async fn lease_due_deliveries(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<DeliveryRow>, StoreError> {
        self.run(move |conn| {
            async move {
                let due = webhook_deliveries::table
                    .filter(webhook_deliveries::status.eq("pending"))
                    .filter(webhook_deliveries::next_attempt_at.le(SqlTime(now)))
                    .order(webhook_deliveries::next_attempt_at.asc())
                    .limit(limit);
                let due: Vec<DeliveryRow> = with_conn!(&mut *conn, |c| due
                    .select(DeliveryRow::as_select())
                    .load(c)
                    .await)?;
                if due.is_empty() {
                    return Ok(due);
                }
                write_tx!(&mut *conn, |c| {
                    let mut leased = Vec::with_capacity(due.len());
                    for mut row in due {
                        let taken = diesel::update(
                            webhook_deliveries::table
                                .filter(webhook_deliveries::id.eq(SqlUuid(row.id)))
                                .filter(webhook_deliveries::status.eq("pending"))
                                .filter(
                                    webhook_deliveries::next_attempt_at
                                        .eq(SqlTime(row.next_attempt_at)),
                                ),
                        )
                        .set(webhook_deliveries::next_attempt_at.eq(SqlTime(lease_until)))
                        .execute(c)
                        .await?;
                        if taken == 1 {
                            row.next_attempt_at = lease_until;
                            leased.push(row);
                        }
                    }
                    Ok(leased)
                })
            }
            .boxed()
        })
        .await
    }

    /// Records how an attempt at delivery `id`, leased until `lease`,
    /// ended; nothing if the lease was lost meanwhile (another replica then
    /// owns the row).
    pub async fn record_attempt(
        &self,
        id: Uuid,
        lease: DateTime<Utc>,
        attempt: Attempt,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.run(move |conn| {
            async move {
                let row = webhook_deliveries::table
                    .filter(webhook_deliveries::id.eq(SqlUuid(id)))
                    .filter(webhook_deliveries::status.eq("pending"))
                    .filter(webhook_deliveries::next_attempt_at.eq(SqlTime(lease)));
                let attempts = webhook_deliveries::attempts.eq(webhook_deliveries::attempts + 1);
                write_tx!(&mut *conn, |c| {
                    match attempt {
                        Attempt::Delivered { status } => {
                            diesel::update(row)
                                .set((
                                    attempts,
                                    webhook_deliveries::status.eq("delivered"),
                                    webhook_deliveries::last_status.eq(Some(status)),
                                    webhook_deliveries::last_error.eq(None::<String>),
                                    webhook_deliveries::delivered_at.eq(Some(SqlTime(at))),
                                ))
                                .execute(c)
                                .await?;
                        }
                        Attempt::Failed {
                            status,
                            error,
                            retry_at,
                        } => {
                            diesel::update(row)
                                .set((
                                    attempts,
                                    webhook_deliveries::status.eq(if retry_at.is_some() {
                                        "pending"
                                    } else {
                                        "failed"
                                    }),
                                    webhook_deliveries::last_status.eq(status),
                                    webhook_deliveries::last_error.eq(Some(error)),
                                    webhook_deliveries::next_attempt_at
                                        .eq(SqlTime(retry_at.unwrap_or(at))),
                                ))
                                .execute(c)
                                .await?;
                        }
                    }
                    Ok(())
                })
            }
            .boxed()
        })
        .await
    }
}
