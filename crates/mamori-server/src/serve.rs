//! Running the server: listen, warm up, serve until a signal, drain, close the store.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

use crate::app::{AppState, router};

/// The process's Prometheus recorder (one per process; later servers in the same process, as in
/// tests, share it).
pub fn metrics_handle() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let buckets = [
                0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
            ];
            PrometheusBuilder::new()
                .set_buckets(&buckets)
                .ok()?
                .install_recorder()
                .ok()
        })
        .clone()
}

/// A server bound to its address.
pub struct Bound {
    pub listener: TcpListener,
    pub addr: SocketAddr,
}

/// Binds the listen address (port 0 picks a free one).
pub async fn bind(listen: &str) -> std::io::Result<Bound> {
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    Ok(Bound { listener, addr })
}

/// Serves until `shutdown` completes, then stops taking connections, lets requests in flight
/// finish for up to `server.shutdown_grace_ms`, and closes the store (checkpointing its WAL).
pub async fn serve(
    bound: Bound,
    state: Arc<AppState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let grace = Duration::from_millis(state.server.shutdown_grace_ms);
    if let Err(e) = state.warm_up().await {
        tracing::error!(detail = %e.detail, "warm-up failed; /readyz stays 503");
    }
    // Each Tokyo day's population is prepared minutes before the day and completed as it
    // starts, not by its first request.
    let midnight = tokio::spawn({
        let state = state.clone();
        async move {
            let until = |t: i64| {
                let wait = u64::try_from(t - crate::app::now_us()).unwrap_or(0);
                tokio::time::sleep(Duration::from_micros(wait))
            };
            loop {
                let now = crate::app::now_us();
                let next = mamori_store::assess::tokyo_day_start(now) + mamori_core::time::DAY_US;
                until(next - crate::app::PREPARE_AHEAD_US).await;
                if let Err(e) = state.prepare_population(next, crate::app::now_us()).await {
                    tracing::error!(detail = %e.detail, "preparing the next day's population failed");
                }
                until(next).await;
                if let Err(e) = state.population(crate::app::now_us()).await {
                    tracing::error!(detail = %e.detail, "computing the new day's population failed");
                }
            }
        }
    });
    // The outbox sends notices to customers, when `[mail] smtp_url` is set.
    let outbox = match crate::mail::transport(&state.mail) {
        Ok(Some(t)) => Some(tokio::spawn(crate::mail::run_outbox(state.clone(), t))),
        Ok(None) => None,
        Err(e) => {
            tracing::error!(error = %e, "notices will not be sent");
            None
        }
    };
    let app = router(state.clone());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(bound.listener, app).with_graceful_shutdown(async move {
        shutdown.await;
        tracing::info!("shutting down: draining requests in flight");
        let _ = stop_tx.send(());
    });
    let mut server = std::pin::pin!(server.into_future());
    let result = tokio::select! {
        r = &mut server => r,
        _ = async {
            if stop_rx.await.is_err() {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!("requests still in flight after the grace period; stopping anyway");
            Ok(())
        }
    };
    midnight.abort();
    if let Some(o) = outbox {
        o.abort();
    }
    state.store.close().await;
    tracing::info!("stopped");
    result
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
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
        _ = ctrl_c => {}
        _ = term => {}
    }
}
