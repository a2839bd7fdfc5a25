//! The SQLite backend (the embedded default): one file beside the
//! repositories, in WAL mode, which several central processes on one machine
//! may open at once.
//!
//! Every operation runs on a blocking thread. Writes go through one writer
//! connection per [`SqliteDb`], each in one `BEGIN IMMEDIATE` transaction
//! (so writers from several processes queue on SQLite's write lock instead
//! of deadlocking on a lock upgrade), run again a bounded number of times
//! if the database stays busy. Reads use a small pool of read-only
//! connections, each read in one snapshot.

mod dump;
mod duplicates;
mod instances;
mod locks;
mod pool;
mod records;
mod reports;
mod scope;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use chartsync_common::sqlite::Migration;
use chartsync_protocol::{CommitId, PatientId};
use rusqlite::OptionalExtension;

use self::pool::{Pool, read, sql, write};
use super::pages;
use super::{
    Applied, CentralDb, Counts, DbError, DuplicateKey, DuplicatePair, DuplicateUpdate, HeadChange,
    Instance, MAX_INSTANCE_ID, NewInstance, RecordRow, RefPending, Seq, StoredCandidates,
};

/// Central's SQLite migrations (`migrations/central/sqlite/`).
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sql: include_str!("../../../../migrations/central/sqlite/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "instance_admin",
        sql: include_str!("../../../../migrations/central/sqlite/0002_instance_admin.sql"),
    },
    Migration {
        version: 3,
        name: "duplicates",
        sql: include_str!("../../../../migrations/central/sqlite/0003_duplicates.sql"),
    },
    Migration {
        version: 4,
        name: "instance_reports",
        sql: include_str!("../../../../migrations/central/sqlite/0004_instance_reports.sql"),
    },
    Migration {
        version: 5,
        name: "duplicate_blocks",
        sql: include_str!("../../../../migrations/central/sqlite/0005_duplicate_blocks.sql"),
    },
    Migration {
        version: 6,
        name: "duplicate_members",
        sql: include_str!("../../../../migrations/central/sqlite/0006_duplicate_members.sql"),
    },
    Migration {
        version: 7,
        name: "duplicate_removals",
        sql: include_str!("../../../../migrations/central/sqlite/0007_duplicate_removals.sql"),
    },
    Migration {
        version: 8,
        name: "fetch_pages",
        sql: include_str!("../../../../migrations/central/sqlite/0008_fetch_pages.sql"),
    },
];

/// Read-only connections per handle.
const READERS: usize = 4;

/// The fewest records whose duplicate candidates are worth a reader of
/// their own.
const MIN_SHARE: usize = 8;

/// Central's database in one SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteDb {
    pool: Arc<Pool>,
    /// The duplicate index's blocks known too large to search.
    large: Arc<RwLock<duplicates::LargeLevels>>,
}

impl SqliteDb {
    /// Opens the database at `path`, creating and migrating it if needed.
    /// Blocks (opening and migrating touch the disk): call it at start-up
    /// or on a blocking thread.
    /// The file (and its `-wal` and `-shm` files) is private to its owner.
    pub fn open(path: &Path) -> Result<SqliteDb, DbError> {
        chartsync_common::private::private_database(path).map_err(|e| DbError::Backend {
            context: "making the database private to its owner",
            source: Box::new(e),
        })?;
        Ok(SqliteDb {
            pool: Arc::new(Pool::open(path, READERS)?),
            large: Arc::default(),
        })
    }
}

/// Refuses instance ids that do not fit in the holders bit string.
fn check_instance(id: u32) -> Result<(), DbError> {
    if id > MAX_INSTANCE_ID {
        return Err(DbError::IdOutOfRange(id));
    }
    Ok(())
}

impl CentralDb for SqliteDb {
    async fn dump(&self) -> Result<crate::db::dump::Dump, DbError> {
        read(&self.pool, "reading the whole database", dump::dump).await
    }

    async fn load(&self, copy: &crate::db::dump::Dump) -> Result<(), DbError> {
        let copy = copy.clone();
        write(&self.pool, "loading a copy", move |tx| {
            dump::load(tx, &copy)
        })
        .await
    }

    async fn add_instance(&self, new: NewInstance) -> Result<Instance, DbError> {
        if let Some(id) = new.id {
            check_instance(id)?;
        }
        write(&self.pool, "registering an instance", move |tx| {
            instances::add(tx, &new)
        })
        .await
    }

    async fn instance_by_token(&self, token_hash: [u8; 32]) -> Result<Option<Instance>, DbError> {
        read(&self.pool, "looking up an instance by token", move |tx| {
            instances::by_token(tx, &token_hash)
        })
        .await
    }

    async fn instances(&self) -> Result<Vec<Instance>, DbError> {
        read(&self.pool, "listing instances", instances::all).await
    }

    async fn revoke_instance(&self, id: u32) -> Result<Instance, DbError> {
        write(&self.pool, "revoking an instance", move |tx| {
            instances::revoke(tx, id)
        })
        .await
    }

    async fn rotate_token(&self, id: u32, token_hash: [u8; 32]) -> Result<Instance, DbError> {
        write(&self.pool, "giving an instance a new token", move |tx| {
            instances::rotate(tx, id, &token_hash)
        })
        .await
    }

    async fn save_report(&self, report: super::SavedReport) -> Result<(), DbError> {
        write(&self.pool, "storing an instance's report", move |tx| {
            reports::save(tx, &report)
        })
        .await
    }

    async fn reports(&self) -> Result<Vec<super::SavedReport>, DbError> {
        read(&self.pool, "reading instance reports", reports::latest).await
    }

    async fn activity(&self, since_hour: i64) -> Result<Vec<super::ActivityRow>, DbError> {
        read(&self.pool, "reading instance activity", move |tx| {
            reports::activity(tx, since_hour)
        })
        .await
    }

    async fn touch_instance(&self, id: u32, at: i64) -> Result<(), DbError> {
        write(&self.pool, "noting when an instance was seen", move |tx| {
            instances::touch(tx, id, at)
        })
        .await
    }

    async fn instances_version(&self) -> Result<u64, DbError> {
        read(
            &self.pool,
            "reading the instances version",
            instances::version,
        )
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
        let (ids, holder) = (ids.to_vec(), holder.to_owned());
        write(&self.pool, "taking patient locks", move |tx| {
            locks::try_lock(tx, &ids, &holder, lease)
        })
        .await
    }

    async fn lease_holders(&self) -> Result<Vec<String>, DbError> {
        read(&self.pool, "listing lease holders", locks::holders).await
    }

    async fn release_leases_of(&self, holder: &str) -> Result<u64, DbError> {
        let holder = holder.to_owned();
        write(&self.pool, "releasing a dead process's leases", move |tx| {
            locks::release_all(tx, &holder)
        })
        .await
    }

    async fn unlock(&self, ids: &[PatientId], holder: &str) -> Result<(), DbError> {
        if ids.is_empty() {
            return Ok(());
        }
        let (ids, holder) = (ids.to_vec(), holder.to_owned());
        write(&self.pool, "releasing patient locks", move |tx| {
            locks::unlock(tx, &ids, &holder)
        })
        .await
    }

    async fn records(&self, ids: &[PatientId]) -> Result<Vec<Option<RecordRow>>, DbError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids = ids.to_vec();
        read(&self.pool, "reading records", move |tx| {
            records::get(tx, &ids)
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
        let changes = changes.to_vec();
        write(&self.pool, "accepting heads", move |tx| {
            records::apply(tx, &changes)
        })
        .await
    }

    async fn ref_pending(&self) -> Result<Vec<RefPending>, DbError> {
        read(&self.pool, "listing pending refs", records::ref_pending).await
    }

    async fn clear_ref_pending(&self, done: &[(PatientId, CommitId)]) -> Result<(), DbError> {
        if done.is_empty() {
            return Ok(());
        }
        let done = done.to_vec();
        write(&self.pool, "clearing pending refs", move |tx| {
            records::clear_ref_pending(tx, &done)
        })
        .await
    }

    async fn has_grant(&self, instance: u32, id: &PatientId) -> Result<bool, DbError> {
        let id = *id;
        read(&self.pool, "checking a grant", move |tx| {
            records::has_grant(tx, instance, &id)
        })
        .await
    }

    async fn grant(&self, instance: u32, id: &PatientId, reason: &str) -> Result<(), DbError> {
        let (id, reason) = (*id, reason.to_owned());
        write(&self.pool, "granting a record", move |tx| {
            records::grant(tx, instance, &id, &reason)
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
        let (id, catchments) = (instance.id, instance.catchments.clone());
        read(
            &self.pool,
            "listing changes in an instance's scope",
            move |tx| scope::changes(tx, id, &catchments, after, limit),
        )
        .await
    }

    async fn first_head(&self, id: &PatientId) -> Result<Option<CommitId>, DbError> {
        let id = *id;
        read(&self.pool, "reading a record's first head", move |tx| {
            records::first_head(tx, &id)
        })
        .await
    }

    async fn head_at(&self, id: &PatientId, at: Seq) -> Result<Option<CommitId>, DbError> {
        let id = *id;
        read(&self.pool, "reading a past head", move |tx| {
            records::head_at(tx, &id, at)
        })
        .await
    }

    /// In one read transaction (a fetch-new page acknowledged by its
    /// cursor asks for up to 1,000 records at once).
    async fn heads_at(&self, ids: &[PatientId], at: Seq) -> Result<Vec<Option<CommitId>>, DbError> {
        let ids = ids.to_vec();
        read(&self.pool, "reading past heads", move |tx| {
            ids.iter().map(|id| records::head_at(tx, id, at)).collect()
        })
        .await
    }

    async fn first_heads(&self, ids: &[PatientId]) -> Result<Vec<Option<CommitId>>, DbError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids = ids.to_vec();
        read(&self.pool, "reading first heads", move |tx| {
            ids.iter().map(|id| records::first_head(tx, id)).collect()
        })
        .await
    }

    async fn add_holder(&self, instance: u32, ids: &[PatientId]) -> Result<(), DbError> {
        check_instance(instance)?;
        if ids.is_empty() {
            return Ok(());
        }
        let ids = ids.to_vec();
        write(&self.pool, "recording holders", move |tx| {
            records::add_holder(tx, instance, &ids)
        })
        .await
    }

    async fn counts(&self) -> Result<Counts, DbError> {
        read(&self.pool, "counting", records::counts).await
    }

    async fn last_seq(&self) -> Result<Seq, DbError> {
        read(&self.pool, "reading the last sequence number", |tx| {
            records::seq_from(records::last_seq(tx)?, "counters.seq")
        })
        .await
    }

    async fn changed_after(
        &self,
        after: Seq,
        limit: usize,
    ) -> Result<Vec<(Seq, PatientId, CommitId)>, DbError> {
        read(&self.pool, "listing changed records", move |tx| {
            duplicates::changed_after(tx, after, limit)
        })
        .await
    }

    async fn duplicates_cursor(&self) -> Result<Seq, DbError> {
        read(
            &self.pool,
            "reading the duplicate index cursor",
            duplicates::cursor,
        )
        .await
    }

    async fn duplicate_candidates(
        &self,
        keys: Vec<DuplicateKey>,
        max_block: usize,
    ) -> Result<Vec<(PatientId, String)>, DbError> {
        read(&self.pool, "reading duplicate candidates", move |tx| {
            let mut found = StoredCandidates::default();
            let unknown = |_: &str| false;
            duplicates::candidates_into(
                tx,
                &keys,
                max_block,
                &mut found,
                &unknown,
                &mut HashSet::new(),
            )?;
            Ok(found.iter().map(|(id, f)| (id, f.to_owned())).collect())
        })
        .await
    }

    /// On several readers at once (as many as the machine has cores, at
    /// most [`READERS`]), each reading a share of the records in one
    /// transaction; a block known too large to search in that snapshot
    /// (see [`duplicates::LargeLevels`]) is not read.
    async fn duplicate_candidates_many(
        &self,
        plans: Vec<Vec<DuplicateKey>>,
        max_block: usize,
    ) -> Result<Vec<StoredCandidates>, DbError> {
        let threads = std::thread::available_parallelism()
            .map_or(1, usize::from)
            .min(READERS);
        let parts = threads.min(plans.len().div_ceil(MIN_SHARE)).max(1);
        let share = plans.len().div_ceil(parts).max(1);
        let mut plans = plans.into_iter();
        let mut reads = Vec::with_capacity(parts);
        loop {
            let part: Vec<Vec<DuplicateKey>> = plans.by_ref().take(share).collect();
            if part.is_empty() {
                break;
            }
            let pool = Arc::clone(&self.pool);
            let large = Arc::clone(&self.large);
            reads.push(tokio::spawn(async move {
                read(&pool, "reading duplicate candidates", move |tx| {
                    let removals = duplicates::removals(tx)?;
                    let known = |level: &str| {
                        large
                            .read()
                            .unwrap_or_else(PoisonError::into_inner)
                            .known(level, max_block, removals)
                    };
                    // The levels found too large to search here, for the
                    // records after and the searches to come.
                    let mut too_large = HashSet::new();
                    let found = part
                        .iter()
                        .map(|keys| {
                            let mut found = StoredCandidates::default();
                            duplicates::candidates_into(
                                tx,
                                keys,
                                max_block,
                                &mut found,
                                &known,
                                &mut too_large,
                            )?;
                            Ok(found)
                        })
                        .collect::<Result<Vec<_>, DbError>>()?;
                    Ok((found, too_large, removals))
                })
                .await
            }));
        }
        let mut out = Vec::new();
        for part in reads {
            let (found, too_large, removals) = part.await.map_err(|e| DbError::Backend {
                context: "reading duplicate candidates",
                source: Box::new(e),
            })??;
            out.extend(found);
            self.large
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .found(too_large, max_block, removals);
        }
        Ok(out)
    }

    async fn index_duplicates(&self, updates: Vec<DuplicateUpdate>) -> Result<(), DbError> {
        let (removed, removals) = write(&self.pool, "indexing records for duplicates", move |tx| {
            let mut removed = Vec::new();
            for update in &updates {
                duplicates::index(tx, update, &mut removed)?;
            }
            let removals = if removed.is_empty() {
                None
            } else {
                Some(duplicates::count_removal(tx)?)
            };
            Ok((removed, removals))
        })
        .await?;
        if let Some(removals) = removals {
            self.large
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .removed(&removed, removals);
        }
        Ok(())
    }

    async fn duplicate_pairs(
        &self,
        min_score: f64,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<DuplicatePair>, DbError> {
        read(&self.pool, "listing duplicate pairs", move |tx| {
            duplicates::pairs(tx, min_score, offset, limit)
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
        let cursor = records::seq_to_sql(cursor);
        const CTX: &str = "recording a fetch-new page";
        write(&self.pool, CTX, move |tx| {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO fetch_pages (instance_id, page, cursor, ids, offered_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .and_then(|mut s| s.execute(rusqlite::params![instance, page, cursor, blob, at]))
            .map_err(sql(CTX))?;
            Ok(())
        })
        .await
    }

    async fn offered_pages(
        &self,
        instance: u32,
        tokens: &[u64],
    ) -> Result<Vec<Option<pages::OfferedPage>>, DbError> {
        let tokens = tokens.to_vec();
        const CTX: &str = "reading fetch-new pages";
        read(&self.pool, CTX, move |tx| {
            let mut select = tx
                .prepare_cached(
                    "SELECT cursor, ids FROM fetch_pages WHERE instance_id = ?1 AND page = ?2",
                )
                .map_err(sql(CTX))?;
            tokens
                .iter()
                .map(|&t| {
                    let Some(t) = pages::token_to_sql(t) else {
                        return Ok(None);
                    };
                    let row: Option<(i64, Vec<u8>)> = select
                        .query_row(rusqlite::params![instance, t], |r| {
                            Ok((r.get(0)?, r.get(1)?))
                        })
                        .optional()
                        .map_err(sql(CTX))?;
                    row.map(|(cursor, ids)| {
                        Ok((
                            records::seq_from(cursor, "fetch_pages.cursor")?,
                            pages::ids_from_blob(&ids)?,
                        ))
                    })
                    .transpose()
                })
                .collect()
        })
        .await
    }

    async fn drop_pages(&self, instance: u32, tokens: &[u64]) -> Result<(), DbError> {
        let tokens: Vec<i64> = tokens
            .iter()
            .filter_map(|&t| pages::token_to_sql(t))
            .collect();
        if tokens.is_empty() {
            return Ok(());
        }
        const CTX: &str = "dropping acknowledged fetch-new pages";
        write(&self.pool, CTX, move |tx| {
            let mut delete = tx
                .prepare_cached("DELETE FROM fetch_pages WHERE instance_id = ?1 AND page = ?2")
                .map_err(sql(CTX))?;
            for t in &tokens {
                delete
                    .execute(rusqlite::params![instance, t])
                    .map_err(sql(CTX))?;
            }
            Ok(())
        })
        .await
    }

    async fn forget_pages(&self, before: i64) -> Result<u64, DbError> {
        const CTX: &str = "forgetting old fetch-new pages";
        write(&self.pool, CTX, move |tx| {
            let n = tx
                .prepare_cached("DELETE FROM fetch_pages WHERE offered_at < ?1")
                .and_then(|mut s| s.execute([before]))
                .map_err(sql(CTX))?;
            Ok(n as u64)
        })
        .await
    }

    async fn dismiss_duplicate(
        &self,
        a: &PatientId,
        b: &PatientId,
        at: i64,
    ) -> Result<(), DbError> {
        let (a, b) = (*a, *b);
        write(&self.pool, "dismissing a duplicate pair", move |tx| {
            duplicates::dismiss(tx, &a, &b, at)
        })
        .await
    }
}
