//! OpenAI's wire format, as the API reads and writes it: the requests of `/v1/completions` and
//! `/v1/chat/completions`, their answers whole or as a stream's chunks, `/v1/models` and errors.
//! Typed once here, so that the handlers build values and serde writes the JSON.

use openledger_ml::generate::FinishReason;
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub(crate) fn into_vec(self) -> Vec<String> {
        match self {
            Self::One(s) => vec![s],
            Self::Many(v) => v,
        }
    }
}

#[derive(Deserialize, Default)]
pub(crate) struct StreamOptions {
    #[serde(default)]
    pub(crate) include_usage: bool,
}

/// The sampling and streaming fields both endpoints share.
#[derive(Deserialize)]
pub(crate) struct Sampling {
    pub(crate) model: String,
    pub(crate) max_tokens: Option<usize>,
    pub(crate) max_completion_tokens: Option<usize>,
    pub(crate) temperature: Option<f64>,
    pub(crate) top_p: Option<f64>,
    pub(crate) stop: Option<OneOrMany>,
    pub(crate) seed: Option<u64>,
    pub(crate) n: Option<usize>,
    #[serde(default)]
    pub(crate) stream: bool,
    pub(crate) stream_options: Option<StreamOptions>,
    /// What the completion hook reads (a client-signed order, say).
    pub(crate) openledger: Option<Value>,
}

#[derive(Deserialize)]
pub(crate) struct CompletionRequest {
    pub(crate) prompt: OneOrMany,
    /// How many of the most likely tokens to report beside each generated token's log-probability.
    pub(crate) logprobs: Option<usize>,
    /// Refused when set: the completion never repeats its prompt.
    pub(crate) echo: Option<bool>,
    /// Refused past 1: one completion is generated, not the best of several.
    pub(crate) best_of: Option<usize>,
    #[serde(flatten)]
    pub(crate) sampling: Sampling,
}

#[derive(Deserialize)]
pub(crate) struct ChatMessage {
    pub(crate) role: String,
    #[serde(deserialize_with = "text_content")]
    pub(crate) content: String,
}

/// A message's content: a string, or OpenAI's array of content parts, whose text parts are
/// joined (a model that reads text has no use for an image part, which is refused).
fn text_content<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Content {
        Text(String),
        Parts(Vec<Part>),
    }
    #[derive(Deserialize)]
    struct Part {
        #[serde(rename = "type")]
        kind: String,
        text: Option<String>,
    }
    let parts = match Content::deserialize(d) {
        Ok(Content::Text(text)) => return Ok(text),
        Ok(Content::Parts(parts)) => parts,
        Err(_) => {
            return Err(serde::de::Error::custom(
                "content must be a string or an array of text parts",
            ));
        }
    };
    let texts = parts
        .into_iter()
        .map(|part| match (part.kind.as_str(), part.text) {
            ("text", Some(text)) => Ok(text),
            (kind, _) => Err(serde::de::Error::custom(format!(
                "content parts of type {kind:?} are not supported: only text"
            ))),
        });
    texts.collect::<Result<Vec<_>, _>>().map(|t| t.concat())
}

#[derive(Deserialize)]
pub(crate) struct ChatRequest {
    pub(crate) messages: Vec<ChatMessage>,
    /// Whether to report each generated token's log-probability.
    pub(crate) logprobs: Option<bool>,
    /// How many of the most likely tokens to report beside it (`logprobs` must be set).
    pub(crate) top_logprobs: Option<usize>,
    #[serde(flatten)]
    pub(crate) sampling: Sampling,
}

/// A completion, whole (`text_completion`, `chat.completion`) or one chunk of its stream
/// (`chat.completion.chunk`; a text stream's chunks are `text_completion` too).
#[derive(Debug, Serialize)]
pub(crate) struct Envelope<'a> {
    pub(crate) id: &'a str,
    pub(crate) object: &'static str,
    pub(crate) created: u64,
    pub(crate) model: &'a str,
    pub(crate) choices: Vec<Choice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) usage: Option<Usage>,
    /// The completion hook's record of it (its settlement), on the last answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) openledger: Option<Value>,
}

/// A choice: the text of a completion, the message of a chat completion, or what a chat
/// stream's chunk adds to its message.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub(crate) enum Choice<'a> {
    Text {
        index: u32,
        text: &'a str,
        logprobs: Option<Logprobs>,
        finish_reason: Option<FinishReason>,
    },
    Message {
        index: u32,
        logprobs: Option<Logprobs>,
        finish_reason: Option<FinishReason>,
        message: Message<'a>,
    },
    Delta {
        index: u32,
        delta: Delta<'a>,
        logprobs: Option<Logprobs>,
        finish_reason: Option<FinishReason>,
    },
}

/// The log-probabilities of a choice's tokens (of a stream chunk's, in a chunk), in the shape
/// of its endpoint.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub(crate) enum Logprobs {
    /// `/v1/completions`: parallel lists, the alternatives as a map from text to log-probability.
    Text {
        tokens: Vec<String>,
        token_logprobs: Vec<f32>,
        top_logprobs: Vec<Alternatives>,
        /// Where each token's text starts in the completion, in characters.
        text_offset: Vec<usize>,
    },
    /// `/v1/chat/completions`: one entry a token.
    Chat {
        content: Vec<ChatLogprob>,
        refusal: Option<()>,
    },
}

/// A text completion's alternatives at one place: a map from token text to log-probability, most
/// likely first as OpenAI writes it (a `BTreeMap` would sort it by text).
#[derive(Debug)]
pub(crate) struct Alternatives(pub(crate) Vec<(String, f32)>);

impl Serialize for Alternatives {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(token, logprob)| (token, logprob)))
    }
}

/// A chat token's entry: its text and bytes (a token may hold part of a character's), its
/// log-probability and the most likely tokens at its place.
#[derive(Debug, Serialize)]
pub(crate) struct ChatLogprob {
    #[serde(flatten)]
    pub(crate) token: TokenText,
    pub(crate) top_logprobs: Vec<TokenText>,
}

/// A token's text, bytes and log-probability.
#[derive(Debug, Serialize)]
pub(crate) struct TokenText {
    pub(crate) token: String,
    pub(crate) logprob: f32,
    pub(crate) bytes: Vec<u8>,
}

/// An assistant's message.
#[derive(Debug, Serialize)]
pub(crate) struct Message<'a> {
    pub(crate) role: &'static str,
    pub(crate) content: &'a str,
}

/// What a chunk adds to a streamed message: the role first, then the text.
#[derive(Debug, Serialize)]
pub(crate) struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) content: Option<&'a str>,
}

/// Tokens billed.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Usage {
    pub(crate) prompt_tokens: usize,
    pub(crate) completion_tokens: usize,
    pub(crate) total_tokens: usize,
}

impl Usage {
    pub(crate) fn new(prompt_tokens: usize, completion_tokens: usize) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
        }
    }
}

/// `/v1/models`.
#[derive(Debug, Serialize)]
pub(crate) struct ModelList<'a> {
    pub(crate) object: &'static str,
    pub(crate) data: Vec<ModelCard<'a>>,
}

/// A model `/v1/models` lists: the base, or an adapter with the base as its parent.
#[derive(Debug, Serialize)]
pub(crate) struct ModelCard<'a> {
    pub(crate) id: &'a str,
    pub(crate) object: &'static str,
    pub(crate) created: u64,
    pub(crate) owned_by: &'static str,
    pub(crate) parent: Option<&'a str>,
}

/// An error: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug, Serialize)]
pub(crate) struct ErrorBody<'a> {
    pub(crate) error: ErrorDetail<'a>,
}

/// What went wrong, in OpenAI's fields.
#[derive(Debug, Serialize)]
pub(crate) struct ErrorDetail<'a> {
    pub(crate) message: &'a str,
    #[serde(rename = "type")]
    pub(crate) kind: &'static str,
    pub(crate) param: Option<&'static str>,
    pub(crate) code: Option<&'static str>,
}
