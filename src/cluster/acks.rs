//! Other nodes' broadcasts with acks that this host's clients may still answer: the
//! asking node and namespace of each request id, for [`WINDOW`](crate::relay::asked::WINDOW),
//! at most [`MAX_WAITING`] of them (the oldest is forgotten first), so that each client's
//! answer ([`Acked`]) goes back to the node that asked.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use base64::Engine as _;
use bytes::Bytes;
use parking_lot::Mutex;
use rmpv::Value;
use serde_json::value::RawValue;

use super::format::{self, Bad};
use crate::relay::asked::{Acked, WINDOW};

/// Most requests waited on.
const MAX_WAITING: usize = 4096;

/// Who asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asker {
    /// The namespace.
    pub nsp: String,
    /// The asking node (none: it gave no uid; answered on the common channel).
    pub uid: Option<String>,
}

/// The requests waited on.
#[derive(Debug, Default)]
pub struct Waiting(Mutex<Table>);

/// Askers by request id, and the request ids by age.
type Table = (HashMap<String, Asker>, VecDeque<(String, Instant)>);

impl Waiting {
    /// Wait on `request` of `asker`.
    pub fn wait(&self, request: &str, asker: Asker) {
        let mut inner = self.0.lock();
        let (by_id, order) = &mut *inner;
        let now = Instant::now();
        while order
            .front()
            .is_some_and(|(_, at)| now.duration_since(*at) > WINDOW || by_id.len() >= MAX_WAITING)
        {
            if let Some((id, _)) = order.pop_front() {
                by_id.remove(&id);
            }
        }
        if by_id.insert(request.to_owned(), asker).is_none() {
            order.push_back((request.to_owned(), now));
        }
    }

    /// Who asked `request`, if it is waited on.
    pub fn asker(&self, request: &str) -> Option<Asker> {
        self.0.lock().0.get(request).cloned()
    }
}

/// The answer an asking node gets: the ack's first argument, binaries in place.
pub fn packet_of(acked: &Acked) -> Result<Value, Bad> {
    let attachments = acked
        .binary
        .iter()
        .map(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b)
                .map(Bytes::from)
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Bad::Undecodable(format!("base64: {e}")))?;
    let args: Vec<&RawValue> =
        serde_json::from_str(&acked.args).map_err(|e| Bad::Undecodable(e.to_string()))?;
    let first = args.first().map_or_else(Vec::new, |a| vec![*a]);
    let data = format::data_of("", &first, &attachments)?;
    Ok(match data {
        Value::Array(mut items) if items.len() > 1 => items.swap_remove(1),
        _ => Value::Nil,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_is_the_first_argument_with_its_binaries() {
        let acked = Acked {
            request: "r".into(),
            namespace: "/".into(),
            args: r#"[{"a":{"_placeholder":true,"num":0}},"ignored"]"#.into(),
            binary: vec![base64::engine::general_purpose::STANDARD.encode(b"\x01\x02")],
        };
        let packet = packet_of(&acked).unwrap();
        let Value::Map(entries) = packet else {
            panic!("{packet:?}")
        };
        assert_eq!(entries[0].1, Value::Binary(vec![1, 2]));
        let empty = Acked {
            args: "[]".into(),
            binary: vec![],
            ..acked
        };
        assert_eq!(packet_of(&empty).unwrap(), Value::Nil);
    }

    #[test]
    fn waiting_is_bounded() {
        let waiting = Waiting::default();
        for i in 0..MAX_WAITING + 10 {
            waiting.wait(
                &i.to_string(),
                Asker {
                    nsp: "/".into(),
                    uid: None,
                },
            );
        }
        assert!(waiting.asker("0").is_none(), "the oldest forgotten");
        assert!(waiting.asker(&(MAX_WAITING + 9).to_string()).is_some());
        assert!(waiting.0.lock().0.len() <= MAX_WAITING);
    }
}
