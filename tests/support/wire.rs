//! Hand-built sync traffic for tests of central's sync endpoints: a scratch
//! record store standing in for a satellite (real commits, real packs), git
//! plumbing for commits the store itself would refuse to write, and the
//! binary envelope on the wire.

use std::collections::BTreeMap;
use std::time::Duration;

use chartsync_git::{self as git, Commit, Kind, Object, Signature};
use chartsync_protocol::envelope;
use chartsync_protocol::sync::{
    CONTENT_TYPE, PROTOCOL_HEADER, PROTOCOL_VERSION, PushRecord, PushRequest, PushResponse,
};
use chartsync_protocol::{CommitId, Files, PatientId};
use chartsync_store::{Change, CommitMeta, Condition, RecordStore, StoreOptions};
use reqwest::StatusCode;
use serde_json::Value;

/// A record store in a temporary folder, standing in for a satellite.
pub struct Scratch {
    pub store: RecordStore,
    _dir: tempfile::TempDir,
}

/// The instance name of [`Scratch::new`] and of crafted commits: what
/// central accepts from the instance registered as "north".
pub const SCRATCH_NAME: &str = "north";

impl Scratch {
    /// An empty scratch store standing in for the instance registered as
    /// "north" (its commits name it, as central requires of north's pushes).
    pub fn new() -> Scratch {
        Self::named(SCRATCH_NAME)
    }

    /// An empty scratch store whose commits name `instance`.
    pub fn named(instance: &str) -> Scratch {
        let dir = tempfile::tempdir().expect("tmp");
        let store = RecordStore::open(StoreOptions::new(dir.path().join("store"), instance))
            .expect("scratch store");
        Scratch { store, _dir: dir }
    }

    /// Creates record `id` with these files; returns its head.
    pub fn create_files(&self, id: PatientId, files: Files) -> CommitId {
        self.store
            .write(&id, Condition::MustCreate, Change::Replace(files), &meta())
            .expect("scratch create")
    }

    /// Creates record `id` holding `patient.yaml`; returns its head.
    pub fn create(&self, id: PatientId, patient_yaml: &str) -> CommitId {
        self.create_files(id, files(&[("patient.yaml", patient_yaml)]))
    }

    /// Replaces the files of record `id` on top of its head; returns the new head.
    pub fn update_files(&self, id: PatientId, files: Files) -> CommitId {
        let head = self.head(id);
        self.store
            .write(
                &id,
                Condition::MatchHead(head),
                Change::Replace(files),
                &meta(),
            )
            .expect("scratch update")
    }

    /// Replaces `patient.yaml` of record `id`; returns the new head.
    pub fn update(&self, id: PatientId, patient_yaml: &str) -> CommitId {
        self.update_files(id, files(&[("patient.yaml", patient_yaml)]))
    }

    /// The head of record `id`.
    pub fn head(&self, id: PatientId) -> CommitId {
        self.store.head(&id).expect("head").expect("record exists")
    }

    /// A push of record `id`'s head, central having last been at `expected`.
    pub fn record(&self, id: PatientId, expected: Option<CommitId>) -> PushRecord {
        let head = self.head(id);
        PushRecord {
            id,
            expected,
            head,
            pack: self
                .store
                .pack_since(&id, head, expected.as_slice())
                .expect("pack"),
        }
    }
}

fn meta() -> CommitMeta {
    CommitMeta::new("Scratch Satellite", "scratch@test", "scratch edit")
}

/// A file set.
pub fn files(list: &[(&str, &str)]) -> Files {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The objects of a commit of `files` (raw bytes, any path the tree format
/// allows, valid or not as a record) with these parents: blobs, trees and
/// the commit, and the commit's id.
pub fn craft_commit(files: &[(&str, &str)], parents: &[CommitId]) -> (CommitId, Vec<Object>) {
    craft_commit_bytes(
        &files
            .iter()
            .map(|(k, v)| (*k, v.as_bytes()))
            .collect::<Vec<_>>(),
        parents,
    )
}

/// Like [`craft_commit`], with file contents as bytes (not necessarily text).
pub fn craft_commit_bytes(
    files: &[(&str, &[u8])],
    parents: &[CommitId],
) -> (CommitId, Vec<Object>) {
    let map: BTreeMap<String, Vec<u8>> = files
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_vec()))
        .collect();
    let (tree, objects) = git::build_tree(&map).expect("tree");
    commit_tree(tree, objects, parents)
}

/// A commit of `tree` (whose objects are `objects`) with these parents: the
/// objects with the commit last, and the commit's id. It names
/// [`SCRATCH_NAME`] as the instance it was made on.
pub fn commit_tree(
    tree: git2::Oid,
    objects: Vec<Object>,
    parents: &[CommitId],
) -> (CommitId, Vec<Object>) {
    commit_tree_with(
        tree,
        objects,
        parents,
        &format!("crafted\n\nChartsync-Instance: {SCRATCH_NAME}\n"),
        &format!("chartsync@{SCRATCH_NAME}"),
    )
}

/// Like [`commit_tree`], with any message and committer email (to claim
/// another instance, or none).
pub fn commit_tree_with(
    tree: git2::Oid,
    mut objects: Vec<Object>,
    parents: &[CommitId],
    message: &str,
    committer_email: &str,
) -> (CommitId, Vec<Object>) {
    let sig = Signature::new("Crafted", "crafted@test", 1_767_225_600, 0).expect("signature");
    let committer =
        Signature::new("chartsync", committer_email, 1_767_225_600, 0).expect("signature");
    let commit = Commit {
        tree,
        parents: parents
            .iter()
            .map(|p| git2::Oid::from_bytes(p.as_bytes()).expect("oid"))
            .collect(),
        author: sig,
        committer,
        message: message.to_string(),
    };
    let object = Object::new(Kind::Commit, git::encode_commit(&commit));
    let id = CommitId::from_slice(object.id.as_bytes()).expect("commit id");
    objects.push(object);
    (id, objects)
}

/// A wire pack (uncompressed entries) of these objects.
pub fn pack_of(objects: &[Object]) -> Vec<u8> {
    git::write_pack_only(objects, 0)
}

/// Sends a body to `/v1/sync/push` with an optional bearer token and an
/// optional protocol header.
pub async fn push_raw(
    http: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    protocol: Option<&str>,
    body: Vec<u8>,
) -> reqwest::Response {
    let mut request = http
        .post(format!("{url}/v1/sync/push"))
        .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
        .timeout(Duration::from_secs(120))
        .body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(protocol) = protocol {
        request = request.header(PROTOCOL_HEADER, protocol);
    }
    request.send().await.expect("push request")
}

/// Encodes a push request.
pub fn encode_push(records: Vec<PushRecord>) -> Vec<u8> {
    envelope::encode(&PushRequest { records }).expect("encode")
}

/// Pushes records with an instance token; the answer must be 200.
pub async fn push(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    records: Vec<PushRecord>,
) -> PushResponse {
    let version = PROTOCOL_VERSION.to_string();
    let response = push_raw(http, url, Some(token), Some(&version), encode_push(records)).await;
    let status = response.status();
    let bytes = response.bytes().await.expect("push body");
    assert_eq!(
        status,
        StatusCode::OK,
        "push answered {status}: {}",
        String::from_utf8_lossy(&bytes)
    );
    envelope::decode(&bytes, 512 << 20).expect("push response")
}

/// The `error` code of a JSON error body.
pub async fn error_code(response: reqwest::Response) -> (StatusCode, String) {
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    (
        status,
        body["error"].as_str().unwrap_or_default().to_string(),
    )
}

/// Central's head of a record as HQ sees it (`None`: 404).
pub async fn admin_head(
    http: &reqwest::Client,
    url: &str,
    admin: &str,
    id: PatientId,
) -> Option<CommitId> {
    let response = http
        .get(format!("{url}/v1/patients/{id}"))
        .bearer_auth(admin)
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .expect("get");
    match response.status() {
        StatusCode::NOT_FOUND => None,
        StatusCode::OK => {
            let etag = response.headers()["etag"]
                .to_str()
                .expect("etag")
                .to_string();
            let body: Value = response.json().await.expect("json");
            let head: CommitId = body["head"]
                .as_str()
                .expect("head")
                .parse()
                .expect("commit id");
            assert_eq!(etag, format!("\"{head}\""), "ETag is the head");
            Some(head)
        }
        other => panic!(
            "GET {id} answered {other}: {}",
            response.text().await.unwrap_or_default()
        ),
    }
}

/// Sends `/v1/sync/fetch` (fetch one record by id) with an instance token.
pub async fn fetch_one(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    id: PatientId,
) -> reqwest::Response {
    let body = envelope::encode(&chartsync_protocol::sync::FetchOneRequest { id }).expect("encode");
    http.post(format!("{url}/v1/sync/fetch"))
        .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
        .header(PROTOCOL_HEADER, PROTOCOL_VERSION.to_string())
        .bearer_auth(token)
        .timeout(Duration::from_secs(60))
        .body(body)
        .send()
        .await
        .expect("fetch request")
}
