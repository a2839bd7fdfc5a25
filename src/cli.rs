//! The command line: `chartsync demo | bench | central ... | satellite ...`.
//! Every command and flag is described in `docs/api.md`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// chartsync: patient-record sync between clinic satellites and central.
#[derive(Debug, Parser)]
#[command(name = "chartsync", version, about, long_about = None)]
pub struct Cli {
    /// More log output (-v: debug, -vv: trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs a central and two satellites in a temporary folder and shows a
    /// sync with a merged edit and a conflict kept for review.
    ///
    /// Example: chartsync demo
    Demo {
        /// Patients registered at each clinic.
        #[arg(long, default_value_t = 200)]
        patients: usize,
    },
    /// Measures push, pull, fetch-new and a no-change cycle against plain
    /// git, with real processes on 127.0.0.1 and durable writes.
    ///
    /// Example: chartsync bench --records 10000 --large 100000
    ///
    /// Long-lived records: chartsync bench --records 0 --long-records 20 --long-edits 300
    ///
    /// Slow link, next to PouchDB: chartsync bench --records 1000 --link 600ms,256kbit --pouchdb
    ///
    /// SQLite vs PostgreSQL: chartsync bench --records 2000 --repeat 3 --database postgres://postgres@127.0.0.1:5432/postgres
    ///
    /// Many clinics: chartsync bench --records 0 --database postgres://postgres@127.0.0.1:5432/postgres --clinics 100 --centrals 1,3
    Bench {
        /// Records for the main run.
        #[arg(long, default_value_t = 10_000)]
        records: usize,
        /// Records for the large run (push, fetch-new paging, first pull, no-change
        /// cycle), one run per value: --large 10000,1000000 shows whether
        /// the cost per record grows with central's size. Runs on the
        /// backend --database picks (PostgreSQL) or SQLite.
        #[arg(long, value_delimiter = ',')]
        large: Vec<usize>,
        /// Records pushed with plain git for the baseline.
        #[arg(long, default_value_t = 300)]
        baseline_sample: usize,
        /// Print only the JSON object.
        #[arg(long)]
        json: bool,
        /// Records for the long-lived-records run (each edited
        /// `--long-edits` times, pushed and pulled after every edit); 0
        /// skips it. `--records 0` skips the main run.
        #[arg(long, default_value_t = 0)]
        long_records: usize,
        /// Edits per record in the long-lived-records run.
        #[arg(long, default_value_t = 300)]
        long_edits: usize,
        /// The satellites reach central through a pacing proxy on
        /// 127.0.0.1 with this round-trip time and bandwidth per direction,
        /// such as 600ms,256kbit (half the round trip each way).
        #[arg(long, value_parser = crate::bench_link::Link::parse)]
        link: Option<crate::bench_link::Link>,
        /// The satellites do not fit compression and batches to the link
        /// (`[sync] adapt_to_link = false`), for before-and-after numbers.
        #[arg(long)]
        no_adapt: bool,
        /// Also replicate the main run's records with PouchDB to
        /// express-pouchdb (batch 100) through the same link and print both
        /// (runs `node bench/pouchdb/replicate.js`; `npm ci` there first).
        #[arg(long)]
        pouchdb: bool,
        /// Run central on PostgreSQL: a server url such as
        /// postgres://postgres@127.0.0.1:5432/postgres whose user may create
        /// databases (one is made per central started, and dropped after).
        /// Default: SQLite.
        #[arg(long)]
        database: Option<String>,
        /// With --database: main runs on each backend, alternating SQLite
        /// and PostgreSQL; the comparison prints the medians.
        #[arg(long, default_value_t = 1)]
        repeat: usize,
        /// Many clinics at once: this many satellites (each its own data
        /// folder, instance and processes; catchments of 10 clinics) push
        /// new records, fetch-new, push edits and pull, every clinic's job
        /// at the same moment; prints records/s, the slowest job and each
        /// central's peak memory. 0 skips it. Example: chartsync bench
        /// --records 0 --database postgres://postgres@127.0.0.1:5432/postgres
        /// --clinics 100 --centrals 1,3
        #[arg(long, default_value_t = 0)]
        clinics: usize,
        /// New records per clinic in the --clinics run.
        #[arg(long, default_value_t = 20)]
        clinic_records: usize,
        /// Central processes in the --clinics run, one run per value (1,3:
        /// one process, then three behind HAProxy on one PostgreSQL
        /// database; above 1 needs --database and haproxy).
        #[arg(long, value_delimiter = ',', default_value = "1")]
        centrals: Vec<usize>,
    },
    /// Central, the HQ server.
    #[command(subcommand)]
    Central(CentralCommand),
    /// A satellite, the clinic daemon.
    #[command(subcommand)]
    Satellite(SatelliteCommand),
}

#[derive(Debug, Subcommand)]
enum CentralCommand {
    /// Runs central (creates and migrates its data folder on first start).
    ///
    /// Example: chartsync central serve --config /etc/chartsync/central.toml
    Serve {
        /// The configuration file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Manages instances (satellites).
    #[command(subcommand)]
    Instance(InstanceCommand),
    /// Creates or migrates central's database (SQLite in data_dir, or the
    /// PostgreSQL database of `[database] url`) and prints one JSON line
    /// {"database": "sqlite"|"postgres", "schema_version": N}. `serve` also
    /// migrates on start; run this first to migrate ahead of a roll-out.
    /// Safe while other central processes run.
    ///
    /// Example: chartsync central migrate --config central.toml
    Migrate {
        /// The configuration file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Copies every record with its whole history, every instance (tokens
    /// stay valid), grants, holders and the change sequence from one
    /// central's storage to another's (SQLite to PostgreSQL, or back).
    /// Refuses a target that is not empty. Ends by comparing both sides
    /// record by record, and prints the counts as one JSON line. Stop
    /// every central of the source first.
    ///
    /// Example: chartsync central copy --from central.toml --to central-pg.toml
    Copy {
        /// The configuration of the central to copy.
        #[arg(long)]
        from: PathBuf,
        /// The configuration of the central to fill (an empty database).
        #[arg(long)]
        to: PathBuf,
    },
    /// Writes one record as a plain git repository (branch main at the
    /// head central acknowledged, its files checked out) in a new folder,
    /// from either backend, and prints one JSON line {"id", "head", "to"}.
    ///
    /// Example: chartsync central export 0b6f...e2 --config central.toml --to /tmp/record
    Export {
        /// The record's id.
        id: String,
        /// The configuration file.
        #[arg(long)]
        config: PathBuf,
        /// The folder to write (must not exist, or be empty).
        #[arg(long)]
        to: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum InstanceCommand {
    /// Registers a satellite and prints one JSON line {"id": N, "token": "..."}.
    /// The token is shown only here: put it in the satellite's configuration.
    /// Works whether or not central is running.
    ///
    /// Example: chartsync central instance add --config central.toml --name clinic-north --catchment north
    Add {
        /// The configuration file.
        #[arg(long)]
        config: PathBuf,
        /// A name for people.
        #[arg(long)]
        name: String,
        /// A chosen id (default: the lowest free one).
        #[arg(long)]
        id: Option<u32>,
        /// A catchment the satellite serves (repeat for several; the first is
        /// the default catchment of records it creates).
        #[arg(long = "catchment")]
        catchments: Vec<String>,
    },
    /// Lists the registered satellites: id, name, catchments, whether
    /// revoked, and when each was last seen (about a minute's precision).
    /// Works whether or not central is running.
    ///
    /// Example: chartsync central instance list --config central.toml --json
    List {
        /// The configuration file.
        #[arg(long)]
        config: PathBuf,
        /// Print one JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revokes a satellite: its token stops working at once, also on a
    /// running central (within about a second). Its id, name and history
    /// stay; revocation is final. Works whether or not central is running.
    ///
    /// Example: chartsync central instance revoke 3 --config central.toml
    Revoke {
        /// The instance id (see `instance list`).
        id: u32,
        /// The configuration file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Gives a satellite a new token and prints one JSON line {"id": N,
    /// "token": "..."}; the old token stops working at once, also on a
    /// running central (within about a second). Works whether or not
    /// central is running.
    ///
    /// Example: chartsync central instance rotate 3 --config central.toml
    Rotate {
        /// The instance id (see `instance list`).
        id: u32,
        /// The configuration file.
        #[arg(long)]
        config: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum SatelliteCommand {
    /// Runs a satellite: the local API and the scheduled sync jobs.
    ///
    /// Example: chartsync satellite run --config /etc/chartsync/satellite.toml
    Run {
        /// The configuration file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Runs one sync job now (for system cron), whether or not the daemon
    /// runs; waits for a run in progress instead of overlapping it. Exit
    /// status 0 only if the job completed.
    ///
    /// Example: chartsync satellite sync all --config /etc/chartsync/satellite.toml --json
    Sync {
        /// push, pull, fetch-new, or all (push, pull, fetch-new in order).
        #[arg(value_enum)]
        job: SyncJob,
        /// The configuration file.
        #[arg(long)]
        config: PathBuf,
        /// Print one JSON object instead of a line.
        #[arg(long)]
        json: bool,
        /// Seconds to wait for a run in progress before giving up.
        #[arg(long, default_value_t = 600)]
        wait_secs: u64,
    },
    /// Shows pending pushes, open conflicts, the pull cursor and the last runs.
    ///
    /// Example: chartsync satellite status --config /etc/chartsync/satellite.toml
    Status {
        /// The configuration file.
        #[arg(long)]
        config: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// After central was restored from a backup: forgets what central had
    /// acknowledged and resets the cursors, so that the next `sync all`
    /// pushes every record again and pulls everything.
    ///
    /// Example: chartsync satellite resync --config /etc/chartsync/satellite.toml
    Resync {
        /// The configuration file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Fetches a visiting patient's record from central by id; from then on
    /// it is held and synced (online only).
    ///
    /// Example: chartsync satellite fetch 0b6f3c1e-8d2a-4c1f-9e0a-2a4b6c8d0e1f --config satellite.toml
    Fetch {
        /// The patient id.
        id: String,
        /// The configuration file.
        #[arg(long)]
        config: PathBuf,
    },
}

/// A job for `satellite sync`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum SyncJob {
    Push,
    Pull,
    FetchNew,
    All,
}

impl Cli {
    /// Whether this is the demo (which prints its own account, so logs only
    /// warnings).
    pub fn is_demo(&self) -> bool {
        matches!(self.command, Command::Demo { .. } | Command::Bench { .. })
    }
}

pub fn init_logging(verbose: u8, quiet: bool) {
    let default = match verbose {
        0 if quiet => "warn",
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colour only for a person at a terminal: journald and log files get
    // plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .try_init();
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        match cli.command {
            Command::Demo { patients } => {
                install_crypto();
                crate::demo::run(patients).await?;
                Ok(ExitCode::SUCCESS)
            }
            Command::Bench {
                records,
                large,
                baseline_sample,
                json,
                long_records,
                long_edits,
                link,
                no_adapt,
                pouchdb,
                database,
                repeat,
                clinics,
                clinic_records,
                centrals,
            } => {
                install_crypto();
                crate::bench::run(crate::bench::BenchOptions {
                    records,
                    large,
                    baseline_sample,
                    json,
                    long_records,
                    long_edits,
                    link,
                    adapt: !no_adapt,
                    pouchdb,
                    database,
                    repeat,
                    clinics,
                    clinic_records,
                    centrals,
                })
                .await?;
                Ok(ExitCode::SUCCESS)
            }
            Command::Central(CentralCommand::Serve { config }) => central_serve(config).await,
            Command::Central(CentralCommand::Migrate { config }) => central_migrate(config).await,
            Command::Central(CentralCommand::Copy { from, to }) => {
                let (from, to) = (load_central(&from)?, load_central(&to)?);
                let counts = crate::copy::copy(&from, &to).await?;
                println!("{counts}");
                Ok(ExitCode::SUCCESS)
            }
            Command::Central(CentralCommand::Export { id, config, to }) => {
                let config = load_central(&config)?;
                let db = open_db(&config).await?;
                let head = crate::export::export(&config, &db, &id, &to).await?;
                println!(
                    "{}",
                    serde_json::json!({"id": id, "head": head.to_string(), "to": to.display().to_string()})
                );
                Ok(ExitCode::SUCCESS)
            }
            Command::Central(CentralCommand::Instance(InstanceCommand::Add {
                config,
                name,
                id,
                catchments,
            })) => instance_add(config, name, id, catchments).await,
            Command::Central(CentralCommand::Instance(InstanceCommand::List { config, json })) => {
                instance_list(config, json).await
            }
            Command::Central(CentralCommand::Instance(InstanceCommand::Revoke { id, config })) => {
                instance_revoke(config, id).await
            }
            Command::Central(CentralCommand::Instance(InstanceCommand::Rotate { id, config })) => {
                instance_rotate(config, id).await
            }
            Command::Satellite(SatelliteCommand::Run { config }) => satellite_run(config).await,
            Command::Satellite(SatelliteCommand::Sync {
                job,
                config,
                json,
                wait_secs,
            }) => satellite_sync(config, job, json, wait_secs).await,
            Command::Satellite(SatelliteCommand::Status { config, json }) => {
                satellite_status(config, json).await
            }
            Command::Satellite(SatelliteCommand::Resync { config }) => {
                let config = chartsync_satellite::SatelliteConfig::load(&config)?;
                let sat = chartsync_satellite::Satellite::open(config)?;
                let _lock = chartsync_satellite::jobs::JobLock::acquire(
                    &sat.config.data_dir,
                    std::time::Duration::from_secs(600),
                )
                .await?;
                let records = sat.db.forget_central()?;
                println!("{}", serde_json::json!({"records": records}));
                Ok(ExitCode::SUCCESS)
            }
            Command::Satellite(SatelliteCommand::Fetch { id, config }) => {
                satellite_fetch(config, id).await
            }
        }
    })
}

/// Loads central's configuration and checks its admin token (too short, or
/// in a file others may read: refused), for every `central` command.
fn load_central(path: &std::path::Path) -> anyhow::Result<chartsync_central::CentralConfig> {
    let config = chartsync_central::CentralConfig::load(path)?;
    config.admin_token()?;
    Ok(config)
}

/// Opens central's database as configured (creating its data folder,
/// private to its owner, for SQLite), migrated.
async fn open_db(
    config: &chartsync_central::CentralConfig,
) -> anyhow::Result<chartsync_central::db::any::AnyDb> {
    use chartsync_central::config::DatabaseUrl;
    let what = match config.database() {
        DatabaseUrl::Sqlite(path) => format!("the database {}", path.display()),
        DatabaseUrl::Postgres(_) => "the PostgreSQL database of [database] url".to_owned(),
    };
    chartsync_central::db::any::AnyDb::open(config)
        .await
        .with_context(|| format!("cannot open {what}"))
}

async fn central_migrate(config: PathBuf) -> anyhow::Result<ExitCode> {
    let config = load_central(&config)?;
    let db = open_db(&config).await?;
    println!(
        "{}",
        serde_json::json!({"database": db.backend(), "schema_version": db.schema_version()})
    );
    Ok(ExitCode::SUCCESS)
}

async fn central_serve(config: PathBuf) -> anyhow::Result<ExitCode> {
    crate::cli::install_crypto();
    let config = load_central(&config)?;
    let listen = config.listen;
    let tls = match &config.tls {
        Some(tls) => Some(
            chartsync_central::server::load_tls(&tls.cert, &tls.key)
                .await
                .with_context(|| {
                    format!("cannot load the TLS certificate {}", tls.cert.display())
                })?,
        ),
        None => None,
    };
    let db = open_db(&config).await?;
    let central = chartsync_central::Central::open(config, db).await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    tracing::info!(address = %listener.local_addr()?, tls = tls.is_some(), "central listening");
    chartsync_central::serve(central, listener, tls, shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

async fn instance_add(
    config: PathBuf,
    name: String,
    id: Option<u32>,
    catchments: Vec<String>,
) -> anyhow::Result<ExitCode> {
    let config = load_central(&config)?;
    let db = open_db(&config).await?;
    let (instance, token) =
        chartsync_central::auth::register_instance(&db, id, name, catchments).await?;
    println!("{}", serde_json::json!({"id": instance.id, "token": token}));
    Ok(ExitCode::SUCCESS)
}

async fn instance_list(config: PathBuf, json: bool) -> anyhow::Result<ExitCode> {
    use chartsync_central::db::CentralDb;
    let config = load_central(&config)?;
    let db = open_db(&config).await?;
    let instances = db.instances().await?;
    let seen = |at: Option<i64>| {
        at.and_then(|t| chrono::DateTime::from_timestamp(t, 0))
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
    };
    if json {
        let list: Vec<serde_json::Value> = instances
            .iter()
            .map(|i| {
                serde_json::json!({
                    "id": i.id,
                    "name": i.name,
                    "catchments": i.catchments,
                    "revoked": i.revoked,
                    "last_seen": seen(i.last_seen),
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(list));
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:>5}  {:<24} {:<8} {:<20}  catchments",
        "id", "name", "status", "last seen (UTC)"
    );
    for i in &instances {
        println!(
            "{:>5}  {:<24} {:<8} {:<20}  {}",
            i.id,
            i.name,
            if i.revoked { "revoked" } else { "active" },
            seen(i.last_seen).unwrap_or_else(|| "never".into()),
            i.catchments.join(",")
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn instance_revoke(config: PathBuf, id: u32) -> anyhow::Result<ExitCode> {
    use chartsync_central::db::CentralDb;
    let config = load_central(&config)?;
    let db = open_db(&config).await?;
    let instance = db.revoke_instance(id).await?;
    println!(
        "{}",
        serde_json::json!({"id": instance.id, "name": instance.name, "revoked": instance.revoked})
    );
    Ok(ExitCode::SUCCESS)
}

async fn instance_rotate(config: PathBuf, id: u32) -> anyhow::Result<ExitCode> {
    let config = load_central(&config)?;
    let db = open_db(&config).await?;
    let (instance, token) = chartsync_central::auth::rotate_token(&db, id).await?;
    println!("{}", serde_json::json!({"id": instance.id, "token": token}));
    Ok(ExitCode::SUCCESS)
}

/// Installs rustls' crypto provider (ring) once.
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

async fn satellite_run(config: PathBuf) -> anyhow::Result<ExitCode> {
    install_crypto();
    let config = chartsync_satellite::SatelliteConfig::load(&config)?;
    let listen = config.listen;
    config.check_listen(listen)?;
    // A token file others may read is refused now, not at the first job.
    config.token()?;
    let sat = chartsync_satellite::Satellite::open(config)?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    tracing::info!(address = %listener.local_addr()?, "satellite listening");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let scheduler = tokio::spawn(chartsync_satellite::scheduler::run(
        std::sync::Arc::clone(&sat),
        stopped,
    ));
    let result = chartsync_satellite::serve(sat, listener, shutdown_signal()).await;
    let _ = stop.send(true);
    let _ = scheduler.await;
    result?;
    Ok(ExitCode::SUCCESS)
}

async fn satellite_sync(
    config: PathBuf,
    job: SyncJob,
    json: bool,
    wait_secs: u64,
) -> anyhow::Result<ExitCode> {
    use chartsync_satellite::jobs::{Job, run_once};
    install_crypto();
    let config = chartsync_satellite::SatelliteConfig::load(&config)?;
    config.token()?;
    let sat = chartsync_satellite::Satellite::open(config)?;
    let jobs: &[Job] = match job {
        SyncJob::Push => &[Job::Push],
        SyncJob::Pull => &[Job::Pull],
        SyncJob::FetchNew => &[Job::FetchNew],
        SyncJob::All => &Job::ALL,
    };
    let progress = crate::progress::reporter();
    let summary = run_once(
        &sat,
        jobs,
        std::time::Duration::from_secs(wait_secs),
        progress.report(),
    )
    .await;
    progress.finish();
    let summary = summary.map_err(|e| {
        let chain = chartsync_satellite::error_chain(&e);
        anyhow::anyhow!("{} ({chain})", chartsync_satellite::words::problem(&chain))
    })?;
    if json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        println!("{}", summary.line());
    }
    if summary.deferred > 0 {
        eprintln!(
            "chartsync: {} record(s) deferred: central was busy or could not store them (see the log); run again later",
            summary.deferred
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

async fn satellite_status(config: PathBuf, json: bool) -> anyhow::Result<ExitCode> {
    let config = chartsync_satellite::SatelliteConfig::load(&config)?;
    let sat = chartsync_satellite::Satellite::open(config)?;
    let status = chartsync_satellite::status(&sat)?;
    if json {
        println!("{}", serde_json::to_string(&status)?);
    } else {
        println!("instance:        {}", status.instance_id);
        println!("pending pushes:  {}", status.pending_push);
        println!("open conflicts:  {}", status.open_conflicts);
        println!("pull cursor:     {}", status.cursor);
        let (_, disk) =
            chartsync_satellite::words::disk_sentence(&sat.config.data_dir, &sat.config.disk);
        println!("{disk}");
        let now = chrono::Utc::now().timestamp();
        let jobs = sat.db.job_records()?;
        if jobs.is_empty() {
            println!("no sync job has run yet");
        }
        for job in &jobs {
            println!("{}", chartsync_satellite::words::job_sentence(job, now));
        }
        if !status.set_aside.is_empty() {
            println!(
                "set aside:       {} record(s) could not be stored here; everything else syncs",
                status.set_aside.len()
            );
            for r in &status.set_aside {
                println!(
                    "  {} ({}, since {}, {} attempt(s), next {}): {}",
                    r.patient, r.job, r.since, r.attempts, r.retry_at, r.reason
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn satellite_fetch(config: PathBuf, id: String) -> anyhow::Result<ExitCode> {
    install_crypto();
    let config = chartsync_satellite::SatelliteConfig::load(&config)?;
    config.token()?;
    let sat = chartsync_satellite::Satellite::open(config)?;
    let id: chartsync_protocol::PatientId = id.parse()?;
    let head = chartsync_satellite::jobs::fetch_one(&sat, id)
        .await
        .map_err(|e| anyhow::anyhow!(chartsync_satellite::error_chain(&e)))?;
    println!("{}", serde_json::json!({"id": id, "head": head}));
    Ok(ExitCode::SUCCESS)
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}
