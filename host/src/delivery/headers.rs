//! The headers of a delivery request: content type and the plugin's
//! headers, `webhook-id`, and the signatures the endpoint asks for
//! (Standard Webhooks, Keygen).

use http::header::{HeaderName, HeaderValue};
use uuid::Uuid;

use super::*;
use crate::registry::LiveEndpoint;
use crate::signing;
use crate::store::StoredOutput;

impl Dispatcher {
    pub(super) fn headers(
        &self,
        live: &LiveEndpoint,
        delivery_id: Uuid,
        out: &StoredOutput,
        now: i64,
    ) -> Result<http::HeaderMap, String> {
        let mut h = http::HeaderMap::new();
        let ct = HeaderValue::from_str(&out.content_type)
            .map_err(|_| "invalid content type from plugin".to_string())?;
        h.insert(http::header::CONTENT_TYPE, ct);
        h.insert(
            http::header::USER_AGENT,
            HeaderValue::from_static(sender::USER_AGENT),
        );
        for (k, v) in &out.headers {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| format!("invalid header name {k:?} from plugin"))?;
            let value = HeaderValue::from_str(v)
                .map_err(|_| format!("invalid value for header {k:?} from plugin"))?;
            h.append(name, value);
        }
        let id = delivery_id.to_string();
        let ts = now / 1000;
        // The receivers' dedupe key: sent whatever the signature schemes,
        // even with none.
        h.insert(
            "webhook-id",
            HeaderValue::from_str(&id).map_err(|e| e.to_string())?,
        );
        if live.spec.standard_signature {
            let sig = signing::standard_signature(&live.spec.secrets, now, &id, ts, &out.body);
            h.insert("webhook-timestamp", HeaderValue::from(ts));
            h.insert(
                "webhook-signature",
                HeaderValue::from_str(&sig).map_err(|e| e.to_string())?,
            );
        }
        if live.spec.keygen_signature {
            let snap = self.inner.registry.snapshot();
            let key = snap
                .account(&live.spec.account)
                .and_then(|a| a.keygen_key.clone())
                .ok_or("the account has no keygen_signing_key")?;
            let host = live
                .uri
                .authority()
                .map(|a| a.as_str().to_string())
                .unwrap_or_default();
            let path = live
                .uri
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_else(|| "/".into());
            let date = httpdate::fmt_http_date(std::time::SystemTime::now());
            let k = signing::keygen_sign(&key, &live.spec.account, &host, &path, &date, &out.body);
            h.insert(
                http::header::DATE,
                HeaderValue::from_str(&k.date).map_err(|e| e.to_string())?,
            );
            h.insert(
                "digest",
                HeaderValue::from_str(&k.digest).map_err(|e| e.to_string())?,
            );
            h.insert(
                "keygen-signature",
                HeaderValue::from_str(&k.signature).map_err(|e| e.to_string())?,
            );
        }
        Ok(h)
    }
}
