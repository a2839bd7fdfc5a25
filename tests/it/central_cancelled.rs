//! Regression: the HTTP server drops a request's handler when its client
//! hangs up (a satellite's timeout, a lost link). When that happened while
//! the write pipeline waited for the database to accept the new heads, the
//! database committed them (its work runs on a blocking thread) but the
//! staged writes were dropped: the refs of existing records never moved
//! (every later push of them was refused as "being repaired" until a
//! restart) and a new record's staged repository was deleted, although
//! central had acknowledged its head. (Found by tests/it/faults.rs, which hangs
//! up at many instants of a push.)
//!
//! Here the database is wrapped so that `apply` commits, then waits; the
//! caller is dropped right there, then the database goes on.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chartsync_central::Central;
use chartsync_central::apply::{Outcome, Write, WriteKind, apply_writes};
use chartsync_central::auth::Caller;
use chartsync_central::db::sqlite::SqliteDb;
use chartsync_central::db::{
    Applied, CentralDb, Counts, DbError, DuplicateKey, DuplicatePair, DuplicateUpdate, HeadChange,
    Instance, NewInstance, RecordRow, RefPending, Seq,
};
use chartsync_protocol::{CommitId, Files, PatientId};
use chartsync_store::{Change, CommitMeta, Condition};
use tokio::sync::Semaphore;

/// SQLite, with `apply` pausing after its commit while `armed`.
struct PausingDb {
    inner: SqliteDb,
    armed: AtomicBool,
    committed: Semaphore,
    resume: Semaphore,
}

impl CentralDb for PausingDb {
    async fn add_instance(&self, new: NewInstance) -> Result<Instance, DbError> {
        self.inner.add_instance(new).await
    }
    async fn instance_by_token(&self, token_hash: [u8; 32]) -> Result<Option<Instance>, DbError> {
        self.inner.instance_by_token(token_hash).await
    }
    async fn instances(&self) -> Result<Vec<Instance>, DbError> {
        self.inner.instances().await
    }
    async fn revoke_instance(&self, id: u32) -> Result<Instance, DbError> {
        self.inner.revoke_instance(id).await
    }
    async fn rotate_token(&self, id: u32, token_hash: [u8; 32]) -> Result<Instance, DbError> {
        self.inner.rotate_token(id, token_hash).await
    }
    async fn touch_instance(&self, id: u32, at: i64) -> Result<(), DbError> {
        self.inner.touch_instance(id, at).await
    }
    async fn instances_version(&self) -> Result<u64, DbError> {
        self.inner.instances_version().await
    }
    async fn try_lock(
        &self,
        ids: &[PatientId],
        holder: &str,
        lease: Duration,
    ) -> Result<Vec<bool>, DbError> {
        self.inner.try_lock(ids, holder, lease).await
    }
    async fn unlock(&self, ids: &[PatientId], holder: &str) -> Result<(), DbError> {
        self.inner.unlock(ids, holder).await
    }
    async fn lease_holders(&self) -> Result<Vec<String>, DbError> {
        self.inner.lease_holders().await
    }
    async fn release_leases_of(&self, holder: &str) -> Result<u64, DbError> {
        self.inner.release_leases_of(holder).await
    }
    async fn records(&self, ids: &[PatientId]) -> Result<Vec<Option<RecordRow>>, DbError> {
        self.inner.records(ids).await
    }
    async fn apply(&self, changes: &[HeadChange]) -> Result<Vec<Applied>, DbError> {
        let applied = self.inner.apply(changes).await;
        if self.armed.swap(false, Ordering::SeqCst) {
            self.committed.add_permits(1);
            self.resume.acquire().await.expect("resume").forget();
        }
        applied
    }
    async fn ref_pending(&self) -> Result<Vec<RefPending>, DbError> {
        self.inner.ref_pending().await
    }
    async fn clear_ref_pending(&self, done: &[(PatientId, CommitId)]) -> Result<(), DbError> {
        self.inner.clear_ref_pending(done).await
    }
    async fn has_grant(&self, instance: u32, id: &PatientId) -> Result<bool, DbError> {
        self.inner.has_grant(instance, id).await
    }
    async fn grant(&self, instance: u32, id: &PatientId, reason: &str) -> Result<(), DbError> {
        self.inner.grant(instance, id, reason).await
    }
    async fn scope_changes(
        &self,
        instance: &Instance,
        after: Seq,
        limit: usize,
    ) -> Result<Vec<RecordRow>, DbError> {
        self.inner.scope_changes(instance, after, limit).await
    }
    async fn first_head(&self, id: &PatientId) -> Result<Option<CommitId>, DbError> {
        self.inner.first_head(id).await
    }
    async fn head_at(&self, id: &PatientId, at: Seq) -> Result<Option<CommitId>, DbError> {
        self.inner.head_at(id, at).await
    }
    async fn add_holder(&self, instance: u32, ids: &[PatientId]) -> Result<(), DbError> {
        self.inner.add_holder(instance, ids).await
    }
    async fn record_page(
        &self,
        instance: u32,
        page: u64,
        cursor: Seq,
        ids: &[PatientId],
        at: i64,
    ) -> Result<(), DbError> {
        self.inner
            .record_page(instance, page, cursor, ids, at)
            .await
    }
    async fn offered_pages(
        &self,
        instance: u32,
        pages: &[u64],
    ) -> Result<Vec<Option<chartsync_central::db::pages::OfferedPage>>, DbError> {
        self.inner.offered_pages(instance, pages).await
    }
    async fn drop_pages(&self, instance: u32, pages: &[u64]) -> Result<(), DbError> {
        self.inner.drop_pages(instance, pages).await
    }
    async fn forget_pages(&self, before: i64) -> Result<u64, DbError> {
        self.inner.forget_pages(before).await
    }
    async fn counts(&self) -> Result<Counts, DbError> {
        self.inner.counts().await
    }
    async fn dump(&self) -> Result<chartsync_central::db::dump::Dump, DbError> {
        self.inner.dump().await
    }
    async fn load(&self, copy: &chartsync_central::db::dump::Dump) -> Result<(), DbError> {
        self.inner.load(copy).await
    }
    async fn save_report(&self, report: chartsync_central::db::SavedReport) -> Result<(), DbError> {
        self.inner.save_report(report).await
    }
    async fn reports(&self) -> Result<Vec<chartsync_central::db::SavedReport>, DbError> {
        self.inner.reports().await
    }
    async fn activity(
        &self,
        since_hour: i64,
    ) -> Result<Vec<chartsync_central::db::ActivityRow>, DbError> {
        self.inner.activity(since_hour).await
    }
    async fn changed_after(
        &self,
        after: Seq,
        limit: usize,
    ) -> Result<Vec<(Seq, PatientId, CommitId)>, DbError> {
        self.inner.changed_after(after, limit).await
    }
    async fn duplicates_cursor(&self) -> Result<Seq, DbError> {
        self.inner.duplicates_cursor().await
    }
    async fn duplicate_candidates(
        &self,
        keys: Vec<DuplicateKey>,
        max_block: usize,
    ) -> Result<Vec<(PatientId, String)>, DbError> {
        self.inner.duplicate_candidates(keys, max_block).await
    }
    async fn index_duplicates(&self, updates: Vec<DuplicateUpdate>) -> Result<(), DbError> {
        self.inner.index_duplicates(updates).await
    }
    async fn duplicate_pairs(
        &self,
        min_score: f64,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<DuplicatePair>, DbError> {
        self.inner.duplicate_pairs(min_score, offset, limit).await
    }
    async fn dismiss_duplicate(
        &self,
        a: &PatientId,
        b: &PatientId,
        at: i64,
    ) -> Result<(), DbError> {
        self.inner.dismiss_duplicate(a, b, at).await
    }
}

fn write(id: PatientId, condition: Condition, yaml: &str) -> Write {
    Write {
        id,
        kind: WriteKind::Api {
            condition,
            change: Change::Replace(Files::from([(
                "patient.yaml".to_string(),
                yaml.to_string(),
            )])),
            meta: CommitMeta::new("Test", "test@example.org", "test"),
        },
    }
}

fn applied_head(outcome: &Outcome) -> CommitId {
    match outcome {
        Outcome::Applied { head, .. } => *head,
        other => panic!("not applied: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_caller_hung_up_after_the_database_accepted_it_still_moves_its_refs() {
    let dir = tempfile::tempdir().expect("tmp");
    let text = format!(
        "data_dir = \"{}\"\nadmin_token = \"test-admin-token-of-at-least-32-chars\"\n",
        dir.path().display()
    );
    let config = chartsync_central::CentralConfig::parse(&text, &dir.path().join("central.toml"))
        .expect("config");
    let db = PausingDb {
        inner: SqliteDb::open(&dir.path().join("central.sqlite")).expect("db"),
        armed: AtomicBool::new(false),
        committed: Semaphore::new(0),
        resume: Semaphore::new(0),
    };
    let central = Central::open(config, db).await.expect("central");
    let existing = PatientId::random();
    let created = apply_writes(
        &central,
        &Caller::Admin,
        vec![write(existing, Condition::MustCreate, "name: Old\n")],
    )
    .await
    .expect("create");
    let before = applied_head(&created[0]);

    // A new record and an edit; the caller goes away once the database
    // has accepted both heads.
    let new = PatientId::random();
    central.db.armed.store(true, Ordering::SeqCst);
    let c = Arc::clone(&central);
    let caller = tokio::spawn(async move {
        apply_writes(
            &c,
            &Caller::Admin,
            vec![
                write(new, Condition::MustCreate, "name: New\n"),
                write(existing, Condition::MatchHead(before), "name: Edited\n"),
            ],
        )
        .await
    });
    central
        .db
        .committed
        .acquire()
        .await
        .expect("committed")
        .forget();
    caller.abort();
    assert!(caller.await.is_err_and(|e| e.is_cancelled()));
    central.db.resume.add_permits(1);

    // What the database acknowledged is what the store serves, soon.
    let deadline = Instant::now() + Duration::from_secs(10);
    for (id, name) in [(new, "New"), (existing, "Edited")] {
        let row = central
            .db
            .records(&[id])
            .await
            .expect("rows")
            .pop()
            .flatten()
            .expect("the database accepted the head");
        loop {
            let head = central.store.head(&id).ok().flatten();
            if head == Some(row.head) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{name}: the database says {}, the ref says {head:?}",
                row.head
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let snapshot = central.store.read(&id).expect("readable");
        assert_eq!(snapshot.files["patient.yaml"], format!("name: {name}\n"));
    }
    // And the record takes the next write.
    let head = central
        .store
        .head(&existing)
        .expect("head")
        .expect("exists");
    let next = apply_writes(
        &central,
        &Caller::Admin,
        vec![write(existing, Condition::MatchHead(head), "name: Again\n")],
    )
    .await
    .expect("write");
    applied_head(&next[0]);
}
