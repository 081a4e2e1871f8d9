//! The `deskhook` command: parse the command line, start logging, call the library.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use deskhook::app::{App, ServeConfig, non_blank};
use deskhook::backtest::render::Format;
use deskhook::backtest::source::Source;
use deskhook::backtest::{Backtest, Baseline, MaxChanged};
use deskhook::config::Secret;
use deskhook::crd::SignatureEncoding;
use deskhook::queue::redis::QueueAdmin;
use deskhook::queue::render;
use deskhook::store::{REDIS_URL_VAR, Redis, Topology};
use deskhook::telemetry;
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
    Serve(Box<ServeConfig>),
    /// Print the WebhookAutomation CustomResourceDefinition (YAML), generated from the types.
    Crd,
    /// Print the HMAC-SHA256 signature of standard input with the first ZOHO_WEBHOOK_SECRET key.
    Sign {
        /// Print base64 instead of hex.
        #[arg(long)]
        base64: bool,
        /// The HMAC secrets, comma-separated; the first signs.
        #[arg(long, env = "ZOHO_WEBHOOK_SECRET", hide = true, hide_env_values = true)]
        secret: Option<String>,
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
    #[arg(long, env = REDIS_URL_VAR, hide = true, hide_env_values = true)]
    redis_url: Option<String>,
    /// The Redis URL names a Redis Cluster (as given to `serve`).
    #[arg(long, env = "DESKHOOK_REDIS_CLUSTER")]
    redis_cluster: bool,
    #[arg(
        long,
        env = "DESKHOOK_ADMIN_TOKEN",
        hide = true,
        hide_env_values = true
    )]
    admin_token: Option<String>,
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
        value_parser = deskhook::app::key_prefix
    )]
    key_prefix: String,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[arg(long, env = REDIS_URL_VAR, global = true, hide = true, hide_env_values = true)]
    redis_url: Option<String>,
    /// The Redis URL names a Redis Cluster (as given to `serve`).
    #[arg(long, env = "DESKHOOK_REDIS_CLUSTER", global = true)]
    redis_cluster: bool,
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

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Sign { base64, secret } => sign(base64, secret),
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
        Command::Serve(config) => {
            let telemetry = telemetry::init(config.log_format);
            let outcome = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("failed to start the async runtime")?
                .block_on(async { App::build(*config)?.run(shutdown_signal()).await });
            telemetry.shutdown();
            Ok(outcome?)
        }
    }
}

fn sign(base64: bool, secret: Option<String>) -> anyhow::Result<()> {
    let Some(secrets) = non_blank(secret) else {
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

async fn queue(args: QueueArgs) -> anyhow::Result<()> {
    let url = non_blank(args.redis_url).with_context(|| format!("{REDIS_URL_VAR} is not set"))?;
    let redis = Redis::connect_to(
        &Secret::new(url),
        &args.key_prefix,
        Topology::from_flag(args.redis_cluster),
    )?;
    let admin = QueueAdmin::new(&redis);
    let format = if args.json {
        render::Format::Json
    } else {
        render::Format::Text
    };
    let (output, missing) = match args.command {
        QueueCommand::Stats => (render::stats(&admin.stats().await?, format)?, false),
        QueueCommand::DeadLetters { limit } => (
            render::dead_letters(&admin.dead_letters(limit).await?, format)?,
            false,
        ),
        QueueCommand::Replay { id, all } => {
            let replayed = match (id, all) {
                (_, true) => admin.replay_all().await?,
                (Some(id), false) => vec![admin.replay(&id).await?],
                (None, false) => bail!("give a dead letter id or --all"),
            };
            let missing = replayed.iter().any(|r| r.outcome == "missing");
            (render::replayed(&replayed, format)?, missing)
        }
    };
    print!("{output}");
    if missing {
        bail!("no such dead letter");
    }
    Ok(())
}

async fn backtest(args: BacktestArgs) -> anyhow::Result<()> {
    let source = match (args.api, args.redis, args.archive) {
        (Some(url), _, _) => Source::Admin {
            url,
            token: non_blank(args.admin_token)
                .map(Secret::new)
                .context("DESKHOOK_ADMIN_TOKEN is not set")?,
        },
        (None, true, _) => Source::Redis {
            url: non_blank(args.redis_url)
                .map(Secret::new)
                .with_context(|| format!("{REDIS_URL_VAR} is not set"))?,
            key_prefix: args.key_prefix,
            topology: Topology::from_flag(args.redis_cluster),
        },
        (None, false, Some(path)) => Source::Archive(path),
        (None, false, None) => bail!("give --api, --redis or --archive"),
    };
    let backtest = Backtest {
        source,
        settings: args.settings,
        baseline: match (args.baseline, args.kube) {
            (Some(path), _) => Baseline::File(path),
            (None, Some(name)) => Baseline::Live(Box::new(
                deskhook::kube::live_settings(&name, args.namespace.as_deref()).await?,
            )),
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
