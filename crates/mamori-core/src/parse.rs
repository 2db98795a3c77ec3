//! Parsing and validating events from JSON Lines and CSV. Errors name the field; the caller adds
//! the place (file:line).

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::IpAddr;

use serde::Deserialize;

use crate::event::{
    Channel, Destination, Event, Kind, MAX_CUSTOMER_ID, MAX_EVENT_ID, MAX_FREE_TEXT, Side,
};

/// A validated event borrowing its text from the input: what [`RawEvent::check`] gives, so that
/// readers which only need a few fields avoid building an owned [`Event`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventView<'a> {
    pub event_id: &'a str,
    pub occurred_at: i64,
    pub customer_id: &'a str,
    pub kind: Kind,
    pub channel: Channel,
    pub ip: Option<IpAddr>,
    pub user_agent: Option<&'a str>,
    pub device_id: Option<&'a str>,
    pub amount: Option<i64>,
    pub side: Option<Side>,
    pub destination: Option<DestinationView<'a>>,
}

/// A validated destination borrowing its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DestinationView<'a> {
    pub bank_code: &'a str,
    pub branch_code: &'a str,
    pub account_type: &'a str,
    pub account_number: &'a str,
    pub holder_kana: &'a str,
}

impl<'a> EventView<'a> {
    /// The view of an owned event.
    pub fn of(e: &'a Event) -> Self {
        EventView {
            event_id: &e.event_id,
            occurred_at: e.occurred_at,
            customer_id: &e.customer_id,
            kind: e.kind,
            channel: e.channel,
            ip: e.ip,
            user_agent: e.user_agent.as_deref(),
            device_id: e.device_id.as_deref(),
            amount: e.amount,
            side: e.side,
            destination: e.destination.as_ref().map(|d| DestinationView {
                bank_code: &d.bank_code,
                branch_code: &d.branch_code,
                account_type: &d.account_type,
                account_number: &d.account_number,
                holder_kana: &d.holder_kana,
            }),
        }
    }

    /// The owned event.
    pub fn to_event(&self) -> Event {
        Event {
            event_id: self.event_id.to_owned(),
            occurred_at: self.occurred_at,
            customer_id: self.customer_id.to_owned(),
            kind: self.kind,
            channel: self.channel,
            ip: self.ip,
            user_agent: self.user_agent.map(str::to_owned),
            device_id: self.device_id.map(str::to_owned),
            amount: self.amount,
            side: self.side,
            destination: self.destination.map(|d| Destination {
                bank_code: d.bank_code.to_owned(),
                branch_code: d.branch_code.to_owned(),
                account_type: d.account_type.to_owned(),
                account_number: d.account_number.to_owned(),
                holder_kana: d.holder_kana.to_owned(),
            }),
        }
    }
}

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

/// The fields of one record as text, before validation: what validation reads, whichever way the
/// record was read ([`RawEvent::fields`], the CSV reader, the JSON scanner).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RawFields<'a> {
    pub event_id: Option<&'a str>,
    pub occurred_at: Option<&'a str>,
    pub customer_id: Option<&'a str>,
    pub kind: Option<&'a str>,
    pub channel: Option<&'a str>,
    pub ip: Option<&'a str>,
    pub user_agent: Option<&'a str>,
    pub device_id: Option<&'a str>,
    pub amount: Option<i64>,
    pub side: Option<&'a str>,
    pub destination: Option<RawDestinationFields<'a>>,
}

/// The fields of a destination as text, before validation.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RawDestinationFields<'a> {
    pub bank_code: Option<&'a str>,
    pub branch_code: Option<&'a str>,
    pub account_type: Option<&'a str>,
    pub account_number: Option<&'a str>,
    pub holder_kana: Option<&'a str>,
}

fn present(v: Option<&str>) -> Option<&str> {
    v.filter(|s| !s.is_empty())
}

fn required<'a>(v: Option<&'a str>, field: &'static str) -> Result<&'a str, ParseError> {
    present(v).ok_or_else(|| ParseError::field(field, "missing (required)"))
}

/// Whether `s` holds a control character (`char::is_control`: U+0000–U+001F, U+007F–U+009F).
/// Screens the bytes first: every such character's UTF-8 form holds a byte below 0x20, 0x7F or
/// the lead byte 0xC2.
fn has_control(s: &str) -> bool {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let screen = |w: u64| {
        let del = w ^ (LO * 0x7f);
        let c2 = w ^ (LO * 0xc2);
        (w.wrapping_sub(LO * 0x20) & !w)
            | (del.wrapping_sub(LO) & !del)
            | (c2.wrapping_sub(LO) & !c2)
    };
    let b = s.as_bytes();
    let mut words = b.chunks_exact(8);
    let mut flagged = 0;
    for w in &mut words {
        let mut a = [0u8; 8];
        a.copy_from_slice(w);
        flagged |= screen(u64::from_le_bytes(a));
    }
    // The tail, padded with spaces (which are never flagged).
    let tail = words
        .remainder()
        .iter()
        .enumerate()
        .fold(LO * u64::from(b' '), |w, (k, &c)| {
            (w & !(0xff << (8 * k))) | (u64::from(c) << (8 * k))
        });
    flagged |= screen(tail);
    flagged & HI != 0 && s.chars().any(char::is_control)
}

fn bounded(s: &str, field: &'static str, max: usize) -> Result<(), ParseError> {
    if s.len() > max {
        return Err(ParseError::field(
            field,
            format!("{} bytes long; at most {max} allowed", s.len()),
        ));
    }
    if has_control(s) {
        return Err(ParseError::field(field, "contains control characters"));
    }
    Ok(())
}

fn optional_text<'a>(
    v: Option<&'a str>,
    field: &'static str,
) -> Result<Option<&'a str>, ParseError> {
    match present(v) {
        Some(s) => {
            bounded(s, field, MAX_FREE_TEXT)?;
            Ok(Some(s))
        }
        None => Ok(None),
    }
}

/// `s.parse::<IpAddr>()`, with a quick path for the common dotted quad (four decimal octets,
/// no leading zeros); anything else is left to the standard parser.
fn parse_ip(s: &str) -> Option<IpAddr> {
    fn quad(b: &[u8]) -> Option<[u8; 4]> {
        let mut out = [0u8; 4];
        let mut i = 0;
        for (n, o) in out.iter_mut().enumerate() {
            if n > 0 {
                if b.get(i) != Some(&b'.') {
                    return None;
                }
                i += 1;
            }
            let start = i;
            let mut v = 0u32;
            while let Some(&c @ b'0'..=b'9') = b.get(i) {
                v = v * 10 + u32::from(c - b'0');
                i += 1;
                if i - start > 3 {
                    return None;
                }
            }
            let len = i - start;
            if len == 0 || v > 255 || (len > 1 && b[start] == b'0') {
                return None;
            }
            *o = v as u8;
        }
        (i == b.len()).then_some(out)
    }
    match quad(s.as_bytes()) {
        Some(o) => Some(IpAddr::from(o)),
        None => s.parse().ok(),
    }
}

fn digits_exact<'a>(s: &'a str, n: usize, field: &'static str) -> Result<&'a str, ParseError> {
    if s.len() == n && s.bytes().all(|b| b.is_ascii_digit()) {
        Ok(s)
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
        self.fields().check().map(|v| v.to_event())
    }

    /// The record's text fields.
    pub fn fields(&self) -> RawFields<'_> {
        RawFields {
            event_id: self.event_id.as_deref(),
            occurred_at: self.occurred_at.as_deref(),
            customer_id: self.customer_id.as_deref(),
            kind: self.kind.as_deref(),
            channel: self.channel.as_deref(),
            ip: self.ip.as_deref(),
            user_agent: self.user_agent.as_deref(),
            device_id: self.device_id.as_deref(),
            amount: self.amount,
            side: self.side.as_deref(),
            destination: self.destination.as_ref().map(RawDestination::fields),
        }
    }
}

impl<'a> RawFields<'a> {
    /// Validates the record against the event contract: the one place where records are judged.
    #[inline]
    pub fn check(&self) -> Result<EventView<'a>, ParseError> {
        let event_id = required(self.event_id, "event_id")?;
        bounded(event_id, "event_id", MAX_EVENT_ID)?;
        let occurred_at = crate::time::parse_rfc3339(required(self.occurred_at, "occurred_at")?)
            .map_err(|e| ParseError::field("occurred_at", e))?;
        let customer_id = required(self.customer_id, "customer_id")?;
        bounded(customer_id, "customer_id", MAX_CUSTOMER_ID)?;
        let kind_s = required(self.kind, "kind")?;
        let kind = Kind::parse(kind_s).ok_or_else(|| {
            ParseError::field(
                "kind",
                format!(
                    "unknown kind {kind_s:?}; expected one of {}",
                    Kind::expected()
                ),
            )
        })?;
        let channel = match present(self.channel) {
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
        let ip = match present(self.ip) {
            Some(s) => {
                if !channel.is_online() {
                    return Err(ParseError::field(
                        "ip",
                        format!("must be absent for channel {channel} (no customer IP there)"),
                    ));
                }
                Some(
                    parse_ip(s)
                        .ok_or_else(|| {
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
        let user_agent = optional_text(self.user_agent, "user_agent")?;
        let device_id = optional_text(self.device_id, "device_id")?;
        if let Some(a) = self.amount
            && a < 0
        {
            return Err(ParseError::field("amount", "must not be negative (JPY)"));
        }
        let side = match present(self.side) {
            None => None,
            Some(s) => Some(Side::parse(s).ok_or_else(|| {
                ParseError::field("side", format!("unknown side {s:?}; expected buy or sell"))
            })?),
        };
        let destination = match &self.destination {
            None => None,
            Some(d) => Some(d.check()?),
        };
        Ok(EventView {
            event_id,
            occurred_at,
            customer_id,
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
    fn fields(&self) -> RawDestinationFields<'_> {
        RawDestinationFields {
            bank_code: self.bank_code.as_deref(),
            branch_code: self.branch_code.as_deref(),
            account_type: self.account_type.as_deref(),
            account_number: self.account_number.as_deref(),
            holder_kana: self.holder_kana.as_deref(),
        }
    }
}

impl<'a> RawDestinationFields<'a> {
    /// The destination these fields describe, validated as the event contract's (`None` when
    /// every field is empty).
    pub fn destination(&self) -> Result<Option<Destination>, ParseError> {
        if self.is_empty() {
            return Ok(None);
        }
        let d = self.check()?;
        Ok(Some(Destination {
            bank_code: d.bank_code.to_owned(),
            branch_code: d.branch_code.to_owned(),
            account_type: d.account_type.to_owned(),
            account_number: d.account_number.to_owned(),
            holder_kana: d.holder_kana.to_owned(),
        }))
    }

    fn is_empty(&self) -> bool {
        [
            self.bank_code,
            self.branch_code,
            self.account_type,
            self.account_number,
            self.holder_kana,
        ]
        .iter()
        .all(|f| present(*f).is_none())
    }

    fn check(&self) -> Result<DestinationView<'a>, ParseError> {
        let bank_code = digits_exact(
            required(self.bank_code, "destination.bank_code")?,
            4,
            "destination.bank_code",
        )?;
        let branch_code = digits_exact(
            required(self.branch_code, "destination.branch_code")?,
            3,
            "destination.branch_code",
        )?;
        let account_number = digits_exact(
            required(self.account_number, "destination.account_number")?,
            7,
            "destination.account_number",
        )?;
        let account_type = present(self.account_type).unwrap_or("ordinary");
        bounded(account_type, "destination.account_type", 32)?;
        let holder_kana = present(self.holder_kana).unwrap_or("");
        bounded(holder_kana, "destination.holder_kana", 256)?;
        Ok(DestinationView {
            bank_code,
            branch_code,
            account_type,
            account_number,
            holder_kana,
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

/// One parsed line: borrowed from the line when possible, owned when the line needed the slow
/// way (escaped strings, …).
#[derive(Debug, Clone)]
pub enum ParsedLine<'a> {
    Borrowed(EventView<'a>),
    Owned(Box<Event>),
}

impl ParsedLine<'_> {
    /// The event, borrowed.
    pub fn view(&self) -> EventView<'_> {
        match self {
            ParsedLine::Borrowed(v) => *v,
            ParsedLine::Owned(e) => EventView::of(e),
        }
    }
}

/// [`parse_json_line`] without copying: the same events and the same errors, but the common shape
/// of a line is read by [`quick_json_line`], borrowing from the line; anything else goes through
/// [`parse_json_line`], as does every line that fails validation, so errors come from one place.
#[inline]
pub fn parse_json_line_view(line: &str) -> Result<ParsedLine<'_>, ParseError> {
    match quick_json_line(line) {
        Some(v) => Ok(ParsedLine::Borrowed(v)),
        None => parse_json_line(line).map(|e| ParsedLine::Owned(Box::new(e))),
    }
}

/// The quick path of [`parse_json_line_view`]: the event of a valid line of the common shape (an
/// object of the contract's fields in any order, strings without escapes, plain integers),
/// borrowing from the line. `None` means "ask [`parse_json_line`]": the line may be invalid, or
/// valid in a shape read only there. Whenever this gives an event, [`parse_json_line`] gives the
/// same one.
#[inline]
pub fn quick_json_line(line: &str) -> Option<EventView<'_>> {
    scan::raw_fields(line).as_ref()?.check().ok()
}

/// The scanner behind [`parse_json_line_view`]: reads exactly what `serde_json` reads into a
/// [`RawEvent`] for lines it understands, and gives up (`None`) on everything else: escapes,
/// control characters, keys other than the contract's (or spelled with escapes), a key twice,
/// values of unexpected types, numbers other than plain non-negative integers of at most 18
/// digits, arrays in place of objects, trailing characters.
mod scan {
    use super::{RawDestinationFields, RawFields};

    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;

    /// JSON whitespace, as `serde_json` skips it.
    #[inline(always)]
    fn ws(b: &[u8], mut i: usize) -> usize {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = b.get(i) {
            i += 1;
        }
        i
    }

    /// The end (closing quote) of a string whose body starts at `i`; `None` at an escape or a
    /// control character (the slow path decides those) or at the end of the line.
    #[inline(always)]
    fn string_end(b: &[u8], mut i: usize) -> Option<usize> {
        while let Some(chunk) = b.get(i..i + 8) {
            let w = u64::from_le_bytes(chunk.try_into().ok()?);
            let q = w ^ (LO * u64::from(b'"'));
            let s = w ^ (LO * u64::from(b'\\'));
            // Bytes equal to '"' or '\\', or below 0x20. The lowest flagged byte is always a true
            // match (false positives only sit above a true one), so it is a quote exactly when
            // the quote mask flags it too.
            let quote = q.wrapping_sub(LO) & !q & HI;
            let m = quote | ((s.wrapping_sub(LO) & !s) | (w.wrapping_sub(LO * 0x20) & !w)) & HI;
            if m != 0 {
                let lowest = m & m.wrapping_neg();
                return (quote & lowest != 0).then(|| i + (m.trailing_zeros() / 8) as usize);
            }
            i += 8;
        }
        while let Some(&c) = b.get(i) {
            match c {
                b'"' => return Some(i),
                b'\\' | 0..=0x1f => return None,
                _ => i += 1,
            }
        }
        None
    }

    fn null(b: &[u8], i: usize) -> Option<usize> {
        (b.get(i..i + 4) == Some(b"null")).then_some(i + 4)
    }

    /// A string or null at `i`: the text and the position after it.
    #[inline(always)]
    fn text(line: &str, i: usize) -> Option<(Option<&str>, usize)> {
        let b = line.as_bytes();
        match b.get(i) {
            Some(b'"') => {
                let end = string_end(b, i + 1)?;
                Some((Some(line.get(i + 1..end)?), end + 1))
            }
            Some(b'n') => null(b, i).map(|j| (None, j)),
            _ => None,
        }
    }

    /// Null or a plain non-negative integer of at most 18 digits (no sign, no leading zero, no
    /// fraction or exponent) at `i`.
    fn integer(b: &[u8], i: usize) -> Option<(Option<i64>, usize)> {
        match b.get(i) {
            Some(b'n') => null(b, i).map(|j| (None, j)),
            Some(b'0'..=b'9') => {
                let mut j = i;
                let mut v = 0i64;
                while let Some(&c @ b'0'..=b'9') = b.get(j) {
                    if j - i == 18 {
                        return None;
                    }
                    v = v * 10 + i64::from(c - b'0');
                    j += 1;
                }
                if (b[i] == b'0' && j - i > 1) || matches!(b.get(j), Some(b'.' | b'e' | b'E')) {
                    return None;
                }
                Some((Some(v), j))
            }
            _ => None,
        }
    }

    /// Whether `rest` starts with the key `name` and its closing quote.
    macro_rules! key {
        ($rest:expr, $name:literal) => {
            $rest.get(..$name.len()) == Some(&$name[..]) && $rest.get($name.len()) == Some(&b'"')
        };
    }

    const EVENT_ID: usize = 0;
    const OCCURRED_AT: usize = 1;
    const CUSTOMER_ID: usize = 2;
    const KIND: usize = 3;
    const CHANNEL: usize = 4;
    const IP: usize = 5;
    const USER_AGENT: usize = 6;
    const DEVICE_ID: usize = 7;
    const SIDE: usize = 8;
    const AMOUNT: usize = 9;
    const DESTINATION: usize = 10;

    /// The field of the key whose opening quote is at `i`, and the position after the key.
    #[inline(always)]
    fn event_key(b: &[u8], i: usize) -> Option<(usize, usize)> {
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let rest = b.get(i + 1..)?;
        let (f, len) = match rest.first()? {
            b'e' if key!(rest, b"event_id") => (EVENT_ID, 8),
            b'o' if key!(rest, b"occurred_at") => (OCCURRED_AT, 11),
            b'c' if key!(rest, b"customer_id") => (CUSTOMER_ID, 11),
            b'c' if key!(rest, b"channel") => (CHANNEL, 7),
            b'k' if key!(rest, b"kind") => (KIND, 4),
            b'i' if key!(rest, b"ip") => (IP, 2),
            b'u' if key!(rest, b"user_agent") => (USER_AGENT, 10),
            b'd' if key!(rest, b"device_id") => (DEVICE_ID, 9),
            b'd' if key!(rest, b"destination") => (DESTINATION, 11),
            b'a' if key!(rest, b"amount") => (AMOUNT, 6),
            b's' if key!(rest, b"side") => (SIDE, 4),
            _ => return None,
        };
        Some((f, i + len + 2))
    }

    /// The destination field of the key at `i`, and the position after the key.
    fn destination_key(b: &[u8], i: usize) -> Option<(usize, usize)> {
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let rest = b.get(i + 1..)?;
        let (f, len) = if key!(rest, b"bank_code") {
            (0, 9)
        } else if key!(rest, b"branch_code") {
            (1, 11)
        } else if key!(rest, b"account_type") {
            (2, 12)
        } else if key!(rest, b"account_number") {
            (3, 14)
        } else if key!(rest, b"holder_kana") {
            (4, 11)
        } else {
            return None;
        };
        Some((f, i + len + 2))
    }

    /// After a value: `,` and the next key's position, or `}` (`None` inside: the object ended).
    #[inline(always)]
    fn next(b: &[u8], i: usize) -> Result<Option<usize>, ()> {
        let i = ws(b, i);
        match b.get(i) {
            Some(b',') => Ok(Some(ws(b, i + 1))),
            Some(b'}') => Ok(None),
            _ => Err(()),
        }
    }

    /// Walks a JSON object whose `{` is at `i`: each key through `key` (a field number; a repeated
    /// field is refused), each value through `value` (given the field and where the value starts,
    /// it returns where the value ends). Returns where the closing `}` is.
    #[inline(always)]
    fn members(
        b: &[u8],
        i: usize,
        key: impl Fn(&[u8], usize) -> Option<(usize, usize)>,
        mut value: impl FnMut(usize, usize) -> Option<usize>,
    ) -> Option<usize> {
        if b.get(i) != Some(&b'{') {
            return None;
        }
        let mut seen = 0u32;
        let mut i = ws(b, i + 1);
        if b.get(i) == Some(&b'}') {
            return Some(i);
        }
        loop {
            let (k, j) = key(b, i)?;
            if seen & (1 << k) != 0 {
                return None;
            }
            seen |= 1 << k;
            i = ws(b, j);
            if b.get(i) != Some(&b':') {
                return None;
            }
            let j = value(k, ws(b, i + 1))?;
            match next(b, j).ok()? {
                Some(n) => i = n,
                None => return Some(ws(b, j)),
            }
        }
    }

    fn destination(line: &str, i: usize) -> Option<(Option<RawDestinationFields<'_>>, usize)> {
        let b = line.as_bytes();
        if b.get(i) == Some(&b'n') {
            return null(b, i).map(|j| (None, j));
        }
        let mut f: [Option<&str>; 5] = [None; 5];
        let end = members(b, i, destination_key, |k, i| {
            let (v, j) = text(line, i)?;
            f[k] = v;
            Some(j)
        })?;
        let d = RawDestinationFields {
            bank_code: f[0],
            branch_code: f[1],
            account_type: f[2],
            account_number: f[3],
            holder_kana: f[4],
        };
        Some((Some(d), end + 1))
    }

    /// The record of a line, or `None` when the line is not of the shape read here.
    pub(super) fn raw_fields(line: &str) -> Option<RawFields<'_>> {
        let b = line.as_bytes();
        let mut texts: [Option<&str>; 9] = [None; 9];
        let mut amount = None;
        let mut dest = None;
        let end = members(b, ws(b, 0), event_key, |f, i| match f {
            AMOUNT => {
                let (v, j) = integer(b, i)?;
                amount = v;
                Some(j)
            }
            DESTINATION => {
                let (v, j) = destination(line, i)?;
                dest = v;
                Some(j)
            }
            _ => {
                let (v, j) = text(line, i)?;
                *texts.get_mut(f)? = v;
                Some(j)
            }
        })?;
        if ws(b, end + 1) != b.len() {
            return None;
        }
        Some(RawFields {
            event_id: texts[EVENT_ID],
            occurred_at: texts[OCCURRED_AT],
            customer_id: texts[CUSTOMER_ID],
            kind: texts[KIND],
            channel: texts[CHANNEL],
            ip: texts[IP],
            user_agent: texts[USER_AGENT],
            device_id: texts[DEVICE_ID],
            amount,
            side: texts[SIDE],
            destination: dest,
        })
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
    pub fn parse(&self, record: &csv::StringRecord) -> Result<Event, ParseError> {
        let get = |i: usize| self.cols[i].and_then(|c| record.get(c));
        let amount = match get(8).map(str::trim).filter(|s| !s.is_empty()) {
            None => None,
            Some(s) => Some(s.parse::<i64>().map_err(|_| {
                ParseError::field("amount", format!("{s:?} is not an integer number of JPY"))
            })?),
        };
        let destination = RawDestinationFields {
            bank_code: get(10),
            branch_code: get(11),
            account_type: get(12),
            account_number: get(13),
            holder_kana: get(14),
        };
        let raw = RawFields {
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
        raw.check().map(|v| v.to_event())
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
    use proptest::prelude::*;

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

    /// The quick path must give what `parse_json_line` gives, events and errors alike.
    fn agrees(line: &str) {
        let slow = parse_json_line(line);
        let view = parse_json_line_view(line).map(|p| p.view().to_event());
        assert_eq!(view, slow, "{line}");
        if let Some(v) = quick_json_line(line) {
            assert_eq!(Ok(v.to_event()), slow, "{line}");
        }
    }

    #[test]
    fn quick_path_reads_the_usual_lines() {
        assert!(quick_json_line(GOOD).is_some());
        let sorted = parse_json_line(GOOD).unwrap().to_json();
        assert!(quick_json_line(&sorted).is_some());
        for line in [
            GOOD.to_owned(),
            sorted,
            format!(" \t{GOOD}\r\n "),
            GOOD.replace(",\"", " , \"").replace("\":", "\" : "),
            GOOD.replace("\"d1\"", "null"),
            GOOD.replace("\"device_id\"", "\"amount\":0,\"device_id\""),
            GOOD.replace("\"device_id\"", "\"amount\":123456789012345678,\"device_id\""),
            GOOD.replace("\"destination\":{", "\"destination\":null,\"x\":{"),
            r#"{"event_id":"p","occurred_at":"2020-09-16T10:00:00Z","customer_id":"c","kind":"login","channel":"paper"}"#.to_owned(),
            "{}".to_owned(),
        ] {
            agrees(&line);
        }
    }

    /// Text of a JSON value for a string field: valid and invalid in every way that matters.
    fn string_value() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => "[a-z0-9_.:+-]{0,12}".prop_map(|s| format!("\"{s}\"")),
            1 => Just("null".to_owned()),
            1 => Just("\"\"".to_owned()),
            1 => Just("\"a\\\"b\"".to_owned()),
            1 => Just("\"\\u0041\"".to_owned()),
            1 => Just("\"tab\there\"".to_owned()),
            1 => Just("\"nul\u{0}\"".to_owned()),
            1 => Just("\"del\u{7f}\"".to_owned()),
            1 => Just("\"c1\u{85}\"".to_owned()),
            1 => Just("\"ヤマダ é\"".to_owned()),
            1 => Just("\"x".to_owned()),
            1 => Just("5".to_owned()),
            1 => Just("true".to_owned()),
            1 => Just("nul".to_owned()),
            1 => Just("{}".to_owned()),
            1 => Just("[\"a\"]".to_owned()),
        ]
    }

    fn number_value() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => (0u64..1_000_000_000).prop_map(|n| n.to_string()),
            1 => Just("null".to_owned()),
            1 => Just("-0".to_owned()),
            1 => Just("-5".to_owned()),
            1 => Just("0".to_owned()),
            1 => Just("01".to_owned()),
            1 => Just("1.5".to_owned()),
            1 => Just("1e3".to_owned()),
            1 => Just("2E1".to_owned()),
            1 => Just("123456789012345678".to_owned()),
            1 => Just("1234567890123456789".to_owned()),
            1 => Just("9223372036854775807".to_owned()),
            1 => Just("9223372036854775808".to_owned()),
            1 => Just("99999999999999999999".to_owned()),
            1 => Just("\"12\"".to_owned()),
            1 => Just("-".to_owned()),
        ]
    }

    /// A field's value: usually a valid one for the field (in the various shapes JSON allows),
    /// sometimes anything.
    fn field_value(field: &'static str) -> BoxedStrategy<String> {
        let q = |v: &[&'static str]| {
            proptest::sample::select(v.to_vec())
                .prop_map(|s| format!("\"{s}\""))
                .boxed()
        };
        let text = prop_oneof![
            6 => "[a-zA-Z0-9_.:+/ -]{1,40}".prop_map(|s| format!("\"{s}\"")),
            1 => Just("\"a\\\"b\"".to_owned()),
            1 => Just("\"\\u0041\\n\"".to_owned()),
            1 => Just("\"ヤマダ é\u{2028}\"".to_owned()),
        ]
        .boxed();
        let valid = match field {
            "event_id" | "customer_id" => text,
            "occurred_at" => q(&[
                "2020-09-16T22:25:00+09:00",
                "2020-09-16T13:25:00Z",
                "2020-09-16T22:25:00.123456789+09:00",
                "2019-12-31t23:59:60-01:30",
            ]),
            "kind" => q(&[
                "login",
                "login_failed",
                "destination_change",
                "trade",
                "access",
            ]),
            "channel" => prop_oneof![
                4 => q(&["web", "app"]),
                1 => Just("null".to_owned()),
                1 => Just("\"\"".to_owned()),
            ]
            .boxed(),
            "ip" => q(&[
                "203.0.113.7",
                "2001:db8::1",
                "::ffff:1.2.3.4",
                "0.0.0.0",
                "fe80::1%1",
            ]),
            "side" => prop_oneof![q(&["buy", "sell"]), Just("null".to_owned())].boxed(),
            "amount" => prop_oneof![
                4 => (0u64..1_000_000_000).prop_map(|n| n.to_string()),
                1 => Just("null".to_owned()),
                1 => Just("123456789012345678".to_owned()),
            ]
            .boxed(),
            "destination" => {
                let d = (
                    q(&["0001", "9900"]),
                    q(&["001", "123"]),
                    proptest::option::of(q(&["ordinary", "current", ""])),
                    q(&["1234567"]),
                    proptest::option::of(text),
                    0usize..5,
                )
                    .prop_map(|(b, br, t, n, h, rot)| {
                        let mut parts: Vec<String> = [
                            ("bank_code", Some(b)),
                            ("branch_code", Some(br)),
                            ("account_type", t),
                            ("account_number", Some(n)),
                            ("holder_kana", h),
                        ]
                        .into_iter()
                        .filter_map(|(k, v)| v.map(|v| format!("\"{k}\" :{v}")))
                        .collect();
                        let n = parts.len();
                        parts.rotate_left(rot % n);
                        format!("{{ {} }}", parts.join(","))
                    });
                prop_oneof![4 => d, 1 => Just("null".to_owned())].boxed()
            }
            _ => prop_oneof![3 => text, 1 => Just("null".to_owned())].boxed(),
        };
        let wild = match field {
            "amount" => number_value().boxed(),
            "destination" => prop_oneof![
                Just("{}".to_owned()),
                Just("[\"0001\",\"001\",\"ordinary\",\"1234567\",\"x\"]".to_owned()),
                Just("{\"bank_code\":\"0001\",\"bank_code\":\"0002\"}".to_owned()),
                Just("{\"swift\":\"X\"}".to_owned()),
                Just(
                    "{\"bank_code\":\"1\",\"branch_code\":\"001\",\"account_number\":\"1234567\"}"
                        .to_owned()
                ),
                Just("\"0001\"".to_owned()),
            ]
            .boxed(),
            "occurred_at" => prop_oneof![
                q(&[
                    "2020-09-16T22:25:00",
                    "2020-02-30T00:00:00Z",
                    "2020-09-16T22:25:00+09:00 "
                ]),
                string_value(),
            ]
            .boxed(),
            "kind" => prop_oneof![q(&["teleport", "Login"]), string_value()].boxed(),
            "channel" => {
                prop_oneof![q(&["paper", "support_center", "fax"]), string_value()].boxed()
            }
            "ip" => prop_oneof![
                q(&["1.2.3", "01.2.3.4", "256.0.0.1", " 1.2.3.4"]),
                string_value()
            ]
            .boxed(),
            _ => string_value().boxed(),
        };
        prop_oneof![30 => valid, 1 => wild].boxed()
    }

    const FIELDS: [&str; 11] = [
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
        "destination",
    ];

    fn line() -> impl Strategy<Value = String> {
        let fields: Vec<BoxedStrategy<Option<String>>> = FIELDS
            .iter()
            .map(|f| {
                let required = matches!(
                    *f,
                    "event_id" | "occurred_at" | "customer_id" | "kind" | "ip"
                );
                let v = field_value(f).prop_map(move |v| Some(format!("\"{f}\":{v}")));
                if required {
                    prop_oneof![60 => v, 1 => Just(None)].boxed()
                } else {
                    prop_oneof![1 => v, 1 => Just(None)].boxed()
                }
            })
            .collect();
        let valid_ws = proptest::sample::select(vec!["", " ", "  ", "\t", "\r", "\n"]);
        let any_ws =
            proptest::sample::select(vec!["", " ", "\t", "\n", "\u{b}", "\u{a0}", "\u{c}"]);
        let ws = prop_oneof![
            7 => Just(vec![""; 8]),
            2 => proptest::collection::vec(valid_ws, 8),
            1 => proptest::collection::vec(any_ws, 8),
        ];
        (
            fields,
            proptest::option::weighted(
                0.05,
                proptest::sample::select(vec![
                    "\"extra\":1",
                    "\"event_id\":\"again\"",
                    "\"event\\u005fid\":\"esc\"",
                    "\"kind\":\"login\"",
                ]),
            ),
            Just(()).prop_perturb(|_, mut rng| rng.random::<u64>()),
            ws,
            prop_oneof![
                12 => Just(""),
                1 => proptest::sample::select(vec![" ", "\r\n", "x", ",", "}", "\u{0}", "{}"]),
            ],
        )
            .prop_map(|(fields, extra, seed, ws, tail)| {
                let mut parts: Vec<String> = fields.into_iter().flatten().collect();
                if let Some(e) = extra {
                    parts.push(e.to_owned());
                }
                // A deterministic shuffle from the seed.
                let mut x = seed | 1;
                for i in (1..parts.len()).rev() {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    parts.swap(i, (x % (i as u64 + 1)) as usize);
                }
                let body = parts
                    .iter()
                    .enumerate()
                    .map(|(i, p)| {
                        let p =
                            p.replacen("\":", &format!("\"{}:{}", ws[i % 8], ws[(i + 3) % 8]), 1);
                        format!("{}{p}{}", ws[(i + 1) % 8], ws[(i + 2) % 8])
                    })
                    .collect::<Vec<_>>()
                    .join(",");
                format!("{}{{{body}}}{}{tail}", ws[5], ws[6])
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(10_000))]

        #[test]
        fn quick_path_agrees_with_serde(line in line()) {
            agrees(&line);
        }

        #[test]
        fn quick_path_agrees_on_mutated_lines(
            edits in proptest::collection::vec(
                (0usize..400, proptest::sample::select(vec![
                    "", "\"", "\\", ",", ":", "{", "}", " ", "\t", "n", "0", "-", ".", "e", "\u{1}", "\u{85}", "é", "[",
                ])),
                1..4,
            )
        ) {
            let mut line = GOOD.to_owned();
            for (at, with) in edits {
                let mut at = at % (line.len() + 1);
                while !line.is_char_boundary(at) {
                    at -= 1;
                }
                let end = line[at..].chars().next().map_or(at, |c| at + c.len_utf8());
                if with.is_empty() {
                    line.replace_range(at..end, "");
                } else {
                    line.insert_str(at, with);
                }
            }
            agrees(&line);
        }

        #[test]
        fn control_check_is_exact(s in "\\PC{0,3}[\u{0}-\u{20}\u{7f}-\u{a0}]?\\PC{0,20}") {
            prop_assert_eq!(has_control(&s), s.chars().any(char::is_control));
        }

        #[test]
        fn ip_parse_is_the_standard_one(s in "[0-9.:a-fA-F]{0,20}") {
            prop_assert_eq!(parse_ip(&s), s.parse::<IpAddr>().ok());
        }
    }

    #[test]
    fn control_check_covers_every_small_character() {
        for c in (0u32..0x800).filter_map(char::from_u32) {
            for s in [
                c.to_string(),
                format!("abcdefgh{c}"),
                format!("{c}abcdefghij"),
            ] {
                assert_eq!(has_control(&s), s.chars().any(char::is_control), "{c:?}");
            }
        }
        for s in [
            "256.1.1.1",
            "1.2.3.4",
            "0.0.0.0",
            "255.255.255.255",
            "01.1.1.1",
            "1.2.3.4.5",
            "1..2.3",
            "1.2.3.04",
            "1234.1.1.1",
            "",
        ] {
            assert_eq!(parse_ip(s), s.parse::<IpAddr>().ok(), "{s}");
        }
    }
}
