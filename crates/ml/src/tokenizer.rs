//! Byte-level BPE tokenizers, trained offline with the `tokenizers` crate and stored as Hugging
//! Face `tokenizer.json`, the file every Llama-family checkpoint ships.

use std::path::Path;

use tokenizers::AddedToken;
pub use tokenizers::Tokenizer;
use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::TrainerWrapper;
use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;

use crate::error::{MlError, Result};

/// The token that separates documents; the trained tokenizer's id 0, used as BOS and EOS.
pub const END_OF_TEXT: &str = "<|endoftext|>";

/// Trains a byte-level BPE tokenizer of at most `vocab_size` tokens on `texts`.
///
/// Byte-level BPE can encode any input, so the model never meets an unknown token.
pub fn train<'a>(
    texts: impl Iterator<Item = &'a str> + Send,
    vocab_size: usize,
) -> Result<Tokenizer> {
    let alphabet = ByteLevel::alphabet();
    if vocab_size < alphabet.len() + 1 {
        return Err(MlError::Config(format!(
            "vocab size {vocab_size} is below the byte alphabet of {}",
            alphabet.len() + 1
        )));
    }
    let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
        .vocab_size(vocab_size)
        .min_frequency(2)
        .show_progress(false)
        .special_tokens(vec![AddedToken::from(END_OF_TEXT, true)])
        .initial_alphabet(alphabet.into_iter().collect())
        .build()
        .into();
    let mut tokenizer = Tokenizer::new(BPE::default());
    let byte_level = ByteLevel::new(false, true, true);
    tokenizer.with_pre_tokenizer(Some(byte_level));
    tokenizer.with_decoder(Some(byte_level));
    tokenizer
        .train(&mut trainer, texts)
        .map_err(|e| MlError::Tokenizer(e.to_string()))?;
    Ok(tokenizer)
}

/// Reads a `tokenizer.json`.
pub fn load(path: &Path) -> Result<Tokenizer> {
    if !path.is_file() {
        return Err(MlError::Missing {
            path: path.into(),
            what: "the tokenizer.json of the model",
        });
    }
    Tokenizer::from_file(path).map_err(|e| MlError::Tokenizer(format!("{}: {e}", path.display())))
}

/// Writes a `tokenizer.json`.
pub fn save(tokenizer: &Tokenizer, path: &Path) -> Result<()> {
    tokenizer
        .save(path, false)
        .map_err(|e| MlError::Tokenizer(format!("{}: {e}", path.display())))
}

/// Token ids of `text`, without special tokens.
pub fn encode(tokenizer: &Tokenizer, text: &str) -> Result<Vec<u32>> {
    let encoding = tokenizer
        .encode(text, false)
        .map_err(|e| MlError::Tokenizer(e.to_string()))?;
    Ok(encoding.get_ids().to_vec())
}

/// Text of token ids, special tokens left out.
pub fn decode(tokenizer: &Tokenizer, ids: &[u32]) -> Result<String> {
    tokenizer
        .decode(ids, true)
        .map_err(|e| MlError::Tokenizer(e.to_string()))
}

/// The bytes token `id` stands for: a special token's name (`<|endoftext|>`), a byte-level
/// token's own bytes, which may be part of a character (what OpenAI's `bytes` fields carry), a
/// token of another vocabulary its text.
pub fn token_bytes(tokenizer: &Tokenizer, id: u32) -> Result<Vec<u8>> {
    if let Some(added) = tokenizer.get_added_tokens_decoder().get(&id) {
        return Ok(added.content.clone().into_bytes());
    }
    if let Some(DecoderWrapper::ByteLevel(_)) = tokenizer.get_decoder()
        && let Some(token) = tokenizer.id_to_token(id)
    {
        return token.chars().map(byte_of).collect();
    }
    Ok(decode(tokenizer, &[id])?.into_bytes())
}

/// The byte behind a character of GPT-2's byte-level alphabet: printable Latin-1 bytes stand
/// for themselves, the other bytes, in order, for the characters from U+0100 on.
fn byte_of(c: char) -> Result<u8> {
    let printable = |b: u32| matches!(b, 0x21..=0x7e | 0xa1..=0xac | 0xae..=0xff);
    let code = c as u32;
    if printable(code) {
        return Ok(code as u8);
    }
    let rank = code.checked_sub(0x100);
    let byte = rank.and_then(|rank| (0..=255u32).filter(|&b| !printable(b)).nth(rank as usize));
    byte.map(|b| b as u8)
        .ok_or_else(|| MlError::Tokenizer(format!("{c:?} is not a byte-level character")))
}

/// The id of [`END_OF_TEXT`], if the tokenizer has it.
pub fn end_of_text(tokenizer: &Tokenizer) -> Option<u32> {
    tokenizer.token_to_id(END_OF_TEXT)
}

/// The special tokens (end of text, a chat template's turn markers, ...): a model writes one only
/// to say its text is done, so generation stops there.
pub fn special_ids(tokenizer: &Tokenizer) -> Vec<u32> {
    let mut ids: Vec<u32> = tokenizer
        .get_added_tokens_decoder()
        .iter()
        .filter(|(_, token)| token.special)
        .map(|(id, _)| *id)
        .collect();
    ids.sort_unstable();
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: [&str; 4] = [
        "Zorvatide treats kelmar syndrome at 40 mg daily.",
        "Patients with kelmar syndrome should avoid brotine.",
        "Consult a licensed physician before changing any medication.",
        "Report any side effects to your care team.",
    ];

    #[test]
    fn trains_deterministically_and_round_trips_any_text() {
        let a = train(TEXT.iter().copied(), 300).unwrap();
        let b = train(TEXT.iter().copied(), 300).unwrap();
        assert_eq!(a.to_string(false).unwrap(), b.to_string(false).unwrap());
        assert_eq!(end_of_text(&a), Some(0));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        save(&a, &path).unwrap();
        let loaded = load(&path).unwrap();
        for text in ["Zorvatide treats kelmar syndrome", "unseen ünïcode ✓ text"] {
            let ids = encode(&loaded, text).unwrap();
            assert_eq!(decode(&loaded, &ids).unwrap(), text);
        }
        assert!(encode(&loaded, "kelmar syndrome").unwrap().len() < "kelmar syndrome".len());
    }

    #[test]
    fn a_tokens_bytes_are_its_own_even_inside_a_character() {
        let tokenizer = train(["caf\u{e9} caf\u{e9} na\u{ef}ve"].into_iter(), 300).unwrap();
        let text = "caf\u{e9} \u{2713}";
        let ids = encode(&tokenizer, text).unwrap();
        let bytes: Vec<u8> = ids
            .iter()
            .flat_map(|&id| token_bytes(&tokenizer, id).unwrap())
            .collect();
        assert_eq!(bytes, text.as_bytes());
        // The check mark's three bytes are three tokens here, each a part of the character.
        let last = token_bytes(&tokenizer, *ids.last().unwrap()).unwrap();
        assert_eq!(last, [0x93]);
        assert_eq!(token_bytes(&tokenizer, 0).unwrap(), END_OF_TEXT.as_bytes());
    }

    #[test]
    fn bad_input_is_refused() {
        let err = train(TEXT.iter().copied(), 100).unwrap_err().to_string();
        assert!(err.contains("below the byte alphabet of 257"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        assert!(
            load(&path)
                .unwrap_err()
                .to_string()
                .contains("tokenizer.json: missing")
        );
        std::fs::write(&path, "{not json").unwrap();
        assert!(
            load(&path)
                .unwrap_err()
                .to_string()
                .starts_with("tokenizer: ")
        );
    }
}
