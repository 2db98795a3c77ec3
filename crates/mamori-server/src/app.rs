//! The HTTP API: state, routes and handlers.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use mamori_core::assess::{Attempt, Policy, Population};
use mamori_core::case::{AlertStatus, Outcome, Resolution, Scope};
use mamori_core::event::Event;
use mamori_core::history::profile;
use mamori_core::net::{ip_key, key_ip, parse_ip_or_net, prefix_net};
use mamori_core::parse::{parse_json_line, quick_json_line};
use mamori_core::time::{DAY_US, MINUTE_US, format_tokyo, parse_bound};
use mamori_core::verdict::IpIntel;
use mamori_store::Policies as _;
use mamori_store::assess::{add_logins, population_from, tokyo_day_start};
use mamori_store::{
    Alert, AssessmentRecord, AuditNote, CaseError, DecisionLog, EventWriter, HistoryReader, Store,
};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::Mutex as AsyncMutex;
use utoipa::{OpenApi, ToSchema};

use crate::auth::Keys;
use crate::config::Server;
use crate::problem::{Problem, json_body};

/// Everything the handlers share.
pub struct AppState {
    pub store: Store,
    /// The policy in effect: the configuration's until one is set in the store.
    pub(crate) policy: PolicyBoard,
    pub intel: Arc<dyn IpIntel>,
    pub server: Server,
    pub keys: Keys,
    pub metrics: Option<PrometheusHandle>,
    /// Customers' password policies and hashing costs.
    pub passwords: crate::config::Passwords,
    pub bad_passwords: Arc<mamori_auth::password::BadPasswords>,
    pub mfa: crate::config::Mfa,
    /// The passkeys' relying party, made from `mfa` (`Err`: what is wrong with its settings).
    pub(crate) passkey_rp: Result<Arc<mamori_auth::passkey::RelyingParty>, String>,
    pub(crate) switches: crate::people::SwitchBoard,
    pub destinations: crate::config::DestinationRules,
    pub friction: crate::config::Friction,
    pub mail: crate::mail::Mail,
    /// Populations by the start of their Tokyo day (the few used last).
    populations: std::sync::Mutex<Populations>,
    /// One population computed at a time.
    computing: AsyncMutex<()>,
    /// The next day's population, prepared before the day starts.
    ahead: std::sync::Mutex<Option<Ahead>>,
    ready: AtomicBool,
    /// Assessments waiting for the recorder task (group commit).
    recorder: tokio::sync::mpsc::Sender<Pending>,
}

/// An assessment to record, and where its result goes.
type Pending = (
    AssessmentRecord,
    tokio::sync::oneshot::Sender<Result<Option<i64>, CaseError>>,
);

/// Assessments recorded in one transaction at most.
const GROUP: usize = 256;

/// Records assessments as they come, all those waiting at once: under load each call carries
/// many, and none waits for a timer. A store that gains from it takes several groups at once
/// ([`EventWriter::parallel_batches`]: PostgreSQL); SQLite takes one at a time.
async fn recorder(store: Store, mut rx: tokio::sync::mpsc::Receiver<Pending>) {
    let lanes = Arc::new(tokio::sync::Semaphore::new(store.parallel_batches().max(1)));
    let mut batch: Vec<Pending> = Vec::with_capacity(GROUP);
    loop {
        let Ok(lane) = lanes.clone().acquire_owned().await else {
            break;
        };
        if rx.recv_many(&mut batch, GROUP).await == 0 {
            break;
        }
        let (recs, replies): (Vec<AssessmentRecord>, Vec<_>) = batch.drain(..).unzip();
        let store = store.clone();
        tokio::spawn(async move {
            record_group(&store, recs, replies).await;
            drop(lane);
        });
    }
}

async fn record_group(
    store: &Store,
    recs: Vec<AssessmentRecord>,
    replies: Vec<tokio::sync::oneshot::Sender<Result<Option<i64>, CaseError>>>,
) {
    match store.record_assessments(&recs).await {
        Ok(results) => {
            for (reply, r) in replies.into_iter().zip(results) {
                let _ = reply.send(r);
            }
        }
        Err(e) => {
            tracing::error!(error = %e, records = recs.len(), "recording assessments failed");
            for reply in replies {
                let _ = reply.send(Err(CaseError::Store(mamori_store::StoreError::Task(
                    e.to_string(),
                ))));
            }
        }
    }
}

/// The policy in effect on this node, as it last read it: the configuration's (`[policy]`) until a
/// revision is set in the store (`mamori policy set`), then the latest revision. Every node reads
/// the revision number again at least every [`POLICY_TTL`], so a change reaches every node on the
/// store within a second.
pub(crate) struct PolicyBoard {
    configured: Arc<Policy>,
    state: std::sync::Mutex<PolicyState>,
}

struct PolicyState {
    checked: Option<Instant>,
    revision: Option<i64>,
    policy: Arc<Policy>,
}

/// How long a node trusts its copy of the policy.
pub const POLICY_TTL: std::time::Duration = std::time::Duration::from_millis(500);

impl PolicyBoard {
    fn new(configured: Policy) -> Self {
        let configured = Arc::new(configured);
        PolicyBoard {
            state: std::sync::Mutex::new(PolicyState {
                checked: None,
                revision: None,
                policy: configured.clone(),
            }),
            configured,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PolicyState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Parses a stored revision's TOML and checks it as the configuration's `[policy]` is checked.
pub fn parse_stored_policy(body: &str) -> Result<Policy, String> {
    let p: Policy = toml::from_str(body).map_err(|e| e.message().trim_end().to_owned())?;
    p.validate()?;
    Ok(p)
}

impl AppState {
    /// The policy in effect, read again from the store when this node's copy is older than
    /// [`POLICY_TTL`]. A store that cannot be read, or a revision that does not parse, keeps the
    /// copy (and says so in the log).
    pub async fn policy(&self) -> Arc<Policy> {
        self.policy_and_revision().await.1
    }

    /// The policy in effect and its revision (`None`: the configuration's).
    pub async fn policy_and_revision(&self) -> (Option<i64>, Arc<Policy>) {
        let held = {
            let st = self.policy.lock();
            if st.checked.is_some_and(|at| at.elapsed() < POLICY_TTL) {
                return (st.revision, st.policy.clone());
            }
            st.revision
        };
        let loaded = match self.store.policy_revision().await {
            Ok(latest) if latest == held => None,
            Ok(_) => match self.store.policy().await {
                Ok(Some(stored)) => match parse_stored_policy(&stored.body) {
                    Ok(p) => Some((Some(stored.revision), Arc::new(p))),
                    Err(e) => {
                        tracing::error!(revision = stored.revision, error = %e, "the stored policy does not parse; keeping this node's copy");
                        None
                    }
                },
                Ok(None) => Some((None, self.policy.configured.clone())),
                Err(e) => {
                    tracing::warn!(error = %e, "reading the policy failed; keeping this node's copy");
                    None
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "reading the policy revision failed; keeping this node's copy");
                None
            }
        };
        let mut st = self.policy.lock();
        st.checked = Some(Instant::now());
        if let Some((revision, policy)) = loaded
            && st.revision != revision
        {
            tracing::info!(revision = ?revision, "policy changed");
            st.revision = revision;
            st.policy = policy;
            // Populations were computed with the old policy.
            self.populations
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clear();
        }
        (st.revision, st.policy.clone())
    }
}

/// How long before a Tokyo day starts `mamori serve` prepares its population
/// ([`AppState::prepare_population`]).
pub const PREPARE_AHEAD_US: i64 = 10 * MINUTE_US;

/// A day's population computed before the day started, from the logins stored before `upto`.
struct Ahead {
    day: i64,
    upto: i64,
    /// The policy revision it was computed with.
    revision: Option<i64>,
    population: Population,
}

/// The populations of the days used last (attempts of today, and of past days when events are
/// replayed or sent late). The day used longest ago is forgotten first, never the one just
/// computed: keeping the newest days instead made every attempt of an older day compute its
/// population again (0.3 to 0.8 s each, one at a time) when newer days were held.
#[derive(Default)]
struct Populations {
    days: HashMap<i64, (Arc<Population>, u64)>,
    uses: u64,
}

impl Populations {
    /// Days kept.
    const KEEP: usize = 4;

    fn get(&mut self, day: i64) -> Option<Arc<Population>> {
        self.uses += 1;
        let (p, used) = self.days.get_mut(&day)?;
        *used = self.uses;
        Some(p.clone())
    }

    fn insert(&mut self, day: i64, p: Arc<Population>) {
        self.uses += 1;
        self.days.insert(day, (p, self.uses));
        while self.days.len() > Self::KEEP {
            let Some(old) = self
                .days
                .iter()
                .min_by_key(|(_, (_, u))| *u)
                .map(|(d, _)| *d)
            else {
                break;
            };
            self.days.remove(&old);
        }
    }

    fn clear(&mut self) {
        self.days.clear();
    }
}

/// UTC microseconds now.
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

impl AppState {
    pub fn new(
        store: impl Into<Store>,
        policy: Policy,
        intel: Arc<dyn IpIntel>,
        server: Server,
        metrics: Option<PrometheusHandle>,
    ) -> Self {
        // The recorder runs on the caller's runtime; it ends when the state is dropped.
        let store = store.into();
        let (tx, rx) = tokio::sync::mpsc::channel(4 * GROUP);
        tokio::spawn(recorder(store.clone(), rx));
        AppState {
            recorder: tx,
            store,
            policy: PolicyBoard::new(policy),
            intel,
            server,
            keys: Keys::default(),
            metrics,
            passwords: Default::default(),
            bad_passwords: Arc::new(mamori_auth::password::BadPasswords::builtin()),
            mfa: Default::default(),
            passkey_rp: crate::config::Mfa::default().relying_party().map(Arc::new),
            switches: Default::default(),
            destinations: Default::default(),
            friction: Default::default(),
            mail: Default::default(),
            populations: Default::default(),
            computing: AsyncMutex::new(()),
            ahead: Default::default(),
            ready: AtomicBool::new(false),
        }
    }

    /// With these password settings (the configuration's `[password]`).
    pub fn with_passwords(
        mut self,
        passwords: crate::config::Passwords,
        bad: mamori_auth::password::BadPasswords,
    ) -> Self {
        self.passwords = passwords;
        self.bad_passwords = Arc::new(bad);
        self
    }

    /// With these destination rules (the configuration's `[destinations]`).
    pub fn with_destinations(mut self, d: crate::config::DestinationRules) -> Self {
        self.destinations = d;
        self
    }

    /// With this friction per decision (the configuration's `[friction]`).
    pub fn with_friction(mut self, f: crate::config::Friction) -> Self {
        self.friction = f;
        self
    }

    /// With these notice settings (the configuration's `[mail]`).
    pub fn with_mail(mut self, mail: crate::mail::Mail) -> Self {
        self.mail = mail;
        self
    }

    /// With these second-factor settings (the configuration's `[mfa]`).
    pub fn with_mfa(mut self, mfa: crate::config::Mfa) -> Self {
        self.passkey_rp = mfa.relying_party().map(Arc::new);
        self.mfa = mfa;
        self
    }

    /// The population for attempts at `t`: computed once per Tokyo day and kept while it is one
    /// of the [`Populations::KEEP`] days used last.
    pub async fn population(&self, t: i64) -> Result<Arc<Population>, Problem> {
        let day = tokyo_day_start(t);
        let cached = || {
            self.populations
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(day)
        };
        if let Some(p) = cached() {
            return Ok(p);
        }
        let _one = self.computing.lock().await;
        if let Some(p) = cached() {
            return Ok(p);
        }
        let started = Instant::now();
        let (revision, policy) = self.policy_and_revision().await;
        let ahead = self
            .ahead
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take_if(|a| a.day == day && a.revision == revision);
        // Prepared before the day: only the logins since.
        let (mut p, from) = match ahead {
            Some(a) => (a.population, a.upto),
            None => (Population::default(), population_from(day, &policy)),
        };
        add_logins(&self.store, &mut p, from, day, self.intel.as_ref()).await?;
        let p = Arc::new(p);
        tracing::info!(
            day = %format_tokyo(day),
            logins = p.logins,
            seconds = started.elapsed().as_secs_f64(),
            "population of the day computed"
        );
        self.populations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(day, p.clone());
        Ok(p)
    }

    /// Computes ahead the population of the Tokyo day starting at `day` from the logins before
    /// `upto` (now, minutes before the day starts): the day's first attempts then wait only
    /// for the logins after `upto` to be added, not for the whole window (at 1,000,000
    /// customers, seconds during which every attempt waits). Logins stored after this, dated
    /// before `upto`, are not counted, as logins stored after a day's population was computed
    /// never were. A policy revision in between makes the day compute it whole.
    pub async fn prepare_population(&self, day: i64, upto: i64) -> Result<(), Problem> {
        let started = Instant::now();
        let (revision, policy) = self.policy_and_revision().await;
        let upto = upto.min(day);
        let mut population = Population::default();
        let from = population_from(day, &policy);
        add_logins(
            &self.store,
            &mut population,
            from,
            upto,
            self.intel.as_ref(),
        )
        .await?;
        tracing::info!(
            day = %format_tokyo(day),
            logins = population.logins,
            seconds = started.elapsed().as_secs_f64(),
            "population of the next day prepared"
        );
        *self.ahead.lock().unwrap_or_else(|p| p.into_inner()) = Some(Ahead {
            day,
            upto,
            revision,
            population,
        });
        Ok(())
    }

    /// Prepares today's population and the hot cache; the server is ready after them.
    pub async fn warm_up(&self) -> Result<(), Problem> {
        self.population(now_us()).await?;
        if self.server.preload_days > 0 {
            let started = Instant::now();
            let policy = self.policy().await;
            self.store
                .preload_hot(i64::from(self.server.preload_days), &policy)
                .await?;
            if let Some(h) = self.store.hot_stats() {
                tracing::info!(
                    customers = h.customers,
                    events = h.rows,
                    ips = h.ips,
                    ip_uses = h.ip_rows,
                    seconds = started.elapsed().as_secs_f64(),
                    "hot cache preloaded"
                );
            }
        }
        self.ready.store(true, Ordering::SeqCst);
        Ok(())
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// Records an assessment through the group-commit recorder.
    pub async fn record(&self, rec: AssessmentRecord) -> Result<Option<i64>, CaseError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let gone = || {
            CaseError::Store(mamori_store::StoreError::Task(
                "the recorder stopped".into(),
            ))
        };
        self.recorder.send((rec, tx)).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }
}

pub(crate) type AppResult<T> = Result<T, Problem>;
pub(crate) type St = State<Arc<AppState>>;

/// The routes.
pub fn router(state: Arc<AppState>) -> Router {
    let timeout = std::time::Duration::from_millis(state.server.request_timeout_ms);
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .route("/v1/events", post(post_events))
        .route("/v1/assess", post(post_assess))
        .route("/v1/assessments/{id}", get(get_assessment))
        .route("/v1/assessments/{id}/outcome", post(post_outcome))
        .route("/v1/alerts", get(get_alerts))
        .route("/v1/alerts/{id}", get(get_alert))
        .route("/v1/alerts/{id}/resolve", post(post_resolve))
        .route("/v1/customers/{id}/history", get(get_history))
        .route("/v1/ips/{ip}", get(get_ip))
        .merge(crate::people::routes())
        .merge(crate::notices::routes())
        .fallback(|| async { Problem::not_found("no such route; see /openapi.json") })
        .layer(axum::middleware::from_fn(observe))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            timeout,
        ))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(
            state.server.max_body_bytes,
        ))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            |_: Box<dyn std::any::Any + Send>| {
                Problem::internal("a handler panicked").into_response()
            },
        ))
        .with_state(state)
}

/// Metrics and a log line per request (method, route, status, time; never bodies).
async fn observe(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().as_str().to_owned();
    let response = next.run(req).await;
    let status = response.status().as_u16();
    let seconds = started.elapsed().as_secs_f64();
    let labels = [
        ("route", route.clone()),
        ("method", method.clone()),
        ("status", status.to_string()),
    ];
    metrics::counter!("mamori_http_requests_total", &labels).increment(1);
    metrics::histogram!("mamori_http_request_duration_seconds", "route" => route.clone(), "method" => method.clone())
        .record(seconds);
    if status >= 500 {
        tracing::warn!(%method, %route, status, seconds, "request failed");
    } else {
        tracing::debug!(%method, %route, status, seconds, "request");
    }
    response
}

async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(s): St) -> Response {
    let store_ok = s.store.count_events().await.is_ok();
    if store_ok && s.is_ready() {
        Json(json!({"status": "ready"})).into_response()
    } else {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not-ready",
            if store_ok {
                "warming up: computing the population's login habits"
            } else {
                "the store does not answer"
            },
        )
        .into_response()
    }
}

async fn metrics(State(s): St) -> Response {
    if let Some(h) = s.store.hot_stats() {
        metrics::gauge!("mamori_hot_customers").set(h.customers as f64);
        metrics::gauge!("mamori_hot_events").set(h.rows as f64);
        metrics::gauge!("mamori_hot_ips").set(h.ips as f64);
        metrics::gauge!("mamori_hot_ip_uses").set(h.ip_rows as f64);
        metrics::counter!("mamori_hot_hits_total").absolute(h.hits);
        metrics::counter!("mamori_hot_misses_total").absolute(h.misses);
        metrics::counter!("mamori_hot_cleared_total").absolute(h.cleared);
    }
    match &s.metrics {
        Some(h) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4",
            )],
            h.render(),
        )
            .into_response(),
        None => Problem::not_found("metrics are not enabled in this process").into_response(),
    }
}

async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    let mut doc = ApiDoc::openapi();
    doc.merge(crate::notices::NoticesDoc::openapi());
    doc.merge(crate::people::PeopleDoc::openapi());
    doc.merge(crate::passkeys::PasskeysDoc::openapi());
    Json(doc)
}

/// A batch of events in the event contract.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventBatch {
    /// At most `server.max_batch` events.
    #[schema(value_type = Vec<Object>)]
    events: Vec<Box<serde_json::value::RawValue>>,
}

/// A refused item of a batch.
#[derive(Serialize, ToSchema)]
pub struct Rejected {
    /// Position in the batch, from 0.
    index: usize,
    event_id: Option<String>,
    error: String,
}

/// What a batch did.
#[derive(Serialize, ToSchema)]
pub struct EventsResult {
    accepted: u64,
    duplicates: u64,
    rejected: Vec<Rejected>,
}

/// Stores a batch of events, idempotently by (customer_id, event_id).
#[utoipa::path(post, path = "/v1/events", request_body = EventBatch,
    responses((status = 200, body = EventsResult), (status = 422, body = Problem)),
    security(("api_key" = ["ingest"])))]
async fn post_events(
    State(s): St,
    headers: HeaderMap,
    body: Bytes,
) -> AppResult<Json<EventsResult>> {
    s.keys
        .authorize(&s.store, &headers, Scope::Ingest, now_us())
        .await?;
    let batch: EventBatch = json_body(&body)?;
    if batch.events.len() > s.server.max_batch {
        return Err(Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "batch-too-large",
            format!(
                "{} events in one batch; at most {} (server.max_batch)",
                batch.events.len(),
                s.server.max_batch
            ),
        ));
    }
    let mut good = Vec::with_capacity(batch.events.len());
    let mut rejected = Vec::new();
    for (index, raw) in batch.events.iter().enumerate() {
        match parse_json_line(raw.get()) {
            Ok(e) => good.push(e),
            Err(e) => rejected.push(Rejected {
                index,
                event_id: serde_json::from_str::<Value>(raw.get())
                    .ok()
                    .and_then(|v| v.get("event_id")?.as_str().map(str::to_owned)),
                error: e.to_string(),
            }),
        }
    }
    let ins = s.store.insert_events(&good).await?;
    metrics::counter!("mamori_events_ingested_total").increment(ins.inserted);
    Ok(Json(EventsResult {
        accepted: ins.inserted,
        duplicates: ins.duplicates,
        rejected,
    }))
}

/// One reason of a decision.
#[derive(Serialize, ToSchema)]
pub struct ReasonOut {
    pub(crate) code: String,
    pub(crate) points: u8,
    pub(crate) message_ja: String,
    pub(crate) message_en: String,
    #[schema(value_type = Object)]
    pub(crate) evidence: Value,
}

/// The decision on an attempt.
#[derive(Serialize, ToSchema)]
pub struct AssessResult {
    assessment_id: String,
    /// allow, challenge, hold or block.
    decision: String,
    /// 0–100.
    score: u8,
    reasons: Vec<ReasonOut>,
    /// The alert a hold or block opened.
    alert_id: Option<i64>,
    /// What the customer must do: proceed, second_factor (then POST /v1/customers/{id}/stepup),
    /// review (staff look first) or refuse (`[friction]` in the configuration).
    next: &'static str,
}

pub(crate) fn assessment_id() -> String {
    use rand::Rng;
    let b: [u8; 16] = rand::rng().random();
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// Assesses an attempt for its customer, point-in-time at its `occurred_at`.
pub async fn decide(s: &AppState, e: &Event) -> AppResult<mamori_core::assess::Assessment> {
    let pop = s.population(e.occurred_at).await?;
    let policy = s.policy().await;
    Ok(mamori_store::assess::assess_attempt(
        &s.store,
        &e.customer_id,
        &Attempt::of(e),
        &pop,
        s.intel.as_ref(),
        &policy,
    )
    .await?)
}

pub(crate) fn reasons_json(a: &mamori_core::assess::Assessment) -> Vec<ReasonOut> {
    a.reasons
        .iter()
        .map(|r| ReasonOut {
            code: r.code.to_owned(),
            points: r.points,
            message_ja: r.message_ja.to_owned(),
            message_en: r.message_en.to_owned(),
            evidence: r.evidence.clone(),
        })
        .collect()
}

/// Decides on an event about to happen: allow, challenge, hold or block, with reasons. The
/// attempt is recorded with its decision; an allowed one joins the customer's history at once,
/// a challenged or held one when its outcome says it happened, a blocked one never.
#[utoipa::path(post, path = "/v1/assess",
    request_body(content = Object, description = "An event in the event contract; occurred_at defaults to now"),
    responses((status = 200, body = AssessResult), (status = 422, body = Problem)),
    security(("api_key" = ["assess"])))]
async fn post_assess(
    State(s): St,
    headers: HeaderMap,
    body: Bytes,
) -> AppResult<Json<AssessResult>> {
    let now = now_us();
    s.keys
        .authorize(&s.store, &headers, Scope::Assess, now)
        .await?;
    // The common body (every field of the contract, `occurred_at` included, plainly written)
    // is read once; anything else goes through a JSON object, which gets `occurred_at` = now
    // when it has none.
    let e = match std::str::from_utf8(&body).ok().and_then(quick_json_line) {
        Some(v) => v.to_event(),
        None => {
            let mut v: serde_json::Map<String, Value> = json_body(&body)?;
            v.entry("occurred_at")
                .or_insert_with(|| Value::String(format_tokyo(now)));
            parse_json_line(&Value::Object(v).to_string())
                .map_err(|e| Problem::unprocessable(e.to_string()))?
        }
    };
    // A procedure switched off on its channel is refused before the engine: blocked, with no
    // assessment kept and no alert (during a takeover wave every honest attempt would open one).
    if let Some(sw) = s.switched_off(e.kind, e.channel).await? {
        metrics::counter!("mamori_switched_off_total", "kind" => e.kind.as_str()).increment(1);
        return Ok(Json(AssessResult {
            assessment_id: assessment_id(),
            decision: mamori_core::assess::Decision::Block.as_str().to_owned(),
            score: 100,
            reasons: vec![ReasonOut {
                code: "procedure_switched_off".into(),
                points: 100,
                message_ja: crate::people::SWITCHED_OFF_JA.into(),
                message_en: crate::people::SWITCHED_OFF_EN.into(),
                evidence: json!({"procedure": sw.procedure.as_str(), "channel": sw.channel.as_str(),
                                 "since": format_tokyo(sw.changed_at), "reason": sw.reason,
                                 "instead": ["support_center", "paper"]}),
            }],
            alert_id: None,
            next: "refuse",
        }));
    }
    // A withdrawal the customer's account or its destination does not allow is blocked before
    // the engine, and recorded with an alert: these are signals for staff.
    if e.kind == mamori_core::event::Kind::Withdrawal {
        let reasons = crate::notices::withdrawal_blocks(&s, &e).await?;
        if !reasons.is_empty() {
            let id = assessment_id();
            let decision = mamori_core::assess::Decision::Block;
            let rec = AssessmentRecord {
                assessment_id: id.clone(),
                created_at: now,
                event: e.clone(),
                decision,
                score: 100,
                reasons: serde_json::to_value(&reasons).unwrap_or(Value::Null),
                outcome: None,
                outcome_at: None,
            };
            let alert_id = s.record(rec).await.map_err(case_problem)?;
            for r in &reasons {
                metrics::counter!("mamori_decision_reasons_total", "code" => r.code.clone())
                    .increment(1);
            }
            metrics::counter!("mamori_decisions_total", "decision" => decision.as_str(), "kind" => e.kind.as_str())
                .increment(1);
            return Ok(Json(AssessResult {
                assessment_id: id,
                decision: decision.as_str().to_owned(),
                score: 100,
                reasons,
                alert_id,
                next: "refuse",
            }));
        }
    }
    let started = Instant::now();
    let a = decide(&s, &e).await?;
    let decided = started.elapsed();
    let id = assessment_id();
    let reasons = reasons_json(&a);
    let rec = AssessmentRecord {
        assessment_id: id.clone(),
        created_at: now,
        event: e.clone(),
        decision: a.decision,
        score: a.score,
        reasons: serde_json::to_value(&reasons).unwrap_or(Value::Null),
        outcome: None,
        outcome_at: None,
    };
    let alert_id = s.record(rec).await.map_err(case_problem)?;
    tracing::debug!(
        decide_us = decided.as_micros() as u64,
        record_us = (started.elapsed() - decided).as_micros() as u64,
        "assessed"
    );
    metrics::counter!("mamori_decisions_total", "decision" => a.decision.as_str(), "kind" => e.kind.as_str())
        .increment(1);
    for r in &a.reasons {
        metrics::counter!("mamori_decision_reasons_total", "code" => r.code).increment(1);
    }
    Ok(Json(AssessResult {
        assessment_id: id,
        decision: a.decision.as_str().to_owned(),
        score: a.score,
        reasons,
        alert_id,
        next: s.friction.next(e.kind, a.decision),
    }))
}

pub(crate) fn case_problem(e: CaseError) -> Problem {
    match e {
        CaseError::NoAssessment(_) | CaseError::NoAlert(_) => Problem::not_found(e.to_string()),
        CaseError::DuplicateAssessment(_) | CaseError::AlreadyResolved(_) => {
            Problem::conflict(e.to_string())
        }
        CaseError::Outcome(_) => Problem::conflict(e.to_string()),
        CaseError::Store(e) => Problem::internal(e),
    }
}

/// An assessment as the API shows it.
#[derive(Serialize, ToSchema)]
pub struct AssessmentOut {
    assessment_id: String,
    created_at: String,
    customer_id: String,
    event_id: String,
    kind: String,
    channel: String,
    ip: Option<String>,
    occurred_at: String,
    decision: String,
    score: u8,
    #[schema(value_type = Vec<Object>)]
    reasons: Value,
    outcome: Option<String>,
    outcome_at: Option<String>,
}

fn assessment_out(r: &AssessmentRecord) -> AssessmentOut {
    AssessmentOut {
        assessment_id: r.assessment_id.clone(),
        created_at: format_tokyo(r.created_at),
        customer_id: r.event.customer_id.clone(),
        event_id: r.event.event_id.clone(),
        kind: r.event.kind.as_str().to_owned(),
        channel: r.event.channel.as_str().to_owned(),
        ip: r.event.ip.map(|i| i.to_string()),
        occurred_at: format_tokyo(r.event.occurred_at),
        decision: r.decision.as_str().to_owned(),
        score: r.score,
        reasons: r.reasons.clone(),
        outcome: r.outcome.map(|o| o.as_str().to_owned()),
        outcome_at: r.outcome_at.map(format_tokyo),
    }
}

#[utoipa::path(get, path = "/v1/assessments/{id}",
    responses((status = 200, body = AssessmentOut), (status = 404, body = Problem)),
    security(("api_key" = ["read"])))]
async fn get_assessment(
    State(s): St,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> AppResult<Json<AssessmentOut>> {
    s.keys
        .authorize(&s.store, &headers, Scope::Read, now_us())
        .await?;
    let r = s
        .store
        .assessment(&id)
        .await?
        .ok_or_else(|| Problem::not_found(format!("no assessment {id}")))?;
    Ok(Json(assessment_out(&r)))
}

/// What happened after an assessment.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OutcomeIn {
    /// challenge_passed, challenge_failed, completed or abandoned.
    outcome: String,
}

#[derive(Serialize, ToSchema)]
pub struct OutcomeResult {
    assessment_id: String,
    outcome: String,
    /// The alert a failed challenge opened.
    alert_id: Option<i64>,
}

#[utoipa::path(post, path = "/v1/assessments/{id}/outcome", request_body = OutcomeIn,
    responses((status = 200, body = OutcomeResult), (status = 404, body = Problem), (status = 409, body = Problem)),
    security(("api_key" = ["assess"])))]
async fn post_outcome(
    State(s): St,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> AppResult<Json<OutcomeResult>> {
    let now = now_us();
    s.keys
        .authorize(&s.store, &headers, Scope::Assess, now)
        .await?;
    let o: OutcomeIn = json_body(&body)?;
    let outcome: Outcome = o
        .outcome
        .parse()
        .map_err(|e: String| Problem::unprocessable(format!("outcome: {e}")))?;
    let alert_id = s
        .store
        .record_outcome(&id, outcome, now)
        .await
        .map_err(case_problem)?;
    Ok(Json(OutcomeResult {
        assessment_id: id,
        outcome: outcome.as_str().to_owned(),
        alert_id,
    }))
}

/// An alert.
#[derive(Serialize, ToSchema)]
pub struct AlertOut {
    alert_id: i64,
    opened_at: String,
    /// hold, block, challenge_failed or customer_report.
    trigger: String,
    /// open or resolved.
    status: String,
    resolution: Option<String>,
    note: Option<String>,
    resolved_by: Option<String>,
    resolved_at: Option<String>,
    assessment: AssessmentOut,
}

fn alert_out(a: &Alert) -> AlertOut {
    AlertOut {
        alert_id: a.alert_id,
        opened_at: format_tokyo(a.opened_at),
        trigger: a.trigger.as_str().to_owned(),
        status: a.status.as_str().to_owned(),
        resolution: a.resolution.map(|r| r.as_str().to_owned()),
        note: a.note.clone(),
        resolved_by: a.resolved_by.clone(),
        resolved_at: a.resolved_at.map(format_tokyo),
        assessment: assessment_out(&a.assessment),
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AlertsQuery {
    /// open or resolved (default: both).
    status: Option<String>,
    /// At most this many, newest first (default 100).
    limit: Option<usize>,
}

#[utoipa::path(get, path = "/v1/alerts", params(AlertsQuery),
    responses((status = 200, body = Vec<AlertOut>)),
    security(("api_key" = ["read"])))]
async fn get_alerts(
    State(s): St,
    headers: HeaderMap,
    q: Result<Query<AlertsQuery>, axum::extract::rejection::QueryRejection>,
) -> AppResult<Json<Vec<AlertOut>>> {
    s.keys
        .authorize(&s.store, &headers, Scope::Read, now_us())
        .await?;
    let Query(q) = q.map_err(|e| Problem::bad_request(e.body_text()))?;
    let status = q
        .status
        .as_deref()
        .map(str::parse::<AlertStatus>)
        .transpose()
        .map_err(|e| Problem::bad_request(format!("status: {e}")))?;
    let alerts = s.store.alerts(status, q.limit.unwrap_or(100)).await?;
    Ok(Json(alerts.iter().map(alert_out).collect()))
}

fn alert_id(text: &str) -> AppResult<i64> {
    text.parse()
        .map_err(|_| Problem::bad_request(format!("alert id {text:?} is not a number")))
}

#[utoipa::path(get, path = "/v1/alerts/{id}",
    responses((status = 200, body = AlertOut), (status = 404, body = Problem)),
    security(("api_key" = ["read"])))]
async fn get_alert(
    State(s): St,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> AppResult<Json<AlertOut>> {
    s.keys
        .authorize(&s.store, &headers, Scope::Read, now_us())
        .await?;
    let id = alert_id(&id)?;
    let a = s
        .store
        .alert(id)
        .await?
        .ok_or_else(|| Problem::not_found(format!("no alert {id}")))?;
    Ok(Json(alert_out(&a)))
}

/// How staff resolved an alert.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolveIn {
    /// confirmed_fraud or legitimate.
    outcome: String,
    #[serde(default)]
    note: String,
}

/// Resolves an alert: `legitimate` makes the attempt's IP and device familiar for the customer;
/// `confirmed_fraud` raises the risk of every customer its IP touches (see `GET /v1/ips/{ip}`).
#[utoipa::path(post, path = "/v1/alerts/{id}/resolve", request_body = ResolveIn,
    responses((status = 200, body = AlertOut), (status = 404, body = Problem), (status = 409, body = Problem)),
    security(("api_key" = ["admin"])))]
async fn post_resolve(
    State(s): St,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> AppResult<Json<AlertOut>> {
    let now = now_us();
    let key = s
        .keys
        .authorize(&s.store, &headers, Scope::Admin, now)
        .await?;
    let id = alert_id(&id)?;
    let r: ResolveIn = json_body(&body)?;
    let resolution: Resolution = r
        .outcome
        .parse()
        .map_err(|e: String| Problem::unprocessable(format!("outcome: {e}")))?;
    if r.note.len() > 4096 {
        return Err(Problem::unprocessable("note: at most 4096 bytes"));
    }
    let a = s
        .store
        .resolve_alert_audited(
            id,
            resolution,
            &r.note,
            &key.name,
            now,
            &AuditNote {
                actor: format!("apikey:{}", key.key_id),
                action: "alert.resolve".into(),
                target: format!("alert:{id}"),
                detail: json!({"resolution": resolution.as_str(), "key_name": key.name}),
            },
        )
        .await
        .map_err(case_problem)?;
    metrics::counter!("mamori_alerts_resolved_total", "resolution" => resolution.as_str())
        .increment(1);
    Ok(Json(alert_out(&a)))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// The point in time (history strictly before it): RFC 3339 or a Tokyo date; default now.
    at: Option<String>,
    /// History window in days (default: the policy's history_days).
    days: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct SeenOut {
    value: String,
    first_seen: String,
    last_seen: String,
    /// Distinct Asia/Tokyo dates.
    days: u32,
    events: u32,
    asn: Option<u32>,
    country: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct HistoryOut {
    customer_id: String,
    before: String,
    days: u32,
    events: u32,
    ips: Vec<SeenOut>,
    networks: Vec<SeenOut>,
    /// Device ids are not kept in the profile; devices are listed by their hash.
    devices: Vec<SeenOut>,
}

fn bound(s: &Option<String>, name: &str, default: i64) -> AppResult<i64> {
    match s {
        Some(s) => parse_bound(s).map_err(|e| Problem::bad_request(format!("{name}: {e}"))),
        None => Ok(default),
    }
}

/// A customer's IPs, networks and devices before a point in time.
#[utoipa::path(get, path = "/v1/customers/{id}/history", params(HistoryQuery),
    responses((status = 200, body = HistoryOut)),
    security(("api_key" = ["read"])))]
async fn get_history(
    State(s): St,
    headers: HeaderMap,
    Path(id): Path<String>,
    q: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> AppResult<Json<HistoryOut>> {
    let now = now_us();
    s.keys
        .authorize(&s.store, &headers, Scope::Read, now)
        .await?;
    let Query(q) = q.map_err(|e| Problem::bad_request(e.body_text()))?;
    let at = bound(&q.at, "at", now)?;
    let policy = s.policy().await;
    let days = q.days.unwrap_or(policy.history_days);
    if !(1..=3650).contains(&days) {
        return Err(Problem::bad_request("days: between 1 and 3650"));
    }
    let w = mamori_core::history::Windows {
        history: i64::from(days) * DAY_US,
        ..policy.windows()
    };
    let acc: Vec<_> = s
        .store
        .customer_accesses(&[id.as_str()], at - w.history, at)
        .await?
        .into_iter()
        .map(|(_, a)| a)
        .collect();
    let p = profile(at, &acc, &w);
    let intel = s.intel.as_ref();
    let seen = |value: String, x: &mamori_core::history::Seen, ip: Option<IpAddr>| {
        let f = ip.map(|ip| intel.facts(ip)).unwrap_or_default();
        SeenOut {
            value,
            first_seen: format_tokyo(x.first),
            last_seen: format_tokyo(x.last),
            days: x.days,
            events: x.events,
            asn: f.asn,
            country: f.country,
        }
    };
    Ok(Json(HistoryOut {
        customer_id: id,
        before: format_tokyo(at),
        days,
        events: p.events,
        ips: p
            .ips
            .iter()
            .map(|(k, x)| seen(key_ip(*k).to_string(), x, Some(key_ip(*k))))
            .collect(),
        networks: p
            .networks
            .iter()
            .map(|(k, x)| seen(prefix_net(key_ip(*k)).to_string(), x, Some(key_ip(*k))))
            .collect(),
        devices: p
            .devices
            .iter()
            .map(|(d, x)| seen(format!("{d:016x}"), x, None))
            .collect(),
    }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PivotQuery {
    /// Start (inclusive); default 365 days before `to`.
    from: Option<String>,
    /// End (exclusive); default now.
    to: Option<String>,
}

/// Every customer who used an IP (or a CIDR block, URL-encoded: `203.0.113.0%2F24`) in the
/// window, with their sensitive procedures.
#[utoipa::path(get, path = "/v1/ips/{ip}", params(PivotQuery),
    responses((status = 200, body = Object), (status = 400, body = Problem)),
    security(("api_key" = ["read"])))]
async fn get_ip(
    State(s): St,
    headers: HeaderMap,
    Path(ip): Path<String>,
    q: Result<Query<PivotQuery>, axum::extract::rejection::QueryRejection>,
) -> AppResult<Json<Value>> {
    let now = now_us();
    s.keys
        .authorize(&s.store, &headers, Scope::Read, now)
        .await?;
    let Query(q) = q.map_err(|e| Problem::bad_request(e.body_text()))?;
    let net = parse_ip_or_net(&ip).map_err(|e| Problem::bad_request(format!("ip: {e}")))?;
    let to = bound(&q.to, "to", now)?;
    let from = bound(&q.from, "from", to - 365 * DAY_US)?;
    let p = mamori_store::investigate::pivot(&s.store, net, from, to).await?;
    let fraud = if let ipnet::IpNet::V4(n) = net
        && n.prefix_len() == 32
    {
        Some(ip_key(IpAddr::V4(n.addr())))
    } else if let ipnet::IpNet::V6(n) = net
        && n.prefix_len() == 128
    {
        Some(ip_key(IpAddr::V6(n.addr())))
    } else {
        None
    };
    let confirmed_fraud = match fraud {
        Some(k) => s.store.marks("", Some(k), now, &[]).await?.fraud_ip,
        None => false,
    };
    let mut v = serde_json::to_value(&p).map_err(Problem::internal)?;
    v["confirmed_fraud"] = json!(confirmed_fraud);
    Ok(Json(v))
}

#[derive(OpenApi)]
#[openapi(
    info(title = "mamori", description = "Account-takeover defence for online securities brokers: real-time decisions, ingest, alerts, history and pivots."),
    paths(post_events, post_assess, get_assessment, post_outcome, get_alerts, get_alert, post_resolve, get_history, get_ip),
    components(schemas(Problem, EventBatch, EventsResult, Rejected, AssessResult, ReasonOut, AssessmentOut, OutcomeIn, OutcomeResult, AlertOut, ResolveIn, HistoryOut, SeenOut)),
    modifiers(&Security)
)]
pub struct ApiDoc;

struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let c = api.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API key from `mamori apikey create` (mmr_…)"))
                    .build(),
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn populations_forget_the_day_used_longest_ago_not_an_older_one_just_computed() {
        let mut m = Populations::default();
        let p = |logins| {
            Arc::new(Population {
                logins,
                ..Population::default()
            })
        };
        // Four recent days, then attempts of an older day.
        for d in 10..14 {
            m.insert(d * DAY_US, p(d as u64));
        }
        m.insert(2 * DAY_US, p(2));
        assert_eq!(m.get(2 * DAY_US).map(|p| p.logins), Some(2));
        assert!(m.get(10 * DAY_US).is_none(), "day 10 was used longest ago");
        // A day used again is kept over one used less recently.
        assert!(m.get(11 * DAY_US).is_some());
        m.insert(3 * DAY_US, p(3));
        assert!(m.get(11 * DAY_US).is_some());
        assert!(m.get(12 * DAY_US).is_none());
        assert_eq!(m.days.len(), Populations::KEEP);
        m.clear();
        assert!(m.get(3 * DAY_US).is_none());
    }
}
