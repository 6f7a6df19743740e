pub mod catalog;
pub mod ggml;
pub mod gguf;
pub mod llamacpp;
pub mod shape;
