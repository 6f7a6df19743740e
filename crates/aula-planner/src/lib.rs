//! Aula's capacity planner: model shapes from GGUF files, Hugging Face
//! config.json files or the built-in catalog, and what an engine needs for
//! them. A library; `aula plan` is a thin CLI over it.
//!
//! [`estimate`] (request, memory, speed, outcome; formulas as data in
//! `FORMULAS`), [`placement`] (several models in one budget, and the one
//! translation of settings into engine arguments), [`decode`] (llama.cpp's
//! structured decode model, constants in `catalog/decode.toml`), [`query`]
//! (the precision a model is planned at), [`assessment`] (a machine as
//! `aula assess` measured it), [`engine`] (the one `EngineKind`),
//! [`summary`] and [`report`] (what `aula plan` prints and writes).

pub mod assessment;
pub mod catalog;
pub mod checks;
pub mod class;
pub mod decode;
pub mod engine;
pub mod estimate;
pub mod finetune;
pub mod ftype;
pub mod ggml;
pub mod gguf;
pub mod hardware;
pub mod hf;
pub mod llamacpp;
pub mod offload;
pub mod placement;
pub mod query;
pub mod report;
pub mod shape;
pub mod summary;

use std::path::Path;

/// The one rule for naming a model after its file: the file name without
/// its extension, in lower case (`SmolLM2-135M.Q4_1.gguf` is
/// `smollm2-135m.q4_1`). The gateway's config, `aula engine` and
/// `aula plan` all name models by it.
pub fn model_name_for_file(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().to_lowercase())
        .unwrap_or_else(|| "model".into())
}

/// A model named on the command line: a `.json` config, a GGUF file, or a
/// catalog id. A GGUF carries its weights' exact bytes; the others get them
/// from the precision asked for when they are estimated.
pub fn resolve_model(arg: &Path) -> Result<shape::ModelShape, String> {
    if arg.extension().is_some_and(|x| x == "json") {
        hf::read(arg)
    } else if arg.exists() || arg.extension().is_some_and(|x| x == "gguf") {
        let file = gguf::GgufFile::open(arg).map_err(|e| e.to_string())?;
        let id = model_name_for_file(arg);
        shape::ModelShape::from_gguf(&id, &file).map_err(|e| format!("{}: {e}", arg.display()))
    } else {
        catalog::find(&arg.to_string_lossy())
    }
}

pub use engine::EngineKind;
