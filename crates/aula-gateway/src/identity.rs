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
    /// The local admin token from the data directory (`aula ps|load|unload`).
    Local,
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

    /// The bearer of the local admin token: the account that runs Aula.
    pub fn local_admin() -> Identity {
        Identity {
            name: "local-admin".into(),
            role: Role::Admin,
            groups: Vec::new(),
            via: Via::Local,
        }
    }
}
