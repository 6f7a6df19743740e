//! `aula ps`, `aula load`, `aula unload`: a running gateway's admin API,
//! read into the same wire types the gateway writes.

use super::{json, print};
use crate::cli::{GatewayArgs, ModelOpArgs, PsArgs};
use anyhow::anyhow;
use aula_protocol::admin::{ModelAnswer, Ps};

/// A call to a running gateway's admin API, its answer read as `T`.
async fn admin_call<T: serde::de::DeserializeOwned>(
    g: &GatewayArgs,
    method: &str,
    path: &str,
) -> anyhow::Result<T> {
    let v = super::gateway::call(g, method, path, None).await?;
    serde_json::from_value(v).map_err(|e| {
        anyhow!(
            "the gateway at {} answered {path} with something unexpected: {e}",
            g.url
        )
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
