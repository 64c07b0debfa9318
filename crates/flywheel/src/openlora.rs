//! OpenLoRA inside `openledger dev`: the OpenAI-compatible API on `/v1`, serving each adapter
//! the trainer saved (`model-<id>`) the moment it is on disk, with the [`Ledger`] admitting
//! and settling every completion. The engine starts on the first request, so that the node
//! starts at once.

use std::sync::Arc;

use axum::{
    Router,
    extract::{Request, State},
    response::{IntoResponse, Response},
    routing::any,
};
use openledger_serve::{Engine, EngineConfig, Registry};
use tokio::sync::OnceCell;
use tower::ServiceExt;

use crate::ledger::Ledger;
use crate::shared::{ApiError, Flywheel};

/// The lazily started OpenLoRA API.
pub struct OpenLora {
    flywheel: Arc<Flywheel>,
    ledger: Ledger,
    api: OnceCell<Router>,
}

impl OpenLora {
    /// OpenLoRA over the flywheel's base model and adapters, wrapped by `ledger`.
    pub fn new(flywheel: Arc<Flywheel>, ledger: Ledger) -> Arc<Self> {
        Arc::new(Self {
            flywheel,
            ledger,
            api: OnceCell::new(),
        })
    }

    /// The routes: everything under `/v1`.
    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/v1/{*rest}", any(forward))
            .with_state(self)
    }

    async fn api(&self) -> anyhow::Result<Router> {
        let api = self
            .api
            .get_or_try_init(|| async {
                let base = self.flywheel.base.path().await?;
                let adapters = self.flywheel.adapters_dir();
                std::fs::create_dir_all(&adapters)?;
                let registry = Registry::scan(&adapters)?;
                let (engine, base_id) = tokio::task::spawn_blocking(move || {
                    Engine::from_checkpoint(&base, registry, EngineConfig::default())
                })
                .await??;
                let engine = Arc::new(engine);
                let hook = Arc::new(self.ledger.clone());
                anyhow::Ok(openledger_serve::api::router_with(engine, base_id, hook))
            })
            .await?;
        Ok(api.clone())
    }
}

async fn forward(State(openlora): State<Arc<OpenLora>>, request: Request) -> Response {
    if openlora.flywheel.base.is_building() {
        let busy = ApiError(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "the base model is being built (the first start of a node takes about a minute): \
             retry in a few seconds"
                .into(),
        );
        return ([(axum::http::header::RETRY_AFTER, "5")], busy).into_response();
    }
    match openlora.api().await {
        Ok(api) => match api.oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        },
        Err(e) => ApiError(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            format!("OpenLoRA cannot start: {e:#}"),
        )
        .into_response(),
    }
}
