//! Rule 1 of every operation: who is calling. The adapters hand over the
//! caller's `authorization` values as [`Credentials`]; this turns them into a
//! [`Caller`] (an API token looked up by its hash, or a JWT when configured),
//! or refuses with 401.

use chrono::Utc;
use uuid::Uuid;

use super::Service;
use crate::auth::hash_token;
use crate::auth::jwt::looks_like_jwt;
use crate::auth::parse_bearer;
use crate::domain::Caller;
use crate::error::ApiError;
use crate::store::Store;
use crate::store::auth::{TokenOwner, UserRow};
use crate::store::conversations::{Creator, Holder};
use crate::store::types::SqlUuid;

/// How stale `api_tokens.last_used_at` may get before a request refreshes it
/// (a write per request would be a write too many).
const TOKEN_TOUCH_INTERVAL: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

/// What failing to authenticate inside the service says.
const AUTH_FAILED: &str = "Failed to authenticate";

/// The credential a request carries, not yet checked against the store:
/// exactly one `authorization` value of the Bearer scheme with a well-formed
/// token, or nothing usable.
#[derive(Clone)]
pub struct Credentials(Option<String>);

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials(<redacted>)")
    }
}

impl Credentials {
    /// From the values of every `authorization` header (or metadata entry).
    pub fn from_values<'a>(mut values: impl Iterator<Item = &'a [u8]>) -> Self {
        let token = match (values.next(), values.next()) {
            (Some(value), None) => parse_bearer(value).map(str::to_owned),
            _ => None,
        };
        Credentials(token)
    }

    /// The bearer token, if well-formed.
    pub(crate) fn token(&self) -> Result<&str, ApiError> {
        self.0.as_deref().ok_or(ApiError::Unauthenticated)
    }
}

impl Service {
    /// Rule 1: a valid bearer credential (an API token, or a JWT when they
    /// are configured) of an enabled user.
    pub async fn authenticate(&self, credentials: &Credentials) -> Result<Caller, ApiError> {
        let token = credentials.token()?;
        if let Some(user_id) = self.jwt_subject(token)? {
            return self.user_caller(user_id).await;
        }
        let owner = self
            .store
            .find_token(hash_token(token))
            .await
            .map_err(ApiError::from_store(AUTH_FAILED))?;
        check_token(&self.store, owner)
    }

    /// Rule 2 for an operation that finds its caller itself (rule 1 comes
    /// with what it reads first): the adapter's parse, whose error is told
    /// only to a known caller.
    pub(super) async fn parsed<T>(
        &self,
        credentials: &Credentials,
        input: Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        match input {
            Ok(input) => Ok(input),
            Err(invalid) => {
                self.authenticate(credentials).await?;
                Err(invalid)
            }
        }
    }

    /// Who a credential names, to be looked up along with what an operation
    /// reads (rule 1 then judged by [`Service::holder_caller`]): a verified
    /// JWT's subject, or an API token's hash.
    pub(super) fn credential_holder(&self, credentials: &Credentials) -> Result<Creator, ApiError> {
        let token = credentials.token()?;
        Ok(match self.jwt_subject(token)? {
            Some(user_id) => Creator::User(SqlUuid(user_id)),
            None => Creator::Token(hash_token(token)),
        })
    }

    /// Rule 1 on what [`Service::credential_holder`] named, as found: an
    /// existing user, enabled; a token neither revoked nor expired.
    pub(super) fn holder_caller(&self, holder: Option<Holder>) -> Result<Caller, ApiError> {
        match holder {
            Some(Holder::Token(owner)) => check_token(&self.store, Some(owner)),
            Some(Holder::User(user)) => enabled_caller(user),
            None => Err(ApiError::Unauthenticated),
        }
    }

    /// Rules 1 and 2 in their order: the caller first, then the input the
    /// adapter parsed (whose error, if any, is only told to a known caller).
    pub async fn admit<T>(
        &self,
        credentials: &Credentials,
        input: Result<T, ApiError>,
    ) -> Result<(Caller, T), ApiError> {
        let caller = self.authenticate(credentials).await?;
        Ok((caller, input?))
    }

    /// The user a JWT speaks for, if JWTs are configured and `token` is one;
    /// a JWT that fails any check is refused (the reason goes to the log only).
    pub(super) fn jwt_subject(&self, token: &str) -> Result<Option<Uuid>, ApiError> {
        match &self.jwt {
            Some(verifier) if looks_like_jwt(token) => match verifier.verify(token) {
                Ok(user_id) => Ok(Some(user_id)),
                Err(why) => {
                    tracing::debug!(reason = %why, "JWT refused");
                    Err(ApiError::Unauthenticated)
                }
            },
            _ => Ok(None),
        }
    }

    /// Rule 1 for a user known by id (a verified JWT's subject, or the user
    /// an operator's command acts as): an existing, enabled user.
    pub async fn user_caller(&self, user_id: Uuid) -> Result<Caller, ApiError> {
        let user = self
            .store
            .find_user(user_id)
            .await
            .map_err(ApiError::from_store(AUTH_FAILED))?
            .ok_or(ApiError::Unauthenticated)?;
        enabled_caller(user)
    }
}

/// Rule 1 on a token looked up by its hash: it exists, is neither revoked nor
/// expired, and its user is enabled. Records its use now and then.
fn check_token(store: &Store, owner: Option<TokenOwner>) -> Result<Caller, ApiError> {
    let owner = owner.ok_or(ApiError::Unauthenticated)?;
    let now = Utc::now();
    let expired = owner.expires_at.is_some_and(|t| t <= now);
    if owner.revoked_at.is_some() || expired {
        return Err(ApiError::Unauthenticated);
    }
    touch_token(store, owner.token_id, owner.last_used_at);
    enabled_caller(owner.user)
}

/// Records a token's use, now and then (at most once a
/// [`TOKEN_TOUCH_INTERVAL`]), in the background.
pub(super) fn touch_token(
    store: &Store,
    token_id: Uuid,
    last_used_at: Option<chrono::DateTime<Utc>>,
) {
    let now = Utc::now();
    if last_used_at.is_none_or(|t| now - t > TOKEN_TOUCH_INTERVAL) {
        let store = store.clone();
        tokio::spawn(async move {
            if let Err(e) = store.touch_token(token_id, now).await {
                tracing::debug!(error = %e, "could not record token use");
            }
        });
    }
}

/// Rule 1 on the user behind a credential: enabled.
fn enabled_caller(user: UserRow) -> Result<Caller, ApiError> {
    if user.disabled_at.is_some() {
        return Err(ApiError::Unauthenticated);
    }
    Ok(Caller::from(user))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_one_bearer_value_is_a_credential() {
        let one = [b"Bearer abc".as_slice()];
        assert_eq!(
            Credentials::from_values(one.into_iter())
                .token()
                .expect("one"),
            "abc"
        );
        let two = [b"Bearer abc".as_slice(), b"Bearer def".as_slice()];
        assert!(Credentials::from_values(two.into_iter()).token().is_err());
        assert!(
            Credentials::from_values(std::iter::empty())
                .token()
                .is_err()
        );
        let basic = [b"Basic abc".as_slice()];
        assert!(Credentials::from_values(basic.into_iter()).token().is_err());
        assert_eq!(
            format!("{:?}", Credentials::from_values(one.into_iter())),
            "Credentials(<redacted>)"
        );
    }
}
