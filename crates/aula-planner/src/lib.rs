pub mod catalog;
pub mod ggml;
pub mod gguf;
pub mod hf;
pub mod llamacpp;
pub mod shape;
