//! `deskhook backtest`, the real binary, over 200 decisions a real server recorded against the
//! fake Zoho: a moved keyword lists exactly the tickets that mention it, a template edit
//! shows its reply diff, Zoho hears nothing, reruns are byte-identical, and the exit code
//! follows `--max-changed`.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use deskhook::archive::{ArchiveLimits, DecisionArchive};
use deskhook::config::{WatchedSecrets, load_settings_file};
use deskhook::server::{self, RunningServer, ServeOptions, ZohoAccess};
use serde_json::{Value, json};
use support::fake_zoho::{self, FakeZoho};
use support::intake::{ADMIN_TOKEN, SECRET, client, eventually, get, hmac_hex, post};
use support::process::{BIN, TempDir};

const DECISIONS: usize = 200;

/// Ticket texts, and whether each mentions `facture` in some case, accent or plural form in
/// the customer's own words (quoted history does not count). Written by hand: the oracle
/// the backtest is checked against.
const TEXTS: [(&str, &str, bool); 13] = [
    ("FACTURÉ ?", "Bonjour, où en est ma demande", true),
    ("Question", "Mes factures de mars sont fausses", true),
    ("Facture n°2026-12", "Merci", true),
    ("Demande", "Pouvez-vous renvoyer la Facture", true),
    ("facturé deux fois", "Bonjour", true),
    (
        "Re: suivi",
        "Je n'ai pas reçu ma FACTURE.\n\nLe 3 mars 2026, Support a écrit :\nbonjour",
        true,
    ),
    ("Facturation annuelle", "Bonjour", false),
    ("Préfacture", "Bonjour", false),
    ("Paiement en ligne", "Je souhaite régler", false),
    ("Bilan", "Mon bilan de compétences", false),
    ("Examen", "La date de l'examen", false),
    ("Bonjour", "Merci pour tout", false),
    ("Re: dossier", "Merci.\n> votre facture est jointe", false),
];

/// The settings the decisions are made under.
const OLD: &str = r#"apiVersion: deskhook.dev/v1alpha1
kind: WebhookAutomation
metadata: {name: backtest}
spec:
  departments: [DOC, Contact, FACTURATION]
  events: [Ticket_Add]
  zoho: {region: eu, orgId: "20090000001"}
  routing:
    - name: facturation
      priority: 0
      when: {text: {any: ["facture*", paiement]}}
      then: {department: FACTURATION, replyTemplate: accuse-facturation}
    - name: comptabilite
      priority: 10
      when: {text: {any: [bilan]}}
      then: {department: Contact, replyTemplate: accuse-contact}
    - name: examen
      priority: 20
      when: {text: {any: [examen]}}
      then: {department: DOC}
  replies:
    from: {default: contact@cab-formations.fr}
    templates:
      accuse-facturation: "Bonjour,\nNous avons bien reçu votre demande sur la facturation.\nBien cordialement"
      accuse-contact: "Bonjour,\nNotre équipe vous répond rapidement.\nBien cordialement"
"#;

/// The settings with `facture*` moved from `facturation` to `comptabilite`.
fn keyword_moved() -> String {
    OLD.replace(r#"any: ["facture*", paiement]"#, "any: [paiement]")
        .replace("any: [bilan]", r#"any: [bilan, "facture*"]"#)
}

/// The settings with the billing acknowledgement reworded.
fn template_edited() -> String {
    OLD.replace(
        "votre demande sur la facturation.",
        "votre demande sur la facturation.\\nElle sera traitée sous 48 heures.",
    )
}

fn ticket_id(n: usize) -> String {
    format!("19870900043837{n:04}")
}

/// 200 decisions recorded by a real server: in its decision log and in its archive.
struct Recorded {
    fake: FakeZoho,
    server: RunningServer,
    dir: TempDir,
}

impl Recorded {
    async fn new() -> Self {
        let fake = FakeZoho::start().await;
        fake.seed_reference_portal();
        for n in 0..DECISIONS {
            let (subject, message, _) = TEXTS[n % TEXTS.len()];
            let id = ticket_id(n);
            fake.add_ticket(json!({
                "id": id,
                "ticketNumber": (1000 + n).to_string(),
                "subject": subject,
                "status": "Open",
                "departmentId": "1",
                "email": format!("client{n}@example.fr"),
            }));
            fake.add_thread(
                &id,
                json!({
                    "id": format!("1892000000{n:06}"),
                    "direction": "in",
                    "channel": "EMAIL",
                    "fromEmailAddress": format!("client{n}@example.fr"),
                    "content": message,
                    "contentType": "plainText",
                    "createdTime": "2026-11-20T10:00:00.000Z",
                }),
            );
        }
        let dir = TempDir::new("backtest");
        let old = dir.write("old.yaml", OLD);
        let url = fake.url().to_owned();
        let lookup = |name: &str| match name {
            "ZOHO_CLIENT_ID" => Some(fake_zoho::CLIENT_ID.to_owned()),
            "ZOHO_CLIENT_SECRET" => Some(fake_zoho::CLIENT_SECRET.to_owned()),
            "ZOHO_REFRESH_TOKEN" => Some(fake_zoho::REFRESH_TOKEN.to_owned()),
            "DESKHOOK_ZOHO_ACCOUNTS_URL" | "DESKHOOK_ZOHO_DESK_URL" | "DESKHOOK_ZOHO_CRM_URL" => {
                Some(url.clone())
            }
            _ => None,
        };
        let options = ServeOptions {
            hmac_secrets: WatchedSecrets::load(Some(SECRET), None).unwrap(),
            admin_tokens: WatchedSecrets::load(Some(ADMIN_TOKEN), None).unwrap(),
            zoho: ZohoAccess::from_env(lookup).expect("complete credentials"),
            shutdown_grace: Duration::from_secs(10),
            ..ServeOptions::default()
        };
        let archive = DecisionArchive::open(&dir.path("archive"), ArchiveLimits::default())
            .expect("the archive opens");
        let settings = load_settings_file(&old, 1).expect("the old settings load");
        let server = server::start_archived(options, settings, archive)
            .await
            .expect("the server starts");
        let recorded = Self { fake, server, dir };
        recorded.deliver().await;
        recorded
    }

    /// Every ticket's `Ticket_Add`, signed, in deliveries of 20 events; then waits until
    /// every decision is in the log and in the archive.
    async fn deliver(&self) {
        let http = client();
        for chunk in (0..DECISIONS).collect::<Vec<_>>().chunks(20) {
            let events: Vec<Value> = chunk
                .iter()
                .map(|&n| {
                    json!({
                        "eventType": "Ticket_Add",
                        "eventTime": "1714560000000",
                        "orgId": fake_zoho::ORG_ID,
                        "payload": {"id": ticket_id(n), "departmentId": "1"},
                    })
                })
                .collect();
            let body = serde_json::to_string(&events).unwrap();
            let signature = hmac_hex(SECRET, body.as_bytes());
            let answer = post(
                &http,
                &format!("{}/webhook/zoho-desk", self.url()),
                body,
                &[("X-Zoho-Signature", &signature)],
            )
            .await;
            assert_eq!(answer.status, 200, "{}", answer.text);
        }
        let url = format!("{}/webhook/decisions?limit={DECISIONS}", self.url());
        let auth = format!("Bearer {ADMIN_TOKEN}");
        eventually("every decision in the log", || async {
            let reply = get(&http, &url, &[("Authorization", &auth)]).await;
            let count = reply.json["decisions"].as_array().map_or(0, Vec::len);
            (count == DECISIONS).then_some(())
        })
        .await;
        let archived = self.archive().join("decisions.jsonl");
        eventually("every decision in the archive", || async {
            let lines = std::fs::read_to_string(&archived).map_or(0, |t| t.lines().count());
            (lines == DECISIONS).then_some(())
        })
        .await;
    }

    fn url(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    fn archive(&self) -> PathBuf {
        self.dir.path("archive")
    }

    fn settings(&self, name: &str, yaml: &str) -> PathBuf {
        self.dir.write(name, yaml)
    }

    /// Runs `deskhook backtest` with `args`, with Zoho credentials pointing at the fake so
    /// that any call it made would be seen, and checks that the fake heard none.
    async fn backtest(&self, args: &[&str]) -> Output {
        self.backtest_with(args, &[]).await
    }

    /// [`Recorded::backtest`] with more environment variables.
    async fn backtest_with(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let before = self.fake.calls().len();
        let output = tokio::time::timeout(
            Duration::from_secs(60),
            tokio::process::Command::new(BIN)
                .arg("backtest")
                .args(args)
                .env_clear()
                .env("DESKHOOK_ADMIN_TOKEN", ADMIN_TOKEN)
                .env("ZOHO_CLIENT_ID", fake_zoho::CLIENT_ID)
                .env("ZOHO_CLIENT_SECRET", fake_zoho::CLIENT_SECRET)
                .env("ZOHO_REFRESH_TOKEN", fake_zoho::REFRESH_TOKEN)
                .env("DESKHOOK_ZOHO_ACCOUNTS_URL", self.fake.url())
                .env("DESKHOOK_ZOHO_DESK_URL", self.fake.url())
                .env("DESKHOOK_ZOHO_CRM_URL", self.fake.url())
                .envs(env.iter().copied())
                .output(),
        )
        .await
        .expect("the backtest finishes")
        .expect("the binary runs");
        assert_eq!(
            self.fake.calls().len(),
            before,
            "a backtest makes no call to Zoho"
        );
        output
    }
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "exit {:?}: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).expect("UTF-8 output")
}

fn path(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

fn changed_tickets(json: &Value) -> BTreeSet<String> {
    json["tickets"]
        .as_array()
        .expect("a list of tickets")
        .iter()
        .map(|t| t["ticket_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn moving_a_keyword_lists_exactly_the_tickets_that_mention_it() {
    let recorded = Recorded::new().await;
    let old = recorded.settings("old.yaml", OLD);
    let new = recorded.settings("new.yaml", &keyword_moved());
    let expected: BTreeSet<String> = (0..DECISIONS)
        .filter(|n| TEXTS[n % TEXTS.len()].2)
        .map(ticket_id)
        .collect();
    assert!(expected.len() > 60 && expected.len() < DECISIONS);

    let api = recorded.url();
    let args = [
        "--api",
        &api,
        "--settings",
        path(&new),
        "--baseline",
        path(&old),
        "--format",
        "json",
    ];
    let first = stdout(&recorded.backtest(&args).await);
    let answer: Value = serde_json::from_str(&first).expect("JSON");
    assert_eq!(answer["compared"], DECISIONS);
    assert_eq!(answer["changed"], expected.len());
    assert_eq!(changed_tickets(&answer), expected);
    let ticket = &answer["tickets"][0];
    let kinds: Vec<&str> = ticket["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["rule", "department", "reply"], "{ticket}");
    assert_eq!(ticket["changes"][0]["before"], "facturation");
    assert_eq!(ticket["changes"][0]["after"], "comptabilite");
    assert_eq!(ticket["changes"][1]["after"], "Contact");
    assert_eq!(
        answer["by_kind"],
        json!({"rule": expected.len(), "department": expected.len(), "reply": expected.len()})
    );

    let again = stdout(&recorded.backtest(&args).await);
    assert_eq!(again, first, "a rerun gives byte-identical JSON");

    let archive = recorded.archive();
    let from_archive = stdout(
        &recorded
            .backtest(&[
                "--archive",
                path(&archive),
                "--settings",
                path(&new),
                "--baseline",
                path(&old),
                "--format",
                "json",
            ])
            .await,
    );
    assert_eq!(from_archive, first, "the archive holds the same decisions");

    let against_recorded = stdout(
        &recorded
            .backtest(&[
                "--archive",
                path(&archive),
                "--settings",
                path(&new),
                "--format",
                "json",
            ])
            .await,
    );
    let against_recorded: Value = serde_json::from_str(&against_recorded).unwrap();
    assert_eq!(
        changed_tickets(&against_recorded),
        expected,
        "the intent recorded with each decision is the old settings' plan"
    );
    recorded.server.shutdown().await;
}

#[tokio::test]
async fn a_template_edit_shows_the_reply_diff_of_the_tickets_using_it() {
    let recorded = Recorded::new().await;
    let new = recorded.settings("edited.yaml", &template_edited());
    let archive = recorded.archive();
    let table = stdout(
        &recorded
            .backtest(&["--archive", path(&archive), "--settings", path(&new)])
            .await,
    );
    let json = stdout(
        &recorded
            .backtest(&[
                "--archive",
                path(&archive),
                "--settings",
                path(&new),
                "--format",
                "json",
            ])
            .await,
    );
    let answer: Value = serde_json::from_str(&json).unwrap();
    // The billing rule answers the `facture` forms and `paiement`.
    let expected: BTreeSet<String> = (0..DECISIONS)
        .filter(|n| {
            let (subject, _, mentions) = TEXTS[n % TEXTS.len()];
            mentions || subject == "Paiement en ligne"
        })
        .map(ticket_id)
        .collect();
    assert_eq!(changed_tickets(&answer), expected);
    assert_eq!(answer["by_kind"], json!({"reply": expected.len()}));
    let diff = answer["tickets"][0]["changes"][0]["diff"].as_str().unwrap();
    assert_eq!(
        diff,
        "--- before\n+++ after\n@@ -1,3 +1,4 @@\n Bonjour,\n Nous avons bien reçu votre demande sur la facturation.\n+Elle sera traitée sous 48 heures.\n Bien cordialement\n"
    );
    assert!(
        table.contains("      +Elle sera traitée sous 48 heures."),
        "{table}"
    );
    assert!(
        table.contains(&format!(
            "{} of {DECISIONS} decisions would change",
            expected.len()
        )),
        "{table}"
    );
    let csv = stdout(
        &recorded
            .backtest(&[
                "--archive",
                path(&archive),
                "--settings",
                path(&new),
                "--format",
                "csv",
            ])
            .await,
    );
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    assert_eq!(
        reader.headers().unwrap(),
        vec![
            "ticket_id",
            "ticket_number",
            "decided_at",
            "kind",
            "before",
            "after",
            "diff"
        ]
    );
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), expected.len(), "one row per change");
    assert!(
        rows.iter()
            .all(|row| &row[3] == "reply" && row[6].contains("+Elle sera"))
    );
    recorded.server.shutdown().await;
}

#[tokio::test]
async fn the_exit_code_follows_max_changed() {
    let recorded = Recorded::new().await;
    let old = recorded.settings("old.yaml", OLD);
    let new = recorded.settings("new.yaml", &keyword_moved());
    let archive = recorded.archive();
    let changed = (0..DECISIONS).filter(|n| TEXTS[n % TEXTS.len()].2).count();
    let run = |max: String| {
        let (archive, old, new) = (archive.clone(), old.clone(), new.clone());
        let recorded = &recorded;
        async move {
            recorded
                .backtest(&[
                    "--archive",
                    path(&archive),
                    "--settings",
                    path(&new),
                    "--baseline",
                    path(&old),
                    "--max-changed",
                    &max,
                ])
                .await
        }
    };
    let at_limit = run(changed.to_string()).await;
    assert_eq!(at_limit.status.code(), Some(0));
    let below = run((changed - 1).to_string()).await;
    assert_eq!(below.status.code(), Some(3));
    assert!(
        String::from_utf8_lossy(&below.stderr).contains("more than --max-changed"),
        "{}",
        String::from_utf8_lossy(&below.stderr)
    );
    assert!(
        !below.stdout.is_empty(),
        "the diff is printed before the refusal"
    );
    let share = changed as f64 * 100.0 / DECISIONS as f64;
    assert_eq!(run(format!("{share}%")).await.status.code(), Some(0));
    assert_eq!(
        run(format!("{}%", share - 0.5)).await.status.code(),
        Some(3)
    );
    let invalid = run("plenty".to_owned()).await;
    assert_eq!(invalid.status.code(), Some(2), "clap refuses the value");
    recorded.server.shutdown().await;
}

#[tokio::test]
async fn decisions_stored_in_redis_keep_their_facts_for_a_backtest() {
    use deskhook::config::Secret;
    use deskhook::decisions::RedisDecisions;
    use deskhook::store::Redis;

    let Some(redis) = support::redis::RedisServer::start("backtest from Redis") else {
        return;
    };
    let recorded = Recorded::new().await;
    let archive = recorded.archive();
    let reports = deskhook::archive::read(&archive).unwrap().reports;
    assert_eq!(reports.len(), DECISIONS);
    let shared = RedisDecisions::new(
        Redis::connect(&Secret::new(redis.url()), "deskhook").unwrap(),
        deskhook::decisions::DEFAULT_RETAINED,
    );
    for report in &reports {
        shared.push(report).await.expect("stored in Redis");
    }
    let old = recorded.settings("old.yaml", OLD);
    let new = recorded.settings("new.yaml", &keyword_moved());
    let compare = [
        "--settings",
        path(&new),
        "--baseline",
        path(&old),
        "--format",
        "json",
    ];
    let url = redis.url();
    let from_redis = stdout(
        &recorded
            .backtest_with(
                &[&["--redis"][..], &compare[..]].concat(),
                &[("DESKHOOK_REDIS_URL", &url)],
            )
            .await,
    );
    let from_archive = stdout(
        &recorded
            .backtest(&[&["--archive", path(&archive)][..], &compare[..]].concat())
            .await,
    );
    assert_eq!(from_redis, from_archive);
    let answer: Value = serde_json::from_str(&from_redis).unwrap();
    assert_eq!(answer["compared"], DECISIONS);
    recorded.server.shutdown().await;
}
