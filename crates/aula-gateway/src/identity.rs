//! Who a request is for, once authenticated.

use aula_store::Role;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// An Aula API key.
    Key,
    /// A JupyterHub token, resolved through the Hub.
    JupyterHub,
    /// A trusted front end acting for one of its users.
    FrontEnd,
    /// No authentication is configured (loopback only, or --insecure-no-auth).
    Open,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub role: Role,
    pub groups: Vec<String>,
    pub via: Via,
}

impl Identity {
    pub fn anonymous() -> Identity {
        Identity {
            name: "anonymous".into(),
            role: Role::Student,
            groups: Vec::new(),
            via: Via::Open,
        }
    }
}
