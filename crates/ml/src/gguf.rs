//! GGUF checkpoints (llama.cpp's single-file format) of the Llama family, converted once into a
//! Hugging Face checkpoint directory that the rest of the engine loads like any other:
//! `config.json` from the metadata, `model.safetensors` with the weights dequantized to f32 under
//! Hugging Face's names, `tokenizer.json` built from the vocabulary and merges, and the chat
//! template in `tokenizer_config.json`, where Hugging Face keeps it, and the file itself as
//! `model.gguf`, whose quantized weights [`load_quantized`] reads as they are.
//!
//! The conversion reads everything and checks it before writing anything, and writes into a
//! staging directory renamed into place, so a bad file leaves nothing half-converted behind.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::quantized::GgmlDType;
use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::{Device, Tensor};
use serde_json::json;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

use crate::checkpoint::{CONFIG_FILE, TOKENIZER_FILE, load_model, load_weights, save_checkpoint};
use crate::config::ModelConfig;
use crate::error::{MlError, Result};
use crate::llama::Llama;
use crate::quant::{QWeights, is_projection, quantize_projections, reorder_rows};
use crate::weights::Weights;

/// Where a converted checkpoint keeps its chat template, as Hugging Face does.
pub const TOKENIZER_CONFIG_FILE: &str = "tokenizer_config.json";
/// Where a converted checkpoint keeps the GGUF file it was converted from, whose quantized
/// weights OpenLoRA serves and QLoRA trains over.
pub const SOURCE_FILE: &str = "model.gguf";

/// The Hugging Face name of the embedding table.
const EMBEDDINGS: &str = "model.embed_tokens.weight";

/// The GGUF architectures converted, all read with the Llama decoder.
const ARCHITECTURES: [&str; 3] = ["llama", "mistral", "qwen2"];

/// GGUF token types (llama.cpp's `llama_token_type`) that are added tokens rather than pieces of
/// the BPE vocabulary: control (special) and user-defined.
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;

/// Converts the GGUF file `file` into a checkpoint directory at `out`, which must not exist yet.
pub fn convert(file: &Path, out: &Path) -> Result<ModelConfig> {
    let gguf = Gguf::open(file)?;
    let config = gguf.config()?;
    let tokenizer = gguf.tokenizer()?;
    let template = gguf.chat_template()?;
    let weights = gguf.weights(&config)?;
    let staging = beside(out, "partial");
    let _ = std::fs::remove_dir_all(&staging);
    save_checkpoint(&staging, &config, &weights, None)?;
    crate::tokenizer::save(&tokenizer, &staging.join(TOKENIZER_FILE))?;
    let token = |id: Option<u32>| id.and_then(|id| tokenizer.id_to_token(id));
    let tokenizer_config = json!({
        "chat_template": template,
        "bos_token": token(config.bos_token_id),
        "eos_token": token(config.eos_token_id),
        "converted_from": file.file_name().map(|n| n.to_string_lossy()),
    });
    let path = staging.join(TOKENIZER_CONFIG_FILE);
    std::fs::write(&path, tokenizer_config.to_string()).map_err(|e| MlError::io(&path, e))?;
    // A copy, not a link: the user's file rewritten in place must not change what was converted.
    let source = staging.join(SOURCE_FILE);
    std::fs::copy(file, &source).map_err(|e| MlError::io(&source, e))?;
    std::fs::rename(&staging, out).map_err(|e| MlError::io(out, e))?;
    Ok(config)
}

/// A checkpoint directory's model with its projections quantized: as the GGUF file it was
/// converted from has them (kept in it as [`SOURCE_FILE`]), or, for a checkpoint of f32 weights,
/// quantized into `dense`'s blocks; with `dense` `None`, such a checkpoint loads as it is.
pub fn load_quantized(dir: &Path, dense: Option<GgmlDType>) -> Result<Llama> {
    let source = dir.join(SOURCE_FILE);
    if source.is_file() {
        let gguf = Gguf::open(&source)?;
        let config = gguf.config()?;
        let (weights, quantized) = gguf.tensors(&config, true)?;
        return Llama::new_quantized(config, &weights, &quantized);
    }
    let Some(dtype) = dense else {
        return load_model(dir, &Device::Cpu);
    };
    let config = ModelConfig::load(&dir.join(CONFIG_FILE))?;
    let mut weights = load_weights(dir, &Device::Cpu)?;
    let quantized = quantize_projections(&mut weights, dtype)?;
    Llama::new_quantized(config, &weights, &quantized)
}

/// Whether `path` names a GGUF file (by its magic, not its name).
pub fn is_gguf(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    path.is_file()
        && File::open(path)
            .and_then(|mut f| f.read_exact(&mut magic))
            .is_ok()
        && &magic == b"GGUF"
}

/// An open GGUF file: its parsed header and a reader for its tensors.
struct Gguf {
    path: PathBuf,
    content: Content,
    architecture: String,
}

impl Gguf {
    fn open(path: &Path) -> Result<Self> {
        let mut reader = BufReader::new(File::open(path).map_err(|e| MlError::io(path, e))?);
        let content = Content::read(&mut reader).map_err(|e| MlError::Gguf {
            path: path.into(),
            what: format!("not a readable GGUF file ({e})"),
        })?;
        let mut gguf = Self {
            path: path.into(),
            content,
            architecture: String::new(),
        };
        gguf.architecture = gguf.string("general.architecture")?.to_string();
        if !ARCHITECTURES.contains(&gguf.architecture.as_str()) {
            return Err(gguf.error(format!(
                "architecture {:?} is not one of the Llama family ({})",
                gguf.architecture,
                ARCHITECTURES.join(", ")
            )));
        }
        Ok(gguf)
    }

    fn error(&self, what: impl Into<String>) -> MlError {
        MlError::Gguf {
            path: self.path.clone(),
            what: what.into(),
        }
    }

    fn value(&self, key: &str) -> Result<&Value> {
        self.content
            .metadata
            .get(key)
            .ok_or_else(|| self.error(format!("metadata {key} is missing")))
    }

    fn typed<T>(&self, key: &str, read: impl Fn(&Value) -> candle_core::Result<T>) -> Result<T> {
        read(self.value(key)?).map_err(|e| self.error(format!("metadata {key}: {e}")))
    }

    fn string(&self, key: &str) -> Result<&str> {
        let value = self.value(key)?.to_string();
        value
            .map(String::as_str)
            .map_err(|e| self.error(format!("metadata {key}: {e}")))
    }

    fn strings(&self, key: &str) -> Result<Vec<&str>> {
        let values = self.value(key)?.to_vec();
        values
            .map_err(|e| self.error(format!("metadata {key}: {e}")))?
            .iter()
            .map(|v| {
                v.to_string()
                    .map(String::as_str)
                    .map_err(|e| self.error(format!("metadata {key}: {e}")))
            })
            .collect()
    }

    /// A numeric metadata value of the architecture (`llama.block_count`), as an integer.
    fn count(&self, key: &str) -> Result<usize> {
        let key = format!("{}.{key}", self.architecture);
        Ok(self.typed(&key, Value::to_u64)? as usize)
    }

    fn optional<T>(&self, key: &str, read: impl Fn(&Value) -> candle_core::Result<T>) -> Option<T> {
        self.content.metadata.get(key).and_then(|v| read(v).ok())
    }

    fn config(&self) -> Result<ModelConfig> {
        let arch = &self.architecture;
        let tokens = self.strings("tokenizer.ggml.tokens")?.len();
        let heads = self.count("attention.head_count")?;
        let mut config = ModelConfig::llama(
            tokens,
            self.count("embedding_length")?,
            self.count("block_count")?,
            heads,
            self.optional(&format!("{arch}.attention.head_count_kv"), Value::to_u64)
                .map_or(heads, |n| n as usize),
        );
        config.model_type = arch.clone();
        let class = match arch.as_str() {
            "qwen2" => "Qwen2ForCausalLM",
            "mistral" => "MistralForCausalLM",
            _ => "LlamaForCausalLM",
        };
        config.architectures = vec![class.into()];
        config.intermediate_size = self.count("feed_forward_length")?;
        config.max_position_embeddings = self.count("context_length")?;
        config.rms_norm_eps = self.typed(
            &format!("{arch}.attention.layer_norm_rms_epsilon"),
            Value::to_f32,
        )? as f64;
        if let Some(theta) = self.optional(&format!("{arch}.rope.freq_base"), Value::to_f32) {
            config.rope_theta = theta as f64;
        }
        config.tie_word_embeddings = !self.content.tensor_infos.contains_key("output.weight");
        config.attention_bias = self.content.tensor_infos.contains_key("blk.0.attn_q.bias");
        config.bos_token_id = self.optional("tokenizer.ggml.bos_token_id", Value::to_u32);
        config.eos_token_id = self.optional("tokenizer.ggml.eos_token_id", Value::to_u32);
        config.torch_dtype = Some("float32".into());
        config.validate().map_err(|e| self.error(e.to_string()))?;
        let rotary = self.optional(&format!("{arch}.rope.dimension_count"), Value::to_u64);
        if rotary.is_some_and(|d| d as usize != config.head_dim()) {
            return Err(self.error(format!(
                "rotary embedding over {} of {} head dimensions is not supported",
                rotary.unwrap_or_default(),
                config.head_dim()
            )));
        }
        Ok(config)
    }

    /// Every tensor dequantized to f32 under its Hugging Face name, each checked against the
    /// shape the configuration implies.
    fn weights(&self, config: &ModelConfig) -> Result<Weights> {
        Ok(self.tensors(config, false)?.0)
    }

    /// Every tensor under its Hugging Face name, each checked against the shape the
    /// configuration implies: with `keep_quantized`, the projections, head and embedding table
    /// that the file quantizes stay in their blocks; the rest is dequantized to f32.
    fn tensors(&self, config: &ModelConfig, keep_quantized: bool) -> Result<(Weights, QWeights)> {
        let mut reader =
            BufReader::new(File::open(&self.path).map_err(|e| MlError::io(&self.path, e))?);
        let expected: HashMap<String, Vec<usize>> = config.weight_shapes().into_iter().collect();
        let (mut weights, mut quantized) = (Weights::new(), QWeights::new());
        for name in self.content.tensor_infos.keys() {
            let hf =
                hf_name(name).ok_or_else(|| self.error(format!("unexpected tensor {name}")))?;
            let shape = expected
                .get(&hf)
                .ok_or_else(|| self.error(format!("unexpected tensor {name}")))?;
            let error = |e: candle_core::Error| self.error(format!("tensor {name}: {e}"));
            let q = self
                .content
                .tensor(&mut reader, name, &Device::Cpu)
                .map_err(error)?;
            if q.shape().dims() != shape.as_slice() {
                return Err(MlError::ShapeMismatch {
                    name: hf,
                    expected: shape.clone(),
                    found: q.shape().dims().to_vec(),
                });
            }
            let heads = match hf.rsplit('.').nth(1) {
                Some("q_proj") if self.permuted() => Some(config.num_attention_heads),
                Some("k_proj") if self.permuted() => Some(config.kv_heads()),
                _ => None,
            };
            let blocks = !matches!(q.dtype(), GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16);
            if keep_quantized && blocks && (is_projection(&hf) || hf == EMBEDDINGS) {
                let q = match heads {
                    Some(heads) => reorder_rows(&q, &unpermuted_order(shape[0], heads)?),
                    None => Ok(q),
                }
                .map_err(error)?;
                quantized.insert(hf, Arc::new(q));
            } else {
                let dense = q.dequantize(&Device::Cpu).map_err(error)?;
                let dense = match heads {
                    Some(heads) => unpermute(&dense, heads).map_err(error)?,
                    None => dense,
                };
                weights.insert(hf, dense);
            }
        }
        if let Some(name) = expected
            .keys()
            .find(|n| !weights.contains_key(*n) && !quantized.contains_key(*n))
        {
            return Err(self.error(format!("tensor {name} is missing")));
        }
        Ok((weights, quantized))
    }

    /// llama.cpp reorders the rows of a Llama query and key projection for its rotary kernel
    /// (pairs of adjacent dimensions rather than halves); Qwen2 files keep Hugging Face's order.
    fn permuted(&self) -> bool {
        self.architecture != "qwen2"
    }

    /// A Hugging Face tokenizer for the file's vocabulary: byte-level BPE with its merges, the
    /// pre-tokenizer its `tokenizer.ggml.pre` names, and its control tokens as special tokens.
    fn tokenizer(&self) -> Result<Tokenizer> {
        let model = self.string("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(self.error(format!(
                "tokenizer model {model:?} is not supported: only byte-level BPE (\"gpt2\") \
                 vocabularies are, not SentencePiece ones"
            )));
        }
        let tokens = self.strings("tokenizer.ggml.tokens")?;
        let vocab: Vocab = tokens
            .iter()
            .enumerate()
            .map(|(id, t)| (t.to_string(), id as u32))
            .collect();
        let merges = self
            .strings("tokenizer.ggml.merges")?
            .into_iter()
            .map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| self.error(format!("merge {m:?} is not two tokens")))
            })
            .collect::<Result<Vec<_>>>()?;
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| self.error(format!("tokenizer: {e}")))?;
        let mut tokenizer = Tokenizer::new(bpe);
        tokenizer.with_pre_tokenizer(Some(self.pre_tokenizer()?));
        tokenizer.with_decoder(Some(ByteLevel::new(false, true, true)));
        let types = self.optional("tokenizer.ggml.token_type", |v| {
            v.to_vec()?
                .iter()
                .map(Value::to_i32)
                .collect::<candle_core::Result<Vec<_>>>()
        });
        let added: Vec<AddedToken> = types
            .unwrap_or_default()
            .iter()
            .zip(&tokens)
            .filter(|(t, _)| matches!(**t, CONTROL | USER_DEFINED))
            .map(|(t, token)| AddedToken::from(token.to_string(), *t == CONTROL))
            .collect();
        tokenizer.add_special_tokens(&added);
        Ok(tokenizer)
    }

    /// The pre-tokenizer of llama.cpp's `tokenizer.ggml.pre` (its `llama-vocab.cpp` regexes).
    fn pre_tokenizer(&self) -> Result<PreTokenizerWrapper> {
        let pre = self.optional("tokenizer.ggml.pre", |v| v.to_string().cloned());
        let bytes = |use_regex| ByteLevel::new(false, true, use_regex).into();
        let split = |regex: &str| -> Result<PreTokenizerWrapper> {
            let pattern = SplitPattern::Regex(regex.into());
            let split = Split::new(pattern, SplitDelimiterBehavior::Isolated, false)
                .map_err(|e| self.error(format!("pre-tokenizer: {e}")))?;
            Ok(Sequence::new(vec![split.into(), bytes(false)]).into())
        };
        match pre.as_deref().unwrap_or("default") {
            "default" | "gpt2" => Ok(bytes(true)),
            "smollm" => Ok(Sequence::new(vec![Digits::new(true).into(), bytes(true)]).into()),
            "llama-bpe" | "llama3" => split(LLAMA3_SPLIT),
            "qwen2" => split(QWEN2_SPLIT),
            other => Err(self.error(format!("pre-tokenizer {other:?} is not supported"))),
        }
    }

    fn chat_template(&self) -> Result<Option<String>> {
        let Some(template) = self.optional("tokenizer.chat_template", |v| v.to_string().cloned())
        else {
            return Ok(None);
        };
        minijinja::Environment::new()
            .template_from_str(&template)
            .map_err(|e| self.error(format!("chat template: {e}")))?;
        Ok(Some(template))
    }
}

/// Llama 3's split: contractions, letters with one leading non-letter, digits in threes.
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's split: Llama 3's with single digits.
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The Hugging Face name of a GGUF tensor of the Llama family.
fn hf_name(gguf: &str) -> Option<String> {
    let top = match gguf {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(name) = top {
        return Some(name.into());
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    let (module, kind) = rest.split_once('.')?;
    let module = match module {
        "attn_norm" => "input_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return None,
    };
    layer.parse::<usize>().ok()?;
    Some(format!("model.layers.{layer}.{module}.{kind}"))
}

/// Undoes llama.cpp's reordering of a query or key projection's rows: within each head, rows
/// `(i, pair)` go back to `(pair, i)`, so dimension `i` and `i + head_dim / 2` rotate together
/// as Hugging Face's rotary embedding takes them.
fn unpermute(weight: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    let shape = weight.dims().to_vec();
    let (rows, rest) = (shape[0], &shape[1..]);
    let half = rows / heads / 2;
    let mut split = vec![heads, half, 2];
    split.extend_from_slice(rest);
    weight
        .reshape(split)?
        .transpose(1, 2)?
        .contiguous()?
        .reshape(shape)
}

/// The row order [`unpermute`] gives a query or key projection of `rows` rows: row `i` of the
/// result is row `order[i]` of the file's.
fn unpermuted_order(rows: usize, heads: usize) -> candle_core::Result<Vec<usize>> {
    let index = Tensor::arange(0u32, rows as u32, &Device::Cpu)?.reshape((rows, 1))?;
    let order = unpermute(&index, heads)?.flatten_all()?.to_vec1::<u32>()?;
    Ok(order.into_iter().map(|r| r as usize).collect())
}

/// The version of the conversion, part of a converted directory's name: a conversion that
/// writes something else gets a new one, so directories converted before are not reused.
const CONVERSION: &[u8] = b"openledger gguf conversion 2";

/// Where a GGUF file's conversion is kept under `cache`: named by the SHA-256 of the conversion's
/// version and the file, so the same file is converted once and a changed one again.
fn converted_dir(file: &Path, cache: &Path) -> Result<PathBuf> {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update(CONVERSION);
    let mut reader = File::open(file).map_err(|e| MlError::io(file, e))?;
    std::io::copy(&mut reader, &mut hasher).map_err(|e| MlError::io(file, e))?;
    let digest = hasher.finalize();
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    let stem = file
        .file_stem()
        .map_or("model".into(), |s| s.to_string_lossy().into_owned());
    Ok(cache.join(format!("{stem}-{hex}")))
}

/// The checkpoint directory of a GGUF file, converted into `cache` on first use, `converting`
/// told of it first (with the directory it converts into). Processes that need it at once take
/// turns on a lock file: one converts, the others then find it converted.
pub fn checkpoint_for(
    file: &Path,
    cache: &Path,
    converting: impl FnOnce(&Path),
) -> Result<PathBuf> {
    let dir = converted_dir(file, cache)?;
    if dir.join(CONFIG_FILE).is_file() {
        return Ok(dir);
    }
    std::fs::create_dir_all(cache).map_err(|e| MlError::io(cache, e))?;
    let path = beside(&dir, "lock");
    let lock = File::create(&path).map_err(|e| MlError::io(&path, e))?;
    lock.lock().map_err(|e| MlError::io(&path, e))?;
    if !dir.join(CONFIG_FILE).is_file() {
        converting(&dir);
        convert(file, &dir)?;
    }
    Ok(dir)
}

/// `dir` with `.suffix` appended to its name (not replacing what follows a dot in it, as
/// `with_extension` would: `model.Q4_1-…` must not become `model.partial`).
fn beside(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{suffix}"));
    dir.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_hugging_face_ones() {
        assert_eq!(
            hf_name("blk.12.attn_q.weight").as_deref(),
            Some("model.layers.12.self_attn.q_proj.weight")
        );
        assert_eq!(
            hf_name("blk.0.ffn_norm.weight").as_deref(),
            Some("model.layers.0.post_attention_layernorm.weight")
        );
        assert_eq!(
            hf_name("token_embd.weight").as_deref(),
            Some("model.embed_tokens.weight")
        );
        assert_eq!(hf_name("blk.x.attn_q.weight"), None);
        assert_eq!(hf_name("rope_freqs.weight"), None);
    }

    #[test]
    fn unpermute_inverts_llama_cpp_s_permutation() {
        // llama.cpp: w.reshape(heads, 2, half, in).swapaxes(1, 2).reshape(w.shape)
        let (heads, head_dim, inputs) = (3, 4, 2);
        let rows = heads * head_dim;
        let hf = Tensor::arange(0f32, (rows * inputs) as f32, &Device::Cpu)
            .unwrap()
            .reshape((rows, inputs))
            .unwrap();
        let permuted = permute(&hf, heads);
        let back = unpermute(&permuted, heads).unwrap();
        assert_eq!(back.to_vec2::<f32>().unwrap(), hf.to_vec2::<f32>().unwrap());
    }

    /// llama.cpp's reordering of a query or key projection's rows, which [`unpermute`] undoes.
    fn permute(w: &Tensor, heads: usize) -> Tensor {
        let (rows, inputs) = w.dims2().unwrap();
        w.reshape((heads, 2, rows / heads / 2, inputs))
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .contiguous()
            .unwrap()
            .reshape((rows, inputs))
            .unwrap()
    }

    /// Writes `weights` of `config` as llama.cpp would: GGUF names and metadata, the query and
    /// key rows in its order, the projections and embeddings in `dtype` blocks.
    fn write_gguf(path: &Path, config: &ModelConfig, weights: &Weights, dtype: GgmlDType) {
        use candle_core::quantized::{QTensor, gguf_file};
        let modules = [
            "attn_norm",
            "ffn_norm",
            "attn_q",
            "attn_k",
            "attn_v",
            "attn_output",
            "ffn_gate",
            "ffn_up",
            "ffn_down",
        ];
        let names = (0..config.num_hidden_layers)
            .flat_map(|l| modules.map(|m| format!("blk.{l}.{m}.weight")))
            .chain(["token_embd.weight".into(), "output_norm.weight".into()]);
        let tensors: Vec<(String, QTensor)> = names
            .map(|name| {
                let hf = hf_name(&name).unwrap();
                let mut w = weights[&hf].clone();
                if hf.contains("q_proj") {
                    w = permute(&w, config.num_attention_heads);
                } else if hf.contains("k_proj") {
                    w = permute(&w, config.kv_heads());
                }
                let blocks = if w.rank() == 2 { dtype } else { GgmlDType::F32 };
                (name, QTensor::quantize(&w, blocks).unwrap())
            })
            .collect();
        let arch = |key: &str| format!("llama.{key}");
        let count = |n: usize| Value::U32(n as u32);
        let tokens = Value::Array(
            (0..config.vocab_size)
                .map(|i| Value::String(format!("t{i}")))
                .collect(),
        );
        let metadata: Vec<(String, Value)> = vec![
            ("general.architecture".into(), Value::String("llama".into())),
            ("tokenizer.ggml.tokens".into(), tokens),
            (arch("embedding_length"), count(config.hidden_size)),
            (arch("block_count"), count(config.num_hidden_layers)),
            (
                arch("attention.head_count"),
                count(config.num_attention_heads),
            ),
            (arch("attention.head_count_kv"), count(config.kv_heads())),
            (arch("feed_forward_length"), count(config.intermediate_size)),
            (
                arch("context_length"),
                count(config.max_position_embeddings),
            ),
            (
                arch("attention.layer_norm_rms_epsilon"),
                Value::F32(config.rms_norm_eps as f32),
            ),
            (arch("rope.freq_base"), Value::F32(config.rope_theta as f32)),
        ];
        let metadata: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let tensors: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let mut file = File::create(path).unwrap();
        gguf_file::write(&mut file, &metadata, &tensors).unwrap();
    }

    #[test]
    fn a_quantized_gguf_model_gives_the_logits_of_its_dense_weights() -> Result<()> {
        let dev = Device::Cpu;
        let mut config = ModelConfig::llama(64, 64, 2, 4, 2);
        config.intermediate_size = 96;
        let mut weights = crate::checkpoint::random_weights(&config, 7, &dev)?;
        // Sharp attention, so that query and key rows out of order would show in the logits.
        for (name, w) in weights.iter_mut() {
            if name.contains("q_proj") || name.contains("k_proj") {
                *w = (&*w * 10.0)?;
            }
        }
        for dtype in [GgmlDType::Q8_0, GgmlDType::Q4_1, GgmlDType::Q4_0] {
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join(SOURCE_FILE);
            write_gguf(&file, &config, &weights, dtype);
            // The same file dequantized to f32 by the conversion: what the blocks hold.
            let gguf = Gguf::open(&file)?;
            let dense = Llama::new(config.clone(), &gguf.weights(&config)?)?;
            let quantized = load_quantized(dir.path(), None)?.for_inference()?;
            assert!(quantized.size_in_bytes() * 3 < dense.size_in_bytes());
            // 40 positions take the tiled product; the cached step of one, the dot products.
            let ids: Vec<u32> = (0..41).map(|i| (i * 7 % 64) as u32).collect();
            let prompt = Tensor::new(&ids[..40], &dev)?.unsqueeze(0)?;
            let want = dense.forward(&Tensor::new(ids.as_slice(), &dev)?.unsqueeze(0)?)?;
            let got = quantized.forward(&prompt)?;
            let scale = want.abs()?.max_all()?.to_scalar::<f32>()?;
            let diff = |a: &Tensor, b: &Tensor| -> Result<f32> {
                Ok((a - b)?.abs()?.max_all()?.to_scalar::<f32>()? / scale)
            };
            assert!(diff(&want.narrow(1, 0, 40)?, &got)? < 1e-4, "{dtype:?}");
            let mut cache = crate::KvCache::default();
            quantized.forward_cached(&prompt, &mut cache)?;
            let next = Tensor::new(&ids[40..], &dev)?.unsqueeze(0)?;
            let step = quantized.forward_cached(&next, &mut cache)?;
            let step_diff = diff(&want.narrow(1, 40, 1)?.squeeze(1)?, &step)?;
            assert!(step_diff < 0.02, "{dtype:?}: {step_diff}");
        }
        Ok(())
    }

    #[test]
    fn staging_and_lock_files_keep_the_whole_name() {
        let dir = Path::new("/cache/SmolLM2.Q4_1-b179c952");
        assert_eq!(
            beside(dir, "partial"),
            Path::new("/cache/SmolLM2.Q4_1-b179c952.partial")
        );
    }

    #[test]
    fn a_file_that_is_not_gguf_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.gguf");
        std::fs::write(&path, b"GGUF\x03\x00\x00\x00truncated").unwrap();
        assert!(!is_gguf(&dir.path().join("absent.gguf")));
        let err = convert(&path, &dir.path().join("out"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("model.gguf") && err.contains("not a readable GGUF"),
            "{err}"
        );
        assert!(!dir.path().join("out").exists());
    }
}
