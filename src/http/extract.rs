//! The JSON body extractor: `Content-Type: application/json`, within the body
//! limit, valid JSON, and an object. Each failure is a JSON error response.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::Response;
use serde_json::{Map, Value};

use super::{BODY_LIMIT, error_response};

/// A request body that is a JSON object.
pub struct JsonObject(pub Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for JsonObject {
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
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(map)) => Ok(JsonObject(map)),
            Ok(_) => Err(error_response(
                StatusCode::BAD_REQUEST,
                "Request body must be a JSON object",
            )),
            Err(e) => Err(error_response(
                StatusCode::BAD_REQUEST,
                &format!("Request body is not valid JSON: {e}"),
            )),
        }
    }
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
}
