//! What central keeps in its database, behind one trait with one
//! implementation per backend ([`sqlite::SqliteDb`]; PostgreSQL follows the
//! same trait and the same conformance tests in `tests.rs`).
//!
//! The database is the source of truth for every record's acknowledged head
//! (see `crate::apply`): a head is accepted when [`CentralDb::apply`]
//! commits, and the git ref is moved afterwards (and repaired from
//! [`CentralDb::ref_pending`] after a crash).

pub mod any;
pub mod dump;
pub mod holders;
pub mod pages;
pub mod postgres;
pub mod sqlite;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::time::Duration;

use chartsync_protocol::{CommitId, PatientId};

pub use holders::Holders;

/// A position in central's global change sequence.
/// A record's head and a pack holding its whole history (see
/// [`CentralDb::whole_packs`]).
pub type WholePack = (CommitId, Vec<u8>);

pub type Seq = u64;

/// A registered instance (satellite).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// Its id (bit position in holders).
    pub id: u32,
    /// A name for people.
    pub name: String,
    /// The catchments it serves, the first being the default catchment of
    /// records it creates.
    pub catchments: Vec<String>,
    /// Bumped whenever its catchments change (fetch-new cursors restart).
    pub scope_epoch: u64,
    /// Revoked instances are refused.
    pub revoked: bool,
    /// When it last made an authenticated request (Unix seconds, about a
    /// minute's precision; `None`: never), as of when this was read.
    pub last_seen: Option<i64>,
}

/// An instance to register.
#[derive(Debug, Clone)]
pub struct NewInstance {
    /// A chosen id, or `None` for the lowest free one.
    pub id: Option<u32>,
    /// Its name.
    pub name: String,
    /// Its catchments.
    pub catchments: Vec<String>,
    /// SHA-256 of its token.
    pub token_hash: [u8; 32],
}

/// A record's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordRow {
    /// The record.
    pub id: PatientId,
    /// Its acknowledged head.
    pub head: CommitId,
    /// The number of its latest change.
    pub seq: Seq,
    /// Its catchment.
    pub catchment: Option<String>,
    /// The instance that created it (`None`: HQ).
    pub created_by: Option<u32>,
    /// Who holds it.
    pub holders: Holders,
    /// When it last changed (Unix seconds).
    pub updated_at: i64,
    /// Who made its latest change (`None`: HQ).
    pub updated_by: Option<u32>,
}

/// One head to accept, inside [`CentralDb::apply`].
#[derive(Debug, Clone)]
pub struct HeadChange {
    /// The record.
    pub id: PatientId,
    /// The head it must still have (`None`: it must not exist yet).
    pub old: Option<CommitId>,
    /// The new head.
    pub new: CommitId,
    /// Its catchment after the change.
    pub catchment: Option<String>,
    /// Who made the change (`None`: HQ). A creating instance gets a grant
    /// on the record.
    pub by: Option<u32>,
    /// For a new record: the folder holding its repository until the ref is
    /// published (kept in `ref_pending` for repair).
    pub staging: Option<String>,
}

/// What [`CentralDb::apply`] did with one change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Accepted with this sequence number at this time (Unix seconds).
    Ok {
        /// Its sequence number.
        seq: Seq,
        /// When.
        time: i64,
    },
    /// The record's head is not `old` (or it exists, for a creation).
    Stale {
        /// The head now.
        current: Option<CommitId>,
    },
}

/// A head accepted in the database whose git ref may not have moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefPending {
    /// The record.
    pub id: PatientId,
    /// Its head in the database.
    pub head: CommitId,
    /// For a new record: its staging folder (kept when a later change
    /// replaces the pending head before the row is cleared, since the
    /// repository is still there).
    pub staging: Option<String>,
}

/// Totals for metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// Records.
    pub records: u64,
    /// Instances.
    pub instances: u64,
    /// The last sequence number given out.
    pub seq: Seq,
}

/// A database failure.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The backend failed.
    #[error("database error while {context}")]
    Backend {
        /// What was being done.
        context: &'static str,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Migrations failed.
    #[error(transparent)]
    Migrate(#[from] chartsync_common::sqlite::MigrateError),
    /// A value in the database is damaged.
    #[error("the database holds a damaged value in {0}")]
    Damaged(&'static str),
    /// The id is taken (instance registration).
    #[error("instance id {0} is already registered")]
    IdTaken(u32),
    /// No ids left.
    #[error("instance ids are exhausted (at most {0})")]
    IdsExhausted(u32),
    /// An instance id above [`MAX_INSTANCE_ID`] (holders are a bit string
    /// indexed by instance id, so ids are kept small).
    #[error("instance id {0} is out of range (ids are 0 to {MAX_INSTANCE_ID})")]
    IdOutOfRange(u32),
    /// Another instance (revoked ones included) has this name: names
    /// appear in every commit's history, so each names one instance.
    #[error(
        "instance {id} is already named {name:?}; choose another name (see chartsync central instance list)"
    )]
    NameTaken {
        /// The name.
        name: String,
        /// The instance that has it.
        id: u32,
    },
    /// No instance has this id.
    #[error("no instance {id} is registered (see chartsync central instance list)")]
    NoSuchInstance {
        /// The id asked for.
        id: u32,
    },
    /// The instance is revoked, and revocation is final.
    #[error(
        "instance {id} is revoked and stays revoked; register the clinic again with chartsync central instance add"
    )]
    Revoked {
        /// The instance.
        id: u32,
    },
}

/// The highest instance id.
pub const MAX_INSTANCE_ID: u32 = 65_535;

/// A satellite's latest report, as stored (see `crate::reports`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedReport {
    /// The instance.
    pub instance: u32,
    /// Unix seconds central received it.
    pub at: i64,
    /// The report, JSON.
    pub report: String,
    /// Changes in its scope after its pull cursor (capped).
    pub lag: u64,
    /// Its pending pushes and open conflicts (for the series).
    pub pending: u64,
    /// See `pending`.
    pub conflicts: u64,
    /// Sync calls since the report before (added to the hour's count;
    /// 0 when read back).
    pub calls: u64,
}

/// One instance's sync activity in one hour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivityRow {
    /// The instance.
    pub instance: u32,
    /// Unix seconds / 3600.
    pub hour: i64,
    /// Sync calls in that hour.
    pub calls: u64,
    /// The latest lag reported in that hour.
    pub lag: u64,
    /// The latest pending pushes.
    pub pending: u64,
    /// The latest open conflicts.
    pub conflicts: u64,
}

/// How long the hourly activity series is kept.
pub const ACTIVITY_KEEP_HOURS: i64 = 15 * 24;

/// Everything central keeps in its database. Every method is one
/// transaction.
pub trait CentralDb: Send + Sync + 'static {
    /// Registers an instance. Ids are unique; `None` takes the lowest free id.
    /// Ids above [`MAX_INSTANCE_ID`] are refused here and wherever an
    /// instance id is written (`apply`'s `by`, `add_holder`). Names are
    /// unique too, revoked instances included ([`DbError::NameTaken`]).
    /// Moves [`CentralDb::instances_version`].
    fn add_instance(
        &self,
        new: NewInstance,
    ) -> impl Future<Output = Result<Instance, DbError>> + Send;

    /// Revokes an instance: from now on its token finds nothing (its id,
    /// name, grants and holder bits stay, for the audit trail). Revoking a
    /// revoked instance changes nothing. Moves
    /// [`CentralDb::instances_version`] (when it revokes).
    /// [`DbError::NoSuchInstance`] for an unknown id.
    fn revoke_instance(&self, id: u32) -> impl Future<Output = Result<Instance, DbError>> + Send;

    /// Gives a not revoked instance a new token (its hash): the old one
    /// finds nothing from now on. Moves [`CentralDb::instances_version`].
    /// [`DbError::NoSuchInstance`], [`DbError::Revoked`].
    fn rotate_token(
        &self,
        id: u32,
        token_hash: [u8; 32],
    ) -> impl Future<Output = Result<Instance, DbError>> + Send;

    /// Notes that the instance made an authenticated request at `at` (Unix
    /// seconds); a time before the one stored is ignored. Does not move
    /// [`CentralDb::instances_version`]. Unknown ids are ignored.
    fn touch_instance(&self, id: u32, at: i64) -> impl Future<Output = Result<(), DbError>> + Send;

    /// A number that changes whenever who may authenticate changes (an
    /// instance added, revoked, or given a new token), in this process or
    /// any other sharing the database. Servers poll it (it must be cheap)
    /// and drop cached token lookups when it moves.
    fn instances_version(&self) -> impl Future<Output = Result<u64, DbError>> + Send;

    /// The (not revoked) instance whose token hashes to `token_hash`.
    fn instance_by_token(
        &self,
        token_hash: [u8; 32],
    ) -> impl Future<Output = Result<Option<Instance>, DbError>> + Send;

    /// All instances.
    fn instances(&self) -> impl Future<Output = Result<Vec<Instance>, DbError>> + Send;

    /// Tries to take the lease of each patient for `holder`, for `lease`.
    /// A lease is taken when free, expired, or already `holder`'s (then it
    /// is renewed). Returns, per id in order, whether it is now held.
    fn try_lock(
        &self,
        ids: &[PatientId],
        holder: &str,
        lease: Duration,
    ) -> impl Future<Output = Result<Vec<bool>, DbError>> + Send;

    /// Releases the leases `holder` has on these patients.
    fn unlock(
        &self,
        ids: &[PatientId],
        holder: &str,
    ) -> impl Future<Output = Result<(), DbError>> + Send;

    /// Every holder that has a lease now (expired or not).
    fn lease_holders(&self) -> impl Future<Output = Result<Vec<String>, DbError>> + Send;

    /// Drops every lease `holder` has (a process known to be dead); returns
    /// how many.
    fn release_leases_of(&self, holder: &str) -> impl Future<Output = Result<u64, DbError>> + Send;

    /// The rows of these records, in order (`None`: no such record).
    fn records(
        &self,
        ids: &[PatientId],
    ) -> impl Future<Output = Result<Vec<Option<RecordRow>>, DbError>> + Send;

    /// Accepts heads, all in ONE transaction: per change, compare-and-swap
    /// of the head (`old` must match; `None` = must not exist), the next
    /// sequence number, a row in the change log, the changer as a holder (if
    /// an instance), a `created` grant for a creating instance, `held` grants
    /// for the holders when the catchment changes, and a `ref_pending` row.
    /// A stale change is reported and skipped; the others are applied.
    /// Sequence numbers are given in the order of `changes` and increase
    /// with commit order (a reader never sees seq n+1 before seq n).
    fn apply(
        &self,
        changes: &[HeadChange],
    ) -> impl Future<Output = Result<Vec<Applied>, DbError>> + Send;

    /// Heads whose git ref may lag the database.
    fn ref_pending(&self) -> impl Future<Output = Result<Vec<RefPending>, DbError>> + Send;

    /// Forgets `ref_pending` rows once the refs moved (only rows still at
    /// `head`, so a newer pending head is kept).
    fn clear_ref_pending(
        &self,
        done: &[(PatientId, CommitId)],
    ) -> impl Future<Output = Result<(), DbError>> + Send;

    /// Whether `instance` has a grant on the record.
    fn has_grant(
        &self,
        instance: u32,
        id: &PatientId,
    ) -> impl Future<Output = Result<bool, DbError>> + Send;

    /// Gives `instance` a grant on the record (`reason`: created, fetched,
    /// held). Idempotent.
    fn grant(
        &self,
        instance: u32,
        id: &PatientId,
        reason: &str,
    ) -> impl Future<Output = Result<(), DbError>> + Send;

    /// Records in the instance's scope (catchment among its catchments, or
    /// a grant) whose latest change is after `after`, by sequence number, at
    /// most `limit`. Cost follows the number of such changes, not the
    /// number of records.
    fn scope_changes(
        &self,
        instance: &Instance,
        after: Seq,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<RecordRow>, DbError>> + Send;

    /// The record's first head (its creation), which every later head
    /// descends from, so every holder has it; `None` for an unknown record.
    fn first_head(
        &self,
        id: &PatientId,
    ) -> impl Future<Output = Result<Option<CommitId>, DbError>> + Send;

    /// The record's head as of sequence number `at` (after its latest
    /// change numbered `at` or lower); `None` if it did not exist then.
    fn head_at(
        &self,
        id: &PatientId,
        at: Seq,
    ) -> impl Future<Output = Result<Option<CommitId>, DbError>> + Send;

    /// Marks `instance` as a holder of these records (acknowledged
    /// receipt). Unknown ids are ignored.
    fn add_holder(
        &self,
        instance: u32,
        ids: &[PatientId],
    ) -> impl Future<Output = Result<(), DbError>> + Send;

    /// Totals.
    fn counts(&self) -> impl Future<Output = Result<Counts, DbError>> + Send;

    /// The last sequence number given out ([`Counts::seq`] without the
    /// counting). The default counts.
    fn last_seq(&self) -> impl Future<Output = Result<Seq, DbError>> + Send {
        async move { self.counts().await.map(|c| c.seq) }
    }

    /// Stores an instance's latest report (replacing the one before), adds
    /// the sync call to its hour in the activity series, and drops its
    /// hours older than [`ACTIVITY_KEEP_HOURS`].
    fn save_report(&self, report: SavedReport) -> impl Future<Output = Result<(), DbError>> + Send;

    /// Every instance's latest report.
    fn reports(&self) -> impl Future<Output = Result<Vec<SavedReport>, DbError>> + Send;

    /// The activity series from `since_hour` (Unix seconds / 3600) on, by
    /// instance then hour.
    fn activity(
        &self,
        since_hour: i64,
    ) -> impl Future<Output = Result<Vec<ActivityRow>, DbError>> + Send;
    /// Records whose latest change is after `after`, in sequence order, at
    /// most `limit`: `(seq, id, head)`.
    fn changed_after(
        &self,
        after: Seq,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<(Seq, PatientId, CommitId)>, DbError>> + Send;

    /// The sequence number up to which records are indexed for
    /// duplicates.
    fn duplicates_cursor(&self) -> impl Future<Output = Result<Seq, DbError>> + Send;

    /// The indexed records sharing a block with one of `keys`, each once,
    /// with their stored fields ([`chartsync_dedup::Person::to_row`]): per
    /// key its coarse block, or its fine block when the coarse one holds
    /// more than `max_block` records, or its finest when the fine one does
    /// too (none when all do). A level's block is every record stored
    /// under a key equal to it or starting with it and
    /// [`chartsync_dedup::LEVEL_SEPARATOR`].
    fn duplicate_candidates(
        &self,
        keys: Vec<DuplicateKey>,
        max_block: usize,
    ) -> impl Future<Output = Result<Vec<(PatientId, String)>, DbError>> + Send;

    /// [`CentralDb::duplicate_candidates`] of several records at once
    /// (`plans[i]` is the keys of record `i`), in order. A backend may
    /// read them on several connections at once, each part in one
    /// snapshot (only the indexer changes the index, one batch at a time).
    /// The default asks record by record.
    fn duplicate_candidates_many(
        &self,
        plans: Vec<Vec<DuplicateKey>>,
        max_block: usize,
    ) -> impl Future<Output = Result<Vec<StoredCandidates>, DbError>> + Send {
        async move {
            let mut out = Vec::with_capacity(plans.len());
            for keys in plans {
                let found = self.duplicate_candidates(keys, max_block).await?;
                out.push(found.iter().map(|(id, f)| (*id, f.as_str())).collect());
            }
            Ok(out)
        }
    }

    /// Replaces what is indexed of each record, its keys and its pairs
    /// (dismissed pairs are not stored), in order, and moves the cursor to
    /// the last `seq` if that is later: one transaction.
    fn index_duplicates(
        &self,
        updates: Vec<DuplicateUpdate>,
    ) -> impl Future<Output = Result<(), DbError>> + Send;

    /// Pairs scoring at least `min_score`, highest first, skipping
    /// `offset`, at most `limit`.
    fn duplicate_pairs(
        &self,
        min_score: f64,
        offset: usize,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<DuplicatePair>, DbError>> + Send;

    /// Everything in the database but the records' history (see
    /// [`dump::Dump`]), read in one snapshot.
    fn dump(&self) -> impl Future<Output = Result<dump::Dump, DbError>> + Send;

    /// Loads a dump into this database, in one transaction, keeping every
    /// id, sequence number, token hash, grant and holder; refuses
    /// ([`dump::not_empty`]) a database that has records or instances.
    fn load(&self, dump: &dump::Dump) -> impl Future<Output = Result<(), DbError>> + Send;

    /// [`CentralDb::head_at`] of several records at once, in order. The
    /// default asks one by one.
    fn heads_at(
        &self,
        ids: &[PatientId],
        at: Seq,
    ) -> impl Future<Output = Result<Vec<Option<CommitId>>, DbError>> + Send {
        async move {
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                out.push(self.head_at(id, at).await?);
            }
            Ok(out)
        }
    }

    /// [`CentralDb::first_head`] of several records at once, in order. The
    /// default asks one by one.
    fn first_heads(
        &self,
        ids: &[PatientId],
    ) -> impl Future<Output = Result<Vec<Option<CommitId>>, DbError>> + Send {
        async move {
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                out.push(self.first_head(id).await?);
            }
            Ok(out)
        }
    }

    /// Whether the database keeps every record's history (PostgreSQL):
    /// then each process's git repositories in `data_dir` are only a cache,
    /// brought up to date from [`CentralDb::history_after`] (see
    /// `Central::catch_up`).
    fn keeps_history(&self) -> bool {
        false
    }

    /// Like [`CentralDb::apply`], also storing each accepted change's pack
    /// (`packs[i]` for `changes[i]`, the objects from its old head to its
    /// new one) in the same transaction, so that a head is never accepted
    /// without its history. Where the database keeps history no
    /// `ref_pending` rows are written (the refs are a cache). The default
    /// ignores the packs.
    fn apply_with_history(
        &self,
        changes: &[HeadChange],
        packs: &[Vec<u8>],
    ) -> impl Future<Output = Result<Vec<Applied>, DbError>> + Send {
        let _ = packs;
        self.apply(changes)
    }

    /// A record's stored packs after the change that made `after` its head
    /// (`None`, or a head not in its history: from its creation), in order,
    /// each with the head it brings. Empty where the database keeps no
    /// history.
    fn history_after(
        &self,
        id: &PatientId,
        after: Option<CommitId>,
    ) -> impl Future<Output = Result<Vec<(CommitId, Vec<u8>)>, DbError>> + Send {
        let _ = (id, after);
        async { Ok(Vec::new()) }
    }

    /// For each record whose stored history is one change (its creation,
    /// or a whole history copied in), that change's head and pack, which
    /// hold the whole record: `None` for the others, and everywhere where
    /// the database keeps no history. Lets fetch-new send a new record
    /// without a copy of it in `data_dir` (see `sync.rs`).
    fn whole_packs(
        &self,
        ids: &[PatientId],
    ) -> impl Future<Output = Result<Vec<Option<WholePack>>, DbError>> + Send {
        let none = ids.iter().map(|_| None).collect();
        async { Ok(none) }
    }

    /// Records the ids a fetch-new page offered `instance` (sync protocol
    /// 6) under `page`, a random token the reply carries, with the page's
    /// cursor and the time, so that the instance can acknowledge the page
    /// by the token alone. A token already recorded for the instance is
    /// replaced.
    fn record_page(
        &self,
        instance: u32,
        page: u64,
        cursor: Seq,
        ids: &[PatientId],
        at: i64,
    ) -> impl Future<Output = Result<(), DbError>> + Send;

    /// The cursor and ids of each page `instance` was offered under these
    /// tokens, in order; `None` for a token not recorded for it (another
    /// instance's, acknowledged already, or forgotten).
    fn offered_pages(
        &self,
        instance: u32,
        pages: &[u64],
    ) -> impl Future<Output = Result<Vec<Option<pages::OfferedPage>>, DbError>> + Send;

    /// Forgets `instance`'s pages under these tokens (acknowledged).
    fn drop_pages(
        &self,
        instance: u32,
        pages: &[u64],
    ) -> impl Future<Output = Result<(), DbError>> + Send;

    /// Forgets every page offered before `before` (unix seconds); returns
    /// how many.
    fn forget_pages(&self, before: i64) -> impl Future<Output = Result<u64, DbError>> + Send;

    /// Records that `a` and `b` are two people: the pair is dropped and
    /// never stored again. Idempotent.
    fn dismiss_duplicate(
        &self,
        a: &PatientId,
        b: &PatientId,
        at: i64,
    ) -> impl Future<Output = Result<(), DbError>> + Send;
}

/// A blocking key with its finer fallback.
pub use chartsync_dedup::Key as DuplicateKey;

/// One record's duplicate candidates with their stored fields, in one
/// buffer (a batch has hundreds of thousands).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredCandidates {
    /// Every candidate's fields, one after another.
    text: String,
    /// Each candidate and where its fields end in `text`.
    members: Vec<(PatientId, usize)>,
}

impl StoredCandidates {
    /// Adds a candidate.
    pub fn push(&mut self, id: PatientId, fields: &str) {
        self.text.push_str(fields);
        self.members.push((id, self.text.len()));
    }

    /// How many candidates.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The candidates in the order added, with their fields.
    pub fn iter(&self) -> impl Iterator<Item = (PatientId, &str)> {
        let mut start = 0;
        self.members.iter().map(move |&(id, end)| {
            let fields = self.text.get(start..end).unwrap_or("");
            start = end;
            (id, fields)
        })
    }
}

impl<'a> FromIterator<(PatientId, &'a str)> for StoredCandidates {
    fn from_iter<I: IntoIterator<Item = (PatientId, &'a str)>>(iter: I) -> Self {
        let mut out = StoredCandidates::default();
        for (id, fields) in iter {
            out.push(id, fields);
        }
        out
    }
}

/// A likely duplicate pair as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct DuplicatePair {
    /// One record.
    pub a: PatientId,
    /// The other.
    pub b: PatientId,
    /// The score in `[0, 1]`.
    pub score: f64,
    /// The per-field comparison (JSON list of `{field, a, b, similarity}`).
    pub fields: String,
}

/// A record's identifying fields and the keys it is stored under.
#[derive(Debug, Clone, PartialEq)]
pub struct DuplicateEntry {
    /// The normalised fields, as one row
    /// ([`chartsync_dedup::Person::to_row`]).
    pub person: String,
    /// The keys it is stored under, one per blocking rule: the rule's
    /// finest level ([`chartsync_dedup::stored_keys`]).
    pub keys: Vec<String>,
}

/// What indexing one record found.
#[derive(Debug, Clone, PartialEq)]
pub struct DuplicateUpdate {
    /// The record.
    pub id: PatientId,
    /// The sequence number of the change indexed.
    pub seq: Seq,
    /// `None`: nothing identifying (no `patient.yaml`, or no field found).
    pub entry: Option<DuplicateEntry>,
    /// Its likely pairs with earlier indexed records.
    pub pairs: Vec<DuplicatePair>,
}
