//! Text that crosses a trust boundary: a URL given as a destination, a token answer's
//! `api_domain`, a `Host` header on the admin listener, and a model's rewrite of a reply. None
//! may panic, and what each lets through keeps its promise.
#![no_main]

use deskhook::http::admin_access::AdminAccess;
use deskhook::outbound::destination;
use deskhook::region::trusted_api_domain;
use deskhook::workflow::reply::check_rewrite;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(url) = destination("DESKHOOK_LLM_URL", &text) {
        assert!(url.username().is_empty() && url.password().is_none());
        assert!(matches!(url.scheme(), "https" | "http"));
    }
    if let Some(domain) = trusted_api_domain(&text) {
        assert!(domain.starts_with("https://www.zohoapis.") || domain.starts_with("http://"));
    }
    let access = AdminAccess::new(false, vec!["deskhook-admin.desk.svc".into()]);
    if access.host_allowed(&text) {
        let host = text.trim().to_ascii_lowercase();
        assert!(
            host.starts_with("localhost")
                || host.starts_with("127.")
                || host.starts_with('[')
                || host.starts_with("::1")
                || host.starts_with("deskhook-admin.desk.svc"),
            "{host}"
        );
    }
    let (original, rewritten) = text.split_once('\u{0}').unwrap_or((&text, &text));
    assert!(check_rewrite(original, original).is_ok());
    let _ = check_rewrite(original, rewritten);
});
