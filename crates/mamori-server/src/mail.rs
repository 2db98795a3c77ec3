//! E-mail notices: the outbox task that sends what the store queued (destination changes,
//! withdrawals, lockouts, second factors changed, frozen withdrawals) in Japanese then English,
//! masked, with a "this wasn't me" link where the customer can report a procedure that was not
//! theirs. SMTP through lettre (rustls); a failure is retried later, doubling the wait, and given
//! up after [`mamori_store::MAX_NOTICE_ATTEMPTS`] attempts. Addresses never reach the log.

use std::sync::Arc;
use std::time::Duration;

use lettre::message::{Mailbox, header::ContentType};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use mamori_core::time::format_tokyo;
use mamori_store::{Customers, Notice, Outbox, ReportLink, Reports};
use serde::Deserialize;
use serde_json::Value;

use crate::app::{AppState, now_us};

/// `[mail]`: how notices reach customers.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Mail {
    /// `smtp://host:port` (plain, or `?tls=required` for STARTTLS) or `smtps://host:port`, with
    /// `user:password@` if the relay wants it. Absent: notices wait in the outbox unsent.
    pub smtp_url: Option<String>,
    /// The sender, e.g. `"Example Securities <no-reply@example.co.jp>"`.
    pub from: String,
    /// The broker's name in messages.
    pub broker_name: String,
    /// Where customers reach `/report/…` ("this wasn't me" links), e.g. `https://mamori.example.co.jp`.
    pub link_base: String,
    /// How long a "this wasn't me" link works.
    pub report_link_days: u32,
    /// How often the outbox looks for notices to send.
    pub poll_ms: u64,
    /// The wait before the first retry of a failed notice; it doubles, up to an hour.
    pub retry_seconds: u64,
    /// One message's time limit.
    pub timeout_ms: u64,
}

impl Default for Mail {
    fn default() -> Self {
        Mail {
            smtp_url: None,
            from: "mamori <no-reply@localhost>".into(),
            broker_name: "mamori".into(),
            link_base: "http://127.0.0.1:8080".into(),
            report_link_days: 30,
            poll_ms: 1000,
            retry_seconds: 60,
            timeout_ms: 10_000,
        }
    }
}

impl Mail {
    /// Checks values a type cannot; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(u) = &self.smtp_url {
            AsyncSmtpTransport::<Tokio1Executor>::from_url(u)
                .map_err(|e| format!("smtp_url: {e}"))?;
        }
        self.from
            .parse::<Mailbox>()
            .map_err(|e| format!("from = {:?}: {e}", self.from))?;
        if !(self.link_base.starts_with("https://") || self.link_base.starts_with("http://")) {
            return Err(format!(
                "link_base = {:?}: an http:// or https:// address",
                self.link_base
            ));
        }
        if !(1..=365).contains(&self.report_link_days) {
            return Err("report_link_days: 1 to 365".into());
        }
        if self.poll_ms == 0 || self.retry_seconds == 0 || self.timeout_ms == 0 {
            return Err("poll_ms, retry_seconds and timeout_ms: more than 0".into());
        }
        Ok(())
    }

    /// When to try again after `attempts` failed attempts.
    pub fn retry_at(&self, now: i64, attempts: u32) -> i64 {
        let wait = self
            .retry_seconds
            .saturating_mul(1u64 << attempts.saturating_sub(1).min(20))
            .min(3600);
        now.saturating_add(i64::try_from(wait).unwrap_or(3600) * 1_000_000)
    }
}

/// Notice kinds whose message carries a "this wasn't me" link.
pub fn reportable(kind: &str) -> bool {
    matches!(kind, "destination_change" | "withdrawal" | "mfa_change")
}

/// `1234567` → `1,234,567`.
fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// A composed message: subject and plain-text body, Japanese then English.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Composed {
    pub subject: String,
    pub body: String,
}

/// What a notice says. `link`: the "this wasn't me" address, for reportable kinds.
pub fn compose(broker: &str, n: &Notice, link: Option<&str>) -> Composed {
    let d = &n.detail;
    let text = |k: &str| d.get(k).and_then(Value::as_str).unwrap_or("-").to_owned();
    let at = format_tokyo(n.created_at);
    let account = format!("{} / {}", text("bank_code"), text("account_number"));
    let (subject_ja, subject_en, ja, en) = match n.kind.as_str() {
        "destination_change" => {
            let pending = text("status") == "pending_review";
            let from = d
                .get("effective_at")
                .and_then(Value::as_str)
                .map(str::to_owned);
            (
                "出金先口座の登録",
                "Withdrawal destination registered",
                format!(
                    "{at} に出金先口座が登録されました。\n口座: {account}\n{}",
                    if pending {
                        "確認のため、登録を保留しています。".to_owned()
                    } else {
                        from.as_ref().map_or_else(
                            || "この口座への出金は可能です。".to_owned(),
                            |t| format!("この口座への出金は {t} から可能です。"),
                        )
                    }
                ),
                format!(
                    "A withdrawal destination was registered at {at}.\nAccount: {account}\n{}",
                    if pending {
                        "We are holding it while we check it.".to_owned()
                    } else {
                        from.map_or_else(
                            || "Withdrawals to it are possible.".to_owned(),
                            |t| format!("Withdrawals to it are possible from {t}."),
                        )
                    }
                ),
            )
        }
        "withdrawal" => {
            let amount = d.get("amount").and_then(Value::as_i64);
            let (yen, jpy) = amount.map_or(("-".to_owned(), "-".to_owned()), |a| {
                (
                    format!("{} 円", thousands(a)),
                    format!("JPY {}", thousands(a)),
                )
            });
            let (ja_state, en_state) = match d.get("decision").and_then(Value::as_str) {
                Some("block") => (
                    "このご依頼はお受けできず、出金は行われていません。",
                    "We refused it: no money was withdrawn.",
                ),
                Some("hold") | Some("challenge") => (
                    "確認のため、このご依頼を保留しています。",
                    "We are holding it while we check it.",
                ),
                _ => ("ご依頼を受け付けました。", "We accepted it."),
            };
            (
                "出金のご依頼",
                "Withdrawal request",
                format!(
                    "{at} に出金のご依頼がありました。\n金額: {yen}\n出金先: {account}\n{ja_state}"
                ),
                format!(
                    "A withdrawal was requested at {at}.\nAmount: {jpy}\nTo: {account}\n{en_state}"
                ),
            )
        }
        "lockout" => (
            "パスワードの誤りが続いています",
            "Repeated wrong passwords",
            format!(
                "{at} までにパスワードの誤りが続いたため、しばらくログインや出金のお手続きをお止めしています。お心当たりがない場合は、サポートセンターへご連絡ください。"
            ),
            format!(
                "Wrong passwords were entered repeatedly up to {at}, so we paused logins or withdrawals for a while. If this was not you, please call the support center."
            ),
        ),
        "mfa_change" => {
            let factor = text("factor");
            let added = text("change") == "added";
            (
                "二要素認証の設定変更",
                "Two-factor settings changed",
                format!(
                    "{at} に二要素認証（{factor}）が{}されました。",
                    if added { "登録" } else { "削除" }
                ),
                format!(
                    "Two-factor authentication ({factor}) was {} at {at}.",
                    if added { "added" } else { "removed" }
                ),
            )
        }
        "withdrawals_frozen" => (
            "出金を停止しました",
            "Withdrawals stopped",
            format!(
                "{at} にお客さまの口座からの出金を停止しました。再開のお手続きはサポートセンターへご連絡ください。"
            ),
            format!(
                "We stopped withdrawals from your account at {at}. Please call the support center to resume them."
            ),
        ),
        _ => (
            "お手続きのお知らせ",
            "About your account",
            format!("{at} にお客さまの口座でお手続きがありました。"),
            format!("There was a procedure on your account at {at}."),
        ),
    };
    let mut body = format!("{broker}をご利用いただきありがとうございます。\n\n{ja}\n");
    if let Some(l) = link {
        body.push_str(&format!(
            "\nお心当たりがない場合は、次のリンクからお知らせください。直ちに出金を停止します。\n{l}\n"
        ));
    }
    body.push_str(&format!(
        "\n----\n\nThank you for using {broker}.\n\n{en}\n"
    ));
    if let Some(l) = link {
        body.push_str(&format!(
            "\nIf this wasn't you, tell us at this link and we will stop withdrawals at once:\n{l}\n"
        ));
    }
    body.push_str("\nこのメールは送信専用です。 / This address does not take replies.\n");
    Composed {
        subject: format!("[{broker}] {subject_ja} / {subject_en}"),
        body,
    }
}

/// Removes anything shaped like an e-mail address from an error text (SMTP servers quote the
/// recipient).
pub fn scrub(text: &str) -> String {
    text.split_inclusive(char::is_whitespace)
        .map(|w| {
            if w.contains('@') {
                let tail = &w[w.trim_end().len()..];
                format!("<address>{tail}")
            } else {
                w.to_owned()
            }
        })
        .collect()
}

/// Sends one notice: its message with a fresh report link where it takes one.
async fn send_one(
    s: &AppState,
    transport: &AsyncSmtpTransport<Tokio1Executor>,
    n: &Notice,
    now: i64,
) -> Result<(), String> {
    let mail = &s.mail;
    let to = s
        .store
        .customer(&n.customer_id)
        .await
        .map_err(|e| e.to_string())?
        .and_then(|c| c.email)
        .filter(|e| !e.trim().is_empty())
        .ok_or_else(|| "no e-mail address on record".to_owned())?;
    let to: Mailbox = to
        .trim()
        .parse()
        .map_err(|_| "the e-mail address on record is not valid".to_owned())?;
    let link = if reportable(&n.kind) {
        let (token, digest) = mamori_auth::stepup::new_token_with("rpt");
        s.store
            .add_report_link(&ReportLink {
                token_digest: digest,
                customer_id: n.customer_id.clone(),
                notice_id: n.notice_id,
                notice_kind: n.kind.clone(),
                assessment_id: n.assessment_id.clone(),
                created_at: now,
                expires_at: now + i64::from(mail.report_link_days) * mamori_core::time::DAY_US,
                used_at: None,
            })
            .await
            .map_err(|e| e.to_string())?;
        Some(format!(
            "{}/report/{token}",
            mail.link_base.trim_end_matches('/')
        ))
    } else {
        None
    };
    let c = compose(&mail.broker_name, n, link.as_deref());
    let from: Mailbox = mail.from.parse().map_err(|e| format!("mail.from: {e}"))?;
    let m = Message::builder()
        .from(from)
        .to(to)
        .subject(c.subject)
        .header(ContentType::TEXT_PLAIN)
        .body(c.body)
        .map_err(|e| scrub(&e.to_string()))?;
    transport
        .send(m)
        .await
        .map(|_| ())
        .map_err(|e| scrub(&e.to_string()))
}

/// Sends the notices due now; returns how many were sent and how many failed.
pub async fn send_due(
    s: &AppState,
    transport: &AsyncSmtpTransport<Tokio1Executor>,
) -> Result<(u64, u64), mamori_store::StoreError> {
    let now = now_us();
    let (mut sent, mut failed) = (0, 0);
    for n in s.store.due_notices(now, 100).await? {
        match send_one(s, transport, &n, now).await {
            Ok(()) => {
                s.store.notice_result(n.notice_id, now, None, 0).await?;
                metrics::counter!("mamori_notices_sent_total", "kind" => n.kind.clone())
                    .increment(1);
                sent += 1;
            }
            Err(e) => {
                let attempts = n.attempts + 1;
                s.store
                    .notice_result(n.notice_id, now, Some(&e), s.mail.retry_at(now, attempts))
                    .await?;
                metrics::counter!("mamori_notices_failed_total", "kind" => n.kind.clone())
                    .increment(1);
                tracing::warn!(
                    notice_id = n.notice_id,
                    kind = %n.kind,
                    attempts,
                    given_up = attempts >= mamori_store::MAX_NOTICE_ATTEMPTS,
                    error = %e,
                    "notice not sent"
                );
                failed += 1;
            }
        }
    }
    Ok((sent, failed))
}

/// The SMTP transport of `[mail] smtp_url`, if set.
pub fn transport(mail: &Mail) -> Result<Option<AsyncSmtpTransport<Tokio1Executor>>, String> {
    let Some(u) = &mail.smtp_url else {
        return Ok(None);
    };
    Ok(Some(
        AsyncSmtpTransport::<Tokio1Executor>::from_url(u)
            .map_err(|e| format!("mail.smtp_url: {e}"))?
            .timeout(Some(Duration::from_millis(mail.timeout_ms)))
            .build(),
    ))
}

/// The outbox task: sends due notices every `poll_ms` until the state is dropped.
pub async fn run_outbox(s: Arc<AppState>, transport: AsyncSmtpTransport<Tokio1Executor>) {
    let every = Duration::from_millis(s.mail.poll_ms);
    loop {
        if let Err(e) = send_due(&s, &transport).await {
            tracing::error!(error = %e, "the outbox could not read or update notices");
        }
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(kind: &str, detail: Value) -> Notice {
        Notice {
            notice_id: 1,
            customer_id: "C1".into(),
            kind: kind.into(),
            detail,
            assessment_id: None,
            created_at: 1_600_000_000_000_000,
            sent_at: None,
            attempts: 0,
            last_error: None,
            next_attempt_at: None,
        }
    }

    #[test]
    fn withdrawals_say_the_amount_in_both_languages_and_the_link_only_when_given() {
        let n = notice(
            "withdrawal",
            serde_json::json!({"amount": 2_345_678, "decision": "allow", "bank_code": "0001",
                               "account_number": "****321"}),
        );
        let c = compose("Example", &n, Some("https://x.example/report/rpt_1"));
        assert!(c.subject.contains("出金") && c.subject.contains("Withdrawal"));
        for s in [
            "2,345,678 円",
            "JPY 2,345,678",
            "0001 / ****321",
            "2020-09-13",
            "受け付けました",
            "We accepted it",
        ] {
            assert!(c.body.contains(s), "{s} missing from {}", c.body);
        }
        assert_eq!(c.body.matches("https://x.example/report/rpt_1").count(), 2);
        assert!(c.body.find("受け付け") < c.body.find("We accepted"));
        let blocked = notice("withdrawal", serde_json::json!({"decision": "block"}));
        let c = compose("Example", &blocked, None);
        assert!(c.body.contains("no money was withdrawn") && !c.body.contains("/report/"));
    }

    #[test]
    fn amounts_group_thousands() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(-1_234_567), "-1,234,567");
    }

    #[test]
    fn errors_lose_addresses() {
        assert_eq!(
            scrub("550 5.1.1 <taro@example.jp>: user unknown"),
            "550 5.1.1 <address> user unknown"
        );
        assert_eq!(scrub("connection refused"), "connection refused");
    }

    #[test]
    fn retries_double_up_to_an_hour() {
        let m = Mail::default();
        assert_eq!(m.retry_at(0, 1), 60_000_000);
        assert_eq!(m.retry_at(0, 2), 120_000_000);
        assert_eq!(m.retry_at(0, 9), 3_600_000_000);
        assert!(m.validate().is_ok());
        let bad = Mail {
            link_base: "ftp://x".into(),
            ..Mail::default()
        };
        assert!(bad.validate().unwrap_err().contains("link_base"));
    }
}
