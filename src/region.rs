//! Zoho data centres and their hosts.
//!
//! Desk hosts come from a static table (the token answer's `api_domain` is the CRM host, not
//! Desk's); every base URL can be overridden for proxies and tests.

/// The hosts of one Zoho data centre.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    pub accounts: &'static str,
    pub desk: &'static str,
    pub crm: &'static str,
}

/// The hosts of a region code as written in `spec.zoho.region`.
pub fn hosts(region: &str) -> Option<Region> {
    let (accounts, desk, crm) = match region {
        "com" => ("accounts.zoho.com", "desk.zoho.com", "www.zohoapis.com"),
        "eu" => ("accounts.zoho.eu", "desk.zoho.eu", "www.zohoapis.eu"),
        "in" => ("accounts.zoho.in", "desk.zoho.in", "www.zohoapis.in"),
        "com.au" => (
            "accounts.zoho.com.au",
            "desk.zoho.com.au",
            "www.zohoapis.com.au",
        ),
        "jp" => ("accounts.zoho.jp", "desk.zoho.jp", "www.zohoapis.jp"),
        "ca" => (
            "accounts.zohocloud.ca",
            "desk.zohocloud.ca",
            "www.zohoapis.ca",
        ),
        "sa" => ("accounts.zoho.sa", "desk.zoho.sa", "www.zohoapis.sa"),
        "uk" => ("accounts.zoho.uk", "desk.zoho.uk", "www.zohoapis.uk"),
        "com.cn" => (
            "accounts.zoho.com.cn",
            "desk.zoho.com.cn",
            "www.zohoapis.com.cn",
        ),
        "sg" => ("accounts.zoho.sg", "desk.zoho.sg", "www.zohoapis.sg"),
        "ae" => ("accounts.zoho.ae", "desk.zoho.ae", "www.zohoapis.ae"),
        _ => return None,
    };
    Some(Region {
        accounts,
        desk,
        crm,
    })
}

/// The `api_domain` of a token answer (or of a token shared through Redis) when it may receive
/// that token: `https://` and one of Zoho's CRM API hosts, or a loopback host (a local stand-in
/// for Zoho). Anything else is dropped, and calls go to the configured CRM host.
pub fn trusted_api_domain(text: &str) -> Option<String> {
    let text = text.trim().trim_end_matches('/');
    let url = reqwest::Url::parse(text).ok()?;
    let bare = url.path() == "/" && url.query().is_none() && url.username().is_empty();
    let zoho = url.scheme() == "https"
        && url.port().is_none()
        && crate::config::REGIONS
            .iter()
            .filter_map(|r| hosts(r))
            .any(|r| url.host_str() == Some(r.crm));
    let local = crate::outbound::destination("api_domain", text).is_ok() && url.scheme() == "http";
    (bare && (zoho || local)).then(|| text.to_owned())
}

/// The JWKS a region's Desk portal signs webhooks with.
pub fn default_jwks_url(region: &str) -> Option<String> {
    hosts(region).map(|r| format!("https://{}/.well-known/jwks.json", r.desk))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_zoho_api_hosts_or_this_machine_may_receive_a_token() {
        assert_eq!(
            trusted_api_domain("https://www.zohoapis.eu/").as_deref(),
            Some("https://www.zohoapis.eu")
        );
        assert!(trusted_api_domain("http://127.0.0.1:8080").is_some());
        for bad in [
            "https://www.zohoapis.eu.evil.example",
            "https://evil.example",
            "http://www.zohoapis.eu",
            "https://www.zohoapis.eu:8443",
            "https://www.zohoapis.eu/steal",
            "https://user@www.zohoapis.eu",
            "not a url",
        ] {
            assert_eq!(trusted_api_domain(bad), None, "{bad}");
        }
    }

    #[test]
    fn every_configurable_region_has_hosts() {
        for region in crate::config::REGIONS {
            assert!(hosts(region).is_some(), "{region}");
        }
        assert_eq!(
            default_jwks_url("eu").unwrap(),
            "https://desk.zoho.eu/.well-known/jwks.json"
        );
    }
}
