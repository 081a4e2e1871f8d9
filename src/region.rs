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

/// The JWKS a region's Desk portal signs webhooks with.
pub fn default_jwks_url(region: &str) -> Option<String> {
    hosts(region).map(|r| format!("https://{}/.well-known/jwks.json", r.desk))
}

#[cfg(test)]
mod tests {
    use super::*;

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
