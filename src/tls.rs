//! Accepting connections on both listeners: optional TLS (rustls, ring
//! provider), and for every connection a deadline to get going.
//!
//! Handshakes (or, in plaintext, the wait for a first byte) run on tasks of
//! their own, each bounded, so a slow or silent client cannot hold up the
//! others; ready connections are handed to axum (as an
//! [`axum::serve::Listener`]) or to tonic (as a stream).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::Connected;

/// How long a client may take to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A certificate chain and its private key, both PEM files.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A TLS acceptor for `files`, offering the given ALPN protocols.
pub fn acceptor(files: &TlsFiles, alpn: &[&[u8]]) -> anyhow::Result<TlsAcceptor> {
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .with_context(|| pem_error(&files.cert, "certificate"))?;
    anyhow::ensure!(!certs.is_empty(), pem_error(&files.cert, "certificate"));
    let key =
        PrivateKeyDer::from_pem_file(&files.key).with_context(|| pem_error(&files.key, "key"))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("TLS: the certificate and the key do not make a pair")?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn pem_error(path: &Path, what: &str) -> String {
    format!("TLS: cannot read a PEM {what} from {}", path.display())
}

/// A server-side TLS connection (what both servers are handed).
pub struct TlsIo(TlsStream<TcpStream>);

impl AsyncRead for TlsIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

impl Connected for TlsIo {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.0.get_ref().0.connect_info()
    }
}

/// Connections accepted on a listener and made ready on tasks of their own,
/// each within a time limit: a TLS handshake ([`GatedListener::tls`]), or
/// the client's first byte for plaintext ([`GatedListener::plain`]), so that a
/// client that connects and says nothing holds no server resources for long.
pub struct GatedListener<Io> {
    ready: mpsc::Receiver<(Io, SocketAddr)>,
    local: SocketAddr,
}

impl GatedListener<TlsIo> {
    /// TLS connections whose handshake finished within [`HANDSHAKE_TIMEOUT`].
    pub fn tls(
        listener: TcpListener,
        acceptor: TlsAcceptor,
        stop: CancellationToken,
    ) -> std::io::Result<Self> {
        Self::spawn(listener, HANDSHAKE_TIMEOUT, stop, move |tcp| {
            let acceptor = acceptor.clone();
            async move { acceptor.accept(tcp).await.map(TlsIo) }
        })
    }
}

impl GatedListener<TcpStream> {
    /// Plaintext connections whose client sent something within `first_byte`.
    pub fn plain(
        listener: TcpListener,
        first_byte: Duration,
        stop: CancellationToken,
    ) -> std::io::Result<Self> {
        Self::spawn(listener, first_byte, stop, |tcp: TcpStream| async move {
            tcp.peek(&mut [0u8; 1]).await?;
            Ok(tcp)
        })
    }
}

impl<Io: Send + 'static> GatedListener<Io> {
    fn spawn<F, Fut>(
        listener: TcpListener,
        limit: Duration,
        stop: CancellationToken,
        prepare: F,
    ) -> std::io::Result<Self>
    where
        F: Fn(TcpStream) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = std::io::Result<Io>> + Send + 'static,
    {
        let local = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let (tcp, peer) = tokio::select! {
                    () = stop.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok(c) => c,
                        Err(e) => {
                            // Out of file descriptors and the like: breathe, go on.
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                let _ = tcp.set_nodelay(true);
                let (prepared, tx) = (prepare(tcp), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(limit, prepared).await {
                        Ok(Ok(io)) => {
                            let _ = tx.send((io, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "connection not ready"),
                        Err(_) => tracing::debug!(%peer, "connection idle or handshake too slow"),
                    }
                });
            }
        });
        Ok(Self { ready, local })
    }

    /// The connections as a stream, for tonic.
    pub fn into_stream(
        mut self,
    ) -> impl futures_util::Stream<Item = Result<Io, std::io::Error>> + Send + 'static {
        futures_util::stream::poll_fn(move |cx| {
            self.ready
                .poll_recv(cx)
                .map(|next| next.map(|(io, _)| Ok(io)))
        })
    }
}

impl<Io> axum::serve::Listener for GatedListener<Io>
where
    Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    type Io = Io;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // Stopped: accept nothing more (the server is shutting down).
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
