//! Passkeys over HTTP: a software authenticator (webauthn-authenticator-rs's `SoftPasskey`)
//! registers and answers challenges against a running server, as a browser would.

use serde_json::{Value, json};
use webauthn_authenticator_rs::prelude::{
    CreationChallengeResponse, RequestChallengeResponse, Url, WebauthnAuthenticator,
};
use webauthn_authenticator_rs::softpasskey::SoftPasskey;

use super::{Running, runtime};

/// The origin the server is configured with and the authenticator signs for.
pub const ORIGIN: &str = "http://localhost:8080";

/// A device that verifies its user (a PIN or biometric), as passkeys require.
fn device() -> SoftPasskey {
    SoftPasskey::new(true)
}

impl Running {
    async fn delete(&self, path: &str, key: Option<&str>, body: &Value) -> (u16, Value, String) {
        self.send(
            self.http.delete(format!("{}{path}", self.base)).json(body),
            key,
        )
        .await
    }

    /// Starts a registration (with a step-up token, if given): the status and answer.
    async fn passkey_options(&self, id: &str, token: Option<&str>) -> (u16, Value) {
        let body = match token {
            Some(t) => json!({"stepup_token": t}),
            None => json!({}),
        };
        let (st, v, _) = self
            .post(
                &format!("/v1/customers/{id}/passkeys/register"),
                Some("auth"),
                &body,
            )
            .await;
        (st, v)
    }

    /// The device's answer to registration options, and the finish's status and answer.
    async fn passkey_finish(
        &self,
        id: &str,
        dev: &mut SoftPasskey,
        started: &Value,
        name: &str,
    ) -> (u16, Value, Value) {
        let options: CreationChallengeResponse =
            serde_json::from_value(started["options"].clone()).expect("creation options");
        let cred = dev
            .do_registration(Url::parse(ORIGIN).unwrap(), options)
            .expect("the device registers");
        let body = json!({"ceremony_id": started["ceremony_id"], "credential": cred, "name": name});
        let (st, v, _) = self
            .post(
                &format!("/v1/customers/{id}/passkeys/register/finish"),
                Some("auth"),
                &body,
            )
            .await;
        (st, v, body)
    }

    /// A challenge for `id` answered by the device as a page at `origin` would:
    /// `{ceremony_id, credential}`.
    async fn passkey_answer(&self, id: &str, dev: &mut SoftPasskey, origin: &str) -> Value {
        let (st, c, _) = self
            .post(
                &format!("/v1/customers/{id}/passkeys/challenge"),
                Some("auth"),
                &json!({}),
            )
            .await;
        assert_eq!(st, 200, "{c}");
        let options: RequestChallengeResponse =
            serde_json::from_value(c["options"].clone()).expect("request options");
        let cred = dev
            .do_authentication(Url::parse(origin).unwrap(), options)
            .expect("the device answers");
        json!({"ceremony_id": c["ceremony_id"], "credential": cred})
    }

    async fn passkey_verify(&self, id: &str, answer: &Value) -> Value {
        let (st, v, _) = self
            .post(
                &format!("/v1/customers/{id}/passkeys/verify"),
                Some("auth"),
                answer,
            )
            .await;
        assert_eq!(st, 200, "{v}");
        v
    }

    /// A step-up token for an MFA change, proved with a passkey.
    async fn mfa_token(&self, dev: &mut SoftPasskey, params: Value) -> String {
        let answer = self.passkey_answer("P1", dev, ORIGIN).await;
        let (st, t, _) = self
            .post(
                "/v1/customers/P1/stepup",
                Some("auth"),
                &json!({"operation": "mfa_change", "params": params, "passkey": answer}),
            )
            .await;
        assert_eq!((st, t["method"].as_str()), (201, Some("passkey")), "{t}");
        t["token"].as_str().unwrap().to_owned()
    }
}

fn code(p: &Value) -> Option<&str> {
    p["problems"][0]["code"].as_str()
}

#[test]
fn passkeys_register_authenticate_step_up_and_are_removed_over_http() {
    let dir = tempfile::tempdir().expect("tempdir");
    runtime().block_on(async {
        let server = Running::start(dir.path()).await;
        let s = &server;
        let (_, doc, _) = s.get("/openapi.json", None).await;
        for p in ["/v1/customers/{id}/passkeys/register", "/v1/customers/{id}/passkeys/register/finish",
                  "/v1/customers/{id}/passkeys/challenge", "/v1/customers/{id}/passkeys/verify",
                  "/v1/customers/{id}/passkeys", "/v1/customers/{id}/passkeys/{credential_id}"] {
            assert!(doc["paths"].get(p).is_some(), "{p} documented");
        }
        let mut phone = device();

        // No second factor yet: an authenticator app's enrolment and a passkey's registration
        // both start without a step-up. The passkey finishes first; the app's enrolment, begun
        // before it, then needs a step-up of its own.
        let (st, e, _) = s.post("/v1/customers/P1/totp", Some("auth"), &json!({})).await;
        assert_eq!(st, 201, "{e}");
        let app = totp_rs::TOTP::from_url(e["uri"].as_str().unwrap()).unwrap();
        let (st, started) = s.passkey_options("P1", None).await;
        assert_eq!(st, 200, "{started}");
        assert_eq!(started["options"]["publicKey"]["rp"]["id"], "localhost", "{started}");
        // Another customer cannot finish P1's ceremony (and does not spoil it).
        let (st, p, _) = s.passkey_finish("P2", &mut device(), &started, "theirs").await;
        assert_eq!((st, code(&p)), (403, Some("ceremony_unknown")), "{p}");
        let (st, r, finish) = s.passkey_finish("P1", &mut phone, &started, "iPhone").await;
        assert_eq!(st, 201, "{r}");
        let phone_id = r["credential_id"].as_str().unwrap().to_owned();
        // A repeated finish: the ceremony is used up.
        let (st, p, _) = s.post("/v1/customers/P1/passkeys/register/finish", Some("auth"), &finish).await;
        assert_eq!((st, code(&p)), (403, Some("ceremony_unknown")), "{p}");
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let (st, p, _) = s.post("/v1/customers/P1/totp/confirm", Some("auth"), &json!({"code": app.generate(now)})).await;
        assert_eq!(st, 409, "the app's enrolment began before the passkey: {p}");
        // Adding another passkey is an MFA change now.
        let (_, started) = s.passkey_options("P1", None).await;
        assert_eq!(code(&started), Some("stepup_required"), "a passkey exists now: {started}");

        let (st, list, _) = s.get("/v1/customers/P1/passkeys", Some("auth")).await;
        assert_eq!(st, 200, "{list}");
        let keys = list["passkeys"].as_array().unwrap();
        assert_eq!((keys.len(), keys[0]["name"].as_str(), keys[0]["credential_id"].as_str()), (1, Some("iPhone"), Some(phone_id.as_str())), "{list}");
        assert!(keys[0]["created_at"].as_str().unwrap().ends_with("+09:00"), "{list}");
        assert!(keys[0]["last_used_at"].is_null(), "{list}");

        // Challenge and verify; the same answer again, or under a new challenge: refused.
        let answer = s.passkey_answer("P1", &mut phone, ORIGIN).await;
        let v = s.passkey_verify("P1", &answer).await;
        assert_eq!((v["valid"].as_bool(), v["method"].as_str()), (Some(true), Some("passkey")), "{v}");
        assert_eq!(v["credential_id"], phone_id.as_str());
        let v = s.passkey_verify("P1", &answer).await;
        assert_eq!((v["valid"].as_bool(), v["reason"].as_str()), (Some(false), Some("ceremony_unknown")), "{v}");
        let fresh = s.passkey_answer("P1", &mut phone, ORIGIN).await;
        let replayed = json!({"ceremony_id": fresh["ceremony_id"], "credential": answer["credential"]});
        let v = s.passkey_verify("P1", &replayed).await;
        assert_eq!((v["valid"].as_bool(), v["reason"].as_str()), (Some(false), Some("refused")), "{v}");
        // Signed for another origin (a look-alike site relaying the challenge): refused.
        let phished = s.passkey_answer("P1", &mut phone, "http://localhost:9090").await;
        let v = s.passkey_verify("P1", &phished).await;
        assert_eq!((v["valid"].as_bool(), v["reason"].as_str()), (Some(false), Some("refused")), "{v}");
        // Presented for another customer: refused there, and still good for its own.
        let answer = s.passkey_answer("P1", &mut phone, ORIGIN).await;
        let v = s.passkey_verify("P2", &answer).await;
        assert_eq!((v["valid"].as_bool(), v["reason"].as_str()), (Some(false), Some("ceremony_unknown")), "{v}");
        assert_eq!(s.passkey_verify("P1", &answer).await["valid"], true);
        // Not a WebAuthn answer.
        let junk = s.passkey_answer("P1", &mut phone, ORIGIN).await;
        let (st, p, _) = s.post("/v1/customers/P1/passkeys/verify", Some("auth"),
            &json!({"ceremony_id": junk["ceremony_id"], "credential": {"id": "x"}})).await;
        assert_eq!(st, 422, "{p}");
        assert!(p["detail"].as_str().unwrap().starts_with("credential:"), "{p}");
        // One answer sent twice at once: exactly one passes.
        let answer = s.passkey_answer("P1", &mut phone, ORIGIN).await;
        let (a, b) = tokio::join!(s.passkey_verify("P1", &answer), s.passkey_verify("P1", &answer));
        let passed = [&a, &b].iter().filter(|v| v["valid"] == true).count();
        assert_eq!(passed, 1, "{a} {b}");
        let (_, list, _) = s.get("/v1/customers/P1/passkeys", Some("auth")).await;
        assert!(list["passkeys"][0]["last_used_at"].as_str().unwrap().ends_with("+09:00"), "{list}");

        // Step-up with a passkey (the customer has no authenticator app), then its token used.
        let dest = json!({"bank_code": "0005", "branch_code": "001", "account_number": "1111111"});
        let (st, p, _) = s.post("/v1/customers/P1/stepup", Some("auth"),
            &json!({"operation": "destination_change", "params": dest, "code": "123456"})).await;
        assert_eq!(st, 409, "no authenticator app: {p}");
        let answer = s.passkey_answer("P1", &mut phone, ORIGIN).await;
        let (st, t, _) = s.post("/v1/customers/P1/stepup", Some("auth"),
            &json!({"operation": "destination_change", "params": dest, "passkey": answer})).await;
        assert_eq!((st, t["method"].as_str()), (201, Some("passkey")), "{t}");
        let (st, p, _) = s.post("/v1/customers/P1/stepup", Some("auth"),
            &json!({"operation": "destination_change", "params": dest, "passkey": answer})).await;
        assert_eq!((st, code(&p)), (403, Some("wrong_passkey")), "the answer again: {p}");
        let (st, v, _) = s.post("/v1/stepup/consume", Some("auth"),
            &json!({"token": t["token"], "customer_id": "P1", "operation": "destination_change", "params": dest})).await;
        assert_eq!((st, v["valid"].as_bool(), v["method"].as_str()), (200, Some(true), Some("passkey")), "{v}");

        // MFA changes: a second factor added beside one needs a step-up for exactly that change.
        let (st, p, _) = s.post("/v1/customers/P1/totp", Some("auth"), &json!({})).await;
        assert_eq!((st, code(&p)), (403, Some("stepup_required")), "{p}");
        let (st, p) = s.passkey_options("P1", None).await;
        assert_eq!((st, code(&p)), (403, Some("stepup_required")), "{p}");
        let for_totp = s.mfa_token(&mut phone, json!({"add": "totp"})).await;
        let (st, p) = s.passkey_options("P1", Some(&for_totp)).await;
        assert_eq!((st, code(&p)), (403, Some("other_parameters")), "{p}");
        let for_key = s.mfa_token(&mut phone, json!({"add": "passkey"})).await;
        let (st, started) = s.passkey_options("P1", Some(&for_key)).await;
        assert_eq!(st, 200, "{started}");
        let mut key = device();
        let (st, p, _) = s.passkey_finish("P1", &mut key, &started, "").await;
        assert_eq!(st, 422, "a name is required: {p}");
        let (st, r, _) = s.passkey_finish("P1", &mut key, &started, "YubiKey").await;
        assert_eq!(st, 201, "the bad name did not use the ceremony up: {r}");
        let key_id = r["credential_id"].as_str().unwrap().to_owned();
        // The token did its work once.
        let (st, p) = s.passkey_options("P1", Some(&for_key)).await;
        assert_eq!((st, code(&p)), (403, Some("used")), "{p}");
        // The authenticator app, with its own step-up.
        let (st, e, _) = s.post("/v1/customers/P1/totp", Some("auth"), &json!({"stepup_token": for_totp})).await;
        assert_eq!(st, 201, "{e}");
        let app = totp_rs::TOTP::from_url(e["uri"].as_str().unwrap()).unwrap();
        let (st, r, _) = s.post("/v1/customers/P1/totp/confirm", Some("auth"), &json!({"code": app.generate(now)})).await;
        assert_eq!(st, 200, "{r}");

        // Removal by the customer: with a step-up for exactly that passkey.
        let del = |id: &str| format!("/v1/customers/P1/passkeys/{id}");
        let (st, _, _) = s.delete(&del(&phone_id), Some("auth"), &json!({})).await;
        assert_eq!(st, 422);
        let (st, p, _) = s.delete(&del(&phone_id), Some("auth"), &json!({"stepup_token": for_totp})).await;
        assert_eq!((st, code(&p)), (403, Some("used")), "{p}");
        let wrong = s.mfa_token(&mut key, json!({"remove": key_id})).await;
        let (st, p, _) = s.delete(&del(&phone_id), Some("auth"), &json!({"stepup_token": wrong})).await;
        assert_eq!((st, code(&p)), (403, Some("other_parameters")), "{p}");
        let right = s.mfa_token(&mut key, json!({"remove": phone_id})).await;
        let (st, p, _) = s.delete(&del(&phone_id), Some("auth"), &json!({"stepup_token": right})).await;
        assert_eq!(st, 204, "{p}");
        let (st, _, _) = s.delete(&del(&phone_id), Some("auth"), &json!({"stepup_token": right})).await;
        assert_eq!(st, 404);
        // The removed passkey no longer answers.
        let (_, c, _) = s.post("/v1/customers/P1/passkeys/challenge", Some("auth"), &json!({})).await;
        let options: RequestChallengeResponse = serde_json::from_value(c["options"].clone()).unwrap();
        assert!(phone.do_authentication(Url::parse(ORIGIN).unwrap(), options).is_err(), "not offered");
        // By staff: admin scope, with a reason.
        let by_staff = json!({"staff": "ito", "reason": "lost the key, ticket 4711"});
        let (st, _, _) = s.delete(&del(&key_id), Some("auth"), &by_staff).await;
        assert_eq!(st, 403, "an auth key is not staff");
        let (st, p, _) = s.delete(&del(&key_id), Some("staff"), &json!({"staff": "ito", "reason": "x"})).await;
        assert_eq!(st, 422, "{p}");
        let (st, p, _) = s.delete(&del(&key_id), Some("staff"), &by_staff).await;
        assert_eq!(st, 204, "{p}");
        let (_, list, _) = s.get("/v1/customers/P1/passkeys", Some("auth")).await;
        assert_eq!(list["passkeys"], json!([]), "{list}");
        // The authenticator app, removed by the customer with a step-up from it.
        let (_, t, _) = s.post("/v1/customers/P1/stepup", Some("auth"),
            &json!({"operation": "mfa_change", "params": {"remove": "totp"}, "code": app.generate(now + 30)})).await;
        let (st, p, _) = s.delete("/v1/customers/P1/totp", Some("auth"), &json!({"stepup_token": t["token"]})).await;
        assert_eq!(st, 204, "{t} {p}");

        // The audit log: each enrolment and removal, who did it, and the step-ups.
        let (_, a, _) = s.get("/v1/audit?from=1&limit=1000", Some("staff")).await;
        let entries = a["entries"].as_array().unwrap();
        let changes: Vec<(String, Value)> = entries.iter().filter(|e| e["action"] == "credential.change")
            .map(|e| (e["actor"].as_str().unwrap().to_owned(), serde_json::from_str(e["detail"].as_str().unwrap()).unwrap()))
            .collect();
        let find = |actor: &str, credential: &str, change: &str, id: &str| changes.iter().any(|(who, d)| {
            who.starts_with(actor) && d["credential"] == credential && d["change"] == change
                && (id.is_empty() || d["credential_id"] == id)
        });
        assert!(find("apikey:", "passkey", "enrolled", &phone_id), "{changes:?}");
        assert!(find("apikey:", "passkey", "enrolled", &key_id), "{changes:?}");
        assert!(find("customer:P1", "passkey", "removed", &phone_id), "{changes:?}");
        assert!(find("staff:ito", "passkey", "removed", &key_id), "{changes:?}");
        assert!(find("customer:P1", "totp", "removed", ""), "{changes:?}");
        let stepups = entries.iter().filter(|e| e["action"] == "stepup.issue"
            && e["detail"].as_str().unwrap().contains("\"passkey\"")).count();
        assert_eq!(stepups, 5, "{a}");
        let (_, v, _) = s.get("/v1/audit/verify", Some("staff")).await;
        assert_eq!(v["intact"], true, "{v}");
        server.stop().await;
    });
}
