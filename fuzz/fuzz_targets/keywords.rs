//! Any text as a customer message and a keyword list: folding, quote stripping and matching
//! never panic, and a match is always one of the first `MAX_KEYWORDS` keywords.
#![no_main]

use deskhook::workflow::text::{MAX_KEYWORDS, Words, first_match, html_to_text, strip_quoted};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (keywords, message) = text.split_once('\u{0}').unwrap_or((&text, &text));
    let list: Vec<String> = keywords.split('|').map(str::to_owned).collect();
    let haystack = Words::new(&strip_quoted(&html_to_text(message)));
    if let Some(found) = first_match(&list, &haystack) {
        assert!(list.iter().take(MAX_KEYWORDS).any(|k| k == found));
    }
});
