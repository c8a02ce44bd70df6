//! Corpus stage: text → token ids. Byte-level by default (every UTF-8 byte is
//! its own id, 0..=255), or a HuggingFace `tokenizer.json` loaded offline. Either
//! way one extra id, just past the tokenizer's own ids, separates documents in
//! the token cache.

use crate::error::{Error, Result};
use std::path::Path;

/// Ids of the byte-level tokenizer: 256 bytes, then the separator.
pub const BYTE_VOCAB: usize = 256;

pub enum TextTokenizer {
    /// Each UTF-8 byte is a token; separator 256; vocab 257.
    Bytes,
    /// A HuggingFace tokenizer; `separator` is one past its largest id.
    Hf {
        tokenizer: Box<tokenizers::Tokenizer>,
        separator: u32,
    },
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TextTokenizer::Bytes => write!(f, "TextTokenizer::Bytes"),
            TextTokenizer::Hf { separator, .. } => {
                write!(f, "TextTokenizer::Hf {{ separator: {separator} }}")
            }
        }
    }
}

impl TextTokenizer {
    /// The byte tokenizer for `None`, else the `tokenizer.json` at the path.
    pub fn load(path: Option<&Path>) -> Result<Self> {
        let Some(path) = path else {
            return Ok(TextTokenizer::Bytes);
        };
        if !path.is_file() {
            return Err(Error::invalid(format!(
                "tokenizer {}: no such file",
                path.display()
            )));
        }
        let tokenizer = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| Error::parse(path, 0, format!("not a loadable tokenizer.json: {e}")))?;
        // Ids need not be dense: the separator goes past the largest one.
        let max_id = tokenizer.get_vocab(true).values().copied().max();
        let size = tokenizer.get_vocab_size(true) as u64;
        let separator = max_id.map_or(0, |m| u64::from(m) + 1).max(size);
        let separator = u32::try_from(separator).map_err(|_| {
            Error::parse(
                path,
                0,
                format!("vocabulary of {separator} ids is too large"),
            )
        })?;
        if separator == 0 {
            return Err(Error::parse(
                path,
                0,
                "the tokenizer has an empty vocabulary",
            ));
        }
        Ok(TextTokenizer::Hf {
            tokenizer: Box::new(tokenizer),
            separator,
        })
    }

    /// Token ids of one document, without special tokens or the separator.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        match self {
            TextTokenizer::Bytes => Ok(text.bytes().map(u32::from).collect()),
            TextTokenizer::Hf { tokenizer, .. } => tokenizer
                .encode_fast(text, false)
                .map(|enc| enc.get_ids().to_vec())
                .map_err(|e| Error::invalid(format!("tokenizer failed on a document: {e}"))),
        }
    }

    /// Number of ids including the separator.
    pub fn vocab_size(&self) -> usize {
        self.separator_id() as usize + 1
    }

    /// The id that ends every document in the cache.
    pub fn separator_id(&self) -> u32 {
        match self {
            TextTokenizer::Bytes => BYTE_VOCAB as u32,
            TextTokenizer::Hf { separator, .. } => *separator,
        }
    }

    /// `"bytes"` or `"huggingface"`, as recorded in the manifest.
    pub fn kind(&self) -> &'static str {
        match self {
            TextTokenizer::Bytes => "bytes",
            TextTokenizer::Hf { .. } => "huggingface",
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A tiny WordLevel tokenizer.json written by hand (no downloads): five words,
    /// an unknown token, whitespace pre-tokenization.
    pub(crate) const TINY_TOKENIZER_JSON: &str = r#"{
  "version": "1.0",
  "truncation": null,
  "padding": null,
  "added_tokens": [],
  "normalizer": null,
  "pre_tokenizer": {"type": "Whitespace"},
  "post_processor": null,
  "decoder": null,
  "model": {
    "type": "WordLevel",
    "vocab": {"[UNK]": 0, "hello": 1, "world": 2, "the": 3, "cat": 4, "sat": 5},
    "unk_token": "[UNK]"
  }
}"#;

    #[test]
    fn bytes_tokenizer() {
        let t = TextTokenizer::load(None).unwrap();
        assert_eq!(t.encode("hé").unwrap(), [104, 0xc3, 0xa9]);
        assert_eq!(t.encode("").unwrap(), Vec::<u32>::new());
        assert_eq!(t.separator_id(), 256);
        assert_eq!(t.vocab_size(), 257);
        assert_eq!(t.kind(), "bytes");
    }

    #[test]
    fn hf_tokenizer_from_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        std::fs::write(&path, TINY_TOKENIZER_JSON).unwrap();
        let t = TextTokenizer::load(Some(&path)).unwrap();
        assert_eq!(t.encode("the cat sat").unwrap(), [3, 4, 5]);
        assert_eq!(t.encode("hello dog").unwrap(), [1, 0]);
        assert_eq!(t.separator_id(), 6);
        assert_eq!(t.vocab_size(), 7);

        std::fs::write(&path, "{ not a tokenizer").unwrap();
        let err = TextTokenizer::load(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("tokenizer.json"), "{err}");
        let err = TextTokenizer::load(Some(&dir.path().join("none.json")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("none.json: no such file"), "{err}");
    }
}
