//! mamori-core: the domain of mamori with no I/O.
//!
//! * [`event`]: the access-event contract (kinds, channels, destinations) and its validation.
//! * [`parse`]: JSON Lines and CSV records into [`event::Event`]s, with errors naming the field.
//! * [`time`]: UTC storage, Asia/Tokyo dates and display.
//! * [`net`]: IP keys and the /24 (IPv4) and /48 (IPv6) networks used for familiarity.
//! * [`history`]: the literal, auditor-checkable history columns of a procedure.
//! * [`assess`]: the real-time decision (allow, challenge, hold, block), its policy and reasons.
//! * [`customer`]: customers' records and their CSV form; the emergency switch's procedures.
//! * [`case`]: outcomes, alerts, resolutions and API key scopes: what follows a decision.
//! * [`monitor`]: the literal columns of the daily withdrawal report.
//! * [`verdict`]: the judgement (`ok`, `review`, `suspicious`) and its reason codes.
//! * [`investigate`]: investigation parameters, rows, summary and report rendering.
//! * [`memory`]: an in-memory index of events, for investigations straight from log files.

pub mod assess;
pub mod case;
pub mod customer;
pub mod event;
pub mod history;
pub mod investigate;
pub mod memory;
pub mod monitor;
pub mod net;
pub mod parse;
pub mod report;
pub mod time;
pub mod verdict;

pub use event::{Channel, Destination, Event, Kind, Side};
