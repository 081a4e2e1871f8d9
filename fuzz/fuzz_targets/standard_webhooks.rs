//! Any bytes as the three Standard Webhooks headers and the body: reading never panics and a
//! random signature never verifies.
#![no_main]

use deskhook::config::Secret;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(4, |b| *b == b'\n');
    let id = parts.next().unwrap_or_default();
    let timestamp = parts.next().unwrap_or_default();
    let signature = parts.next().unwrap_or_default();
    let body = parts.next().unwrap_or_default();
    let secrets = [Secret::new("whsec_ZnV6ei1rZXk=")];
    let outcome =
        deskhook::verify::standard::verify(&secrets, id, timestamp, signature, body, 1_714_560_000);
    assert!(outcome.is_err());
});
