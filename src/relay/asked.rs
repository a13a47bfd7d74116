//! What the relay keeps of the acks it asks of clients ([`asks`](super::asks) asks them):
//! the acks a socket owes ([`Asked`]), and a client's answer as it goes to the cluster
//! ([`Acked`], through the [`AckSink`]).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Most acks one socket may owe at once.
pub const MAX_ASKED: usize = 64;

/// How long an ack is waited for (the asking node gives up after its own timeout, and
/// ignores late answers).
pub const WINDOW: Duration = Duration::from_secs(60);

/// A client's answer to a broadcast with acks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Acked {
    /// The asking node's request id.
    pub request: String,
    /// The namespace.
    pub namespace: String,
    /// The ack's arguments, a JSON array with binaries as numbered placeholders.
    pub args: String,
    /// The binaries (base64).
    pub binary: Vec<String>,
}

/// Where the clients' answers go (the cluster's gateway, directly or through the master).
pub type AckSink = Box<dyn Fn(Acked) + Send + Sync>;

/// The acks a socket owes.
#[derive(Debug, Default)]
pub struct Asked(VecDeque<(u64, Arc<str>, Instant)>);

impl Asked {
    /// Owe `id` for `request`, unless it owes [`MAX_ASKED`] already (what is past its
    /// window is forgotten first).
    pub(super) fn ask(&mut self, id: u64, request: &Arc<str>, now: Instant) -> bool {
        while self
            .0
            .front()
            .is_some_and(|(_, _, at)| now.duration_since(*at) > WINDOW)
        {
            self.0.pop_front();
        }
        if self.0.len() >= MAX_ASKED {
            return false;
        }
        self.0.push_back((id, request.clone(), now));
        true
    }

    /// The request `id` answers, if it is owed and in its window (no longer owed after).
    pub(super) fn answer(&mut self, id: u64, now: Instant) -> Option<Arc<str>> {
        let at = self.0.iter().position(|(i, _, _)| *i == id)?;
        let (_, request, asked) = self.0.remove(at)?;
        (now.duration_since(asked) <= WINDOW).then_some(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_owes_a_bounded_number_of_acks_each_for_its_window() {
        let mut asked = Asked::default();
        let request: Arc<str> = Arc::from("r1");
        let t0 = Instant::now();
        for id in 0..MAX_ASKED as u64 {
            assert!(asked.ask(id, &request, t0));
        }
        assert!(!asked.ask(999, &request, t0), "over the bound");
        assert_eq!(asked.answer(3, t0).as_deref(), Some("r1"));
        assert_eq!(asked.answer(3, t0), None, "answered once");
        assert_eq!(asked.answer(12345, t0), None, "never asked");
        let later = t0 + WINDOW + Duration::from_secs(1);
        assert_eq!(asked.answer(4, later), None, "past its window");
        assert!(
            asked.ask(1000, &request, later),
            "the expired ones are forgotten"
        );
        assert_eq!(asked.0.len(), 1);
    }
}
