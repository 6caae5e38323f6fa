//! The layers under every route: the request id, the JSON safety net for
//! the framework's own error responses.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

use super::error::error_response;
use crate::observe::{Admission, BUSY};
use crate::protocol::{REQUEST_ID, request_id_or_new};

/// The message of an error response the framework (or a tower layer) made
/// without a body: the router's fallbacks and the request timeout.
fn framework_message(status: StatusCode) -> &'static str {
    match status {
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::METHOD_NOT_ALLOWED => "Method not allowed",
        StatusCode::GATEWAY_TIMEOUT => "Request timed out",
        other => other.canonical_reason().unwrap_or("Error"),
    }
}

/// The safety net under every route: an error response that is not already
/// JSON (the router's 404 and 405, the timeout's 504, an extractor's
/// rejection we did not foresee, such as a path that is not valid UTF-8)
/// becomes `{"success": false, "message": <reason>}`, keeping its status and
/// headers such as `Allow`.
pub async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (mut parts, _) = response.into_parts();
    let replacement = error_response(status, framework_message(status));
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.extend(replacement.headers().clone());
    Response::from_parts(parts, replacement.into_body())
}

/// Keeps a sane incoming `x-request-id` or makes one, hands it on to the
/// handler (and so to the operation), and echoes it on every response.
/// (tower-http's `SetRequestId` keeps any incoming id; an unsafe one must be
/// replaced, not kept, so this stays ours.)
pub async fn request_id(mut request: Request, next: Next) -> Response {
    let given = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok());
    let id = request_id_or_new(given);
    let value = HeaderValue::from_str(&id).unwrap_or_else(|_| HeaderValue::from_static("invalid"));
    request.headers_mut().insert(REQUEST_ID, value.clone());
    let mut response = next.run(request).await;
    response.headers_mut().insert(REQUEST_ID, value);
    response
}

/// [`Admission`] for the API routes: beyond the limit, 503 with
/// `Retry-After` at once instead of a queue without end.
pub async fn admit(State(admission): State<Admission>, request: Request, next: Next) -> Response {
    match admission.try_admit() {
        Some(_permit) => next.run(request).await,
        None => {
            let mut response = error_response(StatusCode::SERVICE_UNAVAILABLE, BUSY);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            response
        }
    }
}

/// Who the request is, for the read replica ([`crate::store::replica`]): a
/// request that may write sends its caller's reads to the primary until the
/// replica has replayed it. Reads are GET, and the two POSTs that only ask
/// (the feed's query, the model list).
pub async fn read_scope(
    State(store): State<crate::store::Store>,
    request: Request,
    next: Next,
) -> Response {
    use crate::store::replica::{CALLER, Guarded, begin_write, caller_key};
    if store.read_replica().is_none() {
        return next.run(request).await;
    }
    let Some(caller) = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .map(|v| caller_key(v.as_bytes()))
    else {
        return next.run(request).await;
    };
    let reads = request.method() == http::Method::GET
        || request.method() == http::Method::HEAD
        || ["/systemevent", "/ai/models"].contains(&request.uri().path());
    let guard = (!reads)
        .then(|| begin_write(&store, Some(caller)))
        .flatten();
    let response = CALLER.scope(caller, next.run(request)).await;
    match guard {
        None => response,
        Some(guard) => response.map(|body| {
            axum::body::Body::new(Guarded {
                body,
                guard: Some(guard),
            })
        }),
    }
}
