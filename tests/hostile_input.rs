//! Adversarial input for every parser that reads untrusted bytes: the payload parser, the
//! Standard Webhooks and `X-Forwarded-For` header readers, and the rule keyword matcher. None
//! may panic, and each stays bounded on deep nesting, huge arrays, invalid UTF-8 and long
//! keyword lists. (The HMAC and JWT readers are covered in `properties.rs`.)

use axum::http::HeaderValue;
use deskhook::config::Secret;
use deskhook::config::limits::{Networks, parse_network};
use deskhook::event::parse_delivery;
use deskhook::limits::client_addr;
use deskhook::verify::standard;
use deskhook::workflow::text::{MAX_KEYWORDS, Words, first_match, html_to_text, strip_quoted};
use proptest::prelude::*;

fn trusting_loopback() -> Networks {
    Networks {
        trusted_proxies: vec![parse_network("127.0.0.0/8").expect("a network")],
        allowed_sources: vec![],
    }
}

#[test]
fn deeply_nested_payloads_are_refused_without_overflowing_the_stack() {
    for depth in [200, 10_000, 100_000] {
        let arrays = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let objects = format!("{}1{}", r#"{"data":"#.repeat(depth), "}".repeat(depth));
        assert!(parse_delivery(arrays.as_bytes()).is_err(), "depth {depth}");
        assert!(parse_delivery(objects.as_bytes()).is_err(), "depth {depth}");
    }
}

#[test]
fn deep_nesting_inside_a_native_payload_is_kept_as_text_without_overflowing_the_stack() {
    for depth in [200, 100_000] {
        let deep = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let body = format!(r#"[{{"eventType":"Ticket_Add","payload":{{"id":"5","x":{deep}}}}}]"#);
        let delivery = parse_delivery(body.as_bytes()).expect("a valid delivery");
        let event = &delivery.events[0];
        assert_eq!(event.ticket_id, "5");
        // Too deep to become a tree: the workflow reads it as no payload at all.
        assert_eq!(
            event.payload.to_value().is_null(),
            depth > 128,
            "depth {depth}"
        );
    }
}

#[test]
fn a_huge_array_of_events_is_read_without_trouble() {
    let event = r#"{"eventType":"Ticket_Add","payload":{"id":"1"}},"#;
    let body = format!("[{}{}]", event.repeat(20_000), r#"{"eventType":"x"}"#);
    let delivery = parse_delivery(body.as_bytes()).expect("a valid delivery");
    assert_eq!(delivery.events.len(), 20_000);
}

#[test]
fn a_long_keyword_list_is_cut_at_the_documented_bound() {
    let haystack = Words::new("the needle is here");
    let mut list: Vec<String> = (0..10_000).map(|n| format!("absent{n}")).collect();
    list.push("needle".into());
    assert_eq!(
        first_match(&list, &haystack),
        None,
        "read past MAX_KEYWORDS"
    );
    list.truncate(MAX_KEYWORDS - 1);
    list.push("needle".into());
    assert_eq!(first_match(&list, &haystack), Some("needle"));
}

proptest! {
    #[test]
    fn standard_webhooks_headers_never_panic(
        id in prop::collection::vec(any::<u8>(), 0..300),
        timestamp in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..20),
            "[0-9]{0,14}".prop_map(String::into_bytes),
        ],
        signature in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..600),
            "(v1,[A-Za-z0-9+/=]{0,48} ?){0,20}".prop_map(String::into_bytes),
        ],
        body in prop::collection::vec(any::<u8>(), 0..256),
        now in any::<i64>(),
    ) {
        let secrets = [Secret::new("whsec_c2VjcmV0"), Secret::new("not base64 !")];
        let outcome = standard::verify(&secrets, &id, &timestamp, &signature, &body, now);
        prop_assert!(outcome.is_err(), "a random signature verified");
    }

    #[test]
    fn forwarded_for_never_panics_and_untrusted_peers_are_their_own_client(
        values in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 0..6),
        peer in any::<[u8; 4]>(),
    ) {
        let headers: Vec<HeaderValue> = values
            .iter()
            .filter_map(|v| HeaderValue::from_bytes(v).ok())
            .collect();
        let networks = trusting_loopback();
        // Through a trusted proxy whatever the header says is read without panicking.
        client_addr([127, 0, 0, 1].into(), headers.iter(), &networks);
        let peer = std::net::IpAddr::from(peer);
        if !networks.is_trusted_proxy(peer) {
            prop_assert_eq!(client_addr(peer, headers.iter(), &networks), peer);
        }
    }

    #[test]
    fn the_keyword_matcher_never_panics(
        keywords in prop::collection::vec(".{0,40}", 0..400),
        text in ".{0,2000}",
        raw in prop::collection::vec(any::<u8>(), 0..2000),
    ) {
        let lossy = String::from_utf8_lossy(&raw);
        for input in [text.as_str(), &lossy] {
            let haystack = Words::new(&strip_quoted(&html_to_text(input)));
            if let Some(found) = first_match(&keywords, &haystack) {
                prop_assert!(keywords.iter().take(MAX_KEYWORDS).any(|k| k == found));
            }
        }
    }
}
