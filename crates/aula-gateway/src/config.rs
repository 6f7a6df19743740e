//! `aula.toml`: one file, every key optional. A mistake stops start-up with a
//! message naming the key and the line.

use serde::Deserialize;
use std::path::{Path, PathBuf};
use toml::Spanned;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub models: Vec<ModelEntry>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub host: Option<String>,
    pub port: Option<u16>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    pub name: Spanned<String>,
    /// A GGUF file served by an embedded `aula engine` (relative paths are
    /// looked up in the model directory).
    pub gguf: Option<Spanned<PathBuf>>,
    /// An OpenAI-compatible server that is already running.
    pub url: Option<Spanned<String>>,
    pub parallel: Option<Spanned<usize>>,
    pub context: Option<Spanned<u32>>,
    pub threads: Option<Spanned<usize>>,
}

/// What one model is served by, after validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    Embedded {
        gguf: PathBuf,
        parallel: Option<usize>,
        context: Option<u32>,
        threads: Option<usize>,
    },
    Url {
        base: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSpec {
    pub name: String,
    pub source: ModelSource,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Config::parse(&text, &path.display().to_string())
    }

    /// Parse and validate; `origin` names the file in messages.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: origin.to_string(),
            message,
        };
        let cfg: Config = toml::from_str(text).map_err(|e| {
            let at = e
                .span()
                .map(|s| format!("line {}: ", line_of(text, s.start)))
                .unwrap_or_default();
            invalid(format!("{at}{}", e.message().trim()))
        })?;
        let mut seen: Vec<(&str, usize)> = Vec::new();
        for m in &cfg.models {
            let line = line_of(text, m.name.span().start);
            let name = m.name.get_ref().as_str();
            if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(invalid(format!(
                    "line {line}: key `name`: model names must be non-empty and contain no spaces"
                )));
            }
            if let Some((_, first)) = seen.iter().find(|(n, _)| *n == name) {
                return Err(invalid(format!(
                    "line {line}: key `name`: the model name `{name}` is already used on line {first}; names must be unique"
                )));
            }
            seen.push((name, line));
            match (&m.gguf, &m.url) {
                (Some(_), Some(u)) => {
                    return Err(invalid(format!(
                        "line {}: key `url`: model `{name}` has both `gguf` and `url`; give one",
                        line_of(text, u.span().start)
                    )));
                }
                (None, None) => {
                    return Err(invalid(format!(
                        "line {line}: model `{name}` needs `gguf` (a model file) or `url` (a running server)"
                    )));
                }
                (None, Some(u)) => {
                    let url = u.get_ref();
                    if !(url.starts_with("http://") || url.starts_with("https://"))
                        || url.len() < 10
                    {
                        return Err(invalid(format!(
                            "line {}: key `url`: `{url}` is not an http:// or https:// URL",
                            line_of(text, u.span().start)
                        )));
                    }
                    if url.starts_with("https://") {
                        return Err(invalid(format!(
                            "line {}: key `url`: https engines are not supported yet; put the engine on http (loopback or a private network)",
                            line_of(text, u.span().start)
                        )));
                    }
                    for (key, v) in [
                        ("context", m.context.as_ref().map(|s| s.span())),
                        ("threads", m.threads.as_ref().map(|s| s.span())),
                    ] {
                        if let Some(span) = v {
                            return Err(invalid(format!(
                                "line {}: key `{key}`: only embedded (`gguf`) models take `{key}`; a `url` server is configured by whoever runs it",
                                line_of(text, span.start)
                            )));
                        }
                    }
                }
                (Some(_), None) => {}
            }
            for (key, v) in [
                (
                    "parallel",
                    m.parallel.as_ref().map(|s| (*s.get_ref(), s.span())),
                ),
                (
                    "threads",
                    m.threads.as_ref().map(|s| (*s.get_ref(), s.span())),
                ),
            ] {
                if let Some((0, span)) = v {
                    return Err(invalid(format!(
                        "line {}: key `{key}` must be at least 1",
                        line_of(text, span.start)
                    )));
                }
            }
            if let Some(c) = &m.context
                && *c.get_ref() < 16
            {
                return Err(invalid(format!(
                    "line {}: key `context` must be at least 16 tokens",
                    line_of(text, c.span().start)
                )));
            }
        }
        Ok(cfg)
    }

    /// The models to serve. With none configured, every GGUF in `models_dir`.
    pub fn model_specs(&self, models_dir: &Path) -> Result<Vec<ModelSpec>, String> {
        if self.models.is_empty() {
            return discover(models_dir);
        }
        Ok(self
            .models
            .iter()
            .map(|m| {
                let source = match (&m.gguf, &m.url) {
                    (Some(g), _) => {
                        let p = g.get_ref();
                        let gguf = if p.is_absolute() {
                            p.clone()
                        } else {
                            models_dir.join(p)
                        };
                        ModelSource::Embedded {
                            gguf,
                            parallel: m.parallel.as_ref().map(|s| *s.get_ref()),
                            context: m.context.as_ref().map(|s| *s.get_ref()),
                            threads: m.threads.as_ref().map(|s| *s.get_ref()),
                        }
                    }
                    (None, Some(u)) => ModelSource::Url {
                        base: normalize_base(u.get_ref()),
                    },
                    (None, None) => ModelSource::Url {
                        base: String::new(),
                    },
                };
                ModelSpec {
                    name: m.name.get_ref().clone(),
                    source,
                }
            })
            .collect())
    }
}

/// `http://h:p/v1/` -> `http://h:p`: requests keep their `/v1/...` path.
pub fn normalize_base(url: &str) -> String {
    let u = url.trim_end_matches('/');
    u.strip_suffix("/v1").unwrap_or(u).to_string()
}

/// The model name for a GGUF file found in the model directory: its stem, lower-cased.
pub fn name_for_file(path: &Path) -> String {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    stem.to_lowercase()
}

fn discover(models_dir: &Path) -> Result<Vec<ModelSpec>, String> {
    let entries = std::fs::read_dir(models_dir).map_err(|e| {
        format!(
            "cannot read the model directory {}: {e}; run the set-up (see README) or pass --config",
            models_dir.display()
        )
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .is_some_and(|x| x.eq_ignore_ascii_case("gguf"))
        })
        .collect();
    files.sort_by_key(|p| name_for_file(p));
    if files.is_empty() {
        return Err(format!(
            "no .gguf model in {}; run the set-up (see README) or pass --config",
            models_dir.display()
        ));
    }
    Ok(files
        .into_iter()
        .map(|gguf| ModelSpec {
            name: name_for_file(&gguf),
            source: ModelSource::Embedded {
                gguf,
                parallel: None,
                context: None,
                threads: None,
            },
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Config::parse(text, "aula.toml").unwrap_err().to_string()
    }

    #[test]
    fn good_config() {
        let c = Config::parse(
            "[server]\nport = 9000\n\n[[models]]\nname = \"a\"\ngguf = \"a.gguf\"\nparallel = 2\n\n[[models]]\nname = \"b\"\nurl = \"http://127.0.0.1:8000/v1/\"\n",
            "x",
        )
        .unwrap();
        assert_eq!(c.server.port, Some(9000));
        let specs = c.model_specs(Path::new("/m")).unwrap();
        assert_eq!(
            specs[0].source,
            ModelSource::Embedded {
                gguf: "/m/a.gguf".into(),
                parallel: Some(2),
                context: None,
                threads: None
            }
        );
        assert_eq!(
            specs[1].source,
            ModelSource::Url {
                base: "http://127.0.0.1:8000".into()
            }
        );
    }

    #[test]
    fn errors_name_key_and_line() {
        let e = err(
            "[[models]]\nname = \"a\"\ngguf = \"x\"\n\n[[models]]\nname = \"a\"\nurl = \"http://x:1\"\n",
        );
        assert!(
            e.contains("line 6") && e.contains("`name`") && e.contains("line 2"),
            "{e}"
        );
        let e = err("[[models]]\nname = \"a\"\ngguf = \"x\"\nparalel = 3\n");
        assert!(e.contains("line 4") && e.contains("paralel"), "{e}");
        let e = err("[[models]]\nname = \"a\"\ngguf = \"x\"\nparallel = \"four\"\n");
        assert!(e.contains("line 4"), "{e}");
        let e = err("[[models]]\nname = \"a\"\n");
        assert!(e.contains("line 2") && e.contains("gguf"), "{e}");
        let e = err("[[models]]\nname = \"a\"\nurl = \"localhost:8000\"\n");
        assert!(e.contains("line 3") && e.contains("`url`"), "{e}");
        let e = err("[server]\nport = 99999\n");
        assert!(e.contains("line 2"), "{e}");
        let e = err("[[models]]\nname = \"a\"\ngguf = \"x\"\nparallel = 0\n");
        assert!(e.contains("line 4") && e.contains("parallel"), "{e}");
    }

    #[test]
    fn discovery() {
        let dir = std::env::temp_dir().join(format!("aula-cfg-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("B-Model.Q4.gguf"), b"GGUF").unwrap();
        std::fs::write(dir.join("notes.txt"), b"x").unwrap();
        let specs = Config::default().model_specs(&dir).unwrap();
        assert_eq!(specs.len(), 1);
        assert_eq!(specs[0].name, "b-model.q4");
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            Config::default()
                .model_specs(&dir)
                .unwrap_err()
                .contains("cannot read")
        );
    }
}
