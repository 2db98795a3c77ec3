//! Time-based one-time passwords (RFC 6238) as authenticator apps use them: a 160-bit secret,
//! SHA-1, 6 digits, 30 s steps, shown as an `otpauth://` URI and its QR code (SVG); a code is
//! accepted one step early or late, and never for a step at or before the last one accepted
//! (so a code cannot be used twice, nor an older one after a newer).
//!
//! Recovery codes: ten single-use codes of 50 bits each, stored as SHA-256 digests (their
//! entropy makes a slow hash unnecessary).

use qrcode::QrCode;
use qrcode::render::svg;
use rand::Rng;
use sha2::{Digest, Sha256};
use totp_rs::{Algorithm, TOTP};
use unicode_normalization::UnicodeNormalization;

/// Seconds per step.
pub const STEP: u64 = 30;
/// Digits per code.
pub const DIGITS: usize = 6;
/// Steps accepted either side of the current one.
pub const SKEW: u64 = 1;
/// Bytes of a new secret (RFC 4226 recommends 160 bits).
pub const SECRET_BYTES: usize = 20;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TotpError {
    #[error("the code is not valid")]
    Wrong,
    #[error("the code was already used")]
    Replayed,
    #[error("invalid TOTP setting: {0}")]
    Setting(String),
}

/// A new random secret.
pub fn new_secret() -> Vec<u8> {
    let mut s = vec![0u8; SECRET_BYTES];
    rand::rng().fill(&mut s[..]);
    s
}

fn totp(secret: &[u8], issuer: &str, account: &str) -> Result<TOTP, TotpError> {
    TOTP::new(
        Algorithm::SHA1,
        DIGITS,
        SKEW as u8,
        STEP,
        secret.to_vec(),
        Some(issuer.to_owned()),
        account.to_owned(),
    )
    .map_err(|e| TotpError::Setting(e.to_string()))
}

/// What the customer's app needs to start: the secret in base32, the `otpauth://` URI, and that
/// URI as a QR code in SVG.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Enrolment {
    pub secret_base32: String,
    pub uri: String,
    pub qr_svg: String,
}

/// The enrolment of `secret` for `account` (shown in the app under `issuer`; neither may
/// contain `:`).
pub fn enrolment(secret: &[u8], issuer: &str, account: &str) -> Result<Enrolment, TotpError> {
    let t = totp(secret, issuer, account)?;
    let uri = t.get_url();
    let qr_svg = QrCode::new(uri.as_bytes())
        .map_err(|e| TotpError::Setting(e.to_string()))?
        .render::<svg::Color<'_>>()
        .min_dimensions(200, 200)
        .build();
    Ok(Enrolment {
        secret_base32: t.get_secret_base32(),
        uri,
        qr_svg,
    })
}

/// The code of `secret` at unix time `at` (seconds).
pub fn code_at(secret: &[u8], at: u64) -> Result<String, TotpError> {
    Ok(totp(secret, "mamori", "x")?.generate(at))
}

/// Checks `code` at unix time `now` (seconds); `last_step` is the step of the last code
/// accepted for this secret. Returns the step to store as the new last one.
pub fn verify(
    secret: &[u8],
    code: &str,
    now: u64,
    last_step: Option<u64>,
) -> Result<u64, TotpError> {
    let t = totp(secret, "mamori", "x")?;
    let code: String = code
        .nfkc()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .collect();
    if code.len() != DIGITS || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TotpError::Wrong);
    }
    let current = now / STEP;
    let mut matched = None;
    // Every candidate step is computed and compared in constant time, whichever matches.
    for step in current.saturating_sub(SKEW)..=current + SKEW {
        if ct_eq(t.generate(step * STEP).as_bytes(), code.as_bytes()) {
            matched = Some(step);
        }
    }
    let step = matched.ok_or(TotpError::Wrong)?;
    if last_step.is_some_and(|last| step <= last) {
        return Err(TotpError::Replayed);
    }
    Ok(step)
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Recovery codes per customer.
pub const RECOVERY_CODES: usize = 10;

/// Letters and digits that cannot be mistaken for one another (no 0/o, 1/l/i).
const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";

/// Ten new recovery codes (`xxxxx-xxxxx`), to show once, and their digests, to store.
pub fn recovery_codes() -> (Vec<String>, Vec<String>) {
    let mut rng = rand::rng();
    let codes: Vec<String> = (0..RECOVERY_CODES)
        .map(|_| {
            let c: String = (0..10)
                .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
                .collect();
            format!("{}-{}", &c[..5], &c[5..])
        })
        .collect();
    let digests = codes.iter().map(|c| recovery_digest(c)).collect();
    (codes, digests)
}

/// The digest a recovery code is stored as; case, spaces, hyphens and full-width forms as typed
/// do not matter.
pub fn recovery_digest(code: &str) -> String {
    let norm: String = code
        .nfkc()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let d = Sha256::digest(format!("mamori-recovery:{norm}").as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238, Appendix B: 8 digits, SHA-1/256/512 with the RFC's seeds.
    #[test]
    fn rfc_6238_appendix_b() {
        let seeds: [(Algorithm, &[u8]); 3] = [
            (Algorithm::SHA1, b"12345678901234567890"),
            (Algorithm::SHA256, b"12345678901234567890123456789012"),
            (
                Algorithm::SHA512,
                b"1234567890123456789012345678901234567890123456789012345678901234",
            ),
        ];
        let vectors: [(u64, [&str; 3]); 6] = [
            (59, ["94287082", "46119246", "90693936"]),
            (1111111109, ["07081804", "68084774", "25091201"]),
            (1111111111, ["14050471", "67062674", "99943326"]),
            (1234567890, ["89005924", "91819424", "93441116"]),
            (2000000000, ["69279037", "90698825", "38618901"]),
            (20000000000, ["65353130", "77737706", "47863826"]),
        ];
        for (at, codes) in vectors {
            for ((alg, seed), want) in seeds.iter().zip(codes) {
                let t = TOTP::new(*alg, 8, 1, 30, seed.to_vec(), None, "x".into()).unwrap();
                assert_eq!(t.generate(at), want, "{alg:?} at {at}");
            }
        }
        // Our 6-digit codes are the last six digits of the RFC's SHA-1 ones.
        let seed = b"12345678901234567890";
        assert_eq!(code_at(seed, 59).unwrap(), "287082");
        assert_eq!(code_at(seed, 1111111109).unwrap(), "081804");
    }

    #[test]
    fn a_code_works_once_within_one_step_either_side() {
        let s = new_secret();
        let now = 1_800_000_015;
        let code = code_at(&s, now).unwrap();
        let step = verify(&s, &code, now, None).unwrap();
        assert_eq!(step, now / STEP);
        assert_eq!(verify(&s, &code, now, Some(step)), Err(TotpError::Replayed));
        // The previous step's code after this one was used: refused as well.
        let prev = code_at(&s, now - STEP).unwrap();
        assert_eq!(verify(&s, &prev, now, Some(step)), Err(TotpError::Replayed));
        // The next step's code is fine, once.
        let next = code_at(&s, now + STEP).unwrap();
        let n = verify(&s, &next, now, Some(step)).unwrap();
        assert_eq!(n, step + 1);
        // Two steps away: wrong; garbage: wrong.
        let far = code_at(&s, now + 2 * STEP).unwrap();
        if far != next {
            assert_eq!(verify(&s, &far, now, None), Err(TotpError::Wrong));
        }
        assert_eq!(verify(&s, "12a456", now, None), Err(TotpError::Wrong));
        assert_eq!(verify(&s, "1234567", now, None), Err(TotpError::Wrong));
        // Typed with a space or in full-width digits.
        let c = code_at(&s, now + 10 * STEP).unwrap();
        let spaced = format!("{} {}", &c[..3], &c[3..]);
        assert!(verify(&s, &spaced, now + 10 * STEP, None).is_ok());
        let wide: String = c
            .chars()
            .map(|d| char::from_u32(d as u32 - '0' as u32 + '０' as u32).unwrap())
            .collect();
        assert!(verify(&s, &wide, now + 10 * STEP, None).is_ok());
    }

    #[test]
    fn enrolment_gives_a_uri_and_an_svg() {
        let s = new_secret();
        let e = enrolment(&s, "Example Securities", "C00123456").unwrap();
        assert!(
            e.uri
                .starts_with("otpauth://totp/Example%20Securities:C00123456?")
        );
        assert!(e.uri.contains(&format!("secret={}", e.secret_base32)));
        assert!(e.qr_svg.starts_with("<?xml") && e.qr_svg.contains("<svg"));
        assert!(enrolment(&s, "a:b", "x").is_err());
        assert_eq!(
            TOTP::from_url(&e.uri).unwrap().get_secret_base32(),
            e.secret_base32
        );
    }

    #[test]
    fn recovery_codes_are_distinct_and_match_as_typed() {
        let (codes, digests) = recovery_codes();
        assert_eq!(codes.len(), 10);
        let mut d = digests.clone();
        d.sort();
        d.dedup();
        assert_eq!(d.len(), 10);
        let c = &codes[3];
        assert_eq!(
            recovery_digest(&c.to_uppercase().replace('-', " ")),
            digests[3]
        );
        assert_ne!(recovery_digest("aaaaa-aaaaa"), digests[3]);
    }
}
