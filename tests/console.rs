//! The review console over real HTTP: every page and filter, the exports, escaping of hostile
//! customer text, the sign-in with the admin token, and its absence from the public listener.

mod support;

use deskhook::workflow::{DecisionReport, StepStatus};
use serde_json::Value;
use support::fake_zoho::FakeZoho;
use support::intake::{ADMIN_TOKEN, Intake, Server, WAIT};
use support::review::{self, CASES, FAILING, FORMULA_SUBJECT, HOSTILE_SUBJECT, UNHANDLED};

/// A server whose decision log holds one real run per review case, newest last pushed.
async fn filled(intake: Intake) -> (Server, FakeZoho, Vec<DecisionReport>) {
    let fake = review::seeded_fake().await;
    let reports = review::run_cases(&fake).await;
    let server = intake.spec(|s| *s = review::spec()).start().await;
    for report in &reports {
        server.running.state.decisions.push(report.clone());
    }
    (server, fake, reports)
}

/// A client that shows redirects instead of following them, bounded like every test request.
fn no_redirects() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(WAIT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a client")
}

struct Page {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

async fn fetch(client: &reqwest::Client, url: &str, cookie: Option<&str>) -> Page {
    let mut request = client.get(url);
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    let response = request.send().await.expect("answered");
    Page {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        body: response.text().await.expect("a body"),
    }
}

async fn page(server: &Server, path: &str) -> Page {
    fetch(&no_redirects(), &server.admin_url(path), None).await
}

impl Page {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// Ids of the decisions listed, in page order.
    fn decision_ids(&self) -> Vec<String> {
        self.body
            .split("href=\"/console/decisions/")
            .skip(1)
            .map(|rest| rest.split('"').next().unwrap_or_default().to_owned())
            .collect()
    }

    /// The rollout table's numbers (done, held back, failed) for one step.
    fn rollout_counts(&self, step: &str) -> [usize; 3] {
        let row = self
            .body
            .split(&format!("data-step=\"{step}\""))
            .nth(1)
            .and_then(|rest| rest.split("</tr>").next())
            .unwrap_or_else(|| panic!("no rollout row for {step}"));
        let numbers: Vec<usize> = row
            .split("<td class=\"num")
            .skip(1)
            .map(|cell| {
                let text = cell.split('>').nth(1).unwrap_or_default();
                let text = text.split('<').next().unwrap_or_default();
                text.trim().parse().expect("a count")
            })
            .collect();
        numbers.try_into().expect("three counts")
    }
}

/// Undoes the HTML escaping the templates apply.
fn unescape(html: &str) -> String {
    html.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&#x2f;", "/")
        .replace("&amp;", "&")
}

fn ticket_of(reports: &[DecisionReport], id: &str) -> usize {
    reports
        .iter()
        .position(|r| r.ticket_id == id)
        .expect("a report")
}

/// The console id of the report at `index` of `reports` (ids follow push order from 1).
fn id_of(index: usize) -> String {
    (index + 1).to_string()
}

fn count_status(reports: &[DecisionReport], step: &str, wanted: &[StepStatus]) -> usize {
    reports
        .iter()
        .filter(|r| {
            r.steps
                .iter()
                .any(|s| s.step == step && wanted.contains(&s.status))
        })
        .count()
}

#[tokio::test]
async fn the_console_is_served_on_the_admin_listener_and_never_on_the_public_one() {
    let (server, _fake, _) = filled(Intake::new().console_open()).await;
    let client = no_redirects();
    for path in [
        "/console",
        "/console/decisions/1",
        "/console/export.csv",
        "/console/export.json",
        "/console/style.css",
        "/console/login",
    ] {
        let public = fetch(&client, &server.url(path), None).await;
        assert_eq!(public.status, 404, "{path} on the public listener");
        assert!(!public.body.contains("Zoé"), "{path}");
    }
    let admin = page(&server, "/console").await;
    assert_eq!(admin.status, 200);
    assert_eq!(admin.header("content-type"), "text/html; charset=utf-8");
}

#[tokio::test]
async fn pages_carry_a_strict_security_policy_and_load_nothing_from_elsewhere() {
    let (server, _fake, _) = filled(Intake::new().console_open()).await;
    for path in ["/console", "/console/decisions/1", "/console/style.css"] {
        let answer = page(&server, path).await;
        assert_eq!(answer.status, 200, "{path}");
        let csp = answer.header("content-security-policy");
        assert!(csp.contains("default-src 'none'"), "{path}: {csp}");
        assert!(csp.contains("style-src 'self'"), "{path}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        assert_eq!(answer.header("x-content-type-options"), "nosniff");
        assert_eq!(answer.header("referrer-policy"), "no-referrer");
        assert_eq!(answer.header("cache-control"), "no-store");
    }
    let html = page(&server, "/console").await.body;
    assert!(!html.to_lowercase().contains("<script"), "no script at all");
    assert!(html.contains("<link rel=\"stylesheet\" href=\"/console/style.css\">"));
    let css = page(&server, "/console/style.css").await;
    assert_eq!(css.header("content-type"), "text/css; charset=utf-8");
    assert!(!css.body.contains("url("), "the stylesheet loads nothing");
}

#[tokio::test]
async fn started_open_on_loopback_the_console_says_so() {
    let (server, _fake, _) = filled(Intake::new().console_open()).await;
    let home = page(&server, "/console").await;
    assert_eq!(home.status, 200);
    assert!(home.body.contains("started open"), "{}", home.body);
    // There is nothing to sign in to.
    let login = page(&server, "/console/login").await;
    assert_eq!(login.status, 303);
    assert_eq!(login.header("location"), "/console");
}

#[tokio::test]
async fn without_an_admin_token_the_console_is_off() {
    let (server, _fake, _) = filled(Intake::new()).await;
    let client = no_redirects();
    for path in [
        "/console",
        "/console/decisions/1",
        "/console/export.csv",
        "/console/export.json",
    ] {
        let answer = fetch(&client, &server.admin_url(path), None).await;
        assert_eq!(answer.status, 303, "{path}");
        assert_eq!(answer.header("location"), "/console/login", "{path}");
        assert!(!answer.body.contains("Zoé"), "{path}");
    }
    let login = page(&server, "/console/login").await;
    assert_eq!(login.status, 200);
    assert!(login.body.contains("The console is off"), "{}", login.body);
    assert!(!login.body.contains("name=\"token\""));
    let attempt = client
        .post(server.admin_url("/console/login"))
        .form(&[("token", "")])
        .send()
        .await
        .expect("answered");
    assert_eq!(attempt.status(), 403);
    assert!(attempt.headers().get("set-cookie").is_none());
}

#[tokio::test]
async fn a_console_request_by_a_foreign_host_name_is_refused() {
    let (server, _fake, _) = filled(Intake::new().console_open()).await;
    let client = no_redirects();
    // What a browser sends after DNS rebinding: the attacker's name, this listener's address.
    let rebound = client
        .get(server.admin_url("/console/export.json"))
        .header("host", "evil.example:9090")
        .send()
        .await
        .expect("answered");
    assert_eq!(rebound.status(), 421);
    assert!(!rebound.text().await.unwrap().contains("Zoé"));
    // Metrics are scraped by address and carry no customer data: not held to the names.
    let metrics = client
        .get(server.admin_url("/metrics"))
        .header("host", "10.1.2.3:9090")
        .send()
        .await
        .expect("answered");
    assert_eq!(metrics.status(), 200);
    assert_eq!(
        server
            .metric(r#"deskhook_webhook_rejections_total{reason="foreign_host"}"#)
            .await,
        1.0
    );
}

#[tokio::test]
async fn the_eleventh_wrong_sign_in_in_a_minute_is_refused_without_being_checked() {
    let (server, _fake, _) = filled(Intake::new().admin_token(ADMIN_TOKEN)).await;
    let client = no_redirects();
    let sign_in = |token: &'static str| {
        let client = client.clone();
        let url = server.admin_url("/console/login");
        async move {
            client
                .post(url)
                .form(&[("token", token)])
                .send()
                .await
                .expect("answered")
        }
    };
    for _ in 0..10 {
        assert_eq!(sign_in("a-wrong-guess").await.status(), 401);
    }
    // Even the right token is refused now: the attempt is not checked at all.
    let limited = sign_in(ADMIN_TOKEN).await;
    assert_eq!(limited.status(), 429);
    assert!(limited.headers().get("set-cookie").is_none());
    assert!(limited.headers().get("retry-after").is_some());
    assert_eq!(
        server
            .metric(r#"deskhook_webhook_rejections_total{reason="login_limited"}"#)
            .await,
        1.0
    );
}

#[tokio::test]
async fn the_rollout_panel_shows_the_flags_their_source_and_what_each_write_did() {
    let (server, _fake, reports) = filled(Intake::new().console_open()).await;
    let home = page(&server, "/console").await;
    let body = &home.body;
    assert!(body.contains("Level 1: dispatch and link"), "{body}");
    assert!(body.contains("Settings from the environment variables"));
    assert!(body.contains("generation 1, in force since 20"));
    assert!(body.contains("What each write did in the 6 most recent decisions"));
    // The flag chips of the rollout panel, in force now.
    assert!(body.contains("dispatch <b>on</b>"));
    assert!(body.contains("respond <b>off</b>"));

    for (step, _) in [
        ("dispatch", ()),
        ("link", ()),
        ("reply", ()),
        ("update_ticket", ()),
    ] {
        let expected = [
            count_status(&reports, step, &[StepStatus::Done]),
            count_status(
                &reports,
                step,
                &[StepStatus::SkippedFlagOff, StepStatus::Suggested],
            ),
            count_status(&reports, step, &[StepStatus::Failed]),
        ];
        assert_eq!(home.rollout_counts(step), expected, "{step}");
    }
    // The scenario exercises each column: moves done, replies held back, one failed move.
    assert!(home.rollout_counts("dispatch")[0] >= 2);
    assert_eq!(home.rollout_counts("dispatch")[2], 1);
    assert!(home.rollout_counts("reply")[1] >= 2);
}

#[tokio::test]
async fn the_list_shows_every_decision_newest_first_with_its_facts() {
    let (server, _fake, reports) = filled(Intake::new().console_open()).await;
    let home = page(&server, "/console").await;
    let ids = home.decision_ids();
    assert_eq!(ids, ["6", "5", "4", "3", "2", "1"], "newest first");
    let body = &home.body;
    // Ticket number and subject, current → recommended department, rule, deal and how.
    assert!(body.contains(">#101</a>"));
    assert!(body.contains("Mon dossier d&#x27;inscription"));
    assert!(body.contains("Contact → <b>Refus CMA</b>"));
    assert!(body.contains("<td>refus-cma</td>"));
    assert!(body.contains("Zoé Martin - Uber 20€"));
    assert!(body.contains("found by the customer&#x27;s email"));
    // The reply suggestion is there, collapsed.
    let zoe = &reports[ticket_of(&reports, CASES[0].id)];
    let reply = zoe.reply.as_ref().expect("a reply");
    assert!(body.contains("<details><summary>Suggested reply</summary>"));
    assert!(unescape(body).contains(&reply.text));
    // Each step in words, and the link to Zoho Desk.
    assert!(body.contains("skipped (flag off)"));
    assert!(body.contains("not needed"));
    assert!(body.contains("<span class=\"st-name\">Move</span> failed"));
    assert!(body.contains(
        "href=\"https:&#x2f;&#x2f;desk.zoho.eu&#x2f;support&#x2f;cab&#x2f;ShowHomePage.do#Cases&#x2f;dv&#x2f;198709000438366101\""
    ));
    assert!(body.contains("department Pédagogie is not in spec.departments"));
}

#[tokio::test]
async fn the_list_is_paged() {
    let (server, _fake, reports) = filled(Intake::new().console_open()).await;
    for _ in 0..25 {
        server.running.state.decisions.push(reports[1].clone());
    }
    let first = page(&server, "/console").await;
    assert!(
        first.body.contains("31 decisions · page 1 of 2"),
        "{}",
        first.body
    );
    assert_eq!(first.decision_ids().len(), 25);
    assert_eq!(first.decision_ids()[0], "31");
    assert!(
        first
            .body
            .contains("href=\"/console?page=2#decisions\">Older →</a>")
    );
    let second = page(&server, "/console?page=2").await;
    assert_eq!(second.decision_ids(), ["6", "5", "4", "3", "2", "1"]);
    assert!(
        second
            .body
            .contains("href=\"/console?page=1#decisions\">← Newer</a>")
    );
    // A page past the end shows the last one; nonsense shows the first.
    assert_eq!(
        page(&server, "/console?page=99").await.decision_ids().len(),
        6
    );
    assert_eq!(
        page(&server, "/console?page=abc")
            .await
            .decision_ids()
            .len(),
        25
    );
    // Paging keeps the filters.
    let filtered = page(&server, "/console?department=FACTURATION").await;
    assert_eq!(filtered.decision_ids().len(), 25);
    assert!(
        filtered
            .body
            .contains("href=\"/console?department=FACTURATION&amp;page=2#decisions\">Older →</a>")
    );
}

#[tokio::test]
async fn each_filter_narrows_the_list() {
    let (server, _fake, reports) = filled(Intake::new().console_open()).await;
    let index = |ticket: &str| id_of(ticket_of(&reports, ticket));
    let billing = index(CASES[1].id);
    let cases: Vec<(&str, Vec<String>)> = vec![
        // Department matches the current or the recommended one.
        ("department=FACTURATION", vec![billing.clone()]),
        ("department=facturation", vec![billing.clone()]),
        ("department=Refus%20CMA", vec![index(CASES[0].id)]),
        ("rule=refus-cma", vec![index(CASES[0].id)]),
        ("rule=facturation", vec![billing.clone()]),
        ("outcome=failed", vec![index(FAILING)]),
        ("outcome=skipped", vec![index(UNHANDLED)]),
        ("ticket=102", vec![billing.clone()]),
        ("ticket=%23102", vec![billing.clone()]),
        ("ticket=198709000438366102", vec![billing.clone()]),
        ("ticket=999", vec![]),
        ("department=FACTURATION&outcome=failed", vec![]),
    ];
    for (query, expected) in cases {
        let answer = page(&server, &format!("/console?{query}")).await;
        assert_eq!(answer.status, 200, "{query}");
        assert_eq!(answer.decision_ids(), expected, "{query}");
        assert!(answer.body.contains(">Clear</a>"), "{query}");
    }
    // "No rule matched" is a filter value of its own.
    let none = page(&server, "/console?rule=%28none%29").await;
    let expected: Vec<String> = reports
        .iter()
        .enumerate()
        .rev()
        .filter(|(_, r)| r.routing.as_ref().is_none_or(|r| r.rule.is_none()))
        .map(|(i, _)| id_of(i))
        .collect();
    assert!(!expected.is_empty());
    assert_eq!(none.decision_ids(), expected);
    // An outcome the console does not know is ignored rather than an error.
    assert_eq!(
        page(&server, "/console?outcome=boom")
            .await
            .decision_ids()
            .len(),
        6
    );
    // The chosen values stay selected.
    let chosen = page(&server, "/console?department=DOC&outcome=acted").await;
    assert!(
        chosen
            .body
            .contains("<option value=\"DOC\" selected>DOC</option>")
    );
    assert!(
        chosen
            .body
            .contains("<option value=\"acted\" selected>Acted</option>")
    );
}

#[tokio::test]
async fn a_decision_page_shows_the_whole_report() {
    let (server, _fake, reports) = filled(Intake::new().console_open()).await;
    let index = ticket_of(&reports, CASES[0].id);
    let report = &reports[index];
    let answer = page(&server, &format!("/console/decisions/{}", id_of(index))).await;
    assert_eq!(answer.status, 200);
    let body = &answer.body;
    assert!(body.contains("<h1>Ticket #101"));
    assert!(body.contains("Open the ticket in Zoho Desk"));
    assert!(body.contains("→ recommended <b>Refus CMA</b>"));
    assert!(body.contains("stage GAGNÉ, amount 20"));
    // The reply exactly as it would be sent, character for character.
    let reply = report.reply.as_ref().expect("a reply");
    let shown = body
        .split("<pre class=\"reply-text\">")
        .nth(1)
        .and_then(|rest| rest.split("</pre>").next())
        .expect("the reply block");
    assert_eq!(unescape(shown), reply.text);
    assert!(body.contains("suggestion only: nothing was sent"));
    // Every rule's verdict and reason, in order.
    let routing = report.routing.as_ref().expect("routing");
    assert!(routing.trace.len() >= 3, "{routing:?}");
    let mut at = 0;
    for trace in &routing.trace {
        let cell = format!(
            "<td>{}</td><td>{}</td>",
            trace.rule,
            if trace.matched { "yes" } else { "no" }
        );
        let found = body[at..]
            .find(&cell)
            .unwrap_or_else(|| panic!("{cell} after {at}"));
        at += found;
        assert!(unescape(body).contains(&trace.reason), "{}", trace.reason);
    }
    // Every step with its detail, and the flags in force for that run.
    for step in &report.steps {
        assert!(unescape(body).contains(&step.detail), "{}", step.detail);
    }
    assert!(body.contains("updateDeal <b>off</b>"));
    assert!(body.contains("generation 1"));
}

#[tokio::test]
async fn an_unknown_or_malformed_decision_id_is_not_found() {
    let (server, _fake, _) = filled(Intake::new().console_open()).await;
    for path in [
        "/console/decisions/999",
        "/console/decisions/abc",
        "/console/decisions/%3Cscript%3E",
        "/console/decisions/99999999999999999999999999",
    ] {
        let answer = page(&server, path).await;
        assert_eq!(answer.status, 404, "{path}");
        assert!(answer.body.contains("Decision not found"), "{path}");
        assert!(!answer.body.contains("<script>"), "{path}");
    }
}

#[tokio::test]
async fn hostile_customer_text_is_shown_as_text() {
    let (server, _fake, reports) = filled(Intake::new().console_open()).await;
    let hostile = id_of(ticket_of(&reports, CASES[2].id));
    for path in [
        "/console".to_owned(),
        format!("/console/decisions/{hostile}"),
    ] {
        let body = page(&server, &path).await.body;
        assert!(!body.contains(HOSTILE_SUBJECT), "{path}: raw markup");
        assert!(
            body.contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt;"),
            "{path}: the subject shown as text"
        );
        assert!(
            !body.contains("javascript:"),
            "{path}: a script URL became a link"
        );
        assert!(!body.contains("<img"), "{path}");
    }
    // A hostile filter value is escaped where it is echoed.
    let echoed = page(
        &server,
        "/console?ticket=%22%3E%3Cscript%3Ealert(1)%3C%2Fscript%3E",
    )
    .await;
    assert_eq!(echoed.status, 200);
    assert!(!echoed.body.contains("<script>alert(1)"));
    assert!(echoed.body.contains("value=\"&quot;&gt;&lt;script&gt;"));
}

/// A minimal RFC 4180 reader for the export.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut cell = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                cell.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => cell.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut cell)),
            (false, '\r') => {}
            (false, '\n') => {
                row.push(std::mem::take(&mut cell));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => cell.push(c),
        }
    }
    rows
}

#[tokio::test]
async fn the_csv_export_holds_the_filtered_list_and_is_safe_in_a_spreadsheet() {
    let (server, _fake, reports) = filled(Intake::new().console_open()).await;
    let all = page(&server, "/console/export.csv").await;
    assert_eq!(all.status, 200);
    assert_eq!(all.header("content-type"), "text/csv; charset=utf-8");
    assert_eq!(
        all.header("content-disposition"),
        "attachment; filename=\"deskhook-decisions.csv\""
    );
    let text = all
        .body
        .strip_prefix('\u{feff}')
        .expect("a UTF-8 byte order mark");
    let rows = parse_csv(text);
    let header = &rows[0];
    let column = |name: &str| header.iter().position(|h| h == name).expect(name);
    assert_eq!(rows.len(), 1 + reports.len());
    assert!(rows.iter().all(|r| r.len() == header.len()), "{rows:?}");
    // Newest first, like the console.
    assert_eq!(rows[1][column("decision_id")], "6");
    let formula = rows
        .iter()
        .find(|r| r[column("ticket_number")] == "104")
        .expect("ticket 104");
    assert_eq!(formula[column("subject")], format!("'{FORMULA_SUBJECT}"));
    assert!(
        rows.iter()
            .flatten()
            .all(|cell| !cell.starts_with(['=', '+', '-', '@'])),
        "no cell a spreadsheet would evaluate"
    );
    let zoe = rows
        .iter()
        .find(|r| r[column("ticket_number")] == "101")
        .expect("ticket 101");
    assert_eq!(zoe[column("rule")], "refus-cma");
    assert_eq!(zoe[column("deal_found_by")], "email");
    assert_eq!(zoe[column("step_dispatch")], "done");
    assert_eq!(zoe[column("step_reply")], "skipped_flag_off");
    let reply = &reports[ticket_of(&reports, CASES[0].id)].reply;
    assert_eq!(zoe[column("reply_text")], reply.as_ref().unwrap().text);

    let filtered = page(&server, "/console/export.csv?outcome=failed").await;
    let rows = parse_csv(filtered.body.trim_start_matches('\u{feff}'));
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[1][column("ticket_id")], FAILING);
}

#[tokio::test]
async fn the_json_export_holds_the_full_reports_of_the_filtered_list() {
    let (server, _fake, reports) = filled(Intake::new().console_open()).await;
    let answer = page(&server, "/console/export.json?department=DOC").await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.header("content-type"),
        "application/json; charset=utf-8"
    );
    assert_eq!(
        answer.header("content-disposition"),
        "attachment; filename=\"deskhook-decisions.json\""
    );
    let document: Value = serde_json::from_str(&answer.body).expect("JSON");
    assert_eq!(document["filters"], "department=DOC");
    let decisions = document["decisions"].as_array().expect("decisions");
    let expected: Vec<&DecisionReport> = reports
        .iter()
        .rev()
        .filter(|r| {
            [&r.department, &r.target_department]
                .into_iter()
                .flatten()
                .any(|d| d == "DOC")
        })
        .collect();
    assert!(!expected.is_empty());
    assert_eq!(document["count"], expected.len());
    for (decision, report) in decisions.iter().zip(expected) {
        assert_eq!(decision["report"]["ticket_id"], report.ticket_id.as_str());
        assert_eq!(
            decision["report"],
            serde_json::to_value(report).expect("a report serializes")
        );
    }
    let all = page(&server, "/console/export.json").await;
    let all: Value = serde_json::from_str(&all.body).expect("JSON");
    assert_eq!(all["count"], reports.len());
    assert_eq!(all["decisions"][0]["id"], "6");
}

#[tokio::test]
async fn with_an_admin_token_the_console_needs_a_sign_in_and_keeps_the_token_out_of_the_cookie() {
    let (server, _fake, _) = filled(Intake::new().admin_token(ADMIN_TOKEN)).await;
    let client = no_redirects();
    // Nothing is shown before signing in, and a token in the URL is not accepted.
    for path in [
        "/console".to_owned(),
        "/console/decisions/1".to_owned(),
        "/console/export.csv".to_owned(),
        "/console/export.json".to_owned(),
        format!("/console?token={ADMIN_TOKEN}"),
    ] {
        let answer = fetch(&client, &server.admin_url(&path), None).await;
        assert_eq!(answer.status, 303, "{path}");
        assert_eq!(answer.header("location"), "/console/login", "{path}");
        assert!(!answer.body.contains("Zoé"), "{path}");
    }
    let form = fetch(&client, &server.admin_url("/console/login"), None).await;
    assert_eq!(form.status, 200);
    assert!(form.body.contains("type=\"password\" name=\"token\""));

    let wrong = client
        .post(server.admin_url("/console/login"))
        .form(&[("token", "not-the-token")])
        .send()
        .await
        .expect("answered");
    assert_eq!(wrong.status(), 401);
    assert!(wrong.headers().get("set-cookie").is_none());
    assert!(
        wrong
            .text()
            .await
            .unwrap()
            .contains("That token is not right.")
    );

    let right = client
        .post(server.admin_url("/console/login"))
        .form(&[("token", ADMIN_TOKEN)])
        .send()
        .await
        .expect("answered");
    assert_eq!(right.status(), 303);
    assert_eq!(right.headers()["location"], "/console");
    let set_cookie = right.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(set_cookie.starts_with("deskhook_console="), "{set_cookie}");
    assert!(set_cookie.contains("HttpOnly"), "{set_cookie}");
    assert!(set_cookie.contains("SameSite=Strict"), "{set_cookie}");
    assert!(set_cookie.contains("Path=/console"), "{set_cookie}");
    assert!(
        !set_cookie.contains(ADMIN_TOKEN),
        "the token itself is never stored"
    );
    let cookie = set_cookie.split(';').next().unwrap().to_owned();

    let home = fetch(&client, &server.admin_url("/console"), Some(&cookie)).await;
    assert_eq!(home.status, 200);
    assert!(home.body.contains("Sign out"));
    assert!(!home.body.contains("started open"));
    let export = fetch(
        &client,
        &server.admin_url("/console/export.csv"),
        Some(&cookie),
    )
    .await;
    assert_eq!(export.status, 200);

    // A forged or tampered cookie is refused.
    let (expiry, tag) = cookie
        .trim_start_matches("deskhook_console=")
        .split_once('.')
        .unwrap();
    let later: u64 = expiry.parse::<u64>().unwrap() + 3600;
    for forged in [
        format!("deskhook_console={later}.{tag}"),
        format!("deskhook_console={expiry}.{}", "0".repeat(64)),
        "deskhook_console=".to_owned(),
    ] {
        let answer = fetch(&client, &server.admin_url("/console"), Some(&forged)).await;
        assert_eq!(answer.status, 303, "{forged}");
    }
    // The JSON API stays bearer-only: the console's cookie opens nothing there.
    let api = fetch(&client, &server.url("/webhook/decisions"), Some(&cookie)).await;
    assert_eq!(api.status, 401);

    let out = client
        .post(server.admin_url("/console/logout"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("answered");
    assert_eq!(out.status(), 303);
    let cleared = out.headers()["set-cookie"].to_str().unwrap();
    assert!(cleared.starts_with("deskhook_console=;") && cleared.contains("Max-Age=0"));
}

#[tokio::test]
async fn the_console_keeps_the_configured_number_of_decisions() {
    let (server, _fake, reports) = filled(Intake::new().console_open().decisions_retained(4)).await;
    let home = page(&server, "/console").await;
    assert_eq!(home.decision_ids(), ["6", "5", "4", "3"]);
    assert!(
        home.body
            .contains("What each write did in the 4 most recent decisions")
    );
    // The oldest two are gone from the pages too.
    assert_eq!(page(&server, "/console/decisions/2").await.status, 404);
    assert_eq!(reports.len(), 6);
}

/// The hidden form token of a console page.
fn form_token(html: &str) -> String {
    let start = html
        .find("name=\"token\" value=\"")
        .expect("the page carries a form token")
        + "name=\"token\" value=\"".len();
    html[start..].split('"').next().unwrap().to_owned()
}

#[tokio::test]
async fn the_backtest_page_compares_pasted_settings_and_refuses_a_forged_post() {
    let (server, _fake, reports) = filled(Intake::new().admin_token(ADMIN_TOKEN)).await;
    let client = no_redirects();
    let signed_in = client
        .post(server.admin_url("/console/login"))
        .form(&[("token", ADMIN_TOKEN)])
        .send()
        .await
        .expect("answered");
    let cookie = signed_in.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let url = server.admin_url("/console/backtest");
    let form = fetch(&client, &url, Some(&cookie)).await;
    assert_eq!(form.status, 200);
    assert!(
        form.body.contains("name: facturation"),
        "the form starts from the live settings"
    );
    let token = form_token(&form.body);

    // Billing tickets now go to Contact.
    let mut edited = review::spec();
    let billing = edited
        .routing
        .iter_mut()
        .find(|rule| rule.name == "facturation")
        .unwrap();
    billing.then.department = Some("Contact".into());
    let yaml = serde_yaml::to_string(&edited).unwrap();
    let billed = reports
        .iter()
        .filter(|r| r.intent.as_ref().and_then(|i| i.rule.as_deref()) == Some("facturation"))
        .count();
    assert!(billed > 0);

    let post = |token: String, cookie: Option<String>, yaml: String| {
        let mut request = client.post(&url).form(&[("yaml", yaml), ("token", token)]);
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        async move {
            let answer = request.send().await.expect("answered");
            (answer.status().as_u16(), answer.text().await.unwrap())
        }
    };
    let recorded = reports.iter().filter(|r| r.facts.is_some()).count();
    assert!(
        recorded + 1 >= reports.len(),
        "every run that read its ticket kept its facts"
    );
    let (status, body) = post(token.clone(), Some(cookie.clone()), yaml.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(&format!(
            "<span id=\"backtest-changed\">{billed}</span> of {recorded} recent decisions"
        )),
        "{body}"
    );
    assert!(body.contains("<td>department</td>"), "{body}");
    assert!(body.contains("FACTURATION"), "{body}");

    // A post without the page's token, or with another session's, computes nothing.
    let altered = format!(
        "{}{}",
        if token.starts_with('0') { "1" } else { "0" },
        &token[1..]
    );
    for forged in [String::new(), "00".repeat(32), altered] {
        let (status, body) = post(forged, Some(cookie.clone()), yaml.clone()).await;
        assert_eq!(status, 403);
        assert!(body.contains("This form is stale"), "{body}");
        assert!(!body.contains("backtest-result"), "{body}");
    }
    // Without a session the console asks to sign in, whatever the token.
    let (status, _) = post(token.clone(), None, yaml.clone()).await;
    assert_eq!(status, 303);

    // Settings that cannot be used say why.
    let (status, body) = post(token, Some(cookie), "routing: [{nom: x}]".into()).await;
    assert_eq!(status, 400);
    assert!(body.contains("failed to read the settings"), "{body}");
}
