//! `openledger serve`: OpenLoRA, the base model and its adapters behind an OpenAI-compatible API.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use openledger_serve::{CacheLimits, Engine, EngineConfig, Registry};

use crate::factory::{base_name, base_or_dev};

/// Arguments of `openledger serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Base model: a checkpoint directory (Hugging Face format), a GGUF file, or a model `model get` installed (smollm2) [default: the dev base model, built on first use]
    #[arg(long)]
    base: Option<PathBuf>,
    /// Folder of PEFT adapter directories; each directory's name is its model id
    #[arg(long)]
    adapters: Option<PathBuf>,
    /// Address of the HTTP API
    #[arg(long, default_value = "127.0.0.1:8000", value_parser = crate::http::listen_addr)]
    api_addr: SocketAddr,
    /// Most adapters kept loaded
    #[arg(long, default_value_t = 64)]
    cache_adapters: usize,
    /// Most MiB of adapter weights kept loaded
    #[arg(long, default_value_t = 1024)]
    cache_mib: usize,
    /// Most sequences decoded together in one step
    #[arg(long, default_value_t = 32)]
    max_batch: usize,
    /// Most requests waiting for a place in the batch; more get HTTP 429
    #[arg(long, default_value_t = 256)]
    queue: usize,
    /// Most prompt tokens prefilled per step, so long prompts do not stall running decodes
    #[arg(long, default_value_t = 256)]
    prefill_chunk: usize,
}

/// Runs `openledger serve` until interrupted.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    if args.max_batch == 0 || args.queue == 0 {
        anyhow::bail!("--max-batch and --queue must be at least 1");
    }
    let base = base_or_dev(args.base.as_deref())?;
    let registry = match &args.adapters {
        Some(dir) => Registry::scan(dir)
            .with_context(|| format!("cannot read the adapters folder {}", dir.display()))?,
        None => Registry::default(),
    };
    let adapters = registry.len();
    let config = EngineConfig {
        max_batch: args.max_batch,
        queue: args.queue,
        cache: CacheLimits {
            adapters: args.cache_adapters,
            bytes: args.cache_mib << 20,
        },
        prefill_chunk: args.prefill_chunk.max(1),
    };
    let (engine, base_id) = Engine::from_checkpoint(&base, registry, config)?;
    let base_id = args.base.as_deref().and_then(base_name).unwrap_or(base_id);
    let engine = Arc::new(engine);
    let app = openledger_serve::api::router(engine, base_id.clone());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.api_addr)
            .await
            .with_context(|| format!("cannot listen on {}", args.api_addr))?;
        eprintln!(
            "OpenLoRA: serving {base_id} and {adapters} adapters on http://{}/v1",
            listener.local_addr()?
        );
        tokio::select! {
            served = crate::http::serve(listener, app, crate::http::HttpLimits::default()) => {
                served.context("the API server failed")
            }
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    })
}
