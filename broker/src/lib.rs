//! The deskwire signalling broker: pairs a controller (the technician) with a target through
//! a short connection code, then relays their WebRTC offer and answer. It never sees media.
//!
//! ```text
//! controller --create_session--> broker --session_created {code}--> controller
//! target     --join {code}-----> broker --joined--> target, --peer_joined--> controller
//! either     --relay {signal}--> broker --relay {signal}--> the other
//! ```
//!
//! Layout: `codes` (sans-IO code book: issue, redeem, tombstones) and `switchboard` (sans-IO
//! protocol rules) take `now` as an argument and own no socket; `server` drives them with
//! axum and tokio. [`run`] is the entry point; the `deskwire-broker` binary wraps it.
#![deny(missing_docs)]

mod clock;
mod codes;
mod config;
mod switchboard;

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{BrokerConfig, ConfigError};
