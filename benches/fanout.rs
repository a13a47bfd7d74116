//! Micro-benchmarks of room fan-out: the cost of one broadcast from the relay down to the
//! outbound queues of N sockets (N = 10, 100, 1000), on real Engine.IO sessions.
//!
//! Sessions can only be made by the [`Engine`] (`Session::new` is crate-private), so each
//! fixture runs a real engine behind an in-memory HTTP/1.1 connection: every member does a
//! polling handshake, and a [`Handler`] that wraps the relay keeps each session and its
//! Socket.IO connection. Two entry points are measured:
//!
//! - `fanout/adapter_*`: [`LocalAdapter::broadcast`] of an item encoded once (a text event,
//!   or a binary event with two 1 KiB attachments as one group) to a room of N members: a
//!   read lock, then `Session::send` of shared bytes to each member's bounded outbox.
//! - `fanout/relay_event`: a client's `msg` event handed to its connection
//!   ([`Connection::message`]): Socket.IO decoding, rate limit and policy, encoding once,
//!   the broadcast to the N other members of the sender's room.
//!
//! Only the broadcasts are timed. Every `CHUNK` broadcasts the queues are drained by one
//! polling GET per member (untimed), so memory stays flat and no member ever reaches the
//! queue limit; no GET is waiting while a broadcast runs, so the numbers do not include
//! waking writer tasks.
//!
//! Run: `cargo bench --bench fanout` (add `-- --quick` for a short run).

use std::convert::Infallible;
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper::{Request, header};
use hyper_util::rt::TokioIo;
use iorelay::adapter::{Adapter, LocalAdapter, Recipient, Target};
use iorelay::config::{Config, Limits, NamespaceConfig};
use iorelay::engine::{
    self, CloseReason, Connection, Engine, Handler, HandshakeInfo, Message, Outgoing, Session,
};
use iorelay::relay::{self, Relay};
use tokio::runtime::Runtime;

/// Room sizes measured.
const SIZES: [usize; 3] = [10, 100, 1000];

/// Broadcasts between two drains: below the 256 items one polling GET takes and the
/// 1024-item queue, so that one GET per member empties every queue.
const CHUNK: u64 = 200;

/// The arguments of a typical chat event, after its name (109 bytes of JSON).
const ARGS: &str = r#"{"room":"lobby","user":"alice","text":"hello everyone, this is a fairly ordinary message","ts":1700000000000}"#;

/// How long a drain GET may take before the fixture is declared broken (a GET on an empty
/// queue would wait forever).
const DRAIN_DEADLINE: Duration = Duration::from_secs(10);

/// A connection for sessions the relay does not serve: the adapter benches only need the
/// sessions' queues.
struct Idle;

impl Connection for Idle {
    fn message(&self, _msg: Message) -> engine::BoxFuture<'_, ()> {
        Box::pin(async {})
    }

    fn close(&self, _reason: CloseReason) {}
}

/// What the engine opened, in order: each session with its upper-layer connection.
type Opened = Mutex<Vec<(Arc<Session>, Arc<dyn Connection>)>>;

/// The engine's handler: the relay (when given) or [`Idle`], plus a record of each
/// session, because the engine keeps its session table to itself.
struct Capture {
    relay: Option<Relay>,
    opened: Arc<Opened>,
}

impl Handler for Capture {
    fn open(&self, session: &Arc<Session>, info: &HandshakeInfo) -> Arc<dyn Connection> {
        let conn: Arc<dyn Connection> = match &self.relay {
            Some(relay) => relay.open(session, info),
            None => Arc::new(Idle),
        };
        self.opened
            .lock()
            .expect("capture lock is never poisoned")
            .push((session.clone(), conn.clone()));
        conn
    }
}

/// A runtime, an engine on an in-memory HTTP connection, and the sessions opened on it.
struct Fixture {
    rt: Runtime,
    http: SendRequest<Empty<Bytes>>,
    opened: Arc<Opened>,
    /// The relay's instruments, to check that every broadcast reached every member.
    meters: relay::Meters,
}

impl Fixture {
    /// An engine serving the relay on `bus`, or no relay at all when `bus` is `None`.
    fn new(config: &Config, bus: Option<Arc<LocalAdapter>>) -> Fixture {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime builds");
        let meters = relay::Meters::default();
        let opened = Arc::new(Opened::default());
        let relay = bus
            .map(|bus| Relay::new(config, bus, meters.clone()).expect("the bench config is valid"));
        let handler = Capture {
            relay,
            opened: opened.clone(),
        };
        let http = rt.block_on(serve(config, handler));
        Fixture {
            rt,
            http,
            opened,
            meters,
        }
    }

    /// Open `n` polling sessions; returns them with their connections.
    fn open_sessions(&mut self, n: usize) -> Vec<(Arc<Session>, Arc<dyn Connection>)> {
        let before = self.opened.lock().expect("not poisoned").len();
        let Fixture { rt, http, .. } = self;
        rt.block_on(async {
            for _ in 0..n {
                get(http, "").await;
            }
        });
        self.opened.lock().expect("not poisoned")[before..].to_vec()
    }

    /// Take everything queued for each of `sessions` (each must have something queued:
    /// a GET on an empty queue waits).
    fn drain(&mut self, sessions: &[Arc<Session>]) {
        let Fixture { rt, http, .. } = self;
        rt.block_on(async {
            for session in sessions {
                let query = format!("&sid={}", session.sid);
                tokio::time::timeout(DRAIN_DEADLINE, get(http, &query))
                    .await
                    .expect("a member's queue held nothing to drain");
            }
        });
    }
}

/// Run an engine with iorelay's default settings (heartbeat pushed out of the way) on one
/// end of an in-memory connection; returns an HTTP/1.1 client on the other end.
async fn serve(config: &Config, handler: Capture) -> SendRequest<Empty<Bytes>> {
    let mut settings = iorelay::daemon::engine_settings(config);
    // A bench runs longer than a ping interval, and nobody answers pings here.
    settings.ping_interval = Duration::from_secs(24 * 3600);
    settings.ping_timeout = Duration::from_secs(24 * 3600);
    let engine = Engine::new(settings, Arc::new(handler), engine::Meters::default());
    let remote = SocketAddr::from(([127, 0, 0, 1], 40000));
    let (client_io, server_io) = tokio::io::duplex(1 << 16);
    let service = service_fn(move |req| {
        let engine = engine.clone();
        async move { Ok::<_, Infallible>(engine.handle(req, remote).await) }
    });
    tokio::spawn(
        hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(server_io), service),
    );
    let (http, conn) = hyper::client::conn::http1::handshake(TokioIo::new(client_io))
        .await
        .expect("in-memory HTTP handshake");
    tokio::spawn(conn);
    http
}

/// One polling GET on the fixture's connection; returns the body.
async fn get(http: &mut SendRequest<Empty<Bytes>>, query: &str) -> Bytes {
    let req = Request::get(format!("/socket.io/?EIO=4&transport=polling{query}"))
        .header(header::HOST, "127.0.0.1")
        .body(Empty::new())
        .expect("a valid request");
    http.ready().await.expect("connection open");
    let resp = http.send_request(req).await.expect("response");
    assert!(resp.status().is_success(), "GET {query}: {}", resp.status());
    resp.into_body()
        .collect()
        .await
        .expect("response body")
        .to_bytes()
}

/// Config of the bench namespace `/`: iorelay's defaults, with no presence (joins stay
/// quiet) and no rate limit (the bench sender emits far above any real client).
fn config() -> Config {
    let ns = NamespaceConfig {
        presence: false,
        limits: Limits {
            events_per_second: u32::MAX,
            burst: u32::MAX,
            ..Limits::default()
        },
        ..NamespaceConfig::default()
    };
    let mut config = Config {
        namespaces: [("/".to_owned(), ns)].into(),
        ..Config::default()
    };
    // Every member connects from 127.0.0.1: the per-address limits would refuse the
    // larger rooms.
    config.server.max_connections_per_ip = usize::MAX / 2;
    config.server.handshakes_per_ip_per_second = u32::MAX / 2;
    config.server.handshake_burst_per_ip = u32::MAX / 2;
    config
}

/// Time `iters` calls of `broadcast`, draining `members` every [`CHUNK`] calls.
fn timed_chunks(
    fixture: &mut Fixture,
    members: &[Arc<Session>],
    iters: u64,
    mut broadcast: impl FnMut(&Fixture, u64),
) -> Duration {
    let mut total = Duration::ZERO;
    let mut done = 0;
    while done < iters {
        let n = CHUNK.min(iters - done);
        let start = Instant::now();
        broadcast(fixture, n);
        total += start.elapsed();
        fixture.drain(members);
        done += n;
    }
    total
}

/// `LocalAdapter::broadcast` to a room of `n`, for a text item and a binary group.
fn adapter(c: &mut Criterion) {
    let text = Outgoing::Frame(engine::Frame::message(&format!(r#"2["msg",{ARGS}]"#)));
    let kib = Bytes::from(vec![0xA5_u8; 1024]);
    let binary = Outgoing::Group(Arc::from(vec![
        engine::Frame::message(&format!(
            r#"52-["file",{ARGS},{{"_placeholder":true,"num":0}},{{"_placeholder":true,"num":1}}]"#
        )),
        engine::Frame::Binary(kib.clone()),
        engine::Frame::Binary(kib),
    ]));
    for (name, item) in [("adapter_text", text), ("adapter_binary_2x1k", binary)] {
        let mut group = c.benchmark_group(format!("fanout/{name}"));
        group
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2));
        for n in SIZES {
            let bus = Arc::new(LocalAdapter::new());
            let mut fixture = Fixture::new(&config(), None);
            let sessions: Vec<Arc<Session>> = fixture
                .open_sessions(n)
                .into_iter()
                .map(|(s, _)| s)
                .collect();
            fixture.rt.block_on(async {
                for (i, session) in sessions.iter().enumerate() {
                    let id: Arc<str> = Arc::from(format!("socket-{i}"));
                    let recipient = Recipient {
                        id: id.clone(),
                        user: None,
                        session: session.clone(),
                    };
                    bus.add_socket("/", Arc::new(recipient));
                    bus.join("/", "room", &id).await;
                }
            });
            let target = Target {
                rooms: vec![Arc::from("room")],
                except: Some(Arc::from("not-a-member")),
            };
            group.throughput(Throughput::Elements(n as u64));
            group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
                b.iter_custom(|iters| {
                    timed_chunks(&mut fixture, &sessions, iters, |_, chunk| {
                        for _ in 0..chunk {
                            let delivered = bus.broadcast("/", black_box(&target), &item);
                            assert_eq!(delivered, n, "every member queues the item");
                        }
                    })
                });
            });
        }
        group.finish();
    }
}

/// A client event through the relay: one sender and `n` other members in its room.
fn relay_event(c: &mut Criterion) {
    let mut group = c.benchmark_group("fanout/relay_event");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let event = format!(r#"2["msg",{ARGS}]"#);
    for n in SIZES {
        let bus = Arc::new(LocalAdapter::new());
        let mut fixture = Fixture::new(&config(), Some(bus));
        let opened = fixture.open_sessions(n + 1);
        // CONNECT to `/` and join the room, as a client's first packets would.
        fixture.rt.block_on(async {
            for (_, conn) in &opened {
                conn.message(Message::Text("0".to_owned())).await;
                conn.message(Message::Text(r#"2["$join","room"]"#.to_owned()))
                    .await;
            }
        });
        let all: Vec<Arc<Session>> = opened.iter().map(|(s, _)| s.clone()).collect();
        // CONNECT answers are queued for everybody.
        fixture.drain(&all);
        let (sender, receivers) = opened.split_first().expect("n + 1 sessions");
        let sender = sender.1.clone();
        let receivers: Vec<Arc<Session>> = receivers.iter().map(|(s, _)| s.clone()).collect();
        let delivered = fixture.meters.delivered.with_label_values(&["/"]);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            b.iter_custom(|iters| {
                let before = delivered.get();
                let time = timed_chunks(&mut fixture, &receivers, iters, |fixture, chunk| {
                    fixture.rt.block_on(async {
                        for _ in 0..chunk {
                            sender.message(Message::Text(event.clone())).await;
                        }
                    });
                });
                assert_eq!(
                    delivered.get() - before,
                    iters * n as u64,
                    "every event reaches every other member"
                );
                time
            });
        });
    }
    group.finish();
}

criterion_group!(benches, adapter, relay_event);
criterion_main!(benches);
