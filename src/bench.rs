//! `chartsync bench`: N records at a satellite; push, fetch-new, an edit of
//! every record pushed and pulled, and a no-change cycle, each through the
//! real `chartsync` processes (central serving, one-shot satellite runs),
//! with durable writes on both sides; and the baseline measured in the same
//! run on the same records: plain `git push --force-with-lease` to a bare
//! repository per patient.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chartsync_protocol::api::FilePatch;
use chartsync_protocol::{Files, PatientId};
use chartsync_satellite::jobs::Summary;
use chartsync_store::{Change, CommitMeta, Condition, Flush};
use serde_json::json;

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Records for the main run.
    pub records: usize,
    /// Records for the large runs (push, fetch-new paging, first pull, no-change
    /// cycle), one run per value, on the backend `database` picks; empty
    /// skips them.
    pub large: Vec<usize>,
    /// Records pushed with plain git for the baseline.
    pub baseline_sample: usize,
    /// Print only the JSON object.
    pub json: bool,
    /// Records for the long-lived-records run; 0 skips it.
    pub long_records: usize,
    /// Edits of each record in the long-lived-records run.
    pub long_edits: usize,
    /// Satellites reach central through a pacing proxy of this link.
    pub link: Option<crate::bench_link::Link>,
    /// Whether the satellites adapt compression and batches to their link
    /// (`[sync] adapt_to_link`).
    pub adapt: bool,
    /// Also replicate the same records with PouchDB (`bench/pouchdb`)
    /// through the same link.
    pub pouchdb: bool,
    /// Run central on PostgreSQL: a server url (a database is made per
    /// central and dropped afterwards); `None`: SQLite.
    pub database: Option<String>,
    /// With `database`: main runs of each backend, alternating (SQLite,
    /// PostgreSQL, SQLite, ...); the comparison takes the medians.
    pub repeat: usize,
    /// Clinics for the many-clinics run; 0 skips it.
    pub clinics: usize,
    /// New records per clinic in the many-clinics run.
    pub clinic_records: usize,
    /// Central processes for the many-clinics run, one run per value.
    pub centrals: Vec<usize>,
}

/// A small deterministic generator (xorshift), so runs are comparable.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    pub(crate) fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len())]
    }
    pub(crate) fn words(&mut self, from: &[&str], min: usize, max: usize) -> String {
        let n = min + self.below(max - min + 1);
        (0..n)
            .map(|_| self.pick(from))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

pub(crate) const FIRST: &[&str] = &[
    "Amina", "Kofi", "Achieng", "Musa", "Fatou", "Tendai", "Zawadi", "Kwame", "Nia", "Jabari",
    "Imani", "Chidi", "Ayodele", "Wanjiru", "Sekou", "Halima", "Baraka", "Thandiwe", "Olu",
    "Mariam", "Kamau", "Esi", "Lindiwe", "Yaw", "Nomvula", "Ifeoma", "Abdi", "Naledi", "Tariq",
    "Ruth",
];
pub(crate) const LAST: &[&str] = &[
    "Diallo", "Mensah", "Otieno", "Okafor", "Banda", "Nkosi", "Mwangi", "Traore", "Abubakar",
    "Kamara", "Phiri", "Osei", "Ndlovu", "Keita", "Ochieng", "Adeyemi", "Moyo", "Sow", "Asante",
    "Lule",
];
pub(crate) const WORDS: &[&str] = &[
    "patient",
    "reports",
    "mild",
    "severe",
    "fever",
    "cough",
    "headache",
    "since",
    "three",
    "days",
    "no",
    "vomiting",
    "diarrhoea",
    "abdominal",
    "pain",
    "left",
    "right",
    "lower",
    "upper",
    "chest",
    "clear",
    "on",
    "auscultation",
    "tender",
    "swelling",
    "rash",
    "itching",
    "fatigue",
    "dizziness",
    "advised",
    "fluids",
    "rest",
    "review",
    "in",
    "one",
    "week",
    "referred",
    "to",
    "district",
    "hospital",
    "malaria",
    "test",
    "negative",
    "positive",
    "started",
    "on",
    "amoxicillin",
    "paracetamol",
    "ors",
    "zinc",
    "iron",
    "folate",
    "antenatal",
    "visit",
    "gestation",
    "weeks",
    "fundal",
    "height",
    "normal",
    "blood",
    "pressure",
    "raised",
    "repeat",
    "counselled",
    "on",
    "nutrition",
    "hiv",
    "status",
    "known",
    "art",
    "adherence",
    "good",
    "missed",
    "doses",
    "sputum",
    "sample",
    "sent",
    "wound",
    "dressed",
    "sutures",
    "removed",
    "healing",
    "well",
    "child",
    "weight",
    "gain",
    "poor",
    "immunisation",
    "up",
    "to",
    "date",
    "measles",
    "dose",
    "given",
    "follow",
    "up",
    "mother",
    "accompanied",
    "by",
    "husband",
    "complains",
    "of",
    "joint",
    "stiffness",
    "morning",
    "diabetic",
    "glucose",
    "fasting",
    "metformin",
    "continued",
    "eyes",
    "feet",
    "examined",
    "sensation",
    "intact",
    "asthma",
    "inhaler",
    "technique",
    "checked",
    "wheeze",
];
const ALLERGIES: &[&str] = &[
    "penicillin",
    "sulfa",
    "latex",
    "peanuts",
    "aspirin",
    "codeine",
    "eggs",
];
pub(crate) const REASONS: &[&str] = &[
    "routine review",
    "fever",
    "antenatal",
    "immunisation",
    "injury",
    "chronic care",
    "follow-up",
];

/// A patient document of about 2 KB, with realistic variety (names, free
/// text from a clinical vocabulary, numbers), so that compression ratios
/// are those of real records, not of a repeated template.
fn record(n: usize, revision: usize) -> Files {
    record_in(n, revision, "valley")
}

/// [`record`] in catchment `catchment`.
pub(crate) fn record_in(n: usize, revision: usize, catchment: &str) -> Files {
    let mut r = Rng::new(n as u64 + 1);
    let mut yaml = format!(
        "name: {} {}\nborn: {}-{:02}-{:02}\nsex: {}\ncatchment: {catchment}\nphone: '07{:08}'\nvillage: {} {}\nrevision: {revision}\nallergies: [{}]\nencounters:\n",
        r.pick(FIRST),
        r.pick(LAST),
        1940 + r.below(80),
        1 + r.below(12),
        1 + r.below(28),
        if r.below(2) == 0 { "female" } else { "male" },
        r.next() % 100_000_000,
        r.pick(LAST),
        ["hill", "river", "market", "school"][r.below(4)],
        (0..r.below(3))
            .map(|_| r.pick(ALLERGIES))
            .collect::<Vec<_>>()
            .join(", "),
    );
    while yaml.len() < 1900 {
        yaml.push_str(&format!(
            "  - date: 2026-{:02}-{:02}\n    reason: {}\n    bp: {}/{}\n    temp_c: {}.{}\n    weight_kg: {}\n    clinician: Dr. {}\n    note: {}\n",
            1 + r.below(11),
            1 + r.below(28),
            r.pick(REASONS),
            100 + r.below(60),
            60 + r.below(35),
            36 + r.below(4),
            r.below(10),
            3 + r.below(90),
            r.pick(LAST),
            r.words(WORDS, 8, 24),
        ));
    }
    Files::from([("patient.yaml".to_string(), yaml)])
}

struct Central {
    child: Child,
    url: String,
    /// Its PostgreSQL database (`--database`), dropped after it stops.
    _db: Option<crate::bench_pg::BenchDb>,
}

impl Drop for Central {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn exe() -> anyhow::Result<PathBuf> {
    std::env::current_exe().context("cannot find the chartsync executable")
}

pub(crate) async fn free_port() -> anyhow::Result<u16> {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    Ok(l.local_addr()?.port())
}

/// Peak resident memory of a live process (VmHWM), in bytes.
pub(crate) fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Runs a child to completion; returns its stdout, peak memory (bytes) and
/// stderr.
fn run_child(mut cmd: Command) -> anyhow::Result<(String, u64, String)> {
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let pid = child.id() as libc::pid_t;
    // Read its output on threads while we wait for it with wait4, which
    // also reports its peak memory.
    let mut child = child;
    let mut stdout = child.stdout.take().context("stdout")?;
    let mut stderr = child.stderr.take().context("stderr")?;
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        s
    });
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain data; wait4 writes it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our child; `status` and `usage` are valid for writes.
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    if rc != pid {
        bail!(
            "waiting for a child failed: {}",
            std::io::Error::last_os_error()
        );
    }
    std::mem::forget(child); // already reaped
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        bail!("{:?} failed: {}", cmd, stderr.trim());
    }
    Ok((stdout, usage.ru_maxrss.max(0) as u64 * 1024, stderr))
}

/// One satellite job in its own process.
pub(crate) fn job(config: &Path, job: &str) -> anyhow::Result<(Summary, u64)> {
    let mut cmd = Command::new(exe()?);
    cmd.args(["satellite", "sync", job, "--json", "--config"])
        .arg(config);
    let (out, rss, err) = run_child(cmd)?;
    if let Some(dir) = config.parent() {
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("jobs.log"))?;
        std::io::Write::write_all(&mut log, err.as_bytes())?;
    }
    let summary: Summary =
        serde_json::from_str(out.trim()).with_context(|| format!("bad summary: {out}"))?;
    Ok((summary, rss))
}

pub(crate) fn write_config(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// Creates (or edits, for `revision` > 0) records at a satellite, in
/// group-committed batches of 1000, marking them changed.
fn populate(config: &Path, ids: &[PatientId], revision: usize) -> anyhow::Result<()> {
    populate_in(config, ids, revision, 0, "valley")
}

/// [`populate`] with record contents numbered from `first`, in catchment
/// `catchment`.
pub(crate) fn populate_in(
    config: &Path,
    ids: &[PatientId],
    revision: usize,
    first: usize,
    catchment: &str,
) -> anyhow::Result<()> {
    let config = chartsync_satellite::SatelliteConfig::load(config)?;
    let sat = chartsync_satellite::Satellite::open(config)?;
    let meta = CommitMeta::new(
        "Bench",
        "bench@example",
        if revision == 0 { "create" } else { "edit" },
    );
    for (chunk_no, chunk) in ids.chunks(1000).enumerate() {
        sat.db.mark_dirty_many(chunk)?;
        let mut prepared = Vec::with_capacity(chunk.len());
        for (i, id) in chunk.iter().enumerate() {
            let n = first + chunk_no * 1000 + i;
            let p = if revision == 0 {
                sat.store.prepare(
                    id,
                    Condition::MustCreate,
                    Change::Replace(record_in(n, 0, catchment)),
                    &meta,
                    Flush::Deferred,
                )?
            } else {
                let patch = std::collections::BTreeMap::from([(
                    "patient.yaml".to_string(),
                    FilePatch::Merge(json!({"revision": revision, "phone": format!("08{:08}", n)})),
                )]);
                sat.store.prepare(
                    id,
                    Condition::Unconditional,
                    Change::Patch(patch),
                    &meta,
                    Flush::Deferred,
                )?
            };
            prepared.push(p);
        }
        sat.store.flush()?;
        for p in prepared {
            sat.store.publish(p, Flush::Deferred)?;
        }
        sat.store.flush()?;
    }
    Ok(())
}

/// The yardsticks for bytes on the wire: the changed content compressed as
/// one stream (zstd at `level`: 3, or the level the link gets; the best a
/// batch could do) and record by record.
fn compressed_content(
    ids: &[PatientId],
    level: i32,
    changed: impl Fn(usize) -> String,
) -> anyhow::Result<(u64, u64)> {
    let mut all = Vec::new();
    let mut each = 0u64;
    for n in 0..ids.len() {
        let text = changed(n);
        each += zstd::bulk::compress(text.as_bytes(), level)?.len() as u64;
        all.extend_from_slice(text.as_bytes());
    }
    Ok((zstd::bulk::compress(&all, level)?.len() as u64, each))
}

pub(crate) struct World {
    _dir: tempfile::TempDir,
    pub(crate) dir: PathBuf,
    /// The pacing proxy the satellites reach central through, if any.
    pub(crate) proxy: Option<crate::bench_link::LinkProxy>,
    central: Central,
    pub(crate) a: PathBuf,
    pub(crate) b: PathBuf,
    /// Satellite A's configuration text, its data folder named `{data_dir}`.
    a_template: String,
}

impl World {
    /// The configuration of another satellite of clinic A's instance, with
    /// its own data folder `name` (the large run's seeding satellites).
    fn satellite_like_a(&self, name: &str) -> anyhow::Result<PathBuf> {
        let path = self.dir.join(format!("{name}.toml"));
        write_config(&path, &self.a_template.replace("{data_dir}", name))?;
        Ok(path)
    }

    /// Stops central and the link proxy, and hands back the folder, to be
    /// removed when the caller drops it.
    fn retire(self) -> tempfile::TempDir {
        let World {
            _dir,
            proxy,
            central,
            ..
        } = self;
        drop(central);
        drop(proxy);
        _dir
    }
}

/// Central and two satellites; with a link, the satellites reach central
/// through a pacing proxy (and `adapt` says whether they adapt to it).
pub(crate) async fn world(
    tag: &str,
    link: Option<crate::bench_link::Link>,
    adapt: bool,
) -> anyhow::Result<World> {
    let base = std::env::var("CHARTSYNC_BENCH_DIR").unwrap_or_else(|_| ".".into());
    let tmp = tempfile::Builder::new()
        .prefix(&format!("chartsync-bench-{tag}-"))
        .tempdir_in(&base)
        .with_context(|| format!("cannot make a folder in {base}"))?;
    let dir = tmp.path().to_path_buf();
    // CHARTSYNC_BENCH_KEEP=1 keeps the folder (logs, repositories) to inspect.
    let tmp = if std::env::var_os("CHARTSYNC_BENCH_KEEP").is_some() {
        eprintln!("  keeping {}", dir.display());
        let _ = tmp.keep();
        tempfile::Builder::new().tempdir_in(&base)?
    } else {
        tmp
    };
    let port = free_port().await?;
    let central_toml = dir.join("central.toml");
    let bench_db = crate::bench_pg::create(tag).await?;
    let database = match &bench_db {
        Some(db) => format!("[database]\nurl = \"{}\"\n", db.url),
        None => String::new(),
    };
    write_config(
        &central_toml,
        &format!(
            "listen = \"127.0.0.1:{port}\"\ndata_dir = \"central\"\nadmin_token = \"bench-admin-token-only-for-127.0.0.1\"\nmax_body_bytes = 134217728\n[upkeep]\nsweep_secs = 0\n{database}"
        ),
    )?;
    let config = chartsync_central::CentralConfig::load(&central_toml)?;
    std::fs::create_dir_all(&config.data_dir)?;
    let mut tokens = Vec::new();
    {
        let db = chartsync_central::db::any::AnyDb::open(&config).await?;
        for name in ["clinic-a", "clinic-b"] {
            let (i, token) = chartsync_central::auth::register_instance(
                &db,
                None,
                name.into(),
                vec!["valley".into()],
            )
            .await?;
            tokens.push((i.id, token));
        }
    }
    let child = Command::new(exe()?)
        .args(["central", "serve", "--config"])
        .arg(&central_toml)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("central.log"))?)
        .spawn()?;
    let url = format!("http://127.0.0.1:{port}");
    let central = Central {
        child,
        url,
        _db: bench_db,
    };
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if http
            .get(format!("{}/healthz", central.url))
            .send()
            .await
            .is_ok()
        {
            break;
        }
        if Instant::now() > deadline {
            bail!("central did not start");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let proxy = match link {
        Some(link) => Some(crate::bench_link::LinkProxy::start(&central.url, link)?),
        None => None,
    };
    let reach = proxy.as_ref().map_or(&central.url, |p| &p.url);
    let mut paths = Vec::new();
    let mut templates = Vec::new();
    for (name, (id, token)) in ["a", "b"].iter().zip(&tokens) {
        let path = dir.join(format!("{name}.toml"));
        let template = format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{{data_dir}}\"\n[central]\nurl = \"{reach}\"\ninstance_id = {id}\ntoken = \"{token}\"\ntimeout_secs = 600\n[sync]\nadapt_to_link = {adapt}\n"
        );
        write_config(&path, &template.replace("{data_dir}", name))?;
        paths.push(path);
        templates.push(template);
    }
    let a_template = templates.swap_remove(0);
    let b = paths.pop().context("b")?;
    let a = paths.pop().context("a")?;
    Ok(World {
        _dir: tmp,
        dir,
        proxy,
        central,
        a,
        b,
        a_template,
    })
}

/// Plain git: push each sampled record's head to its own bare repository.
fn baseline(w: &World, ids: &[PatientId]) -> anyhow::Result<f64> {
    let config = chartsync_satellite::SatelliteConfig::load(&w.a)?;
    let layout = chartsync_store::Layout::new(config.data_dir.clone());
    let bare_root = w.dir.join("git-central");
    std::fs::create_dir_all(&bare_root)?;
    let mut bares = Vec::new();
    for id in ids {
        let bare = bare_root.join(format!("{id}.git"));
        let st = Command::new("git")
            .args(["init", "-q", "--bare"])
            .arg(&bare)
            .status()?;
        if !st.success() {
            bail!("git init failed");
        }
        bares.push(bare);
    }
    let start = Instant::now();
    for (id, bare) in ids.iter().zip(&bares) {
        let st = Command::new("git")
            .arg("--git-dir")
            .arg(layout.repo(id))
            .args(["push", "-q", "--force-with-lease=refs/heads/main:"])
            .arg(bare)
            .arg("refs/heads/main:refs/heads/main")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        if !st.success() {
            bail!("git push failed for {id}");
        }
    }
    Ok(ids.len() as f64 / start.elapsed().as_secs_f64())
}

/// The median of three no-change `sync all` cycles at a satellite.
fn no_change_cycle(config: &Path) -> anyhow::Result<Summary> {
    let mut cycles = Vec::new();
    for _ in 0..3 {
        cycles.push(job(config, "all")?.0);
    }
    cycles.sort_by(|x, y| x.seconds.total_cmp(&y.seconds));
    Ok(cycles.swap_remove(1))
}

/// The backend the next central starts on, for what the bench says.
fn backend_name() -> &'static str {
    if crate::bench_pg::active() {
        "PostgreSQL"
    } else {
        "SQLite"
    }
}

fn rate(s: &Summary, n: u64) -> f64 {
    n as f64 / s.seconds.max(1e-9)
}

/// Runs the benchmark and prints the table and the JSON object.
pub async fn run(options: BenchOptions) -> anyhow::Result<()> {
    if let Some(url) = &options.database {
        crate::bench_pg::set_server(url.clone())?;
    }
    let say = |s: String| {
        if !options.json {
            eprintln!("{s}");
        }
    };
    // Every run's folder is removed at the end (see `World::retire`).
    let mut leftovers = Vec::new();
    let mut result = if options.records > 0 && options.database.is_some() {
        side_by_side(&options, &say, &mut leftovers).await?
    } else if options.records > 0 {
        main_run(&options, &say, &mut leftovers).await?
    } else {
        json!({})
    };
    if !options.large.is_empty() {
        let mut runs = Vec::new();
        for &big in &options.large {
            runs.push(large_run(&options, big, &say, &mut leftovers).await?);
        }
        result["large"] = json!(runs);
    }
    if options.long_records > 0 {
        result["long"] =
            crate::bench_long::run(options.long_records, options.long_edits, &say).await?;
    }
    if options.clinics > 0 {
        let mut runs = Vec::new();
        for &centrals in &options.centrals {
            runs.push(
                crate::bench_clinics::run(options.clinics, options.clinic_records, centrals, &say)
                    .await?,
            );
        }
        result["clinics"] = json!(runs);
    }
    if !options.json && options.records > 0 {
        print_table(&result);
    }
    if !options.json {
        print_large(&result);
    }
    if !options.json
        && let Some(runs) = result["clinics"].as_array()
    {
        crate::bench_clinics::print_table(runs);
    }
    println!("{result}");
    let failed: u64 = result["clinics"]
        .as_array()
        .map(|runs| runs.iter().filter_map(|r| r["failed_jobs"].as_u64()).sum())
        .unwrap_or(0);
    if failed > 0 {
        bail!("{failed} clinic jobs failed (see \"failures\" above)");
    }
    Ok(())
}

/// The phases compared between the backends.
const PHASES: [(&str, &str); 4] = [
    ("push (new records)", "push_new"),
    ("fetch-new", "fetch_new"),
    ("push (edits)", "push_edits"),
    ("pull (edits)", "pull"),
];

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// With `--database`: the main run on SQLite and on PostgreSQL, alternating,
/// `repeat` times each; the last PostgreSQL run's object, with every run's
/// rates and the medians compared under "postgres_vs_sqlite".
async fn side_by_side(
    options: &BenchOptions,
    say: &dyn Fn(String),
    leftovers: &mut Vec<tempfile::TempDir>,
) -> anyhow::Result<serde_json::Value> {
    let mut runs: [Vec<serde_json::Value>; 2] = [Vec::new(), Vec::new()];
    for rep in 0..options.repeat.max(1) {
        for (slot, postgres) in [(0, false), (1, true)] {
            crate::bench_pg::set_active(postgres);
            say(format!(
                "bench: repetition {} of {}, central on {}",
                rep + 1,
                options.repeat.max(1),
                if postgres { "PostgreSQL" } else { "SQLite" }
            ));
            runs[slot].push(main_run(options, say, leftovers).await?);
        }
    }
    crate::bench_pg::set_active(true);
    let [sqlite, postgres] = runs;
    let mut result = postgres.last().cloned().unwrap_or_else(|| json!({}));
    let rates = |runs: &[serde_json::Value], key: &str| -> Vec<f64> {
        runs.iter()
            .filter_map(|r| r[key]["records_per_s"].as_f64())
            .collect()
    };
    let mut compared = serde_json::Map::new();
    for (_, key) in PHASES {
        let (s, p) = (rates(&sqlite, key), rates(&postgres, key));
        let (ms, mp) = (median(s.clone()), median(p.clone()));
        compared.insert(
            key.to_string(),
            json!({
                "sqlite_records_per_s": s,
                "postgres_records_per_s": p,
                "sqlite_median": ms,
                "postgres_median": mp,
                "postgres_per_sqlite": mp / ms.max(1e-9),
            }),
        );
    }
    result["postgres_vs_sqlite"] = serde_json::Value::Object(compared);
    result["repeat"] = json!(options.repeat.max(1));
    Ok(result)
}

/// The main run: push, fetch-new, edits pushed and pulled, no-change
/// cycles, plain git.
async fn main_run(
    options: &BenchOptions,
    say: &dyn Fn(String),
    leftovers: &mut Vec<tempfile::TempDir>,
) -> anyhow::Result<serde_json::Value> {
    let n = options.records;
    say(format!(
        "bench: {n} records of ~2 KB, central ({}) and two satellites as separate processes",
        backend_name()
    ));
    let w = world("main", options.link, options.adapt).await?;
    // Both satellites sync once with nothing to sync, as a running clinic
    // has: what a satellite knows of its link starts from there.
    job(&w.a, "all")?;
    job(&w.b, "all")?;
    let ids: Vec<PatientId> = (0..n).map(|_| PatientId::random()).collect();
    let t = Instant::now();
    populate(&w.a, &ids, 0)?;
    say(format!(
        "  created {n} records at satellite A in {:.1} s",
        t.elapsed().as_secs_f64()
    ));

    // The levels used: the satellite's requests, and central's replies
    // (compressed while sent).
    let (level, reply_level) = match (options.link, options.adapt) {
        (Some(link), true) => {
            let estimate = chartsync_protocol::link::LinkEstimate {
                bytes_per_sec: link.bytes_per_sec as u64,
                rtt_ms: link.rtt.as_millis() as u64,
                batch_secs: chartsync_protocol::link::DEFAULT_BATCH_SECS,
            };
            (estimate.level(), estimate.streamed_level())
        }
        _ => (
            chartsync_protocol::link::DEFAULT_LEVEL,
            chartsync_protocol::link::DEFAULT_LEVEL,
        ),
    };
    if let Some(link) = options.link {
        say(format!(
            "  through a pacing proxy: {}; satellites {} to it (zstd level {level} expected for requests, {reply_level} for replies)",
            link.describe(),
            if options.adapt {
                "adapt"
            } else {
                "do not adapt"
            }
        ));
    }
    // Bytes through the pacing proxy (both ways, with HTTP headers).
    let on_link = |w: &World| w.proxy.as_ref().map_or(0, |p| p.bytes().0 + p.bytes().1);
    let mut link_bytes = Vec::new();
    let mut timed = |w: &World, config: &Path, name: &str| -> anyhow::Result<(Summary, u64)> {
        let before = on_link(w);
        let out = job(config, name)?;
        link_bytes.push(on_link(w) - before);
        Ok(out)
    };
    let (push_new, push_rss) = timed(&w, &w.a, "push")?;
    say(format!("  push (new):   {}", push_new.line()));
    let (fetch, fetch_rss) = timed(&w, &w.b, "fetch-new")?;
    say(format!("  fetch-new:    {}", fetch.line()));
    populate(&w.a, &ids, 1)?;
    let (push_edit, _) = timed(&w, &w.a, "push")?;
    say(format!("  push (edits): {}", push_edit.line()));
    let (pull, pull_rss) = timed(&w, &w.b, "pull")?;
    say(format!("  pull:         {}", pull.line()));
    let idle = no_change_cycle(&w.b)?;
    say(format!("  no change:    {}", idle.line()));
    let central_rss = peak_rss(w.central.child.id()).unwrap_or(0);
    let sample: Vec<PatientId> = ids
        .iter()
        .copied()
        .take(options.baseline_sample.min(n))
        .collect();
    let git_rate = baseline(&w, &sample)?;
    say(format!(
        "  plain git:    {git_rate:.1} records/s over {} records",
        sample.len()
    ));

    // Bytes per byte of compressed changed content.
    let edited = |i: usize| {
        let mut doc =
            chartsync_merge::parse_yaml(&record(i, 0)["patient.yaml"]).unwrap_or_default();
        doc["revision"] = json!(1);
        doc["phone"] = json!(format!("08{:08}", i));
        chartsync_merge::to_yaml(&doc)
    };
    let new_content = compressed_content(&ids, 3, |i| record(i, 0)["patient.yaml"].clone())?;
    let edit_content = compressed_content(&ids, 3, edited)?;
    let new_at_level = compressed_content(&ids, level, |i| record(i, 0)["patient.yaml"].clone())?.0;
    let edit_at_level = compressed_content(&ids, level, edited)?.0;
    let (new_at_reply, edit_at_reply) = if reply_level == level {
        (new_at_level, edit_at_level)
    } else {
        (
            compressed_content(&ids, reply_level, |i| record(i, 0)["patient.yaml"].clone())?.0,
            compressed_content(&ids, reply_level, edited)?.0,
        )
    };
    let wire = |s: &Summary| (s.bytes_sent + s.bytes_received) as f64;
    let (new_content, new_each) = new_content;
    let (edit_content, edit_each) = edit_content;
    let phase = |s: &Summary, link: u64, content: u64, each: u64, at_level: u64| {
        json!({
            "records_per_s": rate(s, n as u64),
            "seconds": s.seconds,
            "seconds_per_1000": s.seconds * 1000.0 / n as f64,
            "bytes_per_record": wire(s) / n as f64,
            "link_bytes_per_record": link as f64 / n as f64,
            "round_trips": s.round_trips,
            "wire_per_compressed_content": wire(s) / content as f64,
            "wire_per_record_compressed_content": wire(s) / each as f64,
            "wire_per_content_at_level": wire(s) / at_level as f64,
        })
    };
    let mut result = json!({
        "records": n,
        "zstd_level": level,
        "zstd_level_replies": reply_level,
        "push_new": phase(&push_new, link_bytes[0], new_content, new_each, new_at_level),
        "fetch_new": phase(&fetch, link_bytes[1], new_content, new_each, new_at_reply),
        "push_edits": phase(&push_edit, link_bytes[2], edit_content, edit_each, edit_at_level),
        "pull": phase(&pull, link_bytes[3], edit_content, edit_each, edit_at_reply),
        "no_change_cycle": {"seconds": idle.seconds, "round_trips": idle.round_trips},
        "central_peak_bytes": central_rss,
        "baseline_git": {"records_per_s": git_rate, "sample": sample.len()},
        "push_vs_git": rate(&push_new, n as u64) / git_rate,
    });
    result["push_new"]["satellite_peak_bytes"] = json!(push_rss);
    result["fetch_new"]["satellite_peak_bytes"] = json!(fetch_rss);
    result["pull"]["satellite_peak_bytes"] = json!(pull_rss);
    if let Some(link) = options.link {
        result["link"] = json!({
            "rtt_ms": link.rtt.as_millis() as u64,
            "kbit_per_s": link.bytes_per_sec * 8.0 / 1000.0,
            "adapt": options.adapt,
        });
    }
    if options.pouchdb {
        let p = crate::bench_pouchdb::run(&w.dir, n, options.link, |i| {
            chartsync_merge::parse_yaml(&record(i, 0)["patient.yaml"]).unwrap_or_default()
        })
        .await?;
        say(format!(
            "  pouchdb:      push {:.1} s ({} B on the link), fetch {:.1} s ({} B on the link)",
            p.push_seconds, p.push_link_bytes, p.fetch_seconds, p.fetch_link_bytes
        ));
        result["pouchdb"] = json!({
            "batch_size": p.batch_size,
            "push_seconds_per_1000": p.push_seconds * 1000.0 / n as f64,
            "fetch_seconds_per_1000": p.fetch_seconds * 1000.0 / n as f64,
            "push_link_bytes_per_record": p.push_link_bytes as f64 / n as f64,
            "fetch_link_bytes_per_record": p.fetch_link_bytes as f64 / n as f64,
            "push_times_slower": p.push_seconds / push_new.seconds.max(1e-9),
            "fetch_times_slower": p.fetch_seconds / fetch.seconds.max(1e-9),
        });
    }
    // The main run's folder is removed only at the end of the benchmark:
    // deleting many files slows down creating new ones for minutes on
    // some file systems (ext4 avoids reusing recently freed inodes), which
    // would distort the runs after it.
    leftovers.push(w.retire());
    Ok(result)
}

/// Records a seeding satellite creates and pushes in the large run before
/// its folder is left for the end (so that the disk holds at most one
/// seeding satellite's records beside satellite B's).
const SEED_CHUNK: usize = 100_000;

/// The large run: `big` records pushed to central by seeding satellites
/// (the clinic A instance, a fresh folder per [`SEED_CHUNK`] records, each
/// chunk's push rate reported so a rate falling with central's size
/// shows), fetched by satellite B (fetch-new paging over all of them),
/// B's first pull (a walk of all of them), then the no-change cycle at B.
async fn large_run(
    options: &BenchOptions,
    big: usize,
    say: &dyn Fn(String),
    leftovers: &mut Vec<tempfile::TempDir>,
) -> anyhow::Result<serde_json::Value> {
    say(format!(
        "bench: large run, {big} records at central ({}) (push, fetch-new paging, first pull, no-change cycle)",
        backend_name()
    ));
    let w = world("large", options.link, options.adapt).await?;
    let mut pushes = Vec::new();
    let mut push_seconds = 0.0;
    let mut push_round_trips = 0;
    let mut seeds: Vec<PathBuf> = Vec::new();
    let mut removals = Vec::new();
    for (k, first) in (0..big).step_by(SEED_CHUNK).enumerate() {
        let count = SEED_CHUNK.min(big - first);
        let seed = if k == 0 {
            w.a.clone()
        } else {
            let seed = w.satellite_like_a(&format!("seed{k}"))?;
            // The previous seeding satellite's records are at central now:
            // its folder goes while this one fills up.
            if let Some(done) = seeds.last() {
                let data = chartsync_satellite::SatelliteConfig::load(done)?.data_dir;
                removals.push(std::thread::spawn(move || {
                    let _ = std::fs::remove_dir_all(data);
                }));
            }
            seed
        };
        seeds.push(seed.clone());
        let ids: Vec<PatientId> = (0..count).map(|_| PatientId::random()).collect();
        let t = Instant::now();
        populate_in(&seed, &ids, 0, first, "valley")?;
        let made = t.elapsed().as_secs_f64();
        let (push, _) = job(&seed, "push")?;
        say(format!(
            "  records {}..{}: created in {made:.1} s; push (new): {}",
            first,
            first + count,
            push.line()
        ));
        push_seconds += push.seconds;
        push_round_trips += push.round_trips;
        pushes.push(json!({
            "first": first,
            "records": count,
            "records_per_s": rate(&push, count as u64),
            "round_trips": push.round_trips,
        }));
    }
    for removal in removals {
        let _ = removal.join();
    }
    let (fetch, rss) = job(&w.b, "fetch-new")?;
    say(format!("  fetch-new:    {}", fetch.line()));
    // B's first pull lists every record it now holds (each changed after
    // its pull cursor), all already at central's head here: what it costs
    // is the walk, not the records.
    let (first_pull, _) = job(&w.b, "pull")?;
    say(format!("  first pull:   {}", first_pull.line()));
    let idle = no_change_cycle(&w.b)?;
    say(format!("  no change:    {}", idle.line()));
    let wire = |s: &Summary| (s.bytes_sent + s.bytes_received) as f64;
    let central_peak = peak_rss(w.central.child.id()).unwrap_or(0);
    leftovers.push(w.retire());
    Ok(json!({
        "records": big,
        "backend": if crate::bench_pg::active() { "postgres" } else { "sqlite" },
        "push_new": {"records_per_s": big as f64 / push_seconds.max(1e-9), "round_trips": push_round_trips, "by_chunk": pushes},
        "fetch_new": {"records_per_s": rate(&fetch, big as u64), "round_trips": fetch.round_trips, "satellite_peak_bytes": rss, "bytes_per_record": wire(&fetch) / big as f64},
        "first_pull": {"records_per_s": rate(&first_pull, big as u64), "seconds": first_pull.seconds, "round_trips": first_pull.round_trips},
        "no_change_cycle": {"seconds": idle.seconds, "round_trips": idle.round_trips},
        "central_peak_bytes": central_peak,
    }))
}

fn print_table(r: &serde_json::Value) {
    let f = |v: &serde_json::Value| v.as_f64().unwrap_or(0.0);
    if let Some(c) = r.get("postgres_vs_sqlite") {
        println!(
            "central on SQLite vs PostgreSQL, {} runs each, alternating (medians; every run's rate in the JSON)",
            r["repeat"]
        );
        println!(
            "{:<22} {:>16} {:>16} {:>10}",
            "", "SQLite rec/s", "PostgreSQL rec/s", "PG/SQLite"
        );
        for (name, key) in PHASES {
            println!(
                "{:<22} {:>16.0} {:>16.0} {:>9.0}%",
                name,
                f(&c[key]["sqlite_median"]),
                f(&c[key]["postgres_median"]),
                100.0 * f(&c[key]["postgres_per_sqlite"])
            );
        }
        println!("the last PostgreSQL run:");
    }
    if r.get("link").is_some() {
        println!(
            "link: {} ms round trip, {:.0} kbit/s each way, satellites {}adapting; zstd level {} (requests), {} (replies); /level: wire per content compressed as one stream at the level used",
            r["link"]["rtt_ms"],
            f(&r["link"]["kbit_per_s"]),
            if r["link"]["adapt"].as_bool() == Some(true) {
                ""
            } else {
                "not "
            },
            r["zstd_level"],
            r["zstd_level_replies"]
        );
    }
    println!(
        "{:<22} {:>10} {:>10} {:>10} {:>12} {:>10} {:>10} {:>10}",
        "", "records/s", "s/1000", "bytes/rec", "round trips", "/zstd3", "/each", "/level"
    );
    for (name, key) in PHASES {
        let x = &r[key];
        println!(
            "{:<22} {:>10.0} {:>10.2} {:>10.0} {:>12} {:>10.2} {:>10.2} {:>10.2}",
            name,
            f(&x["records_per_s"]),
            f(&x["seconds_per_1000"]),
            f(&x["bytes_per_record"]),
            x["round_trips"],
            f(&x["wire_per_compressed_content"]),
            f(&x["wire_per_record_compressed_content"]),
            f(&x["wire_per_content_at_level"])
        );
    }
    if r.get("pouchdb").is_some() {
        let p = &r["pouchdb"];
        println!(
            "{:<22} push {:.2} s/1000 ({:.0} B/rec on the link), fetch {:.2} s/1000 ({:.0} B/rec); chartsync push {:.0} B/rec, fetch {:.0} B/rec on the link",
            format!("pouchdb (batch {})", p["batch_size"]),
            f(&p["push_seconds_per_1000"]),
            f(&p["push_link_bytes_per_record"]),
            f(&p["fetch_seconds_per_1000"]),
            f(&p["fetch_link_bytes_per_record"]),
            f(&r["push_new"]["link_bytes_per_record"]),
            f(&r["fetch_new"]["link_bytes_per_record"]),
        );
        println!(
            "{:<22} push {:.1}x, fetch {:.1}x",
            "chartsync vs pouchdb",
            f(&p["push_times_slower"]),
            f(&p["fetch_times_slower"])
        );
    }
    println!(
        "{:<22} {:>12.1}   (same records, git push --force-with-lease per bare repository)",
        "plain git push",
        f(&r["baseline_git"]["records_per_s"])
    );
    println!(
        "{:<22} {:>12.1}x",
        "push vs plain git",
        f(&r["push_vs_git"])
    );
    println!(
        "{:<22} {:>12.3} s, {} round trips",
        "no-change cycle",
        f(&r["no_change_cycle"]["seconds"]),
        r["no_change_cycle"]["round_trips"]
    );
    println!(
        "{:<22} satellite {:.0} MB (fetch-new), central {:.0} MB",
        "peak memory",
        f(&r["fetch_new"]["satellite_peak_bytes"]) / 1e6,
        f(&r["central_peak_bytes"]) / 1e6
    );
}

/// The large runs' lines.
fn print_large(r: &serde_json::Value) {
    let f = |v: &serde_json::Value| v.as_f64().unwrap_or(0.0);
    for l in r["large"].as_array().into_iter().flatten() {
        println!(
            "{:<22} {} records ({}): push {:.0} records/s, fetch-new {:.0} records/s ({} round trips, satellite {:.0} MB), first pull {:.0} records/s, no-change cycle {:.3} s ({} round trips), central {:.0} MB",
            "large run",
            l["records"],
            l["backend"].as_str().unwrap_or("?"),
            f(&l["push_new"]["records_per_s"]),
            f(&l["fetch_new"]["records_per_s"]),
            l["fetch_new"]["round_trips"],
            f(&l["fetch_new"]["satellite_peak_bytes"]) / 1e6,
            f(&l["first_pull"]["records_per_s"]),
            f(&l["no_change_cycle"]["seconds"]),
            l["no_change_cycle"]["round_trips"],
            f(&l["central_peak_bytes"]) / 1e6,
        );
    }
}
