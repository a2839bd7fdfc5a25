//! What the clinic's and HQ's pages share: HTML escaping, the page frame
//! with its security headers, the stylesheet, sessions (a random id in an
//! HttpOnly, SameSite=Strict cookie, held here; never the token itself),
//! CSRF tokens and form parsing. The pages are plain server-rendered HTML
//! that need no JavaScript and load nothing from elsewhere.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

/// The start of the session cookie's name; each server process adds a
/// random suffix, so that two servers on one host (cookies ignore ports)
/// never overwrite each other's session.
pub const COOKIE: &str = "chartsync_ui_";

/// How long a session lasts without use.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// Most sessions held at once (the oldest go first).
pub const MAX_SESSIONS: usize = 1000;

/// `&`, `<`, `>`, `"` and `'` escaped: safe in text and in quoted
/// attributes.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The stylesheet (`GET /ui/style.css`), readable on a phone.
pub const STYLE: &str = r#"
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;padding:0 1rem 2rem;max-width:72rem;margin:auto;color:#1b1f23;background:#fafafa;line-height:1.4}
header{display:flex;flex-wrap:wrap;align-items:baseline;justify-content:space-between;gap:.5rem;border-bottom:1px solid #ddd;margin-bottom:1rem}
h1{font-size:1.3rem;margin:.8rem 0}h2{font-size:1.1rem;margin-top:1.6rem}
.badge{display:inline-block;padding:.5rem .9rem;border-radius:.4rem;font-weight:600;font-size:1.1rem}
.ok{background:#d9f2dd;color:#0b5a1b}.bad{background:#fde2e1;color:#8a1010}.warn{background:#fff1c7;color:#6b4b00}
.msg{padding:.6rem .8rem;border-radius:.4rem;margin:1rem 0}
table{border-collapse:collapse;width:100%;font-size:.95rem}
th,td{text-align:left;padding:.35rem .5rem;border-bottom:1px solid #e4e4e4;vertical-align:top}
tr.silent td{background:#fde2e1}
.num{text-align:right;font-variant-numeric:tabular-nums}
.scroll{overflow-x:auto}
button,input[type=submit]{font-size:1rem;padding:.5rem 1rem;border-radius:.4rem;border:1px solid #888;background:#fff;cursor:pointer}
button.primary{background:#1d5fbf;color:#fff;border-color:#1d5fbf}
input[type=text],input[type=password]{font-size:1rem;padding:.4rem;width:100%;max-width:24rem;box-sizing:border-box}
.conflict{background:#fff;border:1px solid #ddd;border-radius:.4rem;padding:.8rem;margin:.8rem 0}
.sides{display:grid;grid-template-columns:repeat(auto-fit,minmax(12rem,1fr));gap:.6rem;margin:.6rem 0}
.side{border:1px solid #e4e4e4;border-radius:.3rem;padding:.5rem}
.side pre{white-space:pre-wrap;word-break:break-word;margin:.3rem 0 0;font-size:.95rem}
label{display:block;margin:.2rem 0}
.muted{color:#666;font-size:.9rem}
svg{max-width:100%;height:auto}
"#;

/// A whole page with the security headers (CSP `default-src 'self'`,
/// no framing, no sniffing, no caching, no referrer).
pub fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><link rel=\"stylesheet\" href=\"/ui/style.css\"></head>\
         <body>{body}</body></html>\n",
        esc(title)
    );
    with_headers((status, html).into_response(), "text/html; charset=utf-8")
}

/// `GET /ui/style.css`.
pub fn style() -> Response {
    with_headers(STYLE.into_response(), "text/css; charset=utf-8")
}

fn with_headers(mut response: Response, content_type: &'static str) -> Response {
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; form-action 'self'; frame-ancestors 'none'"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// 303 to `to`.
pub fn redirect(to: &'static str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    response
        .headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static(to));
    response
}

/// The login page: one password field, `token`.
pub fn login_page(title: &str, what: &str, error: Option<&str>) -> Response {
    let error = error
        .map(|e| format!("<p class=\"msg bad\" role=\"alert\">{}</p>", esc(e)))
        .unwrap_or_default();
    let body = format!(
        "<header><h1>{}</h1></header>{error}\
         <form method=\"post\" action=\"/ui/login\">\
         <label for=\"token\">{}</label>\
         <p><input type=\"password\" id=\"token\" name=\"token\" autocomplete=\"current-password\" required autofocus></p>\
         <p><button class=\"primary\" type=\"submit\">Log in</button></p></form>",
        esc(title),
        esc(what)
    );
    page(
        if error.is_empty() {
            StatusCode::OK
        } else {
            StatusCode::UNAUTHORIZED
        },
        title,
        &body,
    )
}

/// Compares a given token with the expected one in constant time.
pub fn same_token(given: &str, expected: &str) -> bool {
    bool::from(given.as_bytes().ct_eq(expected.as_bytes()))
}

/// A logged-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    /// The random id in the cookie.
    pub id: String,
    /// The token every form of this session carries (field `csrf`).
    pub csrf: String,
    last_used: Instant,
}

/// Sessions held in memory (a restart logs everyone out).
#[derive(Debug)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
    cookie: String,
}

impl Default for Sessions {
    fn default() -> Self {
        let suffix: String = random_hex().chars().take(12).collect();
        Sessions {
            map: Mutex::new(HashMap::new()),
            cookie: format!("{COOKIE}{suffix}"),
        }
    }
}

fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    // Without randomness no session can be made safely: the all-zero id
    // is never accepted (see `get`).
    if getrandom::fill(&mut bytes).is_err() {
        return String::new();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Sessions {
    /// A new session; `None` if no randomness is available.
    pub fn create(&self) -> Option<Session> {
        let id = random_hex();
        let csrf = random_hex();
        if id.is_empty() || csrf.is_empty() {
            return None;
        }
        let session = Session {
            id: id.clone(),
            csrf,
            last_used: Instant::now(),
        };
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, s| s.last_used.elapsed() < SESSION_TTL);
        while map.len() >= MAX_SESSIONS {
            let oldest = map
                .values()
                .min_by_key(|s| s.last_used)
                .map(|s| s.id.clone());
            match oldest {
                Some(id) => map.remove(&id),
                None => break,
            };
        }
        map.insert(id, session.clone());
        Some(session)
    }

    /// The session whose id the request's cookie carries, if live.
    pub fn get(&self, headers: &HeaderMap) -> Option<Session> {
        let id = cookie(headers, &self.cookie)?;
        if id.len() != 64 {
            return None;
        }
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let session = map.get_mut(&id)?;
        if session.last_used.elapsed() >= SESSION_TTL {
            map.remove(&id);
            return None;
        }
        session.last_used = Instant::now();
        Some(session.clone())
    }

    /// Ends the request's session.
    pub fn remove(&self, headers: &HeaderMap) {
        if let Some(id) = cookie(headers, &self.cookie) {
            self.map
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
        }
    }
}

impl Session {
    /// Whether a form carries this session's CSRF token.
    pub fn csrf_ok(&self, form: &Form) -> bool {
        form.get("csrf")
            .is_some_and(|given| same_token(given, &self.csrf))
    }

    /// The hidden form field with the CSRF token.
    pub fn csrf_field(&self) -> String {
        format!(
            "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
            esc(&self.csrf)
        )
    }
}

impl Sessions {
    /// The `Set-Cookie` value of a session (HttpOnly, SameSite=Strict,
    /// for the pages only).
    pub fn set_cookie(&self, session: &Session) -> HeaderValue {
        HeaderValue::from_str(&format!(
            "{}={}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={}",
            self.cookie,
            session.id,
            SESSION_TTL.as_secs()
        ))
        .unwrap_or_else(|_| HeaderValue::from_static("chartsync_ui=; Path=/ui"))
    }

    /// The `Set-Cookie` value that ends a session in the browser.
    pub fn clear_cookie(&self) -> HeaderValue {
        HeaderValue::from_str(&format!(
            "{}=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0",
            self.cookie
        ))
        .unwrap_or_else(|_| HeaderValue::from_static("chartsync_ui=; Path=/ui"))
    }
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// A field a form must carry, and the values it may take (`None`: any).
pub type Field<'a> = (&'a str, Option<&'a [&'a str]>);

/// Reads a form: `Content-Type: application/x-www-form-urlencoded` (415
/// otherwise), at most `limit` bytes (413), every `required` field present
/// with an allowed value (400 otherwise). Nothing is done with a form that
/// fails these.
pub async fn read_form(
    headers: &HeaderMap,
    body: axum::body::Body,
    limit: usize,
    required: &[Field<'_>],
) -> Result<Form, Response> {
    let form_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';').next().is_some_and(|t| {
                t.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            })
        });
    if !form_type {
        return Err(page(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "chartsync: refused",
            "<p class=\"msg bad\">Send this form from the page (as application/x-www-form-urlencoded). <a href=\"/ui\">Back to the page</a></p>",
        ));
    }
    let bytes = crate::read_body(headers, body, limit)
        .await
        .map_err(IntoResponse::into_response)?;
    let form = Form::parse(&bytes);
    for (name, allowed) in required {
        let ok = match (form.get(name), allowed) {
            (None, _) => false,
            (Some(v), Some(values)) => values.contains(&v),
            (Some(_), None) => true,
        };
        if !ok {
            return Err(page(
                StatusCode::BAD_REQUEST,
                "chartsync: refused",
                &format!(
                    "<p class=\"msg bad\">This form is incomplete: {} is missing or not valid. <a href=\"/ui\">Back to the page</a></p>",
                    esc(name)
                ),
            ));
        }
    }
    Ok(form)
}

/// A parsed `application/x-www-form-urlencoded` body.
#[derive(Debug, Default, Clone)]
pub struct Form(Vec<(String, String)>);

impl Form {
    /// Parses a body (invalid percent escapes are kept as written; invalid
    /// UTF-8 is replaced).
    pub fn parse(body: &[u8]) -> Form {
        Form(
            body.split(|b| *b == b'&')
                .filter(|p| !p.is_empty())
                .map(|pair| {
                    let mut it = pair.splitn(2, |b| *b == b'=');
                    let k = decode(it.next().unwrap_or_default());
                    let v = decode(it.next().unwrap_or_default());
                    (k, v)
                })
                .collect(),
        )
    }

    /// The first value of a field.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn decode(raw: &[u8]) -> String {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < raw.len() => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (hex(raw[i + 1]), hex(raw[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_everything_that_matters() {
        assert_eq!(
            esc("<script>alert('x') & \"y\"</script>"),
            "&lt;script&gt;alert(&#39;x&#39;) &amp; &quot;y&quot;&lt;/script&gt;"
        );
    }

    #[test]
    fn forms_decode() {
        let f = Form::parse(b"token=a%2Bb+c&csrf=%E2%9C%93&x=%zz&y=%4");
        assert_eq!(f.get("token"), Some("a+b c"));
        assert_eq!(f.get("csrf"), Some("\u{2713}"));
        assert_eq!(f.get("x"), Some("%zz"));
        assert_eq!(f.get("y"), Some("%4"));
        assert_eq!(f.get("z"), None);
    }

    #[test]
    fn sessions_by_cookie_only() {
        let sessions = Sessions::default();
        let s = sessions.create().expect("session");
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("other=1; {}={}", sessions.cookie, s.id))
                .expect("header"),
        );
        assert_eq!(sessions.get(&h).map(|x| x.csrf), Some(s.csrf.clone()));
        let mut wrong = HeaderMap::new();
        wrong.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("{}={}", sessions.cookie, "0".repeat(64)))
                .expect("header"),
        );
        assert!(sessions.get(&wrong).is_none());
        assert!(s.csrf_ok(&Form::parse(format!("csrf={}", s.csrf).as_bytes())));
        assert!(!s.csrf_ok(&Form::parse(b"csrf=nope")));
        assert!(!s.csrf_ok(&Form::parse(b"")));
        sessions.remove(&h);
        assert!(sessions.get(&h).is_none());
        let cookie = sessions.set_cookie(&s);
        let text = cookie.to_str().expect("ascii");
        assert!(text.contains("HttpOnly") && text.contains("SameSite=Strict"));
    }
}
