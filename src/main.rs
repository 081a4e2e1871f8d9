//! The `deskhook` command: parse the command line, start logging, call the library.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::builder::TypedValueParser;
use clap::{Args, Parser, Subcommand};
use deskhook::archive::{ArchiveLimits, DecisionArchive};
use deskhook::backtest::render::Format;
use deskhook::backtest::source::Source;
use deskhook::backtest::{Backtest, Baseline, MaxChanged};
use deskhook::config::{Secret, WatchedSecrets};
use deskhook::crd::SignatureEncoding;
use deskhook::kube::KubeOptions;
use deskhook::queue::redis::QueueAdmin;
use deskhook::server::{self, RedisAccess, ServeOptions, ZohoAccess};
use deskhook::shared::{REDIS_URL_VAR, Redis};
use deskhook::telemetry::{self, LogFormat};
use deskhook::verify::hmac;

/// mimalloc: faster than the system allocator on the intake path, and smaller when idle.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "deskhook",
    version,
    about = "Zoho Desk webhooks to safe, gradual support automation"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Receive Zoho Desk webhooks and run the automation.
    Serve(Box<ServeArgs>),
    /// Print the WebhookAutomation CustomResourceDefinition (YAML), generated from the types.
    Crd,
    /// Print the HMAC-SHA256 signature of standard input with the first ZOHO_WEBHOOK_SECRET key.
    Sign {
        /// Print base64 instead of hex.
        #[arg(long)]
        base64: bool,
    },
    /// Inspect the Redis queue and replay dead letters (DESKHOOK_REDIS_URL).
    Queue(QueueArgs),
    /// Show what a settings edit would change on recently decided tickets, from their
    /// recorded facts: no call to Zoho or to a model. Exits with 3 when more decisions would
    /// change than --max-changed accepts.
    Backtest(BacktestArgs),
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("decisions").required(true).args(["api", "redis", "archive"])))]
struct BacktestArgs {
    /// The edited WebhookAutomation YAML file.
    #[arg(long, value_name = "FILE")]
    settings: PathBuf,
    /// The WebhookAutomation YAML file in force. Without it (or --kube), each decision is
    /// compared with what was decided under the settings of its time.
    #[arg(long, value_name = "FILE", conflicts_with = "kube")]
    baseline: Option<PathBuf>,
    /// Compare with the live WebhookAutomation of this name in Kubernetes (namespace from
    /// --namespace, POD_NAMESPACE or the kubeconfig; credentials in-cluster or from the
    /// kubeconfig).
    #[arg(long, value_name = "NAME")]
    kube: Option<String>,
    /// Namespace of the --kube resource.
    #[arg(long, value_name = "NAMESPACE", env = "POD_NAMESPACE")]
    namespace: Option<String>,
    /// Read the recorded decisions from a running deskhook's /webhook/decisions, on its
    /// webhook listener, e.g. http://localhost:5000 (admin token in DESKHOOK_ADMIN_TOKEN).
    #[arg(long, value_name = "URL")]
    api: Option<String>,
    /// Read the recorded decisions from Redis (DESKHOOK_REDIS_URL).
    #[arg(long)]
    redis: bool,
    /// Prefix of deskhook's Redis keys (spec.queue.redis.keyPrefix).
    #[arg(
        long,
        value_name = "PREFIX",
        default_value = "deskhook",
        requires = "redis"
    )]
    key_prefix: String,
    /// Read the recorded decisions from archive files (a directory written by
    /// `serve --archive`, or one file).
    #[arg(long, value_name = "PATH")]
    archive: Option<PathBuf>,
    /// Only decisions made within this long, e.g. 7d, 12h.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    since: Option<Duration>,
    /// Only the newest this many decisions.
    #[arg(long, value_name = "COUNT")]
    limit: Option<usize>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: BacktestFormat,
    /// Fail (exit 3) when more decisions would change than this count (12) or share (5%).
    #[arg(long, value_name = "COUNT|PERCENT")]
    max_changed: Option<MaxChanged>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum BacktestFormat {
    Table,
    Json,
    Csv,
}

#[derive(Args)]
struct QueueArgs {
    /// Prefix of deskhook's Redis keys (as given to `serve`).
    #[arg(
        long,
        value_name = "PREFIX",
        env = "DESKHOOK_REDIS_KEY_PREFIX",
        default_value = "deskhook",
        global = true,
        value_parser = key_prefix
    )]
    key_prefix: String,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: QueueCommand,
}

#[derive(Subcommand)]
enum QueueCommand {
    /// Events waiting, jobs running per pod, dead letters.
    Stats,
    /// Jobs that failed for good, oldest first, with their last error.
    DeadLetters {
        /// Show at most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Put dead letters back on the queue; steps a job already did are not repeated.
    Replay {
        /// The dead letter's id (from `dead-letters`).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<String>,
        /// Replay every dead letter.
        #[arg(long)]
        all: bool,
    },
}

#[derive(Args)]
struct ServeArgs {
    /// A WebhookAutomation YAML file, watched for edits. Without it, settings come from the
    /// seed's WEBHOOK_AUTO_* environment variables.
    #[arg(long, value_name = "FILE", conflicts_with = "kube")]
    config: Option<PathBuf>,
    /// Read the settings from a WebhookAutomation resource in Kubernetes and keep watching it
    /// (namespace from POD_NAMESPACE, else the kubeconfig's; credentials in-cluster or from
    /// the kubeconfig).
    #[arg(long, requires = "resource")]
    kube: bool,
    /// Name of the WebhookAutomation resource watched with --kube.
    #[arg(long, value_name = "NAME", env = "DESKHOOK_RESOURCE")]
    resource: Option<String>,
    /// Address of the webhook listener [default: WEBHOOK_HOST:WEBHOOK_PORT, else 0.0.0.0:5000].
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Address of the metrics and admin listener.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:9090")]
    metrics_listen: SocketAddr,
    /// A file of HMAC secrets (one per line or comma-separated), re-read when it changes.
    #[arg(long, value_name = "FILE")]
    hmac_secret_file: Option<PathBuf>,
    /// A file holding the admin token for /webhook/test and /webhook/decisions.
    #[arg(long, value_name = "FILE")]
    admin_token_file: Option<PathBuf>,
    /// Accept deliveries without verifying them. For local experiments only.
    #[arg(long)]
    insecure_no_verification: bool,
    /// Seconds to stay in service, not ready, after SIGTERM before refusing deliveries.
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    shutdown_delay: u64,
    /// Seconds queued work may take to finish after SIGTERM.
    #[arg(long, value_name = "SECONDS", default_value_t = 25)]
    shutdown_grace: u64,
    /// Decision reports kept in memory for /webhook/decisions and the review console.
    #[arg(
        long,
        value_name = "COUNT",
        env = "DESKHOOK_DECISIONS_RETAINED",
        default_value_t = deskhook::decisions::DEFAULT_RETAINED as u32,
        value_parser = clap::value_parser!(u32).range(1..=100_000)
    )]
    decisions_retained: u32,
    /// Log format.
    #[arg(long, value_enum, default_value = "auto", env = "DESKHOOK_LOG_FORMAT")]
    log_format: LogFormat,
    /// Also append each decision with its facts to rotated JSONL files in this directory,
    /// for `deskhook backtest --archive`. The files hold customer data.
    #[arg(long, value_name = "DIR", env = "DESKHOOK_ARCHIVE_DIR")]
    archive: Option<PathBuf>,
    /// Size of an archive file before it is rotated, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 64, requires = "archive",
          value_parser = clap::value_parser!(u64).range(1..=4096))]
    archive_file_mib: u64,
    /// Rotated archive files kept besides the current one.
    #[arg(long, value_name = "COUNT", default_value_t = 20, requires = "archive")]
    archive_files: usize,
    #[command(flatten)]
    trust: TrustArgs,
}

/// Where secrets and customer data may go, and who may read the console: the installer's
/// choices, never the WebhookAutomation resource's.
#[derive(Args)]
struct TrustArgs {
    /// Base URL of the OpenAI-compatible model that rewrites replies (https, or http to this
    /// machine); it receives DESKHOOK_LLM_API_KEY and reply text. Without it replies are never
    /// rewritten.
    #[arg(long, value_name = "URL", env = "DESKHOOK_LLM_URL", value_parser = llm_url)]
    llm_url: Option<reqwest::Url>,
    /// Where Zoho's webhook signing keys are fetched [default: the region's Desk host].
    #[arg(long, value_name = "URL", env = "DESKHOOK_JWKS_URL", value_parser = jwks_url)]
    jwks_url: Option<reqwest::Url>,
    /// Serve the review console without an admin token. Accepted only when --metrics-listen is
    /// a loopback address.
    #[arg(long)]
    console_open: bool,
    /// Host names the console answers to besides localhost, 127.0.0.1 and ::1 (comma-separated),
    /// such as the admin Service's DNS names.
    #[arg(
        long,
        value_name = "HOSTS",
        env = "DESKHOOK_ADMIN_ALLOWED_HOSTS",
        value_delimiter = ','
    )]
    admin_allowed_hosts: Vec<String>,
    /// Bytes of request bodies held at once across the webhook listener's connections; past
    /// it a delivery gets 503 and Retry-After.
    #[arg(
        long,
        value_name = "BYTES",
        env = "DESKHOOK_MAX_BUFFERED_BODY_BYTES",
        default_value_t = deskhook::http::DEFAULT_BODY_BUDGET_BYTES,
        value_parser = clap::value_parser!(u64).range(1_048_576..=4_294_967_295).map(|b| b as usize)
    )]
    max_buffered_body_bytes: usize,
    /// Prefix of every Redis key of this deployment, so several can share one Redis.
    #[arg(
        long,
        value_name = "PREFIX",
        env = "DESKHOOK_REDIS_KEY_PREFIX",
        default_value = "deskhook",
        value_parser = key_prefix
    )]
    redis_key_prefix: String,
    /// Dead letters kept in Redis at most; the oldest are dropped (and counted) past it.
    #[arg(
        long,
        value_name = "COUNT",
        env = "DESKHOOK_DEAD_LETTER_MAX",
        default_value_t = deskhook::queue::redis::DEFAULT_DEAD_LETTER_MAX,
        value_parser = clap::value_parser!(u64).range(1..=10_000_000).map(|n| n as usize)
    )]
    dead_letter_max: usize,
}

fn llm_url(text: &str) -> Result<reqwest::Url, String> {
    deskhook::outbound::destination("DESKHOOK_LLM_URL", text).map_err(|e| e.to_string())
}

fn jwks_url(text: &str) -> Result<reqwest::Url, String> {
    deskhook::outbound::destination("DESKHOOK_JWKS_URL", text).map_err(|e| e.to_string())
}

fn key_prefix(text: &str) -> Result<String, String> {
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

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Sign { base64 } => sign(base64),
        Command::Crd => {
            print!("{}", deskhook::crd::crd_yaml());
            Ok(())
        }
        Command::Queue(args) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("failed to start the async runtime")?
            .block_on(queue(args)),
        Command::Backtest(args) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("failed to start the async runtime")?
            .block_on(backtest(args)),
        Command::Serve(args) => {
            let telemetry = telemetry::init(args.log_format);
            let outcome = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("failed to start the async runtime")?
                .block_on(serve(*args));
            telemetry.shutdown();
            outcome
        }
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn sign(base64: bool) -> anyhow::Result<()> {
    let Some(secrets) = env("ZOHO_WEBHOOK_SECRET") else {
        bail!("ZOHO_WEBHOOK_SECRET is not set");
    };
    let key = secrets
        .split(',')
        .map(str::trim)
        .find(|s| !s.is_empty())
        .map(Secret::new)
        .context("ZOHO_WEBHOOK_SECRET holds no key")?;
    let mut body = Vec::new();
    std::io::stdin()
        .read_to_end(&mut body)
        .context("failed to read standard input")?;
    let encoding = if base64 {
        SignatureEncoding::Base64
    } else {
        SignatureEncoding::Hex
    };
    println!("{}", hmac::sign_encoded(&key, &body, encoding));
    Ok(())
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let listen = match args.listen {
        Some(addr) => addr,
        None => {
            let host = env("WEBHOOK_HOST").unwrap_or_else(|| "0.0.0.0".into());
            let port = env("WEBHOOK_PORT").unwrap_or_else(|| "5000".into());
            format!("{host}:{port}").parse().with_context(|| {
                format!("WEBHOOK_HOST:WEBHOOK_PORT ({host}:{port}) is not an address")
            })?
        }
    };
    let hmac_secrets =
        WatchedSecrets::load(env("ZOHO_WEBHOOK_SECRET").as_deref(), args.hmac_secret_file)?;
    let admin_tokens = WatchedSecrets::load(
        env("DESKHOOK_ADMIN_TOKEN").as_deref(),
        args.admin_token_file,
    )?;
    let standard_webhooks_secrets =
        WatchedSecrets::load(env("DESKHOOK_STANDARD_WEBHOOKS_SECRET").as_deref(), None)?;
    if standard_webhooks_secrets
        .current()
        .iter()
        .any(|secret| deskhook::verify::standard::decode_secret(secret).is_none())
    {
        bail!("DESKHOOK_STANDARD_WEBHOOKS_SECRET holds a secret that is not whsec_<base64>");
    }
    let kube = match (args.kube, args.resource) {
        (true, Some(resource)) => Some(kube_options(resource)),
        _ => None,
    };
    let settings = match &kube {
        Some(_) => deskhook::kube::initial_settings(env),
        None => server::initial_settings(args.config.as_deref(), env)?,
    };
    let zoho = ZohoAccess::from_env(env)?;
    let TrustArgs {
        llm_url,
        jwks_url,
        console_open,
        admin_allowed_hosts,
        max_buffered_body_bytes,
        redis_key_prefix,
        dead_letter_max,
    } = args.trust;
    let options = ServeOptions {
        zoho,
        llm_api_key: WatchedSecrets::load(
            env("DESKHOOK_LLM_API_KEY").as_deref(),
            env("DESKHOOK_LLM_API_KEY_FILE").map(PathBuf::from),
        )?,
        llm_url,
        jwks_url,
        console_open,
        admin_allowed_hosts,
        max_buffered_body_bytes,
        listen,
        metrics_listen: args.metrics_listen,
        config: args.config,
        kube,
        hmac_secrets,
        standard_webhooks_secrets,
        admin_tokens,
        insecure_no_verification: args.insecure_no_verification,
        shutdown_delay: Duration::from_secs(args.shutdown_delay),
        shutdown_grace: Duration::from_secs(args.shutdown_grace),
        decisions_retained: args.decisions_retained as usize,
        redis: env(REDIS_URL_VAR).map(|url| RedisAccess {
            url: Secret::new(url),
            consumer: pod_name(),
            key_prefix: redis_key_prefix,
            dead_letter_max,
        }),
    };
    let running = match args.archive {
        Some(dir) => {
            let limits = ArchiveLimits {
                max_file_bytes: args.archive_file_mib * 1024 * 1024,
                max_files: args.archive_files,
            };
            let archive = DecisionArchive::open(&dir, limits)?;
            server::start_archived(options, settings, archive).await?
        }
        None => server::start(options, settings).await?,
    };
    let stopper = running.stopper();
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stopper.send(true);
    });
    running.wait().await;
    Ok(())
}

/// Where the resource is and who this pod is, from the downward API's variables.
fn kube_options(resource: String) -> KubeOptions {
    let mut options = KubeOptions::new(resource, pod_name());
    options.namespace = env("POD_NAMESPACE");
    options
}

/// This pod's name (downward API), else the host name, else one unique to this process.
fn pod_name() -> String {
    env("POD_NAME")
        .or_else(|| env("HOSTNAME"))
        .unwrap_or_else(|| format!("deskhook-{}", std::process::id()))
}

async fn queue(args: QueueArgs) -> anyhow::Result<()> {
    let url = env(REDIS_URL_VAR).with_context(|| format!("{REDIS_URL_VAR} is not set"))?;
    let redis = Redis::connect(&Secret::new(url), &args.key_prefix)?;
    let admin = QueueAdmin::new(&redis);
    let print_json = |value: serde_json::Value| {
        println!(
            "{}",
            serde_json::to_string_pretty(&value).expect("JSON prints")
        );
    };
    match args.command {
        QueueCommand::Stats => {
            let stats = admin.stats().await?;
            if args.json {
                print_json(serde_json::to_value(&stats)?);
            } else {
                println!("waiting       {}", stats.waiting);
                println!("running       {}", stats.running);
                println!("dead letters  {}", stats.dead_letters);
                for consumer in &stats.consumers {
                    println!(
                        "consumer {:<30} holds {:>4}  idle {:.1}s",
                        consumer.name,
                        consumer.pending,
                        consumer.idle_ms as f64 / 1000.0
                    );
                }
            }
        }
        QueueCommand::DeadLetters { limit } => {
            let letters = admin.dead_letters(limit).await?;
            if args.json {
                print_json(serde_json::to_value(&letters)?);
            } else if letters.is_empty() {
                println!("no dead letters");
            } else {
                for letter in &letters {
                    println!(
                        "{}  ticket {}  {}  attempts {}  error: {}",
                        letter.id,
                        letter.ticket_id,
                        letter.event_type.as_deref().unwrap_or("?"),
                        letter.attempts,
                        letter.error
                    );
                }
            }
        }
        QueueCommand::Replay { id, all } => {
            let replayed = match (id, all) {
                (_, true) => admin.replay_all().await?,
                (Some(id), false) => vec![admin.replay(&id).await?],
                (None, false) => bail!("give a dead letter id or --all"),
            };
            if args.json {
                print_json(serde_json::to_value(&replayed)?);
            } else {
                for one in &replayed {
                    println!("{}  {}", one.id, one.outcome);
                }
            }
            if replayed.iter().any(|r| r.outcome == "missing") {
                bail!("no such dead letter");
            }
        }
    }
    Ok(())
}

async fn backtest(args: BacktestArgs) -> anyhow::Result<()> {
    let source = match (args.api, args.redis, args.archive) {
        (Some(url), _, _) => Source::Admin {
            url,
            token: env("DESKHOOK_ADMIN_TOKEN")
                .map(Secret::new)
                .context("DESKHOOK_ADMIN_TOKEN is not set")?,
        },
        (None, true, _) => Source::Redis {
            url: env(REDIS_URL_VAR)
                .map(Secret::new)
                .with_context(|| format!("{REDIS_URL_VAR} is not set"))?,
            key_prefix: args.key_prefix,
        },
        (None, false, Some(path)) => Source::Archive(path),
        (None, false, None) => bail!("give --api, --redis or --archive"),
    };
    let backtest = Backtest {
        source,
        settings: args.settings,
        baseline: match (args.baseline, args.kube) {
            (Some(path), _) => Baseline::File(path),
            (None, Some(name)) => Baseline::Kube {
                name,
                namespace: args.namespace,
            },
            (None, None) => Baseline::Recorded,
        },
        since: args.since,
        limit: args.limit,
        format: match args.format {
            BacktestFormat::Table => Format::Table,
            BacktestFormat::Json => Format::Json,
            BacktestFormat::Csv => Format::Csv,
        },
        max_changed: args.max_changed,
    };
    let finding = backtest.run().await?;
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(finding.output.as_bytes())
        .and_then(|()| stdout.flush())
        .context("failed to write the backtest")?;
    if finding.too_many_changed {
        eprintln!(
            "{} of {} decisions would change: more than --max-changed",
            finding.comparison.changed, finding.comparison.compared
        );
        std::process::exit(3);
    }
    Ok(())
}

/// SIGTERM (Kubernetes) or Ctrl-C (a terminal).
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler can be installed");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
