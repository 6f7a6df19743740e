//! One plan question as a person asks it — `aula plan`'s flags or the web
//! page's form — turned into the planner's request for a model: the one
//! place that decides which precision a model is planned at.

use crate::estimate::{PlanRequest, Precision};
use crate::shape::ModelShape;

/// The question: everything of the request but the precision, and the
/// precision as asked (None: not asked).
#[derive(Debug, Clone, Default)]
pub struct PlanQuery {
    pub request: PlanRequest,
    pub precision: Option<String>,
}

impl PlanQuery {
    /// The request for `shape`: the precision asked for; else the one the
    /// model was released in (gpt-oss: MXFP4); else f16. A GGUF's weights
    /// are its tensor table's, whatever was asked (named `gguf`).
    pub fn resolve(&self, shape: &ModelShape) -> Result<PlanRequest, String> {
        let name = self
            .precision
            .as_deref()
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .or(shape.released_as.as_deref())
            .unwrap_or("f16");
        let mut request = self.request.clone();
        request.precision = Precision::parse(name)?;
        if shape.source.starts_with("GGUF") {
            request.precision.name = "gguf".into();
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_precision_asked_then_the_released_one_then_f16() {
        let mut shape = crate::catalog::find("llama-3.1-8b").unwrap();
        let q = |p: Option<&str>| PlanQuery {
            precision: p.map(String::from),
            ..PlanQuery::default()
        };
        assert_eq!(
            q(Some("q4_k_m")).resolve(&shape).unwrap().precision.name,
            "q4_k_m"
        );
        assert_eq!(q(None).resolve(&shape).unwrap().precision.name, "f16");
        assert_eq!(q(Some(" ")).resolve(&shape).unwrap().precision.name, "f16");
        shape.released_as = Some("mxfp4".into());
        assert_eq!(q(None).resolve(&shape).unwrap().precision.name, "mxfp4");
        assert_eq!(
            q(Some("q8_0")).resolve(&shape).unwrap().precision.name,
            "q8_0"
        );
        shape.source = "GGUF file".into();
        assert_eq!(
            q(Some("q8_0")).resolve(&shape).unwrap().precision.name,
            "gguf"
        );
        assert!(q(Some("q9_z")).resolve(&shape).is_err());
    }
}
