//! `aula.toml`: one file, every key optional. A mistake stops start-up with a
//! message naming the key and the line.

use serde::Deserialize;
use std::path::Path;
use toml::Spanned;

mod check;

use check::*;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub models: Vec<ModelEntry>,
    #[serde(default)]
    pub fairness: FairnessConfig,
    pub term: Option<TermConfig>,
    #[serde(default)]
    pub limits: Vec<LimitEntry>,
    pub jupyterhub: Option<JupyterHubConfig>,
    #[serde(default)]
    pub auth: AuthSection,
    #[serde(default)]
    pub machine: MachineConfig,
    /// Load models at set times (before a lesson).
    #[serde(default)]
    pub preload: Vec<PreloadEntry>,
    /// Vector stores and `file_search`.
    #[serde(default)]
    pub rag: RagConfig,
    /// The web page at `/`.
    #[serde(default)]
    pub web: WebConfig,
    /// Fine-tuning jobs.
    #[serde(default)]
    pub fine_tuning: FineTuningConfig,
}

/// `[fine_tuning]`: the trainer and how many jobs train at once.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FineTuningConfig {
    /// Off: the fine-tuning API answers that it is not enabled [default:
    /// on when the trainer's Python is there].
    pub enabled: Option<bool>,
    /// The trainer's Python, with torch, transformers, peft and gguf
    /// (`bash scripts/setup-trainer.sh` makes one) [default:
    /// $AULA_TRAIN_PYTHON, else ~/.cache/aula/train-venv/bin/python].
    pub python: Option<Spanned<String>>,
    /// Jobs training at once [default: 1].
    pub max_running: Option<Spanned<usize>>,
    /// Steps between checkpoints [default: 10].
    pub checkpoint_every: Option<Spanned<u32>>,
    /// CPU threads a trainer uses [default: all].
    pub threads: Option<usize>,
    /// The longest one job may train, in hours, before it is stopped and
    /// failed [default: 12].
    pub max_job_hours: Option<Spanned<f64>>,
    /// The most tokens one job may train (examples x epochs, estimated at
    /// creation, counted while it trains) [default: 20,000,000].
    pub max_job_tokens: Option<Spanned<u64>>,
    /// Where trainers run: "auto" (an NVIDIA GPU when there is one, else
    /// the CPU), "cpu" or "cuda" [default: auto].
    pub device: Option<Spanned<String>>,
}

impl FineTuningConfig {
    pub fn settings(&self) -> crate::finetune::FineTuneSettings {
        let mut s = crate::finetune::FineTuneSettings::default();
        if let Some(p) = &self.python {
            s.python = Some(std::path::PathBuf::from(p.get_ref()));
        }
        if let Some(e) = self.enabled {
            s.enabled = Some(e);
        }
        if let Some(m) = &self.max_running {
            s.max_running = *m.get_ref();
        }
        if let Some(c) = &self.checkpoint_every {
            s.checkpoint_every = *c.get_ref();
        }
        s.threads = self.threads;
        if let Some(h) = &self.max_job_hours {
            s.max_job_time = std::time::Duration::from_secs_f64(*h.get_ref() * 3600.0);
        }
        if let Some(t) = &self.max_job_tokens {
            s.max_job_tokens = *t.get_ref();
        }
        if let Some(d) = self
            .device
            .as_ref()
            .and_then(|d| crate::finetune::device::DeviceSetting::parse(d.get_ref()))
        {
            s.device = d;
        }
        s
    }
}

/// `[web]`: the page teachers and students open.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebConfig {
    /// The gateway as browsers reach it, e.g. `https://box.example/aula`
    /// behind a reverse proxy that strips `/aula` [default: as requested].
    /// Its path prefixes every link; `https://` makes the session cookie
    /// `Secure`; "Sign in with JupyterHub" needs it (the OAuth redirect).
    pub public_url: Option<Spanned<String>>,
}

/// `[rag]`: how vector stores embed and ingest.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RagConfig {
    /// The model that embeds chunks and queries [default: the first
    /// embedding model (a GGUF that pools, such as all-MiniLM) configured].
    pub embedding_model: Option<String>,
    /// Files ingested at once [default: 2].
    pub ingest_workers: Option<Spanned<usize>>,
    /// On PostgreSQL: `"database"` searches stores inside it (full-text
    /// search, and pgvector where installed), `"memory"` loads each store
    /// into the gateway as on one box [default: "database"].
    pub search: Option<crate::rag::SearchPlace>,
}

impl RagConfig {
    pub fn settings(&self) -> crate::rag::RagSettings {
        let mut s = crate::rag::RagSettings {
            embedding_model: self.embedding_model.clone(),
            ..Default::default()
        };
        if let Some(w) = &self.ingest_workers {
            s.workers = *w.get_ref();
        }
        if let Some(p) = self.search {
            s.search = p;
        }
        s
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreloadEntry {
    /// "Mon-Fri 08:50", "Tue,Thu 13:55" or "08:50", in the machine's local time.
    pub at: Spanned<String>,
    pub models: Vec<String>,
}

/// The memory the embedded models may use together.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineConfig {
    /// Budget in GB (1e9 bytes) [default: the memory the OS says is available at start].
    pub memory_gb: Option<Spanned<f64>>,
    /// How long a request waits for its model to load [default: 300].
    pub load_timeout_seconds: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub host: Option<String>,
    pub port: Option<u16>,
    /// `postgres://user:password@host/db` or `sqlite://PATH`; default: aula.db
    /// (SQLite) in the data directory.
    pub database: Option<String>,
    /// On PostgreSQL, how long a request's hold on budgets outlives its
    /// gateway (a gateway renews its holds every third of it) [default: 15].
    pub reservation_lease_seconds: Option<u64>,
    /// On PostgreSQL, whether one gateway (the leader) schedules the
    /// engines and the others stand by [default: true]; false: each
    /// schedules its own requests (users hashed to gateways).
    pub one_scheduler: Option<bool>,
    /// Where uploaded files' bytes are kept [default: files/ in the data
    /// directory]; several gateways share one directory (a network file
    /// system) so any of them serves any file.
    pub files_dir: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FairnessConfig {
    pub input_weight: Option<f64>,
    pub output_weight: Option<f64>,
    pub max_queued_per_user: Option<usize>,
    pub max_queued: Option<usize>,
}

impl FairnessConfig {
    pub fn resolve(&self) -> crate::fair::FairConfig {
        let d = crate::fair::FairConfig::default();
        crate::fair::FairConfig {
            input_weight: self.input_weight.unwrap_or(d.input_weight),
            output_weight: self.output_weight.unwrap_or(d.output_weight),
            max_queued_per_user: self.max_queued_per_user.unwrap_or(d.max_queued_per_user),
            max_queued: self.max_queued.unwrap_or(d.max_queued),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TermConfig {
    /// First day of the term, `YYYY-MM-DD` (UTC).
    pub start: Spanned<String>,
}

/// One `[[limits]]` entry: for everyone, or one `role`, `group` or `user`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitEntry {
    pub role: Option<Spanned<String>>,
    pub group: Option<Spanned<String>>,
    pub user: Option<Spanned<String>>,
    pub requests_per_minute: Option<u64>,
    pub tokens_per_minute: Option<u64>,
    pub tokens_per_day: Option<u64>,
    pub tokens_per_week: Option<u64>,
    pub tokens_per_term: Option<u64>,
    pub concurrent_requests: Option<u64>,
    pub max_tokens: Option<u64>,
    pub models: Option<Vec<String>>,
    pub weight: Option<Spanned<f64>>,
    /// The largest file one upload may be, in MB [default: 512].
    pub max_file_mb: Option<u64>,
    /// What a user's uploaded files may take together, in MB [default: 2048].
    pub file_storage_mb: Option<u64>,
    /// Fine-tuning jobs waiting or training at once [default: 1].
    pub fine_tuning_jobs_at_once: Option<u64>,
    /// Fine-tuning jobs created per day [default: 5].
    pub fine_tuning_jobs_per_day: Option<u64>,
    /// Tokens fine-tuning jobs may train per term [default: no limit].
    pub fine_tuning_tokens_per_term: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JupyterHubConfig {
    /// The Hub's address, e.g. `http://127.0.0.1:8081` (its REST API is under /hub/api).
    pub url: Spanned<String>,
    /// Aula's service token at the Hub (or `api_token_env`: the variable that holds it).
    pub api_token: Option<String>,
    pub api_token_env: Option<String>,
    /// Aula's service name at the Hub [default: aula].
    pub service: Option<String>,
    /// How long a checked token is trusted without asking again [default: 60].
    pub cache_seconds: Option<u64>,
    /// How long to wait for the Hub [default: 5].
    pub timeout_seconds: Option<f64>,
    /// The Hub as browsers reach it, for "Sign in with JupyterHub"
    /// [default: `url`]. The sign-in also needs `[web] public_url`, and the
    /// Hub's service entry for Aula needs
    /// `"oauth_redirect_uri": "<public_url>/oauth_callback"`.
    pub public_url: Option<String>,
    /// Aula's OAuth client id at the Hub [default: `service-<service>`].
    pub oauth_client_id: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    /// Aula users (front ends such as Open WebUI) whose keys may act for
    /// the user named in `X-OpenWebUI-User-Email`/`-Id`/`-Name`: only for
    /// users whose role is at most the front end's own, and only under
    /// names that are valid Aula names (others are refused, not rewritten).
    #[serde(default)]
    pub trusted: Vec<String>,
    /// Of the `trusted` front ends, those that verify who their users are
    /// (single sign-on): their user `ada` is Aula's user `ada`. The others'
    /// users live in the front end's own namespace (`webui/ada`), so that
    /// signing up there under a classmate's address gets nothing of theirs.
    #[serde(default)]
    pub verified: Vec<Spanned<String>>,
    /// Shared secret of signed user tokens (JWT, HS256) that trusted front
    /// ends send in `X-Aula-User-Token` (or `jwt_secret_env`: the variable holding it).
    pub jwt_secret: Option<String>,
    pub jwt_secret_env: Option<String>,
    /// When set, a signed user token must carry this `aud`.
    pub jwt_audience: Option<String>,
    /// When set, a signed user token must carry this `iss`.
    pub jwt_issuer: Option<String>,
}

impl AuthSection {
    pub fn jwt(&self) -> Result<Option<crate::auth::JwtConfig>, String> {
        let secret = match (&self.jwt_secret, &self.jwt_secret_env) {
            (Some(s), _) => s.clone(),
            (None, Some(var)) => std::env::var(var)
                .map_err(|_| format!("[auth] jwt_secret_env names `{var}`, which is not set"))?,
            (None, None) => {
                if self.jwt_audience.is_some() || self.jwt_issuer.is_some() {
                    return Err(
                        "[auth] jwt_audience and jwt_issuer need jwt_secret (or jwt_secret_env)"
                            .into(),
                    );
                }
                return Ok(None);
            }
        };
        Ok(Some(crate::auth::JwtConfig {
            secret,
            audience: self.jwt_audience.clone(),
            issuer: self.jwt_issuer.clone(),
        }))
    }
}

mod models;

pub use aula_fleet::spec::{ModelSource, ModelSpec};
pub use models::{ModelEntry, Urls};

/// `30s`, `10m`, `2h`, `500ms`, or a number of seconds.
pub fn parse_duration(s: &str) -> Option<std::time::Duration> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    };
    (secs >= 0.0 && secs.is_finite()).then(|| std::time::Duration::from_secs_f64(secs))
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
        models::check(&cfg.models, text, &invalid)?;
        check_preload(&cfg, text, &invalid)?;
        check_machine(&cfg.machine, text, &invalid)?;
        check_rag(&cfg, text, &invalid)?;
        if let Some(m) = &cfg.fine_tuning.max_running
            && !(1..=8).contains(m.get_ref())
        {
            return Err(invalid(format!(
                "line {}: key `max_running` must be 1 to 8",
                line_of(text, m.span().start)
            )));
        }
        if let Some(c) = &cfg.fine_tuning.checkpoint_every
            && *c.get_ref() == 0
        {
            return Err(invalid(format!(
                "line {}: key `checkpoint_every` must be at least 1",
                line_of(text, c.span().start)
            )));
        }
        if let Some(h) = &cfg.fine_tuning.max_job_hours
            && !(h.get_ref().is_finite() && (0.001..=8760.0).contains(h.get_ref()))
        {
            return Err(invalid(format!(
                "line {}: key `max_job_hours` must be a number of hours from 0.001 to 8760",
                line_of(text, h.span().start)
            )));
        }
        if let Some(d) = &cfg.fine_tuning.device
            && crate::finetune::device::DeviceSetting::parse(d.get_ref()).is_none()
        {
            return Err(invalid(format!(
                "line {}: key `device` must be \"auto\", \"cpu\" or \"cuda\"",
                line_of(text, d.span().start)
            )));
        }
        if let Some(t) = &cfg.fine_tuning.max_job_tokens
            && *t.get_ref() == 0
        {
            return Err(invalid(format!(
                "line {}: key `max_job_tokens` must be at least 1",
                line_of(text, t.span().start)
            )));
        }
        if let Some(v) = cfg
            .auth
            .verified
            .iter()
            .find(|v| !cfg.auth.trusted.contains(v.get_ref()))
        {
            return Err(invalid(format!(
                "line {}: key `verified` names `{}`, which is not in `trusted`: list it there too",
                line_of(text, v.span().start),
                v.get_ref()
            )));
        }
        check_limits(&cfg.limits, text, &invalid)?;
        check_term(cfg.term.as_ref(), text, &invalid)?;
        check_hub(cfg.jupyterhub.as_ref(), text, &invalid)?;
        if let Some(u) = &cfg.web.public_url
            && !(u.get_ref().starts_with("http://") || u.get_ref().starts_with("https://"))
        {
            return Err(invalid(format!(
                "line {}: key `public_url`: give the address browsers use, starting with http:// or https://",
                line_of(text, u.span().start)
            )));
        }
        Ok(cfg)
    }

    /// The `[[preload]]` timetable.
    pub fn timetable(&self) -> Vec<aula_fleet::timetable::Slot> {
        self.preload
            .iter()
            .filter_map(|p| {
                aula_fleet::timetable::parse_at(p.at.get_ref())
                    .ok()
                    .map(|(days, time)| aula_fleet::timetable::Slot {
                        days,
                        time,
                        models: p.models.clone(),
                    })
            })
            .collect()
    }

    /// The `[[limits]]` rules.
    pub fn limit_rules(&self) -> Vec<crate::limits::LimitRule> {
        use crate::limits::{LimitFields, LimitRule, Scope};
        self.limits
            .iter()
            .map(|l| LimitRule {
                scope: if let Some(r) = &l.role {
                    r.get_ref()
                        .parse()
                        .map(Scope::Role)
                        .unwrap_or(Scope::Everyone)
                } else if let Some(g) = &l.group {
                    Scope::Group(g.get_ref().clone())
                } else if let Some(u) = &l.user {
                    Scope::User(u.get_ref().clone())
                } else {
                    Scope::Everyone
                },
                fields: LimitFields {
                    requests_per_minute: l.requests_per_minute,
                    tokens_per_minute: l.tokens_per_minute,
                    tokens_per_day: l.tokens_per_day,
                    tokens_per_week: l.tokens_per_week,
                    tokens_per_term: l.tokens_per_term,
                    concurrent_requests: l.concurrent_requests,
                    max_tokens: l.max_tokens,
                    models: l.models.clone(),
                    weight: l.weight.as_ref().map(|w| *w.get_ref()),
                    max_file_mb: l.max_file_mb,
                    file_storage_mb: l.file_storage_mb,
                    fine_tuning_jobs_at_once: l.fine_tuning_jobs_at_once,
                    fine_tuning_jobs_per_day: l.fine_tuning_jobs_per_day,
                    fine_tuning_tokens_per_term: l.fine_tuning_tokens_per_term,
                },
            })
            .collect()
    }

    pub fn term_start_ms(&self) -> Option<i64> {
        self.term
            .as_ref()
            .and_then(|t| parse_date_ms(t.start.get_ref()))
    }

    /// The Hub settings, with the token read from the environment if so configured.
    pub fn hub(&self) -> Result<Option<crate::auth::HubConfig>, String> {
        let Some(h) = &self.jupyterhub else {
            return Ok(None);
        };
        let api_token = match (&h.api_token, &h.api_token_env) {
            (Some(t), _) => t.clone(),
            (None, Some(var)) => std::env::var(var).map_err(|_| {
                format!("[jupyterhub] api_token_env names `{var}`, which is not set")
            })?,
            (None, None) => return Err("[jupyterhub] needs api_token or api_token_env".into()),
        };
        Ok(Some(crate::auth::HubConfig {
            url: h.url.get_ref().trim_end_matches('/').to_string(),
            api_token,
            service: h.service.clone().unwrap_or_else(|| "aula".into()),
            cache: std::time::Duration::from_secs(h.cache_seconds.unwrap_or(60)),
            timeout: std::time::Duration::from_secs_f64(h.timeout_seconds.unwrap_or(5.0).max(0.1)),
        }))
    }

    /// The web page's settings: its public address, and the Hub's sign-in
    /// when both a Hub and the public address are configured.
    pub fn web(&self) -> crate::web::WebSettings {
        let public_url = self
            .web
            .public_url
            .as_ref()
            .map(|u| u.get_ref().trim_end_matches('/').to_string());
        let hub_oauth = match (&self.jupyterhub, &public_url) {
            (Some(h), Some(_)) => Some(crate::web::HubOAuth {
                public_url: h
                    .public_url
                    .clone()
                    .unwrap_or_else(|| h.url.get_ref().clone())
                    .trim_end_matches('/')
                    .to_string(),
                client_id: h.oauth_client_id.clone().unwrap_or_else(|| {
                    format!("service-{}", h.service.as_deref().unwrap_or("aula"))
                }),
            }),
            _ => None,
        };
        crate::web::WebSettings {
            public_url,
            hub_oauth,
        }
    }

    /// The models to serve. With none configured, every GGUF in `models_dir`.
    pub fn model_specs(&self, models_dir: &Path) -> Result<Vec<ModelSpec>, String> {
        if self.models.is_empty() {
            return models::discover(models_dir);
        }
        Ok(self.models.iter().map(|m| m.spec(models_dir)).collect())
    }
}

/// `YYYY-MM-DD` -> Unix milliseconds at 00:00 UTC.
pub fn parse_date_ms(s: &str) -> Option<i64> {
    let d = chrono::NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").ok()?;
    if !(1970..=9999).contains(&chrono::Datelike::year(&d)) {
        return None;
    }
    Some(d.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis())
}

/// `http://h:p/v1/` -> `http://h:p`: requests keep their `/v1/...` path.
pub fn normalize_base(url: &str) -> String {
    let u = url.trim_end_matches('/');
    u.strip_suffix("/v1").unwrap_or(u).to_string()
}

/// The model name for a GGUF file found in the model directory: its stem, lower-cased.
pub fn name_for_file(path: &Path) -> String {
    aula_planner::model_name_for_file(path)
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
                facts: Default::default(),
                parallel: Some(2),
                context: None,
                threads: None,
                flags: Default::default(),
            }
        );
        assert_eq!(
            specs[1].source,
            ModelSource::Url {
                bases: vec!["http://127.0.0.1:8000".into()],
                upstream_model: None,
                parallel: None,
                key_env: None,
            }
        );
    }

    /// A `url` model's key comes from the environment variable it names;
    /// other models take none.
    #[test]
    fn url_servers_key_from_the_environment() {
        let c = Config::parse(
            "[[models]]\nname = \"b\"\nurl = [\"http://10.0.0.2:8000/v1\", \"http://10.0.0.3:8000/v1\"]\napi_key_env = \"BOX_KEY\"\n",
            "x",
        )
        .unwrap();
        let specs = c.model_specs(Path::new("/m")).unwrap();
        assert!(matches!(
            &specs[0].source,
            ModelSource::Url { bases, key_env: Some(v), .. } if bases.len() == 2 && v == "BOX_KEY"
        ));
        let e = err("[[models]]\nname = \"a\"\ngguf = \"a.gguf\"\napi_key_env = \"K\"\n");
        assert!(
            e.contains("line 2") && e.contains("api_key_env") && e.contains("only `url` models"),
            "{e}"
        );
    }

    /// GPU keys of an embedded model become `aula engine` flags; a wrong
    /// value names its key and line; other engines are told to use extra_args.
    #[test]
    fn gpu_keys_become_engine_flags() {
        let c = Config::parse(
            "[[models]]\nname = \"a\"\ngguf = \"a.gguf\"\ngpu_layers = \"all\"\ndevice = \"CUDA0\"\nflash_attn = \"on\"\ncache_type_k = \"q8_0\"\ncache_type_v = \"q8_0\"\n\n\
             [[models]]\nname = \"b\"\ngguf = \"b.gguf\"\ngpu_layers = 12\n",
            "x",
        )
        .unwrap();
        let specs = c.model_specs(Path::new("/m")).unwrap();
        let ModelSource::Embedded { flags, .. } = &specs[0].source else {
            panic!("{:?}", specs[0].source)
        };
        assert_eq!(
            flags.args(),
            [
                "--gpu-layers",
                "all",
                "--device",
                "CUDA0",
                "--flash-attn",
                "on",
                "--cache-type-k",
                "q8_0",
                "--cache-type-v",
                "q8_0"
            ]
        );
        let ModelSource::Embedded { flags, .. } = &specs[1].source else {
            panic!()
        };
        assert_eq!(flags.args(), ["--gpu-layers", "12"]);
        for (text, key) in [
            ("gpu_layers = \"most\"", "gpu_layers"),
            ("gpu_layers = -1", "gpu_layers"),
            ("flash_attn = \"yes\"", "flash_attn"),
            ("cache_type_v = \"q2_k\"", "cache_type_v"),
            ("device = \"CUDA0; rm -rf /\"", "device"),
        ] {
            let e = Config::parse(
                &format!("[[models]]\nname = \"a\"\ngguf = \"a.gguf\"\n{text}\n"),
                "x",
            )
            .unwrap_err()
            .to_string();
            assert!(e.contains(&format!("line 4: key `{key}`")), "{e}");
        }
        let e = Config::parse(
            "[[models]]\nname = \"a\"\nurl = \"http://127.0.0.1:8000\"\ngpu_layers = 3\n",
            "x",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("line 4") && e.contains("extra_args"), "{e}");
    }

    /// `chat_template_file` becomes `--chat-template-file`, relative to the
    /// models directory; only embedded models take it.
    #[test]
    fn a_chat_template_file_is_an_engine_flag() {
        let c = Config::parse(
            "[[models]]\nname = \"a\"\ngguf = \"a.gguf\"\nchat_template_file = \"qwen.jinja\"\n",
            "x",
        )
        .unwrap();
        let specs = c.model_specs(Path::new("/m")).unwrap();
        let ModelSource::Embedded { flags, .. } = &specs[0].source else {
            panic!("{:?}", specs[0].source)
        };
        assert_eq!(flags.args(), ["--chat-template-file", "/m/qwen.jinja"]);
        let e = Config::parse(
            "[[models]]\nname = \"a\"\nurl = \"http://127.0.0.1:8000\"\nchat_template_file = \"q.jinja\"\n",
            "x",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("line 4") && e.contains("chat_template_file"),
            "{e}"
        );
    }

    /// `preempt = false` on an embedded model starts its engine with
    /// `--no-preempt`, so that no user name (the gateway then sends none,
    /// and a client's own `user` would be the only one) steers its slots.
    #[test]
    fn preempt_false_turns_pausing_off_in_the_engine() {
        let c = Config::parse(
            "[[models]]\nname = \"a\"\ngguf = \"a.gguf\"\npreempt = false\n\n\
             [[models]]\nname = \"b\"\ngguf = \"b.gguf\"\n",
            "x",
        )
        .unwrap();
        let specs = c.model_specs(Path::new("/m")).unwrap();
        let flags = |i: usize| match &specs[i].source {
            ModelSource::Embedded { flags, .. } => flags.args(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            (specs[0].preempt, flags(0)),
            (false, vec!["--no-preempt".to_string()])
        );
        assert_eq!((specs[1].preempt, flags(1)), (true, Vec::<String>::new()));
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
        // The front end's own line, not the first text that says "verified".
        let e = err(
            "# verified front ends only\n[auth]\ntrusted = [\"webui\"]\nverified = [\n  \"webui\",\n  \"openui\",\n]\n",
        );
        assert!(
            e.contains("line 6") && e.contains("`openui`") && e.contains("trusted"),
            "{e}"
        );
    }

    #[test]
    fn access_sections() {
        let c = Config::parse(
            "[term]\nstart = \"2026-09-01\"\n\n[[limits]]\nrole = \"student\"\ntokens_per_day = 1000\n\n[[limits]]\ngroup = \"demo\"\nweight = 4.0\n",
            "x",
        )
        .unwrap();
        assert_eq!(c.term_start_ms(), Some(1_788_220_800_000));
        let r = c.limit_rules();
        assert_eq!(
            r[0].scope,
            crate::limits::Scope::Role(aula_store::Role::Student)
        );
        assert_eq!(r[1].fields.weight, Some(4.0));
        let e = err("[[limits]]\nrole = \"wizard\"\n");
        assert!(e.contains("line 2") && e.contains("role"), "{e}");
        let e = err("[[limits]]\nrole = \"student\"\nuser = \"x\"\n");
        assert!(e.contains("one of"), "{e}");
        let e = err("[[limits]]\ntokens_per_dya = 5\n");
        assert!(e.contains("tokens_per_dya"), "{e}");
        let e = err("[term]\nstart = \"Sept 1\"\n");
        assert!(e.contains("line 2"), "{e}");
        let e = err("[jupyterhub]\nurl = \"http://127.0.0.1:8081\"\n");
        assert!(e.contains("api_token"), "{e}");
        let e = err(
            "[[models]]\nname = \"a\"\ngguf = \"a.gguf\"\n\n[[preload]]\nat = \"Mon 25:00\"\nmodels = [\"a\"]\n",
        );
        assert!(e.contains("line 6") && e.contains("`at`"), "{e}");
        let e = err(
            "[[models]]\nname = \"a\"\ngguf = \"a.gguf\"\n\n[[preload]]\nat = \"08:50\"\nmodels = [\"b\"]\n",
        );
        assert!(e.contains("`b`"), "{e}");
        let c = Config::parse("[[models]]\nname = \"a\"\ngguf = \"a.gguf\"\n\n[[preload]]\nat = \"Mon-Fri 08:50\"\nmodels = [\"a\"]\n", "x").unwrap();
        assert_eq!(c.timetable()[0].days.len(), 5);
        assert_eq!(parse_date_ms("1970-01-02"), Some(86_400_000));
        assert_eq!(parse_date_ms("2026-13-01"), None);
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
