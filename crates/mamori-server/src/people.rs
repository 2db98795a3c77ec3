//! Customer-side defences over HTTP: customers' records (masked; revealed to staff with a reason,
//! audited), passwords (policy feedback, set, verify with rehash), the emergency switches and the
//! audit log.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post, put};
use mamori_auth::hash::{self, Verified};
use mamori_auth::password::{self, PasswordKind, Personal};
use mamori_auth::totp::{self, TotpError};
use mamori_core::case::Scope;
use mamori_core::customer::{CustomerRecord, SwitchChannel, SwitchState, switchable};
use mamori_core::event::Kind;
use mamori_core::time::format_tokyo;
use mamori_store::{
    AuditLog, AuditNote, Credentials, Customers, Destinations, EventWriter, Freezes, HistoryReader,
    Lockouts, Passkeys, RegisteredDestination, SecondFactors, StepUpGrant, StepUps, Switches,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::app::{AppResult, AppState, St, now_us};
use crate::problem::{Problem, json_body};

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/passwords/check", post(post_password_check))
        .route("/v1/customers/{id}", get(get_customer))
        .route("/v1/customers/{id}/reveal", post(post_reveal))
        .route("/v1/customers/{id}/passwords/{kind}", put(put_password))
        .route(
            "/v1/customers/{id}/passwords/{kind}/verify",
            post(post_password_verify),
        )
        .route(
            "/v1/customers/{id}/passwords/{kind}/lock",
            axum::routing::delete(delete_lock),
        )
        .route(
            "/v1/customers/{id}/totp",
            post(post_totp).delete(delete_totp),
        )
        .route("/v1/customers/{id}/totp/confirm", post(post_totp_confirm))
        .route("/v1/customers/{id}/totp/verify", post(post_totp_verify))
        .route("/v1/customers/{id}/stepup", post(post_stepup))
        .route("/v1/stepup/consume", post(post_stepup_consume))
        .route(
            "/v1/customers/{id}/destinations",
            post(post_destination).get(get_destinations),
        )
        .route("/v1/switches", get(get_switches))
        .route("/v1/policy", get(get_policy))
        .route("/v1/switches/{procedure}/{channel}", put(put_switch))
        .route("/v1/audit", get(get_audit))
        .route("/v1/audit/verify", get(get_audit_verify))
        .merge(crate::passkeys::routes())
}

fn kind_of(text: &str) -> Result<PasswordKind, Problem> {
    match text {
        "login" => Ok(PasswordKind::Login),
        "withdrawal" => Ok(PasswordKind::Withdrawal),
        _ => Err(Problem::not_found(
            "password kind: expected login or withdrawal",
        )),
    }
}

fn other(kind: PasswordKind) -> PasswordKind {
    match kind {
        PasswordKind::Login => PasswordKind::Withdrawal,
        PasswordKind::Withdrawal => PasswordKind::Login,
    }
}

pub(crate) async fn record(s: &AppState, id: &str) -> AppResult<CustomerRecord> {
    s.store
        .customer(id)
        .await?
        .ok_or_else(|| Problem::not_found(format!("no customer record for {id:?}")))
}

/// Everything wrong with `pw` for `kind` of customer `c`, the other password included (an
/// Argon2 verification: run off the async workers).
async fn problems(
    s: &Arc<AppState>,
    kind: PasswordKind,
    pw: &str,
    c: Option<&CustomerRecord>,
) -> AppResult<Vec<password::Problem>> {
    let other_hash = match c {
        Some(c) => s.store.password_hash(&c.customer_id, other(kind)).await?,
        None => None,
    };
    let (s2, pw, c) = (s.clone(), pw.to_owned(), c.cloned());
    tokio::task::spawn_blocking(move || {
        let personal = c.as_ref().map(|c| Personal {
            customer_id: &c.customer_id,
            name: Some(c.name.as_str()),
            name_kana: Some(c.name_kana.as_str()),
            birth_date: c.birth_ymd(),
            phone: c.phone.as_deref(),
            email: c.email.as_deref(),
        });
        let mut out = password::check(
            kind,
            &pw,
            &s2.passwords.policy(kind),
            &personal.unwrap_or_default(),
            &s2.bad_passwords,
        );
        if out.iter().all(|p| p.code != "too_long")
            && let Some(h) = other_hash
            && hash::verify(&pw, &h, &s2.passwords.hashing).is_ok_and(|v| v != Verified::No)
        {
            out.push(password::same_as_other(kind));
        }
        out
    })
    .await
    .map_err(Problem::internal)
}

/// A password to set.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordIn {
    password: String,
    /// Where the customer does it: `web` (default), `app`, `support_center`, `paper` (the
    /// emergency switch applies to web and app).
    channel: Option<String>,
}

/// A password to check, for feedback while the customer types.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordCheckIn {
    /// `login` or `withdrawal`.
    kind: String,
    password: String,
    /// Whose: their personal data and other password count.
    customer_id: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct PasswordCheckOut {
    ok: bool,
    /// What to fix (code, message_ja, message_en).
    #[schema(value_type = Vec<Object>)]
    problems: Vec<password::Problem>,
}

#[utoipa::path(post, path = "/v1/passwords/check", request_body = PasswordCheckIn,
    responses((status = 200, body = PasswordCheckOut), (status = 422, body = Problem)),
    security(("api_key" = ["auth"])))]
async fn post_password_check(
    State(s): St,
    headers: HeaderMap,
    body: Bytes,
) -> AppResult<Json<PasswordCheckOut>> {
    s.keys
        .authorize(&s.store, &headers, Scope::Auth, now_us())
        .await?;
    let b: PasswordCheckIn = json_body(&body)?;
    let kind = kind_of(&b.kind)
        .map_err(|_| Problem::unprocessable("kind: expected login or withdrawal"))?;
    let c = match &b.customer_id {
        Some(id) => Some(record(&s, id).await?),
        None => None,
    };
    let problems = problems(&s, kind, &b.password, c.as_ref()).await?;
    Ok(Json(PasswordCheckOut {
        ok: problems.is_empty(),
        problems,
    }))
}

#[utoipa::path(put, path = "/v1/customers/{id}/passwords/{kind}", request_body = PasswordIn,
    params(("id" = String, Path), ("kind" = String, Path, description = "login or withdrawal")),
    responses((status = 204), (status = 422, body = Problem, description = "refused: `problems` says what to fix"), (status = 404, body = Problem)),
    security(("api_key" = ["auth"])))]
async fn put_password(
    State(s): St,
    headers: HeaderMap,
    Path((id, kind)): Path<(String, String)>,
    body: Bytes,
) -> AppResult<StatusCode> {
    let now = now_us();
    let key = s
        .keys
        .authorize(&s.store, &headers, Scope::Auth, now)
        .await?;
    let kind = kind_of(&kind)?;
    let b: PasswordIn = json_body(&body)?;
    let procedure = match kind {
        PasswordKind::Login => Kind::PasswordChange,
        PasswordKind::Withdrawal => Kind::WithdrawalPasswordChange,
    };
    if let Some(sw) = s
        .switched_off(procedure, channel_of(b.channel.as_deref())?)
        .await?
    {
        return Err(switched_off_problem(&sw));
    }
    let c = record(&s, &id).await?;
    let found = problems(&s, kind, &b.password, Some(&c)).await?;
    if !found.is_empty() {
        let mut p = Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "password-policy",
            format!(
                "the {} password was refused: {}",
                kind.as_str(),
                found.iter().map(|p| p.code).collect::<Vec<_>>().join(", ")
            ),
        );
        p.problems = Some(found);
        return Err(p);
    }
    let params = s.passwords.hashing;
    let pw = b.password;
    let h = tokio::task::spawn_blocking(move || hash::hash(&pw, &params))
        .await
        .map_err(Problem::internal)?
        .map_err(Problem::internal)?;
    let note = AuditNote {
        actor: format!("apikey:{}", key.key_id),
        action: "credential.change".into(),
        target: format!("customer:{id}"),
        detail: json!({"credential": format!("{}_password", kind.as_str())}),
    };
    s.store.set_password(&id, kind, &h, now, &note).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, ToSchema)]
pub struct VerifyOut {
    valid: bool,
}

/// A password to verify, with where the attempt comes from (for the throttles, and so that a
/// wrong login password reaches the risk engine as a `login_failed` event: do not send that
/// event again through /v1/events).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyIn {
    password: String,
    ip: Option<String>,
    device_id: Option<String>,
    user_agent: Option<String>,
    /// `web` (default) or `app`.
    channel: Option<String>,
}

fn locked(status: StatusCode, retry_after: Option<i64>, ja: String, en: String) -> Response {
    let mut r = Problem::new(status, "locked", en.clone())
        .telling("locked", ja, en)
        .into_response();
    if let Some(secs) = retry_after
        && let Ok(v) = axum::http::HeaderValue::from_str(&secs.max(1).to_string())
    {
        r.headers_mut().insert(axum::http::header::RETRY_AFTER, v);
    }
    r
}

#[utoipa::path(post, path = "/v1/customers/{id}/passwords/{kind}/verify", request_body = VerifyIn,
    params(("id" = String, Path), ("kind" = String, Path, description = "login or withdrawal")),
    responses((status = 200, body = VerifyOut),
        (status = 429, body = Problem, description = "locked for a while after wrong passwords, or too many failures from the IP or network (Retry-After)"),
        (status = 423, body = Problem, description = "locked until staff unlock it"),
        (status = 404, body = Problem)),
    security(("api_key" = ["auth"])))]
async fn post_password_verify(
    State(s): St,
    headers: HeaderMap,
    Path((id, kind)): Path<(String, String)>,
    body: Bytes,
) -> AppResult<Response> {
    let now = now_us();
    s.keys
        .authorize(&s.store, &headers, Scope::Auth, now)
        .await?;
    let kind = kind_of(&kind)?;
    let b: VerifyIn = json_body(&body)?;
    let ip: Option<std::net::IpAddr> = match b.ip.as_deref() {
        Some(t) => Some(
            t.parse()
                .map_err(|_| Problem::unprocessable("ip: not an IP address"))?,
        ),
        None => None,
    };
    let Some(stored) = s.store.password_hash(&id, kind).await? else {
        return Err(Problem::not_found(format!(
            "customer {id:?} has no {} password",
            kind.as_str()
        )));
    };
    let lock = s.passwords.lockout;
    // The account's lock first: while locked, the password is not even checked.
    if let Some((n, last)) = s.store.failures(&id, kind).await? {
        match lock.state(n, last, now) {
            mamori_auth::lockout::LockState::Open => {}
            mamori_auth::lockout::LockState::Until(t) => {
                let secs = (t - now + 999_999) / 1_000_000;
                let minutes = (secs + 59) / 60;
                return Ok(locked(
                    StatusCode::TOO_MANY_REQUESTS,
                    Some(secs),
                    format!(
                        "パスワードの誤りが続いたため、しばらくご利用いただけません。{minutes}分ほどお待ちのうえ、再度お試しください。"
                    ),
                    format!(
                        "Too many wrong passwords: please try again in about {minutes} minutes."
                    ),
                ));
            }
            mamori_auth::lockout::LockState::Hard => {
                return Ok(locked(
                    StatusCode::LOCKED,
                    None,
                    "パスワードの誤りが続いたため、ロックしました。サポートセンターへご連絡ください。".into(),
                    "Locked after too many wrong passwords: please contact the support center."
                        .into(),
                ));
            }
        }
    }
    // Failed logins from the address and its network, over every account.
    if let Some(ip) = ip {
        let window = i64::from(lock.window_minutes) * 60_000_000;
        let key = mamori_core::net::ip_key(ip);
        let checks = [
            ((key, key), lock.ip_failures),
            (mamori_core::net::prefix_range(key), lock.network_failures),
        ];
        for (range, limit) in checks {
            let a = s
                .store
                .range_activity(&id, range, now - window, now)
                .await?;
            if a.failed_logins >= limit {
                return Ok(locked(
                    StatusCode::TOO_MANY_REQUESTS,
                    Some(window / 1_000_000),
                    "ご利用の接続元からの失敗が多いため、しばらくお待ちのうえ、再度お試しください。".into(),
                    "Too many failed attempts from your network: please wait and try again."
                        .into(),
                ));
            }
        }
    }
    if b.password.chars().count() > password::HARD_MAX_CHARS {
        return Err(Problem::unprocessable(format!(
            "password: longer than {} characters",
            password::HARD_MAX_CHARS
        )));
    }
    if let Some(n) = check_stored(&s, &id, kind, stored, b.password, now).await? {
        if kind == PasswordKind::Login {
            // A wrong login password is a failed login: the risk engine's stuffing rules count it.
            let e = json!({
                "event_id": format!("mamori-pwfail-{}", uuid_like()),
                "occurred_at": format_tokyo(now),
                "customer_id": id,
                "kind": "login_failed",
                "channel": b.channel.as_deref().unwrap_or(if ip.is_some() { "web" } else { "support_center" }),
                "ip": ip.map(|i| i.to_string()),
                "device_id": b.device_id,
                "user_agent": b.user_agent,
            });
            let ev = mamori_core::parse::parse_json_line(&e.to_string())
                .map_err(|e| Problem::unprocessable(e.to_string()))?;
            s.store.insert_events(&[ev]).await?;
        }
        let state = lock.state(n, now, now);
        let before = lock.state(n.saturating_sub(1), now, now);
        if state != mamori_auth::lockout::LockState::Open
            && (before == mamori_auth::lockout::LockState::Open
                || state == mamori_auth::lockout::LockState::Hard && n == lock.hard_lock_after)
        {
            let until = match state {
                mamori_auth::lockout::LockState::Until(t) => json!(format_tokyo(t)),
                _ => json!("until unlocked by staff"),
            };
            let detail = json!({"password": kind.as_str(), "failures": n, "until": until});
            let note = AuditNote {
                actor: "system".into(),
                action: "lockout".into(),
                target: format!("customer:{id}"),
                detail: detail.clone(),
            };
            s.store.note_lockout(&id, &detail, now, &note).await?;
        }
        return Ok(Json(VerifyOut { valid: false }).into_response());
    }
    Ok(Json(VerifyOut { valid: true }).into_response())
}

/// Verifies a password against its stored hash, off the async workers. A right one clears the
/// consecutive failures (and is hashed again if the costs changed): `None`. A wrong one counts:
/// the consecutive failures now.
async fn check_stored(
    s: &AppState,
    id: &str,
    kind: PasswordKind,
    stored: String,
    pw: String,
    now: i64,
) -> AppResult<Option<u32>> {
    let params = s.passwords.hashing;
    let st = stored.clone();
    let (v, new) = tokio::task::spawn_blocking(move || {
        let v = hash::verify(&pw, &st, &params)?;
        let new = match v {
            Verified::YesRehash => Some(hash::hash(&pw, &params)?),
            _ => None,
        };
        Ok::<_, hash::HashError>((v, new))
    })
    .await
    .map_err(Problem::internal)?
    .map_err(Problem::internal)?;
    if v == Verified::No {
        return Ok(Some(s.store.add_failure(id, kind, now).await?));
    }
    if let Some(new) = new {
        s.store.rehash_password(id, kind, &stored, &new).await?;
    }
    s.store.clear_failures(id, kind, now, None).await?;
    Ok(None)
}

/// 128 random bits in hex, for ids mamori makes.
fn uuid_like() -> String {
    use rand::Rng;
    let v: u128 = rand::rng().random();
    format!("{v:032x}")
}

#[utoipa::path(delete, path = "/v1/customers/{id}/passwords/{kind}/lock", request_body = RevealIn,
    params(("id" = String, Path), ("kind" = String, Path)),
    responses((status = 204), (status = 404, body = Problem, description = "not locked")),
    security(("api_key" = ["admin"])))]
async fn delete_lock(
    State(s): St,
    headers: HeaderMap,
    Path((id, kind)): Path<(String, String)>,
    body: Bytes,
) -> AppResult<StatusCode> {
    let now = now_us();
    let key = s
        .keys
        .authorize(&s.store, &headers, Scope::Admin, now)
        .await?;
    let kind = kind_of(&kind)?;
    let b: RevealIn = json_body(&body)?;
    let (staff, reason) = b.checked("why you unlock it")?;
    let note = AuditNote {
        actor: format!("staff:{staff}"),
        action: "unlock".into(),
        target: format!("customer:{id}"),
        detail: json!({"password": kind.as_str(), "reason": reason, "apikey": key.key_id}),
    };
    if s.store.clear_failures(&id, kind, now, Some(&note)).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Problem::not_found("no failures recorded for that password"))
    }
}

#[utoipa::path(get, path = "/v1/customers/{id}",
    params(("id" = String, Path)),
    responses((status = 200, description = "The record, masked", body = Object), (status = 404, body = Problem)),
    security(("api_key" = ["read"])))]
async fn get_customer(
    State(s): St,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> AppResult<Json<mamori_auth::mask::MaskedCustomer>> {
    s.keys
        .authorize(&s.store, &headers, Scope::Read, now_us())
        .await?;
    let c = record(&s, &id).await?;
    Ok(Json(mamori_auth::mask::customer(&c)))
}

/// Which staff member acts, and why (both kept in the audit log).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevealIn {
    /// The staff member.
    staff: String,
    /// Why (e.g. a support ticket).
    reason: String,
}

impl RevealIn {
    pub(crate) fn checked(&self, why: &str) -> AppResult<(&str, &str)> {
        staff_and_reason(&self.staff, &self.reason, why)
    }
}

/// A staff member's name and reason, trimmed, or what is wrong with them (`why`: what the reason
/// must say).
pub(crate) fn staff_and_reason<'a>(
    staff: &'a str,
    reason: &'a str,
    why: &str,
) -> AppResult<(&'a str, &'a str)> {
    let (staff, reason) = (staff.trim(), reason.trim());
    if staff.is_empty() || staff.len() > 100 {
        return Err(Problem::unprocessable("staff: 1 to 100 characters"));
    }
    if reason.chars().count() < 4 || reason.len() > 1000 {
        return Err(Problem::unprocessable(format!(
            "reason: say {why} (4 to 1000 characters)"
        )));
    }
    Ok((staff, reason))
}

#[utoipa::path(post, path = "/v1/customers/{id}/reveal", request_body = RevealIn,
    params(("id" = String, Path)),
    responses((status = 200, description = "The record, unmasked", body = Object), (status = 404, body = Problem)),
    security(("api_key" = ["admin"])))]
async fn post_reveal(
    State(s): St,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> AppResult<Json<CustomerRecord>> {
    let now = now_us();
    let key = s
        .keys
        .authorize(&s.store, &headers, Scope::Admin, now)
        .await?;
    let b: RevealIn = json_body(&body)?;
    let (staff, reason) = b.checked("why the data is revealed")?;
    let c = record(&s, &id).await?;
    let note = AuditNote {
        actor: format!("staff:{staff}"),
        action: "personal.reveal".into(),
        target: format!("customer:{id}"),
        detail: json!({"reason": reason, "apikey": key.key_id}),
    };
    s.store.audit(&note, now).await?;
    Ok(Json(c))
}

#[derive(Serialize, ToSchema)]
pub struct SwitchOut {
    procedure: String,
    channel: String,
    enabled: bool,
    reason: String,
    actor: String,
    changed_at: String,
}

fn switch_out(x: &SwitchState) -> SwitchOut {
    SwitchOut {
        procedure: x.procedure.as_str().into(),
        channel: x.channel.as_str().into(),
        enabled: x.enabled,
        reason: x.reason.clone(),
        actor: x.actor.clone(),
        changed_at: format_tokyo(x.changed_at),
    }
}

#[utoipa::path(get, path = "/v1/switches",
    responses((status = 200, body = Vec<SwitchOut>)),
    security(("api_key" = ["read"])))]
async fn get_switches(State(s): St, headers: HeaderMap) -> AppResult<Json<Vec<SwitchOut>>> {
    s.keys
        .authorize(&s.store, &headers, Scope::Read, now_us())
        .await?;
    Ok(Json(
        s.store.switches().await?.iter().map(switch_out).collect(),
    ))
}

#[utoipa::path(get, path = "/v1/policy",
    responses((status = 200, body = Object, description = "The engine's policy in effect on this node: `revision` (null: the configuration's `[policy]`), who set it and why, and the policy itself")),
    security(("api_key" = ["read"])))]
async fn get_policy(State(s): St, headers: HeaderMap) -> AppResult<Json<Value>> {
    s.keys
        .authorize(&s.store, &headers, Scope::Read, now_us())
        .await?;
    let (revision, policy) = s.policy_and_revision().await;
    let stored = match revision {
        Some(r) => mamori_store::Policies::policy(&s.store)
            .await?
            .filter(|p| p.revision == r),
        None => None,
    };
    Ok(Json(json!({
        "revision": revision,
        "source": if revision.is_some() { "store" } else { "configuration" },
        "set_at": stored.as_ref().map(|p| format_tokyo(p.set_at)),
        "set_by": stored.as_ref().map(|p| p.set_by.clone()),
        "reason": stored.as_ref().map(|p| p.reason.clone()),
        "policy": *policy,
    })))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SwitchIn {
    enabled: bool,
    reason: String,
    /// The staff member who flips it (kept in the audit log).
    staff: String,
}

#[utoipa::path(put, path = "/v1/switches/{procedure}/{channel}", request_body = SwitchIn,
    params(("procedure" = String, Path, description = "e.g. destination_change"), ("channel" = String, Path, description = "web or app")),
    responses((status = 200, body = SwitchOut), (status = 422, body = Problem)),
    security(("api_key" = ["admin"])))]
async fn put_switch(
    State(s): St,
    headers: HeaderMap,
    Path((procedure, channel)): Path<(String, String)>,
    body: Bytes,
) -> AppResult<Json<SwitchOut>> {
    let now = now_us();
    let key = s
        .keys
        .authorize(&s.store, &headers, Scope::Admin, now)
        .await?;
    let kind = Kind::parse(&procedure)
        .filter(|k| switchable(*k))
        .ok_or_else(|| {
            Problem::not_found(
                "procedure: login, trade or a sensitive procedure (destination_change, withdrawal, …)",
            )
        })?;
    let channel =
        SwitchChannel::parse(&channel).ok_or_else(|| Problem::not_found("channel: web or app"))?;
    let b: SwitchIn = json_body(&body)?;
    let (staff, reason) = staff_and_reason(&b.staff, &b.reason, "why the switch is set")?;
    let state = SwitchState {
        procedure: kind,
        channel,
        enabled: b.enabled,
        reason: reason.to_owned(),
        actor: format!("staff:{staff}"),
        changed_at: now,
    };
    let note = AuditNote {
        actor: state.actor.clone(),
        action: "switch.set".into(),
        target: format!("{kind}/{channel}"),
        detail: json!({"enabled": b.enabled, "reason": state.reason, "apikey": key.key_id}),
    };
    s.store.set_switch(&state, &note).await?;
    s.switches_changed();
    Ok(Json(switch_out(&state)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    from: Option<i64>,
    limit: Option<usize>,
}

#[utoipa::path(get, path = "/v1/audit",
    params(("from" = Option<i64>, Query), ("limit" = Option<usize>, Query)),
    responses((status = 200, body = Object)),
    security(("api_key" = ["admin"])))]
async fn get_audit(
    State(s): St,
    headers: HeaderMap,
    q: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> AppResult<Json<Value>> {
    s.keys
        .authorize(&s.store, &headers, Scope::Admin, now_us())
        .await?;
    let Query(q) = q.map_err(|e| Problem::bad_request(e.body_text()))?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=10_000).contains(&limit) {
        return Err(Problem::bad_request("limit: 1 to 10000"));
    }
    let entries = s.store.audit_entries(q.from.unwrap_or(1), limit).await?;
    Ok(Json(json!({"entries": entries})))
}

#[utoipa::path(get, path = "/v1/audit/verify",
    responses((status = 200, body = Object, description = "{intact, entries, head} or {intact: false, error}")),
    security(("api_key" = ["admin"])))]
async fn get_audit_verify(State(s): St, headers: HeaderMap) -> AppResult<Json<Value>> {
    s.keys
        .authorize(&s.store, &headers, Scope::Admin, now_us())
        .await?;
    Ok(Json(
        match mamori_store::verify_audit(&s.store, None).await? {
            Ok((n, head)) => json!({
                "intact": true,
                "entries": n,
                "head": head.map(|(s, h)| format!("{s}:{h}")),
            }),
            Err(e) => json!({"intact": false, "error": e}),
        },
    ))
}

/// The emergency switches as this node last read them: every node reads them again at least
/// every [`SWITCH_TTL`], so a switch set anywhere takes effect everywhere within a second.
#[derive(Debug, Default)]
pub struct SwitchBoard {
    cache: std::sync::Mutex<Option<(std::time::Instant, Arc<Vec<SwitchState>>)>>,
}

/// How long a node trusts its copy of the switches.
pub const SWITCH_TTL: std::time::Duration = std::time::Duration::from_millis(500);

/// What a customer is told when a procedure is switched off.
pub const SWITCHED_OFF_JA: &str = "現在、この手続きはインターネットではお受けしておりません。お手数ですが、サポートセンターへのお電話または書面でお手続きください。";
pub const SWITCHED_OFF_EN: &str = "This procedure is not available online at the moment. Please call the support center or use the paper form.";

impl AppState {
    /// The switch that turns `kind` off on `channel`, if one does (only web and app can be
    /// switched off: the support center and paper forms are where procedures go then).
    pub async fn switched_off(
        &self,
        kind: Kind,
        channel: mamori_core::event::Channel,
    ) -> AppResult<Option<SwitchState>> {
        let ch = match channel {
            mamori_core::event::Channel::Web => SwitchChannel::Web,
            mamori_core::event::Channel::App => SwitchChannel::App,
            _ => return Ok(None),
        };
        let fresh = {
            let c = self
                .switches
                .cache
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            c.as_ref()
                .filter(|(at, _)| at.elapsed() < SWITCH_TTL)
                .map(|(_, v)| v.clone())
        };
        let all = match fresh {
            Some(v) => v,
            None => {
                let v = Arc::new(self.store.switches().await?);
                *self
                    .switches
                    .cache
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) =
                    Some((std::time::Instant::now(), v.clone()));
                v
            }
        };
        Ok(all
            .iter()
            .find(|x| x.procedure == kind && x.channel == ch && !x.enabled)
            .cloned())
    }

    /// Forgets the copy (after this node set a switch).
    pub fn switches_changed(&self) {
        *self
            .switches
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// The refusal of a switched-off procedure.
fn switched_off_problem(sw: &SwitchState) -> Problem {
    let p = Problem::new(
        StatusCode::FORBIDDEN,
        "switched-off",
        format!(
            "{} is switched off on {} ({}); route the customer to the support center or the paper form",
            sw.procedure, sw.channel, sw.reason
        ),
    );
    p.telling("switched_off", SWITCHED_OFF_JA, SWITCHED_OFF_EN)
}

/// A channel from a request (`web` when absent).
fn channel_of(text: Option<&str>) -> AppResult<mamori_core::event::Channel> {
    match text {
        None => Ok(mamori_core::event::Channel::Web),
        Some(t) => mamori_core::event::Channel::parse(t).ok_or_else(|| {
            Problem::unprocessable(format!(
                "channel: expected one of {}",
                mamori_core::event::Channel::expected()
            ))
        }),
    }
}

/// Unix seconds of a UTC microsecond time.
fn unix_seconds(us: i64) -> u64 {
    u64::try_from(us.div_euclid(1_000_000)).unwrap_or(0)
}

#[utoipa::path(post, path = "/v1/customers/{id}/totp", request_body = crate::passkeys::AddIn,
    params(("id" = String, Path)),
    responses((status = 201, description = "Enrolment started: show the QR code (SVG) or the secret; confirm with a first code", body = Object),
        (status = 403, body = Problem, description = "the customer has a passkey: a step-up token for mfa_change {\"add\": \"totp\"} is required"),
        (status = 409, body = Problem, description = "a confirmed enrolment exists"), (status = 404, body = Problem)),
    security(("api_key" = ["auth"])))]
async fn post_totp(
    State(s): St,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> AppResult<Response> {
    let now = now_us();
    s.keys
        .authorize(&s.store, &headers, Scope::Auth, now)
        .await?;
    let b: crate::passkeys::AddIn = crate::passkeys::optional_body(&body)?;
    record(&s, &id).await?;
    let secret = totp::new_secret();
    let e = totp::enrolment(&secret, &s.mfa.totp_issuer, &id)
        .map_err(|e| Problem::unprocessable(format!("customer id: {e}")))?;
    let confirmed =
        |t: &Option<mamori_store::TotpRecord>| t.as_ref().is_some_and(|t| t.confirmed_at.is_some());
    if !confirmed(&s.store.totp(&id).await?) {
        // Adding a second factor beside a passkey is an MFA change.
        let has_passkey = !s.store.passkeys(&id).await?.is_empty();
        crate::passkeys::mfa_change(
            &s,
            &id,
            has_passkey,
            b.stepup_token.as_deref(),
            &json!({"add": "totp"}),
            now,
        )
        .await?;
    }
    if !s.store.begin_totp(&id, &secret, now).await? {
        return Err(Problem::conflict(
            "the customer already has a confirmed authenticator; removing it is an MFA change",
        ));
    }
    Ok((StatusCode::CREATED, Json(e)).into_response())
}

/// A code from the customer's authenticator app (or, to verify, a recovery code instead).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CodeIn {
    code: Option<String>,
    recovery_code: Option<String>,
}

#[utoipa::path(post, path = "/v1/customers/{id}/totp/confirm", request_body = CodeIn,
    params(("id" = String, Path)),
    responses((status = 200, description = "{recovery_codes}: ten single-use codes, shown once", body = Object),
        (status = 422, body = Problem, description = "the code is wrong"), (status = 409, body = Problem)),
    security(("api_key" = ["auth"])))]
async fn post_totp_confirm(
    State(s): St,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> AppResult<Json<Value>> {
    let now = now_us();
    let key = s
        .keys
        .authorize(&s.store, &headers, Scope::Auth, now)
        .await?;
    let b: CodeIn = json_body(&body)?;
    let code = b
        .code
        .ok_or_else(|| Problem::unprocessable("code: missing (required)"))?;
    let t = s
        .store
        .totp(&id)
        .await?
        .filter(|t| t.confirmed_at.is_none())
        .ok_or_else(|| Problem::conflict("no enrolment is waiting for confirmation"))?;
    let step = totp::verify(&t.secret, &code, unix_seconds(now), None)
        .map_err(|_| Problem::unprocessable("code: not valid (check the device's clock)"))?;
    if crate::passkeys::passkey_added_since(&s, &id, t.created_at).await? {
        return Err(Problem::conflict(
            "a passkey was registered after this enrolment began, without a step-up for it: begin the enrolment again (with a step-up token)",
        ));
    }
    let (codes, digests) = totp::recovery_codes();
    let note = AuditNote {
        actor: format!("apikey:{}", key.key_id),
        action: "credential.change".into(),
        target: format!("customer:{id}"),
        detail: json!({"credential": "totp", "change": "enrolled"}),
    };
    if !s
        .store
        .confirm_totp(&id, step, &digests, now, &note)
        .await?
    {
        return Err(Problem::conflict(
            "the enrolment was confirmed or replaced meanwhile",
        ));
    }
    Ok(Json(json!({"recovery_codes": codes})))
}

#[utoipa::path(post, path = "/v1/customers/{id}/totp/verify", request_body = CodeIn,
    params(("id" = String, Path)),
    responses((status = 200, description = "{valid, method, reason, recovery_codes_left}", body = Object), (status = 404, body = Problem)),
    security(("api_key" = ["auth"])))]
async fn post_totp_verify(
    State(s): St,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> AppResult<Json<Value>> {
    let now = now_us();
    let key = s
        .keys
        .authorize(&s.store, &headers, Scope::Auth, now)
        .await?;
    let b: CodeIn = json_body(&body)?;
    let t = s
        .store
        .totp(&id)
        .await?
        .filter(|t| t.confirmed_at.is_some())
        .ok_or_else(|| {
            Problem::not_found(format!("customer {id:?} has no confirmed authenticator"))
        })?;
    let r = second_factor(
        &s,
        &id,
        &t,
        b.code,
        b.recovery_code,
        &key.key_id,
        json!({}),
        now,
    )
    .await?;
    let mut out = match r {
        Ok(method) => json!({"valid": true, "method": method}),
        Err(reason) => json!({"valid": false, "reason": reason}),
    };
    if out["method"] == "recovery_code" || out["reason"] == "wrong_recovery_code" {
        out["recovery_codes_left"] = json!(s.store.recovery_codes_left(&id).await?);
    }
    Ok(Json(out))
}

/// Checks a TOTP code (its step then used up, by the store's compare-and-set, so two requests
/// with one code cannot both pass) or a recovery code (used up, audited): the method that
/// passed, or why not (`wrong`, `replayed`, `wrong_recovery_code`).
#[allow(clippy::too_many_arguments)]
async fn second_factor(
    s: &AppState,
    id: &str,
    t: &mamori_store::TotpRecord,
    code: Option<String>,
    recovery_code: Option<String>,
    key_id: &str,
    detail: Value,
    now: i64,
) -> AppResult<Result<&'static str, &'static str>> {
    match (code, recovery_code) {
        (Some(code), None) => Ok(
            match totp::verify(&t.secret, &code, unix_seconds(now), t.last_step) {
                Ok(step) if s.store.use_totp_step(id, step).await? => Ok("totp"),
                Ok(_) | Err(TotpError::Replayed) => Err("replayed"),
                Err(_) => Err("wrong"),
            },
        ),
        (None, Some(rc)) => {
            let note = AuditNote {
                actor: format!("apikey:{key_id}"),
                action: "credential.recovery_code_used".into(),
                target: format!("customer:{id}"),
                detail,
            };
            let ok = rc.chars().count() <= 64
                && s.store
                    .use_recovery_code(id, &totp::recovery_digest(&rc), now, &note)
                    .await?;
            Ok(if ok {
                Ok("recovery_code")
            } else {
                Err("wrong_recovery_code")
            })
        }
        _ => Err(Problem::unprocessable("send either code or recovery_code")),
    }
}

#[utoipa::path(delete, path = "/v1/customers/{id}/totp", request_body = crate::passkeys::RemoveIn,
    params(("id" = String, Path)),
    responses((status = 204), (status = 403, body = Problem, description = "the step-up token is refused"), (status = 404, body = Problem)),
    security(("api_key" = ["auth"]), ("api_key" = ["admin"])))]
async fn delete_totp(
    State(s): St,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> AppResult<StatusCode> {
    let now = now_us();
    s.keys
        .authorize(&s.store, &headers, Scope::Auth, now)
        .await?;
    let b: crate::passkeys::RemoveIn = json_body(&body)?;
    if s.store.totp(&id).await?.is_none() {
        return Err(Problem::not_found(format!(
            "customer {id:?} has no authenticator"
        )));
    }
    let (actor, mut detail) = crate::passkeys::remover(&s, &headers, &id, &b, "totp", now).await?;
    detail["credential"] = json!("totp");
    detail["change"] = json!("removed");
    let note = AuditNote {
        actor,
        action: "credential.change".into(),
        target: format!("customer:{id}"),
        detail,
    };
    if s.store.remove_totp(&id, now, &note).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Problem::not_found(format!(
            "customer {id:?} has no authenticator"
        )))
    }
}

/// Proof of a fresh second factor for one operation.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StepUpIn {
    /// The sensitive procedure: destination_change, withdrawal, password_change,
    /// withdrawal_password_change, email_change, phone_change, address_change, mfa_change.
    operation: String,
    /// What the operation will do (e.g. the destination account): the token is bound to it.
    #[schema(value_type = Object)]
    params: Value,
    /// A code from the customer's authenticator app…
    code: Option<String>,
    /// …or one of their recovery codes…
    recovery_code: Option<String>,
    /// …or a passkey's answer to a challenge from POST /v1/customers/{id}/passkeys/challenge.
    passkey: Option<crate::passkeys::AnswerIn>,
    /// Required for a withdrawal.
    withdrawal_password: Option<String>,
    /// Where the customer does it: `web` (default) or `app` (the emergency switch applies).
    channel: Option<String>,
}

pub(crate) fn refused(kind: &str, code: &'static str, ja: &str, en: &str) -> Problem {
    Problem::new(StatusCode::FORBIDDEN, kind, en.to_owned()).telling(code, ja, en)
}

/// A step-up token refused: the customer confirms it is them again.
pub(crate) fn stepup_refused(why: mamori_auth::stepup::Refusal) -> Problem {
    Problem::new(
        StatusCode::FORBIDDEN,
        "stepup-refused",
        format!("the step-up token is refused: {}", why.as_str()),
    )
    .telling(
        why.as_str(),
        "本人確認をやり直してください。",
        "Please confirm it is you again.",
    )
}

#[utoipa::path(post, path = "/v1/customers/{id}/stepup", request_body = StepUpIn,
    params(("id" = String, Path)),
    responses((status = 201, description = "{token, operation, expires_at}: single use, bound to the customer, operation and params", body = Object),
        (status = 403, body = Problem, description = "the second factor (or withdrawal password) failed"),
        (status = 409, body = Problem, description = "no second factor registered")),
    security(("api_key" = ["auth"])))]
async fn post_stepup(
    State(s): St,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> AppResult<Response> {
    let now = now_us();
    let key = s
        .keys
        .authorize(&s.store, &headers, Scope::Auth, now)
        .await?;
    let b: StepUpIn = json_body(&body)?;
    let op = Kind::parse(&b.operation)
        .filter(|k| k.is_sensitive())
        .ok_or_else(|| {
            Problem::unprocessable(
                "operation: a sensitive procedure (destination_change, withdrawal, password_change, …)",
            )
        })?;
    if !b.params.is_object() {
        return Err(Problem::unprocessable("params: expected a JSON object"));
    }
    if let Some(sw) = s
        .switched_off(op, channel_of(b.channel.as_deref())?)
        .await?
    {
        return Err(switched_off_problem(&sw));
    }
    if op == Kind::Withdrawal && s.store.frozen(&id).await?.is_some() {
        return Err(refused(
            "withdrawals-frozen",
            "withdrawals_frozen",
            "この口座からの出金は停止されています。サポートセンターへご連絡ください。",
            "Withdrawals from this account are stopped. Please call the support center.",
        ));
    }
    if op == Kind::Withdrawal {
        let Some(pw) = b.withdrawal_password.as_deref() else {
            return Err(Problem::unprocessable(
                "withdrawal_password: required for a withdrawal",
            ));
        };
        if !withdrawal_password_ok(&s, &id, pw, now).await? {
            return Err(refused(
                "stepup-failed",
                "wrong_withdrawal_password",
                "出金パスワードが正しくありません。",
                "The withdrawal password is wrong.",
            ));
        }
    }
    let no_factor = || {
        Problem::conflict(
            "the customer has no second factor registered: enrol an authenticator or a passkey first",
        )
    };
    let totp = s
        .store
        .totp(&id)
        .await?
        .filter(|t| t.confirmed_at.is_some());
    let checked = if let Some(answer) = b.passkey {
        if b.code.is_some() || b.recovery_code.is_some() {
            return Err(Problem::unprocessable(
                "send one of code, recovery_code or passkey",
            ));
        }
        if s.store.passkeys(&id).await?.is_empty() {
            return Err(no_factor());
        }
        crate::passkeys::check(&s, &id, &answer, now)
            .await?
            .map(|_| "passkey")
            .map_err(|_| "wrong_passkey")
    } else {
        let Some(t) = totp else {
            return Err(if s.store.passkeys(&id).await?.is_empty() {
                no_factor()
            } else {
                Problem::conflict(
                    "the customer has no authenticator app: answer a passkey challenge instead (passkey)",
                )
            });
        };
        let detail = json!({"operation": op.as_str()});
        second_factor(
            &s,
            &id,
            &t,
            b.code,
            b.recovery_code,
            &key.key_id,
            detail,
            now,
        )
        .await?
    };
    let method = match checked {
        Ok(m) => m,
        Err("wrong_passkey") => {
            return Err(refused(
                "stepup-failed",
                "wrong_passkey",
                "パスキーで本人確認できませんでした。もう一度お試しください。",
                "The passkey did not confirm it is you: please try again.",
            ));
        }
        Err("wrong_recovery_code") => {
            return Err(refused(
                "stepup-failed",
                "wrong_code",
                "リカバリーコードが正しくないか、すでに使われています。",
                "The recovery code is wrong or was already used.",
            ));
        }
        Err(_) => {
            return Err(refused(
                "stepup-failed",
                "wrong_code",
                "確認コードが正しくないか、すでに使われています。新しいコードを入力してください。",
                "The code is wrong or was already used: enter a new one.",
            ));
        }
    };
    let (token, digest) = mamori_auth::stepup::new_token();
    let method = if op == Kind::Withdrawal {
        format!("{method}+withdrawal_password")
    } else {
        method.to_owned()
    };
    let g = StepUpGrant {
        token_digest: digest,
        customer_id: id.clone(),
        operation: op.as_str().into(),
        params_digest: mamori_auth::stepup::params_digest(&b.params),
        method: method.clone(),
        created_at: now,
        expires_at: now + mamori_auth::stepup::TTL_SECONDS * 1_000_000,
    };
    let note = AuditNote {
        actor: format!("apikey:{}", key.key_id),
        action: "stepup.issue".into(),
        target: format!("customer:{id}"),
        detail: json!({"operation": op.as_str(), "method": method}),
    };
    s.store.issue_stepup(&g, &note).await?;
    Ok((
        StatusCode::CREATED,
        Json(
            json!({"token": token, "operation": op.as_str(), "method": method,
                    "expires_at": format_tokyo(g.expires_at)}),
        ),
    )
        .into_response())
}

/// Verifies the withdrawal password with the account's lock and back-off.
async fn withdrawal_password_ok(
    s: &Arc<AppState>,
    id: &str,
    pw: &str,
    now: i64,
) -> AppResult<bool> {
    let kind = PasswordKind::Withdrawal;
    let Some(stored) = s.store.password_hash(id, kind).await? else {
        return Err(Problem::conflict("the customer has no withdrawal password"));
    };
    if let Some((n, last)) = s.store.failures(id, kind).await?
        && s.passwords.lockout.state(n, last, now) != mamori_auth::lockout::LockState::Open
    {
        return Err(refused(
            "locked",
            "locked",
            "出金パスワードの誤りが続いたため、しばらくご利用いただけません。",
            "Too many wrong withdrawal passwords: please try again later.",
        ));
    }
    if pw.chars().count() > password::HARD_MAX_CHARS {
        return Ok(false);
    }
    Ok(check_stored(s, id, kind, stored, pw.to_owned(), now)
        .await?
        .is_none())
}

/// A step-up token presented for an operation.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsumeIn {
    token: String,
    customer_id: String,
    operation: String,
    #[schema(value_type = Object)]
    params: Value,
}

#[utoipa::path(post, path = "/v1/stepup/consume", request_body = ConsumeIn,
    responses((status = 200, description = "{valid: true, method}: the token is used up", body = Object),
        (status = 403, body = Problem, description = "refused: unknown, used, expired, other_customer, other_operation or other_parameters")),
    security(("api_key" = ["auth"])))]
async fn post_stepup_consume(
    State(s): St,
    headers: HeaderMap,
    body: Bytes,
) -> AppResult<Json<Value>> {
    let now = now_us();
    s.keys
        .authorize(&s.store, &headers, Scope::Auth, now)
        .await?;
    let b: ConsumeIn = json_body(&body)?;
    let r = s
        .store
        .consume_stepup(
            &mamori_auth::stepup::token_digest(&b.token),
            &b.customer_id,
            &b.operation,
            &mamori_auth::stepup::params_digest(&b.params),
            now,
        )
        .await?;
    match r {
        Ok(g) => Ok(Json(json!({"valid": true, "method": g.method}))),
        Err(why) => Err(stepup_refused(why)),
    }
}

/// A withdrawal destination to register or change to.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DestinationIn {
    /// bank_code (4 digits), branch_code (3), account_type, account_number (7), holder_kana;
    /// for the web and app exactly the `params` the step-up token was issued for.
    #[schema(value_type = Object)]
    destination: Value,
    /// `web` (default), `app`, `support_center` or `paper`.
    channel: Option<String>,
    /// From POST /v1/customers/{id}/stepup with operation destination_change (web and app).
    stepup_token: Option<String>,
    /// Support center and paper: the staff member registering it on the customer's behalf…
    staff: Option<String>,
    /// …and the identity checks made (e.g. "callback to registered phone", "ID document").
    identity_checks: Option<Vec<String>>,
    ip: Option<String>,
    device_id: Option<String>,
    user_agent: Option<String>,
    /// The broker's id for the procedure (idempotency of the event); made up when absent.
    event_id: Option<String>,
}

#[utoipa::path(post, path = "/v1/customers/{id}/destinations", request_body = DestinationIn,
    params(("id" = String, Path)),
    responses((status = 201, description = "{status: effective | pending_review, effective_at, assessment_id, decision, reasons, alert_id}", body = Object),
        (status = 403, body = Problem, description = "switched off, the step-up token refused, or the change blocked"),
        (status = 422, body = Problem)),
    security(("api_key" = ["auth"])))]
async fn post_destination(
    State(s): St,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> AppResult<Response> {
    let now = now_us();
    let key = s
        .keys
        .authorize(&s.store, &headers, Scope::Auth, now)
        .await?;
    let b: DestinationIn = json_body(&body)?;
    let channel = channel_of(b.channel.as_deref())?;
    record(&s, &id).await?;
    if let Some(sw) = s.switched_off(Kind::DestinationChange, channel).await? {
        return Err(switched_off_problem(&sw));
    }
    let text = |f: &str| b.destination.get(f).and_then(Value::as_str);
    let dest = mamori_core::parse::RawDestinationFields {
        bank_code: text("bank_code"),
        branch_code: text("branch_code"),
        account_type: text("account_type"),
        account_number: text("account_number"),
        holder_kana: text("holder_kana"),
    }
    .destination()
    .map_err(|e| Problem::unprocessable(e.to_string()))?
    .ok_or_else(|| Problem::unprocessable("destination: missing (required)"))?;
    // Who vouches for the customer: a fresh second factor online, staff's identity checks offline.
    let online = channel.is_online();
    let (actor, proof) = if online {
        let token = b
            .stepup_token
            .as_deref()
            .ok_or_else(|| Problem::unprocessable("stepup_token: required on the web and app"))?;
        let r = s
            .store
            .consume_stepup(
                &mamori_auth::stepup::token_digest(token),
                &id,
                Kind::DestinationChange.as_str(),
                &mamori_auth::stepup::params_digest(&b.destination),
                now,
            )
            .await?;
        match r {
            Ok(g) => (format!("customer:{id}"), json!({"stepup": g.method})),
            Err(why) => return Err(stepup_refused(why)),
        }
    } else {
        let staff = b.staff.as_deref().map(str::trim).unwrap_or_default();
        let checks = b.identity_checks.clone().unwrap_or_default();
        if staff.is_empty() || checks.iter().all(|c| c.trim().is_empty()) {
            return Err(Problem::unprocessable(
                "staff and identity_checks: who registers it for the customer, and how their identity was checked",
            ));
        }
        (format!("staff:{staff}"), json!({"identity_checks": checks}))
    };
    let e = json!({
        "event_id": b.event_id.clone().unwrap_or_else(|| format!("mamori-dest-{}", uuid_like())),
        "occurred_at": format_tokyo(now),
        "customer_id": id,
        "kind": "destination_change",
        "channel": channel.as_str(),
        "ip": b.ip,
        "device_id": b.device_id,
        "user_agent": b.user_agent,
        "destination": {"bank_code": dest.bank_code, "branch_code": dest.branch_code,
                        "account_type": dest.account_type, "account_number": dest.account_number,
                        "holder_kana": dest.holder_kana},
    });
    let e = mamori_core::parse::parse_json_line(&e.to_string())
        .map_err(|e| Problem::unprocessable(e.to_string()))?;
    let a = crate::app::decide(&s, &e).await?;
    let assessment_id = crate::app::assessment_id();
    let reasons = crate::app::reasons_json(&a);
    let rec = mamori_store::AssessmentRecord {
        assessment_id: assessment_id.clone(),
        created_at: now,
        event: e.clone(),
        decision: a.decision,
        score: a.score,
        reasons: serde_json::to_value(&reasons).unwrap_or(Value::Null),
        outcome: None,
        outcome_at: None,
    };
    use mamori_core::assess::Decision;
    if a.decision == Decision::Block {
        let alert_id = s.record(rec).await.map_err(crate::app::case_problem)?;
        return Err(refused(
            "blocked",
            "blocked",
            "このお手続きはお受けできませんでした。サポートセンターへお問い合わせください。",
            "This procedure could not be accepted. Please contact the support center.",
        )
        .with_detail(format!(
            "the destination change was blocked (assessment {assessment_id}, alert {alert_id:?})"
        )));
    }
    // A challenge was met by the step-up (online) or the identity checks (offline).
    let status = if a.decision == Decision::Hold {
        "pending_review"
    } else {
        "effective"
    };
    let effective_at = (status == "effective" && s.destinations.cooling_off_hours > 0)
        .then(|| now + i64::from(s.destinations.cooling_off_hours) * 3_600_000_000);
    let reg = RegisteredDestination {
        destination: dest.clone(),
        status: status.into(),
        registered_at: now,
        effective_at,
        assessment_id: Some(assessment_id.clone()),
    };
    let masked = mamori_auth::mask::account_number(&dest.account_number);
    let notice = json!({"bank_code": dest.bank_code, "account_number": masked, "status": status,
                        "effective_at": effective_at.map(format_tokyo), "channel": channel.as_str(),
                        "event_id": e.event_id});
    let mut detail = json!({"bank_code": dest.bank_code, "account_number": masked, "status": status,
                            "channel": channel.as_str(), "decision": a.decision.as_str(),
                            "assessment_id": assessment_id, "apikey": key.key_id});
    if let (Value::Object(d), Value::Object(p)) = (&mut detail, proof) {
        d.extend(p);
    }
    let note = AuditNote {
        actor,
        action: "destination.register".into(),
        target: format!("customer:{id}"),
        detail,
    };
    let alert_id = s
        .store
        .register_destination(&rec, &reg, &notice, &note)
        .await
        .map_err(crate::app::case_problem)?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "status": status,
            "effective_at": effective_at.map(format_tokyo),
            "assessment_id": assessment_id,
            "decision": a.decision.as_str(),
            "score": a.score,
            "reasons": reasons,
            "alert_id": alert_id,
        })),
    )
        .into_response())
}

#[utoipa::path(get, path = "/v1/customers/{id}/destinations",
    params(("id" = String, Path)),
    responses((status = 200, description = "The customer's destinations, masked, with status and effective_at", body = Object)),
    security(("api_key" = ["read"])))]
async fn get_destinations(
    State(s): St,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> AppResult<Json<Value>> {
    let now = now_us();
    s.keys
        .authorize(&s.store, &headers, Scope::Read, now)
        .await?;
    let all = s.store.destinations(&id).await?;
    Ok(Json(json!({"destinations": all.iter().map(|d| json!({
        "bank_code": d.destination.bank_code,
        "branch_code": mamori_auth::mask::branch(&d.destination.branch_code),
        "account_type": d.destination.account_type,
        "account_number": mamori_auth::mask::account_number(&d.destination.account_number),
        "status": d.status,
        "registered_at": format_tokyo(d.registered_at),
        "effective_at": d.effective_at.map(format_tokyo),
        "withdrawals_allowed": d.status == "effective" && d.effective_at.is_none_or(|t| t <= now),
    })).collect::<Vec<_>>()})))
}

#[derive(utoipa::OpenApi)]
#[openapi(
    paths(
        post_password_check,
        put_password,
        post_password_verify,
        delete_lock,
        post_stepup,
        post_stepup_consume,
        post_destination,
        get_destinations,
        get_customer,
        post_reveal,
        post_totp,
        post_totp_confirm,
        post_totp_verify,
        delete_totp,
        get_switches,
        get_policy,
        put_switch,
        get_audit,
        get_audit_verify
    ),
    components(schemas(
        PasswordIn,
        PasswordCheckIn,
        PasswordCheckOut,
        VerifyOut,
        VerifyIn,
        StepUpIn,
        ConsumeIn,
        DestinationIn,
        RevealIn,
        CodeIn,
        SwitchOut,
        SwitchIn
    ))
)]
pub struct PeopleDoc;
