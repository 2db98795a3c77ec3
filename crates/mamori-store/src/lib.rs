//! mamori-store: the shared store of customers' access history.
//!
//! Storage is behind capability traits, one per capability ([`EventWriter`], [`HistoryReader`],
//! [`Retention`], [`DecisionLog`], [`AuditLog`], …), so the embedded SQLite store
//! ([`sqlite::SqliteStore`], the default, one process) and the PostgreSQL store
//! ([`postgres::PgStore`], several processes on one database) run the same test suite
//! ([`testsuite`]). Investigations and pivots over any store are in [`investigate`].

use std::future::Future;

use mamori_core::assess::{Decision, Marks, Past};
use mamori_core::case::{AlertStatus, Outcome, OutcomeError, Resolution, Scope, Trigger};
use mamori_core::event::{Event, Kind};
use mamori_core::history::{Access, IpUse};
use mamori_core::investigate::Procedure;

pub mod assess;
mod decisions;
pub mod hot;
pub mod investigate;
mod notices;
mod passkeys;
mod people;
pub mod postgres;
mod raw;
pub mod sqlite;
mod store;
pub mod testsuite;

pub use postgres::PgStore;
pub use sqlite::SqliteStore;
pub use store::Store;

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

    /// How many batches this store gains from taking at once, when their customers are
    /// disjoint (so that which copy of an event comes first cannot depend on their order). One
    /// for a store with a single writer.
    fn parallel_batches(&self) -> usize {
        1
    }

    /// A bulk load (an import) begins: a store may write months it does not have yet in a way
    /// that is cheaper in bulk and hides them until [`EventWriter::finish_bulk`]. Finishes what
    /// an earlier load left unfinished. By default nothing.
    fn begin_bulk(&self) -> impl Future<Output = Result<()>> + Send {
        std::future::ready(Ok(()))
    }

    /// The bulk load ends (also after a failure): whatever it stored becomes readable. Returns
    /// how many months it had written aside.
    fn finish_bulk(&self) -> impl Future<Output = Result<usize>> + Send {
        std::future::ready(Ok(0))
    }
}

/// Capability: point-in-time history questions.
pub trait HistoryReader: Sync {
    /// How many of an investigation's reads to keep in flight. Two by default (one per core of
    /// the machine the store is on).
    fn parallel_reads(&self) -> usize {
        2
    }

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

    /// As [`HistoryReader::ip_uses`] for networks: windows `(lo, hi, from, to)` over every IP
    /// whose key is in `[lo, hi]`, each use labelled with its window's `lo`.
    fn net_uses(
        &self,
        windows: &[(u128, u128, i64, i64)],
    ) -> impl Future<Output = Result<Vec<(u128, IpUse<String>)>>> + Send;

    /// What [`mamori_core::history::ip_activity`] makes, for `customer`, of the uses of the
    /// key range `[lo, hi]` (an address, or a network) with `from ≤ at < to`: the server's
    /// question, which a store may answer without handing the uses out.
    fn range_activity(
        &self,
        customer: &str,
        range: (u128, u128),
        from: i64,
        to: i64,
    ) -> impl Future<Output = Result<mamori_core::history::IpActivity>> + Send;

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

/// A recorded assessment: the attempted event, the decision and what happened next.
#[derive(Debug, Clone, PartialEq)]
pub struct AssessmentRecord {
    pub assessment_id: String,
    /// When the assessment was made (UTC µs).
    pub created_at: i64,
    pub event: Event,
    pub decision: Decision,
    pub score: u8,
    /// The reasons as the API gave them (JSON array).
    pub reasons: serde_json::Value,
    pub outcome: Option<Outcome>,
    pub outcome_at: Option<i64>,
}

/// An alert with the assessment that opened it.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub alert_id: i64,
    pub opened_at: i64,
    pub trigger: Trigger,
    pub status: AlertStatus,
    pub resolution: Option<Resolution>,
    pub note: Option<String>,
    pub resolved_by: Option<String>,
    pub resolved_at: Option<i64>,
    pub assessment: AssessmentRecord,
}

/// Why a decision-log write was refused.
#[derive(Debug, thiserror::Error)]
pub enum CaseError {
    #[error("no assessment {0}")]
    NoAssessment(String),
    #[error("an assessment {0} already exists")]
    DuplicateAssessment(String),
    #[error("no alert {0}")]
    NoAlert(i64),
    #[error("alert {0} is already resolved")]
    AlreadyResolved(i64),
    #[error(transparent)]
    Outcome(#[from] OutcomeError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Capability: the decision log (assessments, outcomes, alerts and what resolutions teach).
pub trait DecisionLog {
    /// Records an assessment, and in the same transaction stores the attempted event and opens
    /// an alert as [`mamori_core::case::on_decision`] says. Returns the alert's id, if one opened.
    fn record_assessment(
        &self,
        rec: &AssessmentRecord,
    ) -> impl Future<Output = Result<Option<i64>, CaseError>> + Send;

    /// Records several assessments in one transaction (group commit), each as
    /// [`DecisionLog::record_assessment`] would; one result per record, in order.
    #[allow(clippy::type_complexity)]
    fn record_assessments(
        &self,
        recs: &[AssessmentRecord],
    ) -> impl Future<Output = Result<Vec<Result<Option<i64>, CaseError>>>> + Send;

    fn assessment(&self, id: &str)
    -> impl Future<Output = Result<Option<AssessmentRecord>>> + Send;

    /// Records what happened after an assessment, storing the event and opening an alert as
    /// [`mamori_core::case::on_outcome`] says. Returns the alert's id, if one opened.
    fn record_outcome(
        &self,
        id: &str,
        outcome: Outcome,
        at: i64,
    ) -> impl Future<Output = Result<Option<i64>, CaseError>> + Send;

    /// Alerts, newest first, optionally of one status, at most `limit`.
    fn alerts(
        &self,
        status: Option<AlertStatus>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Alert>>> + Send;

    fn alert(&self, id: i64) -> impl Future<Output = Result<Option<Alert>>> + Send;

    /// Resolves an open alert. `legitimate` makes the assessment's IP and device familiar for its
    /// customer; `confirmed_fraud` marks its IP (and stores nothing of the attempt).
    fn resolve_alert(
        &self,
        id: i64,
        resolution: Resolution,
        note: &str,
        by: &str,
        at: i64,
    ) -> impl Future<Output = Result<Alert, CaseError>> + Send;
    /// [`DecisionLog::resolve_alert`] by staff, with its audit entry in the same transaction.
    fn resolve_alert_audited(
        &self,
        id: i64,
        resolution: Resolution,
        note: &str,
        by: &str,
        at: i64,
        audit: &AuditNote,
    ) -> impl Future<Output = Result<Alert, CaseError>> + Send;

    /// What resolutions before `t` say about an attempt of `customer` from `ip`, given the IPs
    /// (keys) the customer used within the policy's fraud window.
    fn marks(
        &self,
        customer: &str,
        ip: Option<u128>,
        t: i64,
        customer_ips: &[u128],
    ) -> impl Future<Output = Result<Marks>> + Send;
}

/// A client system's API key, as listed (the key itself is only shown at creation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub key_id: String,
    pub name: String,
    pub scopes: Vec<Scope>,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
    pub last_used_at: Option<i64>,
}

impl ApiKey {
    /// The scopes as stored and shown: `ingest,assess`.
    pub fn scopes_text(&self) -> String {
        self.scopes
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Capability: API keys, stored as hashes.
pub trait ApiKeys {
    /// Stores a key's record with the SHA-256 of the whole key.
    fn create_key(&self, key: &ApiKey, hash: &[u8; 32]) -> impl Future<Output = Result<()>> + Send;
    fn list_keys(&self) -> impl Future<Output = Result<Vec<ApiKey>>> + Send;
    /// Revokes a key; false if there is no such key.
    fn revoke_key(&self, key_id: &str, at: i64) -> impl Future<Output = Result<bool>> + Send;
    /// A key and its hash by id (revoked ones included).
    fn find_key(
        &self,
        key_id: &str,
    ) -> impl Future<Output = Result<Option<(ApiKey, [u8; 32])>>> + Send;
    /// Notes a use of a key (at most once a minute per key is enough).
    fn touch_key(&self, key_id: &str, at: i64) -> impl Future<Output = Result<()>> + Send;
}

/// An audit entry to append: who did what to what. `detail` is JSON and never holds unmasked
/// personal data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditNote {
    /// `staff:<name>`, `customer:<id>`, `apikey:<id>`, `cli:<user>`, `system`.
    pub actor: String,
    /// `customers.import`, `switch.set`, `personal.reveal`, `credential.change`, `lockout`, …
    pub action: String,
    pub target: String,
    pub detail: serde_json::Value,
}

/// Capability: customers' records and registered destinations.
pub trait Customers {
    /// Adds customers or replaces their personal data (destinations in a record are added to
    /// those registered), with one audit entry for the whole call; returns (added, updated).
    fn put_customers(
        &self,
        records: &[mamori_core::customer::CustomerRecord],
        at: i64,
        audit: &AuditNote,
    ) -> impl Future<Output = Result<(u64, u64)>> + Send;
    /// A customer's record with their effective destinations.
    fn customer(
        &self,
        customer_id: &str,
    ) -> impl Future<Output = Result<Option<mamori_core::customer::CustomerRecord>>> + Send;
    /// How many customers have records.
    fn customer_count(&self) -> impl Future<Output = Result<u64>> + Send;
}

/// Capability: the tamper-evident audit log ([`mamori_auth::audit`]).
pub trait AuditLog {
    /// Appends an entry (chained to the last one, in the same transaction as the head).
    fn audit(
        &self,
        note: &AuditNote,
        at: i64,
    ) -> impl Future<Output = Result<mamori_auth::audit::AuditEntry>> + Send;
    /// Entries from `from_seq` on, in order, at most `limit`.
    fn audit_entries(
        &self,
        from_seq: i64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<mamori_auth::audit::AuditEntry>>> + Send;
    /// The last entry's seq and hash as the head records them.
    fn audit_head(&self) -> impl Future<Output = Result<Option<(i64, String)>>> + Send;
}

/// Capability: customers' passwords, as Argon2id hashes ([`mamori_auth::hash`]).
pub trait Credentials {
    /// Sets a customer's password hash of a kind, audited in the same transaction.
    fn set_password(
        &self,
        customer_id: &str,
        kind: mamori_auth::password::PasswordKind,
        hash: &str,
        at: i64,
        audit: &AuditNote,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Replaces `old` by `new` (the same password hashed with the current costs); false if the
    /// stored hash is no longer `old`.
    fn rehash_password(
        &self,
        customer_id: &str,
        kind: mamori_auth::password::PasswordKind,
        old: &str,
        new: &str,
    ) -> impl Future<Output = Result<bool>> + Send;
    /// The stored hash, if the customer has that password.
    fn password_hash(
        &self,
        customer_id: &str,
        kind: mamori_auth::password::PasswordKind,
    ) -> impl Future<Output = Result<Option<String>>> + Send;
}

/// A customer's TOTP enrolment.
#[derive(Clone, PartialEq, Eq)]
pub struct TotpRecord {
    pub secret: Vec<u8>,
    pub created_at: i64,
    /// `None` until confirmed with a first code.
    pub confirmed_at: Option<i64>,
    /// The step of the last code accepted.
    pub last_step: Option<u64>,
}

impl std::fmt::Debug for TotpRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TotpRecord")
            .field("confirmed_at", &self.confirmed_at)
            .field("last_step", &self.last_step)
            .finish_non_exhaustive()
    }
}

/// Capability: second factors (TOTP and recovery codes).
pub trait SecondFactors {
    /// Starts an enrolment with a new secret (replacing an unconfirmed one); false if the
    /// customer has a confirmed one (replacing it is an MFA change, done by
    /// [`SecondFactors::remove_totp`] first).
    fn begin_totp(
        &self,
        customer_id: &str,
        secret: &[u8],
        at: i64,
    ) -> impl Future<Output = Result<bool>> + Send;
    fn totp(&self, customer_id: &str) -> impl Future<Output = Result<Option<TotpRecord>>> + Send;
    /// Confirms the pending enrolment with the step of a first valid code and stores the
    /// recovery codes' digests (replacing any earlier ones), audited; false if nothing was
    /// pending.
    fn confirm_totp(
        &self,
        customer_id: &str,
        step: u64,
        recovery_digests: &[String],
        at: i64,
        audit: &AuditNote,
    ) -> impl Future<Output = Result<bool>> + Send;
    /// Records `step` as used if it is after the last one used (compare-and-set: of two requests
    /// with the same code, one wins); false otherwise.
    fn use_totp_step(
        &self,
        customer_id: &str,
        step: u64,
    ) -> impl Future<Output = Result<bool>> + Send;
    /// Marks an unused recovery code used; false if there is none with that digest.
    fn use_recovery_code(
        &self,
        customer_id: &str,
        digest: &str,
        at: i64,
        audit: &AuditNote,
    ) -> impl Future<Output = Result<bool>> + Send;
    /// Unused recovery codes.
    fn recovery_codes_left(&self, customer_id: &str) -> impl Future<Output = Result<u64>> + Send;
    /// Removes the TOTP enrolment and recovery codes, audited; false if there was none.
    fn remove_totp(
        &self,
        customer_id: &str,
        at: i64,
        audit: &AuditNote,
    ) -> impl Future<Output = Result<bool>> + Send;
}

/// A passkey ceremony between its two halves ([`mamori_auth::passkey`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasskeyCeremony {
    pub ceremony_id: String,
    pub customer_id: String,
    /// `register` or `authenticate`.
    pub purpose: String,
    /// The ceremony's state (JSON).
    pub state: String,
    pub created_at: i64,
    pub expires_at: i64,
}

/// A customer's registered passkey.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPasskey {
    pub customer_id: String,
    /// base64url, unpadded.
    pub credential_id: String,
    pub name: String,
    /// webauthn-rs's `Passkey` (JSON).
    pub passkey: String,
    /// The signature counter last accepted (0: the authenticator keeps none).
    pub counter: u32,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

/// Capability: passkeys and their ceremonies.
pub trait Passkeys {
    /// Keeps a ceremony's state until it is taken or expires (expired ones are cleared).
    fn save_ceremony(&self, c: &PasskeyCeremony) -> impl Future<Output = Result<()>> + Send;
    /// Takes a ceremony (compare-and-delete): returns it once, only if it belongs to this
    /// customer, is for this purpose and has not expired at `now`; a second take gets `None`.
    /// Another customer's take leaves it for its own.
    fn take_ceremony(
        &self,
        ceremony_id: &str,
        customer_id: &str,
        purpose: &str,
        now: i64,
    ) -> impl Future<Output = Result<Option<PasskeyCeremony>>> + Send;
    /// Adds a passkey, audited; false if its credential id is registered already (to anyone).
    fn add_passkey(
        &self,
        p: &StoredPasskey,
        audit: &AuditNote,
    ) -> impl Future<Output = Result<bool>> + Send;
    /// A customer's passkeys, oldest first.
    fn passkeys(
        &self,
        customer_id: &str,
    ) -> impl Future<Output = Result<Vec<StoredPasskey>>> + Send;
    /// Records an authentication (compare-and-set): stores the passkey, `counter` and the time
    /// of use only if the counter rose past the stored one, or if both are 0 (the authenticator
    /// keeps no counter). False otherwise (a cloned authenticator, or one answer used twice), or
    /// if the customer has no such passkey.
    fn use_passkey(
        &self,
        customer_id: &str,
        credential_id: &str,
        passkey: &str,
        counter: u32,
        at: i64,
    ) -> impl Future<Output = Result<bool>> + Send;
    /// Removes a passkey, audited; false if there was none.
    fn remove_passkey(
        &self,
        customer_id: &str,
        credential_id: &str,
        at: i64,
        audit: &AuditNote,
    ) -> impl Future<Output = Result<bool>> + Send;
}

/// A notice to a customer in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub notice_id: i64,
    pub customer_id: String,
    /// `lockout`, `destination_change`, `withdrawal`, `mfa_change`, `withdrawals_frozen`, …
    pub kind: String,
    /// What the message says (masked; no secrets).
    pub detail: serde_json::Value,
    /// The assessment it tells of, if any (a report from its link labels it as fraud).
    pub assessment_id: Option<String>,
    pub created_at: i64,
    pub sent_at: Option<i64>,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<i64>,
}

/// Attempts at sending a notice before the outbox gives up on it.
pub const MAX_NOTICE_ATTEMPTS: u32 = 10;

impl Notice {
    /// `sent`, `waiting` (not tried yet), `failing` (will be tried again) or `given_up`.
    pub fn state(&self) -> &'static str {
        if self.sent_at.is_some() {
            "sent"
        } else if self.attempts >= MAX_NOTICE_ATTEMPTS {
            "given_up"
        } else if self.attempts > 0 {
            "failing"
        } else {
            "waiting"
        }
    }
}

/// Which notices to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NoticeFilter {
    pub customer_id: Option<String>,
    /// Only those the outbox gave up on.
    pub given_up: bool,
    pub limit: usize,
}

/// Capability: the outbox of notices to customers.
pub trait Outbox {
    /// Puts a notice in the outbox.
    fn queue_notice(
        &self,
        customer_id: &str,
        kind: &str,
        detail: &serde_json::Value,
        assessment_id: Option<&str>,
        at: i64,
    ) -> impl Future<Output = Result<i64>> + Send;
    /// Notices due at `now`: not sent, not given up, not waiting for a retry; oldest first.
    fn due_notices(
        &self,
        now: i64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Notice>>> + Send;
    /// Marks a notice sent (`error` None), or records a failed attempt and when to try again
    /// (after [`MAX_NOTICE_ATTEMPTS`] attempts it is given up whatever `retry_at` says).
    fn notice_result(
        &self,
        notice_id: i64,
        at: i64,
        error: Option<&str>,
        retry_at: i64,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Notices, newest first.
    fn notices(&self, filter: &NoticeFilter) -> impl Future<Output = Result<Vec<Notice>>> + Send;
}

/// A "this wasn't me" link sent in a notice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportLink {
    /// SHA-256 of the token in the link.
    pub token_digest: String,
    pub customer_id: String,
    pub notice_id: i64,
    pub notice_kind: String,
    pub assessment_id: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
    pub used_at: Option<i64>,
}

/// What a customer's report did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reported {
    pub customer_id: String,
    /// The alert now resolved as confirmed fraud, if the link named an assessment.
    pub alert_id: Option<i64>,
    /// Destinations refused because the reported assessment registered them.
    pub destinations_refused: u64,
}

/// Why a report link did nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReportRefusal {
    #[error("unknown link")]
    Unknown,
    #[error("the link was already used")]
    Used,
    #[error("the link has expired")]
    Expired,
}

/// Capability: customers' "this wasn't me" reports.
pub trait Reports {
    /// Stores a link about to be sent.
    fn add_report_link(&self, link: &ReportLink) -> impl Future<Output = Result<()>> + Send;
    /// A link by its token's digest.
    fn report_link(
        &self,
        token_digest: &str,
    ) -> impl Future<Output = Result<Option<ReportLink>>> + Send;
    /// The customer's report, in one transaction: uses the link up, freezes the customer's
    /// withdrawals, labels the reported assessment as fraud (its alert, opened with trigger
    /// `customer_report` if it had none, resolved `confirmed_fraud` by `customer:ID`, so its IP
    /// is marked for the engine), refuses a destination it registered, queues a notice and
    /// writes `audit`.
    fn report(
        &self,
        token_digest: &str,
        now: i64,
        audit: &AuditNote,
    ) -> impl Future<Output = Result<Result<Reported, ReportRefusal>>> + Send;
}

/// A customer's withdrawals frozen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Freeze {
    pub customer_id: String,
    pub frozen_at: i64,
    /// `customer_report` or `staff`.
    pub source: String,
    pub actor: String,
    pub reason: String,
}

/// Capability: frozen withdrawals.
pub trait Freezes {
    /// Freezes the customer's withdrawals (kept as it was if already frozen), with a notice to
    /// the customer, audited; false if it was already frozen.
    fn freeze(&self, f: &Freeze, audit: &AuditNote) -> impl Future<Output = Result<bool>> + Send;
    /// Lifts a freeze, audited; false if there was none.
    fn unfreeze(
        &self,
        customer_id: &str,
        at: i64,
        audit: &AuditNote,
    ) -> impl Future<Output = Result<bool>> + Send;
    /// The customer's freeze, if frozen.
    fn frozen(&self, customer_id: &str) -> impl Future<Output = Result<Option<Freeze>>> + Send;
}

/// Capability: consecutive password failures (brute force).
pub trait Lockouts {
    /// Consecutive failures and the last one's time, if any.
    fn failures(
        &self,
        customer_id: &str,
        kind: mamori_auth::password::PasswordKind,
    ) -> impl Future<Output = Result<Option<(u32, i64)>>> + Send;
    /// Counts one more failure; returns the consecutive failures now.
    fn add_failure(
        &self,
        customer_id: &str,
        kind: mamori_auth::password::PasswordKind,
        at: i64,
    ) -> impl Future<Output = Result<u32>> + Send;
    /// Forgets the failures (a success, or staff unlocking: then audited).
    fn clear_failures(
        &self,
        customer_id: &str,
        kind: mamori_auth::password::PasswordKind,
        at: i64,
        audit: Option<&AuditNote>,
    ) -> impl Future<Output = Result<bool>> + Send;
    /// Records a lockout: the audit entry and a notice to the customer, in one transaction.
    fn note_lockout(
        &self,
        customer_id: &str,
        detail: &serde_json::Value,
        at: i64,
        audit: &AuditNote,
    ) -> impl Future<Output = Result<()>> + Send;
}

/// A step-up token as issued ([`mamori_auth::stepup`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepUpGrant {
    pub token_digest: String,
    pub customer_id: String,
    pub operation: String,
    pub params_digest: String,
    pub method: String,
    pub created_at: i64,
    pub expires_at: i64,
}

/// Capability: step-up tokens.
pub trait StepUps {
    /// Stores a new token, audited.
    fn issue_stepup(
        &self,
        grant: &StepUpGrant,
        audit: &AuditNote,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Consumes the token if it is unused, unexpired at `now` and bound to exactly this customer,
    /// operation and parameters; otherwise why not. Of two consumers of one token, one wins.
    fn consume_stepup(
        &self,
        token_digest: &str,
        customer_id: &str,
        operation: &str,
        params_digest: &str,
        now: i64,
    ) -> impl Future<Output = Result<Result<StepUpGrant, mamori_auth::stepup::Refusal>>> + Send;
}

/// A registered destination with where it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredDestination {
    pub destination: mamori_core::event::Destination,
    /// `effective`, `pending_review` (held: staff decide), or `refused` (staff confirmed fraud).
    pub status: String,
    pub registered_at: i64,
    /// Withdrawals to it may start then (the cooling-off period); `None`: at once.
    pub effective_at: Option<i64>,
    pub assessment_id: Option<String>,
}

/// Capability: destinations registered through the destination-change flow.
pub trait Destinations {
    /// Registers a destination decided by an assessment, in one transaction: the assessment (its
    /// event when allowed, its alert when held), the destination with its status, a notice to
    /// the customer and the audit entry. Killed midway, nothing of it stays. Returns the alert
    /// opened, if any.
    fn register_destination(
        &self,
        rec: &AssessmentRecord,
        destination: &RegisteredDestination,
        notice: &serde_json::Value,
        audit: &AuditNote,
    ) -> impl Future<Output = Result<Option<i64>, CaseError>> + Send;
    /// The customer's destinations, oldest first.
    fn destinations(
        &self,
        customer_id: &str,
    ) -> impl Future<Output = Result<Vec<RegisteredDestination>>> + Send;
}

/// Checks the whole audit log, page by page: every entry's hash and link, the last against the
/// stored head and, if given, that the log still holds a head recorded elsewhere earlier.
/// Returns the entries checked and the head, or what is broken.
pub async fn verify_audit<S: AuditLog>(
    s: &S,
    recorded: Option<(i64, &str)>,
) -> Result<Result<(i64, Option<(i64, String)>), String>> {
    let head = s.audit_head().await?;
    let mut v = mamori_auth::audit::Verifier::default();
    let mut holds_recorded = false;
    let mut from = 1;
    loop {
        let page = s.audit_entries(from, 10_000).await?;
        let Some(last) = page.last() else { break };
        from = last.seq + 1;
        for e in &page {
            if let Err(err) = v.push(e) {
                return Ok(Err(err.to_string()));
            }
            holds_recorded |= recorded.is_some_and(|(s, h)| s == e.seq && h == e.hash);
        }
    }
    let n = match v.finish(head.as_ref().map(|(s, h)| (*s, h.as_str()))) {
        Ok(n) => n,
        Err(err) => return Ok(Err(err.to_string())),
    };
    if let Some((s, _)) = recorded
        && !holds_recorded
    {
        return Ok(Err(format!(
            "entry {s} is missing or differs from the head recorded earlier"
        )));
    }
    Ok(Ok((n, head)))
}

/// Capability: the emergency switches.
pub trait Switches {
    /// Sets a procedure on or off on a channel, audited in the same transaction.
    fn set_switch(
        &self,
        state: &mamori_core::customer::SwitchState,
        audit: &AuditNote,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Every switch that was ever set (those not listed are on).
    fn switches(
        &self,
    ) -> impl Future<Output = Result<Vec<mamori_core::customer::SwitchState>>> + Send;
}

/// A revision of the engine's policy set at run time (the `[policy]` of mamori.toml until one is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPolicy {
    /// Grows by one with every change, from 1.
    pub revision: i64,
    /// The policy as TOML (the keys of mamori.toml's `[policy]`).
    pub body: String,
    pub set_at: i64,
    pub set_by: String,
    pub reason: String,
}

/// Capability: the policy the engine applies, shared by every node on the store.
pub trait Policies {
    /// Stores a new revision, audited in the same transaction; returns its number.
    fn set_policy(
        &self,
        body: &str,
        at: i64,
        set_by: &str,
        reason: &str,
        audit: &AuditNote,
    ) -> impl Future<Output = Result<i64>> + Send;
    /// The latest revision, if any was set.
    fn policy(&self) -> impl Future<Output = Result<Option<StoredPolicy>>> + Send;
    /// The latest revision's number only: what nodes poll.
    fn policy_revision(&self) -> impl Future<Output = Result<Option<i64>>> + Send;
}

/// Capability: retention.
pub trait Retention {
    /// Deletes events that occurred before `t`; returns how many.
    fn purge_before(&self, t: i64) -> impl Future<Output = Result<u64>> + Send;
}
