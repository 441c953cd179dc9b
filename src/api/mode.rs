//! Whether the gateway fronts a real NAS or its built-in simulator (demo mode). Demo mode is
//! said on every response (`X-Gateway-Mode: demo`) and in `/readyz`, so a forgotten
//! `upstream.url` cannot pass for a working deployment.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::error::InternalError;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use serde::Serialize;
use utoipa::ToSchema;

/// Response header naming demo mode, as the OpenAPI document spells it.
pub const MODE_HEADER_NAME: &str = "X-Gateway-Mode";
/// Response header naming demo mode.
pub const MODE_HEADER: HeaderName = HeaderName::from_static("x-gateway-mode");

/// What answers behind the gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum GatewayMode {
    /// A real NAS (`upstream.url`).
    Nas,
    /// The built-in DSM simulator with demo data: writes go nowhere.
    Demo,
}

/// Middleware (outermost, demo mode only): `X-Gateway-Mode: demo` on every answer, errors
/// included.
pub async fn mark_demo_responses(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let demo = HeaderValue::from_static("demo");
    match next.call(req).await {
        Ok(mut response) => {
            response.headers_mut().insert(MODE_HEADER, demo);
            Ok(response)
        }
        Err(error) => {
            let mut response = error.error_response();
            response.headers_mut().insert(MODE_HEADER, demo);
            Err(InternalError::from_response(error.to_string(), response).into())
        }
    }
}
