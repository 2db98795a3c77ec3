//! Passkeys and their ceremonies in the embedded store (migration 0013).

use crate::people::append_audit;
use crate::raw::{self, Value};
use crate::sqlite::corrupt;
use crate::{AuditNote, PasskeyCeremony, Passkeys, Result, SqliteStore, StoredPasskey};

/// Clears the ceremonies expired at `now`, inside the caller's write transaction.
fn clear_expired(conn: &raw::Conn<'_>, now: i64) -> Result<()> {
    conn.prepare("DELETE FROM passkey_ceremonies WHERE expires_at <= ?")?
        .exec(&[Value::Int(now)])?;
    Ok(())
}

fn counter_of(v: i64) -> Result<u32> {
    u32::try_from(v).map_err(|_| corrupt("a passkey counter is out of range"))
}

impl Passkeys for SqliteStore {
    async fn save_ceremony(&self, c: &PasskeyCeremony) -> Result<()> {
        self.write(|conn, _| {
            clear_expired(conn, c.created_at)?;
            conn.prepare(
                "INSERT INTO passkey_ceremonies (ceremony_id, customer_id, purpose, state, \
                 created_at, expires_at) VALUES (?,?,?,?,?,?)",
            )?
            .exec(&[
                Value::Text(&c.ceremony_id),
                Value::Text(&c.customer_id),
                Value::Text(&c.purpose),
                Value::Text(&c.state),
                Value::Int(c.created_at),
                Value::Int(c.expires_at),
            ])?;
            Ok(())
        })
        .await
    }

    async fn take_ceremony(
        &self,
        ceremony_id: &str,
        customer_id: &str,
        purpose: &str,
        now: i64,
    ) -> Result<Option<PasskeyCeremony>> {
        // In the writer's transaction: the check and the delete are one step, so of two takes
        // one gets it.
        self.write(|conn, _| {
            clear_expired(conn, now)?;
            let mut out = None;
            conn.prepare(
                "DELETE FROM passkey_ceremonies WHERE ceremony_id = ? AND customer_id = ? \
                 AND purpose = ? AND expires_at > ? \
                 RETURNING ceremony_id, customer_id, purpose, state, created_at, expires_at",
            )?
            .for_each(
                &[
                    Value::Text(ceremony_id),
                    Value::Text(customer_id),
                    Value::Text(purpose),
                    Value::Int(now),
                ],
                |r| {
                    out = Some(PasskeyCeremony {
                        ceremony_id: r.string(0)?,
                        customer_id: r.string(1)?,
                        purpose: r.string(2)?,
                        state: r.string(3)?,
                        created_at: r.i64(4),
                        expires_at: r.i64(5),
                    });
                    Ok(())
                },
            )?;
            Ok(out)
        })
        .await
    }

    async fn add_passkey(&self, p: &StoredPasskey, audit: &AuditNote) -> Result<bool> {
        self.write(|conn, _| {
            let n = conn
                .prepare(
                    "INSERT OR IGNORE INTO passkeys (customer_id, credential_id, name, passkey, \
                     counter, created_at, last_used_at) VALUES (?,?,?,?,?,?,?)",
                )?
                .exec(&[
                    Value::Text(&p.customer_id),
                    Value::Text(&p.credential_id),
                    Value::Text(&p.name),
                    Value::Text(&p.passkey),
                    Value::Int(i64::from(p.counter)),
                    Value::Int(p.created_at),
                    p.last_used_at.into(),
                ])?;
            if n == 1 {
                crate::notices::queue_notice(
                    conn,
                    &p.customer_id,
                    "mfa_change",
                    &serde_json::json!({"factor": "passkey", "change": "added", "name": p.name}),
                    None,
                    p.created_at,
                )?;
                append_audit(conn, audit, p.created_at)?;
            }
            Ok(n == 1)
        })
        .await
    }

    async fn passkeys(&self, customer_id: &str) -> Result<Vec<StoredPasskey>> {
        let id = customer_id.to_owned();
        self.with_raw(move |conn| {
            let mut out = Vec::new();
            conn.prepare(
                "SELECT customer_id, credential_id, name, passkey, counter, created_at, \
                 last_used_at FROM passkeys WHERE customer_id = ? ORDER BY created_at, credential_id",
            )?
            .for_each(&[Value::Text(&id)], |r| {
                out.push(StoredPasskey {
                    customer_id: r.string(0)?,
                    credential_id: r.string(1)?,
                    name: r.string(2)?,
                    passkey: r.string(3)?,
                    counter: counter_of(r.i64(4))?,
                    created_at: r.i64(5),
                    last_used_at: r.opt_i64(6),
                });
                Ok(())
            })?;
            Ok(out)
        })
        .await
    }

    async fn use_passkey(
        &self,
        customer_id: &str,
        credential_id: &str,
        passkey: &str,
        counter: u32,
        at: i64,
    ) -> Result<bool> {
        self.write(|conn, _| {
            let n = conn
                .prepare(
                    "UPDATE passkeys SET passkey = ?3, counter = ?4, last_used_at = ?5 \
                     WHERE customer_id = ?1 AND credential_id = ?2 \
                     AND (counter < ?4 OR (?4 = 0 AND counter = 0))",
                )?
                .exec(&[
                    Value::Text(customer_id),
                    Value::Text(credential_id),
                    Value::Text(passkey),
                    Value::Int(i64::from(counter)),
                    Value::Int(at),
                ])?;
            Ok(n == 1)
        })
        .await
    }

    async fn remove_passkey(
        &self,
        customer_id: &str,
        credential_id: &str,
        at: i64,
        audit: &AuditNote,
    ) -> Result<bool> {
        self.write(|conn, _| {
            let n = conn
                .prepare("DELETE FROM passkeys WHERE customer_id = ? AND credential_id = ?")?
                .exec(&[Value::Text(customer_id), Value::Text(credential_id)])?;
            if n == 1 {
                crate::notices::queue_notice(
                    conn,
                    customer_id,
                    "mfa_change",
                    &serde_json::json!({"factor": "passkey", "change": "removed"}),
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
