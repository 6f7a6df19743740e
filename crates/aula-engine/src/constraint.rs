//! Constrained decoding: JSON that always parses, calls that always match
//! their tool's schema, with llguidance (Microsoft's grammar engine, in
//! Rust) as a per-sequence sampler.
//!
//! Rules:
//! - The token index (llguidance's trie of the model's vocabulary) is built
//!   once per model, at the first constrained request, and reused by every
//!   later one; how long it took is logged and reported by [`Constraints::index_ms`].
//! - A request's grammar is compiled in its handler, before it is queued:
//!   anything llguidance cannot express (unknown JSON Schema keywords, an
//!   unsatisfiable schema, a grammar over its size limits) is a 400 naming
//!   the parameter and llguidance's reason. The scheduler only wraps the
//!   compiled [`Matcher`] as the first sampler of that one sequence, so
//!   constrained and free requests share a batch without slowing each other.
//! - JSON is written compactly as models are trained to write it (`", "`
//!   between items, `": "` after keys, no free whitespace), so a model cannot
//!   wander into endless spaces and still be "valid".
//! - A grammar may wrap the JSON in fixed text (a model's own call markers,
//!   e.g. `<tool_call>\n...\n</tool_call>`): [`Grammar::Wrapped`].

use llama_cpp_2::model::LlamaModel;
use llguidance::api::TopLevelGrammar;
use llguidance::{Matcher, ParserFactory};
use serde_json::{Value, json};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

/// What the output must be.
#[derive(Debug, Clone, PartialEq)]
pub enum Grammar {
    /// A JSON value valid against this schema.
    Json(Value),
    /// `before` + a JSON value valid against the schema + `after`.
    Wrapped {
        before: String,
        schema: Value,
        after: String,
    },
}

/// The compact layout models write; a schema's own `x-guidance` wins.
fn with_layout(schema: &Value) -> Value {
    let mut s = schema.clone();
    if let Some(o) = s.as_object_mut()
        && !o.contains_key("x-guidance")
    {
        o.insert(
            "x-guidance".into(),
            json!({"whitespace_flexible": false, "item_separator": ", ", "key_separator": ": "}),
        );
    }
    s
}

/// A Lark string literal for fixed text.
fn lark_literal(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".into())
}

impl Grammar {
    fn top_level(&self) -> TopLevelGrammar {
        match self {
            Grammar::Json(schema) => TopLevelGrammar::from_json_schema(with_layout(schema)),
            Grammar::Wrapped {
                before,
                schema,
                after,
            } => TopLevelGrammar::from_lark(format!(
                "start: {} body {}\nbody: %json {}\n",
                lark_literal(before),
                lark_literal(after),
                with_layout(schema)
            )),
        }
    }
}

/// Why a grammar could not be used.
#[derive(Debug)]
pub enum ConstraintError {
    /// The token index could not be built (the engine's fault: a 500).
    Index(String),
    /// llguidance refused the grammar (the request's: a 400).
    Grammar(String),
}

/// The model's grammar engine: its token index, built on first use.
pub struct Constraints {
    model: Arc<LlamaModel>,
    factory: OnceLock<Result<Arc<ParserFactory>, String>>,
    index_ms: OnceLock<u64>,
}

impl Constraints {
    pub fn new(model: Arc<LlamaModel>) -> Self {
        Constraints {
            model,
            factory: OnceLock::new(),
            index_ms: OnceLock::new(),
        }
    }

    /// Milliseconds the token index took to build (None: not built yet).
    pub fn index_ms(&self) -> Option<u64> {
        self.index_ms.get().copied()
    }

    /// The factory; the first caller builds the index, others wait for it.
    fn factory(&self) -> Result<&Arc<ParserFactory>, ConstraintError> {
        self.factory
            .get_or_init(|| {
                let t = Instant::now();
                let env = llama_cpp_2::sampling::LlamaSampler::llguidance_tok_env(&self.model);
                let mut f = ParserFactory::new_simple(&env).map_err(|e| e.to_string())?;
                f.quiet();
                let ms = t.elapsed().as_millis() as u64;
                let _ = self.index_ms.set(ms);
                tracing::info!(
                    "constrained decoding: token index of {} tokens built in {ms} ms",
                    self.model.n_vocab()
                );
                Ok(Arc::new(f))
            })
            .as_ref()
            .map_err(|e| ConstraintError::Index(e.clone()))
    }

    /// Compile `g` for one sequence.
    pub fn matcher(&self, g: &Grammar) -> Result<Matcher, ConstraintError> {
        let factory = self.factory()?;
        let parser = factory
            .create_parser(g.top_level())
            .map_err(|e| ConstraintError::Grammar(e.to_string()))?;
        let m = Matcher::new(Ok(parser));
        match m.get_error() {
            Some(e) => Err(ConstraintError::Grammar(e)),
            None => Ok(m),
        }
    }
}
