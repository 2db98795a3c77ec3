//! The real-time decision: `allow`, `challenge`, `hold` or `block`, with a score and reasons.
//!
//! One engine serves the HTTP API (an event about to happen) and the daily batch (every withdrawal
//! of a period, assessed point-in-time). It takes the customer's past events, what happened on the
//! IP, the population's login habits, IP data and what the risk team has resolved, and applies the
//! rules of a [`Policy`]. Every rule that fires yields a reason with a stable code, a message in
//! Japanese and English, its evidence and its points; the score combines the points
//! (`100·(1 − Π(1 − pᵢ/100))`, so no single weak signal decides and strong ones add up), and the
//! decision thresholds of the procedure's kind turn the score into a decision.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::event::{Channel, Kind, Side, code_enum};
use crate::history::{Access, IpActivity, Windows, device_hash};
use crate::net::{ip_key, prefix_key};
use crate::time::{DAY_US, HOUR_US, MINUTE_US, format_tokyo};
use crate::verdict::{self, Familiarity, IpIntel, Subject};

code_enum!(
    /// What the engine answers, in increasing order of friction.
    Decision {
        Allow = 1 => "allow",
        Challenge = 2 => "challenge",
        Hold = 3 => "hold",
        Block = 4 => "block",
    }
);

/// One past event of the customer, with what the rules beyond familiarity need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Past {
    pub access: Access,
    /// [`ua_family_hash`] of the user agent.
    pub ua: Option<u64>,
    pub amount: Option<i64>,
    pub side: Option<Side>,
}

impl Past {
    /// The past record of a stored event.
    pub fn of(e: &crate::event::Event) -> Self {
        Past {
            access: Access {
                at: e.occurred_at,
                kind: e.kind,
                channel: e.channel,
                ip: e.ip.map(ip_key),
                device: e.device_id.as_deref().map(device_hash),
            },
            ua: e.user_agent.as_deref().map(ua_family_hash),
            amount: e.amount,
            side: e.side,
        }
    }
}

/// The event about to happen (or, in the batch, the event being re-assessed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub at: i64,
    pub kind: Kind,
    pub channel: Channel,
    pub ip: Option<IpAddr>,
    /// [`device_hash`] of the device id.
    pub device: Option<u64>,
    /// [`ua_family_hash`] of the user agent.
    pub ua: Option<u64>,
    pub amount: Option<i64>,
    pub side: Option<Side>,
}

impl Attempt {
    /// The attempt of an event (the batch re-assesses stored events).
    pub fn of(e: &crate::event::Event) -> Self {
        let p = Past::of(e);
        Attempt {
            at: e.occurred_at,
            kind: e.kind,
            channel: e.channel,
            ip: e.ip,
            device: p.access.device,
            ua: p.ua,
            amount: e.amount,
            side: e.side,
        }
    }
}

/// The coarse software family of a user agent (`os/browser`): browsers update themselves every
/// few weeks, so the exact string changes while the customer does not.
pub fn ua_family(ua: &str) -> String {
    let has = |s: &str| ua.contains(s);
    let os = if has("Windows") {
        "windows"
    } else if has("iPhone") || has("iPad") || has("iOS") {
        "ios"
    } else if has("Android") {
        "android"
    } else if has("Mac OS X") || has("Macintosh") {
        "mac"
    } else if has("Linux") || has("X11") {
        "linux"
    } else {
        "other"
    };
    let browser = if !ua.starts_with("Mozilla/") && ua.contains('/') {
        // Native apps name themselves first: "BrokerApp/5.2.1 (…)".
        ua.split('/').next().unwrap_or("app")
    } else if has("Edg/") || has("Edge/") {
        "edge"
    } else if has("Firefox/") || has("FxiOS/") {
        "firefox"
    } else if has("Trident/") || has("MSIE ") {
        "ie"
    } else if has("Chrome/") || has("CriOS/") {
        "chrome"
    } else if has("Safari/") {
        "safari"
    } else {
        "other"
    };
    format!("{os}/{browser}")
}

/// A stable hash of [`ua_family`].
pub fn ua_family_hash(ua: &str) -> u64 {
    device_hash(&ua_family(ua))
}

/// How often the population logged in with each value of a feature, over a trailing window.
/// Keys: [`Feature`] and the value's hash or number.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Population {
    /// Logins counted.
    pub logins: u64,
    /// foldhash: looked up for every feature of every login assessed.
    pub counts: foldhash::HashMap<(Feature, u128), u64>,
}

/// A feature of a login, for the statistical score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Feature {
    Ip,
    Network,
    Asn,
    Country,
    UserAgent,
}

impl Feature {
    pub fn as_str(self) -> &'static str {
        match self {
            Feature::Ip => "ip",
            Feature::Network => "network",
            Feature::Asn => "asn",
            Feature::Country => "country",
            Feature::UserAgent => "user_agent",
        }
    }
}

fn country_code(c: &str) -> u128 {
    c.bytes().fold(0u128, |a, b| (a << 8) | u128::from(b))
}

/// A feature with its value's hash or number.
pub type FeatureValue = (Feature, u128);

/// The feature values of a login.
pub fn features(ip: Option<IpAddr>, ua: Option<u64>, intel: &dyn IpIntel) -> Vec<(Feature, u128)> {
    let mut v = Vec::with_capacity(5);
    if let Some(ip) = ip {
        let k = ip_key(ip);
        v.push((Feature::Ip, k));
        v.push((Feature::Network, prefix_key(k)));
        if intel.is_configured() {
            let f = intel.facts(ip);
            if let Some(a) = f.asn {
                v.push((Feature::Asn, u128::from(a)));
            }
            if let Some(c) = f.country {
                v.push((Feature::Country, country_code(&c)));
            }
        }
    }
    if let Some(u) = ua {
        v.push((Feature::UserAgent, u128::from(u)));
    }
    v
}

impl Population {
    /// Counts one login.
    pub fn add(&mut self, features: &[(Feature, u128)]) {
        self.logins += 1;
        for f in features {
            *self.counts.entry(*f).or_default() += 1;
        }
    }

    /// Takes back one login counted with [`Population::add`] (a sliding window): a value no login
    /// has any more is forgotten, so the result equals a population counted afresh.
    pub fn remove(&mut self, features: &[(Feature, u128)]) {
        self.logins = self.logins.saturating_sub(1);
        for f in features {
            if let Some(c) = self.counts.get_mut(f) {
                *c -= 1;
                if *c == 0 {
                    self.counts.remove(f);
                }
            }
        }
    }

    /// The population's probability of a value, add-one smoothed over the values seen.
    fn p(&self, f: (Feature, u128)) -> f64 {
        let c = self.counts.get(&f).copied().unwrap_or(0) as f64;
        (c + 1.0) / (self.logins as f64 + self.counts.len() as f64 + 1.0)
    }
}

/// What the risk team has resolved, as known at the time of the attempt.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Marks {
    /// IPs (keys) and devices (hashes) a legitimate resolution made familiar for this customer.
    pub familiar_ips: HashSet<u128>,
    pub familiar_devices: HashSet<u64>,
    /// The attempt's IP was used in a confirmed fraud.
    pub fraud_ip: bool,
    /// IPs of confirmed frauds that accessed this customer's account within the policy's window.
    pub fraud_ips_on_customer: u32,
}

/// Decision thresholds on the score (a decision applies from its threshold up; above 100 never).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Thresholds {
    pub challenge: u8,
    pub hold: u8,
    pub block: u8,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            challenge: 40,
            hold: 60,
            block: 90,
        }
    }
}

impl Thresholds {
    /// The decision for a score.
    pub fn decide(&self, score: u8) -> Decision {
        if score >= self.block {
            Decision::Block
        } else if score >= self.hold {
            Decision::Hold
        } else if score >= self.challenge {
            Decision::Challenge
        } else {
            Decision::Allow
        }
    }

    fn check(&self, place: &str) -> Result<(), String> {
        for (name, v) in [
            ("challenge", self.challenge),
            ("hold", self.hold),
            ("block", self.block),
        ] {
            if v == 0 {
                return Err(format!(
                    "{place}.{name} = 0 would apply to every request; use 1 to 101"
                ));
            }
            if v > 101 {
                return Err(format!(
                    "{place}.{name} = {v} is out of range: 1 to 100, or 101 for never"
                ));
            }
        }
        Ok(())
    }
}

/// The rules' settings. Every field has a documented default; a TOML `[policy]` table overrides
/// any of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// The broker's country (ISO 3166-1 alpha-2): logins from elsewhere are foreign unless the
    /// customer's history has been abroad.
    pub home_country: String,
    /// How far back a customer's own history reaches.
    pub history_days: u32,
    /// How far back "other customers on this IP" reaches.
    pub others_days: u32,
    /// Events closer together than this belong to one session.
    pub session_gap_minutes: u32,
    /// History older than this before the session is "established".
    pub established_days: u32,
    /// Seen on this many distinct days, a value is established even if recent.
    pub established_distinct_days: u32,
    /// Other customers on the IP within `others_days` from which it is shared.
    pub shared_ip_customers: u32,
    /// Accounts with failed logins from the IP within `others_days` from which it is stuffing
    /// (and only when they are most of the accounts the IP touched: carrier NAT is not stuffing).
    pub stuffing_accounts: u32,
    /// The same over the IP's network (/24 for IPv4, /48 for IPv6): stuffing spread over many
    /// addresses of one network.
    pub stuffing_network_accounts: u32,
    /// A withdrawal is linked to the customer's latest destination change this many days before.
    pub destination_link_days: u32,
    /// The takeover chain (credential change → destination change → large sells → withdrawal)
    /// counts steps within this many hours.
    pub chain_hours: u32,
    /// Sells of at least this total (yen) within the chain are large.
    pub large_sell_yen: i64,
    /// The statistical login score above which a login is unusual for the customer (a log
    /// likelihood ratio: ~2.3 per feature never seen before, after 9 logins).
    pub login_score_threshold: f64,
    /// The population's habits are the logins of this many days before the day (Asia/Tokyo) of
    /// the attempt, so the API and the daily batch count the same logins.
    pub population_days: u32,
    /// Smoothing of the customer's own frequencies: how many logins the population's habits weigh.
    pub login_score_smoothing: f64,
    /// A confirmed-fraud IP raises the risk of customers it accessed within this many days.
    pub fraud_ip_days: u32,
    /// Impossible travel (with a City database): from the customer's previous located access,
    /// faster than this many km/h over at least `impossible_travel_km` (beyond both locations'
    /// accuracy radii).
    pub impossible_travel_kmh: u32,
    pub impossible_travel_km: u32,
    /// Points per reason code (0 disables a rule). Codes not listed keep their defaults.
    pub points: HashMap<String, u8>,
    /// Decision thresholds for sensitive procedures.
    pub decisions: Thresholds,
    /// Decision thresholds for logins: no hold (a login cannot wait for staff). Fields left out
    /// keep these defaults, not those of `decisions`.
    #[serde(deserialize_with = "login_thresholds")]
    pub login_decisions: Thresholds,
}

const LOGIN_THRESHOLDS: Thresholds = Thresholds {
    challenge: 40,
    hold: 101,
    block: 90,
};

fn login_thresholds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Thresholds, D::Error> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Partial {
        challenge: Option<u8>,
        hold: Option<u8>,
        block: Option<u8>,
    }
    let p = Partial::deserialize(d)?;
    Ok(Thresholds {
        challenge: p.challenge.unwrap_or(LOGIN_THRESHOLDS.challenge),
        hold: p.hold.unwrap_or(LOGIN_THRESHOLDS.hold),
        block: p.block.unwrap_or(LOGIN_THRESHOLDS.block),
    })
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            home_country: "JP".into(),
            history_days: 365,
            others_days: 30,
            session_gap_minutes: 30,
            established_days: 30,
            established_distinct_days: 8,
            shared_ip_customers: 3,
            stuffing_accounts: 3,
            stuffing_network_accounts: 10,
            destination_link_days: 90,
            chain_hours: 72,
            large_sell_yen: 1_000_000,
            login_score_threshold: 9.0,
            login_score_smoothing: 1.0,
            population_days: 30,
            fraud_ip_days: 90,
            impossible_travel_kmh: 900,
            impossible_travel_km: 500,
            points: HashMap::new(),
            decisions: Thresholds::default(),
            login_decisions: LOGIN_THRESHOLDS,
        }
    }
}

impl Policy {
    /// Checks values a type cannot: ranges and known reason codes. The error names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.home_country.len() != 2
            || !self.home_country.bytes().all(|b| b.is_ascii_uppercase())
        {
            return Err(format!(
                "policy.home_country = {:?}: expected an ISO 3166-1 alpha-2 code such as \"JP\"",
                self.home_country
            ));
        }
        for (name, v, lo, hi) in [
            ("history_days", self.history_days, 1, 3650),
            ("others_days", self.others_days, 1, 3650),
            ("session_gap_minutes", self.session_gap_minutes, 1, 1440),
            ("established_days", self.established_days, 0, 3650),
            ("destination_link_days", self.destination_link_days, 1, 3650),
            ("chain_hours", self.chain_hours, 1, 24 * 365),
            ("fraud_ip_days", self.fraud_ip_days, 1, 3650),
            ("population_days", self.population_days, 1, 365),
            (
                "stuffing_network_accounts",
                self.stuffing_network_accounts,
                1,
                1_000_000,
            ),
            (
                "impossible_travel_kmh",
                self.impossible_travel_kmh,
                1,
                100_000,
            ),
            ("impossible_travel_km", self.impossible_travel_km, 0, 40_000),
        ] {
            if !(lo..=hi).contains(&v) {
                return Err(format!("policy.{name} = {v} is out of range {lo} to {hi}"));
            }
        }
        if !(self.login_score_smoothing > 0.0 && self.login_score_smoothing.is_finite()) {
            return Err("policy.login_score_smoothing must be a positive number".into());
        }
        if !self.login_score_threshold.is_finite() {
            return Err("policy.login_score_threshold must be a number".into());
        }
        for (code, p) in &self.points {
            if rule(code).is_none() {
                return Err(format!(
                    "policy.points.{code}: unknown reason code; known codes: {}",
                    RULES.iter().map(|r| r.code).collect::<Vec<_>>().join(", ")
                ));
            }
            if *p > 100 {
                return Err(format!(
                    "policy.points.{code} = {p} is out of range 0 to 100"
                ));
            }
        }
        self.decisions.check("policy.decisions")?;
        self.login_decisions.check("policy.login_decisions")
    }

    /// The history windows.
    pub fn windows(&self) -> Windows {
        Windows {
            history: i64::from(self.history_days) * DAY_US,
            others: i64::from(self.others_days) * DAY_US,
            session_gap: i64::from(self.session_gap_minutes) * MINUTE_US,
            established: i64::from(self.established_days) * DAY_US,
        }
    }

    fn verdict_policy(&self) -> verdict::Policy {
        let cc = self.home_country.as_bytes();
        verdict::Policy {
            shared_ip_customers: self.shared_ip_customers,
            failed_login_accounts: self.stuffing_accounts,
            established_days: self.established_distinct_days,
            home_country: [cc[0], cc[1]],
        }
    }

    /// Points of a reason code.
    pub fn points_of(&self, code: &str) -> u8 {
        self.points
            .get(code)
            .copied()
            .or_else(|| rule(code).map(|r| r.points))
            .unwrap_or(0)
    }

    /// The thresholds for a kind of procedure.
    pub fn thresholds(&self, kind: Kind) -> &Thresholds {
        if kind == Kind::Login {
            &self.login_decisions
        } else {
            &self.decisions
        }
    }
}

/// A rule of the catalogue: its code, default points and messages.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    pub code: &'static str,
    pub points: u8,
    pub en: &'static str,
    pub ja: &'static str,
}

/// Every reason code the engine can give, with default points and messages. Stable: alerts,
/// metrics and downstream rules refer to them.
pub const RULES: &[Rule] = &[
    Rule {
        code: "withdrawal_to_destination_changed_from_unfamiliar_ip",
        points: 50,
        en: "The withdrawal goes to a destination changed recently from an IP unfamiliar to the customer.",
        ja: "出金先は最近、顧客にとってなじみのないIPアドレスから変更されています。",
    },
    Rule {
        code: "withdrawal_from_ip_unfamiliar_before_destination_change",
        points: 50,
        en: "The withdrawal comes from an IP not in the customer's history before the destination change.",
        ja: "出金のIPアドレスは、出金先変更より前の顧客の履歴にありません。",
    },
    Rule {
        code: "same_unfamiliar_ip_for_destination_change_and_withdrawal",
        points: 70,
        en: "The destination change and the withdrawal come from the same unfamiliar IP.",
        ja: "出金先変更と出金が、同じなじみのないIPアドレスから行われています。",
    },
    Rule {
        code: "unfamiliar_access",
        points: 35,
        en: "Neither the IP nor the device is established in the customer's history before this session.",
        ja: "このセッションより前の顧客の履歴に、IPアドレスも端末も定着していません。",
    },
    Rule {
        code: "new_device_sensitive_change",
        points: 25,
        en: "A sensitive change from a device not established in the customer's history.",
        ja: "履歴に定着していない端末からの重要な変更です。",
    },
    Rule {
        code: "takeover_chain",
        points: 45,
        en: "Credential change, destination change, large sells and withdrawal follow each other within a short time.",
        ja: "短時間のうちに、認証情報の変更、出金先変更、大口の売却、出金が続いています。",
    },
    Rule {
        code: "credential_change_in_session",
        points: 20,
        en: "Credentials or contact data were changed in this session.",
        ja: "このセッションで認証情報または連絡先が変更されています。",
    },
    Rule {
        code: "failed_login_in_session",
        points: 15,
        en: "The session began with failed logins.",
        ja: "このセッションはログイン失敗から始まっています。",
    },
    Rule {
        code: "shared_ip",
        points: 10,
        en: "Many other customers used this IP recently.",
        ja: "最近、多数の他の顧客がこのIPアドレスを使用しています。",
    },
    Rule {
        code: "failed_logins_many_accounts",
        points: 60,
        en: "Failed logins on many accounts from this IP (credential stuffing).",
        ja: "このIPアドレスから多数の口座でログインに失敗しています（リスト型攻撃）。",
    },
    Rule {
        code: "failed_logins_many_accounts_network",
        points: 40,
        en: "Failed logins on many accounts from addresses of this IP's network (credential stuffing).",
        ja: "このIPアドレスのネットワークから、多数の口座へのログイン失敗があります（パスワードリスト攻撃）。",
    },
    Rule {
        code: "hosting_ip",
        points: 35,
        en: "The IP belongs to a hosting or datacenter network.",
        ja: "IPアドレスはホスティング・データセンターのネットワークに属しています。",
    },
    Rule {
        code: "vpn_ip",
        points: 30,
        en: "The IP belongs to a VPN provider.",
        ja: "IPアドレスはVPN事業者のものです。",
    },
    Rule {
        code: "anonymous_ip",
        points: 60,
        en: "The IP is a Tor exit node or an open proxy.",
        ja: "IPアドレスはTorの出口ノードまたは公開プロキシです。",
    },
    Rule {
        code: "foreign_country",
        points: 35,
        en: "The IP is abroad while the customer's history is domestic.",
        ja: "顧客の履歴は国内のみですが、IPアドレスは海外のものです。",
    },
    Rule {
        code: "unusual_login",
        points: 45,
        en: "This login is unusual for the customer (IP, network, provider, country, browser).",
        ja: "この顧客としては普段と異なるログインです（IPアドレス、ネットワーク、プロバイダ、国、ブラウザ）。",
    },
    Rule {
        code: "dormant_account",
        points: 30,
        en: "The account had no activity in the history window and wakes from an unfamiliar place.",
        ja: "履歴期間中に利用のなかった口座が、なじみのない場所から利用されています。",
    },
    Rule {
        code: "impossible_travel",
        points: 45,
        en: "The IP is farther from the customer's previous access than anyone could travel since.",
        ja: "前回の利用場所から、その後の時間では移動できない距離にあるIPアドレスです。",
    },
    Rule {
        code: "confirmed_fraud_ip",
        points: 95,
        en: "This IP was used in a confirmed fraud.",
        ja: "このIPアドレスは、不正と確認された事案で使われています。",
    },
    Rule {
        code: "account_touched_by_fraud_ip",
        points: 40,
        en: "An IP of a confirmed fraud accessed this account recently.",
        ja: "不正と確認されたIPアドレスが、最近この口座にアクセスしています。",
    },
];

/// The catalogue entry of a code.
pub fn rule(code: &str) -> Option<&'static Rule> {
    RULES.iter().find(|r| r.code == code)
}

/// One reason of an assessment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reason {
    pub code: &'static str,
    pub points: u8,
    pub message_ja: &'static str,
    pub message_en: &'static str,
    pub evidence: Value,
}

/// The engine's answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Assessment {
    pub decision: Decision,
    /// 0–100.
    pub score: u8,
    pub reasons: Vec<Reason>,
}

/// Everything the engine looks at besides the attempt and the policy.
pub struct Inputs<'a> {
    /// The customer's events before the attempt (anything at or after it is ignored), covering at
    /// least `history_days + destination_link_days` days back.
    pub past: &'a [Past],
    /// What happened on the attempt's IP within `others_days` before it.
    pub activity: IpActivity,
    /// The same over the IP's familiarity network (/24, /48).
    pub net_activity: IpActivity,
    pub population: &'a Population,
    pub marks: &'a Marks,
    pub intel: &'a dyn IpIntel,
}

/// Combines points: `100·(1 − Π(1 − pᵢ/100))`, rounded.
pub fn combine(points: impl IntoIterator<Item = u8>) -> u8 {
    let keep: f64 = points
        .into_iter()
        .map(|p| 1.0 - f64::from(p.min(100)) / 100.0)
        .product();
    (100.0 * (1.0 - keep)).round().clamp(0.0, 100.0) as u8
}

/// The statistical login score (Freeman et al., NDSS 2016): the log likelihood ratio of the
/// login's features under the population's habits (an attacker is anyone) against the customer's
/// own, whose frequencies are smoothed towards the population's so an unseen value is not
/// impossible. Positive: more like a stranger than like the customer.
///
/// `own` holds the features of the customer's logins, each distinct set once with the number of
/// logins that had it.
pub fn login_score(
    attempt_features: &[(Feature, u128)],
    own: &[(Vec<(Feature, u128)>, u32)],
    population: &Population,
    smoothing: f64,
) -> (f64, Vec<(Feature, f64)>) {
    let n: f64 = own.iter().map(|(_, k)| f64::from(*k)).sum();
    let mut total = 0.0;
    let mut parts = Vec::with_capacity(attempt_features.len());
    for f in attempt_features {
        let c: f64 = own
            .iter()
            .filter(|(fs, _)| fs.contains(f))
            .map(|(_, k)| f64::from(*k))
            .sum();
        let pp = population.p(*f);
        let pu = (c + smoothing * pp) / (n + smoothing);
        let llr = (pp / pu).ln();
        total += llr;
        parts.push((f.0, llr));
    }
    (total, parts)
}

/// Assesses an attempt.
pub fn assess(attempt: &Attempt, inp: &Inputs<'_>, policy: &Policy) -> Assessment {
    let w = policy.windows();
    let vp = policy.verdict_policy();
    let t = attempt.at;
    // The customer's events before the attempt, in time order.
    let mut past: Vec<&Past> = inp.past.iter().filter(|p| p.access.at < t).collect();
    past.sort_by_key(|p| p.access.at);
    let accesses: Vec<Access> = past.iter().map(|p| p.access).collect();
    let mut reasons: Vec<Reason> = Vec::new();
    let mut fire = |code: &'static str, evidence: Value| {
        let points = policy.points_of(code);
        if points == 0 {
            return;
        }
        if let Some(r) = rule(code) {
            reasons.push(Reason {
                code,
                points,
                message_ja: r.ja,
                message_en: r.en,
                evidence,
            });
        }
    };

    let subject = Subject {
        at: t,
        ip: attempt.ip,
        device: attempt.device,
    };
    let j = verdict::judge(&subject, &accesses, &inp.activity, inp.intel, &w, &vp);
    let marked_ip = attempt
        .ip
        .is_some_and(|ip| inp.marks.familiar_ips.contains(&ip_key(ip)));
    let marked_device = attempt
        .device
        .is_some_and(|d| inp.marks.familiar_devices.contains(&d));
    let ip_f = if marked_ip {
        Some(Familiarity::Established)
    } else {
        j.ip
    };
    let dev_f = if marked_device {
        Some(Familiarity::Established)
    } else {
        j.device
    };
    let has = |r: &str| j.reasons.contains(&r);
    let established = |f: Option<Familiarity>| f == Some(Familiarity::Established);
    let online = attempt.ip.is_some() && attempt.channel.is_online();
    let sensitive = attempt.kind != Kind::Login && attempt.kind.is_sensitive();
    let fam = |f: Option<Familiarity>| f.map(|f| json!(f)).unwrap_or(Value::Null);

    // Evidence about the access itself.
    let act = &inp.activity;
    if has(verdict::reason::FAILED_LOGINS_MANY_ACCOUNTS) {
        fire(
            "failed_logins_many_accounts",
            json!({"failed_login_accounts": act.failed_login_accounts,
                   "failed_logins": act.failed_logins,
                   "other_customers": act.other_customers,
                   "days": policy.others_days}),
        );
    } else if has(verdict::reason::SHARED_IP) && !established(ip_f) {
        // Carrier NAT and office NAT share addresses among honest customers: only sharing by
        // an address the customer does not know counts, and little.
        fire(
            "shared_ip",
            json!({"other_customers": act.other_customers, "logins": act.logins,
                   "days": policy.others_days}),
        );
    }
    // Stuffing spread over a network's addresses, each below the IP's own threshold; carrier
    // NAT is spared as above (the failing accounts must be most of those the network touched).
    let net = &inp.net_activity;
    if online
        && !has(verdict::reason::FAILED_LOGINS_MANY_ACCOUNTS)
        && net.failed_login_accounts >= policy.stuffing_network_accounts
        && 2 * net.failed_login_accounts > net.other_customers + 1
    {
        fire(
            "failed_logins_many_accounts_network",
            json!({"network": attempt.ip.map(|ip| crate::net::prefix_net(ip).to_string()),
                   "failed_login_accounts": net.failed_login_accounts,
                   "failed_logins": net.failed_logins,
                   "other_customers": net.other_customers,
                   "days": policy.others_days}),
        );
    }
    let facts = &j.facts;
    let anon_evidence = || json!({"asn": facts.asn, "org": facts.org, "country": facts.country});
    // An established device behind a VPN or abroad is the customer travelling or private.
    let discount = |p: bool| p && !established(dev_f);
    if facts.hosting && (discount(true) || sensitive) {
        fire("hosting_ip", anon_evidence());
    }
    if facts.vpn && (discount(true) || sensitive) {
        fire("vpn_ip", anon_evidence());
    }
    if facts.anonymous {
        fire("anonymous_ip", anon_evidence());
    }
    if has(verdict::reason::FOREIGN_COUNTRY) && (discount(true) || sensitive) {
        fire(
            "foreign_country",
            json!({"country": facts.country, "home_country": policy.home_country}),
        );
    }
    if inp.marks.fraud_ip {
        fire("confirmed_fraud_ip", json!({"ip": attempt.ip}));
    }
    if inp.marks.fraud_ips_on_customer > 0 && (sensitive || attempt.kind == Kind::Login) {
        fire(
            "account_touched_by_fraud_ip",
            json!({"fraud_ips": inp.marks.fraud_ips_on_customer, "days": policy.fraud_ip_days}),
        );
    }

    // Familiarity, judged on history before the session.
    if online && sensitive {
        if !established(ip_f) && !established(dev_f) && !has(verdict::reason::NO_HISTORY) {
            fire(
                "unfamiliar_access",
                json!({"ip": fam(ip_f), "network": fam(j.network), "device": fam(dev_f),
                       "session_start": format_tokyo(j.session_start)}),
            );
        }
        if attempt.kind != Kind::Withdrawal
            && attempt.kind != Kind::Trade
            && dev_f.is_some()
            && !established(dev_f)
            && !has(verdict::reason::NO_HISTORY)
        {
            fire("new_device_sensitive_change", json!({"device": fam(dev_f)}));
        }
        if has(verdict::reason::CREDENTIAL_CHANGE_IN_SESSION) {
            fire("credential_change_in_session", json!({}));
        }
        if has(verdict::reason::FAILED_LOGIN_IN_SESSION) {
            fire("failed_login_in_session", json!({}));
        }
    }
    if online && has(verdict::reason::DORMANT_ACCOUNT) && !established(ip_f) && !established(dev_f)
    {
        fire(
            "dormant_account",
            json!({"history_days": policy.history_days}),
        );
    }

    // Impossible travel: from the latest earlier access whose IP the City database places.
    if online
        && (discount(true) || sensitive)
        && let Some(here) = attempt.ip.and_then(|ip| inp.intel.location(ip))
        && let Some((before, there)) = past.iter().rev().find_map(|p| {
            let ip = p.access.ip.filter(|_| p.access.kind.counts_in_history())?;
            Some((p, inp.intel.location(crate::net::key_ip(ip))?))
        })
    {
        let km = here.km_to(&there);
        let beyond = km - f64::from(here.accuracy_km) - f64::from(there.accuracy_km);
        let hours = (t - before.access.at) as f64 / 3_600_000_000.0;
        // Within a minute counts as a minute: two places at once are not infinitely fast.
        let kmh = beyond / hours.max(1.0 / 60.0);
        if beyond >= f64::from(policy.impossible_travel_km)
            && kmh > f64::from(policy.impossible_travel_kmh)
        {
            fire(
                "impossible_travel",
                json!({"km": km.round(), "hours": (hours * 100.0).round() / 100.0,
                       "km_per_hour": kmh.round(),
                       "previous_ip": before.access.ip.map(crate::net::key_ip),
                       "previous_at": crate::time::format_tokyo(before.access.at)}),
            );
        }
    }

    // The seed's chain: a withdrawal to a destination changed recently.
    if attempt.kind == Kind::Withdrawal
        && let Some(change) = linked_change(&past, t, policy)
    {
        let change_subject = Subject {
            at: change.access.at,
            ip: change.access.ip.map(crate::net::key_ip),
            device: change.access.device,
        };
        let cj = verdict::judge(
            &change_subject,
            &accesses,
            &inp.activity,
            inp.intel,
            &w,
            &vp,
        );
        let change_ip_known = change
            .access
            .ip
            .is_some_and(|k| inp.marks.familiar_ips.contains(&k))
            || established(cj.ip)
            || established(cj.device);
        // The withdrawal's IP against the history before the change's session.
        let wj = verdict::judge(
            &Subject {
                at: change.access.at,
                ip: attempt.ip,
                device: attempt.device,
            },
            &accesses,
            &inp.activity,
            inp.intel,
            &w,
            &vp,
        );
        let withdrawal_known = marked_ip || established(wj.ip) || established(wj.device);
        let change_online = change.access.ip.is_some() && change.access.channel.is_online();
        let evidence = json!({
            "destination_changed_at": format_tokyo(change.access.at),
            "destination_change_ip": change.access.ip.map(crate::net::key_ip),
            "destination_change_ip_familiarity": fam(cj.ip),
            "withdrawal_ip_familiarity_before_change": fam(wj.ip),
        });
        let same_ip = change.access.ip.is_some() && change.access.ip == attempt.ip.map(ip_key);
        if change_online && online && same_ip && !change_ip_known {
            fire(
                "same_unfamiliar_ip_for_destination_change_and_withdrawal",
                evidence.clone(),
            );
        } else {
            if change_online && !change_ip_known {
                fire(
                    "withdrawal_to_destination_changed_from_unfamiliar_ip",
                    evidence.clone(),
                );
            }
            if online && !withdrawal_known {
                fire(
                    "withdrawal_from_ip_unfamiliar_before_destination_change",
                    evidence,
                );
            }
        }
    }

    // The takeover chain.
    if matches!(attempt.kind, Kind::DestinationChange | Kind::Withdrawal) {
        let steps = chain_steps(&past, attempt, policy);
        let n = steps.len();
        // The attempt itself is a step: a destination change after a credential change, or a
        // withdrawal after two of the earlier steps.
        if (attempt.kind == Kind::DestinationChange && n >= 1)
            || (attempt.kind == Kind::Withdrawal && n >= 2)
        {
            fire(
                "takeover_chain",
                json!({"steps": steps, "hours": policy.chain_hours}),
            );
        }
    }

    // The statistical login score.
    if attempt.kind == Kind::Login && online {
        // Logins per distinct (IP, agent): IP data is looked up once per address.
        let mut seen: foldhash::HashMap<(Option<u128>, Option<u64>), u32> = Default::default();
        for p in past.iter().filter(|p| {
            p.access.kind.counts_in_history()
                && p.access.at >= t - w.history
                && p.access.ip.is_some()
        }) {
            *seen.entry((p.access.ip, p.ua)).or_default() += 1;
        }
        let own: Vec<(Vec<FeatureValue>, u32)> = seen
            .into_iter()
            .map(|((ip, ua), k)| (features(ip.map(crate::net::key_ip), ua, inp.intel), k))
            .collect();
        let mine = features(attempt.ip, attempt.ua, inp.intel);
        let (score, parts) = login_score(&mine, &own, inp.population, policy.login_score_smoothing);
        // A device the customer has used for long vouches for the login on its own.
        if score >= policy.login_score_threshold && !established(dev_f) {
            let parts: serde_json::Map<String, Value> = parts
                .iter()
                .map(|(f, v)| (f.as_str().to_owned(), json!((v * 100.0).round() / 100.0)))
                .collect();
            fire(
                "unusual_login",
                json!({"score": (score * 100.0).round() / 100.0,
                       "threshold": policy.login_score_threshold,
                       "logins_in_history": own.len(), "features": parts}),
            );
        }
    }

    let score = combine(reasons.iter().map(|r| r.points));
    reasons.sort_by(|a, b| b.points.cmp(&a.points).then(a.code.cmp(b.code)));
    Assessment {
        decision: policy.thresholds(attempt.kind).decide(score),
        score,
        reasons,
    }
}

/// The customer's latest destination change with `t − link_days ≤ at < t`.
fn linked_change<'a>(past: &[&'a Past], t: i64, policy: &Policy) -> Option<&'a Past> {
    let from = t - i64::from(policy.destination_link_days) * DAY_US;
    past.iter()
        .rev()
        .find(|p| {
            p.access.kind == Kind::DestinationChange && p.access.at >= from && p.access.at < t
        })
        .copied()
}

/// The steps of the takeover chain before the attempt within `chain_hours`, in order: a
/// credential change, then a destination change, then large sells. Each step must follow the
/// previous one.
fn chain_steps(past: &[&Past], attempt: &Attempt, policy: &Policy) -> Vec<&'static str> {
    let from = attempt.at - i64::from(policy.chain_hours) * HOUR_US;
    let recent = past
        .iter()
        .filter(|p| p.access.at >= from && p.access.at < attempt.at);
    let mut steps = Vec::new();
    let mut credential_at = None;
    let mut change_at = None;
    let mut sold = 0i64;
    for p in recent {
        let a = &p.access;
        if a.kind.is_credential_change() && credential_at.is_none() {
            credential_at = Some(a.at);
        } else if a.kind == Kind::DestinationChange && credential_at.is_some() {
            change_at.get_or_insert(a.at);
        } else if a.kind == Kind::Trade
            && p.side == Some(Side::Sell)
            && (change_at.is_some()
                || (attempt.kind == Kind::Withdrawal && credential_at.is_some()))
        {
            sold = sold.saturating_add(p.amount.unwrap_or(0));
        }
    }
    if credential_at.is_some() {
        steps.push("credential_change");
    }
    if change_at.is_some() {
        steps.push("destination_change");
    }
    if attempt.kind == Kind::Withdrawal && sold >= policy.large_sell_yen {
        steps.push("large_sells");
    }
    steps
}

#[cfg(test)]
mod tests;
