//! Calls to a running gateway's HTTP API, for the commands that use one
//! (`aula ps|load|unload`, `aula stores`).

use crate::cli::GatewayArgs;
use anyhow::{anyhow, bail};

/// A request body and its content type.
pub(crate) struct Payload {
    pub content_type: String,
    pub bytes: bytes::Bytes,
}

impl Payload {
    pub(crate) fn json(v: &serde_json::Value) -> Payload {
        Payload {
            content_type: "application/json".into(),
            bytes: bytes::Bytes::from(v.to_string()),
        }
    }
}

/// `method path` on the gateway, its JSON answer; an error answer becomes
/// its message.
pub(crate) async fn call(
    g: &GatewayArgs,
    method: &str,
    path: &str,
    body: Option<Payload>,
) -> anyhow::Result<serde_json::Value> {
    let base = g.url.trim_end_matches('/');
    let url = format!("{base}{path}");
    let mut builder = hyper::Request::builder().method(method).uri(&url);
    if let Some(b) = &body {
        builder = builder.header("content-type", &b.content_type);
    }
    let mut req = builder
        .body(http_body_util::Full::new(
            body.map(|b| b.bytes).unwrap_or_default(),
        ))
        .map_err(|e| anyhow!("bad gateway URL {url}: {e}"))?;
    // Without --api-key, the local admin token of this data directory — only
    // to a gateway on this machine: it is never sent anywhere else.
    let local = super::is_local_url(base);
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
