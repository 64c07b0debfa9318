//! The scheduler: one thread owns the base model and runs continuous batching over every request,
//! whatever its adapter.
//!
//! Each step it admits waiting requests whose adapter is loaded (up to `max_batch` sequences),
//! starts loading cold adapters on their own threads (the batch keeps running meanwhile), gives
//! prompts at most `prefill_chunk` tokens of the step so that long prompts do not starve the
//! decodes, orders the batch by adapter so that sequences sharing one share its products, runs
//! [`batch::step_in_halves`] once and hands each sequence's logits to its [`Decoder`] on the
//! worker that computed them.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openledger_ml::chat::ChatFormat;
use openledger_ml::generate::{Decoder, FinishReason, GenerateOptions, TokenLogprob};
use openledger_ml::llama::BatchSeq;
use openledger_ml::tokenizer::Tokenizer;
use openledger_ml::{Adapter, Device, KvCache, Llama, LoraSet, ModelConfig};
use tokio::sync::mpsc::UnboundedSender;

use crate::adapters::{AdapterCache, CacheLimits, Registry, Stamp};
use crate::batch;
use crate::metrics::Metrics;

/// How the engine batches and caches.
#[derive(Clone, Copy, Debug)]
pub struct EngineConfig {
    /// Most sequences in one step.
    pub max_batch: usize,
    /// Most requests waiting for a place; more are refused as overload.
    pub queue: usize,
    /// Capacity of the adapter cache.
    pub cache: CacheLimits,
    /// Most prompt tokens prefilled in one step (decodes always run).
    pub prefill_chunk: usize,
}

impl Default for EngineConfig {
    /// `openledger serve`'s defaults: 32 sequences a step, 256 waiting, 64 adapters or 1 GiB
    /// of them loaded, 256 prompt tokens prefilled a step.
    fn default() -> Self {
        Self {
            max_batch: 32,
            queue: 256,
            cache: CacheLimits {
                adapters: 64,
                bytes: 1 << 30,
            },
            prefill_chunk: 256,
        }
    }
}

/// A generation to run: its adapter (`None` for the base model), prompt ids and sampling, and
/// where its events go.
#[derive(Debug)]
pub struct Request {
    /// Adapter id, or `None` for the base model.
    pub adapter: Option<String>,
    /// Prompt token ids (see [`openledger_ml::generate::encode_prompt`]).
    pub prompt: Vec<u32>,
    /// Sampling settings.
    pub options: GenerateOptions,
    /// Receives the request's text as it is generated, then its end.
    pub events: UnboundedSender<Event>,
    /// When the request arrived, for time to first token.
    pub arrived: Instant,
}

/// What a request hears from the engine.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// One more generated token: the text it settles (empty while a character it starts is
    /// unfinished or the text could still become a stop sequence), and, when the request asked
    /// for them, the log-probabilities of the tokens that text is made of.
    Token {
        /// The text settled by this token.
        text: String,
        /// The log-probabilities of the tokens of `text`.
        logprobs: Vec<TokenLogprob>,
    },
    /// Generation ended.
    Done {
        /// Why it ended.
        finish_reason: FinishReason,
        /// Prompt tokens, the start token included.
        prompt_tokens: usize,
        /// Generated tokens.
        completion_tokens: usize,
    },
    /// The request failed (its adapter would not load, say); others are unaffected.
    Failed(String),
}

/// Why a request was not queued.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SubmitError {
    /// The queue is full.
    #[error("the server is overloaded: {0} requests are already waiting; retry later")]
    Overloaded(usize),
    /// The engine thread has ended.
    #[error("the inference engine has stopped")]
    Stopped,
}

enum Message {
    Request(Request),
    Loaded(String, Result<(Arc<LoraSet>, Option<Stamp>), String>),
    /// The engine handle was dropped: the thread ends (its loaders hold senders too).
    Stop,
}

/// A handle on the engine thread; cheap to share behind an `Arc`.
pub struct Engine {
    sender: Sender<Message>,
    queued: Arc<AtomicUsize>,
    config: EngineConfig,
    metrics: Arc<Metrics>,
    model: Arc<Llama>,
    tokenizer: Arc<Tokenizer>,
    chat: ChatFormat,
    registry: Arc<Mutex<Registry>>,
}

impl Engine {
    /// Starts the engine thread over `model`, with the adapters of `registry`.
    pub fn start(
        model: Llama,
        tokenizer: Tokenizer,
        registry: Registry,
        config: EngineConfig,
    ) -> Self {
        let (sender, receiver) = channel();
        let engine = Self {
            sender: sender.clone(),
            queued: Arc::default(),
            config,
            metrics: Arc::default(),
            model: Arc::new(model),
            tokenizer: Arc::new(tokenizer),
            chat: ChatFormat::QuestionAnswer,
            registry: Arc::new(Mutex::new(registry)),
        };
        let scheduler = Scheduler {
            model: engine.model.clone(),
            tokenizer: engine.tokenizer.clone(),
            registry: engine.registry.clone(),
            metrics: engine.metrics.clone(),
            queued: engine.queued.clone(),
            config,
            loader: sender,
            cache: AdapterCache::new(config.cache),
            waiting: VecDeque::new(),
            loading: HashSet::new(),
            fresh: HashMap::new(),
            stamps: HashMap::new(),
            running: Vec::new(),
            window: (Instant::now(), 0),
        };
        std::thread::Builder::new()
            .name("openlora-engine".into())
            .spawn(move || scheduler.run(receiver))
            .expect("spawn the engine thread");
        engine
    }

    /// Loads the base checkpoint in `base` (a converted GGUF file's in its own quantization)
    /// and starts the engine on it with the adapters of `registry`; returns it with the id the
    /// base model answers to (its directory's name).
    pub fn from_checkpoint(
        base: &std::path::Path,
        registry: Registry,
        config: EngineConfig,
    ) -> openledger_ml::Result<(Self, String)> {
        use openledger_ml::checkpoint;
        let model = openledger_ml::gguf::load_quantized(base, None)?.for_inference()?;
        let tok = openledger_ml::tokenizer::load(&base.join(checkpoint::TOKENIZER_FILE))?;
        let chat = ChatFormat::of_checkpoint(base)?;
        let base_id = base
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "base".into());
        let mut engine = Self::start(model, tok, registry, config);
        engine.chat = chat;
        Ok((engine, base_id))
    }

    /// Queues `request`, or refuses it when the queue is full.
    pub fn submit(&self, request: Request) -> Result<(), SubmitError> {
        let queued = self.queued.fetch_add(1, Relaxed);
        if queued >= self.config.queue {
            self.queued.fetch_sub(1, Relaxed);
            self.metrics.rejected.fetch_add(1, Relaxed);
            return Err(SubmitError::Overloaded(queued));
        }
        self.metrics.requests.fetch_add(1, Relaxed);
        let sent = self.sender.send(Message::Request(request));
        sent.map_err(|_| SubmitError::Stopped)
    }

    /// The base model.
    pub fn model(&self) -> &Llama {
        &self.model
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Arc<Tokenizer> {
        &self.tokenizer
    }

    /// How the base model writes a conversation: its chat template, or the dev base model's
    /// `Q: … A:`.
    pub fn chat(&self) -> &ChatFormat {
        &self.chat
    }

    /// The engine's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Whether adapter `id` is registered, reading the folder again if it was not (so adapters
    /// saved after the server started are found).
    pub fn has_adapter(&self, id: &str) -> bool {
        let mut registry = self.registry.lock().expect("registry lock");
        if registry.get(id).is_some() {
            return true;
        }
        registry.rescan().is_ok() && registry.get(id).is_some()
    }

    /// Every registered adapter id.
    pub fn adapter_ids(&self) -> Vec<String> {
        let registry = self.registry.lock().expect("registry lock");
        registry.ids().map(str::to_owned).collect()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.sender.send(Message::Stop);
    }
}

struct Waiting {
    request: Request,
    counted: bool,
}

struct Running {
    request: Request,
    adapter: Option<Arc<LoraSet>>,
    cache: KvCache,
    decoder: Decoder,
    prefilled: usize,
    done: bool,
}

enum Work {
    Skip,
    Prefill(std::ops::Range<usize>),
    Decode,
}

struct Scheduler {
    model: Arc<Llama>,
    tokenizer: Arc<Tokenizer>,
    registry: Arc<Mutex<Registry>>,
    metrics: Arc<Metrics>,
    queued: Arc<AtomicUsize>,
    config: EngineConfig,
    loader: Sender<Message>,
    cache: AdapterCache,
    waiting: VecDeque<Waiting>,
    loading: HashSet<String>,
    /// Adapters loaded but not cached (larger than the cache), kept while a request waits on them.
    fresh: HashMap<String, Arc<LoraSet>>,
    /// The files each cached adapter was loaded from, to notice when they change.
    stamps: HashMap<String, Option<Stamp>>,
    running: Vec<Running>,
    /// Start of the current tokens-per-second window and the tokens generated in it.
    window: (Instant, u64),
}

impl Scheduler {
    fn run(mut self, receiver: Receiver<Message>) {
        loop {
            while let Ok(message) = receiver.try_recv() {
                if !self.handle(message) {
                    return;
                }
            }
            self.admit();
            self.publish();
            if self.running.is_empty() {
                self.metrics.tokens_per_second_milli.store(0, Relaxed);
                if !receiver.recv().is_ok_and(|message| self.handle(message)) {
                    return;
                }
                self.window = (Instant::now(), 0);
                continue;
            }
            self.step();
        }
    }

    /// Takes in one message; false when the engine is to stop.
    fn handle(&mut self, message: Message) -> bool {
        match message {
            Message::Stop => return false,
            Message::Request(request) => self.waiting.push_back(Waiting {
                request,
                counted: false,
            }),
            Message::Loaded(id, Ok((adapter, stamp))) => {
                self.loading.remove(&id);
                self.stamps.insert(id.clone(), stamp);
                let evicted = self.cache.insert(&id, adapter.clone());
                self.metrics
                    .cache_evictions
                    .fetch_add(evicted as u64, Relaxed);
                self.fresh.insert(id, adapter);
            }
            Message::Loaded(id, Err(error)) => {
                self.loading.remove(&id);
                let failed = format!("adapter {id} could not be loaded: {error}");
                let (bad, rest) = std::mem::take(&mut self.waiting)
                    .into_iter()
                    .partition(|w| w.request.adapter.as_deref() == Some(id.as_str()));
                self.waiting = rest;
                for w in bad {
                    self.queued.fetch_sub(1, Relaxed);
                    let _ = w.request.events.send(Event::Failed(failed.clone()));
                }
            }
        }
        true
    }

    /// Moves waiting requests whose adapter is at hand into the batch, in arrival order, and
    /// starts loading the adapters of the others.
    fn admit(&mut self) {
        let mut i = 0;
        while i < self.waiting.len() && self.running.len() < self.config.max_batch {
            if !self.waiting[i].counted
                && let Some(id) = self.waiting[i].request.adapter.clone()
            {
                self.forget_if_changed(&id);
            }
            let waiting = &mut self.waiting[i];
            let adapter = match &waiting.request.adapter {
                None => Some(None),
                Some(id) => self
                    .cache
                    .get(id)
                    .or_else(|| self.fresh.get(id).cloned())
                    .map(Some),
            };
            if !waiting.counted {
                waiting.counted = true;
                match adapter {
                    Some(Some(_)) => self.metrics.cache_hits.fetch_add(1, Relaxed),
                    None => self.metrics.cache_misses.fetch_add(1, Relaxed),
                    Some(None) => 0, // the base model: no adapter to look up
                };
            }
            match adapter {
                Some(adapter) => {
                    let waiting = self.waiting.remove(i).expect("index in range");
                    self.start(waiting.request, adapter);
                }
                None => {
                    let id = waiting
                        .request
                        .adapter
                        .clone()
                        .expect("a cold adapter has an id");
                    self.load(id);
                    i += 1;
                }
            }
        }
        let waiting = &self.waiting;
        self.fresh.retain(|id, _| {
            waiting
                .iter()
                .any(|w| w.request.adapter.as_deref() == Some(id))
        });
    }

    /// Drops the loaded copy of adapter `id` if its files changed since it was loaded, so that
    /// a request arriving after the change is served the new one.
    fn forget_if_changed(&mut self, id: &str) {
        let Some(loaded) = self.stamps.get(id) else {
            return;
        };
        let now = self
            .registry
            .lock()
            .expect("registry lock")
            .get(id)
            .and_then(Stamp::of);
        if *loaded != now {
            self.cache.remove(id);
            self.fresh.remove(id);
            self.stamps.remove(id);
        }
    }

    fn load(&mut self, id: String) {
        if !self.loading.insert(id.clone()) {
            return;
        }
        let path: Option<PathBuf> = self
            .registry
            .lock()
            .expect("registry lock")
            .get(&id)
            .map(Into::into);
        let config: ModelConfig = self.model.config().clone();
        let sender = self.loader.clone();
        std::thread::spawn(move || {
            let loaded = match path {
                Some(path) => {
                    // Taken first: a change while loading makes the copy stale, not current.
                    let stamp = Stamp::of(&path);
                    Adapter::load(&path, &config, &Device::Cpu)
                        .and_then(|a| a.to_set())
                        .map(|set| (Arc::new(set), stamp))
                        .map_err(|e| e.to_string())
                }
                None => Err("it is no longer registered".to_string()),
            };
            let _ = sender.send(Message::Loaded(id, loaded));
        });
    }

    fn start(&mut self, request: Request, adapter: Option<Arc<LoraSet>>) {
        self.queued.fetch_sub(1, Relaxed);
        let room = self
            .model
            .config()
            .max_position_embeddings
            .saturating_sub(request.prompt.len());
        match Decoder::new(&self.tokenizer, request.options.clone(), room) {
            Err(e) => {
                let _ = request.events.send(Event::Failed(e.to_string()));
            }
            Ok(decoder) if decoder.finish_reason().is_some() => {
                let _ = request.events.send(done(&decoder, request.prompt.len()));
            }
            Ok(decoder) => self.running.push(Running {
                request,
                adapter,
                cache: KvCache::default(),
                decoder,
                prefilled: 0,
                done: false,
            }),
        }
    }

    fn plan(&self) -> Vec<Work> {
        let mut budget = self.config.prefill_chunk.max(1);
        self.running
            .iter()
            .map(|r| {
                let left = r.request.prompt.len() - r.prefilled;
                if left == 0 {
                    Work::Decode
                } else if budget == 0 {
                    Work::Skip
                } else {
                    let n = left.min(budget);
                    budget -= n;
                    Work::Prefill(r.prefilled..r.prefilled + n)
                }
            })
            .collect()
    }

    fn step(&mut self) {
        // Sequences of one adapter side by side, so that its update is one product per layer.
        self.running
            .sort_by(|a, b| a.request.adapter.cmp(&b.request.adapter));
        let plan = self.plan();
        let last: Vec<[u32; 1]> = self
            .running
            .iter()
            .map(|r| [r.decoder.tokens().last().copied().unwrap_or_default()])
            .collect();
        let (mut seqs, mut turns) = (Vec::new(), Vec::new());
        for (i, (r, work)) in self.running.iter_mut().zip(&plan).enumerate() {
            let Running {
                request,
                adapter,
                cache,
                decoder,
                prefilled,
                done,
            } = r;
            let request = &*request;
            let (tokens, prefill) = match work {
                Work::Skip => continue,
                Work::Prefill(range) => (&request.prompt[range.clone()], Some(range.end)),
                Work::Decode => (&last[i][..], None),
            };
            seqs.push(BatchSeq {
                tokens,
                cache,
                adapter: adapter.as_deref(),
            });
            let turn = Turn {
                request,
                decoder,
                prefilled,
                prefill,
                done,
            };
            turns.push(Mutex::new(turn));
        }
        let generated = AtomicU64::new(0);
        let (metrics, tokenizer) = (&*self.metrics, &*self.tokenizer);
        let outcome = batch::step_in_halves(&self.model, &mut seqs, &|k, logits| {
            let mut turn = turns[k].lock().expect("each turn is taken once");
            generated.fetch_add(turn.advance(metrics, tokenizer, logits), Relaxed);
        });
        drop(seqs);
        if let Err(e) = outcome {
            for turn in turns {
                let turn = turn.into_inner().expect("each turn is taken once");
                let _ = turn.request.events.send(Event::Failed(e.to_string()));
                *turn.done = true;
            }
        }
        self.window.1 += generated.into_inner();
        self.running
            .retain(|r| !r.done && !r.request.events.is_closed());
    }

    /// Updates the gauges.
    fn publish(&mut self) {
        let m = &self.metrics;
        m.queue_depth.store(self.waiting.len() as u64, Relaxed);
        m.active.store(self.running.len() as u64, Relaxed);
        m.cached_adapters.store(self.cache.len() as u64, Relaxed);
        m.cached_bytes.store(self.cache.bytes() as u64, Relaxed);
        let elapsed = self.window.0.elapsed();
        if elapsed >= Duration::from_secs(1) {
            let rate = self.window.1 as f64 / elapsed.as_secs_f64();
            m.tokens_per_second_milli
                .store((rate * 1000.0) as u64, Relaxed);
            self.window = (Instant::now(), 0);
        }
    }
}

/// One running sequence's part in a step, taken up with its logits on the worker that computed
/// them ([`batch::step_in_halves`]).
struct Turn<'a> {
    request: &'a Request,
    decoder: &'a mut Decoder,
    prefilled: &'a mut usize,
    /// Where the prompt's prefill stands after this step, if the step prefilled.
    prefill: Option<usize>,
    done: &'a mut bool,
}

impl Turn<'_> {
    /// Records the step's prefill; once the prompt is in, samples the next token from `logits`
    /// and sends its text. Returns the number of tokens generated.
    fn advance(&mut self, metrics: &Metrics, tokenizer: &Tokenizer, logits: &[f32]) -> u64 {
        if let Some(end) = self.prefill.take() {
            let added = end - *self.prefilled;
            metrics.prompt_tokens.fetch_add(added as u64, Relaxed);
            *self.prefilled = end;
        }
        let (request, decoder) = (self.request, &mut *self.decoder);
        if *self.prefilled < request.prompt.len() {
            return 0;
        }
        if decoder.tokens().is_empty() {
            metrics.observe_ttft(request.arrived.elapsed());
        }
        let produced = decoder.tokens().len();
        match decoder.step(tokenizer, logits) {
            Ok(text) => {
                // One event a token, text or not, so a listener can count what was generated.
                let logprobs = decoder.take_logprobs();
                let _ = request.events.send(Event::Token { text, logprobs });
                if decoder.finish_reason().is_some() {
                    let _ = request.events.send(done(decoder, request.prompt.len()));
                    *self.done = true;
                }
            }
            Err(e) => {
                let _ = request.events.send(Event::Failed(e.to_string()));
                *self.done = true;
            }
        }
        let new = (decoder.tokens().len() - produced) as u64;
        metrics.generated_tokens.fetch_add(new, Relaxed);
        new
    }
}

fn done(decoder: &Decoder, prompt_tokens: usize) -> Event {
    Event::Done {
        finish_reason: decoder.finish_reason().unwrap_or(FinishReason::Length),
        prompt_tokens,
        completion_tokens: decoder.tokens().len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openledger_ml::checkpoint::random_weights;
    use tokio::sync::mpsc::unbounded_channel;

    fn engine(max_batch: usize, queue: usize, prefill_chunk: usize) -> Engine {
        engine_over(Registry::default(), max_batch, queue, prefill_chunk)
    }

    fn engine_over(
        registry: Registry,
        max_batch: usize,
        queue: usize,
        prefill_chunk: usize,
    ) -> Engine {
        let config = ModelConfig::llama(300, 32, 2, 4, 2);
        let model = Llama::new(
            config.clone(),
            &random_weights(&config, 1, &Device::Cpu).unwrap(),
        )
        .unwrap();
        let tokenizer =
            openledger_ml::tokenizer::train(["some text to learn from"].into_iter(), 300).unwrap();
        let cache = CacheLimits {
            adapters: 1,
            bytes: 1 << 20,
        };
        Engine::start(
            model,
            tokenizer,
            registry,
            EngineConfig {
                max_batch,
                queue,
                cache,
                prefill_chunk,
            },
        )
    }

    fn request(
        prompt: Vec<u32>,
        max_tokens: usize,
    ) -> (Request, tokio::sync::mpsc::UnboundedReceiver<Event>) {
        let (events, receiver) = unbounded_channel();
        let options = GenerateOptions {
            max_tokens,
            temperature: 0.0,
            ..Default::default()
        };
        let request = Request {
            adapter: None,
            prompt,
            options,
            events,
            arrived: Instant::now(),
        };
        (request, receiver)
    }

    #[test]
    fn a_full_queue_refuses_requests() {
        // With no room in the batch nothing leaves the queue, whatever the timing.
        let engine = engine(0, 2, 4);
        let mut receivers = Vec::new();
        for _ in 0..2 {
            let (r, rx) = request(vec![1, 2], 3);
            engine.submit(r).unwrap();
            receivers.push(rx);
        }
        let (r, _rx) = request(vec![1, 2], 3);
        assert_eq!(engine.submit(r), Err(SubmitError::Overloaded(2)));
        assert_eq!(engine.metrics().rejected.load(Relaxed), 1);
    }

    #[test]
    fn prompts_fed_in_chunks_generate_what_whole_prompts_do() {
        // Events of a 30-token and a 2-token prompt, run together.
        let run = |prefill_chunk| {
            let engine = engine(4, 8, prefill_chunk);
            let long: Vec<u32> = (0..30).map(|i| i % 50).collect();
            let (a, rx_a) = request(long, 5);
            let (b, rx_b) = request(vec![3, 4], 5);
            engine.submit(a).unwrap();
            engine.submit(b).unwrap();
            let events: Vec<Vec<Event>> = [rx_a, rx_b]
                .into_iter()
                .map(|mut rx| std::iter::from_fn(|| rx.blocking_recv()).collect())
                .collect();
            assert_eq!(engine.metrics().prompt_tokens.load(Relaxed), 32);
            events
        };
        let chunked = run(4);
        for (events, prompt) in chunked.iter().zip([30, 2]) {
            assert_eq!(
                events.last(),
                Some(&Event::Done {
                    finish_reason: FinishReason::Length,
                    prompt_tokens: prompt,
                    completion_tokens: 5
                })
            );
        }
        assert_eq!(chunked, run(64));
    }

    #[test]
    fn an_adapter_whose_folder_is_replaced_is_loaded_again() {
        let root = tempfile::tempdir().unwrap();
        let save = |seed: u64, dir: &std::path::Path| {
            let config = ModelConfig::llama(300, 32, 2, 4, 2);
            let lora = openledger_ml::LoraConfig::new(4, 8.0, "q,v").unwrap();
            let adapter = Adapter::init(&config, lora, seed, &Device::Cpu).unwrap();
            adapter.save(dir, "base").unwrap();
        };
        save(1, &root.path().join("a"));
        let engine = engine_over(Registry::scan(root.path()).unwrap(), 4, 8, 64);
        let misses = || {
            let (mut r, mut rx) = request(vec![1, 2], 2);
            r.adapter = Some("a".into());
            engine.submit(r).unwrap();
            while rx.blocking_recv().is_some() {}
            engine.metrics().cache_misses.load(Relaxed)
        };
        assert_eq!((misses(), misses()), (1, 1));
        // Replaced whole, as a redeployed model's adapter is: the next request loads it again.
        save(2, &root.path().join(".next"));
        std::fs::remove_dir_all(root.path().join("a")).unwrap();
        std::fs::rename(root.path().join(".next"), root.path().join("a")).unwrap();
        assert_eq!((misses(), misses()), (2, 2));
    }
}
