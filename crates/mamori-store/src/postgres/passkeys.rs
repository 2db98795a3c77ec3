//! Passkeys and their ceremonies in the PostgreSQL store.

use sqlx::PgConnection;

use super::PgStore;
use super::notices::queue_notice;
use super::people::append_audit;
use crate::sqlite::corrupt;
use crate::{AuditNote, PasskeyCeremony, Passkeys, Result, StoredPasskey};

/// Clears the ceremonies expired at `now`, inside the caller's transaction.
async fn clear_expired(conn: &mut PgConnection, now: i64) -> Result<()> {
    sqlx::query("DELETE FROM passkey_ceremonies WHERE expires_at <= $1")
        .bind(now)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// A passkey's columns, in the order read.
type PasskeyRow = (String, String, String, String, i64, i64, Option<i64>);

fn counter_of(v: i64) -> Result<u32> {
    u32::try_from(v).map_err(|_| corrupt("a passkey counter is out of range"))
}

impl Passkeys for PgStore {
    async fn save_ceremony(&self, c: &PasskeyCeremony) -> Result<()> {
        let mut tx = self.begin().await?;
        clear_expired(&mut tx, c.created_at).await?;
        sqlx::query(
            "INSERT INTO passkey_ceremonies (ceremony_id, customer_id, purpose, state, \
             created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&c.ceremony_id)
        .bind(&c.customer_id)
        .bind(&c.purpose)
        .bind(&c.state)
        .bind(c.created_at)
        .bind(c.expires_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn take_ceremony(
        &self,
        ceremony_id: &str,
        customer_id: &str,
        purpose: &str,
        now: i64,
    ) -> Result<Option<PasskeyCeremony>> {
        let mut tx = self.begin().await?;
        clear_expired(&mut tx, now).await?;
        // Compare-and-delete in one statement: of two takes, one gets the row.
        let row: Option<(String, String, String, String, i64, i64)> = sqlx::query_as(
            "DELETE FROM passkey_ceremonies WHERE ceremony_id = $1 AND customer_id = $2 \
             AND purpose = $3 AND expires_at > $4 \
             RETURNING ceremony_id, customer_id, purpose, state, created_at, expires_at",
        )
        .bind(ceremony_id)
        .bind(customer_id)
        .bind(purpose)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(row.map(
            |(ceremony_id, customer_id, purpose, state, created_at, expires_at)| PasskeyCeremony {
                ceremony_id,
                customer_id,
                purpose,
                state,
                created_at,
                expires_at,
            },
        ))
    }

    async fn add_passkey(&self, p: &StoredPasskey, audit: &AuditNote) -> Result<bool> {
        let mut tx = self.begin().await?;
        // Either key (the customer's, or the credential id anyone's) refuses it.
        let n = sqlx::query(
            "INSERT INTO passkeys (customer_id, credential_id, name, passkey, counter, \
             created_at, last_used_at) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
        )
        .bind(&p.customer_id)
        .bind(&p.credential_id)
        .bind(&p.name)
        .bind(&p.passkey)
        .bind(i64::from(p.counter))
        .bind(p.created_at)
        .bind(p.last_used_at)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 1 {
            queue_notice(
                &mut tx,
                &p.customer_id,
                "mfa_change",
                &serde_json::json!({"factor": "passkey", "change": "added", "name": p.name}),
                None,
                p.created_at,
            )
            .await?;
            append_audit(&mut tx, audit, p.created_at).await?;
        }
        tx.commit().await?;
        Ok(n == 1)
    }

    async fn passkeys(&self, customer_id: &str) -> Result<Vec<StoredPasskey>> {
        let rows: Vec<PasskeyRow> = sqlx::query_as(
            "SELECT customer_id, credential_id, name, passkey, counter, created_at, last_used_at \
             FROM passkeys WHERE customer_id = $1 ORDER BY created_at, credential_id",
        )
        .bind(customer_id)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(
                |(customer_id, credential_id, name, passkey, counter, created_at, last_used_at)| {
                    Ok(StoredPasskey {
                        customer_id,
                        credential_id,
                        name,
                        passkey,
                        counter: counter_of(counter)?,
                        created_at,
                        last_used_at,
                    })
                },
            )
            .collect()
    }

    async fn use_passkey(
        &self,
        customer_id: &str,
        credential_id: &str,
        passkey: &str,
        counter: u32,
        at: i64,
    ) -> Result<bool> {
        // Compare-and-set in one statement: of two uses with one counter, one wins.
        let n = sqlx::query(
            "UPDATE passkeys SET passkey = $3, counter = $4, last_used_at = $5 \
             WHERE customer_id = $1 AND credential_id = $2 \
             AND (counter < $4 OR ($4 = 0 AND counter = 0))",
        )
        .bind(customer_id)
        .bind(credential_id)
        .bind(passkey)
        .bind(i64::from(counter))
        .bind(at)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    async fn remove_passkey(
        &self,
        customer_id: &str,
        credential_id: &str,
        at: i64,
        audit: &AuditNote,
    ) -> Result<bool> {
        let mut tx = self.begin().await?;
        let n = sqlx::query("DELETE FROM passkeys WHERE customer_id = $1 AND credential_id = $2")
            .bind(customer_id)
            .bind(credential_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if n == 1 {
            queue_notice(
                &mut tx,
                customer_id,
                "mfa_change",
                &serde_json::json!({"factor": "passkey", "change": "removed"}),
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
