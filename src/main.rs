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
use deskhook::server::{self, ServeOptions, ZohoAccess};
use deskhook::telemetry::{self, LogFormat};
use deskhook::verify::hmac;

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
        llm_api_key: env("DESKHOOK_LLM_API_KEY").map(Secret::new),
        listen,
        metrics_listen: args.metrics_listen,
        config: args.config,
        kube,
        hmac_secrets,
        admin_tokens,
        insecure_no_verification: args.insecure_no_verification,
        shutdown_delay: Duration::from_secs(args.shutdown_delay),
        shutdown_grace: Duration::from_secs(args.shutdown_grace),
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

/// Where the resource is and who this pod is, from the downward API's variables.
fn kube_options(resource: String) -> KubeOptions {
    let pod = env("POD_NAME")
        .or_else(|| env("HOSTNAME"))
        .unwrap_or_else(|| format!("deskhook-{}", std::process::id()));
    let mut options = KubeOptions::new(resource, pod);
    options.namespace = env("POD_NAMESPACE");
    options
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
