//! Customers' records, the audit log and the emergency switches in the embedded store (migration
//! 0008).

use mamori_auth::audit::AuditEntry;
use mamori_core::customer::{CustomerRecord, SwitchChannel, SwitchState};
use mamori_core::event::Destination;

use crate::notices::queue_notice;
use crate::raw::{self, Value};
use crate::sqlite::{corrupt, kind_of};
use mamori_auth::password::PasswordKind;

use crate::{AssessmentRecord, CaseError, Destinations, RegisteredDestination};
use crate::{
    AuditLog, AuditNote, Credentials, Customers, Lockouts, Result, SecondFactors, SqliteStore,
    StepUpGrant, StepUps, Switches, TotpRecord,
};

/// Appends an audit entry inside the caller's write transaction, and moves the head.
pub(crate) fn append_audit(conn: &raw::Conn<'_>, note: &AuditNote, at: i64) -> Result<AuditEntry> {
    let head = read_head(conn)?;
    let detail = note.detail.to_string();
    let e = AuditEntry::next(
        head.as_ref().map(|(s, h)| (*s, h.as_str())),
        at,
        &note.actor,
        &note.action,
        &note.target,
        &detail,
    );
    conn.prepare(
        "INSERT INTO audit_log (seq, at, actor, action, target, detail, prev, hash) \
         VALUES (?,?,?,?,?,?,?,?)",
    )?
    .exec(&[
        Value::Int(e.seq),
        Value::Int(e.at),
        Value::Text(&e.actor),
        Value::Text(&e.action),
        Value::Text(&e.target),
        Value::Text(&e.detail),
        Value::Text(&e.prev),
        Value::Text(&e.hash),
    ])?;
    conn.prepare("INSERT OR REPLACE INTO audit_head (id, seq, hash) VALUES (0, ?, ?)")?
        .exec(&[Value::Int(e.seq), Value::Text(&e.hash)])?;
    Ok(e)
}

/// The audit log's head: its last entry's seq and hash.
fn read_head(conn: &raw::Conn<'_>) -> Result<Option<(i64, String)>> {
    let mut head = None;
    conn.prepare("SELECT seq, hash FROM audit_head WHERE id = 0")?
        .for_each(&[], |r| {
            head = Some((r.i64(0), r.string(1)?));
            Ok(())
        })?;
    Ok(head)
}

impl AuditLog for SqliteStore {
    async fn audit(&self, note: &AuditNote, at: i64) -> Result<AuditEntry> {
        self.write(|conn, _| append_audit(conn, note, at)).await
    }

    async fn audit_entries(&self, from_seq: i64, limit: usize) -> Result<Vec<AuditEntry>> {
        self.with_raw(move |conn| {
            let mut out = Vec::new();
            conn.prepare(
                "SELECT seq, at, actor, action, target, detail, prev, hash FROM audit_log \
                 WHERE seq >= ? ORDER BY seq LIMIT ?",
            )?
            .for_each(
                &[
                    Value::Int(from_seq),
                    Value::Int(i64::try_from(limit).unwrap_or(i64::MAX)),
                ],
                |r| {
                    out.push(AuditEntry {
                        seq: r.i64(0),
                        at: r.i64(1),
                        actor: r.string(2)?,
                        action: r.string(3)?,
                        target: r.string(4)?,
                        detail: r.string(5)?,
                        prev: r.string(6)?,
                        hash: r.string(7)?,
                    });
                    Ok(())
                },
            )?;
            Ok(out)
        })
        .await
    }

    async fn audit_head(&self) -> Result<Option<(i64, String)>> {
        self.with_raw(read_head).await
    }
}

impl Customers for SqliteStore {
    async fn put_customers(
        &self,
        records: &[CustomerRecord],
        at: i64,
        audit: &AuditNote,
    ) -> Result<(u64, u64)> {
        self.write(|conn, _| {
            let (mut added, mut updated) = (0, 0);
            let mut exists =
                conn.prepare("SELECT 1 FROM customer_records WHERE customer_id = ?")?;
            let mut put = conn.prepare(
                "INSERT INTO customer_records (customer_id, name, name_kana, birth_date, \
                 postal_code, address, phone, email, created_at, updated_at) \
                 VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?9) \
                 ON CONFLICT (customer_id) DO UPDATE SET name = ?2, name_kana = ?3, \
                 birth_date = ?4, postal_code = ?5, address = ?6, phone = ?7, email = ?8, \
                 updated_at = ?9",
            )?;
            let mut dest = conn.prepare(
                "INSERT OR IGNORE INTO customer_destinations (customer_id, bank_code, \
                 branch_code, account_type, account_number, holder_kana, registered_at) \
                 VALUES (?,?,?,?,?,?,?)",
            )?;
            for c in records {
                fn opt(v: &Option<String>) -> Value<'_> {
                    v.as_deref().map_or(Value::Null, Value::Text)
                }
                if exists.query_i64(&[Value::Text(&c.customer_id)])?.is_some() {
                    updated += 1;
                } else {
                    added += 1;
                }
                put.exec(&[
                    Value::Text(&c.customer_id),
                    Value::Text(&c.name),
                    Value::Text(&c.name_kana),
                    opt(&c.birth_date),
                    opt(&c.postal_code),
                    opt(&c.address),
                    opt(&c.phone),
                    opt(&c.email),
                    Value::Int(at),
                ])?;
                for d in &c.destinations {
                    dest.exec(&[
                        Value::Text(&c.customer_id),
                        Value::Text(&d.bank_code),
                        Value::Text(&d.branch_code),
                        Value::Text(&d.account_type),
                        Value::Text(&d.account_number),
                        Value::Text(&d.holder_kana),
                        Value::Int(at),
                    ])?;
                }
            }
            drop((exists, put, dest));
            let mut note = audit.clone();
            if let serde_json::Value::Object(m) = &mut note.detail {
                m.insert("added".into(), added.into());
                m.insert("updated".into(), updated.into());
            }
            append_audit(conn, &note, at)?;
            Ok((added, updated))
        })
        .await
    }

    async fn customer(&self, customer_id: &str) -> Result<Option<CustomerRecord>> {
        let id = customer_id.to_owned();
        self.with_raw(move |conn| {
            let mut rec: Option<CustomerRecord> = None;
            conn.prepare(
                "SELECT customer_id, name, name_kana, birth_date, postal_code, address, phone, \
                 email FROM customer_records WHERE customer_id = ?",
            )?
            .for_each(&[Value::Text(&id)], |r| {
                let text = |i| r.text(i).map(|t| t.map(str::to_owned));
                rec = Some(CustomerRecord {
                    customer_id: r.string(0)?,
                    name: r.string(1)?,
                    name_kana: r.string(2)?,
                    birth_date: text(3)?,
                    postal_code: text(4)?,
                    address: text(5)?,
                    phone: text(6)?,
                    email: text(7)?,
                    destinations: Vec::new(),
                });
                Ok(())
            })?;
            if let Some(c) = &mut rec {
                c.destinations = destination_rows(conn, &id)?
                    .into_iter()
                    .filter(|d| d.status == "effective")
                    .map(|d| d.destination)
                    .collect();
            }
            Ok(rec)
        })
        .await
    }

    async fn customer_count(&self) -> Result<u64> {
        self.with_raw(|conn| {
            Ok(conn
                .prepare("SELECT count(*) FROM customer_records")?
                .query_i64(&[])?
                .unwrap_or(0) as u64)
        })
        .await
    }
}

impl Switches for SqliteStore {
    async fn set_switch(&self, state: &SwitchState, audit: &AuditNote) -> Result<()> {
        self.write(|conn, _| {
            conn.prepare(
                "INSERT OR REPLACE INTO switches (kind, channel, enabled, reason, actor, \
                 changed_at) VALUES (?,?,?,?,?,?)",
            )?
            .exec(&[
                Value::Int(i64::from(state.procedure.code())),
                Value::Int(i64::from(state.channel.code())),
                Value::Int(i64::from(state.enabled)),
                Value::Text(&state.reason),
                Value::Text(&state.actor),
                Value::Int(state.changed_at),
            ])?;
            append_audit(conn, audit, state.changed_at)?;
            Ok(())
        })
        .await
    }

    async fn switches(&self) -> Result<Vec<SwitchState>> {
        self.with_raw(|conn| {
            let mut out = Vec::new();
            conn.prepare(
                "SELECT kind, channel, enabled, reason, actor, changed_at FROM switches \
                 ORDER BY kind, channel",
            )?
            .for_each(&[], |r| {
                out.push(SwitchState {
                    procedure: kind_of(r.i64(0))?,
                    channel: SwitchChannel::from_code(r.i64(1))
                        .ok_or_else(|| corrupt("unknown switch channel"))?,
                    enabled: r.i64(2) != 0,
                    reason: r.string(3)?,
                    actor: r.string(4)?,
                    changed_at: r.i64(5),
                });
                Ok(())
            })?;
            Ok(out)
        })
        .await
    }
}

impl Credentials for SqliteStore {
    async fn set_password(
        &self,
        customer_id: &str,
        kind: PasswordKind,
        hash: &str,
        at: i64,
        audit: &AuditNote,
    ) -> Result<()> {
        self.write(|conn, _| {
            conn.prepare(
                "INSERT OR REPLACE INTO passwords (customer_id, kind, hash, changed_at) \
                 VALUES (?,?,?,?)",
            )?
            .exec(&[
                Value::Text(customer_id),
                Value::Text(kind.as_str()),
                Value::Text(hash),
                Value::Int(at),
            ])?;
            append_audit(conn, audit, at)?;
            Ok(())
        })
        .await
    }

    async fn rehash_password(
        &self,
        customer_id: &str,
        kind: PasswordKind,
        old: &str,
        new: &str,
    ) -> Result<bool> {
        self.write(|conn, _| {
            let n = conn
                .prepare(
                    "UPDATE passwords SET hash = ? WHERE customer_id = ? AND kind = ? AND hash = ?",
                )?
                .exec(&[
                    Value::Text(new),
                    Value::Text(customer_id),
                    Value::Text(kind.as_str()),
                    Value::Text(old),
                ])?;
            Ok(n == 1)
        })
        .await
    }

    async fn password_hash(&self, customer_id: &str, kind: PasswordKind) -> Result<Option<String>> {
        let id = customer_id.to_owned();
        self.with_raw(move |conn| {
            let mut out = None;
            conn.prepare("SELECT hash FROM passwords WHERE customer_id = ? AND kind = ?")?
                .for_each(&[Value::Text(&id), Value::Text(kind.as_str())], |r| {
                    out = Some(r.string(0)?);
                    Ok(())
                })?;
            Ok(out)
        })
        .await
    }
}

impl SecondFactors for SqliteStore {
    async fn begin_totp(&self, customer_id: &str, secret: &[u8], at: i64) -> Result<bool> {
        self.write(|conn, _| {
            let n = conn
                .prepare(
                    "INSERT INTO totp (customer_id, secret, created_at) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (customer_id) DO UPDATE SET secret = ?2, created_at = ?3, \
                     last_step = NULL WHERE confirmed_at IS NULL",
                )?
                .exec(&[
                    Value::Text(customer_id),
                    Value::Blob(secret),
                    Value::Int(at),
                ])?;
            Ok(n == 1)
        })
        .await
    }

    async fn totp(&self, customer_id: &str) -> Result<Option<TotpRecord>> {
        let id = customer_id.to_owned();
        self.with_raw(move |conn| {
            let mut out = None;
            conn.prepare(
                "SELECT secret, created_at, confirmed_at, last_step FROM totp WHERE customer_id = ?",
            )?
            .for_each(&[Value::Text(&id)], |r| {
                out = Some(TotpRecord {
                    secret: r.blob(0).unwrap_or_default().to_vec(),
                    created_at: r.i64(1),
                    confirmed_at: r.opt_i64(2),
                    last_step: r.opt_i64(3).map(|s| s as u64),
                });
                Ok(())
            })?;
            Ok(out)
        })
        .await
    }

    async fn confirm_totp(
        &self,
        customer_id: &str,
        step: u64,
        recovery_digests: &[String],
        at: i64,
        audit: &AuditNote,
    ) -> Result<bool> {
        self.write(|conn, _| {
            let n = conn
                .prepare(
                    "UPDATE totp SET confirmed_at = ?, last_step = ? \
                     WHERE customer_id = ? AND confirmed_at IS NULL",
                )?
                .exec(&[
                    Value::Int(at),
                    Value::Int(step as i64),
                    Value::Text(customer_id),
                ])?;
            if n != 1 {
                return Ok(false);
            }
            conn.prepare("DELETE FROM recovery_codes WHERE customer_id = ?")?
                .exec(&[Value::Text(customer_id)])?;
            let mut put = conn.prepare(
                "INSERT OR IGNORE INTO recovery_codes (customer_id, digest) VALUES (?, ?)",
            )?;
            for d in recovery_digests {
                put.exec(&[Value::Text(customer_id), Value::Text(d)])?;
            }
            drop(put);
            queue_notice(
                conn,
                customer_id,
                "mfa_change",
                &serde_json::json!({"factor": "totp", "change": "added"}),
                None,
                at,
            )?;
            append_audit(conn, audit, at)?;
            Ok(true)
        })
        .await
    }

    async fn use_totp_step(&self, customer_id: &str, step: u64) -> Result<bool> {
        self.write(|conn, _| {
            let n = conn
                .prepare(
                    "UPDATE totp SET last_step = ?1 WHERE customer_id = ?2 \
                     AND confirmed_at IS NOT NULL AND (last_step IS NULL OR last_step < ?1)",
                )?
                .exec(&[Value::Int(step as i64), Value::Text(customer_id)])?;
            Ok(n == 1)
        })
        .await
    }

    async fn use_recovery_code(
        &self,
        customer_id: &str,
        digest: &str,
        at: i64,
        audit: &AuditNote,
    ) -> Result<bool> {
        self.write(|conn, _| {
            let n = conn
                .prepare(
                    "UPDATE recovery_codes SET used_at = ? \
                     WHERE customer_id = ? AND digest = ? AND used_at IS NULL",
                )?
                .exec(&[
                    Value::Int(at),
                    Value::Text(customer_id),
                    Value::Text(digest),
                ])?;
            if n == 1 {
                append_audit(conn, audit, at)?;
            }
            Ok(n == 1)
        })
        .await
    }

    async fn recovery_codes_left(&self, customer_id: &str) -> Result<u64> {
        let id = customer_id.to_owned();
        self.with_raw(move |conn| {
            Ok(conn
                .prepare(
                    "SELECT count(*) FROM recovery_codes WHERE customer_id = ? AND used_at IS NULL",
                )?
                .query_i64(&[Value::Text(&id)])?
                .unwrap_or(0) as u64)
        })
        .await
    }

    async fn remove_totp(&self, customer_id: &str, at: i64, audit: &AuditNote) -> Result<bool> {
        self.write(|conn, _| {
            let n = conn
                .prepare("DELETE FROM totp WHERE customer_id = ?")?
                .exec(&[Value::Text(customer_id)])?;
            conn.prepare("DELETE FROM recovery_codes WHERE customer_id = ?")?
                .exec(&[Value::Text(customer_id)])?;
            if n == 1 {
                queue_notice(
                    conn,
                    customer_id,
                    "mfa_change",
                    &serde_json::json!({"factor": "totp", "change": "removed"}),
                    None,
                    at,
                )?;
                append_audit(conn, audit, at)?;
            }
            Ok(n == 1)
        })
        .await
    }
}

impl Lockouts for SqliteStore {
    async fn failures(&self, customer_id: &str, kind: PasswordKind) -> Result<Option<(u32, i64)>> {
        let id = customer_id.to_owned();
        self.with_raw(move |conn| {
            let mut out = None;
            conn.prepare(
                "SELECT failures, last_failure_at FROM auth_failures \
                 WHERE customer_id = ? AND kind = ?",
            )?
            .for_each(&[Value::Text(&id), Value::Text(kind.as_str())], |r| {
                out = Some((u32::try_from(r.i64(0)).unwrap_or(u32::MAX), r.i64(1)));
                Ok(())
            })?;
            Ok(out)
        })
        .await
    }

    async fn add_failure(&self, customer_id: &str, kind: PasswordKind, at: i64) -> Result<u32> {
        self.write(|conn, _| {
            conn.prepare(
                "INSERT INTO auth_failures (customer_id, kind, failures, last_failure_at) \
                 VALUES (?1, ?2, 1, ?3) ON CONFLICT (customer_id, kind) DO UPDATE \
                 SET failures = failures + 1, last_failure_at = max(last_failure_at, ?3)",
            )?
            .exec(&[
                Value::Text(customer_id),
                Value::Text(kind.as_str()),
                Value::Int(at),
            ])?;
            let n = conn
                .prepare("SELECT failures FROM auth_failures WHERE customer_id = ? AND kind = ?")?
                .query_i64(&[Value::Text(customer_id), Value::Text(kind.as_str())])?
                .unwrap_or(0);
            Ok(u32::try_from(n).unwrap_or(u32::MAX))
        })
        .await
    }

    async fn clear_failures(
        &self,
        customer_id: &str,
        kind: PasswordKind,
        at: i64,
        audit: Option<&AuditNote>,
    ) -> Result<bool> {
        self.write(|conn, _| {
            let n = conn
                .prepare("DELETE FROM auth_failures WHERE customer_id = ? AND kind = ?")?
                .exec(&[Value::Text(customer_id), Value::Text(kind.as_str())])?;
            if let Some(a) = audit
                && n > 0
            {
                append_audit(conn, a, at)?;
            }
            Ok(n > 0)
        })
        .await
    }

    async fn note_lockout(
        &self,
        customer_id: &str,
        detail: &serde_json::Value,
        at: i64,
        audit: &AuditNote,
    ) -> Result<()> {
        self.write(|conn, _| {
            queue_notice(conn, customer_id, "lockout", detail, None, at)?;
            append_audit(conn, audit, at)?;
            Ok(())
        })
        .await
    }
}

impl StepUps for SqliteStore {
    async fn issue_stepup(&self, g: &StepUpGrant, audit: &AuditNote) -> Result<()> {
        self.write(|conn, _| {
            conn.prepare(
                "INSERT INTO stepup_tokens (token_digest, customer_id, operation, params_digest, \
                 method, created_at, expires_at) VALUES (?,?,?,?,?,?,?)",
            )?
            .exec(&[
                Value::Text(&g.token_digest),
                Value::Text(&g.customer_id),
                Value::Text(&g.operation),
                Value::Text(&g.params_digest),
                Value::Text(&g.method),
                Value::Int(g.created_at),
                Value::Int(g.expires_at),
            ])?;
            append_audit(conn, audit, g.created_at)?;
            Ok(())
        })
        .await
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
        // In the writer's transaction: the check and the use are one step.
        self.write(|conn, _| {
            let mut row: Option<(StepUpGrant, Option<i64>)> = None;
            conn.prepare(
                "SELECT token_digest, customer_id, operation, params_digest, method, created_at, \
                 expires_at, used_at FROM stepup_tokens WHERE token_digest = ?",
            )?
            .for_each(&[Value::Text(token_digest)], |r| {
                row = Some((
                    StepUpGrant {
                        token_digest: r.string(0)?,
                        customer_id: r.string(1)?,
                        operation: r.string(2)?,
                        params_digest: r.string(3)?,
                        method: r.string(4)?,
                        created_at: r.i64(5),
                        expires_at: r.i64(6),
                    },
                    r.opt_i64(7),
                ));
                Ok(())
            })?;
            let Some((g, used)) = row else {
                return Ok(Err(Refusal::Unknown));
            };
            let refusal = if used.is_some() {
                Some(Refusal::Used)
            } else if g.customer_id != customer_id {
                Some(Refusal::OtherCustomer)
            } else if g.operation != operation {
                Some(Refusal::OtherOperation)
            } else if g.params_digest != params_digest {
                Some(Refusal::OtherParameters)
            } else if g.expires_at <= now {
                Some(Refusal::Expired)
            } else {
                None
            };
            if let Some(r) = refusal {
                return Ok(Err(r));
            }
            conn.prepare(
                "UPDATE stepup_tokens SET used_at = ? WHERE token_digest = ? AND used_at IS NULL",
            )?
            .exec(&[Value::Int(now), Value::Text(token_digest)])?;
            Ok(Ok(g))
        })
        .await
    }
}

impl Destinations for SqliteStore {
    async fn register_destination(
        &self,
        rec: &AssessmentRecord,
        d: &RegisteredDestination,
        notice: &serde_json::Value,
        audit: &AuditNote,
    ) -> Result<Option<i64>, CaseError> {
        self.write(|conn, w| {
            let alert = crate::decisions::record_in(conn, w, std::slice::from_ref(rec))?
                .pop()
                .unwrap_or(Ok(None))?;
            let c = &rec.event.customer_id;
            let x = &d.destination;
            conn.prepare(
                "INSERT INTO customer_destinations (customer_id, bank_code, branch_code, \
                 account_type, account_number, holder_kana, registered_at, status, effective_at, \
                 assessment_id) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10) \
                 ON CONFLICT (customer_id, bank_code, branch_code, account_type, account_number) \
                 DO UPDATE SET holder_kana = ?6, registered_at = ?7, status = ?8, \
                 effective_at = ?9, assessment_id = ?10",
            )?
            .exec(&[
                Value::Text(c),
                Value::Text(&x.bank_code),
                Value::Text(&x.branch_code),
                Value::Text(&x.account_type),
                Value::Text(&x.account_number),
                Value::Text(&x.holder_kana),
                Value::Int(d.registered_at),
                Value::Text(&d.status),
                d.effective_at.into(),
                d.assessment_id.as_deref().map_or(Value::Null, Value::Text),
            ])?;
            queue_notice(
                conn,
                c,
                "destination_change",
                notice,
                d.assessment_id.as_deref(),
                d.registered_at,
            )?;
            append_audit(conn, audit, d.registered_at)?;
            Ok::<_, CaseError>(alert)
        })
        .await
    }

    async fn destinations(&self, customer_id: &str) -> Result<Vec<RegisteredDestination>> {
        // On the calling thread, like `Freezes::frozen`: every withdrawal the server assesses
        // asks this.
        self.read_now(|conn| destination_rows(conn, customer_id))
    }
}

/// A customer's destinations, oldest first.
fn destination_rows(conn: &raw::Conn<'_>, customer_id: &str) -> Result<Vec<RegisteredDestination>> {
    let mut out = Vec::new();
    conn.prepare(
        "SELECT bank_code, branch_code, account_type, account_number, holder_kana, status, \
         registered_at, effective_at, assessment_id FROM customer_destinations \
         WHERE customer_id = ? ORDER BY registered_at, bank_code, branch_code, account_number",
    )?
    .for_each(&[Value::Text(customer_id)], |r| {
        out.push(RegisteredDestination {
            destination: Destination {
                bank_code: r.string(0)?,
                branch_code: r.string(1)?,
                account_type: r.string(2)?,
                account_number: r.string(3)?,
                holder_kana: r.string(4)?,
            },
            status: r.string(5)?,
            registered_at: r.i64(6),
            effective_at: r.opt_i64(7),
            assessment_id: r.text(8)?.map(str::to_owned),
        });
        Ok(())
    })?;
    Ok(out)
}

impl crate::Policies for SqliteStore {
    async fn set_policy(
        &self,
        body: &str,
        at: i64,
        set_by: &str,
        reason: &str,
        audit: &AuditNote,
    ) -> Result<i64> {
        let (body, set_by, reason) = (body.to_owned(), set_by.to_owned(), reason.to_owned());
        self.write(move |conn, _| {
            let mut revision = 1;
            conn.prepare("SELECT coalesce(max(revision), 0) + 1 FROM policies")?
                .for_each(&[], |r| {
                    revision = r.i64(0);
                    Ok(())
                })?;
            conn.prepare(
                "INSERT INTO policies (revision, body, set_at, set_by, reason) VALUES (?,?,?,?,?)",
            )?
            .exec(&[
                Value::Int(revision),
                Value::Text(&body),
                Value::Int(at),
                Value::Text(&set_by),
                Value::Text(&reason),
            ])?;
            let mut note = audit.clone();
            note.target = format!("policy:{revision}");
            append_audit(conn, &note, at)?;
            Ok(revision)
        })
        .await
    }

    async fn policy(&self) -> Result<Option<crate::StoredPolicy>> {
        self.with_raw(|conn| {
            let mut out = None;
            conn.prepare(
                "SELECT revision, body, set_at, set_by, reason FROM policies \
                 ORDER BY revision DESC LIMIT 1",
            )?
            .for_each(&[], |r| {
                out = Some(crate::StoredPolicy {
                    revision: r.i64(0),
                    body: r.string(1)?,
                    set_at: r.i64(2),
                    set_by: r.string(3)?,
                    reason: r.string(4)?,
                });
                Ok(())
            })?;
            Ok(out)
        })
        .await
    }

    async fn policy_revision(&self) -> Result<Option<i64>> {
        self.read_now(|conn| {
            let mut out = None;
            conn.prepare("SELECT max(revision) FROM policies")?
                .for_each(&[], |r| {
                    out = r.opt_i64(0);
                    Ok(())
                })?;
            Ok(out)
        })
    }
}
