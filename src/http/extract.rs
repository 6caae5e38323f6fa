//! The gateway's extractors. A handler takes, in this order: the path, the
//! caller ([`Authenticated`], or the unverified [`Credentials`] on routes with
//! a body), the query ([`Query`]) or the body ([`JsonBody`]). Axum runs them
//! in that order, so authentication comes before any parameter is judged; a
//! body that is not a JSON object is refused before (as the rule table says).
//!
//! Every rejection is an [`ApiError`] or a JSON error response.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::response::{IntoResponse as _, Response};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::AppState;
use super::error::error_response;
use crate::domain::{Caller, Transport};
use crate::error::ApiError;
use crate::protocol::{AUTHORIZATION, BODY_LIMIT, IDEMPOTENCY_KEY, REQUEST_ID, request_id_or_new};
use crate::service::idempotency::IdempotencyKey;
use crate::service::{Credentials, RequestContext};

impl<S: Send + Sync> FromRequestParts<S> for Credentials {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let values = parts.headers.get_all(AUTHORIZATION).iter();
        Ok(Credentials::from_values(values.map(|v| v.as_bytes())))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RequestContext {
    type Rejection = std::convert::Infallible;

    /// The id the request-id middleware settled on, and the transport.
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let given = parts.headers.get(REQUEST_ID).and_then(|v| v.to_str().ok());
        Ok(RequestContext {
            request_id: request_id_or_new(given),
            transport: Transport::Http,
        })
    }
}

/// The authenticated caller (rule 1), or 401.
pub struct Authenticated(pub Caller);

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let credentials = Credentials::from_request_parts(parts, state)
            .await
            .unwrap_or_else(|never| match never {});
        state.authenticate(&credentials).await.map(Authenticated)
    }
}

/// The caller's idempotency key, if sent; its error is reported in its place
/// in the rule order, by the operation.
pub struct IdempotencyHeader(pub Result<Option<IdempotencyKey>, ApiError>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyHeader {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let values = parts.headers.get_all(IDEMPOTENCY_KEY).iter();
        Ok(IdempotencyHeader(IdempotencyKey::from_values(
            values.map(|v| v.as_bytes()),
        )))
    }
}

/// A request body that is a JSON object (`Content-Type: application/json`,
/// within the body limit), read into `T`. `T`'s fields are [`JsonText`]s, so
/// a field of the wrong type is reported by the operation after the caller
/// is known, not here.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json_content_type(req.headers().get(CONTENT_TYPE)) {
            return Err(error_response(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Content-Type must be application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                error_response(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!("Request body is larger than {BODY_LIMIT} bytes"),
                )
            } else {
                error_response(StatusCode::BAD_REQUEST, "Request body could not be read")
            }
        })?;
        let object = match serde_json::from_slice::<Value>(&bytes) {
            Ok(object @ Value::Object(_)) => object,
            Ok(_) => {
                return Err(error_response(
                    StatusCode::BAD_REQUEST,
                    "Request body must be a JSON object",
                ));
            }
            Err(e) => {
                return Err(error_response(
                    StatusCode::BAD_REQUEST,
                    &format!("Request body is not valid JSON: {e}"),
                ));
            }
        };
        serde_json::from_value(object).map(JsonBody).map_err(|e| {
            ApiError::InvalidArgument(format!("Request body is invalid: {e}")).into_response()
        })
    }
}

/// A JSON body field meant to be a string, whatever was sent, so that its
/// error can be told in its place in the rule order.
#[derive(Debug, Clone, Default)]
pub enum JsonText {
    /// Absent or null.
    #[default]
    Absent,
    Text(String),
    /// Present, but not a string.
    NotText,
}

impl JsonText {
    /// The string, if given; an error naming the field if not a string.
    pub fn text(self, name: &str) -> Result<Option<String>, ApiError> {
        match self {
            JsonText::Absent => Ok(None),
            JsonText::Text(s) => Ok(Some(s)),
            JsonText::NotText => Err(ApiError::InvalidArgument(format!(
                "{name} must be a string"
            ))),
        }
    }
}

impl<'de> Deserialize<'de> for JsonText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match Value::deserialize(d)? {
            Value::Null => JsonText::Absent,
            Value::String(s) => JsonText::Text(s),
            _ => JsonText::NotText,
        })
    }
}

/// The query string read into `T`, after the caller (axum runs this
/// extractor after [`Authenticated`]). A name given twice or with an empty
/// value, or a value of the wrong kind, is 400 naming the parameter; unknown
/// names are ignored.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        for (i, (name, value)) in pairs.iter().enumerate() {
            if pairs[..i].iter().any(|(earlier, _)| earlier == name) {
                return Err(invalid(format!("{name} must be given at most once")));
            }
            if value.is_empty() {
                return Err(invalid(format!("{name} must not be empty")));
            }
        }
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(Query)
            .map_err(|e| {
                let path = e.path().to_string();
                invalid(format!("{path} {}", e.into_inner()))
            })
    }
}

fn invalid(message: String) -> ApiError {
    ApiError::InvalidArgument(message)
}

/// An integer query parameter.
#[derive(Debug, Clone, Copy)]
pub struct QueryInt(pub i64);

impl<'de> Deserialize<'de> for QueryInt {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse()
            .map(QueryInt)
            .map_err(|_| serde::de::Error::custom("must be an integer"))
    }
}

/// A boolean query parameter: `true` or `false`.
#[derive(Debug, Clone, Copy, Default)]
pub struct QueryBool(pub bool);

impl<'de> Deserialize<'de> for QueryBool {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match String::deserialize(d)?.as_str() {
            "true" => Ok(QueryBool(true)),
            "false" => Ok(QueryBool(false)),
            _ => Err(serde::de::Error::custom("must be true or false")),
        }
    }
}

/// The value of an optional boolean parameter (absent: false).
pub fn flag(value: Option<QueryBool>) -> bool {
    value.is_some_and(|b| b.0)
}

/// `application/json` or `application/<anything>+json`, parameters allowed.
fn is_json_content_type(value: Option<&axum::http::HeaderValue>) -> bool {
    let Some(value) = value.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    kind.eq_ignore_ascii_case("application")
        && (subtype.eq_ignore_ascii_case("json") || subtype.to_ascii_lowercase().ends_with("+json"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn json_content_types() {
        let ok = [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            "application/merge-patch+json",
        ];
        for v in ok {
            assert!(
                is_json_content_type(Some(&HeaderValue::from_static(v))),
                "{v}"
            );
        }
        let bad = [
            "text/plain",
            "application/x-www-form-urlencoded",
            "json",
            "application/jsonx",
            "",
        ];
        for v in bad {
            assert!(
                !is_json_content_type(Some(&HeaderValue::from_static(v))),
                "{v}"
            );
        }
        assert!(!is_json_content_type(None));
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Sample {
        take: Option<QueryInt>,
        show_deleted: Option<QueryBool>,
        user_id: Option<String>,
    }

    async fn query(q: &str) -> Result<Sample, String> {
        let request = axum::http::Request::get(format!("/x?{q}"))
            .body(())
            .expect("request");
        let (mut parts, ()) = request.into_parts();
        Query::<Sample>::from_request_parts(&mut parts, &())
            .await
            .map(|Query(s)| s)
            .map_err(|e| e.to_string())
    }

    #[tokio::test]
    async fn query_parameters_are_named_in_their_errors() {
        let s = query("take=5&showDeleted=true&userId=u&other=1")
            .await
            .expect("valid");
        assert_eq!(s.take.map(|t| t.0), Some(5));
        assert!(flag(s.show_deleted));
        assert_eq!(s.user_id.as_deref(), Some("u"));
        for (q, message) in [
            ("take=ten", "take must be an integer"),
            ("take=99999999999999999999", "take must be an integer"),
            ("take=1&take=2", "take must be given at most once"),
            ("showDeleted=1", "showDeleted must be true or false"),
            ("userId=", "userId must not be empty"),
        ] {
            assert_eq!(query(q).await.err().as_deref(), Some(message), "{q}");
        }
    }
}
