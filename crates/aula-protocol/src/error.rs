//! The one error enum of Aula's request path, and its single mapping to HTTP
//! status codes and OpenAI-style error bodies.

use http::StatusCode;
use serde_json::json;

/// Every way a request can fail, in the engine or in the gateway.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed or asks for something that is not supported.
    #[error("{message}")]
    InvalidRequest {
        message: String,
        param: Option<String>,
        code: Option<&'static str>,
    },
    /// No model of that name is served here.
    #[error("{0}")]
    ModelNotFound(String),
    /// Route does not exist.
    #[error("{0}")]
    NotFound(String),
    /// All slots are busy and the wait queue is full.
    #[error("{0}")]
    Overloaded(String),
    /// The engine behind a model is not (yet) available.
    #[error("{0}")]
    Unavailable(String),
    /// The gateway cannot reach the database it counts limits in: it
    /// refuses rather than let a request through uncounted (503).
    #[error("{0}")]
    StateUnavailable(String),
    /// This gateway is a standby: another one schedules the engines (503,
    /// to be retried, by a load balancer on the leader).
    #[error("{0}")]
    Standby(String),
    /// The engine answered with something that is not a valid response, or died.
    #[error("{0}")]
    BadGateway(String),
    /// The engine took longer than allowed to answer (504).
    #[error("{0}")]
    EngineTimeout(String),
    /// A bug or an unexpected failure inside Aula.
    #[error("{0}")]
    Internal(String),
    /// No valid credentials. The message never says whether a user or key exists.
    #[error("{0}")]
    Unauthorized(String),
    /// A rate or concurrency limit, or a full queue: try again later (429).
    #[error("{message}")]
    RateLimited {
        message: String,
        code: &'static str,
        retry_after_s: u64,
    },
    /// The request body is larger than the gateway accepts (413).
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The client did not send its request body in time (408).
    #[error("{0}")]
    RequestTimeout(String),
    /// A quota is spent or the request is not allowed for this user (403).
    #[error("{message}")]
    Forbidden {
        message: String,
        code: &'static str,
        /// When the quota resets (Unix seconds), if it does.
        resets_at: Option<i64>,
    },
}

impl ApiError {
    pub fn invalid(message: impl Into<String>) -> Self {
        ApiError::InvalidRequest {
            message: message.into(),
            param: None,
            code: None,
        }
    }

    pub fn invalid_param(param: &str, message: impl Into<String>) -> Self {
        ApiError::InvalidRequest {
            message: message.into(),
            param: Some(param.to_string()),
            code: None,
        }
    }

    pub fn context_exceeded(message: impl Into<String>) -> Self {
        ApiError::InvalidRequest {
            message: message.into(),
            param: Some("messages".to_string()),
            code: Some("context_length_exceeded"),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::ModelNotFound(_) | ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Overloaded(_)
            | ApiError::Unavailable(_)
            | ApiError::StateUnavailable(_)
            | ApiError::Standby(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            ApiError::EngineTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
        }
    }

    fn kind(&self) -> (&'static str, Option<&'static str>) {
        match self {
            ApiError::InvalidRequest { code, .. } => ("invalid_request_error", *code),
            ApiError::ModelNotFound(_) => ("invalid_request_error", Some("model_not_found")),
            ApiError::NotFound(_) => ("invalid_request_error", Some("not_found")),
            ApiError::Overloaded(_) => ("server_error", Some("overloaded")),
            ApiError::Unavailable(_) => ("server_error", Some("engine_unavailable")),
            ApiError::StateUnavailable(_) => ("server_error", Some("database_unavailable")),
            ApiError::Standby(_) => ("server_error", Some("standby_gateway")),
            ApiError::BadGateway(_) => ("server_error", Some("bad_gateway")),
            ApiError::EngineTimeout(_) => ("server_error", Some("engine_timeout")),
            ApiError::Internal(_) => ("server_error", Some("internal_error")),
            ApiError::Unauthorized(_) => ("invalid_request_error", Some("invalid_api_key")),
            ApiError::RateLimited { code, .. } => ("rate_limit_error", Some(*code)),
            ApiError::Forbidden { code, .. } => ("insufficient_quota", Some(*code)),
            ApiError::PayloadTooLarge(_) => ("invalid_request_error", Some("payload_too_large")),
            ApiError::RequestTimeout(_) => ("invalid_request_error", Some("request_timeout")),
        }
    }

    /// The error's `code` as the body names it (`bad_gateway`, `rate_limit_requests`...).
    pub fn code(&self) -> Option<&'static str> {
        self.kind().1
    }

    /// The OpenAI-style body: `{"error": {"message", "type", "param", "code"}}`.
    pub fn body(&self) -> serde_json::Value {
        let (kind, code) = self.kind();
        let param = match self {
            ApiError::InvalidRequest { param, .. } => param.clone(),
            ApiError::ModelNotFound(_) => Some("model".to_string()),
            _ => None,
        };
        let mut body = json!({"error": {"message": self.to_string(), "type": kind, "param": param, "code": code}});
        match self {
            ApiError::RateLimited { retry_after_s, .. } => {
                body["error"]["retry_after_seconds"] = json!(retry_after_s);
            }
            ApiError::Forbidden {
                resets_at: Some(t), ..
            } => {
                body["error"]["resets_at"] = json!(t);
            }
            _ => {}
        }
        body
    }
}

/// The one mapping to an HTTP answer: status, body, and the headers a
/// client acts on (`Retry-After`, `WWW-Authenticate`).
#[cfg(feature = "axum")]
impl axum::response::IntoResponse for ApiError {
    fn into_response(self) -> axum::response::Response {
        use axum::http::{HeaderValue, header};
        let status = self.status();
        let mut resp = (status, axum::Json(self.body())).into_response();
        match &self {
            ApiError::Overloaded(_)
            | ApiError::Unavailable(_)
            | ApiError::StateUnavailable(_)
            | ApiError::Standby(_) => {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            ApiError::RateLimited { retry_after_s, .. } => {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_s));
            }
            ApiError::Unauthorized(_) => {
                resp.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"aula\""),
                );
            }
            _ => {}
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_bodies() {
        let e = ApiError::invalid_param("max_tokens", "bad");
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        assert_eq!(e.body()["error"]["param"], "max_tokens");
        assert_eq!(e.body()["error"]["type"], "invalid_request_error");
        let e = ApiError::ModelNotFound("no such model".into());
        assert_eq!(e.status(), StatusCode::NOT_FOUND);
        assert_eq!(e.body()["error"]["code"], "model_not_found");
        assert_eq!(
            ApiError::Overloaded("x".into()).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            ApiError::BadGateway("x".into()).status(),
            StatusCode::BAD_GATEWAY
        );
        let e = ApiError::RateLimited {
            message: "slow down".into(),
            code: "rate_limit_requests",
            retry_after_s: 7,
        };
        assert_eq!(e.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(e.body()["error"]["code"], "rate_limit_requests");
        #[cfg(feature = "axum")]
        {
            use axum::response::IntoResponse;
            let r = e.into_response();
            assert_eq!(r.headers()[axum::http::header::RETRY_AFTER], "7");
        }
        let e = ApiError::Forbidden {
            message: "spent".into(),
            code: "quota_tokens_day",
            resets_at: Some(86400),
        };
        assert_eq!(e.status(), StatusCode::FORBIDDEN);
        assert_eq!(e.body()["error"]["resets_at"], 86400);
        assert_eq!(
            ApiError::Unauthorized("no".into()).status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            ApiError::PayloadTooLarge("big".into()).status(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert_eq!(
            ApiError::RequestTimeout("slow".into()).status(),
            StatusCode::REQUEST_TIMEOUT
        );
    }
}
