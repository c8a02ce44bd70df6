//! A policy behind a request/response surface with persisted state: what
//! `mixopt online` serves over JSON lines and HTTP.
//!
//! Request: `{"step": 120, "losses": {"web": 2.91, …}, "tokens": {"web": 1.2e6, …}}`
//! (`tokens` optional except for ADO; a domain left out or `null` was not
//! observed). Response: `{"step":120,"weights":{…},"updated":true,"request":"training"}`
//! where `request` says which losses the policy wants next. A request is
//! validated completely and applied to a copy of the policy; only after the
//! new state is on disk (write-then-rename) does the copy replace the policy,
//! so a bad request or a failed write leaves both memory and file untouched.
//!
//! Retries are idempotent: the state remembers the last applied request (a
//! digest of its step, losses and tokens) and the ids of recent requests that
//! carried a `request_id`. A request equal to the last one, or whose id was
//! seen, is answered with the current weights (`"replayed": true`) and changes
//! nothing — so a trainer that re-sends after losing a reply (the server died
//! between saving and answering) does not update the policy twice.
//!
//! One process per state file: `open` locks `STATE.lock`; a second server on
//! the same state is refused instead of overwriting the first one's updates.

use super::{restore, Observation, OnlinePolicy, PolicyKind, PolicySpec};
use crate::error::{Error, Result};
use crate::mixture::write_atomic;
use crate::store::fsio::{lock_exclusive, lock_path_for, FileLock};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Bumped when the state file's meaning changes (2: retry bookkeeping;
/// version 1 files are read as having none).
pub const STATE_FORMAT_VERSION: u32 = 2;
/// Request ids remembered for replay detection.
pub const MAX_REMEMBERED_IDS: usize = 1024;
/// Longest accepted `request_id`.
pub const MAX_REQUEST_ID_BYTES: usize = 128;

/// The persisted state file.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    format_version: u32,
    mixopt_version: String,
    policy: PolicyKind,
    domains: Vec<String>,
    last_step: Option<u64>,
    n_updates: u64,
    /// The current sampling weights (for people; the policy state is authoritative).
    weights: BTreeMap<String, f64>,
    state: serde_json::Value,
    /// sha256 of the last applied request's step, losses and tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_request: Option<String>,
    /// `request_id`s of the most recent requests that carried one, oldest first.
    #[serde(default, skip_serializing_if = "VecDeque::is_empty")]
    recent_request_ids: VecDeque<String>,
}

/// What the state remembers to recognize a retried request (the state
/// file's `last_request` and `recent_request_ids`).
#[derive(Debug, Clone, Default, PartialEq)]
struct Applied {
    last_request: Option<String>,
    recent_request_ids: VecDeque<String>,
}

impl Applied {
    fn is_replay(&self, digest: &str, request_id: Option<&str>) -> bool {
        match request_id {
            Some(id) => self.recent_request_ids.iter().any(|r| r == id),
            None => self.last_request.as_deref() == Some(digest),
        }
    }

    fn after(&self, digest: String, request_id: Option<String>) -> Applied {
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
struct Request {
    step: u64,
    losses: UniqueMap,
    #[serde(default)]
    tokens: UniqueMap,
    /// Names this request for retries (any string up to 128 bytes, unique
    /// per request: e.g. the step and the rank).
    #[serde(default)]
    request_id: Option<String>,
}

/// A JSON object of domain → number-or-null that refuses a key given twice
/// (serde_json's maps keep the last one silently).
#[derive(Debug, Default)]
struct UniqueMap(BTreeMap<String, Option<f64>>);

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

/// An update validated and applied to a copy of the policy, not yet installed.
#[derive(Debug)]
pub struct Pending {
    policy: Box<dyn OnlinePolicy>,
    step: u64,
    changed: bool,
    applied: Applied,
}

/// What a request amounts to.
#[derive(Debug)]
pub enum Prepared {
    /// A new update, to install with [`Service::commit`].
    Update(Pending),
    /// A retry of a request already applied: answer with
    /// [`Service::replay_response`], change nothing.
    Replay,
}

/// A policy, its state file and the request protocol.
#[derive(Debug)]
pub struct Service {
    kind: PolicyKind,
    policy: Box<dyn OnlinePolicy>,
    state_path: Option<PathBuf>,
    last_step: Option<u64>,
    n_updates: u64,
    applied: Applied,
    /// Held for the process' life: one server per state file.
    _lock: Option<FileLock>,
}

impl Service {
    /// Resume from `state_path` if it exists (its policy and domains must match
    /// `spec`, and parameters given in `spec` must equal the saved ones), else
    /// start fresh and write the initial state.
    pub fn open(spec: &PolicySpec, state_path: Option<&Path>) -> Result<Self> {
        let fresh = super::build(spec)?;
        let lock = match state_path {
            Some(p) => Some(lock_exclusive(
                &lock_path_for(p),
                "mixopt online",
                &format!(
                    "one server per --state (stop the other one, or give this one another --state than {})",
                    p.display()
                ),
            )?),
            None => None,
        };
        if let Some(path) = state_path.filter(|p| p.exists()) {
            let text = crate::store::fsio::read_text(path)?;
            let file: StateFile = serde_json::from_str(&text).map_err(|e| {
                Error::parse(
                    path,
                    e.line(),
                    format!("not a mixopt online state file: {e}"),
                )
            })?;
            if !(1..=STATE_FORMAT_VERSION).contains(&file.format_version) {
                return Err(Error::parse(
                    path,
                    0,
                    format!(
                        "state format version {} (this mixopt reads {STATE_FORMAT_VERSION})",
                        file.format_version
                    ),
                ));
            }
            if file.policy != spec.kind {
                return Err(Error::invalid(format!(
                    "{}: field policy is {:?} but --policy is {:?} (use another --state to start over)",
                    path.display(),
                    file.policy.as_str(),
                    spec.kind.as_str()
                )));
            }
            if file.domains != spec.prior.domains() {
                return Err(Error::invalid(format!(
                    "{}: field domains is [{}] but --domains gives [{}]",
                    path.display(),
                    file.domains.join(","),
                    spec.prior.domains().join(",")
                )));
            }
            if !spec.params.is_empty() {
                let want = &fresh.to_state()["params"];
                let saved = &file.state["params"];
                if want != saved {
                    return Err(Error::invalid(format!(
                        "{}: saved params {saved} differ from --param ({want}); drop --param to resume, or use another --state",
                        path.display()
                    )));
                }
            }
            let policy = restore(file.policy, file.state)
                .map_err(|e| Error::parse(path, 0, format!("field state: {e}")))?;
            if policy.domains() != file.domains {
                return Err(Error::parse(
                    path,
                    0,
                    "field state.domains differs from field domains",
                ));
            }
            return Ok(Service {
                kind: file.policy,
                policy,
                state_path: Some(path.to_path_buf()),
                last_step: file.last_step,
                n_updates: file.n_updates,
                applied: Applied {
                    last_request: file.last_request,
                    recent_request_ids: file.recent_request_ids,
                },
                _lock: lock,
            });
        }
        let svc = Service {
            kind: spec.kind,
            policy: fresh,
            state_path: state_path.map(Path::to_path_buf),
            last_step: None,
            n_updates: 0,
            applied: Applied::default(),
            _lock: lock,
        };
        svc.persist(svc.policy.as_ref(), None, 0, &svc.applied)?;
        Ok(svc)
    }

    pub fn policy(&self) -> &dyn OnlinePolicy {
        self.policy.as_ref()
    }

    pub fn last_step(&self) -> Option<u64> {
        self.last_step
    }

    /// The state file's bytes for `policy` after `n_updates` updates.
    fn encode(
        &self,
        policy: &dyn OnlinePolicy,
        last_step: Option<u64>,
        n_updates: u64,
        applied: &Applied,
    ) -> Result<Vec<u8>> {
        let file = StateFile {
            format_version: STATE_FORMAT_VERSION,
            mixopt_version: crate::VERSION.to_string(),
            policy: self.kind,
            domains: policy.domains().to_vec(),
            last_step,
            n_updates,
            weights: policy
                .domains()
                .iter()
                .cloned()
                .zip(policy.weights().iter().copied())
                .collect(),
            state: policy.to_state(),
            last_request: applied.last_request.clone(),
            recent_request_ids: applied.recent_request_ids.clone(),
        };
        serde_json::to_vec(&file).map_err(|e| Error::invalid(format!("serializing state: {e}")))
    }

    fn persist(
        &self,
        policy: &dyn OnlinePolicy,
        last_step: Option<u64>,
        n_updates: u64,
        applied: &Applied,
    ) -> Result<()> {
        match &self.state_path {
            Some(path) => write_atomic(path, &self.encode(policy, last_step, n_updates, applied)?),
            None => Ok(()),
        }
    }

    /// The state file path and its current bytes (for a writer outside the
    /// lock: the HTTP server's group commit). `None` without `--state`.
    pub fn snapshot(&self) -> Result<Option<(PathBuf, Vec<u8>)>> {
        match &self.state_path {
            Some(path) => Ok(Some((
                path.clone(),
                self.encode(
                    self.policy.as_ref(),
                    self.last_step,
                    self.n_updates,
                    &self.applied,
                )?,
            ))),
            None => Ok(None),
        }
    }

    /// Validate a request body and apply it to a copy of the policy. Nothing
    /// in `self` changes; [`Service::commit`] installs the result.
    pub fn prepare(&self, body: &[u8]) -> Result<Prepared> {
        let req: Request = serde_json::from_slice(body)
            .map_err(|e| Error::invalid(format!("bad request: {e}")))?;
        if let Some(id) = &req.request_id {
            if id.is_empty() || id.len() > MAX_REQUEST_ID_BYTES {
                return Err(Error::invalid(format!(
                    "request_id: must be 1 to {MAX_REQUEST_ID_BYTES} bytes, got {}",
                    id.len()
                )));
            }
        }
        let domains = self.policy.domains();
        let k = domains.len();
        let mut losses = vec![None; k];
        let mut tokens = vec![None; k];
        for (field, map, out) in [
            ("losses", &req.losses.0, &mut losses),
            ("tokens", &req.tokens.0, &mut tokens),
        ] {
            for (name, v) in map {
                let i = domains.iter().position(|d| d == name).ok_or_else(|| {
                    Error::invalid(format!(
                        "{field}.{name}: unknown domain (known: {})",
                        domains.join(", ")
                    ))
                })?;
                out[i] = *v;
            }
        }
        let digest = request_digest(req.step, &losses, &tokens);
        if self.applied.is_replay(&digest, req.request_id.as_deref()) {
            return Ok(Prepared::Replay);
        }
        if let Some(last) = self.last_step {
            if req.step < last {
                return Err(Error::invalid(format!(
                    "step {}: before the last observed step {last} (a trainer resumed from an \
                     older checkpoint should restore the state saved with it)",
                    req.step
                )));
            }
        }
        let obs = Observation {
            step: req.step,
            losses: &losses,
            tokens: &tokens,
        };
        let mut policy = self.policy.boxed_clone();
        let changed = policy.observe(&obs)?.is_some();
        // A policy must never answer with weights that are not a mixture (and
        // NaN is not even JSON): refuse the update instead.
        if let Some((d, w)) = domains
            .iter()
            .zip(policy.weights())
            .find(|(_, w)| !(w.is_finite() && **w >= 0.0))
        {
            return Err(Error::invalid(format!(
                "this update would make weight of {d} {w}; update refused (are the losses in nats?)"
            )));
        }
        Ok(Prepared::Update(Pending {
            policy,
            step: req.step,
            changed,
            applied: self.applied.after(digest, req.request_id),
        }))
    }

    /// Install a prepared update in memory; returns the response.
    pub fn commit(&mut self, p: Pending) -> String {
        self.policy = p.policy;
        self.last_step = Some(p.step);
        self.n_updates += 1;
        self.applied = p.applied;
        self.response(Some(p.step), p.changed)
    }

    /// The answer to a retried request: the current weights, nothing changed.
    pub fn replay_response(&self) -> String {
        self.respond(self.last_step, false, true)
    }

    /// Updates applied since the state was created.
    pub fn n_updates(&self) -> u64 {
        self.n_updates
    }

    /// Handle one observe request body: validate, update, write the state,
    /// then install. On error nothing changed, in memory or on disk.
    pub fn observe_json(&mut self, body: &[u8]) -> Result<String> {
        let p = match self.prepare(body)? {
            Prepared::Update(p) => p,
            Prepared::Replay => return Ok(self.replay_response()),
        };
        self.persist(
            p.policy.as_ref(),
            Some(p.step),
            self.n_updates + 1,
            &p.applied,
        )?;
        Ok(self.commit(p))
    }

    /// `{"step":…,"weights":{…},"updated":…,"request":…}` in domain order.
    pub fn response(&self, step: Option<u64>, updated: bool) -> String {
        self.respond(step, updated, false)
    }

    fn respond(&self, step: Option<u64>, updated: bool, replayed: bool) -> String {
        let mut s = String::with_capacity(64 + 32 * self.policy.domains().len());
        match step {
            Some(st) => {
                let _ = write!(s, "{{\"step\":{st},\"weights\":{{");
            }
            None => s.push_str("{\"step\":null,\"weights\":{"),
        }
        for (i, (d, w)) in self
            .policy
            .domains()
            .iter()
            .zip(self.policy.weights())
            .enumerate()
        {
            if i > 0 {
                s.push(',');
            }
            // Domain names are plain ([A-Za-z0-9_./-]): no escaping needed.
            let _ = write!(s, "\"{d}\":{w}");
        }
        let req = match self.policy.request() {
            super::LossRequest::Training => "training",
            super::LossRequest::Validation => "validation",
            super::LossRequest::None => "none",
        };
        let _ = write!(
            s,
            "}},\"updated\":{updated},\"request\":\"{req}\",\"policy\":\"{}\"",
            self.kind.as_str()
        );
        if replayed {
            s.push_str(",\"replayed\":true");
        }
        s.push('}');
        s
    }

    /// The current weights as a response (no update).
    pub fn current(&self) -> String {
        self.response(self.last_step, false)
    }
}

/// sha256 over a request's step, losses and tokens (in domain order; f64s
/// by their bits), the fingerprint a retry is recognized by.
fn request_digest(step: u64, losses: &[Option<f64>], tokens: &[Option<f64>]) -> String {
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

/// `{"error": msg}`.
pub fn error_json(msg: &str) -> String {
    serde_json::json!({ "error": msg }).to_string()
}
