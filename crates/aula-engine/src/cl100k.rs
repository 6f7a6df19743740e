//! Token ids in embedding requests are cl100k_base ids — what tiktoken and
//! LangChain's `OpenAIEmbeddings` send. They are decoded back to text here
//! (with tiktoken-rs, which carries the cl100k_base ranks in its sources),
//! and the text is embedded with the model's own tokenizer.

use std::sync::OnceLock;

fn bpe() -> Result<&'static tiktoken_rs::CoreBPE, String> {
    static BPE: OnceLock<Result<tiktoken_rs::CoreBPE, String>> = OnceLock::new();
    BPE.get_or_init(|| tiktoken_rs::cl100k_base().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| format!("the cl100k_base tokenizer did not load: {e}"))
}

/// The text of cl100k_base token ids; an id cl100k_base does not have is an
/// error naming it. Bytes that are not UTF-8 on their own (an id holding half
/// a character) become U+FFFD, as tiktoken's `decode` does.
pub fn decode(ids: &[u32]) -> Result<String, String> {
    let bytes = bpe()?
        .decode_bytes(ids)
        .map_err(|e| format!("token id {} is not a cl100k_base token", e.token))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn decodes_what_tiktoken_encodes() {
        let bpe = bpe().unwrap();
        let ids = bpe.encode_ordinary("Hello, world! Grüße, 世界.");
        assert_eq!(decode(&ids).unwrap(), "Hello, world! Grüße, 世界.");
    }

    #[test]
    fn unknown_ids_are_named() {
        let e = decode(&[15339, 4_000_000]).unwrap_err();
        assert!(e.contains("4000000"), "{e}");
    }
}
