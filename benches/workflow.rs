//! Workflow throughput against the fake Zoho with a fixed per-call latency and a per-portal
//! concurrency limit, compared with the bound that limit allows and with the original design.
//!
//! With `L` seconds per call, `c` Zoho calls per ticket and a portal allowing `k` calls at once,
//! no design can process more than `k / (c × L)` tickets per second. Zoho limits concurrency per
//! product (the Desk portal and the CRM org each allow `k`), so the bound is the smaller of
//! `k / (c_desk × L)` and `k / (c_crm × L)`. The original Flask server ran the whole workflow
//! inside the request on 4 sync workers, so it could never exceed `4 / (c × L)` whatever the
//! portals allowed.
//!
//! `cargo bench --bench workflow` runs the measurement (about a minute); built as a test
//! (`cargo test --all-targets`) it runs a few tickets without latency as a smoke check. Both
//! fail if a run fails, if more than one token is requested, or if suggestion mode exceeds
//! 3 Desk and 2 CRM calls per ticket.

#[path = "../tests/support/fake_zoho.rs"]
mod fake_zoho;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use deskhook::config::{Settings, SettingsSource, load_spec_file};
use deskhook::crd::AutomationFlags;
use deskhook::event::TicketEvent;
use deskhook::metrics::Metrics;
use deskhook::workflow::Run;
use deskhook::workflow::ledger::MemoryLedger;
use deskhook::workflow::{AutomationWorkflow, Workflow};
use deskhook::zoho::ClientOptions;
use fake_zoho::FakeZoho;
use serde_json::json;

/// Workers of the original deployment (`gunicorn --workers 4`), each holding one workflow.
const ORIGINAL_WORKERS: f64 = 4.0;

struct Scenario {
    name: &'static str,
    flags: AutomationFlags,
    workers: usize,
    tickets: usize,
}

struct Measured {
    tickets_per_second: f64,
    desk_per_ticket: f64,
    crm_per_ticket: f64,
    /// Token requests beyond the first one a process needs anyway, per 1,000 tickets.
    extra_refreshes_per_1000: f64,
    refreshes: usize,
    rejected_429: usize,
    failed_runs: usize,
}

fn level_three() -> AutomationFlags {
    AutomationFlags {
        dispatch: true,
        link: true,
        respond: true,
        draft_replies: false,
        update_ticket: true,
        update_deal: true,
        add_note: true,
    }
}

/// The reference configuration (`examples/webhookautomation.yaml`) with `flags` in force.
fn settings(flags: AutomationFlags) -> Settings {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/webhookautomation.yaml");
    let mut spec = load_spec_file(&path).expect("the reference configuration loads");
    spec.automation = flags;
    spec.zoho.org_id = Some(fake_zoho::ORG_ID.into());
    Settings::from_spec(spec, SettingsSource::Environment, 1).expect("valid settings")
}

fn ticket_id(n: usize) -> String {
    format!("1987090004{n:08}")
}

/// `tickets` candidates of the 20 € offer whose documents the CMA refused, each with one
/// incoming message, sharing one contact and deal (as in the workflow tests).
async fn seeded_fake(tickets: usize) -> FakeZoho {
    let fake = FakeZoho::start().await;
    fake.seed_reference_portal();
    for n in 0..tickets {
        let id = ticket_id(n);
        fake.add_ticket(json!({
            "id": id,
            "ticketNumber": n.to_string(),
            "subject": "Mon dossier d'inscription",
            "status": "Open",
            "statusType": "Open",
            "departmentId": "1",
            "email": "zoe.martin@example.fr",
            "webUrl": format!("https://desk.zoho.eu/support/cab/ShowHomePage.do#Cases/dv/{id}"),
            "cf": {"cf_opportunite": null}
        }));
        fake.add_thread(
            &id,
            json!({
                "id": format!("18920000{n:08}"),
                "direction": "in",
                "channel": "EMAIL",
                "fromEmailAddress": "Zoé Martin <zoe.martin@example.fr>",
                "content": "<div>Bonjour, où en est mon dossier ? Merci</div>",
                "contentType": "html",
                "createdTime": "2026-11-20T10:00:00.000Z",
                "author": {"name": "Zoé Martin", "email": "zoe.martin@example.fr", "type": "END_USER"}
            }),
        );
    }
    fake
}

async fn measure(scenario: &Scenario, latency: Duration, limit: usize) -> Measured {
    let fake = seeded_fake(scenario.tickets).await;
    fake.set_latency(latency);
    fake.limit_concurrency(limit);
    let metrics = Metrics::new();
    // Zoho limits concurrent calls per product (the Desk portal, the CRM org), like the fake;
    // each client is given the whole limit of its product.
    let options = ClientOptions {
        max_concurrency: limit,
        ..FakeZoho::fast_options()
    };
    let workflow = Arc::new(AutomationWorkflow::new(
        Some(fake.clients_with(options, &metrics)),
        Arc::new(MemoryLedger::default()),
        None,
    ));
    let settings = Arc::new(settings(scenario.flags));
    let next = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let tickets = scenario.tickets;
    let started = Instant::now();
    let workers: Vec<_> = (0..scenario.workers)
        .map(|_| {
            let (workflow, settings, next, failed) = (
                workflow.clone(),
                settings.clone(),
                next.clone(),
                failed.clone(),
            );
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= tickets {
                        break;
                    }
                    let id = ticket_id(n);
                    let job = Run {
                        id: n as u64 + 1,
                        event: TicketEvent::new(
                            id.clone(),
                            "Ticket_Add".into(),
                            None,
                            Some(1),
                            json!({"id": id}),
                        ),
                        attempt: 1,
                        enqueued_at: Instant::now(),
                    };
                    if workflow.run(&job, &settings).await.failure().is_some() {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.expect("worker");
    }
    let elapsed = started.elapsed().as_secs_f64();
    let calls = fake.calls();
    let count = |prefix: &str| calls.iter().filter(|c| c.path.starts_with(prefix)).count();
    let per_ticket = |n: usize| n as f64 / tickets as f64;
    Measured {
        tickets_per_second: tickets as f64 / elapsed,
        desk_per_ticket: per_ticket(count("/api/v1/")),
        crm_per_ticket: per_ticket(count("/crm/v8/")),
        extra_refreshes_per_1000: fake.token_refreshes().saturating_sub(1) as f64 * 1000.0
            / tickets as f64,
        refreshes: fake.token_refreshes(),
        rejected_429: calls.iter().filter(|c| c.status == 429).count(),
        failed_runs: failed.load(Ordering::Relaxed),
    }
}

fn main() {
    // A test runner listing tests (`--list`, libtest's format) sees the smoke check as one
    // test, and none among the ignored ones; it then runs it with that name.
    if std::env::args().any(|a| a == "--list") {
        if !std::env::args().any(|a| a == "--ignored") {
            println!("workflow_smoke: test");
        }
        return;
    }
    // `cargo bench` passes `--bench`; a test run gets a smoke check that finishes at once.
    let full = std::env::args().any(|a| a == "--bench");
    let (latency, limit, scale) = if full {
        (Duration::from_millis(100), 10, 1)
    } else {
        (Duration::ZERO, 10, 0)
    };
    let scenarios = [
        Scenario {
            name: "suggestion (every flag off)",
            flags: AutomationFlags::READ_ONLY,
            workers: 4,
            tickets: 2 + 78 * scale,
        },
        Scenario {
            name: "suggestion (every flag off)",
            flags: AutomationFlags::READ_ONLY,
            workers: 16,
            tickets: 2 + 398 * scale,
        },
        Scenario {
            name: "suggestion (every flag off)",
            flags: AutomationFlags::READ_ONLY,
            workers: 32,
            tickets: 2 + 598 * scale,
        },
        Scenario {
            name: "Level 3 (every write on)",
            flags: level_three(),
            workers: 16,
            tickets: 2 + 198 * scale,
        },
        Scenario {
            name: "Level 3 (every write on)",
            flags: level_three(),
            workers: 32,
            tickets: 2 + 298 * scale,
        },
    ];
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "workflow against the fake Zoho: {} ms per call, at most {limit} calls at once to Desk and \
         {limit} to CRM",
        latency.as_millis()
    );
    println!(
        "| mode | workers | tickets | tickets/s | bound min k/(c_api·L) | % of bound | original bound 4/(c·L) \
         | × original bound | Desk calls/ticket | CRM calls/ticket | token requests (total) | extra token \
         requests/1000 tickets | 429s | failed runs |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for scenario in &scenarios {
        let m = runtime.block_on(measure(scenario, latency, limit));
        // The smoke run (and the measurement) fail on what the budgets forbid.
        assert_eq!(m.failed_runs, 0, "{}: workflow runs failed", scenario.name);
        assert_eq!(m.refreshes, 1, "{}: one token per process", scenario.name);
        if scenario.flags == AutomationFlags::READ_ONLY {
            assert!(
                m.desk_per_ticket <= 3.0 && m.crm_per_ticket <= 2.0,
                "suggestion mode made {:.2} Desk and {:.2} CRM calls per ticket",
                m.desk_per_ticket,
                m.crm_per_ticket
            );
        }
        let calls = m.desk_per_ticket + m.crm_per_ticket;
        let (bound, original) = if latency.is_zero() {
            (f64::NAN, f64::NAN)
        } else {
            let seconds = latency.as_secs_f64();
            let busiest = m.desk_per_ticket.max(m.crm_per_ticket);
            (
                limit as f64 / (busiest * seconds),
                ORIGINAL_WORKERS / (calls * seconds),
            )
        };
        println!(
            "| {} | {} | {} | {:.1} | {:.1} | {:.0} % | {:.1} | {:.1} | {:.2} | {:.2} | {} | {:.1} | {} | {} |",
            scenario.name,
            scenario.workers,
            scenario.tickets,
            m.tickets_per_second,
            bound,
            100.0 * m.tickets_per_second / bound,
            original,
            m.tickets_per_second / original,
            m.desk_per_ticket,
            m.crm_per_ticket,
            m.refreshes,
            m.extra_refreshes_per_1000,
            m.rejected_429,
            m.failed_runs,
        );
    }
}
