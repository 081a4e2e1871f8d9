//! Any bytes as the `X-ZDesk-JWT` header, through the whole verification entry with no key
//! published: never panics, never verifies.
#![no_main]

use std::sync::LazyLock;

use deskhook::crd::ZohoJwtSpec;
use deskhook::verify::jwt;
use libfuzzer_sys::fuzz_target;

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
});

/// Nothing listens on port 9, so an unknown key fails fast and the cache's refetch interval
/// keeps it from being retried on every input.
static CACHE: LazyLock<jwt::JwksCache> = LazyLock::new(|| {
    jwt::JwksCache::new(deskhook::server::http_client().expect("the HTTP client builds"))
});

fuzz_target!(|token: &[u8]| {
    let spec = ZohoJwtSpec {
        org_id: "700000001".into(),
        webhook_ids: vec!["42".into()],
        jwks_url: None,
    };
    let outcome = RUNTIME.block_on(jwt::verify(&CACHE, "http://127.0.0.1:9/jwks", &spec, token));
    assert!(outcome.is_err());
    // The same bytes as a claims object, for the claim checks alone.
    let claims = serde_json::from_slice(token).unwrap_or(serde_json::Value::Null);
    let _ = jwt::check_claims(&claims, &spec, 1_714_560_000);
});
