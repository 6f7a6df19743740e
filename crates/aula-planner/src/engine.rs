//! Who runs a model: the one name for an engine kind, from `aula.toml`'s
//! `engine = "..."` through the fleet and the planner to `aula ps`.
//!
//! The planner's formulas are for the kinds Aula starts. A `url` model is
//! never planned (`aula plan --engine url` is refused, the fleet plans only
//! what it starts); where a formula must still name it, it takes
//! llama.cpp's.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EngineKind {
    /// `aula engine` (llama.cpp), started by Aula.
    Embedded,
    /// llama.cpp's `llama-server`, started by Aula.
    LlamaServer,
    /// vLLM, started by Aula.
    Vllm,
    /// SGLang, started by Aula.
    Sglang,
    /// A server run elsewhere, reached at its `url`: nothing to start or
    /// plan.
    Url,
}

impl EngineKind {
    /// The name `engine = "..."` uses in `aula.toml`, and `aula ps` shows.
    pub fn as_str(self) -> &'static str {
        match self {
            EngineKind::Embedded => "embedded",
            EngineKind::LlamaServer => "llama-server",
            EngineKind::Vllm => "vllm",
            EngineKind::Sglang => "sglang",
            EngineKind::Url => "url",
        }
    }

    /// Parse `engine = "..."`: every kind, `url` included.
    pub fn parse(s: &str) -> Option<EngineKind> {
        match s {
            "embedded" => Some(EngineKind::Embedded),
            "llama-server" => Some(EngineKind::LlamaServer),
            "vllm" => Some(EngineKind::Vllm),
            "sglang" => Some(EngineKind::Sglang),
            "url" => Some(EngineKind::Url),
            _ => None,
        }
    }

    /// Runs llama.cpp (its memory and speed formulas apply).
    pub fn is_llama_cpp(self) -> bool {
        matches!(self, EngineKind::Embedded | EngineKind::LlamaServer)
    }

    /// A process Aula starts other than its own engine (vLLM, llama-server,
    /// SGLang).
    pub fn is_external(self) -> bool {
        matches!(
            self,
            EngineKind::LlamaServer | EngineKind::Vllm | EngineKind::Sglang
        )
    }
}

impl std::fmt::Display for EngineKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `aula plan --engine`: the kinds Aula plans (`aula` and `llama.cpp` are
/// other names of its own engine); a `url` model runs elsewhere.
impl std::str::FromStr for EngineKind {
    type Err = String;
    fn from_str(s: &str) -> Result<EngineKind, String> {
        match s.to_ascii_lowercase().as_str() {
            "aula" | "llama.cpp" => Ok(EngineKind::Embedded),
            "url" => Err("a `url` model runs elsewhere: there is nothing to plan".into()),
            other => EngineKind::parse(other).ok_or_else(|| {
                format!("unknown engine `{s}`; use embedded, llama-server, vllm or sglang")
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for k in [
            EngineKind::Embedded,
            EngineKind::LlamaServer,
            EngineKind::Vllm,
            EngineKind::Sglang,
            EngineKind::Url,
        ] {
            assert_eq!(EngineKind::parse(k.as_str()), Some(k));
            assert_eq!(
                serde_json::to_value(k).ok(),
                Some(serde_json::Value::String(k.as_str().into()))
            );
        }
        assert_eq!("llama.cpp".parse(), Ok(EngineKind::Embedded));
        assert!("url".parse::<EngineKind>().is_err());
        assert!("ollama".parse::<EngineKind>().is_err());
    }
}
