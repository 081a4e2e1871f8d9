//! Delivery verification: fail closed, any configured scheme may pass a request.
//!
//! The raw body is verified before it is parsed. A [`Rejection`] carries a reason from a small
//! fixed set so it can label a metric; it never carries the signature, the token or the body.
//!
//! A Zoho JWT and a Standard Webhooks id are remembered once accepted ([`replay`]), so the same
//! one is refused while still valid; the plain body HMAC carries nothing to remember it by.

pub mod hmac;
pub mod jwt;
pub mod replay;
pub mod standard;

use axum::http::{HeaderMap, HeaderName};

use crate::config::{Settings, WatchedSecrets};
use crate::region;
use replay::{ReplayKey, SeenTokens};

/// The header Zoho Desk puts its JWT in.
pub const ZOHO_JWT_HEADER: &str = "x-zdesk-jwt";
const JWT_HEADER_NAME: HeaderName = HeaderName::from_static(ZOHO_JWT_HEADER);

/// A verification scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    ZohoJwt,
    Hmac,
    /// Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`).
    StandardWebhooks,
    /// `--insecure-no-verification`.
    Disabled,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ZohoJwt => "zoho_jwt",
            Self::Hmac => "hmac",
            Self::StandardWebhooks => "standard_webhooks",
            Self::Disabled => "disabled",
        }
    }
}

/// Why a request was refused: a bounded set, safe as a metric label.
///
/// The first group is about verification; the second about the request itself, refused by the
/// listener's limits before or instead of verification.
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
    /// A token or `webhook-id` already accepted within its validity.
    Replayed,
    /// A body over the size limit.
    TooLarge,
    /// Request line and headers over `spec.limits.maxHeaderBytes`.
    HeadersTooLarge,
    /// Headers not received within `spec.limits.headerReadTimeoutSeconds`.
    HeaderTimeout,
    /// Body not received within `spec.limits.bodyReadTimeoutSeconds`.
    BodyTimeout,
    /// Over the client's request budget.
    RateLimited,
    /// Over the client's failed-verification budget.
    TooManyFailures,
    /// Not in `spec.limits.allowedSourceRanges`.
    SourceNotAllowed,
    /// Over `spec.limits.maxConnections`.
    ConnectionLimit,
    /// A bad admin bearer token.
    AdminUnauthorized,
    /// The pod's budget of buffered body bytes is spent (503).
    BodyBudget,
    /// Over `spec.limits.maxConnectionsPerClient`.
    ClientConnectionLimit,
    /// A console or admin request whose `Host` is not one of the admin listener's names.
    ForeignHost,
    /// Too many console sign-in attempts in a minute.
    LoginLimited,
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
            Self::Replayed => "replayed",
            Self::TooLarge => "too_large",
            Self::HeadersTooLarge => "headers_too_large",
            Self::HeaderTimeout => "header_timeout",
            Self::BodyTimeout => "body_timeout",
            Self::RateLimited => "rate_limited",
            Self::TooManyFailures => "too_many_failures",
            Self::SourceNotAllowed => "source_not_allowed",
            Self::ConnectionLimit => "connection_limit",
            Self::AdminUnauthorized => "admin_unauthorized",
            Self::BodyBudget => "body_budget",
            Self::ClientConnectionLimit => "client_connection_limit",
            Self::ForeignHost => "foreign_host",
            Self::LoginLimited => "login_limited",
        }
    }
}

/// A delivery that passed: which scheme, and which key (HMAC key index or JWT `kid`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub scheme: Scheme,
    pub key: String,
    /// The token remembered for replay protection, to forget again with
    /// [`Verifier::release`] if the delivery ends up not accepted (so the sender may retry).
    pub claim: Option<ReplayKey>,
}

/// A delivery that did not pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// The scheme whose check failed; `None` when no signature header was present.
    pub scheme: Option<Scheme>,
    pub reason: Reason,
}

/// What a scheme that passed reports: the key that matched, and the token to remember (with
/// the Unix second it stops being valid) when the scheme has one.
type Passed = (String, Option<(ReplayKey, i64)>);

/// Checks deliveries against the schemes the settings in force configure.
pub struct Verifier {
    hmac_keys: WatchedSecrets,
    standard_keys: Option<WatchedSecrets>,
    jwks: jwt::JwksCache,
    /// Where Zoho's signing keys are fetched instead of the region's Desk host: the installer's
    /// choice (`DESKHOOK_JWKS_URL`), never the resource's.
    jwks_override: Option<reqwest::Url>,
    seen: SeenTokens,
    insecure: bool,
}

impl Verifier {
    pub fn new(hmac_keys: WatchedSecrets, http: reqwest::Client, insecure: bool) -> Self {
        Self {
            hmac_keys,
            standard_keys: None,
            jwks: jwt::JwksCache::new(http),
            jwks_override: None,
            seen: SeenTokens::default(),
            insecure,
        }
    }

    /// Fetches Zoho's signing keys from `url` instead of the region's Desk host.
    pub fn with_jwks_url(mut self, url: Option<reqwest::Url>) -> Self {
        self.jwks_override = url;
        self
    }

    /// Also accepts Standard Webhooks deliveries signed with one of `secrets` (`whsec_…`).
    pub fn with_standard_webhooks(mut self, secrets: WatchedSecrets) -> Self {
        self.standard_keys = Some(secrets);
        self
    }

    /// Forgets the token of a delivery that was verified but not accepted.
    pub fn release(&self, verified: &Verified) {
        if let Some(key) = verified.claim {
            self.seen.release(key);
        }
    }

    /// Schemes configured by these settings and the secrets at hand.
    pub fn schemes(&self, settings: &Settings) -> Vec<Scheme> {
        let mut schemes = Vec::with_capacity(3);
        if settings.verification().zoho_jwt.is_some() {
            schemes.push(Scheme::ZohoJwt);
        }
        if !self.hmac_keys.is_empty() {
            schemes.push(Scheme::Hmac);
        }
        if self.standard_keys.as_ref().is_some_and(|k| !k.is_empty()) {
            schemes.push(Scheme::StandardWebhooks);
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
        // Names parsed once (constants, and the settings' own): a lookup by `&str` parses the
        // name on every request.
        headers.contains_key(&JWT_HEADER_NAME)
            || headers.contains_key(&standard::SIGNATURE_HEADER_NAME)
            || headers.contains_key(&settings.hmac_header)
    }

    /// Verifies one delivery. Without `may_fetch_keys` (a client whose failure budget is
    /// spent) only what costs little is tried: HMACs and keys already cached, never a fetch.
    pub async fn verify(
        &self,
        settings: &Settings,
        headers: &HeaderMap,
        body: &[u8],
        may_fetch_keys: bool,
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
                Scheme::Disabled => Ok(("none".to_owned(), None)),
                Scheme::ZohoJwt => self.verify_jwt(settings, headers, may_fetch_keys).await,
                Scheme::Hmac => self.verify_hmac(settings, headers, body).map(|k| (k, None)),
                Scheme::StandardWebhooks => self.verify_standard(headers, body),
            };
            let outcome = outcome.and_then(|(key, claim)| {
                let claim = match claim {
                    Some((replay_key, valid_until)) if settings.limits().reject_replayed_tokens => {
                        if !self.seen.claim(replay_key, valid_until, jwt::now_seconds()) {
                            return Err(Reason::Replayed);
                        }
                        Some(replay_key)
                    }
                    _ => None,
                };
                Ok((key, claim))
            });
            match outcome {
                Ok((key, claim)) => return Ok(Verified { scheme, key, claim }),
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

    async fn verify_jwt(
        &self,
        settings: &Settings,
        headers: &HeaderMap,
        may_fetch_keys: bool,
    ) -> Result<Passed, Reason> {
        let spec = settings
            .verification()
            .zoho_jwt
            .as_ref()
            .ok_or(Reason::NotConfigured)?;
        let token = headers.get(&JWT_HEADER_NAME).ok_or(Reason::MissingHeader)?;
        let url = match &self.jwks_override {
            Some(url) => url.as_str().to_owned(),
            None => {
                region::default_jwks_url(&settings.zoho().region).ok_or(Reason::NotConfigured)?
            }
        };
        let passed =
            jwt::verify_token(&self.jwks, &url, spec, token.as_bytes(), may_fetch_keys).await?;
        Ok((passed.kid, Some((passed.replay_key, passed.valid_until))))
    }

    fn verify_standard(&self, headers: &HeaderMap, body: &[u8]) -> Result<Passed, Reason> {
        let keys = self.standard_keys.as_ref().ok_or(Reason::NotConfigured)?;
        let header = |name: &str| headers.get(name).ok_or(Reason::MissingHeader);
        let signature = headers
            .get(&standard::SIGNATURE_HEADER_NAME)
            .ok_or(Reason::MissingHeader)?;
        let id = header(standard::ID_HEADER)?;
        let timestamp = header(standard::TIMESTAMP_HEADER)?;
        let passed = standard::verify(
            &keys.current(),
            id.as_bytes(),
            timestamp.as_bytes(),
            signature.as_bytes(),
            body,
            jwt::now_seconds(),
        )?;
        // A replay must carry the original timestamp, refused anyway once out of tolerance.
        let valid_until = passed.timestamp + standard::TOLERANCE_SECONDS;
        let claim = (
            ReplayKey::of("webhook-id", passed.id.as_bytes()),
            valid_until,
        );
        Ok((passed.key.to_string(), Some(claim)))
    }

    fn verify_hmac(
        &self,
        settings: &Settings,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<String, Reason> {
        let spec = &settings.verification().hmac;
        let signature = headers
            .get(&settings.hmac_header)
            .ok_or(Reason::MissingHeader)?;
        let keys = self.hmac_keys.current();
        hmac::verify(&keys, signature.as_bytes(), spec.encoding, body).map(|i| i.to_string())
    }
}
