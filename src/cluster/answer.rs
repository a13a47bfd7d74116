//! The answers a node sends to another's requests, in JSON as the Node adapter writes
//! its own: the sockets of `fetchSockets()` as a Node server describes them, and the
//! answer envelope ([`Response`]).

use serde::Serialize;

/// A socket as `fetchSockets()` shows it on a Node server.
#[derive(Debug, Clone, Serialize)]
pub struct FetchedSocket {
    /// Its id.
    pub id: String,
    /// What a Node server keeps of its handshake.
    pub handshake: Handshake,
    /// Its rooms, its own id first (a Node socket is always in the room of its id).
    pub rooms: Vec<String>,
    /// `socket.data`: the relay's user name, if any, as `user`.
    pub data: serde_json::Value,
}

/// `socket.handshake` of a Node server.
#[derive(Debug, Clone, Serialize)]
pub struct Handshake {
    /// Request headers; the relay keeps none.
    pub headers: serde_json::Map<String, serde_json::Value>,
    /// When it connected, as text.
    pub time: String,
    /// The client's address.
    pub address: String,
    /// Whether it came from another origin (not known here: false).
    pub xdomain: bool,
    /// Whether it came over TLS (the relay serves plain HTTP behind a proxy: false).
    pub secure: bool,
    /// When it connected, ms since the Unix epoch.
    pub issued: u64,
    /// The request path.
    pub url: String,
    /// The query (not kept: empty).
    pub query: serde_json::Map<String, serde_json::Value>,
    /// The CONNECT auth (not kept, it may hold a token: empty).
    pub auth: serde_json::Map<String, serde_json::Value>,
    /// `polling` or `websocket` (not a Node server's field: iorelay nodes read it).
    pub transport: String,
}

/// An answer to a request, in JSON as the Node adapter writes its own.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Response<'a> {
    /// The request it answers.
    pub request_id: &'a str,
    /// The type, for the answers that carry one.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<u8>,
    /// Socket ids (`Sockets`) or sockets (`RemoteFetch`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sockets: Option<serde_json::Value>,
    /// Room names (`AllRooms`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rooms: Option<Vec<String>>,
    /// A server-side emit's answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
    /// Clients a broadcast with acks reached here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_count: Option<usize>,
}

impl<'a> Response<'a> {
    /// An answer with nothing but the request id.
    pub fn to(request_id: &'a str) -> Response<'a> {
        Response {
            request_id,
            kind: None,
            sockets: None,
            rooms: None,
            data: None,
            client_count: None,
        }
    }

    /// As JSON bytes.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a response always encodes")
    }
}
