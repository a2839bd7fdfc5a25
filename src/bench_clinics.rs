//! `chartsync bench --clinics N --centrals 1,3`: many clinics syncing at
//! once against one central process, or several `central serve` processes
//! on one PostgreSQL database behind HAProxy.
//!
//! Each clinic is a satellite with its own data folder and instance; clinics
//! are grouped in catchments of [`CATCHMENT_SIZE`]. In four phases, every
//! clinic runs its job at the same moment (one `chartsync satellite sync`
//! process each): push its new records, fetch-new (its catchment's other
//! records), push an edit of each of its records, pull (the others' edits).
//! A clinic whose job ends with central busy (records deferred, or 503 still
//! after the satellite's own retries) runs it again at once, as its daemon
//! would at its next sync, at most [`MAX_RUNS`] times. A phase's rate is the
//! records moved by all clinics over the phase's wall time (first start to
//! last finish); the slowest job is the slowest clinic's time over its runs.
//! A job fails when its process fails other than busy, when central refuses
//! or sets anything aside, when it is still busy after [`MAX_RUNS`] runs, or
//! when it moved other than the expected number of records.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chartsync_protocol::PatientId;
use chartsync_satellite::jobs::Summary;
use serde_json::json;

use crate::bench::{exe, free_port, peak_rss, populate_in, write_config};

/// Clinics per catchment: each clinic fetches the records of the others in
/// its catchment.
pub const CATCHMENT_SIZE: usize = 10;

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Clinic {
    config: PathBuf,
    catchment: usize,
    ids: Vec<PatientId>,
}

/// One phase's jobs, all clinics at once.
struct Phase {
    name: &'static str,
    records: u64,
    wall: f64,
    slowest: f64,
    slowest_clinic: usize,
    /// Job runs in all.
    runs: usize,
    /// Clinics that needed more than one run.
    rerun: usize,
    failures: Vec<String>,
}

/// What a clinic's job came to: records moved, runs, the error that ended
/// it.
type Done = (u64, usize, Option<String>);

/// Runs of a job per clinic at most: a clinic whose job ends with records
/// deferred or central busy runs it again at once, as its daemon would at
/// its next sync.
const MAX_RUNS: usize = 10;

/// A clinic's job, run again while central is busy: the records moved, the
/// runs, and the error that ended it (if it did not finish).
fn job_until_done(config: &Path, job: &str, moved: Moved) -> Done {
    let (result, runs, error) = runs_until_done(config, job, moved);
    match moved {
        Moved::Summary(_) => (result, runs, error),
        // The records now held less those held before.
        Moved::Held => match held(config) {
            Ok(now) => (now.saturating_sub(result), runs, error),
            Err(e) => (
                0,
                runs,
                Some(format!("cannot count the records held: {e:#}")),
            ),
        },
    }
}

/// How a phase counts the records a clinic's job moved.
#[derive(Clone, Copy)]
enum Moved {
    /// From the jobs' summaries (a run that ends busy after it stored some
    /// records does not report them, so this may count short).
    Summary(fn(&Summary) -> u64),
    /// Records held at the clinic after the job less those before (exact,
    /// over every run).
    Held,
}

/// Records held at a clinic.
fn held(config: &Path) -> anyhow::Result<u64> {
    let config = chartsync_satellite::SatelliteConfig::load(config)?;
    let sat = chartsync_satellite::Satellite::open(config)?;
    Ok(sat.store.list()?.len() as u64)
}

/// The runs of [`job_until_done`]: the records they reported moved (with
/// [`Moved::Held`], the records held before), the runs, the error.
fn runs_until_done(config: &Path, job: &str, moved: Moved) -> Done {
    let moved = match moved {
        Moved::Summary(f) => f,
        Moved::Held => match held(config) {
            Ok(before) => {
                let (_, runs, error) = runs_until_done(config, job, Moved::Summary(|_| 0));
                return (before, runs, error);
            }
            Err(e) => return (0, 0, Some(format!("cannot count the records held: {e:#}"))),
        },
    };
    let mut total = 0;
    for run in 1..=MAX_RUNS {
        match crate::bench::job(config, job) {
            Ok((s, _)) => {
                total += moved(&s);
                if s.refused + s.set_aside > 0 {
                    return (
                        total,
                        run,
                        Some(format!("refused {}, set aside {}", s.refused, s.set_aside)),
                    );
                }
                if s.deferred == 0 {
                    return (total, run, None);
                }
            }
            Err(e) => {
                let e = format!("{e:#}");
                if !e.contains("central is busy") {
                    return (total, run, Some(e));
                }
            }
        }
    }
    (
        total,
        MAX_RUNS,
        Some(format!("central still busy after {MAX_RUNS} runs")),
    )
}

/// Runs `job` at every clinic at once; `expect(clinic)` is the number of
/// records the job must move, `moved` says how the number it did is counted.
fn phase(
    name: &'static str,
    job: &str,
    clinics: &[Clinic],
    expect: &(dyn Fn(&Clinic) -> u64 + Sync),
    moved: Moved,
) -> Phase {
    let start = Instant::now();
    let results: Vec<(Done, f64)> = std::thread::scope(|scope| {
        let handles: Vec<_> = clinics
            .iter()
            .map(|c| {
                scope.spawn(move || {
                    let t = Instant::now();
                    let r = job_until_done(&c.config, job, moved);
                    (r, t.elapsed().as_secs_f64())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    (
                        (0, 0, Some("the thread running a job panicked".into())),
                        0.0,
                    )
                })
            })
            .collect()
    });
    let wall = start.elapsed().as_secs_f64();
    let mut out = Phase {
        name,
        records: 0,
        wall,
        slowest: 0.0,
        slowest_clinic: 0,
        runs: 0,
        rerun: 0,
        failures: Vec::new(),
    };
    for (n, (((count, runs, error), seconds), clinic)) in
        results.into_iter().zip(clinics).enumerate()
    {
        if seconds > out.slowest {
            out.slowest = seconds;
            out.slowest_clinic = n;
        }
        out.records += count;
        out.runs += runs;
        if runs > 1 {
            out.rerun += 1;
        }
        let want = expect(clinic);
        if let Some(e) = error {
            out.failures.push(format!("clinic {n} {job}: {e}"));
        } else if count != want {
            out.failures
                .push(format!("clinic {n} {job}: moved {count} records of {want}"));
        }
    }
    out
}

fn sent(s: &Summary) -> u64 {
    s.records_sent
}

fn received(s: &Summary) -> u64 {
    s.records_received
}

/// HAProxy in front of `backends` (Debian's haproxy), listening on `port`.
fn haproxy(dir: &Path, port: u16, backends: &[u16]) -> anyhow::Result<Proc> {
    let servers: String = backends
        .iter()
        .enumerate()
        .map(|(n, p)| format!("    server c{n} 127.0.0.1:{p} check inter 1s fall 3 rise 2\n"))
        .collect();
    let cfg = dir.join("haproxy.cfg");
    write_config(
        &cfg,
        &format!(
            "global\n    maxconn 4096\n\
             defaults\n    mode http\n    timeout connect 5s\n    timeout client 600s\n    timeout server 600s\n    \
             option redispatch\n    retries 2\n\
             frontend f\n    bind 127.0.0.1:{port}\n    default_backend centrals\n\
             backend centrals\n    balance leastconn\n    option httpchk GET /healthz\n{servers}"
        ),
    )?;
    let child = Command::new("haproxy")
        .arg("-f")
        .arg(&cfg)
        .arg("-db")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("haproxy.log"))?)
        .spawn()
        .context("cannot start haproxy (apt-get install haproxy)")?;
    Ok(Proc(child))
}

async fn wait_healthy(url: &str, what: &str) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = http.get(format!("{url}/healthz")).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{what} did not become healthy at {url}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One run: `clinics` clinics with `records` new records each against
/// `centrals` central processes. Returns its JSON object.
pub async fn run(
    clinics: usize,
    records: usize,
    centrals: usize,
    say: &dyn Fn(String),
) -> anyhow::Result<serde_json::Value> {
    if centrals == 0 {
        bail!("--centrals: at least 1");
    }
    let postgres = crate::bench_pg::active();
    if centrals > 1 && !postgres {
        bail!("--centrals above 1 needs --database postgres://... (the centrals share it)");
    }
    say(format!(
        "bench: {clinics} clinics x {records} new records against {centrals} central process{} on {}{} (default configuration: each handles 4 sync batches at once, max_concurrent_sync; the next get 503 and retry 2 s later)",
        if centrals == 1 { "" } else { "es" },
        if postgres { "PostgreSQL" } else { "SQLite" },
        if centrals > 1 { " behind HAProxy" } else { "" }
    ));
    let base = std::env::var("CHARTSYNC_BENCH_DIR").unwrap_or_else(|_| ".".into());
    let tmp = tempfile::Builder::new()
        .prefix(&format!("chartsync-bench-clinics{centrals}-"))
        .tempdir_in(&base)
        .with_context(|| format!("cannot make a folder in {base}"))?;
    let dir = tmp.path().to_path_buf();
    let tmp = if std::env::var_os("CHARTSYNC_BENCH_KEEP").is_some() {
        eprintln!("  keeping {}", dir.display());
        let _ = tmp.keep();
        None
    } else {
        Some(tmp)
    };
    let bench_db = crate::bench_pg::create(&format!("clinics{centrals}")).await?;
    let database = match &bench_db {
        Some(db) => format!("[database]\nurl = \"{}\"\n", db.url),
        None => String::new(),
    };
    let mut ports = Vec::new();
    let mut configs = Vec::new();
    for n in 0..centrals {
        let port = free_port().await?;
        let path = dir.join(format!("central-{n}.toml"));
        write_config(
            &path,
            &format!(
                "listen = \"127.0.0.1:{port}\"\ndata_dir = \"central-{n}\"\nadmin_token = \"bench-admin-token-only-for-127.0.0.1\"\nmax_body_bytes = 134217728\n[upkeep]\nsweep_secs = 0\n{database}"
            ),
        )?;
        ports.push(port);
        configs.push(path);
    }
    let config = chartsync_central::CentralConfig::load(&configs[0])?;
    std::fs::create_dir_all(&config.data_dir)?;
    let mut tokens = Vec::new();
    {
        let db = chartsync_central::db::any::AnyDb::open(&config).await?;
        for n in 0..clinics {
            let (i, token) = chartsync_central::auth::register_instance(
                &db,
                None,
                format!("clinic-{n:03}"),
                vec![format!("district-{}", n / CATCHMENT_SIZE)],
            )
            .await?;
            tokens.push((i.id, token));
        }
    }
    let mut procs = Vec::new();
    for (n, path) in configs.iter().enumerate() {
        let child = Command::new(exe()?)
            .args(["central", "serve", "--config"])
            .arg(path)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join(format!("central-{n}.log")))?)
            .spawn()?;
        procs.push(Proc(child));
    }
    for port in &ports {
        wait_healthy(&format!("http://127.0.0.1:{port}"), "central").await?;
    }
    let (_lb, url) = if centrals > 1 {
        let port = free_port().await?;
        let lb = haproxy(&dir, port, &ports)?;
        let url = format!("http://127.0.0.1:{port}");
        wait_healthy(&url, "haproxy").await?;
        (Some(lb), url)
    } else {
        (None, format!("http://127.0.0.1:{}", ports[0]))
    };

    let t = Instant::now();
    let mut sats = Vec::with_capacity(clinics);
    for (n, (id, token)) in tokens.iter().enumerate() {
        let home = dir.join(format!("clinic-{n:03}"));
        std::fs::create_dir_all(&home)?;
        let config = home.join("satellite.toml");
        write_config(
            &config,
            &format!(
                "listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\n[central]\nurl = \"{url}\"\ninstance_id = {id}\ntoken = \"{token}\"\ntimeout_secs = 600\n"
            ),
        )?;
        let ids: Vec<PatientId> = (0..records).map(|_| PatientId::random()).collect();
        let catchment = n / CATCHMENT_SIZE;
        populate_in(
            &config,
            &ids,
            0,
            n * records,
            &format!("district-{catchment}"),
        )?;
        sats.push(Clinic {
            config,
            catchment,
            ids,
        });
    }
    say(format!(
        "  created {} records at {clinics} clinics in {:.1} s",
        clinics * records,
        t.elapsed().as_secs_f64()
    ));
    // Records a clinic gets from the others in its catchment.
    let others = |c: &Clinic| -> u64 {
        let members = sats.iter().filter(|o| o.catchment == c.catchment).count();
        ((members - 1) * records) as u64
    };
    let own = |c: &Clinic| c.ids.len() as u64;
    let mut phases = Vec::new();
    let report = |p: &Phase| {
        format!(
            "  {:<12} {:>7} records in {:>6.1} s: {:>7.0} records/s; slowest job {:.1} s (clinic {}); {} clinics ran it again (central busy), {} runs; {} failed",
            p.name,
            p.records,
            p.wall,
            p.records as f64 / p.wall.max(1e-9),
            p.slowest,
            p.slowest_clinic,
            p.rerun,
            p.runs,
            p.failures.len()
        )
    };
    phases.push(phase(
        "push (new)",
        "push",
        &sats,
        &own,
        Moved::Summary(sent),
    ));
    say(report(&phases[0]));
    phases.push(phase("fetch-new", "fetch-new", &sats, &others, Moved::Held));
    say(report(&phases[1]));
    for c in &sats {
        populate_in(
            &c.config,
            &c.ids,
            1,
            0,
            &format!("district-{}", c.catchment),
        )?;
    }
    phases.push(phase(
        "push (edits)",
        "push",
        &sats,
        &own,
        Moved::Summary(sent),
    ));
    say(report(&phases[2]));
    phases.push(phase(
        "pull",
        "pull",
        &sats,
        &others,
        Moved::Summary(received),
    ));
    say(report(&phases[3]));

    let peaks: Vec<u64> = procs
        .iter()
        .map(|p| peak_rss(p.0.id()).unwrap_or(0))
        .collect();
    let mut alive = 0;
    for p in &mut procs {
        if matches!(p.0.try_wait(), Ok(None)) {
            alive += 1;
        }
    }
    let failures: Vec<String> = phases.iter().flat_map(|p| p.failures.clone()).collect();
    for f in failures.iter().take(10) {
        say(format!("  FAILED: {f}"));
    }
    let result = json!({
        "clinics": clinics,
        "records_per_clinic": records,
        "catchment_size": CATCHMENT_SIZE,
        "centrals": centrals,
        "database": if postgres { "postgres" } else { "sqlite" },
        "haproxy": centrals > 1,
        "phases": phases.iter().map(|p| json!({
            "phase": p.name,
            "records": p.records,
            "seconds": p.wall,
            "records_per_s": p.records as f64 / p.wall.max(1e-9),
            "slowest_job_seconds": p.slowest,
            "slowest_clinic": p.slowest_clinic,
            "job_runs": p.runs,
            "clinics_run_again": p.rerun,
            "failed_jobs": p.failures.len(),
        })).collect::<Vec<_>>(),
        "failed_jobs": failures.len(),
        "failures": failures.iter().take(20).collect::<Vec<_>>(),
        "central_peak_bytes": peaks,
        "centrals_alive_at_end": alive,
    });
    drop(procs);
    drop(bench_db);
    drop(tmp);
    Ok(result)
}

/// The table of the clinics runs.
pub fn print_table(runs: &[serde_json::Value]) {
    let f = |v: &serde_json::Value| v.as_f64().unwrap_or(0.0);
    println!(
        "{:<28} {:<13} {:>8} {:>8} {:>10} {:>17} {:>6} {:>6} {:>7}",
        "clinics run",
        "phase",
        "records",
        "wall s",
        "records/s",
        "slowest job s (#)",
        "runs",
        "again",
        "failed"
    );
    for r in runs {
        let name = format!(
            "{} clinics, {} central{}",
            r["clinics"],
            r["centrals"],
            if r["centrals"].as_u64() == Some(1) {
                ""
            } else {
                "s"
            }
        );
        if let Some(phases) = r["phases"].as_array() {
            for p in phases {
                let u = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
                println!(
                    "{:<28} {:<13} {:>8} {:>8.1} {:>10.0} {:>10.1} (#{:<3}) {:>6} {:>6} {:>7}",
                    name,
                    p["phase"].as_str().unwrap_or(""),
                    u(&p["records"]),
                    f(&p["seconds"]),
                    f(&p["records_per_s"]),
                    f(&p["slowest_job_seconds"]),
                    u(&p["slowest_clinic"]),
                    u(&p["job_runs"]),
                    u(&p["clinics_run_again"]),
                    u(&p["failed_jobs"])
                );
            }
        }
        let peaks: Vec<String> = r["central_peak_bytes"]
            .as_array()
            .map(|a| a.iter().map(|b| format!("{:.0} MB", f(b) / 1e6)).collect())
            .unwrap_or_default();
        println!(
            "{:<28} central peak memory (VmHWM): {}; {} of {} alive at the end",
            name,
            peaks.join(", "),
            r["centrals_alive_at_end"],
            r["centrals"]
        );
    }
}
