//! Delivery verification: fail closed, any configured scheme may pass a request.
//!
//! The raw body is verified before it is parsed. A [`Rejection`] carries a reason from a small
//! fixed set so it can label a metric; it never carries the signature, the token or the body.

pub mod hmac;
pub mod jwt;

use axum::http::HeaderMap;

use crate::config::{Settings, WatchedSecrets};
use crate::region;

/// The header Zoho Desk puts its JWT in.
pub const ZOHO_JWT_HEADER: &str = "x-zdesk-jwt";

/// A verification scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    ZohoJwt,
    Hmac,
    /// `--insecure-no-verification`.
    Disabled,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ZohoJwt => "zoho_jwt",
            Self::Hmac => "hmac",
            Self::Disabled => "disabled",
        }
    }
}

/// Why a delivery was refused: a bounded set, safe as a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    MissingHeader,
    BadEncoding,
    Mismatch,
    Expired,
    UnknownKey,
    WrongAudience,
    WrongIssuer,
    BadAlgorithm,
    Malformed,
    KeysUnavailable,
    NotConfigured,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MissingHeader => "missing_header",
            Self::BadEncoding => "bad_encoding",
            Self::Mismatch => "mismatch",
            Self::Expired => "expired",
            Self::UnknownKey => "unknown_key",
            Self::WrongAudience => "wrong_audience",
            Self::WrongIssuer => "wrong_issuer",
            Self::BadAlgorithm => "bad_algorithm",
            Self::Malformed => "malformed",
            Self::KeysUnavailable => "keys_unavailable",
            Self::NotConfigured => "not_configured",
        }
    }
}

/// A delivery that passed: which scheme, and which key (HMAC key index or JWT `kid`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub scheme: Scheme,
    pub key: String,
}

/// A delivery that did not pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// The scheme whose check failed; `None` when no signature header was present.
    pub scheme: Option<Scheme>,
    pub reason: Reason,
}

/// Checks deliveries against the schemes the settings in force configure.
pub struct Verifier {
    hmac_keys: WatchedSecrets,
    jwks: jwt::JwksCache,
    insecure: bool,
}

impl Verifier {
    pub fn new(hmac_keys: WatchedSecrets, http: reqwest::Client, insecure: bool) -> Self {
        Self {
            hmac_keys,
            jwks: jwt::JwksCache::new(http),
            insecure,
        }
    }

    /// Schemes configured by these settings and the secrets at hand.
    pub fn schemes(&self, settings: &Settings) -> Vec<Scheme> {
        let mut schemes = Vec::with_capacity(2);
        if settings.verification().zoho_jwt.is_some() {
            schemes.push(Scheme::ZohoJwt);
        }
        if !self.hmac_keys.is_empty() {
            schemes.push(Scheme::Hmac);
        }
        if schemes.is_empty() && self.insecure {
            schemes.push(Scheme::Disabled);
        }
        schemes
    }

    /// Whether verification is switched off by `--insecure-no-verification`.
    pub fn insecure(&self) -> bool {
        self.insecure
    }

    /// Whether the request carries a header any scheme would read.
    pub fn has_signature_header(&self, settings: &Settings, headers: &HeaderMap) -> bool {
        headers.contains_key(ZOHO_JWT_HEADER)
            || headers.contains_key(settings.verification().hmac.header.as_str())
    }

    /// Verifies one delivery.
    pub async fn verify(
        &self,
        settings: &Settings,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Verified, Rejection> {
        let schemes = self.schemes(settings);
        if schemes.is_empty() {
            return Err(Rejection {
                scheme: None,
                reason: Reason::NotConfigured,
            });
        }
        let mut failure = None;
        for scheme in schemes {
            let outcome = match scheme {
                Scheme::Disabled => Ok("none".to_owned()),
                Scheme::ZohoJwt => self.verify_jwt(settings, headers).await,
                Scheme::Hmac => self.verify_hmac(settings, headers, body),
            };
            match outcome {
                Ok(key) => return Ok(Verified { scheme, key }),
                Err(Reason::MissingHeader) => {}
                Err(reason) => {
                    failure.get_or_insert(Rejection {
                        scheme: Some(scheme),
                        reason,
                    });
                }
            }
        }
        Err(failure.unwrap_or(Rejection {
            scheme: None,
            reason: Reason::MissingHeader,
        }))
    }

    async fn verify_jwt(&self, settings: &Settings, headers: &HeaderMap) -> Result<String, Reason> {
        let spec = settings
            .verification()
            .zoho_jwt
            .as_ref()
            .ok_or(Reason::NotConfigured)?;
        let token = headers.get(ZOHO_JWT_HEADER).ok_or(Reason::MissingHeader)?;
        let url = spec
            .jwks_url
            .clone()
            .or_else(|| region::default_jwks_url(&settings.zoho().region))
            .ok_or(Reason::NotConfigured)?;
        jwt::verify(&self.jwks, &url, spec, token.as_bytes()).await
    }

    fn verify_hmac(
        &self,
        settings: &Settings,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<String, Reason> {
        let spec = &settings.verification().hmac;
        let signature = headers
            .get(spec.header.as_str())
            .ok_or(Reason::MissingHeader)?;
        let keys = self.hmac_keys.current();
        hmac::verify(&keys, signature.as_bytes(), spec.encoding, body).map(|i| i.to_string())
    }
}
