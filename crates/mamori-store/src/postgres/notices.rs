//! The outbox of notices to customers, their "this wasn't me" reports and frozen withdrawals in
//! the PostgreSQL store.

use mamori_core::case::{Resolution, Trigger};
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, PgConnection, Row};

use super::PgStore;
use super::decisions::{alert_of, assessment_customer, open_alert, resolve_in};
use super::people::append_audit;
use crate::sqlite::corrupt;
use crate::{
    AuditNote, Freeze, Freezes, MAX_NOTICE_ATTEMPTS, Notice, NoticeFilter, Outbox, ReportLink,
    ReportRefusal, Reported, Reports, Result,
};

/// Puts a notice to the customer in the outbox, inside the caller's transaction.
pub(crate) async fn queue_notice(
    conn: &mut PgConnection,
    customer_id: &str,
    kind: &str,
    detail: &serde_json::Value,
    assessment_id: Option<&str>,
    at: i64,
) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "INSERT INTO notices (customer_id, kind, detail, created_at, assessment_id) \
         VALUES ($1, $2, $3, $4, $5) RETURNING notice_id",
    )
    .bind(customer_id)
    .bind(kind)
    .bind(detail.to_string())
    .bind(at)
    .bind(assessment_id)
    .fetch_one(&mut *conn)
    .await?)
}

const NOTICE_COLUMNS: &str = "notice_id, customer_id, kind, detail, created_at, assessment_id, \
                              sent_at, attempts, last_error, next_attempt_at";

fn notice_row(r: &PgRow) -> Result<Notice> {
    Ok(Notice {
        notice_id: r.try_get(0)?,
        customer_id: r.try_get(1)?,
        kind: r.try_get(2)?,
        detail: serde_json::from_str(r.try_get(3)?)
            .map_err(|_| corrupt("notice detail is not JSON"))?,
        created_at: r.try_get(4)?,
        assessment_id: r.try_get(5)?,
        sent_at: r.try_get(6)?,
        attempts: u32::try_from(r.try_get::<i32, _>(7)?).unwrap_or(u32::MAX),
        last_error: r.try_get(8)?,
        next_attempt_at: r.try_get(9)?,
    })
}

fn limit_of(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

impl Outbox for PgStore {
    async fn queue_notice(
        &self,
        customer_id: &str,
        kind: &str,
        detail: &serde_json::Value,
        assessment_id: Option<&str>,
        at: i64,
    ) -> Result<i64> {
        let mut conn = self.pool.acquire().await?;
        queue_notice(&mut conn, customer_id, kind, detail, assessment_id, at).await
    }

    async fn due_notices(&self, now: i64, limit: usize) -> Result<Vec<Notice>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {NOTICE_COLUMNS} FROM notices WHERE sent_at IS NULL AND attempts < $1 \
             AND (next_attempt_at IS NULL OR next_attempt_at <= $2) ORDER BY notice_id LIMIT $3"
        )))
        .bind(MAX_NOTICE_ATTEMPTS as i32)
        .bind(now)
        .bind(limit_of(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(notice_row).collect()
    }

    async fn notice_result(
        &self,
        notice_id: i64,
        at: i64,
        error: Option<&str>,
        retry_at: i64,
    ) -> Result<()> {
        match error {
            None => {
                sqlx::query(
                    "UPDATE notices SET sent_at = $1, attempts = attempts + 1, \
                     next_attempt_at = NULL WHERE notice_id = $2",
                )
                .bind(at)
                .bind(notice_id)
                .execute(&self.pool)
                .await?
            }
            Some(e) => {
                sqlx::query(
                    "UPDATE notices SET attempts = attempts + 1, last_error = $1, \
                     next_attempt_at = $2 WHERE notice_id = $3",
                )
                .bind(e)
                .bind(retry_at)
                .bind(notice_id)
                .execute(&self.pool)
                .await?
            }
        };
        Ok(())
    }

    async fn notices(&self, filter: &NoticeFilter) -> Result<Vec<Notice>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {NOTICE_COLUMNS} FROM notices \
             WHERE ($1::text IS NULL OR customer_id = $1) \
               AND (NOT $2 OR (sent_at IS NULL AND attempts >= $3)) \
             ORDER BY notice_id DESC LIMIT $4"
        )))
        .bind(filter.customer_id.as_deref())
        .bind(filter.given_up)
        .bind(MAX_NOTICE_ATTEMPTS as i32)
        .bind(limit_of(filter.limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(notice_row).collect()
    }
}

const LINK_COLUMNS: &str = "token_digest, customer_id, notice_id, notice_kind, assessment_id, \
                            created_at, expires_at, used_at";

fn link_row(r: &PgRow) -> Result<ReportLink> {
    Ok(ReportLink {
        token_digest: r.try_get(0)?,
        customer_id: r.try_get(1)?,
        notice_id: r.try_get(2)?,
        notice_kind: r.try_get(3)?,
        assessment_id: r.try_get(4)?,
        created_at: r.try_get(5)?,
        expires_at: r.try_get(6)?,
        used_at: r.try_get(7)?,
    })
}

/// Freezes inside the caller's transaction, with a notice to the customer; false if the
/// customer's withdrawals were already frozen (the first freeze stays).
async fn freeze_in(conn: &mut PgConnection, f: &Freeze) -> Result<bool> {
    let n = sqlx::query(
        "INSERT INTO withdrawal_freezes (customer_id, frozen_at, source, actor, reason) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
    )
    .bind(&f.customer_id)
    .bind(f.frozen_at)
    .bind(&f.source)
    .bind(&f.actor)
    .bind(&f.reason)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if n == 1 {
        queue_notice(
            conn,
            &f.customer_id,
            "withdrawals_frozen",
            &serde_json::json!({"source": f.source}),
            None,
            f.frozen_at,
        )
        .await?;
    }
    Ok(n == 1)
}

impl Reports for PgStore {
    async fn add_report_link(&self, l: &ReportLink) -> Result<()> {
        sqlx::query(
            "INSERT INTO report_links (token_digest, customer_id, notice_id, notice_kind, \
             assessment_id, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&l.token_digest)
        .bind(&l.customer_id)
        .bind(l.notice_id)
        .bind(&l.notice_kind)
        .bind(&l.assessment_id)
        .bind(l.created_at)
        .bind(l.expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn report_link(&self, token_digest: &str) -> Result<Option<ReportLink>> {
        sqlx::query(AssertSqlSafe(format!(
            "SELECT {LINK_COLUMNS} FROM report_links WHERE token_digest = $1"
        )))
        .bind(token_digest)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(link_row)
        .transpose()
    }

    async fn report(
        &self,
        token_digest: &str,
        now: i64,
        audit: &AuditNote,
    ) -> Result<Result<Reported, ReportRefusal>> {
        let mut tx = self.begin().await?;
        // Using the link up is the first step, conditional: of two reports with one link, one
        // goes on and the other finds it used.
        let used = sqlx::query(AssertSqlSafe(format!(
            "UPDATE report_links SET used_at = $2 \
             WHERE token_digest = $1 AND used_at IS NULL AND expires_at > $2 \
             RETURNING {LINK_COLUMNS}"
        )))
        .bind(token_digest)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let link = match used {
            Some(r) => link_row(&r)?,
            None => {
                let link = sqlx::query(AssertSqlSafe(format!(
                    "SELECT {LINK_COLUMNS} FROM report_links WHERE token_digest = $1"
                )))
                .bind(token_digest)
                .fetch_optional(&mut *tx)
                .await?
                .as_ref()
                .map(link_row)
                .transpose()?;
                return Ok(Err(match link {
                    None => ReportRefusal::Unknown,
                    Some(l) if l.used_at.is_some() => ReportRefusal::Used,
                    Some(_) => ReportRefusal::Expired,
                }));
            }
        };
        let customer = &link.customer_id;
        let by = format!("customer:{customer}");
        freeze_in(
            &mut tx,
            &Freeze {
                customer_id: customer.clone(),
                frozen_at: now,
                source: "customer_report".into(),
                actor: by.clone(),
                reason: format!("this wasn't me: {}", link.notice_kind),
            },
        )
        .await?;
        let mut alert_id = None;
        let mut refused = 0;
        // Only an assessment of this customer's (the link's notice told them of it).
        if let Some(aid) = &link.assessment_id
            && assessment_customer(&mut tx, aid).await?.as_deref() == Some(customer.as_str())
        {
            let id = match alert_of(&mut tx, aid).await? {
                Some(id) => id,
                None => open_alert(&mut tx, aid, now, Trigger::CustomerReport).await?,
            };
            resolve_in(
                &mut tx,
                id,
                Resolution::ConfirmedFraud,
                "reported by the customer: this wasn't me",
                &by,
                now,
                true,
            )
            .await
            .map_err(|e| match e {
                crate::CaseError::Store(e) => e,
                other => corrupt(&other.to_string()),
            })?;
            alert_id = Some(id);
            refused = sqlx::query(
                "UPDATE customer_destinations SET status = 'refused' \
                 WHERE assessment_id = $1 AND customer_id = $2 AND status <> 'refused'",
            )
            .bind(aid)
            .bind(customer)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        let mut note = audit.clone();
        if let serde_json::Value::Object(m) = &mut note.detail {
            m.insert("notice_kind".into(), link.notice_kind.clone().into());
            m.insert("assessment_id".into(), link.assessment_id.clone().into());
            m.insert("alert_id".into(), alert_id.into());
            m.insert("destinations_refused".into(), refused.into());
        }
        append_audit(&mut tx, &note, now).await?;
        // The resolution taught the engine: every node reads the resolutions again.
        let mut fresh = super::events::Fresh::default();
        fresh.news.marks = alert_id.is_some();
        self.commit(tx, fresh).await?;
        Ok(Ok(Reported {
            customer_id: customer.clone(),
            alert_id,
            destinations_refused: refused,
        }))
    }
}

impl Freezes for PgStore {
    async fn freeze(&self, f: &Freeze, audit: &AuditNote) -> Result<bool> {
        let mut tx = self.begin().await?;
        let fresh = freeze_in(&mut tx, f).await?;
        if fresh {
            append_audit(&mut tx, audit, f.frozen_at).await?;
        }
        tx.commit().await?;
        Ok(fresh)
    }

    async fn unfreeze(&self, customer_id: &str, at: i64, audit: &AuditNote) -> Result<bool> {
        let mut tx = self.begin().await?;
        let n = sqlx::query("DELETE FROM withdrawal_freezes WHERE customer_id = $1")
            .bind(customer_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if n == 1 {
            append_audit(&mut tx, audit, at).await?;
        }
        tx.commit().await?;
        Ok(n == 1)
    }

    async fn frozen(&self, customer_id: &str) -> Result<Option<Freeze>> {
        let row: Option<(String, i64, String, String, String)> = sqlx::query_as(
            "SELECT customer_id, frozen_at, source, actor, reason FROM withdrawal_freezes \
             WHERE customer_id = $1",
        )
        .bind(customer_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(
            row.map(|(customer_id, frozen_at, source, actor, reason)| Freeze {
                customer_id,
                frozen_at,
                source,
                actor,
                reason,
            }),
        )
    }
}
