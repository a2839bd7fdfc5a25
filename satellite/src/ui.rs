//! The clinic's page (`GET /ui`): in sync or not at a glance, pending
//! changes, each job's last runs in words, a "sync now" button that says
//! what actually happened, and the conflict queue, where a clinician sees
//! the field, its value at the common ancestor, this clinic's and
//! central's side by side, and keeps one, the other, or types the right
//! value. A resolution is an ordinary commit, pushed as usual.
//!
//! Login: with `api_token` set, `POST /ui/login` with that token opens a
//! session (cookie); without one (loopback only) no login is asked.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chartsync_http::ui::{self, Form, Session, esc};
use chartsync_http::{ApiError, PathParam, blocking};
use chartsync_protocol::api::{ConflictEntry, FilePatch, PatchBody};
use chartsync_store::{Change, Condition};

use crate::Satellite;
use crate::api::{LocalApi, commit_local};
use crate::jobs::{Job, no_progress, run_once};
use crate::words;

/// Largest form body the pages accept.
const MAX_FORM: usize = 256 << 10;

/// The page routes.
pub fn routes() -> Router<LocalApi> {
    Router::new()
        .route("/ui", get(show))
        .route("/ui/style.css", get(|| async { ui::style() }))
        .route("/ui/login", post(login))
        .route("/ui/logout", post(logout))
        .route("/ui/sync", post(sync_now))
        .route("/ui/conflicts/{id}/resolve", post(resolve))
}

/// The session of a request; without `api_token` one is opened at once.
fn session(sat: &Satellite, headers: &HeaderMap) -> (Option<Session>, bool) {
    if let Some(s) = sat.ui.get(headers) {
        return (Some(s), false);
    }
    if sat.config.api_token.is_none() {
        return (sat.ui.create(), true);
    }
    (None, false)
}

fn login_form() -> Response {
    ui::login_page(
        "chartsync: clinic",
        "This clinic's API token (api_token in the satellite's configuration)",
        None,
    )
}

fn with_cookie(
    sat: &Satellite,
    mut response: Response,
    session: &Session,
    fresh: bool,
) -> Response {
    if fresh {
        response
            .headers_mut()
            .insert(header::SET_COOKIE, sat.ui.set_cookie(session));
    }
    response
}

async fn show(State(api): State<LocalApi>, headers: HeaderMap) -> Response {
    let (Some(session), fresh) = session(&api.0, &headers) else {
        return login_form();
    };
    let page = render(Arc::clone(&api.0), session.clone(), None).await;
    with_cookie(&api.0, page, &session, fresh)
}

async fn login(State(api): State<LocalApi>, headers: HeaderMap, body: Body) -> Response {
    let form = match ui::read_form(&headers, body, MAX_FORM, &[("token", None)]).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let given = form.get("token").unwrap_or_default();
    let ok = match &api.0.config.api_token {
        Some(expected) => ui::same_token(given, &expected.0),
        None => true,
    };
    if !ok {
        return ui::login_page(
            "chartsync: clinic",
            "This clinic's API token (api_token in the satellite's configuration)",
            Some("That is not this clinic's API token."),
        );
    }
    let Some(session) = api.0.ui.create() else {
        return ApiError::internal(&std::io::Error::other("no randomness for a session"))
            .into_response();
    };
    with_cookie(&api.0, ui::redirect("/ui"), &session, true)
}

async fn logout(State(api): State<LocalApi>, headers: HeaderMap, body: Body) -> Response {
    if let Err(r) = posted(&api, &headers, body, &[]).await {
        return r;
    }
    api.0.ui.remove(&headers);
    let mut response = ui::redirect("/ui");
    response
        .headers_mut()
        .insert(header::SET_COOKIE, api.0.ui.clear_cookie());
    response
}

/// The session and form of a POST, CSRF token checked.
async fn posted(
    api: &LocalApi,
    headers: &HeaderMap,
    body: Body,
    fields: &[ui::Field<'_>],
) -> Result<(Session, Form), Response> {
    let mut required = vec![("csrf", None)];
    required.extend_from_slice(fields);
    let form = ui::read_form(headers, body, MAX_FORM, &required).await?;
    let Some(session) = api.0.ui.get(headers) else {
        return Err(ui::redirect("/ui"));
    };
    if !session.csrf_ok(&form) {
        return Err(ui::page(
            StatusCode::FORBIDDEN,
            "chartsync: refused",
            "<p class=\"msg bad\">This form is out of date or did not come from this page. <a href=\"/ui\">Reload the page</a> and try again.</p>",
        ));
    }
    Ok((session, form))
}

/// Runs every job now and shows what happened.
async fn sync_now(State(api): State<LocalApi>, headers: HeaderMap, body: Body) -> Response {
    let (session, _) = match posted(&api, &headers, body, &[]).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let sat = Arc::clone(&api.0);
    let message = match run_once(&sat, &Job::ALL, Duration::from_secs(30), no_progress()).await {
        Ok(s) => {
            let mut parts = vec![
                format!("{} sent", plural(s.records_sent, "record")),
                format!("{} received", plural(s.records_received, "record")),
            ];
            if s.merged > 0 {
                parts.push(format!("{} merged", s.merged));
            }
            if s.conflicts > 0 {
                parts.push(format!(
                    "{} for a clinician (below)",
                    plural(s.conflicts, "new conflict")
                ));
            }
            if s.refused > 0 {
                parts.push(format!("{} refused by central", s.refused));
            }
            if s.set_aside > 0 {
                parts.push(format!("{} set aside", s.set_aside));
            }
            if s.deferred > 0 {
                (
                    "warn",
                    format!(
                        "Sync ran but did not finish: {}; {} left for the next run.",
                        parts.join(", "),
                        s.deferred
                    ),
                )
            } else {
                ("ok", format!("Sync finished: {}.", parts.join(", ")))
            }
        }
        Err(e) => (
            "bad",
            format!("Sync failed: {}.", words::problem(&crate::error_chain(&e))),
        ),
    };
    render(sat, session, Some(message)).await
}

fn plural(n: u64, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

/// Records a clinician's choice for one conflict.
async fn resolve(
    State(api): State<LocalApi>,
    PathParam(id): PathParam<i64>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (session, form) = match posted(
        &api,
        &headers,
        body,
        &[("keep", Some(&["ours", "theirs", "typed"]))],
    )
    .await
    {
        Ok(p) => p,
        Err(r) => return r,
    };
    let sat = Arc::clone(&api.0);
    let choice = form.get("keep").unwrap_or_default().to_string();
    let typed = form.get("value").unwrap_or_default().to_string();
    let s = Arc::clone(&sat);
    let outcome = blocking(move || resolve_one(&s, id, &choice, &typed)).await;
    let message = match outcome {
        Ok(text) => ("ok", text),
        Err(e) => ("bad", e.message),
    };
    render(sat, session, Some(message)).await
}

fn resolve_one(sat: &Satellite, id: i64, choice: &str, typed: &str) -> Result<String, ApiError> {
    let (conflict, resolved) = sat
        .db
        .conflict(id)
        .map_err(|e| ApiError::internal(&e))?
        .ok_or_else(|| ApiError::not_found("That conflict does not exist."))?;
    if resolved {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_resolved",
            "That conflict was already resolved.",
        ));
    }
    let value = match choice {
        "ours" => conflict.ours.clone(),
        "theirs" => conflict.theirs.clone(),
        "typed" => {
            if typed.trim().is_empty() {
                return Err(ApiError::bad_request(
                    "empty_value",
                    "Type the right value, or choose one of the two.",
                ));
            }
            typed_value(typed)
        }
        _ => {
            return Err(ApiError::bad_request(
                "no_choice",
                "Choose which value to keep.",
            ));
        }
    };
    let patient = conflict.patient;
    let current = sat.store.read(&patient)?;
    let text = current
        .files
        .get(&conflict.file)
        .ok_or_else(|| ApiError::not_found("The file of that conflict is gone."))?;
    let mut doc = chartsync_merge::parse_yaml(text)
        .map_err(|e| ApiError::bad_request("bad_yaml", e.to_string()))?;
    set_pointer(&mut doc, &conflict.path, value)?;
    let new_text = chartsync_merge::to_yaml(&doc);
    let meta = chartsync_store::CommitMeta::new(
        "clinic",
        "clinic@localhost",
        &format!("Resolve conflict {id}: {} {}", conflict.file, conflict.path),
    );
    let mut patch = PatchBody::new();
    patch.insert(conflict.file.clone(), FilePatch::Replace(new_text));
    let head = commit_local(
        sat,
        &patient,
        Condition::Unconditional,
        Change::Patch(patch),
        &meta,
    )?;
    sat.db
        .resolve_conflict(id, head)
        .map_err(|e| ApiError::internal(&e))?;
    Ok(format!(
        "Resolved: {} of patient {patient} is now {}. The next push sends it to central.",
        pointer_words(&conflict.path),
        show_value(&read_back(&doc, &conflict.path))
    ))
}

/// A typed value: a number, true/false or null when it reads as one, else
/// the text as written.
fn typed_value(typed: &str) -> serde_json::Value {
    let t = typed.trim();
    match chartsync_merge::parse_json_exact(t.as_bytes()) {
        Ok(v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => v,
        _ => serde_json::Value::String(typed.to_string()),
    }
}

fn read_back(doc: &serde_json::Value, pointer: &str) -> serde_json::Value {
    doc.pointer(pointer)
        .cloned()
        .unwrap_or(serde_json::Value::Null)
}

/// Sets (or, for null, removes) the value at a JSON pointer, creating
/// objects on the way.
fn set_pointer(
    doc: &mut serde_json::Value,
    pointer: &str,
    value: serde_json::Value,
) -> Result<(), ApiError> {
    let bad =
        || ApiError::bad_request("bad_path", format!("cannot set {pointer:?} in this record"));
    if pointer.is_empty() {
        *doc = value;
        return Ok(());
    }
    let parts: Vec<String> = pointer
        .strip_prefix('/')
        .ok_or_else(bad)?
        .split('/')
        .map(|p| p.replace("~1", "/").replace("~0", "~"))
        .collect();
    let (last, path) = parts.split_last().ok_or_else(bad)?;
    let mut at = doc;
    for part in path {
        at = match at {
            serde_json::Value::Object(map) => map
                .entry(part.clone())
                .or_insert_with(|| serde_json::Value::Object(Default::default())),
            serde_json::Value::Array(list) => {
                let i: usize = part.parse().map_err(|_| bad())?;
                list.get_mut(i).ok_or_else(bad)?
            }
            _ => return Err(bad()),
        };
    }
    match at {
        serde_json::Value::Object(map) => {
            if value.is_null() {
                map.remove(last);
            } else {
                map.insert(last.clone(), value);
            }
        }
        serde_json::Value::Array(list) => {
            let i: usize = last.parse().map_err(|_| bad())?;
            *list.get_mut(i).ok_or_else(bad)? = value;
        }
        _ => return Err(bad()),
    }
    Ok(())
}

/// `/address/city` as `address › city`.
fn pointer_words(pointer: &str) -> String {
    let words: Vec<String> = pointer
        .trim_start_matches('/')
        .split('/')
        .map(|p| p.replace("~1", "/").replace("~0", "~"))
        .collect();
    words.join(" › ")
}

/// A value as a person reads it: text as is, "(none)" for absent.
fn show_value(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "(none)".into(),
        serde_json::Value::String(s) => s.clone(),
        other => chartsync_merge::to_yaml(other).trim_end().to_string(),
    }
}

async fn render(
    sat: Arc<Satellite>,
    session: Session,
    message: Option<(&'static str, String)>,
) -> Response {
    let built = blocking(move || Ok(page(&sat, &session, message))).await;
    match built {
        Ok(html) => ui::page(StatusCode::OK, "chartsync: clinic", &html),
        Err(e) => e.into_response(),
    }
}

fn page(sat: &Satellite, session: &Session, message: Option<(&'static str, String)>) -> String {
    let now = chrono::Utc::now().timestamp();
    let (pending, conflicts) = sat.db.counts().unwrap_or((0, 0));
    let jobs = sat.db.job_records().unwrap_or_default();
    let set_aside = sat.db.set_aside_count().unwrap_or(0);
    let (disk_full, disk) = words::disk_sentence(&sat.config.data_dir, &sat.config.disk);
    let last_ok = |job: &str| {
        jobs.iter()
            .find(|j| j.job == job)
            .and_then(|j| j.last_success.as_ref().map(|(t, _)| *t))
    };
    let failing = jobs.iter().any(|j| j.last_ok == Some(false));
    let synced_at = match (last_ok("push"), last_ok("pull")) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (Some(a), None) | (None, Some(a)) => Some(a),
        (None, None) => None,
    };
    let in_sync = pending == 0 && conflicts == 0 && !failing && synced_at.is_some();
    let csrf = session.csrf_field();
    let mut h = String::new();
    h.push_str(&format!(
        "<header><h1>{}</h1>{}</header>",
        esc(&sat.config.instance_name()),
        if sat.config.api_token.is_some() {
            format!("<form method=\"post\" action=\"/ui/logout\">{csrf}<button type=\"submit\">Log out</button></form>")
        } else {
            String::new()
        }
    ));
    if let Some((class, text)) = message {
        h.push_str(&format!(
            "<p class=\"msg {class}\" role=\"status\" id=\"result\">{}</p>",
            esc(&text)
        ));
    }
    let (class, headline) = if in_sync {
        (
            "ok",
            format!(
                "In sync since {}",
                synced_at.map(|t| words::ago(now, t)).unwrap_or_default()
            ),
        )
    } else {
        let mut why = Vec::new();
        if pending > 0 {
            why.push(format!("{} not yet sent", plural(pending, "change")));
        }
        if conflicts > 0 {
            why.push(format!("{} to resolve", plural(conflicts, "conflict")));
        }
        if failing {
            why.push("the last sync failed".into());
        }
        if synced_at.is_none() {
            why.push("never synced".into());
        }
        let since = synced_at
            .map(|t| format!(" (last synced {})", words::ago(now, t)))
            .unwrap_or_default();
        ("bad", format!("Not in sync: {}{since}", why.join(", ")))
    };
    h.push_str(&format!(
        "<p><span class=\"badge {class}\" id=\"sync-state\">{}</span></p>",
        esc(&headline)
    ));
    h.push_str(&format!(
        "<form method=\"post\" action=\"/ui/sync\">{csrf}<button class=\"primary\" type=\"submit\" id=\"sync-now\">Sync now</button> <span class=\"muted\">sends this clinic's changes, then gets central's (may take a while)</span></form>"
    ));
    h.push_str("<h2>Sync</h2><ul id=\"jobs\">");
    h.push_str(&format!(
        "<li>Changes waiting to be sent: <strong id=\"pending\">{pending}</strong></li>"
    ));
    if jobs.is_empty() {
        h.push_str("<li>No sync has run yet.</li>");
    }
    for job in &jobs {
        h.push_str(&format!("<li>{}</li>", esc(&words::job_sentence(job, now))));
    }
    if set_aside > 0 {
        h.push_str(&format!(
            "<li class=\"warn\">{} set aside (could not be stored here); `chartsync satellite status` gives the reasons</li>",
            plural(set_aside, "record")
        ));
    }
    h.push_str(&format!(
        "<li{}>{}</li></ul>",
        if disk_full { " class=\"bad\"" } else { "" },
        esc(&disk)
    ));
    let open = sat.db.open_conflicts().unwrap_or_default();
    h.push_str(&format!(
        "<h2 id=\"conflicts\">Conflicts to resolve ({})</h2>",
        open.len()
    ));
    if open.is_empty() {
        h.push_str(
            "<p class=\"muted\">None: every change here and at central fitted together.</p>",
        );
    }
    for c in &open {
        h.push_str(&conflict_form(c, &csrf));
    }
    h
}

fn conflict_form(c: &ConflictEntry, csrf: &str) -> String {
    let id = c.id;
    let side = |title: &str, v: &serde_json::Value, class: &str| {
        format!(
            "<div class=\"side {class}\"><strong>{}</strong><pre>{}</pre></div>",
            esc(title),
            esc(&show_value(v))
        )
    };
    format!(
        "<div class=\"conflict\" id=\"conflict-{id}\"><p><strong>{}</strong> in {} of patient <code>{}</code> <span class=\"muted\">(found {})</span></p>\
         <div class=\"sides\">{}{}{}</div>\
         <form method=\"post\" action=\"/ui/conflicts/{id}/resolve\">{csrf}\
         <label><input type=\"radio\" name=\"keep\" value=\"ours\" required> Keep this clinic's value</label>\
         <label><input type=\"radio\" name=\"keep\" value=\"theirs\"> Keep central's value</label>\
         <label><input type=\"radio\" name=\"keep\" value=\"typed\"> Use this value:</label>\
         <input type=\"text\" name=\"value\" aria-label=\"the right value\">\
         <p><button type=\"submit\">Resolve</button></p></form></div>",
        esc(&pointer_words(&c.path)),
        esc(&c.file),
        esc(&c.patient.to_string()),
        esc(&c.created_at),
        side("Before both changes", &c.base, "base"),
        side("This clinic's value", &c.ours, "ours"),
        side("Central's value (in the record now)", &c.theirs, "theirs"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pointers_set_and_remove() {
        let mut doc = json!({"name": "A", "address": {"city": "X"}, "phones": ["1", "2"]});
        set_pointer(&mut doc, "/address/city", json!("Y")).expect("set");
        set_pointer(&mut doc, "/phones/1", json!("3")).expect("set");
        set_pointer(&mut doc, "/new/deep", json!(5)).expect("set");
        set_pointer(&mut doc, "/name", serde_json::Value::Null).expect("remove");
        assert_eq!(
            doc,
            json!({"address": {"city": "Y"}, "phones": ["1", "3"], "new": {"deep": 5}})
        );
        assert!(set_pointer(&mut doc, "/phones/9", json!(1)).is_err());
        assert!(set_pointer(&mut doc, "nope", json!(1)).is_err());
    }

    #[test]
    fn typed_values() {
        assert_eq!(typed_value("42"), json!(42));
        assert_eq!(typed_value("true"), json!(true));
        assert_eq!(typed_value("Main street 4"), json!("Main street 4"));
        assert_eq!(typed_value("\"x\""), json!("\"x\""));
    }
}
