//! The `deskhook serve` process as one value: its configuration (every flag and environment
//! variable, parsed by clap in one place) and the application built from it.
//!
//! [`App::build`] turns the configuration into the server's options and first settings, and
//! fails with a typed error before anything listens; [`App::run`] starts it and runs the
//! shutdown sequence (written once, in [`crate::server`]) when `shutdown` completes. `main` only
//! parses the command line, starts telemetry and hands over.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use clap::builder::TypedValueParser;

use crate::archive::{ArchiveError, ArchiveLimits, DecisionArchive};
use crate::config::{Secret, SecretFileError, Settings, WatchedSecrets};
use crate::kube::KubeOptions;
use crate::server::{self, RedisAccess, ServeError, ServeOptions, ZohoAccess};
use crate::store::Topology;
use crate::telemetry::LogFormat;
use crate::zoho::ZohoSetupError;

#[derive(Args)]
pub struct ServeConfig {
    /// A WebhookAutomation YAML file, watched for edits. Without it, settings come from the
    /// seed's WEBHOOK_AUTO_* environment variables.
    #[arg(long, value_name = "FILE", conflicts_with = "kube")]
    pub config: Option<PathBuf>,
    /// Read the settings from a WebhookAutomation resource in Kubernetes and keep watching it
    /// (namespace from POD_NAMESPACE, else the kubeconfig's; credentials in-cluster or from
    /// the kubeconfig).
    #[arg(long, requires = "resource")]
    pub kube: bool,
    /// Name of the WebhookAutomation resource watched with --kube.
    #[arg(long, value_name = "NAME", env = "DESKHOOK_RESOURCE")]
    pub resource: Option<String>,
    /// Address of the webhook listener [default: WEBHOOK_HOST:WEBHOOK_PORT, else 0.0.0.0:5000].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Address of the metrics and admin listener.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:9090")]
    pub metrics_listen: SocketAddr,
    /// A file of HMAC secrets (one per line or comma-separated), re-read when it changes.
    #[arg(long, value_name = "FILE")]
    pub hmac_secret_file: Option<PathBuf>,
    /// A file holding the admin token for /webhook/test and /webhook/decisions.
    #[arg(long, value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Accept deliveries without verifying them. For local experiments only.
    #[arg(long)]
    pub insecure_no_verification: bool,
    /// Seconds to stay in service, not ready, after SIGTERM before refusing deliveries.
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    pub shutdown_delay: u64,
    /// Seconds queued work may take to finish after SIGTERM.
    #[arg(long, value_name = "SECONDS", default_value_t = 25)]
    pub shutdown_grace: u64,
    /// Decision reports kept in memory for /webhook/decisions and the review console.
    #[arg(
        long,
        value_name = "COUNT",
        env = "DESKHOOK_DECISIONS_RETAINED",
        default_value_t = crate::decisions::DEFAULT_RETAINED as u32,
        value_parser = clap::value_parser!(u32).range(1..=100_000)
    )]
    pub decisions_retained: u32,
    /// Log format.
    #[arg(long, value_enum, default_value = "auto", env = "DESKHOOK_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// Also append each decision with its facts to rotated JSONL files in this directory,
    /// for `deskhook backtest --archive`. The files hold customer data.
    #[arg(long, value_name = "DIR", env = "DESKHOOK_ARCHIVE_DIR")]
    pub archive: Option<PathBuf>,
    /// Size of an archive file before it is rotated, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 64, requires = "archive",
          value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub archive_file_mib: u64,
    /// Rotated archive files kept besides the current one.
    #[arg(long, value_name = "COUNT", default_value_t = 20, requires = "archive")]
    pub archive_files: usize,
    #[command(flatten)]
    pub trust: TrustConfig,
    #[command(flatten)]
    pub environment: EnvironmentConfig,
}

/// Where secrets and customer data may go, and who may read the console: the installer's
/// choices, never the WebhookAutomation resource's.
#[derive(Args)]
pub struct TrustConfig {
    /// Base URL of the OpenAI-compatible model that rewrites replies (https, or http to this
    /// machine); it receives DESKHOOK_LLM_API_KEY and reply text. Without it replies are never
    /// rewritten.
    #[arg(long, value_name = "URL", env = "DESKHOOK_LLM_URL", value_parser = llm_url)]
    pub llm_url: Option<reqwest::Url>,
    /// Where Zoho's webhook signing keys are fetched [default: the region's Desk host].
    #[arg(long, value_name = "URL", env = "DESKHOOK_JWKS_URL", value_parser = jwks_url)]
    pub jwks_url: Option<reqwest::Url>,
    /// Serve the review console without an admin token. Accepted only when --metrics-listen is
    /// a loopback address.
    #[arg(long)]
    pub console_open: bool,
    /// Host names the console answers to besides localhost, 127.0.0.1 and ::1 (comma-separated),
    /// such as the admin Service's DNS names.
    #[arg(
        long,
        value_name = "HOSTS",
        env = "DESKHOOK_ADMIN_ALLOWED_HOSTS",
        value_delimiter = ','
    )]
    pub admin_allowed_hosts: Vec<String>,
    /// Bytes of request bodies held at once across the webhook listener's connections; past
    /// it a delivery gets 503 and Retry-After.
    #[arg(
        long,
        value_name = "BYTES",
        env = "DESKHOOK_MAX_BUFFERED_BODY_BYTES",
        default_value_t = crate::http::DEFAULT_BODY_BUDGET_BYTES,
        value_parser = clap::value_parser!(u64).range(1_048_576..=4_294_967_295).map(|b| b as usize)
    )]
    pub max_buffered_body_bytes: usize,
    /// Prefix of every Redis key of this deployment, so several can share one Redis.
    #[arg(
        long,
        value_name = "PREFIX",
        env = "DESKHOOK_REDIS_KEY_PREFIX",
        default_value = "deskhook",
        value_parser = key_prefix
    )]
    pub redis_key_prefix: String,
    /// Dead letters kept in Redis at most; the oldest are dropped (and counted) past it.
    #[arg(
        long,
        value_name = "COUNT",
        env = "DESKHOOK_DEAD_LETTER_MAX",
        default_value_t = crate::queue::redis::DEFAULT_DEAD_LETTER_MAX,
        value_parser = clap::value_parser!(u64).range(1..=10_000_000).map(|n| n as usize)
    )]
    pub dead_letter_max: usize,
    /// Connect to a Redis Cluster (as a `redis+cluster://` URL does): commands go to the node
    /// serving their slot. Managed Redis offerings in cluster mode need it.
    #[arg(long, env = "DESKHOOK_REDIS_CLUSTER")]
    pub redis_cluster: bool,
}

/// The variables `serve` reads besides its flags' own: the seed's listen address, the secrets
/// (never given as flags in practice: a flag shows in the process list) and the pod's
/// identity from the downward API. Blank values count as unset.
#[derive(Args)]
pub struct EnvironmentConfig {
    /// Host of the webhook listener when --listen is absent (the seed's variable).
    #[arg(long, value_name = "HOST", env = "WEBHOOK_HOST", hide = true)]
    pub webhook_host: Option<String>,
    /// Port of the webhook listener when --listen is absent (the seed's variable).
    #[arg(long, value_name = "PORT", env = "WEBHOOK_PORT", hide = true)]
    pub webhook_port: Option<String>,
    /// HMAC secrets of Zoho's webhooks, comma-separated (with --hmac-secret-file's).
    #[arg(long, env = "ZOHO_WEBHOOK_SECRET", hide = true, hide_env_values = true)]
    pub zoho_webhook_secret: Option<String>,
    /// Admin tokens for /webhook/test, /webhook/decisions and the console (with
    /// --admin-token-file's).
    #[arg(
        long,
        env = "DESKHOOK_ADMIN_TOKEN",
        hide = true,
        hide_env_values = true
    )]
    pub admin_token: Option<String>,
    /// Standard Webhooks secrets (`whsec_<base64>`); none turns the scheme off.
    #[arg(
        long,
        env = "DESKHOOK_STANDARD_WEBHOOKS_SECRET",
        hide = true,
        hide_env_values = true
    )]
    pub standard_webhooks_secret: Option<String>,
    /// Key of the reply-rewriting model.
    #[arg(
        long,
        env = "DESKHOOK_LLM_API_KEY",
        hide = true,
        hide_env_values = true
    )]
    pub llm_api_key: Option<String>,
    /// A file holding the model's key, re-read when it changes.
    #[arg(
        long,
        value_name = "FILE",
        env = "DESKHOOK_LLM_API_KEY_FILE",
        hide = true
    )]
    pub llm_api_key_file: Option<PathBuf>,
    /// The Redis URL (`redis://` or `rediss://`), used when spec.queue.backend is redis.
    #[arg(long, env = crate::store::REDIS_URL_VAR, hide = true, hide_env_values = true)]
    pub redis_url: Option<String>,
    /// This pod's name (downward API): its Redis consumer and Kubernetes identity.
    #[arg(long, value_name = "NAME", env = "POD_NAME", hide = true)]
    pub pod_name: Option<String>,
    /// The host name, this pod's name when POD_NAME is not given.
    #[arg(long, value_name = "NAME", env = "HOSTNAME", hide = true)]
    pub hostname: Option<String>,
    /// Namespace of the --kube resource (downward API), else the kubeconfig's.
    #[arg(long, value_name = "NAMESPACE", env = "POD_NAMESPACE", hide = true)]
    pub pod_namespace: Option<String>,
    /// The seed's variables, read by name by their owners: the automation flags and
    /// departments (`config::spec_from_env`, without --config or --kube), the Zoho
    /// credentials or their files (`OAuthCredentials::from_env`) and the Zoho URL overrides.
    #[arg(long, env = "WEBHOOK_AUTO_DISPATCH", hide = true)]
    pub webhook_auto_dispatch: Option<String>,
    #[arg(long, env = "WEBHOOK_AUTO_LINK", hide = true)]
    pub webhook_auto_link: Option<String>,
    #[arg(long, env = "WEBHOOK_AUTO_RESPOND", hide = true)]
    pub webhook_auto_respond: Option<String>,
    #[arg(long, env = "WEBHOOK_AUTO_UPDATE_TICKET", hide = true)]
    pub webhook_auto_update_ticket: Option<String>,
    #[arg(long, env = "WEBHOOK_AUTO_UPDATE_DEAL", hide = true)]
    pub webhook_auto_update_deal: Option<String>,
    #[arg(long, env = "WEBHOOK_AUTO_ADD_NOTE", hide = true)]
    pub webhook_auto_add_note: Option<String>,
    #[arg(long, env = "WEBHOOK_DRAFT_REPLIES", hide = true)]
    pub webhook_draft_replies: Option<String>,
    #[arg(long, env = "WEBHOOK_DEPARTMENTS", hide = true)]
    pub webhook_departments: Option<String>,
    #[arg(long, env = "ZOHO_CLIENT_ID", hide = true, hide_env_values = true)]
    pub zoho_client_id: Option<String>,
    #[arg(long, env = "ZOHO_CLIENT_ID_FILE", hide = true)]
    pub zoho_client_id_file: Option<String>,
    #[arg(long, env = "ZOHO_CLIENT_SECRET", hide = true, hide_env_values = true)]
    pub zoho_client_secret: Option<String>,
    #[arg(long, env = "ZOHO_CLIENT_SECRET_FILE", hide = true)]
    pub zoho_client_secret_file: Option<String>,
    #[arg(long, env = "ZOHO_REFRESH_TOKEN", hide = true, hide_env_values = true)]
    pub zoho_refresh_token: Option<String>,
    #[arg(long, env = "ZOHO_REFRESH_TOKEN_FILE", hide = true)]
    pub zoho_refresh_token_file: Option<String>,
    #[arg(long, env = "DESKHOOK_ZOHO_ACCOUNTS_URL", hide = true)]
    pub zoho_accounts_url: Option<String>,
    #[arg(long, env = "DESKHOOK_ZOHO_DESK_URL", hide = true)]
    pub zoho_desk_url: Option<String>,
    #[arg(long, env = "DESKHOOK_ZOHO_CRM_URL", hide = true)]
    pub zoho_crm_url: Option<String>,
}

/// Why `deskhook serve` could not start.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("failed to read WEBHOOK_HOST:WEBHOOK_PORT ({0}) as a listen address")]
    ListenAddress(String),
    #[error(transparent)]
    SecretFile(#[from] SecretFileError),
    #[error("failed to read DESKHOOK_STANDARD_WEBHOOKS_SECRET: a secret is not whsec_<base64>")]
    StandardWebhooksSecret,
    #[error(transparent)]
    Zoho(#[from] ZohoSetupError),
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error(transparent)]
    Serve(#[from] ServeError),
}

/// A configured `deskhook serve`, ready to run.
pub struct App {
    options: ServeOptions,
    settings: Settings,
    archive: Option<DecisionArchive>,
}

impl App {
    /// Reads secrets, the first settings and the archive; binds nothing yet. The log format
    /// is `main`'s, which starts telemetry before this runs.
    pub fn build(config: ServeConfig) -> Result<Self, AppError> {
        let ServeConfig {
            config,
            kube,
            resource,
            listen,
            metrics_listen,
            hmac_secret_file,
            admin_token_file,
            insecure_no_verification,
            shutdown_delay,
            shutdown_grace,
            decisions_retained,
            log_format: _,
            archive,
            archive_file_mib,
            archive_files,
            trust:
                TrustConfig {
                    llm_url,
                    jwks_url,
                    console_open,
                    admin_allowed_hosts,
                    max_buffered_body_bytes,
                    redis_key_prefix,
                    dead_letter_max,
                    redis_cluster,
                },
            environment:
                EnvironmentConfig {
                    webhook_host,
                    webhook_port,
                    zoho_webhook_secret,
                    admin_token,
                    standard_webhooks_secret,
                    llm_api_key,
                    llm_api_key_file,
                    redis_url,
                    pod_name,
                    hostname,
                    pod_namespace,
                    webhook_auto_dispatch,
                    webhook_auto_link,
                    webhook_auto_respond,
                    webhook_auto_update_ticket,
                    webhook_auto_update_deal,
                    webhook_auto_add_note,
                    webhook_draft_replies,
                    webhook_departments,
                    zoho_client_id,
                    zoho_client_id_file,
                    zoho_client_secret,
                    zoho_client_secret_file,
                    zoho_refresh_token,
                    zoho_refresh_token_file,
                    zoho_accounts_url,
                    zoho_desk_url,
                    zoho_crm_url,
                },
        } = config;
        let seed: BTreeMap<&str, String> = [
            ("WEBHOOK_AUTO_DISPATCH", webhook_auto_dispatch),
            ("WEBHOOK_AUTO_LINK", webhook_auto_link),
            ("WEBHOOK_AUTO_RESPOND", webhook_auto_respond),
            ("WEBHOOK_AUTO_UPDATE_TICKET", webhook_auto_update_ticket),
            ("WEBHOOK_AUTO_UPDATE_DEAL", webhook_auto_update_deal),
            ("WEBHOOK_AUTO_ADD_NOTE", webhook_auto_add_note),
            ("WEBHOOK_DRAFT_REPLIES", webhook_draft_replies),
            ("WEBHOOK_DEPARTMENTS", webhook_departments),
            ("ZOHO_CLIENT_ID", zoho_client_id),
            ("ZOHO_CLIENT_ID_FILE", zoho_client_id_file),
            ("ZOHO_CLIENT_SECRET", zoho_client_secret),
            ("ZOHO_CLIENT_SECRET_FILE", zoho_client_secret_file),
            ("ZOHO_REFRESH_TOKEN", zoho_refresh_token),
            ("ZOHO_REFRESH_TOKEN_FILE", zoho_refresh_token_file),
            ("DESKHOOK_ZOHO_ACCOUNTS_URL", zoho_accounts_url),
            ("DESKHOOK_ZOHO_DESK_URL", zoho_desk_url),
            ("DESKHOOK_ZOHO_CRM_URL", zoho_crm_url),
        ]
        .into_iter()
        .filter_map(|(name, value)| non_blank(value).map(|value| (name, value)))
        .collect();
        let seed = |name: &str| seed.get(name).cloned();
        let listen = match listen {
            Some(addr) => addr,
            None => {
                let host = non_blank(webhook_host).unwrap_or_else(|| "0.0.0.0".into());
                let port = non_blank(webhook_port).unwrap_or_else(|| "5000".into());
                let text = format!("{host}:{port}");
                text.parse().map_err(|_| AppError::ListenAddress(text))?
            }
        };
        let hmac_secrets =
            WatchedSecrets::load(non_blank(zoho_webhook_secret).as_deref(), hmac_secret_file)?;
        let admin_tokens =
            WatchedSecrets::load(non_blank(admin_token).as_deref(), admin_token_file)?;
        let standard_webhooks_secrets =
            WatchedSecrets::load(non_blank(standard_webhooks_secret).as_deref(), None)?;
        if standard_webhooks_secrets
            .current()
            .iter()
            .any(|secret| crate::verify::standard::decode_secret(secret).is_none())
        {
            return Err(AppError::StandardWebhooksSecret);
        }
        // This pod's name, else the host name, else one unique to this process.
        let pod_name = non_blank(pod_name)
            .or_else(|| non_blank(hostname))
            .unwrap_or_else(|| format!("deskhook-{}", std::process::id()));
        let kube = match (kube, resource) {
            (true, Some(resource)) => {
                let mut options = KubeOptions::new(resource, pod_name.clone());
                options.namespace = non_blank(pod_namespace);
                Some(options)
            }
            _ => None,
        };
        let settings = match &kube {
            Some(_) => crate::kube::initial_settings(seed),
            None => server::initial_settings(config.as_deref(), seed)?,
        };
        let options = ServeOptions {
            zoho: ZohoAccess::from_env(seed)?,
            llm_api_key: WatchedSecrets::load(non_blank(llm_api_key).as_deref(), llm_api_key_file)?,
            llm_url,
            jwks_url,
            console_open,
            admin_allowed_hosts,
            max_buffered_body_bytes,
            listen,
            metrics_listen,
            config,
            kube,
            hmac_secrets,
            standard_webhooks_secrets,
            admin_tokens,
            insecure_no_verification,
            shutdown_delay: Duration::from_secs(shutdown_delay),
            shutdown_grace: Duration::from_secs(shutdown_grace),
            decisions_retained: decisions_retained as usize,
            redis: non_blank(redis_url).map(|url| RedisAccess {
                url: Secret::new(url),
                consumer: pod_name,
                key_prefix: redis_key_prefix,
                dead_letter_max,
                topology: Topology::from_flag(redis_cluster),
            }),
        };
        let archive = match archive {
            Some(dir) => {
                let limits = ArchiveLimits {
                    max_file_bytes: archive_file_mib * 1024 * 1024,
                    max_files: archive_files,
                };
                Some(DecisionArchive::open(&dir, limits)?)
            }
            None => None,
        };
        Ok(Self {
            options,
            settings,
            archive,
        })
    }

    /// Starts listening and working; when `shutdown` completes, runs the shutdown sequence
    /// and returns once it ends.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), AppError> {
        let running = match self.archive {
            Some(archive) => server::start_archived(self.options, self.settings, archive).await?,
            None => server::start(self.options, self.settings).await?,
        };
        let stopper = running.stopper();
        tokio::spawn(async move {
            shutdown.await;
            let _ = stopper.send(true);
        });
        running.wait().await;
        Ok(())
    }
}

/// A value given and not blank: a variable set to nothing counts as unset, as the seed read
/// its variables.
pub fn non_blank(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.trim().is_empty())
}

fn llm_url(text: &str) -> Result<reqwest::Url, String> {
    crate::outbound::destination("DESKHOOK_LLM_URL", text).map_err(|e| e.to_string())
}

fn jwks_url(text: &str) -> Result<reqwest::Url, String> {
    crate::outbound::destination("DESKHOOK_JWKS_URL", text).map_err(|e| e.to_string())
}

/// A Redis key prefix: short, and only characters that cannot split or escape a key.
pub fn key_prefix(text: &str) -> Result<String, String> {
    let valid = (1..=64).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b));
    if valid {
        Ok(text.to_owned())
    } else {
        Err("1 to 64 characters among letters, digits and _ . : -".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeConfig,
    }

    fn build(args: &[&str]) -> Result<App, AppError> {
        let mut argv = vec!["deskhook", "--metrics-listen", "127.0.0.1:0"];
        argv.extend_from_slice(args);
        App::build(Cli::try_parse_from(argv).expect("arguments parse").serve)
    }

    #[test]
    fn every_variable_serve_reads_is_an_argument_and_no_secret_is_shown() {
        let command = Cli::command();
        let env_of = |name: &str| {
            command
                .get_arguments()
                .find(|arg| arg.get_env().is_some_and(|env| env == name))
                .unwrap_or_else(|| panic!("{name} is not read through the configuration"))
        };
        for name in [
            "WEBHOOK_HOST",
            "WEBHOOK_PORT",
            "POD_NAME",
            "HOSTNAME",
            "POD_NAMESPACE",
            "DESKHOOK_RESOURCE",
            "DESKHOOK_LLM_API_KEY_FILE",
        ] {
            env_of(name);
        }
        for secret in [
            "ZOHO_WEBHOOK_SECRET",
            "DESKHOOK_ADMIN_TOKEN",
            "DESKHOOK_STANDARD_WEBHOOKS_SECRET",
            "DESKHOOK_LLM_API_KEY",
            crate::store::REDIS_URL_VAR,
        ] {
            assert!(
                env_of(secret).is_hide_env_values_set(),
                "--help would print {secret}"
            );
        }
    }

    /// The readers that own the seed's variables ask for them by name; each name they ask for
    /// must reach them from the configuration, or setting it would silently do nothing.
    #[test]
    fn every_variable_the_seed_readers_ask_for_is_in_the_configuration() {
        use std::cell::RefCell;
        let asked = RefCell::new(Vec::<String>::new());
        let lookup = |name: &str| {
            asked.borrow_mut().push(name.to_owned());
            // Credentials present, so the reader goes on to the URL overrides.
            matches!(
                name,
                "ZOHO_CLIENT_ID" | "ZOHO_CLIENT_SECRET" | "ZOHO_REFRESH_TOKEN"
            )
            .then(|| "x".to_owned())
        };
        crate::config::spec_from_env(lookup).unwrap();
        crate::config::seed_flags_in_env(lookup);
        ZohoAccess::from_env(lookup).unwrap();
        let asked = asked.into_inner();
        assert!(asked.len() >= 17, "{asked:?}");
        let command = Cli::command();
        for name in asked {
            assert!(
                command
                    .get_arguments()
                    .any(|arg| arg.get_env().is_some_and(|env| env == name.as_str())),
                "{name} is read by the library but not through the configuration"
            );
        }
    }

    #[test]
    fn the_seed_host_and_port_make_the_listen_address_and_blank_ones_the_default() {
        let app = build(&[
            "--insecure-no-verification",
            "--webhook-host",
            "127.0.0.2",
            "--webhook-port",
            "5001",
        ])
        .unwrap();
        assert_eq!(app.options.listen, "127.0.0.2:5001".parse().unwrap());
        let app = build(&[
            "--insecure-no-verification",
            "--webhook-host",
            "",
            "--webhook-port",
            " ",
        ])
        .unwrap();
        assert_eq!(app.options.listen, "0.0.0.0:5000".parse().unwrap());
        assert!(matches!(
            build(&["--webhook-host", "", "--webhook-port", "http"]),
            Err(AppError::ListenAddress(text)) if text == "0.0.0.0:http"
        ));
    }

    #[test]
    fn a_standard_webhooks_secret_that_is_not_whsec_is_refused_before_anything_starts() {
        let refused = build(&["--standard-webhooks-secret", "plain"]);
        assert!(matches!(refused, Err(AppError::StandardWebhooksSecret)));
    }

    #[test]
    fn the_pod_name_falls_back_to_the_host_name_and_the_seed_variables_reach_their_readers() {
        let app = build(&[
            "--insecure-no-verification",
            "--zoho-client-id",
            "1000.ID",
            "--zoho-client-secret",
            "s3cret",
            "--zoho-refresh-token",
            "1000.refresh",
            "--webhook-auto-dispatch",
            "true",
            "--redis-url",
            "redis://127.0.0.1:6379",
            "--pod-name",
            " ",
            "--hostname",
            "node-7",
        ])
        .unwrap();
        assert_eq!(app.options.redis.unwrap().consumer, "node-7");
        assert!(
            app.options.zoho.is_some(),
            "the Zoho credentials reach the clients"
        );
        assert!(
            app.settings.flags().dispatch,
            "the seed's flag reaches the settings"
        );
    }
}
