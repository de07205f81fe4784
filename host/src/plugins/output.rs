//! Host rules on what a plugin may return, checked by the runtime so every
//! caller gets them: size caps, forbidden or malformed headers.

use super::types::{Outcome, PluginError, PluginErrorKind};

/// Headers a plugin may not set: the transport's own, and the signature
/// headers the host adds after the plugin ran.
fn forbidden(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    matches!(
        n.as_str(),
        "host" | "content-length" | "transfer-encoding" | "connection"
    ) || n.starts_with("webhook-")
        || n.starts_with("keygen-")
}

fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn valid_value(value: &str) -> Result<(), String> {
    for b in value.bytes() {
        match b {
            b'\r' | b'\n' | 0 => {
                return Err("contains CR, LF or NUL".into());
            }
            b'\t' => {}
            0x01..=0x1f | 0x7f => return Err(format!("contains control byte 0x{b:02x}")),
            _ => {}
        }
    }
    Ok(())
}

pub(crate) fn validate(
    plugin: &str,
    outcome: &Outcome,
    max_output: usize,
) -> Result<(), PluginError> {
    let invalid = |m: String| PluginError::new(plugin, PluginErrorKind::InvalidOutput, m);
    match outcome {
        Outcome::Pass | Outcome::Skip(_) => Ok(()),
        Outcome::Rewrite(payload) if payload.len() > max_output => Err(invalid(format!(
            "rewritten payload is {} bytes, over the {max_output}-byte limit",
            payload.len()
        ))),
        Outcome::Rewrite(_) => Ok(()),
        Outcome::Replace {
            body,
            content_type,
            headers,
        } => {
            if body.len() > max_output {
                return Err(invalid(format!(
                    "replacement body is {} bytes, over the {max_output}-byte limit",
                    body.len()
                )));
            }
            if content_type.trim().is_empty() {
                return Err(invalid("content type is empty".into()));
            }
            valid_value(content_type)
                .map_err(|why| invalid(format!("content type {content_type:?} {why}")))?;
            for (name, value) in headers {
                if name.is_empty() || !name.bytes().all(is_token_char) {
                    return Err(invalid(format!(
                        "header name {name:?} is not a valid HTTP header name"
                    )));
                }
                if forbidden(name) {
                    return Err(invalid(format!(
                        "header {name:?} is reserved for the host (host, content-length, \
                         transfer-encoding, connection, webhook-*, keygen-* are refused)"
                    )));
                }
                valid_value(value)
                    .map_err(|why| invalid(format!("value of header {name:?} {why}")))?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replace(headers: &[(&str, &str)]) -> Outcome {
        Outcome::Replace {
            body: b"{}".to_vec(),
            content_type: "application/json".into(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn rules() {
        assert!(validate("p", &replace(&[("Authorization", "Basic eDo=")]), 100).is_ok());
        for bad in [
            ("Host", "x"),
            ("Content-Length", "1"),
            ("Webhook-Signature", "x"),
            ("KEYGEN-SIGNATURE", "x"),
            ("bad name", "x"),
            ("x-a", "a\r\nb: c"),
            ("x-a", "a\0"),
            ("", "x"),
        ] {
            let e = validate("p", &replace(&[bad]), 100).unwrap_err();
            assert_eq!(e.kind, PluginErrorKind::InvalidOutput, "{bad:?}");
        }
        assert!(validate("p", &Outcome::Rewrite(vec![0; 101]), 100).is_err());
    }
}
