//! A namespace's policy, compiled from its config once per (re)load: the join pattern is
//! a compiled regex, per-event rules are resolved on look-up.

use std::sync::Arc;

use regex::Regex;

use crate::config::{AckReply, JoinPolicy, NamespaceConfig, Route};

/// Why a request was refused; the text goes to the client in `error`.
pub type Refusal = &'static str;

/// A namespace policy ready for the hot path.
#[derive(Debug)]
pub struct Policy {
    /// The config it came from.
    pub config: NamespaceConfig,
    /// `join = { pattern = … }`, anchored to the whole room name.
    join_pattern: Option<Regex>,
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
}

impl Policy {
    /// Compile a namespace config. Fails only on a pattern that validation should have
    /// caught already.
    pub fn compile(config: &NamespaceConfig) -> Result<Arc<Policy>, regex::Error> {
        let join_pattern = match &config.join {
            JoinPolicy::Pattern(p) => Some(Regex::new(&format!("^(?:{p})$"))?),
            _ => None,
        };
        Ok(Arc::new(Policy {
            config: config.clone(),
            join_pattern,
        }))
    }

    /// Whether a client may put itself in `room` (name checks included).
    pub fn may_join(&self, room: &str) -> Result<(), Refusal> {
        self.check_room_name(room)?;
        match &self.config.join {
            JoinPolicy::None => Err("joining rooms is not allowed in this namespace"),
            JoinPolicy::Any => Ok(()),
            JoinPolicy::Pattern(_) => match &self.join_pattern {
                Some(re) if re.is_match(room) => Ok(()),
                _ => Err("room not allowed"),
            },
        }
    }

    /// Room names: non-empty, bounded, not reserved (`$…`).
    pub fn check_room_name(&self, room: &str) -> Result<(), Refusal> {
        if room.is_empty() {
            Err("room name is empty")
        } else if room.len() > self.config.limits.max_room_name {
            Err("room name too long")
        } else if room.starts_with('$') {
            Err("room names starting with $ are reserved")
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
            },
            None => Resolved {
                route: &self.config.route,
                echo: self.config.echo,
                name,
                ack: AckReply::Status,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EventRule;

    #[test]
    fn pattern_matches_whole_name() {
        let cfg = NamespaceConfig {
            join: JoinPolicy::Pattern("room-[a-z]+".into()),
            ..NamespaceConfig::default()
        };
        let p = Policy::compile(&cfg).expect("valid pattern");
        assert!(p.may_join("room-abc").is_ok());
        assert!(p.may_join("xroom-abc").is_err());
        assert!(p.may_join("room-abc1").is_err());
        assert!(p.may_join("$room").is_err());
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
}
