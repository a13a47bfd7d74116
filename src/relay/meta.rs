//! Event metadata: the object argument the relay appends to a relayed application event
//! (`meta = ["id", "user", "ip", "time", "origin"]`, per namespace or per event), so that
//! a receiver knows who sent it, from where and when without trusting the sender to say.
//!
//! Owns which fields a policy asks for ([`Meta`]) and the encoding of the object; where
//! it is appended (relayed events only, never `$…` control replies or acks) is
//! [`events`](super::events)'s call.

use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::config::MetaField;

/// The fields asked for, as a small set (the order of the object is always
/// id, user, ip, time, origin).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Meta(u8);

const ORDER: [MetaField; 5] = [
    MetaField::Id,
    MetaField::User,
    MetaField::Ip,
    MetaField::Time,
    MetaField::Origin,
];

fn bit(field: MetaField) -> u8 {
    match field {
        MetaField::Id => 1,
        MetaField::User => 2,
        MetaField::Ip => 4,
        MetaField::Time => 8,
        MetaField::Origin => 16,
    }
}

/// What the object says about one event's sender.
#[derive(Debug, Clone, Copy)]
pub struct Sender<'a> {
    /// The socket id.
    pub id: &'a str,
    /// Its display name.
    pub user: Option<&'a str>,
    /// Its address (`trusted_proxies` applied by the engine).
    pub ip: IpAddr,
    /// Its handshake's `Origin`, when kept.
    pub origin: Option<&'a str>,
}

impl Meta {
    /// The set of `fields` (repeats count once).
    pub fn new(fields: &[MetaField]) -> Meta {
        Meta(fields.iter().fold(0, |set, f| set | bit(*f)))
    }

    /// Whether nothing is asked for (nothing is appended).
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether `field` is asked for.
    pub fn has(self, field: MetaField) -> bool {
        self.0 & bit(field) != 0
    }

    /// The object for an event `sender` sent, received at `received`.
    pub fn object(self, sender: &Sender<'_>, received: SystemTime) -> Box<RawValue> {
        let mut map = Map::new();
        for field in ORDER.into_iter().filter(|f| self.has(*f)) {
            let (key, value) = match field {
                MetaField::Id => ("id", Value::from(sender.id)),
                MetaField::User => ("user", sender.user.map_or(Value::Null, Value::from)),
                MetaField::Ip => ("ip", Value::from(sender.ip.to_string())),
                MetaField::Time => ("time", Value::from(epoch_ms(received))),
                MetaField::Origin => ("origin", sender.origin.map_or(Value::Null, Value::from)),
            };
            map.insert(key.to_owned(), value);
        }
        RawValue::from_string(Value::Object(map).to_string())
            .expect("serde_json output is valid JSON")
    }
}

/// Milliseconds since the Unix epoch (0 for a clock set before it).
fn epoch_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn sender() -> Sender<'static> {
        Sender {
            id: "abc",
            user: Some("Ann \"A\""),
            ip: "203.0.113.7".parse().expect("address"),
            origin: None,
        }
    }

    #[test]
    fn fields_in_a_fixed_order_whatever_the_config_order() {
        let at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let all = Meta::new(&[
            MetaField::Origin,
            MetaField::Time,
            MetaField::Ip,
            MetaField::User,
            MetaField::Id,
            MetaField::Id,
        ]);
        assert_eq!(
            all.object(&sender(), at).get(),
            r#"{"id":"abc","user":"Ann \"A\"","ip":"203.0.113.7","time":1700000000123,"origin":null}"#
        );
        let some = Meta::new(&[MetaField::Ip, MetaField::Id]);
        assert_eq!(
            some.object(&sender(), at).get(),
            r#"{"id":"abc","ip":"203.0.113.7"}"#
        );
    }

    #[test]
    fn empty_and_membership() {
        assert!(Meta::new(&[]).is_empty());
        assert!(Meta::default().is_empty());
        let m = Meta::new(&[MetaField::Origin]);
        assert!(!m.is_empty());
        assert!(m.has(MetaField::Origin));
        assert!(!m.has(MetaField::Id));
        let anon = Sender {
            user: None,
            origin: Some("https://a.example"),
            ..sender()
        };
        assert_eq!(
            Meta::new(&[MetaField::User, MetaField::Origin])
                .object(&anon, UNIX_EPOCH)
                .get(),
            r#"{"user":null,"origin":"https://a.example"}"#
        );
    }

    #[test]
    fn time_before_the_epoch_is_zero() {
        let before = UNIX_EPOCH - Duration::from_secs(1);
        assert_eq!(
            Meta::new(&[MetaField::Time])
                .object(&sender(), before)
                .get(),
            r#"{"time":0}"#
        );
    }
}
