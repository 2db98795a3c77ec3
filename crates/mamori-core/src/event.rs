//! The access-event contract: what the broker's systems send mamori, one event per procedure.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// Longest accepted `event_id`, in bytes.
pub const MAX_EVENT_ID: usize = 128;
/// Longest accepted `customer_id`, in bytes.
pub const MAX_CUSTOMER_ID: usize = 64;
/// Longest accepted `user_agent` / `device_id`, in bytes (longer values are refused, not cut).
pub const MAX_FREE_TEXT: usize = 1024;

macro_rules! code_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $code:literal => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, ::serde::Serialize, ::serde::Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant = $code),+ }

        impl $name {
            /// Every value, in code order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The contract's text for this value.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// The compact code used in storage.
            pub fn code(self) -> u8 {
                self as u8
            }

            /// The value for a storage code.
            pub fn from_code(code: i64) -> Option<Self> {
                match code { $($code => Some($name::$variant),)+ _ => None }
            }

            /// Parses the contract's text.
            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some($name::$variant),)+ _ => None }
            }

            /// The accepted texts, for error messages.
            pub fn expected() -> String {
                [$($text),+].join(", ")
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                Self::parse(s).ok_or_else(|| format!("unknown value {s:?}; expected one of {}", Self::expected()))
            }
        }
    };
}

/// Also used for the enums of [`crate::assess`] and [`crate::case`].
pub(crate) use code_enum;

code_enum!(
    /// What the customer (or someone in their name) did.
    Kind {
        Login = 1 => "login",
        LoginFailed = 2 => "login_failed",
        Logout = 3 => "logout",
        DestinationChange = 4 => "destination_change",
        Withdrawal = 5 => "withdrawal",
        Trade = 6 => "trade",
        PasswordChange = 7 => "password_change",
        WithdrawalPasswordChange = 8 => "withdrawal_password_change",
        EmailChange = 9 => "email_change",
        PhoneChange = 10 => "phone_change",
        AddressChange = 11 => "address_change",
        MfaChange = 12 => "mfa_change",
        Access = 13 => "access",
    }
);

code_enum!(
    /// Where the procedure was made.
    Channel {
        Web = 1 => "web",
        App = 2 => "app",
        SupportCenter = 3 => "support_center",
        Paper = 4 => "paper",
    }
);

code_enum!(
    /// Direction of a trade.
    Side {
        Buy = 1 => "buy",
        Sell = 2 => "sell",
    }
);

impl Kind {
    /// Whether events of this kind count in a customer's history (every kind but `login_failed`:
    /// a failed login proves nothing about who the customer is).
    pub fn counts_in_history(self) -> bool {
        self != Kind::LoginFailed
    }

    /// Procedures that move money or change what protects it: destination changes, withdrawals and
    /// credential or contact changes (the kinds investigations and step-up care about).
    pub fn is_sensitive(self) -> bool {
        matches!(self, Kind::DestinationChange | Kind::Withdrawal) || self.is_credential_change()
    }

    /// Procedures that change credentials or contact data: the first step of a takeover chain.
    pub fn is_credential_change(self) -> bool {
        matches!(
            self,
            Kind::PasswordChange
                | Kind::WithdrawalPasswordChange
                | Kind::EmailChange
                | Kind::PhoneChange
                | Kind::AddressChange
                | Kind::MfaChange
        )
    }
}

impl Channel {
    /// Channels on which the customer connects over the internet and an IP is required.
    pub fn is_online(self) -> bool {
        matches!(self, Channel::Web | Channel::App)
    }
}

/// A bank account registered as the withdrawal destination (Japanese domestic account).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Destination {
    /// 4-digit bank code (金融機関コード).
    pub bank_code: String,
    /// 3-digit branch code (支店コード).
    pub branch_code: String,
    /// Account type, e.g. `ordinary` (普通) or `current` (当座); free text up to 32 bytes.
    pub account_type: String,
    /// 7-digit account number. Personal data: never logged.
    pub account_number: String,
    /// Account holder in kana. Personal data: never logged.
    pub holder_kana: String,
}

/// One access event, validated. `occurred_at` is microseconds since the Unix epoch, UTC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub event_id: String,
    pub occurred_at: i64,
    pub customer_id: String,
    pub kind: Kind,
    pub channel: Channel,
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
    pub device_id: Option<String>,
    pub amount: Option<i64>,
    pub side: Option<Side>,
    pub destination: Option<Destination>,
}

impl Event {
    /// Serializes to the contract's JSON object (one JSON Lines line, without the newline).
    pub fn to_json(&self) -> String {
        let mut m = serde_json::Map::new();
        m.insert("event_id".into(), self.event_id.clone().into());
        m.insert(
            "occurred_at".into(),
            crate::time::format_tokyo(self.occurred_at).into(),
        );
        m.insert("customer_id".into(), self.customer_id.clone().into());
        m.insert("kind".into(), self.kind.as_str().into());
        m.insert("channel".into(), self.channel.as_str().into());
        if let Some(ip) = self.ip {
            m.insert("ip".into(), ip.to_string().into());
        }
        if let Some(ua) = &self.user_agent {
            m.insert("user_agent".into(), ua.clone().into());
        }
        if let Some(d) = &self.device_id {
            m.insert("device_id".into(), d.clone().into());
        }
        if let Some(a) = self.amount {
            m.insert("amount".into(), a.into());
        }
        if let Some(s) = self.side {
            m.insert("side".into(), s.as_str().into());
        }
        if let Some(d) = &self.destination {
            m.insert(
                "destination".into(),
                serde_json::to_value(d).unwrap_or(serde_json::Value::Null),
            );
        }
        serde_json::Value::Object(m).to_string()
    }
}
