//! The filtered decisions as CSV and JSON files, for review away from the console.
//!
//! The CSV is meant to be opened in a spreadsheet, where a cell starting with `=`, `+`, `-`,
//! `@` (or a tab or carriage return) is taken as a formula: customer text could then run one
//! on the reviewer's machine. Such cells are prefixed with `'`, which spreadsheets show as
//! plain text.

use serde_json::{Value, json};

use super::view::{DecisionView, Outcome, WRITING_STEPS};
use crate::decisions::StoredDecision;

/// UTF-8 byte order mark: without it, spreadsheets guess a legacy encoding and French text
/// comes out garbled.
const BOM: &str = "\u{feff}";

/// The CSV columns, in order.
fn header() -> Vec<String> {
    let mut columns: Vec<String> = [
        "decision_id",
        "started_at",
        "ticket_id",
        "ticket_number",
        "subject",
        "event_type",
        "department",
        "recommended_department",
        "rule",
        "outcome",
        "deal_id",
        "deal_name",
        "deal_found_by",
        "reply_mode",
        "reply_text",
        "skipped",
        "offline",
        "settings_generation",
        "web_url",
    ]
    .map(str::to_owned)
    .to_vec();
    columns.extend(
        WRITING_STEPS
            .iter()
            .map(|(step, _, _)| format!("step_{step}")),
    );
    columns
}

fn row(view: &DecisionView) -> Vec<String> {
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    let mut cells = vec![
        view.id.clone(),
        view.started_at.clone(),
        view.ticket_id.clone(),
        text(&view.ticket_number),
        text(&view.subject),
        view.event_type.clone(),
        text(&view.department),
        text(&view.target_department),
        text(&view.rule),
        view.outcome.to_owned(),
        view.deal.as_ref().map(|d| d.id.clone()).unwrap_or_default(),
        view.deal
            .as_ref()
            .and_then(|d| d.name.clone())
            .unwrap_or_default(),
        text(&view.link_strategy),
        view.reply
            .as_ref()
            .map(|r| r.mode.to_owned())
            .unwrap_or_default(),
        view.reply
            .as_ref()
            .map(|r| r.text.clone())
            .unwrap_or_default(),
        text(&view.skipped),
        view.offline.to_string(),
        view.settings_generation.to_string(),
        text(&view.web_url),
    ];
    cells.extend(
        WRITING_STEPS
            .iter()
            .map(|(step, _, _)| view.step_status(step).to_owned()),
    );
    cells
}

/// One CSV cell: neutralised against formulas, then quoted when needed (RFC 4180). A cell
/// holding `;` or a tab is quoted too: spreadsheets set to French conventions split on `;`,
/// and an unquoted `x;=HYPERLINK(…)` would become a cell that starts with a formula.
pub fn cell(value: &str) -> String {
    let value = if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{value}")
    } else {
        value.to_owned()
    };
    if value.contains([',', ';', '\t', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value
    }
}

fn line(cells: &[String]) -> String {
    let mut line = cells.iter().map(|c| cell(c)).collect::<Vec<_>>().join(",");
    line.push_str("\r\n");
    line
}

/// The decisions as a CSV document, one row per decision.
pub fn csv(decisions: &[&StoredDecision]) -> String {
    let mut out = String::from(BOM);
    out.push_str(&line(&header()));
    for decision in decisions {
        out.push_str(&line(&row(&DecisionView::new(decision))));
    }
    out
}

/// The decisions as JSON: each full report with its id, plus when and how it was exported.
pub fn json(decisions: &[&StoredDecision], filters: &str, exported_at: &str) -> Value {
    json!({
        "exported_at": exported_at,
        "filters": filters,
        "count": decisions.len(),
        "decisions": decisions
            .iter()
            .map(|d| json!({
                "id": d.id,
                "outcome": Outcome::of(&d.report).as_str(),
                "report": d.report.as_ref(),
            }))
            .collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_cells_are_neutralised_and_quoting_follows_rfc_4180() {
        assert_eq!(cell("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(cell("+33 6 12"), "'+33 6 12");
        assert_eq!(cell("-1"), "'-1");
        assert_eq!(cell("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(cell("Bonjour, Zoé"), "\"Bonjour, Zoé\"");
        assert_eq!(cell("ligne 1\nligne 2"), "\"ligne 1\nligne 2\"");
        assert_eq!(cell("plain"), "plain");
        // Split on `;` or a tab by a spreadsheet, these would start a cell with a formula.
        assert_eq!(
            cell("Dossier;=HYPERLINK(\"http://x\")"),
            "\"Dossier;=HYPERLINK(\"\"http://x\"\")\""
        );
        assert_eq!(cell("a\t=1+1"), "\"a\t=1+1\"");
    }
}
