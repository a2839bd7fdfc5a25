//! A measurement, not a check (ignored by default): what the author and
//! committer lines of 1,000 new records' commits cost after zstd, to decide
//! whether protocol 4 should make identity and time zone a batch-level
//! default. It prints the batch's size with every commit whole and with the
//! identities and zones stripped (only the times kept), in protocols 3 and 4:
//!
//!     cargo test --release -p chartsync-protocol --test identity_cost -- --ignored --nocapture
use chartsync_git::{Commit, Kind, Object, Signature, build_tree, encode_commit, write_pack_only};
use chartsync_protocol::envelope;
use chartsync_protocol::sync::{PushRecord, PushRequest};
use chartsync_protocol::{CommitId, PatientId};

fn rng(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

#[test]
#[ignore = "a measurement: run it with --ignored --nocapture"]
fn identity_cost() {
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
    for strip in [false, true] {
        let mut records = Vec::new();
        let mut s = 88172645463325252u64;
        for n in 0..1000u64 {
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
            let mut data = encode_commit(&Commit {
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
            if strip {
                // As if identity and zone were a batch default: keep only the times.
                let text = String::from_utf8(data).expect("measurement setup");
                data = text
                    .lines()
                    .map(|l| {
                        if l.starts_with("author ") || l.starts_with("committer ") {
                            format!(
                                "{}\n",
                                l.split(' ').rev().nth(1).expect("measurement setup")
                            )
                        } else {
                            format!("{l}\n")
                        }
                    })
                    .collect::<String>()
                    .into_bytes();
            }
            let commit = Object::new(Kind::Commit, data);
            let head = CommitId::from_slice(commit.id.as_bytes()).expect("measurement setup");
            let mut objects = vec![commit];
            objects.extend(parts.into_iter().rev());
            records.push(PushRecord {
                id: PatientId::random(),
                expected: None,
                head,
                pack: write_pack_only(&objects, 0),
            });
        }
        let msg = PushRequest { records };
        for level in [12, 19] {
            let v4 = envelope::encode_at(&msg, 4, level)
                .expect("measurement setup")
                .len();
            let v3 = envelope::encode_at(&msg, 3, level)
                .expect("measurement setup")
                .len();
            println!(
                "strip={strip} level={level}: v3 {v3} B ({:.1}/rec), v4 {v4} B ({:.1}/rec)",
                v3 as f64 / 1000.0,
                v4 as f64 / 1000.0
            );
        }
    }
}
