//! Parsing and verification never panic, whatever the bytes, and ticket ids survive parsing
//! exactly.

use std::sync::LazyLock;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use deskhook::config::Secret;
use deskhook::crd::{SignatureEncoding, ZohoJwtSpec};
use deskhook::event::{Delivery, parse_delivery};
use deskhook::verify::{hmac as signature, jwt};
use hmac::{Hmac, Mac};
use proptest::prelude::*;
use serde_json::{Value, json};

/// Keys the payload and claim readers look at, so generated objects often hit them.
const KEYS: [&str; 21] = [
    "id",
    "ticketId",
    "ticket_id",
    "entityId",
    "ticket",
    "data",
    "eventType",
    "event_type",
    "event",
    "payload",
    "eventTime",
    "timestamp",
    "orgId",
    "departmentName",
    "department",
    "name",
    "iss",
    "aud",
    "exp",
    "iat",
    "kid",
];

const EVENT_TYPES: [&str; 9] = [
    "Ticket_Add",
    "Ticket_Update",
    "Ticket_Delete",
    "Ticket_Thread_Add",
    "Ticket_Comment_Add",
    "Contact_Add",
    "ticket.created",
    "ticket.comment_added",
    "",
];

/// Numbers at the edges of what JSON readers convert.
fn edge_number() -> impl Strategy<Value = Value> {
    prop::sample::select(vec![
        json!(i64::MIN),
        json!(i64::MAX),
        json!(u64::MAX),
        json!(-1),
        json!(0),
        json!(99_999_999_999_i64),
        json!(100_000_000_000_i64),
        json!(-100_000_000_000_i64),
        json!(1e300),
        json!(-1e300),
        json!(f64::MAX),
        json!(f64::MIN),
        json!(0.5),
    ])
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(KEYS.to_vec()).prop_map(str::to_owned),
        1 => "[a-zA-Z_]{0,8}",
    ]
}

/// Arbitrary JSON, biased towards the keys, strings and numbers deskhook reads.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        edge_number(),
        "[0-9 ]{0,40}".prop_map(Value::String),
        "-?[0-9]{1,20}".prop_map(Value::String),
        ".{0,16}".prop_map(Value::String),
        prop::sample::select(EVENT_TYPES.to_vec()).prop_map(Value::from),
        "(orgId|webhookId):[0-9]{0,4}".prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 96, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..6)
                .prop_map(|fields| Value::Object(fields.into_iter().collect())),
        ]
    })
}

/// What every parsed delivery promises: ids are exact decimal strings of bounded length.
fn assert_well_formed(delivery: &Delivery) {
    for event in &delivery.events {
        let id = &event.ticket_id;
        assert!(
            !id.is_empty() && id.len() <= 32 && id.bytes().all(|b| b.is_ascii_digit()),
            "ticket id {id:?}"
        );
        assert!(event.event_type.chars().count() <= 64);
    }
}

/// HMAC-SHA256 computed independently of the library.
fn hmac_of(key: &str, body: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).expect("any key length");
    mac.update(body);
    mac.finalize().into_bytes().to_vec()
}

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
});

/// A key cache pointed at a port where nothing listens: no token can verify.
static CACHE: LazyLock<jwt::JwksCache> = LazyLock::new(|| {
    jwt::JwksCache::new(deskhook::server::http_client().expect("the HTTP client builds"))
});

const NOWHERE: &str = "http://127.0.0.1:9/jwks";

fn jwt_spec() -> ZohoJwtSpec {
    ZohoJwtSpec {
        org_id: "700000001".into(),
        webhook_ids: vec!["42".into()],
        jwks_url: None,
    }
}

/// A token-shaped string: base64url header and claims around an arbitrary signature.
fn token_like() -> impl Strategy<Value = Vec<u8>> {
    let header = prop_oneof![
        json_value(),
        (
            prop::sample::select(vec!["RS256", "HS256", "none", "ES256", "rs256"]),
            prop::option::of(".{0,12}"),
        )
            .prop_map(|(alg, kid)| json!({"alg": alg, "kid": kid, "typ": "JWT"})),
    ];
    (header, json_value(), "[A-Za-z0-9_-]{0,64}").prop_map(|(header, claims, signature)| {
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string()),
            signature
        )
        .into_bytes()
    })
}

proptest! {
    #[test]
    fn parse_delivery_never_panics_on_arbitrary_bytes(body in any::<Vec<u8>>()) {
        if let Ok(delivery) = parse_delivery(&body) {
            assert_well_formed(&delivery);
        }
    }

    #[test]
    fn parse_delivery_never_panics_on_json_like_text(
        body in r#"[\[\]{}:,"0-9a-zA-Z_.\- ]{0,200}"#
    ) {
        if let Ok(delivery) = parse_delivery(body.as_bytes()) {
            assert_well_formed(&delivery);
        }
    }

    #[test]
    fn parse_delivery_never_panics_on_arbitrary_json(value in json_value()) {
        if let Ok(delivery) = parse_delivery(value.to_string().as_bytes()) {
            assert_well_formed(&delivery);
        }
    }

    #[test]
    fn parse_delivery_never_panics_on_native_events_with_arbitrary_fields(
        event_type in json_value(),
        event_time in json_value(),
        org_id in json_value(),
        payload in json_value(),
        known_type in prop::sample::select(EVENT_TYPES.to_vec()),
    ) {
        let body = json!([
            {"eventType": event_type, "eventTime": event_time, "orgId": org_id, "payload": payload},
            {"eventType": known_type, "eventTime": event_time, "orgId": org_id, "payload": payload},
        ]);
        let delivery = parse_delivery(body.to_string().as_bytes()).expect("an array parses");
        assert_well_formed(&delivery);
        prop_assert_eq!(
            delivery.events.len() + delivery.missing_ticket_id.len()
                + delivery.not_ticket_events.len(),
            2
        );
    }

    #[test]
    fn any_event_time_is_read_without_panicking(
        time in prop_oneof![
            edge_number(),
            json_value(),
            any::<i64>().prop_map(|t| json!(t.to_string())),
            prop::sample::select(vec![i64::MIN, i64::MAX]).prop_map(|t| json!(t.to_string())),
        ],
        legacy in any::<bool>(),
    ) {
        let body = if legacy {
            json!({"ticket_id": "1", "timestamp": time})
        } else {
            json!([{"eventType": "Ticket_Add", "eventTime": time, "payload": {"id": "1"}}])
        };
        let delivery = parse_delivery(body.to_string().as_bytes()).expect("parses");
        prop_assert_eq!(delivery.events.len(), 1);
    }

    #[test]
    fn a_native_u64_ticket_id_stays_exact(
        id in any::<u64>(),
        time in any::<i64>(),
        as_string in any::<bool>(),
        thread in any::<bool>(),
    ) {
        let id_value = if as_string { json!(id.to_string()) } else { json!(id) };
        let (event_type, payload) = if thread {
            ("Ticket_Thread_Add", json!({"id": "1", "ticketId": id_value}))
        } else {
            ("Ticket_Update", json!({"id": id_value}))
        };
        let body = json!([{"eventType": event_type, "eventTime": time, "payload": payload}]);
        let delivery = parse_delivery(body.to_string().as_bytes()).expect("parses");
        prop_assert_eq!(delivery.events.len(), 1);
        prop_assert_eq!(&delivery.events[0].ticket_id, &id.to_string());
    }

    #[test]
    fn a_legacy_u64_ticket_id_stays_exact(
        id in any::<u64>(),
        field in prop::sample::select(vec!["ticket_id", "ticketId", "id", "entityId", "ticket"]),
        depth in 0..4_usize,
    ) {
        let mut value = if field == "ticket" {
            json!({"ticket": {"id": id}})
        } else {
            json!({ field: id })
        };
        for _ in 0..depth {
            value = json!({ "data": value });
        }
        let delivery = parse_delivery(value.to_string().as_bytes()).expect("parses");
        prop_assert_eq!(delivery.events.len(), 1);
        prop_assert_eq!(&delivery.events[0].ticket_id, &id.to_string());
    }

    #[test]
    fn hmac_verify_never_panics_on_arbitrary_input(
        keys in prop::collection::vec(".{0,16}", 0..4),
        header in prop_oneof![any::<Vec<u8>>(), "(sha256=)?[0-9a-fA-F]{0,70}".prop_map(String::into_bytes)],
        body in any::<Vec<u8>>(),
        base64 in any::<bool>(),
    ) {
        let keys: Vec<Secret> = keys.into_iter().map(Secret::new).collect();
        let encoding = if base64 { SignatureEncoding::Base64 } else { SignatureEncoding::Hex };
        if let Ok(index) = signature::verify(&keys, &header, encoding, &body) {
            prop_assert!(index < keys.len());
        }
    }

    #[test]
    fn a_signature_verifies_under_the_key_that_made_it(
        keys in prop::collection::vec(".{0,16}", 1..4),
        pick in any::<prop::sample::Index>(),
        body in any::<Vec<u8>>(),
        base64 in any::<bool>(),
    ) {
        let key = &keys[pick.index(keys.len())];
        let raw = hmac_of(key, &body);
        let (header, encoding) = if base64 {
            (STANDARD.encode(&raw), SignatureEncoding::Base64)
        } else {
            (hex::encode(&raw), SignatureEncoding::Hex)
        };
        let first_match = keys.iter().position(|k| k == key).expect("picked from keys");
        let secrets: Vec<Secret> = keys.iter().cloned().map(Secret::new).collect();
        prop_assert_eq!(signature::verify(&secrets, header.as_bytes(), encoding, &body), Ok(first_match));
    }

    #[test]
    fn check_claims_never_panics_on_arbitrary_claims(
        claims in json_value(),
        exp in json_value(),
        iat in json_value(),
        now in 0..4_102_444_800_i64,
    ) {
        let _ = jwt::check_claims(&claims, &jwt_spec(), now);
        let shaped = json!({"iss": "orgId:700000001", "aud": "webhookId:42", "exp": exp, "iat": iat});
        let _ = jwt::check_claims(&shaped, &jwt_spec(), now);
    }

    #[test]
    fn jwt_verification_never_panics_on_arbitrary_tokens(
        token in prop_oneof![any::<Vec<u8>>(), token_like()],
    ) {
        let outcome = RUNTIME.block_on(jwt::verify(&CACHE, NOWHERE, &jwt_spec(), &token));
        prop_assert!(outcome.is_err(), "a token verified with no keys published");
    }
}
