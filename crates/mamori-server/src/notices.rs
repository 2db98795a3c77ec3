//! What customers are told and what they can answer: the "this wasn't me" pages behind the links
//! in notices (no API key: the link's token is the proof), frozen withdrawals for staff, and the
//! log of notices sent, waiting or given up.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use mamori_core::case::Scope;
use mamori_core::time::format_tokyo;
use mamori_store::{
    AuditNote, Freeze, Freezes, Notice, NoticeFilter, Outbox, ReportRefusal, Reports,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::app::{AppResult, AppState, St, now_us};
use crate::problem::{Problem, json_body};

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/report/{token}", get(get_report).post(post_report))
        .route(
            "/v1/customers/{id}/freeze",
            get(get_freeze).put(put_freeze).delete(delete_freeze),
        )
        .route("/v1/notices", get(get_notices))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A small page in Japanese and English, never cached, never sending a referrer (the link's
/// token is in the address), with nothing loaded from elsewhere.
fn page(status: StatusCode, ja: &str, en: &str, form: Option<&str>) -> Response {
    let form = form.map_or(String::new(), |action| {
        format!(
            "<form method=\"post\" action=\"{}\"><button type=\"submit\">出金を停止する / Stop withdrawals</button></form>",
            escape(action)
        )
    });
    let html = format!(
        "<!doctype html><html lang=\"ja\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\"><title>mamori</title>\
         <style>body{{font-family:sans-serif;max-width:40em;margin:2em auto;padding:0 1em}}\
         button{{font-size:1.1em;padding:.6em 1.2em}}</style></head><body>\
         <p>{}</p><p lang=\"en\">{}</p>{form}</body></html>",
        escape(ja),
        escape(en)
    );
    let mut r = (status, html).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// A link's token as sent (`rpt_` and 64 hex digits), or None.
fn token_of(text: &str) -> Option<&str> {
    let hex = text.strip_prefix("rpt_")?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(text)
}

fn unknown_link() -> Response {
    page(
        StatusCode::NOT_FOUND,
        "このリンクは無効です。お心当たりのないお手続きがある場合は、サポートセンターへご連絡ください。",
        "This link is not valid. If there is a procedure you did not make, please call the support center.",
        None,
    )
}

fn refusal_page(why: ReportRefusal) -> Response {
    match why {
        ReportRefusal::Unknown => unknown_link(),
        ReportRefusal::Used => page(
            StatusCode::CONFLICT,
            "このリンクからのご連絡はすでに承っています。出金は停止されています。",
            "We already have your report from this link. Withdrawals are stopped.",
            None,
        ),
        ReportRefusal::Expired => page(
            StatusCode::GONE,
            "このリンクは有効期限が切れています。サポートセンターへご連絡ください。",
            "This link has expired. Please call the support center.",
            None,
        ),
    }
}

/// Asks first: mail scanners fetch links, so a GET changes nothing.
async fn get_report(State(s): St, Path(token): Path<String>) -> AppResult<Response> {
    let Some(token) = token_of(&token) else {
        return Ok(unknown_link());
    };
    let digest = mamori_auth::stepup::token_digest(token);
    let now = now_us();
    Ok(match s.store.report_link(&digest).await? {
        None => unknown_link(),
        Some(l) if l.used_at.is_some() => refusal_page(ReportRefusal::Used),
        Some(l) if l.expires_at <= now => refusal_page(ReportRefusal::Expired),
        Some(_) => page(
            StatusCode::OK,
            "このお手続きにお心当たりがない場合は、下のボタンを押してください。お客さまの口座からの出金を直ちに停止し、担当者が確認します。",
            "If you did not make this procedure, press the button below. We will stop withdrawals from your account at once and look into it.",
            Some(&format!("/report/{token}")),
        ),
    })
}

/// The report: withdrawals frozen, the procedure labelled as fraud (one transaction).
async fn post_report(State(s): St, Path(token): Path<String>) -> AppResult<Response> {
    let Some(token) = token_of(&token) else {
        return Ok(unknown_link());
    };
    let digest = mamori_auth::stepup::token_digest(token);
    let now = now_us();
    let customer = match s.store.report_link(&digest).await? {
        Some(l) => l.customer_id,
        None => return Ok(unknown_link()),
    };
    let note = AuditNote {
        actor: format!("customer:{customer}"),
        action: "customer.report".into(),
        target: format!("customer:{customer}"),
        detail: json!({}),
    };
    Ok(match s.store.report(&digest, now, &note).await? {
        Ok(r) => {
            metrics::counter!("mamori_customer_reports_total").increment(1);
            tracing::info!(alert_id = ?r.alert_id, destinations_refused = r.destinations_refused, "customer report: withdrawals frozen");
            page(
                StatusCode::OK,
                "ご連絡ありがとうございます。お客さまの口座からの出金を停止しました。担当者が確認のうえご連絡します。",
                "Thank you. We stopped withdrawals from your account. We will look into it and contact you.",
                None,
            )
        }
        Err(why) => refusal_page(why),
    })
}

/// A freeze as the API shows it.
#[derive(Serialize, ToSchema)]
pub struct FreezeOut {
    frozen: bool,
    frozen_at: Option<String>,
    /// `customer_report` or `staff`.
    source: Option<String>,
    actor: Option<String>,
    reason: Option<String>,
}

fn freeze_out(f: Option<Freeze>) -> FreezeOut {
    FreezeOut {
        frozen: f.is_some(),
        frozen_at: f.as_ref().map(|f| format_tokyo(f.frozen_at)),
        source: f.as_ref().map(|f| f.source.clone()),
        actor: f.as_ref().map(|f| f.actor.clone()),
        reason: f.map(|f| f.reason),
    }
}

#[utoipa::path(get, path = "/v1/customers/{id}/freeze", params(("id" = String, Path)),
    responses((status = 200, body = FreezeOut)), security(("api_key" = ["read"])))]
async fn get_freeze(
    State(s): St,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> AppResult<Json<FreezeOut>> {
    s.keys
        .authorize(&s.store, &headers, Scope::Read, now_us())
        .await?;
    Ok(Json(freeze_out(s.store.frozen(&id).await?)))
}

/// A staff action on a customer's withdrawals: the admin key, and the audit note naming the
/// staff member and their reason (`{staff, reason}`; `why`: what the reason must say).
async fn staff_action(
    s: &AppState,
    headers: &HeaderMap,
    id: &str,
    body: &Bytes,
    why: &str,
    action: &str,
    now: i64,
) -> AppResult<(AuditNote, String)> {
    let key = s
        .keys
        .authorize(&s.store, headers, Scope::Admin, now)
        .await?;
    let b: crate::people::RevealIn = json_body(body)?;
    let (staff, reason) = b.checked(why)?;
    Ok((
        AuditNote {
            actor: format!("staff:{staff}"),
            action: action.into(),
            target: format!("customer:{id}"),
            detail: json!({"reason": reason, "apikey": key.key_id}),
        },
        reason.to_owned(),
    ))
}

/// Staff freeze a customer's withdrawals (`{staff, reason}`), audited, with a notice.
#[utoipa::path(put, path = "/v1/customers/{id}/freeze", request_body = crate::people::RevealIn,
    params(("id" = String, Path)),
    responses((status = 201, body = FreezeOut, description = "frozen now"), (status = 200, body = FreezeOut, description = "already frozen: kept as it was")),
    security(("api_key" = ["admin"])))]
async fn put_freeze(
    State(s): St,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> AppResult<Response> {
    let now = now_us();
    let (note, reason) = staff_action(
        &s,
        &headers,
        &id,
        &body,
        "why withdrawals are stopped",
        "withdrawals.freeze",
        now,
    )
    .await?;
    let f = Freeze {
        customer_id: id.clone(),
        frozen_at: now,
        source: "staff".into(),
        actor: note.actor.clone(),
        reason,
    };
    let fresh = s.store.freeze(&f, &note).await?;
    let status = if fresh {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(freeze_out(s.store.frozen(&id).await?))).into_response())
}

/// Staff lift a freeze (`{staff, reason}`), audited.
#[utoipa::path(delete, path = "/v1/customers/{id}/freeze", request_body = crate::people::RevealIn,
    params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = Problem)), security(("api_key" = ["admin"])))]
async fn delete_freeze(
    State(s): St,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> AppResult<StatusCode> {
    let now = now_us();
    let (note, _) = staff_action(
        &s,
        &headers,
        &id,
        &body,
        "why withdrawals may resume",
        "withdrawals.unfreeze",
        now,
    )
    .await?;
    if s.store.unfreeze(&id, now, &note).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Problem::not_found(format!(
            "customer {id:?}'s withdrawals are not frozen"
        )))
    }
}

/// Why a withdrawal is refused before the engine looks at it: the customer's withdrawals are
/// frozen; its destination is held for review, refused, still in its cooling-off period, or not
/// registered when the customer has registered destinations. Empty: nothing stops it here.
pub(crate) async fn withdrawal_blocks(
    s: &AppState,
    e: &mamori_core::event::Event,
) -> AppResult<Vec<crate::app::ReasonOut>> {
    use crate::app::ReasonOut;
    use mamori_store::Destinations;
    let mut out = Vec::new();
    if let Some(f) = s.store.frozen(&e.customer_id).await? {
        out.push(ReasonOut {
            code: "withdrawals_frozen".into(),
            points: 100,
            message_ja: "この口座からの出金は停止されています。".into(),
            message_en: "Withdrawals from this account are stopped.".into(),
            evidence: json!({"since": format_tokyo(f.frozen_at), "source": f.source}),
        });
    }
    if let Some(d) = &e.destination {
        let all = s.store.destinations(&e.customer_id).await?;
        let same = all.iter().find(|r| {
            r.destination.bank_code == d.bank_code
                && r.destination.branch_code == d.branch_code
                && r.destination.account_number == d.account_number
        });
        let masked = mamori_auth::mask::account_number(&d.account_number);
        match same {
            Some(r) if r.status != "effective" => out.push(ReasonOut {
                code: format!("destination_{}", r.status),
                points: 100,
                message_ja: if r.status == "refused" {
                    "出金先口座の登録は認められていません。".into()
                } else {
                    "出金先口座は確認中です。".into()
                },
                message_en: if r.status == "refused" {
                    "The destination account was refused.".into()
                } else {
                    "The destination account is being reviewed.".into()
                },
                evidence: json!({"account_number": masked, "status": r.status,
                                 "registered_at": format_tokyo(r.registered_at)}),
            }),
            Some(r) if r.effective_at.is_some_and(|t| t > e.occurred_at) => {
                let from = r.effective_at.map(format_tokyo);
                out.push(ReasonOut {
                    code: "destination_cooling_off".into(),
                    points: 100,
                    message_ja: "新しい出金先口座へは、登録からしばらくの間出金できません。".into(),
                    message_en:
                        "Withdrawals to a new destination account start after a waiting period."
                            .into(),
                    evidence: json!({"account_number": masked, "effective_at": from}),
                })
            }
            Some(_) => {}
            None if !all.is_empty() => out.push(ReasonOut {
                code: "destination_not_registered".into(),
                points: 100,
                message_ja: "登録されていない口座へは出金できません。".into(),
                message_en: "Withdrawals go only to a registered destination account.".into(),
                evidence: json!({"account_number": masked}),
            }),
            None => {}
        }
    }
    Ok(out)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct NoticesQuery {
    customer: Option<String>,
    /// Only the notices the outbox gave up on.
    #[serde(default)]
    given_up: bool,
    /// At most this many, newest first (default 100, at most 10,000).
    limit: Option<usize>,
}

/// A notice as staff see it (what it says is masked; the address is not shown).
#[derive(Serialize, ToSchema)]
pub struct NoticeOut {
    notice_id: i64,
    customer_id: String,
    kind: String,
    /// `sent`, `waiting`, `failing` or `given_up`.
    state: &'static str,
    created_at: String,
    sent_at: Option<String>,
    attempts: u32,
    last_error: Option<String>,
    next_attempt_at: Option<String>,
    assessment_id: Option<String>,
    #[schema(value_type = Object)]
    detail: Value,
}

pub fn notice_out(n: Notice) -> NoticeOut {
    NoticeOut {
        state: n.state(),
        notice_id: n.notice_id,
        customer_id: n.customer_id,
        kind: n.kind,
        created_at: format_tokyo(n.created_at),
        sent_at: n.sent_at.map(format_tokyo),
        attempts: n.attempts,
        last_error: n.last_error,
        next_attempt_at: n
            .next_attempt_at
            .filter(|_| n.sent_at.is_none())
            .map(format_tokyo),
        assessment_id: n.assessment_id,
        detail: n.detail,
    }
}

#[utoipa::path(get, path = "/v1/notices", params(NoticesQuery),
    responses((status = 200, body = [NoticeOut])), security(("api_key" = ["admin"])))]
async fn get_notices(
    State(s): St,
    headers: HeaderMap,
    Query(q): Query<NoticesQuery>,
) -> AppResult<Json<Vec<NoticeOut>>> {
    s.keys
        .authorize(&s.store, &headers, Scope::Admin, now_us())
        .await?;
    let filter = NoticeFilter {
        customer_id: q.customer,
        given_up: q.given_up,
        limit: q.limit.unwrap_or(100).min(10_000),
    };
    Ok(Json(
        s.store
            .notices(&filter)
            .await?
            .into_iter()
            .map(notice_out)
            .collect(),
    ))
}

#[derive(utoipa::OpenApi)]
#[openapi(
    paths(get_freeze, put_freeze, delete_freeze, get_notices),
    components(schemas(FreezeOut, NoticeOut))
)]
pub struct NoticesDoc;
