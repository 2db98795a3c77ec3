//! The decision log and API keys in the PostgreSQL store.

use std::collections::HashSet;

use mamori_core::assess::{Marks, Past};
use mamori_core::case::{
    AlertStatus, Outcome, Resolution, Scope, Trigger, on_decision, on_outcome,
};
use mamori_core::event::{Event, Kind};
use mamori_core::history::device_hash;
use mamori_core::net::{ip_key, key_bytes};
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, PgConnection, Row};

use super::PgStore;
use super::events::{Fresh, insert_in};
use crate::decisions::{AssessmentColumns, parse, withdrawal_notice};
use crate::sqlite::{corrupt, ip_of};
use crate::{Alert, ApiKey, ApiKeys, AssessmentRecord, AuditNote, CaseError, DecisionLog, Result};

const ASSESSMENT_COLUMNS: &str = "a.assessment_id, a.created_at, a.event, a.decision, a.score, \
     a.reasons, a.outcome, a.outcome_at";

/// Reads an assessment from columns starting at `i` (in [`ASSESSMENT_COLUMNS`] order).
fn assessment_at(r: &PgRow, i: usize) -> Result<AssessmentRecord> {
    AssessmentColumns {
        assessment_id: r.try_get(i)?,
        created_at: r.try_get(i + 1)?,
        event: r.try_get(i + 2)?,
        decision: r.try_get(i + 3)?,
        score: r.try_get::<i16, _>(i + 4)?.into(),
        reasons: r.try_get(i + 5)?,
        outcome: r.try_get(i + 6)?,
        outcome_at: r.try_get(i + 7)?,
    }
    .record()
}

fn alert_sql(filter: &str) -> String {
    format!(
        "SELECT l.alert_id, l.opened_at, l.trigger, l.status, l.resolution, l.note, \
         l.resolved_by, l.resolved_at, {ASSESSMENT_COLUMNS} \
         FROM alerts l JOIN assessments a ON a.assessment_id = l.assessment_id {filter}"
    )
}

fn alert_row(r: &PgRow) -> Result<Alert> {
    Ok(Alert {
        alert_id: r.try_get(0)?,
        opened_at: r.try_get(1)?,
        trigger: parse(r.try_get(2)?, "trigger", Trigger::parse)?,
        status: parse(r.try_get(3)?, "status", AlertStatus::parse)?,
        resolution: r
            .try_get::<Option<&str>, _>(4)?
            .map(|t| parse(t, "resolution", Resolution::parse))
            .transpose()?,
        note: r.try_get(5)?,
        resolved_by: r.try_get(6)?,
        resolved_at: r.try_get(7)?,
        assessment: assessment_at(r, 8)?,
    })
}

/// An alert; with `lock`, its row is locked until the transaction ends.
async fn one_alert(conn: &mut PgConnection, id: i64, lock: bool) -> Result<Option<Alert>> {
    let filter = if lock {
        "WHERE l.alert_id = $1 FOR UPDATE OF l"
    } else {
        "WHERE l.alert_id = $1"
    };
    sqlx::query(AssertSqlSafe(alert_sql(filter)))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .as_ref()
        .map(alert_row)
        .transpose()
}

/// An assessment; with `lock`, its row is locked until the transaction ends.
async fn one_assessment(
    conn: &mut PgConnection,
    id: &str,
    lock: bool,
) -> Result<Option<AssessmentRecord>> {
    let lock = if lock { " FOR UPDATE" } else { "" };
    sqlx::query(AssertSqlSafe(format!(
        "SELECT {ASSESSMENT_COLUMNS} FROM assessments a WHERE a.assessment_id = $1{lock}"
    )))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .as_ref()
    .map(|r| assessment_at(r, 0))
    .transpose()
}

pub(crate) async fn open_alert(
    conn: &mut PgConnection,
    assessment_id: &str,
    at: i64,
    t: Trigger,
) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "INSERT INTO alerts (assessment_id, opened_at, trigger) VALUES ($1, $2, $3) \
         RETURNING alert_id",
    )
    .bind(assessment_id)
    .bind(at)
    .bind(t.as_str())
    .fetch_one(&mut *conn)
    .await?)
}

fn ip_bytes(e: &Event) -> Option<Vec<u8>> {
    e.ip.map(|ip| key_bytes(ip_key(ip)).to_vec())
}

fn device_of(e: &Event) -> Option<i64> {
    e.device_id.as_deref().map(|d| device_hash(d) as i64)
}

/// Records assessments inside the caller's transaction: each with its event when allowed (the
/// months' partitions must exist) and its alert when one opens.
pub(crate) async fn record_in(
    conn: &mut PgConnection,
    store: &PgStore,
    recs: &[AssessmentRecord],
    fresh: &mut Fresh,
) -> Result<Vec<Result<Option<i64>, CaseError>>> {
    // In assessment-id order (bytewise, as `COLLATE "C"`), as [`AT_ONCE`] inserts them, so that
    // transactions sharing rows wait for each other in one order; the results in `recs`' order.
    let mut order: Vec<usize> = (0..recs.len()).collect();
    order.sort_by(|&a, &b| recs[a].assessment_id.cmp(&recs[b].assessment_id));
    let mut out: Vec<Option<Result<Option<i64>, CaseError>>> = recs.iter().map(|_| None).collect();
    let mut allowed: Vec<(usize, &Event)> = Vec::new();
    for i in order {
        let rec = &recs[i];
        let e = &rec.event;
        let n = sqlx::query(
            "INSERT INTO assessments (assessment_id, created_at, customer_id, event_id, \
             occurred_at, kind, channel, ip, device_hash, decision, score, reasons, event) \
             VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13) \
             ON CONFLICT (assessment_id) DO NOTHING",
        )
        .bind(&rec.assessment_id)
        .bind(rec.created_at)
        .bind(&e.customer_id)
        .bind(&e.event_id)
        .bind(e.occurred_at)
        .bind(i16::from(e.kind.code()))
        .bind(i16::from(e.channel.code()))
        .bind(ip_bytes(e))
        .bind(device_of(e))
        .bind(rec.decision.as_str())
        .bind(i16::from(rec.score))
        .bind(rec.reasons.to_string())
        .bind(e.to_json())
        .execute(&mut *conn)
        .await?
        .rows_affected();
        if n == 0 {
            out[i] = Some(Err(CaseError::DuplicateAssessment(
                rec.assessment_id.clone(),
            )));
            continue;
        }
        // Every assessed withdrawal is told to the customer (with a "this wasn't me" link), if
        // the store knows where to write to them.
        if e.kind == Kind::Withdrawal {
            sqlx::query(
                "INSERT INTO notices (customer_id, kind, detail, created_at, assessment_id) \
                 SELECT customer_id, 'withdrawal', $2, $3, $4 FROM customer_records \
                 WHERE customer_id = $1 AND coalesce(email, '') <> ''",
            )
            .bind(&e.customer_id)
            .bind(withdrawal_notice(rec).to_string())
            .bind(rec.created_at)
            .bind(&rec.assessment_id)
            .execute(&mut *conn)
            .await?;
        }
        let effect = on_decision(rec.decision);
        if effect.store_event {
            allowed.push((i, e));
        }
        let alert = match effect.alert {
            Some(t) => Some(open_alert(conn, &rec.assessment_id, rec.created_at, t).await?),
            None => None,
        };
        out[i] = Some(Ok(alert));
    }
    if !allowed.is_empty() {
        // The events in `recs`' order: of two copies of one event, the first wins.
        allowed.sort_unstable_by_key(|&(i, _)| i);
        let allowed: Vec<Event> = allowed.into_iter().map(|(_, e)| e.clone()).collect();
        insert_in(conn, store, &allowed, fresh, &Default::default()).await?;
    }
    Ok(filled(out, recs))
}

/// Results placed by index, in `recs`' order; one never placed is `NoAssessment`.
fn filled(
    out: Vec<Option<Result<Option<i64>, CaseError>>>,
    recs: &[AssessmentRecord],
) -> Vec<Result<Option<i64>, CaseError>> {
    out.into_iter()
        .zip(recs)
        .map(|(r, rec)| {
            r.unwrap_or_else(|| Err(CaseError::NoAssessment(rec.assessment_id.clone())))
        })
        .collect()
}

/// A row of `familiar`: customer, IP key, device hash, since.
type FamiliarRow = (String, Option<Vec<u8>>, Option<i64>, i64);

/// The keys of a stored event's customer, device and user agent.
type EventKeys = (i64, Option<i64>, Option<i64>);

/// The server's common case for a group of assessments, in one statement: arrays of the
/// assessments' columns and, for those whose event is stored, of the event's; the assessments
/// new to the log are written, the events of those new to the store too, and one row of the
/// change feed holding exactly the events stored (their bodies joined in order). Returns the new
/// assessments' ids, the ordinals (from 1) of the stored events and the feed row's transaction.
/// Rows are inserted in key order (assessment ids, then events' keys, bytewise), so that two
/// groups in flight that share rows, and the general way ([`record_in`], whose events' keys are
/// sorted alike), wait for each other in one order and cannot deadlock. A withdrawal new to the
/// log gets its notice to the customer (`$28`), as in [`record_in`]. With `$27` the statement's
/// transaction commits asynchronously (`synchronous_commit = off` for it alone:
/// [`PgStore::async_records`]; never for a group holding a notice).
static AT_ONCE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "WITH i AS (SELECT * FROM unnest($1::text[], $2::int8[], $3::text[], $4::text[], \
             $5::int8[], $6::int2[], $7::int2[], $8::bytea[], $9::int8[], $10::text[], \
             $11::int2[], $12::text[], $13::text[], $14::int8[], $15::int8[], $16::int8[], \
             $17::int8[], $18::int2[], $19::text[], $20::text[], $21::text[], $22::text[], \
             $23::text[], $24::bytea[], $28::text[]) WITH ORDINALITY AS t (aid, created, cust, \
             eid, occ, kind, chan, ip, dh, decision, score, reasons, ev, ckey, dkey, ukey, \
             amount, side, bank, branch, atype, anum, kana, body, notice, ord)), \
         a AS (INSERT INTO assessments (assessment_id, created_at, customer_id, event_id, \
             occurred_at, kind, channel, ip, device_hash, decision, score, reasons, event) \
             SELECT aid, created, cust, eid, occ, kind, chan, ip, dh, decision, score, reasons, \
             ev FROM i ORDER BY aid COLLATE \"C\" \
             ON CONFLICT (assessment_id) DO NOTHING RETURNING assessment_id), \
         n AS (INSERT INTO notices (customer_id, kind, detail, created_at, assessment_id) \
             SELECT i.cust, 'withdrawal', i.notice, i.created, i.aid \
             FROM i JOIN a ON a.assessment_id = i.aid \
             JOIN customer_records r ON r.customer_id = i.cust \
             WHERE i.notice IS NOT NULL AND coalesce(r.email, '') <> '' ORDER BY i.ord), \
         k AS (INSERT INTO event_keys (customer_key, event_id, occurred_at) \
             SELECT i.ckey, i.eid, i.occ FROM i JOIN a ON a.assessment_id = i.aid \
             WHERE i.ckey IS NOT NULL ORDER BY i.ckey, i.eid COLLATE \"C\" \
             ON CONFLICT DO NOTHING RETURNING customer_key, event_id), \
         e AS (INSERT INTO events ({}) \
             SELECT i.ckey, i.occ, i.eid, i.kind, i.chan, i.ip, i.dh, i.dkey, i.ukey, i.amount, \
             i.side, i.bank, i.branch, i.atype, i.anum, i.kana \
             FROM i JOIN k ON k.customer_key = i.ckey AND k.event_id = i.eid ORDER BY i.ord \
             RETURNING customer_key, event_id), \
         s AS (SELECT i.ord, i.body FROM i \
             JOIN e ON e.customer_key = i.ckey AND e.event_id = i.eid), \
         f AS (INSERT INTO feed (node, what, body) \
             SELECT $25, $26, string_agg(body, ''::bytea ORDER BY ord) FROM s \
             HAVING count(*) > 0 RETURNING tx::text) \
         SELECT (SELECT array_agg(assessment_id) FROM a), \
             (SELECT array_agg(ord ORDER BY ord) FROM s), (SELECT tx FROM f), \
             CASE WHEN $27 THEN set_config('synchronous_commit', 'off', true) END",
        super::events::EVENT_COLUMNS
    )
});

/// The columns of a group taking the common way, as [`AT_ONCE`] binds them.
#[derive(Default)]
struct Columns<'a> {
    aid: Vec<&'a str>,
    created: Vec<i64>,
    cust: Vec<&'a str>,
    eid: Vec<&'a str>,
    occ: Vec<i64>,
    kind: Vec<i16>,
    chan: Vec<i16>,
    ip: Vec<Option<Vec<u8>>>,
    dh: Vec<Option<i64>>,
    decision: Vec<&'a str>,
    score: Vec<i16>,
    reasons: Vec<String>,
    ev: Vec<String>,
    ckey: Vec<Option<i64>>,
    dkey: Vec<Option<i64>>,
    ukey: Vec<Option<i64>>,
    amount: Vec<Option<i64>>,
    side: Vec<Option<i16>>,
    bank: Vec<Option<&'a str>>,
    branch: Vec<Option<&'a str>>,
    atype: Vec<Option<&'a str>>,
    anum: Vec<Option<&'a str>>,
    kana: Vec<Option<&'a str>>,
    body: Vec<Vec<u8>>,
    /// A withdrawal's notice to the customer ([`withdrawal_notice`]).
    notice: Vec<Option<String>>,
}

impl<'a> Columns<'a> {
    fn push(&mut self, rec: &'a AssessmentRecord, keys: Option<EventKeys>, past: &Past) {
        let e = &rec.event;
        let d = e.destination.as_ref().filter(|_| keys.is_some());
        self.aid.push(&rec.assessment_id);
        self.created.push(rec.created_at);
        self.cust.push(&e.customer_id);
        self.eid.push(&e.event_id);
        self.occ.push(e.occurred_at);
        self.kind.push(i16::from(e.kind.code()));
        self.chan.push(i16::from(e.channel.code()));
        self.ip.push(ip_bytes(e));
        self.dh.push(device_of(e));
        self.decision.push(rec.decision.as_str());
        self.score.push(i16::from(rec.score));
        self.reasons.push(rec.reasons.to_string());
        self.ev.push(e.to_json());
        self.ckey.push(keys.map(|k| k.0));
        self.dkey.push(keys.and_then(|k| k.1));
        self.ukey.push(keys.and_then(|k| k.2));
        self.amount.push(e.amount.filter(|_| keys.is_some()));
        self.side.push(
            e.side
                .filter(|_| keys.is_some())
                .map(|s| i16::from(s.code())),
        );
        self.bank.push(d.map(|d| d.bank_code.as_str()));
        self.branch.push(d.map(|d| d.branch_code.as_str()));
        self.atype.push(d.map(|d| d.account_type.as_str()));
        self.anum.push(d.map(|d| d.account_number.as_str()));
        self.kana.push(d.map(|d| d.holder_kana.as_str()));
        let mut body = Vec::new();
        if keys.is_some() {
            super::feed::encode_one(&e.customer_id, past, &mut body);
        }
        self.body.push(body);
        self.notice
            .push((e.kind == Kind::Withdrawal).then(|| withdrawal_notice(rec).to_string()));
    }
}

impl PgStore {
    /// Records assessments in one transaction (the general way).
    async fn record_together(
        &self,
        recs: &[AssessmentRecord],
    ) -> Result<Vec<Result<Option<i64>, CaseError>>> {
        self.ensure_months(allowed_times(recs)).await?;
        let mut tx = self.begin().await?;
        let mut fresh = Fresh::default();
        let out = record_in(&mut tx, self, recs, &mut fresh).await?;
        self.commit(tx, fresh).await?;
        Ok(out)
    }

    /// Whether an assessment is the server's common case: it opens no alert, and its event,
    /// when it is stored, is of a customer, device and user agent whose keys this process holds,
    /// in a month it knows exists (a withdrawal's notice is written in the same statement).
    /// `Some(keys)`: the common case, with the keys when its event is stored.
    fn common_case(&self, rec: &AssessmentRecord) -> Option<Option<EventKeys>> {
        let e = &rec.event;
        let effect = on_decision(rec.decision);
        if effect.alert.is_some() || self.bulk.load(std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        if !effect.store_event {
            return Some(None);
        }
        if !super::lock(&self.months).contains(&super::month_of(e.occurred_at)) {
            return None;
        }
        self.cached_keys(e).map(Some)
    }

    /// The common case ([`PgStore::common_case`]) of a group in one statement ([`AT_ONCE`]),
    /// without a transaction's round trips, and one commit for the group. The events and their
    /// row of the change feed are written only for assessments new to the log and events new to
    /// the store, as [`record_in`] would. `group`: indexes into `recs` (no two with the same
    /// assessment or the same event) and their keys. `None`: a month went meanwhile; the caller
    /// takes the general way.
    async fn record_at_once(
        &self,
        recs: &[AssessmentRecord],
        group: &[(usize, Option<EventKeys>)],
    ) -> Result<Option<Vec<Result<Option<i64>, CaseError>>>> {
        // The events as the feed and the cache keep them: computed once for both.
        let pasts: Vec<Past> = group
            .iter()
            .map(|&(i, _)| Past::of(&recs[i].event))
            .collect();
        let mut c = Columns::default();
        for (&(i, keys), past) in group.iter().zip(&pasts) {
            c.push(&recs[i], keys, past);
        }
        type Row = (
            Option<Vec<String>>,
            Option<Vec<i64>>,
            Option<String>,
            Option<String>,
        );
        let q = sqlx::query_as::<_, Row>(AssertSqlSafe(AT_ONCE.as_str()))
            .bind(&c.aid)
            .bind(&c.created)
            .bind(&c.cust)
            .bind(&c.eid)
            .bind(&c.occ)
            .bind(&c.kind)
            .bind(&c.chan)
            .bind(&c.ip)
            .bind(&c.dh)
            .bind(&c.decision)
            .bind(&c.score)
            .bind(&c.reasons)
            .bind(&c.ev)
            .bind(&c.ckey)
            .bind(&c.dkey)
            .bind(&c.ukey)
            .bind(&c.amount)
            .bind(&c.side)
            .bind(&c.bank)
            .bind(&c.branch)
            .bind(&c.atype)
            .bind(&c.anum)
            .bind(&c.kana)
            .bind(&c.body)
            .bind(self.node)
            .bind(super::feed::EVENTS)
            // A withdrawal's notice to its customer is not left to an asynchronous commit.
            .bind(self.async_records && c.notice.iter().all(Option::is_none))
            .bind(&c.notice);
        let mut kept = self.keep.take(&self.pool).await?;
        let (new, stored, tx, _) = match q
            .fetch_one(&mut *kept.conn)
            .await
            .map_err(crate::StoreError::from)
        {
            Ok(row) => {
                kept.done();
                row
            }
            Err(err) if super::is_missing_partition(&err) => {
                // Dropped by another process's purge: the general way creates it again.
                self.forget_months();
                return Ok(None);
            }
            Err(err) => return Err(err),
        };
        let new: HashSet<String> = new.unwrap_or_default().into_iter().collect();
        if let (Some(h), Some(tx), Some(stored)) = (&self.hot, tx, stored) {
            let tx = super::feed::xid(&tx)?;
            let mut news = Vec::with_capacity(stored.len());
            for ord in stored {
                let k = usize::try_from(ord - 1)
                    .ok()
                    .filter(|&k| k < group.len())
                    .ok_or_else(|| corrupt("a stored event's ordinal is out of its group"))?;
                news.push((recs[group[k].0].event.customer_id.clone(), pasts[k]));
            }
            super::feed::apply(
                h,
                tx,
                super::feed::News {
                    events: news,
                    ..Default::default()
                },
            );
        }
        Ok(Some(
            group
                .iter()
                .map(|&(i, _)| {
                    let id = &recs[i].assessment_id;
                    if new.contains(id) {
                        Ok(None)
                    } else {
                        Err(CaseError::DuplicateAssessment(id.clone()))
                    }
                })
                .collect(),
        ))
    }
}

/// What a resolution's transaction tells the nodes: the resolutions changed.
fn marks_news() -> Fresh {
    let mut fresh = Fresh::default();
    fresh.news.marks = true;
    fresh
}

/// Times of the events that assessments store at once, for their partitions.
pub(crate) fn allowed_times(recs: &[AssessmentRecord]) -> impl Iterator<Item = i64> + '_ {
    recs.iter()
        .filter(|r| on_decision(r.decision).store_event)
        .map(|r| r.event.occurred_at)
}

/// Resolves an alert inside the caller's transaction (its row locked first, so that of two
/// resolutions one finds it resolved): what the resolution teaches the engine and a destination
/// the assessment held. A resolved alert is refused, unless `relabel` (a customer's report
/// overrides staff's `legitimate`).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn resolve_in(
    conn: &mut PgConnection,
    id: i64,
    resolution: Resolution,
    note: &str,
    by: &str,
    at: i64,
    relabel: bool,
) -> Result<Alert, CaseError> {
    let alert = one_alert(conn, id, true)
        .await?
        .ok_or(CaseError::NoAlert(id))?;
    if alert.status == AlertStatus::Resolved {
        if !relabel || alert.resolution == Some(resolution) {
            return Err(CaseError::AlreadyResolved(id));
        }
        // Relabelled: what the earlier resolution taught is withdrawn.
        for table in ["familiar", "fraud_ips"] {
            sqlx::query(AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE alert_id = $1"
            )))
            .bind(id)
            .execute(&mut *conn)
            .await
            .map_err(crate::StoreError::from)?;
        }
    }
    sqlx::query(
        "UPDATE alerts SET status = 'resolved', resolution = $1, note = $2, resolved_by = $3, \
         resolved_at = $4 WHERE alert_id = $5",
    )
    .bind(resolution.as_str())
    .bind(note)
    .bind(by)
    .bind(at)
    .bind(id)
    .execute(&mut *conn)
    .await
    .map_err(crate::StoreError::from)?;
    let e = &alert.assessment.event;
    let ip = ip_bytes(e);
    match resolution {
        Resolution::Legitimate => {
            sqlx::query(
                "INSERT INTO familiar (customer_id, ip, device_hash, at, alert_id) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&e.customer_id)
            .bind(&ip)
            .bind(device_of(e))
            .bind(at)
            .bind(id)
            .execute(&mut *conn)
            .await
            .map_err(crate::StoreError::from)?;
        }
        Resolution::ConfirmedFraud => {
            if ip.is_some() {
                sqlx::query(
                    "INSERT INTO fraud_ips (ip, at, alert_id) VALUES ($1, $2, $3) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(&ip)
                .bind(at)
                .bind(id)
                .execute(&mut *conn)
                .await
                .map_err(crate::StoreError::from)?;
            }
        }
    }
    // A destination this assessment held for review: staff's answer decides it.
    sqlx::query(
        "UPDATE customer_destinations SET status = $1 \
         WHERE assessment_id = $2 AND status = 'pending_review'",
    )
    .bind(match resolution {
        Resolution::Legitimate => "effective",
        Resolution::ConfirmedFraud => "refused",
    })
    .bind(&alert.assessment.assessment_id)
    .execute(&mut *conn)
    .await
    .map_err(crate::StoreError::from)?;
    one_alert(conn, id, false)
        .await?
        .ok_or(CaseError::NoAlert(id))
}

/// The customer of an assessment, if it exists.
pub(crate) async fn assessment_customer(
    conn: &mut PgConnection,
    id: &str,
) -> Result<Option<String>> {
    Ok(
        sqlx::query_scalar("SELECT customer_id FROM assessments WHERE assessment_id = $1")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?,
    )
}

/// The alert of an assessment, if one was opened.
pub(crate) async fn alert_of(conn: &mut PgConnection, assessment_id: &str) -> Result<Option<i64>> {
    Ok(
        sqlx::query_scalar("SELECT alert_id FROM alerts WHERE assessment_id = $1")
            .bind(assessment_id)
            .fetch_optional(&mut *conn)
            .await?,
    )
}

impl DecisionLog for PgStore {
    async fn record_assessment(&self, rec: &AssessmentRecord) -> Result<Option<i64>, CaseError> {
        self.record_assessments(std::slice::from_ref(rec))
            .await?
            .pop()
            .unwrap_or_else(|| Err(CaseError::NoAssessment(rec.assessment_id.clone())))
    }

    async fn record_assessments(
        &self,
        recs: &[AssessmentRecord],
    ) -> Result<Vec<Result<Option<i64>, CaseError>>> {
        // The common ones (the server's recorder takes every assessment waiting) in one
        // statement; the others, and a second copy of an event or an assessment in the group
        // (the first copy must win), in one transaction after.
        let mut events = HashSet::with_capacity(recs.len());
        let mut ids = HashSet::with_capacity(recs.len());
        let mut common = Vec::with_capacity(recs.len());
        let mut rest = Vec::new();
        for (i, r) in recs.iter().enumerate() {
            let first = events.insert((r.event.customer_id.as_str(), r.event.event_id.as_str()))
                & ids.insert(r.assessment_id.as_str());
            match first.then(|| self.common_case(r)).flatten() {
                Some(keys) => common.push((i, keys)),
                None => rest.push(i),
            }
        }
        let mut out: Vec<Option<Result<Option<i64>, CaseError>>> =
            recs.iter().map(|_| None).collect();
        if !common.is_empty() {
            match self.record_at_once(recs, &common).await? {
                Some(done) => {
                    for (&(i, _), r) in common.iter().zip(done) {
                        out[i] = Some(r);
                    }
                }
                None => {
                    rest.extend(common.iter().map(|&(i, _)| i));
                    rest.sort_unstable();
                }
            }
        }
        if !rest.is_empty() {
            let others: Vec<AssessmentRecord> = rest.iter().map(|&i| recs[i].clone()).collect();
            for (i, r) in rest.into_iter().zip(self.record_together(&others).await?) {
                out[i] = Some(r);
            }
        }
        Ok(filled(out, recs))
    }

    async fn assessment(&self, id: &str) -> Result<Option<AssessmentRecord>> {
        let mut conn = self.pool.acquire().await?;
        one_assessment(&mut conn, id, false).await
    }

    async fn record_outcome(
        &self,
        id: &str,
        outcome: Outcome,
        at: i64,
    ) -> Result<Option<i64>, CaseError> {
        // The event's month first (an assessment's event never changes).
        let Some(before) = self.assessment(id).await? else {
            return Err(CaseError::NoAssessment(id.to_owned()));
        };
        self.ensure_months([before.event.occurred_at]).await?;
        let mut tx = self.begin().await?;
        // Locked: of two outcomes recorded at once, the second sees the first.
        let rec = one_assessment(&mut tx, id, true)
            .await?
            .ok_or_else(|| CaseError::NoAssessment(id.to_owned()))?;
        let effect = on_outcome(rec.decision, rec.event.kind, rec.outcome, outcome)?;
        if rec.outcome.is_none() {
            sqlx::query(
                "UPDATE assessments SET outcome = $1, outcome_at = $2 WHERE assessment_id = $3",
            )
            .bind(outcome.as_str())
            .bind(at)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(crate::StoreError::from)?;
        }
        let mut fresh = Fresh::default();
        if let Some(kind) = effect.store_as {
            let mut e = rec.event.clone();
            e.kind = kind;
            insert_in(&mut tx, self, &[e], &mut fresh, &Default::default()).await?;
        }
        let alert = match effect.alert {
            Some(t) => Some(open_alert(&mut tx, id, at, t).await?),
            None => None,
        };
        self.commit(tx, fresh).await?;
        Ok(alert)
    }

    async fn alerts(&self, status: Option<AlertStatus>, limit: usize) -> Result<Vec<Alert>> {
        let limit = limit.min(100_000) as i64;
        let rows = match status {
            Some(s) => {
                sqlx::query(AssertSqlSafe(alert_sql(
                    "WHERE l.status = $1 ORDER BY l.alert_id DESC LIMIT $2",
                )))
                .bind(s.as_str())
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(AssertSqlSafe(alert_sql(
                    "ORDER BY l.alert_id DESC LIMIT $1",
                )))
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
            }
        };
        rows.iter().map(alert_row).collect()
    }

    async fn alert(&self, id: i64) -> Result<Option<Alert>> {
        let mut conn = self.pool.acquire().await?;
        one_alert(&mut conn, id, false).await
    }

    async fn resolve_alert(
        &self,
        id: i64,
        resolution: Resolution,
        note: &str,
        by: &str,
        at: i64,
    ) -> Result<Alert, CaseError> {
        let mut tx = self.begin().await?;
        let a = resolve_in(&mut tx, id, resolution, note, by, at, false).await?;
        self.commit(tx, marks_news()).await?;
        Ok(a)
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
        let mut tx = self.begin().await?;
        let a = resolve_in(&mut tx, id, resolution, note, by, at, false).await?;
        super::people::append_audit(&mut tx, audit, at).await?;
        self.commit(tx, marks_news()).await?;
        Ok(a)
    }

    async fn marks(
        &self,
        customer: &str,
        ip: Option<u128>,
        t: i64,
        customer_ips: &[u128],
    ) -> Result<Marks> {
        if let Some(h) = self.hot.as_deref() {
            if let Some(m) = h.marks(customer, ip, t, customer_ips) {
                return Ok(m);
            }
            // Read them all; a change that reaches this node meanwhile drops what was read.
            let noted = h.marks_noted();
            let familiar: Vec<FamiliarRow> =
                sqlx::query_as("SELECT customer_id, ip, device_hash, at FROM familiar")
                    .fetch_all(&self.pool)
                    .await?;
            let fraud: Vec<(Vec<u8>, i64)> = sqlx::query_as("SELECT ip, at FROM fraud_ips")
                .fetch_all(&self.pool)
                .await?;
            let familiar = familiar
                .into_iter()
                .map(|(c, k, d, at)| Ok((c, ip_of(k.as_deref())?, d.map(|d| d as u64), at)))
                .collect::<Result<Vec<_>>>()?;
            let mut ips = Vec::with_capacity(fraud.len());
            for (k, at) in fraud {
                if let Some(k) = ip_of(Some(k.as_slice()))? {
                    ips.push((k, at));
                }
            }
            h.fill_marks(noted, familiar, ips);
            if let Some(m) = h.marks(customer, ip, t, customer_ips) {
                return Ok(m);
            }
        }
        let mut m = Marks::default();
        let familiar: Vec<(Option<Vec<u8>>, Option<i64>)> = sqlx::query_as(
            "SELECT ip, device_hash FROM familiar WHERE customer_id = $1 AND at < $2",
        )
        .bind(customer)
        .bind(t)
        .fetch_all(&self.pool)
        .await?;
        for (k, d) in familiar {
            if let Some(k) = ip_of(k.as_deref())? {
                m.familiar_ips.insert(k);
            }
            if let Some(d) = d {
                m.familiar_devices.insert(d as u64);
            }
        }
        // Confirmed-fraud IPs are few: read them all.
        let fraud: Vec<Vec<u8>> =
            sqlx::query_scalar("SELECT DISTINCT ip FROM fraud_ips WHERE at < $1")
                .bind(t)
                .fetch_all(&self.pool)
                .await?;
        let mut ips = HashSet::with_capacity(fraud.len());
        for k in fraud {
            ips.extend(ip_of(Some(k.as_slice()))?);
        }
        let customer_ips: HashSet<u128> = customer_ips.iter().copied().collect();
        m.fraud_ip = ip.is_some_and(|k| ips.contains(&k));
        m.fraud_ips_on_customer = customer_ips.intersection(&ips).count() as u32;
        Ok(m)
    }
}

fn key_row(r: &PgRow) -> Result<(ApiKey, [u8; 32])> {
    let scopes = r
        .try_get::<&str, _>(2)?
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| parse(s, "scope", Scope::parse))
        .collect::<Result<Vec<_>>>()?;
    let hash: [u8; 32] = r
        .try_get::<&[u8], _>(3)?
        .try_into()
        .map_err(|_| corrupt("API key hash is not 32 bytes"))?;
    Ok((
        ApiKey {
            key_id: r.try_get(0)?,
            name: r.try_get(1)?,
            scopes,
            created_at: r.try_get(4)?,
            revoked_at: r.try_get(5)?,
            last_used_at: r.try_get(6)?,
        },
        hash,
    ))
}

const KEY_COLUMNS: &str =
    "key_id, name, scopes, hash, created_at, revoked_at, last_used_at FROM api_keys";

impl ApiKeys for PgStore {
    async fn create_key(&self, key: &ApiKey, hash: &[u8; 32]) -> Result<()> {
        sqlx::query(
            "INSERT INTO api_keys (key_id, name, scopes, hash, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&key.key_id)
        .bind(&key.name)
        .bind(key.scopes_text())
        .bind(hash.as_slice())
        .bind(key.created_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn list_keys(&self) -> Result<Vec<ApiKey>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {KEY_COLUMNS} ORDER BY created_at, key_id"
        )))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(key_row(r)?.0)).collect()
    }

    async fn revoke_key(&self, key_id: &str, at: i64) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE api_keys SET revoked_at = coalesce(revoked_at, $1) WHERE key_id = $2",
        )
        .bind(at)
        .bind(key_id)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n > 0)
    }

    async fn find_key(&self, key_id: &str) -> Result<Option<(ApiKey, [u8; 32])>> {
        sqlx::query(AssertSqlSafe(format!(
            "SELECT {KEY_COLUMNS} WHERE key_id = $1"
        )))
        .bind(key_id)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(key_row)
        .transpose()
    }

    async fn touch_key(&self, key_id: &str, at: i64) -> Result<()> {
        sqlx::query("UPDATE api_keys SET last_used_at = $1 WHERE key_id = $2")
            .bind(at)
            .bind(key_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
