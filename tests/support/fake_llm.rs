//! A stand-in OpenAI-compatible chat API on a local port: it answers one fixed text and keeps
//! each request (the `Authorization` header and the JSON body) for the test to read.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};

/// Requests the stand-in model received: the `Authorization` header and the JSON body.
pub type Seen = Arc<Mutex<Vec<(Option<String>, Value)>>>;

/// Starts the model; returns its base URL (`…/v1`) and what it is sent.
pub async fn model(answer: &str) -> (String, Seen) {
    let seen: Seen = Arc::default();
    let answer = answer.to_owned();
    let app = Router::new()
        .route(
            "/v1/chat/completions",
            post(
                move |State(seen): State<Seen>,
                      headers: axum::http::HeaderMap,
                      Json(body): Json<Value>| {
                    let answer = answer.clone();
                    async move {
                        let auth = headers
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned);
                        seen.lock().unwrap().push((auth, body));
                        Json(json!({"choices": [{"message": {"role": "assistant", "content": answer}}]}))
                    }
                },
            ),
        )
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}
