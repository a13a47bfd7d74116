//! The bus: how the relay reaches sockets, on this process and on the host's other
//! worker processes.
//!
//! The relay never touches room storage itself; it asks an [`Adapter`] (the contract, in
//! [`bus`]) to register sockets, change memberships, count and list members, and fan a
//! packet out to a [`Target`]. [`local::LocalAdapter`] keeps everything in this process;
//! [`peer::PeerAdapter`] adds links to the other workers (in the [`wire`] format) and
//! [`replica`]s of their memberships ([`link`] says why a link ends), and overrides only what crosses the process
//! boundary. A Redis adapter is to keep the same trait, which is why the queries are
//! asynchronous even though the answers on one host are not.
//!
//! Fan-out takes an [`Outgoing`](crate::engine::Outgoing) that was encoded once;
//! delivering it clones only reference-counted bytes, and each socket's bounded queue
//! decides what happens to a reader that does not keep up.
//!
//! The bus sees only what it needs of the layers above: nothing here imports
//! `crate::relay`; the relay hands it [`Recipient`]s and gets [`Member`]s and
//! [`RoomCount`]s back. This file only declares and re-exports: no module below imports
//! it.

pub mod bus;
pub mod link;
pub mod local;
pub mod occupancy;
pub mod peer;
pub mod replica;
pub mod wire;

pub use bus::{
    Adapter, Audience, DepartureHook, Departures, Kept, Logged, Member, ParkRecord, Parking,
    ParkingHook, Pick, Publish, Published, Recipient, RecordHook, Recorded, RecoverySource,
    RoomCount, Stamp, Stamped, Target, is_listed,
};
pub use local::LocalAdapter;
pub use peer::PeerAdapter;
