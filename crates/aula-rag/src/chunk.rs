//! Cutting text into chunks measured in the embedding model's tokens.
//!
//! The rules:
//! * A chunk is a run of whole words (split at whitespace, joined by one
//!   space) whose token counts add up to at most `max_tokens`; the counts are
//!   the embedding model's own, per word (the gateway asks the engine).
//! * Consecutive chunks share up to `overlap_tokens` tokens of whole words;
//!   every chunk starts after the one before it, so chunking always ends.
//! * A single word longer than `max_tokens` is a chunk of its own (the
//!   embedding cuts it at the model's limit).

/// How a file is cut: OpenAI's `static` strategy (`auto` is resolved to
/// numbers before it gets here).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Chunking {
    pub max_tokens: usize,
    pub overlap_tokens: usize,
}

/// One chunk's text and its token count (without the model's special tokens).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    pub text: String,
    pub tokens: usize,
}

/// Cut `words` (with `counts[i]` tokens each) into chunks.
pub fn chunk(words: &[&str], counts: &[usize], c: Chunking) -> Vec<Piece> {
    let n = words.len().min(counts.len());
    let max = c.max_tokens.max(1);
    let overlap = c.overlap_tokens.min(max / 2);
    let mut out = Vec::new();
    let mut start = 0;
    while start < n {
        let mut end = start;
        let mut tokens = 0;
        while end < n && tokens + counts[end] <= max {
            tokens += counts[end];
            end += 1;
        }
        if end == start {
            tokens = counts[start];
            end = start + 1;
        }
        out.push(Piece {
            text: words[start..end].join(" "),
            tokens,
        });
        if end == n {
            break;
        }
        // Step back over whole words while they fit in the overlap.
        let mut next = end;
        let mut shared = 0;
        while next - 1 > start && shared + counts[next - 1] <= overlap {
            shared += counts[next - 1];
            next -= 1;
        }
        start = next;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut(n: usize, per: usize, max: usize, overlap: usize) -> Vec<Piece> {
        let words: Vec<String> = (0..n).map(|i| format!("w{i}")).collect();
        let refs: Vec<&str> = words.iter().map(String::as_str).collect();
        chunk(
            &refs,
            &vec![per; n],
            Chunking {
                max_tokens: max,
                overlap_tokens: overlap,
            },
        )
    }

    #[test]
    fn chunks_fit_and_cover_every_word() {
        let pieces = cut(100, 3, 30, 9);
        assert!(pieces.iter().all(|p| p.tokens <= 30));
        assert!(pieces[0].text.starts_with("w0 "));
        assert!(pieces.last().is_some_and(|p| p.text.ends_with(" w99")));
        // 10 words per chunk, 3 of them shared with the next.
        assert_eq!(pieces[0].text.split(' ').count(), 10);
        assert!(pieces[1].text.starts_with("w7 "));
    }

    #[test]
    fn without_overlap_each_word_is_in_one_chunk() {
        let pieces = cut(25, 2, 10, 0);
        let total: usize = pieces.iter().map(|p| p.text.split(' ').count()).sum();
        assert_eq!(total, 25);
    }

    #[test]
    fn a_word_longer_than_a_chunk_stands_alone_and_chunking_ends() {
        let pieces = chunk(
            &["a", "huge", "b"],
            &[1, 50, 1],
            Chunking {
                max_tokens: 10,
                overlap_tokens: 5,
            },
        );
        let texts: Vec<&str> = pieces.iter().map(|p| p.text.as_str()).collect();
        assert_eq!(texts, ["a", "huge", "b"]);
    }

    #[test]
    fn an_overlap_as_large_as_the_chunk_still_advances() {
        let pieces = cut(40, 1, 8, 8);
        assert!(pieces.len() < 40);
        assert!(pieces.last().is_some_and(|p| p.text.ends_with("w39")));
    }

    #[test]
    fn empty_text_has_no_chunks() {
        assert!(
            chunk(
                &[],
                &[],
                Chunking {
                    max_tokens: 5,
                    overlap_tokens: 1
                }
            )
            .is_empty()
        );
    }
}
