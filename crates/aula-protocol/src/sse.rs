//! Server-sent events read as they arrive, for every stream Aula reads: the
//! pipeline watching an engine's answer on its way to the client,
//! `/v1/responses` turning chat chunks into its own events, and `aula bench`
//! timing tokens. One reader, one set of rules:
//!
//! - a line ends at `\n` (a `\r` before it is dropped); an event ends at a
//!   blank line, wherever the bytes were cut in transit;
//! - an event's `data:` lines are joined with `\n`, one space after the
//!   colon dropped (as the specification says); `event:` names it; other
//!   lines (comments, `id:`, `retry:`) are only in its raw bytes;
//! - at the end of the stream, what is left is one last event (an engine
//!   that closes without the final blank line loses nothing).

/// One event: its bytes as they came (blank line included), to be passed on
/// unchanged, and what it says.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    pub raw: Vec<u8>,
    pub event: Option<String>,
    pub data: Vec<u8>,
}

impl SseEvent {
    fn parse(raw: Vec<u8>) -> SseEvent {
        let mut event = None;
        let mut data: Option<Vec<u8>> = None;
        for line in raw.split(|b| *b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let (field, value) = match line.iter().position(|b| *b == b':') {
                Some(0) => continue,
                Some(i) => {
                    let v = &line[i + 1..];
                    (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
                }
                None => (line, &b""[..]),
            };
            match field {
                b"data" => {
                    let d = data.get_or_insert_with(Vec::new);
                    if !d.is_empty() {
                        d.push(b'\n');
                    }
                    d.extend_from_slice(value);
                }
                b"event" => event = Some(String::from_utf8_lossy(value).into_owned()),
                _ => {}
            }
        }
        SseEvent {
            raw,
            event,
            data: data.unwrap_or_default(),
        }
    }

    /// `data: [DONE]`, the end of an OpenAI stream.
    pub fn is_done(&self) -> bool {
        self.data.trim_ascii() == b"[DONE]"
    }

    /// The data as JSON, when it is.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.data).ok()
    }
}

/// Bytes in, whole events out; the incomplete rest kept for the next bytes.
#[derive(Debug, Default)]
pub struct SseReader {
    buf: Vec<u8>,
    /// Where the first line not yet looked at begins.
    line: usize,
}

impl SseReader {
    /// Add the next bytes of the stream; the events they complete, in order.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        let mut from = 0;
        while let Some(i) = self.buf[self.line..].iter().position(|b| *b == b'\n') {
            let end = self.line + i;
            let line = &self.buf[self.line..end];
            if line.strip_suffix(b"\r").unwrap_or(line).is_empty() {
                out.push(SseEvent::parse(self.buf[from..=end].to_vec()));
                from = end + 1;
            }
            self.line = end + 1;
        }
        self.buf.drain(..from);
        self.line -= from;
        out
    }

    /// The stream ended: what is left, as one last event, if anything.
    pub fn finish(&mut self) -> Option<SseEvent> {
        self.line = 0;
        let rest = std::mem::take(&mut self.buf);
        (!rest.is_empty()).then(|| SseEvent::parse(rest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &[u8] = b": a comment\r\n\r\nevent: response.created\ndata: {\"a\":1}\n\n\
        data: line one\ndata:line two\n\ndata: [DONE]\n\n";

    fn all(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut r = SseReader::default();
        let mut out: Vec<SseEvent> = chunks.iter().flat_map(|c| r.push(c)).collect();
        out.extend(r.finish());
        out
    }

    #[test]
    fn events_are_the_same_wherever_the_bytes_are_cut() {
        let whole = all(&[STREAM]);
        assert_eq!(whole.len(), 4);
        assert!(whole[0].data.is_empty() && whole[0].event.is_none());
        assert_eq!(whole[1].event.as_deref(), Some("response.created"));
        assert_eq!(whole[1].json().unwrap()["a"], 1);
        assert_eq!(whole[2].data, b"line one\nline two");
        assert!(whole[3].is_done());
        // Passed on unchanged: the raw bytes are the stream.
        assert_eq!(
            whole
                .iter()
                .flat_map(|e| e.raw.clone())
                .collect::<Vec<u8>>(),
            STREAM
        );
        for cut in 0..STREAM.len() {
            assert_eq!(
                all(&[&STREAM[..cut], &STREAM[cut..]]),
                whole,
                "cut at {cut}"
            );
        }
        let bytes: Vec<&[u8]> = STREAM.chunks(1).collect();
        assert_eq!(all(&bytes), whole);
    }

    #[test]
    fn a_stream_that_ends_without_its_blank_line_keeps_its_last_event() {
        let mut r = SseReader::default();
        assert!(r.push(b"data: {\"x\":2}").is_empty());
        let last = r.finish().unwrap();
        assert_eq!(last.json().unwrap()["x"], 2);
        assert_eq!(last.raw, b"data: {\"x\":2}");
        assert!(r.finish().is_none());
    }
}
