//! The outbox of notices to customers, their "this wasn't me" reports and frozen withdrawals in
//! the embedded store (migrations 0010 and 0014).

use mamori_core::case::{Resolution, Trigger};

use crate::people::append_audit;
use crate::raw::{self, Value};
use crate::sqlite::corrupt;
use crate::{
    AuditNote, Freeze, Freezes, MAX_NOTICE_ATTEMPTS, Notice, NoticeFilter, Outbox, ReportLink,
    ReportRefusal, Reported, Reports, Result, SqliteStore,
};

/// Puts a notice to the customer in the outbox, inside the caller's write transaction.
pub(crate) fn queue_notice(
    conn: &raw::Conn<'_>,
    customer_id: &str,
    kind: &str,
    detail: &serde_json::Value,
    assessment_id: Option<&str>,
    at: i64,
) -> Result<i64> {
    conn.prepare(
        "INSERT INTO notices (customer_id, kind, detail, created_at, assessment_id) \
         VALUES (?, ?, ?, ?, ?)",
    )?
    .exec(&[
        Value::Text(customer_id),
        Value::Text(kind),
        Value::Text(&detail.to_string()),
        Value::Int(at),
        assessment_id.into(),
    ])?;
    Ok(conn
        .prepare("SELECT last_insert_rowid()")?
        .query_i64(&[])?
        .unwrap_or(0))
}

const NOTICE_COLUMNS: &str = "notice_id, customer_id, kind, detail, created_at, assessment_id, \
                              sent_at, attempts, last_error, next_attempt_at";

fn notice_row(r: &raw::Row<'_>) -> Result<Notice> {
    Ok(Notice {
        notice_id: r.i64(0),
        customer_id: r.string(1)?,
        kind: r.string(2)?,
        detail: serde_json::from_str(&r.string(3)?)
            .map_err(|_| corrupt("notice detail is not JSON"))?,
        created_at: r.i64(4),
        assessment_id: r.text(5)?.map(str::to_owned),
        sent_at: r.opt_i64(6),
        attempts: u32::try_from(r.i64(7)).unwrap_or(u32::MAX),
        last_error: r.text(8)?.map(str::to_owned),
        next_attempt_at: r.opt_i64(9),
    })
}

fn limit_value(limit: usize) -> Value<'static> {
    Value::Int(i64::try_from(limit).unwrap_or(i64::MAX))
}

impl Outbox for SqliteStore {
    async fn queue_notice(
        &self,
        customer_id: &str,
        kind: &str,
        detail: &serde_json::Value,
        assessment_id: Option<&str>,
        at: i64,
    ) -> Result<i64> {
        self.write(|conn, _| queue_notice(conn, customer_id, kind, detail, assessment_id, at))
            .await
    }

    async fn due_notices(&self, now: i64, limit: usize) -> Result<Vec<Notice>> {
        self.with_raw(move |conn| {
            let mut out = Vec::new();
            conn.prepare(&format!(
                "SELECT {NOTICE_COLUMNS} FROM notices WHERE sent_at IS NULL AND attempts < ? \
                 AND (next_attempt_at IS NULL OR next_attempt_at <= ?) ORDER BY notice_id LIMIT ?"
            ))?
            .for_each(
                &[
                    Value::Int(i64::from(MAX_NOTICE_ATTEMPTS)),
                    Value::Int(now),
                    limit_value(limit),
                ],
                |r| {
                    out.push(notice_row(r)?);
                    Ok(())
                },
            )?;
            Ok(out)
        })
        .await
    }

    async fn notice_result(
        &self,
        notice_id: i64,
        at: i64,
        error: Option<&str>,
        retry_at: i64,
    ) -> Result<()> {
        self.write(|conn, _| {
            match error {
                None => conn
                    .prepare(
                        "UPDATE notices SET sent_at = ?, attempts = attempts + 1, \
                         next_attempt_at = NULL WHERE notice_id = ?",
                    )?
                    .exec(&[Value::Int(at), Value::Int(notice_id)])?,
                Some(e) => conn
                    .prepare(
                        "UPDATE notices SET attempts = attempts + 1, last_error = ?, \
                         next_attempt_at = ? WHERE notice_id = ?",
                    )?
                    .exec(&[Value::Text(e), Value::Int(retry_at), Value::Int(notice_id)])?,
            };
            Ok(())
        })
        .await
    }

    async fn notices(&self, filter: &NoticeFilter) -> Result<Vec<Notice>> {
        let f = filter.clone();
        self.with_raw(move |conn| {
            let mut out = Vec::new();
            let mut sql = format!("SELECT {NOTICE_COLUMNS} FROM notices WHERE 1");
            let mut args: Vec<Value<'_>> = Vec::new();
            if let Some(c) = &f.customer_id {
                sql.push_str(" AND customer_id = ?");
                args.push(Value::Text(c));
            }
            if f.given_up {
                sql.push_str(" AND sent_at IS NULL AND attempts >= ?");
                args.push(Value::Int(i64::from(MAX_NOTICE_ATTEMPTS)));
            }
            sql.push_str(" ORDER BY notice_id DESC LIMIT ?");
            args.push(limit_value(f.limit));
            conn.prepare(&sql)?.for_each(&args, |r| {
                out.push(notice_row(r)?);
                Ok(())
            })?;
            Ok(out)
        })
        .await
    }
}

fn link_row(conn: &raw::Conn<'_>, token_digest: &str) -> Result<Option<ReportLink>> {
    let mut out = None;
    conn.prepare(
        "SELECT token_digest, customer_id, notice_id, notice_kind, assessment_id, created_at, \
         expires_at, used_at FROM report_links WHERE token_digest = ?",
    )?
    .for_each(&[Value::Text(token_digest)], |r| {
        out = Some(ReportLink {
            token_digest: r.string(0)?,
            customer_id: r.string(1)?,
            notice_id: r.i64(2),
            notice_kind: r.string(3)?,
            assessment_id: r.text(4)?.map(str::to_owned),
            created_at: r.i64(5),
            expires_at: r.i64(6),
            used_at: r.opt_i64(7),
        });
        Ok(())
    })?;
    Ok(out)
}

/// Freezes inside the caller's write transaction, with a notice to the customer; false if the
/// customer's withdrawals were already frozen (the first freeze stays).
fn freeze_in(conn: &raw::Conn<'_>, f: &Freeze) -> Result<bool> {
    let n = conn
        .prepare(
            "INSERT OR IGNORE INTO withdrawal_freezes (customer_id, frozen_at, source, actor, \
             reason) VALUES (?,?,?,?,?)",
        )?
        .exec(&[
            Value::Text(&f.customer_id),
            Value::Int(f.frozen_at),
            Value::Text(&f.source),
            Value::Text(&f.actor),
            Value::Text(&f.reason),
        ])?;
    if n == 1 {
        queue_notice(
            conn,
            &f.customer_id,
            "withdrawals_frozen",
            &serde_json::json!({"source": f.source}),
            None,
            f.frozen_at,
        )?;
    }
    Ok(n == 1)
}

impl Reports for SqliteStore {
    async fn add_report_link(&self, l: &ReportLink) -> Result<()> {
        self.write(|conn, _| {
            conn.prepare(
                "INSERT INTO report_links (token_digest, customer_id, notice_id, notice_kind, \
                 assessment_id, created_at, expires_at) VALUES (?,?,?,?,?,?,?)",
            )?
            .exec(&[
                Value::Text(&l.token_digest),
                Value::Text(&l.customer_id),
                Value::Int(l.notice_id),
                Value::Text(&l.notice_kind),
                l.assessment_id.as_deref().into(),
                Value::Int(l.created_at),
                Value::Int(l.expires_at),
            ])?;
            Ok(())
        })
        .await
    }

    async fn report_link(&self, token_digest: &str) -> Result<Option<ReportLink>> {
        let d = token_digest.to_owned();
        self.with_raw(move |conn| link_row(conn, &d)).await
    }

    async fn report(
        &self,
        token_digest: &str,
        now: i64,
        audit: &AuditNote,
    ) -> Result<Result<Reported, ReportRefusal>> {
        self.write(|conn, w| {
            let Some(link) = link_row(conn, token_digest)? else {
                return Ok(Err(ReportRefusal::Unknown));
            };
            if link.used_at.is_some() {
                return Ok(Err(ReportRefusal::Used));
            }
            if link.expires_at <= now {
                return Ok(Err(ReportRefusal::Expired));
            }
            conn.prepare(
                "UPDATE report_links SET used_at = ? WHERE token_digest = ? AND used_at IS NULL",
            )?
            .exec(&[Value::Int(now), Value::Text(token_digest)])?;
            let customer = &link.customer_id;
            let by = format!("customer:{customer}");
            freeze_in(
                conn,
                &Freeze {
                    customer_id: customer.clone(),
                    frozen_at: now,
                    source: "customer_report".into(),
                    actor: by.clone(),
                    reason: format!("this wasn't me: {}", link.notice_kind),
                },
            )?;
            let mut alert_id = None;
            let mut refused = 0;
            // Only an assessment of this customer's (the link's notice told them of it).
            if let Some(aid) = &link.assessment_id
                && crate::decisions::assessment_customer(conn, aid)?.as_deref() == Some(customer)
            {
                let id = match crate::decisions::alert_of(conn, aid)? {
                    Some(id) => id,
                    None => crate::decisions::open_alert(conn, aid, now, Trigger::CustomerReport)?,
                };
                crate::decisions::resolve_in(
                    conn,
                    w,
                    id,
                    Resolution::ConfirmedFraud,
                    "reported by the customer: this wasn't me",
                    &by,
                    now,
                    true,
                )
                .map_err(|e| match e {
                    crate::CaseError::Store(e) => e,
                    other => corrupt(&other.to_string()),
                })?;
                alert_id = Some(id);
                refused = conn
                    .prepare(
                        "UPDATE customer_destinations SET status = 'refused' \
                         WHERE assessment_id = ? AND customer_id = ? AND status != 'refused'",
                    )?
                    .exec(&[Value::Text(aid), Value::Text(customer)])?;
            }
            let mut note = audit.clone();
            if let serde_json::Value::Object(m) = &mut note.detail {
                m.insert("notice_kind".into(), link.notice_kind.clone().into());
                m.insert("assessment_id".into(), link.assessment_id.clone().into());
                m.insert("alert_id".into(), alert_id.into());
                m.insert("destinations_refused".into(), refused.into());
            }
            append_audit(conn, &note, now)?;
            Ok(Ok(Reported {
                customer_id: customer.clone(),
                alert_id,
                destinations_refused: refused,
            }))
        })
        .await
    }
}

impl Freezes for SqliteStore {
    async fn freeze(&self, f: &Freeze, audit: &AuditNote) -> Result<bool> {
        self.write(|conn, _| {
            let fresh = freeze_in(conn, f)?;
            if fresh {
                append_audit(conn, audit, f.frozen_at)?;
            }
            Ok(fresh)
        })
        .await
    }

    async fn unfreeze(&self, customer_id: &str, at: i64, audit: &AuditNote) -> Result<bool> {
        self.write(|conn, _| {
            let n = conn
                .prepare("DELETE FROM withdrawal_freezes WHERE customer_id = ?")?
                .exec(&[Value::Text(customer_id)])?;
            if n == 1 {
                append_audit(conn, audit, at)?;
            }
            Ok(n == 1)
        })
        .await
    }

    async fn frozen(&self, customer_id: &str) -> Result<Option<Freeze>> {
        // On the calling thread: every withdrawal the server assesses asks this (see
        // `read_now`); a pooled connection and a blocking thread cost more than the read.
        let id = customer_id;
        self.read_now(|conn| {
            let mut out = None;
            conn.prepare(
                "SELECT customer_id, frozen_at, source, actor, reason FROM withdrawal_freezes \
                 WHERE customer_id = ?",
            )?
            .for_each(&[Value::Text(id)], |r| {
                out = Some(Freeze {
                    customer_id: r.string(0)?,
                    frozen_at: r.i64(1),
                    source: r.string(2)?,
                    actor: r.string(3)?,
                    reason: r.string(4)?,
                });
                Ok(())
            })?;
            Ok(out)
        })
    }
}
