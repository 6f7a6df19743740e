//! `/v1/vector_stores/{id}/search`: the search request, also read by `/v1/responses`' `file_search`.

use super::super::Handle;
use super::*;
use crate::auth::Caller;
use crate::fields::{body_object, only};
use aula_protocol::ApiError;
use axum::body::Body;
use axum::extract::{Path, State};
use serde_json::{Map, Value};

/// A search's parameters, shared by `/search` and `file_search`.
pub(crate) struct SearchParams {
    pub queries: Vec<String>,
    pub filter: Option<aula_rag::Filter>,
    pub k: usize,
    pub threshold: Option<f32>,
    pub mode: aula_rag::Mode,
}

pub(crate) fn search_params(
    o: &Map<String, Value>,
    query_key: &str,
    k_key: &str,
) -> Result<SearchParams, ApiError> {
    let queries = match o.get(query_key) {
        Some(Value::String(s)) if !s.trim().is_empty() => vec![s.clone()],
        Some(Value::Array(l)) if !l.is_empty() && l.len() <= MAX_QUERIES => l
            .iter()
            .map(|q| {
                q.as_str()
                    .filter(|s| !s.trim().is_empty())
                    .map(String::from)
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                ApiError::invalid_param(
                    query_key,
                    format!("`{query_key}` must be non-empty strings"),
                )
            })?,
        _ => {
            return Err(ApiError::invalid_param(
                query_key,
                format!(
                    "`{query_key}` must be a non-empty string or a list of 1 to {MAX_QUERIES} strings"
                ),
            ));
        }
    };
    if let Some(q) = queries.iter().find(|q| q.chars().count() > MAX_QUERY_CHARS) {
        return Err(ApiError::invalid_param(
            query_key,
            format!(
                "a query may be at most {MAX_QUERY_CHARS} characters (this one has {})",
                q.chars().count()
            ),
        ));
    }
    let filter = match o.get("filters") {
        None | Some(Value::Null) => None,
        Some(f) => {
            Some(aula_rag::Filter::parse(f).map_err(|m| ApiError::invalid_param("filters", m))?)
        }
    };
    let k =
        match o.get(k_key) {
            None | Some(Value::Null) => 10,
            Some(v) => v.as_u64().filter(|n| (1..=50).contains(n)).ok_or_else(|| {
                ApiError::invalid_param(k_key, format!("`{k_key}` must be 1 to 50"))
            })? as usize,
        };
    let mut threshold = None;
    if let Some(r) = o.get("ranking_options").filter(|v| !v.is_null()) {
        let ro = r.as_object().ok_or_else(|| {
            ApiError::invalid_param("ranking_options", "`ranking_options` must be an object")
        })?;
        only(ro, &["ranker", "score_threshold"])?;
        if let Some(rk) = ro.get("ranker")
            && !matches!(rk.as_str(), Some("auto" | "none" | "default-2024-11-15"))
        {
            return Err(ApiError::invalid_param(
                "ranking_options",
                "`ranker` must be auto, none or default-2024-11-15",
            ));
        }
        if let Some(t) = ro.get("score_threshold") {
            threshold = Some(
                t.as_f64()
                    .filter(|t| (0.0..=1.0).contains(t))
                    .ok_or_else(|| {
                        ApiError::invalid_param(
                            "ranking_options",
                            "`score_threshold` must be 0 to 1",
                        )
                    })? as f32,
            );
        }
    }
    let mode = match o.get("search_mode") {
        None | Some(Value::Null) => aula_rag::Mode::Hybrid,
        Some(v) => v.as_str().and_then(aula_rag::Mode::parse).ok_or_else(|| {
            ApiError::invalid_param(
                "search_mode",
                "`search_mode` must be hybrid, dense or lexical",
            )
        })?,
    };
    Ok(SearchParams {
        queries,
        filter,
        k,
        threshold,
        mode,
    })
}

/// `POST /v1/vector_stores/{id}/search`.
pub async fn search(
    State(st): State<Handle>,
    Caller(id): Caller,
    Path(store_id): Path<String>,
    body: Body,
) -> Answer {
    let s = visible(&st, &id, &store_id).await?;
    let o = body_object(body).await?;
    only(
        &o,
        &[
            "query",
            "filters",
            "max_num_results",
            "ranking_options",
            "rewrite_query",
            "search_mode",
        ],
    )?;
    if o.get("rewrite_query").and_then(Value::as_bool) == Some(true) {
        return Err(ApiError::invalid_param(
            "rewrite_query",
            "Aula does not rewrite queries; leave out `rewrite_query` or set it to false",
        ));
    }
    let p = search_params(&o, "query", "max_num_results")?;
    let found = super::super::search::search(
        &st,
        &id,
        std::slice::from_ref(&s.id),
        &super::super::search::Request {
            queries: &p.queries,
            mode: p.mode,
            filter: p.filter.as_ref(),
            k: p.k,
            threshold: p.threshold,
        },
    )
    .await?;
    let data = found
        .into_iter()
        .map(|f| SearchHit {
            file_id: f.file_id,
            filename: f.filename,
            score: f.score,
            attributes: f.attributes,
            content: vec![SearchContent::Text { text: f.text }],
        })
        .collect();
    ok(SearchPage {
        object: "vector_store.search_results.page",
        search_query: p.queries.clone(),
        data,
        has_more: false,
        next_page: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params(v: Value) -> Result<SearchParams, ApiError> {
        search_params(
            v.as_object().unwrap_or(&Map::new()),
            "query",
            "max_num_results",
        )
    }

    #[test]
    fn queries_are_bounded_in_number_and_length() {
        let long = "w ".repeat(MAX_QUERY_CHARS);
        let e = params(json!({"query": long})).err().map(|e| e.to_string());
        assert!(
            e.as_deref()
                .is_some_and(|e| e.contains("at most 8000 characters")),
            "{e:?}"
        );
        let fine = "w".repeat(MAX_QUERY_CHARS);
        assert!(params(json!({"query": fine})).is_ok());
        assert!(params(json!({"query": vec!["a"; MAX_QUERIES + 1]})).is_err());
        assert!(params(json!({"query": "  "})).is_err());
    }
}
