//! `mamori customers`, `mamori audit`, `mamori switch`: customers' records (masked unless revealed
//! with a reason), the audit log and its verification, the emergency switches.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use mamori_auth::password::PasswordKind;
use mamori_core::customer::{SwitchChannel, SwitchState, parse_customers_csv, switchable};
use mamori_core::event::Kind;
use mamori_core::time::format_tokyo;
use mamori_store::{
    AuditLog, AuditNote, Customers, Freeze, Freezes, Lockouts, NoticeFilter, Outbox, Passkeys,
    SecondFactors, Switches,
};

use crate::cli::open_store;

#[derive(Debug, Subcommand)]
pub enum CustomersCommand {
    /// Imports customers' records from CSV (columns: customer_id, name, name_kana, birth_date,
    /// postal_code, address, phone, email, bank_code, branch_code, account_type, account_number,
    /// holder_kana; one row per destination). Refused rows are reported by line and field; the
    /// other customers are imported.
    Import {
        file: PathBuf,
        #[command(flatten)]
        who: Who,
    },
    /// A customer's record, masked; --reveal shows it unmasked, with a reason, audited.
    Show {
        customer_id: String,
        /// Show personal data unmasked (staff only; audited with --reason and --actor).
        #[arg(long, requires = "reason")]
        reveal: bool,
        /// Why the data is revealed (kept in the audit log), e.g. a support ticket.
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        who: Who,
    },
    /// Stops the customer's withdrawals (as a "this wasn't me" report does), audited, with a
    /// notice to the customer.
    Freeze {
        customer_id: String,
        /// Why (kept in the audit log).
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        who: Who,
    },
    /// Lets the customer's withdrawals resume, audited.
    Unfreeze {
        customer_id: String,
        /// Why (kept in the audit log), e.g. how the customer was reached.
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        who: Who,
    },
    /// Removes a second factor on the customer's behalf (a lost phone or security key), audited,
    /// with a notice to the customer: `--factor totp` or a passkey's credential id (see show).
    RemoveFactor {
        customer_id: String,
        #[arg(long)]
        factor: String,
        /// Why (kept in the audit log), e.g. how the customer's identity was checked.
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        who: Who,
    },
    /// Clears the wrong-password back-off or lock of one of the customer's passwords, audited.
    Unlock {
        customer_id: String,
        #[arg(long, value_enum)]
        kind: PasswordArg,
        /// Why (kept in the audit log), e.g. how the customer's identity was checked.
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        who: Who,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PasswordArg {
    Login,
    Withdrawal,
}

/// `mamori notices`: what the outbox sent, is waiting to send, or gave up on.
#[derive(Debug, Args)]
pub struct NoticesArgs {
    /// Only this customer's.
    #[arg(long)]
    pub customer: Option<String>,
    /// Only those given up after every attempt failed.
    #[arg(long)]
    pub given_up: bool,
    /// At most this many, newest first.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// table or json.
    #[arg(long, default_value = "table")]
    pub format: String,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Checks every entry's hash and link, and the last against the head; exits non-zero and
    /// names the first broken entry if the log was modified, or entries inserted or deleted.
    Verify {
        /// A head recorded elsewhere earlier (SEQ:HASH, as `audit verify` prints it): the log
        /// must still contain it.
        #[arg(long)]
        head: Option<String>,
    },
    /// Entries in order (times in Asia/Tokyo).
    List {
        #[arg(long, default_value_t = 1)]
        from: i64,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
}

#[derive(Debug, Subcommand)]
pub enum SwitchCommand {
    /// Turns a procedure on or off on a channel, e.g. `switch set destination_change web off
    /// --reason "takeover wave"`: while off, the API refuses it there and points the customer
    /// to the support center or a paper form.
    Set {
        procedure: Kind,
        channel: SwitchChannel,
        state: OnOff,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        who: Who,
    },
    /// Every switch set so far (the others are on).
    List,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Stores FILE's `[policy]` (a mamori.toml, or a file with only that section) as a new
    /// revision: every node on the store applies it within a second. Checked first; audited.
    Set {
        file: PathBuf,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        who: Who,
    },
    /// The policy in effect (the latest revision, else the configuration's) as TOML.
    Show,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

#[derive(Debug, Args)]
pub struct Who {
    /// Who does this (recorded in the audit log) [default: cli:$USER].
    #[arg(long)]
    pub actor: Option<String>,
}

impl Who {
    pub fn actor(&self) -> String {
        self.actor.clone().unwrap_or_else(|| {
            format!(
                "cli:{}",
                std::env::var("USER").unwrap_or_else(|_| "unknown".into())
            )
        })
    }
}

fn now_us() -> i64 {
    mamori_server::app::now_us()
}

/// `mamori customers`.
pub async fn customers(db: &Path, c: CustomersCommand) -> anyhow::Result<()> {
    match c {
        CustomersCommand::Import { file, who } => {
            let f = std::fs::File::open(&file)
                .with_context(|| format!("opening {}", file.display()))?;
            let name = file.display().to_string();
            let (records, errors) =
                parse_customers_csv(std::io::BufReader::new(f)).map_err(|e| {
                    anyhow::anyhow!("{name}:{}", e.to_string().trim_start_matches("line "))
                })?;
            for e in &errors {
                eprintln!("{name}:{}", e.to_string().trim_start_matches("line "));
            }
            let store = open_store(db).await?;
            let note = AuditNote {
                actor: who.actor(),
                action: "customers.import".into(),
                target: "customers".into(),
                detail: serde_json::json!({"file": name, "refused_rows": errors.len()}),
            };
            let (added, updated) = store.put_customers(&records, now_us(), &note).await?;
            store.close().await;
            println!(
                "customers: {added} added, {updated} updated, {} rows refused",
                errors.len()
            );
            if !errors.is_empty() {
                bail!(
                    "{} rows of {name} were refused (listed above); the other customers were imported",
                    errors.len()
                );
            }
        }
        CustomersCommand::Show {
            customer_id,
            reveal,
            reason,
            who,
        } => {
            let store = open_store(db).await?;
            let Some(rec) = store.customer(&customer_id).await? else {
                store.close().await;
                bail!("no customer {customer_id:?} in {}", crate::cli::shown(db));
            };
            if reveal {
                let reason = reason.unwrap_or_default();
                if reason.trim().len() < 4 {
                    bail!("--reason: say why the data is revealed (e.g. a ticket number)");
                }
                let note = staff_note(
                    &who,
                    "personal.reveal",
                    &customer_id,
                    serde_json::json!({"reason": reason}),
                );
                store.audit(&note, now_us()).await?;
                println!("{}", serde_json::to_string_pretty(&rec)?);
            } else {
                let m = mamori_auth::mask::customer(&rec);
                println!("{}", serde_json::to_string_pretty(&m)?);
            }
            if let Some(f) = store.frozen(&customer_id).await? {
                println!(
                    "withdrawals frozen since {} by {} ({}): {}",
                    format_tokyo(f.frozen_at),
                    f.actor,
                    f.source,
                    f.reason
                );
            }
            for kind in [PasswordKind::Login, PasswordKind::Withdrawal] {
                if let Some((n, last)) = store.failures(&customer_id, kind).await? {
                    println!(
                        "{} password: {n} wrong in a row, the last at {}",
                        kind.as_str(),
                        format_tokyo(last)
                    );
                }
            }
            if let Some(t) = store.totp(&customer_id).await? {
                println!(
                    "authenticator app (TOTP): {}, {} recovery codes left",
                    t.confirmed_at
                        .map_or("not confirmed".to_owned(), |c| format!(
                            "since {}",
                            format_tokyo(c)
                        )),
                    store.recovery_codes_left(&customer_id).await?
                );
            }
            for p in store.passkeys(&customer_id).await? {
                println!(
                    "passkey {:?} ({}): since {}, last used {}",
                    p.name,
                    p.credential_id,
                    format_tokyo(p.created_at),
                    p.last_used_at
                        .map_or_else(|| "never".to_owned(), format_tokyo)
                );
            }
            store.close().await;
        }
        CustomersCommand::Freeze {
            customer_id,
            reason,
            who,
        } => {
            let reason = checked_reason(&reason)?;
            let store = open_store(db).await?;
            let now = now_us();
            let f = Freeze {
                customer_id: customer_id.clone(),
                frozen_at: now,
                source: "staff".into(),
                actor: who.actor(),
                reason: reason.into(),
            };
            let note = staff_note(
                &who,
                "withdrawals.freeze",
                &customer_id,
                serde_json::json!({"reason": reason}),
            );
            let fresh = store.freeze(&f, &note).await?;
            store.close().await;
            if fresh {
                println!("{customer_id}: withdrawals frozen");
            } else {
                println!("{customer_id}: withdrawals were already frozen; kept as they were");
            }
        }
        CustomersCommand::Unfreeze {
            customer_id,
            reason,
            who,
        } => {
            let reason = checked_reason(&reason)?;
            let store = open_store(db).await?;
            let note = staff_note(
                &who,
                "withdrawals.unfreeze",
                &customer_id,
                serde_json::json!({"reason": reason}),
            );
            let lifted = store.unfreeze(&customer_id, now_us(), &note).await?;
            store.close().await;
            if !lifted {
                bail!("{customer_id}: withdrawals are not frozen");
            }
            println!("{customer_id}: withdrawals may resume");
        }
        CustomersCommand::RemoveFactor {
            customer_id,
            factor,
            reason,
            who,
        } => {
            let reason = checked_reason(&reason)?;
            let store = open_store(db).await?;
            let now = now_us();
            let credential = if factor == "totp" { "totp" } else { "passkey" };
            let note = staff_note(
                &who,
                "credential.change",
                &customer_id,
                serde_json::json!({"credential": credential, "change": "removed",
                                           "factor": factor, "reason": reason}),
            );
            let removed = if factor == "totp" {
                store.remove_totp(&customer_id, now, &note).await?
            } else {
                store
                    .remove_passkey(&customer_id, &factor, now, &note)
                    .await?
            };
            store.close().await;
            if !removed {
                bail!("{customer_id} has no second factor {factor:?}");
            }
            println!("{customer_id}: {credential} {factor} removed");
        }
        CustomersCommand::Unlock {
            customer_id,
            kind,
            reason,
            who,
        } => {
            let reason = checked_reason(&reason)?;
            let kind = match kind {
                PasswordArg::Login => PasswordKind::Login,
                PasswordArg::Withdrawal => PasswordKind::Withdrawal,
            };
            let store = open_store(db).await?;
            let note = staff_note(
                &who,
                "lockout.clear",
                &customer_id,
                serde_json::json!({"kind": kind.as_str(), "reason": reason}),
            );
            let cleared = store
                .clear_failures(&customer_id, kind, now_us(), Some(&note))
                .await?;
            store.close().await;
            if !cleared {
                bail!(
                    "{customer_id}: no wrong {} passwords to clear",
                    kind.as_str()
                );
            }
            println!("{customer_id}: {} password unlocked", kind.as_str());
        }
    }
    Ok(())
}

/// An audit note of a staff action on a customer.
fn staff_note(who: &Who, action: &str, customer_id: &str, detail: serde_json::Value) -> AuditNote {
    AuditNote {
        actor: who.actor(),
        action: action.into(),
        target: format!("customer:{customer_id}"),
        detail,
    }
}

/// A staff member's reason, trimmed, or what is wrong with it.
fn checked_reason(reason: &str) -> anyhow::Result<&str> {
    let r = reason.trim();
    if r.chars().count() < 4 || r.len() > 1000 {
        bail!("--reason: 4 to 1000 characters saying why");
    }
    Ok(r)
}

/// `mamori notices`.
pub async fn notices(db: &Path, a: NoticesArgs) -> anyhow::Result<()> {
    let store = open_store(db).await?;
    let filter = NoticeFilter {
        customer_id: a.customer.clone(),
        given_up: a.given_up,
        limit: a.limit,
    };
    let list = store.notices(&filter).await?;
    store.close().await;
    match a.format.as_str() {
        "json" => {
            let out: Vec<_> = list
                .into_iter()
                .map(mamori_server::notices::notice_out)
                .collect();
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        "table" => {
            println!(
                "{:>8} {:<12} {:<20} {:<9} {:<27} {:>8}  last error",
                "notice", "customer", "kind", "state", "created", "attempts"
            );
            for n in list {
                println!(
                    "{:>8} {:<12} {:<20} {:<9} {:<27} {:>8}  {}",
                    n.notice_id,
                    n.customer_id,
                    n.kind,
                    n.state(),
                    format_tokyo(n.created_at),
                    n.attempts,
                    n.last_error.as_deref().unwrap_or("-")
                );
            }
        }
        other => bail!("--format {other:?}: table or json"),
    }
    Ok(())
}

/// `mamori audit`.
pub async fn audit(db: &Path, c: AuditCommand) -> anyhow::Result<()> {
    let store = open_store(db).await?;
    let r = async {
        match c {
            AuditCommand::Verify { head } => {
                let recorded = match head.as_deref() {
                    Some(h) => Some(
                        h.split_once(':')
                            .and_then(|(s, h)| Some((s.parse::<i64>().ok()?, h)))
                            .context("--head: expected SEQ:HASH as `audit verify` prints it")?,
                    ),
                    None => None,
                };
                match mamori_store::verify_audit(&store, recorded).await? {
                    Ok((n, Some((s, h)))) => {
                        println!("audit log intact: {n} entries; head {s}:{h}")
                    }
                    Ok((_, None)) => println!("audit log intact: no entries"),
                    Err(e) => bail!("audit log broken: {e}"),
                }
            }
            AuditCommand::List { from, limit } => {
                for e in store.audit_entries(from, limit).await? {
                    println!(
                        "{:>6}  {}  {:<20} {:<20} {:<32} {}",
                        e.seq,
                        format_tokyo(e.at),
                        e.actor,
                        e.action,
                        e.target,
                        e.detail
                    );
                }
            }
        }
        anyhow::Ok(())
    }
    .await;
    store.close().await;
    r
}

/// `mamori policy`.
pub async fn policy(
    db: &Path,
    c: PolicyCommand,
    configured: &mamori_core::assess::Policy,
) -> anyhow::Result<()> {
    use mamori_store::Policies;
    let store = open_store(db).await?;
    let r = async {
        match c {
            PolicyCommand::Set { file, reason, who } => {
                if reason.trim().len() < 4 {
                    bail!("--reason: say why (it is shown to staff and kept in the audit log)");
                }
                let policy = mamori_server::config::Config::load(&file)?.policy;
                let body = toml::to_string(&policy).context("writing the policy as TOML")?;
                // What nodes will parse, parsed here first.
                mamori_server::app::parse_stored_policy(&body)
                    .map_err(|e| anyhow::anyhow!("the policy does not read back: {e}"))?;
                let actor = who.actor();
                let note = AuditNote {
                    actor: actor.clone(),
                    action: "policy.set".into(),
                    target: String::new(),
                    detail: serde_json::json!({"reason": reason, "file": file.display().to_string()}),
                };
                let revision = store
                    .set_policy(&body, now_us(), &actor, &reason, &note)
                    .await?;
                println!(
                    "policy revision {revision} stored: every node applies it within a second"
                );
            }
            PolicyCommand::Show => {
                let (head, policy) = match store.policy().await? {
                    Some(p) => (
                        format!(
                            "# revision {} set {} by {}: {}",
                            p.revision,
                            format_tokyo(p.set_at),
                            p.set_by,
                            p.reason.replace('\n', " ")
                        ),
                        mamori_server::app::parse_stored_policy(&p.body).map_err(|e| {
                            anyhow::anyhow!("revision {} does not parse: {e}", p.revision)
                        })?,
                    ),
                    None => (
                        "# the configuration's policy (no revision was set in the store)".into(),
                        configured.clone(),
                    ),
                };
                // In mamori.toml's form, so that the output can be edited and set again.
                #[derive(serde::Serialize)]
                struct Section<'a> {
                    policy: &'a mamori_core::assess::Policy,
                }
                println!("{head}");
                print!(
                    "{}",
                    toml::to_string(&Section { policy: &policy }).context("printing the policy")?
                );
            }
        }
        anyhow::Ok(())
    }
    .await;
    store.close().await;
    r
}

/// `mamori switch`.
pub async fn switch(db: &Path, c: SwitchCommand) -> anyhow::Result<()> {
    let store = open_store(db).await?;
    let r = async {
        match c {
            SwitchCommand::Set {
                procedure,
                channel,
                state,
                reason,
                who,
            } => {
                if !switchable(procedure) {
                    bail!(
                        "{procedure} cannot be switched: login, trade and the sensitive procedures can"
                    );
                }
                if reason.trim().len() < 4 {
                    bail!("--reason: say why (it is shown to staff and kept in the audit log)");
                }
                let s = SwitchState {
                    procedure,
                    channel,
                    enabled: state == OnOff::On,
                    reason: reason.clone(),
                    actor: who.actor(),
                    changed_at: now_us(),
                };
                let note = AuditNote {
                    actor: s.actor.clone(),
                    action: "switch.set".into(),
                    target: format!("{procedure}/{channel}"),
                    detail: serde_json::json!({"enabled": s.enabled, "reason": reason}),
                };
                store.set_switch(&s, &note).await?;
                println!(
                    "{procedure} on {channel}: {}",
                    if s.enabled { "on" } else { "OFF" }
                );
            }
            SwitchCommand::List => {
                let all = store.switches().await?;
                if all.is_empty() {
                    println!("no switch was ever set: every procedure is on");
                }
                for s in all {
                    println!(
                        "{:<28} {:<4} {:<4} {}  {:<20} {}",
                        s.procedure.as_str(),
                        s.channel.as_str(),
                        if s.enabled { "on" } else { "OFF" },
                        format_tokyo(s.changed_at),
                        s.actor,
                        s.reason
                    );
                }
            }
        }
        anyhow::Ok(())
    }
    .await;
    store.close().await;
    r
}
