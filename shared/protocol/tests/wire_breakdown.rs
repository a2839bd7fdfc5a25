//! A measurement, not a check (ignored by default): what each part of the
//! sync messages of 1,000 new records costs on the wire after zstd, at the
//! levels a 2G link gets (12 for the satellite's requests, 19 for central's
//! replies), in protocol 4 and the current protocol. Each part is measured
//! by encoding the batch again with that part made constant (so zstd
//! removes it) and taking the difference:
//!
//!     cargo test --release -p chartsync-protocol --test wire_breakdown -- --ignored --nocapture
use chartsync_git::{Commit, Kind, Object, Signature, build_tree, encode_commit, write_pack_only};
use chartsync_protocol::envelope;
use chartsync_protocol::sync::{
    Ack, AckRequest, FetchNewResponse, PROTOCOL_VERSION, PageAck, PushOutcome, PushRecord,
    PushRequest, PushResponse, PushResult, RecordUpdate,
};
use chartsync_protocol::{CommitId, PatientId};

const N: usize = 1000;

fn rng(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

const W: &[&str] = &[
    "cough",
    "fever",
    "review",
    "stable",
    "pain",
    "dressing",
    "changed",
    "advised",
    "fluids",
    "rest",
    "follow",
    "up",
    "week",
    "clinic",
    "referred",
    "tablets",
    "daily",
    "improving",
    "bp",
    "normal",
];

/// 1,000 new records of about 2 KB, as a satellite writes them: one
/// commit, one tree, one file each. Returns (id, head, pack).
fn records() -> Vec<(PatientId, CommitId, Vec<u8>, Vec<Object>)> {
    let mut s = 88172645463325252u64;
    (0..N as u64)
        .map(|n| {
            let mut yaml = format!(
                "name: P{n}\ncatchment: valley\nphone: '07{:08}'\nencounters:\n",
                rng(&mut s) % 100_000_000
            );
            while yaml.len() < 1900 {
                yaml.push_str(&format!(
                    "  - date: 2026-{:02}-{:02}\n    bp: {}/{}\n    note:",
                    1 + rng(&mut s) % 11,
                    1 + rng(&mut s) % 28,
                    100 + rng(&mut s) % 60,
                    60 + rng(&mut s) % 35
                ));
                for _ in 0..(8 + rng(&mut s) % 16) {
                    yaml.push(' ');
                    yaml.push_str(W[(rng(&mut s) % W.len() as u64) as usize]);
                }
                yaml.push('\n');
            }
            let files = [("patient.yaml".to_string(), yaml.into_bytes())]
                .into_iter()
                .collect();
            let (tree, parts) = build_tree(&files).expect("measurement setup");
            let t = 1_764_000_000 + n as i64 * 3 + (rng(&mut s) % 3) as i64;
            let who =
                Signature::new("chartsync", "chartsync@sat-a", t, 60).expect("measurement setup");
            let data = encode_commit(&Commit {
                tree,
                parents: vec![],
                author: Signature {
                    name: "Dr. Okafor".into(),
                    ..who.clone()
                },
                committer: who,
                message: "create\n\nChartsync-Author: Dr. Okafor\nChartsync-Instance: sat-a\n"
                    .into(),
            });
            let commit = Object::new(Kind::Commit, data);
            let head = CommitId::from_slice(commit.id.as_bytes()).expect("measurement setup");
            let mut objects = vec![commit];
            objects.extend(parts.into_iter().rev());
            let pack = write_pack_only(&objects, 0);
            (PatientId::random(), head, pack, objects)
        })
        .collect()
}

fn size<T: serde::Serialize>(message: &T, version: u8, level: i32) -> f64 {
    envelope::encode_at(message, version, level)
        .expect("measurement setup")
        .len() as f64
        / N as f64
}

/// What a part costs: the batch with it, less the batch with it constant.
fn line(what: &str, whole: f64, without: f64) {
    println!("  {what:<44} {:>7.1} B/rec", whole - without);
}

#[test]
#[ignore = "a measurement: run it with --ignored --nocapture"]
fn wire_breakdown() {
    let recs = records();
    let same = recs[0].0;
    let base_seq = 5_000u64;
    let base_time = 1_764_000_000i64;
    for version in [4, PROTOCOL_VERSION] {
        // push of new records (satellite, level 12)
        let push = |same_id: bool| PushRequest {
            records: recs
                .iter()
                .map(|(id, head, pack, _)| PushRecord {
                    id: if same_id { same } else { *id },
                    expected: None,
                    head: *head,
                    pack: pack.clone(),
                })
                .collect(),
        };
        let whole = size(&push(false), version, 12);
        println!("protocol {version}: push request, level 12: {whole:.1} B/rec");
        line("patient ids", whole, size(&push(true), version, 12));

        // central's push reply (level 19)
        let reply = |with_ids: bool, varied: bool| PushResponse {
            results: recs
                .iter()
                .enumerate()
                .map(|(i, (id, _, _, _))| PushResult {
                    id: with_ids.then_some(if varied { *id } else { same }),
                    outcome: PushOutcome::Applied {
                        seq: if varied {
                            base_seq + i as u64
                        } else {
                            base_seq
                        },
                        time: base_time,
                    },
                })
                .collect(),
        };
        let whole = size(&reply(true, true), version, 19);
        println!("protocol {version}: push reply, level 19: {whole:.1} B/rec");
        line(
            "ids, sequence numbers",
            whole,
            size(&reply(true, false), version, 19),
        );

        // fetch-new page (central, level 19)
        let page = |same_id: bool, same_seq: bool| FetchNewResponse {
            records: recs
                .iter()
                .enumerate()
                .map(|(i, (id, head, pack, _))| RecordUpdate {
                    id: if same_id { same } else { *id },
                    head: *head,
                    seq: if same_seq {
                        base_seq
                    } else {
                        base_seq + 2 * i as u64
                    },
                    time: if same_seq {
                        base_time
                    } else {
                        base_time + i as i64 / 300
                    },
                    base: None,
                    pack: pack.clone(),
                })
                .collect(),
            cursor: base_seq + 2 * N as u64,
            epoch: 0,
            more: false,
            moved: Vec::new(),
            page: 0,
            forgotten: Vec::new(),
        };
        let whole = size(&page(false, false), version, 19);
        println!("protocol {version}: fetch-new page, level 19: {whole:.1} B/rec");
        line("patient ids", whole, size(&page(true, false), version, 19));
        line(
            "sequence numbers and times",
            whole,
            size(&page(false, true), version, 19),
        );
        let packs: Vec<u8> = recs.iter().flat_map(|r| r.2.clone()).collect();
        println!(
            "  {:<44} {:>7.1} B/rec",
            "(the packs alone, as one zstd-19 stream)",
            zstd::bulk::compress(&packs, 19)
                .expect("measurement setup")
                .len() as f64
                / N as f64
        );

        if version == PROTOCOL_VERSION {
            columns(&recs);
        }
        // the acknowledgement (satellite, level 12)
        let explicit = AckRequest {
            acks: recs
                .iter()
                .map(|(id, head, _, _)| Ack {
                    id: *id,
                    head: *head,
                })
                .collect(),
            pages: Vec::new(),
        };
        println!(
            "protocol {version}: acknowledgement, level 12: {:.1} B/rec (id and head each)",
            size(&explicit, version, 12)
        );
        if version >= 5 {
            let by_page = AckRequest {
                acks: Vec::new(),
                pages: vec![PageAck {
                    cursor: base_seq + 2 * N as u64,
                    ids: recs.iter().map(|r| r.0).collect(),
                    heads: Vec::new(),
                    page: u64::from(version >= 6) * 0x5eed_1234,
                }],
            };
            println!(
                "protocol {version}: acknowledgement by page, level 12: {:.1} B/rec",
                size(&by_page, version, 12)
            );
        }
    }
}

fn z19(b: &[u8]) -> f64 {
    zstd::bulk::compress(b, 19)
        .expect("measurement setup")
        .len() as f64
        / N as f64
}

fn put_len(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// Hypothetical layouts of the same page, to see what framing costs.
fn columns(recs: &[(PatientId, CommitId, Vec<u8>, Vec<Object>)]) {
    let mut content = Vec::new();
    let (mut ids, mut commits, mut trees, mut blobs, mut lens) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut interleaved = Vec::new();
    for (id, _, _, objects) in recs {
        ids.extend_from_slice(id.as_bytes());
        interleaved.extend_from_slice(id.as_bytes());
        for o in objects {
            match o.kind {
                Kind::Commit => {
                    // without the tree line (the receiver computes it)
                    let body = &o.data[46..];
                    put_len(&mut lens, body.len());
                    commits.extend_from_slice(body);
                    put_len(&mut interleaved, body.len());
                    interleaved.extend_from_slice(body);
                }
                Kind::Tree => {
                    // without the 20-byte ids
                    let t = &o.data[..o.data.len() - 20];
                    trees.extend_from_slice(t);
                    interleaved.extend_from_slice(t);
                }
                _ => {
                    put_len(&mut lens, o.data.len());
                    blobs.extend_from_slice(&o.data);
                    content.extend_from_slice(&o.data);
                    put_len(&mut interleaved, o.data.len());
                    interleaved.extend_from_slice(&o.data);
                }
            }
        }
    }
    let c = z19(&content);
    println!("  content alone (blobs, one zstd-19 stream): {c:.1} B/rec");
    println!(
        "  interleaved, no framing but lengths: {:.1} B/rec ({:.3})",
        z19(&interleaved),
        z19(&interleaved) / c
    );
    let mut col = Vec::new();
    for part in [&ids, &lens, &commits, &trees, &blobs] {
        col.extend_from_slice(part);
    }
    println!(
        "  columns (ids, lengths, commits, trees, blobs): {:.1} B/rec ({:.3})",
        z19(&col),
        z19(&col) / c
    );
    for (name, part) in [
        ("ids", &ids),
        ("lengths", &lens),
        ("commits", &commits),
        ("trees", &trees),
        ("blobs", &blobs),
    ] {
        println!("    {name:<10} {:.1} B/rec alone", z19(part));
    }
}
