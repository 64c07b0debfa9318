//! Text generation with a KV cache: temperature and nucleus (top-p) sampling, stop sequences, and
//! a seed that makes sampling repeatable.

use candle_core::{DType, Tensor};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

use crate::error::{MlError, Result};
use crate::fused::{exp, max, sum, vectorized};
use crate::llama::{KvCache, Llama};
use crate::tokenizer::{decode, encode, end_of_text, special_ids};

/// Sampling settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerateOptions {
    /// Most tokens to generate.
    pub max_tokens: usize,
    /// Softmax temperature; 0 picks the most likely token every time.
    pub temperature: f64,
    /// Nucleus sampling: draw from the smallest set of tokens whose probability reaches this.
    pub top_p: f64,
    /// Generation stops before the first of these strings appears.
    pub stop: Vec<String>,
    /// Seed of the sampler.
    pub seed: u64,
    /// Report each generated token's log-probability and this many of the most likely tokens
    /// at its place (see [`TokenLogprob`]); `None` reports nothing.
    #[serde(default)]
    pub logprobs: Option<usize>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            max_tokens: 64,
            temperature: 0.8,
            top_p: 0.95,
            stop: Vec::new(),
            seed: 0,
            logprobs: None,
        }
    }
}

/// A generated token's log-probability, and the most likely tokens at its place with theirs:
/// under the model's own distribution (its softmax), before temperature and top-p reshape it for
/// sampling, as OpenAI reports them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenLogprob {
    /// The token generated.
    pub token: u32,
    /// Its natural log-probability.
    pub logprob: f32,
    /// The most likely tokens and their log-probabilities, most likely first.
    pub top: Vec<(u32, f32)>,
}

impl TokenLogprob {
    /// `token`'s entry under `logits`, with the `top` most likely tokens.
    fn of(logits: &[f32], token: u32, top: usize) -> Self {
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let sum: f64 = logits.iter().map(|&l| f64::from(l - max).exp()).sum();
        let norm = max + sum.ln() as f32;
        let mut ranked: Vec<(u32, f32)> = (0..).zip(logits.iter().copied()).collect();
        let top = top.min(ranked.len());
        let order = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if top > 0 && top < ranked.len() {
            ranked.select_nth_unstable_by(top - 1, order);
        }
        ranked.truncate(top);
        ranked.sort_unstable_by(order);
        Self {
            token,
            logprob: logits[token as usize] - norm,
            top: ranked.into_iter().map(|(t, l)| (t, l - norm)).collect(),
        }
    }
}

/// Why generation ended, in OpenAI's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FinishReason {
    /// The model ended the text or a stop sequence appeared.
    Stop,
    /// `max_tokens` or the context length was reached.
    Length,
}

/// A finished generation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Generation {
    /// The generated text, without the prompt and without any stop sequence.
    pub text: String,
    /// The generated token ids.
    pub tokens: Vec<u32>,
    /// Tokens of the prompt, the start token included.
    pub prompt_tokens: usize,
    /// Why it ended.
    pub finish_reason: FinishReason,
}

/// Generates a continuation of `prompt`, passing each new piece of text to `on_text` as it is
/// decided (text held back while it could still become a stop sequence is passed later).
pub fn generate(
    model: &Llama,
    tokenizer: &Tokenizer,
    prompt: &str,
    options: &GenerateOptions,
    on_text: &mut dyn FnMut(&str),
) -> Result<Generation> {
    let prompt_ids = encode_prompt(model, tokenizer, prompt)?;
    generate_ids(model, tokenizer, &prompt_ids, options, on_text)
}

/// [`generate`] from prompt token ids (see [`encode_prompt`]), one sequence at a time.
pub fn generate_ids(
    model: &Llama,
    tokenizer: &Tokenizer,
    prompt_ids: &[u32],
    options: &GenerateOptions,
    on_text: &mut dyn FnMut(&str),
) -> Result<Generation> {
    let room = model
        .config()
        .max_position_embeddings
        .saturating_sub(prompt_ids.len());
    let mut decoder = Decoder::new(tokenizer, options.clone(), room)?;
    let mut cache = KvCache::default();
    let mut input = prompt_ids.to_vec();
    while decoder.finish_reason().is_none() {
        let logits = model
            .forward_cached(
                &Tensor::new(input.as_slice(), model.device())?.unsqueeze(0)?,
                &mut cache,
            )?
            .squeeze(0)?
            .to_dtype(DType::F32)?;
        let text = decoder.step(tokenizer, &logits.to_vec1::<f32>()?)?;
        if !text.is_empty() {
            on_text(&text);
        }
        input = decoder.tokens().last().copied().into_iter().collect();
    }
    Ok(decoder.into_generation(prompt_ids.len()))
}

/// The token ids a generation starts from: the end-of-text token (the start of a document in
/// training) and the prompt's, refused when outside the vocabulary or filling the context.
pub fn encode_prompt(model: &Llama, tokenizer: &Tokenizer, prompt: &str) -> Result<Vec<u32>> {
    let mut ids: Vec<u32> = end_of_text(tokenizer).into_iter().collect();
    ids.extend(encode(tokenizer, prompt)?);
    let vocab = model.config().vocab_size;
    if let Some(bad) = ids.iter().find(|&&t| t as usize >= vocab) {
        return Err(MlError::Input(format!(
            "prompt token {bad} is outside the model's vocabulary of {vocab}"
        )));
    }
    let context = model.config().max_position_embeddings;
    if ids.len() >= context {
        return Err(MlError::ContextFull {
            tokens: ids.len(),
            context,
        });
    }
    Ok(ids)
}

/// The decoding side of one sequence: samples each next token from the model's logits, turns the
/// tokens into text, watches for stop sequences and says when and why generation ends. The model
/// side (one sequence or a batch of them) is the caller's.
pub struct Decoder {
    options: GenerateOptions,
    rng: rand_chacha::ChaCha8Rng,
    /// The special tokens, any of which ends the text.
    ends: Vec<u32>,
    limit: usize,
    tokens: Vec<u32>,
    /// The text of `tokens`, kept as a whole decode would give it.
    text: String,
    /// Bytes of `text` made of whole characters, which later tokens do not change.
    complete: usize,
    /// The tokens behind `text[..complete]` are `tokens[..read]`; those from `context` on are
    /// decoded again with each new token, as context for a decoder that renders a token
    /// differently at the start of a text.
    context: usize,
    read: usize,
    emitted: usize,
    finish: Option<FinishReason>,
    /// Log-probabilities of tokens whose text is still held back, with where their text starts
    /// in `text`, when the options ask for them.
    held: std::collections::VecDeque<(usize, TokenLogprob)>,
    /// Those of tokens whose text has been handed out, not yet taken.
    settled: Vec<TokenLogprob>,
}

impl Decoder {
    /// A decoder that generates at most `room` tokens (what the context leaves after the prompt).
    pub fn new(tokenizer: &Tokenizer, options: GenerateOptions, room: usize) -> Result<Self> {
        validate(&options)?;
        let limit = options.max_tokens.min(room);
        Ok(Self {
            rng: rand_chacha::ChaCha8Rng::seed_from_u64(options.seed),
            ends: special_ids(tokenizer),
            limit,
            tokens: Vec::new(),
            text: String::new(),
            complete: 0,
            context: 0,
            read: 0,
            emitted: 0,
            finish: (limit == 0).then_some(FinishReason::Length),
            held: Default::default(),
            settled: Vec::new(),
            options,
        })
    }

    /// Samples the next token from `logits` and returns the text it settles (possibly none, or
    /// text held back from earlier steps); once finished, the rest of the text.
    pub fn step(&mut self, tokenizer: &Tokenizer, logits: &[f32]) -> Result<String> {
        let text = self.advance(tokenizer, logits)?;
        // A token's log-probabilities go out with the first of its text; those of tokens a stop
        // sequence cut away entirely never do.
        while let Some((start, _)) = self.held.front()
            && *start < self.emitted
        {
            let (_, settled) = self.held.pop_front().expect("a front entry");
            self.settled.push(settled);
        }
        if self.finish.is_some() {
            self.held.clear();
        }
        Ok(text)
    }

    fn advance(&mut self, tokenizer: &Tokenizer, logits: &[f32]) -> Result<String> {
        if self.finish.is_some() {
            return Ok(String::new());
        }
        let next = sample(logits, &self.options, &mut self.rng);
        if self.ends.binary_search(&next).is_ok() {
            self.finish = Some(FinishReason::Stop);
            return Ok(self.flush());
        }
        if let Some(top) = self.options.logprobs {
            let entry = TokenLogprob::of(logits, next, top);
            self.held.push_back((self.complete, entry));
        }
        self.push(tokenizer, next)?;
        let stop = self.options.stop.iter();
        if let Some(at) = stop.filter_map(|s| self.text.find(s.as_str())).min() {
            self.text.truncate(at);
            self.finish = Some(FinishReason::Stop);
            return Ok(self.flush());
        }
        if self.tokens.len() >= self.limit {
            self.finish = Some(FinishReason::Length);
            return Ok(self.flush());
        }
        let safe = settled_prefix(&self.text, &self.options.stop).max(self.emitted);
        let settled = self.text[self.emitted..safe].to_string();
        self.emitted = safe;
        Ok(settled)
    }

    /// Adds a token and its text. Decoding every token again at every step would cost a
    /// generation time quadratic in its length (a 1,681-token one spent 194 ms decoding, now
    /// 52 ms); only the tokens since the last complete character, with the chunk before them as
    /// context, are decoded instead. A token that ends inside a character (a byte-level token
    /// holding part of its UTF-8 bytes) stays pending, its replacement character at the end of
    /// `text`, until the character is whole.
    fn push(&mut self, tokenizer: &Tokenizer, token: u32) -> Result<()> {
        self.tokens.push(token);
        let before = decode(tokenizer, &self.tokens[self.context..self.read])?;
        let window = decode(tokenizer, &self.tokens[self.context..])?;
        let Some(new) = window.strip_prefix(before.as_str()) else {
            // A decoder that rewrote the context: decode it all, and start again from there.
            self.text = decode(tokenizer, &self.tokens)?;
            (self.complete, self.context, self.read) = (0, 0, 0);
            return Ok(());
        };
        self.text.truncate(self.complete);
        self.text.push_str(new);
        if !new.is_empty() && !new.ends_with('\u{FFFD}') {
            self.complete = self.text.len();
            (self.context, self.read) = (self.read, self.tokens.len());
        }
        Ok(())
    }

    fn flush(&mut self) -> String {
        let rest = self
            .text
            .get(self.emitted..)
            .unwrap_or_default()
            .to_string();
        self.emitted = self.text.len();
        rest
    }

    /// The log-probabilities of the tokens whose text the steps so far handed out, each once,
    /// in order: with the text they make, so that a stream's chunk carries its own tokens. The
    /// end-of-text token that ends a generation is not part of it and has none, nor has a token
    /// that a stop sequence cut away whole.
    pub fn take_logprobs(&mut self) -> Vec<TokenLogprob> {
        std::mem::take(&mut self.settled)
    }

    /// Why generation ended, once it has.
    pub fn finish_reason(&self) -> Option<FinishReason> {
        self.finish
    }

    /// The tokens generated so far.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// The finished generation, for a prompt of `prompt_tokens` tokens.
    pub fn into_generation(self, prompt_tokens: usize) -> Generation {
        Generation {
            text: self.text,
            tokens: self.tokens,
            prompt_tokens,
            finish_reason: self.finish.unwrap_or(FinishReason::Length),
        }
    }
}

fn validate(options: &GenerateOptions) -> Result<()> {
    if !options.temperature.is_finite() || options.temperature < 0.0 {
        return Err(MlError::Input(format!(
            "temperature {} must be a finite number, zero or more",
            options.temperature
        )));
    }
    if options.stop.iter().any(String::is_empty) {
        return Err(MlError::Input("a stop sequence must not be empty".into()));
    }
    if options.top_p.is_nan() || options.top_p <= 0.0 || options.top_p > 1.0 {
        return Err(MlError::Input(format!(
            "top_p {} must be in (0, 1]",
            options.top_p
        )));
    }
    Ok(())
}

/// Length of the prefix of `text` that no continuation can turn into a stop sequence, cut at a
/// character boundary and before an incomplete character (U+FFFD from a split byte sequence).
fn settled_prefix(text: &str, stop: &[String]) -> usize {
    let mut end = text.find('\u{FFFD}').unwrap_or(text.len());
    for s in stop {
        for k in (1..s.len()).rev() {
            if s.is_char_boundary(k) && text[..end].ends_with(&s[..k]) {
                end -= k;
                break;
            }
        }
    }
    end
}

/// Picks the next token: greedy at temperature 0, else nucleus sampling.
fn sample(logits: &[f32], options: &GenerateOptions, rng: &mut impl Rng) -> u32 {
    let argmax = || {
        logits
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map_or(0, |(i, _)| i as u32)
    };
    if options.temperature == 0.0 {
        return argmax();
    }
    // Weights in f32 with a vectorized exp: this runs for every token of every sequence on the
    // serving engine's thread, between the batch's steps.
    let inverse_temperature = (1.0 / options.temperature) as f32;
    let mut weights = vec![0f32; logits.len()];
    vectorized(
        #[inline(always)]
        || {
            let max = max(logits);
            for (w, &l) in weights.iter_mut().zip(logits) {
                *w = exp((l - max) * inverse_temperature);
            }
        },
    );
    if options.top_p >= 1.0 {
        // Every token is in the nucleus, in id order.
        return draw(&weights, rng).map_or_else(argmax, |i| i as u32);
    }
    // The nucleus: most likely first (ties by token id, a total order), cut where the mass
    // reaches top_p.
    let mut nucleus: Vec<(u32, f32)> = (0..).zip(weights).collect();
    nucleus.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let total: f64 = nucleus.iter().map(|p| f64::from(p.1)).sum();
    let mut kept = 0.0;
    let cut = nucleus
        .iter()
        .position(|p| {
            kept += f64::from(p.1) / total;
            kept >= options.top_p
        })
        .map_or(nucleus.len(), |i| i + 1);
    let weights: Vec<f32> = nucleus[..cut].iter().map(|p| p.1).collect();
    draw(&weights, rng).map_or_else(argmax, |i| nucleus[i].0)
}

/// Draws an index with probability proportional to its weight; the last one when rounding leaves
/// the draw past the end, none when there are none. Blocks of weights are summed in vector lanes
/// first, so that finding the drawn one walks a few dozen block sums and then one block, not a
/// chain of thousands of dependent additions and subtractions (sampling from a 2,048-token
/// vocabulary took 5 µs a token, 2 µs now).
fn draw(weights: &[f32], rng: &mut impl Rng) -> Option<usize> {
    const BLOCK: usize = 64;
    let blocks: Vec<f64> = vectorized(
        #[inline(always)]
        || weights.chunks(BLOCK).map(|b| f64::from(sum(b))).collect(),
    );
    let mut draw = rng.random::<f64>() * blocks.iter().sum::<f64>();
    let start = blocks.iter().position(|&b| {
        let inside = draw <= b;
        if !inside {
            draw -= b;
        }
        inside
    });
    let start = start.map_or(weights.len(), |b| b * BLOCK);
    for (i, &w) in weights.iter().enumerate().skip(start) {
        draw -= f64::from(w);
        if draw <= 0.0 {
            return Some(i);
        }
    }
    weights.len().checked_sub(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_argmax_and_top_p_keeps_the_nucleus() {
        let logits = [0.0, 5.0, 4.9, -3.0];
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let greedy = GenerateOptions {
            temperature: 0.0,
            ..Default::default()
        };
        assert_eq!(sample(&logits, &greedy, &mut rng), 1);
        let narrow = GenerateOptions {
            temperature: 1.0,
            top_p: 0.5,
            ..Default::default()
        };
        assert!((0..50).all(|_| sample(&logits, &narrow, &mut rng) == 1));
        let wide = GenerateOptions {
            temperature: 1.0,
            top_p: 1.0,
            ..Default::default()
        };
        let drawn: std::collections::HashSet<u32> =
            (0..200).map(|_| sample(&logits, &wide, &mut rng)).collect();
        assert!(drawn.contains(&1) && drawn.contains(&2));
    }

    #[test]
    fn logprobs_are_the_softmax_of_the_logits_with_the_likeliest_first() {
        let logits = [1.0f32, 3.0, 3.0, -2.0, 0.5];
        let entry = TokenLogprob::of(&logits, 4, 3);
        let total: f32 = logits.iter().map(|l| l.exp()).sum();
        let want = |i: usize| (logits[i].exp() / total).ln();
        assert!((entry.logprob - want(4)).abs() < 1e-6);
        // Ties in the order of their ids, then the next most likely.
        let ids: Vec<u32> = entry.top.iter().map(|t| t.0).collect();
        assert_eq!(ids, [1, 2, 0]);
        assert!(
            entry
                .top
                .iter()
                .all(|&(t, l)| (l - want(t as usize)).abs() < 1e-6)
        );
        assert_eq!(TokenLogprob::of(&logits, 0, 0).top, []);
        assert_eq!(TokenLogprob::of(&logits, 0, 9).top.len(), logits.len());
    }

    #[test]
    fn a_decoder_reports_logprobs_of_the_tokens_of_its_text_only_when_asked() {
        let tokenizer =
            crate::tokenizer::train(["some text to learn from"].into_iter(), 300).unwrap();
        let ids = crate::tokenizer::encode(&tokenizer, "ab c").unwrap();
        let options = |logprobs, stop: &[&str]| GenerateOptions {
            temperature: 0.0,
            logprobs,
            stop: stop.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        // The text and the tokens reported, step by step, for a generation of `ids`.
        let run = |options: GenerateOptions, ids: &[u32]| {
            let mut decoder = Decoder::new(&tokenizer, options, 8).unwrap();
            let mut steps = Vec::new();
            for &next in ids {
                let mut logits = vec![0f32; tokenizer.get_vocab_size(true)];
                logits[next as usize] = 9.0;
                let text = decoder.step(&tokenizer, &logits).unwrap();
                let tokens: Vec<u32> = decoder.take_logprobs().iter().map(|e| e.token).collect();
                steps.push((text, tokens));
            }
            steps
        };
        assert!(run(options(None, &[]), &ids).iter().all(|s| s.1.is_empty()));
        // Each token with its own text; the end-of-text token (0) has none.
        let ended: Vec<u32> = ids.iter().copied().chain([0]).collect();
        let asked = run(options(Some(2), &[]), &ended);
        assert!(
            asked
                .iter()
                .all(|(text, tokens)| text.is_empty() == tokens.is_empty())
        );
        let reported: Vec<u32> = asked.iter().flat_map(|s| s.1.clone()).collect();
        assert_eq!(reported, ids);
        // A stop sequence: the tokens it cuts away are held back with their text, then dropped.
        let stopped = run(options(Some(0), &[" c"]), &ids);
        let text: String = stopped.iter().map(|s| s.0.as_str()).collect();
        let reported: Vec<u32> = stopped.iter().flat_map(|s| s.1.clone()).collect();
        assert_eq!(text, "ab");
        assert_eq!(
            reported,
            crate::tokenizer::encode(&tokenizer, "ab").unwrap()
        );
    }

    #[test]
    fn draws_follow_the_weights_across_blocks() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        // All the mass in one weight past the first blocks: always that one.
        let mut weights = vec![0f32; 200];
        weights[150] = 2.5;
        assert!((0..100).all(|_| draw(&weights, &mut rng) == Some(150)));
        // A quarter and three quarters, in different blocks; zero weights never drawn.
        weights[150] = 0.0;
        (weights[10], weights[190]) = (1.0, 3.0);
        let draws: Vec<usize> = (0..4000).filter_map(|_| draw(&weights, &mut rng)).collect();
        assert!(draws.iter().all(|&i| i == 10 || i == 190));
        let share = draws.iter().filter(|&&i| i == 190).count() as f64 / 4000.0;
        assert!(
            (share - 0.75).abs() < 0.03,
            "drew the heavier weight {share} of the time"
        );
        assert_eq!(draw(&[], &mut rng), None);
    }

    #[test]
    fn text_that_may_become_a_stop_sequence_is_held_back() {
        let stop = vec!["\n\nQ:".to_string()];
        assert_eq!(settled_prefix("answer\n\n", &stop), "answer".len());
        assert_eq!(settled_prefix("answer\nx", &stop), "answer\nx".len());
        assert_eq!(settled_prefix("caf\u{FFFD}", &[]), 3);
    }

    #[test]
    fn text_streams_in_whole_characters_and_matches_a_full_decode() {
        let text = "Zorvatide treats kelmar at 40 mg: café, naïve, 日本語 😀 done.";
        let corpus = [text, "Zorvatide treats kelmar syndrome.", "café naïve"];
        let tokenizer = crate::tokenizer::train(corpus.into_iter(), 300).unwrap();
        let ids = encode(&tokenizer, text).unwrap();
        let options = GenerateOptions {
            temperature: 0.0,
            max_tokens: ids.len(),
            ..Default::default()
        };
        let mut decoder = Decoder::new(&tokenizer, options, usize::MAX).unwrap();
        let (mut streamed, mut pending) = (String::new(), 0);
        for (i, &id) in ids.iter().enumerate() {
            let mut logits = vec![0f32; tokenizer.get_vocab_size(true)];
            logits[id as usize] = 1.0;
            let piece = decoder.step(&tokenizer, &logits).unwrap();
            assert!(
                !piece.contains('\u{FFFD}'),
                "a part of a character: {piece:?}"
            );
            streamed.push_str(&piece);
            assert_eq!(decoder.text, decode(&tokenizer, &ids[..=i]).unwrap());
            pending += usize::from(decoder.text.ends_with('\u{FFFD}'));
        }
        assert!(pending > 0, "no token ended inside a character");
        assert_eq!(decoder.finish_reason(), Some(FinishReason::Length));
        assert_eq!(streamed, text);

        // A stop sequence whose characters arrive a few bytes at a time.
        let options = GenerateOptions {
            temperature: 0.0,
            stop: vec!["本語".into()],
            ..Default::default()
        };
        let mut decoder = Decoder::new(&tokenizer, options, usize::MAX).unwrap();
        let mut streamed = String::new();
        for &id in &ids {
            let mut logits = vec![0f32; tokenizer.get_vocab_size(true)];
            logits[id as usize] = 1.0;
            streamed.push_str(&decoder.step(&tokenizer, &logits).unwrap());
        }
        assert_eq!(decoder.finish_reason(), Some(FinishReason::Stop));
        assert_eq!(streamed, text[..text.find("本語").unwrap()]);
    }

    #[test]
    fn bad_options_are_refused() {
        assert!(
            validate(&GenerateOptions {
                top_p: 0.0,
                ..Default::default()
            })
            .is_err()
        );
        assert!(
            validate(&GenerateOptions {
                temperature: f64::NAN,
                ..Default::default()
            })
            .is_err()
        );
    }
}
