//! `aula extract`: one document to text, for the gateway's ingestion (run
//! as a child process so that a parser that crashes or hangs fails alone).

/// `aula extract`: the document's text on stdout, or the reason on stderr
/// and exit status 2.
pub fn extract(a: crate::cli::ExtractArgs) -> anyhow::Result<()> {
    use std::io::Write;
    let bytes = std::fs::read(&a.path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", a.path.display()))?;
    let name = a.name.unwrap_or_else(|| {
        a.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    });
    match aula_rag::extract(&bytes, &name) {
        Ok(text) => {
            std::io::stdout().lock().write_all(text.as_bytes())?;
            Ok(())
        }
        Err(reason) => {
            eprintln!("error: {reason}");
            std::process::exit(2);
        }
    }
}
