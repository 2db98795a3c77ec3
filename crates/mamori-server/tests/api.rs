//! The HTTP API's tests (one test binary): a real server on loopback over a real SQLite file,
//! spoken to over HTTP.

use std::sync::Arc;

use mamori_core::assess::Policy;
use mamori_core::case::Scope;
use mamori_core::event::{Event, Kind};
use mamori_core::verdict::NoIntel;
use mamori_server::app::AppState;
use mamori_server::config::Server;
use mamori_store::{ApiKeys, AuditNote, Customers, EventWriter, SqliteStore};
use serde_json::{Value, json};

/// Passkeys over HTTP with a software authenticator.
#[path = "api/passkeys.rs"]
mod passkeys;

struct Running {
    base: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    keys: std::collections::HashMap<&'static str, String>,
    events: Vec<Event>,
    http: reqwest::Client,
}

impl Running {
    async fn start(dir: &std::path::Path) -> Running {
        Self::start_with(dir, |_, s| s).await
    }

    /// Started with more settings: `set` gets the server's address and the state.
    async fn start_with(
        dir: &std::path::Path,
        set: impl FnOnce(&str, AppState) -> AppState,
    ) -> Running {
        let cfg = mamori_sim::SimConfig::new(300, 3);
        let mut events = Vec::new();
        let mut keep = |e: &Event| {
            events.push(e.clone());
            Ok(())
        };
        mamori_sim::simulate(&cfg, &mut keep, &mut |_| Ok(())).expect("simulate");
        let store = SqliteStore::open(&dir.join("api.db")).await.expect("open");
        store.insert_events(&events).await.expect("insert");
        let taro = mamori_core::customer::CustomerRecord {
            customer_id: "P1".into(),
            name: "山田 太郎".into(),
            name_kana: "ヤマダ タロウ".into(),
            birth_date: Some("1985-03-15".into()),
            postal_code: Some("100-0005".into()),
            address: Some("東京都千代田区丸の内1-1-1".into()),
            phone: Some("090-1234-5678".into()),
            email: Some("taro.yamada@example.co.jp".into()),
            destinations: vec![mamori_core::event::Destination {
                bank_code: "0001".into(),
                branch_code: "123".into(),
                account_type: "ordinary".into(),
                account_number: "7654321".into(),
                holder_kana: "ﾔﾏﾀﾞ ﾀﾛｳ".into(),
            }],
        };
        let note = AuditNote {
            actor: "test".into(),
            action: "customers.import".into(),
            target: "customers".into(),
            detail: json!({}),
        };
        store
            .put_customers(&[taro], 1, &note)
            .await
            .expect("customers");
        let mut keys = std::collections::HashMap::new();
        for (name, scopes) in [
            ("client", vec![Scope::Ingest, Scope::Assess, Scope::Read]),
            ("reader", vec![Scope::Read]),
            ("staff", vec![Scope::Admin]),
            ("auth", vec![Scope::Auth]),
        ] {
            let (k, token, hash) = mamori_server::auth::generate(name, scopes, 1);
            store.create_key(&k, &hash).await.expect("key");
            keys.insert(name, token);
        }
        // As `mamori serve` runs it: with the hot cache.
        let store = store
            .with_hot(Server::default().cache_events)
            .await
            .expect("hot");
        let bound = mamori_server::serve::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", bound.addr);
        let passwords = mamori_server::config::Passwords {
            lockout: mamori_auth::lockout::Lockout {
                ip_failures: 8,
                ..Default::default()
            },
            ..Default::default()
        };
        let state = Arc::new(set(
            &base,
            AppState::new(
                store,
                Policy::default(),
                Arc::new(NoIntel),
                Server {
                    max_batch: 50,
                    ..Server::default()
                },
                mamori_server::serve::metrics_handle(),
            )
            .with_passwords(passwords, mamori_auth::password::BadPasswords::builtin())
            .with_mfa(mamori_server::config::Mfa {
                passkey_rp_id: "localhost".into(),
                passkey_origin: passkeys::ORIGIN.into(),
                passkey_rp_name: "mamori test".into(),
                ..Default::default()
            }),
        ));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(mamori_server::serve::serve(bound, state, async move {
            let _ = rx.await;
        }));
        let r = Running {
            base,
            stop: Some(tx),
            task,
            keys,
            events,
            http: reqwest::Client::new(),
        };
        // Ready once the population is computed.
        for _ in 0..200 {
            if r.get("/readyz", None).await.0 == 200 {
                return r;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("the server never got ready");
    }

    async fn send(&self, req: reqwest::RequestBuilder, key: Option<&str>) -> (u16, Value, String) {
        let req = match key {
            Some(k) => req.bearer_auth(&self.keys[k]),
            None => req,
        };
        let r = req.send().await.expect("request");
        let status = r.status().as_u16();
        let ct = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let text = r.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
            ct,
        )
    }

    async fn get(&self, path: &str, key: Option<&str>) -> (u16, Value, String) {
        self.send(self.http.get(format!("{}{path}", self.base)), key)
            .await
    }

    async fn post(&self, path: &str, key: Option<&str>, body: &Value) -> (u16, Value, String) {
        self.send(
            self.http.post(format!("{}{path}", self.base)).json(body),
            key,
        )
        .await
    }

    async fn put(&self, path: &str, key: Option<&str>, body: &Value) -> (u16, Value, String) {
        self.send(
            self.http.put(format!("{}{path}", self.base)).json(body),
            key,
        )
        .await
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.task.await.expect("join").expect("serve");
    }
}

fn event(id: &str, customer: &str, kind: Kind, at: &str, ip: &str, device: &str) -> Value {
    json!({"event_id": id, "customer_id": customer, "kind": kind.as_str(), "channel": "web",
           "occurred_at": at, "ip": ip, "device_id": device,
           "user_agent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10.15; rv:80.0) Gecko/20100101 Firefox/80.0"})
}

/// A customer with plenty of history, and its usual IP and device.
fn regular(events: &[Event]) -> (String, String, String) {
    let mut counts: std::collections::HashMap<&str, usize> = Default::default();
    for e in events.iter().filter(|e| e.kind == Kind::Login) {
        *counts.entry(&e.customer_id).or_default() += 1;
    }
    let (c, _) = counts
        .iter()
        .max_by_key(|(c, n)| (**n, *c))
        .expect("a customer");
    let last = events
        .iter()
        .filter(|e| e.customer_id == *c && e.kind == Kind::Login && e.ip.is_some())
        .max_by_key(|e| e.occurred_at)
        .expect("a login");
    (
        c.to_string(),
        last.ip.expect("ip").to_string(),
        last.device_id.clone().unwrap_or_default(),
    )
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn the_api_decides_records_alerts_and_learns() {
    let dir = tempfile::tempdir().expect("tempdir");
    runtime().block_on(async {
        let s = Running::start(dir.path()).await;
        // Health, docs, auth.
        assert_eq!(s.get("/healthz", None).await.0, 200);
        let (st, doc, _) = s.get("/openapi.json", None).await;
        assert_eq!(st, 200);
        assert!(doc["openapi"].as_str().unwrap_or("").starts_with("3.1"), "{doc}");
        for p in ["/v1/assess", "/v1/events", "/v1/alerts/{id}/resolve", "/v1/ips/{ip}"] {
            assert!(doc["paths"].get(p).is_some(), "{p} documented");
        }
        let (st, body, ct) = s.post("/v1/assess", None, &json!({})).await;
        assert_eq!((st, ct.as_str()), (401, "application/problem+json"), "{body}");
        assert!(body["detail"].as_str().unwrap_or("").contains("Bearer"));
        let (st, body, _) = s.post("/v1/assess", Some("reader"), &json!({})).await;
        assert_eq!(st, 403, "{body}");
        assert!(body["detail"].as_str().unwrap_or("").contains("assess"));

        // Ingest: per-item results, idempotent, bounded, never 5xx on bad input.
        let (c, home, dev) = regular(&s.events);
        let batch = json!({"events": [
            event("n1", &c, Kind::Login, "2020-10-02T09:00:00+09:00", &home, &dev),
            event("n2", &c, Kind::Trade, "2020-10-02T09:01:00+09:00", &home, &dev),
            {"event_id": "n3", "kind": "login", "occurred_at": "2020-10-02T09:00:00+09:00"},
            event("n4", &c, Kind::Logout, "2020-10-02T09:30:00+09:00", &home, &dev),
        ]});
        let (st, body, _) = s.post("/v1/events", Some("client"), &batch).await;
        assert_eq!(st, 200, "{body}");
        assert_eq!((body["accepted"].as_u64(), body["duplicates"].as_u64()), (Some(3), Some(0)));
        assert_eq!(body["rejected"][0]["index"], 2);
        assert_eq!(body["rejected"][0]["event_id"], "n3");
        assert!(body["rejected"][0]["error"].as_str().unwrap_or("").contains("customer_id"), "{body}");
        let (_, body, _) = s.post("/v1/events", Some("client"), &batch).await;
        assert_eq!((body["accepted"].as_u64(), body["duplicates"].as_u64()), (Some(0), Some(3)));
        let big: Vec<Value> = (0..51)
            .map(|i| event(&format!("b{i}"), &c, Kind::Trade, "2020-10-02T10:00:00+09:00", &home, &dev))
            .collect();
        assert_eq!(s.post("/v1/events", Some("client"), &json!({"events": big})).await.0, 413);
        let r = s
            .send(
                s.http.post(format!("{}/v1/events", s.base)).body("{\"events\": [").header("content-type", "application/json"),
                Some("client"),
            )
            .await;
        assert_eq!(r.0, 400, "{}", r.1);
        let (st, body, _) = s.post("/v1/events", Some("client"), &json!({"evnts": []})).await;
        assert_eq!(st, 422);
        assert!(body["detail"].as_str().unwrap_or("").contains("evnts"), "{body}");

        // The customer at home: allowed, and the login joins the history.
        let at = "2020-10-03T09:00:00+09:00";
        let (st, ok, _) = s
            .post("/v1/assess", Some("client"), &event("a1", &c, Kind::Login, at, &home, &dev))
            .await;
        assert_eq!(st, 200, "{ok}");
        assert_eq!(ok["decision"], "allow", "{ok}");
        assert_eq!(ok["next"], "proceed", "an allowed login goes ahead: {ok}");
        let (_, h, _) = s.get(&format!("/v1/customers/{c}/history?at=2020-10-04"), Some("reader")).await;
        assert!(h["ips"].as_array().expect("ips").iter().any(|i| i["value"] == home.as_str()), "{h}");
        assert!(h["events"].as_u64().unwrap_or(0) > 10);

        // A stranger logs in, changes the destination and withdraws: challenged, then stopped.
        let evil = "203.0.113.66";
        let (_, login, _) = s
            .post("/v1/assess", Some("client"), &event("x1", &c, Kind::Login, "2020-10-03T22:00:00+09:00", evil, "evil-pc"))
            .await;
        assert_eq!(login["decision"], "challenge", "{login}");
        assert_eq!(login["next"], "second_factor");
        let r = &login["reasons"][0];
        assert_eq!(r["code"], "unusual_login");
        assert!(r["message_ja"].as_str().unwrap_or("").contains("ログイン") && r["message_en"].as_str().is_some());
        let id = login["assessment_id"].as_str().expect("id").to_owned();
        let (st, o, _) = s
            .post(&format!("/v1/assessments/{id}/outcome"), Some("client"), &json!({"outcome": "challenge_passed"}))
            .await;
        assert_eq!(st, 200, "{o}");
        let (st, _, _) = s
            .post(&format!("/v1/assessments/{id}/outcome"), Some("client"), &json!({"outcome": "challenge_failed"}))
            .await;
        assert_eq!(st, 409, "an outcome is set once");
        let (st, _, _) = s
            .post("/v1/assessments/nope/outcome", Some("client"), &json!({"outcome": "completed"}))
            .await;
        assert_eq!(st, 404);
        let (st, body, _) = s
            .post(&format!("/v1/assessments/{id}/outcome"), Some("client"), &json!({"outcome": "won"}))
            .await;
        assert_eq!(st, 422);
        assert!(body["detail"].as_str().unwrap_or("").contains("challenge_passed"), "{body}");
        let mut change = event("x2", &c, Kind::DestinationChange, "2020-10-03T22:05:00+09:00", evil, "evil-pc");
        change["destination"] = json!({"bank_code": "0009", "branch_code": "123", "account_type": "ordinary",
                                      "account_number": "7654321", "holder_kana": "ヤマダ タロウ"});
        let (_, dc, _) = s.post("/v1/assess", Some("client"), &change).await;
        assert_ne!(dc["decision"], "allow", "{dc}");
        let dc_id = dc["assessment_id"].as_str().expect("id").to_owned();
        if dc["decision"] == "challenge" {
            s.post(&format!("/v1/assessments/{dc_id}/outcome"), Some("client"), &json!({"outcome": "challenge_passed"}))
                .await;
        }
        let mut w = event("x3", &c, Kind::Withdrawal, "2020-10-03T22:10:00+09:00", evil, "evil-pc");
        w["amount"] = json!(3_000_000);
        let (_, wd, _) = s.post("/v1/assess", Some("client"), &w).await;
        assert!(wd["decision"] == "hold" || wd["decision"] == "block", "{wd}");
        assert_eq!(wd["next"], if wd["decision"] == "hold" { "review" } else { "refuse" });
        let codes: Vec<&str> = wd["reasons"].as_array().expect("reasons").iter().filter_map(|r| r["code"].as_str()).collect();
        assert!(codes.contains(&"same_unfamiliar_ip_for_destination_change_and_withdrawal"), "{wd}");
        let alert = wd["alert_id"].as_i64().expect("an alert opened");

        // The alert, resolved as fraud, marks the IP: the next customer from it is blocked.
        let (_, open, _) = s.get("/v1/alerts?status=open", Some("reader")).await;
        let listed = open.as_array().expect("alerts");
        let found = listed.iter().find(|a| a["alert_id"] == alert).expect("listed");
        assert_eq!(found["assessment"]["customer_id"], c.as_str());
        assert!(found["assessment"]["reasons"].as_array().is_some_and(|r| !r.is_empty()));
        let (st, _, _) = s.get("/v1/alerts?status=closed", Some("reader")).await;
        assert_eq!(st, 400);
        let resolve = json!({"outcome": "confirmed_fraud", "note": "customer denied it on the phone"});
        assert_eq!(s.post(&format!("/v1/alerts/{alert}/resolve"), Some("client"), &resolve).await.0, 403);
        let (st, res, _) = s.post(&format!("/v1/alerts/{alert}/resolve"), Some("staff"), &resolve).await;
        assert_eq!(st, 200, "{res}");
        assert_eq!((res["status"].as_str(), res["resolved_by"].as_str()), (Some("resolved"), Some("staff")));
        assert_eq!(s.post(&format!("/v1/alerts/{alert}/resolve"), Some("staff"), &resolve).await.0, 409);
        let (st, pivot, _) = s.get(&format!("/v1/ips/{evil}?from=2020-10-01&to=2020-10-05"), Some("reader")).await;
        assert_eq!(st, 200, "{pivot}");
        assert_eq!(pivot["confirmed_fraud"], true);
        assert!(pivot["customers"].as_array().expect("customers").iter().any(|x| x["customer_id"] == c.as_str()), "{pivot}");
        let other = s.events.iter().find(|e| e.customer_id != c).expect("another").customer_id.clone();
        // (Resolutions count from when they were made: this attempt is now.)
        let mut now = event("y1", &other, Kind::Login, "", evil, "evil-pc");
        now.as_object_mut().expect("object").remove("occurred_at");
        let (_, next, _) = s.post("/v1/assess", Some("client"), &now).await;
        assert_eq!(next["decision"], "block", "{next}");
        assert_eq!(next["next"], "refuse");
        assert!(next["reasons"].as_array().expect("r").iter().any(|r| r["code"] == "confirmed_fraud_ip"));
        let (st, _, _) = s.get("/v1/ips/not-an-ip", Some("reader")).await;
        assert_eq!(st, 400);

        // Malformed attempts: 4xx naming the field.
        let (st, body, _) = s
            .post("/v1/assess", Some("client"), &json!({"event_id": "z", "customer_id": c, "kind": "teleport", "channel": "web"}))
            .await;
        assert_eq!(st, 422, "{body}");
        assert!(body["detail"].as_str().unwrap_or("").contains("kind"), "{body}");
        let (st, _, _) = s.post("/v1/assess", Some("client"), &json!([1, 2])).await;
        assert_eq!(st, 422);

        // Metrics count decisions by action and reason, and requests by route.
        let (st, m, _) = s.get("/metrics", None).await;
        assert_eq!(st, 200);
        let m = m.as_str().unwrap_or("").to_owned();
        assert!(m.contains("mamori_decisions_total{decision=\"block\",kind=\"login\"}"), "{m}");
        assert!(m.contains("mamori_decision_reasons_total{code=\"confirmed_fraud_ip\"}"));
        assert!(m.contains("mamori_http_request_duration_seconds_bucket{route=\"/v1/assess\""));
        s.stop().await;
    });
}

#[test]
fn ingest_and_assess_run_concurrently() {
    let dir = tempfile::tempdir().expect("tempdir");
    runtime().block_on(async {
        let s = Arc::new(Running::start(dir.path()).await);
        let (c, home, dev) = regular(&s.events);
        let mut tasks = Vec::new();
        for t in 0..4 {
            let s = s.clone();
            let (c, home, dev) = (c.clone(), home.clone(), dev.clone());
            tasks.push(tokio::spawn(async move {
                for i in 0..25 {
                    let batch: Vec<Value> = (0..40)
                        .map(|j| {
                            event(
                                &format!("c{t}-{i}-{j}"),
                                &format!("X{t}{j}"),
                                Kind::Login,
                                "2020-10-05T09:00:00+09:00",
                                &home,
                                &dev,
                            )
                        })
                        .collect();
                    let (st, body, _) = s
                        .post("/v1/events", Some("client"), &json!({"events": batch}))
                        .await;
                    assert_eq!((st, body["accepted"].as_u64()), (200, Some(40)), "{body}");
                    let (st, body, _) = s
                        .post(
                            "/v1/assess",
                            Some("client"),
                            &event(
                                &format!("a{t}-{i}"),
                                &c,
                                Kind::Login,
                                "2020-10-05T10:00:00+09:00",
                                &home,
                                &dev,
                            ),
                        )
                        .await;
                    assert_eq!(st, 200, "{body}");
                }
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
        let s = Arc::into_inner(s).expect("only owner");
        s.stop().await;
    });
}

#[test]
fn passwords_masking_switches_and_the_audit_log_over_http() {
    let dir = tempfile::tempdir().expect("tempdir");
    runtime().block_on(async {
        let s = Running::start(dir.path()).await;
        let (_, doc, _) = s.get("/openapi.json", None).await;
        for p in [
            "/v1/customers/{id}/passwords/{kind}",
            "/v1/switches/{procedure}/{channel}",
            "/v1/audit/verify",
        ] {
            assert!(doc["paths"].get(p).is_some(), "{p} documented");
        }
        // Masked for readers; unmasked only for staff, with a reason, audited.
        let (st, c, _) = s.get("/v1/customers/P1", Some("reader")).await;
        assert_eq!(st, 200, "{c}");
        let text = c.to_string();
        for secret in ["1985", "7654321", "丸の内", "1234-", "taro.yamada", "0005"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert_eq!(c["phone"], "***-****-5678");
        assert_eq!(c["destinations"][0]["account_number"], "****321");
        let (st, _, _) = s
            .post(
                "/v1/customers/P1/reveal",
                Some("reader"),
                &json!({"staff": "ito", "reason": "ticket 1"}),
            )
            .await;
        assert_eq!(st, 403);
        let (st, body, _) = s
            .post(
                "/v1/customers/P1/reveal",
                Some("staff"),
                &json!({"staff": "ito", "reason": ""}),
            )
            .await;
        assert_eq!(st, 422, "{body}");
        let (st, c, _) = s
            .post(
                "/v1/customers/P1/reveal",
                Some("staff"),
                &json!({"staff": "ito", "reason": "ticket 4711"}),
            )
            .await;
        assert_eq!(
            (st, c["destinations"][0]["account_number"].as_str()),
            (200, Some("7654321"))
        );
        assert_eq!(s.get("/v1/customers/P9", Some("reader")).await.0, 404);

        // Password feedback in both languages, naming what to fix.
        let (st, r, _) = s
            .post(
                "/v1/passwords/check",
                Some("auth"),
                &json!({"kind": "withdrawal", "password": "Taro1985xyz!", "customer_id": "P1"}),
            )
            .await;
        assert_eq!(st, 200, "{r}");
        assert_eq!(r["ok"], false);
        let codes: Vec<&str> = r["problems"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["code"].as_str())
            .collect();
        assert!(codes.contains(&"personal_information"), "{r}");
        assert!(
            r["problems"][0]["message_ja"]
                .as_str()
                .unwrap()
                .chars()
                .any(|c| c > '\u{3000}')
        );
        let (st, r, _) = s
            .post(
                "/v1/passwords/check",
                Some("client"),
                &json!({"kind": "login", "password": "x"}),
            )
            .await;
        assert_eq!(st, 403, "{r}");

        // Set: refused with the problems; accepted; verified; the other password must differ.
        let (st, p, ct) = s
            .put(
                "/v1/customers/P1/passwords/login",
                Some("auth"),
                &json!({"password": "password"}),
            )
            .await;
        assert_eq!((st, ct.as_str()), (422, "application/problem+json"), "{p}");
        assert!(
            p["problems"].as_array().is_some_and(|a| a.len() >= 2),
            "{p}"
        );
        let login = "Vq7#mRt2Lp9x";
        let (st, p, _) = s
            .put(
                "/v1/customers/P1/passwords/login",
                Some("auth"),
                &json!({"password": login}),
            )
            .await;
        assert_eq!(st, 204, "{p}");
        let (st, v, _) = s
            .post(
                "/v1/customers/P1/passwords/login/verify",
                Some("auth"),
                &json!({"password": login}),
            )
            .await;
        assert_eq!((st, v["valid"].as_bool()), (200, Some(true)));
        let (_, v, _) = s
            .post(
                "/v1/customers/P1/passwords/login/verify",
                Some("auth"),
                &json!({"password": "Vq7#mRt2Lp9X"}),
            )
            .await;
        assert_eq!(v["valid"], false);
        let (st, p, _) = s
            .put(
                "/v1/customers/P1/passwords/withdrawal",
                Some("auth"),
                &json!({"password": login}),
            )
            .await;
        assert_eq!(st, 422, "{p}");
        assert_eq!(p["problems"][0]["code"], "same_as_other_password", "{p}");
        let (st, _, _) = s
            .put(
                "/v1/customers/P1/passwords/withdrawal",
                Some("auth"),
                &json!({"password": "Glacier7Orb%"}),
            )
            .await;
        assert_eq!(st, 204);
        assert_eq!(
            s.post(
                "/v1/customers/P1/passwords/pin/verify",
                Some("auth"),
                &json!({"password": "x"})
            )
            .await
            .0,
            404
        );
        let (st, p, _) = s
            .put(
                "/v1/customers/P1/passwords/login",
                Some("auth"),
                &json!({"pasword": "x"}),
            )
            .await;
        assert_eq!(st, 422, "{p}");
        assert!(
            p["detail"].as_str().unwrap_or("").contains("pasword"),
            "{p}"
        );

        // The switch, for staff only.
        let (st, _, _) = s
            .put(
                "/v1/switches/destination_change/web",
                Some("reader"),
                &json!({"enabled": false, "reason": "takeover wave", "staff": "sato"}),
            )
            .await;
        assert_eq!(st, 403);
        let (st, sw, _) = s
            .put(
                "/v1/switches/destination_change/web",
                Some("staff"),
                &json!({"enabled": false, "reason": "takeover wave", "staff": "sato"}),
            )
            .await;
        assert_eq!((st, sw["enabled"].as_bool()), (200, Some(false)), "{sw}");
        assert_eq!(
            s.put(
                "/v1/switches/login_failed/web",
                Some("staff"),
                &json!({"enabled": false, "reason": "nope!", "staff": "sato"})
            )
            .await
            .0,
            404
        );
        let (_, all, _) = s.get("/v1/switches", Some("reader")).await;
        assert_eq!(all[0]["procedure"], "destination_change");
        assert_eq!(all[0]["actor"], "staff:sato");
        // While off, the web's destination changes are blocked with directions, without an
        // alert; the support center's and withdrawals are not switched.
        let (c, home, dev) = regular(&s.events);
        let mut change = event("sw1", &c, Kind::DestinationChange, "2020-10-03T10:00:00+09:00", &home, &dev);
        change["destination"] = json!({"bank_code": "0005", "branch_code": "001", "account_number": "1111111", "holder_kana": "ﾃｽﾄ"});
        let (st, r, _) = s.post("/v1/assess", Some("client"), &change).await;
        assert_eq!((st, r["decision"].as_str()), (200, Some("block")), "{r}");
        assert_eq!(r["reasons"][0]["code"], "procedure_switched_off");
        assert_eq!(r["next"], "refuse");
        assert!(r["reasons"][0]["message_ja"].as_str().unwrap().contains("サポートセンター"));
        assert_eq!(r["alert_id"], Value::Null);
        let mut by_phone = change.clone();
        by_phone["event_id"] = json!("sw2");
        by_phone["channel"] = json!("support_center");
        let (_, r, _) = s.post("/v1/assess", Some("client"), &by_phone).await;
        assert_ne!(r["reasons"][0]["code"], "procedure_switched_off", "{r}");
        let mut withdrawal = event("sw3", &c, Kind::Withdrawal, "2020-10-03T10:05:00+09:00", &home, &dev);
        withdrawal["amount"] = json!(10_000);
        let (_, r, _) = s.post("/v1/assess", Some("client"), &withdrawal).await;
        assert_ne!(r["reasons"][0]["code"], "procedure_switched_off", "{r}");
        // An allowed withdrawal still needs a second factor (the seed's rule, [friction]).
        if r["decision"] == "allow" {
            assert_eq!(r["next"], "second_factor", "{r}");
        }
        // Another process (a second node, the CLI) switches the app's withdrawals off: this
        // node refuses them within a second.
        let other = SqliteStore::open(&dir.path().join("api.db")).await.expect("second handle");
        let off = mamori_core::customer::SwitchState {
            procedure: Kind::Withdrawal,
            channel: mamori_core::customer::SwitchChannel::App,
            enabled: false,
            reason: "drill".into(),
            actor: "cli:ops".into(),
            changed_at: mamori_server::app::now_us(),
        };
        let note = AuditNote { actor: "cli:ops".into(), action: "switch.set".into(), target: "withdrawal/app".into(), detail: json!({}) };
        mamori_store::Switches::set_switch(&other, &off, &note).await.expect("switch");
        let flipped = std::time::Instant::now();
        let mut in_app = withdrawal.clone();
        in_app["channel"] = json!("app");
        let mut n = 0;
        loop {
            n += 1;
            in_app["event_id"] = json!(format!("sw-app-{n}"));
            let (_, r, _) = s.post("/v1/assess", Some("client"), &in_app).await;
            if r["reasons"][0]["code"] == "procedure_switched_off" {
                break;
            }
            assert!(flipped.elapsed() < std::time::Duration::from_secs(1), "not refused within a second");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        other.close().await;

        // The audit log holds the import, the reveal, two password changes and the flip; intact.
        let (st, a, _) = s.get("/v1/audit", Some("staff")).await;
        assert_eq!(st, 200);
        let actions: Vec<&str> = a["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["action"].as_str())
            .collect();
        assert_eq!(
            actions,
            [
                "customers.import",
                "personal.reveal",
                "credential.change",
                "credential.change",
                "switch.set",
                "switch.set"
            ]
        );
        assert!(
            !a.to_string().contains("Vq7#") && !a.to_string().contains("argon2"),
            "no secrets in the audit log"
        );
        let (_, v, _) = s.get("/v1/audit/verify", Some("staff")).await;
        assert_eq!(
            (v["intact"].as_bool(), v["entries"].as_i64()),
            (Some(true), Some(6)),
            "{v}"
        );
        assert_eq!(s.get("/v1/audit", Some("reader")).await.0, 403);

        // TOTP, read from the enrolment URI as an authenticator app would.
        let (st, e, _) = s
            .post("/v1/customers/P1/totp", Some("auth"), &json!({}))
            .await;
        assert_eq!(st, 201, "{e}");
        assert!(e["qr_svg"].as_str().unwrap_or("").contains("<svg"));
        let app = totp_rs::TOTP::from_url(e["uri"].as_str().unwrap()).expect("otpauth URI");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let code = app.generate(now);
        let wrong = format!("{:06}", (code.parse::<u32>().unwrap() + 1) % 1_000_000);
        let (st, _, _) = s
            .post(
                "/v1/customers/P1/totp/confirm",
                Some("auth"),
                &json!({"code": wrong}),
            )
            .await;
        assert_eq!(st, 422);
        let (st, r, _) = s
            .post(
                "/v1/customers/P1/totp/confirm",
                Some("auth"),
                &json!({"code": code}),
            )
            .await;
        assert_eq!(st, 200, "{r}");
        let recovery: Vec<String> = serde_json::from_value(r["recovery_codes"].clone()).unwrap();
        assert_eq!(recovery.len(), 10);
        // The confirming code cannot be used again; the next step's code works once.
        let (_, v, _) = s
            .post(
                "/v1/customers/P1/totp/verify",
                Some("auth"),
                &json!({"code": code}),
            )
            .await;
        assert_eq!(
            (v["valid"].as_bool(), v["reason"].as_str()),
            (Some(false), Some("replayed")),
            "{v}"
        );
        let next = app.generate(now + 30);
        let (_, v, _) = s
            .post(
                "/v1/customers/P1/totp/verify",
                Some("auth"),
                &json!({"code": next}),
            )
            .await;
        assert_eq!(v["valid"], true, "{v}");
        let (_, v, _) = s
            .post(
                "/v1/customers/P1/totp/verify",
                Some("auth"),
                &json!({"code": next}),
            )
            .await;
        assert_eq!(v["reason"], "replayed", "{v}");
        let (_, v, _) = s
            .post(
                "/v1/customers/P1/totp/verify",
                Some("auth"),
                &json!({"code": wrong}),
            )
            .await;
        assert_eq!(v["reason"], "wrong", "{v}");
        // Recovery codes: once each, typed loosely.
        let typed = recovery[2].to_uppercase();
        let (_, v, _) = s
            .post(
                "/v1/customers/P1/totp/verify",
                Some("auth"),
                &json!({"recovery_code": typed}),
            )
            .await;
        assert_eq!(
            (v["valid"].as_bool(), v["recovery_codes_left"].as_u64()),
            (Some(true), Some(9)),
            "{v}"
        );
        let (_, v, _) = s
            .post(
                "/v1/customers/P1/totp/verify",
                Some("auth"),
                &json!({"recovery_code": recovery[2]}),
            )
            .await;
        assert_eq!(v["valid"], false);
        assert_eq!(
            s.post("/v1/customers/P1/totp/verify", Some("auth"), &json!({}))
                .await
                .0,
            422
        );
        // A second enrolment needs the first removed, by staff, with a reason.
        assert_eq!(
            s.post("/v1/customers/P1/totp", Some("auth"), &json!({}))
                .await
                .0,
            409
        );
        let del = |key: &'static str, body: Value| {
            s.send(
                s.http
                    .delete(format!("{}/v1/customers/P1/totp", s.base))
                    .json(&body),
                Some(key),
            )
        };
        assert_eq!(
            del("auth", json!({"staff": "ito", "reason": "lost phone"}))
                .await
                .0,
            403
        );
        assert_eq!(
            del("staff", json!({"staff": "ito", "reason": "lost phone"}))
                .await
                .0,
            204
        );
        assert_eq!(
            s.post(
                "/v1/customers/P1/totp/verify",
                Some("auth"),
                &json!({"code": next})
            )
            .await
            .0,
            404
        );
        let (_, v, _) = s.get("/v1/audit/verify", Some("staff")).await;
        assert_eq!(
            (v["intact"].as_bool(), v["entries"].as_i64()),
            (Some(true), Some(9)),
            "{v}"
        );

        // Brute force: five wrong passwords in a row (a success clears the earlier one) lock the
        // account for 30 s, even for the right one.
        let (_, v, _) = s.post("/v1/customers/P1/passwords/login/verify", Some("auth"), &json!({"password": login})).await;
        assert_eq!(v["valid"], true);
        let bad = json!({"password": "Wrong#Pass99", "ip": "198.51.100.7", "device_id": "d-x"});
        for _ in 0..5 {
            let (st, v, _) = s.post("/v1/customers/P1/passwords/login/verify", Some("auth"), &bad).await;
            assert_eq!((st, v["valid"].as_bool()), (200, Some(false)), "{v}");
        }
        let right = json!({"password": login, "ip": "203.0.113.5"});
        let r = s.http.post(format!("{}/v1/customers/P1/passwords/login/verify", s.base))
            .bearer_auth(&s.keys["auth"]).json(&right).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 429);
        let retry: i64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=30).contains(&retry), "{retry}");
        let p: Value = r.json().await.unwrap();
        assert!(p["problems"][0]["message_ja"].as_str().unwrap().contains("お待ち"), "{p}");
        // The failures reached the risk engine as failed logins from their IP.
        let (_, pivot, _) = s.get("/v1/ips/198.51.100.7", Some("reader")).await;
        assert!(pivot.to_string().contains("P1"), "{pivot}");
        // Audited, and a notice waits for the customer; staff unlock.
        let (_, a, _) = s.get("/v1/audit?from=10", Some("staff")).await;
        assert_eq!(a["entries"][0]["action"], "lockout", "{a}");
        assert_eq!(a["entries"][0]["detail"].as_str().map(|d| d.contains("\"failures\":5")), Some(true), "{a}");
        let unlock = |body: Value| {
            s.send(s.http.delete(format!("{}/v1/customers/P1/passwords/login/lock", s.base)).json(&body), Some("staff"))
        };
        assert_eq!(unlock(json!({"staff": "ito", "reason": "called in, identity checked"})).await.0, 204);
        assert_eq!(unlock(json!({"staff": "ito", "reason": "again"})).await.0, 404);
        let (st, v, _) = s.post("/v1/customers/P1/passwords/login/verify", Some("auth"), &right).await;
        assert_eq!((st, v["valid"].as_bool()), (200, Some(true)), "{v}");
        // Stuffing from one address over other accounts throttles it for everyone.
        let at = mamori_core::time::format_tokyo(mamori_server::app::now_us() - 60_000_000);
        let stuffing: Vec<Value> = (0..8)
            .map(|i| json!({"event_id": format!("st{i}"), "customer_id": format!("victim{i}"), "kind": "login_failed",
                            "channel": "web", "occurred_at": at, "ip": "192.0.2.66"}))
            .collect();
        let (st, _, _) = s.post("/v1/events", Some("client"), &json!({"events": stuffing})).await;
        assert_eq!(st, 200);
        let from_there = json!({"password": login, "ip": "192.0.2.66"});
        let (st, p, _) = s.post("/v1/customers/P1/passwords/login/verify", Some("auth"), &from_there).await;
        assert_eq!(st, 429, "{p}");
        assert!(p["detail"].as_str().unwrap().contains("your network"), "{p}");
        let (_, v, _) = s.get("/v1/audit/verify", Some("staff")).await;
        assert_eq!((v["intact"].as_bool(), v["entries"].as_i64()), (Some(true), Some(11)), "{v}");
        s.stop().await;
    });
}

#[test]
fn stepup_tokens_are_single_use_and_bound_to_customer_operation_and_parameters() {
    let dir = tempfile::tempdir().expect("tempdir");
    runtime().block_on(async {
        let server = Running::start(dir.path()).await;
        let s = &server;
        let login = "Vq7#mRt2Lp9x";
        let wpw = "Glacier7Orb%";
        assert_eq!(s.put("/v1/customers/P1/passwords/login", Some("auth"), &json!({"password": login})).await.0, 204);
        assert_eq!(s.put("/v1/customers/P1/passwords/withdrawal", Some("auth"), &json!({"password": wpw})).await.0, 204);
        let dest = json!({"bank_code": "0005", "branch_code": "001", "account_number": "1111111"});
        // No second factor yet: no step-up.
        let (st, p, _) = s.post("/v1/customers/P1/stepup", Some("auth"), &json!({"operation": "destination_change", "params": dest, "code": "123456"})).await;
        assert_eq!(st, 409, "{p}");
        let (_, e, _) = s.post("/v1/customers/P1/totp", Some("auth"), &json!({})).await;
        let app = totp_rs::TOTP::from_url(e["uri"].as_str().unwrap()).unwrap();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let (st, r, _) = s.post("/v1/customers/P1/totp/confirm", Some("auth"), &json!({"code": app.generate(now)})).await;
        assert_eq!(st, 200, "{r}");
        let recovery: Vec<String> = serde_json::from_value(r["recovery_codes"].clone()).unwrap();

        let code = app.generate(now + 30);
        let (st, t, _) = s.post("/v1/customers/P1/stepup", Some("auth"), &json!({"operation": "destination_change", "params": dest, "code": code})).await;
        assert_eq!(st, 201, "{t}");
        let token = t["token"].as_str().unwrap().to_owned();
        assert_eq!(t["method"], "totp");
        // The same code never works twice, not even for another step-up.
        let (st, p, _) = s.post("/v1/customers/P1/stepup", Some("auth"), &json!({"operation": "destination_change", "params": dest, "code": code})).await;
        assert_eq!((st, p["problems"][0]["code"].as_str()), (403, Some("wrong_code")), "{p}");

        let consume = |token: &str, customer: &str, op: &str, params: &Value| {
            let body = json!({"token": token, "customer_id": customer, "operation": op, "params": params});
            async move { s.post("/v1/stepup/consume", Some("auth"), &body).await }
        };
        let reordered = json!({"account_number": "1111111", "branch_code": "001", "bank_code": "0005"});
        let other = json!({"bank_code": "0005", "branch_code": "001", "account_number": "2222222"});
        for (tok, who, op, params, why) in [
            ("stp_00", "P1", "destination_change", &dest, "unknown"),
            (token.as_str(), "P2", "destination_change", &dest, "other_customer"),
            (token.as_str(), "P1", "withdrawal", &dest, "other_operation"),
            (token.as_str(), "P1", "destination_change", &other, "other_parameters"),
        ] {
            let (st, p, _) = consume(tok, who, op, params).await;
            assert_eq!((st, p["problems"][0]["code"].as_str()), (403, Some(why)), "{p}");
        }
        // The refusals did not use it up; the right use does, with the parameters in any order.
        let (st, v, _) = consume(&token, "P1", "destination_change", &reordered).await;
        assert_eq!((st, v["valid"].as_bool()), (200, Some(true)), "{v}");
        let (st, p, _) = consume(&token, "P1", "destination_change", &dest).await;
        assert_eq!((st, p["problems"][0]["code"].as_str()), (403, Some("used")), "{p}");

        // A withdrawal needs the withdrawal password too.
        let w = json!({"amount": 1_000_000, "destination": dest});
        let (st, _, _) = s.post("/v1/customers/P1/stepup", Some("auth"), &json!({"operation": "withdrawal", "params": w, "recovery_code": recovery[0]})).await;
        assert_eq!(st, 422);
        let (st, p, _) = s.post("/v1/customers/P1/stepup", Some("auth"), &json!({"operation": "withdrawal", "params": w, "recovery_code": recovery[0], "withdrawal_password": login})).await;
        assert_eq!((st, p["problems"][0]["code"].as_str()), (403, Some("wrong_withdrawal_password")), "{p}");
        let (st, t, _) = s.post("/v1/customers/P1/stepup", Some("auth"), &json!({"operation": "withdrawal", "params": w, "recovery_code": recovery[0], "withdrawal_password": wpw})).await;
        assert_eq!((st, t["method"].as_str()), (201, Some("recovery_code+withdrawal_password")), "{t}");
        let (st, _, _) = consume(t["token"].as_str().unwrap(), "P1", "withdrawal", &w).await;
        assert_eq!(st, 200);
        // Not a sensitive operation; not an object.
        assert_eq!(s.post("/v1/customers/P1/stepup", Some("auth"), &json!({"operation": "login", "params": {}, "code": "1"})).await.0, 422);
        assert_eq!(s.post("/v1/customers/P1/stepup", Some("auth"), &json!({"operation": "withdrawal", "params": [1], "code": "1"})).await.0, 422);
        // The destination-change flow: step-up for exactly this destination, then registration.
        let (st, t, _) = s.post("/v1/customers/P1/stepup", Some("auth"),
            &json!({"operation": "destination_change", "params": dest, "recovery_code": recovery[3]})).await;
        assert_eq!(st, 201, "{t}");
        let token = t["token"].as_str().unwrap().to_owned();
        let (st, p, _) = s.post("/v1/customers/P1/destinations", Some("auth"), &json!({"destination": dest})).await;
        assert_eq!(st, 422, "online without a step-up token: {p}");
        let (st, p, _) = s.post("/v1/customers/P1/destinations", Some("auth"),
            &json!({"destination": other, "stepup_token": token, "ip": "203.0.113.5"})).await;
        assert_eq!((st, p["problems"][0]["code"].as_str()), (403, Some("other_parameters")), "{p}");
        let (st, r, _) = s.post("/v1/customers/P1/destinations", Some("auth"),
            &json!({"destination": dest, "stepup_token": token, "ip": "203.0.113.5", "device_id": "d-1"})).await;
        assert_eq!(st, 201, "{r}");
        let status = r["status"].as_str().unwrap().to_owned();
        match r["decision"].as_str().unwrap() {
            "hold" => assert_eq!(status, "pending_review", "{r}"),
            "allow" | "challenge" => {
                assert_eq!(status, "effective", "{r}");
                assert!(r["effective_at"].is_string(), "24 h cooling-off: {r}");
            }
            other => panic!("decision {other}: {r}"),
        }
        let (st, p, _) = s.post("/v1/customers/P1/destinations", Some("auth"),
            &json!({"destination": dest, "stepup_token": token})).await;
        assert_eq!((st, p["problems"][0]["code"].as_str()), (403, Some("used")), "{p}");
        let (_, ds, _) = s.get("/v1/customers/P1/destinations", Some("reader")).await;
        let mine = ds["destinations"].as_array().unwrap().iter()
            .find(|d| d["account_number"] == "****111").expect("registered").clone();
        assert_eq!((mine["status"].as_str(), mine["withdrawals_allowed"].as_bool()), (Some(status.as_str()), Some(false)), "{ds}");
        assert!(!ds.to_string().contains("1111111"), "masked: {ds}");
        // At the support center: staff and the identity checks they made, no step-up.
        let phone_dest = json!({"bank_code": "0009", "branch_code": "010", "account_number": "3333333"});
        let (st, _, _) = s.post("/v1/customers/P1/destinations", Some("auth"),
            &json!({"destination": phone_dest, "channel": "support_center", "staff": "ito"})).await;
        assert_eq!(st, 422);
        let (st, r, _) = s.post("/v1/customers/P1/destinations", Some("auth"),
            &json!({"destination": phone_dest, "channel": "support_center", "staff": "ito",
                    "identity_checks": ["callback to the registered phone", "date of birth"]})).await;
        assert_eq!(st, 201, "{r}");
        let (_, a, _) = s.get("/v1/audit?from=1&limit=100", Some("staff")).await;
        let regs: Vec<&Value> = a["entries"].as_array().unwrap().iter().filter(|e| e["action"] == "destination.register").collect();
        assert_eq!(regs.len(), 2, "{a}");
        assert_eq!(regs[1]["actor"], "staff:ito");
        assert!(regs[1]["detail"].as_str().unwrap().contains("callback to the registered phone"));
        assert!(!a.to_string().contains("3333333"), "no account numbers in the audit log");

        // Switched off on the web: no step-up there (the app is not switched).
        let (st, _, _) = s.put("/v1/switches/destination_change/web", Some("staff"),
            &json!({"enabled": false, "reason": "takeover wave", "staff": "sato"})).await;
        assert_eq!(st, 200);
        let (st, p, _) = s.post("/v1/customers/P1/stepup", Some("auth"),
            &json!({"operation": "destination_change", "params": dest, "recovery_code": recovery[1]})).await;
        assert_eq!((st, p["problems"][0]["code"].as_str()), (403, Some("switched_off")), "{p}");
        assert!(p["problems"][0]["message_ja"].as_str().unwrap().contains("書面"), "{p}");
        let (st, t, _) = s.post("/v1/customers/P1/stepup", Some("auth"),
            &json!({"operation": "destination_change", "params": dest, "recovery_code": recovery[1], "channel": "app"})).await;
        assert_eq!(st, 201, "{t}");
        // So is a password change on the web, once switched.
        let (st, _, _) = s.put("/v1/switches/password_change/web", Some("staff"),
            &json!({"enabled": false, "reason": "takeover wave", "staff": "sato"})).await;
        assert_eq!(st, 200);
        let (st, p, _) = s.put("/v1/customers/P1/passwords/login", Some("auth"), &json!({"password": "Orbit%Mango42x"})).await;
        assert_eq!((st, p["problems"][0]["code"].as_str()), (403, Some("switched_off")), "{p}");
        let (st, p, _) = s.put("/v1/customers/P1/passwords/login", Some("auth"), &json!({"password": "Orbit%Mango42x", "channel": "support_center"})).await;
        assert_eq!(st, 204, "{p}");
        server.stop().await;
    });
}

/// A real SMTP server on loopback (aiosmtpd from PyPI) writing what it receives to a Maildir.
struct Smtp {
    child: std::process::Child,
    port: u16,
    maildir: std::path::PathBuf,
}

impl Smtp {
    /// None (with a message) when aiosmtpd is not installed; under CI=true that is a failure.
    fn start(dir: &std::path::Path) -> Option<Smtp> {
        let has = std::process::Command::new("python3")
            .args(["-c", "import aiosmtpd"])
            .status()
            .is_ok_and(|s| s.success());
        if !has {
            assert!(
                std::env::var("CI").is_err(),
                "aiosmtpd is missing under CI (pip install aiosmtpd)"
            );
            eprintln!("SKIPPED: no aiosmtpd (pip install aiosmtpd) for the real SMTP server");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let maildir = dir.join("maildir");
        let mut child = std::process::Command::new("python3")
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&maildir)
            .spawn()
            .expect("aiosmtpd");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(Smtp {
                    child,
                    port,
                    maildir,
                });
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("aiosmtpd did not start");
    }

    /// Every message received so far, parsed: (to, subject, body).
    fn messages(&self) -> Vec<(String, String, String)> {
        let mut files: Vec<_> = std::fs::read_dir(self.maildir.join("new"))
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
        files
            .iter()
            .map(|p| {
                let raw = std::fs::read(p).expect("read mail");
                let m = mail_parser::MessageParser::default()
                    .parse(&raw)
                    .expect("parse mail");
                let to = m
                    .to()
                    .and_then(|a| a.first())
                    .and_then(|a| a.address())
                    .unwrap_or_default()
                    .to_owned();
                let subject = m.subject().unwrap_or_default().to_owned();
                let body = m.body_text(0).map(|b| b.into_owned()).unwrap_or_default();
                (to, subject, body)
            })
            .collect()
    }

    /// Waits until a message whose subject contains `subject` arrives beyond the first `seen`.
    async fn wait_for(&self, seen: usize, subject: &str) -> (String, String, String) {
        for _ in 0..200 {
            if let Some(m) = self
                .messages()
                .into_iter()
                .skip(seen)
                .find(|m| m.1.contains(subject))
            {
                return m;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("no message with {subject:?} arrived: {:?}", self.messages());
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The "this wasn't me" link in a message.
fn report_link(body: &str) -> Option<String> {
    body.split_whitespace()
        .find(|w| w.contains("/report/rpt_"))
        .map(str::to_owned)
}

#[test]
fn notices_reach_customers_by_mail_and_this_wasnt_me_freezes_withdrawals() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(smtp) = Smtp::start(dir.path()) else {
        return;
    };
    runtime().block_on(async {
        let port = smtp.port;
        let server = Running::start_with(dir.path(), |base, st| {
            st.with_mail(mamori_server::mail::Mail {
                smtp_url: Some(format!("smtp://127.0.0.1:{port}")),
                from: "Example Securities <no-reply@example.jp>".into(),
                broker_name: "Example証券".into(),
                link_base: base.to_owned(),
                poll_ms: 50,
                ..Default::default()
            })
        })
        .await;
        let s = &server;
        let wpw = "Glacier7Orb%";
        assert_eq!(s.put("/v1/customers/P1/passwords/withdrawal", Some("auth"), &json!({"password": wpw})).await.0, 204);
        // A TOTP enrolment is told to the customer, with a link.
        let (_, e, _) = s.post("/v1/customers/P1/totp", Some("auth"), &json!({})).await;
        let app = totp_rs::TOTP::from_url(e["uri"].as_str().unwrap()).unwrap();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let (st, r, _) = s.post("/v1/customers/P1/totp/confirm", Some("auth"), &json!({"code": app.generate(now)})).await;
        assert_eq!(st, 200, "{r}");
        let (to, _, body) = smtp.wait_for(0, "Two-factor").await;
        assert_eq!(to, "taro.yamada@example.co.jp");
        assert!(body.contains("二要素認証") && body.contains("(totp) was added"), "{body}");
        let mfa_link = report_link(&body).expect("a link in the MFA notice");

        // A withdrawal to the registered destination: told with the amount, masked.
        let (st, a, _) = s.post("/v1/assess", Some("client"), &json!({
            "event_id": "mail-w1", "customer_id": "P1", "kind": "withdrawal", "channel": "web",
            "ip": "203.0.113.77", "device_id": "d-mail", "amount": 2_345_678,
            "destination": {"bank_code": "0001", "branch_code": "123", "account_type": "ordinary",
                            "account_number": "7654321", "holder_kana": "ﾔﾏﾀﾞ ﾀﾛｳ"}})).await;
        assert_eq!(st, 200, "{a}");
        let reported = a["assessment_id"].as_str().unwrap().to_owned();
        let (to, subject, body) = smtp.wait_for(0, "Withdrawal").await;
        assert_eq!(to, "taro.yamada@example.co.jp");
        assert!(subject.contains("出金") && subject.contains("Example証券"), "{subject}");
        for want in ["2,345,678 円", "JPY 2,345,678", "0001 / ****321"] {
            assert!(body.contains(want), "{want} missing: {body}");
        }
        assert!(!body.contains("7654321"), "unmasked account: {body}");
        let link = report_link(&body).expect("a link in the withdrawal notice");
        assert!(link.starts_with(&s.base), "{link}");

        // The link's GET only asks (mail scanners fetch links).
        let r = s.http.get(&link).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let h = r.headers().clone();
        assert_eq!(h["referrer-policy"], "no-referrer");
        assert_eq!(h["cache-control"], "no-store");
        assert!(h["content-security-policy"].to_str().unwrap().contains("default-src 'none'"));
        let page = r.text().await.unwrap();
        assert!(page.contains("<form method=\"post\"") && page.contains("出金を停止"), "{page}");
        let (_, f, _) = s.get("/v1/customers/P1/freeze", Some("reader")).await;
        assert_eq!(f["frozen"], false, "a GET froze: {f}");

        // Its POST freezes withdrawals and labels the withdrawal as fraud.
        let r = s.http.post(&link).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.text().await.unwrap().contains("We stopped withdrawals"));
        let (_, f, _) = s.get("/v1/customers/P1/freeze", Some("reader")).await;
        assert_eq!((f["frozen"].as_bool(), f["source"].as_str()), (Some(true), Some("customer_report")), "{f}");
        let (_, alerts, _) = s.get("/v1/alerts?limit=1000", Some("reader")).await;
        let alert = alerts.as_array().unwrap().iter()
            .find(|x| x["assessment"]["assessment_id"] == reported.as_str())
            .expect("the reported withdrawal's alert").clone();
        assert_eq!(
            (alert["status"].as_str(), alert["resolution"].as_str(), alert["resolved_by"].as_str()),
            (Some("resolved"), Some("confirmed_fraud"), Some("customer:P1")),
            "{alert}"
        );
        if a["alert_id"].is_null() {
            assert_eq!(alert["trigger"], "customer_report", "{alert}");
        }
        // Once only; made-up tokens are unknown.
        assert_eq!(s.http.post(&link).send().await.unwrap().status(), 409);
        let fake = format!("{}/report/rpt_{}", s.base, "0".repeat(64));
        assert_eq!(s.http.post(&fake).send().await.unwrap().status(), 404);
        assert_eq!(s.http.get(format!("{}/report/nonsense", s.base)).send().await.unwrap().status(), 404);

        // The customer is told withdrawals stopped, without a link.
        let (_, _, body) = smtp.wait_for(0, "Withdrawals stopped").await;
        assert!(report_link(&body).is_none(), "{body}");

        // While frozen: withdrawals blocked before the engine, with an alert; no withdrawal step-up.
        let (st, b, _) = s.post("/v1/assess", Some("client"), &json!({
            "event_id": "mail-w2", "customer_id": "P1", "kind": "withdrawal", "channel": "web",
            "ip": "203.0.113.77", "amount": 10_000,
            "destination": {"bank_code": "0001", "branch_code": "123", "account_type": "ordinary",
                            "account_number": "7654321", "holder_kana": "ﾔﾏﾀﾞ ﾀﾛｳ"}})).await;
        assert_eq!(st, 200);
        assert_eq!((b["decision"].as_str(), b["next"].as_str(), b["reasons"][0]["code"].as_str()),
            (Some("block"), Some("refuse"), Some("withdrawals_frozen")), "{b}");
        assert!(b["alert_id"].is_i64(), "{b}");
        let w = json!({"amount": 10_000});
        let (st, p, _) = s.post("/v1/customers/P1/stepup", Some("auth"),
            &json!({"operation": "withdrawal", "params": w, "code": app.generate(now + 30), "withdrawal_password": wpw})).await;
        assert_eq!((st, p["problems"][0]["code"].as_str()), (403, Some("withdrawals_frozen")), "{p}");

        // Staff lift it (audited); the MFA notice's link freezes again.
        let (st, _, _) = s.send(s.http.delete(format!("{}/v1/customers/P1/freeze", s.base)).json(&json!({"staff": "ito", "reason": "customer called back"})), Some("staff")).await;
        assert_eq!(st, 204);
        let (_, f, _) = s.get("/v1/customers/P1/freeze", Some("reader")).await;
        assert_eq!(f["frozen"], false);
        assert_eq!(s.http.post(&mfa_link).send().await.unwrap().status(), 200);
        let (_, f, _) = s.get("/v1/customers/P1/freeze", Some("reader")).await;
        assert_eq!(f["frozen"], true);
        let (st, _, _) = s.send(s.http.delete(format!("{}/v1/customers/P1/freeze", s.base)).json(&json!({"staff": "ito", "reason": "checked with the customer"})), Some("staff")).await;
        assert_eq!(st, 204);
        // Staff freeze too.
        let (st, f, _) = s.put("/v1/customers/P1/freeze", Some("staff"), &json!({"staff": "ito", "reason": "call from the police"})).await;
        assert_eq!((st, f["source"].as_str()), (201, Some("staff")), "{f}");
        assert_eq!(s.put("/v1/customers/P1/freeze", Some("staff"), &json!({"staff": "ito", "reason": "again"})).await.0, 200);
        let (st, _, _) = s.send(s.http.delete(format!("{}/v1/customers/P1/freeze", s.base)).json(&json!({"staff": "ito", "reason": "cleared"})), Some("staff")).await;
        assert_eq!(st, 204);

        // Destinations: a new one cools off; an unknown one is refused.
        let dest = json!({"bank_code": "0005", "branch_code": "001", "account_number": "1111111"});
        let (st, t, _) = s.post("/v1/customers/P1/stepup", Some("auth"),
            &json!({"operation": "destination_change", "params": dest, "code": app.generate(now + 30)})).await;
        assert_eq!(st, 201, "{t}");
        let (st, r, _) = s.post("/v1/customers/P1/destinations", Some("auth"),
            &json!({"destination": dest, "stepup_token": t["token"], "ip": "203.0.113.5", "device_id": "d-1"})).await;
        assert_eq!(st, 201, "{r}");
        let (_, _, body) = smtp.wait_for(0, "destination registered").await;
        assert!(body.contains("****111") && !body.contains("1111111") && report_link(&body).is_some(), "{body}");
        let expect = if r["status"] == "pending_review" { "destination_pending_review" } else { "destination_cooling_off" };
        for (account, why) in [("1111111", expect), ("9999999", "destination_not_registered")] {
            let (_, b, _) = s.post("/v1/assess", Some("client"), &json!({
                "event_id": format!("mail-{account}"), "customer_id": "P1", "kind": "withdrawal",
                "channel": "web", "ip": "203.0.113.77", "amount": 5_000,
                "destination": {"bank_code": "0005", "branch_code": "001", "account_type": "ordinary",
                                "account_number": account, "holder_kana": "ﾔﾏﾀﾞ ﾀﾛｳ"}})).await;
            assert_eq!((b["decision"].as_str(), b["reasons"][0]["code"].as_str()), (Some("block"), Some(why)), "{b}");
            assert!(!b.to_string().contains(account), "unmasked: {b}");
        }

        // Staff see every notice, sent; the audit log has the reports and the freezes.
        for _ in 0..200 {
            let (_, n, _) = s.get("/v1/notices?customer=P1", Some("staff")).await;
            if n.as_array().unwrap().iter().all(|x| x["state"] == "sent") {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let (_, n, _) = s.get("/v1/notices?customer=P1", Some("staff")).await;
        let n = n.as_array().unwrap();
        assert!(n.iter().all(|x| x["state"] == "sent"), "{n:?}");
        assert!(n.len() >= 8, "{n:?}");
        assert!(!Value::Array(n.clone()).to_string().contains("example.co.jp"), "no addresses");
        assert_eq!(smtp.messages().len(), n.len());
        let (_, a, _) = s.get("/v1/audit?from=1&limit=1000", Some("staff")).await;
        let actions: Vec<&str> = a["entries"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
        for want in ["customer.report", "withdrawals.unfreeze", "withdrawals.freeze"] {
            assert!(actions.contains(&want), "{want} not audited: {actions:?}");
        }
        assert_eq!(actions.iter().filter(|a| **a == "customer.report").count(), 2);
        server.stop().await;
    });
}

/// A day's population prepared before the day starts and completed by its first attempt is the
/// population computed whole at that moment, less what was stored late (after the preparation,
/// dated before it); a day not prepared is computed whole.
#[test]
fn a_population_prepared_before_its_day_is_completed_as_the_day_starts() {
    use mamori_core::event::Channel;
    use mamori_core::time::{DAY_US, HOUR_US, MINUTE_US};
    use mamori_store::assess::{population, tokyo_day_start};
    let dir = tempfile::tempdir().expect("tempdir");
    runtime().block_on(async {
        let login = |n: u32, at: i64, ip: &str| Event {
            event_id: format!("l{n}"),
            occurred_at: at,
            customer_id: format!("C{}", n % 7),
            kind: Kind::Login,
            channel: Channel::Web,
            ip: Some(ip.parse().expect("ip")),
            user_agent: Some(format!(
                "Mozilla/5.0 (Windows NT 10.0) Firefox/{}.0",
                70 + n % 3
            )),
            device_id: None,
            amount: None,
            side: None,
            destination: None,
        };
        // 2020-07-01 00:00 in Tokyo.
        let day = tokyo_day_start(1_593_529_200 * 1_000_000 + 12 * HOUR_US);
        let upto = day - 10 * MINUTE_US;
        let early: Vec<Event> = (0..50)
            .map(|n| login(n, upto - i64::from(n + 1) * HOUR_US, "203.0.113.5"))
            .collect();
        let last = [
            login(100, upto, "198.51.100.7"),
            login(101, day - 1, "198.51.100.8"),
        ];
        let late = login(102, upto - HOUR_US, "192.0.2.9");
        let of_the_day = login(103, day + 1, "192.0.2.10");
        let store = SqliteStore::open(&dir.path().join("p.db"))
            .await
            .expect("open");
        store.insert_events(&early).await.expect("insert");
        let state = AppState::new(
            store.clone(),
            Policy::default(),
            Arc::new(NoIntel),
            Server::default(),
            None,
        );
        state.prepare_population(day, upto).await.expect("prepare");
        store
            .insert_events(&[&last[..], &[late, of_the_day.clone()]].concat())
            .await
            .expect("insert");
        let prepared = state.population(day + HOUR_US).await.expect("population");

        // The same logins but the late one, computed whole.
        let control = SqliteStore::open(&dir.path().join("c.db"))
            .await
            .expect("open");
        control
            .insert_events(&[&early[..], &last[..], &[of_the_day]].concat())
            .await
            .expect("insert");
        let policy = Policy::default();
        let whole = population(&control, day, &policy, &NoIntel)
            .await
            .expect("whole");
        assert_eq!(whole.logins, 52);
        assert_eq!(*prepared, whole, "prepared, then the last logins added");
        // Asked again, the day's population is kept.
        let again = state.population(day + 2 * HOUR_US).await.expect("again");
        assert!(Arc::ptr_eq(&prepared, &again));

        // The next day was not prepared: computed whole, the late login with it.
        let next = state.population(day + DAY_US).await.expect("next");
        let next_whole = population(&store, day + DAY_US, &policy, &NoIntel)
            .await
            .expect("whole");
        assert_eq!(next.logins, 54);
        assert_eq!(*next, next_whole);
    });
}
