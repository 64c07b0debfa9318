//! Proof of Attribution for OpenLedger: which contributions shaped a model's output.
//!
//! Span attribution (Infini-gram style) indexes the token ids of a datanet version's rows in a
//! suffix array built with libsais, finds the output's maximal spans that occur verbatim in the
//! rows, and credits each span to the rows that contain it, longer and rarer spans more. The
//! weights are integers in parts per million computed with integer arithmetic only, so that every
//! node that recomputes a settlement's attribution gets the same numbers.
//!
//! Gradient influence (DataInf, with TracIn as the baseline) scores an output's LoRA gradient
//! against the stored, sketched gradients of the adapter's training rows.
//!
//! The crate knows nothing of tokenizers or models: it takes token ids and a tokenizer
//! fingerprint, and refuses queries whose fingerprint is not the index's.

pub mod error;
pub mod index;
pub mod influence;
pub mod quality;
pub mod shards;
pub mod span;

pub use error::{AttributionError, Result};
pub use index::{IndexRow, RowTokens, SpanIndex, fingerprint};
pub use influence::{
    GradientRow, GradientStore, INFLUENCE_FILE, Influence, RowInfluence, RowScores, Sketch,
};
pub use shards::ShardedIndex;
pub use span::{Attribution, Credit, Evidence, SpanOptions, SpanRow};
