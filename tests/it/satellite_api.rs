//! The record API (docs/api.md), walked against a real satellite on
//! 127.0.0.1:0 with a real HTTP client. Central does not exist here: the
//! satellite works offline.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{TestSatellite, client, git};

const PATIENT: &str =
    "name: Amina Diallo\nborn: 1987-03-14\nphone: '0700 000 001'\nweight_kg: 61\n";

fn etag(r: &reqwest::Response) -> String {
    r.headers()
        .get("etag")
        .expect("etag")
        .to_str()
        .expect("ascii")
        .to_string()
}

async fn start() -> (tempfile::TempDir, TestSatellite) {
    let dir = tempfile::tempdir().expect("tmp");
    // Central is unreachable: nothing listens on port 9 of localhost.
    let sat = TestSatellite::builder(dir.path())
        .central("http://127.0.0.1:9")
        .instance(1, "unused")
        .start()
        .await;
    (dir, sat)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_record_api_walk() {
    let (_dir, sat) = start().await;
    let http = client();
    let base = &sat.url;

    // Create.
    let r = http
        .post(format!("{base}/v1/patients"))
        .header("chartsync-author", "Dr. Ada Obi <ada@clinic.example>")
        .header("chartsync-message", "Register patient")
        .json(&json!({"files": {"patient.yaml": PATIENT}}))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), StatusCode::CREATED);
    let location = r.headers()["location"].to_str().expect("loc").to_string();
    let tag1 = etag(&r);
    let body: Value = r.json().await.expect("json");
    let id = body["id"].as_str().expect("id").to_string();
    assert_eq!(location, format!("/v1/patients/{id}"));
    assert_eq!(
        tag1,
        format!("\"{}\"", body["head"].as_str().expect("head"))
    );
    assert_eq!(body["files"]["patient.yaml"], PATIENT);

    // Read.
    let r = http
        .get(format!("{base}{location}"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(etag(&r), tag1);

    // A write without a precondition: 428.
    let r = http
        .put(format!("{base}{location}"))
        .json(&json!({"files": {"patient.yaml": PATIENT}}))
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), StatusCode::PRECONDITION_REQUIRED);
    let err: Value = r.json().await.expect("json");
    assert_eq!(err["error"], "precondition_required");

    // Replace with If-Match: 200, new ETag.
    let v2 = PATIENT.replace("0700 000 001", "0700 000 002");
    let r = http
        .put(format!("{base}{location}"))
        .header("if-match", &tag1)
        .json(&json!({"files": {"patient.yaml": v2}}))
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), StatusCode::OK);
    let tag2 = etag(&r);
    assert_ne!(tag1, tag2);

    // The same If-Match again: stale, 412 with a conflict body.
    let r = http
        .put(format!("{base}{location}"))
        .header("if-match", &tag1)
        .json(&json!({"files": {"patient.yaml": PATIENT.replace("61", "62")}}))
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
    let c: Value = r.json().await.expect("json");
    assert_eq!(c["error"], "conflict");
    assert_eq!(
        format!("\"{}\"", c["current_head"].as_str().expect("head")),
        tag2
    );
    assert_eq!(
        format!("\"{}\"", c["expected_head"].as_str().expect("head")),
        tag1
    );
    assert_eq!(c["changed"][0]["file"], "patient.yaml");
    assert_eq!(c["changed"][0]["path"], "/phone");
    assert_eq!(c["changed"][0]["current"], "0700 000 002");
    assert_eq!(c["current"]["patient.yaml"], v2);

    // PATCH on the stale version, touching a field nobody changed: 200.
    let r = http
        .patch(format!("{base}{location}"))
        .header("if-match", &tag1)
        .header("content-type", "application/merge-patch+json")
        .json(&json!({"patient.yaml": {"weight_kg": 63}, "notes.txt": "seen by nurse\n"}))
        .send()
        .await
        .expect("patch");
    assert_eq!(r.status(), StatusCode::OK);
    let tag3 = etag(&r);
    let body: Value = r.json().await.expect("json");
    let doc = body["files"]["patient.yaml"].as_str().expect("doc");
    assert!(doc.contains("0700 000 002") && doc.contains("63"), "{doc}");
    assert_eq!(body["files"]["notes.txt"], "seen by nurse\n");

    // PATCH on the stale version touching /phone, which changed: 412.
    let r = http
        .patch(format!("{base}{location}"))
        .header("if-match", &tag1)
        .header("content-type", "application/merge-patch+json")
        .json(&json!({"patient.yaml": {"phone": "0700 000 009"}}))
        .send()
        .await
        .expect("patch");
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
    let c: Value = r.json().await.expect("json");
    assert_eq!(c["changed"][0]["path"], "/phone");
    assert_eq!(c["changed"][0]["wanted"], "0700 000 009");
    assert_eq!(c["changed"][0]["base"], "0700 000 001");

    // PATCH deleting a file.
    let r = http
        .patch(format!("{base}{location}"))
        .header("if-match", &tag3)
        .header("content-type", "application/merge-patch+json")
        .json(&json!({"notes.txt": null}))
        .send()
        .await
        .expect("patch");
    assert_eq!(r.status(), StatusCode::OK);
    let tag4 = etag(&r);
    let body: Value = r.json().await.expect("json");
    assert!(body["files"].get("notes.txt").is_none());

    // Create with a chosen id; again: 412.
    let chosen = uuid::Uuid::new_v4().to_string();
    for expected in [StatusCode::CREATED, StatusCode::PRECONDITION_FAILED] {
        let r = http
            .put(format!("{base}/v1/patients/{chosen}"))
            .header("if-none-match", "*")
            .json(&json!({"files": {"patient.yaml": "name: Visitor\n"}}))
            .send()
            .await
            .expect("put");
        assert_eq!(r.status(), expected);
    }
    // If-Match on a record that does not exist: 404.
    let r = http
        .put(format!("{base}/v1/patients/{}", uuid::Uuid::new_v4()))
        .header("if-match", &tag1)
        .json(&json!({"files": {"patient.yaml": "a: 1\n"}}))
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // History, newest first.
    let r = http
        .get(format!("{base}{location}/history"))
        .send()
        .await
        .expect("history");
    assert_eq!(r.status(), StatusCode::OK);
    let history: Vec<Value> = r.json().await.expect("json");
    let commits: Vec<String> = history
        .iter()
        .map(|h| format!("\"{}\"", h["commit"].as_str().expect("commit")))
        .collect();
    assert_eq!(commits, vec![tag4.clone(), tag3, tag2, tag1.clone()]);
    assert_eq!(history[3]["message"], "Register patient");
    assert_eq!(history[3]["author"], "Dr. Ada Obi <ada@clinic.example>");
    assert_eq!(history[3]["instance"], "satellite-1");

    // The repository on disk, read back with plain git.
    let pid: chartsync_protocol::PatientId = id.parse().expect("id");
    let repo = sat.sat.store.layout().repo(&pid);
    let out = git(&repo, &["log", "--format=%H %an <%ae> %s"]);
    assert!(out.status.success());
    let log = String::from_utf8_lossy(&out.stdout);
    assert_eq!(log.lines().count(), 4);
    assert!(
        log.contains("Dr. Ada Obi <ada@clinic.example> Register patient"),
        "{log}"
    );
    assert!(log.starts_with(tag4.trim_matches('"')));
    let fsck = git(&repo, &["fsck", "--strict", "--full"]);
    assert!(
        fsck.status.success(),
        "{}",
        String::from_utf8_lossy(&fsck.stderr)
    );

    // Operations endpoints.
    let r = http
        .get(format!("{base}/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(r.status(), StatusCode::OK);
    let spec: Value = http
        .get(format!("{base}/openapi.json"))
        .send()
        .await
        .expect("openapi")
        .json()
        .await
        .expect("json");
    assert!(spec["paths"]["/v1/patients/{id}"]["patch"].is_object());
    assert!(spec["paths"]["/v1/status"].is_object());
    assert!(
        spec["paths"].get("/v1/sync/push").is_none(),
        "central-only paths are not listed"
    );
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("chartsync_satellite_pending_push 2"),
        "{metrics}"
    );
    sat.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_changes_nothing() {
    let (_dir, sat) = start().await;
    let http = client();
    let base = &sat.url;
    let r = http
        .post(format!("{base}/v1/patients"))
        .json(&json!({"files": {"patient.yaml": PATIENT}}))
        .send()
        .await
        .expect("post");
    let tag = etag(&r);
    let body: Value = r.json().await.expect("json");
    let id = body["id"].as_str().expect("id").to_string();
    let url = format!("{base}/v1/patients/{id}");

    struct Case {
        what: &'static str,
        method: &'static str,
        url: String,
        headers: Vec<(&'static str, String)>,
        body: String,
        status: u16,
        code: &'static str,
    }
    let json_ct = ("content-type", "application/json".to_string());
    let patch_ct = ("content-type", "application/merge-patch+json".to_string());
    let if_match = ("if-match", tag.clone());
    let put = |what, body: Value, status, code| Case {
        what,
        method: "PUT",
        url: url.clone(),
        headers: vec![json_ct.clone(), if_match.clone()],
        body: body.to_string(),
        status,
        code,
    };
    let cases = vec![
        put(
            "dot-dot path",
            json!({"files": {"../../etc/passwd": "x"}}),
            400,
            "invalid_path",
        ),
        put(
            "absolute path",
            json!({"files": {"/etc/passwd": "x"}}),
            400,
            "invalid_path",
        ),
        put(
            ".git path",
            json!({"files": {".git/config": "x"}}),
            400,
            "invalid_path",
        ),
        put(
            "nested .git",
            json!({"files": {"a/.git/HEAD": "x"}}),
            400,
            "invalid_path",
        ),
        put(
            "backslash",
            json!({"files": {"a\\b.yaml": "a: 1"}}),
            400,
            "invalid_path",
        ),
        put(
            "empty component",
            json!({"files": {"a//b.yaml": "a: 1"}}),
            400,
            "invalid_path",
        ),
        put(
            "invalid YAML",
            json!({"files": {"patient.yaml": "name: [unclosed"}}),
            400,
            "invalid_yaml",
        ),
        put(
            "two YAML documents",
            json!({"files": {"patient.yaml": "a: 1\n---\nb: 2\n"}}),
            400,
            "invalid_yaml",
        ),
        put(
            "non-string YAML key",
            json!({"files": {"patient.yaml": "1: one\n"}}),
            400,
            "invalid_yaml",
        ),
        put(
            "YAML alias bomb",
            json!({"files": {"patient.yaml": format!(
                "name: A\nnote: &n \"{}\"\nnotes: [{}]\n",
                "x".repeat(50_000),
                vec!["*n"; 10_000].join(", ")
            )}}),
            400,
            "invalid_yaml",
        ),
        put(
            "YAML tag",
            json!({"files": {"patient.yaml": "x: !!python/object/apply:os.system [ls]\n"}}),
            400,
            "invalid_yaml",
        ),
        put(
            "YAML nesting bomb",
            json!({"files": {"patient.yaml": "{a: ".repeat(100_000)}}),
            400,
            "invalid_yaml",
        ),
        put(
            "YAML number that cannot be kept",
            json!({"files": {"patient.yaml": "nid: 12345678901234567890123\n"}}),
            400,
            "invalid_yaml",
        ),
        put("no files", json!({"files": {}}), 400, "empty_record"),
        put("files not a map", json!({"files": ["a"]}), 400, "bad_json"),
        put(
            "unknown field",
            json!({"files": {"a.yaml": "a: 1"}, "extra": 1}),
            400,
            "bad_json",
        ),
        put(
            "file too large",
            json!({"files": {"big.txt": "y".repeat(2 << 20)}}),
            400,
            "record_too_large",
        ),
        Case {
            what: "malformed JSON",
            method: "PUT",
            url: url.clone(),
            headers: vec![json_ct.clone(), if_match.clone()],
            body: "{\"files\": {".into(),
            status: 400,
            code: "bad_json",
        },
        Case {
            what: "bad UUID",
            method: "PUT",
            url: format!("{base}/v1/patients/not-a-uuid"),
            headers: vec![json_ct.clone(), if_match.clone()],
            body: json!({"files": {"a.yaml": "a: 1"}}).to_string(),
            status: 400,
            code: "invalid_id",
        },
        Case {
            what: "version 1 UUID",
            method: "GET",
            url: format!("{base}/v1/patients/6ba7b810-9dad-11d1-80b4-00c04fd430c8"),
            headers: vec![],
            body: String::new(),
            status: 400,
            code: "invalid_id",
        },
        Case {
            what: "conflict id not a number",
            method: "POST",
            url: format!("{base}/v1/conflicts/nope/resolve"),
            headers: vec![json_ct.clone()],
            body: json!({"files": {"a.yaml": "a: 1"}}).to_string(),
            status: 400,
            code: "invalid_id",
        },
        Case {
            what: "a method the path does not take",
            method: "POST",
            url: url.clone(),
            headers: vec![],
            body: String::new(),
            status: 405,
            code: "method_not_allowed",
        },
        Case {
            what: "traversal in the id",
            method: "GET",
            url: format!("{base}/v1/patients/..%2F..%2Fetc"),
            headers: vec![],
            body: String::new(),
            status: 400,
            code: "invalid_id",
        },
        Case {
            what: "weak or unquoted If-Match",
            method: "PUT",
            url: url.clone(),
            headers: vec![
                json_ct.clone(),
                ("if-match", tag.trim_matches('"').to_string()),
            ],
            body: json!({"files": {"a.yaml": "a: 1"}}).to_string(),
            status: 400,
            code: "bad_precondition",
        },
        Case {
            what: "If-None-Match with a tag",
            method: "PUT",
            url: url.clone(),
            headers: vec![json_ct.clone(), ("if-none-match", tag.clone())],
            body: json!({"files": {"a.yaml": "a: 1"}}).to_string(),
            status: 400,
            code: "bad_precondition",
        },
        Case {
            what: "PATCH without merge-patch content type",
            method: "PATCH",
            url: url.clone(),
            headers: vec![("content-type", "text/plain".into()), if_match.clone()],
            body: json!({"patient.yaml": {"a": 1}}).to_string(),
            status: 415,
            code: "unsupported_media_type",
        },
        Case {
            what: "PATCH body not an object",
            method: "PATCH",
            url: url.clone(),
            headers: vec![patch_ct.clone(), if_match.clone()],
            body: "[1,2]".into(),
            status: 400,
            code: "bad_patch",
        },
        Case {
            what: "PATCH with a number for a file",
            method: "PATCH",
            url: url.clone(),
            headers: vec![patch_ct.clone(), if_match.clone()],
            body: json!({"patient.yaml": 5}).to_string(),
            status: 400,
            code: "bad_patch",
        },
        Case {
            what: "merge patch of a non-YAML file",
            method: "PATCH",
            url: url.clone(),
            headers: vec![patch_ct.clone(), if_match.clone()],
            body: json!({"notes.txt": {"a": 1}}).to_string(),
            status: 400,
            code: "invalid_patch",
        },
        Case {
            what: "PATCH with a number JSON cannot keep",
            method: "PATCH",
            url: url.clone(),
            headers: vec![patch_ct.clone(), if_match.clone()],
            body: r#"{"patient.yaml": {"nid": 12345678901234567890123}}"#.into(),
            status: 400,
            code: "inexact_number",
        },
        Case {
            what: "PATCH nesting deeper than records allow",
            method: "PATCH",
            url: url.clone(),
            headers: vec![patch_ct.clone(), if_match.clone()],
            body: format!(
                "{{\"patient.yaml\": {}1{}}}",
                "{\"a\": ".repeat(70),
                "}".repeat(70)
            ),
            status: 400,
            code: "invalid_yaml",
        },
        Case {
            what: "PATCH path trick",
            method: "PATCH",
            url: url.clone(),
            headers: vec![patch_ct.clone(), if_match.clone()],
            body: json!({"../x.yaml": {"a": 1}}).to_string(),
            status: 400,
            code: "invalid_path",
        },
        Case {
            what: "bad author header",
            method: "PUT",
            url: url.clone(),
            headers: vec![
                json_ct.clone(),
                if_match.clone(),
                ("chartsync-author", "nobody".into()),
            ],
            body: json!({"files": {"a.yaml": "a: 1"}}).to_string(),
            status: 400,
            code: "bad_header",
        },
    ];
    for case in cases {
        let method = reqwest::Method::from_bytes(case.method.as_bytes()).expect("method");
        let mut req = http.request(method, &case.url).body(case.body);
        for (k, v) in &case.headers {
            req = req.header(*k, v);
        }
        let r = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", case.what));
        assert_eq!(r.status().as_u16(), case.status, "{}", case.what);
        let err: Value = r
            .json()
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", case.what));
        assert_eq!(err["error"], case.code, "{}: {err}", case.what);
        assert!(
            err["message"].as_str().is_some_and(|m| m.len() > 10),
            "{}: a clear message: {err}",
            case.what
        );
        // Nothing changed.
        let r = http.get(&url).send().await.expect("get");
        assert_eq!(etag(&r), tag, "{} changed the record", case.what);
    }
    let history: Vec<Value> = http
        .get(format!("{url}/history"))
        .send()
        .await
        .expect("history")
        .json()
        .await
        .expect("json");
    assert_eq!(history.len(), 1);
    // An oversized body is refused from its Content-Length, before it is
    // read: a raw client announces 17 MiB, sends a little, and gets 413.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = base.trim_start_matches("http://");
        let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let head = format!(
            "PUT /v1/patients/{id} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nIf-Match: {tag}\r\nContent-Length: {}\r\n\r\n{{\"files\": {{\"a.txt\": \"",
            17 << 20
        );
        tcp.write_all(head.as_bytes()).await.expect("write");
        let mut reply = vec![0u8; 4096];
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), tcp.read(&mut reply))
            .await
            .expect("answered before the body was sent")
            .expect("read");
        let reply = String::from_utf8_lossy(&reply[..n]);
        assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
        assert!(reply.contains("body_too_large"), "{reply}");
    }
    // A chunked body (no Content-Length) is cut off at the limit too.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = base.trim_start_matches("http://").to_string();
        let tcp = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("connect");
        let (mut rd, mut wr) = tcp.into_split();
        let head = format!(
            "PUT /v1/patients/{id} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nIf-Match: {tag}\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
        let writer = tokio::spawn(async move {
            wr.write_all(head.as_bytes()).await?;
            let chunk = vec![b'x'; 1 << 20];
            for _ in 0..18 {
                wr.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                    .await?;
                wr.write_all(&chunk).await?;
                wr.write_all(b"\r\n").await?;
            }
            Ok::<_, std::io::Error>(())
        });
        let mut reply = Vec::new();
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(20),
            rd.read_to_end(&mut reply),
        )
        .await;
        let reply = String::from_utf8_lossy(&reply);
        assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
        let _ = writer.await;
    }
    let r = http.get(&url).send().await.expect("get");
    assert_eq!(etag(&r), tag);
    // Unknown endpoints are JSON 404s.
    let r = http
        .get(format!("{base}/v2/nothing"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    sat.stop().await;
}
