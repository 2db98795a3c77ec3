//! mamori-store: the shared store of customers' access history.
//!
//! Storage is behind capability traits, one per capability ([`EventWriter`], [`HistoryReader`],
//! [`Retention`]), so the embedded SQLite store ([`sqlite::SqliteStore`], the default) and the
//! PostgreSQL store of a later release run the same test suite ([`testsuite`]). Investigations and
//! pivots over any store are in [`investigate`].

use std::future::Future;

use mamori_core::assess::Past;
use mamori_core::event::{Event, Kind};
use mamori_core::history::{Access, IpUse};
use mamori_core::investigate::Procedure;

pub mod assess;
pub mod investigate;
mod raw;
pub mod sqlite;
pub mod testsuite;

pub use sqlite::SqliteStore;

/// Storage errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("cannot open the store at {path}: {source}")]
    Open { path: String, source: sqlx::Error },
    #[error("SQLite error {code}: {message}")]
    Sqlite { code: i32, message: String },
    #[error("a store task failed: {0}")]
    Task(String),
    #[error("corrupt row in the store ({0}); run an integrity check")]
    Corrupt(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// What one insert of a batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Inserted {
    /// New events stored.
    pub inserted: u64,
    /// Events whose customer and `event_id` were already stored (or repeated within the batch).
    pub duplicates: u64,
}

impl std::ops::AddAssign for Inserted {
    fn add_assign(&mut self, o: Self) {
        self.inserted += o.inserted;
        self.duplicates += o.duplicates;
    }
}

/// An event on an IP, as IP questions need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpEvent {
    /// [`mamori_core::net::ip_key`] of the IP.
    pub ip: u128,
    pub at: i64,
    pub customer_id: String,
    pub kind: Kind,
}

/// A login as the population's habits count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct LoginFeatures {
    pub at: i64,
    /// [`mamori_core::net::ip_key`] of the IP.
    pub ip: Option<u128>,
    /// [`mamori_core::assess::ua_family_hash`] of the user agent.
    pub ua: Option<u64>,
}

/// Capability: storing events, idempotently by `(customer_id, event_id)`: the first copy wins.
pub trait EventWriter {
    /// Stores a batch atomically: either every new event of the batch is stored or none is.
    fn insert_events(&self, events: &[Event]) -> impl Future<Output = Result<Inserted>> + Send;
}

/// Capability: point-in-time history questions.
pub trait HistoryReader: Sync {
    /// Accesses of the given customers with `from ≤ at < to` (every kind, failed logins included),
    /// each with its customer id, in no particular order.
    fn customer_accesses(
        &self,
        customers: &[&str],
        from: i64,
        to: i64,
    ) -> impl Future<Output = Result<Vec<(String, Access)>>> + Send;

    /// Events from IPs whose keys are in `[lo, hi]` (one address or a CIDR block) with
    /// `from ≤ at < to`.
    fn ip_range_events(
        &self,
        lo: u128,
        hi: u128,
        from: i64,
        to: i64,
    ) -> impl Future<Output = Result<Vec<IpEvent>>> + Send;

    /// Uses of IPs that answer questions over windows `(ip key, from, to)`, `from ≤ at < to`:
    /// for every window, the uses of its IP dated inside it add up to exactly the IP's events in
    /// it. A use is one event, or one customer's whole UTC day on the IP (dated at the day's
    /// start) for a day that no window edge of that IP falls inside. Uses outside every window
    /// may be included.
    fn ip_uses(
        &self,
        windows: &[(u128, i64, i64)],
    ) -> impl Future<Output = Result<Vec<(u128, IpUse<String>)>>> + Send;

    /// Events of a kind with `from ≤ at < to`, on every channel, as procedures.
    fn procedures(
        &self,
        kind: Kind,
        from: i64,
        to: i64,
    ) -> impl Future<Output = Result<Vec<Procedure>>> + Send;

    /// One customer's events with `from ≤ at < to` as the decision engine reads them, in time
    /// order (the same records [`Past::of`] makes of [`HistoryReader::customer_events`]).
    fn customer_past(
        &self,
        customer: &str,
        from: i64,
        to: i64,
    ) -> impl Future<Output = Result<Vec<Past>>> + Send;

    /// Every successful login with `from ≤ at < to`, in no particular order: the population's
    /// habits for the statistical login score.
    fn login_features(
        &self,
        from: i64,
        to: i64,
    ) -> impl Future<Output = Result<Vec<LoginFeatures>>> + Send;

    /// Complete events of one customer with `from ≤ at < to`, in time order.
    fn customer_events(
        &self,
        customer: &str,
        from: i64,
        to: i64,
    ) -> impl Future<Output = Result<Vec<Event>>> + Send;

    /// Number of stored events.
    fn count_events(&self) -> impl Future<Output = Result<u64>> + Send;
}

/// Capability: retention.
pub trait Retention {
    /// Deletes events that occurred before `t`; returns how many.
    fn purge_before(&self, t: i64) -> impl Future<Output = Result<u64>> + Send;
}
