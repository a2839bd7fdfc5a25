//! `chartsync central copy --from OLD.toml --to NEW.toml`: every record with
//! its whole history, every instance (tokens stay valid), grants, holders
//! and the change sequence, from one central's storage to another's
//! (SQLite to PostgreSQL, or back). Refuses a target that is not empty;
//! ends by comparing both sides record by record.

use anyhow::{Context, bail};
use chartsync_central::CentralConfig;
use chartsync_central::db::CentralDb;
use chartsync_central::db::any::AnyDb;
use chartsync_protocol::{CommitId, PatientId};
use chartsync_store::{Flush, Received, RecordStore, StoreOptions};

/// One side of the copy: its database and the store its records' history
/// is read from or written to (data_dir on SQLite; a scratch folder on
/// PostgreSQL, where the database holds the history).
struct Side {
    db: AnyDb,
    store: RecordStore,
    _scratch: tempfile::TempDir,
}

impl Side {
    async fn open(config: &CentralConfig) -> anyhow::Result<Side> {
        let db = AnyDb::open(config).await?;
        let scratch = tempfile::tempdir().context("cannot make a scratch folder")?;
        let root = if db.keeps_history() {
            scratch.path().to_path_buf()
        } else {
            config.data_dir.clone()
        };
        let store =
            RecordStore::open_keep_tmp(StoreOptions::new(root, chartsync_central::auth::HQ_NAME))
                .context("cannot open the record store")?;
        Ok(Side {
            db,
            store,
            _scratch: scratch,
        })
    }

    /// Makes the record's history up to `head` present in `self.store`.
    async fn materialise(&self, id: &PatientId, head: CommitId) -> anyhow::Result<()> {
        if self.db.keeps_history() && !(self.store.exists(id) && self.store.has_commit(id, head)?) {
            for (at, pack) in self.db.history_after(id, None).await? {
                put(&self.store, id, at, &pack)?;
            }
        }
        if !self.store.exists(id) || !self.store.has_commit(id, head)? {
            bail!("the history of patient record {id} up to {head} is missing in the source");
        }
        Ok(())
    }

    /// The record's commits up to `head`, newest first.
    async fn commits(&self, id: &PatientId, head: CommitId) -> anyhow::Result<Vec<CommitId>> {
        self.materialise(id, head).await?;
        Ok(self
            .store
            .history_at(id, Some(head))?
            .into_iter()
            .map(|e| e.commit)
            .collect())
    }
}

/// Stores a pack bringing `at` into `store` (creating the record).
fn put(store: &RecordStore, id: &PatientId, at: CommitId, pack: &[u8]) -> anyhow::Result<()> {
    if store.exists(id) {
        store.ingest(id, at, pack, Flush::Deferred)?;
    } else if let Received::Ready(prepared) =
        store.prepare_received(id, None, at, pack, Flush::Deferred)?
    {
        store.publish(prepared, Flush::Deferred)?;
    }
    Ok(())
}

/// Copies `from`'s storage into `to`'s; returns the counts.
pub async fn copy(from: &CentralConfig, to: &CentralConfig) -> anyhow::Result<serde_json::Value> {
    if from.database() == to.database() {
        bail!("--from and --to name the same database");
    }
    let source = Side::open(from).await.context("cannot open the source")?;
    let target = Side::open(to).await.context("cannot open the target")?;
    let counts = target.db.counts().await?;
    if counts.records > 0 || counts.instances > 0 {
        bail!(
            "the target already has {} records and {} instances; copy into a new, empty database",
            counts.records,
            counts.instances
        );
    }
    let dump = source.db.dump().await?;
    // The history first: a copy stopped midway leaves the target's
    // database empty, to be copied into again.
    for record in &dump.records {
        let (id, head) = (record.row.id, record.row.head);
        source.materialise(&id, head).await?;
        let pack = source.store.pack_since(&id, head, &[])?;
        match &target.db {
            AnyDb::Postgres(db) => db.import_history(&id, record.row.seq, &head, &pack).await?,
            AnyDb::Sqlite(_) => {
                put(&target.store, &id, head, &pack)?;
                target.store.force_head(&id, head)?;
            }
        }
    }
    target.store.flush()?;
    target.db.load(&dump).await?;

    // Both sides, record by record.
    let copied = target.db.dump().await?;
    if copied.instances != dump.instances {
        bail!("the instances differ after the copy");
    }
    if copied.grants != dump.grants || copied.changes != dump.changes || copied.seq != dump.seq {
        bail!("the grants or the change sequence differ after the copy");
    }
    if copied.records.len() != dump.records.len() {
        bail!("the number of records differs after the copy");
    }
    let mut commits = 0;
    for (theirs, ours) in dump.records.iter().zip(&copied.records) {
        if theirs != ours {
            bail!("patient record {} differs after the copy", theirs.row.id);
        }
        let (id, head) = (ours.row.id, ours.row.head);
        let before = source.commits(&id, head).await?;
        let after = target.commits(&id, head).await?;
        if before != after {
            bail!("the history of patient record {id} differs after the copy");
        }
        commits += after.len();
    }
    Ok(serde_json::json!({
        "from": source.db.backend(),
        "to": target.db.backend(),
        "records": copied.records.len(),
        "commits": commits,
        "instances": copied.instances.len(),
        "grants": copied.grants.len(),
        "changes": copied.changes.len(),
        "seq": copied.seq,
        "verified": true,
    }))
}
