//! A list's query string, read once for every list (files, vector stores,
//! a store's files, fine-tuning jobs): OpenAI's paging (`after`, `before`,
//! `limit`, `order`) and a list's own filter (`purpose`, `filter`). Each
//! list says which keys it takes and its `limit`'s default and ceiling; a
//! key it does not take is refused, naming it and what the call takes.

use aula_protocol::ApiError;

/// What one list call asked for.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Page {
    pub after: Option<String>,
    pub before: Option<String>,
    /// Within the list's bounds ([`Page::parse`]).
    pub limit: u64,
    /// `order=asc` (oldest first); else newest first.
    pub ascending: bool,
    pub purpose: Option<String>,
    pub filter: Option<String>,
}

/// Which keys a list takes, and its `limit`'s default and ceiling.
pub struct Takes {
    pub keys: &'static [&'static str],
    pub default_limit: u64,
    pub max_limit: u64,
}

impl Page {
    pub fn parse(q: Option<&str>, takes: &Takes) -> Result<Page, ApiError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(q.unwrap_or(""))
            .map_err(|e| ApiError::invalid(format!("the query string cannot be read: {e}")))?;
        let mut p = Page {
            limit: takes.default_limit,
            ..Page::default()
        };
        for (k, v) in pairs {
            if !takes.keys.contains(&k.as_str()) {
                return Err(ApiError::invalid_param(
                    &k,
                    format!(
                        "unknown parameter `{k}`; this call takes {}",
                        takes.keys.join(", ")
                    ),
                ));
            }
            match k.as_str() {
                "after" => p.after = Some(v),
                "before" => p.before = Some(v),
                "purpose" => p.purpose = Some(v),
                "filter" => p.filter = Some(v),
                "limit" => {
                    p.limit = v
                        .parse()
                        .ok()
                        .filter(|n| (1..=takes.max_limit).contains(n))
                        .ok_or_else(|| {
                            ApiError::invalid_param(
                                "limit",
                                format!("`limit` must be 1 to {}", takes.max_limit),
                            )
                        })?
                }
                "order" => {
                    p.ascending = match v.as_str() {
                        "asc" => true,
                        "desc" => false,
                        _ => {
                            return Err(ApiError::invalid_param(
                                "order",
                                "`order` must be asc or desc",
                            ));
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAKES: Takes = Takes {
        keys: &["after", "limit", "order"],
        default_limit: 20,
        max_limit: 100,
    };

    fn err(q: &str) -> String {
        match Page::parse(Some(q), &TAKES) {
            Err(e) => e.to_string(),
            Ok(p) => format!("accepted: {p:?}"),
        }
    }

    #[test]
    fn a_list_reads_what_it_takes_within_its_bounds() {
        let p = Page::parse(Some("after=file-1&limit=5&order=asc"), &TAKES).unwrap_or_default();
        assert_eq!(
            (p.after.as_deref(), p.limit, p.ascending),
            (Some("file-1"), 5, true)
        );
        let p = Page::parse(None, &TAKES).unwrap_or_default();
        assert_eq!((p.limit, p.ascending), (20, false));
        assert!(err("limit=0").contains("1 to 100"));
        assert!(err("limit=101").contains("1 to 100"));
        assert!(err("limit=x").contains("1 to 100"));
        assert!(err("order=up").contains("asc or desc"));
        // A key another list takes is refused here, naming what this takes.
        assert!(err("purpose=assistants").contains("after, limit, order"));
    }
}
