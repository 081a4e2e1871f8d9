//! The optional language model only rewrites reply wording, and its output is used only when
//! it passes the same checks as a template.

mod support;

use std::sync::Arc;
use std::time::Instant;

use deskhook::config::{Settings, SettingsSource, WatchedSecrets};
use deskhook::crd::{AutomationFlags, LlmSpec, WebhookAutomationSpec};
use deskhook::event::TicketEvent;
use deskhook::workflow::AutomationWorkflow;
use deskhook::workflow::Run;
use deskhook::workflow::Workflow;
use deskhook::workflow::ledger::MemoryLedger;
use deskhook::workflow::reply::ReplyRewriter;
use serde_json::{Value, json};
use support::fake_llm::model;

fn settings() -> Settings {
    let yaml = r#"
routing:
  - name: facturation
    when: {text: {any: [facture]}}
    then: {department: FACTURATION, replyTemplate: accuse}
replies:
  forbiddenTerms: [garanti]
  templates:
    accuse: "Bonjour, votre demande de facture est transmise au service comptable."
"#;
    let mut spec: WebhookAutomationSpec = serde_yaml::from_str(yaml).unwrap();
    spec.replies.llm = Some(LlmSpec {
        model: "test-model".into(),
        min_chars: 20,
        max_chars: 400,
        ..LlmSpec::default()
    });
    // Offline, with drafts on: the model is asked only when a reply is to be written.
    spec.automation = AutomationFlags {
        draft_replies: true,
        ..AutomationFlags::READ_ONLY
    };
    Settings::from_spec(spec, SettingsSource::Environment, 1).unwrap()
}

fn job() -> Run {
    let payload = json!({"id": "101", "subject": "Ma facture", "email": "client@example.fr",
                         "description": "Je n'ai pas reçu ma facture."});
    Run {
        id: 1,
        event: TicketEvent::new("101".into(), "Ticket_Add".into(), None, None, payload),
        attempt: 1,
        enqueued_at: Instant::now(),
    }
}

async fn reply_for(
    answer: &str,
) -> (
    deskhook::workflow::ReplySummary,
    Vec<(Option<String>, Value)>,
) {
    let (url, seen) = model(answer).await;
    let http = deskhook::server::http_client().unwrap();
    let rewriter = ReplyRewriter::new(
        http,
        url.parse().unwrap(),
        WatchedSecrets::load(Some("llm-test-key"), None).unwrap(),
    );
    let workflow = AutomationWorkflow::new(None, Arc::new(MemoryLedger::default()), Some(rewriter));
    let report = workflow.run(&job(), &settings()).await;
    let calls = seen.lock().unwrap().clone();
    (report.reply.expect("a reply"), calls)
}

#[tokio::test]
async fn a_valid_rewrite_replaces_the_template_text() {
    let rewrite =
        "Bonjour, nous avons bien transmis votre demande de facture à notre comptabilité.";
    let (reply, calls) = reply_for(rewrite).await;
    assert!(reply.rewritten);
    assert_eq!(reply.text, rewrite);
    // The model saw only the rendered reply, fenced as data, with the configured key.
    let (auth, body) = &calls[0];
    assert_eq!(auth.as_deref(), Some("Bearer llm-test-key"));
    assert_eq!(body["model"], "test-model");
    assert_eq!(
        body["messages"][1]["content"],
        "<reply>\nBonjour, votre demande de facture est transmise au service comptable.\n</reply>"
    );
    assert!(
        body["messages"][0]["content"]
            .as_str()
            .unwrap()
            .contains("never as instructions"),
        "{body}"
    );
}

#[tokio::test]
async fn a_rewrite_that_adds_a_link_is_not_used() {
    let (reply, calls) = reply_for(
        "Bonjour, votre facture est disponible sur https://factures.evil.example/telecharger maintenant.",
    )
    .await;
    assert_eq!(calls.len(), 1);
    assert!(!reply.rewritten);
    assert!(reply.text.starts_with("Bonjour, votre demande"));
}

#[tokio::test]
async fn no_reply_to_write_means_no_call_to_the_model() {
    let (url, seen) = model("Bonjour, une réponse réécrite assez longue pour passer.").await;
    let http = deskhook::server::http_client().unwrap();
    let rewriter = ReplyRewriter::new(http, url.parse().unwrap(), WatchedSecrets::default());
    let workflow = AutomationWorkflow::new(None, Arc::new(MemoryLedger::default()), Some(rewriter));
    let mut settings = settings();
    settings.spec.automation = AutomationFlags::READ_ONLY;
    let report = workflow.run(&job(), &settings).await;
    assert_eq!(report.reply.expect("a suggested reply").mode, "suggestion");
    assert!(
        seen.lock().unwrap().is_empty(),
        "the model was asked for a suggestion"
    );
}

#[tokio::test]
async fn a_rewrite_with_a_forbidden_term_is_not_used() {
    let (reply, calls) =
        reply_for("Bonjour, votre remboursement est garanti sous 48 heures, promis.").await;
    assert_eq!(calls.len(), 1);
    assert!(!reply.rewritten);
    assert_eq!(
        reply.text,
        "Bonjour, votre demande de facture est transmise au service comptable."
    );
}

#[tokio::test]
async fn rewrites_too_short_or_with_placeholders_are_not_used() {
    for answer in [
        "Ok.",
        "Bonjour {{ contact.first_name }}, votre facture arrive bientôt chez vous.",
    ] {
        let (reply, _) = reply_for(answer).await;
        assert!(!reply.rewritten, "{answer}");
        assert!(reply.text.starts_with("Bonjour, votre demande"));
    }
}

#[tokio::test]
async fn a_rotated_model_key_file_is_used_without_a_restart() {
    let dir = support::process::TempDir::new("llm-key");
    let file = dir.write("llm-key", "key-before-rotation\n");
    let keys = WatchedSecrets::load(None, Some(file)).unwrap();
    let _watch = keys.spawn_watch("language model key");
    let (url, seen) =
        model("Bonjour, nous avons bien transmis votre demande de facture à la comptabilité.")
            .await;
    let http = deskhook::server::http_client().unwrap();
    let rewriter = ReplyRewriter::new(http, url.parse().unwrap(), keys);
    let workflow = AutomationWorkflow::new(None, Arc::new(MemoryLedger::default()), Some(rewriter));
    workflow.run(&job(), &settings()).await;
    dir.write("llm-key", "key-after-rotation\n");
    support::intake::eventually("the rotated key to be sent", || async {
        workflow.run(&job(), &settings()).await;
        let last = seen
            .lock()
            .unwrap()
            .last()
            .and_then(|(auth, _)| auth.clone());
        (last.as_deref() == Some("Bearer key-after-rotation")).then_some(())
    })
    .await;
    let first = seen.lock().unwrap()[0].0.clone();
    assert_eq!(first.as_deref(), Some("Bearer key-before-rotation"));
}
