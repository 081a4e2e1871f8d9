//! Zoho Desk's RS256 JWT verification against a JWKS served by a local endpoint: good tokens,
//! forged, expired and misdirected ones, missing tokens, and key rotation.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::State;
use axum::routing::get;
use deskhook::crd::ZohoJwtSpec;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use support::intake::{Intake, Reply, SECRET, SIGNATURE_HEADER, Server, WAIT, hmac_hex};

const ORG_ID: &str = "700000001";
const WEBHOOK_ID: &str = "42";
const JWT_HEADER: &str = "X-ZDesk-JWT";

const SIGNING_KEY: &str = include_str!("fixtures/jwt_signing_key.pem");
const ROTATED_KEY: &str = include_str!("fixtures/jwt_rotated_key.pem");
const IMPOSTOR_KEY: &str = include_str!("fixtures/jwt_impostor_key.pem");
const PUBLISHED: &str = include_str!("fixtures/jwks.json");

const SIGNING_KID: &str = "test-key-1";
const ROTATED_KID: &str = "test-key-2";

/// A local JWKS endpoint whose published keys the test chooses, counting fetches.
struct Jwks {
    url: String,
    keys: Arc<Mutex<Value>>,
    fetches: Arc<AtomicUsize>,
}

#[derive(Clone)]
struct JwksState {
    keys: Arc<Mutex<Value>>,
    fetches: Arc<AtomicUsize>,
}

async fn serve_jwks(State(state): State<JwksState>) -> Json<Value> {
    state.fetches.fetch_add(1, Ordering::SeqCst);
    Json(state.keys.lock().expect("not poisoned").clone())
}

impl Jwks {
    /// Starts an endpoint publishing the fixture keys named by `kids`.
    async fn publishing(kids: &[&str]) -> Self {
        let keys = Arc::new(Mutex::new(key_set(kids)));
        let fetches = Arc::new(AtomicUsize::new(0));
        let state = JwksState {
            keys: keys.clone(),
            fetches: fetches.clone(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a local port");
        let addr = listener.local_addr().expect("bound");
        let app = axum::Router::new()
            .route("/.well-known/jwks.json", get(serve_jwks))
            .with_state(state);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            url: format!("http://{addr}/.well-known/jwks.json"),
            keys,
            fetches,
        }
    }

    fn publish(&self, kids: &[&str]) {
        *self.keys.lock().expect("not poisoned") = key_set(kids);
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

/// The fixture JWKS reduced to the keys named by `kids`.
fn key_set(kids: &[&str]) -> Value {
    let all: Value = serde_json::from_str(PUBLISHED).expect("the fixture JWKS is JSON");
    let keys: Vec<Value> = all["keys"]
        .as_array()
        .expect("the fixture JWKS has keys")
        .iter()
        .filter(|key| kids.iter().any(|kid| key["kid"] == *kid))
        .cloned()
        .collect();
    assert_eq!(keys.len(), kids.len(), "every kid is in the fixture JWKS");
    json!({ "keys": keys })
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64
}

/// The claims Zoho Desk puts in a delivery token.
fn claims() -> Value {
    json!({
        "iss": format!("orgId:{ORG_ID}"),
        "aud": format!("webhookId:{WEBHOOK_ID}"),
        "iat": now(),
        "exp": now() + 300,
    })
}

fn with(mut claims: Value, patch: Value) -> Value {
    for (key, value) in patch.as_object().expect("a patch is an object") {
        claims[key] = value.clone();
    }
    claims
}

/// An RS256 token signed by the PEM key, naming `kid`.
fn token(pem: &str, kid: &str, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_owned());
    let key = EncodingKey::from_rsa_pem(pem.as_bytes()).expect("the fixture key is RSA");
    jsonwebtoken::encode(&header, claims, &key).expect("the token signs")
}

async fn jwt_server(jwks: &Jwks, hmac: Option<&str>) -> Server {
    let url = jwks.url.clone();
    Intake::new()
        .hmac_keys(hmac)
        .jwks_url(&url)
        .spec(|spec| {
            spec.verification.zoho_jwt = Some(ZohoJwtSpec {
                org_id: ORG_ID.into(),
                webhook_ids: vec!["41".into(), WEBHOOK_ID.into()],
                jwks_url: None,
            })
        })
        .start()
        .await
}

fn body(ticket: &str) -> Vec<u8> {
    json!([{"eventType": "Ticket_Add", "eventTime": now() * 1000, "orgId": ORG_ID,
            "payload": {"id": ticket}}])
    .to_string()
    .into_bytes()
}

async fn deliver(server: &Server, ticket: &str, token: &str) -> Reply {
    server
        .deliver_with(&body(ticket), &[(JWT_HEADER, token)])
        .await
}

async fn rejections(server: &Server, reason: &str) -> f64 {
    server
        .metric(&format!(
            "deskhook_webhook_rejections_total{{reason=\"{reason}\"}}"
        ))
        .await
}

#[tokio::test]
async fn a_token_signed_by_a_published_key_is_accepted() {
    let jwks = Jwks::publishing(&[SIGNING_KID]).await;
    let server = jwt_server(&jwks, None).await;
    for ticket in ["1892000000042001", "1892000000042002"] {
        // Zoho signs each delivery with a token of its own; a token is accepted once.
        let token = token(
            SIGNING_KEY,
            SIGNING_KID,
            &with(claims(), json!({"jti": ticket})),
        );
        let reply = deliver(&server, ticket, &token).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        assert_eq!(reply.json["events"][0]["status"], "queued");
    }
    assert_eq!(
        server
            .metric(r#"deskhook_signature_verified_total{key="test-key-1",scheme="zoho_jwt"}"#)
            .await,
        2.0
    );
    assert_eq!(jwks.fetches(), 1, "the key is cached after one fetch");
}

#[tokio::test]
async fn a_token_with_times_in_milliseconds_is_accepted() {
    let jwks = Jwks::publishing(&[SIGNING_KID]).await;
    let server = jwt_server(&jwks, None).await;
    let claims = with(
        claims(),
        json!({"iat": now() * 1000, "exp": (now() + 300) * 1000}),
    );
    let reply = deliver(&server, "1", &token(SIGNING_KEY, SIGNING_KID, &claims)).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
}

#[tokio::test]
async fn a_token_signed_by_an_unpublished_key_is_rejected_and_counted() {
    let jwks = Jwks::publishing(&[SIGNING_KID]).await;
    let server = jwt_server(&jwks, None).await;
    let forged = token(IMPOSTOR_KEY, SIGNING_KID, &claims());
    let reply = deliver(&server, "2", &forged).await;
    assert_eq!(reply.status, 401, "{}", reply.text);
    assert_eq!(
        reply.json,
        json!({"success": false, "error": "Invalid signature"})
    );
    assert_eq!(rejections(&server, "mismatch").await, 1.0);
    assert_eq!(
        server
            .metric(r#"deskhook_signature_failures_total{scheme="zoho_jwt"}"#)
            .await,
        1.0
    );
    assert_eq!(server.stats().await["counters"]["events_queued"], 0);
}

#[tokio::test]
async fn a_delivery_without_a_token_is_rejected() {
    let jwks = Jwks::publishing(&[SIGNING_KID]).await;
    let server = jwt_server(&jwks, None).await;
    let reply = server.deliver_with(&body("3"), &[]).await;
    assert_eq!(reply.status, 401, "{}", reply.text);
    assert_eq!(rejections(&server, "missing_header").await, 1.0);
    assert_eq!(jwks.fetches(), 0);
}

#[tokio::test]
async fn an_expired_token_is_rejected() {
    let jwks = Jwks::publishing(&[SIGNING_KID]).await;
    let server = jwt_server(&jwks, None).await;
    let expired = with(claims(), json!({"iat": now() - 7200, "exp": now() - 3600}));
    let reply = deliver(&server, "4", &token(SIGNING_KEY, SIGNING_KID, &expired)).await;
    assert_eq!(reply.status, 401, "{}", reply.text);
    assert_eq!(rejections(&server, "expired").await, 1.0);
}

#[tokio::test]
async fn a_token_for_another_webhook_is_rejected() {
    let jwks = Jwks::publishing(&[SIGNING_KID]).await;
    let server = jwt_server(&jwks, None).await;
    for aud in [json!("webhookId:999"), json!("42"), json!(["webhookId:4"])] {
        let misdirected = with(claims(), json!({ "aud": aud }));
        let reply = deliver(&server, "5", &token(SIGNING_KEY, SIGNING_KID, &misdirected)).await;
        assert_eq!(reply.status, 401, "aud {aud}: {}", reply.text);
    }
    assert_eq!(rejections(&server, "wrong_audience").await, 3.0);
}

#[tokio::test]
async fn a_token_from_another_org_is_rejected() {
    let jwks = Jwks::publishing(&[SIGNING_KID]).await;
    let server = jwt_server(&jwks, None).await;
    let other_org = with(claims(), json!({"iss": "orgId:700000002"}));
    let reply = deliver(&server, "6", &token(SIGNING_KEY, SIGNING_KID, &other_org)).await;
    assert_eq!(reply.status, 401, "{}", reply.text);
    assert_eq!(rejections(&server, "wrong_issuer").await, 1.0);
}

#[tokio::test]
async fn a_token_signed_with_a_shared_secret_algorithm_is_rejected() {
    let jwks = Jwks::publishing(&[SIGNING_KID]).await;
    let server = jwt_server(&jwks, None).await;
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(SIGNING_KID.into());
    // The attack: use the public key material as an HMAC secret.
    let hs256 = jsonwebtoken::encode(
        &header,
        &claims(),
        &EncodingKey::from_secret(PUBLISHED.as_bytes()).expect("any secret"),
    )
    .expect("the token signs");
    let reply = deliver(&server, "7", &hs256).await;
    assert_eq!(reply.status, 401, "{}", reply.text);
    assert_eq!(rejections(&server, "bad_algorithm").await, 1.0);
}

#[tokio::test]
async fn a_garbage_token_is_rejected_as_malformed() {
    let jwks = Jwks::publishing(&[SIGNING_KID]).await;
    let server = jwt_server(&jwks, None).await;
    for garbage in ["not-a-token", "a.b.c", "...."] {
        let reply = deliver(&server, "8", garbage).await;
        assert_eq!(reply.status, 401, "{garbage}: {}", reply.text);
    }
    assert_eq!(rejections(&server, "malformed").await, 3.0);
    assert_eq!(jwks.fetches(), 0);
}

#[tokio::test]
async fn both_keys_published_during_a_rotation_are_accepted() {
    let jwks = Jwks::publishing(&[SIGNING_KID, ROTATED_KID]).await;
    let server = jwt_server(&jwks, None).await;
    let old = deliver(&server, "9", &token(SIGNING_KEY, SIGNING_KID, &claims())).await;
    let new = deliver(&server, "10", &token(ROTATED_KEY, ROTATED_KID, &claims())).await;
    assert_eq!(old.status, 200, "{}", old.text);
    assert_eq!(new.status, 200, "{}", new.text);
    assert_eq!(
        server
            .metric(r#"deskhook_signature_verified_total{key="test-key-2",scheme="zoho_jwt"}"#)
            .await,
        1.0
    );
    assert_eq!(jwks.fetches(), 1);
}

#[tokio::test]
async fn unknown_key_ids_do_not_flood_the_jwks_endpoint() {
    let jwks = Jwks::publishing(&[SIGNING_KID]).await;
    let server = jwt_server(&jwks, None).await;
    let good = deliver(&server, "11", &token(SIGNING_KEY, SIGNING_KID, &claims())).await;
    assert_eq!(good.status, 200, "{}", good.text);
    for n in 0..5 {
        let forged = token(IMPOSTOR_KEY, &format!("invented-{n}"), &claims());
        let reply = deliver(&server, "12", &forged).await;
        assert_eq!(reply.status, 401, "{}", reply.text);
    }
    assert_eq!(rejections(&server, "unknown_key").await, 5.0);
    assert_eq!(jwks.fetches(), 1, "unknown kids refetched the JWKS");
}

#[tokio::test]
async fn a_key_published_after_a_rotation_is_fetched_once_the_refetch_interval_has_passed() {
    let jwks = Jwks::publishing(&[SIGNING_KID]).await;
    let url = jwks.url.clone();
    // This test polls with failing deliveries for longer than the default failure budget of
    // one client lasts; the budget is not what it is about.
    let server = Intake::new()
        .hmac_keys(None)
        .jwks_url(&url)
        .spec(|spec| {
            spec.limits.failed_verification_limit.enabled = false;
            spec.verification.zoho_jwt = Some(ZohoJwtSpec {
                org_id: ORG_ID.into(),
                webhook_ids: vec![WEBHOOK_ID.into()],
                jwks_url: None,
            })
        })
        .start()
        .await;
    let old_token = token(SIGNING_KEY, SIGNING_KID, &claims());
    let first = deliver(&server, "13", &old_token).await;
    assert_eq!(first.status, 200, "{}", first.text);

    jwks.publish(&[ROTATED_KID]);
    let new_token = token(ROTATED_KEY, ROTATED_KID, &claims());
    // The cache refetches an unknown kid at most once per MIN_REFETCH, so the new key is
    // picked up once that interval has passed since the first fetch.
    let deadline = tokio::time::Instant::now() + deskhook::verify::jwt::MIN_REFETCH + WAIT;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let reply = deliver(&server, &format!("14{attempt}"), &new_token).await;
        if reply.status == 200 {
            break;
        }
        assert_eq!(reply.status, 401, "{}", reply.text);
        assert!(
            tokio::time::Instant::now() < deadline,
            "the rotated key was never fetched"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(jwks.fetches(), 2);
    let retired = deliver(&server, "15", &old_token).await;
    assert_eq!(retired.status, 401, "a retired key still verifies");
}

#[tokio::test]
async fn an_unreachable_jwks_refuses_deliveries() {
    // A port that was just free: nothing listens there.
    let closed: SocketAddr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a local port");
        listener.local_addr().expect("bound")
    };
    let server = Intake::new()
        .hmac_keys(None)
        .jwks_url(&format!("http://{closed}/jwks"))
        .spec(|spec| {
            spec.verification.zoho_jwt = Some(ZohoJwtSpec {
                org_id: ORG_ID.into(),
                webhook_ids: vec![WEBHOOK_ID.into()],
                jwks_url: None,
            })
        })
        .start()
        .await;
    let reply = deliver(&server, "16", &token(SIGNING_KEY, SIGNING_KID, &claims())).await;
    assert_eq!(reply.status, 401, "{}", reply.text);
    assert_eq!(rejections(&server, "keys_unavailable").await, 1.0);
}

#[tokio::test]
async fn either_scheme_passes_a_delivery_when_both_are_configured() {
    let jwks = Jwks::publishing(&[SIGNING_KID]).await;
    let server = jwt_server(&jwks, Some(SECRET)).await;
    let by_hmac = server.deliver(&body("17")).await;
    assert_eq!(by_hmac.status, 200, "{}", by_hmac.text);
    let by_jwt = deliver(&server, "18", &token(SIGNING_KEY, SIGNING_KID, &claims())).await;
    assert_eq!(by_jwt.status, 200, "{}", by_jwt.text);

    let forged = token(IMPOSTOR_KEY, SIGNING_KID, &claims());
    let bad_both = body("19");
    let reply = server
        .deliver_with(
            &bad_both,
            &[
                (JWT_HEADER, &forged),
                (SIGNATURE_HEADER, &hmac_hex("wrong", &bad_both)),
            ],
        )
        .await;
    assert_eq!(reply.status, 401, "{}", reply.text);
    let stats = server.stats().await;
    assert_eq!(
        stats["configuration"]["verification_schemes"],
        json!(["zoho_jwt", "hmac"])
    );
}

#[tokio::test]
async fn a_replayed_token_is_refused_even_with_another_body() {
    let logs = support::intake::CapturedLogs::default();
    let _capture = logs.install();
    let jwks = Jwks::publishing(&[SIGNING_KID]).await;
    let server = jwt_server(&jwks, None).await;
    let captured = token(SIGNING_KEY, SIGNING_KID, &claims());
    let first = deliver(&server, "20", &captured).await;
    assert_eq!(first.status, 200, "{}", first.text);
    for ticket in ["20", "21"] {
        let replay = deliver(&server, ticket, &captured).await;
        assert_eq!(replay.status, 401, "{}", replay.text);
        assert!(!replay.text.contains(&captured));
    }
    assert_eq!(rejections(&server, "replayed").await, 2.0);
    // Another token with the same claims but its own id is a new delivery.
    let fresh = token(
        SIGNING_KEY,
        SIGNING_KID,
        &with(claims(), json!({"jti": "another"})),
    );
    assert_eq!(deliver(&server, "22", &fresh).await.status, 200);
    let again = token(
        SIGNING_KEY,
        SIGNING_KID,
        &with(claims(), json!({"jti": "another", "iat": now() - 1})),
    );
    let reply = deliver(&server, "23", &again).await;
    assert_eq!(reply.status, 401, "a token with a jti already seen passed");
    assert!(!logs.text().contains(&captured), "a token reached the logs");
}

#[tokio::test]
async fn replay_protection_can_be_turned_off() {
    let jwks = Jwks::publishing(&[SIGNING_KID]).await;
    let url = jwks.url.clone();
    let server = Intake::new()
        .hmac_keys(None)
        .jwks_url(&url)
        .spec(|spec| {
            spec.limits.reject_replayed_tokens = false;
            spec.verification.zoho_jwt = Some(ZohoJwtSpec {
                org_id: ORG_ID.into(),
                webhook_ids: vec![WEBHOOK_ID.into()],
                jwks_url: None,
            })
        })
        .start()
        .await;
    let reused = token(SIGNING_KEY, SIGNING_KID, &claims());
    for ticket in ["24", "25"] {
        let reply = deliver(&server, ticket, &reused).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
    }
}

/// A server behind a trusted proxy (the test client's own address), with JWT and HMAC, whose
/// failure budget is the default one (20 failures, then one a second).
async fn behind_a_proxy(jwks_url: &str) -> Server {
    Intake::new()
        .hmac_keys(Some(SECRET))
        .jwks_url(jwks_url)
        .spec(|spec| {
            spec.limits.trusted_proxies = vec!["127.0.0.1/32".into()];
            spec.verification.zoho_jwt = Some(ZohoJwtSpec {
                org_id: ORG_ID.into(),
                webhook_ids: vec![WEBHOOK_ID.into()],
                jwks_url: None,
            })
        })
        .start()
        .await
}

#[tokio::test]
async fn junk_tokens_through_a_trusted_proxy_never_lock_out_a_delivery_that_verifies() {
    let jwks = Jwks::publishing(&[SIGNING_KID]).await;
    let server = behind_a_proxy(&jwks.url).await;
    // The proxy relays a forger's junk without X-Forwarded-For: every request is the proxy's.
    let mut statuses = Vec::new();
    for n in 0..100 {
        let junk = deliver(&server, &format!("18920000000470{n:02}"), "not.a.token").await;
        statuses.push(junk.status);
    }
    assert!(statuses[..20].iter().all(|s| *s == 401), "{statuses:?}");
    assert!(
        statuses[20..].iter().all(|s| *s == 429),
        "the budget is spent after 20 failures: {statuses:?}"
    );
    // Zoho's deliveries through the same proxy still pass, whichever scheme signs them.
    let signed = server.deliver(&body("1892000000047101")).await;
    assert_eq!(signed.status, 200, "{}", signed.text);
    let token = token(SIGNING_KEY, SIGNING_KID, &claims());
    let jwt = deliver(&server, "1892000000047102", &token).await;
    assert_eq!(jwt.status, 200, "{}", jwt.text);
    // The forged tokens cost no key fetch beyond the one the genuine token needed.
    assert_eq!(jwks.fetches(), 1);
}

#[tokio::test]
async fn with_the_jwks_down_hmac_passes_and_jwt_is_refused_without_charging_the_budget() {
    let closed: SocketAddr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a local port");
        listener.local_addr().expect("bound")
    };
    let server = behind_a_proxy(&format!("http://{closed}/jwks")).await;
    for n in 0..30 {
        let token = token(SIGNING_KEY, SIGNING_KID, &claims());
        let reply = deliver(&server, &format!("18920000000480{n:02}"), &token).await;
        assert_eq!(reply.status, 401, "{}", reply.text);
        let signed = server
            .deliver(&body(&format!("18920000000481{n:02}")))
            .await;
        assert_eq!(signed.status, 200, "{}", signed.text);
    }
    assert_eq!(rejections(&server, "keys_unavailable").await, 30.0);
    // 30 refusals past a budget of 20, none charged: a forgery is still answered 401, not 429.
    let forged = server
        .deliver_with(
            &body("1892000000048200"),
            &[(SIGNATURE_HEADER, &hmac_hex("not-the-secret", b"x"))],
        )
        .await;
    assert_eq!(forged.status, 401, "{}", forged.text);
}
