//! Request signing: Standard Webhooks v1 (HMAC-SHA256 over
//! `{id}.{timestamp}.{body}`, secrets `whsec_<base64>`, several signatures
//! during rotation) and Keygen's own scheme (draft-cavage HTTP signature,
//! ed25519 over `(request-target) host date digest`). Verification helpers
//! (constant time) serve `switchyard listen` and the tests.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// One Standard Webhooks secret, with an optional end of validity (during
/// rotation the old secret keeps signing until then).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Secret {
    /// The decoded key bytes.
    pub key: Vec<u8>,
    /// Unix ms after which this secret no longer signs; `None` = no end.
    pub expires_ms: Option<i64>,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Secret(<{} bytes>, expires {:?})",
            self.key.len(),
            self.expires_ms
        )
    }
}

impl Secret {
    /// Parses `whsec_<base64>` (24–64 bytes once decoded).
    pub fn parse(s: &str) -> Result<Secret, String> {
        let b64 = s.strip_prefix("whsec_").ok_or_else(|| {
            "a Standard Webhooks secret starts with \"whsec_\" followed by base64 (generate one with `switchyard keys secret`)".to_string()
        })?;
        let key = B64
            .decode(b64)
            .map_err(|e| format!("the part after whsec_ is not base64: {e}"))?;
        if !(24..=64).contains(&key.len()) {
            return Err(format!(
                "a secret must decode to 24 to 64 bytes, this one has {}",
                key.len()
            ));
        }
        Ok(Secret {
            key,
            expires_ms: None,
        })
    }

    /// A new random secret.
    pub fn generate() -> Secret {
        use rand::RngCore;
        let mut key = vec![0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        Secret {
            key,
            expires_ms: None,
        }
    }

    /// The `whsec_…` form.
    pub fn encode(&self) -> String {
        format!("whsec_{}", B64.encode(&self.key))
    }
}

/// The secrets an endpoint signs with: the newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretSet(pub Vec<Secret>);

impl SecretSet {
    pub fn parse(list: &[String]) -> Result<SecretSet, String> {
        list.iter()
            .map(|s| Secret::parse(s))
            .collect::<Result<Vec<_>, _>>()
            .map(SecretSet)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Secrets still valid at `now_ms`.
    pub fn active(&self, now_ms: i64) -> impl Iterator<Item = &Secret> {
        self.0
            .iter()
            .filter(move |s| s.expires_ms.is_none_or(|e| now_ms < e))
    }
}

/// `webhook-signature` value: `v1,<base64>` for each active secret,
/// space-separated.
pub fn standard_signature(
    secrets: &SecretSet,
    now_ms: i64,
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    let mut out = String::new();
    for s in secrets.active(now_ms) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str("v1,");
        out.push_str(&B64.encode(hmac_sign(&s.key, msg_id, timestamp, body)));
    }
    out
}

fn hmac_sign(key: &[u8], msg_id: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length.
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().to_vec()
}

/// Verifies a `webhook-signature` header against one secret, in constant
/// time per candidate; the timestamp must be within `tolerance_s` of `now_s`.
pub fn verify_standard(
    secret: &Secret,
    msg_id: &str,
    timestamp: &str,
    signature_header: &str,
    body: &[u8],
    now_s: i64,
    tolerance_s: i64,
) -> Result<(), String> {
    let ts: i64 = timestamp
        .parse()
        .map_err(|_| "webhook-timestamp is not a number".to_string())?;
    if (now_s - ts).abs() > tolerance_s {
        return Err("webhook-timestamp is too far from now".into());
    }
    let mut mac = HmacSha256::new_from_slice(&secret.key).expect("HMAC takes any key length");
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    for candidate in signature_header.split(' ') {
        let Some(b64) = candidate.strip_prefix("v1,") else {
            continue;
        };
        let Ok(sig) = B64.decode(b64) else { continue };
        if mac.clone().verify_slice(&sig).is_ok() {
            return Ok(());
        }
    }
    Err("no v1 signature matches".into())
}

/// An account's Keygen ed25519 signing key.
#[derive(Clone)]
pub struct KeygenKey(SigningKey);

impl std::fmt::Debug for KeygenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeygenKey(public {})", self.public_hex())
    }
}

impl KeygenKey {
    /// From 64 hex characters: the 32-byte private key seed.
    pub fn from_hex(s: &str) -> Result<KeygenKey, String> {
        let bytes = hex::decode(s.trim()).map_err(|e| format!("not hex: {e}"))?;
        let seed: [u8; 32] = bytes
            .try_into()
            .map_err(|_| "must be 64 hex characters (a 32-byte ed25519 seed)".to_string())?;
        Ok(KeygenKey(SigningKey::from_bytes(&seed)))
    }

    pub fn generate() -> KeygenKey {
        KeygenKey(SigningKey::generate(&mut rand::rngs::OsRng))
    }

    pub fn seed_hex(&self) -> String {
        hex::encode(self.0.to_bytes())
    }

    /// The verify key receivers configure, as hex (Keygen's format).
    pub fn public_hex(&self) -> String {
        hex::encode(self.0.verifying_key().to_bytes())
    }
}

/// The headers of Keygen's signature scheme for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeygenHeaders {
    pub date: String,
    pub digest: String,
    pub signature: String,
}

/// `Digest` header value: `sha-256=<base64 sha256(body)>`.
pub fn digest_header(body: &[u8]) -> String {
    format!("sha-256={}", B64.encode(Sha256::digest(body)))
}

fn keygen_signing_string(path: &str, host: &str, date: &str, digest: &str) -> String {
    format!("(request-target): post {path}\nhost: {host}\ndate: {date}\ndigest: {digest}")
}

/// Signs a POST to `host` + `path` (path with query, as sent) the way Keygen
/// does.
pub fn keygen_sign(
    key: &KeygenKey,
    account: &str,
    host: &str,
    path: &str,
    date: &str,
    body: &[u8],
) -> KeygenHeaders {
    let digest = digest_header(body);
    let signing = keygen_signing_string(path, host, date, &digest);
    let sig = key.0.sign(signing.as_bytes());
    KeygenHeaders {
        date: date.to_string(),
        signature: format!(
            "keyid=\"{account}\", algorithm=\"ed25519\", signature=\"{}\", headers=\"(request-target) host date digest\"",
            B64.encode(sig.to_bytes())
        ),
        digest,
    }
}

/// Verifies a Keygen-Signature header with the hex verify key, as Keygen's
/// example handler does (digest checked against the body too).
pub fn verify_keygen(
    public_hex: &str,
    signature_header: &str,
    host: &str,
    path: &str,
    date: &str,
    digest: &str,
    body: &[u8],
) -> Result<(), String> {
    if digest != digest_header(body) {
        return Err("Digest does not match the body".into());
    }
    let sig_b64 = signature_header
        .split(',')
        .map(str::trim)
        .find_map(|part| part.strip_prefix("signature=\""))
        .and_then(|s| s.strip_suffix('"'))
        .ok_or("Keygen-Signature has no signature=\"…\"")?;
    let sig = B64
        .decode(sig_b64)
        .map_err(|e| format!("signature is not base64: {e}"))?;
    let sig = ed25519_dalek::Signature::from_slice(&sig).map_err(|e| e.to_string())?;
    let pk: [u8; 32] = hex::decode(public_hex)
        .map_err(|e| e.to_string())?
        .try_into()
        .map_err(|_| "verify key must be 32 bytes")?;
    let vk = VerifyingKey::from_bytes(&pk).map_err(|e| e.to_string())?;
    let signing = keygen_signing_string(path, host, date, digest);
    vk.verify(signing.as_bytes(), &sig)
        .map_err(|_| "signature does not verify".to_string())
}

/// A Keygen account's ed25519 verify key (the public half), as Keygen's
/// dashboard shows it: 64 hex characters.
#[derive(Clone, PartialEq, Eq)]
pub struct KeygenVerifyKey(VerifyingKey);

impl std::fmt::Debug for KeygenVerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeygenVerifyKey({})", hex::encode(self.0.to_bytes()))
    }
}

impl KeygenVerifyKey {
    pub fn from_hex(s: &str) -> Result<KeygenVerifyKey, String> {
        let bytes = hex::decode(s.trim()).map_err(|e| format!("not hex: {e}"))?;
        let pk: [u8; 32] = bytes.try_into().map_err(|_| {
            "must be 64 hex characters (Keygen's ed25519 verify key, from its dashboard)"
                .to_string()
        })?;
        VerifyingKey::from_bytes(&pk)
            .map(KeygenVerifyKey)
            .map_err(|_| "is not an ed25519 public key".to_string())
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0.to_bytes())
    }
}

/// What a request to the Keygen source carried, as received.
#[derive(Debug, Clone, Copy)]
pub struct KeygenRequest<'a> {
    /// Lower-cased into the signing string.
    pub method: &'a str,
    /// The request target: path and query exactly as received.
    pub target: &'a str,
    /// The `Host` header, or the operator's configured external host.
    pub host: &'a str,
    pub date: Option<&'a str>,
    pub digest: Option<&'a str>,
    pub signature: Option<&'a str>,
    pub body: &'a [u8],
}

/// Why a Keygen-signed request was refused (each answered 401, naming it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeygenRejection {
    /// `Date`, `Digest` or `Keygen-Signature` is missing.
    MissingHeader(&'static str),
    /// `Keygen-Signature` cannot be read, or signs something else.
    MalformedSignature(String),
    /// `keyid` is not the configured Keygen account.
    UnknownKeyId(String),
    DigestMismatch,
    BadSignature,
    /// `Date` is not an HTTP date.
    BadDate,
    /// `Date` is further from now than the window (a replay, or a clock off).
    DateOutsideWindow {
        skew_s: i64,
        window_s: i64,
    },
}

impl KeygenRejection {
    /// A stable code for the JSON:API error.
    pub fn code(&self) -> &'static str {
        match self {
            KeygenRejection::MissingHeader(_) => "SIGNATURE_HEADER_MISSING",
            KeygenRejection::MalformedSignature(_) => "SIGNATURE_MALFORMED",
            KeygenRejection::UnknownKeyId(_) => "SIGNATURE_KEYID_UNKNOWN",
            KeygenRejection::DigestMismatch => "DIGEST_MISMATCH",
            KeygenRejection::BadSignature => "SIGNATURE_INVALID",
            KeygenRejection::BadDate => "DATE_INVALID",
            KeygenRejection::DateOutsideWindow { .. } => "DATE_OUTSIDE_WINDOW",
        }
    }
}

impl std::fmt::Display for KeygenRejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeygenRejection::MissingHeader(h) => write!(
                f,
                "the {h} header is missing; Keygen signs every delivery with Date, Digest and Keygen-Signature"
            ),
            KeygenRejection::MalformedSignature(why) => {
                write!(f, "Keygen-Signature cannot be used: {why}")
            }
            KeygenRejection::UnknownKeyId(k) => write!(
                f,
                "keyid {k:?} is not the Keygen account configured for this account (keygen_account_id)"
            ),
            KeygenRejection::DigestMismatch => {
                write!(f, "the Digest header does not match the body (sha-256)")
            }
            KeygenRejection::BadSignature => write!(
                f,
                "the signature does not verify with any configured keygen_verify_key (check the key, and that the URL registered in Keygen is the one requested)"
            ),
            KeygenRejection::BadDate => write!(
                f,
                "the Date header is not an HTTP date such as \"Wed, 09 Jun 2021 16:08:15 GMT\""
            ),
            KeygenRejection::DateOutsideWindow { skew_s, window_s } => write!(
                f,
                "the Date header is {skew_s} s from now, outside the {window_s} s window (a replayed request, or a clock that is off)"
            ),
        }
    }
}

/// The `Keygen-Signature` parameters: `name="value"` pairs, comma separated.
fn signature_params(header: &str) -> Result<Vec<(&str, &str)>, String> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for part in header.split(',') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let (name, value) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?} is not name=\"value\""))?;
        let name = name.trim();
        let value = value
            .trim()
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .ok_or_else(|| format!("the value of {name} is not quoted"))?;
        if out.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) {
            return Err(format!("{name} is given twice"));
        }
        out.push((name, value));
    }
    Ok(out)
}

/// Verifies a request signed the way Keygen signs its webhook deliveries:
/// the headers are there, the signature covers exactly `(request-target)
/// host date digest` with ed25519, `keyid` is the pinned Keygen account (if
/// any), `Digest` matches the body, the signature verifies with one of
/// `keys` over the signing string rebuilt from the request, and `Date` is
/// within `window_ms` of `now_ms`. Returns the `keyid`.
pub fn verify_keygen_request(
    req: &KeygenRequest<'_>,
    keys: &[KeygenVerifyKey],
    keyid_expected: Option<&str>,
    now_ms: i64,
    window_ms: i64,
) -> Result<String, KeygenRejection> {
    use subtle::ConstantTimeEq;
    let date = req.date.ok_or(KeygenRejection::MissingHeader("Date"))?;
    let digest = req.digest.ok_or(KeygenRejection::MissingHeader("Digest"))?;
    let header = req
        .signature
        .ok_or(KeygenRejection::MissingHeader("Keygen-Signature"))?;
    let params = signature_params(header).map_err(KeygenRejection::MalformedSignature)?;
    let param = |name: &str| {
        params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    };
    let keyid =
        param("keyid").ok_or_else(|| KeygenRejection::MalformedSignature("no keyid".into()))?;
    match param("algorithm") {
        Some(a) if a.eq_ignore_ascii_case("ed25519") => {}
        Some(a) => {
            return Err(KeygenRejection::MalformedSignature(format!(
                "algorithm {a:?} is not \"ed25519\""
            )));
        }
        None => return Err(KeygenRejection::MalformedSignature("no algorithm".into())),
    }
    match param("headers") {
        Some(h)
            if h.split_whitespace().collect::<Vec<_>>()
                == ["(request-target)", "host", "date", "digest"] => {}
        other => {
            return Err(KeygenRejection::MalformedSignature(format!(
                "headers {:?} is not \"(request-target) host date digest\"",
                other.unwrap_or("")
            )));
        }
    }
    let sig_b64 = param("signature")
        .ok_or_else(|| KeygenRejection::MalformedSignature("no signature".into()))?;
    if let Some(expected) = keyid_expected {
        if expected != keyid {
            return Err(KeygenRejection::UnknownKeyId(keyid.to_string()));
        }
    }
    // The digest: computed from the body, compared in constant time.
    let ours = digest_header(req.body);
    let (alg, value) = digest
        .split_once('=')
        .ok_or(KeygenRejection::DigestMismatch)?;
    let theirs_ok: bool = alg.eq_ignore_ascii_case("sha-256")
        && value
            .as_bytes()
            .ct_eq(&ours.as_bytes()["sha-256=".len()..])
            .into();
    if !theirs_ok {
        return Err(KeygenRejection::DigestMismatch);
    }
    let sig = B64
        .decode(sig_b64)
        .ok()
        .and_then(|b| ed25519_dalek::Signature::from_slice(&b).ok())
        .ok_or_else(|| {
            KeygenRejection::MalformedSignature(
                "signature is not a base64 ed25519 signature".into(),
            )
        })?;
    let signing = format!(
        "(request-target): {} {}\nhost: {}\ndate: {date}\ndigest: {digest}",
        req.method.to_ascii_lowercase(),
        req.target,
        req.host
    );
    if !keys
        .iter()
        .any(|k| k.0.verify_strict(signing.as_bytes(), &sig).is_ok())
    {
        return Err(KeygenRejection::BadSignature);
    }
    let at = httpdate::parse_http_date(date).map_err(|_| KeygenRejection::BadDate)?;
    let at_ms = match at.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(_) => return Err(KeygenRejection::BadDate),
    };
    let skew = now_ms - at_ms;
    if skew.abs() > window_ms {
        return Err(KeygenRejection::DateOutsideWindow {
            skew_s: skew / 1000,
            window_s: window_ms / 1000,
        });
    }
    Ok(keyid.to_string())
}

/// Compares two secrets (tokens) in constant time, whatever their lengths:
/// both sides are hashed first so neither the length nor a common prefix
/// shows in the timing.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    let ha = Sha256::digest(a.as_bytes());
    let hb = Sha256::digest(b.as_bytes());
    ha.ct_eq(&hb).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_webhooks_published_vector() {
        let secret = SecretSet::parse(&["whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD".into()]).unwrap();
        let sig = standard_signature(
            &secret,
            0,
            "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            1649367553,
            br#"{"email":"test@example.com","username":"test_user"}"#,
        );
        assert_eq!(sig, "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=");
        verify_standard(
            &secret.0[0],
            "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            "1649367553",
            &sig,
            br#"{"email":"test@example.com","username":"test_user"}"#,
            1649367553,
            300,
        )
        .unwrap();
    }

    #[test]
    fn rotation_signs_with_every_active_secret() {
        let mut set = SecretSet(vec![Secret::generate(), Secret::generate()]);
        set.0[1].expires_ms = Some(1000);
        let both = standard_signature(&set, 999, "id", 1, b"x");
        assert_eq!(both.split(' ').count(), 2);
        for s in &set.0 {
            verify_standard(s, "id", "1", &both, b"x", 1, 300).unwrap();
        }
        let one = standard_signature(&set, 1000, "id", 1, b"x");
        assert_eq!(one.split(' ').count(), 1);
        assert!(verify_standard(&set.0[1], "id", "1", &one, b"x", 1, 300).is_err());
    }

    #[test]
    fn rejects_bad_secrets_and_stale_timestamps() {
        assert!(Secret::parse("C2FVsBQIhrscChlQIMV").is_err());
        assert!(Secret::parse("whsec_short").is_err());
        let s = Secret::generate();
        let sig = standard_signature(&SecretSet(vec![s.clone()]), 0, "id", 1000, b"x");
        assert!(verify_standard(&s, "id", "1000", &sig, b"x", 2000, 300).is_err());
        assert!(verify_standard(&s, "id", "1000", &sig, b"y", 1000, 300).is_err());
    }

    #[test]
    fn keygen_round_trip() {
        let key = KeygenKey::generate();
        let body = br#"{"data":{}}"#;
        let date = "Wed, 09 Jun 2021 16:08:15 GMT";
        let h = keygen_sign(&key, "acct", "example.com", "/hooks", date, body);
        assert!(
            h.signature
                .starts_with("keyid=\"acct\", algorithm=\"ed25519\"")
        );
        verify_keygen(
            &key.public_hex(),
            &h.signature,
            "example.com",
            "/hooks",
            date,
            &h.digest,
            body,
        )
        .unwrap();
        assert!(
            verify_keygen(
                &key.public_hex(),
                &h.signature,
                "example.com",
                "/other",
                date,
                &h.digest,
                body
            )
            .is_err()
        );
        let again = KeygenKey::from_hex(&key.seed_hex()).unwrap();
        assert_eq!(again.public_hex(), key.public_hex());
    }

    #[test]
    fn keygen_requests_are_verified_in_full() {
        let key = KeygenKey::generate();
        let other = KeygenKey::generate();
        let keys = vec![
            KeygenVerifyKey::from_hex(&other.public_hex()).unwrap(),
            KeygenVerifyKey::from_hex(&key.public_hex()).unwrap(),
        ];
        let body = br#"{"data":{}}"#;
        let now = 1_700_000_000_000i64;
        let date = httpdate::fmt_http_date(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(now as u64),
        );
        let h = keygen_sign(
            &key,
            "kg-acct",
            "hooks.example.com",
            "/v1/accounts/a/sources/keygen",
            &date,
            body,
        );
        let req = KeygenRequest {
            method: "POST",
            target: "/v1/accounts/a/sources/keygen",
            host: "hooks.example.com",
            date: Some(&h.date),
            digest: Some(&h.digest),
            signature: Some(&h.signature),
            body,
        };
        let ok =
            |r: &KeygenRequest<'_>| verify_keygen_request(r, &keys, Some("kg-acct"), now, 300_000);
        assert_eq!(ok(&req).unwrap(), "kg-acct");
        // Rotation: either key verifies; no key does not.
        assert_eq!(
            verify_keygen_request(&req, &keys[..1], None, now, 300_000),
            Err(KeygenRejection::BadSignature)
        );
        let code = |r: KeygenRequest<'_>| ok(&r).unwrap_err().code();
        assert_eq!(
            code(KeygenRequest { date: None, ..req }),
            "SIGNATURE_HEADER_MISSING"
        );
        assert_eq!(
            code(KeygenRequest {
                digest: None,
                ..req
            }),
            "SIGNATURE_HEADER_MISSING"
        );
        assert_eq!(
            code(KeygenRequest {
                signature: None,
                ..req
            }),
            "SIGNATURE_HEADER_MISSING"
        );
        assert_eq!(
            code(KeygenRequest { body: b"{}", ..req }),
            "DIGEST_MISMATCH"
        );
        assert_eq!(
            code(KeygenRequest {
                host: "evil.example",
                ..req
            }),
            "SIGNATURE_INVALID"
        );
        assert_eq!(
            code(KeygenRequest {
                target: "/v1/accounts/b/sources/keygen",
                ..req
            }),
            "SIGNATURE_INVALID"
        );
        assert_eq!(
            code(KeygenRequest {
                signature: Some("nonsense"),
                ..req
            }),
            "SIGNATURE_MALFORMED"
        );
        let sha1 = h.signature.replace("ed25519", "rsa-sha256");
        assert_eq!(
            code(KeygenRequest {
                signature: Some(&sha1),
                ..req
            }),
            "SIGNATURE_MALFORMED"
        );
        let fewer = h.signature.replace(" digest\"", "\"");
        assert_eq!(
            code(KeygenRequest {
                signature: Some(&fewer),
                ..req
            }),
            "SIGNATURE_MALFORMED"
        );
        assert_eq!(
            verify_keygen_request(&req, &keys, Some("another"), now, 300_000)
                .unwrap_err()
                .code(),
            "SIGNATURE_KEYID_UNKNOWN"
        );
        // A genuine request replayed later, or from a clock far ahead.
        for skew in [300_001, -300_001] {
            assert_eq!(
                verify_keygen_request(&req, &keys, None, now + skew, 300_000)
                    .unwrap_err()
                    .code(),
                "DATE_OUTSIDE_WINDOW"
            );
        }
        assert!(verify_keygen_request(&req, &keys, None, now + 299_000, 300_000).is_ok());
        assert!(KeygenVerifyKey::from_hex("abcd").is_err());
    }

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq("abc", "abc"));
        assert!(!constant_time_eq("abc", "abd"));
        assert!(!constant_time_eq("abc", "abcd"));
    }
}
