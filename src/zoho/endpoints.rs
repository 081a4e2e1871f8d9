//! Where the Zoho APIs live and who deskhook is to them: base URLs per data centre and the
//! OAuth client credentials.
//!
//! Both come from the environment (or mounted files for secrets), read through a lookup
//! closure so tests never touch the process environment.

use std::path::{Path, PathBuf};

use super::error::ZohoSetupError;
use crate::config::Secret;
use crate::region;

/// Overrides the Zoho Accounts base URL (a proxy, a test double).
pub const ACCOUNTS_URL_VAR: &str = "DESKHOOK_ZOHO_ACCOUNTS_URL";
/// Overrides the Zoho Desk base URL.
pub const DESK_URL_VAR: &str = "DESKHOOK_ZOHO_DESK_URL";
/// Overrides the Zoho CRM base URL, which otherwise is the token answer's `api_domain`.
pub const CRM_URL_VAR: &str = "DESKHOOK_ZOHO_CRM_URL";

/// Base URLs of the Zoho APIs, without a trailing slash and without an API path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZohoEndpoints {
    /// Zoho Accounts, e.g. `https://accounts.zoho.eu`.
    pub accounts: String,
    /// Zoho Desk, e.g. `https://desk.zoho.eu`; the client appends `/api/v1`.
    pub desk: String,
    /// Zoho CRM when set; otherwise the `api_domain` of the token answer, which is the CRM
    /// host of the account's data centre.
    pub crm_override: Option<String>,
    /// Zoho CRM of the configured region, used only when a token answer has no `api_domain`.
    pub crm_default: String,
}

impl ZohoEndpoints {
    /// The hosts of `region` (as in `spec.zoho.region`), each overridable by its variable.
    pub fn from_region(
        region: &str,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ZohoSetupError> {
        let hosts =
            region::hosts(region).ok_or_else(|| ZohoSetupError::UnknownRegion(region.into()))?;
        let pick = |variable: &'static str, host: &str| -> Result<String, ZohoSetupError> {
            match non_empty(lookup(variable)) {
                Some(url) => base_url(variable, &url),
                None => Ok(format!("https://{host}")),
            }
        };
        let crm_override = match non_empty(lookup(CRM_URL_VAR)) {
            Some(url) => Some(base_url(CRM_URL_VAR, &url)?),
            None => None,
        };
        Ok(Self {
            accounts: pick(ACCOUNTS_URL_VAR, hosts.accounts)?,
            desk: pick(DESK_URL_VAR, hosts.desk)?,
            crm_override,
            crm_default: format!("https://{}", hosts.crm),
        })
    }

    /// Every API at one base URL, as a test double serves them.
    pub fn all_at(base: &str) -> Self {
        let base = base.trim_end_matches('/').to_owned();
        Self {
            accounts: base.clone(),
            desk: base.clone(),
            crm_override: None,
            crm_default: base,
        }
    }
}

/// Checks that an override is an http(s) URL and drops a trailing slash.
fn base_url(variable: &'static str, url: &str) -> Result<String, ZohoSetupError> {
    let parsed = reqwest::Url::parse(url).map_err(|_| ZohoSetupError::InvalidUrl { variable })?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(ZohoSetupError::InvalidUrl { variable });
    }
    Ok(url.trim_end_matches('/').to_owned())
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

/// The OAuth client deskhook refreshes its access tokens with ("self client" or server
/// client with a long-lived refresh token).
#[derive(Clone, Debug)]
pub struct OAuthCredentials {
    pub client_id: String,
    pub client_secret: Secret,
    pub refresh_token: Secret,
    /// The files the values were read from, read again before each refresh: a rotated
    /// Kubernetes Secret is used without a restart.
    pub files: CredentialFiles,
}

/// Files holding OAuth credentials (`ZOHO_*_FILE`); `None` for a value from the environment.
#[derive(Clone, Debug, Default)]
pub struct CredentialFiles {
    pub client_id: Option<PathBuf>,
    pub client_secret: Option<PathBuf>,
    pub refresh_token: Option<PathBuf>,
}

impl OAuthCredentials {
    /// Credentials given as values, with no file behind them.
    pub fn new(client_id: impl Into<String>, client_secret: Secret, refresh_token: Secret) -> Self {
        Self {
            client_id: client_id.into(),
            client_secret,
            refresh_token,
            files: CredentialFiles::default(),
        }
    }

    /// Reads `ZOHO_CLIENT_ID` (or `ZOHO_CLIENT_ID_FILE`), `ZOHO_CLIENT_SECRET` (or
    /// `ZOHO_CLIENT_SECRET_FILE`) and `ZOHO_REFRESH_TOKEN` (or `ZOHO_REFRESH_TOKEN_FILE`).
    /// `None` when none of them is set (deskhook then runs without Zoho clients); an error
    /// when only some are.
    pub fn from_env(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, ZohoSetupError> {
        let mut files = CredentialFiles::default();
        let client_id = secret(
            &lookup,
            "ZOHO_CLIENT_ID",
            "ZOHO_CLIENT_ID_FILE",
            &mut files.client_id,
        )?;
        let client_secret = secret(
            &lookup,
            "ZOHO_CLIENT_SECRET",
            "ZOHO_CLIENT_SECRET_FILE",
            &mut files.client_secret,
        )?;
        let refresh_token = secret(
            &lookup,
            "ZOHO_REFRESH_TOKEN",
            "ZOHO_REFRESH_TOKEN_FILE",
            &mut files.refresh_token,
        )?;
        match (client_id, client_secret, refresh_token) {
            (None, None, None) => Ok(None),
            (Some(client_id), Some(client_secret), Some(refresh_token)) => Ok(Some(Self {
                client_id: client_id.expose().to_owned(),
                client_secret,
                refresh_token,
                files,
            })),
            (None, _, _) => Err(ZohoSetupError::MissingCredential {
                variable: "ZOHO_CLIENT_ID",
            }),
            (_, None, _) => Err(ZohoSetupError::MissingCredential {
                variable: "ZOHO_CLIENT_SECRET",
            }),
            (_, _, None) => Err(ZohoSetupError::MissingCredential {
                variable: "ZOHO_REFRESH_TOKEN",
            }),
        }
    }
}

impl OAuthCredentials {
    /// The credentials as their files hold them now. A file that cannot be read or is empty
    /// (the kubelet swaps a Secret's files through a symlink) keeps the value read before.
    pub fn reread(&self) -> Self {
        let read = |path: &Option<PathBuf>| {
            path.as_deref()
                .and_then(|path| std::fs::read_to_string(path).ok())
                .and_then(|text| non_empty(Some(text)))
        };
        let mut current = self.clone();
        if let Some(id) = read(&self.files.client_id) {
            current.client_id = id;
        }
        if let Some(secret) = read(&self.files.client_secret) {
            current.client_secret = Secret::new(secret);
        }
        if let Some(token) = read(&self.files.refresh_token) {
            current.refresh_token = Secret::new(token);
        }
        current
    }

    /// Whether `other` holds other values than these.
    pub fn differs_from(&self, other: &Self) -> bool {
        self.client_id != other.client_id
            || self.client_secret != other.client_secret
            || self.refresh_token != other.refresh_token
    }
}

/// A secret from its variable, else from the file its `_FILE` variable names (remembered in
/// `file`, to be read again later).
fn secret(
    lookup: &impl Fn(&str) -> Option<String>,
    variable: &str,
    file_variable: &str,
    file: &mut Option<PathBuf>,
) -> Result<Option<Secret>, ZohoSetupError> {
    if let Some(value) = non_empty(lookup(variable)) {
        return Ok(Some(Secret::new(value)));
    }
    let Some(path) = non_empty(lookup(file_variable)) else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(Path::new(&path)).map_err(|source| {
        ZohoSetupError::CredentialFile {
            path: path.clone(),
            source,
        }
    })?;
    *file = Some(PathBuf::from(path));
    Ok(non_empty(Some(text)).map(Secret::new))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |key| map.get(key).cloned()
    }

    #[test]
    fn region_hosts_are_used_unless_overridden() {
        let eu = ZohoEndpoints::from_region("eu", env(&[])).unwrap();
        assert_eq!(eu.accounts, "https://accounts.zoho.eu");
        assert_eq!(eu.desk, "https://desk.zoho.eu");
        assert_eq!(eu.crm_override, None);
        assert_eq!(eu.crm_default, "https://www.zohoapis.eu");

        let local = ZohoEndpoints::from_region(
            "eu",
            env(&[
                (DESK_URL_VAR, "http://127.0.0.1:9000/"),
                (CRM_URL_VAR, "http://127.0.0.1:9001"),
            ]),
        )
        .unwrap();
        assert_eq!(local.desk, "http://127.0.0.1:9000");
        assert_eq!(local.crm_override.as_deref(), Some("http://127.0.0.1:9001"));
        assert_eq!(local.accounts, "https://accounts.zoho.eu");
    }

    #[test]
    fn bad_regions_and_urls_are_refused() {
        assert!(matches!(
            ZohoEndpoints::from_region("mars", env(&[])),
            Err(ZohoSetupError::UnknownRegion(_))
        ));
        assert!(matches!(
            ZohoEndpoints::from_region("com", env(&[(ACCOUNTS_URL_VAR, "ftp://x")])),
            Err(ZohoSetupError::InvalidUrl { .. })
        ));
    }

    #[test]
    fn credentials_are_all_or_nothing() {
        assert!(OAuthCredentials::from_env(env(&[])).unwrap().is_none());
        let full = OAuthCredentials::from_env(env(&[
            ("ZOHO_CLIENT_ID", "1000.ID"),
            ("ZOHO_CLIENT_SECRET", "s3cret"),
            ("ZOHO_REFRESH_TOKEN", "1000.refresh"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(full.refresh_token.expose(), "1000.refresh");
        assert!(!format!("{full:?}").contains("s3cret"));
        assert!(matches!(
            OAuthCredentials::from_env(env(&[("ZOHO_CLIENT_ID", "1000.ID")])),
            Err(ZohoSetupError::MissingCredential {
                variable: "ZOHO_CLIENT_SECRET"
            })
        ));
    }

    #[test]
    fn secrets_can_come_from_files() {
        let dir = std::env::temp_dir().join(format!("deskhook-zoho-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("refresh");
        std::fs::write(&file, "1000.from-file\n").unwrap();
        let path = file.display().to_string();
        let credentials = OAuthCredentials::from_env(env(&[
            ("ZOHO_CLIENT_ID", "1000.ID"),
            ("ZOHO_CLIENT_SECRET", "s3cret"),
            ("ZOHO_REFRESH_TOKEN_FILE", &path),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(credentials.refresh_token.expose(), "1000.from-file");

        std::fs::write(&file, "1000.rotated\n").unwrap();
        let rotated = credentials.reread();
        assert_eq!(rotated.refresh_token.expose(), "1000.rotated");
        assert!(rotated.differs_from(&credentials));
        assert_eq!(rotated.client_secret.expose(), "s3cret");
        // A file gone for a moment (a Secret being swapped) keeps the last value.
        std::fs::remove_file(&file).unwrap();
        assert_eq!(
            credentials.reread().refresh_token.expose(),
            "1000.from-file"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
