//! An in-memory Kubernetes API server for tests: objects by path, resourceVersions,
//! generation, status subresources, server-side apply (as a JSON merge, which is what
//! the reconcilers rely on), label selectors, optimistic-concurrency conflicts,
//! finalizers, and a log of every request. Any kube version can talk to it, and tests can
//! make writes fail.
//!
//! It is for what a real API server cannot be made to do: answer a write with a conflict
//! on demand, stop serving a resource, count the requests made, run on tokio's paused
//! clock. Everything else the operator does is tested against a real kube-apiserver and
//! etcd as well (`operator/tests/real_api_*.rs`), because this server does not check what
//! a real one does: no authorization, no schema or CEL validation, no immutable fields,
//! no garbage collection, apply as a merge rather than by field ownership, and watches
//! answered as lists.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use kube::client::Body;
use serde_json::{Value, json};

/// One request as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub method: String,
    pub path: String,
    /// A PATCH that created the object (server-side apply of an absent object). A real
    /// API server authorizes such a request for `create` as well as `patch`.
    pub created: bool,
}

#[derive(Default)]
struct State {
    objects: BTreeMap<String, Value>,
    revision: u64,
    calls: Vec<Call>,
    /// Answers 409 Conflict to the next write of each of these paths, once per entry.
    conflicts: VecDeque<String>,
    /// Paths under these prefixes answer 404, as resources the server does not serve.
    unserved: Vec<String>,
}

impl State {
    /// Stores `object`, or removes it when it is being deleted and no finalizer is left.
    fn store(&mut self, path: String, object: Value) {
        let deleting = object["metadata"].get("deletionTimestamp").is_some();
        let finalizers = object["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        if deleting && !finalizers {
            self.objects.remove(&path);
        } else {
            self.objects.insert(path, object);
        }
    }
}

/// Cheap to clone; every clone sees the same objects.
#[derive(Clone, Default)]
pub struct FakeApi {
    state: Arc<Mutex<State>>,
}

/// Merges `patch` into `target` as a JSON merge patch (RFC 7386): objects merge, `null`
/// removes, anything else replaces.
fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                if value.is_null() {
                    target.remove(key);
                } else {
                    merge(target.entry(key.clone()).or_insert(Value::Null), value);
                }
            }
        }
        (target, patch) => *target = patch.clone(),
    }
}

fn status(code: StatusCode, reason: &str, message: &str) -> (StatusCode, Value) {
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
               "reason": reason, "message": message, "code": code.as_u16()}),
    )
}

impl FakeApi {
    pub fn new() -> Self {
        Self::default()
    }

    /// A kube client whose requests this server answers.
    pub fn client(&self) -> kube::Client {
        let api = self.clone();
        let service = tower::service_fn(move |request: Request<Body>| {
            let api = api.clone();
            async move {
                let (parts, body) = request.into_parts();
                let body = body.collect_bytes().await.unwrap_or_default();
                let (code, value) = api.handle(
                    &parts.method,
                    parts.uri.path(),
                    parts.uri.query().unwrap_or_default(),
                    &body,
                    true,
                );
                let response = Response::builder()
                    .status(code)
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(value.to_string())))
                    .expect("a valid response");
                Ok::<_, Infallible>(response)
            }
        });
        kube::Client::new(service, "default")
    }

    /// Every request so far.
    pub fn calls(&self) -> Vec<Call> {
        self.state.lock().unwrap().calls.clone()
    }

    /// Requests other than reads (GET).
    pub fn writes(&self) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.method != "GET")
            .collect()
    }

    pub fn clear_calls(&self) {
        self.state.lock().unwrap().calls.clear();
    }

    /// The object at `path` (without `/status`), if any.
    pub fn get(&self, path: &str) -> Option<Value> {
        self.state.lock().unwrap().objects.get(path).cloned()
    }

    /// The objects directly under the collection `path`, in name order.
    pub fn list(&self, path: &str) -> Vec<Value> {
        let prefix = format!("{path}/");
        let state = self.state.lock().unwrap();
        state
            .objects
            .iter()
            .filter(|(p, _)| {
                p.strip_prefix(&prefix)
                    .is_some_and(|rest| !rest.contains('/'))
            })
            .map(|(_, o)| o.clone())
            .collect()
    }

    /// Stores `object` at `path` as if a user had applied it. A deletion is not something
    /// a user writes: delete through the client, as on a real server (which sets
    /// `deletionTimestamp` itself when finalizers hold the object).
    pub fn put(&self, path: &str, mut object: Value) {
        assert!(
            object["metadata"].get("deletionTimestamp").is_none(),
            "a test may not write deletionTimestamp; delete {path} through the client"
        );
        let mut state = self.state.lock().unwrap();
        state.revision += 1;
        let meta = &mut object["metadata"];
        meta["resourceVersion"] = state.revision.to_string().into();
        if meta.get("generation").is_none() {
            meta["generation"] = 1.into();
        }
        if meta.get("uid").is_none() {
            meta["uid"] = format!("uid-{}", state.revision).into();
        }
        state.objects.insert(path.to_string(), object);
    }

    /// Deletes the object at `path` as a user's DELETE would (not logged as a call of the
    /// code under test): with finalizers it gets a `deletionTimestamp` and stays until they
    /// are removed, without it is gone.
    pub fn delete(&self, path: &str) {
        let delete = Method::DELETE;
        let (code, answer) = self.handle(&delete, path, "", &[], false);
        assert!(code.is_success(), "DELETE {path}: {answer}");
    }

    /// Requests under `prefix` answer 404 from now on, as for a CRD not installed.
    pub fn unserve(&self, prefix: &str) {
        self.state.lock().unwrap().unserved.push(prefix.to_string());
    }

    /// The next write to `path` (or its status) fails with 409 Conflict, as if someone else
    /// had written it first.
    pub fn conflict_once(&self, path: &str) {
        self.state
            .lock()
            .unwrap()
            .conflicts
            .push_back(path.to_string());
    }

    /// Answers one request; `log` records it in [`FakeApi::calls`] (a test's own requests
    /// are not).
    fn handle(
        &self,
        method: &Method,
        path: &str,
        query: &str,
        body: &[u8],
        log: bool,
    ) -> (StatusCode, Value) {
        let mut state = self.state.lock().unwrap();
        if log {
            state.calls.push(Call {
                method: method.to_string(),
                path: path.to_string(),
                created: false,
            });
        }
        if state.unserved.iter().any(|p| path.starts_with(p)) {
            return status(
                StatusCode::NOT_FOUND,
                "NotFound",
                "the server could not find the requested resource",
            );
        }
        let (object_path, subresource) = match path.strip_suffix("/status") {
            Some(base) => (base.to_string(), true),
            None => (path.to_string(), false),
        };
        if *method != Method::GET
            && let Some(i) = state.conflicts.iter().position(|p| *p == object_path)
        {
            state.conflicts.remove(i);
            return status(
                StatusCode::CONFLICT,
                "Conflict",
                "the object has been modified; please apply your changes to the latest version and try again",
            );
        }
        let body: Value = if body.is_empty() {
            Value::Null
        } else {
            match serde_json::from_slice(body) {
                Ok(value) => value,
                Err(e) => return status(StatusCode::BAD_REQUEST, "BadRequest", &e.to_string()),
            }
        };
        match *method {
            Method::GET => match state.objects.get(&object_path) {
                Some(object) => (StatusCode::OK, object.clone()),
                None => {
                    // A collection: every object directly under it that the label selector
                    // selects.
                    let selector = match LabelSelector::from_query(query) {
                        Ok(selector) => selector,
                        Err(unsupported) => {
                            return status(StatusCode::BAD_REQUEST, "BadRequest", &unsupported);
                        }
                    };
                    let prefix = format!("{object_path}/");
                    let items: Vec<Value> = state
                        .objects
                        .iter()
                        .filter(|(p, o)| {
                            p.strip_prefix(&prefix)
                                .is_some_and(|rest| !rest.contains('/'))
                                && selector.selects(o)
                        })
                        .map(|(_, o)| o.clone())
                        .collect();
                    if items.is_empty() && is_object_path(&object_path) {
                        return status(
                            StatusCode::NOT_FOUND,
                            "NotFound",
                            &format!("{object_path} not found"),
                        );
                    }
                    let revision = state.revision.to_string();
                    (
                        StatusCode::OK,
                        json!({"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": revision}, "items": items}),
                    )
                }
            },
            Method::PATCH => {
                let revision = state.revision + 1;
                let existing = state.objects.get(&object_path).cloned();
                let mut object = match (existing, subresource) {
                    (Some(object), _) => object,
                    (None, true) => {
                        return status(
                            StatusCode::NOT_FOUND,
                            "NotFound",
                            &format!("{object_path} not found"),
                        );
                    }
                    (None, false) => {
                        if let Some(call) = state.calls.last_mut().filter(|_| log) {
                            call.created = true;
                        }
                        json!({"metadata": {"uid": format!("uid-{revision}"), "generation": 0}})
                    }
                };
                let before = object.clone();
                let mut patch = body;
                if subresource {
                    patch = json!({"status": patch.get("status").cloned().unwrap_or(Value::Null)});
                } else if let Some(patch) = patch.as_object_mut() {
                    patch.remove("status");
                }
                if let Some(meta) = patch.get_mut("metadata").and_then(Value::as_object_mut) {
                    meta.remove("resourceVersion");
                }
                merge(&mut object, &patch);
                if object == before {
                    return (StatusCode::OK, object);
                }
                if !subresource && object.get("spec") != before.get("spec") {
                    let generation = object["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
                    object["metadata"]["generation"] = generation.into();
                }
                state.revision = revision;
                object["metadata"]["resourceVersion"] = revision.to_string().into();
                state.store(object_path, object.clone());
                (StatusCode::OK, object)
            }
            Method::PUT => {
                let Some(existing) = state.objects.get(&object_path).cloned() else {
                    return status(
                        StatusCode::NOT_FOUND,
                        "NotFound",
                        &format!("{object_path} not found"),
                    );
                };
                let expected = body["metadata"]["resourceVersion"]
                    .as_str()
                    .map(str::to_string);
                if expected.is_some()
                    && expected
                        != existing["metadata"]["resourceVersion"]
                            .as_str()
                            .map(str::to_string)
                {
                    return status(
                        StatusCode::CONFLICT,
                        "Conflict",
                        "the object has been modified; please apply your changes to the latest version and try again",
                    );
                }
                let mut object = existing.clone();
                if subresource {
                    object["status"] = body.get("status").cloned().unwrap_or(Value::Null);
                } else {
                    let status = existing.get("status").cloned();
                    object = body;
                    match status {
                        Some(s) => object["status"] = s,
                        None => {
                            if let Some(o) = object.as_object_mut() {
                                o.remove("status");
                            }
                        }
                    }
                    let mut generation = existing["metadata"]["generation"].as_i64().unwrap_or(1);
                    if object.get("spec") != existing.get("spec") {
                        generation += 1;
                    }
                    object["metadata"]["generation"] = generation.into();
                    object["metadata"]["uid"] = existing["metadata"]["uid"].clone();
                }
                state.revision += 1;
                object["metadata"]["resourceVersion"] = state.revision.to_string().into();
                state.store(object_path, object.clone());
                (StatusCode::OK, object)
            }
            Method::POST => {
                let name = body["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let path = format!("{object_path}/{name}");
                if state.objects.contains_key(&path) {
                    return status(
                        StatusCode::CONFLICT,
                        "AlreadyExists",
                        &format!("{path} already exists"),
                    );
                }
                state.revision += 1;
                let mut object = body;
                object["metadata"]["resourceVersion"] = state.revision.to_string().into();
                object["metadata"]["uid"] = format!("uid-{}", state.revision).into();
                object["metadata"]["generation"] = 1.into();
                state.objects.insert(path, object.clone());
                (StatusCode::CREATED, object)
            }
            Method::DELETE => {
                let Some(mut object) = state.objects.get(&object_path).cloned() else {
                    return status(
                        StatusCode::NOT_FOUND,
                        "NotFound",
                        &format!("{object_path} not found"),
                    );
                };
                let finalizers = object["metadata"]["finalizers"]
                    .as_array()
                    .is_some_and(|f| !f.is_empty());
                if finalizers {
                    state.revision += 1;
                    object["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z".into();
                    object["metadata"]["resourceVersion"] = state.revision.to_string().into();
                    state.objects.insert(object_path, object.clone());
                } else {
                    state.objects.remove(&object_path);
                }
                (StatusCode::OK, object)
            }
            _ => status(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "not supported by the fake API server",
            ),
        }
    }
}

/// A list's `labelSelector`, in the forms a real server takes: `k=v`, `k==v`, `k!=v`,
/// `k` (has the label) and `!k` (has not), comma-separated.
struct LabelSelector(Vec<(String, Requirement)>);

enum Requirement {
    Equals(String),
    Differs(String),
    Exists,
    Absent,
}

impl LabelSelector {
    /// The selector of a query string; a `fieldSelector` is refused, so that no test relies
    /// on one this server would ignore.
    fn from_query(query: &str) -> Result<Self, String> {
        let mut requirements = Vec::new();
        for (key, value) in url_pairs(query) {
            match key.as_str() {
                "labelSelector" => {
                    if value.contains('(') {
                        return Err(format!(
                            "set-based labelSelector {value} is not supported by the fake API server"
                        ));
                    }
                    for term in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                        requirements.push(Self::requirement(term));
                    }
                }
                "fieldSelector" if !value.is_empty() => {
                    return Err(format!(
                        "fieldSelector {value} is not supported by the fake API server"
                    ));
                }
                _ => {}
            }
        }
        Ok(Self(requirements))
    }

    fn requirement(term: &str) -> (String, Requirement) {
        let trimmed = |s: &str| s.trim().to_string();
        if let Some((k, v)) = term.split_once("!=") {
            (trimmed(k), Requirement::Differs(trimmed(v)))
        } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
            (trimmed(k), Requirement::Equals(trimmed(v)))
        } else if let Some(k) = term.strip_prefix('!') {
            (trimmed(k), Requirement::Absent)
        } else {
            (term.to_string(), Requirement::Exists)
        }
    }

    fn selects(&self, object: &Value) -> bool {
        self.0.iter().all(|(key, requirement)| {
            let label = object["metadata"]["labels"][key].as_str();
            match requirement {
                Requirement::Equals(v) => label == Some(v.as_str()),
                Requirement::Differs(v) => label != Some(v.as_str()),
                Requirement::Exists => label.is_some(),
                Requirement::Absent => label.is_none(),
            }
        })
    }
}

/// The `key=value` pairs of a query string, percent-decoded.
fn url_pairs(query: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// Paths like `/api/v1/namespaces/ns/services/name` name one object; collections end in
/// the resource's plural.
fn is_object_path(path: &str) -> bool {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    matches!(
        segments.as_slice(),
        ["api", _, "namespaces", _, _, _] | ["apis", _, _, "namespaces", _, _, _]
    )
}
