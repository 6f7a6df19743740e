//! `aula ps`, `aula load`, `aula unload`: a running gateway's admin API,
//! read into the same wire types the gateway writes.

use super::{is_local_url, json, print};
use crate::cli::{GatewayArgs, ModelOpArgs, PsArgs};
use anyhow::{anyhow, bail};
use aula_protocol::admin::{ModelAnswer, Ps};

/// A call to a running gateway's admin API, its answer read as `T`.
async fn admin_call<T: serde::de::DeserializeOwned>(
    g: &GatewayArgs,
    method: &str,
    path: &str,
) -> anyhow::Result<T> {
    let base = g.url.trim_end_matches('/');
    let url = format!("{base}{path}");
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(&url)
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .map_err(|e| anyhow!("bad gateway URL {url}: {e}"))?;
    // Without --api-key, the local admin token of this data directory — only
    // to a gateway on this machine: it is never sent anywhere else.
    let local = is_local_url(base);
    let key = g.api_key.clone().filter(|k| !k.is_empty()).or_else(|| {
        local
            .then(aula_gateway::home::read_local_admin_token)
            .flatten()
    });
    if let Some(k) = &key {
        req.headers_mut().insert(
            "authorization",
            format!("Bearer {k}")
                .parse()
                .map_err(|_| anyhow!("the API key is not a valid header value"))?,
        );
    }
    let client = aula_fleet::backend::http_client();
    let resp = client
        .request(req)
        .await
        .map_err(|e| anyhow!("cannot reach the gateway at {base}: {e}"))?;
    let status = resp.status();
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .map_err(|e| anyhow!("reading the gateway's answer: {e}"))?
        .to_bytes();
    if !status.is_success() {
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        bail!(
            "{}",
            v["error"]["message"]
                .as_str()
                .map(String::from)
                .unwrap_or_else(|| format!("HTTP {status}"))
        );
    }
    serde_json::from_slice(&body).map_err(|e| {
        anyhow!("the gateway at {base} answered {path} with something unexpected: {e}")
    })
}

pub async fn ps(a: PsArgs) -> anyhow::Result<()> {
    let ps: Ps = admin_call(&a.gateway, "GET", "/admin/ps").await?;
    print(&if a.json { json(&ps)? } else { ps.to_text() });
    Ok(())
}

pub async fn load_unload(what: &str, a: ModelOpArgs) -> anyhow::Result<()> {
    let path = format!("/admin/{what}/{}", a.model);
    let answer: ModelAnswer = admin_call(&a.gateway, "POST", &path).await?;
    print(&format!("{}: {}\n", answer.model, answer.state.name()));
    Ok(())
}
