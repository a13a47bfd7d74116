//! Where the two Node adapters differ on the wire, in one place: how a broadcast goes
//! out, which channels a node listens on, where and how a request is answered, how many
//! nodes there are. The logic of answering is the gateway's, the same for both.
//!
//! | | `redis` (`@socket.io/redis-adapter`) | `redis-streams` |
//! |---|---|---|
//! | broadcast | PUBLISH `<key>#<nsp>#[<room>#]`, msgpack | XADD to the stream ([`message::Entry`]) |
//! | join, leave, disconnect | PUBLISH on `<key>-request#<nsp>#`, JSON | XADD |
//! | fetch, server-side emit, broadcast with acks | PUBLISH on `<key>-request#<nsp>#` | PUBLISH on `<key>#<nsp>#`, msgpack |
//! | answers | `<key>-response#<nsp>#<uid>#`, JSON | `<key>#<nsp>#<uid>#`, msgpack |
//! | nodes | NUMSUB `<key>-request#<nsp>#` | NUMSUB `<key>#<nsp>#` |

use rmpv::Value;
use serde_json::json;

use super::answer::Response;
use super::format::{self, Channels, Kind};
use super::message::{self, Entry, Type};
use super::meters::Meters;
use super::redis::{Error, Publisher, Subscriptions};
use super::streams::Writer;
use crate::config::ClusterConfig;
use crate::config::cluster::AdapterKind;

/// The format of a cluster, with what carries its broadcasts.
#[derive(Debug, Clone)]
pub enum Dialect {
    /// `@socket.io/redis-adapter` 8.x: everything by pub/sub.
    PubSub(Publisher),
    /// `@socket.io/redis-streams-adapter` 0.3.x: the stream for what must arrive.
    Streams(Writer),
}

impl Dialect {
    /// The dialect of `config`, writing through `client`; `publisher` is the pub/sub
    /// side's, if the caller has one already.
    pub fn start(
        config: &ClusterConfig,
        client: &redis::Client,
        publisher: Option<&Publisher>,
        meters: &Meters,
    ) -> Result<Dialect, Error> {
        Ok(match config.adapter {
            AdapterKind::RedisStreams => Dialect::Streams(Writer::start(
                client,
                config.stream_name.clone(),
                config.max_len,
                meters.clone(),
            )?),
            AdapterKind::Redis | AdapterKind::None => match publisher {
                Some(p) => Dialect::PubSub(p.clone()),
                None => Dialect::PubSub(Publisher::start(client, meters.clone())?),
            },
        })
    }

    /// Whether this is the streams adapter's.
    pub fn is_streams(&self) -> bool {
        matches!(self, Dialect::Streams(_))
    }

    /// Add what node `uid` listens on for namespace `c` to `subs`.
    pub fn listen(&self, subs: &mut Subscriptions, c: &Channels, uid: &str) {
        match self {
            Dialect::PubSub(_) => {
                subs.patterns.insert(c.pattern());
                subs.channels.insert(c.request.clone());
                subs.channels.insert(c.response.clone());
                subs.channels.insert(c.response_for(uid));
            }
            Dialect::Streams(_) => {
                subs.channels.insert(c.broadcast.clone());
                subs.channels.insert(private(c, uid));
            }
        }
    }

    /// The channel whose subscribers are the cluster's nodes.
    pub fn counted<'c>(&self, c: &'c Channels) -> &'c str {
        match self {
            Dialect::PubSub(_) => &c.request,
            Dialect::Streams(_) => &c.broadcast,
        }
    }

    /// Send a broadcast of node `uid`: the event `data` to `rooms` but `except`; the
    /// stream's entry carries the event's `stamp` on this host.
    pub fn broadcast(
        &self,
        uid: &str,
        nsp: &str,
        c: &Channels,
        data: &Value,
        (rooms, except): (&[&str], &[&str]),
        stamp: Option<crate::relay::history::EventId>,
    ) {
        match self {
            Dialect::PubSub(publisher) => {
                let payload = format::encode_broadcast(uid, nsp, data, rooms, except);
                publisher.send(c.broadcast_to(rooms), payload);
            }
            Dialect::Streams(writer) => {
                let mut entry = Entry::broadcast(uid, nsp, data, rooms, except);
                if let Some(stamp) = stamp {
                    entry.0.push((
                        super::sessions::STAMP_FIELD,
                        super::sessions::stamp_text(stamp),
                    ));
                }
                writer.send(entry);
            }
        }
    }

    /// Ask every node to disconnect the sockets of `rooms` (all with none); unanswered.
    pub fn disconnect(
        &self,
        publisher: &Publisher,
        uid: &str,
        nsp: &str,
        c: &Channels,
        rooms: &[String],
    ) {
        match self {
            Dialect::PubSub(_) => {
                let request = json!({
                    "uid": uid, "type": Kind::RemoteDisconnect.number(),
                    "opts": { "rooms": rooms, "except": [] }, "close": false,
                });
                publisher.send(c.request.clone(), request.to_string().into_bytes());
            }
            Dialect::Streams(writer) => {
                let data = json!({ "opts": message::opts(rooms), "close": false });
                writer.send(Entry::json(uid, nsp, Type::DisconnectSockets, &data));
            }
        }
    }

    /// Put the sockets of `rooms` in `room` (`leave`: take them out) on every node;
    /// unanswered. Only the streams dialect has this without an answer: `None` for the
    /// other.
    pub fn move_sockets(
        &self,
        uid: &str,
        nsp: &str,
        rooms: &[&str],
        room: &str,
        leave: bool,
    ) -> Option<()> {
        let Dialect::Streams(writer) = self else {
            return None;
        };
        let kind = if leave {
            Type::SocketsLeave
        } else {
            Type::SocketsJoin
        };
        let data = json!({ "opts": message::opts(rooms), "rooms": [room] });
        writer.send(Entry::json(uid, nsp, kind, &data));
        Some(())
    }

    /// Answer as node `uid` the request of node `asker` (none: everyone's channel).
    pub fn answer(
        &self,
        publisher: &Publisher,
        uid: &str,
        nsp: &str,
        c: &Channels,
        asker: Option<&str>,
        response: &Response<'_>,
    ) {
        match self {
            Dialect::PubSub(_) => {
                let channel = match asker {
                    Some(asker) => c.response_for(asker),
                    None => c.response.clone(),
                };
                publisher.send(channel, response.encode());
            }
            Dialect::Streams(_) => {
                let (Some(asker), Some(payload)) = (asker, message::answer(uid, nsp, response))
                else {
                    return;
                };
                publisher.send(private(c, asker), payload);
            }
        }
    }
}

impl Dialect {
    /// Hand node `asker` (none: everyone's channel) a client's answer `packet` to its
    /// broadcast with acks `request`, as node `uid`.
    pub fn ack(
        &self,
        publisher: &Publisher,
        (uid, nsp, c): (&str, &str, &Channels),
        asker: Option<&str>,
        request: &str,
        packet: &rmpv::Value,
    ) {
        #[derive(serde::Serialize)]
        struct Ack<'a> {
            #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
            kind: Option<u8>,
            #[serde(rename = "requestId")]
            request_id: &'a str,
            packet: &'a rmpv::Value,
        }
        match self {
            Dialect::PubSub(_) => {
                let ack = Ack {
                    kind: Some(format::Kind::BroadcastAck.number()),
                    request_id: request,
                    packet,
                };
                let channel = match asker {
                    Some(asker) => c.response_for(asker),
                    None => c.response.clone(),
                };
                let payload = rmp_serde::to_vec_named(&ack).expect("an ack always encodes");
                publisher.send(channel, payload);
            }
            Dialect::Streams(_) => {
                let Some(asker) = asker else { return };
                let ack = Ack {
                    kind: None,
                    request_id: request,
                    packet,
                };
                let payload = message::ephemeral(uid, nsp, Type::BroadcastAck, &ack);
                publisher.send(private(c, asker), payload);
            }
        }
    }
}

/// The answers meant for node `uid` only, in the streams dialect.
pub fn private(c: &Channels, uid: &str) -> String {
    format!("{}{uid}#", c.broadcast)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_dialect_listens_where_its_node_peers_write() {
        let c = Channels::of("socket.io", "/chat");
        assert_eq!(private(&c, "abc"), "socket.io#/chat#abc#");
        let meters = Meters::register(&prometheus::Registry::new());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let client = redis::Client::open("redis+unix:///nonexistent/redis.sock").unwrap();
            let config = ClusterConfig {
                adapter: AdapterKind::RedisStreams,
                ..ClusterConfig::default()
            };
            let streams = Dialect::start(&config, &client, None, &meters).unwrap();
            let mut subs = Subscriptions::default();
            streams.listen(&mut subs, &c, "abc");
            assert!(subs.patterns.is_empty());
            assert_eq!(
                subs.channels.into_iter().collect::<Vec<_>>(),
                ["socket.io#/chat#", "socket.io#/chat#abc#"]
            );
            assert_eq!(streams.counted(&c), "socket.io#/chat#");
            let pubsub = Dialect::start(&ClusterConfig::default(), &client, None, &meters).unwrap();
            assert_eq!(pubsub.counted(&c), "socket.io-request#/chat#");
            assert!(pubsub.move_sockets("u", "/", &["s"], "r", false).is_none());
        });
    }
}
