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

use super::{restore, Observation, OnlinePolicy, PolicyKind, PolicySpec};
use crate::error::{Error, IoContext, Result};
use crate::mixture::write_atomic;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Bumped when the state file's meaning changes.
pub const STATE_FORMAT_VERSION: u32 = 1;

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
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    step: u64,
    losses: BTreeMap<String, Option<f64>>,
    #[serde(default)]
    tokens: BTreeMap<String, Option<f64>>,
}

/// An update validated and applied to a copy of the policy, not yet installed.
#[derive(Debug)]
pub struct Pending {
    policy: Box<dyn OnlinePolicy>,
    step: u64,
    changed: bool,
}

/// A policy, its state file and the request protocol.
#[derive(Debug)]
pub struct Service {
    kind: PolicyKind,
    policy: Box<dyn OnlinePolicy>,
    state_path: Option<PathBuf>,
    last_step: Option<u64>,
    n_updates: u64,
}

impl Service {
    /// Resume from `state_path` if it exists (its policy and domains must match
    /// `spec`, and parameters given in `spec` must equal the saved ones), else
    /// start fresh and write the initial state.
    pub fn open(spec: &PolicySpec, state_path: Option<&Path>) -> Result<Self> {
        let fresh = super::build(spec)?;
        if let Some(path) = state_path.filter(|p| p.exists()) {
            let text = std::fs::read_to_string(path).at(path)?;
            let file: StateFile = serde_json::from_str(&text).map_err(|e| {
                Error::parse(
                    path,
                    e.line(),
                    format!("not a mixopt online state file: {e}"),
                )
            })?;
            if file.format_version != STATE_FORMAT_VERSION {
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
            });
        }
        let svc = Service {
            kind: spec.kind,
            policy: fresh,
            state_path: state_path.map(Path::to_path_buf),
            last_step: None,
            n_updates: 0,
        };
        svc.persist(svc.policy.as_ref(), None, 0)?;
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
        };
        serde_json::to_vec(&file).map_err(|e| Error::invalid(format!("serializing state: {e}")))
    }

    fn persist(
        &self,
        policy: &dyn OnlinePolicy,
        last_step: Option<u64>,
        n_updates: u64,
    ) -> Result<()> {
        match &self.state_path {
            Some(path) => write_atomic(path, &self.encode(policy, last_step, n_updates)?),
            None => Ok(()),
        }
    }

    /// The state file path and its current bytes (for a writer outside the
    /// lock: the HTTP server's group commit). `None` without `--state`.
    pub fn snapshot(&self) -> Result<Option<(PathBuf, Vec<u8>)>> {
        match &self.state_path {
            Some(path) => Ok(Some((
                path.clone(),
                self.encode(self.policy.as_ref(), self.last_step, self.n_updates)?,
            ))),
            None => Ok(None),
        }
    }

    /// Validate a request body and apply it to a copy of the policy. Nothing
    /// in `self` changes; [`Service::commit`] installs the result.
    pub fn prepare(&self, body: &[u8]) -> Result<Pending> {
        let req: Request = serde_json::from_slice(body)
            .map_err(|e| Error::invalid(format!("bad request: {e}")))?;
        let domains = self.policy.domains();
        let k = domains.len();
        let mut losses = vec![None; k];
        let mut tokens = vec![None; k];
        for (field, map, out) in [
            ("losses", &req.losses, &mut losses),
            ("tokens", &req.tokens, &mut tokens),
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
        Ok(Pending {
            policy,
            step: req.step,
            changed,
        })
    }

    /// Install a prepared update in memory; returns the response.
    pub fn commit(&mut self, p: Pending) -> String {
        self.policy = p.policy;
        self.last_step = Some(p.step);
        self.n_updates += 1;
        self.response(Some(p.step), p.changed)
    }

    /// Handle one observe request body: validate, update, write the state,
    /// then install. On error nothing changed, in memory or on disk.
    pub fn observe_json(&mut self, body: &[u8]) -> Result<String> {
        let p = self.prepare(body)?;
        self.persist(p.policy.as_ref(), Some(p.step), self.n_updates + 1)?;
        Ok(self.commit(p))
    }

    /// `{"step":…,"weights":{…},"updated":…,"request":…}` in domain order.
    pub fn response(&self, step: Option<u64>, updated: bool) -> String {
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
            "}},\"updated\":{updated},\"request\":\"{req}\",\"policy\":\"{}\"}}",
            self.kind.as_str()
        );
        s
    }

    /// The current weights as a response (no update).
    pub fn current(&self) -> String {
        self.response(self.last_step, false)
    }
}

/// `{"error": msg}`.
pub fn error_json(msg: &str) -> String {
    serde_json::json!({ "error": msg }).to_string()
}
