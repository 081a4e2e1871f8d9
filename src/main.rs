//! The `deskhook` command: parse the command line, start logging, call the library.

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
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
    Serve(ServeArgs),
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
}

#[derive(Args)]
struct QueueArgs {
    /// Prefix of deskhook's Redis keys (spec.queue.redis.keyPrefix).
    #[arg(long, value_name = "PREFIX", default_value = "deskhook", global = true)]
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
        Command::Serve(args) => {
            let telemetry = telemetry::init(args.log_format);
            let outcome = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("failed to start the async runtime")?
                .block_on(serve(args));
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
    let options = ServeOptions {
        zoho,
        llm_api_key: llm_api_key()?,
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
        }),
    };
    let running = server::start(options, settings).await?;
    let stopper = running.stopper();
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stopper.send(true);
    });
    running.wait().await;
    Ok(())
}

/// The language model's key: `DESKHOOK_LLM_API_KEY`, else the file `DESKHOOK_LLM_API_KEY_FILE`
/// names (a mounted Secret, so the key stays out of the pod's environment).
fn llm_api_key() -> anyhow::Result<Option<Secret>> {
    if let Some(key) = env("DESKHOOK_LLM_API_KEY") {
        return Ok(Some(Secret::new(key)));
    }
    let Some(path) = env("DESKHOOK_LLM_API_KEY_FILE") else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("failed to read DESKHOOK_LLM_API_KEY_FILE {path}"))?;
    Ok(Some(text.trim().to_owned())
        .filter(|key| !key.is_empty())
        .map(Secret::new))
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
