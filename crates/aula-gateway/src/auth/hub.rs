//! JupyterHub tokens: asked of the Hub (its answers cached, its refusals
//! remembered, at most HUB_ASKING questions at once) and the Hub's OAuth
//! calls the web page's sign-in makes.

use super::*;
use crate::identity::{Identity, Via};
use aula_protocol::ApiError;
use aula_store::Role;
use aula_store::identity::{check_name, key_hash};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::sync::Arc;
use std::time::Duration;

impl Authenticator {
    pub(super) async fn check_hub(&self, token: &str) -> Result<Identity, ApiError> {
        let Some(hub) = &self.hub else {
            return Err(refused());
        };
        let hash = key_hash(token);
        let answers = &self.hub_answers;
        if answers.refused.contains_key(&hash) {
            return Err(refused());
        }
        // One question per token at a time: concurrent requests with the
        // same token wait for the first one's answer.
        let asked = answers
            .accepted
            .try_get_with(hash.clone(), async {
                let _turn = tokio::time::timeout(hub.timeout, answers.asking.acquire())
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .ok_or_else(|| {
                        HubRefusal::Unavailable(ApiError::Unavailable(
                            "too many JupyterHub tokens are being checked at once; try again shortly"
                                .into(),
                        ))
                    })?;
                match self.ask_hub(hub, token).await {
                    Ok(Ok(id)) => Ok(id),
                    Ok(Err(())) => Err(HubRefusal::Refused),
                    Err(e) => Err(HubRefusal::Unavailable(e)),
                }
            })
            .await;
        match asked {
            Ok(id) => Ok(id),
            Err(e) => match Arc::as_ref(&e) {
                HubRefusal::Refused => {
                    answers.refused.insert(hash, ()).await;
                    Err(refused())
                }
                HubRefusal::Unavailable(e) => Err(e.clone()),
            },
        }
    }

    /// Ok(Ok(identity)), Ok(Err(())) for a token the Hub refuses or that
    /// lacks access to this service, Err(503) when the Hub cannot answer.
    pub(super) async fn ask_hub(
        &self,
        hub: &HubConfig,
        token: &str,
    ) -> Result<Result<Identity, ()>, ApiError> {
        let unavailable = |why: String| {
            tracing::warn!("JupyterHub at {} cannot check a token: {why}", hub.url);
            ApiError::Unavailable(
                "JupyterHub cannot be reached to check your token; try again shortly".into(),
            )
        };
        let (status, body) = self
            .hub_get(hub, "/hub/api/user", token)
            .await
            .map_err(unavailable)?;
        if status == 401 || status == 403 || status == 404 {
            return Ok(Err(()));
        }
        if status != 200 {
            return Err(unavailable(format!("HTTP {status}")));
        }
        let v: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| unavailable(format!("bad JSON from /hub/api/user: {e}")))?;
        if v["kind"].as_str().is_some_and(|k| k != "user") {
            return Ok(Err(()));
        }
        let wanted = format!("access:services!service={}", hub.service);
        let allowed = v["scopes"].as_array().is_some_and(|s| {
            s.iter()
                .any(|s| s == "access:services" || s.as_str() == Some(&wanted))
        });
        let Some(name) = v["name"].as_str().filter(|_| allowed) else {
            return Ok(Err(()));
        };
        // Checked like every other name (it also goes into the Hub's URLs
        // below): a Hub account cannot pass for a built-in identity.
        if let Err(e) = check_name("user", name) {
            return Err(ApiError::Forbidden {
                message: format!("your JupyterHub user name cannot be used with Aula: {e}"),
                code: "user_name",
                resets_at: None,
            });
        }
        let mut groups = match names(&v["groups"]) {
            Some(g) => g,
            None => self.hub_groups(hub, name).await,
        };
        // A user Aula knows keeps Aula's role and gains Aula's groups.
        let local = self.store.user(name).await.ok().flatten();
        let role = local.as_ref().map(|u| u.role).unwrap_or(Role::Student);
        for g in local.map(|u| u.groups).unwrap_or_default() {
            if !groups.contains(&g) {
                groups.push(g);
            }
        }
        Ok(Ok(Identity {
            name: name.to_string(),
            role,
            groups,
            via: Via::JupyterHub,
        }))
    }

    /// A Hub user's groups asked with Aula's own token (the user's token
    /// could not read them); none when the Hub does not say.
    async fn hub_groups(&self, hub: &HubConfig, name: &str) -> Vec<String> {
        match self
            .hub_get(hub, &format!("/hub/api/users/{name}"), &hub.api_token)
            .await
        {
            Ok((200, b)) => serde_json::from_slice::<serde_json::Value>(&b)
                .ok()
                .and_then(|u| names(&u["groups"]))
                .unwrap_or_default(),
            _ => Vec::new(),
        }
    }

    /// The Hub, when one is configured.
    pub fn hub(&self) -> Option<&HubConfig> {
        self.hub.as_ref()
    }

    /// POST a form to `url` (the Hub's OAuth token endpoint): its JSON answer.
    pub async fn post_form(&self, url: &str, form: String) -> Result<serde_json::Value, String> {
        let timeout = self
            .hub
            .as_ref()
            .map(|h| h.timeout)
            .unwrap_or(Duration::from_secs(5));
        let req = axum::http::Request::post(url)
            .header(
                axum::http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(Full::new(Bytes::from(form)))
            .map_err(|e| e.to_string())?;
        let (status, body) = self.send(req, timeout).await?;
        // The Hub's answer is not logged: it may carry tokens. Its status
        // and, for JSON, the error code OAuth defines, are what is said.
        if status != 200 {
            let code = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error"].as_str().map(|e| format!(" ({e})")))
                .unwrap_or_default();
            return Err(format!("HTTP {status}{code}"));
        }
        serde_json::from_slice(&body).map_err(|_| "an answer that is not JSON".to_string())
    }

    /// One request to the Hub: its status and (bounded) body, within `timeout`.
    pub(super) async fn send(
        &self,
        req: axum::http::Request<Full<Bytes>>,
        timeout: Duration,
    ) -> Result<(u16, Bytes), String> {
        let fut = async {
            let resp = self.client.request(req).await.map_err(|e| e.to_string())?;
            let status = resp.status().as_u16();
            let body = http_body_util::Limited::new(resp.into_body(), HUB_ANSWER_MAX)
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok::<_, String>((status, body))
        };
        tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| format!("no answer within {timeout:?}"))?
    }

    pub(super) async fn hub_get(
        &self,
        hub: &HubConfig,
        path: &str,
        token: &str,
    ) -> Result<(u16, Bytes), String> {
        let req = axum::http::Request::get(format!("{}{path}", hub.url.trim_end_matches('/')))
            .header(axum::http::header::AUTHORIZATION, format!("token {token}"))
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        self.send(req, hub.timeout).await
    }
}

/// A JSON list of names (the strings in it), if it is a list.
fn names(v: &serde_json::Value) -> Option<Vec<String>> {
    v.as_array().map(|g| {
        g.iter()
            .filter_map(|g| g.as_str().map(String::from))
            .collect()
    })
}
