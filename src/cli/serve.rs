//! `hearth serve`: the HTTP API on a socket, the model loading beside it, the ledger attached.

use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;

use crate::api::{router, AppState, ServeConfig};
use crate::engine::{Engine, EngineConfig};

use super::{LedgerArgs, ModelArgs};

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Address to listen on; loopback by default.
    #[arg(long, default_value = "127.0.0.1", env = "HEARTH_HOST")]
    host: String,
    #[arg(long, default_value_t = 8080, env = "HEARTH_PORT")]
    port: u16,
    /// Require `Authorization: Bearer KEY` on every route but /health and /metrics.
    #[arg(long, env = "HEARTH_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Allow browser requests from this origin (repeatable); no CORS without it.
    #[arg(long = "cors-origin")]
    cors_origin: Vec<String>,
    /// Serve requests for NAME with MODEL (repeatable; NAME may use * wildcards, as in
    /// `claude-*=MODEL`). Listed in /v1/models.
    #[arg(long = "alias", value_name = "NAME=MODEL")]
    alias: Vec<crate::api::Alias>,
    /// Also answer requests whose Host header is NAME (repeatable). A server bound to loopback
    /// otherwise answers only loopback names (localhost, 127.0.0.1, [::1]), so that web pages
    /// cannot reach it through DNS rebinding.
    #[arg(long = "allowed-host", value_name = "NAME")]
    allowed_host: Vec<String>,
    /// Connections open at once; more wait in the listen backlog.
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,
    /// Seconds a client has to send a request's headers; also how long an idle keep-alive
    /// connection is kept.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    header_timeout: u64,
    /// Answer 404 to model names that are neither the served model's nor an alias (by default
    /// any name is served by the one model, since clients choose names of their own).
    #[arg(long)]
    strict_model_names: bool,
    /// Sequences generated together in one batch.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    parallel: u16,
    /// Requests that may wait for a batch slot; more are refused with 429.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..))]
    queue: u16,
    /// Tokens per batched step (decode tokens plus prompt chunks).
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u16).range(1..))]
    batch_tokens: u16,
    /// Finished sequences whose KV caches are kept for prefix reuse (0 turns reuse off).
    #[arg(long, default_value_t = 8)]
    prefix_cache: usize,
    /// On SIGTERM or Ctrl-C, seconds that requests under way get to finish; past it they end
    /// with an error (streams with an error event), rows are written, and the process exits 0.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(0..=3600))]
    shutdown_timeout: u64,
    /// The name this server's ledger rows carry, to tell replicas apart in a shared ledger;
    /// default the host name and port (`host:8080`).
    #[arg(long, env = "HEARTH_INSTANCE_ID")]
    instance_id: Option<String>,
    #[command(flatten)]
    ledger: LedgerArgs,
}

pub fn serve(args: ServeArgs) -> Result<()> {
    let (id, path) = args.model.locate()?;
    let names = crate::api::ModelNames { aliases: args.alias.clone(), strict: args.strict_model_names };
    let loopback = args.host == "localhost" || args.host.parse::<std::net::IpAddr>().is_ok_and(|a| a.is_loopback());
    let allowed_hosts = loopback.then(|| args.allowed_host.clone());
    let config = ServeConfig { api_key: args.api_key.clone(), cors_origins: args.cors_origin.clone(), names, allowed_hosts };
    let state = AppState::new(config);
    let instance = args.instance_id.clone().unwrap_or_else(|| format!("{}:{}", host_name(), args.port));
    let ledger = args.ledger.open()?.with_instance(instance.clone());
    let watts_per_core = ledger.prices().local.watts_per_core();
    let ledger_path = format!("{} (instance {instance})", ledger.describe());
    let ledger = Arc::new(ledger);
    state.set_ledger(ledger.clone());
    // The providers' tokenizers take a moment to build; do it before the first request needs them.
    std::thread::spawn(crate::ledger::warm_up);
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let addr = format!("{}:{}", args.host, args.port);
    let listener = runtime.block_on(tokio::net::TcpListener::bind(&addr)).with_context(|| format!("listening on {addr}"))?;
    let bound = listener.local_addr().map_or(addr, |a| a.to_string());
    eprintln!("listening on http://{bound} (model {id} loading; /health answers 503 until it is ready)");
    eprintln!("cost ledger: {ledger_path} (see `hearth costs`, /v1/ledger and http://{bound}/dashboard)");
    // Load on another thread so /health can answer while the weights are read.
    let loading = state.clone();
    std::thread::spawn(move || match args.model.load_path(&path) {
        Ok(model) => {
            let cfg = EngineConfig {
                max_running: args.parallel as usize,
                queue: args.queue as usize,
                step_tokens: args.batch_tokens as usize,
                prefix_cache: args.prefix_cache,
                watts_per_core,
            };
            loading.set_engine(Engine::start(model, id, cfg));
            eprintln!("ready");
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    });
    let files = crate::api::raise_file_limit();
    let limits = crate::api::Limits {
        max_connections: (args.max_connections as usize).min(files.saturating_sub(64).max(16) as usize),
        header_timeout: std::time::Duration::from_secs(args.header_timeout),
        shutdown_timeout: std::time::Duration::from_secs(args.shutdown_timeout),
    };
    if limits.max_connections < args.max_connections as usize {
        eprintln!("at most {} connections: the open-file limit is {files}", limits.max_connections);
    }
    let (draining, aborting) = (state.clone(), state.clone());
    let stop = async move {
        shutdown_signal().await;
        eprintln!("stopping: no new connections; requests under way have {}s to finish", args.shutdown_timeout);
        draining.set_draining();
    };
    let past_deadline = move || {
        if let Some(engine) = aborting.running_engine() {
            engine.abort_all();
        }
    };
    runtime.block_on(crate::api::serve(listener, router(state), limits, stop, past_deadline))?;
    // Requests cut off as the runtime stops are recorded as cancelled on threads of their own.
    drop(runtime);
    let spooled = ledger.flush(std::time::Duration::from_secs(10));
    if spooled > 0 {
        eprintln!("{spooled} ledger rows wait in the spool for the database; the next start writes them");
    }
    eprintln!("stopped");
    Ok(())
}

/// This machine's name (`gethostname`), or `localhost` when it has none.
fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that many bytes.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).into_owned();
    if ok && !name.is_empty() { name } else { "localhost".into() }
}

/// Ctrl-C, or SIGTERM (what service managers and `docker stop` send).
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
