//! [`Store`]: the store a command or the server opens, SQLite or PostgreSQL, chosen by the
//! `--db` it is given; every capability trait answers through it.

use std::path::Path;

use mamori_core::assess::{Marks, Past, Policy};
use mamori_core::case::{AlertStatus, Outcome, Resolution};
use mamori_core::event::{Event, Kind};
use mamori_core::history::{Access, IpUse};
use mamori_core::investigate::Procedure;

use crate::*;

/// The embedded SQLite store or a PostgreSQL database.
#[derive(Clone)]
pub enum Store {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

/// `$body` with `$s` bound to the store behind `$store`, whichever kind it is.
impl From<SqliteStore> for Store {
    fn from(s: SqliteStore) -> Self {
        Store::Sqlite(s)
    }
}

impl From<PgStore> for Store {
    fn from(s: PgStore) -> Self {
        Store::Postgres(s)
    }
}

macro_rules! each {
    ($store:expr, $s:ident => $body:expr) => {
        match $store {
            Store::Sqlite($s) => $body,
            Store::Postgres($s) => $body,
        }
    };
}

impl Store {
    /// Whether `db` names a PostgreSQL database (`postgres://…` or `postgresql://…`) rather
    /// than a SQLite file.
    pub fn is_postgres(db: &str) -> bool {
        db.starts_with("postgres://") || db.starts_with("postgresql://")
    }

    /// `db` as logs and messages may show it: a PostgreSQL URL without its password.
    pub fn redacted(db: &str) -> String {
        if !Self::is_postgres(db) {
            return db.to_owned();
        }
        let (scheme, rest) = db.split_once("://").unwrap_or(("", db));
        match rest.split_once('@') {
            Some((user, host)) if user.contains(':') => {
                let name = user.split(':').next().unwrap_or_default();
                format!("{scheme}://{name}:***@{host}")
            }
            _ => db.to_owned(),
        }
    }

    /// Opens the store `db` names: a PostgreSQL URL, else a SQLite file (created if missing).
    pub async fn open(db: &Path) -> Result<Self> {
        Self::open_with(db, false).await
    }

    /// [`Store::open`]; `synchronous_full` asks SQLite to fsync every commit, and PostgreSQL to
    /// commit every transaction as its server is configured. Without it, SQLite runs with
    /// `synchronous = NORMAL` and PostgreSQL commits the server's common assessments
    /// asynchronously ([`PgStore::async_records`]): both survive a crash of mamori, not of the
    /// database's host (nor, on PostgreSQL, of the database server) for the last commits.
    pub async fn open_with(db: &Path, synchronous_full: bool) -> Result<Self> {
        if let Some(url) = db.to_str().filter(|d| Self::is_postgres(d)) {
            return Ok(Store::Postgres(
                PgStore::open(url).await?.async_records(!synchronous_full),
            ));
        }
        Ok(Store::Sqlite(
            SqliteStore::open_with(db, synchronous_full).await?,
        ))
    }

    /// Gives the store a hot cache of `max_rows` events (see [`crate::hot`]); on PostgreSQL the
    /// change feed keeps it current with the other nodes' writes.
    pub async fn with_hot(self, max_rows: usize) -> Result<Self> {
        Ok(match self {
            Store::Sqlite(s) => Store::Sqlite(s.with_hot(max_rows).await?),
            Store::Postgres(s) => Store::Postgres(s.with_hot(max_rows).await?),
        })
    }

    /// Fills the hot cache, when there is one (see [`SqliteStore::preload_hot`] and
    /// [`PgStore::preload_hot`]).
    pub async fn preload_hot(&self, days: i64, policy: &Policy) -> Result<()> {
        match self {
            Store::Sqlite(s) => s.preload_hot(days, policy).await,
            Store::Postgres(s) => s.preload_hot(days, policy).await,
        }
    }

    /// The hot cache's counters, when there is one.
    pub fn hot_stats(&self) -> Option<crate::hot::HotStats> {
        match self {
            Store::Sqlite(s) => s.hot_stats(),
            Store::Postgres(s) => s.hot_stats(),
        }
    }

    /// `sqlite` or `postgres`.
    pub fn backend(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "sqlite",
            Store::Postgres(_) => "postgres",
        }
    }

    /// Closes the store's connections (SQLite checkpoints its WAL).
    pub async fn close(&self) {
        each!(self, s => s.close().await)
    }
}

impl EventWriter for Store {
    async fn insert_events(&self, events: &[Event]) -> Result<Inserted> {
        each!(self, s => s.insert_events(events).await)
    }

    fn parallel_batches(&self) -> usize {
        each!(self, s => s.parallel_batches())
    }

    async fn begin_bulk(&self) -> Result<()> {
        each!(self, s => s.begin_bulk().await)
    }

    async fn finish_bulk(&self) -> Result<usize> {
        each!(self, s => s.finish_bulk().await)
    }
}

impl HistoryReader for Store {
    fn parallel_reads(&self) -> usize {
        each!(self, s => s.parallel_reads())
    }

    async fn customer_accesses(
        &self,
        customers: &[&str],
        from: i64,
        to: i64,
    ) -> Result<Vec<(String, Access)>> {
        each!(self, s => s.customer_accesses(customers, from, to).await)
    }
    async fn ip_range_events(
        &self,
        lo: u128,
        hi: u128,
        from: i64,
        to: i64,
    ) -> Result<Vec<IpEvent>> {
        each!(self, s => s.ip_range_events(lo, hi, from, to).await)
    }
    async fn ip_uses(&self, windows: &[(u128, i64, i64)]) -> Result<Vec<(u128, IpUse<String>)>> {
        each!(self, s => s.ip_uses(windows).await)
    }
    async fn net_uses(
        &self,
        windows: &[(u128, u128, i64, i64)],
    ) -> Result<Vec<(u128, IpUse<String>)>> {
        each!(self, s => s.net_uses(windows).await)
    }
    async fn range_activity(
        &self,
        customer: &str,
        range: (u128, u128),
        from: i64,
        to: i64,
    ) -> Result<mamori_core::history::IpActivity> {
        each!(self, s => s.range_activity(customer, range, from, to).await)
    }
    async fn procedures(&self, kind: Kind, from: i64, to: i64) -> Result<Vec<Procedure>> {
        each!(self, s => s.procedures(kind, from, to).await)
    }
    async fn customer_past(&self, customer: &str, from: i64, to: i64) -> Result<Vec<Past>> {
        each!(self, s => s.customer_past(customer, from, to).await)
    }
    async fn login_features(&self, from: i64, to: i64) -> Result<Vec<LoginFeatures>> {
        each!(self, s => s.login_features(from, to).await)
    }
    async fn customer_events(&self, customer: &str, from: i64, to: i64) -> Result<Vec<Event>> {
        each!(self, s => s.customer_events(customer, from, to).await)
    }
    async fn count_events(&self) -> Result<u64> {
        each!(self, s => s.count_events().await)
    }
}

impl DecisionLog for Store {
    async fn record_assessment(&self, rec: &AssessmentRecord) -> Result<Option<i64>, CaseError> {
        each!(self, s => s.record_assessment(rec).await)
    }
    async fn record_assessments(
        &self,
        recs: &[AssessmentRecord],
    ) -> Result<Vec<Result<Option<i64>, CaseError>>> {
        each!(self, s => s.record_assessments(recs).await)
    }
    async fn assessment(&self, id: &str) -> Result<Option<AssessmentRecord>> {
        each!(self, s => s.assessment(id).await)
    }
    async fn record_outcome(
        &self,
        id: &str,
        outcome: Outcome,
        at: i64,
    ) -> Result<Option<i64>, CaseError> {
        each!(self, s => s.record_outcome(id, outcome, at).await)
    }
    async fn alerts(&self, status: Option<AlertStatus>, limit: usize) -> Result<Vec<Alert>> {
        each!(self, s => s.alerts(status, limit).await)
    }
    async fn alert(&self, id: i64) -> Result<Option<Alert>> {
        each!(self, s => s.alert(id).await)
    }
    async fn resolve_alert(
        &self,
        id: i64,
        resolution: Resolution,
        note: &str,
        by: &str,
        at: i64,
    ) -> Result<Alert, CaseError> {
        each!(self, s => s.resolve_alert(id, resolution, note, by, at).await)
    }
    async fn resolve_alert_audited(
        &self,
        id: i64,
        resolution: Resolution,
        note: &str,
        by: &str,
        at: i64,
        audit: &AuditNote,
    ) -> Result<Alert, CaseError> {
        each!(self, s => s.resolve_alert_audited(id, resolution, note, by, at, audit).await)
    }
    async fn marks(
        &self,
        customer: &str,
        ip: Option<u128>,
        t: i64,
        customer_ips: &[u128],
    ) -> Result<Marks> {
        each!(self, s => s.marks(customer, ip, t, customer_ips).await)
    }
}

impl ApiKeys for Store {
    async fn create_key(&self, key: &ApiKey, hash: &[u8; 32]) -> Result<()> {
        each!(self, s => s.create_key(key, hash).await)
    }
    async fn list_keys(&self) -> Result<Vec<ApiKey>> {
        each!(self, s => s.list_keys().await)
    }
    async fn revoke_key(&self, key_id: &str, at: i64) -> Result<bool> {
        each!(self, s => s.revoke_key(key_id, at).await)
    }
    async fn find_key(&self, key_id: &str) -> Result<Option<(ApiKey, [u8; 32])>> {
        each!(self, s => s.find_key(key_id).await)
    }
    async fn touch_key(&self, key_id: &str, at: i64) -> Result<()> {
        each!(self, s => s.touch_key(key_id, at).await)
    }
}

impl Customers for Store {
    async fn put_customers(
        &self,
        records: &[mamori_core::customer::CustomerRecord],
        at: i64,
        audit: &AuditNote,
    ) -> Result<(u64, u64)> {
        each!(self, s => s.put_customers(records, at, audit).await)
    }
    async fn customer(
        &self,
        customer_id: &str,
    ) -> Result<Option<mamori_core::customer::CustomerRecord>> {
        each!(self, s => s.customer(customer_id).await)
    }
    async fn customer_count(&self) -> Result<u64> {
        each!(self, s => s.customer_count().await)
    }
}

impl AuditLog for Store {
    async fn audit(&self, note: &AuditNote, at: i64) -> Result<mamori_auth::audit::AuditEntry> {
        each!(self, s => s.audit(note, at).await)
    }
    async fn audit_entries(
        &self,
        from_seq: i64,
        limit: usize,
    ) -> Result<Vec<mamori_auth::audit::AuditEntry>> {
        each!(self, s => s.audit_entries(from_seq, limit).await)
    }
    async fn audit_head(&self) -> Result<Option<(i64, String)>> {
        each!(self, s => s.audit_head().await)
    }
}

impl Credentials for Store {
    async fn set_password(
        &self,
        customer_id: &str,
        kind: mamori_auth::password::PasswordKind,
        hash: &str,
        at: i64,
        audit: &AuditNote,
    ) -> Result<()> {
        each!(self, s => s.set_password(customer_id, kind, hash, at, audit).await)
    }
    async fn rehash_password(
        &self,
        customer_id: &str,
        kind: mamori_auth::password::PasswordKind,
        old: &str,
        new: &str,
    ) -> Result<bool> {
        each!(self, s => s.rehash_password(customer_id, kind, old, new).await)
    }
    async fn password_hash(
        &self,
        customer_id: &str,
        kind: mamori_auth::password::PasswordKind,
    ) -> Result<Option<String>> {
        each!(self, s => s.password_hash(customer_id, kind).await)
    }
}

impl SecondFactors for Store {
    async fn begin_totp(&self, customer_id: &str, secret: &[u8], at: i64) -> Result<bool> {
        each!(self, s => s.begin_totp(customer_id, secret, at).await)
    }
    async fn totp(&self, customer_id: &str) -> Result<Option<TotpRecord>> {
        each!(self, s => s.totp(customer_id).await)
    }
    async fn confirm_totp(
        &self,
        customer_id: &str,
        step: u64,
        recovery_digests: &[String],
        at: i64,
        audit: &AuditNote,
    ) -> Result<bool> {
        each!(self, s => s.confirm_totp(customer_id, step, recovery_digests, at, audit).await)
    }
    async fn use_totp_step(&self, customer_id: &str, step: u64) -> Result<bool> {
        each!(self, s => s.use_totp_step(customer_id, step).await)
    }
    async fn use_recovery_code(
        &self,
        customer_id: &str,
        digest: &str,
        at: i64,
        audit: &AuditNote,
    ) -> Result<bool> {
        each!(self, s => s.use_recovery_code(customer_id, digest, at, audit).await)
    }
    async fn recovery_codes_left(&self, customer_id: &str) -> Result<u64> {
        each!(self, s => s.recovery_codes_left(customer_id).await)
    }
    async fn remove_totp(&self, customer_id: &str, at: i64, audit: &AuditNote) -> Result<bool> {
        each!(self, s => s.remove_totp(customer_id, at, audit).await)
    }
}

impl Passkeys for Store {
    async fn save_ceremony(&self, c: &PasskeyCeremony) -> Result<()> {
        each!(self, s => s.save_ceremony(c).await)
    }
    async fn take_ceremony(
        &self,
        ceremony_id: &str,
        customer_id: &str,
        purpose: &str,
        now: i64,
    ) -> Result<Option<PasskeyCeremony>> {
        each!(self, s => s.take_ceremony(ceremony_id, customer_id, purpose, now).await)
    }
    async fn add_passkey(&self, p: &StoredPasskey, audit: &AuditNote) -> Result<bool> {
        each!(self, s => s.add_passkey(p, audit).await)
    }
    async fn passkeys(&self, customer_id: &str) -> Result<Vec<StoredPasskey>> {
        each!(self, s => s.passkeys(customer_id).await)
    }
    async fn use_passkey(
        &self,
        customer_id: &str,
        credential_id: &str,
        passkey: &str,
        counter: u32,
        at: i64,
    ) -> Result<bool> {
        each!(self, s => s.use_passkey(customer_id, credential_id, passkey, counter, at).await)
    }
    async fn remove_passkey(
        &self,
        customer_id: &str,
        credential_id: &str,
        at: i64,
        audit: &AuditNote,
    ) -> Result<bool> {
        each!(self, s => s.remove_passkey(customer_id, credential_id, at, audit).await)
    }
}

impl Outbox for Store {
    async fn queue_notice(
        &self,
        customer_id: &str,
        kind: &str,
        detail: &serde_json::Value,
        assessment_id: Option<&str>,
        at: i64,
    ) -> Result<i64> {
        each!(self, s => s.queue_notice(customer_id, kind, detail, assessment_id, at).await)
    }
    async fn due_notices(&self, now: i64, limit: usize) -> Result<Vec<Notice>> {
        each!(self, s => s.due_notices(now, limit).await)
    }
    async fn notice_result(
        &self,
        notice_id: i64,
        at: i64,
        error: Option<&str>,
        retry_at: i64,
    ) -> Result<()> {
        each!(self, s => s.notice_result(notice_id, at, error, retry_at).await)
    }
    async fn notices(&self, filter: &NoticeFilter) -> Result<Vec<Notice>> {
        each!(self, s => s.notices(filter).await)
    }
}

impl Reports for Store {
    async fn add_report_link(&self, link: &ReportLink) -> Result<()> {
        each!(self, s => s.add_report_link(link).await)
    }
    async fn report_link(&self, token_digest: &str) -> Result<Option<ReportLink>> {
        each!(self, s => s.report_link(token_digest).await)
    }
    async fn report(
        &self,
        token_digest: &str,
        now: i64,
        audit: &AuditNote,
    ) -> Result<Result<Reported, ReportRefusal>> {
        each!(self, s => s.report(token_digest, now, audit).await)
    }
}

impl Freezes for Store {
    async fn freeze(&self, f: &Freeze, audit: &AuditNote) -> Result<bool> {
        each!(self, s => s.freeze(f, audit).await)
    }
    async fn unfreeze(&self, customer_id: &str, at: i64, audit: &AuditNote) -> Result<bool> {
        each!(self, s => s.unfreeze(customer_id, at, audit).await)
    }
    async fn frozen(&self, customer_id: &str) -> Result<Option<Freeze>> {
        each!(self, s => s.frozen(customer_id).await)
    }
}

impl Lockouts for Store {
    async fn failures(
        &self,
        customer_id: &str,
        kind: mamori_auth::password::PasswordKind,
    ) -> Result<Option<(u32, i64)>> {
        each!(self, s => s.failures(customer_id, kind).await)
    }
    async fn add_failure(
        &self,
        customer_id: &str,
        kind: mamori_auth::password::PasswordKind,
        at: i64,
    ) -> Result<u32> {
        each!(self, s => s.add_failure(customer_id, kind, at).await)
    }
    async fn clear_failures(
        &self,
        customer_id: &str,
        kind: mamori_auth::password::PasswordKind,
        at: i64,
        audit: Option<&AuditNote>,
    ) -> Result<bool> {
        each!(self, s => s.clear_failures(customer_id, kind, at, audit).await)
    }
    async fn note_lockout(
        &self,
        customer_id: &str,
        detail: &serde_json::Value,
        at: i64,
        audit: &AuditNote,
    ) -> Result<()> {
        each!(self, s => s.note_lockout(customer_id, detail, at, audit).await)
    }
}

impl StepUps for Store {
    async fn issue_stepup(&self, grant: &StepUpGrant, audit: &AuditNote) -> Result<()> {
        each!(self, s => s.issue_stepup(grant, audit).await)
    }
    async fn consume_stepup(
        &self,
        token_digest: &str,
        customer_id: &str,
        operation: &str,
        params_digest: &str,
        now: i64,
    ) -> Result<Result<StepUpGrant, mamori_auth::stepup::Refusal>> {
        each!(self, s => s.consume_stepup(token_digest, customer_id, operation, params_digest, now).await)
    }
}

impl Destinations for Store {
    async fn register_destination(
        &self,
        rec: &AssessmentRecord,
        destination: &RegisteredDestination,
        notice: &serde_json::Value,
        audit: &AuditNote,
    ) -> Result<Option<i64>, CaseError> {
        each!(self, s => s.register_destination(rec, destination, notice, audit).await)
    }
    async fn destinations(&self, customer_id: &str) -> Result<Vec<RegisteredDestination>> {
        each!(self, s => s.destinations(customer_id).await)
    }
}

impl Switches for Store {
    async fn set_switch(
        &self,
        state: &mamori_core::customer::SwitchState,
        audit: &AuditNote,
    ) -> Result<()> {
        each!(self, s => s.set_switch(state, audit).await)
    }
    async fn switches(&self) -> Result<Vec<mamori_core::customer::SwitchState>> {
        each!(self, s => s.switches().await)
    }
}

impl crate::Policies for Store {
    async fn set_policy(
        &self,
        body: &str,
        at: i64,
        set_by: &str,
        reason: &str,
        audit: &AuditNote,
    ) -> Result<i64> {
        each!(self, s => s.set_policy(body, at, set_by, reason, audit).await)
    }
    async fn policy(&self) -> Result<Option<crate::StoredPolicy>> {
        each!(self, s => s.policy().await)
    }
    async fn policy_revision(&self) -> Result<Option<i64>> {
        each!(self, s => s.policy_revision().await)
    }
}

impl Retention for Store {
    async fn purge_before(&self, t: i64) -> Result<u64> {
        each!(self, s => s.purge_before(t).await)
    }
}

#[cfg(test)]
mod tests {
    use super::Store;

    #[test]
    fn a_postgres_url_is_shown_without_its_password() {
        assert_eq!(
            Store::redacted("postgres://mamori:s3cret@db:5432/risk?sslmode=require"),
            "postgres://mamori:***@db:5432/risk?sslmode=require"
        );
        assert_eq!(
            Store::redacted("postgresql://mamori@db/risk"),
            "postgresql://mamori@db/risk"
        );
        assert_eq!(Store::redacted("data/mamori.db"), "data/mamori.db");
        assert!(Store::is_postgres("postgres://x") && !Store::is_postgres("postgres.db"));
    }
}
