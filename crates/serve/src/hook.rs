//! The seam where a deployment wraps each completion: before generation it may refuse the request
//! (who pays, is this model deployed), after it the completion is recorded (attributed, settled)
//! and what the record returns is added to the response as its `openledger` field.
//!
//! OpenLoRA itself knows nothing of the chain; `openledger dev` plugs the ledger in here.

use std::future::Future;
use std::pin::Pin;

use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;

/// A boxed future of a hook's result.
pub type HookFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, Refusal>> + Send + 'a>>;

/// Why a hook refused: sent to the client as an OpenAI-shaped error with this status.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// The HTTP status the client gets (402 for a payer without escrow, 503 when the chain is
    /// unreachable, ...).
    pub status: StatusCode,
    /// What the client reads in the error's `message`.
    pub message: String,
}

impl Refusal {
    /// A refusal with `status`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

/// A request as the hook sees it before generation.
pub struct Call<'a> {
    /// The model id asked for.
    pub model: &'a str,
    /// The request's headers: where a deployment finds who pays (a dev account's index, say).
    pub headers: &'a HeaderMap,
    /// The request body's `openledger` field, if any (a client-signed order, say).
    pub extra: Option<&'a Value>,
    /// The prompt's length in tokens, as billed.
    pub prompt_tokens: usize,
    /// The most tokens the completion may generate (`max_tokens`, or what the context leaves):
    /// with the prompt, what bounds its fee before any token is generated.
    pub max_tokens: usize,
}

/// A finished completion, or what was generated of one whose client went away.
pub struct Completion {
    /// The text the model continued (a chat's messages as rendered for the model).
    pub prompt: String,
    /// The generated text.
    pub output: String,
    /// The prompt's length in tokens, as billed.
    pub prompt_tokens: usize,
    /// The output's length in tokens, as billed.
    pub completion_tokens: usize,
}

/// Wraps completions; [`crate::api::router_with`] calls it on every request.
pub trait CompletionHook: Send + Sync {
    /// Admits `call` (returning what finishes it) or refuses it before any token is generated.
    fn admit<'a>(&'a self, call: Call<'a>) -> HookFuture<'a, Box<dyn Admitted>>;

    /// The models among `ids` (the base and every adapter OpenLoRA holds) that this deployment
    /// serves, for `/v1/models`: a client should not find a model there that every request to
    /// would refuse. All of them unless the hook says otherwise.
    fn servable<'a>(&'a self, ids: Vec<String>) -> HookFuture<'a, Vec<String>> {
        Box::pin(async move { Ok(ids) })
    }
}

/// An admitted request, waiting for its completion.
pub trait Admitted: Send {
    /// Records `completion`; the value becomes the response's `openledger` field.
    fn complete(self: Box<Self>, completion: Completion) -> HookFuture<'static, Value>;
}
