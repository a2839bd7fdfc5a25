//! The PostgreSQL backend: all of central's durable state in one database
//! that any number of central processes, on any number of servers, share.
//!
//! Every method is one transaction on a pooled connection. Writes run in
//! READ COMMITTED with explicit row locks; reads in a REPEATABLE READ, READ
//! ONLY snapshot. A transaction PostgreSQL aborts for a deadlock or a
//! serialization failure is run again a bounded number of times.
//!
//! The change sequence is gap-free and in commit order: every transaction
//! that accepts heads first locks the `seq` row of `counters` (`SELECT ...
//! FOR UPDATE`), numbers its changes after the value it finds, and writes
//! the new value back before it commits. The row lock is held until commit,
//! so the next writer reads the value only after the previous writer's
//! changes are visible (or rolled back, when it finds the old value again):
//! numbers are never skipped, and a reader never sees seq n+1 before n.
//! Writers of heads queue on that one row; each holds it for one batch (up
//! to 1000 records, a few bulk statements), which keeps the queue short.
//!
//! Patient leases expire on the database's clock, so processes on servers
//! whose clocks disagree still agree on who holds a lease. A process that
//! dies frees its leases sooner: each lease carries the key of its
//! process's liveness session (see the `liveness` module), and a contender that finds
//! that session gone takes the lease over at once, whatever server the dead
//! process ran on. Two checks in the transaction of [`CentralDb::apply`]
//! are the fence: a change to a patient whose lease another process holds
//! now is refused as stale, and so is one whose expected head moved (the
//! compare-and-swap). A process whose lease expired or was taken over while
//! it worked never writes over the new holder's change.

mod cached;
mod dump;
mod duplicates;
mod instances;
mod liveness;
mod locks;
mod migrate;
mod records;
mod reports;
#[cfg(test)]
pub(crate) mod tests;

use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

use chartsync_protocol::{CommitId, PatientId};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::error::SqlState;
use tokio_postgres::{IsolationLevel, NoTls};

use super::{
    ActivityRow, Applied, CentralDb, Counts, DbError, DuplicateKey, DuplicatePair, DuplicateUpdate,
    HeadChange, Instance, MAX_INSTANCE_ID, NewInstance, RecordRow, RefPending, SavedReport, Seq,
    StoredCandidates,
};

pub use migrate::{MIGRATIONS, SCHEMA_VERSION};

use super::pages;

/// How many times a transaction aborted by a deadlock or a serialization
/// failure is run.
const ATTEMPTS: u32 = 6;
/// How long connecting may take when the url does not say.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a step failed, inside this backend.
#[derive(Debug)]
pub(crate) enum Fail {
    Pg(tokio_postgres::Error),
    Pool(deadpool_postgres::PoolError),
    Db(DbError),
}

impl From<tokio_postgres::Error> for Fail {
    fn from(e: tokio_postgres::Error) -> Fail {
        Fail::Pg(e)
    }
}

impl From<DbError> for Fail {
    fn from(e: DbError) -> Fail {
        Fail::Db(e)
    }
}

impl Fail {
    fn into_db(self, context: &'static str) -> DbError {
        match self {
            Fail::Pg(e) => DbError::Backend {
                context,
                source: Box::new(e),
            },
            Fail::Pool(e) => DbError::Backend {
                context,
                source: Box::new(e),
            },
            Fail::Db(e) => e,
        }
    }

    /// Whether running the transaction again may succeed.
    fn retryable(&self) -> bool {
        match self {
            Fail::Pg(e) => e.code().is_some_and(|code| {
                *code == SqlState::T_R_SERIALIZATION_FAILURE
                    || *code == SqlState::T_R_DEADLOCK_DETECTED
            }),
            _ => false,
        }
    }
}

/// The result of a step.
pub(crate) type R<T> = Result<T, Fail>;

/// Runs `$body` in one transaction (`write`: read committed; `read`: a
/// read-only repeatable-read snapshot) bound to `$tx`, retried on
/// deadlocks and serialization failures.
macro_rules! transact {
    ($db:expr, $ctx:expr, $kind:ident, |$tx:ident| $body:expr) => {
        $db.retrying($ctx, move || async move {
            let mut client = $db.pool.get().await.map_err($crate::db::postgres::Fail::Pool)?;
            let $tx = transact!(@begin client, $kind);
            let out = $body;
            $tx.commit().await?;
            Ok(out)
        })
    };
    (@begin $client:ident, write) => {
        $client.transaction().await?
    };
    (@begin $client:ident, read) => {
        $client
            .build_transaction()
            .read_only(true)
            .isolation_level(IsolationLevel::RepeatableRead)
            .start()
            .await?
    };
}

/// Central's database in PostgreSQL.
#[derive(Clone)]
pub struct PgDb {
    pool: Pool,
    /// This process's liveness session (see the `liveness` module), opened by the
    /// first lease it takes.
    liveness: std::sync::Arc<liveness::Liveness>,
}

impl std::fmt::Debug for PgDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgDb").finish_non_exhaustive()
    }
}

/// A database url's connection settings (with a connect timeout when it
/// names none).
pub fn parse_url(url: &str) -> Result<tokio_postgres::Config, DbError> {
    let mut config = tokio_postgres::Config::from_str(url).map_err(|e| DbError::Backend {
        context: "reading the [database] url",
        source: Box::new(e),
    })?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    Ok(config)
}

impl PgDb {
    /// Connects to the database at `url` (`postgres://user@host:port/db`),
    /// creating or migrating its tables.
    pub async fn open(url: &str) -> Result<PgDb, DbError> {
        PgDb::open_with(url, crate::config::DEFAULT_MAX_CONNECTIONS).await
    }

    /// [`PgDb::open`] with at most `max_connections` connections for work
    /// (`[database] max_connections`; one more keeps the liveness key).
    pub async fn open_with(url: &str, max_connections: usize) -> Result<PgDb, DbError> {
        let db = PgDb::connect_with(url, max_connections)?;
        db.migrate().await?;
        Ok(db)
    }

    /// A pool for `url` of at most `max_connections` connections, without
    /// touching the database yet.
    pub fn connect_with(url: &str, max_connections: usize) -> Result<PgDb, DbError> {
        let config = parse_url(url)?;
        let liveness = std::sync::Arc::new(liveness::Liveness::new(config.clone()));
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(max_connections.max(1))
            .build()
            .map_err(|e| DbError::Backend {
                context: "making the connection pool",
                source: Box::new(e),
            })?;
        Ok(PgDb { pool, liveness })
    }

    /// Creates or migrates the tables; returns the schema version. Safe
    /// while other processes serve or migrate (one migrates at a time).
    pub async fn migrate(&self) -> Result<u32, DbError> {
        const CTX: &str = "migrating the database";
        let mut client = self
            .pool
            .get()
            .await
            .map_err(|e| Fail::Pool(e).into_db("connecting to the database"))?;
        migrate::run(&mut client).await.map_err(|e| e.into_db(CTX))
    }

    /// Stores a record's whole history as one pack at its head's change
    /// (`central copy` from SQLite); a record that has history keeps it.
    pub async fn import_history(
        &self,
        id: &PatientId,
        seq: Seq,
        head: &CommitId,
        pack: &[u8],
    ) -> Result<(), DbError> {
        let seq = seq_to_sql(seq);
        transact!(self, "storing a record's history", write, |tx| {
            dump::import_history(&tx, id, seq, head, pack).await?
        })
        .await
    }

    /// Whether the database has no instance and no record (a target for
    /// `central copy`).
    pub async fn is_empty(&self) -> Result<bool, DbError> {
        transact!(self, "checking the database is empty", read, |tx| {
            let row = tx
                .query_one(
                    "SELECT NOT EXISTS (SELECT 1 FROM records) AND NOT EXISTS (SELECT 1 FROM instances)",
                    &[],
                )
                .await?;
            row.get::<_, bool>(0)
        })
        .await
    }

    async fn retrying<T, F, Fut>(&self, context: &'static str, mut attempt: F) -> Result<T, DbError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = R<T>>,
    {
        let mut tries = 1;
        loop {
            match attempt().await {
                Ok(value) => return Ok(value),
                Err(e) if e.retryable() && tries < ATTEMPTS => {
                    tracing::debug!(
                        attempt = tries,
                        context,
                        "transaction aborted by PostgreSQL; running it again"
                    );
                    tokio::time::sleep(Duration::from_millis(5 << tries)).await;
                    tries += 1;
                }
                Err(e) => return Err(e.into_db(context)),
            }
        }
    }
}

/// Refuses instance ids that do not fit in the holders bit string.
fn check_instance(id: u32) -> Result<(), DbError> {
    if id > MAX_INSTANCE_ID {
        return Err(DbError::IdOutOfRange(id));
    }
    Ok(())
}

/// A patient id read from `what`.
pub(crate) fn patient_from(bytes: &[u8], what: &'static str) -> Result<PatientId, DbError> {
    let bytes: [u8; 16] = bytes.try_into().map_err(|_| DbError::Damaged(what))?;
    PatientId::from_bytes(bytes).map_err(|_| DbError::Damaged(what))
}

/// A commit id read from `what`.
pub(crate) fn head_from(text: &str, what: &'static str) -> Result<CommitId, DbError> {
    text.parse().map_err(|_| DbError::Damaged(what))
}

/// A sequence number read from `what`.
pub(crate) fn seq_from(raw: i64, what: &'static str) -> Result<Seq, DbError> {
    Seq::try_from(raw).map_err(|_| DbError::Damaged(what))
}

/// A sequence number as stored (numbers beyond BIGINT are later than any
/// stored one).
pub(crate) fn seq_to_sql(seq: Seq) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

/// A count or limit as a BIGINT.
pub(crate) fn big(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl CentralDb for PgDb {
    async fn add_instance(&self, new: NewInstance) -> Result<Instance, DbError> {
        if let Some(id) = new.id {
            check_instance(id)?;
        }
        let new = &new;
        transact!(self, "registering an instance", write, |tx| {
            instances::add(&tx, new).await?
        })
        .await
    }

    async fn revoke_instance(&self, id: u32) -> Result<Instance, DbError> {
        transact!(self, "revoking an instance", write, |tx| {
            instances::revoke(&tx, id).await?
        })
        .await
    }

    async fn rotate_token(&self, id: u32, token_hash: [u8; 32]) -> Result<Instance, DbError> {
        transact!(self, "giving an instance a new token", write, |tx| {
            instances::rotate(&tx, id, &token_hash).await?
        })
        .await
    }

    async fn touch_instance(&self, id: u32, at: i64) -> Result<(), DbError> {
        transact!(self, "noting when an instance was seen", write, |tx| {
            instances::touch(&tx, id, at).await?
        })
        .await
    }

    async fn instances_version(&self) -> Result<u64, DbError> {
        transact!(self, "reading the instances version", read, |tx| {
            instances::version(&tx).await?
        })
        .await
    }

    async fn instance_by_token(&self, token_hash: [u8; 32]) -> Result<Option<Instance>, DbError> {
        transact!(self, "looking up an instance by token", read, |tx| {
            instances::by_token(&tx, &token_hash).await?
        })
        .await
    }

    async fn instances(&self) -> Result<Vec<Instance>, DbError> {
        transact!(self, "listing instances", read, |tx| {
            instances::all(&tx).await?
        })
        .await
    }

    async fn try_lock(
        &self,
        ids: &[PatientId],
        holder: &str,
        lease: Duration,
    ) -> Result<Vec<bool>, DbError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let owner = self
            .liveness
            .key()
            .await
            .map_err(|e| e.into_db("opening this process's liveness session"))?;
        transact!(self, "taking patient locks", write, |tx| {
            locks::try_lock(&tx, ids, holder, lease, owner).await?
        })
        .await
    }

    async fn unlock(&self, ids: &[PatientId], holder: &str) -> Result<(), DbError> {
        if ids.is_empty() {
            return Ok(());
        }
        transact!(self, "releasing patient locks", write, |tx| {
            locks::unlock(&tx, ids, holder).await?
        })
        .await
    }

    async fn lease_holders(&self) -> Result<Vec<String>, DbError> {
        transact!(self, "listing lease holders", read, |tx| {
            locks::holders(&tx).await?
        })
        .await
    }

    async fn release_leases_of(&self, holder: &str) -> Result<u64, DbError> {
        transact!(self, "releasing a dead process's leases", write, |tx| {
            locks::release_all(&tx, holder).await?
        })
        .await
    }

    async fn records(&self, ids: &[PatientId]) -> Result<Vec<Option<RecordRow>>, DbError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        transact!(self, "reading records", read, |tx| {
            records::get(&tx, ids).await?
        })
        .await
    }

    async fn apply(&self, changes: &[HeadChange]) -> Result<Vec<Applied>, DbError> {
        if changes.is_empty() {
            return Ok(Vec::new());
        }
        for change in changes {
            if let Some(by) = change.by {
                check_instance(by)?;
            }
        }
        let owner = self.liveness.current();
        transact!(self, "accepting heads", write, |tx| {
            records::apply(&tx, changes, None, owner).await?
        })
        .await
    }

    fn keeps_history(&self) -> bool {
        true
    }

    async fn heads_at(&self, ids: &[PatientId], at: Seq) -> Result<Vec<Option<CommitId>>, DbError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        transact!(self, "reading past heads", read, |tx| {
            records::heads_at(&tx, ids, at).await?
        })
        .await
    }

    async fn first_heads(&self, ids: &[PatientId]) -> Result<Vec<Option<CommitId>>, DbError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        transact!(self, "reading first heads", read, |tx| {
            records::first_heads(&tx, ids).await?
        })
        .await
    }

    async fn dump(&self) -> Result<crate::db::dump::Dump, DbError> {
        transact!(self, "reading the whole database", read, |tx| {
            dump::dump(&tx).await?
        })
        .await
    }

    async fn load(&self, copy: &crate::db::dump::Dump) -> Result<(), DbError> {
        transact!(self, "loading a copy", write, |tx| {
            dump::load(&tx, copy).await?
        })
        .await
    }

    async fn apply_with_history(
        &self,
        changes: &[HeadChange],
        packs: &[Vec<u8>],
    ) -> Result<Vec<Applied>, DbError> {
        if changes.is_empty() {
            return Ok(Vec::new());
        }
        for change in changes {
            if let Some(by) = change.by {
                check_instance(by)?;
            }
        }
        let owner = self.liveness.current();
        transact!(self, "accepting heads with their history", write, |tx| {
            records::apply(&tx, changes, Some(packs), owner).await?
        })
        .await
    }

    async fn history_after(
        &self,
        id: &PatientId,
        after: Option<CommitId>,
    ) -> Result<Vec<(CommitId, Vec<u8>)>, DbError> {
        transact!(self, "reading a record's history", read, |tx| {
            records::history_after(&tx, id, after).await?
        })
        .await
    }

    async fn whole_packs(
        &self,
        ids: &[PatientId],
    ) -> Result<Vec<Option<super::WholePack>>, DbError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        transact!(self, "reading records' whole packs", read, |tx| {
            records::whole_packs(&tx, ids).await?
        })
        .await
    }

    async fn ref_pending(&self) -> Result<Vec<RefPending>, DbError> {
        transact!(self, "listing pending refs", read, |tx| {
            records::ref_pending(&tx).await?
        })
        .await
    }

    async fn clear_ref_pending(&self, done: &[(PatientId, CommitId)]) -> Result<(), DbError> {
        if done.is_empty() {
            return Ok(());
        }
        transact!(self, "clearing pending refs", write, |tx| {
            records::clear_ref_pending(&tx, done).await?
        })
        .await
    }

    async fn has_grant(&self, instance: u32, id: &PatientId) -> Result<bool, DbError> {
        transact!(self, "checking a grant", read, |tx| {
            records::has_grant(&tx, instance, id).await?
        })
        .await
    }

    async fn grant(&self, instance: u32, id: &PatientId, reason: &str) -> Result<(), DbError> {
        check_instance(instance)?;
        transact!(self, "granting a record", write, |tx| {
            records::grant(&tx, instance, id, reason).await?
        })
        .await
    }

    async fn scope_changes(
        &self,
        instance: &Instance,
        after: Seq,
        limit: usize,
    ) -> Result<Vec<RecordRow>, DbError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        transact!(self, "listing changes in an instance's scope", read, |tx| {
            records::scope_changes(&tx, instance.id, &instance.catchments, after, limit).await?
        })
        .await
    }

    async fn first_head(&self, id: &PatientId) -> Result<Option<CommitId>, DbError> {
        transact!(self, "reading a record's first head", read, |tx| {
            records::first_head(&tx, id).await?
        })
        .await
    }

    async fn head_at(&self, id: &PatientId, at: Seq) -> Result<Option<CommitId>, DbError> {
        transact!(self, "reading a past head", read, |tx| {
            records::head_at(&tx, id, at).await?
        })
        .await
    }

    async fn add_holder(&self, instance: u32, ids: &[PatientId]) -> Result<(), DbError> {
        check_instance(instance)?;
        if ids.is_empty() {
            return Ok(());
        }
        transact!(self, "recording holders", write, |tx| {
            records::add_holder(&tx, instance, ids).await?
        })
        .await
    }

    async fn counts(&self) -> Result<Counts, DbError> {
        transact!(self, "counting", read, |tx| { records::counts(&tx).await? }).await
    }

    async fn last_seq(&self) -> Result<Seq, DbError> {
        transact!(self, "reading the last sequence number", read, |tx| {
            seq_from(records::last_seq(&tx).await?, "counters.seq")?
        })
        .await
    }

    async fn save_report(&self, report: SavedReport) -> Result<(), DbError> {
        let report = &report;
        transact!(self, "storing an instance's report", write, |tx| {
            reports::save(&tx, report).await?
        })
        .await
    }

    async fn reports(&self) -> Result<Vec<SavedReport>, DbError> {
        transact!(self, "reading instance reports", read, |tx| {
            reports::latest(&tx).await?
        })
        .await
    }

    async fn activity(&self, since_hour: i64) -> Result<Vec<ActivityRow>, DbError> {
        transact!(self, "reading instance activity", read, |tx| {
            reports::activity(&tx, since_hour).await?
        })
        .await
    }

    async fn changed_after(
        &self,
        after: Seq,
        limit: usize,
    ) -> Result<Vec<(Seq, PatientId, CommitId)>, DbError> {
        transact!(self, "listing changed records", read, |tx| {
            duplicates::changed_after(&tx, after, limit).await?
        })
        .await
    }

    async fn duplicates_cursor(&self) -> Result<Seq, DbError> {
        transact!(self, "reading the duplicate index cursor", read, |tx| {
            duplicates::cursor(&tx).await?
        })
        .await
    }

    async fn duplicate_candidates(
        &self,
        keys: Vec<DuplicateKey>,
        max_block: usize,
    ) -> Result<Vec<(PatientId, String)>, DbError> {
        let keys = &keys;
        transact!(self, "reading duplicate candidates", read, |tx| {
            duplicates::candidates(&tx, keys, max_block).await?
        })
        .await
    }

    async fn duplicate_candidates_many(
        &self,
        plans: Vec<Vec<DuplicateKey>>,
        max_block: usize,
    ) -> Result<Vec<StoredCandidates>, DbError> {
        let plans = &plans;
        transact!(self, "reading duplicate candidates", read, |tx| {
            let mut out = Vec::with_capacity(plans.len());
            for keys in plans {
                let found = duplicates::candidates(&tx, keys, max_block).await?;
                out.push(found.iter().map(|(id, f)| (*id, f.as_str())).collect());
            }
            out
        })
        .await
    }

    async fn index_duplicates(&self, updates: Vec<DuplicateUpdate>) -> Result<(), DbError> {
        let updates = &updates;
        transact!(self, "indexing records for duplicates", write, |tx| {
            duplicates::index(&tx, updates).await?
        })
        .await
    }

    async fn duplicate_pairs(
        &self,
        min_score: f64,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<DuplicatePair>, DbError> {
        transact!(self, "listing duplicate pairs", read, |tx| {
            duplicates::pairs(&tx, min_score, offset, limit).await?
        })
        .await
    }

    async fn record_page(
        &self,
        instance: u32,
        page: u64,
        cursor: Seq,
        ids: &[PatientId],
        at: i64,
    ) -> Result<(), DbError> {
        check_instance(instance)?;
        let Some(page) = pages::token_to_sql(page) else {
            return Err(DbError::Damaged("a page token out of range"));
        };
        let blob = pages::ids_blob(ids);
        let blob = &blob;
        let cursor = seq_to_sql(cursor);
        let instance = i64::from(instance);
        transact!(self, "recording a fetch-new page", write, |tx| {
            cached::execute(
                &tx,
                "INSERT INTO fetch_pages (instance_id, page, cursor, ids, offered_at)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (instance_id, page) DO UPDATE
                    SET cursor = EXCLUDED.cursor, ids = EXCLUDED.ids, offered_at = EXCLUDED.offered_at",
                &[&instance, &page, &cursor, &blob, &at],
            )
            .await?
        })
        .await?;
        Ok(())
    }

    async fn offered_pages(
        &self,
        instance: u32,
        tokens: &[u64],
    ) -> Result<Vec<Option<pages::OfferedPage>>, DbError> {
        let instance = i64::from(instance);
        let wanted: Vec<i64> = tokens
            .iter()
            .filter_map(|&t| pages::token_to_sql(t))
            .collect();
        let wanted = &wanted;
        let rows = transact!(self, "reading fetch-new pages", read, |tx| {
            cached::query(
                &tx,
                "SELECT page, cursor, ids FROM fetch_pages WHERE instance_id = $1 AND page = ANY($2)",
                &[&instance, &wanted],
            )
            .await?
        })
        .await?;
        let mut found = std::collections::HashMap::new();
        for row in rows {
            let page: i64 = row.get(0);
            let cursor: i64 = row.get(1);
            let ids: Vec<u8> = row.get(2);
            found.insert(
                page,
                (
                    seq_from(cursor, "fetch_pages.cursor")?,
                    pages::ids_from_blob(&ids)?,
                ),
            );
        }
        Ok(tokens
            .iter()
            .map(|&t| pages::token_to_sql(t).and_then(|t| found.get(&t).cloned()))
            .collect())
    }

    async fn drop_pages(&self, instance: u32, tokens: &[u64]) -> Result<(), DbError> {
        let instance = i64::from(instance);
        let tokens: Vec<i64> = tokens
            .iter()
            .filter_map(|&t| pages::token_to_sql(t))
            .collect();
        if tokens.is_empty() {
            return Ok(());
        }
        let tokens = &tokens;
        transact!(self, "dropping acknowledged fetch-new pages", write, |tx| {
            cached::execute(
                &tx,
                "DELETE FROM fetch_pages WHERE instance_id = $1 AND page = ANY($2)",
                &[&instance, &tokens],
            )
            .await?
        })
        .await?;
        Ok(())
    }

    async fn forget_pages(&self, before: i64) -> Result<u64, DbError> {
        transact!(self, "forgetting old fetch-new pages", write, |tx| {
            cached::execute(
                &tx,
                "DELETE FROM fetch_pages WHERE offered_at < $1",
                &[&before],
            )
            .await?
        })
        .await
    }

    async fn dismiss_duplicate(
        &self,
        a: &PatientId,
        b: &PatientId,
        at: i64,
    ) -> Result<(), DbError> {
        transact!(self, "dismissing a duplicate pair", write, |tx| {
            duplicates::dismiss(&tx, a, b, at).await?
        })
        .await
    }
}
