//! Documents to text: plain text, Markdown, HTML, PDF and DOCX.
//!
//! The rules:
//! * The kind comes from the content where it says (`%PDF-`, a zip holding
//!   `word/document.xml`), else from the file name's extension; anything else
//!   must be UTF-8 text (a byte-order mark is dropped). Binary content that is
//!   none of these is refused, naming the kinds that are read.
//! * DOCX: at most [`MAX_XML_BYTES`] of `word/document.xml` are inflated; a
//!   zip bomb stops there and fails.
//! * A document with no text at all (a scanned PDF, an empty file) fails:
//!   there would be nothing to search.
//! * Errors are one line, fit for a vector store file's `last_error`.
//!
//! Parsers can panic, loop or allocate without bound on hostile input; the
//! gateway runs this module in a child process (`aula extract`) with a time
//! and memory limit, so that such a file fails alone.

use std::io::Read;

/// The most bytes of a DOCX's document XML that are inflated.
pub const MAX_XML_BYTES: u64 = 64 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    Markdown,
    Html,
    Pdf,
    Docx,
}

impl Kind {
    /// What a file is, from its first bytes and its name.
    pub fn of(bytes: &[u8], filename: &str) -> Kind {
        let ext = filename
            .rsplit_once('.')
            .map(|(_, e)| e.to_ascii_lowercase())
            .unwrap_or_default();
        if bytes.starts_with(b"%PDF-") {
            Kind::Pdf
        } else if bytes.starts_with(b"PK\x03\x04") || ext == "docx" {
            Kind::Docx
        } else if matches!(ext.as_str(), "html" | "htm" | "xhtml") {
            Kind::Html
        } else if matches!(ext.as_str(), "md" | "markdown") {
            Kind::Markdown
        } else if ext == "pdf" {
            Kind::Pdf
        } else {
            Kind::Text
        }
    }
}

/// The text of a document.
pub fn extract(bytes: &[u8], filename: &str) -> Result<String, String> {
    let text = match Kind::of(bytes, filename) {
        Kind::Pdf => pdf(bytes)?,
        Kind::Docx => docx(bytes)?,
        Kind::Html => html(bytes)?,
        Kind::Text | Kind::Markdown => utf8(bytes)?,
    };
    if text.trim().is_empty() {
        return Err(
            "the file has no text to search (empty, or a scan without a text layer)".into(),
        );
    }
    Ok(text)
}

fn utf8(bytes: &[u8]) -> Result<String, String> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let text = std::str::from_utf8(bytes).map_err(|e| {
        format!(
            "the file is not UTF-8 text ({e}); files read are text, Markdown, HTML, PDF and DOCX"
        )
    })?;
    if text.contains('\0') {
        return Err("the file is binary; files read are text, Markdown, HTML, PDF and DOCX".into());
    }
    Ok(text.to_string())
}

fn html(bytes: &[u8]) -> Result<String, String> {
    let text = utf8(bytes)?;
    html2text::config::plain()
        .string_from_read(text.as_bytes(), 10_000)
        .map_err(|e| format!("the HTML could not be read: {e}"))
}

fn pdf(bytes: &[u8]) -> Result<String, String> {
    pdf_extract::extract_text_from_mem(bytes).map_err(|e| {
        let m = e.to_string();
        if m.to_ascii_lowercase().contains("encrypt") || m.to_ascii_lowercase().contains("decrypt")
        {
            format!("the PDF is encrypted and cannot be read: {m}")
        } else {
            format!("the PDF could not be read: {m}")
        }
    })
}

fn docx(bytes: &[u8]) -> Result<String, String> {
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .map_err(|e| format!("the DOCX (a zip archive) could not be read: {e}"))?;
    let entry = zip.by_name("word/document.xml").map_err(|_| {
        "the file is a zip archive but not a DOCX (no word/document.xml)".to_string()
    })?;
    let mut xml = Vec::new();
    entry
        .take(MAX_XML_BYTES + 1)
        .read_to_end(&mut xml)
        .map_err(|e| format!("the DOCX could not be inflated: {e}"))?;
    if xml.len() as u64 > MAX_XML_BYTES {
        return Err(format!(
            "the DOCX's document inflates past {} MB; it is refused",
            MAX_XML_BYTES >> 20
        ));
    }
    docx_text(&xml)
}

/// The text of WordprocessingML: `w:t` runs, a tab per `w:tab`, a line
/// break per `w:br` and per paragraph end.
fn docx_text(xml: &[u8]) -> Result<String, String> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_reader(xml);
    let mut out = String::new();
    let mut in_text = false;
    let mut buf = Vec::new();
    loop {
        match reader.read_event_into(&mut buf) {
            Ok(Event::Start(e)) if e.name().as_ref() == "w:t" => in_text = true,
            Ok(Event::End(e)) => match e.name().as_ref() {
                "w:t" => in_text = false,
                "w:p" => out.push('\n'),
                _ => {}
            },
            Ok(Event::Empty(e)) => match e.name().as_ref() {
                "w:tab" => out.push('\t'),
                "w:br" | "w:p" => out.push('\n'),
                _ => {}
            },
            Ok(Event::Text(t)) if in_text => {
                out.push_str(&t.xml10_content());
            }
            Ok(Event::GeneralRef(r)) if in_text => {
                let name: &str = r.as_ref();
                out.push_str(match name {
                    "amp" => "&",
                    "lt" => "<",
                    "gt" => ">",
                    "quot" => "\"",
                    "apos" => "'",
                    _ => "",
                });
            }
            Ok(Event::Eof) => break,
            Err(e) => return Err(format!("the DOCX's XML is malformed: {e}")),
            _ => {}
        }
        buf.clear();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::io::Write;

    fn docx_of(xml: &str) -> Vec<u8> {
        let mut out = std::io::Cursor::new(Vec::new());
        let mut z = zip::ZipWriter::new(&mut out);
        z.start_file(
            "word/document.xml",
            zip::write::SimpleFileOptions::default(),
        )
        .unwrap();
        z.write_all(xml.as_bytes()).unwrap();
        z.finish().unwrap();
        out.into_inner()
    }

    #[test]
    fn kinds_come_from_content_then_name() {
        assert_eq!(Kind::of(b"%PDF-1.4", "notes.txt"), Kind::Pdf);
        assert_eq!(Kind::of(b"PK\x03\x04", "x"), Kind::Docx);
        assert_eq!(Kind::of(b"<p>", "a.HTML"), Kind::Html);
        assert_eq!(Kind::of(b"# t", "a.md"), Kind::Markdown);
        assert_eq!(Kind::of(b"hello", "a"), Kind::Text);
    }

    #[test]
    fn text_html_and_docx() {
        assert_eq!(
            extract("\u{feff}héllo".as_bytes(), "a.txt").unwrap(),
            "héllo"
        );
        let h = extract(
            b"<html><body><h1>Cells</h1><p>Mito&amp;chondria</p><script>x()</script></body></html>",
            "a.html",
        )
        .unwrap();
        assert!(h.contains("Cells") && h.contains("Mito&chondria"), "{h}");
        let d = docx_of(
            r#"<w:document><w:body><w:p><w:r><w:t>Photo</w:t></w:r><w:r><w:t xml:space="preserve">synthesis &amp; light</w:t></w:r></w:p><w:p><w:r><w:t>Next</w:t></w:r></w:p></w:body></w:document>"#,
        );
        assert_eq!(
            extract(&d, "a.docx").unwrap(),
            "Photosynthesis & light\nNext\n"
        );
    }

    #[test]
    fn bad_files_fail_with_a_reason() {
        assert!(extract(b"", "a.txt").unwrap_err().contains("no text"));
        assert!(
            extract(b"\xff\xfe\x00garbage", "a.bin")
                .unwrap_err()
                .contains("not UTF-8")
        );
        assert!(
            extract(b"%PDF-1.7\ngarbage", "a.pdf")
                .unwrap_err()
                .contains("PDF")
        );
        assert!(
            extract(b"PK\x03\x04garbage", "a.docx")
                .unwrap_err()
                .contains("zip")
        );
        let not_docx = {
            let mut out = std::io::Cursor::new(Vec::new());
            let mut z = zip::ZipWriter::new(&mut out);
            z.start_file("a.txt", zip::write::SimpleFileOptions::default())
                .unwrap();
            z.finish().unwrap();
            out.into_inner()
        };
        assert!(
            extract(&not_docx, "a.docx")
                .unwrap_err()
                .contains("not a DOCX")
        );
    }

    #[test]
    fn a_zip_bomb_stops_at_the_limit() {
        let mut out = std::io::Cursor::new(Vec::new());
        let mut z = zip::ZipWriter::new(&mut out);
        z.start_file(
            "word/document.xml",
            zip::write::SimpleFileOptions::default(),
        )
        .unwrap();
        let block = vec![b'a'; 1 << 20];
        for _ in 0..(MAX_XML_BYTES >> 20) + 2 {
            z.write_all(&block).unwrap();
        }
        z.finish().unwrap();
        let bytes = out.into_inner();
        assert!(bytes.len() < 1 << 20, "compressed to {}", bytes.len());
        assert!(
            extract(&bytes, "bomb.docx")
                .unwrap_err()
                .contains("inflates past")
        );
    }
}
