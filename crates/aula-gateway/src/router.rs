//! Which backend serves which model name, and the fair queue in front of it.

use crate::backend::Backend;
use crate::fair::FairQueue;
use aula_protocol::ApiError;
use std::collections::HashMap;
use std::sync::Arc;

/// One model: its engine and the queue that admits requests to it.
#[derive(Clone)]
pub struct Route {
    pub backend: Arc<dyn Backend>,
    pub queue: Arc<FairQueue>,
}

#[derive(Clone, Default)]
pub struct ModelRouter {
    names: Vec<String>,
    routes: HashMap<String, Route>,
}

impl ModelRouter {
    pub fn add(&mut self, name: &str, backend: Arc<dyn Backend>, queue: Arc<FairQueue>) {
        if self
            .routes
            .insert(name.to_string(), Route { backend, queue })
            .is_none()
        {
            self.names.push(name.to_string());
        }
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn get(&self, name: &str) -> Result<&Route, ApiError> {
        self.routes.get(name).ok_or_else(|| {
            ApiError::ModelNotFound(format!(
                "the model `{name}` does not exist; available models: {}",
                self.names.join(", ")
            ))
        })
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Route)> {
        self.names
            .iter()
            .filter_map(|n| self.routes.get(n).map(|r| (n, r)))
    }
}
