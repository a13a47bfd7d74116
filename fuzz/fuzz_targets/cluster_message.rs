//! A message read from the cluster's Redis: msgpack or JSON, read as a broadcast and as a
//! request of the pub/sub adapter (`cluster::format`) and as a message of the streams
//! adapter, from pub/sub and as a stream entry whose four fields are the input split at
//! 0xff bytes (`cluster::message`), the way the gateway does. No input panics; the nesting is
//! bounded; and an event that is read back out of a broadcast encodes again (its
//! placeholders filled with its binaries) and reads back to the same event (unless the
//! message held a map that looks like a placeholder: socket.io's own format cannot tell
//! those apart either).

#![no_main]

use iorelay_fuzz::cluster::format;
use iorelay_fuzz::cluster::message::Message;
use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Message::from_ephemeral(data) {
        let _ = m.inbound();
    }
    let fields: Vec<&[u8]> = data.splitn(4, |b| *b == 0xff).collect();
    let field = |name: &str| {
        let i = ["uid", "nsp", "type", "data"].iter().position(|f| *f == name)?;
        fields.get(i).copied()
    };
    if let Ok(m) = Message::from_entry(field) {
        let _ = m.inbound();
    }
    let Ok(value) = format::decode(data) else {
        return;
    };
    let _ = format::request(&value);
    let Ok(b) = format::broadcast(&value) else {
        return;
    };
    let args: Vec<Box<RawValue>> =
        serde_json::from_str(&b.event.args).expect("an event's arguments are a JSON array");
    let args: Vec<&RawValue> = args.iter().map(AsRef::as_ref).collect();
    let data = format::data_of(&b.event.name, &args, &b.event.attachments)
        .expect("an event read within the depth bound encodes again");
    let rooms: Vec<&str> = b.to.rooms.iter().map(String::as_str).collect();
    let except: Vec<&str> = b.to.except.iter().map(String::as_str).collect();
    let bytes = format::encode_broadcast(&b.uid, &b.nsp, &data, &rooms, &except);
    let again = format::broadcast(&format::decode(&bytes).expect("re-encoded decodes"))
        .expect("a re-encoded broadcast reads");
    assert_eq!(again.to, b.to);
    assert_eq!(again.event.name, b.event.name);
    if !b.event.args.contains("_placeholder") {
        assert_eq!(again.event, b.event);
    }
});
