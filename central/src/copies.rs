//! Central on PostgreSQL keeps every record's history in the database; the
//! git repositories in `data_dir` are copies it builds from there to read
//! and write records. This keeps those copies bounded: at most
//! `[database] cache_records` of them (the most recently used), so a
//! process serving a million records does not keep a million repositories.
//!
//! Every path to a record's copy starts by bringing it up to date
//! (`Central::catch_up`) or by writing it (`apply`), and both mark the
//! record used here. Upkeep drops the least recently used copies beyond the
//! limit, a batch at a time: only copies unused for [`GRACE`], under the
//! patients' leases (no write of any process is in them) and the store's
//! local lock. A copy dropped is rebuilt from the database the next time it
//! is needed. On SQLite the repositories are the records themselves and
//! none is ever dropped.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chartsync_protocol::PatientId;

use crate::Central;
use crate::db::CentralDb;

/// A copy used within this long is never dropped (a read that began with
/// bringing it up to date finishes well within it).
pub const GRACE: Duration = Duration::from_secs(60);
/// Most copies dropped under one set of leases.
const BATCH: usize = 1000;

/// Which copies this process holds, least recently used first.
#[derive(Debug)]
pub struct Copies {
    limit: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    next: u64,
    by_id: HashMap<PatientId, (u64, Instant)>,
    order: BTreeMap<u64, PatientId>,
}

impl Inner {
    fn mark(&mut self, id: PatientId, at: Instant) {
        let tick = self.next;
        self.next += 1;
        if let Some((old, _)) = self.by_id.insert(id, (tick, at)) {
            self.order.remove(&old);
        }
        self.order.insert(tick, id);
    }
}

impl Copies {
    /// Keeps at most `limit` copies (0: no limit, and nothing is tracked).
    pub fn new(limit: usize) -> Copies {
        Copies {
            limit,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Copies found on disk at start, older than any used since; they may
    /// be dropped at once when over the limit.
    pub fn found(&self, ids: impl IntoIterator<Item = PatientId>) {
        if self.limit == 0 {
            return;
        }
        let long_ago = Instant::now()
            .checked_sub(GRACE * 2)
            .unwrap_or_else(Instant::now);
        let mut inner = self.inner();
        for id in ids {
            if !inner.by_id.contains_key(&id) {
                inner.mark(id, long_ago);
            }
        }
    }

    /// The records' copies are being used now.
    pub fn used(&self, ids: impl IntoIterator<Item = PatientId>) {
        if self.limit == 0 {
            return;
        }
        let now = Instant::now();
        let mut inner = self.inner();
        for id in ids {
            inner.mark(id, now);
        }
    }

    /// Copies known.
    pub fn len(&self) -> usize {
        self.inner().by_id.len()
    }

    /// Whether no copy is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Up to `max` of the least recently used copies beyond the limit, each
    /// unused for `grace`, with the mark to check again before dropping.
    fn beyond_limit(&self, max: usize, grace: Duration) -> Vec<(PatientId, u64)> {
        if self.limit == 0 {
            return Vec::new();
        }
        let inner = self.inner();
        let over = inner.by_id.len().saturating_sub(self.limit).min(max);
        inner
            .order
            .iter()
            .take(over)
            .filter(|(_, id)| {
                inner
                    .by_id
                    .get(id)
                    .is_some_and(|(_, at)| at.elapsed() >= grace)
            })
            .map(|(tick, id)| (*id, *tick))
            .collect()
    }

    /// Whether the copy is still unused since `tick`.
    fn unused_since(&self, id: &PatientId, tick: u64) -> bool {
        self.inner()
            .by_id
            .get(id)
            .is_some_and(|(now, _)| *now == tick)
    }

    /// Forgets a dropped copy (unless it was used meanwhile).
    fn dropped(&self, id: &PatientId, tick: u64) {
        let mut inner = self.inner();
        if inner.by_id.get(id).is_some_and(|(now, _)| *now == tick) {
            inner.by_id.remove(id);
            inner.order.remove(&tick);
        }
    }
}

/// Drops the least recently used copies beyond the limit (see the module
/// documentation); returns how many were dropped.
pub async fn trim<D: CentralDb>(central: &Arc<Central<D>>) -> usize {
    trim_unused_for(central, GRACE).await
}

async fn trim_unused_for<D: CentralDb>(central: &Arc<Central<D>>, grace: Duration) -> usize {
    let mut dropped = 0;
    loop {
        let batch = central.copies.beyond_limit(BATCH, grace);
        if batch.is_empty() {
            return dropped;
        }
        let ids: Vec<PatientId> = batch.iter().map(|(id, _)| *id).collect();
        let held = match central.locks.acquire(&central.db, &ids).await {
            Ok(held) => held,
            Err(e) => {
                tracing::warn!(error = %e, "could not take patient leases to drop copies of records");
                return dropped;
            }
        };
        let locked: std::collections::HashSet<PatientId> = held.ids.iter().copied().collect();
        let c = Arc::clone(central);
        let work: Vec<(PatientId, u64)> = batch
            .into_iter()
            .filter(|(id, _)| locked.contains(id))
            .collect();
        let progress = work.len();
        let result = tokio::task::spawn_blocking(move || {
            let mut n = 0;
            for (id, tick) in work {
                if !c.copies.unused_since(&id, tick) {
                    continue;
                }
                match c.store.drop_copy(&id) {
                    Ok(_) => {
                        c.copies.dropped(&id, tick);
                        n += 1;
                    }
                    Err(e) => {
                        tracing::warn!(patient = %id, error = %e, "could not drop a copy of a record");
                    }
                }
            }
            n
        })
        .await;
        if let Err(e) = central.locks.release(&central.db, held).await {
            tracing::warn!(error = %e, "could not release patient leases (they expire)");
        }
        match result {
            Ok(n) => dropped += n,
            Err(e) => {
                tracing::warn!(error = %e, "dropping copies of records failed");
                return dropped;
            }
        }
        if progress == 0 {
            // Every candidate is being written elsewhere: next time.
            return dropped;
        }
        tokio::task::yield_now().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::{Outcome, Write, WriteKind, apply_writes};
    use crate::auth::Caller;
    use chartsync_store::{Change, CommitMeta, Condition};

    fn write(id: PatientId, condition: Condition, yaml: &str) -> Write {
        Write {
            id,
            kind: WriteKind::Api {
                condition,
                change: Change::Replace(chartsync_protocol::Files::from([(
                    "patient.yaml".to_string(),
                    yaml.to_string(),
                )])),
                meta: CommitMeta::new("Test", "test@example.org", "test"),
            },
        }
    }

    fn head(outcome: &Outcome) -> chartsync_protocol::CommitId {
        match outcome {
            Outcome::Applied { head, .. } => *head,
            other => panic!("not applied: {other:?}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn on_postgresql_copies_beyond_the_limit_are_dropped_and_rebuilt_when_needed() {
        let test = crate::db::postgres::tests::TestDb::new().await;
        let dir = tempfile::tempdir().expect("tmp");
        let text = format!(
            "data_dir = \"{}\"\nadmin_token = \"test-admin-token-of-at-least-32-chars\"\n[database]\nurl = \"{}\"\ncache_records = 1000\n",
            dir.path().display(),
            test.url
        );
        let config =
            crate::CentralConfig::parse(&text, &dir.path().join("central.toml")).expect("config");
        let db = crate::db::any::AnyDb::open(&config).await.expect("db");
        let central = Central::open(config, db).await.expect("central");
        let ids: Vec<PatientId> = (0..1010).map(|_| PatientId::random()).collect();
        let outcomes = apply_writes(
            &central,
            &Caller::Admin,
            ids.iter()
                .enumerate()
                .map(|(n, id)| write(*id, Condition::MustCreate, &format!("n: {n}\n")))
                .collect(),
        )
        .await
        .expect("create");
        let heads: Vec<_> = outcomes.iter().map(head).collect();
        assert_eq!(central.store.list().expect("list").len(), 1010);
        // Within the grace nothing goes; past it, the ten least recently used.
        assert_eq!(trim(&central).await, 0);
        assert_eq!(trim_unused_for(&central, Duration::ZERO).await, 10);
        assert_eq!(central.copies.len(), 1000);
        let kept = central.store.list().expect("list");
        assert_eq!(kept.len(), 1000);
        let gone: Vec<usize> = (0..ids.len())
            .filter(|n| !kept.contains(&ids[*n]))
            .collect();
        assert_eq!(gone.len(), 10);
        // A dropped record is read and written as before: its copy is
        // rebuilt from the database.
        let n = gone[0];
        Central::catch_up(&central, &[(ids[n], heads[n])], false).await;
        let files = central
            .store
            .read_at(&ids[n], heads[n])
            .expect("read")
            .expect("present");
        assert_eq!(files["patient.yaml"], format!("n: {n}\n"));
        let m = gone[1];
        let edited = apply_writes(
            &central,
            &Caller::Admin,
            vec![write(ids[m], Condition::MatchHead(heads[m]), "n: edited\n")],
        )
        .await
        .expect("edit");
        let new = head(&edited[0]);
        let history = central
            .store
            .history_at(&ids[m], Some(new))
            .expect("history");
        assert_eq!(history.len(), 2, "both commits: {history:?}");
        // Nothing half-removed is left behind.
        let tmp = central.store.layout().tmp();
        let mut left = Vec::new();
        for entry in std::fs::read_dir(&tmp).expect("tmp").flatten() {
            left.push(entry.path());
            if entry.path().is_dir() {
                left.extend(
                    std::fs::read_dir(entry.path())
                        .expect("session")
                        .flatten()
                        .map(|e| e.path()),
                );
            }
        }
        assert!(
            left.iter()
                .all(|p| !p.to_string_lossy().contains(".dropped")),
            "{left:?}"
        );
    }

    #[test]
    fn the_least_recently_used_beyond_the_limit_are_dropped_after_the_grace() {
        let copies = Copies::new(2);
        let untracked = Copies::new(0);
        untracked.used([PatientId::random()]);
        assert!(untracked.is_empty());
        let ids: Vec<PatientId> = (0..5).map(|_| PatientId::random()).collect();
        copies.found([ids[0]]);
        copies.used(ids[1..4].iter().copied());
        copies.used([ids[1]]);
        // Over by two: the found copy (unused long ago) and ids[2] are the
        // oldest, but only the found one is past the grace.
        let first = copies.beyond_limit(10, GRACE);
        assert_eq!(first.iter().map(|c| c.0).collect::<Vec<_>>(), [ids[0]]);
        // Without a grace, the two least recently used.
        let both = copies.beyond_limit(10, Duration::ZERO);
        assert_eq!(
            both.iter().map(|c| c.0).collect::<Vec<_>>(),
            [ids[0], ids[2]]
        );
        // Used again meanwhile: not forgotten.
        copies.used([ids[2]]);
        assert!(!copies.unused_since(&ids[2], both[1].1));
        copies.dropped(&ids[2], both[1].1);
        assert_eq!(copies.len(), 4);
        copies.dropped(&ids[0], both[0].1);
        assert_eq!(copies.len(), 3);
        assert!(Copies::new(0).beyond_limit(10, Duration::ZERO).is_empty());
    }
}
