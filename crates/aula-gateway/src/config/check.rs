//! The checks a configuration passes after it is parsed, each error naming
//! its key and line.

use super::*;

pub(super) type Invalid<'a> = &'a dyn Fn(String) -> ConfigError;

/// `[[preload]]`: a readable time, and models Aula starts.
pub(super) fn check_preload(cfg: &Config, text: &str, invalid: Invalid) -> Result<(), ConfigError> {
    for p in &cfg.preload {
        let line = line_of(text, p.at.span().start);
        aula_fleet::timetable::parse_at(p.at.get_ref())
            .map_err(|e| invalid(format!("line {line}: key `at`: {e}")))?;
        for m in &p.models {
            let known = cfg
                .models
                .iter()
                .any(|x| x.name.get_ref() == m && x.url.is_none());
            if !known {
                return Err(invalid(format!(
                    "line {line}: [[preload]] names `{m}`, which is not a model Aula starts (a `gguf` or engine entry)"
                )));
            }
        }
    }
    Ok(())
}

/// `[machine]`: a positive budget.
pub(super) fn check_machine(
    machine: &MachineConfig,
    text: &str,
    invalid: Invalid,
) -> Result<(), ConfigError> {
    if let Some(g) = &machine.memory_gb
        && !(*g.get_ref() > 0.0 && g.get_ref().is_finite())
    {
        return Err(invalid(format!(
            "line {}: key `memory_gb` must be a positive number of GB",
            line_of(text, g.span().start)
        )));
    }
    Ok(())
}

/// `[rag]`: an embedding model that is configured; 1 to 16 workers.
pub(super) fn check_rag(cfg: &Config, text: &str, invalid: Invalid) -> Result<(), ConfigError> {
    if let Some(w) = &cfg.rag.ingest_workers
        && !(1..=16).contains(w.get_ref())
    {
        return Err(invalid(format!(
            "line {}: key `ingest_workers` must be 1 to 16",
            line_of(text, w.span().start)
        )));
    }
    if let Some(m) = &cfg.rag.embedding_model
        && !cfg.models.is_empty()
        && !cfg.models.iter().any(|e| e.name.get_ref() == m)
    {
        return Err(invalid(format!(
            "[rag] key `embedding_model`: no [[models]] entry is named `{m}`"
        )));
    }
    Ok(())
}

/// `[[limits]]`: one scope each, a known role, a positive weight.
pub(super) fn check_limits(
    limits: &[LimitEntry],
    text: &str,
    invalid: Invalid,
) -> Result<(), ConfigError> {
    for l in limits {
        let scopes = [&l.role, &l.group, &l.user]
            .iter()
            .filter(|s| s.is_some())
            .count();
        let at = [&l.role, &l.group, &l.user]
            .iter()
            .find_map(|s| s.as_ref().map(|s| line_of(text, s.span().start)));
        if scopes > 1 {
            return Err(invalid(format!(
                "line {}: a [[limits]] entry applies to one of `role`, `group` or `user` (or, with none, to everyone)",
                at.unwrap_or(0)
            )));
        }
        if let Some(r) = &l.role
            && let Err(e) = r.get_ref().parse::<aula_store::Role>()
        {
            return Err(invalid(format!(
                "line {}: key `role`: {e}",
                line_of(text, r.span().start)
            )));
        }
        if let Some(w) = &l.weight
            && !(*w.get_ref() > 0.0 && w.get_ref().is_finite())
        {
            return Err(invalid(format!(
                "line {}: key `weight` must be a positive number",
                line_of(text, w.span().start)
            )));
        }
    }
    Ok(())
}

/// `[term]`: a date.
pub(super) fn check_term(
    term: Option<&TermConfig>,
    text: &str,
    invalid: Invalid,
) -> Result<(), ConfigError> {
    if let Some(t) = term
        && parse_date_ms(t.start.get_ref()).is_none()
    {
        return Err(invalid(format!(
            "line {}: key `start`: `{}` is not a date like 2026-09-01",
            line_of(text, t.start.span().start),
            t.start.get_ref()
        )));
    }
    Ok(())
}

/// `[jupyterhub]`: an http:// Hub and a service token.
pub(super) fn check_hub(
    hub: Option<&JupyterHubConfig>,
    text: &str,
    invalid: Invalid,
) -> Result<(), ConfigError> {
    if let Some(h) = hub {
        let u = h.url.get_ref();
        if !u.starts_with("http://") {
            return Err(invalid(format!(
                "line {}: key `url`: the Hub must be reached over http:// (loopback or a private network)",
                line_of(text, h.url.span().start)
            )));
        }
        if h.api_token.is_none() && h.api_token_env.is_none() {
            return Err(invalid(format!(
                "line {}: [jupyterhub] needs `api_token` or `api_token_env` (Aula's service token at the Hub)",
                line_of(text, h.url.span().start)
            )));
        }
    }
    Ok(())
}
