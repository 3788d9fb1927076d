//! Serving the router on a TCP socket with the limits an exposed server needs: a deadline for each
//! request's headers, which also closes keep-alive connections left idle (slowloris, sockets that
//! connect and send nothing), a cap on open connections (logged when reached; the rest wait in the
//! listen backlog), the process's file limit raised to its hard limit, and a graceful stop that
//! lets requests under way finish within a deadline, then ends the rest with an error.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

/// hyper's read buffer: room for a head api::heads lets through (64 KiB at most) and what follows.
const READ_BUFFER_BYTES: usize = 1024 * 1024;

/// Connection limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections open at once; more wait in the backlog.
    pub max_connections: usize,
    /// Time a client has to send a request's headers, counted from when the connection is
    /// ready for one (so also the most a keep-alive connection may sit idle).
    pub header_timeout: Duration,
    /// On stopping, how long requests under way may take to finish.
    pub shutdown_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_connections: 4096, header_timeout: Duration::from_secs(10), shutdown_timeout: Duration::from_secs(30) }
    }
}

/// After a stop past its deadline, how long requests get to end with their error.
const AFTER_DEADLINE: Duration = Duration::from_secs(5);

/// Raises the open-file limit to its hard limit (sockets are files); returns the limit in force.
pub fn raise_file_limit() -> u64 {
    // SAFETY: `lim` is a valid rlimit for getrlimit/setrlimit to read and fill.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                return want.rlim_cur;
            }
        }
        lim.rlim_cur
    }
}

/// Serves `app` on `listener` until `shutdown` resolves; then accepts no more connections, closes
/// idle ones, and lets requests under way finish for `limits.shutdown_timeout`. Past it calls
/// `past_deadline` (which should end them with an error) and gives them a few seconds more.
pub async fn serve(listener: TcpListener, app: Router, limits: Limits, shutdown: impl Future<Output = ()>, past_deadline: impl FnOnce()) -> std::io::Result<()> {
    let limits = Limits { max_connections: limits.max_connections.clamp(1, Semaphore::MAX_PERMITS), ..limits };
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    let last_warning = AtomicU64::new(0);
    tokio::pin!(shutdown);
    loop {
        // A slot first: at the cap, new connections wait in the backlog instead of being cut.
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            p = slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
        };
        if slots.available_permits() == 0 {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            if last_warning.swap(now, Ordering::Relaxed) != now {
                tracing::warn!("{} connections are open, the most allowed; new ones wait until one closes", limits.max_connections);
            }
        }
        let (stream, _) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors or a connection reset before it was accepted.
                    tracing::error!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .keep_alive(true)
                .max_buf_size(READ_BUFFER_BYTES)
                .serve_connection(TokioIo::new(super::heads::Checked::new(stream)), service)
                .with_upgrades();
            tokio::pin!(conn);
            let stopping = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stopping => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Wait for the connections to finish what they were doing.
    let all = u32::try_from(limits.max_connections.max(1)).unwrap_or(u32::MAX);
    if tokio::time::timeout(limits.shutdown_timeout, slots.clone().acquire_many_owned(all)).await.is_err() {
        let open = limits.max_connections - slots.available_permits();
        tracing::warn!("{open} connections still busy after {:?}; ending their requests", limits.shutdown_timeout);
        past_deadline();
        let _ = tokio::time::timeout(AFTER_DEADLINE, slots.acquire_many(all)).await;
    }
    Ok(())
}
