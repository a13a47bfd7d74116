//! Micro-benchmarks of the protocol layers on the hot path: Engine.IO packets and polling
//! payloads (`engine::packet`, `engine::payload`), Socket.IO packets and binary attachment
//! reassembly (`socketio::packet`, `socketio::binary`).
//!
//! Inputs are what a chat-like app sends: an event of about 100 bytes, a polling body of
//! 10 such packets, and a binary event with two attachments of 1 KiB. Throughput is in
//! bytes of wire text, so that the numbers read as MB/s too.
//!
//! Run: `cargo bench --bench protocol` (add `-- --quick` for a short run).

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use iorelay::engine::{Frame, Packet as EnginePacket, payload};
use iorelay::relay::reply::outgoing;
use iorelay::socketio::packet::{self as sio, Packet};
use iorelay::socketio::{PacketKind, Reassembler};

/// The arguments of a typical chat event, after its name: 109 bytes of JSON.
const ARGS: &str = r#"{"room":"lobby","user":"alice","text":"hello everyone, this is a fairly ordinary message","ts":1700000000000}"#;

/// The `max_attachments` the relay passes to the decoder by default.
const MAX_ATTACHMENTS: usize = 10;

/// Socket.IO EVENT text with an ack id, as a client's `emit("msg", {...}, ack)` writes it.
fn event_text() -> String {
    format!(r#"21["msg",{ARGS}]"#)
}

/// Socket.IO BINARY_EVENT text announcing two attachments.
fn binary_event_text() -> String {
    format!(
        r#"52-3["file",{ARGS},{{"_placeholder":true,"num":0}},{{"_placeholder":true,"num":1}}]"#
    )
}

/// Two 1 KiB attachments with varied bytes.
fn attachments() -> [Bytes; 2] {
    let a: Vec<u8> = (0..1024u32).map(|i| (i * 7 % 251) as u8).collect();
    let b: Vec<u8> = (0..1024u32).map(|i| (i * 13 % 241) as u8).collect();
    [Bytes::from(a), Bytes::from(b)]
}

fn bytes(n: usize) -> Throughput {
    Throughput::Bytes(u64::try_from(n).expect("input sizes fit in u64"))
}

fn engine_packets(c: &mut Criterion) {
    let mut group = c.benchmark_group("engine/packet");
    let message = format!("4{}", event_text());
    group.throughput(bytes(message.len()));
    group.bench_function("decode_message", |b| {
        b.iter(|| EnginePacket::decode_text(black_box(&message)).expect("valid packet"));
    });
    let packet = EnginePacket::Message(event_text());
    group.bench_function("encode_message", |b| b.iter(|| black_box(&packet).encode()));
    let text = event_text();
    group.bench_function("frame_message", |b| {
        b.iter(|| Frame::message(black_box(&text)));
    });

    // A binary message in its text form (`b` + base64), as polling and `forceBase64`
    // clients send it.
    let [attachment, _] = attachments();
    let mut base64_text = Vec::new();
    payload::encode([&Frame::Binary(attachment)], &mut base64_text);
    let base64_text = String::from_utf8(base64_text).expect("payloads are UTF-8");
    group.throughput(bytes(base64_text.len()));
    group.bench_function("decode_base64_1k", |b| {
        b.iter(|| EnginePacket::decode_text(black_box(&base64_text)).expect("valid packet"));
    });
    group.finish();
}

fn polling_payloads(c: &mut Criterion) {
    let mut group = c.benchmark_group("engine/payload");
    let frames: Vec<Frame> = (0..10).map(|_| Frame::message(&event_text())).collect();
    let mut body = Vec::new();
    payload::encode(&frames, &mut body);
    group.throughput(bytes(body.len()));
    group.bench_function("encode_10_messages", |b| {
        b.iter(|| {
            let mut out = Vec::new();
            payload::encode(black_box(&frames), &mut out);
            out
        });
    });
    group.bench_function("decode_10_messages", |b| {
        b.iter(|| payload::decode(black_box(&body), 16).expect("valid payload"));
    });

    // A binary event on polling: its text, then each attachment as `b` + base64.
    let [a, b2] = attachments();
    let binary = [
        Frame::message(&binary_event_text()),
        Frame::Binary(a),
        Frame::Binary(b2),
    ];
    let mut binary_body = Vec::new();
    payload::encode(&binary, &mut binary_body);
    group.throughput(bytes(binary_body.len()));
    group.bench_function("encode_binary_event_2x1k", |b| {
        b.iter(|| {
            let mut out = Vec::new();
            payload::encode(black_box(&binary), &mut out);
            out
        });
    });
    group.bench_function("decode_binary_event_2x1k", |b| {
        b.iter(|| payload::decode(black_box(&binary_body), 16).expect("valid payload"));
    });
    group.finish();
}

fn socketio_packets(c: &mut Criterion) {
    let mut group = c.benchmark_group("socketio/packet");
    let text = event_text();
    group.throughput(bytes(text.len()));
    group.bench_function("decode_event", |b| {
        b.iter(|| sio::decode(black_box(&text), MAX_ATTACHMENTS).expect("valid event"));
    });
    let packet = sio::decode(&text, MAX_ATTACHMENTS).expect("valid event");
    group.bench_function("event_args", |b| {
        b.iter(|| black_box(&packet).event().expect("an event").args.len());
    });
    group.bench_function("encode_packet", |b| b.iter(|| black_box(&packet).encode()));
    let event = packet.event().expect("an event");
    // What the relay does per event before fan-out: re-encode name and raw args once.
    group.bench_function("encode_event", |b| {
        b.iter(|| sio::encode_event("/", black_box(&event.name), &event.args, None, 0));
    });

    let binary = binary_event_text();
    group.throughput(bytes(binary.len()));
    group.bench_function("decode_binary_event", |b| {
        b.iter(|| sio::decode(black_box(&binary), MAX_ATTACHMENTS).expect("valid event"));
    });
    let binary_packet = sio::decode(&binary, MAX_ATTACHMENTS).expect("valid event");
    let binary_event = binary_packet.event().expect("an event");
    let atts = attachments();
    // Encode once for fan-out: the text plus shared attachment bytes in one queue item.
    group.bench_function("encode_binary_event_outgoing", |b| {
        b.iter(|| {
            let text = sio::encode_event("/", &binary_event.name, &binary_event.args, None, 2);
            outgoing(&text, black_box(&atts))
        });
    });
    group.finish();
}

fn binary_reassembly(c: &mut Criterion) {
    let mut group = c.benchmark_group("socketio/binary");
    let text = binary_event_text();
    let atts = attachments();
    let total = text.len() + atts.iter().map(Bytes::len).sum::<usize>();
    group.throughput(bytes(total));
    // What a connection does per binary event: parse the text, then collect the two
    // binary messages that follow it.
    group.bench_function("receive_event_2x1k", |b| {
        let mut reassembler = Reassembler::default();
        b.iter(|| {
            let packet = sio::decode(black_box(&text), MAX_ATTACHMENTS).expect("valid event");
            let waiting = reassembler.text(packet).expect("in sequence");
            debug_assert!(waiting.is_none());
            let _ = reassembler.binary(atts[0].clone()).expect("in sequence");
            reassembler
                .binary(atts[1].clone())
                .expect("in sequence")
                .expect("complete after the last attachment")
        });
    });
    // The state machine alone, on an already parsed packet.
    let parsed = sio::decode(&text, MAX_ATTACHMENTS).expect("valid event");
    assert_eq!(parsed.kind, PacketKind::BinaryEvent);
    group.bench_function("reassemble_2x1k", |b| {
        let mut reassembler = Reassembler::default();
        b.iter_batched(
            || parsed.clone(),
            |packet: Packet| {
                let _ = reassembler.text(packet).expect("in sequence");
                let _ = reassembler.binary(atts[0].clone()).expect("in sequence");
                reassembler
                    .binary(atts[1].clone())
                    .expect("in sequence")
                    .expect("complete after the last attachment")
            },
            BatchSize::SmallInput,
        );
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = engine_packets, polling_payloads, socketio_packets, binary_reassembly
}
criterion_main!(benches);
