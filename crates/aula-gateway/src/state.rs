//! The gateway put together: each feature's handle is assembled here from
//! the parts it needs, and nowhere else. A route's handler asks for its own
//! feature's handle (`State<files::Handle>`, `State<Arc<Gateway>>`...),
//! which axum takes from [`GatewayState`] through `FromRef`; no feature
//! module names this type.

use crate::pipeline::Gateway;
use axum::extract::FromRef;
use std::sync::Arc;

/// Every part, once (each an `Arc`: a clone is a few counts).
#[derive(Clone)]
pub struct GatewayState {
    /// The request path and the services it passes through.
    pub gw: Arc<Gateway>,
    pub files: Arc<crate::files::Files>,
    pub rag: Arc<crate::rag::Rag>,
    pub finetune: Arc<crate::finetune::FineTune>,
    pub web: Arc<crate::web::Web>,
}

impl GatewayState {
    pub fn files(&self) -> crate::files::Handle {
        crate::files::Handle {
            gw: self.gw.clone(),
            files: self.files.clone(),
        }
    }

    pub fn rag(&self) -> crate::rag::Handle {
        crate::rag::Handle {
            gw: self.gw.clone(),
            files: self.files.clone(),
            rag: self.rag.clone(),
        }
    }

    pub fn finetune(&self) -> crate::finetune::Handle {
        crate::finetune::Handle {
            gw: self.gw.clone(),
            files: self.files.clone(),
            finetune: self.finetune.clone(),
        }
    }

    pub fn responses(&self) -> crate::responses::Handle {
        crate::responses::Handle {
            gw: self.gw.clone(),
            rag: self.rag(),
        }
    }

    pub fn web(&self) -> crate::web::Handle {
        crate::web::Handle {
            gw: self.gw.clone(),
            web: self.web.clone(),
            finetune: self.finetune.clone(),
            responses: self.responses(),
        }
    }
}

macro_rules! handle_from_state {
    ($t:ty, $f:ident) => {
        impl FromRef<GatewayState> for $t {
            fn from_ref(st: &GatewayState) -> $t {
                st.$f()
            }
        }
    };
}

handle_from_state!(crate::files::Handle, files);
handle_from_state!(crate::rag::Handle, rag);
handle_from_state!(crate::finetune::Handle, finetune);
handle_from_state!(crate::responses::Handle, responses);
handle_from_state!(crate::web::Handle, web);

impl FromRef<GatewayState> for Arc<Gateway> {
    fn from_ref(st: &GatewayState) -> Arc<Gateway> {
        st.gw.clone()
    }
}

impl crate::auth::HasAuth for GatewayState {
    fn authenticator(&self) -> &crate::auth::Authenticator {
        &self.gw.auth
    }
}
