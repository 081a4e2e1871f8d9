//! Any bytes as the HMAC signature header, in both encodings: decoding never panics and a
//! header verifies only if it carries the real signature.
#![no_main]

use deskhook::config::Secret;
use deskhook::crd::SignatureEncoding;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let split = data.first().map_or(0, |b| usize::from(*b)).min(data.len());
    let (header, body) = data.split_at(split);
    let keys = [Secret::new("fuzz-key")];
    for encoding in [SignatureEncoding::Hex, SignatureEncoding::Base64] {
        let outcome = deskhook::verify::hmac::verify(&keys, header, encoding, body);
        let signed = deskhook::verify::hmac::sign_encoded(&keys[0], body, encoding);
        if outcome.is_ok() {
            // Only the real signature verifies.
            let header = String::from_utf8_lossy(header).to_ascii_lowercase();
            assert!(header.contains(&signed.to_ascii_lowercase()));
        }
    }
});
