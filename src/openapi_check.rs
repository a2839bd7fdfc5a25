//! Keeps `docs/openapi.json` true. A real central and a real satellite are
//! started on 127.0.0.1:0; then, for every path documented in the file or
//! registered with `.route(` in the servers' sources, and every method,
//! each server is asked. A method is served when the answer is anything but
//! a router miss; it must be served exactly when the file documents it for
//! that server's role (`x-chartsync-role`: `central`, `satellite` or
//! `both`).
//!
//! A router miss is a 405 (axum: the path exists, the method does not) or
//! the servers' fallback answer to an unknown path, which is itself a JSON
//! 404 `not_found`, so it is told apart from a handler's 404 (an unknown
//! record, say) by comparing it with the answer to a path that certainly
//! does not exist.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use chartsync_protocol::PatientId;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const OPENAPI: &str = include_str!("../docs/openapi.json");

/// The methods asked of every path.
const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

/// The folders whose sources register routes.
const ROUTE_SOURCES: [&str; 3] = ["central/src", "satellite/src", "shared/http/src"];

/// What `docs/openapi.json` says: path → (role, documented methods, path
/// parameters that are integers).
type Documented = BTreeMap<String, (String, BTreeSet<String>, BTreeSet<String>)>;

fn documented() -> Documented {
    let doc: Value = serde_json::from_str(OPENAPI).expect("docs/openapi.json is JSON");
    let paths = doc
        .get("paths")
        .and_then(Value::as_object)
        .expect("docs/openapi.json has paths");
    let mut out = Documented::new();
    for (path, item) in paths {
        let role = item
            .get("x-chartsync-role")
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("{path} has no x-chartsync-role"))
            .to_string();
        assert!(
            matches!(role.as_str(), "central" | "satellite" | "both"),
            "{path}: x-chartsync-role {role:?} is not central, satellite or both"
        );
        let mut methods = BTreeSet::new();
        let mut integers = BTreeSet::new();
        let mut params: Vec<&Value> = Vec::new();
        if let Some(list) = item.get("parameters").and_then(Value::as_array) {
            params.extend(list);
        }
        for method in METHODS {
            if let Some(op) = item.get(method.to_ascii_lowercase()) {
                methods.insert(method.to_string());
                if let Some(list) = op.get("parameters").and_then(Value::as_array) {
                    params.extend(list);
                }
            }
        }
        for p in params {
            let in_path = p.get("in").and_then(Value::as_str) == Some("path");
            let integer = p.pointer("/schema/type").and_then(Value::as_str) == Some("integer");
            if let (true, true, Some(name)) =
                (in_path, integer, p.get("name").and_then(Value::as_str))
            {
                integers.insert(name.to_string());
            }
        }
        out.insert(path.clone(), (role, methods, integers));
    }
    out
}

/// The string literals passed to `.route(` / `.route_service(` in the
/// servers' sources: every path a router may serve.
fn routed_paths() -> BTreeSet<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = BTreeSet::new();
    for folder in ROUTE_SOURCES {
        let mut stack = vec![root.join(folder)];
        while let Some(dir) = stack.pop() {
            let entries = std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
            for entry in entries {
                let path = entry.expect("directory entry").path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    let text = std::fs::read_to_string(&path)
                        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
                    assert!(
                        !text.contains(".nest(") && !text.contains(".nest_service("),
                        "{} nests a router: teach src/openapi_check.rs to join the prefix",
                        path.display()
                    );
                    out.extend(route_literals(&text));
                }
            }
        }
    }
    out
}

fn route_literals(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for call in [".route(", ".route_service("] {
        for (at, _) in text.match_indices(call) {
            let rest = text[at + call.len()..].trim_start();
            if let Some(literal) = rest.strip_prefix('"')
                && let Some(end) = literal.find('"')
            {
                out.push(literal[..end].to_string());
            }
        }
    }
    out
}

/// A path with its parameters filled in: integers get 1, others a fresh
/// patient id.
fn concrete(path: &str, integers: &BTreeSet<String>) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(open) = rest.find('{') {
        let close = rest[open..]
            .find('}')
            .map(|c| open + c)
            .expect("closing brace");
        out.push_str(&rest[..open]);
        let name = &rest[open + 1..close];
        if integers.contains(name) {
            out.push('1');
        } else {
            out.push_str(&PatientId::random().to_string());
        }
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    out
}

/// A server under test.
struct Running {
    url: String,
    /// The token its record and sync routes take.
    token: Option<String>,
    /// Central: the id of the instance that `token` belongs to.
    instance: u32,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(());
        self.task
            .await
            .expect("server task")
            .expect("server stopped cleanly");
    }
}

async fn listener() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    (listener, url)
}

/// A central (SQLite) with one instance registered; its token is the one
/// the checks send.
async fn start_central(dir: &Path) -> Running {
    std::fs::create_dir_all(dir).expect("central's folder");
    let text = format!(
        "data_dir = \"{}\"\nadmin_token = \"openapi-check-admin-token-0123456789\"\n",
        dir.display()
    );
    let config = chartsync_central::CentralConfig::parse(&text, &dir.join("central.toml"))
        .expect("central config");
    let db = chartsync_central::db::sqlite::SqliteDb::open(&dir.join("central.sqlite"))
        .expect("central database");
    let central = chartsync_central::Central::open(config, db)
        .await
        .expect("open central");
    let (instance, token) = chartsync_central::auth::register_instance(
        &central.db,
        None,
        "openapi-check".to_string(),
        vec!["north".to_string()],
    )
    .await
    .expect("register an instance");
    central.refresh_instances().await.expect("instances");
    let (listener, url) = listener().await;
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(chartsync_central::serve(
        Arc::clone(&central),
        listener,
        None,
        async move {
            let _ = stopped.await;
        },
    ));
    Running {
        url,
        token: Some(token),
        instance: instance.id,
        stop,
        task,
    }
}

/// A satellite of `central`, as the instance registered there.
async fn start_satellite(dir: &Path, central: &Running) -> Running {
    let text = format!(
        "data_dir = \"{}\"\n[central]\nurl = \"{}\"\ninstance_id = {}\ntoken = \"{}\"\ntimeout_secs = 10\n",
        dir.display(),
        central.url,
        central.instance,
        central.token.as_deref().unwrap_or_default()
    );
    let config = chartsync_satellite::SatelliteConfig::parse(&text, &dir.join("satellite.toml"))
        .expect("satellite config");
    let sat = chartsync_satellite::Satellite::open(config).expect("open satellite");
    let (listener, url) = listener().await;
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(chartsync_satellite::serve(sat, listener, async move {
        let _ = stopped.await;
    }));
    Running {
        url,
        token: None,
        instance: central.instance,
        stop,
        task,
    }
}

/// Status and body of one request.
async fn ask(
    client: &reqwest::Client,
    server: &Running,
    method: &str,
    path: &str,
) -> (u16, String) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut request = client
        .request(method, format!("{}{path}", server.url))
        .header("chartsync-protocol", "2");
    if let Some(token) = &server.token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("the server answers");
    let status = response.status().as_u16();
    let body = response.text().await.expect("a body");
    (status, body)
}

/// The answers that mean "no route": the fallback's (status, body) for an
/// unknown path, and any 405.
struct Miss {
    fallback: (u16, String),
}

impl Miss {
    async fn learn(client: &reqwest::Client, server: &Running) -> Miss {
        let nowhere = format!("/v1/no-such-route-{}", PatientId::random());
        let fallback = ask(client, server, "GET", &nowhere).await;
        assert_eq!(
            fallback.0, 404,
            "an unknown path must get 404 from {}",
            server.url
        );
        let miss = Miss { fallback };
        // The detector must see a wrong method as a miss too.
        let wrong = ask(client, server, "DELETE", "/healthz").await;
        assert!(
            miss.is_miss(&wrong),
            "DELETE /healthz should be a router miss, got {wrong:?}"
        );
        miss
    }

    fn is_miss(&self, answer: &(u16, String)) -> bool {
        answer.0 == 405 || *answer == self.fallback
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_json_documents_exactly_the_routes_each_server_serves() {
    crate::cli::install_crypto();
    let documented = documented();
    let routed = routed_paths();
    assert!(
        routed.contains("/v1/patients/{id}") && routed.contains("/v1/sync/push"),
        "the route scan found too little: {routed:?}"
    );
    let dir = tempfile::tempdir().expect("temporary folder");
    let central = start_central(&dir.path().join("central")).await;
    let satellite = start_satellite(&dir.path().join("satellite"), &central).await;
    let client = reqwest::Client::builder().build().expect("HTTP client");
    let servers = [("central", &central), ("satellite", &satellite)];

    let mut misses = Vec::new();
    for (_, server) in servers {
        misses.push(Miss::learn(&client, server).await);
    }
    let paths: BTreeSet<String> = documented.keys().cloned().chain(routed).collect();
    let mut wrong = Vec::new();
    for path in &paths {
        let (role, methods, integers) = documented.get(path).cloned().unwrap_or_default();
        let concrete = concrete(path, &integers);
        for ((name, server), miss) in servers.iter().zip(&misses) {
            let for_this = role == *name || role == "both";
            for method in METHODS {
                let answer = ask(&client, server, method, &concrete).await;
                let served = !miss.is_miss(&answer);
                let says = for_this && methods.contains(method);
                if served && !says {
                    wrong.push(format!(
                        "{name} serves {method} {path} (answered {}), which docs/openapi.json does not document for it",
                        answer.0
                    ));
                }
                if says && !served {
                    wrong.push(format!(
                        "docs/openapi.json documents {method} {path} for {name}, which does not serve it (answered {} {})",
                        answer.0, answer.1
                    ));
                }
            }
        }
    }
    satellite.stop().await;
    central.stop().await;
    assert!(
        wrong.is_empty(),
        "docs/openapi.json and the routers disagree:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn route_literals_are_found_across_lines() {
    let text = "Router::new()\n    .route(\"/a\", get(x))\n    .route(\n        \"/b/{id}\",\n        get(y),\n    )\n    .route_service(\"/c\", s)";
    assert_eq!(route_literals(text), ["/a", "/b/{id}", "/c"]);
}

#[test]
fn parameters_are_filled_in() {
    let integers: BTreeSet<String> = ["n".to_string()].into();
    let path = concrete("/v1/x/{id}/y/{n}", &integers);
    let parts: Vec<&str> = path.split('/').collect();
    assert_eq!(parts[3].parse::<PatientId>().map(|_| ()).ok(), Some(()));
    assert_eq!(parts[5], "1");
}
