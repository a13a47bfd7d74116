//! A namespace's policy, compiled from its config once per (re)load: the join pattern is
//! a compiled regex, `auth` a [`Gate`] with its keys read, per-event rules are resolved
//! on look-up.

use std::sync::Arc;

use regex::Regex;

use serde_json::value::RawValue;

use super::auth::{Gate, Grants};
use super::meta::Meta;
use crate::config::auth::KeyError;
use crate::config::{AckReply, JoinPolicy, Listing, MetaField, NamespaceConfig, Route};

/// Why a namespace config did not compile (validation catches both first; a key file
/// can still change between validation and compilation).
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// The join pattern.
    #[error("join.pattern: {0}")]
    Pattern(#[from] regex::Error),
    /// A key of `auth.jwt`.
    #[error("auth.jwt.{}: {}", .0.key, .0.reason)]
    Key(KeyError),
}

/// Why a client's request was refused: [`Refusal::message`] goes to the client in
/// `error`, [`Refusal::label`] is the `reason` of `iorelay_events_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Over `events_per_second`/`burst`.
    RateLimited,
    /// The client's address is over `server.events_per_ip_per_second`/`event_burst_per_ip`.
    AddressRateLimited,
    /// Over `max_event_size`.
    TooLarge,
    /// More binary attachments than `max_attachments`.
    TooManyAttachments,
    /// Arguments nested deeper than `max_depth`.
    TooDeep,
    /// The route is `none`.
    NotAllowed,
    /// Route `rooms` but the socket joined none.
    NoRoom,
    /// The join policy is `none`.
    JoinDisabled,
    /// The join pattern does not match.
    RoomNotAllowed,
    /// Over `max_rooms`.
    TooManyRooms,
    /// The room argument is missing.
    RoomMissing,
    /// The room argument is not a string.
    RoomNotString,
    /// The room name is empty.
    RoomEmpty,
    /// The room name is over `max_room_name`.
    RoomTooLong,
    /// The room name starts with `$`.
    RoomReserved,
    /// The room name is a connected socket's id (events to that socket, from a Node
    /// server or an emitter of the cluster, must not reach a room's members).
    RoomIsSocket,
    /// The room name holds control characters (terminal escapes, newlines).
    RoomControl,
    /// A `$…` event the relay does not know.
    UnknownControl,
    /// `$history` (or `$join`'s `history`) in a namespace that keeps none.
    NoHistory,
    /// `$history` of a room the socket is not in.
    NotInRoom,
    /// A `$history` argument (or `$join`'s `history`) that does not parse.
    BadHistoryAsk,
    /// `$members` of a room the socket is not in, under `members = "joined"`.
    NotAMember,
    /// `$members` or `$rooms` under a listing policy of `"none"`.
    ListingDisabled,
}

impl Refusal {
    /// The `error` text sent to the client.
    pub fn message(self) -> &'static str {
        match self {
            Refusal::RateLimited | Refusal::AddressRateLimited => "rate limit exceeded",
            Refusal::TooLarge => "event too large",
            Refusal::TooManyAttachments => "too many binary attachments",
            Refusal::TooDeep => "event nested too deeply",
            Refusal::NotAllowed => "clients may not emit this event",
            Refusal::NoRoom => "join a room first",
            Refusal::JoinDisabled => "joining rooms is not allowed in this namespace",
            Refusal::RoomNotAllowed => "room not allowed",
            Refusal::TooManyRooms => "too many rooms",
            Refusal::RoomMissing => "room name missing",
            Refusal::RoomNotString => "room name must be a string",
            Refusal::RoomEmpty => "room name is empty",
            Refusal::RoomTooLong => "room name too long",
            Refusal::RoomReserved => "room names starting with $ are reserved",
            Refusal::RoomIsSocket => "a room may not be named after a connected socket",
            Refusal::RoomControl => "room names may not hold control characters",
            Refusal::UnknownControl => "unknown control event",
            Refusal::NoHistory => "this namespace keeps no history",
            Refusal::NotInRoom => "join the room first",
            Refusal::BadHistoryAsk => "bad history request",
            Refusal::NotAMember => "only members of a room may list its members",
            Refusal::ListingDisabled => "listing is not allowed in this namespace",
        }
    }

    /// The metric label: a small fixed set.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::RateLimited => "rate_limited",
            Refusal::AddressRateLimited => "ip_rate_limited",
            Refusal::TooLarge | Refusal::TooManyAttachments => "too_large",
            Refusal::TooDeep => "too_deep",
            Refusal::NotAllowed => "not_allowed",
            Refusal::NoRoom => "no_room",
            Refusal::JoinDisabled | Refusal::RoomNotAllowed => "room_forbidden",
            Refusal::TooManyRooms => "too_many_rooms",
            Refusal::RoomMissing
            | Refusal::RoomNotString
            | Refusal::RoomEmpty
            | Refusal::RoomTooLong
            | Refusal::RoomReserved
            | Refusal::RoomIsSocket
            | Refusal::RoomControl => "bad_room_name",
            Refusal::UnknownControl => "unknown_control",
            Refusal::NoHistory => "no_history",
            Refusal::NotInRoom => "not_in_room",
            Refusal::BadHistoryAsk => "bad_request",
            Refusal::NotAMember | Refusal::ListingDisabled => "listing_forbidden",
        }
    }
}

/// A namespace policy ready for the hot path.
#[derive(Debug)]
pub struct Policy {
    /// The config it came from.
    pub config: NamespaceConfig,
    /// `join = { pattern = … }`, anchored to the whole room name.
    join_pattern: Option<Regex>,
    /// `auth`: who may connect.
    pub gate: Gate,
    /// `meta`: what relayed events carry about their sender by default.
    meta: Meta,
    /// `welcome`'s arguments, encoded once.
    pub welcome_args: Vec<Box<RawValue>>,
}

/// How one application event is handled, after per-event rules.
#[derive(Debug, Clone, Copy)]
pub struct Resolved<'a> {
    /// Where it goes.
    pub route: &'a Route,
    /// Whether the sender gets its own copy.
    pub echo: bool,
    /// The name it is delivered under.
    pub name: &'a str,
    /// What the ack carries.
    pub ack: AckReply,
    /// The metadata appended to the relayed event.
    pub meta: Meta,
}

impl Policy {
    /// Compile a namespace config. Fails only on a pattern that validation should have
    /// caught already.
    pub fn compile(config: &NamespaceConfig) -> Result<Arc<Policy>, CompileError> {
        let join_pattern = match &config.join {
            JoinPolicy::Pattern(p) => Some(Regex::new(&format!("^(?:{p})$"))?),
            _ => None,
        };
        let gate = Gate::compile(&config.auth).map_err(CompileError::Key)?;
        let welcome_args = config.welcome.as_ref().map_or_else(Vec::new, |w| {
            w.args
                .iter()
                .map(|v| {
                    RawValue::from_string(v.to_string()).expect("serde_json output is valid JSON")
                })
                .collect()
        });
        Ok(Arc::new(Policy {
            config: config.clone(),
            join_pattern,
            gate,
            meta: Meta::new(&config.meta),
            welcome_args,
        }))
    }

    /// Whether some event of this namespace carries the sender's `origin` (so that its
    /// sockets must keep their handshake's `Origin`).
    pub fn wants_origin(&self) -> bool {
        self.meta.has(MetaField::Origin)
            || self.config.events.values().any(|rule| {
                rule.meta
                    .as_ref()
                    .is_some_and(|m| m.contains(&MetaField::Origin))
            })
    }

    /// Whether a client whose token granted `grants` may put itself in `room` (name
    /// checks included).
    pub fn may_join(&self, room: &str, grants: &Grants) -> Result<(), Refusal> {
        self.check_room_name(room)?;
        match &self.config.join {
            JoinPolicy::None => Err(Refusal::JoinDisabled),
            JoinPolicy::Any => Ok(()),
            JoinPolicy::Claims if grants.allows(room) => Ok(()),
            JoinPolicy::Claims => Err(Refusal::RoomNotAllowed),
            JoinPolicy::Pattern(_) => match &self.join_pattern {
                Some(re) if re.is_match(room) => Ok(()),
                _ => Err(Refusal::RoomNotAllowed),
            },
        }
    }

    /// Whether `$members` of `room` may be answered for a socket (`member`: it is in the
    /// room) under the namespace's `members` policy; room names are checked either way.
    pub fn may_list_members(
        &self,
        room: &str,
        member: bool,
        grants: &Grants,
    ) -> Result<(), Refusal> {
        self.check_room_name(room)?;
        match self.config.members {
            Listing::None => Err(Refusal::ListingDisabled),
            _ if member => Ok(()),
            Listing::Joined => Err(Refusal::NotAMember),
            // A room the client could enter by itself holds nothing it could not see by
            // joining; any other room stays private.
            Listing::All => self.may_join(room, grants),
        }
    }

    /// Room names: non-empty, bounded, not reserved (`$…`).
    pub fn check_room_name(&self, room: &str) -> Result<(), Refusal> {
        if room.is_empty() {
            Err(Refusal::RoomEmpty)
        } else if room.len() > self.config.limits.max_room_name {
            Err(Refusal::RoomTooLong)
        } else if room.starts_with('$') {
            Err(Refusal::RoomReserved)
        } else if room.chars().any(char::is_control) {
            Err(Refusal::RoomControl)
        } else {
            Ok(())
        }
    }

    /// The effective handling of an event named `name`.
    pub fn resolve<'a>(&'a self, name: &'a str) -> Resolved<'a> {
        match self.config.events.get(name) {
            Some(rule) => Resolved {
                route: rule.route.as_ref().unwrap_or(&self.config.route),
                echo: rule.echo.unwrap_or(self.config.echo),
                name: rule.rename.as_deref().unwrap_or(name),
                ack: rule.ack,
                meta: rule.meta.as_deref().map_or(self.meta, Meta::new),
            },
            None => Resolved {
                route: &self.config.route,
                echo: self.config.echo,
                name,
                ack: AckReply::Status,
                meta: self.meta,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EventRule;

    #[test]
    fn room_names_with_control_characters_are_refused() {
        let p = Policy::compile(&NamespaceConfig::default()).expect("defaults compile");
        for bad in ["a\u{1b}[31mred", "line\nbreak", "bell\u{7}", "\u{9b}csi"] {
            assert_eq!(p.check_room_name(bad), Err(Refusal::RoomControl), "{bad:?}");
        }
        assert_eq!(p.check_room_name("café ☕ room"), Ok(()));
        assert_eq!(Refusal::RoomControl.label(), "bad_room_name");
    }

    #[test]
    fn members_listing_follows_the_policy() {
        let none = Grants::default();
        let policy = |members, join| {
            Policy::compile(&NamespaceConfig {
                members,
                join,
                ..NamespaceConfig::default()
            })
            .expect("valid")
        };
        let joined = policy(Listing::Joined, JoinPolicy::Any);
        assert_eq!(joined.may_list_members("r", true, &none), Ok(()));
        assert_eq!(
            joined.may_list_members("r", false, &none),
            Err(Refusal::NotAMember)
        );
        let all = policy(Listing::All, JoinPolicy::Pattern("[a-z]+".into()));
        assert_eq!(all.may_list_members("r", false, &none), Ok(()));
        assert_eq!(
            all.may_list_members("R1", false, &none),
            Err(Refusal::RoomNotAllowed)
        );
        let off = policy(Listing::None, JoinPolicy::Any);
        assert_eq!(
            off.may_list_members("r", true, &none),
            Err(Refusal::ListingDisabled)
        );
        assert_eq!(
            off.may_list_members("$r", true, &none),
            Err(Refusal::RoomReserved)
        );
        assert_eq!(Refusal::NotAMember.label(), "listing_forbidden");
    }

    #[test]
    fn pattern_matches_whole_name() {
        let cfg = NamespaceConfig {
            join: JoinPolicy::Pattern("room-[a-z]+".into()),
            ..NamespaceConfig::default()
        };
        let p = Policy::compile(&cfg).expect("valid pattern");
        let none = Grants::default();
        assert!(p.may_join("room-abc", &none).is_ok());
        assert!(p.may_join("xroom-abc", &none).is_err());
        assert!(p.may_join("room-abc1", &none).is_err());
        assert!(p.may_join("$room", &none).is_err());
    }

    #[test]
    fn rules_override_defaults() {
        let mut cfg = NamespaceConfig::default();
        cfg.events.insert(
            "message".into(),
            EventRule {
                route: Some(Route::Sender),
                rename: Some("message-back".into()),
                ..EventRule::default()
            },
        );
        let p = Policy::compile(&cfg).expect("valid");
        let r = p.resolve("message");
        assert_eq!(r.route, &Route::Sender);
        assert_eq!(r.name, "message-back");
        let d = p.resolve("other");
        assert_eq!(d.route, &Route::Rooms);
        assert_eq!(d.name, "other");
    }

    #[test]
    fn per_event_meta_overrides_the_namespace() {
        let mut cfg = NamespaceConfig {
            meta: vec![MetaField::Id, MetaField::Ip],
            ..NamespaceConfig::default()
        };
        cfg.events.insert(
            "view".into(),
            EventRule {
                meta: Some(vec![MetaField::Time, MetaField::Origin]),
                ..EventRule::default()
            },
        );
        cfg.events.insert(
            "quiet".into(),
            EventRule {
                meta: Some(Vec::new()),
                ..EventRule::default()
            },
        );
        cfg.events.insert("plain".into(), EventRule::default());
        let p = Policy::compile(&cfg).expect("valid");
        assert_eq!(
            p.resolve("view").meta,
            Meta::new(&[MetaField::Time, MetaField::Origin])
        );
        assert!(p.resolve("quiet").meta.is_empty());
        assert_eq!(
            p.resolve("plain").meta,
            Meta::new(&[MetaField::Id, MetaField::Ip])
        );
        assert_eq!(p.resolve("other").meta, p.resolve("plain").meta);
        assert!(p.wants_origin(), "an event asks for origin");
        cfg.events.remove("view");
        assert!(!Policy::compile(&cfg).expect("valid").wants_origin());
    }
}
