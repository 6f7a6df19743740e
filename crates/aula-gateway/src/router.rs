//! Which backend serves which model name (or alias), and the fair queue in front of it.

use crate::fair::FairQueue;
use aula_fleet::backend::Backend;
use aula_protocol::ApiError;
use std::collections::HashMap;
use std::sync::Arc;

/// One model: its engine and the queue that admits requests to it.
#[derive(Clone)]
pub struct Route {
    /// The model's configured name (what the ledger and metrics use).
    pub name: String,
    /// The name to send to the engine, when it differs from what the client sent.
    pub upstream_model: String,
    pub backend: Arc<dyn Backend>,
    pub queue: Arc<FairQueue>,
    /// Tokens per request the engine holds, when Aula knows it (it started
    /// the engine with that context): `max_tokens` above it is refused.
    pub context: Option<u32>,
    /// An embedding model (it cannot chat).
    pub embedding: bool,
    /// The engine pauses over-share users' sequences: each request it is
    /// sent names its user (an opaque id).
    pub preempt: bool,
}

#[derive(Clone, Default)]
pub struct ModelRouter {
    names: Vec<String>,
    routes: HashMap<String, Route>,
    aliases: HashMap<String, String>,
}

impl ModelRouter {
    pub fn add(&mut self, name: &str, backend: Arc<dyn Backend>, queue: Arc<FairQueue>) {
        self.add_as(name, name, backend, queue);
    }

    /// A model whose engine knows it as `upstream_model`.
    pub fn add_as(
        &mut self,
        name: &str,
        upstream_model: &str,
        backend: Arc<dyn Backend>,
        queue: Arc<FairQueue>,
    ) {
        let route = Route {
            name: name.to_string(),
            upstream_model: upstream_model.to_string(),
            backend,
            queue,
            context: None,
            embedding: false,
            preempt: false,
        };
        if self.routes.insert(name.to_string(), route).is_none() {
            self.names.push(name.to_string());
        }
    }

    /// Mark a model's engine as one that pauses over-share users.
    pub fn set_preempt(&mut self, name: &str) {
        if let Some(r) = self.routes.get_mut(name) {
            r.preempt = true;
        }
    }

    /// Mark a model as an embedding model.
    pub fn set_embedding(&mut self, name: &str) {
        if let Some(r) = self.routes.get_mut(name) {
            r.embedding = true;
        }
    }

    /// The context per request of a model's engine, when Aula knows it.
    pub fn set_context(&mut self, name: &str, context: u32) {
        if let Some(r) = self.routes.get_mut(name) {
            r.context = Some(context);
        }
    }

    pub fn alias(&mut self, alias: &str, name: &str) {
        self.aliases.insert(alias.to_string(), name.to_string());
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Every name a client may use: models, then aliases.
    pub fn all_names(&self) -> Vec<String> {
        let mut v = self.names.clone();
        let mut a: Vec<String> = self.aliases.keys().cloned().collect();
        a.sort();
        v.extend(a);
        v
    }

    pub fn get(&self, name: &str) -> Result<&Route, ApiError> {
        let canonical = self.aliases.get(name).map(String::as_str).unwrap_or(name);
        self.routes.get(canonical).ok_or_else(|| {
            ApiError::ModelNotFound(format!(
                "the model `{name}` does not exist; available models: {}",
                self.all_names().join(", ")
            ))
        })
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Route)> {
        self.names
            .iter()
            .filter_map(|n| self.routes.get(n).map(|r| (n, r)))
    }
}
