//! `chartsync bench --long-records N --long-edits M`: long-lived records.
//! N records are edited M times each at satellite A (a visit of about 300
//! bytes appended to `patient.yaml`, which grows by that much per edit),
//! each edit pushed by A and pulled by B through the real processes; then N
//! records holding 300 encounter files get M new encounter files the same
//! way. Reported: wire bytes per edit (push and pull, both directions), and
//! per record: disk at each instance and packs, next to what
//! `git repack -adf` makes of the same history. The satellites are one-shot
//! runs here, so their background upkeep is run in-process every ten edits
//! (as the daemon's sweep would); central repacks as it serves.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chartsync_protocol::{Files, PatientId};
use chartsync_satellite::Satellite;
use chartsync_satellite::jobs::Summary;
use chartsync_store::{Change, CommitMeta, Condition, Flush, Layout};
use serde_json::json;

use super::bench::{Rng, World, job, world};

/// Sweeps of the satellites' upkeep: every this many edits.
const SWEEP_EVERY: usize = 10;

/// A visit of about 300 bytes.
fn visit(r: &mut Rng, n: usize) -> String {
    format!(
        "  - date: 2026-{:02}-{:02}\n    reason: {}\n    bp: {}/{}\n    temp_c: 3{}.{}\n    clinician: Dr. {}\n    note: visit {n}, {}\n",
        1 + r.below(12),
        1 + r.below(28),
        r.pick(super::bench::REASONS),
        100 + r.below(60),
        60 + r.below(35),
        6 + r.below(3),
        r.below(10),
        r.pick(super::bench::LAST),
        r.words(super::bench::WORDS, 22, 30),
    )
}

/// One variant's state: the records' files at A.
struct Variant {
    name: &'static str,
    ids: Vec<PatientId>,
    files: Vec<Files>,
    rng: Rng,
}

impl Variant {
    fn visits(n: usize) -> Variant {
        let mut rng = Rng::new(7);
        let files = (0..n)
            .map(|i| {
                let mut yaml = format!(
                    "name: {} {}\ncatchment: valley\nvisits:\n",
                    rng.pick(super::bench::FIRST),
                    rng.pick(super::bench::LAST)
                );
                yaml.push_str(&visit(&mut rng, i));
                Files::from([("patient.yaml".to_string(), yaml)])
            })
            .collect();
        Variant {
            name: "appended visit",
            ids: (0..n).map(|_| PatientId::random()).collect(),
            files,
            rng,
        }
    }

    fn encounters(n: usize) -> Variant {
        let mut rng = Rng::new(11);
        let files = (0..n)
            .map(|i| {
                let mut files = Files::from([(
                    "patient.yaml".to_string(),
                    format!(
                        "name: {} {}\ncatchment: valley\n",
                        rng.pick(super::bench::FIRST),
                        rng.pick(super::bench::LAST)
                    ),
                )]);
                for e in 0..300 {
                    files.insert(format!("encounters/{e:04}.yaml"), visit(&mut rng, i + e));
                }
                files
            })
            .collect();
        Variant {
            name: "new encounter file (300 files)",
            ids: (0..n).map(|_| PatientId::random()).collect(),
            files,
            rng,
        }
    }

    /// The next edit of record `i`.
    fn edit(&mut self, i: usize) {
        let files = &mut self.files[i];
        if self.name.starts_with("appended") {
            let text = visit(&mut self.rng, i);
            if let Some(yaml) = files.get_mut("patient.yaml") {
                yaml.push_str(&text);
            }
        } else {
            let next = files.len() - 1;
            let text = visit(&mut self.rng, i + next);
            files.insert(format!("encounters/{next:04}.yaml"), text);
        }
    }
}

/// Writes every record's current files at the satellite, group-committed.
fn write_all(sat: &Satellite, v: &Variant, create: bool) -> anyhow::Result<()> {
    let meta = CommitMeta::new("Bench", "bench@example", "visit");
    sat.db.mark_dirty_many(&v.ids)?;
    let mut prepared = Vec::with_capacity(v.ids.len());
    for (id, files) in v.ids.iter().zip(&v.files) {
        let condition = if create {
            Condition::MustCreate
        } else {
            Condition::Unconditional
        };
        prepared.push(sat.store.prepare(
            id,
            condition,
            Change::Replace(files.clone()),
            &meta,
            Flush::Deferred,
        )?);
    }
    sat.store.flush()?;
    for p in prepared {
        sat.store.publish(p, Flush::Deferred)?;
    }
    sat.store.flush()?;
    Ok(())
}

async fn sweep(sat: &Arc<Satellite>) -> anyhow::Result<()> {
    let lock =
        chartsync_satellite::jobs::JobLock::acquire(&sat.config.data_dir, Duration::from_secs(60))
            .await?;
    chartsync_satellite::jobs::upkeep::sweep(sat, &lock, usize::MAX)?;
    Ok(())
}

/// Bytes and count of a repository's packs.
fn packs(repo: &Path) -> (u64, usize) {
    let Ok(entries) = std::fs::read_dir(repo.join("objects/pack")) else {
        return (0, 0);
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".pack"))
        .fold((0, 0), |(bytes, n), e| {
            (bytes + e.metadata().map(|m| m.len()).unwrap_or(0), n + 1)
        })
}

/// What `git repack -adf` makes of a repository's history.
fn git_repacked(repo: &Path, scratch: &Path) -> anyhow::Result<u64> {
    let copy = scratch.join(format!("git-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&copy);
    let ok = Command::new("git")
        .args(["clone", "-q", "--bare", "--no-local"])
        .arg(repo)
        .arg(&copy)
        .status()?
        .success()
        && Command::new("git")
            .arg("--git-dir")
            .arg(&copy)
            .args(["repack", "-adfq"])
            .status()?
            .success();
    if !ok {
        bail!("git clone or repack failed for {}", repo.display());
    }
    let size = packs(&copy).0;
    std::fs::remove_dir_all(&copy)?;
    Ok(size)
}

fn wire(s: &Summary) -> (u64, u64) {
    (s.bytes_sent, s.bytes_received)
}

/// Runs both variants; returns the JSON object of the results.
pub async fn run(
    records: usize,
    edits: usize,
    say: &dyn Fn(String),
) -> anyhow::Result<serde_json::Value> {
    let mut out = serde_json::Map::new();
    for mut v in [Variant::visits(records), Variant::encounters(records)] {
        say(format!(
            "bench: long-lived records, {records} records x {edits} edits ({})",
            v.name
        ));
        let w: World = world("long", None, true).await?;
        let a = Satellite::open(chartsync_satellite::SatelliteConfig::load(&w.a)?)?;
        let b = Satellite::open(chartsync_satellite::SatelliteConfig::load(&w.b)?)?;
        write_all(&a, &v, true)?;
        job(&w.a, "push")?;
        job(&w.b, "fetch-new")?;
        let start = Instant::now();
        let (mut push_up, mut push_down, mut pull_up, mut pull_down) = (0u64, 0u64, 0u64, 0u64);
        let mut last = json!(null);
        for edit in 0..edits {
            for i in 0..records {
                v.edit(i);
            }
            write_all(&a, &v, false)?;
            let (push, _) = job(&w.a, "push")?;
            let (pull, _) = job(&w.b, "pull")?;
            if push.records_sent != records as u64 || pull.records_received != records as u64 {
                bail!(
                    "edit {edit}: pushed {} and pulled {} of {records} records",
                    push.records_sent,
                    pull.records_received
                );
            }
            let (pu, pd) = wire(&push);
            let (lu, ld) = wire(&pull);
            push_up += pu;
            push_down += pd;
            pull_up += lu;
            pull_down += ld;
            let n = records as f64;
            last = json!({
                "push_up": pu as f64 / n, "push_down": pd as f64 / n,
                "pull_up": lu as f64 / n, "pull_down": ld as f64 / n,
            });
            if (edit + 1) % SWEEP_EVERY == 0 {
                sweep(&a).await?;
                sweep(&b).await?;
            }
            if (edit + 1) % 50 == 0 {
                say(format!(
                    "  {} edits, {:.0} s",
                    edit + 1,
                    start.elapsed().as_secs_f64()
                ));
            }
        }
        let seconds = start.elapsed().as_secs_f64();
        sweep(&a).await?;
        sweep(&b).await?;
        // Central repacks in its upkeep task: give it a moment.
        let central_dir =
            chartsync_central::CentralConfig::load(&w.dir.join("central.toml"))?.data_dir;
        let layouts = [
            ("satellite A", Layout::new(a.config.data_dir.clone())),
            ("satellite B", Layout::new(b.config.data_dir.clone())),
            ("central", Layout::new(central_dir)),
        ];
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline
            && v.ids.iter().any(|id| packs(&layouts[2].1.repo(id)).1 > 8)
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mut disk = serde_json::Map::new();
        for (name, layout) in &layouts {
            let (bytes, count): (Vec<u64>, Vec<usize>) =
                v.ids.iter().map(|id| packs(&layout.repo(id))).unzip();
            disk.insert(
                name.to_string(),
                json!({
                    "bytes_per_record": bytes.iter().sum::<u64>() as f64 / records as f64,
                    "max_packs_per_record": count.iter().max().copied().unwrap_or(0),
                }),
            );
        }
        let mut git_total = 0u64;
        for id in &v.ids {
            git_total += git_repacked(&layouts[0].1.repo(id), &w.dir)
                .with_context(|| format!("record {id}"))?;
        }
        let git_per_record = git_total as f64 / records as f64;
        let per_edit = (records * edits.max(1)) as f64;
        let result = json!({
            "records": records,
            "edits": edits,
            "final_size_bytes": v.files[0].values().map(String::len).sum::<usize>(),
            "wire_per_edit_mean": {
                "push_up": push_up as f64 / per_edit, "push_down": push_down as f64 / per_edit,
                "pull_up": pull_up as f64 / per_edit, "pull_down": pull_down as f64 / per_edit,
            },
            "wire_per_edit_last": last,
            "disk": disk,
            "git_repack_adf_bytes_per_record": git_per_record,
            "seconds_per_edit_round": seconds / edits.max(1) as f64,
        });
        say(format!(
            "  wire per edit (last): push {:.0} B up + {:.0} B down, pull {:.0} B up + {:.0} B down",
            result["wire_per_edit_last"]["push_up"]
                .as_f64()
                .unwrap_or(0.0),
            result["wire_per_edit_last"]["push_down"]
                .as_f64()
                .unwrap_or(0.0),
            result["wire_per_edit_last"]["pull_up"]
                .as_f64()
                .unwrap_or(0.0),
            result["wire_per_edit_last"]["pull_down"]
                .as_f64()
                .unwrap_or(0.0),
        ));
        for (name, _) in &layouts {
            let d = &result["disk"][*name];
            let bytes = d["bytes_per_record"].as_f64().unwrap_or(0.0);
            say(format!(
                "  disk per record at {name}: {:.0} KB in at most {} packs ({:.2}x git repack -adf: {:.0} KB)",
                bytes / 1e3,
                d["max_packs_per_record"],
                bytes / git_per_record.max(1.0),
                git_per_record / 1e3
            ));
        }
        out.insert(
            if v.name.starts_with("appended") {
                "appended_visit".to_string()
            } else {
                "new_encounter".to_string()
            },
            result,
        );
        drop((a, b));
        drop(w);
    }
    Ok(serde_json::Value::Object(out))
}
