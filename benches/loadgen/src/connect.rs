//! The `connect` scenario: open N connections to "/" (each TCP + WebSocket handshake +
//! Engine.IO open + Socket.IO CONNECT, and `$join` with `--join`), at most
//! `--concurrency` in setup at once; hold them all open (answering pings); after
//! `--settle` s read the server's RSS; then close them all.
//!
//! Measured phase = from the first connection attempt until every setup has ended:
//! `connections_per_s` = connected / that time, `server_cpu_us_per_unit` = server CPU µs
//! per connection over it. `kib_per_conn` = (RSS after the settle − RSS before the
//! first connection) / connected. `latency_us` is each connection's setup time.

use std::pin::pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt as _;
use serde_json::{Map, Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::cli::ConnectArgs;
use crate::client::{Conn, PONG, read_error};
use crate::run::{self, Env, Meter, Progress, Run, flag, rate, secs, setup};
use crate::shard::ShardCtx;
use crate::stats::{self, FailKind, latency_json, r3};
use crate::wire::{self, Kind};

/// Run `connect`.
pub async fn connect(env: &Env, a: &ConnectArgs) -> Value {
    let mut out = env.head(json!({
        "clients": a.clients,
        "settle_s": a.settle,
        "join": a.join,
    }));
    let mut progress = Progress::new(env.quiet);
    let mut meter = Meter::new(env.server.clone());
    let before = meter.sample();
    meter.start();
    env.run.begin_setup();
    let room = a.join.then(|| env.room.clone());
    for i in 0..a.clients {
        let run = env.run.clone();
        let room = room.clone();
        env.shards.spawn(i as usize, move |ctx| {
            tokio::task::spawn_local(holder(run, room, ctx.clone()));
        });
    }
    run::wait_setup(&env.shards, a.clients, "connect", &mut progress).await;
    meter.end();
    let c = env.shards.counters();
    let connected = stats::sum(c, |x| &x.ready);
    progress.say(|| {
        format!(
            "connect: {connected}/{} connected in {:.3} s; settling",
            a.clients,
            meter.wall().as_secs_f64()
        )
    });
    tokio::time::sleep(Duration::from_secs_f64(a.settle.max(0.0))).await;
    let after = meter.sample();
    let lost_before_rss = stats::sum(c, |x| &x.failures[FailKind::Closed as usize]);
    run::stop_and_wait(&env.run, &env.shards, a.clients).await;

    let hist = env.shards.histogram().await;
    let (rss_before, rss_after) = (before.map(|s| s.rss_kib), after.map(|s| s.rss_kib));
    let kib_per_conn = match (rss_before, rss_after) {
        (Some(b), Some(x)) if connected > 0 => json!(r3((x as f64 - b as f64) / connected as f64)),
        _ => Value::Null,
    };
    let fields: Map<String, Value> = serde_json::from_value(json!({
        "wall_s": secs(meter.wall()),
        "connected": connected,
        "closed_before_rss": lost_before_rss,
        "connections_per_s": rate(connected, meter.wall().as_secs_f64()),
        "latency_us": latency_json(&hist),
        "server_rss_kib_before": rss_before,
        "server_rss_kib_after": rss_after,
        "kib_per_conn": kib_per_conn,
    }))
    .unwrap_or_default();
    out.extend(fields);
    run::common(c, c, &mut out);
    meter.fill(&mut out, connected);
    Value::Object(out)
}

/// One connection: set up (timing it), then hold it open until stopped.
async fn holder(run: Arc<Run>, room: Option<String>, ctx: Rc<ShardCtx>) {
    let c = &ctx.counters;
    if let Some(mut conn) = setup(&run, c, Some(&ctx.hist), room.as_deref()).await {
        match hold(&mut conn, &run).await {
            Ok(()) => conn.close().await,
            Err(kind) => c.fail(kind),
        }
    }
    c.finished.fetch_add(1, Ordering::Relaxed);
}

/// Read (answering pings) until stopped; the server ending the session is an error.
async fn hold(conn: &mut Conn, run: &Run) -> Result<(), FailKind> {
    let mut stop = pin!(flag(run.stop.subscribe()));
    loop {
        let next = tokio::select! {
            biased;
            _ = &mut stop => return Ok(()),
            m = conn.ws.next() => m,
        };
        match next {
            Some(Ok(Message::Text(t))) => match wire::classify(&t) {
                Kind::Ping => conn.send(PONG).await?,
                Kind::Disconnect => return Err(FailKind::Closed),
                _ => {}
            },
            Some(Ok(Message::Close(_))) | None => return Err(FailKind::Closed),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(read_error(&e)),
        }
    }
}
