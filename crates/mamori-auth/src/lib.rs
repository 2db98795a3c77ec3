//! mamori's customer-side defences that need no I/O: the password policy with feedback in
//! Japanese and English, Argon2id hashing, TOTP with replay refusal and recovery codes, passkeys
//! (WebAuthn ceremonies), masking of
//! personal data, and the audit log's hash chain. Storage, HTTP and e-mail live in the store and
//! server crates.

pub mod audit;
pub mod hash;
pub mod lockout;
pub mod mask;
pub mod passkey;
pub mod password;
pub mod stepup;
pub mod totp;
