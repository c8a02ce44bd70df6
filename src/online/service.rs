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

use super::request::{request_digest, Applied, Request};
use super::trajectory::{Row, TrajectoryLog};
use super::{restore, Observation, OnlinePolicy, PolicyKind, PolicySpec};
use crate::error::{Error, Result};
use crate::mixture::write_atomic;
use crate::store::fsio::{lock_exclusive, lock_path_for, FileLock};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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

/// What the state file records: the policy and the request bookkeeping.
#[derive(Debug)]
struct State {
    policy: Box<dyn OnlinePolicy>,
    last_step: Option<u64>,
    n_updates: u64,
    applied: Applied,
}

impl Clone for State {
    fn clone(&self) -> Self {
        State {
            policy: self.policy.boxed_clone(),
            last_step: self.last_step,
            n_updates: self.n_updates,
            applied: self.applied.clone(),
        }
    }
}

/// An update validated and applied to a copy of the policy, not yet staged.
#[derive(Debug)]
pub struct Pending {
    next: State,
    changed: bool,
    row: Row,
}

/// What a request amounts to.
#[derive(Debug)]
pub enum Prepared {
    /// A new update, to stage with [`Service::stage`].
    Update(Pending),
    /// A retry of a request already applied (or staged): answer with
    /// [`Service::replay_response`] once it is written, change nothing.
    Replay,
}

/// Staged updates taken for writing ([`Service::take_batch`]): the state
/// after the newest of them, its bytes and the trajectory rows.
#[derive(Debug)]
pub struct Batch {
    /// The staging sequence number of the newest update in the batch.
    pub seq: u64,
    state: State,
    file: Option<(PathBuf, Vec<u8>)>,
    rows: Vec<Row>,
    trajectory: Option<Arc<TrajectoryLog>>,
}

impl Batch {
    /// Write the state (write-then-rename), then append the trajectory rows.
    /// Touches no `Service`, so it can run outside a lock around one.
    pub fn write(&self) -> Result<()> {
        if let Some((path, bytes)) = &self.file {
            write_atomic(path, bytes)?;
        }
        match &self.trajectory {
            Some(t) => t.append(&self.rows),
            None => Ok(()),
        }
    }
}

/// A policy, its state file and the request protocol.
///
/// Updates go through three steps: [`Service::prepare`] validates a request
/// and applies it to a copy; [`Service::stage`] makes that copy the base for
/// the next request (so concurrent requests can share one write); a
/// [`Batch`] of staged updates is written and then [`Service::install`]ed as
/// the committed state, or [`Service::discard_staged`] drops them all when
/// the write fails. The committed state is always what is on disk: what
/// `GET /weights` and a replay answer with.
#[derive(Debug)]
pub struct Service {
    kind: PolicyKind,
    state_path: Option<PathBuf>,
    trajectory: Option<Arc<TrajectoryLog>>,
    committed: State,
    /// The state after the staged updates (None: nothing staged).
    staged: Option<State>,
    staged_rows: Vec<Row>,
    /// Updates staged since the service was opened.
    staged_seq: u64,
    /// Held for the process' life: one server per state file.
    _lock: Option<FileLock>,
}

impl Service {
    /// Resume from `state_path` if it exists (its policy and domains must match
    /// `spec`, and parameters given in `spec` must equal the saved ones), else
    /// start fresh and write the initial state. Committed updates are appended
    /// to `trajectory` if given.
    pub fn open(
        spec: &PolicySpec,
        state_path: Option<&Path>,
        trajectory: Option<&Path>,
    ) -> Result<Self> {
        let resumed = state_path.is_some_and(Path::exists);
        let mut svc = Self::open_state(spec, state_path)?;
        if let Some(t) = trajectory {
            let policy = svc.committed.policy.as_ref();
            let (log, empty) = TrajectoryLog::open(t, policy.domains(), !resumed)?;
            if empty && !resumed {
                // As `mixopt train --trajectory`: the starting mixture at step 0.
                log.append(&[Row {
                    step: 0,
                    weights: policy.weights().to_vec(),
                    losses: vec![None; policy.domains().len()],
                }])?;
            }
            svc.trajectory = Some(Arc::new(log));
        }
        Ok(svc)
    }

    fn open_state(spec: &PolicySpec, state_path: Option<&Path>) -> Result<Self> {
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
            return Ok(Service::with(
                file.policy,
                state_path,
                lock,
                State {
                    policy,
                    last_step: file.last_step,
                    n_updates: file.n_updates,
                    applied: Applied {
                        last_request: file.last_request,
                        recent_request_ids: file.recent_request_ids,
                    },
                },
            ));
        }
        let svc = Service::with(
            spec.kind,
            state_path,
            lock,
            State {
                policy: fresh,
                last_step: None,
                n_updates: 0,
                applied: Applied::default(),
            },
        );
        if let Some(path) = &svc.state_path {
            write_atomic(path, &svc.encode(&svc.committed)?)?;
        }
        Ok(svc)
    }

    fn with(
        kind: PolicyKind,
        state_path: Option<&Path>,
        lock: Option<FileLock>,
        committed: State,
    ) -> Service {
        Service {
            kind,
            state_path: state_path.map(Path::to_path_buf),
            trajectory: None,
            committed,
            staged: None,
            staged_rows: Vec::new(),
            staged_seq: 0,
            _lock: lock,
        }
    }

    /// The committed policy (what the state file holds).
    pub fn policy(&self) -> &dyn OnlinePolicy {
        self.committed.policy.as_ref()
    }

    pub fn last_step(&self) -> Option<u64> {
        self.committed.last_step
    }

    /// The state file's bytes for `state`.
    fn encode(&self, state: &State) -> Result<Vec<u8>> {
        let policy = state.policy.as_ref();
        let file = StateFile {
            format_version: STATE_FORMAT_VERSION,
            mixopt_version: crate::VERSION.to_string(),
            policy: self.kind,
            domains: policy.domains().to_vec(),
            last_step: state.last_step,
            n_updates: state.n_updates,
            weights: policy
                .domains()
                .iter()
                .cloned()
                .zip(policy.weights().iter().copied())
                .collect(),
            state: policy.to_state(),
            last_request: state.applied.last_request.clone(),
            recent_request_ids: state.applied.recent_request_ids.clone(),
        };
        serde_json::to_vec(&file).map_err(|e| Error::invalid(format!("serializing state: {e}")))
    }

    /// The state the next request builds on: the newest staged one, else the
    /// committed one.
    fn head(&self) -> &State {
        self.staged.as_ref().unwrap_or(&self.committed)
    }

    /// Validate a request body and apply it to a copy of the newest (staged
    /// or committed) state. Nothing in `self` changes.
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
        let head = self.head();
        let domains = head.policy.domains();
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
        if head.applied.is_replay(&digest, req.request_id.as_deref()) {
            return Ok(Prepared::Replay);
        }
        if let Some(last) = head.last_step {
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
        let mut policy = head.policy.boxed_clone();
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
        let row = Row {
            step: req.step,
            weights: policy.weights().to_vec(),
            losses,
        };
        Ok(Prepared::Update(Pending {
            next: State {
                policy,
                last_step: Some(req.step),
                n_updates: head.n_updates + 1,
                applied: head.applied.after(digest, req.request_id),
            },
            changed,
            row,
        }))
    }

    /// Make a prepared update the base for the next request (not yet
    /// committed); returns its sequence number and its response, to send once
    /// a batch holding it is installed.
    pub fn stage(&mut self, p: Pending) -> (u64, String) {
        let response = respond(self.kind, &p.next, p.changed, false);
        self.staged = Some(p.next);
        self.staged_rows.push(p.row);
        self.staged_seq += 1;
        (self.staged_seq, response)
    }

    /// Updates staged since the service was opened (the newest's sequence number).
    pub fn staged_seq(&self) -> u64 {
        self.staged_seq
    }

    /// Take the staged updates for writing; `None` when nothing is staged.
    /// They stay the base for new requests until installed or discarded.
    pub fn take_batch(&mut self) -> Result<Option<Batch>> {
        let Some(state) = self.staged.clone() else {
            return Ok(None);
        };
        let file = match &self.state_path {
            Some(path) => Some((path.clone(), self.encode(&state)?)),
            None => None,
        };
        Ok(Some(Batch {
            seq: self.staged_seq,
            state,
            file,
            rows: std::mem::take(&mut self.staged_rows),
            trajectory: self.trajectory.clone(),
        }))
    }

    /// A batch is on disk: its state becomes the committed one.
    pub fn install(&mut self, batch: Batch) {
        if batch.seq == self.staged_seq {
            self.staged = None;
        }
        self.committed = batch.state;
    }

    /// A batch's write failed: drop every staged update (those staged after
    /// the batch were built on it), so memory again equals the file.
    pub fn discard_staged(&mut self) {
        self.staged = None;
        self.staged_rows.clear();
    }

    /// The answer to a retried request: the committed weights, nothing changed.
    pub fn replay_response(&self) -> String {
        respond(self.kind, &self.committed, false, true)
    }

    /// Updates committed since the state was created.
    pub fn n_updates(&self) -> u64 {
        self.committed.n_updates
    }

    /// Handle one observe request body: validate, update, write the state,
    /// then install. On error nothing changed, in memory or on disk.
    pub fn observe_json(&mut self, body: &[u8]) -> Result<String> {
        let p = match self.prepare(body)? {
            Prepared::Update(p) => p,
            Prepared::Replay => return Ok(self.replay_response()),
        };
        let (_, response) = self.stage(p);
        let batch = self.take_batch()?.expect("an update was just staged");
        if let Err(e) = batch.write() {
            self.discard_staged();
            return Err(e);
        }
        self.install(batch);
        Ok(response)
    }

    /// The committed weights as a response (no update).
    pub fn current(&self) -> String {
        respond(self.kind, &self.committed, false, false)
    }
}

/// `{"step":…,"weights":{…},"updated":…,"request":…,"policy":…}` in domain order.
fn respond(kind: PolicyKind, state: &State, updated: bool, replayed: bool) -> String {
    let policy = state.policy.as_ref();
    let step = state.last_step;
    let mut s = String::with_capacity(64 + 32 * policy.domains().len());
    match step {
        Some(st) => {
            let _ = write!(s, "{{\"step\":{st},\"weights\":{{");
        }
        None => s.push_str("{\"step\":null,\"weights\":{"),
    }
    for (i, (d, w)) in policy.domains().iter().zip(policy.weights()).enumerate() {
        if i > 0 {
            s.push(',');
        }
        // Domain names are plain ([A-Za-z0-9_./-]): no escaping needed.
        let _ = write!(s, "\"{d}\":{w}");
    }
    let req = match policy.request() {
        super::LossRequest::Training => "training",
        super::LossRequest::Validation => "validation",
        super::LossRequest::None => "none",
    };
    let _ = write!(
        s,
        "}},\"updated\":{updated},\"request\":\"{req}\",\"policy\":\"{}\"",
        kind.as_str()
    );
    if replayed {
        s.push_str(",\"replayed\":true");
    }
    s.push('}');
    s
}

/// `{"error": msg}`.
pub fn error_json(msg: &str) -> String {
    serde_json::json!({ "error": msg }).to_string()
}
