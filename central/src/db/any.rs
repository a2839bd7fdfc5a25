//! Either backend, chosen by the `[database] url` of central's
//! configuration at start-up.

use std::time::Duration;

use chartsync_protocol::{CommitId, PatientId};

use super::postgres::PgDb;
use super::sqlite::SqliteDb;
use super::{
    ActivityRow, Applied, CentralDb, Counts, DbError, DuplicateKey, DuplicatePair, DuplicateUpdate,
    HeadChange, Instance, NewInstance, RecordRow, RefPending, SavedReport, Seq, StoredCandidates,
};
use crate::config::{CentralConfig, DatabaseUrl};

/// Central's database, on either backend.
#[derive(Debug, Clone)]
pub enum AnyDb {
    /// SQLite in `data_dir` (the embedded default).
    Sqlite(SqliteDb),
    /// PostgreSQL (several central processes).
    Postgres(PgDb),
}

impl AnyDb {
    /// Opens (creating and migrating) the database `config` names. For
    /// SQLite, creates the data folder (private to its owner) first.
    pub async fn open(config: &CentralConfig) -> Result<AnyDb, DbError> {
        match config.database() {
            DatabaseUrl::Sqlite(path) => {
                chartsync_common::private::private_dir(&config.data_dir).map_err(|e| {
                    DbError::Backend {
                        context: "creating the data folder",
                        source: Box::new(e),
                    }
                })?;
                let db = tokio::task::spawn_blocking(move || SqliteDb::open(&path))
                    .await
                    .map_err(|e| DbError::Backend {
                        context: "opening the database",
                        source: Box::new(e),
                    })??;
                Ok(AnyDb::Sqlite(db))
            }
            DatabaseUrl::Postgres(url) => Ok(AnyDb::Postgres(
                PgDb::open_with(&url, config.database.max_connections()).await?,
            )),
        }
    }

    /// The backend's name: `sqlite` or `postgres`.
    pub fn backend(&self) -> &'static str {
        match self {
            AnyDb::Sqlite(_) => "sqlite",
            AnyDb::Postgres(_) => "postgres",
        }
    }

    /// The schema version an open database is at (this build's).
    pub fn schema_version(&self) -> u32 {
        match self {
            AnyDb::Sqlite(_) => super::sqlite::MIGRATIONS.len() as u32,
            AnyDb::Postgres(_) => super::postgres::SCHEMA_VERSION,
        }
    }
}

/// Calls the same method on whichever backend.
macro_rules! both {
    ($self:ident . $method:ident ( $($arg:expr),* )) => {
        match $self {
            AnyDb::Sqlite(db) => db.$method($($arg),*).await,
            AnyDb::Postgres(db) => db.$method($($arg),*).await,
        }
    };
}

impl CentralDb for AnyDb {
    async fn add_instance(&self, new: NewInstance) -> Result<Instance, DbError> {
        both!(self.add_instance(new))
    }
    async fn revoke_instance(&self, id: u32) -> Result<Instance, DbError> {
        both!(self.revoke_instance(id))
    }
    async fn rotate_token(&self, id: u32, token_hash: [u8; 32]) -> Result<Instance, DbError> {
        both!(self.rotate_token(id, token_hash))
    }
    async fn touch_instance(&self, id: u32, at: i64) -> Result<(), DbError> {
        both!(self.touch_instance(id, at))
    }
    async fn instances_version(&self) -> Result<u64, DbError> {
        both!(self.instances_version())
    }
    async fn instance_by_token(&self, token_hash: [u8; 32]) -> Result<Option<Instance>, DbError> {
        both!(self.instance_by_token(token_hash))
    }
    async fn instances(&self) -> Result<Vec<Instance>, DbError> {
        both!(self.instances())
    }
    async fn try_lock(
        &self,
        ids: &[PatientId],
        holder: &str,
        lease: Duration,
    ) -> Result<Vec<bool>, DbError> {
        both!(self.try_lock(ids, holder, lease))
    }
    async fn unlock(&self, ids: &[PatientId], holder: &str) -> Result<(), DbError> {
        both!(self.unlock(ids, holder))
    }
    async fn lease_holders(&self) -> Result<Vec<String>, DbError> {
        both!(self.lease_holders())
    }
    async fn release_leases_of(&self, holder: &str) -> Result<u64, DbError> {
        both!(self.release_leases_of(holder))
    }
    async fn records(&self, ids: &[PatientId]) -> Result<Vec<Option<RecordRow>>, DbError> {
        both!(self.records(ids))
    }
    async fn apply(&self, changes: &[HeadChange]) -> Result<Vec<Applied>, DbError> {
        both!(self.apply(changes))
    }
    async fn ref_pending(&self) -> Result<Vec<RefPending>, DbError> {
        both!(self.ref_pending())
    }
    async fn clear_ref_pending(&self, done: &[(PatientId, CommitId)]) -> Result<(), DbError> {
        both!(self.clear_ref_pending(done))
    }
    async fn has_grant(&self, instance: u32, id: &PatientId) -> Result<bool, DbError> {
        both!(self.has_grant(instance, id))
    }
    async fn grant(&self, instance: u32, id: &PatientId, reason: &str) -> Result<(), DbError> {
        both!(self.grant(instance, id, reason))
    }
    async fn scope_changes(
        &self,
        instance: &Instance,
        after: Seq,
        limit: usize,
    ) -> Result<Vec<RecordRow>, DbError> {
        both!(self.scope_changes(instance, after, limit))
    }
    async fn first_head(&self, id: &PatientId) -> Result<Option<CommitId>, DbError> {
        both!(self.first_head(id))
    }
    async fn head_at(&self, id: &PatientId, at: Seq) -> Result<Option<CommitId>, DbError> {
        both!(self.head_at(id, at))
    }
    async fn add_holder(&self, instance: u32, ids: &[PatientId]) -> Result<(), DbError> {
        both!(self.add_holder(instance, ids))
    }
    async fn record_page(
        &self,
        instance: u32,
        page: u64,
        cursor: Seq,
        ids: &[PatientId],
        at: i64,
    ) -> Result<(), DbError> {
        both!(self.record_page(instance, page, cursor, ids, at))
    }
    async fn offered_pages(
        &self,
        instance: u32,
        pages: &[u64],
    ) -> Result<Vec<Option<super::pages::OfferedPage>>, DbError> {
        both!(self.offered_pages(instance, pages))
    }
    async fn drop_pages(&self, instance: u32, pages: &[u64]) -> Result<(), DbError> {
        both!(self.drop_pages(instance, pages))
    }
    async fn forget_pages(&self, before: i64) -> Result<u64, DbError> {
        both!(self.forget_pages(before))
    }
    async fn counts(&self) -> Result<Counts, DbError> {
        both!(self.counts())
    }
    async fn last_seq(&self) -> Result<Seq, DbError> {
        both!(self.last_seq())
    }
    async fn save_report(&self, report: SavedReport) -> Result<(), DbError> {
        both!(self.save_report(report))
    }
    async fn reports(&self) -> Result<Vec<SavedReport>, DbError> {
        both!(self.reports())
    }
    async fn activity(&self, since_hour: i64) -> Result<Vec<ActivityRow>, DbError> {
        both!(self.activity(since_hour))
    }
    async fn changed_after(
        &self,
        after: Seq,
        limit: usize,
    ) -> Result<Vec<(Seq, PatientId, CommitId)>, DbError> {
        both!(self.changed_after(after, limit))
    }
    async fn duplicates_cursor(&self) -> Result<Seq, DbError> {
        both!(self.duplicates_cursor())
    }
    async fn duplicate_candidates(
        &self,
        keys: Vec<DuplicateKey>,
        max_block: usize,
    ) -> Result<Vec<(PatientId, String)>, DbError> {
        both!(self.duplicate_candidates(keys, max_block))
    }
    async fn duplicate_candidates_many(
        &self,
        plans: Vec<Vec<DuplicateKey>>,
        max_block: usize,
    ) -> Result<Vec<StoredCandidates>, DbError> {
        both!(self.duplicate_candidates_many(plans, max_block))
    }
    async fn index_duplicates(&self, updates: Vec<DuplicateUpdate>) -> Result<(), DbError> {
        both!(self.index_duplicates(updates))
    }
    async fn duplicate_pairs(
        &self,
        min_score: f64,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<DuplicatePair>, DbError> {
        both!(self.duplicate_pairs(min_score, offset, limit))
    }
    async fn dump(&self) -> Result<super::dump::Dump, DbError> {
        both!(self.dump())
    }
    async fn load(&self, dump: &super::dump::Dump) -> Result<(), DbError> {
        both!(self.load(dump))
    }
    async fn heads_at(&self, ids: &[PatientId], at: Seq) -> Result<Vec<Option<CommitId>>, DbError> {
        both!(self.heads_at(ids, at))
    }
    async fn first_heads(&self, ids: &[PatientId]) -> Result<Vec<Option<CommitId>>, DbError> {
        both!(self.first_heads(ids))
    }
    fn keeps_history(&self) -> bool {
        match self {
            AnyDb::Sqlite(db) => db.keeps_history(),
            AnyDb::Postgres(db) => db.keeps_history(),
        }
    }
    async fn apply_with_history(
        &self,
        changes: &[HeadChange],
        packs: &[Vec<u8>],
    ) -> Result<Vec<Applied>, DbError> {
        both!(self.apply_with_history(changes, packs))
    }
    async fn history_after(
        &self,
        id: &PatientId,
        after: Option<CommitId>,
    ) -> Result<Vec<(CommitId, Vec<u8>)>, DbError> {
        both!(self.history_after(id, after))
    }
    async fn whole_packs(
        &self,
        ids: &[PatientId],
    ) -> Result<Vec<Option<super::WholePack>>, DbError> {
        both!(self.whole_packs(ids))
    }
    async fn dismiss_duplicate(
        &self,
        a: &PatientId,
        b: &PatientId,
        at: i64,
    ) -> Result<(), DbError> {
        both!(self.dismiss_duplicate(a, b, at))
    }
}
