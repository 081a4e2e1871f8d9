//! Customer text, made comparable: HTML to text, quoted history removed, case and accents
//! folded, split into words.
//!
//! Matching works on whole words, so "formation" never matches "information" and "test"
//! never matches "attestation" (the original system's substring defects). Every function is
//! linear in its input and input is capped, so hostile text costs bounded time and memory.

use unicode_normalization::char::decompose_canonical;

/// Longest text examined, in bytes; the rest of a message is ignored.
pub const MAX_TEXT_BYTES: usize = 64 * 1024;
/// Most keywords examined per condition list.
pub const MAX_KEYWORDS: usize = 256;

/// Plain text from a Zoho thread body: tags removed, common entities decoded.
pub fn html_to_text(html: &str) -> String {
    let html = truncate(html, MAX_TEXT_BYTES);
    let mut out = String::with_capacity(html.len());
    let mut in_tag = false;
    let mut tag = String::new();
    let mut chars = html.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '<' => {
                in_tag = true;
                tag.clear();
            }
            '>' if in_tag => {
                in_tag = false;
                let name = tag
                    .trim_start_matches('/')
                    .split_whitespace()
                    .next()
                    .unwrap_or("");
                if matches!(
                    name.to_ascii_lowercase().as_str(),
                    "br" | "br/" | "p" | "div" | "li" | "tr" | "blockquote"
                ) {
                    out.push('\n');
                }
            }
            _ if in_tag => {
                if tag.len() < 32 {
                    tag.push(c);
                }
            }
            '&' => {
                let mut entity = String::new();
                while let Some(&next) = chars.peek() {
                    if next == ';' || entity.len() > 8 {
                        break;
                    }
                    entity.push(next);
                    chars.next();
                }
                if chars.peek() == Some(&';') {
                    chars.next();
                    out.push_str(decode_entity(&entity).unwrap_or(" "));
                } else {
                    out.push('&');
                    out.push_str(&entity);
                }
            }
            _ => out.push(c),
        }
    }
    out
}

fn decode_entity(entity: &str) -> Option<&'static str> {
    Some(match entity {
        "nbsp" | "#160" => " ",
        "amp" | "#38" => "&",
        "lt" | "#60" => "<",
        "gt" | "#62" => ">",
        "quot" | "#34" => "\"",
        "apos" | "#39" => "'",
        "eacute" => "é",
        "egrave" => "è",
        "ecirc" => "ê",
        "agrave" => "à",
        "acirc" => "â",
        "ccedil" => "ç",
        "ocirc" => "ô",
        "ucirc" => "û",
        "ugrave" => "ù",
        "icirc" => "î",
        "iuml" => "ï",
        "euml" => "ë",
        "rsquo" | "lsquo" => "'",
        "laquo" => "«",
        "raquo" => "»",
        _ => return None,
    })
}

/// The customer's own words: quoted lines and everything from a reply or forward header on
/// are dropped.
pub fn strip_quoted(text: &str) -> String {
    let mut kept = Vec::new();
    for line in truncate(text, MAX_TEXT_BYTES).lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('>') {
            continue;
        }
        if is_history_marker(trimmed) {
            break;
        }
        kept.push(line);
    }
    kept.join("\n")
}

fn is_history_marker(line: &str) -> bool {
    // Every marker starts with one of these and is short: most lines are rejected unread.
    let starts_like_marker = line
        .chars()
        .next()
        .is_some_and(|c| matches!(c.to_ascii_lowercase(), '-' | '_' | 'd' | 'f' | 'l' | 'o'));
    if !starts_like_marker || line.len() > 300 {
        return false;
    }
    let folded = fold(line);
    folded.starts_with("-----original message")
        || folded.starts_with("----- message d'origine")
        || folded.starts_with("-------- message transfere")
        || folded.starts_with("---------- forwarded message")
        || folded.starts_with("de :") && folded.contains('@')
        || folded.starts_with("from:") && folded.contains('@')
        || (folded.starts_with("le ") && folded.ends_with("a ecrit :"))
        || (folded.starts_with("le ") && folded.ends_with("a ecrit:"))
        || (folded.starts_with("on ") && folded.ends_with("wrote:"))
        || folded.starts_with("________________")
}

/// Lower case without accents: `Évalué` → `evalue`, `œuvre` → `oeuvre`.
pub fn fold(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        // ASCII, most of any message, needs no decomposition.
        if c.is_ascii() {
            out.push(c.to_ascii_lowercase());
            continue;
        }
        match c {
            'œ' | 'Œ' => out.push_str("oe"),
            'æ' | 'Æ' => out.push_str("ae"),
            'ß' => out.push_str("ss"),
            '’' | '‘' => out.push('\''),
            _ => decompose_canonical(c, |part| {
                if !('\u{300}'..='\u{36f}').contains(&part) {
                    out.extend(part.to_lowercase());
                }
            }),
        }
    }
    out
}

/// Folded words: runs of letters and digits.
pub fn words(text: &str) -> Vec<String> {
    fold(truncate(text, MAX_TEXT_BYTES))
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A keyword ready to match: folded words, the last one possibly a prefix (`document*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keyword {
    words: Vec<String>,
    prefix: bool,
}

impl Keyword {
    pub fn parse(raw: &str) -> Option<Self> {
        let raw = raw.trim();
        let prefix = raw.ends_with('*');
        let words = words(raw.trim_end_matches('*'));
        (!words.is_empty()).then_some(Self { words, prefix })
    }

    /// Whether the keyword appears in `haystack` (folded words) as whole words.
    pub fn matches(&self, haystack: &[String]) -> bool {
        let n = self.words.len();
        if n == 0 || haystack.len() < n {
            return false;
        }
        haystack.windows(n).any(|window| {
            window
                .iter()
                .zip(&self.words)
                .enumerate()
                .all(|(i, (word, want))| {
                    if self.prefix && i == n - 1 {
                        word.starts_with(want.as_str())
                    } else {
                        word == want
                    }
                })
        })
    }
}

/// The first keyword of `list` found in `haystack`, if any.
pub fn first_match<'a>(list: &'a [String], haystack: &[String]) -> Option<&'a str> {
    list.iter()
        .take(MAX_KEYWORDS)
        .find(|raw| Keyword::parse(raw).is_some_and(|k| k.matches(haystack)))
        .map(String::as_str)
}

/// Whether a message asks something: a question mark, or an opening interrogative.
pub fn is_question(text: &str) -> bool {
    if text.contains('?') {
        return true;
    }
    const OPENERS: [&str; 16] = [
        "comment", "pourquoi", "quand", "quel", "quelle", "quels", "quelles", "combien", "est-ce",
        "pouvez", "how", "why", "when", "what", "can", "could",
    ];
    text.lines().any(|line| {
        let folded = fold(line.trim());
        OPENERS.iter().any(|opener| {
            folded.starts_with(opener)
                && folded[opener.len()..].starts_with(|c: char| !c.is_alphanumeric())
        })
    })
}

fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(keyword: &str, text: &str) -> bool {
        Keyword::parse(keyword).unwrap().matches(&words(text))
    }

    #[test]
    fn keywords_match_whole_words_only() {
        assert!(!found("formation", "Merci pour l'information"));
        assert!(found("formation", "Ma formation commence lundi"));
        assert!(!found("test", "Voici mon attestation"));
        assert!(found("test", "C'est un test"));
    }

    #[test]
    fn matching_ignores_case_and_accents() {
        assert!(found("facture", "Je n'ai pas reçu ma FACTURE"));
        assert!(found("reçu", "document recu hier"));
        assert!(found("Évaluation", "une evaluation"));
    }

    #[test]
    fn phrases_and_prefixes_match() {
        assert!(found("pièce jointe", "voir la Piece-Jointe ci-dessous"));
        assert!(!found("pièce jointe", "la pièce est jointe"));
        assert!(found("document*", "mes documents sont prêts"));
    }

    #[test]
    fn quoted_and_forwarded_history_is_ignored() {
        let message = "Bonjour, voici ma question\n> ancienne facture\nLe 3 mai 2024, Support a écrit :\nfacture impayée";
        let own = strip_quoted(message);
        assert!(own.contains("question"));
        assert!(!found("facture", &own));
    }

    #[test]
    fn html_becomes_text() {
        let text = html_to_text(
            "<div>Bonjour&nbsp;<b>Zo&eacute;</b></div><p>Merci &amp; &agrave; bient&ocirc;t</p>",
        );
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines, ["Bonjour Zoé", "Merci & à bientôt"]);
    }

    #[test]
    fn questions_are_recognised() {
        assert!(is_question("Quand aura lieu l'examen"));
        assert!(is_question("ok ?"));
        assert!(!is_question("Commentaire: merci"));
        assert!(!is_question("Voici mes documents."));
    }
}
