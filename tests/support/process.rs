//! The `deskhook` binary run as a child process, with its output captured line by line.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

use super::intake::{self, POLL, Reply, WAIT};

/// The binary under test, built by cargo for the integration tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_deskhook");

/// A directory under cargo's scratch space for integration tests, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        static COUNT: AtomicU32 = AtomicU32::new(0);
        let unique = format!(
            "{name}-{}-{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        );
        let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(unique);
        std::fs::create_dir_all(&path).expect("the scratch directory can be created");
        Self(path)
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }

    /// Replaces `file` atomically (write aside, then rename), as a ConfigMap update does, so
    /// a watcher never reads a half-written file.
    pub fn write(&self, file: &str, contents: &str) -> PathBuf {
        let target = self.path(file);
        let aside = self.path(&format!(".{file}.new"));
        std::fs::write(&aside, contents).expect("the scratch file can be written");
        std::fs::rename(&aside, &target).expect("the scratch file can be renamed");
        target
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `deskhook serve` on ephemeral ports with JSON logs, in an empty environment; settings
/// from `config`, or from the environment without one.
pub fn serve_command(config: Option<&Path>) -> Command {
    let mut command = Command::new(BIN);
    command
        .env_clear()
        .env("RUST_LOG", "info")
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(config) = config {
        command.arg("--config").arg(config);
    }
    command
}

/// Output lines of a child, standard output and error interleaved as they arrive.
#[derive(Clone, Default)]
pub struct Output(Arc<Mutex<Vec<String>>>);

impl Output {
    fn follow(&self, stream: impl AsyncRead + Unpin + Send + 'static) {
        let lines = self.0.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stream).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                lines.lock().expect("not poisoned").push(line);
            }
        });
    }

    pub fn text(&self) -> String {
        self.0.lock().expect("not poisoned").join("\n")
    }

    /// The lines that are JSON log events.
    pub fn events(&self) -> Vec<Value> {
        self.0
            .lock()
            .expect("not poisoned")
            .iter()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// The log events whose `message` is `message`.
    pub fn events_with(&self, message: &str) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|event| event["message"] == message)
            .collect()
    }

    /// Waits, at most [`WAIT`], for a log event matching `matches`.
    pub async fn wait_for(&self, what: &str, matches: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(event) = self.events().into_iter().find(|event| matches(event)) {
                return event;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what} in:\n{}",
                self.text()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits, at most [`WAIT`], until both pipes are closed and read to the end.
    async fn closed(&self) {
        // Each reader task holds a clone of the line buffer until its pipe closes.
        intake::eventually("the output pipes to close", || async {
            (Arc::strong_count(&self.0) == 1).then_some(())
        })
        .await;
    }
}

/// A running `deskhook serve`.
pub struct Deskhook {
    child: Child,
    pub addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub output: Output,
    pub client: reqwest::Client,
}

impl Deskhook {
    /// Spawns `command` and waits, at most [`WAIT`], for its `deskhook ready` line.
    pub async fn start(mut command: Command) -> Self {
        let mut child = command.spawn().expect("the binary starts");
        let output = Output::default();
        output.follow(child.stdout.take().expect("stdout is piped"));
        output.follow(child.stderr.take().expect("stderr is piped"));
        let deadline = tokio::time::Instant::now() + WAIT;
        let ready = loop {
            if let Some(ready) = output.events_with("deskhook ready").pop() {
                break ready;
            }
            if let Some(status) = child.try_wait().expect("the child can be polled") {
                output.closed().await;
                panic!(
                    "deskhook exited with {status} before it was ready:\n{}",
                    output.text()
                );
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "deskhook was not ready in time:\n{}",
                output.text()
            );
            tokio::time::sleep(POLL).await;
        };
        let address = |field: &str| -> SocketAddr {
            ready[field]
                .as_str()
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("no {field} in the ready line {ready}"))
        };
        Self {
            addr: address("addr"),
            metrics_addr: address("metrics_addr"),
            child,
            output,
            client: intake::client(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The process id, to read the process's memory from `/proc`.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("the child is running")
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.metrics_addr)
    }

    pub async fn get(&self, path: &str) -> Reply {
        intake::get(&self.client, &self.url(path), &[]).await
    }

    pub async fn admin_get(&self, path: &str) -> Reply {
        intake::get(&self.client, &self.admin_url(path), &[]).await
    }

    /// Posts `body` to the webhook, signed (hex) with `key`.
    pub async fn deliver_signed(&self, key: &str, body: &[u8]) -> Reply {
        let signature = intake::hmac_hex(key, body);
        intake::post(
            &self.client,
            &self.url("/webhook/zoho-desk"),
            body.to_vec(),
            &[(intake::SIGNATURE_HEADER, &signature)],
        )
        .await
    }

    pub async fn stats(&self) -> Value {
        let reply = self.get("/webhook/stats").await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        reply.json
    }

    pub async fn metric(&self, series: &str) -> f64 {
        let reply = self.admin_get("/metrics").await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        intake::sample(&reply.text, series)
    }

    /// Sends SIGTERM, as Kubernetes does.
    pub async fn terminate(&self) {
        let pid = self.child.id().expect("the child is running");
        let status = Command::new("sh")
            .args(["-c", "kill -TERM \"$0\""])
            .arg(pid.to_string())
            .status()
            .await
            .expect("sh runs");
        assert!(status.success(), "kill -TERM {pid} failed");
    }

    /// Kills the process with SIGKILL (no shutdown sequence, as when a node dies) and waits
    /// for it.
    pub async fn kill(&mut self) {
        self.child.kill().await.expect("the child can be killed");
    }

    /// Waits, at most [`WAIT`], for the process to exit.
    pub async fn wait_exit(&mut self) -> ExitStatus {
        let status = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("deskhook did not exit in time:\n{}", self.output.text()))
            .expect("the child can be waited for");
        self.output.closed().await;
        status
    }
}
