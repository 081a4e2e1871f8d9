//! The top-level members of a JSON object, read from text already known to be valid JSON.
//!
//! Intake reads a handful of small fields from payloads that are mostly one long message. The
//! text was validated when the delivery was parsed, so skipping that message a second time needs
//! no validation, only a search for its closing quote: and skipping it is most of what reading
//! the fields costs.

use memchr::memchr2;

/// Calls `visit(key, value)` for each member of the object `json`, in order, `value` being the
/// member's JSON text. `None` when `json` is not an object, or when a key holds an escape
/// sequence (the caller then reads the text the general way, which decodes it).
///
/// `json` must be valid JSON: other text gives unspecified members or `None`, never a panic.
pub(super) fn for_each_member<'a>(
    json: &'a str,
    mut visit: impl FnMut(&'a str, &'a str),
) -> Option<()> {
    let bytes = json.as_bytes();
    let mut at = skip_space(bytes, 0);
    if bytes.get(at) != Some(&b'{') {
        return None;
    }
    at += 1;
    loop {
        at = skip_space(bytes, at);
        match bytes.get(at)? {
            b'}' => return Some(()),
            b',' => {
                at += 1;
                continue;
            }
            b'"' => {}
            _ => return None,
        }
        let (key_end, escaped) = string_end(bytes, at)?;
        if escaped {
            return None;
        }
        let key = json.get(at + 1..key_end - 1)?;
        at = skip_space(bytes, key_end);
        if bytes.get(at) != Some(&b':') {
            return None;
        }
        let start = skip_space(bytes, at + 1);
        let end = value_end(bytes, start)?;
        visit(key, json.get(start..end)?);
        at = end;
    }
}

fn skip_space(bytes: &[u8], mut at: usize) -> usize {
    while bytes.get(at).is_some_and(u8::is_ascii_whitespace) {
        at += 1;
    }
    at
}

/// The index just past the string that opens at `open` (its opening quote), and whether the
/// string holds an escape sequence.
fn string_end(bytes: &[u8], open: usize) -> Option<(usize, bool)> {
    let mut at = open + 1;
    let mut escaped = false;
    loop {
        let found = at + memchr2(b'"', b'\\', bytes.get(at..)?)?;
        if bytes[found] == b'"' {
            return Some((found + 1, escaped));
        }
        // An escape: the next byte is escaped, whatever it is (`\"` included).
        escaped = true;
        at = found + 2;
    }
}

/// The index just past the value that starts at `start`.
fn value_end(bytes: &[u8], start: usize) -> Option<usize> {
    match bytes.get(start)? {
        b'"' => string_end(bytes, start).map(|(end, _)| end),
        b'{' | b'[' => {
            let mut depth = 0_usize;
            let mut at = start;
            loop {
                match bytes.get(at)? {
                    b'"' => {
                        at = string_end(bytes, at)?.0;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(at + 1);
                        }
                    }
                    _ => {}
                }
                at += 1;
            }
        }
        // A number, `true`, `false` or `null`: up to the next separator.
        _ => {
            let rest = &bytes[start..];
            let len = rest
                .iter()
                .position(|b| matches!(b, b',' | b'}' | b']') || b.is_ascii_whitespace())
                .unwrap_or(rest.len());
            Some(start + len)
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::Value;

    use super::*;

    fn members(json: &str) -> Option<Vec<(&str, &str)>> {
        let mut found = Vec::new();
        for_each_member(json, |key, value| found.push((key, value)))?;
        Some(found)
    }

    #[test]
    fn members_are_read_with_their_text() {
        let json = r#" { "id" : 12 , "s":"a \"quoted\" {brace} [and] \\","o":{"a":[1,{"b":"}"}]},
            "t":true,"n":null,"f":-1.5e3,"e":"" } "#;
        assert_eq!(
            members(json).unwrap(),
            [
                ("id", "12"),
                ("s", r#""a \"quoted\" {brace} [and] \\""#),
                ("o", r#"{"a":[1,{"b":"}"}]}"#),
                ("t", "true"),
                ("n", "null"),
                ("f", "-1.5e3"),
                ("e", r#""""#),
            ]
        );
    }

    #[test]
    fn an_empty_object_has_no_members() {
        assert_eq!(members("{}").unwrap(), []);
        assert_eq!(members(" {\n} ").unwrap(), []);
    }

    #[test]
    fn what_is_not_an_object_or_has_an_escaped_key_is_left_to_the_general_reader() {
        for json in [
            "null",
            "[1]",
            r#""text""#,
            "5",
            r#"{"\u0069d":1}"#,
            r#"{"a\"b":1}"#,
        ] {
            assert_eq!(members(json), None, "{json}");
        }
    }

    #[test]
    fn text_that_is_not_json_never_panics() {
        for json in [
            "{",
            r#"{"a"#,
            r#"{"a":"#,
            r#"{"a":"b"#,
            r#"{"a":[}"#,
            r#"{"a":"\"#,
            r#"{"a" 1}"#,
            "{]}",
            r#"{"a":1 "b":2}"#,
            "{\"é\":\"é",
            "{\"a\":}}}}",
        ] {
            let _ = members(json);
        }
    }

    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            (-1e20..1e20f64).prop_map(Value::from),
            r#"[\\"{}\[\],:a é\n]{0,10}"#.prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                proptest::collection::btree_map("[a-z\"{]{0,3}", inner, 0..4)
                    .prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Each member read is the tree's member: same key, same value, in order.
        #[test]
        fn members_are_the_trees_members(
            object in proptest::collection::btree_map("[a-zA-Z]{0,6}", any_json(), 0..6)
        ) {
            let object = Value::Object(object.into_iter().collect());
            for json in [object.to_string(), serde_json::to_string_pretty(&object).unwrap()] {
                let read: Vec<(String, Value)> = members(&json)
                    .unwrap()
                    .into_iter()
                    .map(|(key, value)| (key.to_owned(), serde_json::from_str(value).unwrap()))
                    .collect();
                // The tree read from the same text, so both sides round floats alike.
                let Ok(Value::Object(tree)) = serde_json::from_str(&json) else {
                    panic!("not an object: {json}");
                };
                let tree: Vec<(String, Value)> = tree.into_iter().collect();
                prop_assert_eq!(read, tree);
            }
        }
    }
}
