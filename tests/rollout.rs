//! Guarded rollout against the fake Zoho: only tickets inside an action's share are written,
//! the others are reported as skipped with their bucket; failing writes breach the guard, and
//! once the share is 0 no ticket is moved until the spec entry changes.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deskhook::config::{Settings, SettingsSource, load_spec_file};
use deskhook::crd::{ActionRollout, AutomationFlags, RolloutState};
use deskhook::event::TicketEvent;
use deskhook::metrics::Metrics;
use deskhook::rollout::{self, Rollouts, StepCounts};
use deskhook::workflow::Run;
use deskhook::workflow::ledger::MemoryLedger;
use deskhook::workflow::{AutomationWorkflow, DecisionReport, StepStatus, Workflow};
use k8s_openapi::jiff::Timestamp;
use serde_json::json;
use support::fake_zoho::{FakeZoho, Fault};

/// The reference configuration with only `dispatch` on, under `rollout` for dispatch.
fn settings(rollout: &str) -> Settings {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/webhookautomation.yaml");
    let mut spec = load_spec_file(&path).expect("the reference configuration loads");
    spec.automation = AutomationFlags {
        dispatch: true,
        ..AutomationFlags::READ_ONLY
    };
    spec.zoho.org_id = Some(support::fake_zoho::ORG_ID.into());
    spec.rollout.dispatch = Some(serde_yaml::from_str(rollout).expect("a rollout entry"));
    Settings::from_spec(spec, SettingsSource::Environment, 1).expect("valid settings")
}

fn ticket_id(n: u64) -> String {
    format!("{}", 198_709_000_438_366_101u64 + n * 7919)
}

/// A fake portal with `count` tickets of the `refus-cma` kind, each needing a move to Refus CMA.
async fn portal(count: u64) -> FakeZoho {
    let fake = FakeZoho::start().await;
    fake.seed_reference_portal();
    for n in 0..count {
        let id = ticket_id(n);
        fake.add_ticket(json!({
            "id": id,
            "ticketNumber": format!("{}", 100 + n),
            "subject": "Mon dossier d'inscription",
            "status": "Open",
            "statusType": "Open",
            "departmentId": "1",
            "email": "zoe.martin@example.fr",
            "cf": {"cf_opportunite": null}
        }));
        fake.add_thread(
            &id,
            json!({
                "id": format!("1892000000099{n:03}"),
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

fn workflow(fake: &FakeZoho, metrics: &Metrics, rollouts: &Rollouts) -> AutomationWorkflow {
    AutomationWorkflow::new(
        Some(fake.clients_with(FakeZoho::fast_options(), metrics)),
        Arc::new(MemoryLedger::default()),
        None,
    )
    .with_rollouts(rollouts.clone())
}

async fn run(workflow: &AutomationWorkflow, n: u64, settings: &Settings) -> DecisionReport {
    let id = ticket_id(n);
    let job = Run {
        id: n + 1,
        event: TicketEvent::new(
            id.clone(),
            "Ticket_Add".into(),
            None,
            Some(1),
            json!({ "id": id }),
        ),
        attempt: 1,
        enqueued_at: Instant::now(),
    };
    tokio::time::timeout(Duration::from_secs(20), workflow.run(&job, settings))
        .await
        .expect("the workflow finishes")
}

fn dispatch(report: &DecisionReport) -> &deskhook::workflow::StepReport {
    report
        .steps
        .iter()
        .find(|s| s.step == "dispatch")
        .unwrap_or_else(|| panic!("no dispatch step: {report:?}"))
}

#[tokio::test]
async fn only_tickets_inside_the_share_are_moved_the_others_say_their_bucket() {
    const TICKETS: u64 = 120;
    let fake = portal(TICKETS).await;
    let metrics = Metrics::new();
    let rollouts = Rollouts::default();
    let workflow = workflow(&fake, &metrics, &rollouts);
    let settings = settings("percent: 25");
    let mut moved = 0;
    for n in 0..TICKETS {
        let report = run(&workflow, n, &settings).await;
        let step = dispatch(&report);
        let bucket = rollout::bucket("dispatch", &ticket_id(n));
        if bucket < 2_500 {
            assert_eq!(step.status, StepStatus::Done, "bucket {bucket}: {step:?}");
            moved += 1;
        } else {
            assert_eq!(step.status, StepStatus::SkippedFlagOff, "{step:?}");
            assert_eq!(
                step.detail,
                format!("outside rollout (bucket {bucket} ≥ 2500): would move to Refus CMA")
            );
        }
    }
    assert_eq!(fake.calls_to("move_ticket").len(), moved);
    assert!(
        (10..=50).contains(&moved),
        "{moved} of {TICKETS} in a 25 % share"
    );
}

#[tokio::test]
async fn failing_moves_past_the_guard_roll_back_and_then_nothing_is_moved() {
    let fake = portal(200).await;
    let metrics = Metrics::new();
    let rollouts = Rollouts::default();
    let workflow = workflow(&fake, &metrics, &rollouts);
    let settings = settings(
        "steps: [50, 100]\nstepInterval: 1s\nminDecisionsPerStep: 1\n\
         guard: {maxFailureRatio: 0.2, minSamples: 10}",
    );
    let spec: &ActionRollout = settings.spec.rollout.dispatch.as_ref().unwrap();
    let start = Timestamp::now();
    let first = rollout::evaluate("dispatch", spec, None, StepCounts::default(), start).status;
    rollouts.publish(&BTreeMap::from([("dispatch".to_owned(), first.clone())]));

    // Every move fails while the first 40 tickets run: each one inside the share counts.
    fake.fail_next("move_ticket", 1_000, Fault::ServerError);
    for n in 0..40 {
        run(&workflow, n, &settings).await;
    }
    let tally = rollouts.tally();
    let counted = &tally["dispatch"];
    assert_eq!(counted.spec_digest, first.spec_digest);
    assert!(counted.counts.decisions >= 10, "{counted:?}");
    assert_eq!(counted.counts.failures, counted.counts.decisions);

    let judged = rollout::evaluate("dispatch", spec, Some(&first), counted.counts, start);
    let breach = judged.breach.expect("every move failed, above 0.2");
    assert_eq!(breach.measure, "failure_ratio");
    assert_eq!(judged.status.state, RolloutState::RolledBack);
    rollouts.publish(&BTreeMap::from([(
        "dispatch".to_owned(),
        judged.status.clone(),
    )]));

    // The next 100 tickets produce zero moves, whatever their bucket.
    fake.forget_calls();
    for n in 40..140 {
        let report = run(&workflow, n, &settings).await;
        assert_eq!(dispatch(&report).status, StepStatus::SkippedFlagOff);
    }
    assert_eq!(fake.calls_to("move_ticket").len(), 0);

    // Bumping restartedAt starts the rollout again at its first step.
    let bumped = Settings::from_spec(
        {
            let mut spec = settings.spec.clone();
            spec.rollout.dispatch.as_mut().unwrap().restarted_at =
                Some("2026-12-04T22:00:00Z".into());
            spec
        },
        SettingsSource::Environment,
        2,
    )
    .unwrap();
    let resumed = rollout::evaluate(
        "dispatch",
        bumped.spec.rollout.dispatch.as_ref().unwrap(),
        Some(&judged.status),
        StepCounts::default(),
        Timestamp::now(),
    );
    assert_eq!(resumed.status.state, RolloutState::Progressing);
    assert_eq!(resumed.status.percent, 50);
}

/// A `Ticket_Update` of ticket `n`, accepted `after` from now.
async fn update(
    workflow: &AutomationWorkflow,
    n: u64,
    settings: &Settings,
    after: Duration,
) -> DecisionReport {
    let id = ticket_id(n);
    let job = Run {
        id: 10_000 + n,
        event: TicketEvent::new(
            id.clone(),
            "Ticket_Update".into(),
            None,
            Some(2),
            json!({ "id": id }),
        ),
        attempt: 1,
        enqueued_at: Instant::now() + after,
    };
    tokio::time::timeout(Duration::from_secs(20), workflow.run(&job, settings))
        .await
        .expect("the workflow finishes")
}

/// A person changes ticket `n`'s department in Zoho Desk.
fn person_moves(fake: &FakeZoho, n: u64, department_id: &str) {
    let mut ticket = fake.ticket(&ticket_id(n)).expect("a seeded ticket");
    ticket["departmentId"] = json!(department_id);
    fake.add_ticket(ticket);
}

#[tokio::test]
async fn later_updates_count_overrides_and_agreement_exactly_and_ignore_our_echo() {
    let fake = portal(60).await;
    let metrics = Metrics::new();
    let rollouts = Rollouts::default();
    let workflow = workflow(&fake, &metrics, &rollouts);
    let mut settings = settings("percent: 50\nguard: {overrideWindow: 1h}");
    settings.spec.zoho.echo_window_seconds = 1;
    let (mut moved, mut shadow) = (Vec::new(), Vec::new());
    for n in 0..60 {
        match dispatch(&run(&workflow, n, &settings).await).status {
            StepStatus::Done => moved.push(n),
            StepStatus::SkippedFlagOff => shadow.push(n),
            other => panic!("ticket {n}: {other:?}"),
        }
    }
    assert!(
        moved.len() >= 8 && shadow.len() >= 8,
        "{moved:?} {shadow:?}"
    );
    let later = Duration::from_secs(5);

    // The echo of our own move, even one showing another department, is never run.
    person_moves(&fake, moved[0], "2");
    let echo = update(&workflow, moved[0], &settings, Duration::ZERO).await;
    assert_eq!(
        echo.skipped.as_deref(),
        Some("echo of deskhook's own write")
    );
    person_moves(&fake, moved[0], "4");

    // Four moved tickets are moved elsewhere by a person, two are updated but stay put.
    for &n in &moved[1..5] {
        person_moves(&fake, n, "2");
        update(&workflow, n, &settings, later).await;
    }
    for &n in &moved[5..7] {
        update(&workflow, n, &settings, later).await;
    }
    // Tickets deskhook left alone: three moved where it would have, one elsewhere, two not.
    for &n in &shadow[0..3] {
        person_moves(&fake, n, "4");
        update(&workflow, n, &settings, later).await;
    }
    person_moves(&fake, shadow[3], "3");
    update(&workflow, shadow[3], &settings, later).await;
    for &n in &shadow[4..6] {
        update(&workflow, n, &settings, later).await;
    }
    // A second update of an overridden ticket is not a second override.
    update(&workflow, moved[1], &settings, later).await;

    let counted = rollouts.tally()["dispatch"].counts;
    assert_eq!(counted.overrides, 4, "{counted:?}");
    assert_eq!((counted.compared, counted.agreed), (4, 3), "{counted:?}");
    assert_eq!(counted.agreement(), Some(0.75));

    // minAgreement holds the first step until the agreement reaches it.
    let strict: ActionRollout =
        serde_yaml::from_str("steps: [10, 50]\nguard: {minAgreement: 0.8}").unwrap();
    let held = rollout::evaluate("dispatch", &strict, None, counted, Timestamp::now()).status;
    assert_eq!((held.state, held.percent), (RolloutState::Paused, 0));
    let lenient: ActionRollout =
        serde_yaml::from_str("steps: [10, 50]\nguard: {minAgreement: 0.75}").unwrap();
    let started = rollout::evaluate("dispatch", &lenient, None, counted, Timestamp::now()).status;
    assert_eq!(
        (started.state, started.percent),
        (RolloutState::Progressing, 10)
    );
}
