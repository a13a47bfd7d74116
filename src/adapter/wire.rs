//! The wire format between relay processes on one host (workers), version 4.
//!
//! A stream of frames: `u32` big-endian length of what follows, then a `u8` kind and the
//! fields. Strings and byte blobs are a `u32` length and the bytes; an optional string is
//! a `u8` flag (0 absent, 1 present) then the string; a list is a `u32` count then the
//! items. The first frame on a link is `Hello`; membership messages are idempotent so
//! that a snapshot (the sender's memberships as `Join`s) and live updates may overlap.
//!
//! | kind | message | fields |
//! |---|---|---|
//! | 1 | Hello | `u16` version, `u32` node id |
//! | 2 | Join | nsp, room, socket id, optional user |
//! | 3 | Leave | nsp, room, socket id |
//! | 4 | Gone | nsp, socket id (left every room) |
//! | 5 | Broadcast | nsp, rooms (list; empty = namespace), optional except id, frames (list of `u8` 0 text / 1 binary + blob), optional latest key, optional stamp (`u8` flag, then `u32` origin, `u64` sequence, `u64` ms since the epoch) |
//! | 6 | Synced | (none: the snapshot after `Hello` is complete) |
//! | 7 | Park | nsp, socket id, optional user, rooms (list), `u64` ms since the epoch when it dropped (kept for connection state recovery; from its own process it is also gone, as `Gone`) |
//! | 8 | Evict | nsp, socket id, optional user (its client came back elsewhere as that user: whoever holds it as that user closes it) |
//! | 9 | Logged | nsp, rooms, ids, except rooms, except ids (lists), frames (as in Broadcast), stamp (`u32` origin, `u64` sequence, `u64` ms) — an event kept for recovery, sent after the snapshot |
//! | 10 | Recorded | nsp, optional room, stamp (as in Logged), name, args (JSON text), attachments (list of blobs) — a history event, sent after the snapshot |
//!
//! Decoding is strict and bounded (a frame over [`MAX_FRAME`] is an error, and no count or
//! length inside a frame is believed past the bytes that are there), because a corrupt
//! peer must not take its neighbours down. The encoding is canonical: a frame that decodes
//! re-encodes to the same bytes (the `peer_wire` fuzz target checks it).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::engine::Frame;

/// The version spoken in `Hello`.
pub const VERSION: u16 = 4;
/// Largest frame accepted.
pub const MAX_FRAME: usize = 64 << 20;

/// Who accepted a broadcast event and when, for the history every process keeps of the
/// host's events: the origin's id and sequence number and the acceptance time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stamp {
    /// The accepting process.
    pub origin: u32,
    /// Its sequence number for the event.
    pub seq: u64,
    /// When it was accepted, ms since the Unix epoch.
    pub at_ms: u64,
}

/// One message between relay processes.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// First message on a link: who is speaking.
    Hello {
        /// Wire version.
        version: u16,
        /// The sender's node (worker) id.
        node: u32,
    },
    /// A socket of the sender joined a room.
    Join {
        /// Namespace.
        nsp: String,
        /// Room.
        room: String,
        /// Socket id.
        id: String,
        /// Display name.
        user: Option<String>,
    },
    /// A socket of the sender left a room.
    Leave {
        /// Namespace.
        nsp: String,
        /// Room.
        room: String,
        /// Socket id.
        id: String,
    },
    /// A socket of the sender disconnected (it left all its rooms).
    Gone {
        /// Namespace.
        nsp: String,
        /// Socket id.
        id: String,
    },
    /// Deliver these frames to the receiver's local sockets that the target names.
    Broadcast {
        /// Namespace.
        nsp: String,
        /// Rooms; empty means the whole namespace.
        rooms: Vec<String>,
        /// A socket to leave out.
        except: Option<String>,
        /// The encoded Engine.IO frames, in order.
        frames: Vec<Frame>,
        /// The key of a one-frame item that a newer one of the same key supersedes for a
        /// lagging receiver (`Outgoing::Latest`: a `$presence` and its count).
        latest: Option<String>,
        /// Who accepted the event, for the receivers' history (none: not recorded).
        stamp: Option<Stamp>,
    },
    /// The memberships that followed `Hello` are all of the sender's: the receiver may
    /// now tell who of a relinking peer's earlier members is really gone.
    Synced,
    /// A socket dropped, and its client may come back for it: the receiver keeps it
    /// for recovery. Sent by the socket's process as it drops (then it is also gone, as
    /// with `Gone`), by a process that parked a dead peer's member, and after the
    /// snapshot for every socket the sender keeps.
    Park {
        /// Namespace.
        nsp: String,
        /// Socket id.
        id: String,
        /// Display name.
        user: Option<String>,
        /// Its rooms.
        rooms: Vec<String>,
        /// When it dropped, ms since the Unix epoch.
        dropped_ms: u64,
    },
    /// An event the sender keeps for connection state recovery (after the snapshot, so
    /// that a new process has the events from before it started).
    Logged {
        /// Namespace.
        nsp: String,
        /// Members of any of these rooms…
        rooms: Vec<String>,
        /// …and these sockets (neither: the whole namespace)…
        ids: Vec<String>,
        /// …but not the members of these rooms…
        except_rooms: Vec<String>,
        /// …nor these sockets.
        except_ids: Vec<String>,
        /// The encoded Engine.IO frames, in order.
        frames: Vec<Frame>,
        /// Who accepted it, and when.
        stamp: Stamp,
    },
    /// An event of the sender's room history (after the snapshot, so that a new process
    /// has the history from before it started).
    Recorded {
        /// Namespace.
        nsp: String,
        /// The room; none for the namespace's broadcasts to all.
        room: Option<String>,
        /// Who accepted it, and when.
        stamp: Stamp,
        /// The event name.
        name: String,
        /// Its arguments, a JSON array with binary placeholders.
        args: String,
        /// Its binary attachments.
        attachments: Vec<Bytes>,
    },
    /// The client of this socket came back to the sender: the process that still holds
    /// the socket closes it (and parks it), so that the sender can restore it.
    Evict {
        /// Namespace.
        nsp: String,
        /// Socket id.
        id: String,
        /// The user the client came back as (a socket of another user is not closed).
        user: Option<String>,
    },
}

/// A frame that cannot be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    /// Over [`MAX_FRAME`].
    #[error("frame of {0} bytes is over the limit")]
    TooLarge(usize),
    /// Shorter than its fields say.
    #[error("truncated frame")]
    Truncated,
    /// Unknown message kind.
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    /// A string is not UTF-8.
    #[error("invalid UTF-8 in a string field")]
    Utf8,
    /// Bytes left after the last field.
    #[error("{0} trailing bytes in a frame")]
    Trailing(usize),
}

impl Message {
    /// Append this message as one frame.
    pub fn encode(&self, out: &mut BytesMut) {
        let start = out.len();
        out.put_u32(0);
        match self {
            Message::Hello { version, node } => {
                out.put_u8(1);
                out.put_u16(*version);
                out.put_u32(*node);
            }
            Message::Join {
                nsp,
                room,
                id,
                user,
            } => {
                out.put_u8(2);
                put_str(out, nsp);
                put_str(out, room);
                put_str(out, id);
                put_opt(out, user.as_deref());
            }
            Message::Leave { nsp, room, id } => {
                out.put_u8(3);
                put_str(out, nsp);
                put_str(out, room);
                put_str(out, id);
            }
            Message::Gone { nsp, id } => {
                out.put_u8(4);
                put_str(out, nsp);
                put_str(out, id);
            }
            Message::Broadcast {
                nsp,
                rooms,
                except,
                frames,
                latest,
                stamp,
            } => {
                out.put_u8(5);
                put_str(out, nsp);
                put_len(out, rooms.len());
                for r in rooms {
                    put_str(out, r);
                }
                put_opt(out, except.as_deref());
                put_frames(out, frames);
                put_opt(out, latest.as_deref());
                match stamp {
                    None => out.put_u8(0),
                    Some(stamp) => {
                        out.put_u8(1);
                        out.put_u32(stamp.origin);
                        out.put_u64(stamp.seq);
                        out.put_u64(stamp.at_ms);
                    }
                }
            }
            Message::Synced => out.put_u8(6),
            Message::Park {
                nsp,
                id,
                user,
                rooms,
                dropped_ms,
            } => {
                out.put_u8(7);
                put_str(out, nsp);
                put_str(out, id);
                put_opt(out, user.as_deref());
                put_len(out, rooms.len());
                for r in rooms {
                    put_str(out, r);
                }
                out.put_u64(*dropped_ms);
            }
            Message::Evict { nsp, id, user } => {
                out.put_u8(8);
                put_str(out, nsp);
                put_str(out, id);
                put_opt(out, user.as_deref());
            }
            Message::Logged {
                nsp,
                rooms,
                ids,
                except_rooms,
                except_ids,
                frames,
                stamp,
            } => {
                out.put_u8(9);
                put_str(out, nsp);
                for list in [rooms, ids, except_rooms, except_ids] {
                    put_list(out, list);
                }
                put_frames(out, frames);
                out.put_u32(stamp.origin);
                out.put_u64(stamp.seq);
                out.put_u64(stamp.at_ms);
            }
            Message::Recorded {
                nsp,
                room,
                stamp,
                name,
                args,
                attachments,
            } => {
                out.put_u8(10);
                put_str(out, nsp);
                put_opt(out, room.as_deref());
                out.put_u32(stamp.origin);
                out.put_u64(stamp.seq);
                out.put_u64(stamp.at_ms);
                put_str(out, name);
                put_str(out, args);
                put_len(out, attachments.len());
                for a in attachments {
                    put_blob(out, a);
                }
            }
        }
        let len = u32::try_from(out.len() - start - 4).unwrap_or(u32::MAX);
        out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    }

    /// Take one whole frame off the front of `buf`: `Ok(None)` when more bytes are needed.
    pub fn decode(buf: &mut BytesMut) -> Result<Option<Message>, WireError> {
        let Some(head) = buf.get(..4) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        if len > MAX_FRAME {
            return Err(WireError::TooLarge(len));
        }
        if buf.len() < 4 + len {
            buf.reserve(4 + len - buf.len());
            return Ok(None);
        }
        buf.advance(4);
        let mut frame = buf.split_to(len).freeze();
        let msg = decode_body(&mut frame)?;
        if frame.has_remaining() {
            return Err(WireError::Trailing(frame.remaining()));
        }
        Ok(Some(msg))
    }
}

fn decode_body(b: &mut Bytes) -> Result<Message, WireError> {
    let kind = get_u8(b)?;
    Ok(match kind {
        1 => Message::Hello {
            version: get_u16(b)?,
            node: get_u32(b)?,
        },
        2 => Message::Join {
            nsp: get_str(b)?,
            room: get_str(b)?,
            id: get_str(b)?,
            user: get_opt(b)?,
        },
        3 => Message::Leave {
            nsp: get_str(b)?,
            room: get_str(b)?,
            id: get_str(b)?,
        },
        4 => Message::Gone {
            nsp: get_str(b)?,
            id: get_str(b)?,
        },
        5 => {
            let nsp = get_str(b)?;
            let n = get_count(b)?;
            let mut rooms = Vec::with_capacity(n.min(64));
            for _ in 0..n {
                rooms.push(get_str(b)?);
            }
            let except = get_opt(b)?;
            let frames = get_frames(b)?;
            let latest = get_opt(b)?;
            let stamp = match get_u8(b)? {
                0 => None,
                1 => Some(Stamp {
                    origin: get_u32(b)?,
                    seq: get_u64(b)?,
                    at_ms: get_u64(b)?,
                }),
                other => return Err(WireError::UnknownKind(other)),
            };
            Message::Broadcast {
                nsp,
                rooms,
                except,
                frames,
                latest,
                stamp,
            }
        }
        6 => Message::Synced,
        7 => {
            let nsp = get_str(b)?;
            let id = get_str(b)?;
            let user = get_opt(b)?;
            let n = get_count(b)?;
            let mut rooms = Vec::with_capacity(n.min(64));
            for _ in 0..n {
                rooms.push(get_str(b)?);
            }
            Message::Park {
                nsp,
                id,
                user,
                rooms,
                dropped_ms: get_u64(b)?,
            }
        }
        8 => Message::Evict {
            nsp: get_str(b)?,
            id: get_str(b)?,
            user: get_opt(b)?,
        },
        9 => Message::Logged {
            nsp: get_str(b)?,
            rooms: get_list(b)?,
            ids: get_list(b)?,
            except_rooms: get_list(b)?,
            except_ids: get_list(b)?,
            frames: get_frames(b)?,
            stamp: Stamp {
                origin: get_u32(b)?,
                seq: get_u64(b)?,
                at_ms: get_u64(b)?,
            },
        },
        10 => {
            let nsp = get_str(b)?;
            let room = get_opt(b)?;
            let stamp = Stamp {
                origin: get_u32(b)?,
                seq: get_u64(b)?,
                at_ms: get_u64(b)?,
            };
            let name = get_str(b)?;
            let args = get_str(b)?;
            let n = get_count(b)?;
            let mut attachments = Vec::with_capacity(n.min(64));
            for _ in 0..n {
                attachments.push(get_blob(b)?);
            }
            Message::Recorded {
                nsp,
                room,
                stamp,
                name,
                args,
                attachments,
            }
        }
        other => return Err(WireError::UnknownKind(other)),
    })
}

fn put_list(out: &mut BytesMut, list: &[String]) {
    put_len(out, list.len());
    for s in list {
        put_str(out, s);
    }
}

fn put_frames(out: &mut BytesMut, frames: &[Frame]) {
    put_len(out, frames.len());
    for f in frames {
        match f {
            Frame::Text(t) => {
                out.put_u8(0);
                put_blob(out, t.as_str().as_bytes());
            }
            Frame::Binary(b) => {
                out.put_u8(1);
                put_blob(out, b);
            }
        }
    }
}

fn get_list(b: &mut Bytes) -> Result<Vec<String>, WireError> {
    let n = get_count(b)?;
    let mut list = Vec::with_capacity(n.min(64));
    for _ in 0..n {
        list.push(get_str(b)?);
    }
    Ok(list)
}

fn get_frames(b: &mut Bytes) -> Result<Vec<Frame>, WireError> {
    let n = get_count(b)?;
    let mut frames = Vec::with_capacity(n.min(64));
    for _ in 0..n {
        let frame = match get_u8(b)? {
            0 => Frame::Text(Utf8Bytes::try_from(get_blob(b)?).map_err(|_| WireError::Utf8)?),
            1 => Frame::Binary(get_blob(b)?),
            other => return Err(WireError::UnknownKind(other)),
        };
        frames.push(frame);
    }
    Ok(frames)
}

fn put_len(out: &mut BytesMut, n: usize) {
    out.put_u32(u32::try_from(n).unwrap_or(u32::MAX));
}

fn put_blob(out: &mut BytesMut, b: &[u8]) {
    put_len(out, b.len());
    out.put_slice(b);
}

fn put_str(out: &mut BytesMut, s: &str) {
    put_blob(out, s.as_bytes());
}

fn put_opt(out: &mut BytesMut, s: Option<&str>) {
    match s {
        Some(s) => {
            out.put_u8(1);
            put_str(out, s);
        }
        None => out.put_u8(0),
    }
}

fn get_u8(b: &mut Bytes) -> Result<u8, WireError> {
    b.try_get_u8().map_err(|_| WireError::Truncated)
}

fn get_u16(b: &mut Bytes) -> Result<u16, WireError> {
    b.try_get_u16().map_err(|_| WireError::Truncated)
}

fn get_u64(b: &mut Bytes) -> Result<u64, WireError> {
    if b.remaining() < 8 {
        return Err(WireError::Truncated);
    }
    Ok(b.get_u64())
}

fn get_u32(b: &mut Bytes) -> Result<u32, WireError> {
    b.try_get_u32().map_err(|_| WireError::Truncated)
}

/// A count that cannot exceed what is left (each item takes at least one byte).
fn get_count(b: &mut Bytes) -> Result<usize, WireError> {
    let n = get_u32(b)? as usize;
    if n > b.remaining() {
        return Err(WireError::Truncated);
    }
    Ok(n)
}

fn get_blob(b: &mut Bytes) -> Result<Bytes, WireError> {
    let n = get_u32(b)? as usize;
    if n > b.remaining() {
        return Err(WireError::Truncated);
    }
    Ok(b.split_to(n))
}

fn get_str(b: &mut Bytes) -> Result<String, WireError> {
    String::from_utf8(get_blob(b)?.to_vec()).map_err(|_| WireError::Utf8)
}

fn get_opt(b: &mut Bytes) -> Result<Option<String>, WireError> {
    match get_u8(b)? {
        0 => Ok(None),
        1 => Ok(Some(get_str(b)?)),
        other => Err(WireError::UnknownKind(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    fn samples() -> Vec<Message> {
        vec![
            Message::Hello {
                version: VERSION,
                node: 3,
            },
            Message::Join {
                nsp: "/chat".into(),
                room: "ünïcode room".into(),
                id: "abc".into(),
                user: Some("ann".into()),
            },
            Message::Join {
                nsp: "/".into(),
                room: "r".into(),
                id: "x".into(),
                user: None,
            },
            Message::Leave {
                nsp: "/".into(),
                room: "r".into(),
                id: "x".into(),
            },
            Message::Gone {
                nsp: "/".into(),
                id: "x".into(),
            },
            Message::Synced,
            Message::Park {
                nsp: "/".into(),
                id: "x".into(),
                user: Some("ann".into()),
                rooms: vec!["$namespace".into(), "r".into()],
                dropped_ms: 1_733_210_000_000,
            },
            Message::Evict {
                nsp: "/chat".into(),
                id: "y".into(),
                user: Some("ann".into()),
            },
            Message::Logged {
                nsp: "/r".into(),
                rooms: vec!["a".into()],
                ids: vec!["s1".into()],
                except_rooms: vec![],
                except_ids: vec!["s2".into()],
                frames: vec![Frame::message("2/r,[\"m\",1,\"1-kq3z\"]")],
                stamp: Stamp {
                    origin: 1,
                    seq: 1 << 40,
                    at_ms: 1_733_210_000_001,
                },
            },
            Message::Recorded {
                nsp: "/h".into(),
                room: Some("r".into()),
                stamp: Stamp {
                    origin: 0,
                    seq: 99,
                    at_ms: 1_733_210_000_002,
                },
                name: "m".into(),
                args: "[1,{\"_placeholder\":true,\"num\":0}]".into(),
                attachments: vec![Bytes::from_static(&[7, 8])],
            },
            Message::Broadcast {
                nsp: "/".into(),
                rooms: vec!["a".into(), "b".into()],
                except: Some("x".into()),
                frames: vec![
                    Frame::message("51-[\"e\",{\"_placeholder\":true,\"num\":0}]"),
                    Frame::Binary(Bytes::from_static(&[0, 1, 2, 255])),
                ],
                latest: None,
                stamp: Some(Stamp {
                    origin: 2,
                    seq: 1 << 50,
                    at_ms: 1_733_210_000_000,
                }),
            },
            Message::Broadcast {
                nsp: "/".into(),
                rooms: vec![],
                except: None,
                frames: vec![],
                latest: Some("/\u{0}room".into()),
                stamp: None,
            },
        ]
    }

    #[test]
    fn every_message_round_trips_even_byte_by_byte() {
        let mut all = BytesMut::new();
        for m in samples() {
            m.encode(&mut all);
        }
        let mut buf = BytesMut::new();
        let mut decoded = Vec::new();
        for byte in all.iter() {
            buf.put_u8(*byte);
            while let Some(m) = Message::decode(&mut buf).unwrap() {
                decoded.push(m);
            }
        }
        assert_eq!(decoded, samples());
        assert!(buf.is_empty());
    }

    /// The link openings and broadcasts the `peer_wire` fuzz target starts from: a read
    /// size byte (see fuzz/fuzz_targets/peer_wire.rs), then frames.
    fn fuzz_seeds() -> Vec<(String, Vec<u8>)> {
        let mut seeds = Vec::new();
        for (i, m) in samples().into_iter().enumerate() {
            let mut buf = BytesMut::from(&[255u8][..]);
            m.encode(&mut buf);
            seeds.push((format!("message-{i}"), buf.to_vec()));
        }
        // A link as a worker opens it: Hello, its snapshot, Synced, then live traffic,
        // read a few bytes at a time.
        let mut link = BytesMut::from(&[6u8][..]);
        for m in samples() {
            m.encode(&mut link);
        }
        seeds.push(("link-small-reads".to_owned(), link.to_vec()));
        seeds
    }

    /// Writes fuzz/seeds/peer_wire; run by hand after a change of the wire format
    /// (`cargo test --lib adapter::wire -- --ignored`), and commit the files.
    #[test]
    #[ignore = "writes the committed fuzz seeds"]
    fn write_fuzz_seeds() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/peer_wire");
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in fuzz_seeds() {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }

    /// The committed seeds are what [`write_fuzz_seeds`] writes today, so that a change of
    /// the wire format cannot leave the fuzzer starting from stale frames.
    #[test]
    fn committed_fuzz_seeds_are_current() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/peer_wire");
        for (name, bytes) in fuzz_seeds() {
            let committed = std::fs::read(dir.join(&name)).unwrap();
            assert_eq!(committed, bytes, "fuzz/seeds/peer_wire/{name} is stale");
        }
    }

    #[test]
    fn an_oversized_or_unknown_frame_is_a_named_error() {
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff][..]);
        assert!(matches!(
            Message::decode(&mut buf),
            Err(WireError::TooLarge(_))
        ));
        let mut buf = BytesMut::from(&[0, 0, 0, 1, 99][..]);
        assert_eq!(Message::decode(&mut buf), Err(WireError::UnknownKind(99)));
    }

    /// Decode everything in `buf`, bounded: whatever the bytes, no panic, no endless loop.
    fn decode_all(buf: &mut BytesMut) -> Result<Vec<Message>, WireError> {
        let mut out = Vec::new();
        for _ in 0..1_000 {
            match Message::decode(buf)? {
                Some(m) => out.push(m),
                None => break,
            }
        }
        Ok(out)
    }

    fn text() -> impl Strategy<Value = String> {
        ".{0,12}"
    }

    fn frame() -> impl Strategy<Value = Frame> {
        prop_oneof![
            text().prop_map(|t| Frame::message(&t)),
            vec(any::<u8>(), 0..16).prop_map(|b| Frame::Binary(Bytes::from(b))),
        ]
    }

    fn message() -> impl Strategy<Value = Message> {
        let user = proptest::option::of(text());
        prop_oneof![
            (any::<u16>(), any::<u32>())
                .prop_map(|(version, node)| Message::Hello { version, node }),
            (text(), text(), text(), user).prop_map(|(nsp, room, id, user)| Message::Join {
                nsp,
                room,
                id,
                user
            }),
            (text(), text(), text()).prop_map(|(nsp, room, id)| Message::Leave { nsp, room, id }),
            (text(), text()).prop_map(|(nsp, id)| Message::Gone { nsp, id }),
            (
                text(),
                text(),
                proptest::option::of(text()),
                vec(text(), 0..4),
                any::<u64>()
            )
                .prop_map(|(nsp, id, user, rooms, dropped_ms)| Message::Park {
                    nsp,
                    id,
                    user,
                    rooms,
                    dropped_ms
                }),
            (text(), text(), proptest::option::of(text()))
                .prop_map(|(nsp, id, user)| Message::Evict { nsp, id, user }),
            (
                text(),
                vec(vec(text(), 0..3), 4),
                vec(frame(), 0..3),
                (any::<u32>(), any::<u64>(), any::<u64>())
            )
                .prop_map(|(nsp, mut lists, frames, (origin, seq, at_ms))| {
                    let except_ids = lists.pop().unwrap();
                    let except_rooms = lists.pop().unwrap();
                    let ids = lists.pop().unwrap();
                    let rooms = lists.pop().unwrap();
                    Message::Logged {
                        nsp,
                        rooms,
                        ids,
                        except_rooms,
                        except_ids,
                        frames,
                        stamp: Stamp { origin, seq, at_ms },
                    }
                }),
            (
                text(),
                proptest::option::of(text()),
                (any::<u32>(), any::<u64>(), any::<u64>()),
                text(),
                text(),
                vec(vec(any::<u8>(), 0..8), 0..3)
            )
                .prop_map(
                    |(nsp, room, (origin, seq, at_ms), name, args, attachments)| {
                        Message::Recorded {
                            nsp,
                            room,
                            stamp: Stamp { origin, seq, at_ms },
                            name,
                            args,
                            attachments: attachments.into_iter().map(Bytes::from).collect(),
                        }
                    }
                ),
            Just(Message::Synced),
            (
                text(),
                vec(text(), 0..4),
                proptest::option::of(text()),
                vec(frame(), 0..4),
                proptest::option::of(text()),
                proptest::option::of((any::<u32>(), any::<u64>(), any::<u64>()))
            )
                .prop_map(|(nsp, rooms, except, frames, latest, stamp)| {
                    Message::Broadcast {
                        nsp,
                        rooms,
                        except,
                        frames,
                        latest,
                        stamp: stamp.map(|(origin, seq, at_ms)| Stamp { origin, seq, at_ms }),
                    }
                }),
        ]
    }

    proptest! {
        #[test]
        fn any_messages_round_trip(msgs in vec(message(), 0..8)) {
            let mut buf = BytesMut::new();
            for m in &msgs {
                m.encode(&mut buf);
            }
            prop_assert_eq!(decode_all(&mut buf), Ok(msgs));
            prop_assert!(buf.is_empty());
        }

        #[test]
        fn arbitrary_bytes_are_errors_not_panics(bytes in vec(any::<u8>(), 0..512)) {
            let _ = decode_all(&mut BytesMut::from(&bytes[..]));
        }

        #[test]
        fn corrupted_frames_are_errors_not_panics(edits in vec((any::<usize>(), any::<u8>()), 1..5)) {
            let mut bytes = BytesMut::new();
            for m in samples() {
                m.encode(&mut bytes);
            }
            let len = bytes.len();
            for (at, value) in edits {
                bytes[at % len] = value;
            }
            let _ = decode_all(&mut bytes);
        }
    }
}
