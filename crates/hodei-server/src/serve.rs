//! The HTTP listener: hyper connections with a header-read (and keep-alive idle) timeout, a
//! cap on open connections, and a graceful drain bounded by `server.shutdown_grace_ms`.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

#[derive(Clone, Copy, Debug)]
pub struct HttpLimits {
    /// A client must send a request's headers within this long of connecting, or of its
    /// previous answer on a kept-alive connection; a slow or silent one is closed.
    pub header_read_timeout: Duration,
    /// Connections open at once; beyond it the listener stops accepting until one closes, so
    /// a flood of idle connections cannot take every file descriptor.
    pub max_connections: usize,
    /// How long in-flight requests may run after the server is told to stop.
    pub shutdown_grace: Duration,
}

impl HttpLimits {
    /// 10 s for headers; connections capped at half the process's file descriptor limit (at
    /// most 16 384), leaving the rest to the database, logs and workers.
    pub fn new(shutdown_grace: Duration) -> HttpLimits {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        let fds = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 { lim.rlim_cur } else { 1024 };
        HttpLimits { header_read_timeout: Duration::from_secs(10), max_connections: (fds / 2).clamp(64, 16_384) as usize, shutdown_grace }
    }
}

/// Serves `app` on `listener` (over TLS when given an acceptor) until `stop` flips, then drains
/// for at most the grace period.
pub async fn serve(listener: TcpListener, app: axum::Router, limits: HttpLimits, tls: Option<TlsAcceptor>, mut stop: watch::Receiver<bool>) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    builder.http2().timer(TokioTimer::new()).keep_alive_interval(Some(Duration::from_secs(20)));
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            _ = stopped(&mut stop) => break,
        };
        let tcp = tokio::select! {
            r = listener.accept() => match r {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    // Out of file descriptors (or similar): wait for some to close.
                    tracing::warn!(error = %e, "cannot accept an HTTP connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped(&mut stop) => break,
        };
        // Small JSON answers must not wait for Nagle's algorithm.
        let _ = tcp.set_nodelay(true);
        let svc = TowerToHyperService::new(app.clone());
        match &tls {
            None => {
                let conn = graceful.watch(builder.serve_connection_with_upgrades(TokioIo::new(tcp), svc).into_owned());
                tokio::spawn(async move {
                    let _ = conn.await;
                    drop(permit);
                });
            }
            Some(acceptor) => {
                // The handshake runs in the connection's task (a slow one holds no one else up),
                // bounded like the headers that follow it.
                let (acceptor, builder, watcher) = (acceptor.clone(), builder.clone(), graceful.watcher());
                tokio::spawn(async move {
                    match tokio::time::timeout(limits.header_read_timeout, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let _ = watcher.watch(builder.serve_connection_with_upgrades(TokioIo::new(stream), svc).into_owned()).await;
                        }
                        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                    drop(permit);
                });
            }
        }
    }
    drop(listener);
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown()).await.is_err() {
        tracing::warn!(grace_ms = limits.shutdown_grace.as_millis() as u64, "HTTP connections still open after server.shutdown_grace_ms; closing them");
    }
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;

    async fn start(limits: HttpLimits) -> (std::net::SocketAddr, watch::Sender<bool>, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
        let (tx, rx) = watch::channel(false);
        (addr, tx, tokio::spawn(serve(listener, app, limits, None, rx)))
    }

    /// Reads until the server closes the connection; what it sent.
    async fn until_closed(c: &mut TcpStream) -> String {
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(20), c.read_to_end(&mut out)).await.expect("the server closed the connection").unwrap();
        String::from_utf8_lossy(&out).into_owned()
    }

    async fn get(addr: std::net::SocketAddr) -> String {
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await.unwrap();
        until_closed(&mut c).await
    }

    #[tokio::test]
    async fn a_client_that_never_finishes_its_headers_is_closed() {
        let limits = HttpLimits { header_read_timeout: Duration::from_millis(200), max_connections: 8, shutdown_grace: Duration::from_secs(1) };
        let (addr, _stop, _task) = start(limits).await;
        let mut slow = TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n").await.unwrap();
        let started = Instant::now();
        let answer = until_closed(&mut slow).await;
        assert!(started.elapsed() >= Duration::from_millis(200), "closed before the timeout");
        assert!(!answer.contains("200 OK"), "{answer}");
        // A connection kept alive and then left idle is closed the same way.
        let mut idle = TcpStream::connect(addr).await.unwrap();
        idle.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
        assert!(until_closed(&mut idle).await.contains("200 OK"));
        assert!(get(addr).await.contains("200 OK"), "the listener still serves");
    }

    #[tokio::test]
    async fn connections_beyond_the_cap_wait_for_one_to_close() {
        let limits = HttpLimits { header_read_timeout: Duration::from_secs(30), max_connections: 2, shutdown_grace: Duration::from_secs(1) };
        let (addr, _stop, _task) = start(limits).await;
        let hogs = [TcpStream::connect(addr).await.unwrap(), TcpStream::connect(addr).await.unwrap()];
        let mut waiting = tokio::spawn(get(addr));
        // Uncapped, it would be answered in a millisecond; capped, not while both slots are held.
        assert!(tokio::time::timeout(Duration::from_millis(300), &mut waiting).await.is_err(), "answered beyond the cap");
        drop(hogs);
        let answer = tokio::time::timeout(Duration::from_secs(10), waiting).await.expect("answered once a slot freed").unwrap();
        assert!(answer.contains("200 OK"), "{answer}");
    }

    #[tokio::test]
    async fn a_stopping_listener_finishes_requests_in_flight_within_the_grace() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (entered_tx, entered_rx) = tokio::sync::oneshot::channel::<()>();
        let (finish_tx, finish_rx) = tokio::sync::oneshot::channel::<()>();
        let gates = Arc::new(std::sync::Mutex::new(Some((entered_tx, finish_rx))));
        let app = axum::Router::new().route(
            "/",
            axum::routing::get(move || {
                let gates = gates.clone();
                async move {
                    let (entered, finish) = gates.lock().unwrap().take().unwrap();
                    let _ = entered.send(());
                    let _ = finish.await;
                    "finished"
                }
            }),
        );
        let (stop, rx) = watch::channel(false);
        let limits = HttpLimits { header_read_timeout: Duration::from_secs(30), max_connections: 8, shutdown_grace: Duration::from_secs(20) };
        let task = tokio::spawn(serve(listener, app, limits, None, rx));
        let request = tokio::spawn(get(addr));
        entered_rx.await.unwrap();
        stop.send(true).unwrap();
        // New connections are no longer accepted; the one in flight is still being served.
        let refused = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if TcpStream::connect(addr).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        refused.await.expect("the listener closed");
        assert!(!task.is_finished(), "the drain waits for the request in flight");
        finish_tx.send(()).unwrap();
        assert!(request.await.unwrap().contains("finished"));
        tokio::time::timeout(Duration::from_secs(10), task).await.expect("drained").unwrap();
    }
}
