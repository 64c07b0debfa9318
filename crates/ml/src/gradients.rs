//! Per-example gradients of a LoRA adapter's parameters, the raw material of gradient influence.
//!
//! Each example's loss is differentiated on its own (a batch of one), and the gradient comes back
//! in groups, one per adapted projection of one layer (its `A` then its `B`, flattened), because
//! influence is computed per group: a per-layer approximation of the Hessian is what makes the
//! inverse cheap.

use std::path::Path;

use candle_core::{Device, Var};

use crate::chat::ChatFormat;
use crate::checkpoint::TOKENIZER_FILE;
use crate::config::ModelConfig;
use crate::data::{Batch, Example, Row, tokenize};
use crate::error::{MlError, Result};
use crate::gguf::load_quantized;
use crate::llama::Llama;
use crate::lora::Adapter;
use crate::tokenizer::{self, Tokenizer};
use crate::train::batch_loss;

/// A base model with an adapter installed as training variables, ready to differentiate.
pub struct ExampleGradients {
    model: Llama,
    tokenizer: Tokenizer,
    chat: ChatFormat,
    groups: Vec<String>,
    /// `A` and `B` of each group, in group order.
    vars: Vec<Var>,
}

impl ExampleGradients {
    /// Loads the base checkpoint `base` (with its tokenizer; a converted GGUF file's in its own
    /// quantization, as it serves, so that recording after a QLoRA job does not take the f32
    /// weights' memory) and the PEFT adapter in `adapter`.
    pub fn load(base: &Path, adapter: &Path) -> Result<Self> {
        let device = Device::Cpu;
        let mut model = load_quantized(base, None)?;
        let tokenizer = tokenizer::load(&base.join(TOKENIZER_FILE))?;
        let mut adapter = Adapter::load(adapter, model.config(), &device)?;
        let groups = adapter.group_names();
        let vars = adapter.make_trainable()?;
        adapter.apply(&mut model)?;
        Ok(Self {
            model,
            tokenizer,
            chat: ChatFormat::of_checkpoint(base)?,
            groups,
            vars,
        })
    }

    /// The groups' names (`layer.projection`), in the order gradients come back.
    pub fn groups(&self) -> &[String] {
        &self.groups
    }

    /// The model's configuration.
    pub fn config(&self) -> &ModelConfig {
        self.model.config()
    }

    /// The gradient of the mean next-token loss of `example`, one flat vector per group.
    pub fn of_example(&self, example: &Example) -> Result<Vec<Vec<f32>>> {
        if example.tokens.len() < 2 {
            return Err(MlError::Input(
                "an example needs at least two tokens to have a loss".into(),
            ));
        }
        let batch = Batch::new(&[example], self.model.device())?;
        let grads = batch_loss(&self.model, &batch)?.backward()?;
        self.vars
            .chunks(2)
            .map(|pair| {
                let mut flat = Vec::new();
                for var in pair {
                    let grad = grads.get(var.as_tensor()).ok_or_else(|| {
                        MlError::Input("the adapter took no part in the loss".into())
                    })?;
                    flat.extend(grad.flatten_all()?.to_vec1::<f32>()?);
                }
                Ok(flat)
            })
            .collect()
    }

    /// The gradient of a text's loss, tokenized as training rows are.
    pub fn of_text(&self, text: &str) -> Result<Vec<Vec<f32>>> {
        let row = Row {
            text: text.to_string(),
            ..Row::default()
        };
        let context = self.model.config().max_position_embeddings - 1;
        let example = tokenize(&[row], &self.tokenizer, &self.chat, context)?.remove(0);
        self.of_example(&example)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::{random_weights, save_checkpoint};
    use crate::lora::LoraConfig;

    /// A tiny random base and an adapter whose `B` is not zero, so that both `A` and `B` get a
    /// gradient.
    fn fixture(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
        let texts = ["alpha beta gamma delta"; 4];
        let tokenizer = tokenizer::train(texts.into_iter(), 300).unwrap();
        let tokenizer_path = dir.join(TOKENIZER_FILE);
        tokenizer::save(&tokenizer, &tokenizer_path).unwrap();
        let config = crate::devbase::config_with_vocab(tokenizer.get_vocab_size(true));
        let weights = random_weights(&config, 1, &Device::Cpu).unwrap();
        let base = dir.join("base");
        save_checkpoint(&base, &config, &weights, Some(&tokenizer_path)).unwrap();
        let mut adapter = Adapter::init(
            &config,
            LoraConfig::new(2, 4.0, "q_proj,v_proj").unwrap(),
            2,
            &Device::Cpu,
        )
        .unwrap();
        adapter.randomize_b_for_tests(3).unwrap();
        let out = dir.join("adapter");
        adapter.save(&out, "base").unwrap();
        (base, out)
    }

    #[test]
    fn gradients_come_per_group_with_a_and_b_and_depend_on_the_text() {
        let dir = tempfile::tempdir().unwrap();
        let (base, adapter) = fixture(dir.path());
        let g = ExampleGradients::load(&base, &adapter).unwrap();
        let config = g.config().clone();
        assert_eq!(g.groups().len(), config.num_hidden_layers * 2);
        assert_eq!(g.groups()[0], "0.q_proj");
        let grads = g.of_text("alpha beta gamma").unwrap();
        let (q_out, q_in) = (config.hidden_size, config.hidden_size);
        assert_eq!(grads[0].len(), 2 * q_in + q_out * 2);
        assert!(grads.iter().flatten().any(|&x| x != 0.0));
        assert_eq!(grads, g.of_text("alpha beta gamma").unwrap());
        assert_ne!(grads, g.of_text("delta gamma beta").unwrap());
    }

    #[test]
    fn a_text_too_short_to_have_a_loss_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (base, adapter) = fixture(dir.path());
        let g = ExampleGradients::load(&base, &adapter).unwrap();
        let example = Example::plain(0, vec![1]);
        let err = g.of_example(&example).unwrap_err().to_string();
        assert!(err.contains("at least two tokens"), "{err}");
    }
}
