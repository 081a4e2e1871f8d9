//! Stable JSON answers. Error bodies are fixed strings: they never echo input or internals.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// `{"success":false,"error":message}` with `status`.
pub fn error(status: StatusCode, message: &'static str) -> Response {
    (status, Json(json!({"success": false, "error": message}))).into_response()
}

/// A 503 telling the sender when to try again.
pub fn unavailable(message: &'static str, retry_after_seconds: u32) -> Response {
    let mut response = error(StatusCode::SERVICE_UNAVAILABLE, message);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_seconds));
    response
}

pub async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "Not found")
}
