//! A small W3C WebDriver client (the HTTP protocol, spoken with reqwest) to
//! drive a real headless Chromium through `chromedriver`, as a person would:
//! open a page, fill in a field, click, read what is shown, take a
//! screenshot.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::KillOnDrop;

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A browser session; chromedriver (and its Chromium) end when dropped.
pub struct Browser {
    http: reqwest::Client,
    base: String,
    port: u16,
    session: String,
    _driver: KillOnDrop,
    /// Chromium's profile, removed after the session ends.
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    /// Ends the session first (chromedriver then closes its Chromium, which
    /// killing chromedriver alone would leave running), with a plain
    /// blocking request: a drop cannot wait for async work.
    fn drop(&mut self) {
        use std::io::{Read, Write};
        if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let _ = write!(
                stream,
                "DELETE /session/{} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                self.session, self.port
            );
            let mut sink = Vec::new();
            let _ = stream.read_to_end(&mut sink);
        }
    }
}

/// An element on the page.
pub struct Element<'a> {
    browser: &'a Browser,
    id: String,
}

/// Finds chromedriver and Chromium (Debian's `chromium-driver` and
/// `chromium`; `.ci/run` installs them).
fn tools() -> (String, String) {
    let which = |names: &[&str]| {
        names
            .iter()
            .find(|n| std::path::Path::new(n).exists())
            .map(|s| s.to_string())
    };
    let driver = which(&["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"])
        .expect("chromedriver is missing: apt-get install chromium-driver");
    let chrome = which(&["/usr/bin/chromium", "/usr/lib/chromium/chromium"])
        .expect("chromium is missing: apt-get install chromium");
    (driver, chrome)
}

impl Browser {
    /// Starts chromedriver on a free port and opens a headless Chromium
    /// window of `width` x `height`.
    pub async fn start(width: u32, height: u32) -> Browser {
        let (driver, chrome) = tools();
        let port = super::free_port();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let driver = KillOnDrop(child);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .expect("client");
        let root = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = http.get(format!("{root}/status")).send().await;
            if let Ok(r) = ready
                && let Ok(v) = r.json::<Value>().await
                && v["value"]["ready"] == true
            {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().expect("profile");
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chrome,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu",
                    "--disable-dev-shm-usage", "--no-first-run",
                    "--disable-extensions", "--hide-scrollbars",
                    format!("--window-size={width},{height}"),
                    format!("--user-data-dir={}", profile.path().display()),
                ]
            }
        }}});
        let r: Value = http
            .post(format!("{root}/session"))
            .json(&caps)
            .send()
            .await
            .expect("new session")
            .json()
            .await
            .expect("json");
        let id = r["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no browser session: {r}"))
            .to_string();
        Browser {
            http,
            base: format!("{root}/session/{id}"),
            port,
            session: id,
            _driver: driver,
            _profile: profile,
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let v: Value = request
            .send()
            .await
            .expect("webdriver")
            .json()
            .await
            .expect("webdriver json");
        if let Some(e) = v["value"].get("error") {
            panic!("webdriver {path}: {e}: {}", v["value"]["message"]);
        }
        v["value"].clone()
    }

    /// Opens a URL and waits for the page to load.
    pub async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    /// The element matching a CSS selector (waiting up to 10 s for it).
    pub async fn find(&self, css: &str) -> Element<'_> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let v: Value = self
                .http
                .post(format!("{}/element", self.base))
                .json(&json!({"using": "css selector", "value": css}))
                .send()
                .await
                .expect("webdriver")
                .json()
                .await
                .expect("json");
            if let Some(id) = v["value"][ELEMENT].as_str() {
                return Element {
                    browser: self,
                    id: id.to_string(),
                };
            }
            assert!(
                Instant::now() < deadline,
                "no element {css} on the page ({v}):\n{}",
                self.source().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Clicks the element matching `css` and waits for the page the click
    /// loads (a form's answer): until the document is a new one.
    pub async fn click_and_wait(&self, css: &str) {
        let before = self.find("html").await.id;
        self.find(css).await.click().await;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let now = self.find("html").await.id;
            if now != before {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "clicking {css} loaded no new page"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// How many elements match a CSS selector.
    pub async fn count(&self, css: &str) -> usize {
        self.call(
            reqwest::Method::POST,
            "/elements",
            Some(json!({"using": "css selector", "value": css})),
        )
        .await
        .as_array()
        .map_or(0, Vec::len)
    }

    /// The page's HTML.
    pub async fn source(&self) -> String {
        self.call(reqwest::Method::GET, "/source", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The page's visible text.
    pub async fn text(&self) -> String {
        self.find("body").await.text().await
    }

    /// A PNG of the window.
    pub async fn screenshot(&self) -> Vec<u8> {
        let b64 = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64_decode(b64.as_str().expect("base64"));
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "a PNG");
        png
    }

    /// Resizes the window.
    pub async fn resize(&self, width: u32, height: u32) {
        self.call(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        )
        .await;
    }
}

impl Element<'_> {
    /// Clicks it (and waits for a page it submits to load).
    pub async fn click(&self) {
        self.browser
            .call(
                reqwest::Method::POST,
                &format!("/element/{}/click", self.id),
                Some(json!({})),
            )
            .await;
    }

    /// Types text into it.
    pub async fn type_text(&self, text: &str) {
        self.browser
            .call(
                reqwest::Method::POST,
                &format!("/element/{}/value", self.id),
                Some(json!({ "text": text })),
            )
            .await;
    }

    /// Its visible text.
    pub async fn text(&self) -> String {
        self.browser
            .call(
                reqwest::Method::GET,
                &format!("/element/{}/text", self.id),
                None,
            )
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// An attribute's value.
    pub async fn attribute(&self, name: &str) -> Option<String> {
        self.browser
            .call(
                reqwest::Method::GET,
                &format!("/element/{}/attribute/{name}", self.id),
                None,
            )
            .await
            .as_str()
            .map(str::to_string)
    }
}

/// Standard base64 (with padding), as WebDriver sends screenshots.
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let clean: Vec<u8> = text
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
        .collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= u32::from(value(*c)) << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}
