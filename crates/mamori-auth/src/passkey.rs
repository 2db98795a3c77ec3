//! Passkeys (WebAuthn) as a second factor, through webauthn-rs: the relying party built from the
//! configuration, and the two ceremonies, registration and authentication, each in two halves
//! (options → finish) with JSON in and out. Between the halves the ceremony's state is JSON, so
//! that the store can keep it and any node can finish a ceremony another started; the store
//! hands a state out once, which is what makes an answer single-use.
//!
//! Passkeys require user verification (a PIN or biometric on the device). A passkey is stored as
//! webauthn-rs's `Passkey` in JSON (public key, counter, flags: nothing secret) under its
//! credential id in base64url.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use sha2::{Digest, Sha256};
use webauthn_rs::prelude::{
    AuthenticationResult, Passkey, PasskeyAuthentication, PasskeyRegistration, PublicKeyCredential,
    RegisterPublicKeyCredential, Url, Uuid,
};
use webauthn_rs::{Webauthn, WebauthnBuilder};

/// Seconds a ceremony may take, from its options to its finish.
pub const CEREMONY_TTL_SECONDS: i64 = 300;

/// Longest relying-party name.
pub const MAX_RP_NAME_CHARS: usize = 64;

/// What went wrong: a setting (naming it), an answer that is not what a browser sends, an answer
/// that does not verify, or a stored value that does not read.
#[derive(Debug, thiserror::Error)]
pub enum PasskeyError {
    #[error(
        "passkey_rp_id = {0:?}: expected a domain name such as \"example.com\" (no scheme, port or path)"
    )]
    RpId(String),
    #[error("passkey_origin = {0:?}: {1}")]
    Origin(String, &'static str),
    #[error("passkey_rp_name = {0:?}: 1 to 64 characters")]
    RpName(String),
    #[error(
        "passkey_rp_id = {rp_id:?} is neither the domain of passkey_origin = {origin:?} nor a parent domain of it"
    )]
    RpIdNotOfOrigin { rp_id: String, origin: String },
    #[error("credential: not a WebAuthn {what} answer: {reason}")]
    Answer { what: &'static str, reason: String },
    #[error("the answer does not verify: {0}")]
    Refused(String),
    #[error("a stored passkey value does not read: {0}")]
    Stored(String),
    #[error("webauthn: {0}")]
    Webauthn(String),
}

/// The relying party: mamori as the browser's passkey dialog names it, for one origin.
#[derive(Debug, Clone)]
pub struct RelyingParty {
    webauthn: Webauthn,
}

/// The first half of a ceremony: the options for the browser
/// (`navigator.credentials.create/get({publicKey})`) and the state to keep until the answer.
#[derive(Debug, Clone)]
pub struct Started {
    pub options: Value,
    pub state: String,
}

/// A registered passkey, to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    /// base64url, unpadded.
    pub credential_id: String,
    /// webauthn-rs's `Passkey` in JSON.
    pub passkey: String,
    /// The authenticator's signature counter at registration (0: none kept, or none yet).
    pub counter: u32,
}

/// A passed authentication.
#[derive(Debug, Clone)]
pub struct Authenticated {
    /// base64url, unpadded: which of the customer's passkeys answered.
    pub credential_id: String,
    /// The authenticator's signature counter (0: it keeps none).
    pub counter: u32,
    /// Whether the stored passkey changes (counter, backup flags): see [`updated_passkey`].
    pub needs_update: bool,
    result: AuthenticationResult,
}

fn valid_domain(d: &str) -> bool {
    !d.is_empty()
        && d.len() <= 253
        && d.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

impl RelyingParty {
    /// The relying party `rp_id` (a domain) for pages at `origin` (`https://…`, or `http://` on
    /// localhost only), named `rp_name` in the customer's passkey dialog.
    pub fn new(rp_id: &str, origin: &str, rp_name: &str) -> Result<Self, PasskeyError> {
        if !valid_domain(rp_id) {
            return Err(PasskeyError::RpId(rp_id.to_owned()));
        }
        let bad_origin = |why| PasskeyError::Origin(origin.to_owned(), why);
        let url = Url::parse(origin).map_err(|_| bad_origin("not a URL"))?;
        let host = url
            .domain()
            .ok_or_else(|| bad_origin("the host must be a domain name, not an IP address"))?;
        match url.scheme() {
            "https" => {}
            "http" if host == "localhost" => {}
            _ => return Err(bad_origin("expected https:// (http:// only for localhost)")),
        }
        if url.path() != "/"
            || url.query().is_some()
            || url.fragment().is_some()
            || !url.username().is_empty()
        {
            return Err(bad_origin(
                "expected scheme, host and port only, e.g. \"https://www.example.com\"",
            ));
        }
        let name = rp_name.trim();
        if name.is_empty() || name.chars().count() > MAX_RP_NAME_CHARS {
            return Err(PasskeyError::RpName(rp_name.to_owned()));
        }
        let webauthn = WebauthnBuilder::new(rp_id, &url)
            .map_err(|_| PasskeyError::RpIdNotOfOrigin {
                rp_id: rp_id.to_owned(),
                origin: origin.to_owned(),
            })?
            .rp_name(name)
            .timeout(Duration::from_secs(CEREMONY_TTL_SECONDS as u64))
            .build()
            .map_err(|e| PasskeyError::Webauthn(e.to_string()))?;
        Ok(RelyingParty { webauthn })
    }

    /// Starts registering a passkey for `customer_id`; `existing` are the customer's stored
    /// passkeys (JSON), which the authenticator is asked not to register again.
    pub fn start_registration(
        &self,
        customer_id: &str,
        existing: &[&str],
    ) -> Result<Started, PasskeyError> {
        let exclude = existing
            .iter()
            .map(|p| read_passkey(p).map(|p| p.cred_id().clone()))
            .collect::<Result<Vec<_>, _>>()?;
        let (options, state) = self
            .webauthn
            .start_passkey_registration(
                user_handle(customer_id),
                customer_id,
                customer_id,
                (!exclude.is_empty()).then_some(exclude),
            )
            .map_err(|e| PasskeyError::Webauthn(e.to_string()))?;
        started(&options, &state)
    }

    /// Finishes a registration: the browser's answer (`credential`) against the state kept from
    /// [`RelyingParty::start_registration`].
    pub fn finish_registration(
        &self,
        state: &str,
        credential: &Value,
    ) -> Result<Registered, PasskeyError> {
        let state: PasskeyRegistration = read_state(state)?;
        let answer: RegisterPublicKeyCredential = serde_json::from_value(credential.clone())
            .map_err(|e| PasskeyError::Answer {
                what: "registration",
                reason: e.to_string(),
            })?;
        let passkey = self
            .webauthn
            .finish_passkey_registration(&answer, &state)
            .map_err(|e| PasskeyError::Refused(e.to_string()))?;
        let json =
            serde_json::to_value(&passkey).map_err(|e| PasskeyError::Webauthn(e.to_string()))?;
        let counter = json
            .pointer("/cred/counter")
            .and_then(Value::as_u64)
            .and_then(|c| u32::try_from(c).ok())
            .ok_or_else(|| PasskeyError::Webauthn("a passkey without a counter".into()))?;
        Ok(Registered {
            credential_id: credential_id(passkey.cred_id()),
            passkey: json.to_string(),
            counter,
        })
    }

    /// Starts an authentication with any of `passkeys` (the customer's, JSON; at least one).
    pub fn start_authentication(&self, passkeys: &[&str]) -> Result<Started, PasskeyError> {
        let keys = passkeys
            .iter()
            .map(|p| read_passkey(p))
            .collect::<Result<Vec<_>, _>>()?;
        let (options, state) = self
            .webauthn
            .start_passkey_authentication(&keys)
            .map_err(|e| PasskeyError::Webauthn(e.to_string()))?;
        started(&options, &state)
    }

    /// Finishes an authentication: the browser's answer against the state kept from
    /// [`RelyingParty::start_authentication`]. The signature, challenge, origin, relying party,
    /// user verification and counter (against the counters the state was started with) are
    /// checked; the caller stores the new counter with a compare-and-set, so that of two answers
    /// with one counter only one passes.
    pub fn finish_authentication(
        &self,
        state: &str,
        credential: &Value,
    ) -> Result<Authenticated, PasskeyError> {
        let state: PasskeyAuthentication = read_state(state)?;
        let answer: PublicKeyCredential =
            serde_json::from_value(credential.clone()).map_err(|e| PasskeyError::Answer {
                what: "authentication",
                reason: e.to_string(),
            })?;
        let result = self
            .webauthn
            .finish_passkey_authentication(&answer, &state)
            .map_err(|e| PasskeyError::Refused(e.to_string()))?;
        Ok(Authenticated {
            credential_id: credential_id(result.cred_id()),
            counter: result.counter(),
            needs_update: result.needs_update(),
            result,
        })
    }
}

/// The stored passkey (JSON) after an authentication: the new counter and backup flags.
pub fn updated_passkey(passkey: &str, a: &Authenticated) -> Result<String, PasskeyError> {
    let mut p = read_passkey(passkey)?;
    if p.update_credential(&a.result).is_none() {
        return Err(PasskeyError::Stored(
            "the answer is from another credential".into(),
        ));
    }
    serde_json::to_string(&p).map_err(|e| PasskeyError::Webauthn(e.to_string()))
}

/// The credential id of a stored passkey (JSON), base64url.
pub fn stored_credential_id(passkey: &str) -> Result<String, PasskeyError> {
    Ok(credential_id(read_passkey(passkey)?.cred_id()))
}

/// The WebAuthn user handle of a customer: 16 bytes derived from the id, the same on every node
/// and for every passkey of the customer.
pub fn user_handle(customer_id: &str) -> Uuid {
    let d = Sha256::digest(format!("mamori-passkey-user:{customer_id}").as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    Uuid::from_bytes(b)
}

fn credential_id(raw: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(raw)
}

fn read_passkey(json: &str) -> Result<Passkey, PasskeyError> {
    serde_json::from_str(json).map_err(|e| PasskeyError::Stored(e.to_string()))
}

fn read_state<T: serde::de::DeserializeOwned>(json: &str) -> Result<T, PasskeyError> {
    serde_json::from_str(json).map_err(|e| PasskeyError::Stored(e.to_string()))
}

fn started<O: serde::Serialize, S: serde::Serialize>(
    options: &O,
    state: &S,
) -> Result<Started, PasskeyError> {
    let fail = |e: serde_json::Error| PasskeyError::Webauthn(e.to_string());
    Ok(Started {
        options: serde_json::to_value(options).map_err(fail)?,
        state: serde_json::to_string(state).map_err(fail)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use webauthn_authenticator_rs::prelude::{
        CreationChallengeResponse, RequestChallengeResponse, WebauthnAuthenticator,
    };
    use webauthn_authenticator_rs::softpasskey::SoftPasskey;

    const ORIGIN: &str = "https://www.example.com";

    fn rp() -> RelyingParty {
        RelyingParty::new("example.com", ORIGIN, "Example Securities").unwrap()
    }

    /// A software authenticator that claims user verification, as a platform passkey does.
    fn device() -> SoftPasskey {
        SoftPasskey::new(true)
    }

    fn register(rp: &RelyingParty, dev: &mut SoftPasskey) -> Registered {
        let s = rp.start_registration("C00123", &[]).unwrap();
        let answer = dev
            .do_registration(
                Url::parse(ORIGIN).unwrap(),
                serde_json::from_value::<CreationChallengeResponse>(s.options.clone()).unwrap(),
            )
            .unwrap();
        rp.finish_registration(&s.state, &serde_json::to_value(&answer).unwrap())
            .unwrap()
    }

    fn answer(dev: &mut SoftPasskey, origin: &str, s: &Started) -> Value {
        let a = dev
            .do_authentication(
                Url::parse(origin).unwrap(),
                serde_json::from_value::<RequestChallengeResponse>(s.options.clone()).unwrap(),
            )
            .unwrap();
        serde_json::to_value(&a).unwrap()
    }

    #[test]
    fn settings_are_checked_and_name_the_field() {
        for (id, origin, name, field) in [
            ("", ORIGIN, "x", "passkey_rp_id"),
            ("https://example.com", ORIGIN, "x", "passkey_rp_id"),
            ("Example.com", ORIGIN, "x", "passkey_rp_id"),
            ("example.com", "www.example.com", "x", "passkey_origin"),
            (
                "example.com",
                "http://www.example.com",
                "x",
                "passkey_origin",
            ),
            (
                "example.com",
                "https://www.example.com/login",
                "x",
                "passkey_origin",
            ),
            ("localhost", "http://127.0.0.1:8080", "x", "passkey_origin"),
            ("example.com", ORIGIN, " ", "passkey_rp_name"),
            ("example.org", ORIGIN, "x", "passkey_rp_id"),
            ("ample.com", ORIGIN, "x", "passkey_rp_id"),
        ] {
            let e = RelyingParty::new(id, origin, name).unwrap_err().to_string();
            assert!(e.starts_with(field), "{id} {origin} {name:?}: {e}");
        }
        assert!(RelyingParty::new("localhost", "http://localhost:8080", "mamori").is_ok());
        assert!(RelyingParty::new("example.com", "https://example.com", "m").is_ok());
    }

    #[test]
    fn register_then_authenticate_with_a_rising_counter() {
        let rp = rp();
        let mut dev = device();
        let reg = register(&rp, &mut dev);
        assert_eq!(
            stored_credential_id(&reg.passkey).unwrap(),
            reg.credential_id
        );
        assert_eq!(reg.counter, 0, "the software authenticator starts at 0");
        let opts = rp.start_registration("C00123", &[&reg.passkey]).unwrap();
        assert!(
            opts.options.to_string().contains(&reg.credential_id),
            "the registered passkey is excluded: {}",
            opts.options
        );
        let mut stored = reg.passkey.clone();
        let mut last = 0;
        for _ in 0..2 {
            let s = rp.start_authentication(&[&stored]).unwrap();
            let a = rp
                .finish_authentication(&s.state, &answer(&mut dev, ORIGIN, &s))
                .unwrap();
            assert_eq!(a.credential_id, reg.credential_id);
            assert!(a.counter > last, "{} after {last}", a.counter);
            assert!(a.needs_update);
            last = a.counter;
            stored = updated_passkey(&stored, &a).unwrap();
        }
        // The user handle is the same for every ceremony of a customer, and differs between them.
        assert_eq!(user_handle("C00123"), user_handle("C00123"));
        assert_ne!(user_handle("C00123"), user_handle("C00124"));
    }

    #[test]
    fn answers_for_another_origin_or_an_old_challenge_are_refused() {
        let rp = rp();
        let mut dev = device();
        let reg = register(&rp, &mut dev);
        // Signed for a look-alike site that the customer was lured to.
        let s = rp.start_authentication(&[&reg.passkey]).unwrap();
        let phished = answer(&mut dev, "https://login.example.com", &s);
        let e = rp.finish_authentication(&s.state, &phished).unwrap_err();
        assert!(
            matches!(&e, PasskeyError::Refused(m) if m.contains("origin")),
            "{e}"
        );
        // A good answer replayed under a new challenge.
        let s1 = rp.start_authentication(&[&reg.passkey]).unwrap();
        let good = answer(&mut dev, ORIGIN, &s1);
        let a = rp.finish_authentication(&s1.state, &good).unwrap();
        let stored = updated_passkey(&reg.passkey, &a).unwrap();
        let s2 = rp.start_authentication(&[&stored]).unwrap();
        let e = rp.finish_authentication(&s2.state, &good).unwrap_err();
        assert!(
            matches!(&e, PasskeyError::Refused(m) if m.contains("challenge")),
            "{e}"
        );
        let s3 = rp.start_authentication(&[&stored]).unwrap();
        assert!(
            rp.finish_authentication(&s3.state, &answer(&mut dev, ORIGIN, &s3))
                .is_ok()
        );
        // Not an answer at all; a registration answer to an authentication.
        assert!(matches!(
            rp.finish_authentication(&s3.state, &serde_json::json!({"id": 1})),
            Err(PasskeyError::Answer { .. })
        ));
        // Another relying party's passkey: refused at registration's finish.
        let other = RelyingParty::new("example.org", "https://example.org", "x").unwrap();
        let s = other.start_registration("C00123", &[]).unwrap();
        let a = dev
            .do_registration(
                Url::parse("https://example.org").unwrap(),
                serde_json::from_value::<CreationChallengeResponse>(s.options.clone()).unwrap(),
            )
            .unwrap();
        let e = rp
            .finish_registration(&s.state, &serde_json::to_value(&a).unwrap())
            .unwrap_err();
        assert!(matches!(e, PasskeyError::Refused(_)), "{e}");
    }
}
