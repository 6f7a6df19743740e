//! Fine-tuned models being served, by name: what the request path needs to
//! route a fine-tuned model to its base's engine, and what fine-tuning
//! publishes when a job succeeds. One registry, shared by both (an `Arc`),
//! so that the request path does not depend on the fine-tuning feature.

use crate::identity::Identity;
use std::collections::HashMap;
use std::sync::RwLock;

/// A fine-tuned model being served.
#[derive(Debug, Clone)]
pub struct Tuned {
    pub job_id: String,
    pub owner: String,
    pub base: String,
    pub shared_groups: Vec<String>,
    pub created_ms: i64,
}

impl Tuned {
    pub fn visible_to(&self, id: &Identity) -> bool {
        self.owner == id.name || self.shared_groups.iter().any(|g| id.groups.contains(g))
    }
}

/// The fine-tuned models served, by name.
#[derive(Default)]
pub struct TunedModels {
    models: RwLock<HashMap<String, Tuned>>,
}

impl TunedModels {
    /// The fine-tuned model `name` as `id` may use it.
    pub fn model_for(&self, name: &str, id: &Identity) -> Option<Tuned> {
        let m = self.model(name)?;
        m.visible_to(id).then_some(m)
    }

    /// The fine-tuned model `name`, whoever may see it.
    pub fn model(&self, name: &str) -> Option<Tuned> {
        self.models.read().ok()?.get(name).cloned()
    }

    /// Every fine-tuned model `id` may use, oldest first.
    pub fn models_for(&self, id: &Identity) -> Vec<(String, Tuned)> {
        let mut v: Vec<(String, Tuned)> = self
            .models
            .read()
            .map(|m| {
                m.iter()
                    .filter(|(_, t)| t.visible_to(id))
                    .map(|(n, t)| (n.clone(), t.clone()))
                    .collect()
            })
            .unwrap_or_default();
        v.sort_by(|a, b| (a.1.created_ms, &a.0).cmp(&(b.1.created_ms, &b.0)));
        v
    }

    pub(crate) fn publish(&self, name: &str, t: Tuned) {
        if let Ok(mut m) = self.models.write() {
            m.insert(name.to_string(), t);
        }
    }

    pub(crate) fn unpublish(&self, name: &str) -> Option<Tuned> {
        self.models.write().ok()?.remove(name)
    }
}
