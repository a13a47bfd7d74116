//! A bare Engine.IO echo handler: every message goes straight back to its sender. Served
//! at `engine.echo_path` for the Engine.IO conformance suite; no Socket.IO above it.

use std::sync::{Arc, Weak};

use super::session::{
    BoxFuture, CloseReason, Connection, Handler, HandshakeInfo, Message, Session,
};
use super::{Frame, Packet};

/// Creates an [`EchoConnection`] per session.
#[derive(Debug, Default)]
pub struct EchoHandler;

/// Sends each message back on the session it came from.
#[derive(Debug)]
pub struct EchoConnection {
    session: Weak<Session>,
}

impl Handler for EchoHandler {
    fn open(&self, session: &Arc<Session>, _info: &HandshakeInfo) -> Arc<dyn Connection> {
        Arc::new(EchoConnection {
            session: Arc::downgrade(session),
        })
    }
}

impl Connection for EchoConnection {
    fn message(&self, msg: Message) -> BoxFuture<'_, ()> {
        if let Some(session) = self.session.upgrade() {
            let frame = match msg {
                Message::Text(t) => Packet::Message(t).encode(),
                Message::Binary(b) => Frame::Binary(b),
            };
            session.send_frame(frame);
        }
        Box::pin(async {})
    }

    fn close(&self, _reason: CloseReason) {}
}
