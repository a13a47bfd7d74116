//! The `echo` scenario: M clients connect to "/" (joining no room), then each emits
//! `echo` with an ack and waits for that ack before the next emit (a closed loop, one
//! round trip outstanding per client) until `--duration` ends or `--messages` round
//! trips have been claimed in all. Latency is the round trip measured by the client.
//!
//! iorelay answers `{"ok":true}` (the bench config routes `echo` nowhere); peers echo
//! the arguments back. Either counts as a round trip; `{"ok":false,…}` counts as
//! `refused` and as a failure, an ack that does not come within `--timeout` as a
//! `timeout` failure (that client stops).

use std::pin::pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use serde_json::{Map, Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::cli::EchoArgs;
use crate::client::{Conn, PONG, read_error};
use crate::run::{self, Env, Meter, POLL, Progress, Run, flag, rate, secs, setup};
use crate::shard::ShardCtx;
use crate::stats::{self, FailKind, latency_json};
use crate::wire::{self, AckStatus, Kind};

/// Default cap on round trips in all.
const MAX_ROUND_TRIPS: u64 = 10_000_000;

/// What every echo client shares.
#[derive(Debug)]
struct Echo {
    /// Round trips started in all; a client stops once this reaches `limit`.
    claimed: AtomicU64,
    limit: u64,
    duration: Duration,
    payload: usize,
}

/// Run `echo`.
pub async fn echo(env: &Env, a: &EchoArgs) -> Value {
    let limit = a.messages.unwrap_or(MAX_ROUND_TRIPS);
    let mut out = env.head(json!({
        "clients": a.clients,
        "duration_s": a.duration,
        "messages": limit,
        "payload": a.payload,
    }));
    let mut progress = Progress::new(env.quiet);
    let shared = Arc::new(Echo {
        claimed: AtomicU64::new(0),
        limit,
        duration: Duration::from_secs_f64(a.duration.max(0.0)),
        payload: a.payload,
    });
    env.run.begin_setup();
    let setup_started = Instant::now();
    for i in 0..a.clients {
        let run = env.run.clone();
        let shared = shared.clone();
        env.shards.spawn(i as usize, move |ctx| {
            tokio::task::spawn_local(client(run, shared, ctx.clone()));
        });
    }
    run::wait_setup(&env.shards, a.clients, "echo", &mut progress).await;
    let setup_s = secs(setup_started.elapsed());
    let c = env.shards.counters();
    let ready = stats::sum(c, |x| &x.ready);
    progress.say(|| format!("echo: {ready}/{} clients ready", a.clients));

    let mut meter = Meter::new(env.server.clone());
    meter.start();
    env.run.go.send_replace(true);
    // Each client ends within one round trip (bounded by --timeout) after the duration.
    let bound = shared.duration + env.run.timeout + Duration::from_secs(5);
    let go = Instant::now();
    while stats::sum(c, |x| &x.done) < ready && go.elapsed() < bound {
        progress.tick(|| {
            let n = stats::sum(c, |x| &x.acked);
            format!(
                "echo: {n} round trips ({:.0}/s)",
                n as f64 / go.elapsed().as_secs_f64().max(1e-3)
            )
        });
        tokio::time::sleep(POLL).await;
    }
    meter.end();
    run::stop_and_wait(&env.run, &env.shards, a.clients).await;

    let round_trips = stats::sum(c, |x| &x.acked);
    let hist = env.shards.histogram().await;
    let fields: Map<String, Value> = serde_json::from_value(json!({
        "wall_s": secs(meter.wall()),
        "setup_s": setup_s,
        "clients_ready": ready,
        "round_trips": round_trips,
        "refused": stats::sum(c, |x| &x.failures[FailKind::Refused as usize]),
        "round_trips_per_s": rate(round_trips, meter.wall().as_secs_f64()),
        "latency_us": latency_json(&hist),
    }))
    .unwrap_or_default();
    out.extend(fields);
    run::common(c, c, &mut out);
    meter.fill(&mut out, round_trips);
    meter.fill_rss(&mut out);
    Value::Object(out)
}

/// One echo client: set up, wait for go, loop, then hold until stopped.
async fn client(run: Arc<Run>, shared: Arc<Echo>, ctx: Rc<ShardCtx>) {
    let c = &ctx.counters;
    if let Some(mut conn) = setup(&run, c, None, None).await {
        let started = tokio::select! {
            _ = flag(run.go.subscribe()) => true,
            _ = flag(run.stop.subscribe()) => false,
        };
        let result = if started {
            round_trips(&mut conn, &ctx, &shared, run.timeout).await
        } else {
            Ok(())
        };
        c.done.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(()) => {
                flag(run.stop.subscribe()).await;
                conn.close().await;
            }
            Err(kind) => c.fail(kind),
        }
    }
    c.finished.fetch_add(1, Ordering::Relaxed);
}

/// The closed loop.
async fn round_trips(
    conn: &mut Conn,
    ctx: &ShardCtx,
    shared: &Echo,
    timeout: Duration,
) -> Result<(), FailKind> {
    let c = &*ctx.counters;
    let deadline = Instant::now() + shared.duration;
    let mut seq = 0;
    while Instant::now() < deadline && shared.claimed.fetch_add(1, Ordering::Relaxed) < shared.limit
    {
        let id = conn.ack_id();
        let mut text = String::with_capacity(shared.payload + 40);
        let sent = stats::now_ns();
        wire::timed_emit(&mut text, "echo", Some(id), sent, seq, shared.payload);
        seq += 1;
        conn.send(text.into()).await?;
        let mut expire = pin!(tokio::time::sleep(timeout));
        loop {
            let next = tokio::select! {
                biased;
                m = conn.ws.next() => m,
                _ = &mut expire => return Err(FailKind::Timeout),
            };
            let text = match next {
                Some(Ok(Message::Text(t))) => t,
                Some(Ok(Message::Close(_))) | None => return Err(FailKind::Closed),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(read_error(&e)),
            };
            match wire::classify(&text) {
                Kind::Ack(got, body) if got == id => {
                    if wire::ack_status(body) == AckStatus::Refused {
                        c.fail(FailKind::Refused);
                    } else {
                        let us = stats::now_ns().saturating_sub(sent) / 1000;
                        ctx.hist.borrow_mut().saturating_record(us.max(1));
                        c.acked.fetch_add(1, Ordering::Relaxed);
                    }
                    break;
                }
                Kind::Ack(..) => c.fail(FailKind::Protocol),
                Kind::Ping => conn.send(PONG).await?,
                Kind::Disconnect => return Err(FailKind::Closed),
                Kind::Event(_) => {
                    c.other_events.fetch_add(1, Ordering::Relaxed);
                }
                _ => {}
            }
        }
    }
    Ok(())
}
