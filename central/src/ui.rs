//! HQ's page (`GET /ui`, admin token): every clinic with its last
//! successful push / pull / fetch-new, lag (changes at central it has not
//! pulled), the pending pushes, open conflicts and set-aside records it
//! reported, its failures in words, and clinics silent for longer than
//! their schedule highlighted; plots of sync activity and lag over the
//! last 14 days, drawn on the server as SVG (no script, nothing loaded
//! from elsewhere).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chartsync_common::report::Report;
use chartsync_http::RecordService;
use chartsync_http::ui::{self, Session, esc};

use crate::Central;
use crate::auth::Caller;
use crate::db::{ActivityRow, CentralDb, Instance, SavedReport};
use crate::records::CentralApi;

/// Days the plots cover.
pub const PLOT_DAYS: i64 = 14;
/// Hours per plotted bucket.
const BUCKET_HOURS: i64 = 6;
const BUCKETS: usize = (PLOT_DAYS * 24 / BUCKET_HOURS) as usize;

/// The page routes.
pub fn routes<D: CentralDb>() -> Router<CentralApi<D>> {
    Router::new()
        .route("/ui", get(show::<D>))
        .route("/ui/style.css", get(|| async { ui::style() }))
        .route("/ui/login", post(login::<D>))
        .route("/ui/logout", post(logout::<D>))
        .route("/ui/duplicates/dismiss", post(dismiss::<D>))
        .route("/ui/duplicates/merge", post(merge::<D>))
}

/// The pair named by a duplicates-queue form (fields `a` and `b`), once
/// the form's session and CSRF token are checked; else the answer to give.
async fn pair_form<D: CentralDb>(
    api: &CentralApi<D>,
    headers: &HeaderMap,
    body: Body,
) -> Result<(chartsync_protocol::PatientId, chartsync_protocol::PatientId), Response> {
    let required: [ui::Field<'_>; 3] = [("csrf", None), ("a", None), ("b", None)];
    let form = ui::read_form(headers, body, 64 << 10, &required).await?;
    let Some(session) = api.0.ui.get(headers) else {
        return Err(ui::redirect("/ui"));
    };
    if !session.csrf_ok(&form) {
        return Err(StatusCode::FORBIDDEN.into_response());
    }
    let id = |name: &str| {
        form.get(name)
            .and_then(|v| v.parse::<chartsync_protocol::PatientId>().ok())
    };
    let (Some(a), Some(b)) = (id("a"), id("b")) else {
        return Err(ui::page(
            StatusCode::BAD_REQUEST,
            TITLE,
            "<p class=\"msg bad\">Those are not patient ids. <a href=\"/ui\">Back to the page</a></p>",
        ));
    };
    Ok((a, b))
}

/// "Same person: merge": record `b` is merged into record `a` (the first
/// listed stays) at their current heads, as `POST
/// /v1/patients/{a}/merge` does; the page then says what was kept and
/// which values differed.
async fn merge<D: CentralDb>(
    State(api): State<CentralApi<D>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (a, b) = match pair_form(&api, &headers, body).await {
        Ok(pair) => pair,
        Err(r) => return r,
    };
    let result = async {
        let kept = api.read(Caller::Admin, a).await?;
        let other = api.read(Caller::Admin, b).await?;
        let meta = chartsync_store::CommitMeta::new(
            "HQ",
            "hq@localhost",
            &format!("Merge record {b} into this one (same person, from HQ's page)"),
        );
        chartsync_http::merge_records(&api, Caller::Admin, a, kept.head, b, other.head, meta).await
    }
    .await;
    match result {
        Ok((_, conflicts)) => {
            let mut h = format!(
                "<p class=\"msg ok\">Merged: record <code>{}</code> now holds both records' data; <code>{}</code> is retired into it.</p>",
                esc(&a.to_string()),
                esc(&b.to_string())
            );
            if conflicts.is_empty() {
                h.push_str("<p>The two records agreed on every field.</p>");
            } else {
                h.push_str("<p>Where they differed, the kept record's value stays; a clinician should check these:</p><table id=\"merge-conflicts\"><thead><tr><th>Field</th><th>Kept</th><th>Other record</th></tr></thead><tbody>");
                for c in &conflicts {
                    let _ = write!(
                        h,
                        "<tr><td>{}{}</td><td>{}</td><td>{}</td></tr>",
                        esc(c["file"].as_str().unwrap_or_default()),
                        esc(c["path"].as_str().unwrap_or_default()),
                        esc(&c["kept"].to_string()),
                        esc(&c["other"].to_string())
                    );
                }
                h.push_str("</tbody></table>");
            }
            h.push_str("<p><a href=\"/ui#duplicates\">Back to the page</a></p>");
            ui::page(StatusCode::OK, TITLE, &h)
        }
        Err(e) => ui::page(
            e.status,
            TITLE,
            &format!(
                "<p class=\"msg bad\">Not merged: {}</p><p><a href=\"/ui#duplicates\">Back to the page</a></p>",
                esc(&e.message)
            ),
        ),
    }
}

/// "Not the same person": the pair is dismissed (`POST
/// /v1/duplicates/dismiss`), then back to the page.
async fn dismiss<D: CentralDb>(
    State(api): State<CentralApi<D>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (a, b) = match pair_form(&api, &headers, body).await {
        Ok(pair) => pair,
        Err(r) => return r,
    };
    if let Err(e) = api
        .0
        .db
        .dismiss_duplicate(&a, &b, chrono::Utc::now().timestamp())
        .await
    {
        return chartsync_http::ApiError::internal(&e).into_response();
    }
    ui::redirect("/ui#duplicates")
}

const TITLE: &str = "chartsync HQ";
const WHAT: &str = "HQ's admin token (admin_token in central's configuration)";

async fn show<D: CentralDb>(State(api): State<CentralApi<D>>, headers: HeaderMap) -> Response {
    let Some(session) = api.0.ui.get(&headers) else {
        return ui::login_page(TITLE, WHAT, None);
    };
    let now = chrono::Utc::now().timestamp();
    match build(&api.0, &session, now).await {
        Ok(html) => ui::page(StatusCode::OK, TITLE, &html),
        Err(e) => chartsync_http::ApiError::internal(&e).into_response(),
    }
}

async fn login<D: CentralDb>(
    State(api): State<CentralApi<D>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let form = match ui::read_form(&headers, body, 64 << 10, &[("token", None)]).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let token = form.get("token").unwrap_or_default();
    let mut auth = HeaderMap::new();
    let admin = match HeaderValue::from_str(&format!("Bearer {token}")) {
        Ok(v) => {
            auth.insert(header::AUTHORIZATION, v);
            matches!(api.caller(&auth).await, Ok(Caller::Admin))
        }
        Err(_) => false,
    };
    if !admin {
        return ui::login_page(TITLE, WHAT, Some("That is not HQ's admin token."));
    }
    let Some(session) = api.0.ui.create() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let mut response = ui::redirect("/ui");
    response
        .headers_mut()
        .insert(header::SET_COOKIE, api.0.ui.set_cookie(&session));
    response
}

async fn logout<D: CentralDb>(
    State(api): State<CentralApi<D>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let form = match ui::read_form(&headers, body, 64 << 10, &[("csrf", None)]).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    if let Some(session) = api.0.ui.get(&headers)
        && !session.csrf_ok(&form)
    {
        return StatusCode::FORBIDDEN.into_response();
    }
    api.0.ui.remove(&headers);
    let mut response = ui::redirect("/ui");
    response
        .headers_mut()
        .insert(header::SET_COOKIE, api.0.ui.clear_cookie());
    response
}

/// One clinic as the page shows it.
#[derive(Debug)]
pub struct ClinicRow<'a> {
    /// The instance.
    pub instance: &'a Instance,
    /// Its latest report and when central got it.
    pub report: Option<(i64, u64, Report)>,
    /// Seconds it has been silent past its schedule, if it has.
    pub silent_for: Option<i64>,
}

/// How long a clinic has been silent: its last successful push or pull is
/// older than twice its schedule's longest gap plus 15 minutes (or, with
/// no schedule reported, its last report older than 26 hours). `None`
/// when it is not.
pub fn silent_for(
    report: Option<&(i64, u64, Report)>,
    last_seen: Option<i64>,
    now: i64,
) -> Option<i64> {
    match report {
        Some((at, _, r)) => {
            let mut worst = None::<i64>;
            let mut scheduled = false;
            for job in r.jobs.iter().filter(|j| j.job == "push" || j.job == "pull") {
                let Some(every) = job.every else { continue };
                scheduled = true;
                let since = job.ok_at.unwrap_or(*at);
                let allowed = 2 * every + 900;
                if now - since > allowed {
                    worst = Some(worst.unwrap_or(0).max(now - since));
                }
            }
            if !scheduled && now - at > 26 * 3600 {
                worst = Some(now - at);
            }
            worst
        }
        None => last_seen.filter(|t| now - t > 26 * 3600).map(|t| now - t),
    }
}

async fn build<D: CentralDb>(
    central: &Arc<Central<D>>,
    session: &Session,
    now: i64,
) -> Result<String, crate::db::DbError> {
    let instances = central.db.instances().await?;
    let reports = central.db.reports().await?;
    let since_hour = now.div_euclid(3600) - PLOT_DAYS * 24 + 1;
    let activity = central.db.activity(since_hour).await?;
    let pairs = central
        .db
        .duplicate_pairs(central.config.duplicates.min_score, 0, 50)
        .await?;
    let mut html = render(&instances, &reports, &activity, session, now);
    duplicates(&mut html, &pairs, session);
    Ok(html)
}

/// The duplicates queue: the likeliest pairs, each with the fields
/// compared and a "not the same person" button.
fn duplicates(h: &mut String, pairs: &[crate::db::DuplicatePair], session: &Session) {
    let _ = write!(
        h,
        "<h2 id=\"duplicates\">Likely duplicate patients ({}{})</h2>",
        pairs.len(),
        if pairs.len() >= 50 { "+" } else { "" }
    );
    if pairs.is_empty() {
        h.push_str("<p class=\"muted\">None found.</p>");
        return;
    }
    h.push_str("<div class=\"scroll\"><table id=\"duplicate-pairs\"><thead><tr><th>Records</th><th class=\"num\">Score</th><th>Fields</th><th></th></tr></thead><tbody>");
    for p in pairs {
        let fields: Vec<serde_json::Value> = serde_json::from_str(&p.fields).unwrap_or_default();
        let _ = write!(
            h,
            "<tr class=\"pair\"><td><code>{}</code><br><code>{}</code></td><td class=\"num\">{:.2}</td><td>",
            esc(&p.a.to_string()),
            esc(&p.b.to_string()),
            p.score
        );
        for f in &fields {
            let text = |k: &str| match &f[k] {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Null => "(none)".into(),
                other => other.to_string(),
            };
            let _ = write!(
                h,
                "<div>{}: {} / {}</div>",
                esc(&text("field")),
                esc(&text("a")),
                esc(&text("b"))
            );
        }
        let _ = write!(
            h,
            "</td><td><form method=\"post\" action=\"/ui/duplicates/merge\">{csrf}<input type=\"hidden\" name=\"a\" value=\"{a}\"><input type=\"hidden\" name=\"b\" value=\"{b}\"><button type=\"submit\" title=\"the first record stays; the second is retired into it\">Same person: merge</button></form><form method=\"post\" action=\"/ui/duplicates/dismiss\">{csrf}<input type=\"hidden\" name=\"a\" value=\"{a}\"><input type=\"hidden\" name=\"b\" value=\"{b}\"><button type=\"submit\">Not the same person</button></form></td></tr>",
            csrf = session.csrf_field(),
            a = esc(&p.a.to_string()),
            b = esc(&p.b.to_string())
        );
    }
    h.push_str("</tbody></table></div>");
}

/// The page body (also used by the benchmark).
pub fn render(
    instances: &[Instance],
    reports: &[SavedReport],
    activity: &[ActivityRow],
    session: &Session,
    now: i64,
) -> String {
    let by_id: HashMap<u32, (i64, u64, Report)> = reports
        .iter()
        .filter_map(|s| crate::reports::parse(s).map(|r| (s.instance, (s.at, s.lag, r))))
        .collect();
    let since_hour = now.div_euclid(3600) - PLOT_DAYS * 24 + 1;
    let mut series: HashMap<u32, [(u64, u64); BUCKETS]> = HashMap::new();
    let mut total = [(0u64, 0u64); BUCKETS];
    for a in activity {
        let b = ((a.hour - since_hour).max(0) / BUCKET_HOURS) as usize;
        if b >= BUCKETS {
            continue;
        }
        let s = series.entry(a.instance).or_insert([(0, 0); BUCKETS]);
        s[b].0 += a.calls;
        s[b].1 = s[b].1.max(a.lag);
        total[b].0 += a.calls;
    }
    for s in series.values() {
        for (b, (_, lag)) in s.iter().enumerate() {
            total[b].1 += lag;
        }
    }
    let mut rows: Vec<ClinicRow<'_>> = instances
        .iter()
        .filter(|i| !i.revoked)
        .map(|i| {
            let report = by_id.get(&i.id).cloned();
            let silent_for = silent_for(report.as_ref(), i.last_seen, now);
            ClinicRow {
                instance: i,
                report,
                silent_for,
            }
        })
        .collect();
    rows.sort_by(|a, b| {
        b.silent_for
            .is_some()
            .cmp(&a.silent_for.is_some())
            .then_with(|| a.instance.name.cmp(&b.instance.name))
    });
    let silent = rows.iter().filter(|r| r.silent_for.is_some()).count();
    let (pending, conflicts): (u64, u64) = rows
        .iter()
        .filter_map(|r| r.report.as_ref())
        .fold((0, 0), |(p, c), (_, _, r)| (p + r.pending, c + r.conflicts));

    let mut h = String::with_capacity(4096 + rows.len() * 1800);
    let _ = write!(
        h,
        "<header><h1>chartsync HQ</h1><form method=\"post\" action=\"/ui/logout\">{}<button type=\"submit\">Log out</button></form></header>",
        session.csrf_field()
    );
    let _ = write!(
        h,
        "<p><span class=\"badge {}\" id=\"summary\">{} clinics, {}</span> <span class=\"muted\">{} changes waiting at clinics, {} open conflicts</span></p>",
        if silent > 0 { "bad" } else { "ok" },
        rows.len(),
        if silent == 1 {
            "1 silent".to_string()
        } else {
            format!("{silent} silent")
        },
        pending,
        conflicts
    );
    h.push_str("<h2>Sync activity, last 14 days</h2>");
    h.push_str(&plot(&total, now, 720, 140, true));
    h.push_str("<p class=\"muted\">Bars: sync calls from all clinics per 6 hours. Line: the clinics' lag (changes at HQ not yet pulled), summed.</p>");
    h.push_str("<h2>Clinics</h2><div class=\"scroll\"><table id=\"clinics\"><thead><tr><th>Clinic</th><th>State</th><th>Last push</th><th>Last pull</th><th>Last fetch-new</th><th class=\"num\">Lag</th><th class=\"num\">Pending</th><th class=\"num\">Conflicts</th><th>Problems</th><th>14 days</th></tr></thead><tbody>");
    let empty = [(0u64, 0u64); BUCKETS];
    for row in &rows {
        clinic_row(
            &mut h,
            row,
            series.get(&row.instance.id).unwrap_or(&empty),
            now,
        );
    }
    h.push_str("</tbody></table></div>");
    h
}

fn ago(now: i64, t: i64) -> String {
    let d = (now - t).max(0);
    match d {
        0..=59 => "just now".into(),
        60..=3599 => format!("{} min ago", d / 60),
        3600..=86399 => format!("{} h ago", d / 3600),
        _ => format!("{} days ago", d / 86400),
    }
}

fn span(d: i64) -> String {
    match d {
        0..=3599 => format!("{} min", d / 60),
        3600..=86399 => format!("{} h", d / 3600),
        _ => format!("{} days", d / 86400),
    }
}

fn clinic_row(h: &mut String, row: &ClinicRow<'_>, series: &[(u64, u64); BUCKETS], now: i64) {
    let i = row.instance;
    let state = match (&row.report, row.silent_for) {
        (_, Some(d)) => format!("<strong>SILENT for {}</strong>", span(d)),
        (None, None) => "no report yet".to_string(),
        (Some((_, _, r)), None) if r.jobs.iter().any(|j| j.ok == Some(false)) => {
            "failing".to_string()
        }
        (Some(_), None) => "ok".to_string(),
    };
    let _ = write!(
        h,
        "<tr id=\"clinic-{}\"{}><td>{} <span class=\"muted\">#{}</span></td><td class=\"state\">{state}</td>",
        i.id,
        if row.silent_for.is_some() {
            " class=\"silent\""
        } else {
            ""
        },
        esc(&i.name),
        i.id
    );
    let job_ok = |name: &str| {
        row.report
            .as_ref()
            .and_then(|(_, _, r)| r.job(name))
            .and_then(|j| j.ok_at)
            .map(|t| ago(now, t))
            .unwrap_or_else(|| "never".into())
    };
    for job in ["push", "pull", "fetch-new"] {
        let _ = write!(h, "<td>{}</td>", esc(&job_ok(job)));
    }
    match &row.report {
        Some((at, lag, r)) => {
            let lag = if *lag >= crate::reports::LAG_CAP as u64 {
                format!("{lag}+")
            } else {
                lag.to_string()
            };
            let _ = write!(
                h,
                "<td class=\"num lag\">{lag}</td><td class=\"num pending\">{}</td><td class=\"num conflicts\">{}</td><td>",
                r.pending, r.conflicts
            );
            let mut problems = Vec::new();
            for j in &r.jobs {
                if j.ok == Some(false) {
                    problems.push(format!(
                        "{}: {}",
                        j.job,
                        j.error.as_deref().unwrap_or("failed")
                    ));
                }
            }
            if r.set_aside > 0 {
                problems.push(format!("{} record(s) set aside", r.set_aside));
            }
            if r.disk_full {
                problems.push("the disk is full".into());
            }
            if problems.is_empty() {
                h.push_str("<span class=\"muted\">none</span>");
            }
            for p in problems {
                let _ = write!(h, "<div>{}</div>", esc(&p));
            }
            let _ = write!(
                h,
                "<div class=\"muted\">reported {}, v{}</div></td>",
                esc(&ago(now, *at)),
                esc(&r.version)
            );
        }
        None => h.push_str(
            "<td class=\"num\">?</td><td class=\"num\">?</td><td class=\"num\">?</td><td></td>",
        ),
    }
    let _ = write!(h, "<td>{}</td></tr>", plot(series, now, 168, 28, false));
}

/// An SVG plot of (calls, lag) per 6-hour bucket: bars for calls, a line
/// for lag (each on its own scale).
fn plot(data: &[(u64, u64); BUCKETS], now: i64, w: usize, hgt: usize, axes: bool) -> String {
    let max_calls = data.iter().map(|d| d.0).max().unwrap_or(0).max(1) as f64;
    let max_lag = data.iter().map(|d| d.1).max().unwrap_or(0).max(1) as f64;
    let pad = if axes { 18.0 } else { 0.0 };
    let (wf, hf) = (w as f64, hgt as f64 - pad);
    let bw = wf / BUCKETS as f64;
    let mut bars = String::new();
    let mut line = String::new();
    for (i, (calls, lag)) in data.iter().enumerate() {
        let x = i as f64 * bw;
        if *calls > 0 {
            let bh = (*calls as f64 / max_calls * (hf - 2.0)).max(1.0);
            let _ = write!(
                bars,
                "M{x:.1} {:.1}h{:.1}v{bh:.1}h-{:.1}z",
                hf - bh,
                bw * 0.8,
                bw * 0.8
            );
        }
        let y = hf - 1.0 - *lag as f64 / max_lag * (hf - 2.0);
        let _ = write!(
            line,
            "{}{:.1} {y:.1}",
            if i == 0 { "M" } else { "L" },
            x + bw * 0.4
        );
    }
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {w} {hgt}\" width=\"{w}\" height=\"{hgt}\" role=\"img\"><title>sync calls and lag, 14 days</title><rect width=\"{w}\" height=\"{hf}\" fill=\"#f2f4f7\"/><path d=\"{bars}\" fill=\"#7aa6e0\"/><path d=\"{line}\" fill=\"none\" stroke=\"#c0392b\" stroke-width=\"1.5\"/>"
    );
    if axes {
        let today = now.div_euclid(86400);
        for d in (0..PLOT_DAYS).step_by(2) {
            let x = (d * 24) as f64 / (PLOT_DAYS * 24) as f64 * wf;
            let day = chrono::DateTime::from_timestamp((today - PLOT_DAYS + 1 + d) * 86400, 0)
                .map(|t| t.format("%d %b").to_string())
                .unwrap_or_default();
            let _ = write!(
                svg,
                "<text x=\"{x:.0}\" y=\"{}\" font-size=\"11\" fill=\"#555\">{}</text>",
                hgt - 4,
                esc(&day)
            );
        }
        let _ = write!(
            svg,
            "<text x=\"{}\" y=\"12\" font-size=\"11\" fill=\"#555\" text-anchor=\"end\">max {} calls / 6 h, lag {}</text>",
            w - 4,
            max_calls as u64,
            max_lag as u64
        );
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;
    use chartsync_common::report::JobReport;

    fn report(ok_at: i64, every: Option<i64>) -> Report {
        Report {
            version: "0.1.0".into(),
            jobs: vec![JobReport {
                job: "push".into(),
                ok_at: Some(ok_at),
                every,
                ok: Some(true),
                ..JobReport::default()
            }],
            ..Report::default()
        }
    }

    #[test]
    fn silence_follows_the_schedule() {
        let now = 1_000_000;
        let r = (now - 60, 0, report(now - 1000, Some(300)));
        assert_eq!(silent_for(Some(&r), None, now), None);
        let r = (now - 60, 0, report(now - 2000, Some(300)));
        assert_eq!(silent_for(Some(&r), None, now), Some(2000));
        let r = (now - 27 * 3600, 0, report(now - 27 * 3600, None));
        assert_eq!(silent_for(Some(&r), None, now), Some(27 * 3600));
        assert_eq!(silent_for(None, None, now), None);
        assert_eq!(
            silent_for(None, Some(now - 30 * 3600), now),
            Some(30 * 3600)
        );
    }

    #[test]
    fn names_are_escaped() {
        let sessions = chartsync_http::ui::Sessions::default();
        let session = sessions.create().expect("session");
        let instance = Instance {
            id: 3,
            name: "<script>alert(1)</script>".into(),
            catchments: vec![],
            scope_epoch: 0,
            revoked: false,
            last_seen: None,
        };
        let html = render(&[instance], &[], &[], &session, 1_000_000);
        assert!(!html.contains("<script>"));
        assert!(html.contains("&lt;script&gt;"));
    }
}
