//! The OpenAI-compatible HTTP API: `/v1/models`, `/v1/completions`, `/v1/chat/completions`
//! (with server-sent events when `stream` is set) and `/metrics`.
//!
//! Errors use OpenAI's JSON shape (`{"error": {"message", "type", "param", "code"}}`) and status
//! codes: 400 for bad parameters and prompts longer than the context, 404 for unknown models,
//! 429 when the queue is full. A request's failure never touches another's.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use openledger_ml::MlError;
use openledger_ml::chat;
use openledger_ml::generate::{FinishReason, GenerateOptions, TokenLogprob, encode_prompt};
use openledger_ml::tokenizer::{Tokenizer, token_bytes};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::engine::{Engine, Event, Request, SubmitError};
use crate::hook::{Admitted, Call, Completion, CompletionHook, Refusal};
use crate::openai::{
    Alternatives, ChatLogprob, ChatRequest, Choice, CompletionRequest, Delta, Envelope, ErrorBody,
    ErrorDetail, Logprobs, Message, ModelCard, ModelList, OneOrMany, Sampling, TokenText, Usage,
};

/// Most stop sequences a request may give, as OpenAI allows.
const MAX_STOP: usize = 4;
/// Most alternatives a request may ask to see beside each token's log-probability (OpenAI's
/// limit for chat).
const MAX_TOP_LOGPROBS: usize = 20;
/// `max_tokens` of a completion request that gives none (OpenAI's default).
const DEFAULT_COMPLETION_TOKENS: usize = 16;

/// The API's shared state: the engine and the base model's id.
struct Api {
    engine: Arc<Engine>,
    base_id: String,
    ids: AtomicU64,
    hook: Option<Arc<dyn CompletionHook>>,
}

/// The API's routes over `engine`; the base model answers to `base_id`, each adapter to its id.
pub fn router(engine: Arc<Engine>, base_id: String) -> Router {
    build(engine, base_id, None)
}

/// The same routes, with `hook` admitting every completion request and recording every
/// completion.
pub fn router_with(engine: Arc<Engine>, base_id: String, hook: Arc<dyn CompletionHook>) -> Router {
    build(engine, base_id, Some(hook))
}

fn build(engine: Arc<Engine>, base_id: String, hook: Option<Arc<dyn CompletionHook>>) -> Router {
    let api = Arc::new(Api {
        engine,
        base_id,
        ids: AtomicU64::new(0),
        hook,
    });
    Router::new()
        .route("/v1/models", get(models))
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/metrics", get(metrics))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no such endpoint",
                "invalid_request_error",
            )
        })
        .with_state(api)
}

/// An error in OpenAI's shape.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
    kind: &'static str,
    param: Option<&'static str>,
    code: Option<&'static str>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>, kind: &'static str) -> Self {
        Self {
            status,
            message: message.into(),
            kind,
            param: None,
            code: None,
        }
    }

    fn bad(param: &'static str, message: impl Into<String>) -> Self {
        Self {
            param: Some(param),
            ..Self::new(StatusCode::BAD_REQUEST, message, "invalid_request_error")
        }
    }

    fn body(&self) -> ErrorBody<'_> {
        ErrorBody {
            error: ErrorDetail {
                message: &self.message,
                kind: self.kind,
                param: self.param,
                code: self.code,
            },
        }
    }
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        let kind = if refusal.status.is_server_error() {
            "server_error"
        } else {
            "invalid_request_error"
        };
        Self::new(refusal.status, refusal.message, kind)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}

/// The alternatives a request asks to see, refused past [`MAX_TOP_LOGPROBS`].
fn top_logprobs(param: &'static str, top: usize) -> Result<usize, ApiError> {
    if top > MAX_TOP_LOGPROBS {
        return Err(ApiError::bad(
            param,
            format!("{param} {top} is more than {MAX_TOP_LOGPROBS}"),
        ));
    }
    Ok(top)
}

impl Sampling {
    /// The generation's settings; `logprobs`, the alternatives to report beside each token's
    /// log-probability (`None`: no log-probabilities).
    fn options(
        &self,
        default_max: usize,
        logprobs: Option<usize>,
    ) -> Result<GenerateOptions, ApiError> {
        let temperature = self.temperature.unwrap_or(1.0);
        if !(0.0..=2.0).contains(&temperature) {
            return Err(ApiError::bad(
                "temperature",
                format!("temperature {temperature} is not between 0 and 2"),
            ));
        }
        let top_p = self.top_p.unwrap_or(1.0);
        if !(top_p > 0.0 && top_p <= 1.0) {
            return Err(ApiError::bad(
                "top_p",
                format!("top_p {top_p} is not in (0, 1]"),
            ));
        }
        if self.n.is_some_and(|n| n != 1) {
            return Err(ApiError::bad("n", "only n = 1 is supported"));
        }
        let stop = self.stop.clone().map_or_else(Vec::new, OneOrMany::into_vec);
        if stop.len() > MAX_STOP || stop.iter().any(String::is_empty) {
            return Err(ApiError::bad(
                "stop",
                format!("stop takes 1 to {MAX_STOP} non-empty strings"),
            ));
        }
        Ok(GenerateOptions {
            max_tokens: self
                .max_completion_tokens
                .or(self.max_tokens)
                .unwrap_or(default_max),
            temperature,
            top_p,
            stop,
            seed: self.seed.unwrap_or_else(random_seed),
            logprobs,
        })
    }
}

/// A seed for a request that gives none: each such request samples differently.
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(Instant::now())
}

fn parse<T: for<'de> Deserialize<'de>>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("invalid request body: {e}"),
            "invalid_request_error",
        )
    })
}

async fn completions(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: CompletionRequest = parse(&body)?;
    let mut prompts = request.prompt.into_vec();
    if prompts.len() != 1 {
        return Err(ApiError::bad("prompt", "give exactly one prompt"));
    }
    let prompt = prompts.remove(0);
    if request.echo == Some(true) {
        return Err(ApiError::bad(
            "echo",
            "echo is not supported: a completion never repeats its prompt",
        ));
    }
    if request.best_of.is_some_and(|n| n != 1) {
        return Err(ApiError::bad("best_of", "only best_of = 1 is supported"));
    }
    let logprobs = request
        .logprobs
        .map(|top| top_logprobs("logprobs", top))
        .transpose()?;
    detached(async move {
        api.run(Kind::Text, prompt, request.sampling, logprobs, &headers)
            .await
    })
    .await
}

/// Runs a request to its end in a task of its own, whether or not its client waits: a client
/// that goes away before a non-streamed answer is ready still pays for what it asked to be
/// generated (its fee was secured before generation), as a cut stream pays for what was
/// generated.
async fn detached(
    request: impl Future<Output = Result<Response, ApiError>> + Send + 'static,
) -> Result<Response, ApiError> {
    tokio::spawn(request).await.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            e.to_string(),
            "server_error",
        )
    })?
}

async fn chat_completions(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: ChatRequest = parse(&body)?;
    let (asked, top) = (
        request.logprobs.unwrap_or(false),
        request.top_logprobs.unwrap_or(0),
    );
    if top > 0 && !asked {
        return Err(ApiError::bad(
            "top_logprobs",
            "top_logprobs requires logprobs to be true",
        ));
    }
    let logprobs = asked
        .then(|| top_logprobs("top_logprobs", top))
        .transpose()?;
    let turns: Vec<chat::Message<'_>> = request
        .messages
        .iter()
        .map(|m| chat::Message {
            role: &m.role,
            content: &m.content,
        })
        .collect();
    let prompt = api
        .engine
        .chat()
        .prompt(&turns)
        .map_err(|e| ApiError::bad("messages", e.to_string()))?;
    detached(async move {
        api.run(Kind::Chat, prompt, request.sampling, logprobs, &headers)
            .await
    })
    .await
}

/// `/v1/models`: the base and its adapters, as far as the hook serves them.
async fn models(State(api): State<Arc<Api>>) -> Result<Response, ApiError> {
    let mut ids = vec![api.base_id.clone()];
    ids.extend(api.engine.adapter_ids());
    if let Some(hook) = &api.hook {
        ids = hook.servable(ids).await.map_err(ApiError::from)?;
    }
    let data = ids
        .iter()
        .map(|id| ModelCard {
            id,
            object: "model",
            created: 0,
            owned_by: "openledger",
            parent: (*id != api.base_id).then_some(api.base_id.as_str()),
        })
        .collect();
    Ok(Json(ModelList {
        object: "list",
        data,
    })
    .into_response())
}

async fn metrics(State(api): State<Arc<Api>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        api.engine.metrics().render(),
    )
}

/// Text completion or chat completion: the names and shapes that differ between them.
#[derive(Clone, Copy)]
enum Kind {
    Text,
    Chat,
}

impl Kind {
    fn object(self, stream: bool) -> &'static str {
        match (self, stream) {
            (Self::Text, _) => "text_completion",
            (Self::Chat, false) => "chat.completion",
            (Self::Chat, true) => "chat.completion.chunk",
        }
    }

    fn choice(
        self,
        text: &str,
        logprobs: Option<Logprobs>,
        finish: Option<FinishReason>,
    ) -> Choice<'_> {
        match self {
            Self::Text => Choice::Text {
                index: 0,
                text,
                logprobs,
                finish_reason: finish,
            },
            Self::Chat => Choice::Message {
                index: 0,
                logprobs,
                finish_reason: finish,
                message: Message {
                    role: "assistant",
                    content: text,
                },
            },
        }
    }

    fn chunk_choice(
        self,
        text: &str,
        first: bool,
        logprobs: Option<Logprobs>,
        finish: Option<FinishReason>,
    ) -> Choice<'_> {
        match self {
            Self::Text => self.choice(text, logprobs, finish),
            Self::Chat => Choice::Delta {
                index: 0,
                delta: Delta {
                    role: first.then_some("assistant"),
                    content: (!text.is_empty() || first).then_some(text),
                },
                logprobs,
                finish_reason: finish,
            },
        }
    }
}

/// What is known of a response before its text.
struct Head {
    kind: Kind,
    id: String,
    created: u64,
    model: String,
    prompt: String,
    /// The prompt's length in tokens, as billed.
    prompt_tokens: usize,
    /// What the hook finishes the completion with.
    admitted: Option<Box<dyn Admitted>>,
    /// Whether the request asked for log-probabilities, and how to write its tokens.
    logprobs: bool,
    tokenizer: Arc<Tokenizer>,
}

impl Head {
    fn envelope<'a>(&'a self, stream: bool, choices: Vec<Choice<'a>>) -> Envelope<'a> {
        Envelope {
            id: &self.id,
            object: self.kind.object(stream),
            created: self.created,
            model: &self.model,
            choices,
            usage: None,
            openledger: None,
        }
    }

    /// `entries` in the endpoint's shape, the first `offset` characters into the completion
    /// (moved past them); `None` when the request asked for no log-probabilities.
    fn logprobs(&self, entries: &[TokenLogprob], offset: &mut usize) -> Option<Logprobs> {
        if !self.logprobs {
            return None;
        }
        let text = |id: u32, logprob: f32| {
            let bytes = token_bytes(&self.tokenizer, id).unwrap_or_default();
            let token = String::from_utf8_lossy(&bytes).into_owned();
            TokenText {
                token,
                logprob,
                bytes,
            }
        };
        let tops = |e: &TokenLogprob| e.top.iter().map(|&(t, l)| text(t, l)).collect::<Vec<_>>();
        Some(match self.kind {
            Kind::Chat => Logprobs::Chat {
                content: entries
                    .iter()
                    .map(|e| ChatLogprob {
                        token: text(e.token, e.logprob),
                        top_logprobs: tops(e),
                    })
                    .collect(),
                refusal: None,
            },
            Kind::Text => {
                let tokens: Vec<String> =
                    entries.iter().map(|e| text(e.token, 0.0).token).collect();
                let text_offset = tokens
                    .iter()
                    .map(|t| {
                        let at = *offset;
                        *offset += t.chars().count();
                        at
                    })
                    .collect();
                // OpenAI lists the sampled token among the alternatives where it is not one of
                // the most likely.
                let top_logprobs = entries
                    .iter()
                    .zip(&tokens)
                    .map(|(e, token)| {
                        let mut map: Vec<(String, f32)> =
                            tops(e).into_iter().map(|t| (t.token, t.logprob)).collect();
                        if !e.top.iter().any(|&(t, _)| t == e.token) {
                            map.push((token.clone(), e.logprob));
                        }
                        Alternatives(map)
                    })
                    .collect();
                Logprobs::Text {
                    token_logprobs: entries.iter().map(|e| e.logprob).collect(),
                    tokens,
                    top_logprobs,
                    text_offset,
                }
            }
        })
    }
}

/// The completion's record from the hook, if there is one: its value, or the error that kept
/// the completion from being recorded.
async fn record(
    admitted: Option<Box<dyn Admitted>>,
    prompt: String,
    output: String,
    (prompt_tokens, completion_tokens): (usize, usize),
) -> Option<Value> {
    let completion = Completion {
        prompt,
        output,
        prompt_tokens,
        completion_tokens,
    };
    let recorded = admitted?.complete(completion).await;
    Some(recorded.unwrap_or_else(|refusal| serde_json::json!({"error": refusal.message})))
}

impl Api {
    async fn run(
        &self,
        kind: Kind,
        prompt: String,
        sampling: Sampling,
        logprobs: Option<usize>,
        headers: &HeaderMap,
    ) -> Result<Response, ApiError> {
        // With a hook, the model is looked up once it is admitted: the hook may install its
        // adapter (a deployed model trained elsewhere), or refuse it with a reason of its own.
        if self.hook.is_none() {
            self.resolve(&sampling.model)?;
        }
        let default_max = match kind {
            Kind::Text => DEFAULT_COMPLETION_TOKENS,
            Kind::Chat => usize::MAX,
        };
        let options = sampling.options(default_max, logprobs)?;
        let ids = encode_prompt(self.engine.model(), self.engine.tokenizer(), &prompt)
            .map_err(prompt_error)?;
        let room = self
            .engine
            .model()
            .config()
            .max_position_embeddings
            .saturating_sub(ids.len());
        let admitted = match &self.hook {
            Some(hook) => Some(
                hook.admit(Call {
                    model: &sampling.model,
                    headers,
                    extra: sampling.openledger.as_ref(),
                    prompt_tokens: ids.len(),
                    max_tokens: options.max_tokens.min(room),
                })
                .await?,
            ),
            None => None,
        };
        let adapter = self.resolve(&sampling.model)?;
        let prompt_tokens = ids.len();
        let (events, receiver) = unbounded_channel();
        self.engine
            .submit(Request {
                adapter,
                prompt: ids,
                options,
                events,
                arrived: Instant::now(),
            })
            .map_err(|e| match e {
                SubmitError::Overloaded(_) => ApiError {
                    code: Some("server_overloaded"),
                    ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, e.to_string(), "server_error")
                },
                SubmitError::Stopped => ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    e.to_string(),
                    "server_error",
                ),
            })?;
        let prefix = match kind {
            Kind::Text => "cmpl",
            Kind::Chat => "chatcmpl",
        };
        let head = Head {
            kind,
            id: format!(
                "{prefix}-{:x}{:06x}",
                std::process::id(),
                self.ids.fetch_add(1, Relaxed)
            ),
            created: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            model: sampling.model,
            prompt,
            prompt_tokens,
            admitted,
            logprobs: logprobs.is_some(),
            tokenizer: self.engine.tokenizer().clone(),
        };
        if sampling.stream {
            let include_usage = sampling.stream_options.unwrap_or_default().include_usage;
            return Ok(stream(head, receiver, include_usage));
        }
        collect(head, receiver).await
    }

    /// The adapter a model id names (`None` for the base model), or a 404.
    fn resolve(&self, model: &str) -> Result<Option<String>, ApiError> {
        if model == self.base_id {
            return Ok(None);
        }
        if self.engine.has_adapter(model) {
            return Ok(Some(model.to_string()));
        }
        Err(ApiError {
            param: Some("model"),
            code: Some("model_not_found"),
            ..ApiError::new(
                StatusCode::NOT_FOUND,
                format!("The model `{model}` does not exist"),
                "invalid_request_error",
            )
        })
    }
}

fn prompt_error(e: MlError) -> ApiError {
    let code = matches!(e, MlError::ContextFull { .. }).then_some("context_length_exceeded");
    ApiError {
        code,
        ..ApiError::bad("prompt", e.to_string())
    }
}

async fn collect(
    mut head: Head,
    mut receiver: UnboundedReceiver<Event>,
) -> Result<Response, ApiError> {
    let (mut text, mut logprobs) = (String::new(), Vec::new());
    while let Some(event) = receiver.recv().await {
        match event {
            Event::Token {
                text: t,
                logprobs: l,
            } => {
                text.push_str(&t);
                logprobs.extend(l);
            }
            Event::Done {
                finish_reason,
                prompt_tokens,
                completion_tokens,
            } => {
                let tokens = (prompt_tokens, completion_tokens);
                let prompt = std::mem::take(&mut head.prompt);
                let openledger = record(head.admitted.take(), prompt, text.clone(), tokens).await;
                let logprobs = head.logprobs(&logprobs, &mut 0);
                let choice = head.kind.choice(&text, logprobs, Some(finish_reason));
                let body = Envelope {
                    usage: Some(Usage::new(prompt_tokens, completion_tokens)),
                    openledger,
                    ..head.envelope(false, vec![choice])
                };
                return Ok(Json(body).into_response());
            }
            Event::Failed(message) => {
                return Err(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    message,
                    "server_error",
                ));
            }
        }
    }
    Err(ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "the inference engine stopped",
        "server_error",
    ))
}

/// A frame's JSON.
fn json(value: &impl Serialize) -> String {
    serde_json::to_string(value).expect("API types serialize")
}

/// Server-sent events in OpenAI's chunk format, ending with `data: [DONE]`.
/// With a hook, a last chunk without choices carries the completion's `openledger` record.
fn stream(mut head: Head, mut receiver: UnboundedReceiver<Event>, include_usage: bool) -> Response {
    let (frames, out) = unbounded_channel::<Result<SseEvent, Infallible>>();
    tokio::spawn(async move {
        let send = |frame: String| frames.send(Ok(SseEvent::default().data(frame))).is_ok();
        let mut first = true;
        let mut text = String::new();
        let mut generated = 0;
        // Log-probabilities of the tokens whose text is not sent yet, and where they start.
        let (mut pending, mut offset) = (Vec::new(), 0);
        while let Some(event) = receiver.recv().await {
            let open = match event {
                Event::Token { text: t, logprobs } => {
                    // One event a token; a token that ends inside a character adds no text yet.
                    generated += 1;
                    pending.extend(logprobs);
                    if t.is_empty() {
                        continue;
                    }
                    text.push_str(&t);
                    let logprobs = head.logprobs(&std::mem::take(&mut pending), &mut offset);
                    let choice = head.kind.chunk_choice(&t, first, logprobs, None);
                    send(json(&head.envelope(true, vec![choice])))
                }
                Event::Done {
                    finish_reason,
                    prompt_tokens,
                    completion_tokens,
                } => {
                    let logprobs = (!pending.is_empty())
                        .then(|| head.logprobs(&pending, &mut offset))
                        .flatten();
                    let choice = head
                        .kind
                        .chunk_choice("", first, logprobs, Some(finish_reason));
                    send(json(&head.envelope(true, vec![choice])));
                    if include_usage {
                        send(json(&Envelope {
                            usage: Some(Usage::new(prompt_tokens, completion_tokens)),
                            ..head.envelope(true, Vec::new())
                        }));
                    }
                    let tokens = (prompt_tokens, completion_tokens);
                    let prompt = std::mem::take(&mut head.prompt);
                    let admitted = head.admitted.take();
                    if let Some(record) = record(admitted, prompt, text, tokens).await {
                        send(json(&Envelope {
                            openledger: Some(record),
                            ..head.envelope(true, Vec::new())
                        }));
                    }
                    break;
                }
                Event::Failed(message) => {
                    let error =
                        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message, "server_error");
                    send(json(&error.body()));
                    break;
                }
            };
            first = false;
            if !open {
                // The client went away: dropping the receiver cancels the sequence, and what
                // was generated (and sent) until then is recorded, so it is paid for.
                drop(receiver);
                let tokens = (head.prompt_tokens, generated);
                record(
                    head.admitted.take(),
                    std::mem::take(&mut head.prompt),
                    text,
                    tokens,
                )
                .await;
                return;
            }
        }
        let _ = frames.send(Ok(SseEvent::default().data("[DONE]")));
    });
    Sse::new(UnboundedReceiverStream::new(out)).into_response()
}
