//! Hostile input, as one table: every row is one request a hostile or
//! broken client could send (bad paths, YAML and JSON bombs, bad headers,
//! ids and tokens, broken envelopes, packs and objects, slow clients, more
//! sync batches than central handles at once), the status and error code
//! it must get, and after every row a check that nothing changed: the
//! heads of a record at central and at a satellite, and how many records
//! each holds. At the end every repository passes `git fsck --strict`.
//!
//! Central runs as the real binary, so that its peak memory (VmHWM) can be
//! read around the rows meant to exhaust it (an envelope declaring
//! 600 MiB, a pack entry inflating to 400 MiB, a YAML alias bomb).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chartsync_git::{Kind, Object};
use chartsync_protocol::envelope;
use chartsync_protocol::sync::{
    CONTENT_TYPE, PROTOCOL_HEADER, PROTOCOL_VERSION, PullRequest, PushOutcome, PushRecord,
    PushRequest, PushResponse,
};
use chartsync_protocol::{CommitId, PatientId};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha1::Digest as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::daemon::{Daemon, command, wait_healthy};
use crate::support::wire::{
    SCRATCH_NAME, admin_head, commit_tree_with, craft_commit, craft_commit_bytes, encode_push,
    pack_of,
};
use crate::support::{TestSatellite, client, free_port, git};

const ADMIN: &str = "hostile-test-admin-token-0123456789abcdef";
const MAX_CONCURRENT_SYNC: usize = 2;
/// The most central's peak RSS may rise over one memory row.
const MEMORY_BOUND: u64 = 200 << 20;

/// The longest one row may take.
const ROW_TIME: Duration = Duration::from_secs(15);

/// Rows expecting behaviour another branch is adding: run and reported,
/// not failed. (name, why)
const PENDING: &[(&str, &str)] = &[];

#[derive(Clone, Copy, Debug, PartialEq)]
enum At {
    Central,
    Satellite,
}

#[derive(Clone, Copy, Debug)]
enum Auth {
    None,
    Admin,
    North,
    Revoked,
    Wrong,
}

/// One hostile request.
enum Req {
    /// The record API (or any plain HTTP route).
    Api {
        at: At,
        method: &'static str,
        path: String,
        auth: Auth,
        headers: Vec<(&'static str, Vec<u8>)>,
        body: Option<Vec<u8>>,
    },
    /// A sync route at central (`/v1/sync/<route>`).
    Sync {
        route: &'static str,
        auth: Auth,
        protocol: Option<String>,
        body: Vec<u8>,
    },
    /// Bytes written to a fresh connection; the status line read back (0:
    /// closed without one).
    Raw { at: At, bytes: Vec<u8> },
    /// Every sync slot held by clients still sending their bodies, then one
    /// more sync request.
    Busy { route: &'static str },
}

struct Row {
    name: &'static str,
    category: &'static str,
    status: u16,
    code: Option<&'static str>,
    /// Measure central's peak memory around it.
    memory: bool,
    build: Box<dyn Fn(&Ctx) -> Req>,
}

fn row(
    category: &'static str,
    name: &'static str,
    status: u16,
    code: Option<&'static str>,
    build: impl Fn(&Ctx) -> Req + 'static,
) -> Row {
    Row {
        name,
        category,
        status,
        code,
        memory: false,
        build: Box::new(build),
    }
}

fn memory(mut r: Row) -> Row {
    r.memory = true;
    r
}

/// What the servers hold, and how to reach them.
struct Ctx {
    http: reqwest::Client,
    central: String,
    sat: String,
    north: String,
    revoked: String,
    /// A record at central (catchment north).
    r: PatientId,
    /// Its head (moved only if a row wrongly changed it).
    r_head: std::cell::Cell<CommitId>,
    /// A record at the satellite.
    s: String,
}

struct Answer {
    status: u16,
    code: String,
    retry_after: bool,
}

impl Ctx {
    fn token(&self, auth: Auth) -> Option<String> {
        match auth {
            Auth::None => None,
            Auth::Admin => Some(ADMIN.to_string()),
            Auth::North => Some(self.north.clone()),
            Auth::Revoked => Some(self.revoked.clone()),
            Auth::Wrong => Some("not-a-token-anyone-was-given-0123456789".to_string()),
        }
    }

    fn url(&self, at: At) -> &str {
        match at {
            At::Central => &self.central,
            At::Satellite => &self.sat,
        }
    }

    fn auth_for(at: At) -> Auth {
        match at {
            At::Central => Auth::Admin,
            At::Satellite => Auth::None,
        }
    }

    /// `POST /v1/patients` with this JSON body (as HQ at central).
    fn create(&self, at: At, body: Value) -> Req {
        self.create_raw(at, body.to_string().into_bytes())
    }

    fn create_raw(&self, at: At, body: Vec<u8>) -> Req {
        Req::Api {
            at,
            method: "POST",
            path: "/v1/patients".into(),
            auth: Self::auth_for(at),
            headers: vec![("content-type", b"application/json".to_vec())],
            body: Some(body),
        }
    }

    /// A file set of one record.
    fn create_files(&self, at: At, files: &[(&str, &str)]) -> Req {
        let map: serde_json::Map<String, Value> = files
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        self.create(at, json!({ "files": map }))
    }

    /// The fixture record's id at `at`.
    fn id(&self, at: At) -> String {
        match at {
            At::Central => self.r.to_string(),
            At::Satellite => self.s.clone(),
        }
    }

    /// A write to the fixture record with these headers.
    fn write(
        &self,
        at: At,
        method: &'static str,
        headers: Vec<(&'static str, Vec<u8>)>,
        body: Vec<u8>,
    ) -> Req {
        Req::Api {
            at,
            method,
            path: format!("/v1/patients/{}", self.id(at)),
            auth: Self::auth_for(at),
            headers,
            body: Some(body),
        }
    }

    /// A merge patch of the fixture record, If-Match: * unless given.
    fn patch(&self, at: At, body: Vec<u8>) -> Req {
        self.write(
            at,
            "PATCH",
            vec![
                ("content-type", b"application/merge-patch+json".to_vec()),
                ("if-match", b"*".to_vec()),
            ],
            body,
        )
    }

    fn get(&self, at: At, path: String, auth: Auth) -> Req {
        Req::Api {
            at,
            method: "GET",
            path,
            auth,
            headers: vec![],
            body: None,
        }
    }

    /// A push from north of one record.
    fn push(&self, record: PushRecord) -> Req {
        self.push_body(encode_push(vec![record]))
    }

    fn push_body(&self, body: Vec<u8>) -> Req {
        Req::Sync {
            route: "push",
            auth: Auth::North,
            protocol: Some(PROTOCOL_VERSION.to_string()),
            body,
        }
    }

    /// A push of crafted objects onto the fixture record at central.
    fn push_onto_r(&self, head: CommitId, pack: Vec<u8>) -> Req {
        self.push(PushRecord {
            id: self.r,
            expected: Some(self.r_head.get()),
            head,
            pack,
        })
    }

    /// A push of crafted objects as a new record.
    fn push_new(&self, head: CommitId, pack: Vec<u8>) -> Req {
        self.push(PushRecord {
            id: PatientId::random(),
            expected: None,
            head,
            pack,
        })
    }

    async fn send(&self, req: Req) -> Answer {
        match req {
            Req::Api {
                at,
                method,
                path,
                auth,
                headers,
                body,
            } => {
                let url = format!("{}{path}", self.url(at));
                let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
                let mut request = self
                    .http
                    .request(method, url)
                    .timeout(ROW_TIME + Duration::from_secs(5));
                if let Some(token) = self.token(auth) {
                    request = request.bearer_auth(token);
                }
                for (name, value) in headers {
                    request = request.header(
                        name,
                        reqwest::header::HeaderValue::from_bytes(&value).expect("header"),
                    );
                }
                if let Some(body) = body {
                    request = request.body(body);
                }
                match request.send().await {
                    Ok(response) => answer(response).await,
                    // No answer in time (or at all): status 0.
                    Err(e) => Answer {
                        status: 0,
                        code: format!("no answer: {e}"),
                        retry_after: false,
                    },
                }
            }
            Req::Sync {
                route,
                auth,
                protocol,
                body,
            } => {
                let mut request = self
                    .http
                    .post(format!("{}/v1/sync/{route}", self.central))
                    .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
                    .timeout(Duration::from_secs(60))
                    .body(body);
                if let Some(token) = self.token(auth) {
                    request = request.bearer_auth(token);
                }
                if let Some(protocol) = protocol {
                    request = request.header(PROTOCOL_HEADER, protocol);
                }
                let response = request.send().await.expect("sync request");
                if response.status() != StatusCode::OK || route != "push" {
                    return answer(response).await;
                }
                let bytes = response.bytes().await.expect("push body");
                let decoded: PushResponse =
                    envelope::decode(&bytes, 512 << 20).expect("push response");
                let code = match &decoded.results[0].outcome {
                    PushOutcome::Refused { code, .. } => code.clone(),
                    PushOutcome::Applied { .. } => "(applied)".to_string(),
                    PushOutcome::Conflict { .. } => "(conflict)".to_string(),
                    other => format!("{other:?}"),
                };
                Answer {
                    status: 200,
                    code,
                    retry_after: false,
                }
            }
            Req::Raw { at, bytes } => {
                let addr = self.url(at).trim_start_matches("http://").to_string();
                let (status, body) = raw_exchange(&addr, &bytes).await;
                let code = body
                    .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                    .and_then(|v| v["error"].as_str().map(str::to_string))
                    .unwrap_or_default();
                Answer {
                    status,
                    code,
                    retry_after: false,
                }
            }
            Req::Busy { route } => {
                let addr = self.central.trim_start_matches("http://").to_string();
                let mut holders = Vec::new();
                for _ in 0..MAX_CONCURRENT_SYNC {
                    let mut s = TcpStream::connect(&addr).await.expect("connect");
                    let head = format!(
                        "POST /v1/sync/{route} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nContent-Type: {CONTENT_TYPE}\r\n{PROTOCOL_HEADER}: {PROTOCOL_VERSION}\r\nContent-Length: 100000\r\n\r\nCSB",
                        self.north
                    );
                    s.write_all(head.as_bytes()).await.expect("write");
                    holders.push(s);
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                let body = match route {
                    "pull" => envelope::encode(&PullRequest {
                        cursor: 0,
                        limit: 10,
                    })
                    .expect("encode"),
                    _ => encode_push(vec![]),
                };
                let answer = Box::pin(self.send(Req::Sync {
                    route,
                    auth: Auth::North,
                    protocol: Some(PROTOCOL_VERSION.to_string()),
                    body,
                }))
                .await;
                drop(holders);
                tokio::time::sleep(Duration::from_millis(300)).await;
                answer
            }
        }
    }
}

async fn answer(response: reqwest::Response) -> Answer {
    let status = response.status().as_u16();
    let retry_after = response.headers().contains_key("retry-after");
    let body: Value = response.json().await.unwrap_or(Value::Null);
    Answer {
        status,
        code: body["error"].as_str().unwrap_or_default().to_string(),
        retry_after,
    }
}

/// Writes `bytes` to a new connection (a failed write is fine: the server
/// may answer and close first) and reads the answer: its status (0 if the
/// connection closed without one) and its body.
async fn raw_exchange(addr: &str, bytes: &[u8]) -> (u16, Option<Vec<u8>>) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let _ = s.write_all(bytes).await;
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    let deadline = Instant::now() + Duration::from_secs(15);
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => {
                got.extend_from_slice(&buf[..n]);
                if let Some(end) = find(&got, b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
                    let length = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if got.len() >= end + 4 + length {
                        break;
                    }
                }
            }
        }
    }
    let text = String::from_utf8_lossy(&got).to_string();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|t| t.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = find(&got, b"\r\n\r\n").map(|end| got[end + 4..].to_vec());
    (status, body)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

// ---------------------------------------------------------------------------
// Crafting envelopes, packs and objects
// ---------------------------------------------------------------------------

/// The envelope marker and version (and protocol 4's heads digest, of no
/// heads: 20 bytes), then `frame`.
fn envelope_of(frame: &[u8]) -> Vec<u8> {
    let mut out = b"CSB".to_vec();
    out.push(PROTOCOL_VERSION);
    out.extend_from_slice(&sha1::Sha1::new().finalize());
    out.extend_from_slice(frame);
    out
}

/// A push of one record whose pack is sent in protocol 4's linked form as
/// these `[kind, content]` entries (kind 8: a commit whose tree is a
/// backward distance; 9: a tree whose entries may be), with its head said.
fn linked_push(id: PatientId, expected: Option<CommitId>, entries: Vec<(u8, Vec<u8>)>) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct Push {
        records: Vec<Record>,
    }
    #[derive(serde::Serialize)]
    struct Record {
        id: PatientId,
        expected: Option<CommitId>,
        head: CommitId,
        pack: Pack,
    }
    #[derive(serde::Serialize)]
    enum Pack {
        Linked(Vec<(u8, serde_bytes::ByteBuf)>),
    }
    envelope::encode(&Push {
        records: vec![Record {
            id,
            expected,
            head: CommitId([7; 20]),
            pack: Pack::Linked(
                entries
                    .into_iter()
                    .map(|(k, d)| (k, serde_bytes::ByteBuf::from(d)))
                    .collect(),
            ),
        }],
    })
    .expect("encode")
}

/// A linked commit entry: `distance` back to its tree, then the commit
/// without its tree line.
fn linked_commit(distance: u8, parent: CommitId) -> (u8, Vec<u8>) {
    let mut data = vec![distance];
    data.extend(
        format!(
            "parent {parent}\nauthor chartsync <chartsync@north-a> 1700000000 +0000\ncommitter chartsync <chartsync@north-a> 1700000000 +0000\n\nedit\n\nChartsync-Instance: north-a\n"
        )
        .into_bytes(),
    );
    (8, data)
}

/// A zstd frame of `size` zero bytes that declares its size, made without
/// holding them.
fn zstd_zeros(size: u64) -> Vec<u8> {
    let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 1).expect("zstd");
    encoder.include_contentsize(true).expect("contentsize");
    encoder.set_pledged_src_size(Some(size)).expect("pledge");
    let chunk = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        encoder.write_all(&chunk[..n]).expect("zstd write");
        left -= n as u64;
    }
    encoder.finish().expect("zstd finish")
}

/// A zstd frame of `data` that does not declare its size.
fn zstd_undeclared(data: &[u8]) -> Vec<u8> {
    let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 3).expect("zstd");
    encoder.include_contentsize(false).expect("contentsize");
    encoder.write_all(data).expect("zstd write");
    encoder.finish().expect("zstd finish")
}

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    z.write_all(data).expect("zlib");
    z.finish().expect("zlib")
}

/// zlib of `size` zero bytes, made without holding them.
fn zlib_zeros(size: u64) -> Vec<u8> {
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    let chunk = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        z.write_all(&chunk[..n]).expect("zlib");
        left -= n as u64;
    }
    z.finish().expect("zlib")
}

/// A pack entry header: type and declared size.
fn entry_header(kind: u8, size: u64) -> Vec<u8> {
    let mut out = Vec::new();
    let mut byte = (kind << 4) | (size & 0x0f) as u8;
    let mut rest = size >> 4;
    while rest > 0 {
        out.push(byte | 0x80);
        byte = (rest & 0x7f) as u8;
        rest >>= 7;
    }
    out.push(byte);
    out
}

/// A pack of raw entries (header + data each) with a correct checksum.
fn raw_pack(entries: &[Vec<u8>]) -> Vec<u8> {
    let mut out = b"PACK".to_vec();
    out.extend_from_slice(&2u32.to_be_bytes());
    out.extend_from_slice(&(entries.len() as u32).to_be_bytes());
    for e in entries {
        out.extend_from_slice(e);
    }
    let sum = sha1::Sha1::digest(&out);
    out.extend_from_slice(&sum);
    out
}

/// A pack entry of an object (kind 1 commit, 2 tree, 3 blob).
fn object_entry(kind: u8, data: &[u8]) -> Vec<u8> {
    let mut e = entry_header(kind, data.len() as u64);
    e.extend_from_slice(&zlib(data));
    e
}

/// A raw tree from (mode, name, id) entries, in the order given.
fn raw_tree(entries: &[(&str, &[u8], git2::Oid)]) -> Object {
    let mut data = Vec::new();
    for (mode, name, id) in entries {
        data.extend_from_slice(mode.as_bytes());
        data.push(b' ');
        data.extend_from_slice(name);
        data.push(0);
        data.extend_from_slice(id.as_bytes());
    }
    Object::new(Kind::Tree, data)
}

fn blob(text: &[u8]) -> Object {
    Object::new(Kind::Blob, text.to_vec())
}

/// A commit of a raw tree (the tree and its blobs given), north's.
fn commit_of(tree: Object, mut objects: Vec<Object>, parents: &[CommitId]) -> (CommitId, Vec<u8>) {
    let id = tree.id;
    objects.push(tree);
    let (head, objects) = crate::support::wire::commit_tree(id, objects, parents);
    (head, pack_of(&objects))
}

/// A commit object's raw text, north's, with any header lines.
fn raw_commit(tree: git2::Oid, parents: &[CommitId], extra: &[u8]) -> Object {
    let mut text = format!("tree {tree}\n").into_bytes();
    for p in parents {
        text.extend_from_slice(format!("parent {p}\n").as_bytes());
    }
    text.extend_from_slice(b"author Crafted <crafted@test> 1767225600 +0000\n");
    text.extend_from_slice(
        format!("committer chartsync <chartsync@{SCRATCH_NAME}> 1767225600 +0000\n").as_bytes(),
    );
    text.extend_from_slice(extra);
    text.extend_from_slice(format!("\ncrafted\n\nChartsync-Instance: {SCRATCH_NAME}\n").as_bytes());
    Object::new(Kind::Commit, text)
}

fn commit_id(o: &Object) -> CommitId {
    CommitId::from_slice(o.id.as_bytes()).expect("id")
}

// ---------------------------------------------------------------------------
// The table
// ---------------------------------------------------------------------------

fn table() -> Vec<Row> {
    use At::{Central as C, Satellite as S};
    let y = "name: Hostile\ncatchment: north\n";
    vec![
        // --- paths -------------------------------------------------------
        row(
            "paths",
            "path ../ at central",
            400,
            Some("invalid_path"),
            move |c| c.create_files(C, &[("patient.yaml", y), ("../evil.yaml", "a: 1\n")]),
        ),
        row(
            "paths",
            "path ../ at the satellite",
            400,
            Some("invalid_path"),
            move |c| {
                c.create_files(
                    S,
                    &[("patient.yaml", y), ("notes/../../evil.yaml", "a: 1\n")],
                )
            },
        ),
        row(
            "paths",
            "absolute path",
            400,
            Some("invalid_path"),
            move |c| c.create_files(C, &[("patient.yaml", y), ("/etc/evil.yaml", "a: 1\n")]),
        ),
        row(
            "paths",
            ".git folder",
            400,
            Some("invalid_path"),
            move |c| c.create_files(C, &[("patient.yaml", y), (".git/config", "x\n")]),
        ),
        row(
            "paths",
            ".GIT folder at the satellite",
            400,
            Some("invalid_path"),
            move |c| {
                c.create_files(
                    S,
                    &[("patient.yaml", y), (".GIT/hooks/post-checkout", "x\n")],
                )
            },
        ),
        row(
            "paths",
            "git~1 (NTFS short name)",
            400,
            Some("invalid_path"),
            move |c| c.create_files(C, &[("patient.yaml", y), ("GIT~1/config", "x\n")]),
        ),
        row(
            "paths",
            ".git. (NTFS trailing dot)",
            400,
            Some("invalid_path"),
            move |c| c.create_files(C, &[("patient.yaml", y), (".git./config", "x\n")]),
        ),
        row(
            "paths",
            ".git::$INDEX_ALLOCATION (NTFS stream)",
            400,
            Some("invalid_path"),
            move |c| {
                c.create_files(
                    C,
                    &[
                        ("patient.yaml", y),
                        (".git::$INDEX_ALLOCATION/config", "x\n"),
                    ],
                )
            },
        ),
        row(
            "paths",
            ".g\\u200cit (HFS+ ignorable)",
            400,
            Some("invalid_path"),
            move |c| c.create_files(C, &[("patient.yaml", y), (".g\u{200c}it/config", "x\n")]),
        ),
        row(
            "paths",
            "NUL in a path",
            400,
            Some("invalid_path"),
            move |c| c.create_files(C, &[("patient.yaml", y), ("a\0b.yaml", "a: 1\n")]),
        ),
        row(
            "paths",
            "backslash path",
            400,
            Some("invalid_path"),
            move |c| c.create_files(S, &[("patient.yaml", y), ("..\\evil.yaml", "a: 1\n")]),
        ),
        row(
            "paths",
            "very long path (5000 bytes)",
            400,
            Some("invalid_path"),
            move |c| {
                let long = format!("{}.yaml", "a".repeat(5000));
                c.create_files(C, &[("patient.yaml", y), (&long, "a: 1\n")])
            },
        ),
        row(
            "paths",
            "pushed tree holding .git",
            200,
            Some("invalid_object"),
            move |c| {
                let b = blob(y.as_bytes());
                let hook = blob(b"#!/bin/sh\nid\n");
                let hooks = raw_tree(&[("100755", b"post-checkout", hook.id)]);
                let dotgit = raw_tree(&[("040000", b"hooks", hooks.id)]);
                let tree = raw_tree(&[
                    ("040000", b".git", dotgit.id),
                    ("100644", b"patient.yaml", b.id),
                ]);
                let (head, pack) = commit_of(tree, vec![b, hook, hooks, dotgit], &[]);
                c.push_new(head, pack)
            },
        ),
        // --- YAML --------------------------------------------------------
        memory(row(
            "yaml",
            "alias bomb (billion laughs)",
            400,
            Some("invalid_yaml"),
            |c| {
                let mut text = String::from(
                    "name: Bomb\nl0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n",
                );
                for i in 1..10 {
                    let p = i - 1;
                    text.push_str(&format!(
                    "l{i}: &l{i} [*l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}]\n"
                ));
                }
                c.create_files(C, &[("patient.yaml", &text)])
            },
        )),
        row(
            "yaml",
            "one anchor and alias",
            400,
            Some("invalid_yaml"),
            |c| c.create_files(S, &[("patient.yaml", "a: &x 1\nb: *x\n")]),
        ),
        row(
            "yaml",
            "!!python/object/apply tag",
            400,
            Some("invalid_yaml"),
            |c| {
                c.create_files(
                    C,
                    &[(
                        "patient.yaml",
                        "name: !!python/object/apply:os.system [\"id\"]\n",
                    )],
                )
            },
        ),
        row("yaml", "!!binary tag", 400, Some("invalid_yaml"), |c| {
            c.create_files(S, &[("patient.yaml", "photo: !!binary aGVsbG8=\n")])
        }),
        row("yaml", "local !tag", 400, Some("invalid_yaml"), |c| {
            c.create_files(C, &[("patient.yaml", "name: !evil x\n")])
        }),
        row(
            "yaml",
            "flow nesting {a: x 100000 at central",
            400,
            Some("invalid_yaml"),
            |c| c.create_files(C, &[("patient.yaml", &"{a: ".repeat(100_000))]),
        ),
        row(
            "yaml",
            "flow nesting [ x 100000 at the satellite",
            400,
            Some("invalid_yaml"),
            |c| c.create_files(S, &[("patient.yaml", &"[".repeat(100_000))]),
        ),
        row("yaml", "invalid YAML", 400, Some("invalid_yaml"), |c| {
            c.create_files(C, &[("patient.yaml", "name: [unclosed\n  - :\n")])
        }),
        row("yaml", "duplicate key", 400, Some("invalid_yaml"), |c| {
            c.create_files(S, &[("patient.yaml", "name: a\nname: b\n")])
        }),
        row("yaml", "two documents", 400, Some("invalid_yaml"), |c| {
            c.create_files(C, &[("patient.yaml", "name: a\n---\nname: b\n")])
        }),
        row(
            "yaml",
            "file over 1 MiB",
            400,
            Some("record_too_large"),
            |c| {
                let big = format!("notes: \"{}\"\n", "x".repeat((1 << 20) + 10));
                c.create_files(C, &[("patient.yaml", &big)])
            },
        ),
        row("yaml", "2001 files", 400, Some("too_many_files"), |c| {
            let names: Vec<String> = (0..2001).map(|i| format!("n/{i}.txt")).collect();
            let files: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "x")).collect();
            c.create_files(S, &files)
        }),
        row(
            "yaml",
            "integer over 64 bits in a merge patch",
            400,
            Some("inexact_number"),
            |c| {
                c.patch(
                    C,
                    br#"{"patient.yaml": {"weight": 12345678901234567890123}}"#.to_vec(),
                )
            },
        ),
        row(
            "yaml",
            "integer over 64 bits in YAML",
            400,
            Some("invalid_yaml"),
            |c| c.create_files(S, &[("patient.yaml", "weight: 12345678901234567890123\n")]),
        ),
        row(
            "yaml",
            "merge patch of a non-YAML file",
            400,
            Some("invalid_patch"),
            |c| c.patch(C, br#"{"notes.txt": {"a": 1}}"#.to_vec()),
        ),
        // --- JSON --------------------------------------------------------
        row("json", "malformed JSON", 400, Some("bad_json"), |c| {
            c.create_raw(C, b"{\"files\": {".to_vec())
        }),
        row(
            "json",
            "malformed JSON at the satellite",
            400,
            Some("bad_json"),
            |c| c.create_raw(S, b"\xff\xfe{}".to_vec()),
        ),
        row("json", "files is a number", 400, Some("bad_json"), |c| {
            c.create(C, json!({"files": 5}))
        }),
        row(
            "json",
            "file content is an object",
            400,
            Some("bad_json"),
            |c| c.create(S, json!({"files": {"patient.yaml": {"a": 1}}})),
        ),
        row(
            "json",
            "patch body is an array",
            400,
            Some("bad_patch"),
            |c| c.patch(S, b"[1, 2]".to_vec()),
        ),
        row(
            "json",
            "body over max_body_bytes",
            413,
            Some("body_too_large"),
            |c| {
                let mut body = b"{\"files\": {\"patient.yaml\": \"".to_vec();
                body.resize(17 << 20, b'x');
                body.extend_from_slice(b"\"}}");
                c.create_raw(C, body)
            },
        ),
        row(
            "json",
            "arrays nested 100000 deep",
            400,
            Some("bad_json"),
            |c| {
                let mut body = b"{\"patient.yaml\": {\"a\": ".to_vec();
                body.extend(std::iter::repeat_n(b'[', 100_000));
                body.extend(std::iter::repeat_n(b']', 100_000));
                body.extend_from_slice(b"}}");
                c.patch(C, body)
            },
        ),
        row(
            "json",
            "objects nested 100000 deep at the satellite",
            400,
            Some("bad_json"),
            |c| {
                let body = format!("{}1{}", "{\"a\":".repeat(100_000), "}".repeat(100_000));
                c.create_raw(S, body.into_bytes())
            },
        ),
        // --- headers -----------------------------------------------------
        row(
            "headers",
            "If-Match not quoted",
            400,
            Some("bad_precondition"),
            |c| {
                c.write(
                    C,
                    "PUT",
                    vec![
                        ("if-match", c.r_head.get().to_string().into_bytes()),
                        ("content-type", b"application/json".to_vec()),
                    ],
                    json!({"files": {"patient.yaml": "name: X\n"}})
                        .to_string()
                        .into_bytes(),
                )
            },
        ),
        row(
            "headers",
            "If-Match not a hash",
            400,
            Some("bad_precondition"),
            |c| {
                c.write(
                    S,
                    "PUT",
                    vec![
                        ("if-match", b"\"zzzz\"".to_vec()),
                        ("content-type", b"application/json".to_vec()),
                    ],
                    json!({"files": {"patient.yaml": "name: X\n"}})
                        .to_string()
                        .into_bytes(),
                )
            },
        ),
        row(
            "headers",
            "If-Match and If-None-Match",
            400,
            Some("bad_precondition"),
            |c| {
                c.write(
                    C,
                    "PUT",
                    vec![
                        ("if-match", b"*".to_vec()),
                        ("if-none-match", b"*".to_vec()),
                    ],
                    json!({"files": {"patient.yaml": "name: X\n"}})
                        .to_string()
                        .into_bytes(),
                )
            },
        ),
        row(
            "headers",
            "PUT without If-Match",
            428,
            Some("precondition_required"),
            |c| {
                c.write(
                    C,
                    "PUT",
                    vec![("content-type", b"application/json".to_vec())],
                    json!({"files": {"patient.yaml": "name: X\n"}})
                        .to_string()
                        .into_bytes(),
                )
            },
        ),
        row(
            "headers",
            "PATCH without If-Match at the satellite",
            428,
            Some("precondition_required"),
            |c| {
                c.write(
                    S,
                    "PATCH",
                    vec![("content-type", b"application/merge-patch+json".to_vec())],
                    br#"{"patient.yaml": {"x": 1}}"#.to_vec(),
                )
            },
        ),
        row(
            "headers",
            "If-Match not ASCII",
            400,
            Some("bad_header"),
            |c| {
                c.write(
                    C,
                    "PATCH",
                    vec![
                        ("content-type", b"application/merge-patch+json".to_vec()),
                        ("if-match", b"\"\xe9\"".to_vec()),
                    ],
                    br#"{"patient.yaml": {"x": 1}}"#.to_vec(),
                )
            },
        ),
        row(
            "headers",
            "Chartsync-Author without an email",
            400,
            Some("bad_header"),
            |c| {
                let mut r = c.patch(C, br#"{"patient.yaml": {"x": 1}}"#.to_vec());
                if let Req::Api { headers, .. } = &mut r {
                    headers.push(("chartsync-author", b"Dr. Nobody".to_vec()));
                }
                r
            },
        ),
        row(
            "headers",
            "Chartsync-Author not ASCII",
            400,
            Some("bad_header"),
            |c| {
                let mut r = c.patch(S, br#"{"patient.yaml": {"x": 1}}"#.to_vec());
                if let Req::Api { headers, .. } = &mut r {
                    headers.push(("chartsync-author", b"Dr. \xff <a@b>".to_vec()));
                }
                r
            },
        ),
        row(
            "headers",
            "Chartsync-Message over 4096 bytes",
            400,
            Some("bad_header"),
            |c| {
                let mut r = c.patch(C, br#"{"patient.yaml": {"x": 1}}"#.to_vec());
                if let Req::Api { headers, .. } = &mut r {
                    headers.push(("chartsync-message", vec![b'm'; 5000]));
                }
                r
            },
        ),
        row(
            "headers",
            "PATCH with Content-Type text/plain",
            415,
            Some("unsupported_media_type"),
            |c| {
                c.write(
                    C,
                    "PATCH",
                    vec![
                        ("content-type", b"text/plain".to_vec()),
                        ("if-match", b"*".to_vec()),
                    ],
                    br#"{"patient.yaml": {"x": 1}}"#.to_vec(),
                )
            },
        ),
        row("headers", "1 MiB header at central", 431, None, |c| {
            let bytes = format!(
                "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
                "a".repeat(1 << 20)
            );
            let _ = c;
            Req::Raw {
                at: C,
                bytes: bytes.into_bytes(),
            }
        }),
        row(
            "headers",
            "10000 headers at the satellite",
            431,
            None,
            |_| {
                let mut bytes = String::from("GET /healthz HTTP/1.1\r\nHost: x\r\n");
                for i in 0..10_000 {
                    bytes.push_str(&format!("X-H{i}: v\r\n"));
                }
                bytes.push_str("Connection: close\r\n\r\n");
                Req::Raw {
                    at: S,
                    bytes: bytes.into_bytes(),
                }
            },
        ),
        row(
            "headers",
            "sync without the protocol header",
            400,
            Some("protocol_version"),
            |_| Req::Sync {
                route: "push",
                auth: Auth::North,
                protocol: None,
                body: encode_push(vec![]),
            },
        ),
        row(
            "headers",
            "sync protocol version 99",
            400,
            Some("protocol_version"),
            |_| Req::Sync {
                route: "pull",
                auth: Auth::North,
                protocol: Some("99".into()),
                body: encode_push(vec![]),
            },
        ),
        // --- ids ---------------------------------------------------------
        row("ids", "id not a uuid", 400, Some("invalid_id"), |c| {
            c.get(C, "/v1/patients/not-a-uuid".into(), Auth::Admin)
        }),
        row(
            "ids",
            "id not a uuid at the satellite",
            400,
            Some("invalid_id"),
            |c| c.get(S, "/v1/patients/..%2F..%2Fetc".into(), Auth::None),
        ),
        row("ids", "v1 uuid", 400, Some("invalid_id"), |c| {
            c.get(
                C,
                "/v1/patients/6ba7b810-9dad-11d1-80b4-00c04fd430c8".into(),
                Auth::Admin,
            )
        }),
        row(
            "ids",
            "nil uuid at the satellite",
            400,
            Some("invalid_id"),
            |c| {
                c.get(
                    S,
                    "/v1/patients/00000000-0000-0000-0000-000000000000".into(),
                    Auth::None,
                )
            },
        ),
        row(
            "ids",
            "uppercase uuid (the same record, read)",
            200,
            None,
            |c| {
                c.get(
                    C,
                    format!("/v1/patients/{}", c.r.to_string().to_uppercase()),
                    Auth::Admin,
                )
            },
        ),
        row("ids", "braced uuid", 400, Some("invalid_id"), |c| {
            c.get(S, format!("/v1/patients/{{{}}}", c.s), Auth::None)
        }),
        row("ids", "empty id", 404, Some("not_found"), |c| {
            c.get(C, "/v1/patients/".into(), Auth::Admin)
        }),
        row("ids", "PUT to a bad id", 400, Some("invalid_id"), |_| {
            Req::Api {
                at: C,
                method: "PUT",
                path: "/v1/patients/x".into(),
                auth: Auth::Admin,
                headers: vec![("if-none-match", b"*".to_vec())],
                body: Some(
                    json!({"files": {"patient.yaml": "name: X\n"}})
                        .to_string()
                        .into_bytes(),
                ),
            }
        }),
        row(
            "ids",
            "resolve a conflict of a bad id at the satellite",
            400,
            Some("invalid_id"),
            |_| Req::Api {
                at: S,
                method: "POST",
                path: "/v1/conflicts/nope/resolve".into(),
                auth: Auth::None,
                headers: vec![("content-type", b"application/json".to_vec())],
                body: Some(b"{}".to_vec()),
            },
        ),
        // --- auth --------------------------------------------------------
        row("auth", "no token", 401, Some("unauthorized"), |c| {
            c.get(C, format!("/v1/patients/{}", c.r), Auth::None)
        }),
        row("auth", "wrong token", 401, Some("unauthorized"), |c| {
            c.get(C, format!("/v1/patients/{}", c.r), Auth::Wrong)
        }),
        row(
            "auth",
            "wrong token on a write",
            401,
            Some("unauthorized"),
            |c| {
                let mut r = c.patch(C, br#"{"patient.yaml": {"x": 1}}"#.to_vec());
                if let Req::Api { auth, .. } = &mut r {
                    *auth = Auth::Wrong;
                }
                r
            },
        ),
        row(
            "auth",
            "instance token on /metrics",
            403,
            Some("forbidden"),
            |c| c.get(C, "/metrics".into(), Auth::North),
        ),
        row(
            "auth",
            "revoked token on the record API",
            401,
            Some("unauthorized"),
            |c| c.get(C, format!("/v1/patients/{}", c.r), Auth::Revoked),
        ),
        row(
            "auth",
            "revoked token on push",
            401,
            Some("unauthorized"),
            |c| {
                let (head, objects) = craft_commit(
                    &[("patient.yaml", "name: Revoked\ncatchment: north\n")],
                    &[c.r_head.get()],
                );
                let mut r = c.push_onto_r(head, pack_of(&objects));
                if let Req::Sync { auth, .. } = &mut r {
                    *auth = Auth::Revoked;
                }
                r
            },
        ),
        row(
            "auth",
            "no token on push",
            401,
            Some("unauthorized"),
            |_| Req::Sync {
                route: "push",
                auth: Auth::None,
                protocol: Some(PROTOCOL_VERSION.to_string()),
                body: encode_push(vec![]),
            },
        ),
        row(
            "auth",
            "admin token on a sync route",
            403,
            Some("forbidden"),
            |_| Req::Sync {
                route: "push",
                auth: Auth::Admin,
                protocol: Some(PROTOCOL_VERSION.to_string()),
                body: encode_push(vec![]),
            },
        ),
        // --- envelopes -----------------------------------------------------
        row("envelopes", "bad marker", 400, Some("bad_batch"), |c| {
            let mut body = encode_push(vec![]);
            body[0] = b'X';
            c.push_body(body)
        }),
        row(
            "envelopes",
            "wrong envelope version",
            400,
            Some("bad_batch"),
            |c| {
                let mut body = encode_push(vec![]);
                body[3] = PROTOCOL_VERSION.wrapping_add(1);
                c.push_body(body)
            },
        ),
        memory(row(
            "envelopes",
            "zstd bomb declaring 600 MiB",
            400,
            Some("bad_batch"),
            |c| c.push_body(envelope_of(&zstd_zeros(600 << 20))),
        )),
        row(
            "envelopes",
            "frame without a declared size",
            400,
            Some("bad_batch"),
            |c| {
                let raw = encode_push(vec![]);
                let inner = zstd::bulk::decompress(&raw[24..], 1 << 20).expect("decompress");
                c.push_body(envelope_of(&zstd_undeclared(&inner)))
            },
        ),
        row(
            "envelopes",
            "frame declaring less than it holds",
            400,
            Some("bad_batch"),
            |c| {
                // A declared 16 bytes, followed by a frame of a megabyte: only
                // the first frame counts, and it holds zeros, not a message.
                let mut frame = zstd_zeros(16);
                frame.extend_from_slice(&zstd_undeclared(&vec![0u8; 1 << 20]));
                c.push_body(envelope_of(&frame))
            },
        ),
        row(
            "envelopes",
            "truncated envelope",
            400,
            Some("bad_batch"),
            |c| {
                let (head, objects) = craft_commit(
                    &[("patient.yaml", "name: T\ncatchment: north\n")],
                    &[c.r_head.get()],
                );
                let full = encode_push(vec![PushRecord {
                    id: c.r,
                    expected: Some(c.r_head.get()),
                    head,
                    pack: pack_of(&objects),
                }]);
                c.push_body(full[..full.len() / 2].to_vec())
            },
        ),
        row(
            "envelopes",
            "msgpack garbage",
            400,
            Some("bad_batch"),
            |c| {
                let garbage: Vec<u8> = (0..4096u32)
                    .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                    .collect();
                c.push_body(envelope_of(
                    &zstd::bulk::compress(&garbage, 3).expect("zstd"),
                ))
            },
        ),
        // --- protocol 4: linked packs --------------------------------------
        row(
            "linked packs",
            "a commit's tree referenced forward",
            400,
            Some("bad_batch"),
            |c| {
                let tree = raw_tree(&[("100644", b"patient.yaml", blob(b"name: L\n").id)]);
                c.push_body(linked_push(
                    c.r,
                    Some(c.r_head.get()),
                    vec![linked_commit(1, c.r_head.get()), (2, tree.data)],
                ))
            },
        ),
        row(
            "linked packs",
            "a reference to itself",
            400,
            Some("bad_batch"),
            |c| {
                c.push_body(linked_push(
                    c.r,
                    Some(c.r_head.get()),
                    vec![linked_commit(0, c.r_head.get())],
                ))
            },
        ),
        row(
            "linked packs",
            "a commit's tree that is a blob",
            400,
            Some("bad_batch"),
            |c| {
                c.push_body(linked_push(
                    c.r,
                    Some(c.r_head.get()),
                    vec![(3, b"name: L\n".to_vec()), linked_commit(1, c.r_head.get())],
                ))
            },
        ),
        row(
            "linked packs",
            "a tree entry referencing past the first entry",
            400,
            Some("bad_batch"),
            |c| {
                let mut tree = b"100644 patient.yaml\0".to_vec();
                tree.extend([0x80, 0x80, 0x01]);
                c.push_body(linked_push(c.r, Some(c.r_head.get()), vec![(9, tree)]))
            },
        ),
        row(
            "linked packs",
            "a corrupted file under a derived head (the heads digest)",
            400,
            Some("bad_batch"),
            |c| {
                let (head, mut objects) = craft_commit(
                    &[("patient.yaml", "name: Corrupted\ncatchment: north\n")],
                    &[c.r_head.get()],
                );
                // In the store's order (commit, tree, blob), so that the wire
                // list (reversed) names the blob and the tree by reference
                // and the head is derived.
                objects.sort_by_key(|o| o.kind.type_code());
                let (marker, mut raw) = envelope::prepare(
                    &PushRequest {
                        records: vec![PushRecord {
                            id: c.r,
                            expected: Some(c.r_head.get()),
                            head,
                            pack: pack_of(&objects),
                        }],
                    },
                    PROTOCOL_VERSION,
                )
                .expect("prepare");
                let at = find(&raw, b"Corrupted").expect("the file in the message");
                raw[at] = b'c';
                let mut body = marker;
                body.extend(zstd::bulk::compress(&raw, 3).expect("zstd"));
                c.push_body(body)
            },
        ),
        row("envelopes", "empty body", 400, Some("bad_batch"), |c| {
            c.push_body(Vec::new())
        }),
        row(
            "envelopes",
            "a pull message sent to push",
            400,
            Some("bad_batch"),
            |c| {
                c.push_body(
                    envelope::encode(&PullRequest {
                        cursor: 0,
                        limit: 1,
                    })
                    .expect("encode"),
                )
            },
        ),
        // --- packs -------------------------------------------------------
        row(
            "packs",
            "pack of random bytes",
            200,
            Some("corrupt_pack"),
            |c| {
                let (head, _) = craft_commit(
                    &[("patient.yaml", "name: P\ncatchment: north\n")],
                    &[c.r_head.get()],
                );
                c.push_onto_r(
                    head,
                    b"PACK\0\0\0\x02\0\0\0\x03garbagegarbagegarbage".to_vec(),
                )
            },
        ),
        row("packs", "truncated pack", 200, Some("corrupt_pack"), |c| {
            let (head, objects) = craft_commit(
                &[("patient.yaml", "name: P\ncatchment: north\n")],
                &[c.r_head.get()],
            );
            let pack = pack_of(&objects);
            c.push_onto_r(head, pack[..pack.len() - 30].to_vec())
        }),
        row(
            "packs",
            "wrong pack checksum",
            200,
            Some("corrupt_pack"),
            |c| {
                let (head, objects) = craft_commit(
                    &[("patient.yaml", "name: P\ncatchment: north\n")],
                    &[c.r_head.get()],
                );
                let mut pack = pack_of(&objects);
                let last = pack.len() - 1;
                pack[last] ^= 0xff;
                c.push_onto_r(head, pack)
            },
        ),
        row(
            "packs",
            "delta to a missing base",
            200,
            Some("corrupt_pack"),
            |c| {
                let (head, objects) = craft_commit(
                    &[("patient.yaml", "name: P\ncatchment: north\n")],
                    &[c.r_head.get()],
                );
                let mut entries: Vec<Vec<u8>> = objects
                    .iter()
                    .map(|o| {
                        object_entry(
                            match o.kind {
                                Kind::Commit => 1,
                                Kind::Tree => 2,
                                _ => 3,
                            },
                            &o.data,
                        )
                    })
                    .collect();
                // A ref-delta against an object nobody has: base 10 bytes,
                // result 5 bytes, insert "hello".
                let mut delta_entry = entry_header(7, 8);
                delta_entry.extend_from_slice(&[0xab; 20]);
                delta_entry.extend_from_slice(&zlib(&[10, 5, 5, b'h', b'e', b'l', b'l', b'o']));
                entries.push(delta_entry);
                c.push_onto_r(head, raw_pack(&entries))
            },
        ),
        row(
            "packs",
            "pack without the head commit",
            200,
            Some("incomplete_pack"),
            |c| {
                let (head, mut objects) = craft_commit(
                    &[("patient.yaml", "name: P\ncatchment: north\n")],
                    &[c.r_head.get()],
                );
                objects.pop();
                c.push_onto_r(head, pack_of(&objects))
            },
        ),
        row(
            "packs",
            "pack declaring more objects than it holds",
            200,
            Some("corrupt_pack"),
            |c| {
                let (head, objects) = craft_commit(
                    &[("patient.yaml", "name: P\ncatchment: north\n")],
                    &[c.r_head.get()],
                );
                let entries: Vec<Vec<u8>> = objects
                    .iter()
                    .map(|o| {
                        object_entry(
                            match o.kind {
                                Kind::Commit => 1,
                                Kind::Tree => 2,
                                _ => 3,
                            },
                            &o.data,
                        )
                    })
                    .collect();
                let mut pack = raw_pack(&entries);
                pack[8..12].copy_from_slice(&1000u32.to_be_bytes());
                c.push_onto_r(head, pack)
            },
        ),
        memory(row(
            "packs",
            "blob inflating to 400 MiB",
            400,
            Some("bad_batch"),
            |c| {
                let size: u64 = 400 << 20;
                let mut big = entry_header(3, size);
                big.extend_from_slice(&zlib_zeros(size));
                let blob_id =
                    git2::Oid::hash_object(git2::ObjectType::Blob, b"placeholder").expect("oid");
                let tree = raw_tree(&[("100644", b"patient.yaml", blob_id)]);
                let commit = raw_commit(tree.id, &[c.r_head.get()], b"");
                let pack = raw_pack(&[
                    big,
                    object_entry(2, &tree.data),
                    object_entry(1, &commit.data),
                ]);
                c.push_onto_r(commit_id(&commit), pack)
            },
        )),
        // --- objects -----------------------------------------------------
        row(
            "objects",
            "commit with NUL in a header",
            200,
            Some("invalid_object"),
            |c| {
                let b = blob(b"name: O\ncatchment: north\n");
                let tree = raw_tree(&[("100644", b"patient.yaml", b.id)]);
                let commit = raw_commit(tree.id, &[c.r_head.get()], b"x-evil a\0b\n");
                let pack = pack_of(&[b, tree, commit.clone()]);
                c.push_onto_r(commit_id(&commit), pack)
            },
        ),
        row(
            "objects",
            "tree entry git~1",
            200,
            Some("invalid_object"),
            |c| {
                let b = blob(b"name: O\ncatchment: north\n");
                let inner = raw_tree(&[("100644", b"config", b.id)]);
                let tree = raw_tree(&[
                    ("040000", b"git~1", inner.id),
                    ("100644", b"patient.yaml", b.id),
                ]);
                let (head, pack) = commit_of(tree, vec![b, inner], &[c.r_head.get()]);
                c.push_onto_r(head, pack)
            },
        ),
        row(
            "objects",
            "unsorted tree",
            200,
            Some("invalid_object"),
            |c| {
                let b = blob(b"name: O\ncatchment: north\n");
                let tree = raw_tree(&[
                    ("100644", b"patient.yaml", b.id),
                    ("100644", b"a.yaml", b.id),
                ]);
                let (head, pack) = commit_of(tree, vec![b], &[c.r_head.get()]);
                c.push_onto_r(head, pack)
            },
        ),
        row(
            "objects",
            "duplicate tree entry",
            200,
            Some("invalid_object"),
            |c| {
                let b = blob(b"name: O\ncatchment: north\n");
                let tree = raw_tree(&[
                    ("100644", b"patient.yaml", b.id),
                    ("100644", b"patient.yaml", b.id),
                ]);
                let (head, pack) = commit_of(tree, vec![b], &[c.r_head.get()]);
                c.push_onto_r(head, pack)
            },
        ),
        row(
            "objects",
            "symlink entry",
            200,
            Some("unsupported_entry"),
            |c| {
                let b = blob(b"name: O\ncatchment: north\n");
                let link = blob(b"/etc/passwd");
                let tree = raw_tree(&[
                    ("120000", b"link.yaml", link.id),
                    ("100644", b"patient.yaml", b.id),
                ]);
                let (head, pack) = commit_of(tree, vec![b, link], &[c.r_head.get()]);
                c.push_onto_r(head, pack)
            },
        ),
        row(
            "objects",
            "unreferenced blob",
            200,
            Some("unreferenced_object"),
            |c| {
                let (head, mut objects) = craft_commit(
                    &[("patient.yaml", "name: U\ncatchment: north\n")],
                    &[c.r_head.get()],
                );
                objects.insert(0, blob(b"a stowaway nobody points to\n"));
                c.push_onto_r(head, pack_of(&objects))
            },
        ),
        row(
            "objects",
            "forged Chartsync-Instance trailer",
            200,
            Some("forged_instance"),
            |c| {
                let files: std::collections::BTreeMap<String, Vec<u8>> = [(
                    "patient.yaml".to_string(),
                    b"name: F\ncatchment: north\n".to_vec(),
                )]
                .into_iter()
                .collect();
                let (tree, objects) = chartsync_git::build_tree(&files).expect("tree");
                let (head, objects) = commit_tree_with(
                    tree,
                    objects,
                    &[c.r_head.get()],
                    "Edit\n\nChartsync-Instance: south\n",
                    "chartsync@south",
                );
                c.push_onto_r(head, pack_of(&objects))
            },
        ),
        row(
            "objects",
            "binary file in a pushed record",
            200,
            Some("not_text"),
            |c| {
                let (head, objects) = craft_commit_bytes(
                    &[
                        ("patient.yaml", b"name: B\ncatchment: north\n"),
                        ("scan.txt", b"\xff\xfe\x00\x01"),
                    ],
                    &[c.r_head.get()],
                );
                c.push_onto_r(head, pack_of(&objects))
            },
        ),
        row(
            "objects",
            "pushed YAML alias",
            200,
            Some("invalid_yaml"),
            |c| {
                let (head, objects) = craft_commit(
                    &[("patient.yaml", "name: &n A\ncatchment: north\nalias: *n\n")],
                    &[c.r_head.get()],
                );
                c.push_onto_r(head, pack_of(&objects))
            },
        ),
        row(
            "objects",
            "commit not descending from central's head",
            200,
            Some("not_descendant"),
            |c| {
                let (head, objects) =
                    craft_commit(&[("patient.yaml", "name: N\ncatchment: north\n")], &[]);
                c.push_onto_r(head, pack_of(&objects))
            },
        ),
        row(
            "objects",
            "blob where the head commit should be",
            200,
            Some("incomplete_pack"),
            |c| {
                let b = blob(b"name: B\n");
                let head = commit_id(&b);
                c.push_new(head, pack_of(&[b]))
            },
        ),
        // --- concurrency ---------------------------------------------------
        row(
            "concurrency",
            "push beyond max_concurrent_sync",
            503,
            Some("busy"),
            |_| Req::Busy { route: "push" },
        ),
        row(
            "concurrency",
            "pull beyond max_concurrent_sync",
            503,
            Some("busy"),
            |_| Req::Busy { route: "pull" },
        ),
    ]
}

// ---------------------------------------------------------------------------
// Slow clients
// ---------------------------------------------------------------------------

/// Sends `head` a byte a second; returns how long until the server closed
/// the connection (or answered), and the status if it answered.
async fn trickle(addr: String, head: Vec<u8>, bound: Duration) -> (Duration, u16) {
    let started = Instant::now();
    let mut s = TcpStream::connect(&addr).await.expect("connect");
    let mut buf = [0u8; 4096];
    let mut got = Vec::new();
    for byte in head.iter().cycle() {
        if started.elapsed() > bound {
            break;
        }
        if s.write_all(&[*byte]).await.is_err() {
            break;
        }
        match tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                got.extend_from_slice(&buf[..n]);
                break;
            }
            Err(_) => {}
        }
    }
    let text = String::from_utf8_lossy(&got).to_string();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|t| t.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (started.elapsed(), status)
}

/// One request, then idle: how long until the server closes the connection.
async fn idle(addr: String, bound: Duration) -> Option<Duration> {
    let mut s = TcpStream::connect(&addr).await.expect("connect");
    s.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).await.expect("read");
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "healthz answered");
    let started = Instant::now();
    loop {
        match tokio::time::timeout(bound.saturating_sub(started.elapsed()), s.read(&mut buf)).await
        {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
            Err(_) => return None,
        }
    }
}

/// The slow-client rows, run at once; each returns (name, failure if any).
async fn slow_clients(central: String, sat: String, r: PatientId) -> Vec<(String, Option<String>)> {
    let c = central.trim_start_matches("http://").to_string();
    let s = sat.trim_start_matches("http://").to_string();
    let header_cut = |name: &str, (took, status): (Duration, u16)| {
        let ok = took <= Duration::from_secs(15) && took >= Duration::from_secs(5);
        eprintln!("hostile: slow client {name:?}: cut off after {took:?} (status {status})");
        (
            name.to_string(),
            (!ok).then(|| format!("cut off after {took:?}, want 5..15 s")),
        )
    };
    let headers_c = trickle(
        c.clone(),
        format!("POST /v1/sync/push HTTP/1.1\r\nHost: {c}\r\nX-Slow: ").into_bytes(),
        Duration::from_secs(20),
    );
    let headers_s = trickle(
        s.clone(),
        format!("GET /v1/status HTTP/1.1\r\nHost: {s}\r\nX-Slow: ").into_bytes(),
        Duration::from_secs(20),
    );
    let idle_c = idle(c.clone(), Duration::from_secs(20));
    let idle_s = idle(s.clone(), Duration::from_secs(20));
    // The body deadline is 30 s plus a second per 8 KiB declared
    // (chartsync_http::body_deadline): a 100-byte body trickled a byte a
    // second gets 408 after 30 s.
    let body_c = async {
        let mut s = TcpStream::connect(&c).await.expect("connect");
        let head = format!(
            "PUT /v1/patients/{r} HTTP/1.1\r\nHost: {c}\r\nAuthorization: Bearer {ADMIN}\r\nIf-Match: *\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
        );
        s.write_all(head.as_bytes()).await.expect("write");
        trickle_on(s, Duration::from_secs(40)).await
    };
    let (hc, hs, ic, is, bc) = tokio::join!(headers_c, headers_s, idle_c, idle_s, body_c);
    let mut out = vec![
        header_cut("headers trickled to central", hc),
        header_cut("headers trickled to the satellite", hs),
    ];
    for (name, took) in [
        ("idle keep-alive at central", ic),
        ("idle keep-alive at the satellite", is),
    ] {
        eprintln!("hostile: slow client {name:?}: closed after {took:?}");
        let ok = took.is_some_and(|t| t <= Duration::from_secs(15));
        out.push((
            name.to_string(),
            (!ok).then(|| format!("closed after {took:?}, want within 15 s")),
        ));
    }
    let (took, status) = bc;
    eprintln!(
        "hostile: slow client \"body trickled to central\": cut off after {took:?} (status {status})"
    );
    let ok = status == 408 && took <= Duration::from_secs(40);
    out.push((
        "body trickled to central".to_string(),
        (!ok).then(|| format!("status {status} after {took:?}, want 408 within 40 s")),
    ));
    out
}

/// Trickles spaces on an open request until the server answers or closes.
async fn trickle_on(mut s: TcpStream, bound: Duration) -> (Duration, u16) {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    let mut got = Vec::new();
    while started.elapsed() < bound {
        if s.write_all(b" ").await.is_err() {
            break;
        }
        match tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                got.extend_from_slice(&buf[..n]);
                break;
            }
            Err(_) => {}
        }
    }
    let status = String::from_utf8_lossy(&got)
        .strip_prefix("HTTP/1.1 ")
        .and_then(|t| t.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (started.elapsed(), status)
}

// ---------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------

/// The bare repositories under `root` (`repos/**/*.git`).
fn repositories(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.join("repos")];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                if path.extension().is_some_and(|e| e == "git") {
                    out.push(path);
                } else {
                    stack.push(path);
                }
            }
        }
    }
    out
}

/// Peak resident memory of a process, in bytes.
fn vm_hwm(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmHWM")
        * 1024
}

/// What must not change: both heads and both record counts.
#[derive(Debug, PartialEq)]
struct State {
    central_head: Option<CommitId>,
    sat_etag: String,
    central_records: usize,
    sat_records: usize,
}

async fn state(ctx: &Ctx, central_dir: &Path, sat_dir: &Path) -> State {
    let r = ctx
        .http
        .get(format!("{}/v1/patients/{}", ctx.sat, ctx.s))
        .send()
        .await
        .expect("get at the satellite");
    assert_eq!(r.status(), StatusCode::OK);
    State {
        central_head: admin_head(&ctx.http, &ctx.central, ADMIN, ctx.r).await,
        sat_etag: r.headers()["etag"].to_str().expect("etag").to_string(),
        central_records: repositories(central_dir).len(),
        sat_records: repositories(sat_dir).len(),
    }
}

fn cli_json(args: &[&str]) -> Value {
    let out = command(args, false).output().expect("run chartsync");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let port = free_port();
    let config = dir.path().join("central.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\ndata_dir = \"central-data\"\nadmin_token = \"{ADMIN}\"\nmax_concurrent_sync = {MAX_CONCURRENT_SYNC}\n"
        ),
    )
    .expect("central.toml");
    let config = config.to_str().expect("utf-8");
    let add = |name: &str| {
        cli_json(&[
            "central",
            "instance",
            "add",
            "--config",
            config,
            "--name",
            name,
            "--catchment",
            "north",
        ])
    };
    let north = add("north");
    let south = add("south");
    let daemon = Daemon::start(&["central", "serve", "--config", config], false);
    daemon.wait_for("central listening");
    let pid = daemon.child.id();
    let http = client();
    let central = format!("http://127.0.0.1:{port}");
    wait_healthy(&http, &central).await;
    let central_dir = dir.path().join("central-data");

    // Revoked while central runs.
    let south_id = south["id"].as_u64().expect("id").to_string();
    let revoked = cli_json(&[
        "central", "instance", "revoke", &south_id, "--config", config,
    ]);
    assert_eq!(revoked["revoked"], true);
    let revoked_token = south["token"].as_str().expect("token").to_string();
    let started = Instant::now();
    loop {
        let status = http
            .get(format!("{central}/v1/patients/{}", PatientId::random()))
            .bearer_auth(&revoked_token)
            .send()
            .await
            .expect("get")
            .status();
        if status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "revocation");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let r = http
        .post(format!("{central}/v1/patients"))
        .bearer_auth(ADMIN)
        .json(&json!({"files": {"patient.yaml": "name: Fixture\ncatchment: north\n"}}))
        .send()
        .await
        .expect("create");
    assert_eq!(r.status(), StatusCode::CREATED);
    let body: Value = r.json().await.expect("json");
    let r_id: PatientId = body["id"].as_str().expect("id").parse().expect("id");
    let r_head: CommitId = body["head"].as_str().expect("head").parse().expect("head");

    let sat_dir = dir.path().join("satellite");
    let sat = TestSatellite::builder(&sat_dir)
        .central(&central)
        .instance(
            u32::try_from(north["id"].as_u64().expect("id")).expect("id"),
            north["token"].as_str().expect("token"),
        )
        .start()
        .await;
    let (s_id, _) = sat.create(&http, "name: Local\ncatchment: north\n").await;

    let ctx = Ctx {
        http: http.clone(),
        central: central.clone(),
        sat: sat.url.clone(),
        north: north["token"].as_str().expect("token").to_string(),
        revoked: revoked_token,
        r: r_id,
        r_head: std::cell::Cell::new(r_head),
        s: s_id,
    };
    let slow = tokio::spawn(slow_clients(central.clone(), sat.url.clone(), r_id));

    let mut before = state(&ctx, &central_dir, &sat_dir).await;
    assert_eq!((before.central_records, before.sat_records), (1, 1));
    let rows = table();
    let mut failures: Vec<String> = Vec::new();
    let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
    let pending = |name: &str| {
        PENDING
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, why)| *why)
    };
    for row in &rows {
        *counts.entry(row.category).or_default() += 1;
        let started = Instant::now();
        let peak_before = vm_hwm(pid);
        let answer = ctx.send((row.build)(&ctx)).await;
        let mut wrong = Vec::new();
        if answer.status != row.status {
            wrong.push(format!("status {} (want {})", answer.status, row.status));
        }
        if let Some(code) = row.code
            && answer.code != code
        {
            wrong.push(format!("code {:?} (want {code:?})", answer.code));
        }
        if started.elapsed() > ROW_TIME {
            wrong.push(format!(
                "took {:?} (want within {ROW_TIME:?})",
                started.elapsed()
            ));
        }
        if row.status == 503 && !answer.retry_after {
            wrong.push("no Retry-After".to_string());
        }
        if row.memory {
            let peak_after = vm_hwm(pid);
            let rise = peak_after.saturating_sub(peak_before);
            eprintln!(
                "hostile: memory {:?}: central peak RSS {} MiB before, {} MiB after (rise {} MiB, bound {} MiB)",
                row.name,
                peak_before >> 20,
                peak_after >> 20,
                rise >> 20,
                MEMORY_BOUND >> 20
            );
            if rise >= MEMORY_BOUND {
                wrong.push(format!("peak RSS rose {} MiB", rise >> 20));
            }
        }
        if daemon_exited(pid) {
            failures.push(format!("{}: central died", row.name));
            break;
        }
        let after = state(&ctx, &central_dir, &sat_dir).await;
        if after != before {
            wrong.push(format!("state changed: {before:?} -> {after:?}"));
            if let Some(head) = after.central_head {
                ctx.r_head.set(head);
            }
            before = after;
        }
        eprintln!(
            "hostile: {:<12} {:<50} {} {:<22} {:?}",
            row.category,
            row.name,
            answer.status,
            answer.code,
            started.elapsed()
        );
        match (wrong.is_empty(), pending(row.name)) {
            (true, None) => {}
            (true, Some(_)) => eprintln!("hostile: PENDING row {:?} now passes: flip it", row.name),
            (false, Some(why)) => {
                eprintln!(
                    "hostile: PENDING {:?} ({why}): {}",
                    row.name,
                    wrong.join("; ")
                )
            }
            (false, None) => failures.push(format!("{}: {}", row.name, wrong.join("; "))),
        }
    }

    for (name, failure) in slow.await.expect("slow clients") {
        *counts.entry("slow clients").or_default() += 1;
        if let Some(f) = failure {
            failures.push(format!("{name}: {f}"));
        }
    }
    let after = state(&ctx, &central_dir, &sat_dir).await;
    if after != before {
        failures.push(format!(
            "state changed by slow clients: {before:?} -> {after:?}"
        ));
    }
    let total: usize = counts.values().sum();
    eprintln!("hostile: {total} cases: {counts:?}");
    assert!(total >= 60, "{total} cases");

    sat.stop().await;
    drop(daemon);
    let repos: Vec<PathBuf> = repositories(&central_dir)
        .into_iter()
        .chain(repositories(&sat_dir))
        .collect();
    assert_eq!(repos.len(), after.central_records + after.sat_records);
    for repo in repos {
        let out = git(&repo, &["fsck", "--strict"]);
        if !out.status.success() {
            failures.push(format!(
                "git fsck --strict {}: {}",
                repo.display(),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn daemon_exited(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("State:") && l.contains('Z'))
        })
        .unwrap_or(true)
}
