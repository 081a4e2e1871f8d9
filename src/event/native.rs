//! Zoho's native delivery (a JSON array of events) read without building a tree.
//!
//! Each event's `payload` is kept as raw text and only the fields intake needs are parsed.
//! Anything this reader does not expect (an element that is not an object, a repeated key)
//! makes it give up, and the body is read by the general, tree-based reader instead, so both
//! readers always agree.

use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::value::MapAccessDeserializer;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

use super::payload::{Payload, small_value};
use super::{Delivery, epoch_millis, file_native, id_string, normalise_event_type};

/// One element of the array, its fields borrowed from the body.
#[derive(Deserialize)]
struct RawEvent<'a> {
    #[serde(borrow, default, rename = "eventType")]
    event_type: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "eventTime")]
    event_time: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "orgId")]
    org_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    payload: Option<&'a RawValue>,
}

/// The delivery, or `None` when the body is not a plain array of event objects.
pub(super) fn parse(body: &[u8]) -> Option<Delivery> {
    let events: Vec<Object<RawEvent<'_>>> = serde_json::from_slice(body).ok()?;
    let mut delivery = Delivery::default();
    for Object(event) in events {
        collect(event, &mut delivery);
    }
    Some(delivery)
}

/// A `T` read only from a JSON object: a derived reader would also take an array's items as
/// the fields in order, which the tree reader never does.
pub(super) struct Object<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
            type Value = T;

            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("an object")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map))
            }
        }

        deserializer
            .deserialize_map(ObjectVisitor(PhantomData))
            .map(Object)
    }
}

fn collect(event: RawEvent<'_>, delivery: &mut Delivery) {
    let event_type = match small_value(event.event_type) {
        Some(Value::String(name)) => normalise_event_type(&name),
        _ => "unknown".to_owned(),
    };
    let payload = event.payload.map_or_else(Payload::null, Payload::from_raw);
    let hints = payload.hints();
    file_native(
        delivery,
        event_type,
        payload,
        hints,
        small_value(event.org_id).as_ref().and_then(id_string),
        small_value(event.event_time)
            .as_ref()
            .and_then(epoch_millis),
    );
}
