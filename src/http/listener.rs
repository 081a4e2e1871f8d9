//! The public listener's accept loop, on hyper's HTTP/1 connection builder rather than
//! `axum::serve`, for what a public endpoint needs and `axum::serve` does not offer: a header
//! read timeout (a slowloris client that trickles its headers is disconnected), a header size
//! limit (431), and caps on open connections, in all and per client (trusted proxies exempt,
//! since they relay everyone). Each limit is read from the settings in force
//! when a connection is accepted, so an edit applies to new connections without a restart.
//!
//! Shutdown is graceful: when `shutdown` resolves the listener closes, idle connections are
//! closed, and requests in flight finish before [`serve_public`] returns.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tower::ServiceExt;

use super::{AppState, guard, webhook_router};
use crate::config::limits::header_read_timeout;
use crate::rejections::Rejection;
use crate::verify::Reason;

/// Pause after a failed `accept` (for example out of file descriptors), so the loop does not
/// spin while the condition lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// Smallest bound on a connection's read buffer.
const READ_BUFFER_BYTES: usize = 64 * 1024;

/// Serves the public router on `listener` until `shutdown` resolves, then drains.
pub async fn serve_public(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send,
) {
    let router = webhook_router(state.clone());
    let graceful = GracefulShutdown::new();
    let open = Arc::new(AtomicUsize::new(0));
    let per_client = PerClient::default();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(error = %error, "failed to accept a connection");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let settings = state.settings.current();
        let limits = settings.limits();
        if open.load(Ordering::Acquire) >= limits.max_connections as usize {
            // Closed unanswered: answering would mean reading a request first.
            drop(stream);
            connection_refused(&state, peer, Reason::ConnectionLimit);
            continue;
        }
        // A trusted proxy relays every client's requests on its own connections: only other
        // peers are held to the per-client cap.
        let client = (!settings.networks.is_trusted_proxy(peer.ip()))
            .then(|| crate::limits::limit_key(peer.ip()));
        let Some(slot) = OpenConnection::open(
            open.clone(),
            per_client.clone(),
            client,
            limits.max_connections_per_client as usize,
            &state,
        ) else {
            drop(stream);
            connection_refused(&state, peer, Reason::ClientConnectionLimit);
            continue;
        };

        let router = router.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            router.clone().oneshot(request)
        });
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(header_read_timeout(limits))
            .max_header_size(limits.max_header_bytes as usize)
            // hyper's read buffer grows to about 400 KB per connection on a fast sender; held
            // to what the headers need (at least 64 KiB), many connections streaming large
            // bodies at once cost a bounded amount of memory.
            .max_buf_size((limits.max_header_bytes as usize + 8192).max(READ_BUFFER_BYTES))
            .keep_alive(true);
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        let state = state.clone();
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(error) = connection.await {
                if error.is_timeout() {
                    connection_refused(&state, peer, Reason::HeaderTimeout);
                } else if error.is_parse_too_large() {
                    connection_refused(&state, peer, Reason::HeadersTooLarge);
                } else {
                    tracing::debug!(error = %error, "connection ended with an error");
                }
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Counts and logs a refusal decided at the connection level, before any request was read.
fn connection_refused(state: &AppState, peer: SocketAddr, reason: Reason) {
    let mut entry = Rejection::new(reason.as_str());
    entry.client = Some(crate::config::limits::canonical(peer.ip()).to_string());
    if reason == Reason::HeadersTooLarge {
        entry.status = Some(431);
    }
    guard::record(state, entry);
}

/// Connections open per client key (an address, an IPv6 /64).
type PerClient = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// One open connection, counted until dropped: in all, and for its client unless it is a
/// trusted proxy.
struct OpenConnection {
    open: Arc<AtomicUsize>,
    per_client: PerClient,
    client: Option<IpAddr>,
    gauge: prometheus::IntGauge,
}

impl OpenConnection {
    /// Counts a new connection from `client`; `None` when that client already holds `cap`.
    fn open(
        open: Arc<AtomicUsize>,
        per_client: PerClient,
        client: Option<IpAddr>,
        cap: usize,
        state: &AppState,
    ) -> Option<Self> {
        if let Some(client) = client {
            let mut counts = per_client.lock().unwrap_or_else(|p| p.into_inner());
            let count = counts.entry(client).or_default();
            if *count >= cap {
                return None;
            }
            *count += 1;
        }
        open.fetch_add(1, Ordering::AcqRel);
        let gauge = state.metrics.connections_open.clone();
        gauge.inc();
        Some(Self {
            open,
            per_client,
            client,
            gauge,
        })
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
        self.gauge.dec();
        if let Some(client) = self.client {
            let mut counts = self.per_client.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(count) = counts.get_mut(&client) {
                *count -= 1;
                if *count == 0 {
                    counts.remove(&client);
                }
            }
        }
    }
}
