//! Which backend serves which model name.

use crate::backend::Backend;
use aula_protocol::ApiError;
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Clone, Default)]
pub struct ModelRouter {
    names: Vec<String>,
    backends: HashMap<String, Arc<dyn Backend>>,
}

impl ModelRouter {
    pub fn add(&mut self, name: &str, backend: Arc<dyn Backend>) {
        if self.backends.insert(name.to_string(), backend).is_none() {
            self.names.push(name.to_string());
        }
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn get(&self, name: &str) -> Result<&Arc<dyn Backend>, ApiError> {
        self.backends.get(name).ok_or_else(|| {
            ApiError::ModelNotFound(format!(
                "the model `{name}` does not exist; available models: {}",
                self.names.join(", ")
            ))
        })
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Arc<dyn Backend>)> {
        self.names
            .iter()
            .filter_map(|n| self.backends.get(n).map(|b| (n, b)))
    }
}
