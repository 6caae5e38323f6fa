//! One log line and one metric sample per request, on both transports.
//!
//! The line (target `request`, level INFO) carries the transport, the method
//! (as the metrics label it: route template or rpc, else `other`), the path,
//! the code (HTTP status or gRPC status name, as text), the latency in
//! milliseconds and the request id, as structured fields: `--log-format json`
//! makes them JSON keys. Latency is measured until the response head is
//! ready. Paths come from parsed URIs, which cannot hold spaces or line breaks.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prost::Message as _;
use tonic::Code;

use crate::config::Timeouts;
use crate::metrics::Metrics;
use crate::protocol::{PROVIDER_RPCS, REQUEST_ID};

/// What an unknown route or rpc is counted as.
const OTHER: &str = "other";

/// Axum middleware: logs and counts every HTTP request, by route template.
/// Methods outside the standard few count as `other` too, so that made-up
/// methods cannot grow the label set either.
pub async fn http(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    use http::Method;
    let started = Instant::now();
    let standard = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::HEAD,
        Method::OPTIONS,
    ]
    .contains(request.method());
    let method = match request.extensions().get::<MatchedPath>() {
        Some(path) if standard => format!("{} {}", request.method(), path.as_str()),
        _ => OTHER.to_owned(),
    };
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    let took = started.elapsed();
    let id = request_id(response.headers());
    finish(
        &metrics,
        "http",
        &method,
        &path,
        response.status().as_str(),
        took,
        id,
    );
    response
}

/// Records a finished request: its metric sample and its log line.
fn finish(
    metrics: &Metrics,
    transport: &'static str,
    method: &str,
    path: &str,
    code: &str,
    took: Duration,
    request_id: &str,
) {
    metrics.request(transport, method, code, took);
    tracing::info!(
        target: "request",
        transport,
        method,
        path,
        code,
        latency_ms = took.as_secs_f64() * 1e3,
        request_id,
        "request"
    );
}

fn request_id(headers: &http::HeaderMap) -> &str {
    headers
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// The rpc paths served (`/package.Service/Method`), read from the
/// descriptor sets: only these become metric labels.
pub fn known_rpcs(descriptor_sets: &[&[u8]]) -> HashSet<String> {
    let mut paths = HashSet::new();
    for bytes in descriptor_sets {
        let Ok(set) = prost_types::FileDescriptorSet::decode(*bytes) else {
            continue;
        };
        for file in set.file {
            let package = file.package();
            for service in &file.service {
                for method in &service.method {
                    paths.insert(format!("/{package}.{}/{}", service.name(), method.name()));
                }
            }
        }
    }
    paths
}

/// A tower layer for the gRPC server doing what [`http`] does for REST, and
/// bounding each rpc's time to its response head: past its limit (the
/// provider's for [`PROVIDER_RPCS`], else the request timeout) the caller
/// gets DEADLINE_EXCEEDED (a client's own shorter `grpc-timeout` still wins).
#[derive(Clone)]
pub struct GrpcLayer {
    metrics: Arc<Metrics>,
    known: Arc<HashSet<String>>,
    timeouts: Timeouts,
    admission: Admission,
    /// For the read replica's record of who wrote.
    store: crate::store::Store,
}

impl GrpcLayer {
    pub fn new(
        metrics: Arc<Metrics>,
        known: HashSet<String>,
        timeouts: Timeouts,
        admission: Admission,
        store: crate::store::Store,
    ) -> Self {
        Self {
            metrics,
            known: Arc::new(known),
            timeouts,
            admission,
            store,
        }
    }
}

/// What an overloaded service answers.
pub const BUSY: &str = "Server is busy; retry later";

/// The limit on API requests in flight, shared by both transports. A request
/// beyond it is answered at once (REST 503 with `Retry-After`, gRPC
/// RESOURCE_EXHAUSTED) instead of queueing without end; health, readiness and
/// metrics are never limited, so the service can still say how it is.
#[derive(Clone)]
pub struct Admission {
    places: Arc<tokio::sync::Semaphore>,
    in_flight: prometheus_client::metrics::gauge::Gauge,
}

/// A request's place among those in flight, given back on drop.
pub struct Admitted {
    _place: tokio::sync::OwnedSemaphorePermit,
    in_flight: prometheus_client::metrics::gauge::Gauge,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.in_flight.dec();
    }
}

impl Admission {
    /// At most `limit` requests in flight, counted in `metrics`.
    pub fn new(limit: usize, metrics: &Metrics) -> Self {
        Self {
            places: Arc::new(tokio::sync::Semaphore::new(limit.max(1))),
            in_flight: metrics.in_flight(),
        }
    }

    /// A place for one more request, if there is one.
    pub fn try_admit(&self) -> Option<Admitted> {
        let place = self.places.clone().try_acquire_owned().ok()?;
        self.in_flight.inc();
        Some(Admitted {
            _place: place,
            in_flight: self.in_flight.clone(),
        })
    }
}

/// The rpcs [`Admission`] limits: ours (by package), not health or reflection.
const LIMITED_RPCS: &str = "/flashback.";

impl<S> tower::Layer<S> for GrpcLayer {
    type Service = GrpcObserve<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcObserve {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`GrpcLayer`] makes.
#[derive(Clone)]
pub struct GrpcObserve<S> {
    inner: S,
    layer: GrpcLayer,
}

impl<S, B> tower::Service<http::Request<B>> for GrpcObserve<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let started = Instant::now();
        let path = request.uri().path().to_owned();
        let layer = self.layer.clone();
        let permit = if path.starts_with(LIMITED_RPCS) {
            layer.admission.try_admit().map(Some)
        } else {
            Some(None)
        };
        // Who calls, for the read replica (see `crate::store::replica`):
        // an rpc that may write (all but Get*, List* and ResumePromptStream)
        // sends its caller's reads to the primary until the replica has
        // replayed it.
        let caller = layer.store.read_replica().and(
            request
                .headers()
                .get(http::header::AUTHORIZATION)
                .map(|v| crate::store::replica::caller_key(v.as_bytes())),
        );
        let rpc = path.rsplit('/').next().unwrap_or_default();
        let write =
            if rpc.starts_with("Get") || rpc.starts_with("List") || rpc == "ResumePromptStream" {
                None
            } else {
                crate::store::replica::begin_write(&layer.store, caller)
            };
        let future = permit.is_some().then(|| self.inner.call(request));
        let limit = if PROVIDER_RPCS.contains(&path.as_str()) {
            layer.timeouts.provider_calls
        } else {
            layer.timeouts.request
        };
        Box::pin(async move {
            let _permit = permit;
            let result = match future {
                None => Ok(tonic::Status::resource_exhausted(BUSY).into_http()),
                Some(future) => match tokio::time::timeout(limit, scoped(caller, future)).await {
                    Ok(result) => result,
                    Err(_) => Ok(tonic::Status::deadline_exceeded("Request timed out").into_http()),
                },
            };
            let took = started.elapsed();
            // An rpc that fails before its first message answers with its
            // status in the head; one that replies has it in the trailers,
            // which for our unary rpcs means OK.
            let (code, id) = match &result {
                Ok(response) => (
                    response
                        .headers()
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<i32>().ok())
                        .map_or(Code::Ok, Code::from_i32),
                    request_id(response.headers()).to_owned(),
                ),
                Err(_) => (Code::Unknown, String::new()),
            };
            let method = if layer.known.contains(&path) {
                path.as_str()
            } else {
                OTHER
            };
            let name = code_name(code);
            finish(&layer.metrics, "grpc", method, &path, name, took, &id);
            match write {
                None => result,
                Some(guard) => result.map(|response| {
                    response.map(|body| {
                        tonic::body::Body::new(crate::store::replica::Guarded {
                            body,
                            guard: Some(guard),
                        })
                    })
                }),
            }
        })
    }
}

/// `future` run as `caller`'s, if known (see `crate::store::replica`).
async fn scoped<F: Future>(caller: Option<u64>, future: F) -> F::Output {
    match caller {
        Some(caller) => crate::store::replica::CALLER.scope(caller, future).await,
        None => future.await,
    }
}

/// The canonical name of a gRPC status code (`NOT_FOUND`), as grpc-go and
/// the gRPC docs print it.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
