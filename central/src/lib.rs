//! chartsync central: the HQ server. It serialises writes per patient,
//! refuses stale writes, keeps every instance to its scope, and numbers
//! every accepted change in one global sequence.

pub mod apply;
pub mod auth;
pub mod config;
pub mod copies;
pub mod db;
pub mod duplicates;
pub mod locks;
pub mod metrics;
pub mod records;
pub mod redirect;
pub mod repair;
pub mod reports;
pub mod server;
pub mod sync;
pub mod ui;
pub mod upkeep;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use chartsync_store::{RecordStore, StoreError, StoreOptions};

pub use config::CentralConfig;
pub use server::serve;

use auth::{Authenticator, Caller};
use db::{CentralDb, DbError, Instance, RecordRow};
use locks::PatientLocks;

/// What can stop central from starting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data folder cannot be created or made private.
    #[error("cannot create the data folder")]
    DataDir(#[from] chartsync_common::private::PrivateError),
    /// No randomness for this process's lock-holder name.
    #[error("cannot make a random lock-holder name")]
    Random(#[from] getrandom::Error),
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The record store cannot be opened.
    #[error("cannot open the record store")]
    Store(#[from] StoreError),
    /// The database cannot be opened.
    #[error("cannot open the database")]
    Db(#[from] DbError),
    /// Crash repair failed.
    #[error("cannot repair records after a crash")]
    Repair(#[from] repair::RepairError),
}

/// A running central's shared state.
#[derive(Debug)]
pub struct Central<D> {
    /// The configuration.
    pub config: CentralConfig,
    /// The records.
    pub store: RecordStore,
    /// The database.
    pub db: D,
    /// Patient locks.
    pub locks: PatientLocks,
    /// Authentication.
    pub auth: Authenticator,
    /// Counters.
    pub metrics: metrics::Metrics,
    /// Sync batches being handled (see `max_concurrent_sync`).
    pub sync_slots: Arc<tokio::sync::Semaphore>,
    /// Sync requests received so far (background work waits until it
    /// stops moving: see `duplicates`).
    pub sync_requests: std::sync::atomic::AtomicU64,
    instances: RwLock<HashMap<u32, Instance>>,
    upkeep: RwLock<Option<upkeep::UpkeepQueue>>,
    /// When each instance's last-seen time was last written.
    seen: Mutex<HashMap<u32, Instant>>,
    /// Which records' copies this process keeps (bounded on PostgreSQL:
    /// see `copies`).
    pub copies: copies::Copies,
    /// Sessions of HQ's page (`/ui`).
    pub ui: chartsync_http::ui::Sessions,
    /// Satellites' reports waiting to be written (see `reports.rs`).
    pub reports: reports::Pending,
}

/// How often an instance's last-seen time is written, at most.
const SEEN_EVERY: Duration = Duration::from_secs(60);

impl<D: CentralDb> Central<D> {
    /// Opens central on an open database: the store, crash repair, then
    /// removal of half-built records of dead processes. Refuses a weak
    /// admin token ([`CentralConfig::admin_token`]); makes the data folder
    /// private to its owner (0700) if it is not.
    pub async fn open(config: CentralConfig, db: D) -> Result<Arc<Central<D>>, StartError> {
        let admin = config.admin_token()?;
        chartsync_common::private::private_dir(&config.data_dir)?;
        // Commits central makes are HQ's (instances' writes through the
        // record API name the instance: see `records.rs`).
        let store =
            RecordStore::open_keep_tmp(StoreOptions::new(config.data_dir.clone(), auth::HQ_NAME))?;
        let mut holder = [0u8; 8];
        getrandom::fill(&mut holder)?;
        let holder = locks::holder_name(u64::from_le_bytes(holder));
        // A process on this machine that died (kill -9, a crash) leaves
        // leases that would block its patients until they expire: drop
        // them now. (On PostgreSQL a writer also takes over, at once, any
        // lease whose holder's database session has ended, on whatever
        // machine it ran; on SQLite other machines do not share the file.)
        let released = locks::release_dead_holders(&db, &holder).await?;
        if released > 0 {
            tracing::warn!(released, "released leases of a stopped central process");
        }
        let locks = PatientLocks::new(
            holder,
            Duration::from_secs_f64(config.locks.lease_secs),
            Duration::from_secs_f64(config.locks.wait_secs),
        );
        let repair = repair::repair_all(&store, &db, &locks).await?;
        if repair.repaired > 0 {
            tracing::warn!(
                repaired = repair.repaired,
                "repaired refs left behind by a crash"
            );
        }
        if repair.left.is_empty() {
            let cleaned = store.clean_tmp()?;
            if cleaned > 0 {
                tracing::info!(cleaned, "removed half-built records of stopped processes");
            }
        } else {
            // Their new records may still wait in a stopped process's
            // staging folder: keep tmp/ until they are repaired.
            tracing::warn!("kept tmp/ for records whose refs are not repaired yet");
        }
        // On PostgreSQL the repositories are copies, kept to a bound: the
        // ones found from before a restart are the first to go.
        let copies = copies::Copies::new(if db.keeps_history() {
            config.database.cache_records()
        } else {
            0
        });
        if db.keeps_history() {
            copies.found(store.list()?);
        }
        let central = Central {
            copies,
            sync_requests: std::sync::atomic::AtomicU64::new(0),
            sync_slots: Arc::new(tokio::sync::Semaphore::new(
                config.max_concurrent_sync.max(1),
            )),
            auth: Authenticator::new(admin.as_ref().map(|s| s.0.as_str())),
            config,
            store,
            db,
            locks,
            metrics: metrics::Metrics::default(),
            instances: RwLock::new(HashMap::new()),
            upkeep: RwLock::new(None),
            seen: Mutex::new(HashMap::new()),
            ui: chartsync_http::ui::Sessions::default(),
            reports: reports::Pending::default(),
        };
        central.refresh_instances().await?;
        Ok(Arc::new(central))
    }

    /// Reloads the instance table.
    pub async fn refresh_instances(&self) -> Result<(), DbError> {
        let all = self.db.instances().await?;
        let mut map = self.instances.write().unwrap_or_else(|p| p.into_inner());
        *map = all.into_iter().map(|i| (i.id, i)).collect();
        Ok(())
    }

    /// Where writes queue records for repacking.
    pub fn set_upkeep(&self, queue: upkeep::UpkeepQueue) {
        *self.upkeep.write().unwrap_or_else(|p| p.into_inner()) = Some(queue);
    }

    /// Stops queueing records for repacking.
    pub fn clear_upkeep(&self) {
        *self.upkeep.write().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Queues a record for repacking if it has many packs, or packs written
    /// since its last repack as large as that repack (called after writes;
    /// never blocks).
    pub fn note_write(&self, id: chartsync_protocol::PatientId) {
        let threshold = self.config.upkeep.repack_after_packs.max(2);
        if self.store.needs_repack(&id, threshold).unwrap_or(false)
            && let Some(queue) = self
                .upkeep
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
        {
            let _ = queue.try_send(id);
        }
    }

    /// Remembers an instance seen at authentication, and notes in the
    /// database when it was seen (at most every minute per instance; a
    /// failure is logged, never the request's).
    pub async fn remember(&self, instance: &Instance) {
        {
            let mut map = self.instances.write().unwrap_or_else(|p| p.into_inner());
            map.insert(instance.id, instance.clone());
        }
        let due = {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            let due = seen
                .get(&instance.id)
                .is_none_or(|at| at.elapsed() >= SEEN_EVERY);
            if due {
                seen.insert(instance.id, Instant::now());
            }
            due
        };
        if due
            && let Err(e) = self
                .db
                .touch_instance(instance.id, chrono::Utc::now().timestamp())
                .await
        {
            tracing::warn!(instance = instance.id, error = %e, "could not note when an instance was seen");
        }
    }

    /// The default catchment of records an instance creates.
    pub fn first_catchment(&self, instance: u32) -> Option<String> {
        let map = self.instances.read().unwrap_or_else(|p| p.into_inner());
        map.get(&instance)
            .and_then(|i| i.catchments.first().cloned())
    }

    /// Where the database keeps the records' history (PostgreSQL), brings
    /// this process's copies of these records (`(id, head in the
    /// database)`) up to date from it: the git repositories in `data_dir`
    /// are then a cache that any process rebuilds from the database.
    /// Missing objects are fetched whenever the head is not in the copy;
    /// with `move_refs` (a writer holding the patients' locks) the copy's
    /// ref is also set to the database's head. Returns the records that
    /// could not be brought up to date (logged). Does nothing on SQLite.
    pub async fn catch_up(
        central: &Arc<Central<D>>,
        records: &[(chartsync_protocol::PatientId, chartsync_protocol::CommitId)],
        move_refs: bool,
    ) -> Vec<chartsync_protocol::PatientId> {
        if !central.db.keeps_history() {
            return Vec::new();
        }
        central.copies.used(records.iter().map(|(id, _)| *id));
        // Most copies are current: one look at the refs of all of them
        // (a file read each) first.
        let c = Arc::clone(central);
        let wanted = records.to_vec();
        let behind = match spawn_store(move || {
            Ok(wanted
                .into_iter()
                .filter(|(id, head)| c.store.head(id).ok().flatten() != Some(*head))
                .collect::<Vec<_>>())
        })
        .await
        {
            Ok(behind) => behind,
            Err(e) => {
                tracing::error!(error = %e, "could not read this process's copies of records");
                return records.iter().map(|(id, _)| *id).collect();
            }
        };
        let mut failed = Vec::new();
        for &(id, head) in &behind {
            if let Err(e) = Central::catch_up_one(central, id, head, move_refs).await {
                tracing::error!(patient = %id, %head, error = %e, "could not bring this process's copy of a record up to date from the database");
                failed.push(id);
            }
        }
        failed
    }

    async fn catch_up_one(
        central: &Arc<Central<D>>,
        id: chartsync_protocol::PatientId,
        head: chartsync_protocol::CommitId,
        move_refs: bool,
    ) -> Result<(), DbError> {
        let to_db = |e: StoreError| DbError::Backend {
            context: "bringing a record's copy up to date",
            source: Box::new(e),
        };
        let c = Arc::clone(central);
        let local = spawn_store(move || {
            let local = c.store.head(&id)?;
            let has = local == Some(head) || (local.is_some() && c.store.has_commit(&id, head)?);
            Ok((local, has))
        })
        .await
        .map_err(to_db)?;
        let (local, has) = local;
        if local == Some(head) || (has && !move_refs) {
            return Ok(());
        }
        let packs = if has {
            Vec::new()
        } else {
            central.db.history_after(&id, local).await?
        };
        let c = Arc::clone(central);
        spawn_store(move || {
            use chartsync_store::{Flush, Received};
            for (at, pack) in &packs {
                if !c.store.exists(&id) {
                    match c
                        .store
                        .prepare_received(&id, None, *at, pack, Flush::Deferred)?
                    {
                        Received::Ready(prepared) => {
                            c.store.publish(prepared, Flush::Deferred)?;
                        }
                        // Made meanwhile by another request of this process.
                        Received::Stale { .. } => {
                            c.store.ingest(&id, *at, pack, Flush::Deferred)?
                        }
                    }
                } else {
                    c.store.ingest(&id, *at, pack, Flush::Deferred)?;
                }
            }
            if move_refs {
                c.store.force_head(&id, head)?;
            }
            Ok(())
        })
        .await
        .map_err(to_db)
    }

    /// Whether the caller may read and write an existing record: HQ always;
    /// an instance for records in its catchments or on which it has a grant
    /// (created, fetched by id, held when the catchment moved).
    pub async fn in_scope(&self, caller: &Caller, row: &RecordRow) -> Result<bool, DbError> {
        match caller {
            Caller::Admin => Ok(true),
            Caller::Instance(instance) => {
                if row
                    .catchment
                    .as_ref()
                    .is_some_and(|c| instance.catchments.contains(c))
                {
                    return Ok(true);
                }
                self.db.has_grant(instance.id, &row.id).await
            }
        }
    }
}

/// Runs store work on a blocking thread.
async fn spawn_store<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(StoreError::Io {
            path: std::path::PathBuf::new(),
            source: std::io::Error::other(e),
        }),
    }
}
