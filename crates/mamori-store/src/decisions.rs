//! The decision log and API keys in the embedded store (migration 0006).

use std::collections::HashSet;

use mamori_core::assess::{Decision, Marks};
use mamori_core::case::{
    AlertStatus, Outcome, Resolution, Scope, Trigger, on_decision, on_outcome,
};
use mamori_core::event::Event;
use mamori_core::net::{ip_key, key_bytes};
use mamori_core::parse::parse_json_line;

use crate::raw::{self, Value};
use crate::sqlite::{corrupt, ip_of};
use crate::{
    Alert, ApiKey, ApiKeys, AssessmentRecord, AuditNote, CaseError, DecisionLog, Result,
    SqliteStore,
};

const ASSESSMENT_COLUMNS: &str = "a.assessment_id, a.created_at, a.event, a.decision, a.score, \
     a.reasons, a.outcome, a.outcome_at";

pub(crate) fn parse<T>(text: &str, what: &str, f: impl Fn(&str) -> Option<T>) -> Result<T> {
    f(text).ok_or_else(|| corrupt(&format!("unknown {what} {text:?}")))
}

/// The columns of an assessment as stored (in [`ASSESSMENT_COLUMNS`] order), by either store.
pub(crate) struct AssessmentColumns<'a> {
    pub assessment_id: String,
    pub created_at: i64,
    pub event: &'a str,
    pub decision: &'a str,
    pub score: i64,
    pub reasons: &'a str,
    pub outcome: Option<&'a str>,
    pub outcome_at: Option<i64>,
}

impl AssessmentColumns<'_> {
    /// The record the columns hold.
    pub(crate) fn record(self) -> Result<AssessmentRecord> {
        let event =
            parse_json_line(self.event).map_err(|e| corrupt(&format!("stored event: {e}")))?;
        let reasons = serde_json::from_str(self.reasons)
            .map_err(|e| corrupt(&format!("stored reasons: {e}")))?;
        Ok(AssessmentRecord {
            assessment_id: self.assessment_id,
            created_at: self.created_at,
            event,
            decision: parse(self.decision, "decision", Decision::parse)?,
            score: u8::try_from(self.score).map_err(|_| corrupt("score out of range"))?,
            reasons,
            outcome: self
                .outcome
                .map(|t| parse(t, "outcome", Outcome::parse))
                .transpose()?,
            outcome_at: self.outcome_at,
        })
    }
}

/// Reads an assessment from columns starting at `i` (in [`ASSESSMENT_COLUMNS`] order).
fn assessment_at(r: &raw::Row<'_>, i: i32) -> Result<AssessmentRecord> {
    AssessmentColumns {
        assessment_id: r.string(i)?,
        created_at: r.i64(i + 1),
        event: &r.string(i + 2)?,
        decision: &r.string(i + 3)?,
        score: r.i64(i + 4),
        reasons: &r.string(i + 5)?,
        outcome: r.text(i + 6)?,
        outcome_at: r.opt_i64(i + 7),
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

fn alert_row(r: &raw::Row<'_>) -> Result<Alert> {
    Ok(Alert {
        alert_id: r.i64(0),
        opened_at: r.i64(1),
        trigger: parse(&r.string(2)?, "trigger", Trigger::parse)?,
        status: parse(&r.string(3)?, "status", AlertStatus::parse)?,
        resolution: r
            .text(4)?
            .map(|t| parse(t, "resolution", Resolution::parse))
            .transpose()?,
        note: r.text(5)?.map(str::to_owned),
        resolved_by: r.text(6)?.map(str::to_owned),
        resolved_at: r.opt_i64(7),
        assessment: assessment_at(r, 8)?,
    })
}

fn one_alert(conn: &raw::Conn<'_>, id: i64) -> Result<Option<Alert>> {
    let mut out = None;
    conn.prepare(&alert_sql("WHERE l.alert_id = ?"))?
        .for_each(&[Value::Int(id)], |r| {
            out = Some(alert_row(r)?);
            Ok(())
        })?;
    Ok(out)
}

fn one_assessment(conn: &raw::Conn<'_>, id: &str) -> Result<Option<AssessmentRecord>> {
    let mut out = None;
    conn.prepare(&format!(
        "SELECT {ASSESSMENT_COLUMNS} FROM assessments a WHERE a.assessment_id = ?"
    ))?
    .for_each(&[Value::Text(id)], |r| {
        out = Some(assessment_at(r, 0)?);
        Ok(())
    })?;
    Ok(out)
}

pub(crate) fn open_alert(
    conn: &raw::Conn<'_>,
    assessment_id: &str,
    at: i64,
    t: Trigger,
) -> Result<i64> {
    conn.prepare("INSERT INTO alerts (assessment_id, opened_at, trigger) VALUES (?, ?, ?)")?
        .insert(&[
            Value::Text(assessment_id),
            Value::Int(at),
            Value::Text(t.as_str()),
        ])?
        .ok_or_else(|| corrupt("alert insert returned no id"))
}

fn ip_blob(e: &Event) -> Option<[u8; 16]> {
    e.ip.map(|ip| key_bytes(ip_key(ip)))
}

impl DecisionLog for SqliteStore {
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
        self.write(|conn, w| record_in(conn, w, recs)).await
    }

    async fn assessment(&self, id: &str) -> Result<Option<AssessmentRecord>> {
        let id = id.to_owned();
        self.with_raw(move |conn| one_assessment(conn, &id)).await
    }

    async fn record_outcome(
        &self,
        id: &str,
        outcome: Outcome,
        at: i64,
    ) -> Result<Option<i64>, CaseError> {
        self.write(|conn, w| {
            let rec =
                one_assessment(conn, id)?.ok_or_else(|| CaseError::NoAssessment(id.to_owned()))?;
            let effect = on_outcome(rec.decision, rec.event.kind, rec.outcome, outcome)?;
            if rec.outcome.is_none() {
                conn.prepare(
                    "UPDATE assessments SET outcome = ?, outcome_at = ? WHERE assessment_id = ?",
                )?
                .exec(&[
                    Value::Text(outcome.as_str()),
                    Value::Int(at),
                    Value::Text(id),
                ])?;
            }
            if let Some(kind) = effect.store_as {
                let mut e = rec.event.clone();
                e.kind = kind;
                w.events(conn, &[e])?;
            }
            let alert = match effect.alert {
                Some(t) => Some(open_alert(conn, id, at, t)?),
                None => None,
            };
            Ok::<_, CaseError>(alert)
        })
        .await
    }

    async fn alerts(&self, status: Option<AlertStatus>, limit: usize) -> Result<Vec<Alert>> {
        let limit = limit.min(100_000) as i64;
        self.with_raw(move |conn| {
            let mut out = Vec::new();
            let (sql, params) = match status {
                Some(s) => (
                    alert_sql("WHERE l.status = ? ORDER BY l.alert_id DESC LIMIT ?"),
                    vec![Value::Text(s.as_str()), Value::Int(limit)],
                ),
                None => (
                    alert_sql("ORDER BY l.alert_id DESC LIMIT ?"),
                    vec![Value::Int(limit)],
                ),
            };
            conn.prepare(&sql)?.for_each(&params, |r| {
                out.push(alert_row(r)?);
                Ok(())
            })?;
            Ok(out)
        })
        .await
    }

    async fn alert(&self, id: i64) -> Result<Option<Alert>> {
        self.with_raw(move |conn| one_alert(conn, id)).await
    }

    async fn resolve_alert(
        &self,
        id: i64,
        resolution: Resolution,
        note: &str,
        by: &str,
        at: i64,
    ) -> Result<Alert, CaseError> {
        self.write(|conn, w| resolve_in(conn, w, id, resolution, note, by, at, false))
            .await
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
        self.write(|conn, w| {
            let a = resolve_in(conn, w, id, resolution, note, by, at, false)?;
            crate::people::append_audit(conn, audit, at)?;
            Ok(a)
        })
        .await
    }

    async fn marks(
        &self,
        customer: &str,
        ip: Option<u128>,
        t: i64,
        customer_ips: &[u128],
    ) -> Result<Marks> {
        if let Some(h) = self.hot() {
            self.look_for_other_writers(h)?;
            if let Some(m) = h.marks(customer, ip, t, customer_ips) {
                return Ok(m);
            }
            // Read them all, with no write of this process in between (see `hot`).
            let _writer = self.writer().lock().await;
            if h.marks(customer, ip, t, customer_ips).is_none() {
                let noted = h.marks_noted();
                let (familiar, fraud) = self.read_now(|conn| {
                    let mut familiar = Vec::new();
                    conn.prepare("SELECT customer_id, ip, device_hash, at FROM familiar")?
                        .for_each(&[], |r| {
                            familiar.push((
                                r.string(0)?,
                                ip_of(r.blob(1))?,
                                r.opt_i64(2).map(|d| d as u64),
                                r.i64(3),
                            ));
                            Ok(())
                        })?;
                    let mut fraud = Vec::new();
                    conn.prepare("SELECT ip, at FROM fraud_ips")?
                        .for_each(&[], |r| {
                            if let Some(k) = ip_of(r.blob(0))? {
                                fraud.push((k, r.i64(1)));
                            }
                            Ok(())
                        })?;
                    Ok((familiar, fraud))
                })?;
                h.fill_marks(noted, familiar, fraud);
            }
            if let Some(m) = h.marks(customer, ip, t, customer_ips) {
                return Ok(m);
            }
        }
        let customer_ips: HashSet<u128> = customer_ips.iter().copied().collect();
        self.read_now(|conn| {
            let mut m = Marks::default();
            conn.prepare("SELECT ip, device_hash FROM familiar WHERE customer_id = ? AND at < ?")?
                .for_each(&[Value::Text(customer), Value::Int(t)], |r| {
                    if let Some(k) = ip_of(r.blob(0))? {
                        m.familiar_ips.insert(k);
                    }
                    if let Some(d) = r.opt_i64(1) {
                        m.familiar_devices.insert(d as u64);
                    }
                    Ok(())
                })?;
            // Confirmed-fraud IPs are few: read them all.
            let mut fraud = HashSet::new();
            conn.prepare("SELECT DISTINCT ip FROM fraud_ips WHERE at < ?")?
                .for_each(&[Value::Int(t)], |r| {
                    if let Some(k) = ip_of(r.blob(0))? {
                        fraud.insert(k);
                    }
                    Ok(())
                })?;
            m.fraud_ip = ip.is_some_and(|k| fraud.contains(&k));
            m.fraud_ips_on_customer = customer_ips.intersection(&fraud).count() as u32;
            Ok(m)
        })
    }
}

fn key_row(r: &raw::Row<'_>) -> Result<(ApiKey, [u8; 32])> {
    let scopes = r
        .string(2)?
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| parse(s, "scope", Scope::parse))
        .collect::<Result<Vec<_>>>()?;
    let hash: [u8; 32] = r
        .blob(3)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| corrupt("API key hash is not 32 bytes"))?;
    Ok((
        ApiKey {
            key_id: r.string(0)?,
            name: r.string(1)?,
            scopes,
            created_at: r.i64(4),
            revoked_at: r.opt_i64(5),
            last_used_at: r.opt_i64(6),
        },
        hash,
    ))
}

const KEY_COLUMNS: &str =
    "key_id, name, scopes, hash, created_at, revoked_at, last_used_at FROM api_keys";

impl ApiKeys for SqliteStore {
    async fn create_key(&self, key: &ApiKey, hash: &[u8; 32]) -> Result<()> {
        self.write(|conn, _| {
            conn.prepare(
                "INSERT INTO api_keys (key_id, name, scopes, hash, created_at) VALUES (?,?,?,?,?)",
            )?
            .exec(&[
                Value::Text(&key.key_id),
                Value::Text(&key.name),
                Value::Text(&key.scopes_text()),
                Value::Blob(hash),
                Value::Int(key.created_at),
            ])?;
            Ok(())
        })
        .await
    }

    async fn list_keys(&self) -> Result<Vec<ApiKey>> {
        self.with_raw(|conn| {
            let mut out = Vec::new();
            conn.prepare(&format!("SELECT {KEY_COLUMNS} ORDER BY created_at, key_id"))?
                .for_each(&[], |r| {
                    out.push(key_row(r)?.0);
                    Ok(())
                })?;
            Ok(out)
        })
        .await
    }

    async fn revoke_key(&self, key_id: &str, at: i64) -> Result<bool> {
        self.write(|conn, _| {
            let n = conn
                .prepare(
                    "UPDATE api_keys SET revoked_at = coalesce(revoked_at, ?) WHERE key_id = ?",
                )?
                .exec(&[Value::Int(at), Value::Text(key_id)])?;
            Ok(n > 0)
        })
        .await
    }

    async fn find_key(&self, key_id: &str) -> Result<Option<(ApiKey, [u8; 32])>> {
        let key_id = key_id.to_owned();
        self.with_raw(move |conn| {
            let mut out = None;
            conn.prepare(&format!("SELECT {KEY_COLUMNS} WHERE key_id = ?"))?
                .for_each(&[Value::Text(&key_id)], |r| {
                    out = Some(key_row(r)?);
                    Ok(())
                })?;
            Ok(out)
        })
        .await
    }

    async fn touch_key(&self, key_id: &str, at: i64) -> Result<()> {
        self.write(|conn, _| {
            conn.prepare("UPDATE api_keys SET last_used_at = ? WHERE key_id = ?")?
                .exec(&[Value::Int(at), Value::Text(key_id)])?;
            Ok(())
        })
        .await
    }
}

/// Records assessments inside the caller's write transaction: each with its event when allowed
/// and its alert when one opens.
pub(crate) fn record_in(
    conn: &raw::Conn<'_>,
    w: &mut crate::sqlite::Writes<'_>,
    recs: &[AssessmentRecord],
) -> Result<Vec<Result<Option<i64>, CaseError>>> {
    let texts: Vec<(String, String)> = recs
        .iter()
        .map(|r| (r.event.to_json(), r.reasons.to_string()))
        .collect();
    let mut out = Vec::with_capacity(recs.len());
    let mut allowed: Vec<Event> = Vec::new();
    let mut insert = conn.prepare(
        "INSERT INTO assessments (assessment_id, created_at, customer_id, \
         event_id, occurred_at, kind, channel, ip, device_hash, decision, score, \
         reasons, event) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?) \
         ON CONFLICT (assessment_id) DO NOTHING",
    )?;
    // Every assessed withdrawal is told to the customer (with a "this wasn't me" link), if the
    // store knows where to write to them.
    let mut notice = conn.prepare(
        "INSERT INTO notices (customer_id, kind, detail, created_at, assessment_id) \
         SELECT customer_id, 'withdrawal', ?2, ?3, ?4 FROM customer_records \
         WHERE customer_id = ?1 AND coalesce(email, '') != ''",
    )?;
    for (rec, (event_json, reasons)) in recs.iter().zip(&texts) {
        let e = &rec.event;
        let ip = ip_blob(e);
        let n = insert.exec(&[
            Value::Text(&rec.assessment_id),
            Value::Int(rec.created_at),
            Value::Text(&e.customer_id),
            Value::Text(&e.event_id),
            Value::Int(e.occurred_at),
            Value::Int(i64::from(e.kind.code())),
            Value::Int(i64::from(e.channel.code())),
            ip.as_ref().map_or(Value::Null, |b| Value::Blob(b)),
            e.device_id
                .as_deref()
                .map(|d| mamori_core::history::device_hash(d) as i64)
                .into(),
            Value::Text(rec.decision.as_str()),
            Value::Int(i64::from(rec.score)),
            Value::Text(reasons),
            Value::Text(event_json),
        ])?;
        if n == 0 {
            out.push(Err(CaseError::DuplicateAssessment(
                rec.assessment_id.clone(),
            )));
            continue;
        }
        if e.kind == mamori_core::event::Kind::Withdrawal {
            notice.exec(&[
                Value::Text(&e.customer_id),
                Value::Text(&withdrawal_notice(rec).to_string()),
                Value::Int(rec.created_at),
                Value::Text(&rec.assessment_id),
            ])?;
        }
        let effect = on_decision(rec.decision);
        if effect.store_event {
            allowed.push(e.clone());
        }
        out.push(Ok(effect
            .alert
            .map(|t| open_alert(conn, &rec.assessment_id, rec.created_at, t))
            .transpose()?));
    }
    drop((insert, notice));
    if !allowed.is_empty() {
        w.events(conn, &allowed)?;
    }
    Ok(out)
}

/// Resolves an alert inside the caller's write transaction: what the resolution teaches the
/// engine (a familiar IP and device, or an IP confirmed in fraud) and a destination the assessment
/// held. A resolved alert is refused, unless `relabel` (a customer's report overrides staff's
/// `legitimate`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn resolve_in(
    conn: &raw::Conn<'_>,
    w: &mut crate::sqlite::Writes<'_>,
    id: i64,
    resolution: Resolution,
    note: &str,
    by: &str,
    at: i64,
    relabel: bool,
) -> Result<Alert, CaseError> {
    let alert = one_alert(conn, id)?.ok_or(CaseError::NoAlert(id))?;
    if alert.status == AlertStatus::Resolved {
        if !relabel || alert.resolution == Some(resolution) {
            return Err(CaseError::AlreadyResolved(id));
        }
        // Relabelled: what the earlier resolution taught is withdrawn.
        conn.prepare("DELETE FROM familiar WHERE alert_id = ?")?
            .exec(&[Value::Int(id)])?;
        conn.prepare("DELETE FROM fraud_ips WHERE alert_id = ?")?
            .exec(&[Value::Int(id)])?;
    }
    conn.prepare(
        "UPDATE alerts SET status = 'resolved', resolution = ?, note = ?, \
         resolved_by = ?, resolved_at = ? WHERE alert_id = ?",
    )?
    .exec(&[
        Value::Text(resolution.as_str()),
        Value::Text(note),
        Value::Text(by),
        Value::Int(at),
        Value::Int(id),
    ])?;
    let e = &alert.assessment.event;
    let ip = ip_blob(e);
    let ip_value = || ip.as_ref().map_or(Value::Null, |b| Value::Blob(b));
    w.marks_changed();
    match resolution {
        Resolution::Legitimate => {
            conn.prepare(
                "INSERT INTO familiar (customer_id, ip, device_hash, at, alert_id) \
                 VALUES (?, ?, ?, ?, ?)",
            )?
            .exec(&[
                Value::Text(&e.customer_id),
                ip_value(),
                e.device_id
                    .as_deref()
                    .map(|d| mamori_core::history::device_hash(d) as i64)
                    .into(),
                Value::Int(at),
                Value::Int(id),
            ])?;
        }
        Resolution::ConfirmedFraud => {
            if ip.is_some() {
                conn.prepare(
                    "INSERT OR IGNORE INTO fraud_ips (ip, at, alert_id) VALUES (?, ?, ?)",
                )?
                .exec(&[ip_value(), Value::Int(at), Value::Int(id)])?;
            }
        }
    }
    // A destination this assessment held for review: staff's answer decides it.
    conn.prepare(
        "UPDATE customer_destinations SET status = ? \
         WHERE assessment_id = ? AND status = 'pending_review'",
    )?
    .exec(&[
        Value::Text(match resolution {
            Resolution::Legitimate => "effective",
            Resolution::ConfirmedFraud => "refused",
        }),
        Value::Text(&alert.assessment.assessment_id),
    ])?;
    one_alert(conn, id)?.ok_or(CaseError::NoAlert(id))
}

/// The customer of an assessment, if it exists.
pub(crate) fn assessment_customer(conn: &raw::Conn<'_>, id: &str) -> Result<Option<String>> {
    let mut out = None;
    conn.prepare("SELECT customer_id FROM assessments WHERE assessment_id = ?")?
        .for_each(&[Value::Text(id)], |r| {
            out = Some(r.string(0)?);
            Ok(())
        })?;
    Ok(out)
}

/// The alert of an assessment, if one was opened.
pub(crate) fn alert_of(conn: &raw::Conn<'_>, assessment_id: &str) -> Result<Option<i64>> {
    conn.prepare("SELECT alert_id FROM alerts WHERE assessment_id = ?")?
        .query_i64(&[Value::Text(assessment_id)])
}

/// What a withdrawal's notice says: masked, no secrets.
pub(crate) fn withdrawal_notice(rec: &AssessmentRecord) -> serde_json::Value {
    let e = &rec.event;
    serde_json::json!({
        "event_id": e.event_id,
        "occurred_at": e.occurred_at,
        "channel": e.channel.as_str(),
        "amount": e.amount,
        "decision": rec.decision.as_str(),
        "bank_code": e.destination.as_ref().map(|d| d.bank_code.as_str()),
        "account_number": e.destination.as_ref()
            .map(|d| mamori_auth::mask::account_number(&d.account_number)),
    })
}
