//! The observe request as `mixopt online` reads it, and what the state
//! remembers to recognize a retried one (see `service.rs`).

use super::service::MAX_REMEMBERED_IDS;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, VecDeque};

/// What the state remembers to recognize a retried request (the state
/// file's `last_request` and `recent_request_ids`).
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Applied {
    pub(super) last_request: Option<String>,
    pub(super) recent_request_ids: VecDeque<String>,
}

impl Applied {
    pub(super) fn is_replay(&self, digest: &str, request_id: Option<&str>) -> bool {
        match request_id {
            Some(id) => self.recent_request_ids.iter().any(|r| r == id),
            None => self.last_request.as_deref() == Some(digest),
        }
    }

    pub(super) fn after(&self, digest: String, request_id: Option<String>) -> Applied {
        let mut next = self.clone();
        next.last_request = Some(digest);
        if let Some(id) = request_id {
            next.recent_request_ids.push_back(id);
            while next.recent_request_ids.len() > MAX_REMEMBERED_IDS {
                next.recent_request_ids.pop_front();
            }
        }
        next
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Request {
    pub(super) step: u64,
    pub(super) losses: UniqueMap,
    #[serde(default)]
    pub(super) tokens: UniqueMap,
    /// Names this request for retries (any string up to 128 bytes, unique
    /// per request: e.g. the step and the rank).
    #[serde(default)]
    pub(super) request_id: Option<String>,
}

/// A JSON object of domain → number-or-null that refuses a key given twice
/// (serde_json's maps keep the last one silently).
#[derive(Debug, Default)]
pub(super) struct UniqueMap(pub(super) BTreeMap<String, Option<f64>>);

impl<'de> Deserialize<'de> for UniqueMap {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = UniqueMap;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of domain name to number or null")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<UniqueMap, A::Error> {
                let mut out = BTreeMap::new();
                while let Some((k, v)) = map.next_entry::<String, Option<f64>>()? {
                    if out.contains_key(&k) {
                        return Err(serde::de::Error::custom(format!(
                            "domain {k:?} given twice"
                        )));
                    }
                    out.insert(k, v);
                }
                Ok(UniqueMap(out))
            }
        }
        d.deserialize_map(Visit)
    }
}

/// sha256 over a request's step, losses and tokens (in domain order; f64s
/// by their bits), the fingerprint a retry is recognized by.
pub(super) fn request_digest(step: u64, losses: &[Option<f64>], tokens: &[Option<f64>]) -> String {
    let mut h = Sha256::new();
    h.update(step.to_le_bytes());
    for v in losses.iter().chain(tokens) {
        match v {
            Some(x) => {
                h.update([1u8]);
                h.update(x.to_bits().to_le_bytes());
            }
            None => h.update([0u8]),
        }
    }
    hex::encode(&h.finalize()[..16])
}
