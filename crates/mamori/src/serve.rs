//! `mamori serve` and `mamori apikey`.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use mamori_server::app::{AppState, now_us};
use mamori_server::config::{Config, Server};
use mamori_store::{ApiKeys, AuditLog, AuditNote};

use crate::cli::{ApikeyCommand, IntelArgs, open_store};

/// Logs to standard error: JSON lines or text, `RUST_LOG` filtering (default info).
fn init_logs(format: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if format == "json" {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}

/// `mamori serve`.
pub async fn run(
    db: &Path,
    server: Server,
    config: &Config,
    intel: &IntelArgs,
) -> anyhow::Result<()> {
    init_logs(&server.log_format);
    let intel: Arc<dyn mamori_core::verdict::IpIntel> =
        Arc::from(intel.load_over(config.intel_config())?);
    let store = mamori_store::Store::open_with(db, server.synchronous == "full")
        .await
        .with_context(|| format!("opening the store {}", crate::cli::shown(db)))?;
    let store = if server.cache_events > 0 {
        store.with_hot(server.cache_events).await?
    } else {
        store
    };
    if store
        .list_keys()
        .await?
        .iter()
        .all(|k| k.revoked_at.is_some())
    {
        tracing::warn!(
            "no API key: create one with `mamori apikey create --name NAME --scopes ingest,assess,read`"
        );
    }
    let bound = mamori_server::serve::bind(&server.listen)
        .await
        .with_context(|| format!("listening on {}", server.listen))?;
    tracing::info!(addr = %bound.addr, db = %crate::cli::shown(db), "mamori serving");
    eprintln!(
        "mamori: serving on http://{} (store {})",
        bound.addr,
        crate::cli::shown(db)
    );
    let bad = config
        .password
        .bad_passwords()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let state = Arc::new(
        AppState::new(
            store,
            config.policy.clone(),
            intel,
            server,
            mamori_server::serve::metrics_handle(),
        )
        .with_passwords(config.password.clone(), bad)
        .with_mfa(config.mfa.clone())
        .with_mail(config.mail.clone())
        .with_destinations(config.destinations.clone())
        .with_friction(config.friction.clone()),
    );
    mamori_server::serve::serve(bound, state, mamori_server::serve::signal()).await?;
    Ok(())
}

/// `mamori apikey`.
pub async fn apikey(db: &Path, c: ApikeyCommand) -> anyhow::Result<()> {
    let store = open_store(db).await?;
    let r = async {
        match c {
            ApikeyCommand::Create { name, scopes, who } => {
                if name.trim().is_empty() || name.len() > 200 {
                    bail!("--name: 1 to 200 characters");
                }
                let (key, token, hash) = mamori_server::auth::generate(&name, scopes, now_us());
                store.create_key(&key, &hash).await?;
                let note = AuditNote {
                    actor: who.actor(),
                    action: "apikey.create".into(),
                    target: format!("apikey:{}", key.key_id),
                    detail: serde_json::json!({"name": key.name, "scopes": key.scopes_text()}),
                };
                store.audit(&note, now_us()).await?;
                println!("{token}");
                eprintln!(
                    "created API key {} for {:?} with scopes {}; it is shown only now",
                    key.key_id,
                    key.name,
                    key.scopes_text()
                );
            }
            ApikeyCommand::List => {
                println!(
                    "{:<14} {:<24} {:<28} {:<27} {:<27} status",
                    "key_id", "name", "scopes", "created", "last used"
                );
                for k in store.list_keys().await? {
                    println!(
                        "{:<14} {:<24} {:<28} {:<27} {:<27} {}",
                        k.key_id,
                        k.name,
                        k.scopes_text(),
                        mamori_core::time::format_tokyo(k.created_at),
                        k.last_used_at
                            .map(mamori_core::time::format_tokyo)
                            .unwrap_or_else(|| "-".into()),
                        if k.revoked_at.is_some() {
                            "revoked"
                        } else {
                            "active"
                        }
                    );
                }
            }
            ApikeyCommand::Revoke { key_id, who } => {
                let id = key_id.strip_prefix("mmr_").unwrap_or(&key_id);
                let id = id.split('_').next().unwrap_or(id);
                if !store.revoke_key(id, now_us()).await? {
                    bail!("no API key {id}");
                }
                let note = AuditNote {
                    actor: who.actor(),
                    action: "apikey.revoke".into(),
                    target: format!("apikey:{id}"),
                    detail: serde_json::json!({}),
                };
                store.audit(&note, now_us()).await?;
                eprintln!("revoked API key {id} (every server stops accepting it within 5 s)");
            }
        }
        Ok(())
    }
    .await;
    store.close().await;
    r
}
