//! Retrieval over course material, as a pure library (no network, no
//! database): the gateway's vector stores use it to turn uploaded documents
//! into text ([`extract`]), cut the text into chunks measured in the
//! embedding model's own tokens ([`chunk`]), and search the chunks of a store
//! by BM25 ([`lexical`]), by dense similarity, or both fused ([`index`]),
//! keeping only chunks whose file attributes pass OpenAI's filters
//! ([`filter`]).

pub mod chunk;
pub mod extract;
pub mod filter;
pub mod index;
pub mod lexical;

pub use chunk::{Chunking, chunk};
pub use extract::{Kind, extract};
pub use filter::Filter;
pub use index::{Chunk, Hit, Index, Mode, Query};
