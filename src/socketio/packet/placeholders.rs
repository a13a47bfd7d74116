//! The placeholder check of BINARY_EVENT and BINARY_ACK payloads: every
//! `{"_placeholder":true,"num":N}` must name an announced attachment.
//!
//! Owns one streaming walk of the payload JSON (a serde visitor, no value tree), which
//! fails where the reference `reconstructPacket` would throw, so that the relay never
//! forwards a packet that would make its receivers' decoders throw.
//!
//! Does not own: the attachments themselves (see [`crate::socketio::binary`]) or the
//! other payload rules (see [`super::decode`]). The walk recurses, and serde_json caps
//! it at 128 levels of nesting: a binary payload nested deeper is refused, never a stack
//! overflow.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// Check a binary payload (valid JSON) against `attachments` announced attachments.
pub(super) fn check(json: &str, attachments: usize) -> Result<(), serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(json);
    Placeholders { attachments }.deserialize(&mut de)
}

/// Walks a binary payload and fails on a placeholder that names no announced attachment,
/// mirroring what the reference `reconstructPacket` would throw on, without building a
/// value tree.
#[derive(Clone, Copy)]
struct Placeholders {
    attachments: usize,
}

impl<'de> DeserializeSeed<'de> for Placeholders {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Placeholders {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(self)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        // Later duplicates win, as in JSON.parse.
        let mut is_placeholder = false;
        let mut num = None;
        while let Some(key) = map.next_key_seed(KeySeed)? {
            match key {
                Key::Placeholder => {
                    is_placeholder = map.next_value_seed(Typed(self))? == Some(Scalar::True)
                }
                Key::Num => {
                    num = match map.next_value_seed(Typed(self))? {
                        Some(Scalar::Index(n)) => Some(n),
                        _ => None,
                    }
                }
                Key::Other => map.next_value_seed(self)?,
            }
        }
        if !is_placeholder {
            return Ok(());
        }
        match num {
            Some(n) if n < self.attachments as u64 => Ok(()),
            Some(n) => Err(de::Error::custom(format_args!(
                "placeholder {n} beyond {} attachments",
                self.attachments
            ))),
            None => Err(de::Error::custom("placeholder without an integer num")),
        }
    }
}

/// The object keys the placeholder check cares about.
enum Key {
    Placeholder,
    Num,
    Other,
}

struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Key;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Key, D::Error> {
        de.deserialize_str(self)
    }
}

impl Visitor<'_> for KeySeed {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E>(self, key: &str) -> Result<Key, E> {
        Ok(match key {
            "_placeholder" => Key::Placeholder,
            "num" => Key::Num,
            _ => Key::Other,
        })
    }
}

/// The two scalars that make a placeholder: `true` and a non-negative integer index.
#[derive(PartialEq)]
enum Scalar {
    True,
    Index(u64),
}

/// A value under `_placeholder` or `num`: reports whether it is one of [`Scalar`], and
/// walks it like any other value when it is a container.
struct Typed(Placeholders);

impl<'de> DeserializeSeed<'de> for Typed {
    type Value = Option<Scalar>;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Option<Scalar>, D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Typed {
    type Value = Option<Scalar>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Option<Scalar>, E> {
        Ok(v.then_some(Scalar::True))
    }

    fn visit_i64<E>(self, _: i64) -> Result<Option<Scalar>, E> {
        Ok(None)
    }

    fn visit_u64<E>(self, v: u64) -> Result<Option<Scalar>, E> {
        Ok(Some(Scalar::Index(v)))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Option<Scalar>, E> {
        Ok(None)
    }

    fn visit_str<E>(self, _: &str) -> Result<Option<Scalar>, E> {
        Ok(None)
    }

    fn visit_unit<E>(self) -> Result<Option<Scalar>, E> {
        Ok(None)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Option<Scalar>, A::Error> {
        self.0.visit_seq(seq).map(|()| None)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Option<Scalar>, A::Error> {
        self.0.visit_map(map).map(|()| None)
    }
}
