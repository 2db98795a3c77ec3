//! Passkeys (WebAuthn) over HTTP as a second factor: registration and authentication, each as
//! an options → finish pair whose state the store keeps between the halves (so any node can
//! finish a ceremony another started) and hands out once (so an answer works once); the list of
//! a customer's passkeys; their removal by the customer (with a step-up) or by staff (audited).
//!
//! A second factor added beside another, or removed by the customer, is an MFA change: it needs
//! a step-up token for operation `mfa_change` with params `{"add": "passkey" | "totp"}` or
//! `{"remove": "<credential id>" | "totp"}`.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use mamori_auth::passkey::{self, PasskeyError, RelyingParty};
use mamori_core::case::Scope;
use mamori_core::time::format_tokyo;
use mamori_store::{AuditNote, PasskeyCeremony, Passkeys, SecondFactors, StepUps, StoredPasskey};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::app::{AppResult, AppState, St, now_us};
use crate::people::{record, refused, staff_and_reason, stepup_refused};
use crate::problem::{Problem, json_body};

/// Passkeys a customer may register.
pub const MAX_PASSKEYS: usize = 10;

/// Longest name of a passkey, in characters.
pub const MAX_NAME_CHARS: usize = 64;

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/customers/{id}/passkeys", get(get_passkeys))
        .route("/v1/customers/{id}/passkeys/register", post(post_register))
        .route(
            "/v1/customers/{id}/passkeys/register/finish",
            post(post_register_finish),
        )
        .route(
            "/v1/customers/{id}/passkeys/challenge",
            post(post_challenge),
        )
        .route("/v1/customers/{id}/passkeys/verify", post(post_verify))
        .route(
            "/v1/customers/{id}/passkeys/{credential_id}",
            axum::routing::delete(delete_passkey),
        )
}

impl AppState {
    fn relying_party(&self) -> AppResult<&RelyingParty> {
        self.passkey_rp.as_deref().map_err(|e| {
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "passkeys-unavailable",
                format!("passkeys are not configured: {e}"),
            )
        })
    }
}

/// A body that may be absent (or empty).
pub(crate) fn optional_body<T: DeserializeOwned + Default>(body: &Bytes) -> AppResult<T> {
    if body.iter().all(u8::is_ascii_whitespace) {
        Ok(T::default())
    } else {
        json_body(body)
    }
}

/// Adding a second factor.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddIn {
    /// Required when the customer already has a second factor: a token from POST
    /// /v1/customers/{id}/stepup for operation `mfa_change` with params `{"add": "passkey"}`
    /// (or `{"add": "totp"}` for an authenticator app).
    pub(crate) stepup_token: Option<String>,
}

/// Removing a second factor: by the customer with a step-up token, or by staff with a reason.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoveIn {
    /// The customer removes it: a token for operation `mfa_change` with params
    /// `{"remove": "<credential id>"}` (`{"remove": "totp"}` for the authenticator app).
    stepup_token: Option<String>,
    /// Staff remove it (admin scope): who…
    staff: Option<String>,
    /// …and why (kept in the audit log).
    reason: Option<String>,
}

/// The browser's answer to a ceremony's options.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AnswerIn {
    /// From the options' response.
    ceremony_id: String,
    /// The `PublicKeyCredential` from `navigator.credentials.get()`, as JSON (base64url fields).
    #[schema(value_type = Object)]
    credential: Value,
}

/// The answer to a registration's options.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterFinishIn {
    ceremony_id: String,
    /// The `PublicKeyCredential` from `navigator.credentials.create()`, as JSON.
    #[schema(value_type = Object)]
    credential: Value,
    /// What the customer calls it ("iPhone"), 1 to 64 characters.
    name: String,
}

/// Requires and consumes a step-up token for an MFA change when `needed`; the token's method.
pub(crate) async fn mfa_change(
    s: &AppState,
    id: &str,
    needed: bool,
    token: Option<&str>,
    params: &Value,
    now: i64,
) -> AppResult<Option<String>> {
    if !needed {
        return Ok(None);
    }
    let Some(token) = token else {
        return Err(refused(
            "stepup-required",
            "stepup_required",
            "二段階認証の設定を変更するには、登録済みの方法で本人確認をしてください。",
            "To change your two-step verification, first confirm it is you with a method you already registered.",
        )
        .with_detail(format!(
            "stepup_token: required (the customer has a second factor): a token for operation mfa_change with params {params}"
        )));
    };
    match s
        .store
        .consume_stepup(
            &mamori_auth::stepup::token_digest(token),
            id,
            "mfa_change",
            &mamori_auth::stepup::params_digest(params),
            now,
        )
        .await?
    {
        Ok(g) => Ok(Some(g.method)),
        Err(why) => Err(stepup_refused(why)),
    }
}

/// Who removes a second factor (`what`: a credential id, or `totp`), and the audit detail: the
/// customer with a step-up token (consumed), or staff with a reason (admin scope).
pub(crate) async fn remover(
    s: &AppState,
    headers: &HeaderMap,
    id: &str,
    b: &RemoveIn,
    what: &str,
    now: i64,
) -> AppResult<(String, Value)> {
    match (&b.stepup_token, &b.staff, &b.reason) {
        (Some(token), None, None) => {
            let key = s
                .keys
                .authorize(&s.store, headers, Scope::Auth, now)
                .await?;
            let method =
                mfa_change(s, id, true, Some(token), &json!({"remove": what}), now).await?;
            Ok((
                format!("customer:{id}"),
                json!({"stepup": method, "apikey": key.key_id}),
            ))
        }
        (None, Some(staff), Some(reason)) => {
            let key = s
                .keys
                .authorize(&s.store, headers, Scope::Admin, now)
                .await?;
            let (staff, reason) = staff_and_reason(staff, reason, "why it is removed")?;
            Ok((
                format!("staff:{staff}"),
                json!({"reason": reason, "apikey": key.key_id}),
            ))
        }
        _ => Err(Problem::unprocessable(
            "send stepup_token (the customer removes it) or staff and reason (staff remove it)",
        )),
    }
}

/// Whether a passkey was registered at or after `since` (a second factor added while another
/// enrolment was under way, which then needs a step-up of its own).
pub(crate) async fn passkey_added_since(s: &AppState, id: &str, since: i64) -> AppResult<bool> {
    Ok(s.store
        .passkeys(id)
        .await?
        .iter()
        .any(|p| p.created_at >= since))
}

/// A new ceremony id: 128 random bits.
fn ceremony_id() -> String {
    use rand::Rng;
    let v: u128 = rand::rng().random();
    format!("pkc_{v:032x}")
}

fn ttl_us() -> i64 {
    passkey::CEREMONY_TTL_SECONDS * 1_000_000
}

fn ceremony_unknown() -> Problem {
    refused(
        "passkey-refused",
        "ceremony_unknown",
        "手続きの有効期限が切れたか、すでに完了しています。最初からやり直してください。",
        "This step expired or was already completed: please start again.",
    )
    .with_detail("ceremony_id: unknown, expired, already finished, or of another customer")
}

fn passkey_refused() -> Problem {
    refused(
        "passkey-refused",
        "passkey_refused",
        "パスキーを確認できませんでした。もう一度お試しください。",
        "The passkey could not be verified: please try again.",
    )
}

/// An answer that is not what a browser sends: 422 naming the field; a failed verification is
/// the caller's to tell.
fn answer_problem(e: PasskeyError) -> Problem {
    match e {
        PasskeyError::Answer { .. } => Problem::unprocessable(e.to_string()),
        other => Problem::internal(other),
    }
}

#[utoipa::path(post, path = "/v1/customers/{id}/passkeys/register", request_body = AddIn,
    params(("id" = String, Path)),
    responses((status = 200, description = "{ceremony_id, options, expires_at}: pass options to navigator.credentials.create(), then finish within 5 minutes", body = Object),
        (status = 403, body = Problem, description = "the customer has a second factor: a step-up token for mfa_change {\"add\": \"passkey\"} is required, or it was refused"),
        (status = 409, body = Problem, description = "too many passkeys"), (status = 404, body = Problem)),
    security(("api_key" = ["auth"])))]
async fn post_register(
    State(s): St,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> AppResult<Json<Value>> {
    let now = now_us();
    s.keys
        .authorize(&s.store, &headers, Scope::Auth, now)
        .await?;
    let b: AddIn = optional_body(&body)?;
    record(&s, &id).await?;
    let rp = s.relying_party()?;
    let existing = s.store.passkeys(&id).await?;
    if existing.len() >= MAX_PASSKEYS {
        return Err(Problem::conflict(format!(
            "the customer has {MAX_PASSKEYS} passkeys, the most allowed: remove one first"
        )));
    }
    let has_totp = s
        .store
        .totp(&id)
        .await?
        .is_some_and(|t| t.confirmed_at.is_some());
    mfa_change(
        &s,
        &id,
        has_totp || !existing.is_empty(),
        b.stepup_token.as_deref(),
        &json!({"add": "passkey"}),
        now,
    )
    .await?;
    let keys: Vec<&str> = existing.iter().map(|p| p.passkey.as_str()).collect();
    let started = rp
        .start_registration(&id, &keys)
        .map_err(Problem::internal)?;
    let c = PasskeyCeremony {
        ceremony_id: ceremony_id(),
        customer_id: id,
        purpose: "register".into(),
        state: started.state,
        created_at: now,
        expires_at: now + ttl_us(),
    };
    s.store.save_ceremony(&c).await?;
    Ok(Json(json!({
        "ceremony_id": c.ceremony_id,
        "options": started.options,
        "expires_at": format_tokyo(c.expires_at),
    })))
}

#[utoipa::path(post, path = "/v1/customers/{id}/passkeys/register/finish", request_body = RegisterFinishIn,
    params(("id" = String, Path)),
    responses((status = 201, description = "{credential_id, name, created_at}: registered", body = Object),
        (status = 403, body = Problem, description = "ceremony_unknown (expired, finished, another customer's) or passkey_refused"),
        (status = 409, body = Problem, description = "the passkey is registered already, or another second factor was added meanwhile"),
        (status = 422, body = Problem)),
    security(("api_key" = ["auth"])))]
async fn post_register_finish(
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
    let b: RegisterFinishIn = json_body(&body)?;
    let name = b.name.trim();
    if name.is_empty()
        || name.chars().count() > MAX_NAME_CHARS
        || name.chars().any(char::is_control)
    {
        return Err(Problem::unprocessable(format!(
            "name: 1 to {MAX_NAME_CHARS} characters, no control characters"
        )));
    }
    let rp = s.relying_party()?;
    let c = s
        .store
        .take_ceremony(&b.ceremony_id, &id, "register", now)
        .await?
        .ok_or_else(ceremony_unknown)?;
    let reg = match rp.finish_registration(&c.state, &b.credential) {
        Ok(r) => r,
        Err(PasskeyError::Refused(_)) => return Err(passkey_refused()),
        Err(e) => return Err(answer_problem(e)),
    };
    // A second factor added since the ceremony began (when none was needed to begin it).
    let totp_since = s
        .store
        .totp(&id)
        .await?
        .and_then(|t| t.confirmed_at)
        .is_some_and(|at| at >= c.created_at);
    if totp_since || passkey_added_since(&s, &id, c.created_at).await? {
        return Err(Problem::conflict(
            "another second factor was added while this registration was under way: register again (with a step-up token)",
        ));
    }
    let p = StoredPasskey {
        customer_id: id.clone(),
        credential_id: reg.credential_id.clone(),
        name: name.to_owned(),
        passkey: reg.passkey,
        counter: reg.counter,
        created_at: now,
        last_used_at: None,
    };
    let note = AuditNote {
        actor: format!("apikey:{}", key.key_id),
        action: "credential.change".into(),
        target: format!("customer:{id}"),
        detail: json!({"credential": "passkey", "change": "enrolled",
                       "credential_id": p.credential_id}),
    };
    if !s.store.add_passkey(&p, &note).await? {
        return Err(Problem::conflict("this passkey is registered already"));
    }
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "credential_id": p.credential_id,
            "name": p.name,
            "created_at": format_tokyo(p.created_at),
        })),
    )
        .into_response())
}

#[utoipa::path(post, path = "/v1/customers/{id}/passkeys/challenge",
    params(("id" = String, Path)),
    responses((status = 200, description = "{ceremony_id, options, expires_at}: pass options to navigator.credentials.get(), then send the answer to …/passkeys/verify or …/stepup within 5 minutes", body = Object),
        (status = 404, body = Problem, description = "the customer has no passkey")),
    security(("api_key" = ["auth"])))]
async fn post_challenge(
    State(s): St,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> AppResult<Json<Value>> {
    let now = now_us();
    s.keys
        .authorize(&s.store, &headers, Scope::Auth, now)
        .await?;
    let rp = s.relying_party()?;
    let keys = s.store.passkeys(&id).await?;
    if keys.is_empty() {
        return Err(Problem::not_found(format!(
            "customer {id:?} has no passkey"
        )));
    }
    let keys: Vec<&str> = keys.iter().map(|p| p.passkey.as_str()).collect();
    let started = rp.start_authentication(&keys).map_err(Problem::internal)?;
    let c = PasskeyCeremony {
        ceremony_id: ceremony_id(),
        customer_id: id,
        purpose: "authenticate".into(),
        state: started.state,
        created_at: now,
        expires_at: now + ttl_us(),
    };
    s.store.save_ceremony(&c).await?;
    Ok(Json(json!({
        "ceremony_id": c.ceremony_id,
        "options": started.options,
        "expires_at": format_tokyo(c.expires_at),
    })))
}

/// Checks a passkey's answer: the ceremony taken (once), the answer verified, the counter
/// stored by compare-and-set (of two requests with one answer, one passes). The credential id
/// that answered, or why not: `ceremony_unknown`, `refused`, `unknown_credential` (removed
/// meanwhile), `counter` (it did not rise: a cloned authenticator, or one answer twice).
pub(crate) async fn check(
    s: &AppState,
    id: &str,
    answer: &AnswerIn,
    now: i64,
) -> AppResult<Result<String, &'static str>> {
    let rp = s.relying_party()?;
    let Some(c) = s
        .store
        .take_ceremony(&answer.ceremony_id, id, "authenticate", now)
        .await?
    else {
        return Ok(Err("ceremony_unknown"));
    };
    let a = match rp.finish_authentication(&c.state, &answer.credential) {
        Ok(a) => a,
        Err(PasskeyError::Refused(_)) => return Ok(Err("refused")),
        Err(e) => return Err(answer_problem(e)),
    };
    let Some(stored) = s
        .store
        .passkeys(id)
        .await?
        .into_iter()
        .find(|p| p.credential_id == a.credential_id)
    else {
        return Ok(Err("unknown_credential"));
    };
    let updated = passkey::updated_passkey(&stored.passkey, &a).map_err(Problem::internal)?;
    if !s
        .store
        .use_passkey(id, &a.credential_id, &updated, a.counter, now)
        .await?
    {
        tracing::warn!(
            "a passkey's signature counter did not rise: a cloned authenticator, or one answer used twice"
        );
        return Ok(Err("counter"));
    }
    Ok(Ok(a.credential_id))
}

#[utoipa::path(post, path = "/v1/customers/{id}/passkeys/verify", request_body = AnswerIn,
    params(("id" = String, Path)),
    responses((status = 200, description = "{valid: true, method: \"passkey\", credential_id} or {valid: false, reason: ceremony_unknown | refused | unknown_credential | counter}", body = Object),
        (status = 422, body = Problem, description = "credential is not a WebAuthn answer")),
    security(("api_key" = ["auth"])))]
async fn post_verify(
    State(s): St,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> AppResult<Json<Value>> {
    let now = now_us();
    s.keys
        .authorize(&s.store, &headers, Scope::Auth, now)
        .await?;
    let b: AnswerIn = json_body(&body)?;
    Ok(Json(match check(&s, &id, &b, now).await? {
        Ok(cred) => json!({"valid": true, "method": "passkey", "credential_id": cred}),
        Err(reason) => json!({"valid": false, "reason": reason}),
    }))
}

#[utoipa::path(get, path = "/v1/customers/{id}/passkeys",
    params(("id" = String, Path)),
    responses((status = 200, description = "{passkeys: [{credential_id, name, created_at, last_used_at}]} (Asia/Tokyo times)", body = Object)),
    security(("api_key" = ["auth"])))]
async fn get_passkeys(
    State(s): St,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> AppResult<Json<Value>> {
    s.keys
        .authorize(&s.store, &headers, Scope::Auth, now_us())
        .await?;
    let all = s.store.passkeys(&id).await?;
    Ok(Json(json!({"passkeys": all.iter().map(|p| json!({
        "credential_id": p.credential_id,
        "name": p.name,
        "created_at": format_tokyo(p.created_at),
        "last_used_at": p.last_used_at.map(format_tokyo),
    })).collect::<Vec<_>>()})))
}

#[utoipa::path(delete, path = "/v1/customers/{id}/passkeys/{credential_id}", request_body = RemoveIn,
    params(("id" = String, Path), ("credential_id" = String, Path)),
    responses((status = 204), (status = 403, body = Problem, description = "the step-up token is refused"),
        (status = 404, body = Problem), (status = 422, body = Problem)),
    security(("api_key" = ["auth"]), ("api_key" = ["admin"])))]
async fn delete_passkey(
    State(s): St,
    headers: HeaderMap,
    Path((id, credential_id)): Path<(String, String)>,
    body: Bytes,
) -> AppResult<StatusCode> {
    let now = now_us();
    s.keys
        .authorize(&s.store, &headers, Scope::Auth, now)
        .await?;
    let b: RemoveIn = json_body(&body)?;
    let not_found = || Problem::not_found(format!("customer {id:?} has no such passkey"));
    if !s
        .store
        .passkeys(&id)
        .await?
        .iter()
        .any(|p| p.credential_id == credential_id)
    {
        return Err(not_found());
    }
    let (actor, mut detail) = remover(&s, &headers, &id, &b, &credential_id, now).await?;
    detail["credential"] = json!("passkey");
    detail["change"] = json!("removed");
    detail["credential_id"] = json!(credential_id);
    let note = AuditNote {
        actor,
        action: "credential.change".into(),
        target: format!("customer:{id}"),
        detail,
    };
    if s.store
        .remove_passkey(&id, &credential_id, now, &note)
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found())
    }
}

#[derive(utoipa::OpenApi)]
#[openapi(
    paths(
        post_register,
        post_register_finish,
        post_challenge,
        post_verify,
        get_passkeys,
        delete_passkey
    ),
    components(schemas(AddIn, RemoveIn, AnswerIn, RegisterFinishIn))
)]
pub struct PasskeysDoc;
