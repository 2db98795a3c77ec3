//! The storage test suite every backend runs (lldap style): call [`run_all`] on a fresh, empty
//! store. Panics with a message on the first failed check.

use mamori_core::assess::{Past, ua_family_hash};
use mamori_core::event::{Channel, Destination, Event, Kind, Side};
use mamori_core::history::{IpUse, device_hash, ip_activity};
use mamori_core::net::{ip_key, net_range, parse_ip_or_net};
use mamori_core::time::parse_rfc3339;

use mamori_core::assess::Decision;
use mamori_core::case::{AlertStatus, Outcome, Resolution, Scope, Trigger};

use crate::{
    ApiKey, ApiKeys, AssessmentRecord, AuditLog, AuditNote, CaseError, Credentials, Customers,
    DecisionLog, Destinations, EventWriter, Freeze, Freezes, HistoryReader, Lockouts,
    LoginFeatures, MAX_NOTICE_ATTEMPTS, NoticeFilter, Outbox, PasskeyCeremony, Passkeys,
    RegisteredDestination, ReportLink, ReportRefusal, Reports, Retention, SecondFactors,
    StepUpGrant, StepUps, StoredPasskey, Switches,
};

/// A small event for tests.
pub fn ev(id: &str, at: &str, customer: &str, kind: Kind, ip: Option<&str>) -> Event {
    let at = parse_rfc3339(at).unwrap_or_else(|e| panic!("bad test time {at}: {e}"));
    Event {
        event_id: id.into(),
        occurred_at: at,
        customer_id: customer.into(),
        kind,
        channel: if ip.is_some() {
            Channel::Web
        } else {
            Channel::SupportCenter
        },
        ip: ip.map(|s| s.parse().unwrap_or_else(|_| panic!("bad test ip {s}"))),
        user_agent: None,
        device_id: ip.map(|_| format!("dev-{customer}")),
        amount: None,
        side: None,
        destination: None,
    }
}

/// Every check, in order, on one fresh store.
pub async fn run_all<
    S: EventWriter
        + HistoryReader
        + Retention
        + DecisionLog
        + ApiKeys
        + Customers
        + AuditLog
        + Switches
        + Credentials
        + SecondFactors
        + Lockouts
        + StepUps
        + Destinations
        + Outbox
        + Reports
        + Freezes
        + Passkeys
        + crate::Policies,
>(
    s: &S,
) {
    idempotent_insert(s).await;
    round_trip(s).await;
    windows_and_ips(s).await;
    procedures_and_purge(s).await;
    login_features(s).await;
    decision_log(s).await;
    api_keys(s).await;
    customers_audit_and_switches(s).await;
    passwords(s).await;
    second_factors(s).await;
    lockouts(s).await;
    stepups(s).await;
    destinations(s).await;
    outbox(s).await;
    reports_and_freezes(s).await;
    passkeys(s).await;
    policies(s).await;
}

async fn policies<S: crate::Policies + AuditLog>(s: &S) {
    assert_eq!(s.policy().await.unwrap(), None);
    assert_eq!(s.policy_revision().await.unwrap(), None);
    let note = |detail: &str| AuditNote {
        actor: "cli:risk".into(),
        action: "policy.set".into(),
        target: String::new(),
        detail: serde_json::json!({ "reason": detail }),
    };
    let r1 = s
        .set_policy(
            "chain_hours = 48\n",
            1_000,
            "cli:risk",
            "first",
            &note("first"),
        )
        .await
        .unwrap();
    assert_eq!(r1, 1);
    let r2 = s
        .set_policy(
            "chain_hours = 24\n",
            2_000,
            "cli:risk",
            "second",
            &note("second"),
        )
        .await
        .unwrap();
    assert_eq!(r2, 2);
    assert_eq!(s.policy_revision().await.unwrap(), Some(2));
    assert_eq!(
        s.policy().await.unwrap(),
        Some(crate::StoredPolicy {
            revision: 2,
            body: "chain_hours = 24\n".into(),
            set_at: 2_000,
            set_by: "cli:risk".into(),
            reason: "second".into(),
        })
    );
    let audit = s.audit_entries(0, 10_000).await.unwrap();
    let targets: Vec<&str> = audit
        .iter()
        .filter(|e| e.action == "policy.set")
        .map(|e| e.target.as_str())
        .collect();
    assert_eq!(targets, ["policy:1", "policy:2"]);
}

async fn passkeys<S: Passkeys + AuditLog + Outbox>(s: &S) {
    let ceremony = |id: &str, who: &str, purpose: &str, at: i64, until: i64| PasskeyCeremony {
        ceremony_id: id.into(),
        customer_id: who.into(),
        purpose: purpose.into(),
        state: format!("{{\"challenge\":\"{id}\"}}"),
        created_at: at,
        expires_at: until,
    };
    let reg = ceremony("c1", "K1", "register", 100, 400);
    s.save_ceremony(&reg).await.unwrap();
    s.save_ceremony(&ceremony("c2", "K1", "authenticate", 100, 400))
        .await
        .unwrap();
    s.save_ceremony(&ceremony("c3", "K1", "authenticate", 100, 150))
        .await
        .unwrap();
    // Another customer, another purpose: not theirs to take, and still there for the right one.
    assert_eq!(
        s.take_ceremony("c1", "K2", "register", 200).await.unwrap(),
        None
    );
    assert_eq!(
        s.take_ceremony("c1", "K1", "authenticate", 200)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        s.take_ceremony("c1", "K1", "register", 200).await.unwrap(),
        Some(reg.clone())
    );
    // Once only.
    assert_eq!(
        s.take_ceremony("c1", "K1", "register", 201).await.unwrap(),
        None
    );
    // Expired at its expiry, and gone for good (even for a node whose clock is behind).
    assert_eq!(
        s.take_ceremony("c2", "K1", "authenticate", 400)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        s.take_ceremony("c2", "K1", "authenticate", 300)
            .await
            .unwrap(),
        None
    );
    // A new ceremony clears the expired ones.
    s.save_ceremony(&ceremony("c4", "K1", "authenticate", 200, 500))
        .await
        .unwrap();
    assert_eq!(
        s.take_ceremony("c3", "K1", "authenticate", 120)
            .await
            .unwrap(),
        None
    );
    assert!(
        s.take_ceremony("c4", "K1", "authenticate", 499)
            .await
            .unwrap()
            .is_some()
    );

    let note = |action: &str, cred: &str| AuditNote {
        actor: "customer:K1".into(),
        action: action.into(),
        target: "customer:K1".into(),
        detail: serde_json::json!({"credential": "passkey", "credential_id": cred}),
    };
    let key = |who: &str, cred: &str, at: i64| StoredPasskey {
        customer_id: who.into(),
        credential_id: cred.into(),
        name: format!("device {cred}"),
        passkey: format!("{{\"cred_id\":\"{cred}\",\"counter\":0}}"),
        counter: 0,
        created_at: at,
        last_used_at: None,
    };
    let before = s.audit_head().await.unwrap().map_or(0, |h| h.0);
    assert!(
        s.add_passkey(&key("K1", "AAAA", 10), &note("credential.change", "AAAA"))
            .await
            .unwrap()
    );
    // One credential, one customer: not again, not for another, and not audited.
    assert!(
        !s.add_passkey(&key("K1", "AAAA", 11), &note("credential.change", "AAAA"))
            .await
            .unwrap()
    );
    assert!(
        !s.add_passkey(&key("K2", "AAAA", 11), &note("credential.change", "AAAA"))
            .await
            .unwrap()
    );
    assert!(
        s.add_passkey(&key("K1", "BBBB", 20), &note("credential.change", "BBBB"))
            .await
            .unwrap()
    );
    assert_eq!(s.audit_head().await.unwrap().map(|h| h.0), Some(before + 2));
    let got = s.passkeys("K1").await.unwrap();
    assert_eq!(got, vec![key("K1", "AAAA", 10), key("K1", "BBBB", 20)]);
    assert!(s.passkeys("K2").await.unwrap().is_empty());

    // The counter only rises: the same counter twice, a lower one or a reset to 0 is refused.
    let use_ = |cred: &'static str, counter: u32, at: i64| {
        s.use_passkey("K1", cred, "{\"updated\":true}", counter, at)
    };
    assert!(use_("AAAA", 5, 30).await.unwrap());
    assert!(!use_("AAAA", 5, 31).await.unwrap());
    assert!(!use_("AAAA", 3, 32).await.unwrap());
    assert!(!use_("AAAA", 0, 33).await.unwrap());
    assert!(
        !s.use_passkey("K2", "AAAA", "{}", 9, 34).await.unwrap(),
        "another customer's passkey"
    );
    assert!(!use_("CCCC", 1, 35).await.unwrap(), "no such passkey");
    assert!(use_("AAAA", 6, 36).await.unwrap());
    // No counter kept by the authenticator: each use is noted.
    assert!(use_("BBBB", 0, 37).await.unwrap());
    assert!(use_("BBBB", 0, 38).await.unwrap());
    let got = s.passkeys("K1").await.unwrap();
    assert_eq!(
        (got[0].counter, got[0].last_used_at, got[0].passkey.as_str()),
        (6, Some(36), "{\"updated\":true}")
    );
    assert_eq!((got[1].counter, got[1].last_used_at), (0, Some(38)));

    // Removal: only the customer's own, once, audited.
    let head = s.audit_head().await.unwrap().map_or(0, |h| h.0);
    assert!(
        !s.remove_passkey("K2", "AAAA", 40, &note("credential.change", "AAAA"))
            .await
            .unwrap()
    );
    assert!(
        s.remove_passkey("K1", "AAAA", 41, &note("credential.removed", "AAAA"))
            .await
            .unwrap()
    );
    assert!(
        !s.remove_passkey("K1", "AAAA", 42, &note("credential.change", "AAAA"))
            .await
            .unwrap()
    );
    assert_eq!(s.audit_head().await.unwrap().map(|h| h.0), Some(head + 1));
    let last = s.audit_entries(head + 1, 10).await.unwrap();
    assert_eq!(
        (last.len(), last[0].action.as_str(), last[0].at),
        (1, "credential.removed", 41)
    );
    assert!(last[0].detail.contains("AAAA"));
    assert_eq!(s.passkeys("K1").await.unwrap().len(), 1);
    // The credential id is free again once removed.
    assert!(
        s.add_passkey(&key("K2", "AAAA", 50), &note("credential.change", "AAAA"))
            .await
            .unwrap()
    );
    // K1 is told of two passkeys added and one removed (not of the refused attempts).
    let told: Vec<String> = s
        .notices(&NoticeFilter {
            customer_id: Some("K1".into()),
            given_up: false,
            limit: 10,
        })
        .await
        .unwrap()
        .into_iter()
        .map(|n| format!("{} {} {}", n.kind, n.detail["factor"], n.detail["change"]))
        .collect();
    assert_eq!(
        told,
        [
            "mfa_change \"passkey\" \"removed\"",
            "mfa_change \"passkey\" \"added\"",
            "mfa_change \"passkey\" \"added\""
        ]
    );
}

async fn destinations<S: Destinations + DecisionLog>(s: &S) {
    let dest = |n: &str| Destination {
        bank_code: "0005".into(),
        branch_code: "001".into(),
        account_type: "ordinary".into(),
        account_number: n.into(),
        holder_kana: String::new(),
    };
    let note = AuditNote {
        actor: "staff:ito".into(),
        action: "destination.register".into(),
        target: "customer:D1".into(),
        detail: serde_json::json!({}),
    };
    let reg = |id: &str, n: &str, decision: Decision, status: &str, effective_at| {
        let mut e = ev(
            id,
            "2021-06-01T10:00:00+09:00",
            "D1",
            Kind::DestinationChange,
            None,
        );
        e.destination = Some(dest(n));
        (
            record(&format!("a-{id}"), &e, decision),
            RegisteredDestination {
                destination: dest(n),
                status: status.into(),
                registered_at: e.occurred_at,
                effective_at,
                assessment_id: Some(format!("a-{id}")),
            },
        )
    };
    let (r1, d1) = reg("dd1", "1000001", Decision::Allow, "effective", Some(99));
    assert_eq!(
        s.register_destination(&r1, &d1, &serde_json::json!({}), &note)
            .await
            .unwrap(),
        None
    );
    let (r2, d2) = reg("dd2", "1000002", Decision::Hold, "pending_review", None);
    let held = s
        .register_destination(&r2, &d2, &serde_json::json!({}), &note)
        .await
        .unwrap();
    let (r3, d3) = reg("dd3", "1000003", Decision::Hold, "pending_review", None);
    let fraud = s
        .register_destination(&r3, &d3, &serde_json::json!({}), &note)
        .await
        .unwrap();
    let all = s.destinations("D1").await.unwrap();
    assert_eq!(all, vec![d1.clone(), d2.clone(), d3.clone()]);
    // The allowed change joined the history; the held ones wait for staff.
    assert_eq!(
        s.assessment("a-dd1").await.unwrap().map(|a| a.decision),
        Some(Decision::Allow)
    );
    s.resolve_alert(
        held.expect("an alert"),
        Resolution::Legitimate,
        "called",
        "ito",
        5,
    )
    .await
    .unwrap();
    s.resolve_alert(
        fraud.expect("an alert"),
        Resolution::ConfirmedFraud,
        "not them",
        "ito",
        6,
    )
    .await
    .unwrap();
    let status: Vec<String> = s
        .destinations("D1")
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.status)
        .collect();
    assert_eq!(status, ["effective", "effective", "refused"]);
}

async fn stepups<S: StepUps>(s: &S) {
    use mamori_auth::stepup::Refusal;
    let g = StepUpGrant {
        token_digest: "t1".into(),
        customer_id: "S1".into(),
        operation: "destination_change".into(),
        params_digest: "p1".into(),
        method: "totp".into(),
        created_at: 100,
        expires_at: 400,
    };
    let note = AuditNote {
        actor: "customer:S1".into(),
        action: "stepup.issue".into(),
        target: "customer:S1".into(),
        detail: serde_json::json!({"operation": "destination_change"}),
    };
    s.issue_stepup(&g, &note).await.unwrap();
    s.issue_stepup(
        &StepUpGrant {
            token_digest: "t2".into(),
            ..g.clone()
        },
        &note,
    )
    .await
    .unwrap();
    let c = |t: &'static str, who: &'static str, op: &'static str, p: &'static str, now: i64| {
        s.consume_stepup(t, who, op, p, now)
    };
    assert_eq!(
        c("nope", "S1", "destination_change", "p1", 200)
            .await
            .unwrap(),
        Err(Refusal::Unknown)
    );
    assert_eq!(
        c("t1", "S2", "destination_change", "p1", 200)
            .await
            .unwrap(),
        Err(Refusal::OtherCustomer)
    );
    assert_eq!(
        c("t1", "S1", "withdrawal", "p1", 200).await.unwrap(),
        Err(Refusal::OtherOperation)
    );
    assert_eq!(
        c("t1", "S1", "destination_change", "p2", 200)
            .await
            .unwrap(),
        Err(Refusal::OtherParameters)
    );
    assert_eq!(
        c("t1", "S1", "destination_change", "p1", 400)
            .await
            .unwrap(),
        Err(Refusal::Expired)
    );
    // Refusals do not use the token; the right use does, once.
    assert_eq!(
        c("t1", "S1", "destination_change", "p1", 399)
            .await
            .unwrap(),
        Ok(g.clone())
    );
    assert_eq!(
        c("t1", "S1", "destination_change", "p1", 399)
            .await
            .unwrap(),
        Err(Refusal::Used)
    );
    assert!(
        c("t2", "S1", "destination_change", "p1", 300)
            .await
            .unwrap()
            .is_ok()
    );
}

async fn lockouts<S: Lockouts + AuditLog + Outbox>(s: &S) {
    use mamori_auth::password::PasswordKind::{Login, Withdrawal};
    assert_eq!(s.failures("L1", Login).await.unwrap(), None);
    for i in 1..=3 {
        assert_eq!(s.add_failure("L1", Login, 100 + i).await.unwrap(), i as u32);
    }
    // Out of order: the last failure's time does not go back.
    assert_eq!(s.add_failure("L1", Login, 50).await.unwrap(), 4);
    assert_eq!(s.failures("L1", Login).await.unwrap(), Some((4, 103)));
    assert_eq!(s.failures("L1", Withdrawal).await.unwrap(), None);
    let before = s.audit_head().await.unwrap().map_or(0, |h| h.0);
    assert!(s.clear_failures("L1", Login, 200, None).await.unwrap());
    assert!(!s.clear_failures("L1", Login, 200, None).await.unwrap());
    assert_eq!(s.failures("L1", Login).await.unwrap(), None);
    let note = AuditNote {
        actor: "system".into(),
        action: "lockout".into(),
        target: "customer:L1".into(),
        detail: serde_json::json!({"kind": "login"}),
    };
    s.note_lockout(
        "L1",
        &serde_json::json!({"kind": "login", "until": 5}),
        300,
        &note,
    )
    .await
    .unwrap();
    s.add_failure("L1", Withdrawal, 310).await.unwrap();
    assert!(
        s.clear_failures("L1", Withdrawal, 320, Some(&note))
            .await
            .unwrap()
    );
    assert_eq!(s.audit_head().await.unwrap().map(|h| h.0), Some(before + 2));
    // L1's (earlier checks queued notices of their own customers).
    let l1 = |n: Vec<crate::Notice>| -> Vec<crate::Notice> {
        n.into_iter().filter(|n| n.customer_id == "L1").collect()
    };
    let n = l1(s.due_notices(1_000, 100).await.unwrap());
    assert_eq!(n.len(), 1);
    assert_eq!(
        (n[0].customer_id.as_str(), n[0].kind.as_str()),
        ("L1", "lockout")
    );
    assert_eq!(n[0].detail["until"], 5);
    assert_eq!(n[0].state(), "waiting");
    // A failure waits for its retry time.
    s.notice_result(n[0].notice_id, 400, Some("smtp down"), 500)
        .await
        .unwrap();
    assert!(l1(s.due_notices(499, 100).await.unwrap()).is_empty());
    let n = l1(s.due_notices(500, 100).await.unwrap());
    assert_eq!((n.len(), n[0].attempts, n[0].state()), (1, 1, "failing"));
    assert_eq!(n[0].last_error.as_deref(), Some("smtp down"));
    s.notice_result(n[0].notice_id, 510, None, 0).await.unwrap();
    assert!(l1(s.due_notices(i64::MAX, 100).await.unwrap()).is_empty());
    let log = s
        .notices(&NoticeFilter {
            customer_id: Some("L1".into()),
            given_up: false,
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(
        (log.len(), log[0].state(), log[0].sent_at),
        (1, "sent", Some(510))
    );
}

async fn outbox<S: Outbox>(s: &S) {
    let id = s
        .queue_notice(
            "O1",
            "mfa_change",
            &serde_json::json!({"x": 1}),
            Some("a-o1"),
            10,
        )
        .await
        .unwrap();
    let other = s
        .queue_notice("O2", "lockout", &serde_json::json!({}), None, 11)
        .await
        .unwrap();
    assert_ne!(id, other);
    for i in 0..MAX_NOTICE_ATTEMPTS {
        let due = s.due_notices(i64::MAX - 1, 100).await.unwrap();
        assert!(due.iter().any(|n| n.notice_id == id), "attempt {i}");
        s.notice_result(id, 20 + i64::from(i), Some("550 no"), 0)
            .await
            .unwrap();
    }
    // Given up after the last attempt, whatever its retry time said.
    let due = s.due_notices(i64::MAX - 1, 100).await.unwrap();
    assert!(due.iter().all(|n| n.notice_id != id));
    assert!(due.iter().any(|n| n.notice_id == other));
    let given_up = s
        .notices(&NoticeFilter {
            customer_id: None,
            given_up: true,
            limit: 100,
        })
        .await
        .unwrap();
    assert_eq!(given_up.len(), 1);
    let n = &given_up[0];
    assert_eq!(
        (
            n.notice_id,
            n.state(),
            n.attempts,
            n.assessment_id.as_deref()
        ),
        (id, "given_up", MAX_NOTICE_ATTEMPTS, Some("a-o1"))
    );
    let o2 = s
        .notices(&NoticeFilter {
            customer_id: Some("O2".into()),
            given_up: false,
            limit: 100,
        })
        .await
        .unwrap();
    assert_eq!(o2.len(), 1);
    assert_eq!(o2[0].kind, "lockout");
}

async fn second_factors<S: SecondFactors + AuditLog + Outbox>(s: &S) {
    let note = AuditNote {
        actor: "customer:T1".into(),
        action: "credential.change".into(),
        target: "customer:T1".into(),
        detail: serde_json::json!({"credential": "totp"}),
    };
    assert_eq!(s.totp("T1").await.unwrap(), None);
    assert!(
        s.begin_totp("T1", b"first-secret-0123456", 1)
            .await
            .unwrap()
    );
    // Not confirmed: steps are not accepted, and a new enrolment replaces it.
    assert!(!s.use_totp_step("T1", 100).await.unwrap());
    assert!(
        s.begin_totp("T1", b"second-secret-012345", 2)
            .await
            .unwrap()
    );
    let t = s.totp("T1").await.unwrap().unwrap();
    assert_eq!(
        (t.secret.as_slice(), t.confirmed_at),
        (&b"second-secret-012345"[..], None)
    );
    let digests: Vec<String> = (0..10).map(|i| format!("d{i}")).collect();
    assert!(s.confirm_totp("T1", 100, &digests, 3, &note).await.unwrap());
    assert!(
        !s.confirm_totp("T1", 101, &digests, 3, &note).await.unwrap(),
        "confirmed once"
    );
    // Confirmed: no silent replacement.
    assert!(
        !s.begin_totp("T1", b"third-secret-0123456", 4)
            .await
            .unwrap()
    );
    let t = s.totp("T1").await.unwrap().unwrap();
    assert_eq!((t.confirmed_at, t.last_step), (Some(3), Some(100)));
    // Each step once, and never an older one.
    assert!(!s.use_totp_step("T1", 100).await.unwrap());
    assert!(s.use_totp_step("T1", 101).await.unwrap());
    assert!(!s.use_totp_step("T1", 101).await.unwrap());
    assert!(!s.use_totp_step("T1", 99).await.unwrap());
    assert!(!s.use_totp_step("nobody", 500).await.unwrap());
    // Recovery codes: single use.
    assert_eq!(s.recovery_codes_left("T1").await.unwrap(), 10);
    assert!(s.use_recovery_code("T1", "d3", 5, &note).await.unwrap());
    assert!(!s.use_recovery_code("T1", "d3", 6, &note).await.unwrap());
    assert!(!s.use_recovery_code("T1", "nope", 6, &note).await.unwrap());
    assert_eq!(s.recovery_codes_left("T1").await.unwrap(), 9);
    let before = s.audit_head().await.unwrap().unwrap().0;
    assert!(s.remove_totp("T1", 7, &note).await.unwrap());
    assert!(!s.remove_totp("T1", 8, &note).await.unwrap());
    assert_eq!(s.totp("T1").await.unwrap(), None);
    assert_eq!(s.recovery_codes_left("T1").await.unwrap(), 0);
    assert_eq!(s.audit_head().await.unwrap().unwrap().0, before + 1);
    // The customer is told of the authenticator added and removed, once each.
    let told: Vec<(String, String)> = s
        .notices(&NoticeFilter {
            customer_id: Some("T1".into()),
            given_up: false,
            limit: 10,
        })
        .await
        .unwrap()
        .into_iter()
        .map(|n| (n.kind, n.detail["change"].as_str().unwrap_or("").to_owned()))
        .collect();
    assert_eq!(
        told,
        [
            ("mfa_change".to_owned(), "removed".to_owned()),
            ("mfa_change".to_owned(), "added".to_owned())
        ]
    );
}

async fn passwords<S: Credentials + AuditLog>(s: &S) {
    use mamori_auth::password::PasswordKind::{Login, Withdrawal};
    assert_eq!(s.password_hash("PW1", Login).await.unwrap(), None);
    let before = s.audit_head().await.unwrap().map_or(0, |h| h.0);
    let note = AuditNote {
        actor: "customer:PW1".into(),
        action: "credential.change".into(),
        target: "customer:PW1".into(),
        detail: serde_json::json!({"credential": "login_password"}),
    };
    s.set_password("PW1", Login, "$argon2id$a", 1, &note)
        .await
        .unwrap();
    s.set_password("PW1", Withdrawal, "$argon2id$w", 1, &note)
        .await
        .unwrap();
    s.set_password("PW1", Login, "$argon2id$b", 2, &note)
        .await
        .unwrap();
    assert_eq!(
        s.password_hash("PW1", Login).await.unwrap().as_deref(),
        Some("$argon2id$b")
    );
    assert_eq!(
        s.password_hash("PW1", Withdrawal).await.unwrap().as_deref(),
        Some("$argon2id$w")
    );
    // A rehash replaces only the hash it was computed from.
    assert!(
        !s.rehash_password("PW1", Login, "$argon2id$a", "$x")
            .await
            .unwrap()
    );
    assert!(
        s.rehash_password("PW1", Login, "$argon2id$b", "$argon2id$c")
            .await
            .unwrap()
    );
    assert_eq!(
        s.password_hash("PW1", Login).await.unwrap().as_deref(),
        Some("$argon2id$c")
    );
    // Every change audited, rehashes not (the password did not change).
    assert_eq!(s.audit_head().await.unwrap().map(|h| h.0), Some(before + 3));
}

async fn customers_audit_and_switches<S: Customers + AuditLog + Switches>(s: &S) {
    use mamori_core::customer::{SwitchChannel, SwitchState};
    use mamori_core::event::Destination;
    assert_eq!(
        s.audit_head().await.unwrap(),
        None,
        "a fresh store has no audit entries"
    );
    let dest = |n: &str| Destination {
        bank_code: "0001".into(),
        branch_code: "001".into(),
        account_type: "ordinary".into(),
        account_number: n.into(),
        holder_kana: "ﾔﾏﾀﾞ ﾀﾛｳ".into(),
    };
    let mut taro = mamori_core::customer::CustomerRecord {
        customer_id: "P1".into(),
        name: "山田 太郎".into(),
        name_kana: "ヤマダ タロウ".into(),
        birth_date: Some("1985-03-15".into()),
        phone: Some("090-1234-5678".into()),
        email: Some("taro@example.jp".into()),
        destinations: vec![dest("1234567")],
        ..Default::default()
    };
    let note = |action: &str| AuditNote {
        actor: "cli:test".into(),
        action: action.into(),
        target: "customers".into(),
        detail: serde_json::json!({"file": "c.csv"}),
    };
    assert_eq!(
        s.put_customers(std::slice::from_ref(&taro), 10, &note("customers.import"))
            .await
            .unwrap(),
        (1, 0)
    );
    assert_eq!(s.customer("P1").await.unwrap().as_ref(), Some(&taro));
    assert_eq!(s.customer("nobody").await.unwrap(), None);
    // A second import updates personal data and adds destinations, keeping the first.
    taro.address = Some("東京都千代田区丸の内1-1-1".into());
    taro.destinations = vec![dest("7654321")];
    assert_eq!(
        s.put_customers(std::slice::from_ref(&taro), 20, &note("customers.import"))
            .await
            .unwrap(),
        (0, 1)
    );
    let got = s.customer("P1").await.unwrap().unwrap();
    assert_eq!(got.address, taro.address);
    assert_eq!(got.destinations, vec![dest("1234567"), dest("7654321")]);
    assert_eq!(s.customer_count().await.unwrap(), 1);

    let off = SwitchState {
        procedure: Kind::DestinationChange,
        channel: SwitchChannel::Web,
        enabled: false,
        reason: "takeover wave".into(),
        actor: "staff:sato".into(),
        changed_at: 30,
    };
    let flip = AuditNote {
        actor: "staff:sato".into(),
        action: "switch.set".into(),
        target: "destination_change/web".into(),
        detail: serde_json::json!({"enabled": false, "reason": "takeover wave"}),
    };
    s.set_switch(&off, &flip).await.unwrap();
    let on = SwitchState {
        enabled: true,
        changed_at: 40,
        ..off.clone()
    };
    s.set_switch(&on, &flip).await.unwrap();
    s.set_switch(
        &SwitchState {
            procedure: Kind::Withdrawal,
            channel: SwitchChannel::App,
            ..off.clone()
        },
        &flip,
    )
    .await
    .unwrap();
    let all = s.switches().await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0], on);
    assert_eq!(all[1].procedure, Kind::Withdrawal);

    // Every write above is one chained entry: 2 imports, 3 flips.
    s.audit(&note("personal.reveal"), 50).await.unwrap();
    let entries = s.audit_entries(1, 100).await.unwrap();
    let actions: Vec<&str> = entries.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "customers.import",
            "customers.import",
            "switch.set",
            "switch.set",
            "switch.set",
            "personal.reveal"
        ]
    );
    assert!(
        entries[0].detail.contains("\"added\":1"),
        "{}",
        entries[0].detail
    );
    let head = s.audit_head().await.unwrap().unwrap();
    assert_eq!(head, (6, entries[5].hash.clone()));
    assert_eq!(
        mamori_auth::audit::verify(&entries, Some((head.0, &head.1))),
        Ok(6)
    );
    assert_eq!(s.audit_entries(5, 1).await.unwrap()[0].seq, 5);
}

async fn login_features<S: EventWriter + HistoryReader>(s: &S) {
    let chrome = "Mozilla/5.0 (Windows NT 10.0) AppleWebKit/537.36 Chrome/85.0 Safari/537.36";
    let mut a = ev(
        "lf1",
        "2021-05-01T10:00:00+09:00",
        "lf",
        Kind::Login,
        Some("192.0.2.50"),
    );
    a.user_agent = Some(chrome.into());
    let b = ev(
        "lf2",
        "2021-05-02T10:00:00+09:00",
        "lf",
        Kind::Login,
        Some("192.0.2.51"),
    );
    let fail = ev(
        "lf3",
        "2021-05-02T10:01:00+09:00",
        "lg",
        Kind::LoginFailed,
        Some("192.0.2.52"),
    );
    let late = ev(
        "lf4",
        "2021-05-03T10:00:00+09:00",
        "lg",
        Kind::Login,
        Some("192.0.2.53"),
    );
    s.insert_events(&[a.clone(), b.clone(), fail, late.clone()])
        .await
        .expect("insert");
    let mut got = s
        .login_features(a.occurred_at, late.occurred_at)
        .await
        .expect("login features");
    got.sort();
    let f = |e: &Event, ua| LoginFeatures {
        at: e.occurred_at,
        ip: e.ip.map(ip_key),
        ua,
    };
    assert_eq!(
        got,
        vec![f(&a, Some(ua_family_hash(chrome))), f(&b, None)],
        "successful logins inside the window only"
    );
}

async fn idempotent_insert<S: EventWriter + HistoryReader>(s: &S) {
    let batch = vec![
        ev(
            "i1",
            "2020-01-01T10:00:00+09:00",
            "ci",
            Kind::Login,
            Some("192.0.2.1"),
        ),
        ev(
            "i2",
            "2020-01-01T10:01:00+09:00",
            "ci",
            Kind::Trade,
            Some("192.0.2.1"),
        ),
        ev(
            "i1",
            "2020-01-01T10:02:00+09:00",
            "ci",
            Kind::Logout,
            Some("192.0.2.1"),
        ),
    ];
    let r = s.insert_events(&batch).await.expect("insert");
    assert_eq!(
        (r.inserted, r.duplicates),
        (2, 1),
        "duplicate inside a batch"
    );
    let r = s.insert_events(&batch).await.expect("insert again");
    assert_eq!((r.inserted, r.duplicates), (0, 3), "re-insert adds nothing");
    assert_eq!(s.count_events().await.expect("count"), 2);
    let kept = s
        .customer_events("ci", 0, i64::MAX)
        .await
        .expect("customer events");
    assert_eq!(
        kept[0].kind,
        Kind::Login,
        "the first copy of an event id wins"
    );
    // The same id for another customer is another event: neither is lost.
    let other = ev(
        "i1",
        "2020-01-01T10:00:00+09:00",
        "cj",
        Kind::Login,
        Some("192.0.2.1"),
    );
    let r = s
        .insert_events(&[other])
        .await
        .expect("insert for another customer");
    assert_eq!(
        (r.inserted, r.duplicates),
        (1, 0),
        "same id, other customer"
    );
    assert_eq!(s.count_events().await.expect("count"), 3);
    let again = ev(
        "i1",
        "2020-01-01T10:00:00+09:00",
        "cj",
        Kind::Login,
        Some("192.0.2.1"),
    );
    let r = s.insert_events(&[again]).await.expect("insert again");
    assert_eq!((r.inserted, r.duplicates), (0, 1));
}

async fn round_trip<S: EventWriter + HistoryReader>(s: &S) {
    let mut e = ev(
        "r1",
        "2020-03-01T12:34:56.789012+09:00",
        "cr",
        Kind::DestinationChange,
        Some("2001:db8:1:2::7"),
    );
    e.user_agent = Some("Mozilla/5.0 (iPhone)".into());
    e.destination = Some(Destination {
        bank_code: "0005".into(),
        branch_code: "123".into(),
        account_type: "ordinary".into(),
        account_number: "7654321".into(),
        holder_kana: "ヤマダ タロウ".into(),
    });
    let mut w = ev(
        "r2",
        "2020-03-01T12:40:00+09:00",
        "cr",
        Kind::Withdrawal,
        Some("198.51.100.9"),
    );
    w.amount = Some(1_250_000);
    let mut t = ev(
        "r3",
        "2020-03-01T12:39:00+09:00",
        "cr",
        Kind::Trade,
        Some("198.51.100.9"),
    );
    t.amount = Some(3_000_000);
    t.side = Some(Side::Sell);
    let p = ev(
        "r4",
        "2020-03-02T09:00:00+09:00",
        "cr",
        Kind::AddressChange,
        None,
    );
    let all = vec![w, e, p, t];
    s.insert_events(&all).await.expect("insert");
    let mut want = all.clone();
    want.sort_by_key(|e| e.occurred_at);
    let got = s.customer_events("cr", 0, i64::MAX).await.expect("read");
    assert_eq!(got, want, "events come back whole, in time order");
    let past = s.customer_past("cr", 0, i64::MAX).await.expect("past");
    assert_eq!(
        past,
        want.iter().map(Past::of).collect::<Vec<_>>(),
        "the engine's records are those of the events"
    );
    assert!(past[0].ua.is_some() && past[1].ua.is_none());
    let late = s
        .customer_past("cr", want[1].occurred_at, want[3].occurred_at)
        .await
        .expect("past window");
    assert_eq!(late, vec![Past::of(&want[1]), Past::of(&want[2])]);
    let acc = s
        .customer_accesses(&["cr"], 0, i64::MAX)
        .await
        .expect("accesses");
    assert_eq!(acc.len(), 4);
    let dc = acc
        .iter()
        .find(|(_, a)| a.kind == Kind::DestinationChange)
        .expect("dc");
    assert_eq!(
        dc.1.ip,
        Some(ip_key("2001:db8:1:2::7".parse().expect("ip")))
    );
    assert_eq!(dc.1.device, Some(device_hash("dev-cr")));
    let paper = acc
        .iter()
        .find(|(_, a)| a.kind == Kind::AddressChange)
        .expect("paper");
    assert_eq!(
        (paper.1.ip, paper.1.channel),
        (None, Channel::SupportCenter)
    );
}

async fn windows_and_ips<S: EventWriter + HistoryReader>(s: &S) {
    let batch = vec![
        ev(
            "w1",
            "2020-05-01T00:00:00+09:00",
            "wa",
            Kind::Login,
            Some("203.0.113.5"),
        ),
        ev(
            "w2",
            "2020-05-02T00:00:00+09:00",
            "wa",
            Kind::Login,
            Some("203.0.113.6"),
        ),
        ev(
            "w3",
            "2020-05-03T00:00:00+09:00",
            "wb",
            Kind::LoginFailed,
            Some("203.0.113.5"),
        ),
        ev(
            "w4",
            "2020-05-04T00:00:00+09:00",
            "wc",
            Kind::Login,
            Some("203.0.114.5"),
        ),
        ev(
            "w5",
            "2020-05-05T00:00:00+09:00",
            "wb",
            Kind::Login,
            Some("203.0.113.5"),
        ),
    ];
    s.insert_events(&batch).await.expect("insert");
    let t = |x: &str| parse_rfc3339(x).expect("time");
    // Half-open windows: from ≤ at < to.
    let a = s
        .customer_accesses(
            &["wa", "wb"],
            t("2020-05-01T00:00:00+09:00"),
            t("2020-05-05T00:00:00+09:00"),
        )
        .await
        .expect("accesses");
    let mut ids: Vec<(String, i64)> = a.iter().map(|(c, x)| (c.clone(), x.at)).collect();
    ids.sort();
    assert_eq!(
        ids,
        vec![
            ("wa".into(), batch[0].occurred_at),
            ("wa".into(), batch[1].occurred_at),
            ("wb".into(), batch[2].occurred_at),
        ]
    );
    let k = ip_key("203.0.113.5".parse().expect("ip"));
    // Several windows in one call, two of them with edges inside a day: each window's uses add
    // up to exactly its events (w1, w3, w5 are on 203.0.113.5).
    let (w3, w5) = (batch[2].occurred_at, batch[4].occurred_at);
    let windows = [(k, 0, i64::MAX), (k, w3, w5), (k, w3 + 1, w5 + 1)];
    let uses = s.ip_uses(&windows).await.expect("ip uses");
    let activity = |(ip, from, to): (u128, i64, i64)| {
        let inside: Vec<&IpUse<String>> = uses
            .iter()
            .filter(|(i, u)| *i == ip && from <= u.at && u.at < to)
            .map(|(_, u)| u)
            .collect();
        let act = ip_activity(&"wa".to_owned(), inside.iter().copied());
        (
            act.other_customers,
            act.failed_login_accounts,
            act.failed_logins,
            act.logins,
        )
    };
    assert_eq!(activity(windows[0]), (1, 1, 1, 2), "w1, w3, w5");
    assert_eq!(activity(windows[1]), (1, 1, 1, 0), "w3 only");
    assert_eq!(activity(windows[2]), (1, 0, 0, 1), "w5 only");
    assert!(
        uses.iter().all(|(ip, _)| *ip == k),
        "uses of the asked IP only"
    );
    // The same over the /24: w1, w2 (another address of it), w3, w5, never 203.0.114.5; whole
    // windows, and one with an edge inside w3's day; each use labelled with the window's lo.
    let (lo, hi) = net_range(parse_ip_or_net("203.0.113.0/24").expect("net"));
    let w1 = batch[0].occurred_at;
    let nets = [(lo, hi, 0, i64::MAX), (lo, hi, w1 + 1, w3 + 1)];
    let uses = s.net_uses(&nets).await.expect("net uses");
    assert!(uses.iter().all(|(l, _)| *l == lo), "labelled with lo");
    let net_activity = |(_, _, from, to): (u128, u128, i64, i64)| {
        let act = ip_activity(
            &"wa".to_owned(),
            uses.iter()
                .filter(|(_, u)| from <= u.at && u.at < to)
                .map(|(_, u)| u),
        );
        (act.other_customers, act.failed_login_accounts, act.logins)
    };
    assert_eq!(net_activity(nets[0]), (1, 1, 3), "w1, w2, w3, w5");
    assert_eq!(net_activity(nets[1]), (1, 1, 1), "w2 and w3");
    let in_net = s.ip_range_events(lo, hi, 0, i64::MAX).await.expect("range");
    assert_eq!(
        in_net.len(),
        4,
        "the /24 holds w1, w2, w3, w5 but not 203.0.114.5"
    );
    let (lo, hi) = net_range(parse_ip_or_net("2001:db8:1::/48").expect("net"));
    assert_eq!(
        s.ip_range_events(lo, hi, 0, i64::MAX)
            .await
            .expect("v6")
            .len(),
        1
    );
}

async fn procedures_and_purge<S: EventWriter + HistoryReader + Retention>(s: &S) {
    let t = |x: &str| parse_rfc3339(x).expect("time");
    let procs = s
        .procedures(
            Kind::DestinationChange,
            t("2020-03-01T00:00:00+09:00"),
            t("2020-03-02T00:00:00+09:00"),
        )
        .await
        .expect("procedures");
    assert_eq!(procs.len(), 1);
    assert_eq!(procs[0].event_id, "r1");
    assert_eq!(procs[0].device, Some(device_hash("dev-cr")));
    let before = s.count_events().await.expect("count");
    let cut = t("2020-03-01T12:39:30+09:00");
    let purged = s.purge_before(cut).await.expect("purge");
    assert_eq!(
        purged, 5,
        "i1 (of ci and of cj), i2, r1 and r3 are older than the cut"
    );
    assert_eq!(s.count_events().await.expect("count"), before - purged);
    assert!(
        s.customer_accesses(&["cr"], 0, i64::MAX)
            .await
            .expect("accesses")
            .iter()
            .all(|(_, a)| a.at >= cut)
    );
}

fn record(id: &str, e: &Event, decision: Decision) -> AssessmentRecord {
    AssessmentRecord {
        assessment_id: id.into(),
        created_at: e.occurred_at,
        event: e.clone(),
        decision,
        score: 77,
        reasons: serde_json::json!([{"code": "unfamiliar_access", "points": 35}]),
        outcome: None,
        outcome_at: None,
    }
}

async fn decision_log<S: EventWriter + HistoryReader + DecisionLog>(s: &S) {
    let at = |t: &str| parse_rfc3339(t).expect("time");
    let stored = |c: &'static str| async move {
        s.customer_events(c, 0, i64::MAX)
            .await
            .expect("events")
            .into_iter()
            .map(|e| (e.event_id, e.kind))
            .collect::<Vec<_>>()
    };
    // allow: stored at once, no alert.
    let a = ev(
        "da1",
        "2021-02-01T10:00:00+09:00",
        "dl",
        Kind::Login,
        Some("192.0.2.10"),
    );
    assert_eq!(
        s.record_assessment(&record("as-1", &a, Decision::Allow))
            .await
            .expect("allow"),
        None
    );
    assert_eq!(stored("dl").await, vec![("da1".to_owned(), Kind::Login)]);
    let back = s.assessment("as-1").await.expect("read").expect("found");
    assert_eq!(
        back,
        record("as-1", &a, Decision::Allow),
        "the record comes back whole"
    );
    assert!(matches!(
        s.record_assessment(&record("as-1", &a, Decision::Allow))
            .await,
        Err(CaseError::DuplicateAssessment(_))
    ));
    // block: an alert, and nothing of the attempt in the history.
    let mut w = ev(
        "dw1",
        "2021-02-01T10:05:00+09:00",
        "dl",
        Kind::Withdrawal,
        Some("203.0.113.99"),
    );
    w.amount = Some(2_000_000);
    let alert = s
        .record_assessment(&record("as-2", &w, Decision::Block))
        .await
        .expect("block")
        .expect("an alert opens");
    assert_eq!(stored("dl").await.len(), 1);
    // A failed login challenge: stored as a failed login, and an alert.
    let l = ev(
        "da2",
        "2021-02-01T10:06:00+09:00",
        "dl",
        Kind::Login,
        Some("203.0.113.99"),
    );
    assert_eq!(
        s.record_assessment(&record("as-3", &l, Decision::Challenge))
            .await
            .expect("c"),
        None
    );
    assert_eq!(
        stored("dl").await.len(),
        1,
        "a challenge waits for its outcome"
    );
    let failed_alert = s
        .record_outcome(
            "as-3",
            Outcome::ChallengeFailed,
            at("2021-02-01T10:07:00+09:00"),
        )
        .await
        .expect("outcome")
        .expect("alert");
    assert_eq!(
        stored("dl").await,
        vec![
            ("da1".to_owned(), Kind::Login),
            ("da2".to_owned(), Kind::LoginFailed)
        ]
    );
    assert!(matches!(
        s.record_outcome("as-3", Outcome::ChallengePassed, 0).await,
        Err(CaseError::Outcome(_))
    ));
    assert!(matches!(
        s.record_outcome("nope", Outcome::Completed, 0).await,
        Err(CaseError::NoAssessment(_))
    ));
    // A passed challenge stores the event.
    let d = ev(
        "dd1",
        "2021-02-02T09:00:00+09:00",
        "dl",
        Kind::DestinationChange,
        Some("192.0.2.10"),
    );
    s.record_assessment(&record("as-4", &d, Decision::Challenge))
        .await
        .expect("c");
    assert_eq!(
        s.record_outcome("as-4", Outcome::ChallengePassed, d.occurred_at)
            .await
            .expect("o"),
        None
    );
    assert!(
        stored("dl")
            .await
            .contains(&("dd1".to_owned(), Kind::DestinationChange))
    );
    assert_eq!(
        s.assessment("as-4")
            .await
            .expect("read")
            .expect("found")
            .outcome,
        Some(Outcome::ChallengePassed)
    );

    // Alerts, newest first.
    let open = s.alerts(Some(AlertStatus::Open), 10).await.expect("alerts");
    assert_eq!(
        open.iter().map(|a| a.alert_id).collect::<Vec<_>>(),
        vec![failed_alert, alert]
    );
    assert_eq!(open[0].trigger, Trigger::ChallengeFailed);
    assert_eq!(open[1].trigger, Trigger::Block);
    assert_eq!(open[1].assessment.event.amount, Some(2_000_000));
    // Legitimate: the IP and device become familiar for the customer, from the resolution on.
    let t_res = at("2021-02-03T09:00:00+09:00");
    let r = s
        .resolve_alert(
            failed_alert,
            Resolution::Legitimate,
            "called the customer",
            "staff-1",
            t_res,
        )
        .await
        .expect("resolve");
    assert_eq!(
        (r.status, r.resolution),
        (AlertStatus::Resolved, Some(Resolution::Legitimate))
    );
    assert_eq!(r.resolved_by.as_deref(), Some("staff-1"));
    assert!(matches!(
        s.resolve_alert(failed_alert, Resolution::ConfirmedFraud, "", "x", t_res)
            .await,
        Err(CaseError::AlreadyResolved(_))
    ));
    assert!(matches!(
        s.resolve_alert(999_999, Resolution::Legitimate, "", "x", t_res)
            .await,
        Err(CaseError::NoAlert(_))
    ));
    let k = ip_key("203.0.113.99".parse().expect("ip"));
    let m = s.marks("dl", Some(k), t_res + 1, &[]).await.expect("marks");
    assert!(m.familiar_ips.contains(&k) && m.familiar_devices.contains(&device_hash("dev-dl")));
    assert!(!m.fraud_ip);
    let before = s.marks("dl", Some(k), t_res, &[]).await.expect("marks");
    assert!(before.familiar_ips.is_empty(), "marks are point-in-time");
    assert!(
        s.marks("other", Some(k), t_res + 1, &[])
            .await
            .expect("m")
            .familiar_ips
            .is_empty()
    );
    // Confirmed fraud: the IP is marked for everyone.
    s.resolve_alert(
        alert,
        Resolution::ConfirmedFraud,
        "bank confirmed",
        "staff-2",
        t_res,
    )
    .await
    .expect("resolve");
    let m = s
        .marks("someone", Some(k), t_res + 1, &[k, 7])
        .await
        .expect("marks");
    assert!(m.fraud_ip && m.familiar_ips.is_empty());
    assert_eq!(m.fraud_ips_on_customer, 1);
    assert_eq!(
        s.alerts(Some(AlertStatus::Open), 10)
            .await
            .expect("a")
            .len(),
        0
    );
    assert_eq!(s.alerts(None, 1).await.expect("a").len(), 1);
    assert_eq!(
        s.alert(alert)
            .await
            .expect("a")
            .expect("found")
            .note
            .as_deref(),
        Some("bank confirmed")
    );
    // Several in one transaction: each as if alone.
    let g1 = ev(
        "dg1",
        "2021-03-01T10:00:00+09:00",
        "dg",
        Kind::Login,
        Some("192.0.2.20"),
    );
    let g2 = ev(
        "dg2",
        "2021-03-01T10:01:00+09:00",
        "dg",
        Kind::Withdrawal,
        Some("192.0.2.20"),
    );
    let results = s
        .record_assessments(&[
            record("as-g1", &g1, Decision::Allow),
            record("as-g2", &g2, Decision::Hold),
            record("as-1", &g1, Decision::Allow),
        ])
        .await
        .expect("group");
    assert_eq!(results.len(), 3);
    assert!(matches!(results[0], Ok(None)));
    assert!(matches!(results[1], Ok(Some(_))));
    assert!(matches!(results[2], Err(CaseError::DuplicateAssessment(_))));
    assert_eq!(stored("dg").await, vec![("dg1".to_owned(), Kind::Login)]);
}

async fn api_keys<S: ApiKeys>(s: &S) {
    let key = ApiKey {
        key_id: "k1".into(),
        name: "core banking".into(),
        scopes: vec![Scope::Ingest, Scope::Assess],
        created_at: 1,
        revoked_at: None,
        last_used_at: None,
    };
    s.create_key(&key, &[7; 32]).await.expect("create");
    assert!(
        s.create_key(&key, &[8; 32]).await.is_err(),
        "ids are unique"
    );
    assert_eq!(
        s.find_key("k1").await.expect("find"),
        Some((key.clone(), [7; 32]))
    );
    assert_eq!(s.find_key("k2").await.expect("find"), None);
    s.touch_key("k1", 5).await.expect("touch");
    assert!(s.revoke_key("k1", 9).await.expect("revoke"));
    assert!(!s.revoke_key("k2", 9).await.expect("revoke"));
    let listed = s.list_keys().await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].revoked_at, listed[0].last_used_at),
        (Some(9), Some(5))
    );
}

async fn reports_and_freezes<
    S: Reports + Freezes + Outbox + DecisionLog + Customers + Destinations + AuditLog,
>(
    s: &S,
) {
    let person = |id: &str, email: Option<&str>| mamori_core::customer::CustomerRecord {
        customer_id: id.into(),
        name: "報告 太郎".into(),
        name_kana: "ホウコク タロウ".into(),
        birth_date: None,
        postal_code: None,
        address: None,
        phone: None,
        email: email.map(str::to_owned),
        destinations: Vec::new(),
    };
    let import = AuditNote {
        actor: "test".into(),
        action: "customers.import".into(),
        target: "customers".into(),
        detail: serde_json::json!({}),
    };
    s.put_customers(
        &[person("R1", Some("r1@example.jp")), person("R2", None)],
        1,
        &import,
    )
    .await
    .unwrap();
    let dest = Destination {
        bank_code: "0009".into(),
        branch_code: "001".into(),
        account_type: "ordinary".into(),
        account_number: "1234567".into(),
        holder_kana: String::new(),
    };
    let withdrawal = |id: &str, customer: &str, decision| {
        let mut e = ev(
            id,
            "2021-07-01T10:00:00+09:00",
            customer,
            Kind::Withdrawal,
            Some("198.51.100.7"),
        );
        e.amount = Some(2_345_678);
        e.destination = Some(dest.clone());
        record(&format!("a-{id}"), &e, decision)
    };
    let recs = [
        withdrawal("rw1", "R1", Decision::Allow),
        withdrawal("rw2", "R2", Decision::Allow),
        withdrawal("rw3", "R1", Decision::Hold),
    ];
    let alerts: Vec<Option<i64>> = s
        .record_assessments(&recs)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    // Withdrawals are told to customers with an e-mail address, masked.
    let r1 = |given_up| NoticeFilter {
        customer_id: Some("R1".into()),
        given_up,
        limit: 100,
    };
    let told = s.notices(&r1(false)).await.unwrap();
    assert_eq!(told.len(), 2, "{told:?}");
    assert!(told.iter().all(|n| n.kind == "withdrawal"));
    assert_eq!(told[1].assessment_id.as_deref(), Some("a-rw1"));
    assert_eq!(told[1].detail["amount"], 2_345_678);
    assert_eq!(told[1].detail["account_number"], "****567");
    assert!(!told[1].detail.to_string().contains("1234567"));
    assert!(
        s.notices(&NoticeFilter {
            customer_id: Some("R2".into()),
            given_up: false,
            limit: 100
        })
        .await
        .unwrap()
        .is_empty()
    );
    let link = |digest: &str, assessment: Option<&str>, expires_at| ReportLink {
        token_digest: digest.into(),
        customer_id: "R1".into(),
        notice_id: told[1].notice_id,
        notice_kind: "withdrawal".into(),
        assessment_id: assessment.map(str::to_owned),
        created_at: 100,
        expires_at,
        used_at: None,
    };
    s.add_report_link(&link("dig-w", Some("a-rw1"), 1_000))
        .await
        .unwrap();
    s.add_report_link(&link("dig-old", Some("a-rw1"), 200))
        .await
        .unwrap();
    // Another customer's assessment named in R1's link is not labelled.
    s.add_report_link(&link("dig-r2", Some("a-rw2"), 1_000))
        .await
        .unwrap();
    assert_eq!(
        s.report_link("dig-w").await.unwrap(),
        Some(link("dig-w", Some("a-rw1"), 1_000))
    );
    let why = AuditNote {
        actor: "customer:R1".into(),
        action: "customer.report".into(),
        target: "customer:R1".into(),
        detail: serde_json::json!({}),
    };
    let head = s.audit_head().await.unwrap().map_or(0, |h| h.0);
    assert_eq!(
        s.report("nope", 500, &why).await.unwrap(),
        Err(ReportRefusal::Unknown)
    );
    assert_eq!(
        s.report("dig-old", 500, &why).await.unwrap(),
        Err(ReportRefusal::Expired)
    );
    assert_eq!(s.frozen("R1").await.unwrap(), None);
    let done = s.report("dig-w", 500, &why).await.unwrap().unwrap();
    assert_eq!(done.customer_id, "R1");
    let alert = s
        .alert(done.alert_id.expect("an alert"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            alert.trigger,
            alert.status,
            alert.resolution,
            alert.resolved_by.as_deref(),
            alert.assessment.assessment_id.as_str()
        ),
        (
            Trigger::CustomerReport,
            AlertStatus::Resolved,
            Some(Resolution::ConfirmedFraud),
            Some("customer:R1"),
            "a-rw1"
        )
    );
    assert_eq!(
        s.report("dig-w", 501, &why).await.unwrap(),
        Err(ReportRefusal::Used)
    );
    let f = s.frozen("R1").await.unwrap().expect("frozen");
    assert_eq!((f.source.as_str(), f.frozen_at), ("customer_report", 500));
    assert_eq!(s.audit_head().await.unwrap().map(|h| h.0), Some(head + 1));
    let last = s.audit_entries(head + 1, 1).await.unwrap();
    assert!(last[0].detail.contains("a-rw1"), "{}", last[0].detail);
    // The reported IP now raises the risk of whoever it touches.
    let ip = ip_key("198.51.100.7".parse().unwrap());
    assert!(s.marks("X9", Some(ip), 600, &[]).await.unwrap().fraud_ip);
    let frozen_notices: Vec<_> = s
        .notices(&r1(false))
        .await
        .unwrap()
        .into_iter()
        .filter(|n| n.kind == "withdrawals_frozen")
        .collect();
    assert_eq!(frozen_notices.len(), 1);
    // R2's assessment in R1's link: R1 frozen (already), nothing of R2's labelled.
    let other = s.report("dig-r2", 510, &why).await.unwrap().unwrap();
    assert_eq!(other.alert_id, None);
    assert_eq!(s.frozen("R2").await.unwrap(), None);
    // A held withdrawal staff called legitimate: the customer's report relabels it.
    let held = alerts[2].expect("held");
    s.resolve_alert(held, Resolution::Legitimate, "called", "ito", 520)
        .await
        .unwrap();
    assert!(
        s.marks("R1", Some(ip), 530, &[])
            .await
            .unwrap()
            .familiar_ips
            .contains(&ip)
    );
    s.add_report_link(&link("dig-h", Some("a-rw3"), 1_000))
        .await
        .unwrap();
    let relabelled = s.report("dig-h", 540, &why).await.unwrap().unwrap();
    assert_eq!(relabelled.alert_id, Some(held));
    let a = s.alert(held).await.unwrap().unwrap();
    assert_eq!(a.resolution, Some(Resolution::ConfirmedFraud));
    assert!(
        !s.marks("R1", Some(ip), 550, &[])
            .await
            .unwrap()
            .familiar_ips
            .contains(&ip)
    );
    // A reported destination change: its destination is refused.
    let mut e = ev(
        "rd1",
        "2021-07-01T11:00:00+09:00",
        "R1",
        Kind::DestinationChange,
        Some("198.51.100.8"),
    );
    e.destination = Some(dest.clone());
    let reg = RegisteredDestination {
        destination: dest.clone(),
        status: "effective".into(),
        registered_at: e.occurred_at,
        effective_at: None,
        assessment_id: Some("a-rd1".into()),
    };
    s.register_destination(
        &record("a-rd1", &e, Decision::Allow),
        &reg,
        &serde_json::json!({}),
        &why,
    )
    .await
    .unwrap();
    let dn = s.notices(&r1(false)).await.unwrap();
    assert_eq!(dn[0].kind, "destination_change");
    assert_eq!(dn[0].assessment_id.as_deref(), Some("a-rd1"));
    s.add_report_link(&link("dig-d", Some("a-rd1"), 1_000))
        .await
        .unwrap();
    let r = s.report("dig-d", 560, &why).await.unwrap().unwrap();
    assert_eq!(r.destinations_refused, 1);
    let st: Vec<String> = s
        .destinations("R1")
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.status)
        .collect();
    assert_eq!(st, vec!["refused".to_owned()]);
    // Staff freeze and lift, audited once each.
    let staff = AuditNote {
        actor: "staff:ito".into(),
        action: "withdrawals.freeze".into(),
        target: "customer:R3".into(),
        detail: serde_json::json!({"reason": "call from the customer"}),
    };
    let head = s.audit_head().await.unwrap().map_or(0, |h| h.0);
    let fr = Freeze {
        customer_id: "R3".into(),
        frozen_at: 600,
        source: "staff".into(),
        actor: "staff:ito".into(),
        reason: "call from the customer".into(),
    };
    assert!(s.freeze(&fr, &staff).await.unwrap());
    assert!(!s.freeze(&fr, &staff).await.unwrap());
    assert_eq!(s.frozen("R3").await.unwrap(), Some(fr));
    assert!(s.unfreeze("R3", 610, &staff).await.unwrap());
    assert!(!s.unfreeze("R3", 611, &staff).await.unwrap());
    assert_eq!(s.frozen("R3").await.unwrap(), None);
    assert_eq!(s.audit_head().await.unwrap().map(|h| h.0), Some(head + 2));
}
