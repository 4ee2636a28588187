//! Starting and stopping Outpost: bind, serve, open the stores (replay), background tasks, and the
//! graceful shutdown (stop accepting, drain, flush, close). Listeners and the shutdown trigger are
//! injected (mini-redis' `run(listener, shutdown)`), so tests run the real server on port 0.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::http::AppState;
use crate::pipeline::Pipeline;
use crate::telemetry::Telemetry;

/// How long shutdown waits for in-flight requests before closing the stores anyway.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The bound sockets.
pub struct Listeners {
    /// Main HTTP port.
    pub http: TcpListener,
    /// OTLP/gRPC port.
    pub otlp_grpc: Option<TcpListener>,
    /// OTLP/HTTP port.
    pub otlp_http: Option<TcpListener>,
}

/// The addresses actually bound (port 0 resolved).
#[derive(Debug, Clone, Copy)]
pub struct Addrs {
    /// Main HTTP port.
    pub http: SocketAddr,
    /// OTLP/gRPC port.
    pub otlp_grpc: Option<SocketAddr>,
    /// OTLP/HTTP port.
    pub otlp_http: Option<SocketAddr>,
}

impl Listeners {
    /// Binds every configured listener; an address in use fails with the key that named it.
    pub async fn bind(config: &Config) -> anyhow::Result<Listeners> {
        async fn one(key: &str, addr: SocketAddr) -> anyhow::Result<TcpListener> {
            TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr} (`{key}`)"))
        }
        let http = one("listen", config.listen).await?;
        let otlp_grpc = match config.otlp_grpc_listen {
            Some(a) => Some(one("otlp_grpc_listen", a).await?),
            None => None,
        };
        let otlp_http = match config.otlp_http_listen {
            Some(a) => Some(one("otlp_http_listen", a).await?),
            None => None,
        };
        Ok(Listeners { http, otlp_grpc, otlp_http })
    }

    /// The bound addresses.
    pub fn addrs(&self) -> std::io::Result<Addrs> {
        Ok(Addrs {
            http: self.http.local_addr()?,
            otlp_grpc: self.otlp_grpc.as_ref().map(|l| l.local_addr()).transpose()?,
            otlp_http: self.otlp_http.as_ref().map(|l| l.local_addr()).transpose()?,
        })
    }
}

/// A started server.
pub struct Running {
    /// Bound addresses.
    pub addrs: Addrs,
    /// The write path (and through it, once ready, the store).
    pub pipeline: Arc<Pipeline>,
    stop: CancellationToken,
    servers: JoinSet<()>,
    opened: tokio::task::JoinHandle<anyhow::Result<()>>,
    background: JoinSet<()>,
}

/// Starts serving on `listeners` and opens the stores in the background; `/readyz` turns 200 and
/// ingest is accepted once the WAL has been replayed.
pub async fn start(config: Config, listeners: Listeners) -> anyhow::Result<Running> {
    let addrs = listeners.addrs()?;
    let telemetry = Arc::new(Telemetry::new());
    let pipeline = Arc::new(
        Pipeline::new(
            config.requests.max_inflight_requests,
            config.memory_limit_bytes,
            config.item_limits.clone(),
            config.logs.clone(),
            Arc::clone(&telemetry),
        )
        .with_profile_limits(ingest::pprof::PprofLimits {
            max_decompressed_bytes: config.requests.max_request_bytes,
            max_samples_per_profile: config.requests.max_profile_samples,
            ..ingest::pprof::PprofLimits::default()
        }),
    );
    let scrape_targets = Arc::new(crate::scrape::Targets::default());
    let state = AppState {
        pipeline: Arc::clone(&pipeline),
        limits: config.requests,
        prom: Arc::new(crate::api::prom::PromState::new(config.query.clone(), Arc::clone(&scrape_targets))),
        loki: Arc::new(config.loki.clone()),
    };
    let grpc = crate::grpc::routes(Arc::clone(&pipeline), config.requests.max_request_bytes);
    let stop = CancellationToken::new();
    let mut servers = JoinSet::new();
    let main = crate::http::main_router(state.clone(), grpc.clone());
    servers.spawn(serve(listeners.http, main, stop.clone(), "listen"));
    if let Some(l) = listeners.otlp_grpc {
        servers.spawn(serve(l, grpc.clone(), stop.clone(), "otlp_grpc_listen"));
    }
    if let Some(l) = listeners.otlp_http {
        servers.spawn(serve(l, crate::http::otlp_router(state), stop.clone(), "otlp_http_listen"));
    }
    tracing::info!(
        http = %addrs.http,
        otlp_grpc = %addrs.otlp_grpc.map(|a| a.to_string()).unwrap_or_else(|| "off".into()),
        otlp_http = %addrs.otlp_http.map(|a| a.to_string()).unwrap_or_else(|| "off".into()),
        data_dir = %config.data_dir.display(),
        "Listening"
    );

    let mut background = JoinSet::new();
    let opened = {
        let pipeline = Arc::clone(&pipeline);
        let opts = config.storage.clone();
        let events: Arc<dyn storage::StorageEvents> = telemetry;
        tokio::spawn(async move {
            let (store, report) = tokio::task::spawn_blocking(move || storage::Storage::open(opts, events))
                .await?
                .context("cannot open the data folder")?;
            pipeline.telemetry.replayed(&report);
            pipeline.set_storage(Arc::new(store));
            tracing::info!("Ready");
            Ok(())
        })
    };
    background.spawn(evict_delta_state(Arc::clone(&pipeline), stop.clone()));
    background.spawn(maintain_stores(Arc::clone(&pipeline), stop.clone()));
    background.spawn(refresh_span_metrics(Arc::clone(&pipeline), stop.clone()));
    background.spawn(watch_memory(Arc::clone(&pipeline), stop.clone()));
    crate::scrape::spawn(
        &config.scrape,
        addrs.http,
        Arc::clone(&pipeline),
        &scrape_targets,
        stop.clone(),
        &mut background,
    );
    if let Some(period) = config.fsync_interval {
        background.spawn(fsync_ticker(Arc::clone(&pipeline), period, stop.clone()));
    }
    Ok(Running { addrs, pipeline, stop, servers, opened, background })
}

async fn serve(listener: TcpListener, router: axum::Router, stop: CancellationToken, key: &'static str) {
    use axum::serve::ListenerExt;
    // Without TCP_NODELAY, small responses wait for the client's delayed ACK (~40 ms at p99 on gRPC).
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "Cannot set TCP_NODELAY");
        }
    });
    let r = axum::serve(listener, router).with_graceful_shutdown(stop.cancelled_owned()).await;
    if let Err(e) = r {
        tracing::error!(listener = key, error = %e, "Server failed");
    }
}

/// How often resident memory is measured for the memory limit.
const MEMORY_CHECK_PERIOD: Duration = Duration::from_millis(250);

/// How often idle delta → cumulative state is looked for.
const DELTA_STATE_CHECK_PERIOD: Duration = Duration::from_secs(300);

/// Delta → cumulative totals of series silent this long are forgotten; a series that comes back
/// starts a new cumulative run (a counter reset, which PromQL's rate() handles).
const DELTA_STATE_MAX_IDLE: Duration = Duration::from_secs(3600);

/// Runs `tick` every `period` until `stop`; a slow tick delays the next instead of bunching them.
async fn every<F, Fut>(period: Duration, stop: CancellationToken, mut tick: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = interval.tick() => {}
        }
        tick().await;
    }
}

/// Measures resident memory (`VmRSS`) for the write path's memory limit. RSS, not allocator
/// statistics: it is what the kernel's OOM killer and a container limit see.
async fn watch_memory(pipeline: Arc<Pipeline>, stop: CancellationToken) {
    every(MEMORY_CHECK_PERIOD, stop, || async {
        if let Some(rss) = resident_bytes() {
            pipeline.set_resident_memory(rss);
        }
    })
    .await
}

fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kib| kib * 1024)
}

async fn evict_delta_state(pipeline: Arc<Pipeline>, stop: CancellationToken) {
    every(DELTA_STATE_CHECK_PERIOD, stop, || async {
        let evicted = pipeline.evict_idle_metrics_state(DELTA_STATE_MAX_IDLE);
        if evicted > 0 {
            tracing::debug!(evicted, "Idle delta series forgotten");
        }
    })
    .await
}

/// How often span metrics tick: totals held back since the last emission go out, and every 15 s
/// (Tempo's metrics-generator collection interval) every active series is re-emitted.
const SPAN_METRICS_PERIOD: Duration = Duration::from_secs(1);

async fn refresh_span_metrics(pipeline: Arc<Pipeline>, stop: CancellationToken) {
    every(SPAN_METRICS_PERIOD, stop, || async {
        let p = Arc::clone(&pipeline);
        if let Err(e) = tokio::task::spawn_blocking(move || p.refresh_span_metrics()).await {
            tracing::warn!(error = %e, "Span metrics refresh task failed");
        }
    })
    .await
}

/// How often the stores checkpoint (engines persist, the WAL before them goes) and do their
/// background work (compaction, retention).
const MAINTENANCE_PERIOD: Duration = Duration::from_secs(30);

async fn maintain_stores(pipeline: Arc<Pipeline>, stop: CancellationToken) {
    let background = match BackgroundThread::start() {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, "Could not start the background maintenance thread");
            return;
        }
    };
    every(MAINTENANCE_PERIOD, stop, || async {
        let Some(store) = pipeline.storage().cloned() else { return };
        // The checkpoint runs at normal priority: writers may be waiting for it to free memory.
        let s = Arc::clone(&store);
        match tokio::task::spawn_blocking(move || s.checkpoint()).await {
            Ok(Ok(c)) if c.segments_removed > 0 => {
                tracing::debug!(segments = c.segments_removed, "Checkpoint removed WAL segments");
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "Store checkpoint failed");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "Store checkpoint task failed");
                return;
            }
        }
        // Compaction and retention wait for nobody: they run on the low-priority thread, so that
        // queries and ingest take the CPU first on a small machine.
        let done = background.run(move || store.maintain(crate::pipeline::now_ns() / 1_000_000)).await;
        match done {
            Some(Ok(())) => {}
            Some(Err(e)) => tracing::warn!(error = %e, "Store maintenance failed"),
            None => tracing::warn!("Store maintenance task failed"),
        }
    })
    .await
}

/// A thread for background work (compaction, retention) at a lower CPU priority than the rest of
/// the process: nice [`BACKGROUND_NICE`] on Linux, where the nice value is per thread. Jobs run one
/// at a time in submission order.
struct BackgroundThread {
    jobs: std::sync::mpsc::Sender<Box<dyn FnOnce() + Send>>,
}

/// The nice value of [`BackgroundThread`] (the process' others stay at their own, usually 0).
const BACKGROUND_NICE: i32 = 10;

impl BackgroundThread {
    fn start() -> std::io::Result<BackgroundThread> {
        let (jobs, rx) = std::sync::mpsc::channel::<Box<dyn FnOnce() + Send>>();
        std::thread::Builder::new().name("outpost-background".into()).spawn(move || {
            #[cfg(target_os = "linux")]
            {
                let me = Some(rustix::thread::gettid());
                let nice = rustix::process::getpriority_process(me).unwrap_or(0);
                if let Err(e) = rustix::process::setpriority_process(me, nice.max(BACKGROUND_NICE)) {
                    tracing::debug!(error = %e, "Could not lower the background thread's priority");
                }
            }
            for job in rx {
                job();
            }
        })?;
        Ok(BackgroundThread { jobs })
    }

    /// Runs `f` on the thread; `None` if it panicked or the thread is gone.
    async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job = move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
            let _ = tx.send(r.ok());
        };
        self.jobs.send(Box::new(job)).ok()?;
        rx.await.ok().flatten()
    }
}

async fn fsync_ticker(pipeline: Arc<Pipeline>, period: Duration, stop: CancellationToken) {
    every(period, stop, || async {
        let Some(store) = pipeline.storage().cloned() else { return };
        match tokio::task::spawn_blocking(move || store.sync()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "WAL fsync failed"),
            Err(e) => tracing::warn!(error = %e, "WAL fsync task failed"),
        }
    })
    .await
}

impl Running {
    /// Waits until the stores are open (or failed to open).
    pub async fn ready(&mut self) -> anyhow::Result<()> {
        (&mut self.opened).await?
    }

    /// A token that stops the server when cancelled (wired to SIGINT/SIGTERM by `main`).
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Runs until the stop token is cancelled or a listener dies, then shuts down gracefully.
    pub async fn run_until_stopped(mut self) -> anyhow::Result<()> {
        tokio::select! {
            _ = self.stop.cancelled() => {}
            r = &mut self.opened => {
                r??;
                // Stores are open; keep serving until told to stop.
                tokio::select! {
                    biased;
                    _ = self.stop.cancelled() => {}
                    _ = self.servers.join_next() => {
                        if !self.stop.is_cancelled() {
                            tracing::error!("A listener stopped unexpectedly");
                        }
                    }
                }
            }
        }
        self.shutdown().await
    }

    /// Graceful shutdown: refuse new writes, stop accepting connections, let in-flight requests
    /// finish (bounded by a drain timeout), then flush and close the stores.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        tracing::info!("Shutting down");
        self.pipeline.close();
        self.stop.cancel();
        let drained =
            tokio::time::timeout(DRAIN_TIMEOUT, async { while self.servers.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            tracing::warn!(timeout_s = DRAIN_TIMEOUT.as_secs(), "Connections still open after the drain timeout");
            self.servers.abort_all();
        }
        self.background.abort_all();
        if !self.opened.is_finished() {
            // Replay still running: let it finish so the store is closed cleanly.
            let _ = (&mut self.opened).await;
        }
        if let Some(store) = self.pipeline.storage().cloned() {
            tokio::task::spawn_blocking(move || store.close()).await?.context("closing the stores")?;
        }
        tracing::info!("Stopped");
        Ok(())
    }
}
