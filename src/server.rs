//! Running the service: both listeners over one store, stopped together.
//!
//! Shutdown (Ctrl-C, SIGTERM, or [`Running::shutdown`]) marks the gRPC health
//! NOT_SERVING, stops accepting connections, lets requests in flight finish
//! within [`Config::shutdown_grace`], and returns.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::auth::jwt::JwtVerifier;
use crate::http::HttpOptions;
use crate::http::serve::ConnLimits;
use crate::metrics::Metrics;
use crate::observe::Admission;
use crate::provider::Provider;
use crate::service::Service;
use crate::store::Store;
use crate::tls::{self, GatedListener};

pub use crate::config::Config;
use crate::config::SecretsArgs;
use crate::secrets::{Keyring, MasterKey};

/// A started service.
pub struct Running {
    /// Where the REST gateway listens.
    pub http_addr: SocketAddr,
    /// Where the gRPC server listens.
    pub grpc_addr: SocketAddr,
    /// Where `GET /metrics` is served alone, if apart from the gateway.
    pub metrics_addr: Option<SocketAddr>,
    stop: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Starts a graceful shutdown and waits for it to finish.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.stop.cancel();
        self.wait().await
    }

    /// Waits until the service stops (after a signal or [`Running::shutdown`]).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await.context("server task failed")?
    }

    /// A token that stops the service when cancelled.
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for {what} on {addr}"))
}

/// Binds the listeners and starts serving `store` on them.
pub async fn start(store: Store, config: Config) -> anyhow::Result<Running> {
    // Everything that can be refused is checked before anything listens.
    let (jwt, tls) = check(&config)?;
    let listeners = Listeners::bind(&config).await?;
    let metrics = Arc::new(Metrics::new());
    let admission = Admission::new(config.max_concurrent_requests, &metrics);
    let keyring = keyring(&store, &config.secrets).await?;
    let service = build_service(store.clone(), &config, jwt, metrics, keyring)?;
    let timeouts = config.timeouts();
    let (grpc_router, health) =
        crate::grpc::router(service.clone(), timeouts, admission.clone()).await?;
    let http_options = HttpOptions {
        timeouts,
        metrics: listeners.metrics.is_none(),
        admission,
    };
    let http_router = crate::http::router(service.clone(), &http_options);

    // `stop` starts the shutdown; `close` (later) stops accepting.
    let stop = CancellationToken::new();
    let close = CancellationToken::new();
    let (http_addr, grpc_addr, metrics_addr) = listeners.addrs()?;
    let serving = listeners.serve(&config, tls, grpc_router, http_router, &service, &close)?;
    tokio::spawn(sweep_idempotency_keys(
        store.clone(),
        config.idempotency_ttl,
        stop.clone(),
    ));
    tokio::spawn(crate::service::policies::deliver_webhooks(
        store.clone(),
        service.keyring_handle(),
        crate::egress::client(
            Duration::from_secs(10),
            config.secrets.provider_allow_private,
        )?,
        config.secrets.provider_allow_private,
        crate::service::policies::Deliverer {
            poll: config.policy.webhook_retry_base.min(Duration::from_secs(1)),
            retry_base: config.policy.webhook_retry_base,
            timeout: Duration::from_secs(10),
        },
        stop.clone(),
    ));
    tokio::spawn(store.clone().watch_replica(stop.clone()));
    tokio::spawn(beat_and_sweep_streams(store.clone(), stop.clone()));
    tokio::spawn(fold_counts(store.clone(), stop.clone()));
    let watcher = tokio::spawn(watch_database(store, health.clone(), stop.clone()));
    let shutdown = Shutdown {
        stop: stop.clone(),
        close,
        delay: config.shutdown_delay,
        grace: config.shutdown_grace,
    };
    let task = tokio::spawn(shutdown.run(service, health, watcher, serving));

    let scheme = if config.tls.is_some() {
        "TLS"
    } else {
        "plaintext"
    };
    tracing::info!(%http_addr, %grpc_addr, ?metrics_addr, transport_security = scheme, "serving");
    Ok(Running {
        http_addr,
        grpc_addr,
        metrics_addr,
        stop,
        task,
    })
}

/// TLS acceptors: for HTTP (h2 and http/1.1) and for gRPC (h2).
type TlsAcceptors = (tokio_rustls::TlsAcceptor, tokio_rustls::TlsAcceptor);

/// The settings that can be refused, checked: the JWT keys and the TLS files.
fn check(config: &Config) -> anyhow::Result<(Option<Arc<JwtVerifier>>, Option<TlsAcceptors>)> {
    let jwt = if config.jwt.enabled() {
        Some(Arc::new(JwtVerifier::new(&config.jwt)?))
    } else {
        None
    };
    let tls = match &config.tls {
        Some(files) => Some((
            tls::acceptor(files, &[b"h2", b"http/1.1"])?,
            tls::acceptor(files, &[b"h2"])?,
        )),
        None => None,
    };
    Ok((jwt, tls))
}

/// The service over `store`.
fn build_service(
    store: Store,
    config: &Config,
    jwt: Option<Arc<JwtVerifier>>,
    metrics: Arc<Metrics>,
    keyring: Option<Keyring>,
) -> anyhow::Result<Arc<Service>> {
    let ttl = chrono::TimeDelta::from_std(config.idempotency_ttl)
        .context("the idempotency key lifetime is too long")?;
    let provider = Provider::new(&config.provider)?;
    let allow_private = config.secrets.provider_allow_private;
    let service = Service::new(store, jwt, metrics)
        .with_idempotency_ttl(ttl)
        .with_provider(provider)
        .with_keyring(keyring)
        .with_private_endpoints(allow_private)
        .with_tenant_client(crate::egress::client(
            config.provider.timeout,
            allow_private,
        )?)
        .with_policies(config.policy.config())?
        .with_budgets(crate::service::usage::budgets::BudgetConfig {
            reply_tokens: config.policy.budget_reply_tokens.into(),
            // A turn settles within its time limit; a hold outlives it
            // only when its replica died.
            hold: config.timeouts().provider_calls + std::time::Duration::from_secs(60),
        })
        .with_streams(crate::service::messages::StreamConfig {
            retention: config.stream_retention,
            turn_limit: config.timeouts().provider_calls,
        });
    Ok(Arc::new(service))
}

/// The keys that seal tenants' secrets: `SECRETS_KEY`, else
/// `--secrets-key-file`, else on SQLite a key file beside the database (made
/// on first start), else none; none is refused once configurations exist.
pub async fn keyring(store: &Store, secrets: &SecretsArgs) -> anyhow::Result<Option<Keyring>> {
    let previous = secrets
        .secrets_previous_keys
        .iter()
        .map(|k| MasterKey::from_base64(k, "in --secrets-previous-keys"))
        .collect::<Result<Vec<_>, _>>()?;
    let current = if let Some(key) = &secrets.secrets_key {
        Some(MasterKey::from_base64(key, "SECRETS_KEY")?)
    } else if let Some(path) = &secrets.secrets_key_file {
        Some(MasterKey::from_file(path, false)?)
    } else if let Some(db) = store.sqlite_path() {
        Some(MasterKey::from_file(
            &db.with_file_name("secrets.key"),
            true,
        )?)
    } else {
        None
    };
    match current {
        Some(current) => Ok(Some(Keyring::new(current, previous))),
        None => {
            let stored = store.count_sealed().await?;
            anyhow::ensure!(
                stored == 0,
                "{stored} sealed secret(s) (AI configurations, webhooks) are stored, but no secrets key is configured: give --secrets-key-file or SECRETS_KEY"
            );
            Ok(None)
        }
    }
}

/// The bound listeners.
struct Listeners {
    http: TcpListener,
    grpc: TcpListener,
    metrics: Option<TcpListener>,
}

/// The servers' tasks, until they have drained.
type Serving = (
    JoinHandle<Result<(), tonic::transport::Error>>,
    JoinHandle<()>,
);

impl Listeners {
    async fn bind(config: &Config) -> anyhow::Result<Listeners> {
        Ok(Listeners {
            http: bind(config.http_addr, "HTTP").await?,
            grpc: bind(config.grpc_addr, "gRPC").await?,
            metrics: match config.metrics_addr {
                Some(addr) => Some(bind(addr, "metrics").await?),
                None => None,
            },
        })
    }

    /// Where each listens (the OS picked the port where 0 was asked).
    fn addrs(&self) -> anyhow::Result<(SocketAddr, SocketAddr, Option<SocketAddr>)> {
        let metrics = match &self.metrics {
            Some(l) => Some(l.local_addr()?),
            None => None,
        };
        Ok((self.http.local_addr()?, self.grpc.local_addr()?, metrics))
    }

    /// Serves gRPC and HTTP (and the metrics alone, if asked) until `close`.
    fn serve(
        self,
        config: &Config,
        tls: Option<TlsAcceptors>,
        grpc_router: crate::grpc::GrpcRouter,
        http_router: axum::Router,
        service: &Arc<Service>,
        close: &CancellationToken,
    ) -> anyhow::Result<Serving> {
        let limits = ConnLimits {
            header_read_timeout: config.header_read_timeout,
        };
        // A client has the header read timeout to send its first byte (in
        // plaintext) or finish its handshake (TLS, 10 s).
        let first_byte = config.header_read_timeout;
        let (grpc, http) = (self.grpc, self.http);
        let serving = match tls {
            None => serve_both(
                GatedListener::plain(grpc, first_byte, close.clone())?,
                GatedListener::plain(http, first_byte, close.clone())?,
                grpc_router,
                http_router,
                limits,
                close,
            ),
            Some((http_tls, grpc_tls)) => serve_both(
                GatedListener::tls(grpc, grpc_tls, close.clone())?,
                GatedListener::tls(http, http_tls, close.clone())?,
                grpc_router,
                http_router,
                limits,
                close,
            ),
        };
        if let Some(listener) = self.metrics {
            let router = crate::http::metrics_router(service.clone());
            tokio::spawn(crate::http::serve::serve(
                listener,
                router,
                limits,
                close.clone(),
            ));
        }
        Ok(serving)
    }
}

/// The shutdown sequence: NOT_SERVING, the delay, stop accepting, drain.
struct Shutdown {
    stop: CancellationToken,
    close: CancellationToken,
    delay: Duration,
    grace: Duration,
}

impl Shutdown {
    /// Waits for a signal (or `stop`), then shuts down in order.
    async fn run(
        self,
        service: Arc<Service>,
        health: tonic_health::server::HealthReporter,
        watcher: JoinHandle<()>,
        (grpc_task, http_task): Serving,
    ) -> anyhow::Result<()> {
        tokio::select! {
            () = self.stop.cancelled() => {}
            () = shutdown_signal() => tracing::info!("shutdown signal received"),
        }
        self.stop.cancel();
        service.start_draining();
        // The watcher ends on `stop`; once it has, nothing but this task sets
        // the health status, so NOT_SERVING cannot be overwritten.
        let _ = watcher.await;
        for name in [
            "",
            crate::grpc::SERVICE_NAMES[0],
            crate::grpc::SERVICE_NAMES[1],
        ] {
            health
                .set_service_status(name, tonic_health::ServingStatus::NotServing)
                .await;
        }
        if !self.delay.is_zero() {
            tracing::info!(delay = ?self.delay, "NOT_SERVING; still accepting for the shutdown delay");
            tokio::time::sleep(self.delay).await;
        }
        self.close.cancel();
        tracing::info!("stopped accepting; draining requests in flight");
        let drained = tokio::time::timeout(self.grace, async {
            let (g, h) = tokio::join!(grpc_task, http_task);
            g.context("gRPC task")?.context("gRPC server")?;
            h.context("HTTP task")?;
            anyhow::Ok(())
        })
        .await;
        match drained {
            Ok(result) => result,
            Err(_) => {
                tracing::warn!("grace period over; stopping with requests still in flight");
                Ok(())
            }
        }
    }
}

/// Serves gRPC and HTTP on their listeners (plaintext or TLS alike) until
/// `close`.
fn serve_both<Io>(
    grpc: GatedListener<Io>,
    http: GatedListener<Io>,
    grpc_router: crate::grpc::GrpcRouter,
    http_router: axum::Router,
    limits: ConnLimits,
    close: &CancellationToken,
) -> Serving
where
    Io: tokio::io::AsyncRead
        + tokio::io::AsyncWrite
        + tonic::transport::server::Connected
        + Unpin
        + Send
        + 'static,
{
    let grpc_stop = close.clone();
    (
        tokio::spawn(async move {
            grpc_router
                .serve_with_incoming_shutdown(grpc.into_stream(), grpc_stop.cancelled_owned())
                .await
        }),
        tokio::spawn(crate::http::serve::serve(
            http,
            http_router,
            limits,
            close.clone(),
        )),
    )
}

/// How often the gRPC health status is checked against the database.
pub const HEALTH_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Keeps `grpc.health.v1` truthful: NOT_SERVING (for "" and the service) while
/// the database does not answer or cannot write for want of disk space,
/// SERVING again once it does. Stops at shutdown,
/// which owns the status from then on.
async fn watch_database(
    store: Store,
    health: tonic_health::server::HealthReporter,
    stop: CancellationToken,
) {
    let mut serving = true;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(HEALTH_CHECK_INTERVAL) => {}
        }
        let ok = matches!(
            tokio::time::timeout(2 * HEALTH_CHECK_INTERVAL, store.check()).await,
            Ok(Ok(()))
        );
        if ok == serving || stop.is_cancelled() {
            continue;
        }
        serving = ok;
        let status = if ok {
            tracing::info!("database reachable again: SERVING");
            tonic_health::ServingStatus::Serving
        } else {
            tracing::warn!("database unreachable: NOT_SERVING");
            tonic_health::ServingStatus::NotServing
        };
        health.set_service_status("", status).await;
        for name in crate::grpc::SERVICE_NAMES {
            health.set_service_status(name, status).await;
        }
    }
}

/// Writes this replica's heartbeat every `HEARTBEAT_EVERY` (resumers of the
/// streams it runs take it for dead once it stops), and deletes expired
/// prompt streams every minute.
async fn beat_and_sweep_streams(store: Store, stop: CancellationToken) {
    let mut swept = std::time::Instant::now();
    loop {
        if let Err(e) = store.heartbeat().await {
            tracing::debug!(error = %e, "heartbeat not written");
        }
        if swept.elapsed() >= Duration::from_secs(60) {
            swept = std::time::Instant::now();
            match store.sweep_streams(crate::store::types::now()).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(streams = n, "expired prompt streams deleted"),
                Err(e) => tracing::warn!(error = %e, "expired prompt streams not deleted"),
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(crate::service::messages::HEARTBEAT_EVERY) => {}
        }
    }
}

/// Folds the list totals' deltas into their counts every second (see the
/// migration `count_deltas`): totals are exact either way; folding keeps the
/// deltas few, so reading a total stays cheap.
async fn fold_counts(store: Store, stop: CancellationToken) {
    // SQLite's triggers keep the counts in place: nothing to fold.
    if store.sqlite_path().is_some() {
        return;
    }
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        if let Err(e) = store.fold_counts().await {
            tracing::debug!(error = %e, "count deltas not folded");
        }
    }
}

/// Deletes expired idempotency keys now and then (every `ttl`, at least
/// every second and at most every ten minutes); a lookup ignores expired keys
/// anyway, so this only keeps the table small.
async fn sweep_idempotency_keys(store: Store, ttl: Duration, stop: CancellationToken) {
    let every = ttl.clamp(Duration::from_secs(1), Duration::from_secs(600));
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        match store.purge_idempotency_keys(chrono::Utc::now()).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(deleted = n, "expired idempotency keys deleted"),
            Err(e) => tracing::debug!(error = %e, "could not delete expired idempotency keys"),
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
