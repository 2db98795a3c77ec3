//! Parsing and validating events from JSON Lines and CSV. Errors name the field; the caller adds
//! the place (file:line).

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::IpAddr;

use serde::Deserialize;

use crate::event::{
    Channel, Destination, Event, Kind, MAX_CUSTOMER_ID, MAX_EVENT_ID, MAX_FREE_TEXT, Side,
};

/// Why one record was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", .field.map(|f| format!("field `{f}`: ")).unwrap_or_default())]
pub struct ParseError {
    /// The offending field, when one is to blame.
    pub field: Option<&'static str>,
    /// What is wrong and what is expected.
    pub message: String,
}

impl ParseError {
    fn field(field: &'static str, message: impl Into<String>) -> Self {
        ParseError {
            field: Some(field),
            message: message.into(),
        }
    }
    fn record(message: impl Into<String>) -> Self {
        ParseError {
            field: None,
            message: message.into(),
        }
    }
}

/// The fields of one record before validation, borrowed from the input where possible.
#[derive(Debug, Default, Deserialize)]
pub struct RawEvent<'a> {
    #[serde(borrow, default)]
    pub event_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub occurred_at: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub customer_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub channel: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub ip: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub user_agent: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub device_id: Option<Cow<'a, str>>,
    #[serde(default)]
    pub amount: Option<i64>,
    #[serde(borrow, default)]
    pub side: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub destination: Option<RawDestination<'a>>,
}

/// A destination before validation.
#[derive(Debug, Default, Deserialize)]
pub struct RawDestination<'a> {
    #[serde(borrow, default)]
    pub bank_code: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub branch_code: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub account_type: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub account_number: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub holder_kana: Option<Cow<'a, str>>,
}

fn present<'a>(v: &'a Option<Cow<'_, str>>) -> Option<&'a str> {
    v.as_deref().filter(|s| !s.is_empty())
}

fn required<'a>(v: &'a Option<Cow<'_, str>>, field: &'static str) -> Result<&'a str, ParseError> {
    present(v).ok_or_else(|| ParseError::field(field, "missing (required)"))
}

fn bounded(s: &str, field: &'static str, max: usize) -> Result<(), ParseError> {
    if s.len() > max {
        return Err(ParseError::field(
            field,
            format!("{} bytes long; at most {max} allowed", s.len()),
        ));
    }
    if s.chars().any(char::is_control) {
        return Err(ParseError::field(field, "contains control characters"));
    }
    Ok(())
}

fn optional_text(
    v: &Option<Cow<'_, str>>,
    field: &'static str,
) -> Result<Option<String>, ParseError> {
    match present(v) {
        Some(s) => {
            bounded(s, field, MAX_FREE_TEXT)?;
            Ok(Some(s.to_owned()))
        }
        None => Ok(None),
    }
}

fn digits_exact(s: &str, n: usize, field: &'static str) -> Result<String, ParseError> {
    if s.len() == n && s.bytes().all(|b| b.is_ascii_digit()) {
        Ok(s.to_owned())
    } else {
        Err(ParseError::field(
            field,
            format!("expected exactly {n} ASCII digits"),
        ))
    }
}

impl RawEvent<'_> {
    /// Validates the record against the event contract.
    pub fn validate(&self) -> Result<Event, ParseError> {
        let event_id = required(&self.event_id, "event_id")?;
        bounded(event_id, "event_id", MAX_EVENT_ID)?;
        let occurred_at = crate::time::parse_rfc3339(required(&self.occurred_at, "occurred_at")?)
            .map_err(|e| ParseError::field("occurred_at", e))?;
        let customer_id = required(&self.customer_id, "customer_id")?;
        bounded(customer_id, "customer_id", MAX_CUSTOMER_ID)?;
        let kind_s = required(&self.kind, "kind")?;
        let kind = Kind::parse(kind_s).ok_or_else(|| {
            ParseError::field(
                "kind",
                format!(
                    "unknown kind {kind_s:?}; expected one of {}",
                    Kind::expected()
                ),
            )
        })?;
        let channel = match present(&self.channel) {
            None => Channel::Web,
            Some(c) => Channel::parse(c).ok_or_else(|| {
                ParseError::field(
                    "channel",
                    format!(
                        "unknown channel {c:?}; expected one of {}",
                        Channel::expected()
                    ),
                )
            })?,
        };
        let ip = match present(&self.ip) {
            Some(s) => {
                if !channel.is_online() {
                    return Err(ParseError::field(
                        "ip",
                        format!("must be absent for channel {channel} (no customer IP there)"),
                    ));
                }
                Some(
                    s.parse::<IpAddr>()
                        .map_err(|_| {
                            ParseError::field("ip", format!("{s:?} is not an IPv4 or IPv6 address"))
                        })?
                        .to_canonical(),
                )
            }
            None if channel.is_online() => {
                return Err(ParseError::field(
                    "ip",
                    format!("missing (required for channel {channel})"),
                ));
            }
            None => None,
        };
        let user_agent = optional_text(&self.user_agent, "user_agent")?;
        let device_id = optional_text(&self.device_id, "device_id")?;
        if let Some(a) = self.amount
            && a < 0
        {
            return Err(ParseError::field("amount", "must not be negative (JPY)"));
        }
        let side = match present(&self.side) {
            None => None,
            Some(s) => Some(Side::parse(s).ok_or_else(|| {
                ParseError::field("side", format!("unknown side {s:?}; expected buy or sell"))
            })?),
        };
        let destination = match &self.destination {
            None => None,
            Some(d) => Some(d.validate()?),
        };
        Ok(Event {
            event_id: event_id.to_owned(),
            occurred_at,
            customer_id: customer_id.to_owned(),
            kind,
            channel,
            ip,
            user_agent,
            device_id,
            amount: self.amount,
            side,
            destination,
        })
    }
}

impl RawDestination<'_> {
    fn is_empty(&self) -> bool {
        [
            &self.bank_code,
            &self.branch_code,
            &self.account_type,
            &self.account_number,
            &self.holder_kana,
        ]
        .iter()
        .all(|f| present(f).is_none())
    }

    fn validate(&self) -> Result<Destination, ParseError> {
        let bank_code = digits_exact(
            required(&self.bank_code, "destination.bank_code")?,
            4,
            "destination.bank_code",
        )?;
        let branch_code = digits_exact(
            required(&self.branch_code, "destination.branch_code")?,
            3,
            "destination.branch_code",
        )?;
        let account_number = digits_exact(
            required(&self.account_number, "destination.account_number")?,
            7,
            "destination.account_number",
        )?;
        let account_type = present(&self.account_type).unwrap_or("ordinary");
        bounded(account_type, "destination.account_type", 32)?;
        let holder_kana = present(&self.holder_kana).unwrap_or("");
        bounded(holder_kana, "destination.holder_kana", 256)?;
        Ok(Destination {
            bank_code,
            branch_code,
            account_type: account_type.to_owned(),
            account_number,
            holder_kana: holder_kana.to_owned(),
        })
    }
}

/// Parses one JSON Lines line (without its newline) into a validated event.
pub fn parse_json_line(line: &str) -> Result<Event, ParseError> {
    match serde_json::from_str::<RawEvent<'_>>(line) {
        Ok(raw) => raw.validate(),
        Err(e) => Err(explain_json_error(line, e)),
    }
}

/// The slow path after a failed fast parse: find which field is to blame.
fn explain_json_error(line: &str, e: serde_json::Error) -> ParseError {
    let value: serde_json::Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(_) => return ParseError::record(format!("not valid JSON: {e}")),
    };
    let Some(obj) = value.as_object() else {
        return ParseError::record("expected a JSON object");
    };
    const STRINGS: [&str; 9] = [
        "event_id",
        "occurred_at",
        "customer_id",
        "kind",
        "channel",
        "ip",
        "user_agent",
        "device_id",
        "side",
    ];
    for f in STRINGS {
        if let Some(v) = obj.get(f)
            && !(v.is_string() || v.is_null())
        {
            return ParseError::field(f, format!("expected a string, got {v}"));
        }
    }
    if let Some(v) = obj.get("amount")
        && !(v.is_i64() || v.is_null())
    {
        return ParseError::field(
            "amount",
            format!("expected an integer number of JPY, got {v}"),
        );
    }
    if let Some(v) = obj.get("destination")
        && !v.is_null()
    {
        let Some(d) = v.as_object() else {
            return ParseError::field("destination", "expected an object");
        };
        for (f, name) in [
            ("bank_code", "destination.bank_code"),
            ("branch_code", "destination.branch_code"),
            ("account_type", "destination.account_type"),
            ("account_number", "destination.account_number"),
            ("holder_kana", "destination.holder_kana"),
        ] {
            if let Some(v) = d.get(f)
                && !(v.is_string() || v.is_null())
            {
                return ParseError::field(name, format!("expected a string, got {v}"));
            }
        }
    }
    ParseError::record(e.to_string())
}

/// Column positions of a CSV file's header.
#[derive(Debug, Clone)]
pub struct CsvHeader {
    cols: [Option<usize>; CSV_COLUMNS.len()],
}

const CSV_COLUMNS: [&str; 15] = [
    "event_id",
    "occurred_at",
    "customer_id",
    "kind",
    "channel",
    "ip",
    "user_agent",
    "device_id",
    "amount",
    "side",
    "destination_bank_code",
    "destination_branch_code",
    "destination_account_type",
    "destination_account_number",
    "destination_holder_kana",
];

impl CsvHeader {
    /// Reads a header row; unknown columns are refused so a typo cannot silently drop data.
    pub fn new<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Self, ParseError> {
        let mut cols = [None; CSV_COLUMNS.len()];
        let mut seen = HashMap::new();
        for (i, name) in names.into_iter().enumerate() {
            let name = name.trim().trim_start_matches('\u{feff}');
            let Some(pos) = CSV_COLUMNS.iter().position(|c| *c == name) else {
                return Err(ParseError::record(format!(
                    "unknown CSV column {name:?}; expected columns among {}",
                    CSV_COLUMNS.join(", ")
                )));
            };
            if seen.insert(pos, i).is_some() {
                return Err(ParseError::record(format!(
                    "CSV column {name:?} appears twice"
                )));
            }
            cols[pos] = Some(i);
        }
        for required in ["event_id", "occurred_at", "customer_id", "kind"] {
            let pos = CSV_COLUMNS.iter().position(|c| *c == required).unwrap_or(0);
            if cols[pos].is_none() {
                return Err(ParseError::record(format!(
                    "CSV header lacks the column {required:?}"
                )));
            }
        }
        Ok(CsvHeader { cols })
    }

    /// Parses one CSV record (its fields in file order) into a validated event.
    pub fn parse<'a>(&self, record: &'a csv::StringRecord) -> Result<Event, ParseError> {
        let get = |i: usize| -> Option<Cow<'a, str>> {
            self.cols[i].and_then(|c| record.get(c)).map(Cow::Borrowed)
        };
        let amount = match get(8).as_deref().map(str::trim).filter(|s| !s.is_empty()) {
            None => None,
            Some(s) => Some(s.parse::<i64>().map_err(|_| {
                ParseError::field("amount", format!("{s:?} is not an integer number of JPY"))
            })?),
        };
        let destination = RawDestination {
            bank_code: get(10),
            branch_code: get(11),
            account_type: get(12),
            account_number: get(13),
            holder_kana: get(14),
        };
        let raw = RawEvent {
            event_id: get(0),
            occurred_at: get(1),
            customer_id: get(2),
            kind: get(3),
            channel: get(4),
            ip: get(5),
            user_agent: get(6),
            device_id: get(7),
            amount,
            side: get(9),
            destination: (!destination.is_empty()).then_some(destination),
        };
        raw.validate()
    }
}

/// The CSV header line written by [`event_csv_record`].
pub fn csv_header() -> &'static [&'static str] {
    &CSV_COLUMNS
}

/// An event as CSV fields in [`csv_header`] order.
pub fn event_csv_record(e: &Event) -> Vec<String> {
    let d = e.destination.clone().unwrap_or_default();
    vec![
        e.event_id.clone(),
        crate::time::format_tokyo(e.occurred_at),
        e.customer_id.clone(),
        e.kind.to_string(),
        e.channel.to_string(),
        e.ip.map(|i| i.to_string()).unwrap_or_default(),
        e.user_agent.clone().unwrap_or_default(),
        e.device_id.clone().unwrap_or_default(),
        e.amount.map(|a| a.to_string()).unwrap_or_default(),
        e.side.map(|s| s.to_string()).unwrap_or_default(),
        d.bank_code,
        d.branch_code,
        if e.destination.is_some() {
            d.account_type
        } else {
            String::new()
        },
        d.account_number,
        d.holder_kana,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"event_id":"e1","occurred_at":"2020-09-16T22:25:00+09:00","customer_id":"c1","kind":"destination_change","ip":"203.0.113.7","device_id":"d1","destination":{"bank_code":"0001","branch_code":"001","account_type":"ordinary","account_number":"1234567","holder_kana":"ヤマダ タロウ"}}"#;

    #[test]
    fn parses_a_good_line() {
        let e = parse_json_line(GOOD).unwrap();
        assert_eq!(e.event_id, "e1");
        assert_eq!(e.kind, Kind::DestinationChange);
        assert_eq!(e.channel, Channel::Web);
        assert_eq!(e.ip.unwrap().to_string(), "203.0.113.7");
        assert_eq!(e.destination.as_ref().unwrap().account_number, "1234567");
        assert_eq!(parse_json_line(&e.to_json()).unwrap(), e);
    }

    fn err(line: &str) -> ParseError {
        parse_json_line(line).unwrap_err()
    }

    #[test]
    fn names_the_bad_field() {
        let cases = [
            (
                GOOD.replace("\"kind\":\"destination_change\"", "\"kind\":\"teleport\""),
                "kind",
            ),
            (GOOD.replace("203.0.113.7", "203.0.113.999"), "ip"),
            (GOOD.replace("+09:00", ""), "occurred_at"),
            (GOOD.replace("\"0001\"", "\"1\""), "destination.bank_code"),
            (GOOD.replace("\"e1\"", "5"), "event_id"),
            (GOOD.replace(",\"ip\":\"203.0.113.7\"", ""), "ip"),
            (GOOD.replace("\"c1\"", "\"\""), "customer_id"),
            (GOOD.replace("\"d1\"", "{}"), "device_id"),
            (
                GOOD.replace("\"device_id\"", "\"amount\":\"big\",\"device_id\""),
                "amount",
            ),
        ];
        for (line, field) in cases {
            assert_eq!(err(&line).field, Some(field), "{line}");
        }
        assert_eq!(err("{not json").field, None);
        assert_eq!(err("[1,2]").field, None);
    }

    #[test]
    fn offline_channels_carry_no_ip() {
        let paper = r#"{"event_id":"p","occurred_at":"2020-09-16T10:00:00Z","customer_id":"c","kind":"destination_change","channel":"paper"}"#;
        assert_eq!(parse_json_line(paper).unwrap().ip, None);
        let with_ip = paper.replace("\"paper\"", "\"paper\",\"ip\":\"1.2.3.4\"");
        assert_eq!(err(&with_ip).field, Some("ip"));
    }

    #[test]
    fn csv_round_trip() {
        let e = parse_json_line(GOOD).unwrap();
        let header = CsvHeader::new(csv_header().iter().copied()).unwrap();
        let rec = csv::StringRecord::from(event_csv_record(&e));
        assert_eq!(header.parse(&rec).unwrap(), e);
        assert!(CsvHeader::new(["event_id", "when"]).is_err());
        assert!(CsvHeader::new(["event_id", "occurred_at", "kind"]).is_err());
    }
}
