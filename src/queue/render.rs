//! What `deskhook queue` prints: the Redis queue's state for a person (aligned text) or for a
//! script (JSON). Kept in the library so the command's output is tested like any other.

use serde::Serialize;

use super::redis::{DeadLetter, QueueStats, Replayed};

/// How the command prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

/// Waiting, running and dead-lettered jobs, and what each pod holds.
pub fn stats(stats: &QueueStats, format: Format) -> serde_json::Result<String> {
    if format == Format::Json {
        return json(stats);
    }
    let mut text = format!(
        "waiting       {}\nrunning       {}\ndead letters  {}\n",
        stats.waiting, stats.running, stats.dead_letters
    );
    for consumer in &stats.consumers {
        text.push_str(&format!(
            "consumer {:<30} holds {:>4}  idle {:.1}s\n",
            consumer.name,
            consumer.pending,
            consumer.idle_ms as f64 / 1000.0
        ));
    }
    Ok(text)
}

/// One line per dead letter: its id for `replay`, the ticket, and the last error.
pub fn dead_letters(letters: &[DeadLetter], format: Format) -> serde_json::Result<String> {
    if format == Format::Json {
        return json(letters);
    }
    if letters.is_empty() {
        return Ok("no dead letters\n".to_owned());
    }
    Ok(letters
        .iter()
        .map(|letter| {
            format!(
                "{}  ticket {}  {}  attempts {}  error: {}\n",
                letter.id,
                letter.ticket_id,
                letter.event_type.as_deref().unwrap_or("?"),
                letter.attempts,
                letter.error
            )
        })
        .collect())
}

/// What became of each replayed dead letter.
pub fn replayed(replayed: &[Replayed], format: Format) -> serde_json::Result<String> {
    if format == Format::Json {
        return json(replayed);
    }
    Ok(replayed
        .iter()
        .map(|one| format!("{}  {}\n", one.id, one.outcome))
        .collect())
}

fn json(value: &(impl Serialize + ?Sized)) -> serde_json::Result<String> {
    serde_json::to_string_pretty(value).map(|mut text| {
        text.push('\n');
        text
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::redis::ConsumerStats;

    fn letter() -> DeadLetter {
        DeadLetter {
            id: "1-0".into(),
            ticket_id: "42".into(),
            event_type: None,
            job_id: Some(7),
            attempts: 5,
            error: "dispatch: 500".into(),
            failed_at_ms: 0,
            consumer: "pod-a".into(),
        }
    }

    #[test]
    fn stats_print_one_line_per_count_and_per_pod() {
        let held = QueueStats {
            waiting: 3,
            running: 1,
            dead_letters: 2,
            consumers: vec![ConsumerStats {
                name: "pod-a".into(),
                pending: 1,
                idle_ms: 1500,
            }],
        };
        let text = stats(&held, Format::Text).unwrap();
        assert_eq!(
            text.lines().collect::<Vec<_>>(),
            [
                "waiting       3",
                "running       1",
                "dead letters  2",
                "consumer pod-a                          holds    1  idle 1.5s",
            ]
        );
        let json: serde_json::Value =
            serde_json::from_str(&stats(&held, Format::Json).unwrap()).unwrap();
        assert_eq!(json["consumers"][0]["idle_ms"], 1500);
    }

    #[test]
    fn dead_letters_name_their_id_ticket_and_error_and_an_unknown_type() {
        let text = dead_letters(&[letter()], Format::Text).unwrap();
        assert_eq!(
            text,
            "1-0  ticket 42  ?  attempts 5  error: dispatch: 500\n"
        );
        assert_eq!(
            dead_letters(&[], Format::Text).unwrap(),
            "no dead letters\n"
        );
        let json: serde_json::Value =
            serde_json::from_str(&dead_letters(&[letter()], Format::Json).unwrap()).unwrap();
        assert_eq!(json[0]["job_id"], 7);
    }

    #[test]
    fn replays_print_each_id_with_its_outcome() {
        let done = [
            Replayed {
                id: "1-0".into(),
                outcome: "queued".into(),
            },
            Replayed {
                id: "2-0".into(),
                outcome: "missing".into(),
            },
        ];
        assert_eq!(
            replayed(&done, Format::Text).unwrap(),
            "1-0  queued\n2-0  missing\n"
        );
    }
}
