//! A backtest's comparison as a person or a program reads it: a table, JSON or CSV.

use std::fmt::Write as _;

use super::Comparison;

/// The output formats of `deskhook backtest`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    Csv,
}

/// The comparison in `format`, ending with a newline.
pub fn render(comparison: &Comparison, format: Format) -> String {
    match format {
        Format::Table => table(comparison),
        Format::Json => json(comparison),
        Format::Csv => csv(comparison),
    }
}

/// Pretty JSON; the comparison holds only ordered collections, so equal inputs give equal
/// bytes.
pub fn json(comparison: &Comparison) -> String {
    let mut text = serde_json::to_string_pretty(comparison).unwrap_or_default();
    text.push('\n');
    text
}

/// Per ticket, each change on its line (a reply's unified diff indented below it), then the
/// totals.
pub fn table(comparison: &Comparison) -> String {
    let mut out = String::new();
    for ticket in &comparison.tickets {
        let number = ticket
            .ticket_number
            .as_deref()
            .map(|n| format!(" #{n}"))
            .unwrap_or_default();
        let subject = ticket
            .subject
            .as_deref()
            .map(|s| format!(" «{}»", one_line(s, 80)))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "ticket {}{number}{subject} (decided {}, generation {})",
            ticket.ticket_id, ticket.decided_at, ticket.settings_generation
        );
        for change in &ticket.changes {
            // A reply whose text changed shows its template here and the diff below.
            let shown = |value: &Option<String>| match value {
                Some(value) if change.diff.is_some() => label(value),
                Some(value) => one_line(value, 100),
                None => "(none)".to_owned(),
            };
            let _ = writeln!(
                out,
                "  {:<13} {} → {}",
                change.kind.as_str(),
                shown(&change.before),
                shown(&change.after)
            );
            if let Some(diff) = &change.diff {
                for line in diff.lines() {
                    let _ = writeln!(out, "      {line}");
                }
            }
        }
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "{} of {} decisions would change ({} not comparable)",
        comparison.changed, comparison.compared, comparison.not_comparable
    );
    for (kind, count) in &comparison.by_kind {
        let _ = writeln!(out, "  {:<13} {count}", kind.as_str());
    }
    out
}

/// One row per change: `ticket_id,ticket_number,decided_at,kind,before,after,diff`.
pub fn csv(comparison: &Comparison) -> String {
    let mut writer = ::csv::Writer::from_writer(Vec::new());
    let _ = writer.write_record([
        "ticket_id",
        "ticket_number",
        "decided_at",
        "kind",
        "before",
        "after",
        "diff",
    ]);
    for ticket in &comparison.tickets {
        for change in &ticket.changes {
            let _ = writer.write_record([
                ticket.ticket_id.as_str(),
                ticket.ticket_number.as_deref().unwrap_or(""),
                ticket.decided_at.as_str(),
                change.kind.as_str(),
                change.before.as_deref().unwrap_or(""),
                change.after.as_deref().unwrap_or(""),
                change.diff.as_deref().unwrap_or(""),
            ]);
        }
    }
    let bytes = writer.into_inner().unwrap_or_default();
    String::from_utf8(bytes).unwrap_or_default()
}

/// The `[template; …]` label that opens a shown reply.
fn label(reply: &str) -> String {
    match reply.find(']') {
        Some(end) if reply.starts_with('[') => reply[..=end].to_owned(),
        _ => one_line(reply, 100),
    }
}

/// A value on one line, cut to `max` characters.
fn one_line(text: &str, max: usize) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c == '\n' || c == '\r' { '⏎' } else { c })
        .collect();
    match flat.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &flat[..end]),
        None => flat,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backtest::{Change, Kind, TicketDiff};

    fn comparison() -> Comparison {
        Comparison {
            compared: 2,
            changed: 1,
            not_comparable: 0,
            by_kind: [(Kind::Department, 1)].into_iter().collect(),
            tickets: vec![TicketDiff {
                ticket_id: "7".into(),
                ticket_number: Some("101".into()),
                subject: Some("Ma facture, \"vite\"".into()),
                decided_at: "2026-11-20T10:00:00Z".into(),
                settings_generation: 3,
                truncated_facts: false,
                changes: vec![Change {
                    kind: Kind::Department,
                    before: Some("DOC".into()),
                    after: Some("FACTURATION".into()),
                    diff: None,
                }],
            }],
        }
    }

    #[test]
    fn the_table_lists_each_change_and_the_totals() {
        let text = table(&comparison());
        assert!(
            text.contains("ticket 7 #101 «Ma facture, \"vite\"»"),
            "{text}"
        );
        assert!(text.contains("department    DOC → FACTURATION"), "{text}");
        assert!(text.contains("1 of 2 decisions would change"), "{text}");
    }

    #[test]
    fn a_changed_reply_shows_its_template_and_the_diff_below() {
        let mut reply = comparison();
        reply.tickets[0].changes[0] = Change {
            kind: Kind::Reply,
            before: Some("[accuse] Bonjour,\nmerci".into()),
            after: Some("[accuse; would be rewritten by the model] Bonjour,\nmerci !".into()),
            diff: Some(
                "--- before\n+++ after\n@@ -1,2 +1,2 @@\n Bonjour,\n-merci\n+merci !\n".into(),
            ),
        };
        let text = table(&reply);
        assert!(
            text.contains("  reply         [accuse] → [accuse; would be rewritten by the model]\n"),
            "{text}"
        );
        assert!(text.contains("\n      +merci !\n"), "{text}");
    }

    #[test]
    fn csv_quotes_what_needs_quoting() {
        let mut with_comma = comparison();
        with_comma.tickets[0].changes[0].after = Some("Refus, CMA".into());
        let text = csv(&with_comma);
        assert_eq!(
            text.lines().nth(1),
            Some("7,101,2026-11-20T10:00:00Z,department,DOC,\"Refus, CMA\",")
        );
    }
}
