//! The password policy: what a login or withdrawal password must be, checked with feedback in
//! Japanese and English that says what to fix.
//!
//! The seed's rules: 6–16 characters with upper and lower case letters and digits (symbols being
//! added) for the withdrawal password; login and withdrawal passwords differ; nothing guessable
//! from personal information; no plain English words; letters and digits mixed; long enough (NISC
//! recommends 10 or more); no easy sequences. The defaults here are stricter than the seed's
//! minimum (10 characters for both), and a broker may allow 6 for the withdrawal password by
//! configuration.
//!
//! Cost: the input is refused before any analysis if it is longer than [`HARD_MAX_CHARS`], and
//! zxcvbn (slow on long hostile input) only sees passwords within the policy's length.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization;
use wana_kana::ConvertJapanese;

/// No password longer than this is analysed at all, whatever the policy says.
pub const HARD_MAX_CHARS: usize = 128;

/// Which password.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PasswordKind {
    Login,
    Withdrawal,
}

impl PasswordKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PasswordKind::Login => "login",
            PasswordKind::Withdrawal => "withdrawal",
        }
    }

    fn ja(self) -> &'static str {
        match self {
            PasswordKind::Login => "ログインパスワード",
            PasswordKind::Withdrawal => "出金パスワード",
        }
    }
}

/// The rules for one kind of password (`[password.login]`, `[password.withdrawal]` in the
/// configuration).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PasswordPolicy {
    /// Characters at least (the seed allowed 6 for the withdrawal password; NISC recommends 10).
    pub min_chars: usize,
    /// Characters at most (at most [`HARD_MAX_CHARS`]).
    pub max_chars: usize,
    pub require_upper: bool,
    pub require_lower: bool,
    pub require_digit: bool,
    /// Whether ASCII symbols (`!"#$%&'()*+,-./:;<=>?@[\]^_`{|}~`) may be used.
    pub allow_symbols: bool,
    /// zxcvbn's score at least (0–4; 3: more than 10^8 guesses).
    pub min_score: u8,
    /// The longest run of repeated, consecutive or keyboard-adjacent characters allowed (`aaa`,
    /// `123` and `qwe` pass with 3; `aaaa`, `1234`, `qwer` do not).
    pub max_run: usize,
}

impl PasswordPolicy {
    /// The login password's defaults: 10–64 characters.
    pub fn login() -> Self {
        PasswordPolicy {
            min_chars: 10,
            max_chars: 64,
            require_upper: true,
            require_lower: true,
            require_digit: true,
            allow_symbols: true,
            min_score: 3,
            max_run: 3,
        }
    }

    /// The withdrawal password's defaults: 10–16 characters.
    pub fn withdrawal() -> Self {
        PasswordPolicy {
            max_chars: 16,
            ..Self::login()
        }
    }

    pub fn for_kind(kind: PasswordKind) -> Self {
        match kind {
            PasswordKind::Login => Self::login(),
            PasswordKind::Withdrawal => Self::withdrawal(),
        }
    }

    /// What is wrong with the policy itself (for `mamori config check`).
    pub fn validate(&self) -> Result<(), String> {
        if self.min_chars < 6 {
            return Err(format!(
                "min_chars = {}: at least 6 (the seed's shortest withdrawal password)",
                self.min_chars
            ));
        }
        if self.max_chars < self.min_chars || self.max_chars > HARD_MAX_CHARS {
            return Err(format!(
                "max_chars = {}: between min_chars ({}) and {HARD_MAX_CHARS}",
                self.max_chars, self.min_chars
            ));
        }
        if self.min_score > 4 {
            return Err(format!("min_score = {}: 0 to 4", self.min_score));
        }
        if self.max_run < 2 {
            return Err(format!("max_run = {}: at least 2", self.max_run));
        }
        Ok(())
    }
}

/// A `[password.login]` or `[password.withdrawal]` table: what it sets, over that kind's
/// defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyOverrides {
    pub min_chars: Option<usize>,
    pub max_chars: Option<usize>,
    pub require_upper: Option<bool>,
    pub require_lower: Option<bool>,
    pub require_digit: Option<bool>,
    pub allow_symbols: Option<bool>,
    pub min_score: Option<u8>,
    pub max_run: Option<usize>,
}

impl PolicyOverrides {
    /// The policy for `kind`: its defaults with these settings over them.
    pub fn resolve(&self, kind: PasswordKind) -> PasswordPolicy {
        let d = PasswordPolicy::for_kind(kind);
        PasswordPolicy {
            min_chars: self.min_chars.unwrap_or(d.min_chars),
            max_chars: self.max_chars.unwrap_or(d.max_chars),
            require_upper: self.require_upper.unwrap_or(d.require_upper),
            require_lower: self.require_lower.unwrap_or(d.require_lower),
            require_digit: self.require_digit.unwrap_or(d.require_digit),
            allow_symbols: self.allow_symbols.unwrap_or(d.allow_symbols),
            min_score: self.min_score.unwrap_or(d.min_score),
            max_run: self.max_run.unwrap_or(d.max_run),
        }
    }
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        Self::login()
    }
}

/// What the customer's record says about them, for the personal-information rule.
#[derive(Debug, Clone, Default)]
pub struct Personal<'a> {
    pub customer_id: &'a str,
    /// Name in kanji (family and given name separated by a space, full- or half-width).
    pub name: Option<&'a str>,
    /// Name in kana (katakana or hiragana), separated likewise.
    pub name_kana: Option<&'a str>,
    /// Date of birth as (year, month, day).
    pub birth_date: Option<(i32, u32, u32)>,
    pub phone: Option<&'a str>,
    pub email: Option<&'a str>,
}

/// One thing to fix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// Stable code for programs (`too_short`, `personal_information`, …).
    pub code: &'static str,
    pub message_ja: String,
    pub message_en: String,
}

impl Problem {
    fn new(code: &'static str, ja: impl Into<String>, en: impl Into<String>) -> Self {
        Problem {
            code,
            message_ja: ja.into(),
            message_en: en.into(),
        }
    }
}

/// Passwords refused whatever their score (the broker's own list, e.g. leaked passwords), compared
/// case-insensitively; zxcvbn's built-in lists of common passwords and words apply as well.
#[derive(Debug, Clone, Default)]
pub struct BadPasswords(HashSet<String>);

impl BadPasswords {
    /// A few that zxcvbn's lists rate above score 2 with the required character classes, and
    /// that attackers try first against Japanese services.
    pub fn builtin() -> Self {
        Self::from_lines(BUILTIN_BAD.lines())
    }

    /// One password per line; blank lines and lines starting with `#` are skipped.
    pub fn from_lines<'a>(lines: impl IntoIterator<Item = &'a str>) -> Self {
        let mut s = BadPasswords::default();
        s.extend(lines);
        s
    }

    pub fn extend<'a>(&mut self, lines: impl IntoIterator<Item = &'a str>) {
        for l in lines {
            let l = l.trim();
            if !l.is_empty() && !l.starts_with('#') {
                self.0.insert(l.to_lowercase());
            }
        }
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn contains(&self, password: &str) -> bool {
        self.0.contains(&password.to_lowercase())
    }
}

const BUILTIN_BAD: &str = "\
Password123
Password1234
Passw0rd123
P@ssw0rd123
Qwerty12345
Abcd123456
Abc1234567
Iloveyou123
Welcome123
Sakura12345
Nippon12345
Tokyo123456
Pokemon1234
Doraemon123
Yamada12345
Tanaka12345
Suzuki12345
Sato1234567
Admin12345
Kabushiki1
Shoken1234
";

/// Checks `password` against `policy` and `personal`; every problem found, or none.
///
/// Whether it differs from the customer's other password cannot be told here (that one is held
/// only as a hash): the caller verifies it against the other hash and adds
/// [`same_as_other`].
pub fn check(
    kind: PasswordKind,
    password: &str,
    policy: &PasswordPolicy,
    personal: &Personal<'_>,
    bad: &BadPasswords,
) -> Vec<Problem> {
    let chars = password.chars().count();
    let name = kind.ja();
    let en_name = kind.as_str();
    let mut out = Vec::new();
    if chars > policy.max_chars.min(HARD_MAX_CHARS) {
        out.push(Problem::new(
            "too_long",
            format!("{name}は{}文字以内にしてください。", policy.max_chars),
            format!(
                "The {en_name} password must be at most {} characters.",
                policy.max_chars
            ),
        ));
        // Nothing else is analysed on over-long input.
        return out;
    }
    if chars < policy.min_chars {
        out.push(Problem::new(
            "too_short",
            format!("{name}は{}文字以上にしてください。", policy.min_chars),
            format!(
                "The {en_name} password must be at least {} characters.",
                policy.min_chars
            ),
        ));
    }
    let is_symbol = |c: char| c.is_ascii_punctuation();
    if password
        .chars()
        .any(|c| !(c.is_ascii_alphanumeric() || is_symbol(c)))
    {
        out.push(Problem::new(
            "invalid_characters",
            "半角の英字・数字・記号だけを使ってください（全角文字、空白、かなは使えません）。",
            "Use only half-width (ASCII) letters, digits and symbols: no full-width characters, \
             spaces or kana.",
        ));
    }
    if !policy.allow_symbols && password.chars().any(is_symbol) {
        out.push(Problem::new(
            "symbols_not_allowed",
            "記号は使えません。英字と数字だけにしてください。",
            "Symbols are not allowed: use letters and digits only.",
        ));
    }
    let classes = [
        (
            policy.require_upper,
            password.chars().any(|c| c.is_ascii_uppercase()),
            "needs_upper",
            "英大文字（A〜Z）を1文字以上含めてください。",
            "Include at least one upper-case letter (A–Z).",
        ),
        (
            policy.require_lower,
            password.chars().any(|c| c.is_ascii_lowercase()),
            "needs_lower",
            "英小文字（a〜z）を1文字以上含めてください。",
            "Include at least one lower-case letter (a–z).",
        ),
        (
            policy.require_digit,
            password.chars().any(|c| c.is_ascii_digit()),
            "needs_digit",
            "数字（0〜9）を1文字以上含めてください。",
            "Include at least one digit (0–9).",
        ),
    ];
    for (required, has, code, ja, en) in classes {
        if required && !has {
            out.push(Problem::new(code, ja, en));
        }
    }
    let lower = password.to_lowercase();
    if let Some(run) = longest_run(&lower, policy.max_run + 1) {
        out.push(Problem::new(
            "sequence",
            format!(
                "「{run}」のような同じ文字の繰り返し、連続した文字（abcd、1234）、キーボードの並び（qwer）は使わないでください。"
            ),
            format!(
                "Avoid repeats, runs and keyboard rows such as \"{run}\" (like aaaa, abcd, 1234, \
                 qwer)."
            ),
        ));
    }
    let tokens = personal_tokens(personal);
    let mut fields: Vec<&'static str> = Vec::new();
    for (f, _) in tokens.iter().filter(|(_, t)| lower.contains(t.as_str())) {
        if !fields.contains(f) {
            fields.push(f);
        }
    }
    if !fields.is_empty() {
        let ja: Vec<&str> = fields.iter().map(|f| field_ja(f)).collect();
        out.push(Problem::new(
            "personal_information",
            format!(
                "お名前・生年月日・電話番号・メールアドレス・お客様番号から推測できる文字列を含めないでください（{}）。",
                ja.join("、")
            ),
            format!(
                "Do not use anything that can be guessed from your name, date of birth, phone \
                 number, email address or customer number (found: {}).",
                fields.join(", ")
            ),
        ));
    }
    if bad.contains(password) {
        out.push(common_password());
    }
    // zxcvbn only on input of a sane length, ASCII (checked above).
    if chars <= policy.max_chars.min(HARD_MAX_CHARS) && chars > 0 {
        let inputs: Vec<&str> = tokens.iter().map(|(_, t)| t.as_str()).collect();
        let entropy = zxcvbn::zxcvbn(password, &inputs);
        let score = entropy.score() as u8;
        let warning = entropy.feedback().and_then(|f| f.warning());
        use zxcvbn::feedback::Warning as W;
        let common = matches!(
            warning,
            Some(
                W::ThisIsATop10Password
                    | W::ThisIsATop100Password
                    | W::ThisIsACommonPassword
                    | W::ThisIsSimilarToACommonlyUsedPassword
            )
        );
        if score < policy.min_score {
            if common && !out.iter().any(|p| p.code == "common_password") {
                out.push(common_password());
            } else if !common {
                let (ja, en) = weak_message(warning);
                out.push(Problem::new(
                    "too_weak",
                    format!("推測されやすいパスワードです。{ja}"),
                    format!("This password is easy to guess. {en}"),
                ));
            }
        }
    }
    out
}

/// The problem the caller adds when the password matches the customer's other password.
pub fn same_as_other(kind: PasswordKind) -> Problem {
    let (ja_other, en_other) = match kind {
        PasswordKind::Login => ("出金パスワード", "withdrawal"),
        PasswordKind::Withdrawal => ("ログインパスワード", "login"),
    };
    Problem::new(
        "same_as_other_password",
        format!("{}と{ja_other}は別のものにしてください。", kind.ja()),
        format!(
            "The {} password must differ from your {en_other} password.",
            kind.as_str()
        ),
    )
}

fn common_password() -> Problem {
    Problem::new(
        "common_password",
        "よく使われているパスワードです。ほかの人が使わない文字列にしてください。",
        "This is a commonly used password: choose one others would not use.",
    )
}

fn weak_message(w: Option<zxcvbn::feedback::Warning>) -> (&'static str, &'static str) {
    use zxcvbn::feedback::Warning as W;
    match w {
        Some(W::AWordByItselfIsEasyToGuess) => (
            "英単語をそのまま使わず、関係のない語や記号を組み合わせてください。",
            "A word by itself is easy to guess: combine unrelated words and symbols.",
        ),
        Some(W::NamesAndSurnamesByThemselvesAreEasyToGuess)
        | Some(W::CommonNamesAndSurnamesAreEasyToGuess) => (
            "人名を中心にしたパスワードは推測されやすいです。",
            "Names and surnames are easy to guess.",
        ),
        Some(W::DatesAreOftenEasyToGuess) | Some(W::RecentYearsAreEasyToGuess) => (
            "日付や年を使わないでください。",
            "Dates and years are easy to guess.",
        ),
        Some(W::StraightRowsOfKeysAreEasyToGuess)
        | Some(W::ShortKeyboardPatternsAreEasyToGuess) => (
            "キーボードの並びを使わないでください。",
            "Keyboard patterns are easy to guess.",
        ),
        Some(W::RepeatsLikeAaaAreEasyToGuess)
        | Some(W::RepeatsLikeAbcAbcAreOnlySlightlyHarderToGuess)
        | Some(W::SequencesLikeAbcAreEasyToGuess) => (
            "繰り返しや連続した文字を避けてください。",
            "Avoid repeats and sequences.",
        ),
        _ => (
            "もっと長く、予測しにくい文字列にしてください。",
            "Make it longer and less predictable.",
        ),
    }
}

fn field_ja(f: &str) -> &'static str {
    match f {
        "name" => "お名前",
        "birth_date" => "生年月日",
        "phone" => "電話番号",
        "email" => "メールアドレス",
        _ => "お客様番号",
    }
}

/// Keyboard rows (US and JIS layouts agree on letters and digits).
const ROWS: [&str; 4] = ["1234567890", "qwertyuiop", "asdfghjkl", "zxcvbnm"];

/// The first run of at least `n` characters that repeat (`aaaa`), count up or down by one
/// (`abcd`, `4321`) or follow a keyboard row either way (`qwer`, `lkjh`); lower-case input.
fn longest_run(s: &str, n: usize) -> Option<String> {
    let c: Vec<char> = s.chars().collect();
    if n < 2 || c.len() < n {
        return None;
    }
    let row_pos = |x: char| {
        ROWS.iter()
            .enumerate()
            .find_map(|(r, row)| row.find(x).map(|i| (r, i as i32)))
    };
    type Step = fn(char, char, &dyn Fn(char) -> Option<(usize, i32)>) -> bool;
    let steps: [Step; 5] = [
        |a, b, _| a == b,
        |a, b, _| both_alnum(a, b) && (b as i32 - a as i32) == 1,
        |a, b, _| both_alnum(a, b) && (a as i32 - b as i32) == 1,
        |a, b, p| matches!((p(a), p(b)), (Some((r, i)), Some((s, j))) if r == s && j - i == 1),
        |a, b, p| matches!((p(a), p(b)), (Some((r, i)), Some((s, j))) if r == s && i - j == 1),
    ];
    for step in steps {
        let mut start = 0;
        for i in 1..=c.len() {
            if i < c.len() && step(c[i - 1], c[i], &row_pos) {
                continue;
            }
            if i - start >= n {
                return Some(c[start..i].iter().collect());
            }
            start = i;
        }
    }
    None
}

fn both_alnum(a: char, b: char) -> bool {
    a.is_ascii_alphanumeric() && b.is_ascii_alphanumeric()
}

/// Lower-case strings of the customer's data that a password must not contain, with the field
/// each comes from; only those of 3 characters or more (4 for digits), so that short ones
/// (`ai`, `12`) do not forbid half the passwords.
fn personal_tokens(p: &Personal<'_>) -> Vec<(&'static str, String)> {
    let mut out: Vec<(&'static str, String)> = Vec::new();
    let mut push = |field: &'static str, t: String| {
        let digits = t.chars().all(|c| c.is_ascii_digit());
        let n = t.chars().count();
        if (digits && n >= 4) || (!digits && n >= 3) {
            out.push((field, t));
        }
    };
    let norm = |s: &str| s.nfkc().collect::<String>().to_lowercase();
    let id = norm(p.customer_id);
    push("customer_id", id.clone());
    let id_digits: String = id.chars().filter(char::is_ascii_digit).collect();
    push("customer_id", id_digits.trim_start_matches('0').to_owned());
    push("customer_id", id_digits);
    for name in [p.name, p.name_kana].into_iter().flatten() {
        for part in norm(name).split_whitespace() {
            push("name", part.to_owned());
            for r in romaji_variants(part) {
                push("name", r);
            }
        }
        // Family and given name written together.
        let whole: String = norm(name).split_whitespace().collect();
        for r in romaji_variants(&whole) {
            push("name", r);
        }
    }
    if let Some((y, m, d)) = p.birth_date {
        for t in date_forms(y, m, d) {
            push("birth_date", t);
        }
    }
    if let Some(phone) = p.phone {
        let phone = norm(phone);
        let digits: String = phone.chars().filter(char::is_ascii_digit).collect();
        if digits.len() >= 4 {
            push("phone", digits[digits.len() - 4..].to_owned());
        }
        for group in phone.split(|c: char| !c.is_ascii_digit()) {
            push("phone", group.to_owned());
        }
        // Without a leading 0, and in international form (81…).
        push("phone", digits.trim_start_matches('0').to_owned());
        push("phone", digits);
    }
    if let Some(email) = p.email {
        let email = norm(email);
        let local = email.split('@').next().unwrap_or_default();
        push("email", local.to_owned());
        for part in local.split(['.', '_', '-', '+']) {
            push("email", part.to_owned());
        }
    }
    out.sort();
    out.dedup();
    // Longer tokens first, so that the field named is the most specific.
    out.sort_by_key(|(f, t)| (std::cmp::Reverse(t.len()), *f));
    out
}

/// A kana name in romaji as people write it: Hepburn (`shi`, `tsu`, `chi`, `fu`, `ji`), Kunrei
/// (`si`, `tu`, `ti`, `hu`, `zi`), and long vowels spelled out or not (`tarou`, `taro`, `taroh`).
fn romaji_variants(kana: &str) -> Vec<String> {
    if !kana.chars().any(|c| ('\u{3041}'..='\u{30ff}').contains(&c)) {
        return Vec::new();
    }
    let hepburn = kana.to_romaji().to_lowercase().replace(['-', 'ー'], "");
    let mut out = vec![hepburn.clone()];
    let kunrei = [
        ("sha", "sya"),
        ("shu", "syu"),
        ("sho", "syo"),
        ("shi", "si"),
        ("cha", "tya"),
        ("chu", "tyu"),
        ("cho", "tyo"),
        ("chi", "ti"),
        ("tsu", "tu"),
        ("fu", "hu"),
        ("ja", "zya"),
        ("ju", "zyu"),
        ("jo", "zyo"),
        ("ji", "zi"),
    ]
    .iter()
    .fold(hepburn.clone(), |s, (h, k)| s.replace(h, k));
    out.push(kunrei);
    for base in out.clone() {
        out.push(
            base.replace("ou", "o")
                .replace("uu", "u")
                .replace("oo", "o"),
        );
        out.push(base.replace("ou", "oh"));
        // "nn" for ん before a vowel-less end (wana_kana writes "n").
    }
    out.sort();
    out.dedup();
    out
}

/// A date of birth in the forms people put in passwords: 19850315, 850315, 0315, 1503,
/// 03151985, 15031985, 1985, and the Japanese era year (昭和60年 → 600315, s600315).
fn date_forms(y: i32, m: u32, d: u32) -> Vec<String> {
    let yy = y.rem_euclid(100);
    let mut out = vec![
        format!("{y:04}{m:02}{d:02}"),
        format!("{yy:02}{m:02}{d:02}"),
        format!("{m:02}{d:02}"),
        format!("{d:02}{m:02}"),
        format!("{m:02}{d:02}{y:04}"),
        format!("{d:02}{m:02}{y:04}"),
        format!("{y:04}"),
        format!("{y}{m}{d}"),
    ];
    // Eras by their first full year (a birth in an era's first, partial year counts as that era).
    let eras = [(2019, 'r'), (1989, 'h'), (1926, 's'), (1912, 't')];
    if let Some(&(start, letter)) = eras.iter().find(|(start, _)| y >= *start) {
        let ey = y - start + 1;
        out.push(format!("{ey:02}{m:02}{d:02}"));
        out.push(format!("{letter}{ey:02}{m:02}{d:02}"));
        out.push(format!("{letter}{ey}{m:02}{d:02}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taro() -> Personal<'static> {
        Personal {
            customer_id: "C00123456",
            name: Some("山田　太郎"),
            name_kana: Some("ヤマダ　タロウ"),
            birth_date: Some((1985, 3, 15)),
            phone: Some("０９０-１２３４-５６７８"),
            email: Some("taro.yamada@example.co.jp"),
        }
    }

    fn codes(kind: PasswordKind, pw: &str) -> Vec<&'static str> {
        check(
            kind,
            pw,
            &PasswordPolicy::for_kind(kind),
            &taro(),
            &BadPasswords::builtin(),
        )
        .into_iter()
        .map(|p| p.code)
        .collect()
    }

    #[test]
    fn a_strong_password_passes_both_policies() {
        for kind in [PasswordKind::Login, PasswordKind::Withdrawal] {
            assert_eq!(codes(kind, "Vq7#mRt2Lp9x"), Vec::<&str>::new(), "{kind:?}");
        }
        assert!(codes(PasswordKind::Login, "Glacier7Orbit%Mango2").is_empty());
    }

    #[test]
    fn length_and_character_classes() {
        assert!(codes(PasswordKind::Login, "Vq7#mRt2").contains(&"too_short"));
        let long = "Vq7#mRt2Lp9xWz4!";
        assert!(codes(PasswordKind::Withdrawal, long).is_empty());
        assert_eq!(
            codes(PasswordKind::Withdrawal, &format!("{long}A")),
            vec!["too_long"]
        );
        // Hostile length: refused before zxcvbn sees it.
        assert_eq!(
            codes(PasswordKind::Login, &"aB3".repeat(10_000)),
            vec!["too_long"]
        );
        assert!(codes(PasswordKind::Login, "vq7#mrt2lp9x").contains(&"needs_upper"));
        assert!(codes(PasswordKind::Login, "VQ7#MRT2LP9X").contains(&"needs_lower"));
        assert!(codes(PasswordKind::Login, "Vqz#mRtkLpqx").contains(&"needs_digit"));
        // Full-width letters and kana are not half-width.
        assert!(codes(PasswordKind::Login, "Ｖq7#mRt2Lp9x").contains(&"invalid_characters"));
        assert!(codes(PasswordKind::Login, "Vq7#mRt2Lpあx").contains(&"invalid_characters"));
        let no_symbols = PasswordPolicy {
            allow_symbols: false,
            ..PasswordPolicy::login()
        };
        let p = check(
            PasswordKind::Login,
            "Vq7#mRt2Lp9x",
            &no_symbols,
            &taro(),
            &BadPasswords::default(),
        );
        assert_eq!(p[0].code, "symbols_not_allowed");
    }

    #[test]
    fn the_seeds_six_characters_by_configuration() {
        let six = PasswordPolicy {
            min_chars: 6,
            min_score: 0,
            ..PasswordPolicy::withdrawal()
        };
        assert!(six.validate().is_ok());
        let p = check(
            PasswordKind::Withdrawal,
            "Xk7mQ2",
            &six,
            &taro(),
            &BadPasswords::default(),
        );
        assert!(p.is_empty(), "{p:?}");
        assert!(
            PasswordPolicy {
                min_chars: 5,
                ..six
            }
            .validate()
            .is_err()
        );
    }

    #[test]
    fn sequences_and_repeats() {
        for (pw, run) in [
            ("Vq7#aaaaRt2Lp", "aaaa"),
            ("Vq7#abcdRt2Lp", "abcd"),
            ("Vq7#1234Rt2Lp", "1234"),
            ("Vq7#9876Rt2Lp", "9876"),
            ("Vq7#QwerXt2Lp", "qwer"),
            ("Vq7#lkjhXt2Lp", "lkjh"),
        ] {
            let p = check(
                PasswordKind::Login,
                pw,
                &PasswordPolicy::login(),
                &Personal::default(),
                &BadPasswords::default(),
            );
            let seq = p.iter().find(|p| p.code == "sequence").expect(pw);
            assert!(seq.message_en.contains(run), "{pw}: {}", seq.message_en);
        }
        assert_eq!(longest_run("xabcx", 4), None);
        assert_eq!(longest_run("xzaq", 3), None);
    }

    #[test]
    fn personal_information_in_any_usual_form() {
        for pw in [
            "Yamada#Vq7Rt2",    // family name in romaji (from kana)
            "Vq7#TaroRt2Lp",    // given name, long vowel dropped
            "Vq7#TarouRt2Lp",   // given name, Hepburn
            "Vq7#19850315Rx",   // birth date
            "Vq7#Rt850315Lp",   // YYMMDD
            "Vq7#S600315Lpx",   // Showa 60
            "Vq7#Rt5678xLpq",   // phone's last four
            "Vq7#Rt12345678",   // phone's groups
            "Vq7#TaRo.YamadaX", // email local part
            "Vq7#x123456Rtp",   // customer number
        ] {
            let p = codes(PasswordKind::Login, pw);
            assert!(p.contains(&"personal_information"), "{pw}: {p:?}");
        }
        let p = check(
            PasswordKind::Login,
            "Vq7#TarouRt2Lp",
            &PasswordPolicy::login(),
            &taro(),
            &BadPasswords::default(),
        );
        let pi = p.iter().find(|p| p.code == "personal_information").unwrap();
        assert!(pi.message_en.contains("name") && pi.message_ja.contains("お名前"));
        // Kunrei-shiki spellings of a kana name.
        let shun = Personal {
            name_kana: Some("シュンスケ"),
            ..Personal::default()
        };
        let p = check(
            PasswordKind::Login,
            "Vq7#SyunsukeRt",
            &PasswordPolicy::login(),
            &shun,
            &BadPasswords::default(),
        );
        assert!(p.iter().any(|p| p.code == "personal_information"), "{p:?}");
    }

    #[test]
    fn common_passwords_and_plain_words() {
        assert!(codes(PasswordKind::Login, "Password123").contains(&"common_password"));
        assert!(codes(PasswordKind::Login, "Sakura12345").contains(&"common_password"));
        let weak = codes(PasswordKind::Login, "Monkey12Monkey");
        assert!(
            weak.contains(&"too_weak") || weak.contains(&"common_password"),
            "{weak:?}"
        );
        let mine = BadPasswords::from_lines(["# leaked", "Vq7#mRt2Lp9x"]);
        assert_eq!(mine.len(), 1);
        let p = check(
            PasswordKind::Login,
            "vq7#mrt2lp9X",
            &PasswordPolicy {
                require_upper: false,
                ..PasswordPolicy::login()
            },
            &taro(),
            &mine,
        );
        assert_eq!(
            p.iter().map(|p| p.code).collect::<Vec<_>>(),
            ["common_password"]
        );
    }

    #[test]
    fn every_problem_speaks_both_languages() {
        let p = codes(PasswordKind::Withdrawal, "ab");
        assert!(p.contains(&"too_short") && p.contains(&"needs_upper"));
        for pr in check(
            PasswordKind::Withdrawal,
            "aaaa",
            &PasswordPolicy::withdrawal(),
            &taro(),
            &BadPasswords::builtin(),
        ) {
            assert!(!pr.message_ja.is_empty() && !pr.message_en.is_empty());
            assert!(pr.message_ja.chars().any(|c| c > '\u{3000}'), "{pr:?}");
        }
        let s = same_as_other(PasswordKind::Withdrawal);
        assert!(s.message_ja.contains("ログインパスワード") && s.message_en.contains("login"));
    }
}
