//! The review console in a real browser: Debian's headless Chromium, driven over WebDriver by
//! chromedriver. It signs in, reads the list, uses a filter, opens a decision and saves
//! screenshots under `target/console-screenshots/`; with `DESKHOOK_UPDATE_SCREENSHOTS=1` it
//! refreshes the ones the README shows (`docs/screenshots/`) instead.
//!
//! Outside CI the test is skipped, with a message, when Chromium or chromedriver is missing;
//! with `CI=true` a missing browser fails it.

mod support;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};
use support::intake::{ADMIN_TOKEN, Intake, WAIT};
use support::{review, tools};

/// The longest a page load, a click or the driver's start may take.
const BROWSER_WAIT: Duration = Duration::from_secs(30);

/// chromedriver, killed when the test ends however it ends.
struct Driver {
    child: Child,
    url: String,
    profile: PathBuf,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A WebDriver session over plain HTTP.
struct Browser {
    http: reqwest::Client,
    session: String,
    driver: Driver,
}

impl Browser {
    async fn start(chromium: &Path, chromedriver: &Path) -> Self {
        let port = free_port();
        let profile =
            std::env::temp_dir().join(format!("deskhook-console-browser-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&profile);
        std::fs::create_dir_all(&profile).expect("a browser profile directory");
        let child = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let driver = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
            profile,
        };
        let http = support::intake::client();
        let ready = tokio::time::timeout(BROWSER_WAIT, async {
            loop {
                if let Ok(answer) = http.get(format!("{}/status", driver.url)).send().await
                    && let Ok(status) = answer.json::<Value>().await
                    && status["value"]["ready"] == true
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
        assert!(ready.is_ok(), "chromedriver became ready in time");
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium.to_string_lossy(),
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--hide-scrollbars", "--lang=fr-FR",
                    format!("--user-data-dir={}", driver.profile.display()),
                    "--window-size=1440,1000",
                ]
            }
        }}});
        let created = tokio::time::timeout(
            BROWSER_WAIT,
            http.post(format!("{}/session", driver.url))
                .json(&capabilities)
                .timeout(BROWSER_WAIT)
                .send(),
        )
        .await
        .expect("the browser starts in time")
        .expect("chromedriver answers");
        let created: Value = created.json().await.expect("a JSON answer");
        let session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {created}"))
            .to_owned();
        Self {
            http,
            session,
            driver,
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.driver.url, self.session);
        let mut request = self.http.request(method, url).timeout(BROWSER_WAIT);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value = request
            .send()
            .await
            .expect("chromedriver answers")
            .json()
            .await
            .expect("a JSON answer");
        if let Some(error) = answer["value"]["error"].as_str() {
            panic!("WebDriver {path}: {error}: {}", answer["value"]["message"]);
        }
        answer["value"].clone()
    }

    async fn go(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    async fn current_url(&self) -> String {
        self.call(reqwest::Method::GET, "/url", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    async fn find_all(&self, css: &str) -> Vec<String> {
        let found = self
            .call(
                reqwest::Method::POST,
                "/elements",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        found
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e.as_object()?.values().next()?.as_str().map(str::to_owned))
            .collect()
    }

    async fn find(&self, css: &str) -> String {
        self.find_all(css)
            .await
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("no element matches {css}"))
    }

    async fn click(&self, css: &str) {
        let element = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{element}/click"),
            Some(json!({})),
        )
        .await;
    }

    /// Clicks a link or a submit button and waits for the page it leads to. A click returns
    /// when the browser has taken it, which can be before the navigation has begun; reading
    /// the page then would read the old one.
    async fn click_to_navigate(&self, css: &str) {
        let before = self.current_url().await;
        self.click(css).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while self.current_url().await == before {
            assert!(
                tokio::time::Instant::now() < deadline,
                "clicking {css} left the browser on {before}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The new document is read once it has loaded.
        while self
            .call(
                reqwest::Method::POST,
                "/execute/sync",
                Some(json!({"script": "return document.readyState", "args": []})),
            )
            .await
            != "complete"
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the page after clicking {css} did not finish loading"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{element}/value"),
            Some(json!({"text": text})),
        )
        .await;
    }

    /// Replaces a field's text at once, as a paste does: typing a whole document key by key
    /// takes longer than a loaded machine allows one WebDriver call.
    async fn paste(&self, css: &str, text: &str) {
        self.find(css).await;
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({
                "script": "document.querySelector(arguments[0]).value = arguments[1];",
                "args": [css, text],
            })),
        )
        .await;
    }

    /// Waits until `css` matches an element and the page has finished loading: a form that
    /// posts back to its own address changes no URL to wait on.
    async fn wait_for(&self, css: &str) {
        let deadline = tokio::time::Instant::now() + BROWSER_WAIT;
        loop {
            let loaded = self
                .call(
                    reqwest::Method::POST,
                    "/execute/sync",
                    Some(json!({"script": "return document.readyState", "args": []})),
                )
                .await
                == "complete";
            if loaded && !self.find_all(css).await.is_empty() {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "nothing matched {css} in time"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn text(&self, css: &str) -> String {
        let element = self.find(css).await;
        self.call(
            reqwest::Method::GET,
            &format!("/element/{element}/text"),
            None,
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    async fn resize(&self, width: u32, height: u32) {
        self.call(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        )
        .await;
    }

    /// Saves the viewport as a PNG (see the module documentation for where).
    async fn screenshot(&self, name: &str) -> PathBuf {
        let encoded = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().unwrap_or_default())
            .expect("a base64 screenshot");
        assert!(png.starts_with(b"\x89PNG"), "a PNG image");
        let update_docs = std::env::var("DESKHOOK_UPDATE_SCREENSHOTS").is_ok_and(|v| v == "1");
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(if update_docs {
            "docs/screenshots"
        } else {
            "target/console-screenshots"
        });
        std::fs::create_dir_all(&dir).expect("the screenshot directory");
        let path = dir.join(name);
        std::fs::write(&path, png).expect("the screenshot is written");
        path
    }
}

impl Drop for Browser {
    /// Ends the session even when an assertion failed, so chromedriver closes Chromium before
    /// it is killed itself: a plain blocking request, since `drop` cannot await.
    fn drop(&mut self) {
        use std::io::{Read, Write};
        let Some(address) = self.driver.url.strip_prefix("http://") else {
            return;
        };
        let Ok(mut stream) = std::net::TcpStream::connect(address) else {
            return;
        };
        let _ = stream.set_read_timeout(Some(WAIT));
        let _ = stream.set_write_timeout(Some(WAIT));
        let request = format!(
            "DELETE /session/{} HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.session
        );
        if stream.write_all(request.as_bytes()).is_ok() {
            let _ = stream.read_to_end(&mut Vec::new());
        }
    }
}

/// Chromium and chromedriver for `test`, or `None` (with a visible message) outside CI when
/// they are missing.
fn browser_programs(test: &str) -> Option<(PathBuf, PathBuf)> {
    let chromium = tools::require(test, &["chromium", "chromium-browser"], "chromium");
    let chromedriver = tools::require(test, &["chromedriver"], "chromium-driver");
    Some((chromium?, chromedriver?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_works_in_a_real_browser() {
    let Some((chromium, chromedriver)) = browser_programs("the_console_works_in_a_real_browser")
    else {
        return;
    };

    let fake = review::seeded_fake().await;
    let reports = review::run_cases(&fake).await;
    let server = Intake::new()
        .admin_token(ADMIN_TOKEN)
        .spec(|s| *s = review::spec())
        .start()
        .await;
    // A few days of traffic: the scenario several times over, as a team lead would see it.
    for _ in 0..3 {
        for report in &reports {
            server.running.state.decisions.push(report.clone());
        }
    }
    let console = server.admin_url("/console");
    let browser = Browser::start(&chromium, &chromedriver).await;

    // Signing in: the console sends the browser to the login form first.
    browser.go(&console).await;
    assert!(browser.current_url().await.ends_with("/console/login"));
    browser.type_into("input[name=token]", ADMIN_TOKEN).await;
    browser
        .click_to_navigate("form[action='/console/login'] button")
        .await;
    assert!(
        browser.current_url().await.ends_with("/console"),
        "signed in and back on the console"
    );
    let level = browser.text("p.level").await;
    assert_eq!(level, "Level 1: dispatch and link");
    assert_eq!(browser.find_all("table.decisions tbody tr").await.len(), 18);
    // French text and hostile text both read as written.
    let list = browser.text("table.decisions").await;
    assert!(list.contains("Mon dossier d'inscription"), "{list}");
    assert!(list.contains("Zoé Martin - Uber 20€"), "{list}");
    assert!(list.contains(review::HOSTILE_SUBJECT), "{list}");
    assert!(browser.find_all("table.decisions script").await.is_empty());
    browser.resize(1440, 1300).await;
    browser.screenshot("console-overview.png").await;

    // A filter: only the tickets headed for (or sitting in) FACTURATION.
    browser.resize(1440, 900).await;
    browser
        .click("select[name=department] option[value='FACTURATION']")
        .await;
    browser
        .click_to_navigate("form.filters button[type=submit]")
        .await;
    let url = browser.current_url().await;
    assert!(url.contains("department=FACTURATION"), "{url}");
    // The list comes into view: the rollout panel is above it.
    assert!(url.ends_with("#decisions"), "{url}");
    let rows = browser.find_all("table.decisions tbody tr").await;
    assert_eq!(rows.len(), 3);
    let filtered = browser.text("table.decisions").await;
    assert!(filtered.contains("Question sur ma facture"), "{filtered}");
    assert!(
        !filtered.contains("Mon dossier d'inscription"),
        "{filtered}"
    );
    // The reply suggestion opens in place.
    browser.click("td.reply summary").await;
    let reply = browser.text("td.reply pre").await;
    assert!(reply.starts_with("Bonjour Lucas"), "{reply}");
    browser.screenshot("console-filtered.png").await;

    // One decision in full.
    browser.go(&format!("{console}?ticket=101")).await;
    browser.click_to_navigate("td.ticket a").await;
    assert!(browser.current_url().await.contains("/console/decisions/"));
    let heading = browser.text("h1").await;
    assert!(heading.starts_with("Ticket #101"), "{heading}");
    let reply = browser.text("pre.reply-text").await;
    assert!(reply.starts_with("Bonjour Zoé,"), "{reply}");
    let rules = browser.text("section:last-of-type table").await;
    assert!(rules.contains("refus-cma yes"), "{rules}");
    browser.resize(1440, 1900).await;
    browser.screenshot("console-decision.png").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backtest_page_shows_a_pasted_edit_ticket_by_ticket() {
    let Some((chromium, chromedriver)) =
        browser_programs("the_backtest_page_shows_a_pasted_edit_ticket_by_ticket")
    else {
        return;
    };
    let fake = review::seeded_fake().await;
    let reports = review::run_cases(&fake).await;
    let server = Intake::new()
        .admin_token(ADMIN_TOKEN)
        .spec(|s| *s = review::spec())
        .start()
        .await;
    for report in &reports {
        server.running.state.decisions.push(report.clone());
    }
    // The billing acknowledgement gets a second sentence.
    let mut edited = review::spec();
    let template = edited
        .replies
        .templates
        .get_mut("accuse-facturation")
        .expect("the reference configuration has a billing reply");
    let first_line = template.lines().next().unwrap().to_owned();
    *template = template.replacen(
        &first_line,
        &format!("{first_line}\nVotre demande est prioritaire."),
        1,
    );
    let yaml = serde_yaml::to_string(&edited).unwrap();
    let billed = reports
        .iter()
        .filter(|r| {
            r.intent
                .as_ref()
                .and_then(|i| i.reply.as_ref())
                .is_some_and(|reply| reply.template == "accuse-facturation")
        })
        .count();
    assert!(billed > 0);

    let browser = Browser::start(&chromium, &chromedriver).await;
    browser.go(&server.admin_url("/console/login")).await;
    browser.type_into("input[name=token]", ADMIN_TOKEN).await;
    browser
        .click_to_navigate("form[action='/console/login'] button")
        .await;
    browser
        .click_to_navigate("nav a[href='/console/backtest']")
        .await;
    assert!(browser.current_url().await.ends_with("/console/backtest"));
    browser.paste("textarea[name=yaml]", &yaml).await;
    browser.click("#backtest-run").await;
    browser.wait_for("#backtest-result").await;
    assert_eq!(browser.text("#backtest-changed").await, billed.to_string());
    let added = browser.find_all("pre.diff span.add").await;
    assert_eq!(added.len(), billed, "one added line per changed reply");
    let diff = browser.text("pre.diff").await;
    assert!(diff.contains("+Votre demande est prioritaire."), "{diff}");
    assert!(browser.find_all("tr.change-department").await.is_empty());
    browser.resize(1440, 1400).await;
    browser.screenshot("console-backtest.png").await;
}
