//! Turning sampled token pieces into the text a client sees: whole UTF-8
//! characters only, and nothing that might be the start of a stop sequence
//! until it is known not to be one.

#[derive(Debug, Default)]
pub struct TextAssembler {
    stop: Vec<String>,
    /// Bytes of an incomplete UTF-8 character.
    partial: Vec<u8>,
    /// Text held back because it could begin a stop sequence.
    held: String,
}

/// What a push produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed {
    /// Text that may be sent now (possibly empty).
    Text(String),
    /// A stop sequence matched: send this text, then finish.
    Stopped(String),
}

impl TextAssembler {
    pub fn new(stop: Vec<String>) -> Self {
        TextAssembler {
            stop,
            partial: Vec::new(),
            held: String::new(),
        }
    }

    pub fn push(&mut self, bytes: &[u8]) -> Pushed {
        self.partial.extend_from_slice(bytes);
        let valid = match std::str::from_utf8(&self.partial) {
            Ok(s) => s.len(),
            // A sequence that can never become valid is replaced, not kept forever.
            Err(e) if e.error_len().is_some() => {
                let s = String::from_utf8_lossy(&self.partial).into_owned();
                self.partial.clear();
                return self.push_text(&s);
            }
            Err(e) => e.valid_up_to(),
        };
        let rest = self.partial.split_off(valid);
        let text =
            String::from_utf8(std::mem::replace(&mut self.partial, rest)).unwrap_or_default();
        self.push_text(&text)
    }

    fn push_text(&mut self, text: &str) -> Pushed {
        self.held.push_str(text);
        if let Some(pos) = self
            .stop
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min()
        {
            let out = self.held[..pos].to_string();
            self.held.clear();
            return Pushed::Stopped(out);
        }
        // Keep the longest tail that is a proper prefix of some stop sequence.
        let mut keep = 0;
        for s in &self.stop {
            for (i, _) in s.char_indices().skip(1) {
                if i > keep && self.held.ends_with(&s[..i]) {
                    keep = i;
                }
            }
        }
        let cut = self.held.len() - keep;
        let out = self.held[..cut].to_string();
        self.held.drain(..cut);
        Pushed::Text(out)
    }

    /// Everything still held, at the end of generation.
    pub fn finish(&mut self) -> String {
        let mut out = std::mem::take(&mut self.held);
        if !self.partial.is_empty() {
            out.push_str(&String::from_utf8_lossy(&self.partial));
            self.partial.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_split_across_tokens() {
        let mut a = TextAssembler::new(vec![]);
        let e = "é".as_bytes();
        assert_eq!(a.push(&e[..1]), Pushed::Text(String::new()));
        assert_eq!(a.push(&e[1..]), Pushed::Text("é".into()));
    }

    #[test]
    fn stop_across_tokens_is_held_then_cut() {
        let mut a = TextAssembler::new(vec!["END".into()]);
        assert_eq!(a.push(b"hello E"), Pushed::Text("hello ".into()));
        assert_eq!(a.push(b"N"), Pushed::Text(String::new()));
        assert_eq!(a.push(b"D more"), Pushed::Stopped(String::new()));
    }

    #[test]
    fn false_alarm_is_released() {
        let mut a = TextAssembler::new(vec!["END".into()]);
        assert_eq!(a.push(b"E"), Pushed::Text(String::new()));
        assert_eq!(a.push(b"x"), Pushed::Text("Ex".into()));
        assert_eq!(a.push(b"EN"), Pushed::Text(String::new()));
        assert_eq!(a.finish(), "EN");
    }

    #[test]
    fn earliest_stop_wins() {
        let mut a = TextAssembler::new(vec!["c".into(), "ab".into()]);
        assert_eq!(a.push(b"xabc"), Pushed::Stopped("x".into()));
    }
}
