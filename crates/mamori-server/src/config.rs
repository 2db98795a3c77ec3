//! `mamori.toml`: where the store is, which IP data to load, the server's settings and the policy.
//! Every setting has a documented default (see `mamori.example.toml`); an absent file means all
//! defaults. Errors name the file, line and field.

use std::path::{Path, PathBuf};

use mamori_core::assess::Policy;
use mamori_intel::IntelConfig;
use serde::{Deserialize, Serialize};

/// The whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The store (SQLite file). The command line's `--db` / `MAMORI_DB` win over it.
    pub db: Option<PathBuf>,
    /// A folder laid out like shared/data whose standard files are loaded (`--ipdata` wins).
    pub ipdata: Option<PathBuf>,
    /// IP data files, in addition to those of `ipdata`.
    pub intel: IntelConfig,
    pub server: Server,
    pub policy: Policy,
    pub password: Passwords,
    pub mfa: Mfa,
    pub destinations: DestinationRules,
    pub friction: Friction,
    pub mail: crate::mail::Mail,
}

/// What the customer must do after a decision: `challenge` asks for a second factor, `hold`
/// queues the procedure for staff review, `block` refuses it; `allow` lets it proceed, except for
/// the procedures listed here, which need a registered second factor even then (the seed: two-factor
/// authentication for destination changes and withdrawals).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Friction {
    pub second_factor_on_allow: Vec<mamori_core::event::Kind>,
}

impl Default for Friction {
    fn default() -> Self {
        use mamori_core::event::Kind;
        Friction {
            second_factor_on_allow: vec![
                Kind::DestinationChange,
                Kind::Withdrawal,
                Kind::WithdrawalPasswordChange,
                Kind::MfaChange,
            ],
        }
    }
}

impl Friction {
    /// `proceed`, `second_factor`, `review` or `refuse`.
    pub fn next(
        &self,
        kind: mamori_core::event::Kind,
        d: mamori_core::assess::Decision,
    ) -> &'static str {
        use mamori_core::assess::Decision;
        match d {
            Decision::Allow if self.second_factor_on_allow.contains(&kind) => "second_factor",
            Decision::Allow => "proceed",
            Decision::Challenge => "second_factor",
            Decision::Hold => "review",
            Decision::Block => "refuse",
        }
    }
}

/// Withdrawal destinations registered through mamori's flow.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DestinationRules {
    /// Hours after a destination is registered before withdrawals to it may start (0: at once).
    pub cooling_off_hours: u32,
}

impl Default for DestinationRules {
    fn default() -> Self {
        DestinationRules {
            cooling_off_hours: 24,
        }
    }
}

/// Second factors.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Mfa {
    /// The name authenticator apps show for the broker's codes (no `:`).
    pub totp_issuer: String,
    /// Passkeys: the WebAuthn relying party id, the domain of the broker's site or a parent
    /// domain of it (a passkey works on that domain and its subdomains only).
    pub passkey_rp_id: String,
    /// Passkeys: the origin of the pages that run the ceremonies (`https://www.example.com`;
    /// `http://` for localhost only). Answers signed for any other origin are refused.
    pub passkey_origin: String,
    /// Passkeys: the name the customer's passkey dialog shows.
    pub passkey_rp_name: String,
}

impl Default for Mfa {
    fn default() -> Self {
        Mfa {
            totp_issuer: "mamori".into(),
            passkey_rp_id: "localhost".into(),
            passkey_origin: "http://localhost:8080".into(),
            passkey_rp_name: "mamori".into(),
        }
    }
}

impl Mfa {
    /// The passkeys' relying party; the error names the setting.
    pub fn relying_party(&self) -> Result<mamori_auth::passkey::RelyingParty, String> {
        mamori_auth::passkey::RelyingParty::new(
            &self.passkey_rp_id,
            &self.passkey_origin,
            &self.passkey_rp_name,
        )
        .map_err(|e| format!("mfa.{e}"))
    }
}

/// Customers' passwords: the policy per kind, the hashing costs, a list of refused passwords.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Passwords {
    /// Over the login password's defaults (10–64 characters, …).
    pub login: mamori_auth::password::PolicyOverrides,
    /// Over the withdrawal password's defaults (10–16 characters, …; `min_chars = 6` is the
    /// seed's shortest).
    pub withdrawal: mamori_auth::password::PolicyOverrides,
    pub hashing: mamori_auth::hash::HashParams,
    /// Back-off and locks after wrong passwords; throttles on failed logins per IP and network.
    pub lockout: mamori_auth::lockout::Lockout,
    /// Passwords refused whatever their score, one per line (e.g. leaked passwords), in addition
    /// to the built-in list and zxcvbn's.
    pub bad_passwords_file: Option<PathBuf>,
}

impl Passwords {
    pub fn policy(
        &self,
        kind: mamori_auth::password::PasswordKind,
    ) -> mamori_auth::password::PasswordPolicy {
        use mamori_auth::password::PasswordKind;
        match kind {
            PasswordKind::Login => self.login.resolve(kind),
            PasswordKind::Withdrawal => self.withdrawal.resolve(kind),
        }
    }

    /// The built-in list and the file's.
    pub fn bad_passwords(&self) -> Result<mamori_auth::password::BadPasswords, String> {
        let mut bad = mamori_auth::password::BadPasswords::builtin();
        if let Some(p) = &self.bad_passwords_file {
            let text = std::fs::read_to_string(p)
                .map_err(|e| format!("password.bad_passwords_file = {:?}: {e}", p.display()))?;
            bad.extend(text.lines());
        }
        Ok(bad)
    }
}

/// The HTTP server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Server {
    /// Address and port to listen on.
    pub listen: String,
    /// Most events in one `POST /v1/events`.
    pub max_batch: usize,
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    /// A request taking longer is answered 503 and abandoned.
    pub request_timeout_ms: u64,
    /// How long a graceful shutdown waits for requests in flight.
    pub shutdown_grace_ms: u64,
    /// Logs as JSON lines (`json`) or for people (`text`).
    pub log_format: String,
    /// Durability of the server's writes: `normal` (an acknowledged event survives a crash of
    /// mamori; the last transactions may be lost on a power failure; on PostgreSQL, the common
    /// assessments — allowed or challenged, no alert, not withdrawals — commit asynchronously
    /// and the last of them may also be lost on a crash of the database server) or `full` (SQLite
    /// fsyncs every commit; PostgreSQL commits everything as its server is configured), at some
    /// cost per write.
    pub synchronous: String,
    /// Customers' events held in memory for decisions, at most (IPs' uses as many again); the
    /// customers and IPs seen least recently make room. 0 reads every decision's history from
    /// the store.
    pub cache_events: usize,
    /// Before it is ready, the server reads into that cache the customers and IPs active in
    /// this many days up to the newest stored (most recent first, while there is room).
    pub preload_days: u32,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            listen: "127.0.0.1:8080".into(),
            max_batch: 10_000,
            max_body_bytes: 32 << 20,
            request_timeout_ms: 10_000,
            shutdown_grace_ms: 10_000,
            log_format: "json".into(),
            synchronous: "normal".into(),
            cache_events: 8_000_000,
            preload_days: 14,
        }
    }
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

/// The line (from 1) of a byte offset and the dotted name of the key set on it, if any.
fn place(text: &str, offset: usize) -> (usize, Option<String>) {
    let before = &text[..offset.min(text.len())];
    let line_no = before.matches('\n').count() + 1;
    let line = text.lines().nth(line_no - 1).unwrap_or("");
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim().trim_matches('"').to_owned());
    let table = before
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('[') && l.ends_with(']'))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_owned());
    let field = match (table, key) {
        (Some(t), Some(k)) if !k.starts_with('[') => Some(format!("{t}.{k}")),
        (None, Some(k)) if !k.starts_with('[') => Some(k),
        _ => None,
    };
    (line_no, field)
}

impl Config {
    /// Parses a configuration text; `path` names it in errors.
    pub fn parse(text: &str, path: &str) -> Result<Config, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        };
        let config: Config = toml::from_str(text).map_err(|e| {
            // toml's message names the line, column and key; put it on one line after the path.
            let m = e.message().trim_end().to_owned();
            invalid(match e.span() {
                Some(span) => {
                    let (line, field) = place(text, span.start);
                    match field {
                        Some(f) => format!("line {line}, {f}: {m}"),
                        None => format!("line {line}: {m}"),
                    }
                }
                None => m,
            })
        })?;
        config.validate().map_err(invalid)?;
        Ok(config)
    }

    /// Reads a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::parse(&text, &path.display().to_string())
    }

    /// Reads `path` if given (it must exist), else `mamori.toml` in the working folder if there
    /// is one, else the defaults.
    pub fn discover(path: Option<&Path>) -> Result<(Config, Option<PathBuf>), ConfigError> {
        match path {
            Some(p) => Ok((Config::load(p)?, Some(p.to_owned()))),
            None => {
                let p = Path::new("mamori.toml");
                if p.is_file() {
                    Ok((Config::load(p)?, Some(p.to_owned())))
                } else {
                    Ok((Config::default(), None))
                }
            }
        }
    }

    /// Checks values a type cannot. The message names the field.
    pub fn validate(&self) -> Result<(), String> {
        self.policy.validate()?;
        for kind in [
            mamori_auth::password::PasswordKind::Login,
            mamori_auth::password::PasswordKind::Withdrawal,
        ] {
            self.password
                .policy(kind)
                .validate()
                .map_err(|e| format!("password.{}.{e}", kind.as_str()))?;
        }
        self.password
            .hashing
            .validate()
            .map_err(|e| format!("password.hashing.{e}"))?;
        self.password.bad_passwords()?;
        self.password
            .lockout
            .validate()
            .map_err(|e| format!("password.lockout.{e}"))?;
        if self.destinations.cooling_off_hours > 24 * 90 {
            return Err(format!(
                "destinations.cooling_off_hours = {}: at most 2160 (90 days)",
                self.destinations.cooling_off_hours
            ));
        }
        self.mail.validate().map_err(|e| format!("mail.{e}"))?;
        if self.mfa.totp_issuer.is_empty()
            || self.mfa.totp_issuer.contains(':')
            || self.mfa.totp_issuer.len() > 64
        {
            return Err(format!(
                "mfa.totp_issuer = {:?}: 1 to 64 characters, no ':'",
                self.mfa.totp_issuer
            ));
        }
        self.mfa.relying_party()?;
        let s = &self.server;
        s.listen.parse::<std::net::SocketAddr>().map_err(|e| {
            format!(
                "server.listen = {:?}: {e} (expected e.g. \"127.0.0.1:8080\")",
                s.listen
            )
        })?;
        if !(1..=100_000).contains(&s.max_batch) {
            return Err(format!(
                "server.max_batch = {} is out of range 1 to 100000",
                s.max_batch
            ));
        }
        if s.max_body_bytes < 1024 {
            return Err("server.max_body_bytes must be at least 1024".into());
        }
        if s.request_timeout_ms == 0 {
            return Err("server.request_timeout_ms must be positive".into());
        }
        if !matches!(s.log_format.as_str(), "json" | "text") {
            return Err(format!(
                "server.log_format = {:?}: expected \"json\" or \"text\"",
                s.log_format
            ));
        }
        if !matches!(s.synchronous.as_str(), "normal" | "full") {
            return Err(format!(
                "server.synchronous = {:?}: expected \"normal\" or \"full\"",
                s.synchronous
            ));
        }
        Ok(())
    }

    /// The IP data to load: `ipdata`'s standard files, then the listed ones.
    pub fn intel_config(&self) -> IntelConfig {
        let mut c = match &self.ipdata {
            Some(dir) => IntelConfig::from_dir(dir),
            None => IntelConfig::default(),
        };
        c.merge(self.intel.clone());
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_file_is_valid_and_equals_the_defaults() {
        let text = include_str!("../../../mamori.example.toml");
        let mut c = Config::parse(text, "mamori.example.toml").expect("example parses");
        assert_eq!(c.server, Server::default());
        // The example lists every rule's points, each at its default.
        for r in mamori_core::assess::RULES {
            assert_eq!(c.policy.points.get(r.code), Some(&r.points), "{}", r.code);
        }
        assert_eq!(c.policy.points.len(), mamori_core::assess::RULES.len());
        c.policy.points.clear();
        assert_eq!(c.policy, Policy::default());
        use mamori_auth::password::{PasswordKind, PasswordPolicy};
        for kind in [PasswordKind::Login, PasswordKind::Withdrawal] {
            assert_eq!(c.password.policy(kind), PasswordPolicy::for_kind(kind));
        }
        assert_eq!(c.password.hashing, mamori_auth::hash::HashParams::default());
        assert_eq!(c.mfa, Mfa::default());
        assert_eq!(c.destinations, DestinationRules::default());
        assert_eq!(c.friction, Friction::default());
        assert_eq!(c.mail, crate::mail::Mail::default());
        assert_eq!(c.password.lockout, mamori_auth::lockout::Lockout::default());
        assert_eq!(
            Config::parse("", "empty").expect("empty"),
            Config::default()
        );
    }

    #[test]
    fn friction_follows_the_decision_and_the_procedure() {
        use mamori_core::assess::Decision::*;
        use mamori_core::event::Kind;
        let f = Friction::default();
        assert_eq!(f.next(Kind::Login, Allow), "proceed");
        assert_eq!(f.next(Kind::Withdrawal, Allow), "second_factor");
        assert_eq!(f.next(Kind::Login, Challenge), "second_factor");
        assert_eq!(f.next(Kind::Withdrawal, Hold), "review");
        assert_eq!(f.next(Kind::Login, Block), "refuse");
        let c = Config::parse("[friction]\nsecond_factor_on_allow = []\n", "m.toml").unwrap();
        assert_eq!(c.friction.next(Kind::Withdrawal, Allow), "proceed");
        let e = Config::parse(
            "[friction]\nsecond_factor_on_allow = [\"wire\"]\n",
            "m.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("friction.second_factor_on_allow"), "{e}");
    }

    #[test]
    fn errors_name_the_file_line_and_field() {
        let e = Config::parse(
            "[server]\nlisten = \"127.0.0.1:8080\"\nmax_btch = 5\n",
            "m.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("m.toml: line 3, server.max_btch: unknown field"),
            "{e}"
        );
        let e = Config::parse("[policy]\nchain_hours = \"x\"\n", "m.toml")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "m.toml: line 2, policy.chain_hours: invalid type: string \"x\", expected u32"
        );
        let e = Config::parse("[policy.decisions]\nhold = 0\n", "m.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("policy.decisions.hold"), "{e}");
        let e = Config::parse("[server]\nlisten = \"localhost\"\n", "m.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("server.listen"), "{e}");
        let e = Config::parse("[policy.points]\nunusual_logn = 3\n", "m.toml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unusual_logn") && e.contains("unusual_login"),
            "{e}"
        );
    }

    #[test]
    fn passkey_settings_are_checked_at_load() {
        let c = Config::parse(
            "[mfa]\npasskey_rp_id = \"example.com\"\npasskey_origin = \"https://www.example.com\"\npasskey_rp_name = \"Example Securities\"\n",
            "m.toml",
        )
        .expect("parses");
        assert_eq!(c.mfa.passkey_rp_id, "example.com");
        for (line, field) in [
            ("passkey_origin = \"www.example.com\"", "mfa.passkey_origin"),
            (
                "passkey_origin = \"http://www.example.com\"",
                "mfa.passkey_origin",
            ),
            ("passkey_rp_id = \"https://localhost\"", "mfa.passkey_rp_id"),
            ("passkey_rp_id = \"example.com\"", "mfa.passkey_rp_id"),
            ("passkey_rp_name = \"\"", "mfa.passkey_rp_name"),
        ] {
            let e = Config::parse(&format!("[mfa]\n{line}\n"), "m.toml")
                .unwrap_err()
                .to_string();
            assert!(e.starts_with(&format!("m.toml: {field}")), "{line}: {e}");
        }
    }

    #[test]
    fn policy_overrides_apply() {
        let c = Config::parse(
            "[policy]\nhome_country = \"US\"\n[policy.points]\nshared_ip = 0\n[policy.login_decisions]\nchallenge = 50\n",
            "m.toml",
        )
        .expect("parses");
        assert_eq!(c.policy.home_country, "US");
        assert_eq!(c.policy.points_of("shared_ip"), 0);
        assert_eq!(c.policy.login_decisions.challenge, 50);
        assert_eq!(
            c.policy.login_decisions.block,
            Policy::default().login_decisions.block
        );
        assert_eq!(
            c.policy.login_decisions.hold, 101,
            "login defaults, not decisions'"
        );
    }
}
