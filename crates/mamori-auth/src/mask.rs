//! Masking of personal data as shown after login, so that a hijacked session leaks nothing
//! useful: bank account number (last 3 digits), branch, address (prefecture and municipality
//! only), phone (last 4 digits), date of birth, email (first character and domain). Input in
//! Japanese forms is handled: full-width digits and letters, the several hyphens and dashes, kana.

use mamori_core::customer::CustomerRecord;
use serde::Serialize;
use unicode_normalization::UnicodeNormalization;

/// What every masked character becomes.
pub const MASK: char = '*';

fn nfkc(s: &str) -> String {
    s.nfkc().collect()
}

fn is_dash(c: char) -> bool {
    matches!(
        c,
        '-' | '‐' | '‑' | '‒' | '–' | '—' | '―' | '−' | 'ー' | 'ｰ' | '－'
    )
}

/// A bank account number: only its last 3 digits (`1234567` → `****567`).
pub fn account_number(number: &str) -> String {
    let digits: Vec<char> = nfkc(number).chars().filter(char::is_ascii_digit).collect();
    let keep = digits.len().saturating_sub(3);
    digits
        .iter()
        .enumerate()
        .map(|(i, &d)| {
            if i < keep || digits.len() <= 3 {
                MASK
            } else {
                d
            }
        })
        .collect()
}

/// A branch (name or code): nothing of it.
pub fn branch(_branch: &str) -> String {
    MASK.to_string().repeat(3)
}

/// A date of birth: nothing of it.
pub fn birth_date(_date: &str) -> String {
    "****-**-**".to_owned()
}

/// A phone number: its last 4 digits, with its separators (`090-1234-5678` → `***-****-5678`).
pub fn phone(number: &str) -> String {
    let n = nfkc(number);
    let total = n.chars().filter(char::is_ascii_digit).count();
    let mut seen = 0;
    n.chars()
        .filter_map(|c| {
            if c.is_ascii_digit() {
                seen += 1;
                Some(if seen + 4 > total { c } else { MASK })
            } else if is_dash(c) {
                Some('-')
            } else if c == '(' || c == ')' || c == '+' {
                Some(c)
            } else {
                None
            }
        })
        .collect()
}

/// An email address: the local part's first character and the domain
/// (`taro.yamada@example.co.jp` → `t***@example.co.jp`).
pub fn email(address: &str) -> String {
    let a = nfkc(address);
    match a.rsplit_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        None => MASK.to_string().repeat(3),
    }
}

const PREFECTURES: [&str; 47] = [
    "北海道",
    "青森県",
    "岩手県",
    "宮城県",
    "秋田県",
    "山形県",
    "福島県",
    "茨城県",
    "栃木県",
    "群馬県",
    "埼玉県",
    "千葉県",
    "東京都",
    "神奈川県",
    "新潟県",
    "富山県",
    "石川県",
    "福井県",
    "山梨県",
    "長野県",
    "岐阜県",
    "静岡県",
    "愛知県",
    "三重県",
    "滋賀県",
    "京都府",
    "大阪府",
    "兵庫県",
    "奈良県",
    "和歌山県",
    "鳥取県",
    "島根県",
    "岡山県",
    "広島県",
    "山口県",
    "徳島県",
    "香川県",
    "愛媛県",
    "高知県",
    "福岡県",
    "佐賀県",
    "長崎県",
    "熊本県",
    "大分県",
    "宮崎県",
    "鹿児島県",
    "沖縄県",
];

/// An address: the prefecture and the municipality (city, Tokyo ward, or district and town),
/// then `***` (`東京都千代田区丸の内1-1-1` → `東京都千代田区***`, `神奈川県横浜市港北区…` →
/// `神奈川県横浜市***`). A postal code in front (`〒100-0005`) is dropped. What cannot be read
/// as a Japanese address is masked whole.
pub fn address(addr: &str) -> String {
    let a = nfkc(addr);
    let a = a.trim_start_matches(|c: char| {
        c == '〒' || c.is_ascii_digit() || is_dash(c) || c.is_whitespace()
    });
    let Some(pref) = PREFECTURES.iter().find(|p| a.starts_with(*p)) else {
        return MASK.to_string().repeat(3);
    };
    let rest: Vec<char> = a[pref.len()..].trim_start().chars().collect();
    let muni = municipality(&rest);
    format!("{pref}{muni}***")
}

/// A postal code: its first three digits (`100-0005` → `100-****`).
pub fn postal_code(code: &str) -> String {
    let digits: String = nfkc(code).chars().filter(char::is_ascii_digit).collect();
    match digits.get(..3) {
        Some(first) if digits.len() == 7 => format!("{first}-****"),
        _ => "***-****".to_owned(),
    }
}

/// A customer's record as shown after login and to staff without a reason to see more.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MaskedCustomer {
    pub customer_id: String,
    pub name: String,
    pub name_kana: String,
    pub birth_date: Option<String>,
    pub postal_code: Option<String>,
    pub address: Option<String>,
    pub phone: Option<String>,
    pub email: Option<String>,
    pub destinations: Vec<MaskedDestination>,
}

/// A registered destination, masked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MaskedDestination {
    pub bank_code: String,
    pub branch_code: String,
    pub account_type: String,
    pub account_number: String,
}

/// The masked view of a record (name and bank kept: the customer needs to recognise them).
pub fn customer(c: &CustomerRecord) -> MaskedCustomer {
    MaskedCustomer {
        customer_id: c.customer_id.clone(),
        name: c.name.clone(),
        name_kana: c.name_kana.clone(),
        birth_date: c.birth_date.as_deref().map(birth_date),
        postal_code: c.postal_code.as_deref().map(postal_code),
        address: c.address.as_deref().map(address),
        phone: c.phone.as_deref().map(phone),
        email: c.email.as_deref().map(email),
        destinations: c
            .destinations
            .iter()
            .map(|d| MaskedDestination {
                bank_code: d.bank_code.clone(),
                branch_code: branch(&d.branch_code),
                account_type: d.account_type.clone(),
                account_number: account_number(&d.account_number),
            })
            .collect(),
    }
}

/// The municipality at the start of what follows the prefecture.
fn municipality(c: &[char]) -> String {
    let find = |set: &[char], from: usize| {
        c.iter()
            .enumerate()
            .skip(from)
            .take(8)
            .find(|(_, x)| set.contains(x))
            .map(|(i, _)| i)
    };
    // The first character is never the suffix (市川市, 町田市, 区 alone is no name).
    let city = find(&['市', '区'], 1);
    let gun = find(&['郡'], 1);
    let end = match (gun, city) {
        (Some(g), c) if c.is_none_or(|c| g < c) => find(&['町', '村'], g + 2),
        (_, Some(i)) => {
            // 四日市市, 廿日市市: the name itself ends in 市.
            Some(if c.get(i + 1) == Some(&'市') {
                i + 1
            } else {
                i
            })
        }
        _ => find(&['町', '村'], 1),
    };
    end.map(|e| c[..=e].iter().collect()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_numbers_and_branches() {
        assert_eq!(account_number("1234567"), "****567");
        assert_eq!(account_number("１２３４５６７"), "****567");
        assert_eq!(account_number("12"), "**");
        assert_eq!(branch("新宿支店"), "***");
        assert_eq!(birth_date("1985-03-15"), "****-**-**");
    }

    #[test]
    fn phones_keep_the_last_four_digits() {
        assert_eq!(phone("090-1234-5678"), "***-****-5678");
        assert_eq!(phone("０９０－１２３４－５６７８"), "***-****-5678");
        assert_eq!(phone("03(1234)5678"), "**(****)5678");
        assert_eq!(phone("09012345678"), "*******5678");
        assert_eq!(phone("+81 90 1234 5678"), "+********5678");
    }

    #[test]
    fn emails_keep_the_first_character_and_the_domain() {
        assert_eq!(email("taro.yamada@example.co.jp"), "t***@example.co.jp");
        assert_eq!(email("ｔａｒｏ@example.jp"), "t***@example.jp");
        assert_eq!(email("no-at-sign"), "***");
    }

    #[test]
    fn a_whole_record_shows_no_personal_data() {
        let c = CustomerRecord {
            customer_id: "C1".into(),
            name: "山田 太郎".into(),
            name_kana: "ヤマダ タロウ".into(),
            birth_date: Some("1985-03-15".into()),
            postal_code: Some("100-0005".into()),
            address: Some("東京都千代田区丸の内1-1-1".into()),
            phone: Some("090-1234-5678".into()),
            email: Some("taro.yamada@example.co.jp".into()),
            destinations: vec![mamori_core::event::Destination {
                bank_code: "0001".into(),
                branch_code: "123".into(),
                account_type: "ordinary".into(),
                account_number: "7654321".into(),
                holder_kana: "ﾔﾏﾀﾞ ﾀﾛｳ".into(),
            }],
        };
        let m = customer(&c);
        let json = serde_json::to_string(&m).unwrap();
        for secret in [
            "1985",
            "0005",
            "丸の内",
            "1234",
            "taro.yamada",
            "7654",
            "123\"",
            "ﾔﾏﾀﾞ",
        ] {
            assert!(!json.contains(secret), "{secret} in {json}");
        }
        assert!(json.contains("\"account_number\":\"****321\"") && json.contains("100-****"));
    }

    #[test]
    fn addresses_keep_prefecture_and_municipality() {
        for (a, want) in [
            ("東京都千代田区丸の内1-1-1", "東京都千代田区***"),
            ("〒100-0005 東京都港区芝公園4-2-8", "東京都港区***"),
            ("神奈川県横浜市港北区日吉2-3", "神奈川県横浜市***"),
            ("千葉県市川市八幡1-1", "千葉県市川市***"),
            ("三重県四日市市諏訪町1-5", "三重県四日市市***"),
            ("東京都町田市森野2-2-22", "東京都町田市***"),
            ("長野県大町市大町3887", "長野県大町市***"),
            (
                "北海道虻田郡倶知安町北1条東3丁目",
                "北海道虻田郡倶知安町***",
            ),
            ("京都府京都市中京区寺町通御池上る", "京都府京都市***"),
            ("東京都大島町元町1-1-14", "東京都大島町***"),
            ("東京都千代田区丸の内１丁目１－１", "東京都千代田区***"),
            ("1600 Amphitheatre Parkway", "***"),
        ] {
            assert_eq!(address(a), want, "{a}");
        }
    }
}
