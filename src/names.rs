//! One way to compare names deskhook does not choose: the departments of `spec.departments`,
//! of rule conditions and targets and of reply senders, and the names Zoho returns. A name
//! typed `PÉDAGOGIE` in the resource is the department Zoho calls `Pédagogie`, wherever the
//! two meet; two ways of comparing would let one place act on a ticket another ignores.
//!
//! The same folding makes customer text comparable with rule keywords (`workflow::text`).

use unicode_normalization::char::decompose_canonical;

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

/// The form a name is compared in: folded, without surrounding spaces.
pub fn name_key(name: &str) -> String {
    fold(name.trim())
}

/// Whether two names denote the same thing.
pub fn same_name(a: &str, b: &str) -> bool {
    name_key(a) == name_key(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_compare_without_case_accents_or_surrounding_spaces() {
        assert!(same_name("PÉDAGOGIE", "Pédagogie"));
        assert!(same_name(" Pedagogie ", "PÉDAGOGIE"));
        assert!(same_name("Refus CMA", "refus cma"));
        assert!(!same_name("Pédagogie", "Pédagogies"));
        assert_eq!(name_key(" Œuvre "), "oeuvre");
    }
}
