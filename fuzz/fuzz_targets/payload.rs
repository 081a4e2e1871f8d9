//! Any bytes as a webhook body: parsing never panics, and every ticket id it yields is a
//! bounded decimal string.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    if let Ok(delivery) = deskhook::event::parse_delivery(body) {
        for event in &delivery.events {
            let id = &event.ticket_id;
            assert!(!id.is_empty() && id.len() <= 32 && id.bytes().all(|b| b.is_ascii_digit()));
        }
    }
});
