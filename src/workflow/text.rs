//! Customer text, made comparable: HTML to text, quoted history removed, case and accents
//! folded, split into words.
//!
//! Matching works on whole words, so "formation" never matches "information" and "test"
//! never matches "attestation" (the original system's substring defects). Every function is
//! linear in its input and input is capped, so hostile text costs bounded time and memory.

pub use crate::names::fold;

/// Longest text examined, in bytes; the rest of a message is ignored.
pub const MAX_TEXT_BYTES: usize = 64 * 1024;
/// Most keywords examined per condition list.
pub const MAX_KEYWORDS: usize = 256;

/// Plain text from a Zoho thread body: tags removed, block tags turned into line breaks,
/// common entities decoded. Runs of plain text are copied whole: only `<` and `&` stop it.
pub fn html_to_text(html: &str) -> String {
    let html = truncate(html, MAX_TEXT_BYTES);
    let mut out = String::with_capacity(html.len());
    let mut rest = html;
    while let Some(at) = memchr::memchr2(b'<', b'&', rest.as_bytes()) {
        out.push_str(&rest[..at]);
        let (special, after) = rest[at..].split_at(1);
        rest = if special == "<" {
            // An unclosed tag swallows the rest of the text.
            let Some(end) = after.find('>') else {
                return out;
            };
            // `<a <br>`: the last `<` opens the tag that `>` closes.
            let tag = after[..end].rsplit('<').next().unwrap_or_default();
            if is_block_tag(tag) {
                out.push('\n');
            }
            &after[end + 1..]
        } else {
            let name_len = after
                .bytes()
                .take(MAX_ENTITY_LEN)
                .take_while(|b| b.is_ascii_alphanumeric() || *b == b'#')
                .count();
            match after[name_len..].strip_prefix(';') {
                Some(remainder) => {
                    out.push_str(decode_entity(&after[..name_len]).unwrap_or(" "));
                    remainder
                }
                None => {
                    out.push('&');
                    after
                }
            }
        };
    }
    out.push_str(rest);
    out
}

/// Longest entity name looked for after `&` (`&#8217;`, `&eacute;`).
const MAX_ENTITY_LEN: usize = 9;

/// Tags that end a line of text.
fn is_block_tag(tag: &str) -> bool {
    let name = tag
        .trim_start_matches('/')
        .split_whitespace()
        .next()
        .unwrap_or("");
    ["br", "br/", "p", "div", "li", "tr", "blockquote"]
        .iter()
        .any(|block| name.eq_ignore_ascii_case(block))
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

/// Folded words (runs of letters and digits), all borrowed from one folded copy of the
/// text: a 4 KB message costs two allocations, not one per word.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Words {
    folded: String,
    spans: Vec<(usize, usize)>,
}

impl Words {
    pub fn new(text: &str) -> Self {
        let folded = fold(truncate(text, MAX_TEXT_BYTES));
        let mut spans = Vec::new();
        let mut start = None;
        for (at, c) in folded.char_indices() {
            match (c.is_alphanumeric(), start) {
                (true, None) => start = Some(at),
                (false, Some(from)) => {
                    spans.push((from, at));
                    start = None;
                }
                _ => {}
            }
        }
        if let Some(from) = start {
            spans.push((from, folded.len()));
        }
        Self { folded, spans }
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The words in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.spans.iter().map(|&(from, to)| &self.folded[from..to])
    }

    fn word(&self, index: usize) -> &str {
        let (from, to) = self.spans[index];
        &self.folded[from..to]
    }
}

/// A keyword ready to match: folded words, the last one possibly a prefix (`document*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keyword {
    words: Words,
    prefix: bool,
}

impl Keyword {
    pub fn parse(raw: &str) -> Option<Self> {
        let raw = raw.trim();
        let prefix = raw.ends_with('*');
        let words = Words::new(raw.trim_end_matches('*'));
        (!words.is_empty()).then_some(Self { words, prefix })
    }

    /// Whether the keyword appears in `haystack` as whole words.
    pub fn matches(&self, haystack: &Words) -> bool {
        let n = self.words.len();
        if n == 0 || haystack.len() < n {
            return false;
        }
        (0..=haystack.len() - n).any(|start| {
            self.words.iter().enumerate().all(|(i, want)| {
                let word = haystack.word(start + i);
                if self.prefix && i == n - 1 {
                    word.starts_with(want)
                } else {
                    word == want
                }
            })
        })
    }
}

/// The first keyword of `list` found in `haystack`, if any.
pub fn first_match<'a>(list: &'a [String], haystack: &Words) -> Option<&'a str> {
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
        Keyword::parse(keyword).unwrap().matches(&Words::new(text))
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
    fn html_edge_cases_keep_the_text_around_them() {
        assert_eq!(html_to_text("a & b &amp c"), "a & b &amp c");
        assert_eq!(html_to_text("x&<b>y</b>"), "x&y");
        assert_eq!(html_to_text("é&#39;è &unknown; ok"), "é'è   ok");
        assert_eq!(html_to_text("a <br class=\"x\">b<BR/>c"), "a \nb\nc");
        assert_eq!(html_to_text("a <a <br>b"), "a \nb");
        assert_eq!(html_to_text("avant <span never closed"), "avant ");
        assert_eq!(html_to_text("3 > 2"), "3 > 2");
    }

    #[test]
    fn words_are_runs_of_letters_and_digits() {
        let words = Words::new("  L'Œuvre, n°42 — été!");
        assert_eq!(
            words.iter().collect::<Vec<_>>(),
            ["l", "oeuvre", "n", "42", "ete"]
        );
        assert!(Words::new(" ,; ").is_empty());
    }

    #[test]
    fn questions_are_recognised() {
        assert!(is_question("Quand aura lieu l'examen"));
        assert!(is_question("ok ?"));
        assert!(!is_question("Commentaire: merci"));
        assert!(!is_question("Voici mes documents."));
    }
}
