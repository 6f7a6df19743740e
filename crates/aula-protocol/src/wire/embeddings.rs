//! `/v1/embeddings`: the request the gateway makes for a vector store, and
//! the answer every embedding engine gives.

use serde::{Deserialize, Serialize, Serializer};

/// Texts to embed, as the gateway asks for them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmbeddingsRequest {
    pub model: String,
    pub input: Vec<String>,
    /// `-1`: cut each input at the model's limit rather than refuse it
    /// (vLLM's and Aula's extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncate_prompt_tokens: Option<i64>,
}

/// The answer: one vector per input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingList {
    pub object: String,
    pub data: Vec<Embedding>,
    pub model: String,
    pub usage: EmbeddingUsage,
}

impl EmbeddingList {
    /// `n` float vectors in input order, or why not (a vector missing, in
    /// base64, or indexed past the inputs).
    pub fn into_vectors(self, n: usize) -> Result<Vec<Vec<f32>>, String> {
        if self.data.len() != n {
            return Err(format!(
                "the embedding engine answered {} vectors for {n} inputs",
                self.data.len()
            ));
        }
        let mut out = vec![Vec::new(); n];
        for d in self.data {
            let EmbeddingVector::Float(v) = d.embedding else {
                return Err("the embedding engine answered base64, not floats".into());
            };
            match out.get_mut(d.index as usize) {
                Some(slot) => *slot = v,
                None => return Err(format!("the embedding engine answered index {}", d.index)),
            }
        }
        if out.iter().any(Vec::is_empty) {
            return Err("the embedding engine left out a vector".into());
        }
        Ok(out)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Embedding {
    pub object: String,
    pub index: u32,
    pub embedding: EmbeddingVector,
}

/// A vector as floats, or (`encoding_format: "base64"`) its little-endian
/// f32 bytes in base64.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EmbeddingVector {
    Float(#[serde(serialize_with = "as_f64s")] Vec<f32>),
    Base64(String),
}

/// Each f32 written as the f64 of the same value, so a client that reads
/// JSON numbers as doubles gets exactly the floats the base64 form carries
/// (f32's shortest text, `0.1`, would read back as a different double).
fn as_f64s<S: Serializer>(v: &[f32], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(|x| f64::from(*x)))
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmbeddingUsage {
    pub prompt_tokens: u64,
    #[serde(default)]
    pub total_tokens: u64,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn vectors_come_back_in_input_order() {
        let l: EmbeddingList = serde_json::from_value(json!({"object": "list", "model": "m",
            "data": [{"object": "embedding", "index": 1, "embedding": [0.5]},
                     {"object": "embedding", "index": 0, "embedding": [0.25]}],
            "usage": {"prompt_tokens": 2, "total_tokens": 2}}))
        .unwrap();
        assert_eq!(
            l.clone().into_vectors(2).unwrap(),
            vec![vec![0.25], vec![0.5]]
        );
        assert!(l.clone().into_vectors(3).is_err());
        let mut twice = l;
        twice.data[1].index = 1;
        assert!(twice.into_vectors(2).unwrap_err().contains("left out"));
        let b: Embedding = serde_json::from_value(
            json!({"object": "embedding", "index": 0, "embedding": "AACAPw=="}),
        )
        .unwrap();
        assert_eq!(b.embedding, EmbeddingVector::Base64("AACAPw==".into()));
    }

    #[test]
    fn floats_are_written_as_the_same_doubles() {
        let e = EmbeddingVector::Float(vec![0.1]);
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v[0].as_f64(), Some(f64::from(0.1f32)));
    }
}
