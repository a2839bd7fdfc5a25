//! Serving an app to a network that may be hostile: every connection is
//! bounded in number and in time.
//!
//! - **Headers**: a client must send a request's headers within
//!   [`ServeLimits::header_timeout`] (hyper's header read timeout, which also
//!   closes a keep-alive connection that stays idle that long); a client
//!   that trickles a byte now and then is cut off.
//! - **Bodies**: [`crate::read_body`] gives a body a deadline that grows with
//!   its declared size at a slow link's rate.
//! - **Connections**: at most [`ServeLimits::max_connections`] at once; the
//!   next ones are closed at once, so no client can use up the process's
//!   file descriptors.
//!
//! Plain HTTP and TLS go through the same server (axum-server), so both
//! get the same limits.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum_server::accept::{Accept, DefaultAcceptor};
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// TLS settings of a server (certificate chain and key).
pub type Tls = RustlsConfig;

/// The bounds every connection is held to.
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    /// Time to send a request's headers (and longest idle keep-alive).
    pub header_timeout: Duration,
    /// Most connections at once.
    pub max_connections: usize,
    /// How long shutdown waits for requests in flight.
    pub shutdown_grace: Duration,
}

impl Default for ServeLimits {
    fn default() -> Self {
        ServeLimits {
            header_timeout: Duration::from_secs(10),
            max_connections: 1024,
            shutdown_grace: Duration::from_secs(60),
        }
    }
}

/// Serves `app` on `listener` (with TLS if given) until `shutdown`
/// completes; requests in flight are finished first, for up to
/// [`ServeLimits::shutdown_grace`].
pub async fn serve_app(
    listener: TcpListener,
    app: Router,
    tls: Option<Tls>,
    limits: ServeLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let handle = axum_server::Handle::new();
    let stopper = handle.clone();
    let grace = limits.shutdown_grace;
    tokio::spawn(async move {
        shutdown.await;
        stopper.graceful_shutdown(Some(grace));
    });
    let counted = Counted {
        permits: Arc::new(Semaphore::new(limits.max_connections.max(1))),
    };
    let mut server = axum_server::from_tcp(listener.into_std()?)?.handle(handle);
    server
        .http_builder()
        .http1()
        .header_read_timeout(limits.header_timeout);
    let service = app.into_make_service();
    match tls {
        None => server.acceptor(counted).serve(service).await,
        Some(config) => {
            server
                .acceptor(RustlsAcceptor::new(config).acceptor(counted))
                .serve(service)
                .await
        }
    }
}

/// Admits a connection only while fewer than the limit are open.
#[derive(Debug, Clone)]
struct Counted {
    permits: Arc<Semaphore>,
}

impl<S: Send + 'static> Accept<TcpStream, S> for Counted {
    type Stream = Admitted;
    type Service = S;
    type Future = std::future::Ready<io::Result<(Admitted, S)>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        let admitted = match Arc::clone(&self.permits).try_acquire_owned() {
            Ok(permit) => {
                let _ = stream.set_nodelay(true);
                DefaultAcceptor
                    .accept(stream, service)
                    .into_inner()
                    .map(|(stream, service)| {
                        (
                            Admitted {
                                stream,
                                _permit: permit,
                            },
                            service,
                        )
                    })
            }
            Err(_) => {
                tracing::warn!("too many connections: one refused");
                Err(io::Error::other("too many connections"))
            }
        };
        std::future::ready(admitted)
    }
}

/// A connection holding one of the permits until it closes.
#[derive(Debug)]
pub struct Admitted {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
}

impl AsyncRead for Admitted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Admitted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
