//! The one error type of the ML engine: every failure names the file or tensor it concerns, so a
//! user who points the tools at the wrong directory learns what is wrong without a backtrace.

use std::path::PathBuf;

/// Errors of the ML engine.
#[derive(Debug, thiserror::Error)]
pub enum MlError {
    /// The caller stopped training between steps.
    #[error("training was stopped after step {step}")]
    Stopped {
        /// The last step done.
        step: usize,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A required file of a checkpoint or adapter directory is not there.
    #[error("{path}: missing; {what}")]
    Missing {
        /// The path that was looked for.
        path: PathBuf,
        /// What the file is and why it is needed.
        what: &'static str,
    },
    /// A JSON file (config.json, adapter_config.json, an index) is malformed.
    #[error("{path}: invalid JSON: {source}")]
    Json {
        /// The file concerned.
        path: PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },
    /// A safetensors file is truncated or not safetensors at all.
    #[error("{path}: not a valid safetensors file: {reason}")]
    Safetensors {
        /// The file concerned.
        path: PathBuf,
        /// What the parser reported.
        reason: String,
    },
    /// A GGUF file is unreadable, or holds something this engine does not convert.
    #[error("{path}: {what}")]
    Gguf {
        /// The file concerned.
        path: PathBuf,
        /// What is wrong with it.
        what: String,
    },
    /// The checkpoint's architecture is not one this engine implements.
    #[error("unsupported architecture {found:?}: supported are the Llama family ({supported})")]
    UnknownArchitecture {
        /// The `model_type` or `architectures` entry found.
        found: String,
        /// The supported values.
        supported: &'static str,
    },
    /// A tensor that the configuration requires is absent.
    #[error("tensor {name} is missing from the checkpoint")]
    MissingTensor {
        /// The tensor name.
        name: String,
    },
    /// A tensor has a different shape than the configuration implies.
    #[error("tensor {name} has shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        /// The tensor name.
        name: String,
        /// The shape the configuration implies.
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
    },
    /// A configuration value is out of range or inconsistent.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Input data (a dataset, a prompt, options) cannot be used.
    #[error("invalid input: {0}")]
    Input(String),
    /// A prompt leaves no room to generate in the model's context.
    #[error("invalid input: the prompt's {tokens} tokens fill the context of {context}")]
    ContextFull {
        /// Tokens of the prompt.
        tokens: usize,
        /// The model's context length.
        context: usize,
    },
    /// The tokenizer failed to load, train or encode.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Result alias of the ML engine.
pub type Result<T, E = MlError> = std::result::Result<T, E>;

impl MlError {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
