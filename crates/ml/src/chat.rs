//! How a conversation becomes a prompt: the checkpoint's own chat template (Jinja source in its
//! `tokenizer_config.json`, as Hugging Face keeps it and as a GGUF file carries it), or, for
//! checkpoints without one such as the dev base model, the `Q: … A:` format of the documents
//! that model learns from.

use std::path::Path;

use minijinja::{Environment, context};
use serde::Serialize;

use crate::error::{MlError, Result};
use crate::gguf::TOKENIZER_CONFIG_FILE;

/// One message of a conversation.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Message<'a> {
    /// `system`, `user` or `assistant` (`developer` is read as `system`).
    pub role: &'a str,
    /// Its text.
    pub content: &'a str,
}

/// A checkpoint's way of writing a conversation.
#[derive(Debug, Clone)]
pub enum ChatFormat {
    /// A Jinja chat template, with the special tokens it may name.
    Template {
        /// The template source.
        source: String,
        /// `bos_token` in the template.
        bos: String,
        /// `eos_token` in the template.
        eos: String,
    },
    /// System text first, each user turn as `Q: {content} A:` and each assistant turn as
    /// ` {content}` on the same line, turns separated by newlines.
    QuestionAnswer,
}

impl ChatFormat {
    /// The format of the checkpoint in `dir`: its template if it has one, refused if that does
    /// not parse.
    pub fn of_checkpoint(dir: &Path) -> Result<Self> {
        let path = dir.join(TOKENIZER_CONFIG_FILE);
        if !path.is_file() {
            return Ok(Self::QuestionAnswer);
        }
        let text = std::fs::read_to_string(&path).map_err(|e| MlError::io(&path, e))?;
        let config: serde_json::Value =
            serde_json::from_str(&text).map_err(|source| MlError::Json {
                path: path.clone(),
                source,
            })?;
        let Some(source) = config["chat_template"].as_str() else {
            return Ok(Self::QuestionAnswer);
        };
        let token = |key: &str| config[key].as_str().unwrap_or_default().to_string();
        Environment::new()
            .template_from_str(source)
            .map_err(|e| MlError::Input(format!("{}: chat template: {e}", path.display())))?;
        Ok(Self::Template {
            source: source.to_string(),
            bos: token("bos_token"),
            eos: token("eos_token"),
        })
    }

    /// The prompt for `messages`, ready for the assistant's next turn.
    pub fn prompt(&self, messages: &[Message<'_>]) -> Result<String> {
        self.render(messages, true)
    }

    /// `messages` written out; with `add_generation_prompt`, followed by the opening of the
    /// assistant's next turn. Training renders a conversation both ways to tell its answers from
    /// their prompts.
    pub fn render(&self, messages: &[Message<'_>], add_generation_prompt: bool) -> Result<String> {
        if messages.is_empty() {
            return Err(MlError::Input("messages must not be empty".into()));
        }
        if let Some(m) = messages
            .iter()
            .find(|m| !matches!(m.role, "system" | "developer" | "user" | "assistant"))
        {
            return Err(MlError::Input(format!(
                "unsupported message role {:?}",
                m.role
            )));
        }
        match self {
            Self::Template { source, bos, eos } => {
                let messages: Vec<Message<'_>> = messages
                    .iter()
                    .map(|m| Message {
                        role: if m.role == "developer" {
                            "system"
                        } else {
                            m.role
                        },
                        content: m.content,
                    })
                    .collect();
                // As transformers compiles chat templates.
                let mut env = Environment::new();
                env.set_trim_blocks(true);
                env.set_lstrip_blocks(true);
                // Hugging Face's templates refuse a conversation they cannot write this way.
                env.add_function("raise_exception", |message: String| {
                    Err::<String, _>(minijinja::Error::new(
                        minijinja::ErrorKind::InvalidOperation,
                        message,
                    ))
                });
                let template = env
                    .template_from_str(source)
                    .map_err(|e| MlError::Input(format!("chat template: {e}")))?;
                template
                    .render(context! {
                        messages => messages,
                        add_generation_prompt => add_generation_prompt,
                        bos_token => bos,
                        eos_token => eos,
                    })
                    .map_err(|e| MlError::Input(format!("chat template: {e}")))
            }
            Self::QuestionAnswer => Ok(question_answer(messages)),
        }
    }
}

fn question_answer(messages: &[Message<'_>]) -> String {
    let mut prompt = String::new();
    for m in messages {
        match m.role {
            "user" => prompt.push_str(&format!("Q: {} A:", m.content)),
            "assistant" => prompt.push_str(&format!(" {}\n", m.content)),
            _ => {
                prompt.push_str(m.content);
                prompt.push('\n');
            }
        }
    }
    prompt
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

    fn template(source: &str) -> ChatFormat {
        ChatFormat::Template {
            source: source.into(),
            bos: "<s>".into(),
            eos: "</s>".into(),
        }
    }

    #[test]
    fn a_template_renders_the_conversation_and_the_assistant_s_turn() {
        let messages = [
            Message {
                role: "developer",
                content: "Be brief.",
            },
            Message {
                role: "user",
                content: "Hi",
            },
        ];
        assert_eq!(
            template(CHATML).prompt(&messages).unwrap(),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        assert_eq!(
            ChatFormat::QuestionAnswer.prompt(&messages).unwrap(),
            "Be brief.\nQ: Hi A:"
        );
    }

    #[test]
    fn bad_conversations_and_templates_are_refused() {
        let tool = [Message {
            role: "tool",
            content: "x",
        }];
        let err = template(CHATML).prompt(&tool).unwrap_err().to_string();
        assert!(err.contains("unsupported message role \"tool\""), "{err}");
        assert!(ChatFormat::QuestionAnswer.prompt(&[]).is_err());
        let failing = template("{{ raise_exception('no system messages') }}");
        let user = [Message {
            role: "user",
            content: "x",
        }];
        let err = failing.prompt(&user).unwrap_err().to_string();
        assert!(
            err.contains("chat template: invalid operation: no system messages"),
            "{err}"
        );
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join(TOKENIZER_CONFIG_FILE);
        std::fs::write(&config, r#"{"chat_template": "{% for %}"}"#).unwrap();
        let err = ChatFormat::of_checkpoint(dir.path())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("tokenizer_config.json: chat template"),
            "{err}"
        );
    }
}
