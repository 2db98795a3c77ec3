//! Customers' records (personal data and registered withdrawal destinations), their CSV form,
//! and the emergency switch's procedures and channels.
//!
//! Personal data never reaches logs: [`CustomerRecord`]'s `Debug` shows only the customer ID, and
//! errors name the line and field, never the value.

use std::collections::HashMap;
use std::io::Read;

use serde::{Deserialize, Serialize};

use crate::event::{Destination, Kind, MAX_CUSTOMER_ID};
use crate::parse::RawDestinationFields;

/// A customer's record.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CustomerRecord {
    pub customer_id: String,
    /// Name in kanji (family name, a space, given name).
    pub name: String,
    /// Name in katakana.
    pub name_kana: String,
    /// `YYYY-MM-DD`.
    pub birth_date: Option<String>,
    pub postal_code: Option<String>,
    pub address: Option<String>,
    pub phone: Option<String>,
    pub email: Option<String>,
    /// Registered withdrawal destinations.
    pub destinations: Vec<Destination>,
}

impl std::fmt::Debug for CustomerRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CustomerRecord")
            .field("customer_id", &self.customer_id)
            .field("destinations", &self.destinations.len())
            .finish_non_exhaustive()
    }
}

impl CustomerRecord {
    /// The date of birth as (year, month, day).
    pub fn birth_ymd(&self) -> Option<(i32, u32, u32)> {
        let d = self.birth_date.as_deref()?;
        let mut it = d.split('-');
        let y = it.next()?.parse().ok()?;
        let m = it.next()?.parse().ok()?;
        let dd = it.next()?.parse().ok()?;
        Some((y, m, dd))
    }
}

/// Full-width digits, letters, hyphens and slashes as their ASCII forms (what customers and
/// back-office systems type in Japanese input modes).
pub fn half_width(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
            '\u{3000}' => ' ',
            '‐' | '‑' | '‒' | '–' | '—' | '―' | '−' | 'ー' => '-',
            _ => c,
        })
        .collect()
}

/// A date of birth as `YYYY-MM-DD`, from `1985-03-15`, `1985/3/15`, `19850315` or `1985年3月15日`
/// (full-width digits accepted).
pub fn parse_birth_date(s: &str) -> Option<String> {
    let s = half_width(s.trim());
    let (y, m, d): (i32, u32, u32) = if s.len() == 8 && s.bytes().all(|b| b.is_ascii_digit()) {
        (
            s[..4].parse().ok()?,
            s[4..6].parse().ok()?,
            s[6..].parse().ok()?,
        )
    } else {
        let parts: Vec<&str> = s
            .split(['-', '/', '年', '月', '日', '.'])
            .filter(|p| !p.is_empty())
            .collect();
        let [y, m, d] = parts.as_slice() else {
            return None;
        };
        (y.parse().ok()?, m.parse().ok()?, d.parse().ok()?)
    };
    chrono::NaiveDate::from_ymd_opt(y, m, d)
        .filter(|_| (1900..=2100).contains(&y))
        .map(|d| d.format("%Y-%m-%d").to_string())
}

/// Why a row of a customers file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}{}: {message}", field.map(|f| format!(", field {f}")).unwrap_or_default())]
pub struct RowError {
    /// 1-based line of the file (the header is line 1).
    pub line: u64,
    pub field: Option<&'static str>,
    pub message: String,
}

/// The columns of a customers file; `customer_id` is required, the others optional. A customer
/// with several destinations takes several rows (the personal columns may be left empty on the
/// further rows, and must agree where they are not).
pub const CSV_COLUMNS: [&str; 13] = [
    "customer_id",
    "name",
    "name_kana",
    "birth_date",
    "postal_code",
    "address",
    "phone",
    "email",
    "bank_code",
    "branch_code",
    "account_type",
    "account_number",
    "holder_kana",
];

/// The customers of a CSV file (UTF-8, with a header row), in order of first appearance, and the
/// rows refused. A refused row refuses its customer (all its rows), so that no customer is
/// imported half.
pub fn parse_customers_csv(
    input: impl Read,
) -> Result<(Vec<CustomerRecord>, Vec<RowError>), RowError> {
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(false)
        .trim(csv::Trim::All)
        .from_reader(input);
    let header = rdr.headers().map_err(|e| RowError {
        line: 1,
        field: None,
        message: format!("cannot read the header: {e}"),
    })?;
    let mut col: HashMap<&'static str, usize> = HashMap::new();
    for (i, h) in header.iter().enumerate() {
        let h = h.trim_start_matches('\u{feff}');
        match CSV_COLUMNS.iter().find(|c| **c == h) {
            Some(c) => {
                if col.insert(c, i).is_some() {
                    return Err(RowError {
                        line: 1,
                        field: Some(c),
                        message: "column appears twice".into(),
                    });
                }
            }
            None => {
                return Err(RowError {
                    line: 1,
                    field: None,
                    message: format!("unknown column {h:?}; expected {}", CSV_COLUMNS.join(", ")),
                });
            }
        }
    }
    if !col.contains_key("customer_id") {
        return Err(RowError {
            line: 1,
            field: Some("customer_id"),
            message: "the header has no customer_id column".into(),
        });
    }
    let mut out: Vec<CustomerRecord> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut refused: Vec<bool> = Vec::new();
    let mut errors = Vec::new();
    let mut seen_line: HashMap<String, u64> = HashMap::new();
    for row in rdr.records() {
        let row = match row {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                errors.push(RowError {
                    line,
                    field: None,
                    message: format!("not a valid CSV row: {e}"),
                });
                continue;
            }
        };
        let line = row.position().map_or(0, |p| p.line());
        let get = |c: &str| {
            col.get(c)
                .and_then(|&i| row.get(i))
                .filter(|v| !v.is_empty())
        };
        let err = |field: &'static str, message: &str| RowError {
            line,
            field: Some(field),
            message: message.to_owned(),
        };
        let id = get("customer_id").unwrap_or_default();
        let parsed = (|| {
            if id.is_empty() || id.len() > MAX_CUSTOMER_ID || id.chars().any(char::is_control) {
                return Err(err(
                    "customer_id",
                    &format!("missing, or longer than {MAX_CUSTOMER_ID} bytes"),
                ));
            }
            let text = |c: &'static str, max: usize| -> Result<Option<String>, RowError> {
                match get(c) {
                    Some(v) if v.len() > max || v.chars().any(char::is_control) => Err(err(
                        c,
                        &format!("longer than {max} bytes or holds control characters"),
                    )),
                    v => Ok(v.map(str::to_owned)),
                }
            };
            let birth_date = match get("birth_date") {
                Some(v) => Some(parse_birth_date(v).ok_or_else(|| {
                    err(
                        "birth_date",
                        "not a date (expected YYYY-MM-DD, YYYY/MM/DD, YYYYMMDD or YYYY年M月D日)",
                    )
                })?),
                None => None,
            };
            let phone = get("phone").map(half_width);
            if phone.as_deref().is_some_and(|p| {
                p.len() > 32 || !p.chars().all(|c| c.is_ascii_digit() || "-+() ".contains(c))
            }) {
                return Err(err(
                    "phone",
                    "expected at most 32 digits, hyphens, spaces, + and ()",
                ));
            }
            let email = text("email", 254)?;
            if email.as_deref().is_some_and(|e| {
                let (l, d) = e.rsplit_once('@').unwrap_or_default();
                l.is_empty() || !d.contains('.')
            }) {
                return Err(err("email", "not an e-mail address"));
            }
            let postal = get("postal_code").map(half_width);
            if postal.as_deref().is_some_and(|p| {
                p.len() > 16
                    || !p
                        .chars()
                        .all(|c| c.is_ascii_digit() || c == '-' || c == '〒')
            }) {
                return Err(err(
                    "postal_code",
                    "expected a postal code such as 100-0005",
                ));
            }
            let (bank, branch, number) = (
                get("bank_code").map(half_width),
                get("branch_code").map(half_width),
                get("account_number").map(half_width),
            );
            let destination = RawDestinationFields {
                bank_code: bank.as_deref(),
                branch_code: branch.as_deref(),
                account_type: get("account_type"),
                account_number: number.as_deref(),
                holder_kana: get("holder_kana"),
            }
            .destination()
            .map_err(|e| RowError {
                line,
                field: e.field,
                message: e.message,
            })?;
            Ok(CustomerRecord {
                customer_id: id.to_owned(),
                name: text("name", 256)?.unwrap_or_default(),
                name_kana: text("name_kana", 256)?.unwrap_or_default(),
                birth_date,
                postal_code: postal,
                address: text("address", 512)?,
                phone,
                email,
                destinations: destination.into_iter().collect(),
            })
        })();
        let r = match parsed {
            Ok(r) => r,
            Err(e) => {
                if let Some(&i) = index.get(id) {
                    refused[i] = true;
                } else if !id.is_empty() {
                    index.insert(id.to_owned(), out.len());
                    out.push(CustomerRecord {
                        customer_id: id.to_owned(),
                        ..CustomerRecord::default()
                    });
                    refused.push(true);
                }
                errors.push(e);
                continue;
            }
        };
        match index.get(&r.customer_id) {
            None => {
                index.insert(r.customer_id.clone(), out.len());
                seen_line.insert(r.customer_id.clone(), line);
                out.push(r);
                refused.push(false);
            }
            Some(&i) => {
                let first = seen_line.get(&r.customer_id).copied().unwrap_or(0);
                match merge(&mut out[i], r) {
                    Ok(()) => {}
                    Err(field) => {
                        refused[i] = true;
                        errors.push(RowError {
                            line,
                            field: Some(field),
                            message: format!(
                                "differs from the same customer's line {first} (leave it empty on further rows)"
                            ),
                        });
                    }
                }
            }
        }
    }
    let kept = out
        .into_iter()
        .zip(refused)
        .filter(|(_, r)| !r)
        .map(|(c, _)| c)
        .collect();
    Ok((kept, errors))
}

/// Adds a further row of the same customer; the field that disagrees, if one does.
fn merge(into: &mut CustomerRecord, r: CustomerRecord) -> Result<(), &'static str> {
    fn one<T: PartialEq>(
        a: &mut T,
        b: T,
        empty: &T,
        field: &'static str,
    ) -> Result<(), &'static str> {
        if b == *empty {
            return Ok(());
        }
        if *a == *empty {
            *a = b;
            return Ok(());
        }
        if *a == b { Ok(()) } else { Err(field) }
    }
    one(&mut into.name, r.name, &String::new(), "name")?;
    one(
        &mut into.name_kana,
        r.name_kana,
        &String::new(),
        "name_kana",
    )?;
    one(&mut into.birth_date, r.birth_date, &None, "birth_date")?;
    one(&mut into.postal_code, r.postal_code, &None, "postal_code")?;
    one(&mut into.address, r.address, &None, "address")?;
    one(&mut into.phone, r.phone, &None, "phone")?;
    one(&mut into.email, r.email, &None, "email")?;
    for d in r.destinations {
        if !into.destinations.contains(&d) {
            into.destinations.push(d);
        }
    }
    Ok(())
}

crate::event::code_enum!(
    /// Channels a procedure can be switched off on (the support center and paper forms are where
    /// a switched-off procedure goes).
    SwitchChannel {
        Web = 1 => "web",
        App = 2 => "app",
    }
);

/// Whether a procedure can be switched off on the web and app channels.
pub fn switchable(kind: Kind) -> bool {
    kind == Kind::Login || kind == Kind::Trade || kind.is_sensitive()
}

/// The state of one switch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchState {
    pub procedure: Kind,
    pub channel: SwitchChannel,
    /// Whether the procedure is available on the channel.
    pub enabled: bool,
    pub reason: String,
    /// Who flipped it last.
    pub actor: String,
    pub changed_at: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn birth_dates_in_usual_forms() {
        for s in [
            "1985-03-15",
            "1985/3/15",
            "19850315",
            "1985年3月15日",
            "１９８５－０３－１５",
        ] {
            assert_eq!(parse_birth_date(s).as_deref(), Some("1985-03-15"), "{s}");
        }
        for s in ["1985-02-30", "85-03-15", "tomorrow", "1800-01-01"] {
            assert_eq!(parse_birth_date(s), None, "{s}");
        }
    }

    #[test]
    fn a_customers_file_with_several_destinations_and_bad_rows() {
        let csv = "\u{feff}customer_id,name,name_kana,birth_date,phone,email,bank_code,branch_code,account_number,holder_kana
C1,山田　太郎,ヤマダ　タロウ,1985/3/15,０９０-１２３４-５６７８,taro@example.jp,0001,001,１２３４５６７,ﾔﾏﾀﾞ ﾀﾛｳ
C1,,,,,,0005,002,7654321,ﾔﾏﾀﾞ ﾀﾛｳ
C2,佐藤　花子,サトウ　ハナコ,1990-13-01,,,,,,
C3,鈴木　一郎,スズキ　イチロウ,,,,0001,01,1234567,
C4,高橋　次郎,タカハシ　ジロウ,,,,,,,
C4,高橋　二郎,,,,,,,,
C5,田中　三郎,タナカ　サブロウ,,03-1234-5678,saburo@example.jp,,,,
";
        let (ok, errors) = parse_customers_csv(csv.as_bytes()).unwrap();
        let ids: Vec<&str> = ok.iter().map(|c| c.customer_id.as_str()).collect();
        assert_eq!(ids, ["C1", "C5"]);
        let c1 = &ok[0];
        assert_eq!(c1.destinations.len(), 2);
        assert_eq!(c1.destinations[0].account_number, "1234567");
        assert_eq!(c1.birth_date.as_deref(), Some("1985-03-15"));
        assert_eq!(c1.phone.as_deref(), Some("090-1234-5678"));
        assert_eq!(c1.birth_ymd(), Some((1985, 3, 15)));
        let got: Vec<(u64, Option<&str>)> = errors.iter().map(|e| (e.line, e.field)).collect();
        assert_eq!(
            got,
            [
                (4, Some("birth_date")),
                (5, Some("destination.branch_code")),
                (7, Some("name"))
            ]
        );
        // No personal data in messages or Debug.
        for e in &errors {
            assert!(!e.to_string().contains("1990-13-01") && !e.to_string().contains("二郎"));
        }
        let dbg = format!("{c1:?}");
        assert!(!dbg.contains("山田") && !dbg.contains("1234567") && dbg.contains("C1"));
    }

    #[test]
    fn header_errors_stop_the_file() {
        let e = parse_customers_csv("customer_id,nmae\nC1,x\n".as_bytes()).unwrap_err();
        assert!(e.to_string().contains("unknown column \"nmae\""), "{e}");
        let e = parse_customers_csv("name\nx\n".as_bytes()).unwrap_err();
        assert_eq!(e.field, Some("customer_id"));
    }

    #[test]
    fn switches_cover_sensitive_procedures() {
        assert!(switchable(Kind::DestinationChange) && switchable(Kind::Withdrawal));
        assert!(switchable(Kind::Login) && !switchable(Kind::LoginFailed));
        assert_eq!("web".parse::<SwitchChannel>(), Ok(SwitchChannel::Web));
    }
}
