//! Lenient readers for Zoho's JSON: ids and counts arrive as strings or as numbers, times as
//! ISO-8601 strings or epoch milliseconds, booleans now and then as strings.
//!
//! Ids are 16 to 19 digits. They are kept as exact strings: read as integers they fit `u64`,
//! but a float would silently lose the last digits, so floats are refused.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use serde_json::{Map, Value};

/// A string, or an integer written out in decimal.
struct Text(String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;

        impl Visitor<'_> for TextVisitor {
            type Value = Text;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an integer")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text, E> {
                Ok(Text(v.to_owned()))
            }

            fn visit_string<E: de::Error>(self, v: String) -> Result<Text, E> {
                Ok(Text(v))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }

            fn visit_u128<E: de::Error>(self, v: u128) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
        }

        deserializer.deserialize_any(TextVisitor)
    }
}

/// A required id.
pub(crate) fn id<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    Text::deserialize(deserializer).map(|t| t.0)
}

/// An optional id, count or time: absent and `null` are `None`.
pub(crate) fn opt_text<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    Option::<Text>::deserialize(deserializer).map(|t| t.map(|t| t.0))
}

/// An optional boolean that may arrive as `"true"` or `"false"`.
pub(crate) fn opt_bool<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<bool>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Flag {
        Bool(bool),
        Text(String),
    }
    Ok(match Option::<Flag>::deserialize(deserializer)? {
        Some(Flag::Bool(b)) => Some(b),
        Some(Flag::Text(t)) => t.parse().ok(),
        None => None,
    })
}

/// A JSON object, with `null` read as an empty one.
pub(crate) fn object<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Map<String, Value>, D::Error> {
    Ok(Option::<Map<String, Value>>::deserialize(deserializer)?.unwrap_or_default())
}

/// A JSON value as text: strings as they are, integers in decimal; anything else is `None`.
pub(crate) fn value_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) if n.is_u64() || n.is_i64() => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Deserialize)]
    struct Sample {
        #[serde(deserialize_with = "id")]
        id: String,
        #[serde(default, deserialize_with = "opt_text")]
        time: Option<String>,
        #[serde(default, deserialize_with = "opt_bool")]
        flag: Option<bool>,
        #[serde(default, deserialize_with = "object")]
        cf: Map<String, Value>,
    }

    #[test]
    fn numeric_ids_keep_every_digit() {
        let s: Sample = serde_json::from_str(r#"{"id": 1892000000042034567}"#).unwrap();
        assert_eq!(s.id, "1892000000042034567");
        let s: Sample = serde_json::from_str(r#"{"id": "1892000000042034567"}"#).unwrap();
        assert_eq!(s.id, "1892000000042034567");
        let from_value: Sample =
            serde_json::from_value(serde_json::json!({"id": 1892000000042034567_u64})).unwrap();
        assert_eq!(from_value.id, "1892000000042034567");
    }

    #[test]
    fn float_ids_are_refused() {
        assert!(serde_json::from_str::<Sample>(r#"{"id": 1.5e18}"#).is_err());
    }

    #[test]
    fn times_flags_and_maps_are_lenient() {
        let s: Sample =
            serde_json::from_str(r#"{"id":"1","time":1466504175000,"flag":"true","cf":null}"#)
                .unwrap();
        assert_eq!(s.time.as_deref(), Some("1466504175000"));
        assert_eq!(s.flag, Some(true));
        assert!(s.cf.is_empty());
        let s: Sample =
            serde_json::from_str(r#"{"id":"1","time":"2022-07-01T11:00:33.000Z","flag":null}"#)
                .unwrap();
        assert_eq!(s.time.as_deref(), Some("2022-07-01T11:00:33.000Z"));
        assert_eq!(s.flag, None);
    }
}
