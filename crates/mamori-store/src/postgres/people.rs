//! Customers' records, the audit log, the emergency switches, credentials, lockouts, step-ups and
//! destinations in the PostgreSQL store.

use mamori_auth::audit::AuditEntry;
use mamori_auth::password::PasswordKind;
use mamori_core::customer::{CustomerRecord, SwitchChannel, SwitchState};
use mamori_core::event::Destination;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};

use super::PgStore;
use super::decisions::{allowed_times, record_in};
use super::events::Fresh;
use super::notices::queue_notice;
use crate::sqlite::{corrupt, kind_of};
use crate::{
    AssessmentRecord, AuditLog, AuditNote, CaseError, Credentials, Customers, Destinations,
    Lockouts, RegisteredDestination, Result, SecondFactors, StepUpGrant, StepUps, Switches,
    TotpRecord,
};

/// Appends an audit entry inside the caller's transaction, and moves the head. The head's row is
/// locked first (`FOR UPDATE`): appends from every process queue there, each chained to the one
/// committed before it. Callers append last in their transactions, so that the head is held only
/// until the commit (and no transaction waits for it while holding what another appender wants).
pub(crate) async fn append_audit(
    conn: &mut PgConnection,
    note: &AuditNote,
    at: i64,
) -> Result<AuditEntry> {
    let (seq, hash): (i64, String) =
        sqlx::query_as("SELECT seq, hash FROM audit_head WHERE id = 0 FOR UPDATE")
            .fetch_one(&mut *conn)
            .await?;
    let detail = note.detail.to_string();
    let e = AuditEntry::next(
        (seq > 0).then_some((seq, hash.as_str())),
        at,
        &note.actor,
        &note.action,
        &note.target,
        &detail,
    );
    sqlx::query(
        "INSERT INTO audit_log (seq, at, actor, action, target, detail, prev, hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(e.seq)
    .bind(e.at)
    .bind(&e.actor)
    .bind(&e.action)
    .bind(&e.target)
    .bind(&e.detail)
    .bind(&e.prev)
    .bind(&e.hash)
    .execute(&mut *conn)
    .await?;
    sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 0")
        .bind(e.seq)
        .bind(&e.hash)
        .execute(&mut *conn)
        .await?;
    Ok(e)
}

/// An audit entry's columns, in the order read.
type AuditRow = (i64, i64, String, String, String, String, String, String);

/// A TOTP enrolment's columns: secret, created, confirmed, last step.
type TotpRow = (Vec<u8>, i64, Option<i64>, Option<i64>);

impl AuditLog for PgStore {
    async fn audit(&self, note: &AuditNote, at: i64) -> Result<AuditEntry> {
        let mut tx = self.begin().await?;
        let e = append_audit(&mut tx, note, at).await?;
        tx.commit().await?;
        Ok(e)
    }

    async fn audit_entries(&self, from_seq: i64, limit: usize) -> Result<Vec<AuditEntry>> {
        let rows: Vec<AuditRow> = sqlx::query_as(
            "SELECT seq, at, actor, action, target, detail, prev, hash FROM audit_log \
                 WHERE seq >= $1 ORDER BY seq LIMIT $2",
        )
        .bind(from_seq)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(seq, at, actor, action, target, detail, prev, hash)| AuditEntry {
                    seq,
                    at,
                    actor,
                    action,
                    target,
                    detail,
                    prev,
                    hash,
                },
            )
            .collect())
    }

    async fn audit_head(&self) -> Result<Option<(i64, String)>> {
        let head: Option<(i64, String)> =
            sqlx::query_as("SELECT seq, hash FROM audit_head WHERE id = 0 AND seq > 0")
                .fetch_optional(&self.pool)
                .await?;
        Ok(head)
    }
}

impl Customers for PgStore {
    async fn put_customers(
        &self,
        records: &[CustomerRecord],
        at: i64,
        audit: &AuditNote,
    ) -> Result<(u64, u64)> {
        let mut tx = self.begin().await?;
        let (mut added, mut updated) = (0u64, 0u64);
        for c in records {
            // xmax is 0 on a row version this statement inserted, not on one it updated.
            let inserted: bool = sqlx::query_scalar(
                "INSERT INTO customer_records (customer_id, name, name_kana, birth_date, \
                 postal_code, address, phone, email, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) \
                 ON CONFLICT (customer_id) DO UPDATE SET name = excluded.name, \
                 name_kana = excluded.name_kana, birth_date = excluded.birth_date, \
                 postal_code = excluded.postal_code, address = excluded.address, \
                 phone = excluded.phone, email = excluded.email, updated_at = excluded.updated_at \
                 RETURNING (xmax = 0)",
            )
            .bind(&c.customer_id)
            .bind(&c.name)
            .bind(&c.name_kana)
            .bind(&c.birth_date)
            .bind(&c.postal_code)
            .bind(&c.address)
            .bind(&c.phone)
            .bind(&c.email)
            .bind(at)
            .fetch_one(&mut *tx)
            .await?;
            if inserted {
                added += 1;
            } else {
                updated += 1;
            }
            for d in &c.destinations {
                sqlx::query(
                    "INSERT INTO customer_destinations (customer_id, bank_code, branch_code, \
                     account_type, account_number, holder_kana, registered_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
                )
                .bind(&c.customer_id)
                .bind(&d.bank_code)
                .bind(&d.branch_code)
                .bind(&d.account_type)
                .bind(&d.account_number)
                .bind(&d.holder_kana)
                .bind(at)
                .execute(&mut *tx)
                .await?;
            }
        }
        let mut note = audit.clone();
        if let serde_json::Value::Object(m) = &mut note.detail {
            m.insert("added".into(), added.into());
            m.insert("updated".into(), updated.into());
        }
        append_audit(&mut tx, &note, at).await?;
        tx.commit().await?;
        Ok((added, updated))
    }

    async fn customer(&self, customer_id: &str) -> Result<Option<CustomerRecord>> {
        let row = sqlx::query(
            "SELECT customer_id, name, name_kana, birth_date, postal_code, address, phone, email \
             FROM customer_records WHERE customer_id = $1",
        )
        .bind(customer_id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(r) = row else { return Ok(None) };
        let mut c = CustomerRecord {
            customer_id: r.try_get(0)?,
            name: r.try_get(1)?,
            name_kana: r.try_get(2)?,
            birth_date: r.try_get(3)?,
            postal_code: r.try_get(4)?,
            address: r.try_get(5)?,
            phone: r.try_get(6)?,
            email: r.try_get(7)?,
            destinations: Vec::new(),
        };
        c.destinations = self
            .destinations(customer_id)
            .await?
            .into_iter()
            .filter(|d| d.status == "effective")
            .map(|d| d.destination)
            .collect();
        Ok(Some(c))
    }

    async fn customer_count(&self) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM customer_records")
            .fetch_one(&self.pool)
            .await?;
        Ok(n as u64)
    }
}

impl Switches for PgStore {
    async fn set_switch(&self, state: &SwitchState, audit: &AuditNote) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO switches (kind, channel, enabled, reason, actor, changed_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (kind, channel) DO UPDATE SET \
             enabled = excluded.enabled, reason = excluded.reason, actor = excluded.actor, \
             changed_at = excluded.changed_at",
        )
        .bind(i16::from(state.procedure.code()))
        .bind(i16::from(state.channel.code()))
        .bind(state.enabled)
        .bind(&state.reason)
        .bind(&state.actor)
        .bind(state.changed_at)
        .execute(&mut *tx)
        .await?;
        append_audit(&mut tx, audit, state.changed_at).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn switches(&self) -> Result<Vec<SwitchState>> {
        let rows: Vec<(i16, i16, bool, String, String, i64)> = sqlx::query_as(
            "SELECT kind, channel, enabled, reason, actor, changed_at FROM switches \
             ORDER BY kind, channel",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(kind, channel, enabled, reason, actor, changed_at)| {
                Ok(SwitchState {
                    procedure: kind_of(kind.into())?,
                    channel: SwitchChannel::from_code(channel.into())
                        .ok_or_else(|| corrupt("unknown switch channel"))?,
                    enabled,
                    reason,
                    actor,
                    changed_at,
                })
            })
            .collect()
    }
}

impl Credentials for PgStore {
    async fn set_password(
        &self,
        customer_id: &str,
        kind: PasswordKind,
        hash: &str,
        at: i64,
        audit: &AuditNote,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO passwords (customer_id, kind, hash, changed_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (customer_id, kind) DO UPDATE SET hash = excluded.hash, \
             changed_at = excluded.changed_at",
        )
        .bind(customer_id)
        .bind(kind.as_str())
        .bind(hash)
        .bind(at)
        .execute(&mut *tx)
        .await?;
        append_audit(&mut tx, audit, at).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn rehash_password(
        &self,
        customer_id: &str,
        kind: PasswordKind,
        old: &str,
        new: &str,
    ) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE passwords SET hash = $1 WHERE customer_id = $2 AND kind = $3 AND hash = $4",
        )
        .bind(new)
        .bind(customer_id)
        .bind(kind.as_str())
        .bind(old)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    async fn password_hash(&self, customer_id: &str, kind: PasswordKind) -> Result<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT hash FROM passwords WHERE customer_id = $1 AND kind = $2")
                .bind(customer_id)
                .bind(kind.as_str())
                .fetch_optional(&self.pool)
                .await?,
        )
    }
}

impl SecondFactors for PgStore {
    async fn begin_totp(&self, customer_id: &str, secret: &[u8], at: i64) -> Result<bool> {
        let n = sqlx::query(
            "INSERT INTO totp (customer_id, secret, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (customer_id) DO UPDATE SET secret = excluded.secret, \
             created_at = excluded.created_at, last_step = NULL \
             WHERE totp.confirmed_at IS NULL",
        )
        .bind(customer_id)
        .bind(secret)
        .bind(at)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    async fn totp(&self, customer_id: &str) -> Result<Option<TotpRecord>> {
        let row: Option<TotpRow> = sqlx::query_as(
            "SELECT secret, created_at, confirmed_at, last_step FROM totp WHERE customer_id = $1",
        )
        .bind(customer_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(
            row.map(|(secret, created_at, confirmed_at, last_step)| TotpRecord {
                secret,
                created_at,
                confirmed_at,
                last_step: last_step.map(|s| s as u64),
            }),
        )
    }

    async fn confirm_totp(
        &self,
        customer_id: &str,
        step: u64,
        recovery_digests: &[String],
        at: i64,
        audit: &AuditNote,
    ) -> Result<bool> {
        let mut tx = self.begin().await?;
        let n = sqlx::query(
            "UPDATE totp SET confirmed_at = $1, last_step = $2 \
             WHERE customer_id = $3 AND confirmed_at IS NULL",
        )
        .bind(at)
        .bind(step as i64)
        .bind(customer_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n != 1 {
            return Ok(false);
        }
        sqlx::query("DELETE FROM recovery_codes WHERE customer_id = $1")
            .bind(customer_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO recovery_codes (customer_id, digest) \
             SELECT $1, d FROM unnest($2::text[]) AS d ON CONFLICT DO NOTHING",
        )
        .bind(customer_id)
        .bind(recovery_digests)
        .execute(&mut *tx)
        .await?;
        queue_notice(
            &mut tx,
            customer_id,
            "mfa_change",
            &serde_json::json!({"factor": "totp", "change": "added"}),
            None,
            at,
        )
        .await?;
        append_audit(&mut tx, audit, at).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn use_totp_step(&self, customer_id: &str, step: u64) -> Result<bool> {
        // One conditional statement: of two uses of one step, the second waits for the first's
        // row lock and then finds the condition false.
        let n = sqlx::query(
            "UPDATE totp SET last_step = $1 WHERE customer_id = $2 \
             AND confirmed_at IS NOT NULL AND (last_step IS NULL OR last_step < $1)",
        )
        .bind(step as i64)
        .bind(customer_id)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    async fn use_recovery_code(
        &self,
        customer_id: &str,
        digest: &str,
        at: i64,
        audit: &AuditNote,
    ) -> Result<bool> {
        let mut tx = self.begin().await?;
        let n = sqlx::query(
            "UPDATE recovery_codes SET used_at = $1 \
             WHERE customer_id = $2 AND digest = $3 AND used_at IS NULL",
        )
        .bind(at)
        .bind(customer_id)
        .bind(digest)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 1 {
            append_audit(&mut tx, audit, at).await?;
        }
        tx.commit().await?;
        Ok(n == 1)
    }

    async fn recovery_codes_left(&self, customer_id: &str) -> Result<u64> {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM recovery_codes WHERE customer_id = $1 AND used_at IS NULL",
        )
        .bind(customer_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(n as u64)
    }

    async fn remove_totp(&self, customer_id: &str, at: i64, audit: &AuditNote) -> Result<bool> {
        let mut tx = self.begin().await?;
        let n = sqlx::query("DELETE FROM totp WHERE customer_id = $1")
            .bind(customer_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query("DELETE FROM recovery_codes WHERE customer_id = $1")
            .bind(customer_id)
            .execute(&mut *tx)
            .await?;
        if n == 1 {
            queue_notice(
                &mut tx,
                customer_id,
                "mfa_change",
                &serde_json::json!({"factor": "totp", "change": "removed"}),
                None,
                at,
            )
            .await?;
            append_audit(&mut tx, audit, at).await?;
        }
        tx.commit().await?;
        Ok(n == 1)
    }
}

impl Lockouts for PgStore {
    async fn failures(&self, customer_id: &str, kind: PasswordKind) -> Result<Option<(u32, i64)>> {
        let row: Option<(i64, i64)> = sqlx::query_as(
            "SELECT failures, last_failure_at FROM auth_failures \
             WHERE customer_id = $1 AND kind = $2",
        )
        .bind(customer_id)
        .bind(kind.as_str())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(n, at)| (u32::try_from(n).unwrap_or(u32::MAX), at)))
    }

    async fn add_failure(&self, customer_id: &str, kind: PasswordKind, at: i64) -> Result<u32> {
        let n: i64 = sqlx::query_scalar(
            "INSERT INTO auth_failures (customer_id, kind, failures, last_failure_at) \
             VALUES ($1, $2, 1, $3) ON CONFLICT (customer_id, kind) DO UPDATE \
             SET failures = auth_failures.failures + 1, \
             last_failure_at = greatest(auth_failures.last_failure_at, excluded.last_failure_at) \
             RETURNING failures",
        )
        .bind(customer_id)
        .bind(kind.as_str())
        .bind(at)
        .fetch_one(&self.pool)
        .await?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    async fn clear_failures(
        &self,
        customer_id: &str,
        kind: PasswordKind,
        at: i64,
        audit: Option<&AuditNote>,
    ) -> Result<bool> {
        let mut tx = self.begin().await?;
        let n = sqlx::query("DELETE FROM auth_failures WHERE customer_id = $1 AND kind = $2")
            .bind(customer_id)
            .bind(kind.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if let Some(a) = audit
            && n > 0
        {
            append_audit(&mut tx, a, at).await?;
        }
        tx.commit().await?;
        Ok(n > 0)
    }

    async fn note_lockout(
        &self,
        customer_id: &str,
        detail: &serde_json::Value,
        at: i64,
        audit: &AuditNote,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        queue_notice(&mut tx, customer_id, "lockout", detail, None, at).await?;
        append_audit(&mut tx, audit, at).await?;
        tx.commit().await?;
        Ok(())
    }
}

fn grant_row(r: &PgRow) -> Result<(StepUpGrant, Option<i64>)> {
    Ok((
        StepUpGrant {
            token_digest: r.try_get(0)?,
            customer_id: r.try_get(1)?,
            operation: r.try_get(2)?,
            params_digest: r.try_get(3)?,
            method: r.try_get(4)?,
            created_at: r.try_get(5)?,
            expires_at: r.try_get(6)?,
        },
        r.try_get(7)?,
    ))
}

const GRANT_COLUMNS: &str =
    "token_digest, customer_id, operation, params_digest, method, created_at, expires_at, used_at";

impl StepUps for PgStore {
    async fn issue_stepup(&self, g: &StepUpGrant, audit: &AuditNote) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO stepup_tokens (token_digest, customer_id, operation, params_digest, \
             method, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&g.token_digest)
        .bind(&g.customer_id)
        .bind(&g.operation)
        .bind(&g.params_digest)
        .bind(&g.method)
        .bind(g.created_at)
        .bind(g.expires_at)
        .execute(&mut *tx)
        .await?;
        append_audit(&mut tx, audit, g.created_at).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn consume_stepup(
        &self,
        token_digest: &str,
        customer_id: &str,
        operation: &str,
        params_digest: &str,
        now: i64,
    ) -> Result<Result<StepUpGrant, mamori_auth::stepup::Refusal>> {
        use mamori_auth::stepup::Refusal;
        // The check and the use are one conditional statement: of two consumers, one wins.
        let used = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE stepup_tokens SET used_at = $5 WHERE token_digest = $1 AND used_at IS NULL \
             AND customer_id = $2 AND operation = $3 AND params_digest = $4 AND expires_at > $5 \
             RETURNING {GRANT_COLUMNS}"
        )))
        .bind(token_digest)
        .bind(customer_id)
        .bind(operation)
        .bind(params_digest)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(r) = used {
            return Ok(Ok(grant_row(&r)?.0));
        }
        // Refused: why.
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {GRANT_COLUMNS} FROM stepup_tokens WHERE token_digest = $1"
        )))
        .bind(token_digest)
        .fetch_optional(&self.pool)
        .await?;
        let Some(r) = row else {
            return Ok(Err(Refusal::Unknown));
        };
        let (g, used) = grant_row(&r)?;
        Ok(Err(if used.is_some() {
            Refusal::Used
        } else if g.customer_id != customer_id {
            Refusal::OtherCustomer
        } else if g.operation != operation {
            Refusal::OtherOperation
        } else if g.params_digest != params_digest {
            Refusal::OtherParameters
        } else if g.expires_at <= now {
            Refusal::Expired
        } else {
            // Unused and matching now, though not when the statement ran: another consumer's
            // use was rolled back in between. Refused all the same; the token stays usable.
            Refusal::Used
        }))
    }
}

impl Destinations for PgStore {
    async fn register_destination(
        &self,
        rec: &AssessmentRecord,
        d: &RegisteredDestination,
        notice: &serde_json::Value,
        audit: &AuditNote,
    ) -> Result<Option<i64>, CaseError> {
        self.ensure_months(allowed_times(std::slice::from_ref(rec)))
            .await?;
        let mut tx = self.begin().await?;
        let mut fresh = Fresh::default();
        let alert = record_in(&mut tx, self, std::slice::from_ref(rec), &mut fresh)
            .await?
            .pop()
            .unwrap_or(Ok(None))?;
        let c = &rec.event.customer_id;
        let x = &d.destination;
        sqlx::query(
            "INSERT INTO customer_destinations (customer_id, bank_code, branch_code, \
             account_type, account_number, holder_kana, registered_at, status, effective_at, \
             assessment_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (customer_id, bank_code, branch_code, account_type, account_number) \
             DO UPDATE SET holder_kana = excluded.holder_kana, \
             registered_at = excluded.registered_at, status = excluded.status, \
             effective_at = excluded.effective_at, assessment_id = excluded.assessment_id",
        )
        .bind(c)
        .bind(&x.bank_code)
        .bind(&x.branch_code)
        .bind(&x.account_type)
        .bind(&x.account_number)
        .bind(&x.holder_kana)
        .bind(d.registered_at)
        .bind(&d.status)
        .bind(d.effective_at)
        .bind(&d.assessment_id)
        .execute(&mut *tx)
        .await
        .map_err(crate::StoreError::from)?;
        queue_notice(
            &mut tx,
            c,
            "destination_change",
            notice,
            d.assessment_id.as_deref(),
            d.registered_at,
        )
        .await?;
        append_audit(&mut tx, audit, d.registered_at).await?;
        self.commit(tx, fresh).await?;
        Ok(alert)
    }

    async fn destinations(&self, customer_id: &str) -> Result<Vec<RegisteredDestination>> {
        let rows = sqlx::query(
            "SELECT bank_code, branch_code, account_type, account_number, holder_kana, status, \
             registered_at, effective_at, assessment_id FROM customer_destinations \
             WHERE customer_id = $1 \
             ORDER BY registered_at, bank_code, branch_code, account_number",
        )
        .bind(customer_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(RegisteredDestination {
                    destination: Destination {
                        bank_code: r.try_get(0)?,
                        branch_code: r.try_get(1)?,
                        account_type: r.try_get(2)?,
                        account_number: r.try_get(3)?,
                        holder_kana: r.try_get(4)?,
                    },
                    status: r.try_get(5)?,
                    registered_at: r.try_get(6)?,
                    effective_at: r.try_get(7)?,
                    assessment_id: r.try_get(8)?,
                })
            })
            .collect()
    }
}

impl crate::Policies for PgStore {
    async fn set_policy(
        &self,
        body: &str,
        at: i64,
        set_by: &str,
        reason: &str,
        audit: &AuditNote,
    ) -> Result<i64> {
        let mut tx = self.begin().await?;
        // Two nodes setting at once: the second waits here, then takes the next number.
        sqlx::query("LOCK TABLE policies IN SHARE ROW EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await?;
        let revision: i64 = sqlx::query_scalar(
            "INSERT INTO policies (revision, body, set_at, set_by, reason) \
             SELECT coalesce(max(revision), 0) + 1, $1, $2, $3, $4 FROM policies \
             RETURNING revision",
        )
        .bind(body)
        .bind(at)
        .bind(set_by)
        .bind(reason)
        .fetch_one(&mut *tx)
        .await?;
        let mut note = audit.clone();
        note.target = format!("policy:{revision}");
        append_audit(&mut tx, &note, at).await?;
        tx.commit().await?;
        Ok(revision)
    }

    async fn policy(&self) -> Result<Option<crate::StoredPolicy>> {
        let row: Option<(i64, String, i64, String, String)> = sqlx::query_as(
            "SELECT revision, body, set_at, set_by, reason FROM policies \
             ORDER BY revision DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(
            |(revision, body, set_at, set_by, reason)| crate::StoredPolicy {
                revision,
                body,
                set_at,
                set_by,
                reason,
            },
        ))
    }

    async fn policy_revision(&self) -> Result<Option<i64>> {
        Ok(sqlx::query_scalar("SELECT max(revision) FROM policies")
            .fetch_one(&self.pool)
            .await?)
    }
}
