//! The `fanout` and `cross-worker` scenarios: N subscribers `$join` the room, one
//! publisher joins it too and emits `msg` (with an ack) that the server delivers to the
//! other members; every subscriber measures each delivery's latency from the send
//! timestamp the message carries.
//!
//! Phases: set up the subscribers (bounded concurrency), then the publisher; sample the
//! server; publish for `--duration` or `--messages`, whichever ends first, either at a
//! fixed `--rate` (a 1 ms ticker sends every message due by then, so rates above 1000/s
//! are exact) or in max mode through the in-flight window (see `window`); drain until
//! every expected delivery and publisher ack has arrived or nothing arrived for
//! `--drain` s; sample the server; close everything.
//!
//! A `msg` is `42<ack>["msg",{"t":<ns>,"s":<seq>,"p":"xx…"}]`, the object `--payload`
//! bytes long; a subscriber finds `t` and `s` by scanning the frame text, without a
//! JSON parser. `expected` = `sent` × `subscribers_joined` (the subscribers whose
//! `$join` was acked before publishing began), so a subscriber dropped mid-run shows as
//! `undelivered` (and as a `closed` failure).
//!
//! `cross-worker` is the same run; it exists so that its line is labelled as the
//! multi-worker comparison. Both report `workers` (subscribers per iorelay worker, from
//! the engine sid) and the publisher's worker when the server is iorelay with workers.
//!
//! `cross-node` is the same run over the nodes of a cluster: the publisher connects to
//! `--port`, subscriber i to `--sub-ports[i mod n]`, and the line adds `nodes` (per
//! port: subscribers, deliveries, latency) and `cross_node_subscribers` (those not on
//! the publisher's port). Latency is still from the send timestamp, on the generator's
//! one clock, so a delivery through another node includes the trip through Redis.

use std::cell::Cell;
use std::pin::pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Map, Value, json};
use tokio::time::MissedTickBehavior;
use tokio_tungstenite::tungstenite::Message;

use crate::cli::{CrossNodeArgs, FanoutArgs};
use crate::client::{Conn, PONG, Target, read_error};
use crate::run::{self, Env, Meter, POLL, Progress, Run, flag, rate, secs, setup, setup_to};
use crate::shard::ShardCtx;
use crate::stats::{self, Counters, FailKind, latency_json, now_ns};
use crate::window::Window;
use crate::wire::{self, AckStatus, Kind};

/// A delivered `msg` starts with this (namespace "/", no ack id).
const MSG_PREFIX: &[u8] = b"42[\"msg\",";

/// Default message cap in max mode.
const MAX_MODE_MESSAGES: u64 = 10_000_000;

/// What every subscriber of the run shares.
#[derive(Debug)]
struct Fan {
    room: String,
    /// The in-flight window, in max mode only.
    window: Option<Window>,
    /// `cross-node`: the nodes subscribers spread over (empty: the run's target).
    nodes: Vec<Target>,
}

/// The publisher's state, on the main thread with the orchestrator.
#[derive(Debug, Default)]
struct Pub {
    /// Setup ended; `ok` says whether it succeeded.
    set_up: Cell<bool>,
    ok: Cell<bool>,
    /// Its iorelay worker.
    worker: Cell<Option<usize>>,
    /// Messages sent.
    sent: Cell<u64>,
    /// Acks that accepted a message.
    acked: Cell<u64>,
    /// Messages refused (`"ok":false` ack or `$error`).
    refused: Cell<u64>,
    /// Monotonic ns of the first and the last send.
    first_send_ns: Cell<u64>,
    last_send_ns: Cell<u64>,
    /// Publishing is over (count or time reached, connection lost, or stalled).
    done: Cell<bool>,
    /// Max mode: the window did not move for `--drain` s, so publishing stopped early.
    stalled: Cell<bool>,
}

/// Run `fanout` (or `cross-worker` when `cross`).
pub async fn fanout(env: &Env, a: &FanoutArgs, cross: bool) -> Value {
    let scenario = if cross { "cross-worker" } else { "fanout" };
    fan_out(env, a, scenario, &[]).await
}

/// Run `cross-node`.
pub async fn cross_node(env: &Env, a: &CrossNodeArgs) -> Value {
    fan_out(env, &a.fanout, "cross-node", &a.sub_ports).await
}

async fn fan_out(env: &Env, a: &FanoutArgs, scenario: &str, sub_ports: &[u16]) -> Value {
    let max = a.max || a.rate <= 0.0;
    let duration = Duration::from_secs_f64(a.duration.max(0.0));
    let limit = a.messages.unwrap_or(if max {
        MAX_MODE_MESSAGES
    } else {
        (a.rate * a.duration).ceil().max(0.0) as u64
    });
    let drain = Duration::from_secs_f64(a.drain.max(0.0));
    let mut head = env.head(json!({
        "clients": a.clients,
        "rate": if max { Value::Null } else { json!(a.rate) },
        "max": max,
        "duration_s": a.duration,
        "messages": limit,
        "payload": a.payload,
        "in_flight": if max { json!(a.in_flight) } else { Value::Null },
        "drain_s": a.drain,
        "drain_max_s": a.drain_max,
    }));
    if !sub_ports.is_empty() {
        if let Some(Value::Object(params)) = head.get_mut("params") {
            params.insert("sub_ports".into(), json!(sub_ports));
        }
    }
    head.insert("scenario".into(), json!(scenario));
    let mut progress = Progress::new(env.quiet);
    let fan = Arc::new(Fan {
        room: env.room.clone(),
        window: max.then(|| Window::new(a.in_flight)),
        nodes: sub_ports
            .iter()
            .map(|p| env.run.target.on_port(*p))
            .collect(),
    });

    env.run.begin_setup();
    // Subscribers, spread over the shards.
    let setup_started = Instant::now();
    for i in 0..a.clients {
        let run = env.run.clone();
        let fan = fan.clone();
        let node = (!fan.nodes.is_empty()).then(|| i as usize % fan.nodes.len());
        env.shards.spawn(i as usize, move |ctx| {
            tokio::task::spawn_local(subscriber(run, fan, ctx.clone(), node));
        });
    }
    run::wait_setup(&env.shards, a.clients, "subscribers", &mut progress).await;
    let joined = stats::sum(env.shards.counters(), |c| &c.ready);

    // The publisher, on the main thread; its counters stay out of the spread.
    env.run.begin_setup();
    let pub_counters = Arc::new(Counters::default());
    let st = Rc::new(Pub::default());
    tokio::task::spawn_local(publisher(
        env.run.clone(),
        fan.clone(),
        pub_counters.clone(),
        st.clone(),
        Plan {
            max,
            rate: a.rate,
            duration,
            limit,
            payload: a.payload,
            drain,
        },
    ));
    while !st.set_up.get() {
        tokio::time::sleep(POLL).await;
    }
    let setup_s = secs(setup_started.elapsed());
    progress.say(|| {
        format!(
            "fanout: {joined}/{} subscribers joined, publisher {}",
            a.clients,
            if st.ok.get() { "ready" } else { "failed" }
        )
    });

    let mut meter = Meter::new(env.server.clone());
    let drain_max = a.drain_max.map(Duration::from_secs_f64);
    meter.start();
    let go = Instant::now();
    env.run.go.send_replace(true);
    let delivered = || stats::sum(env.shards.counters(), |c| &c.delivered);
    while st.ok.get() && !st.done.get() {
        progress.tick(|| {
            let secs = go.elapsed().as_secs_f64().max(1e-3);
            format!(
                "fanout: sent {} ({:.0}/s), delivered {} ({:.0}/s)",
                st.sent.get(),
                st.sent.get() as f64 / secs,
                delivered(),
                delivered() as f64 / secs
            )
        });
        tokio::time::sleep(POLL).await;
    }
    let published = Instant::now();

    // Drain: until everything arrived, or nothing moved for `drain`.
    let mut last = (u64::MAX, u64::MAX);
    let mut moved = Instant::now();
    let drained = loop {
        let d = delivered();
        let answered = st.acked.get() + st.refused.get();
        if d >= st.sent.get() * joined && answered >= st.sent.get() {
            break true;
        }
        if drain_max.is_some_and(|m| published.elapsed() >= m) {
            break false;
        }
        if (d, answered) != last {
            last = (d, answered);
            moved = Instant::now();
        } else if moved.elapsed() >= drain {
            break false;
        }
        progress.tick(|| format!("fanout: draining, delivered {d}"));
        tokio::time::sleep(POLL).await;
    };
    let drain_s = secs(published.elapsed());
    meter.end();
    run::stop_and_wait(&env.run, &env.shards, a.clients).await;
    // The publisher ends with the same stop (its close is bounded by 2 s).
    let closing = Instant::now();
    while pub_counters.finished.load(Ordering::Relaxed) == 0
        && closing.elapsed() < Duration::from_secs(3)
    {
        tokio::time::sleep(POLL).await;
    }

    let c = env.shards.counters();
    let delivered = stats::sum(c, |x| &x.delivered);
    let sent = st.sent.get();
    let expected = sent * joined;
    let window_ns =
        stats::sum_max(c, |x| &x.last_delivery_ns).saturating_sub(st.first_send_ns.get());
    let hist = env.shards.histogram().await;
    let mut out = head;
    let fields: Map<String, Value> = serde_json::from_value(json!({
        "wall_s": secs(meter.wall()),
        "setup_s": setup_s,
        "publish_s": secs(published - go),
        "drain_s": drain_s,
        "drained": drained,
        "stalled": st.stalled.get(),
        "subscribers": a.clients,
        "subscribers_joined": joined,
        "publisher_ok": st.ok.get(),
        "sent": sent,
        "expected": expected,
        "delivered": delivered,
        "undelivered": expected.saturating_sub(delivered),
        "excess": delivered.saturating_sub(expected),
        "out_of_order": stats::sum(c, |x| &x.out_of_order),
        "other_events": stats::sum(c, |x| &x.other_events),
        "publish_acked": st.acked.get(),
        "publish_refused": st.refused.get(),
        // n sends span n − 1 intervals.
        "sent_per_s": rate(
            sent.saturating_sub(1),
            st.last_send_ns.get().saturating_sub(st.first_send_ns.get()) as f64 / 1e9,
        ),
        "delivered_per_s": rate(delivered, window_ns as f64 / 1e9),
        "latency_us": latency_json(&hist),
        "publisher_worker": st.worker.get(),
    }))
    .unwrap_or_default();
    out.extend(fields);
    let mut all = c.to_vec();
    all.push(pub_counters);
    run::common(&all, c, &mut out);
    if let Some(pw) = st.worker.get() {
        let same = c
            .iter()
            .map(|x| x.workers[pw].load(Ordering::Relaxed))
            .sum::<u64>();
        out.insert(
            "cross_worker_subscribers".into(),
            json!(joined.saturating_sub(same)),
        );
    }
    if !sub_ports.is_empty() {
        let hists = env.shards.node_histograms().await;
        nodes_json(
            c,
            sub_ports,
            env.run.target.addr.port(),
            sent,
            &hists,
            &mut out,
        );
    }
    meter.fill(&mut out, delivered);
    meter.fill_rss(&mut out);
    Value::Object(out)
}

/// `cross-node`'s own fields: `nodes` (per sub port: subscribers, deliveries, latency),
/// `publisher_port` and `cross_node_subscribers`.
fn nodes_json(
    c: &[Arc<Counters>],
    ports: &[u16],
    publisher_port: u16,
    sent: u64,
    hists: &[hdrhistogram::Histogram<u64>],
    out: &mut Map<String, Value>,
) {
    let mut nodes = Vec::new();
    let mut elsewhere = 0;
    for (i, port) in ports.iter().enumerate() {
        let joined = stats::sum(c, |x| &x.node_ready[i]);
        let delivered = stats::sum(c, |x| &x.node_delivered[i]);
        if *port != publisher_port {
            elsewhere += joined;
        }
        nodes.push(json!({
            "port": port,
            "subscribers_joined": joined,
            "expected": sent * joined,
            "delivered": delivered,
            "undelivered": (sent * joined).saturating_sub(delivered),
            "latency_us": hists.get(i).map_or(Value::Null, latency_json),
        }));
    }
    out.insert("nodes".into(), Value::Array(nodes));
    out.insert("publisher_port".into(), json!(publisher_port));
    out.insert("cross_node_subscribers".into(), json!(elsewhere));
}

/// One subscriber: set up (on node `node` of a cross-node run), then count deliveries
/// until stopped.
async fn subscriber(run: Arc<Run>, fan: Arc<Fan>, ctx: Rc<ShardCtx>, node: Option<usize>) {
    let c = &ctx.counters;
    let target = node.map_or(&run.target, |n| &fan.nodes[n]);
    if let Some(mut conn) = setup_to(&run, target, c, None, Some(&fan.room)).await {
        if let Some(w) = &fan.window {
            w.add_subscriber();
        }
        if let Some(n) = node {
            c.node_ready[n].fetch_add(1, Ordering::Relaxed);
            let mut hists = ctx.node_hists.borrow_mut();
            if hists.len() <= n {
                hists.resize_with(n + 1, stats::histogram);
            }
        }
        match read_loop(&mut conn, &ctx, fan.window.as_ref(), &run, node).await {
            Ok(()) => conn.close().await,
            Err(kind) => {
                c.fail(kind);
                if let Some(w) = &fan.window {
                    w.lost_subscriber();
                }
            }
        }
    }
    c.finished.fetch_add(1, Ordering::Relaxed);
}

/// The subscriber's hot loop: a `msg` is recognised by its prefix and read for `t` and
/// `s` only; anything else goes through `wire::classify`.
async fn read_loop(
    conn: &mut Conn,
    ctx: &ShardCtx,
    window: Option<&Window>,
    run: &Run,
    node: Option<usize>,
) -> Result<(), FailKind> {
    let c = &*ctx.counters;
    let mut stop = pin!(flag(run.stop.subscribe()));
    let mut last_seq: Option<u64> = None;
    loop {
        // The socket first: the stop future is polled only when it has nothing to
        // read (or tokio's budget forces a yield), not once per delivery.
        let next = tokio::select! {
            biased;
            m = conn.ws.next() => m,
            _ = &mut stop => return Ok(()),
        };
        let text = match next {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(_))) | None => return Err(FailKind::Closed),
            Some(Ok(Message::Binary(_))) => {
                c.fail(FailKind::Protocol);
                continue;
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(read_error(&e)),
        };
        let s = text.as_str();
        if s.as_bytes().starts_with(MSG_PREFIX) {
            let event = &s[2..];
            match wire::timed_fields(event, "msg") {
                Some((t, seq)) => {
                    let now = now_ns();
                    let us = (now.saturating_sub(t) / 1000).max(1);
                    ctx.hist.borrow_mut().saturating_record(us);
                    if let Some(n) = node {
                        // Sized at setup.
                        if let Some(h) = ctx.node_hists.borrow_mut().get_mut(n) {
                            h.saturating_record(us);
                        }
                        c.node_delivered[n].fetch_add(1, Ordering::Relaxed);
                    }
                    c.delivered.fetch_add(1, Ordering::Relaxed);
                    c.last_delivery_ns.store(now, Ordering::Relaxed);
                    match last_seq {
                        Some(l) if seq <= l => {
                            c.out_of_order.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => last_seq = Some(seq),
                    }
                    if let Some(w) = window {
                        w.received(seq);
                    }
                }
                None => c.fail(FailKind::Protocol),
            }
            continue;
        }
        match wire::classify(s) {
            Kind::Ping => conn.send(PONG).await?,
            Kind::Disconnect => return Err(FailKind::Closed),
            Kind::Event(_) => {
                c.other_events.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }
}

/// What the publisher is to do.
#[derive(Debug, Clone, Copy)]
struct Plan {
    max: bool,
    rate: f64,
    duration: Duration,
    limit: u64,
    payload: usize,
    /// Max mode: how long the window may stay full before publishing gives up.
    drain: Duration,
}

/// The publisher: set up, wait for go, publish, keep reading acks until stopped.
async fn publisher(run: Arc<Run>, fan: Arc<Fan>, counters: Arc<Counters>, st: Rc<Pub>, plan: Plan) {
    let conn = setup(&run, &counters, None, Some(&fan.room)).await;
    st.ok.set(conn.is_some());
    st.set_up.set(true);
    let Some(mut conn) = conn else {
        st.done.set(true);
        counters.finished.fetch_add(1, Ordering::Relaxed);
        return;
    };
    st.worker.set(wire::sid_worker(&conn.sid));
    flag(run.go.subscribe()).await;
    let result = publish(&mut conn, &fan, &run, &counters, &st, plan).await;
    st.done.set(true);
    match result {
        Ok(()) => conn.close().await,
        Err(kind) => counters.fail(kind),
    }
    counters.finished.fetch_add(1, Ordering::Relaxed);
}

async fn publish(
    conn: &mut Conn,
    fan: &Fan,
    run: &Run,
    counters: &Counters,
    st: &Pub,
    plan: Plan,
) -> Result<(), FailKind> {
    let base = conn.ack_id();
    let mut stop = pin!(flag(run.stop.subscribe()));
    let started = Instant::now();
    let deadline = tokio::time::Instant::from_std(started + plan.duration);
    let mut expired = pin!(tokio::time::sleep_until(deadline));
    // Rate mode sends what is due by the elapsed time at each tick, so the tick only
    // sets the granularity: one message interval, within 1 ms ..= 1 s.
    let period = if plan.max || plan.rate <= 0.0 {
        Duration::from_millis(100)
    } else {
        Duration::try_from_secs_f64(1.0 / plan.rate)
            .unwrap_or(Duration::from_secs(1))
            .clamp(Duration::from_millis(1), Duration::from_secs(1))
    };
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut publishing = plan.limit > 0;
    if !publishing {
        st.done.set(true);
    }
    let mut window_moved = (0u64, Instant::now());
    let capacity = plan.payload + 40;
    loop {
        let window = fan.window.as_ref().filter(|_| publishing);
        tokio::select! {
            biased;
            _ = &mut stop => return Ok(()),
            m = conn.ws.next() => {
                let text = match m {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(_))) | None => return Err(FailKind::Closed),
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return Err(read_error(&e)),
                };
                match wire::classify(&text) {
                    Kind::Ack(id, body) if id >= base && id - base < st.sent.get() => {
                        match wire::ack_status(body) {
                            AckStatus::Ok | AckStatus::Plain => st.acked.set(st.acked.get() + 1),
                            AckStatus::Refused => {
                                st.refused.set(st.refused.get() + 1);
                                counters.fail(FailKind::Refused);
                            }
                        }
                    }
                    Kind::Ack(..) => counters.fail(FailKind::Protocol),
                    Kind::Event(e) if wire::is_event(e, "$error") => {
                        st.refused.set(st.refused.get() + 1);
                        counters.fail(FailKind::Refused);
                    }
                    Kind::Ping => conn.send(PONG).await?,
                    Kind::Disconnect => return Err(FailKind::Closed),
                    _ => {}
                }
            }
            _ = &mut expired, if publishing => {
                publishing = false;
                st.done.set(true);
            }
            _ = room(window, st.sent.get()), if window.is_some() => {
                let w = window.expect("guarded by the branch condition");
                let in_flight = st.sent.get().saturating_sub(w.completed());
                let room = w.size().saturating_sub(in_flight);
                let n = room.min(plan.limit.saturating_sub(st.sent.get()));
                for _ in 0..n {
                    let seq = st.sent.get();
                    w.sending(seq);
                    emit(conn, st, base, seq, capacity, plan.payload).await?;
                }
                conn.ws.flush().await.map_err(|_| FailKind::Closed)?;
                if st.sent.get() >= plan.limit {
                    publishing = false;
                    st.done.set(true);
                }
            }
            _ = tick.tick(), if publishing => {
                if let Some(w) = &fan.window {
                    // Max mode: this tick only watches for a stalled window.
                    let c = w.completed();
                    if c != window_moved.0 {
                        window_moved = (c, Instant::now());
                    } else if window_moved.1.elapsed() >= plan.drain
                        && st.sent.get().saturating_sub(c) >= w.size()
                    {
                        st.stalled.set(true);
                        publishing = false;
                        st.done.set(true);
                    }
                    continue;
                }
                // Rate mode: send every message due by now (the first at t = 0).
                let due = ((started.elapsed().as_secs_f64() * plan.rate) as u64 + 1).min(plan.limit);
                let before = st.sent.get();
                while st.sent.get() < due {
                    let seq = st.sent.get();
                    emit(conn, st, base, seq, capacity, plan.payload).await?;
                }
                if st.sent.get() != before {
                    conn.ws.flush().await.map_err(|_| FailKind::Closed)?;
                }
                if st.sent.get() >= plan.limit {
                    publishing = false;
                    st.done.set(true);
                }
            }
        }
    }
}

/// Queue one `msg` (flushed by the caller).
async fn emit(
    conn: &mut Conn,
    st: &Pub,
    base: u64,
    seq: u64,
    capacity: usize,
    payload: usize,
) -> Result<(), FailKind> {
    let mut text = String::with_capacity(capacity);
    let t = now_ns();
    wire::timed_emit(&mut text, "msg", Some(base + seq), t, seq, payload);
    if seq == 0 {
        st.first_send_ns.set(t);
    }
    st.last_send_ns.set(t);
    st.sent.set(seq + 1);
    conn.ws
        .feed(Message::Text(text.into()))
        .await
        .map_err(|_| FailKind::Closed)
}

/// Wait for room in the window; never ready without one (the branch is disabled then).
async fn room(window: Option<&Window>, sent: u64) {
    match window {
        Some(w) => w.room(sent).await,
        None => std::future::pending().await,
    }
}
