//! The socketioxide peer of iorelay's load generator: the small relay protocol of
//! `benches/peers/README.md` on socketioxide, served by hyper on 127.0.0.1:$PORT
//! (default 3991) under `/socket.io/`.
//!
//! - `$join` room (ack) → join, ack `{"ok":true,"room":R,"count":N}`.
//! - `msg` any args → to every room the sender joined, sender excluded; ack `{"ok":true}`.
//! - `echo` args (ack) → ack with the same args.
//!
//! No per-message logging; settings follow iorelay's defaults (see `main`).

use std::net::SocketAddr;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::{Deserialize, Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeTuple, Serializer};
use socketioxide::SocketIo;
use socketioxide::extract::{AckSender, Data, SocketRef};
use tokio::net::TcpListener;

/// All the arguments of an event after its name, whatever their number and type (binary
/// attachments included: `rmpv::Value` has a binary variant, which socketioxide turns
/// back into an attachment when it serializes).
///
/// It (de)serializes as a tuple, which socketioxide reads as "the arguments, spread",
/// rather than as one argument.
struct Args(Vec<rmpv::Value>);

impl<'de> Deserialize<'de> for Args {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ArgsVisitor;
        impl<'de> Visitor<'de> for ArgsVisitor {
            type Value = Args;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("event arguments")
            }
            fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Args, S::Error> {
                let mut args = Vec::with_capacity(seq.size_hint().unwrap_or(1));
                while let Some(arg) = seq.next_element()? {
                    args.push(arg);
                }
                Ok(Args(args))
            }
        }
        deserializer.deserialize_tuple(usize::MAX, ArgsVisitor)
    }
}

impl Serialize for Args {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut tuple = serializer.serialize_tuple(self.0.len())?;
        for arg in &self.0 {
            tuple.serialize_element(arg)?;
        }
        tuple.end()
    }
}

/// The `$join` ack, fields in the order the other servers write them.
#[derive(Serialize)]
struct Joined {
    ok: bool,
    room: String,
    count: usize,
}

/// The `{"ok":true}` ack.
#[derive(Serialize)]
struct Accepted {
    ok: bool,
}

fn on_connect(socket: SocketRef) {
    socket.on(
        "$join",
        async |s: SocketRef, Data(room): Data<String>, ack: AckSender| {
            s.join(room.clone());
            // The local adapter keeps no per-room count: this lists the room's socket ids
            // (once per join, never per message).
            let count = s.within(room.clone()).sockets().len();
            ack.send(&Joined {
                ok: true,
                room,
                count,
            })
            .ok();
        },
    );
    socket.on(
        "msg",
        async |s: SocketRef, Data(args): Data<Args>, ack: AckSender| {
            let own = s.id.as_str();
            let rooms: Vec<_> = s.rooms().into_iter().filter(|r| r != own).collect();
            if !rooms.is_empty() {
                // `to` leaves the sender out. A failed delivery (a full client buffer) is
                // that client's loss, as on the other servers.
                s.to(rooms).emit("msg", &args).await.ok();
            }
            ack.send(&Accepted { ok: true }).ok();
        },
    );
    socket.on("echo", async |Data(args): Data<Args>, ack: AckSender| {
        ack.send(&args).ok();
    });
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = match std::env::var("PORT") {
        Ok(p) => p.parse().map_err(|e| format!("PORT={p}: {e}"))?,
        Err(_) => 3991,
    };
    let (svc, io) = SocketIo::builder()
        .req_path("/socket.io")
        .ping_interval(Duration::from_secs(25))
        .ping_timeout(Duration::from_secs(20))
        // maxHttpBufferSize 1e6, on both transports.
        .max_payload(1_000_000)
        .ws_max_message_size(1_000_000)
        // Packets buffered per socket, as iorelay's `engine.write_queue`.
        .max_buffer_size(1024)
        .build_svc();
    io.ns("/", async |s: SocketRef| on_connect(s));

    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let listener = TcpListener::bind(addr).await?;
    println!("socketioxide peer listening on http://{addr}/socket.io/");
    // SIGINT and SIGTERM end the process (their default action): nothing to flush.
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true).ok();
        let svc = svc.clone();
        tokio::spawn(async move {
            // A client that goes away mid-request is not worth a log line here.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .with_upgrades()
                .await;
        });
    }
}
