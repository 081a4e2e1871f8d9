//! Outbound HTTP: where deskhook may send a secret or customer data, and how much of an answer
//! it reads.
//!
//! Two rules hold for every call deskhook makes:
//! - a destination that receives a key or customer data (the language model, the JWKS that
//!   decides which deliveries are genuine) is chosen where deskhook is installed, never in the
//!   `WebhookAutomation` resource, and is `https` unless it is on this machine ([`destination`]);
//! - an answer is read up to a fixed size ([`read_capped`]), so a hostile or broken peer
//!   cannot make a pod buffer without bound. Redirects are never followed (the shared client
//!   is built with none), so an allowed host cannot hand a request on to another.

use std::net::IpAddr;
use std::time::Duration;

use reqwest::Url;

/// The shared HTTP client could not be built (its TLS setup failed).
#[derive(Debug, thiserror::Error)]
#[error("failed to build the HTTP client")]
pub struct ClientError(#[source] reqwest::Error);

/// Builds the HTTP client shared by the JWKS cache and the Zoho clients.
pub fn http_client() -> Result<reqwest::Client, ClientError> {
    install_crypto_providers();
    // No redirects: a destination is trusted by its URL, so a hop elsewhere is never followed.
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(30))
        .user_agent(concat!("deskhook/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(ClientError)
}

/// One TLS and one JWT crypto provider per process, chosen explicitly.
fn install_crypto_providers() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
}

/// Why a destination was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DestinationError {
    #[error("{name} is not a URL: {reason}")]
    Parse { name: &'static str, reason: String },
    #[error("{name} must use https (plain http only to this machine: localhost, 127.0.0.1, ::1)")]
    Insecure { name: &'static str },
    #[error("{name} must not carry a user name or password: give credentials separately")]
    Credentials { name: &'static str },
}

/// Parses the URL of a destination named `name` (its variable, for the error message):
/// `https`, or `http` to a loopback host; no credentials in the URL.
pub fn destination(name: &'static str, text: &str) -> Result<Url, DestinationError> {
    let url = Url::parse(text.trim()).map_err(|e| DestinationError::Parse {
        name,
        reason: e.to_string(),
    })?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(DestinationError::Credentials { name });
    }
    match url.scheme() {
        "https" if url.host().is_some() => Ok(url),
        "http" if is_loopback(&url) => Ok(url),
        _ => Err(DestinationError::Insecure { name }),
    }
}

fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// An answer that could not be read within its bound.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("the answer is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("failed to read the answer")]
    Transport(#[source] reqwest::Error),
}

/// Reads `response`'s body, refusing it as soon as it passes `limit` bytes (a declared length
/// over the limit is refused before anything is read).
pub async fn read_capped(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, ReadError> {
    if response
        .content_length()
        .is_some_and(|declared| declared > limit as u64)
    {
        return Err(ReadError::TooLarge { limit });
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| ReadError::Transport(e.without_url()))?
    {
        if body.len() + chunk.len() > limit {
            return Err(ReadError::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_anywhere_and_http_only_to_this_machine() {
        for ok in [
            "https://api.example.com/v1",
            "http://127.0.0.1:8080/v1",
            "http://localhost:9000",
            "http://[::1]:7000/jwks",
        ] {
            assert!(destination("X", ok).is_ok(), "{ok}");
        }
        for (bad, expected) in [
            (
                "http://api.example.com/v1",
                DestinationError::Insecure { name: "X" },
            ),
            ("http://10.0.0.5/", DestinationError::Insecure { name: "X" }),
            ("ftp://127.0.0.1/", DestinationError::Insecure { name: "X" }),
            (
                "https://user:pw@api.example.com",
                DestinationError::Credentials { name: "X" },
            ),
        ] {
            assert_eq!(destination("X", bad), Err(expected), "{bad}");
        }
        assert!(matches!(
            destination("X", "not a url"),
            Err(DestinationError::Parse { .. })
        ));
    }
}
