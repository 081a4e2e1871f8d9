//! Decisions for the review console's tests: real workflow runs against the fake Zoho, one per
//! situation the console must show (a rule with a deal, a billing question, a hostile subject,
//! a formula-like subject, an unhandled department, a failed write).
#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use deskhook::config::{Settings, SettingsSource, load_spec_file};
use deskhook::crd::{AutomationFlags, WebhookAutomationSpec};
use deskhook::event::TicketEvent;
use deskhook::metrics::Metrics;
use deskhook::workflow::Run;
use deskhook::workflow::ledger::MemoryLedger;
use deskhook::workflow::{AutomationWorkflow, DecisionReport, Workflow};
use serde_json::json;

use super::fake_zoho::{FakeZoho, Fault, ORG_ID};

/// A subject that would run a script if it were not escaped.
pub const HOSTILE_SUBJECT: &str = "<script>alert(1)</script>";
/// A subject a spreadsheet would take for a formula.
pub const FORMULA_SUBJECT: &str = "=HYPERLINK(\"https://evil.example\",\"Cliquez\")";

/// One ticket of the scenario.
pub struct Case {
    pub id: &'static str,
    pub number: &'static str,
    pub subject: &'static str,
    pub department_id: &'static str,
    pub email: &'static str,
    pub name: &'static str,
    pub message: &'static str,
    pub web_url: &'static str,
}

pub const CASES: [Case; 6] = [
    Case {
        id: "198709000438366101",
        number: "101",
        subject: "Mon dossier d'inscription",
        department_id: "1",
        email: "zoe.martin@example.fr",
        name: "Zoé Martin",
        message: "<div>Bonjour, où en est mon dossier ? Merci</div>",
        web_url: "https://desk.zoho.eu/support/cab/ShowHomePage.do#Cases/dv/198709000438366101",
    },
    Case {
        id: "198709000438366102",
        number: "102",
        subject: "Question sur ma facture",
        department_id: "1",
        email: "lucas.petit@example.fr",
        name: "Lucas Petit",
        message: "<div>Bonjour, je n'ai pas reçu ma facture de novembre. Pouvez-vous me l'envoyer ?</div>",
        web_url: "https://desk.zoho.eu/support/cab/ShowHomePage.do#Cases/dv/198709000438366102",
    },
    Case {
        id: "198709000438366103",
        number: "103",
        subject: HOSTILE_SUBJECT,
        department_id: "1",
        email: "mallory@example.net",
        name: "Mallory",
        message: "<img src=x onerror=alert(2)> Bonjour",
        web_url: "javascript:alert(3)",
    },
    Case {
        id: "198709000438366104",
        number: "104",
        subject: FORMULA_SUBJECT,
        department_id: "1",
        email: "chloe.bernard@example.fr",
        name: "Chloé Bernard",
        message: "<div>Bonjour, quand aurai-je ma convocation à l'examen ?</div>",
        web_url: "https://desk.zoho.eu/support/cab/ShowHomePage.do#Cases/dv/198709000438366104",
    },
    Case {
        id: "198709000438366105",
        number: "105",
        subject: "Cours du soir",
        department_id: "9",
        email: "hugo.leroy@example.fr",
        name: "Hugo Leroy",
        message: "<div>Bonjour, les cours du soir reprennent quand ?</div>",
        web_url: "https://desk.zoho.eu/support/cab/ShowHomePage.do#Cases/dv/198709000438366105",
    },
    Case {
        id: "198709000438366106",
        number: "106",
        subject: "Inscription à l'épreuve VTC",
        department_id: "1",
        email: "emma.roux@example.fr",
        name: "Emma Roux",
        message: "<div>Bonjour, je voudrais m'inscrire à l'épreuve théorique VTC.</div>",
        web_url: "https://desk.zoho.eu/support/cab/ShowHomePage.do#Cases/dv/198709000438366106",
    },
];

/// The ticket whose department move fails.
pub const FAILING: &str = "198709000438366106";
/// The ticket of a department deskhook does not handle.
pub const UNHANDLED: &str = "198709000438366105";

/// The reference configuration at rollout Level 1 (dispatch and link), against the fake.
pub fn spec() -> WebhookAutomationSpec {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/webhookautomation.yaml");
    let mut spec = load_spec_file(&path).expect("the reference configuration loads");
    spec.automation = AutomationFlags::default();
    spec.zoho.org_id = Some(ORG_ID.into());
    spec
}

pub fn settings() -> Settings {
    Settings::from_spec(spec(), SettingsSource::Environment, 1).expect("valid settings")
}

/// The fake with every case's ticket, message, department and (for Zoé) contact and deal.
pub async fn seeded_fake() -> FakeZoho {
    let fake = FakeZoho::start().await;
    fake.seed_reference_portal();
    fake.add_department("9", "Pédagogie");
    for case in &CASES {
        fake.add_ticket(json!({
            "id": case.id,
            "ticketNumber": case.number,
            "subject": case.subject,
            "status": "Open",
            "statusType": "Open",
            "departmentId": case.department_id,
            "email": case.email,
            "webUrl": case.web_url,
            "cf": {"cf_opportunite": null}
        }));
        fake.add_thread(
            case.id,
            json!({
                "id": format!("1892000000{}", case.number),
                "direction": "in",
                "channel": "EMAIL",
                "fromEmailAddress": format!("{} <{}>", case.name, case.email),
                "content": case.message,
                "contentType": "html",
                "createdTime": "2026-11-20T10:00:00.000Z",
                "author": {"name": case.name, "email": case.email, "type": "END_USER"}
            }),
        );
    }
    fake
}

/// Runs the workflow once per case, in order, and returns the reports (oldest first).
pub async fn run_cases(fake: &FakeZoho) -> Vec<DecisionReport> {
    let metrics = Metrics::new();
    let workflow = AutomationWorkflow::new(
        Some(fake.clients(&metrics)),
        Arc::new(MemoryLedger::default()),
        None,
    );
    let settings = settings();
    let mut reports = Vec::new();
    for (i, case) in CASES.iter().enumerate() {
        if case.id == FAILING {
            let attempts = FakeZoho::fast_options().retry.max_attempts as usize;
            fake.fail_next("move_ticket", attempts, Fault::ServerError);
        }
        let job = Run {
            id: i as u64 + 1,
            event: TicketEvent::new(
                case.id.into(),
                "Ticket_Add".into(),
                Some(ORG_ID.into()),
                Some(1_763_632_800_000 + i as i64),
                json!({"id": case.id}),
            ),
            attempt: 1,
            enqueued_at: Instant::now(),
        };
        let report = tokio::time::timeout(Duration::from_secs(20), workflow.run(&job, &settings))
            .await
            .expect("the workflow finishes");
        reports.push(report);
    }
    reports
}
