//! Bookkeeping of the sync jobs.
//!
//! **The "changed" mark and its counter.** Every local head move (a clinic's
//! write, a merge) sets `dirty` and bumps `changes` *before* the head moves
//! (so a crash cannot hide the change from push), and bumps `changes` again
//! *after*. Push reads `changes`, then the head, pushes it, and clears
//! `dirty` only if `changes` is still what it read: a write that started
//! after the read, or was between its two bumps, changes the counter, so its
//! record stays marked. No lock is needed, across processes too.

use chartsync_protocol::sync::MAX_ACK_PAGES;
use chartsync_protocol::{CommitId, PatientId};
use rusqlite::{OptionalExtension, params};

use super::set_aside::SetAside;
use super::{Db, DbError, head_from, id_from, sql};

/// A record with local changes to push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirtyRecord {
    /// The record.
    pub id: PatientId,
    /// The head central last acknowledged (`None`: central never saw it).
    pub central_head: Option<CommitId>,
    /// The local head central refused, if it did.
    pub refused_head: Option<CommitId>,
    /// The local head set aside (central's changes could not be merged
    /// with it), if it is.
    pub aside_head: Option<CommitId>,
    /// The local-change counter when read.
    pub changes: i64,
}

/// What central has of a record, after a sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CentralState {
    /// The record.
    pub id: PatientId,
    /// Central's head.
    pub head: CommitId,
    /// Its sequence number.
    pub seq: u64,
    /// When central accepted it.
    pub time: i64,
}

/// A record stored and not yet acknowledged to central.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingAck {
    /// The record.
    pub id: PatientId,
    /// Central's head that was stored.
    pub head: CommitId,
    /// The cursor of the fetch-new page it came in, when `head` is the
    /// head that page sent (protocol 5 then acknowledges it by the page);
    /// `None`: acknowledged by head.
    pub page: Option<u64>,
    /// The page's token, when every record of that page was stored at the
    /// head it sent (protocol 6 then acknowledges the page by the token
    /// alone); `None`: by the ids.
    pub token: Option<u64>,
}

impl PendingAck {
    /// Acknowledged by its head.
    pub fn by_head((id, head): (PatientId, CommitId)) -> PendingAck {
        PendingAck {
            id,
            head,
            page: None,
            token: None,
        }
    }
}

/// What the database knows of a head central sent (see
/// [`Db::central_heads_known`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known {
    /// Recorded as central's head, and the record unchanged here since:
    /// it is at that head here.
    Settled,
    /// Recorded as central's head; changed here since.
    Changed,
    /// Not recorded (a new record, a head that moved, or a sync that
    /// stopped before recording it).
    No,
}

impl Db {
    /// Records marked changed, ordered by id, after `after`.
    pub fn dirty_page(
        &self,
        after: Option<PatientId>,
        limit: usize,
    ) -> Result<Vec<DirtyRecord>, DbError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT r.patient, r.central_head, r.refused_head, r.changes, s.local_head
                 FROM records r LEFT JOIN set_aside s ON s.patient = r.patient
                 WHERE r.dirty = 1 AND r.patient > ?1 ORDER BY r.patient LIMIT ?2",
            )
            .map_err(sql("listing changed records"))?;
        let after: Vec<u8> = after.map(|a| a.as_bytes().to_vec()).unwrap_or_default();
        let rows = stmt
            .query_map(params![after, limit as i64], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, Option<String>>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, Option<String>>(4)?,
                ))
            })
            .map_err(sql("listing changed records"))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, head, refused, changes, aside) =
                row.map_err(sql("listing changed records"))?;
            out.push(DirtyRecord {
                id: id_from(id)?,
                central_head: head_from(head)?,
                refused_head: head_from(refused)?,
                aside_head: head_from(aside)?,
                changes,
            });
        }
        Ok(out)
    }

    /// Clears the "changed" marks of records whose counter is still the
    /// one given (see the module documentation), in one transaction.
    pub fn clear_dirty_if(&self, records: &[(PatientId, i64)]) -> Result<(), DbError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(sql("clearing changed marks"))?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "UPDATE records SET dirty = 0, refused = NULL, refused_head = NULL
                     WHERE patient = ?1 AND changes = ?2",
                )
                .map_err(sql("clearing changed marks"))?;
            for (id, changes) in records {
                stmt.execute(params![id.as_bytes(), changes])
                    .map_err(sql("clearing changed marks"))?;
            }
        }
        tx.commit().map_err(sql("clearing changed marks"))
    }

    /// Marks records changed, before their heads move, in one transaction.
    pub fn mark_dirty_many(&self, ids: &[PatientId]) -> Result<(), DbError> {
        self.bump(ids, true)
    }

    /// Bumps the counters of records whose heads just moved.
    pub fn note_moved(&self, ids: &[PatientId]) -> Result<(), DbError> {
        self.bump(ids, false)
    }

    fn bump(&self, ids: &[PatientId], dirty: bool) -> Result<(), DbError> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(sql("marking records changed"))?;
        {
            let mut stmt = tx
                .prepare_cached(if dirty {
                    "INSERT INTO records (patient, dirty, changes) VALUES (?1, 1, 1)
                     ON CONFLICT (patient) DO UPDATE SET dirty = 1, changes = changes + 1"
                } else {
                    "UPDATE records SET changes = changes + 1 WHERE patient = ?1"
                })
                .map_err(sql("marking records changed"))?;
            for id in ids {
                stmt.execute(params![id.as_bytes()])
                    .map_err(sql("marking records changed"))?;
            }
        }
        tx.commit().map_err(sql("marking records changed"))
    }

    /// For each (record, head): whether the database records `head` as
    /// central's head of the record (stored by a sync that completed), and
    /// if so whether the record is unchanged here since (no local change
    /// marked: its head here is then that one, see the module
    /// documentation).
    pub fn central_heads_known(
        &self,
        pairs: &[(PatientId, CommitId)],
    ) -> Result<Vec<Known>, DbError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT central_head, dirty FROM records WHERE patient = ?1")
            .map_err(sql("reading central's heads"))?;
        let mut out = Vec::with_capacity(pairs.len());
        for (id, head) in pairs {
            let row: Option<(Option<String>, i64)> = stmt
                .query_row(params![id.as_bytes()], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
                .map_err(sql("reading central's heads"))?;
            out.push(match row {
                None => Known::No,
                Some((known, dirty)) => match (head_from(known)? == Some(*head), dirty == 0) {
                    (false, _) => Known::No,
                    (true, true) => Known::Settled,
                    (true, false) => Known::Changed,
                },
            });
        }
        Ok(out)
    }

    /// Remembers central's refusal of a local head.
    pub fn set_refused(
        &self,
        id: &PatientId,
        head: CommitId,
        message: &str,
    ) -> Result<(), DbError> {
        self.conn()
            .execute(
                "UPDATE records SET refused = ?2, refused_head = ?3 WHERE patient = ?1",
                params![id.as_bytes(), message, head.to_string()],
            )
            .map_err(sql("recording a refusal"))?;
        Ok(())
    }

    /// Records what central has, saves cursors and pending
    /// acknowledgements, and the records set aside by `aside.0` (the job),
    /// all in one transaction, so that a cursor never moves past a record
    /// that was neither stored nor set aside. Creates rows for records new
    /// here (not marked changed); records in `states` are no longer set
    /// aside.
    pub fn commit_sync(
        &self,
        states: &[CentralState],
        cursors: &[(&str, i64)],
        acks: &[PendingAck],
        aside: (&str, &[SetAside]),
    ) -> Result<(), DbError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(sql("saving sync progress"))?;
        {
            let synced: Vec<PatientId> = states.iter().map(|s| s.id).collect();
            super::set_aside::clear(&tx, &synced)?;
            super::set_aside::record(&tx, aside.0, aside.1)?;
            let mut upsert = tx
                .prepare_cached(
                    "INSERT INTO records (patient, central_head, central_seq, synced_at, dirty)
                     VALUES (?1, ?2, ?3, ?4, 0)
                     ON CONFLICT (patient) DO UPDATE SET
                        central_head = excluded.central_head,
                        central_seq = excluded.central_seq,
                        synced_at = excluded.synced_at",
                )
                .map_err(sql("saving sync progress"))?;
            for s in states {
                upsert
                    .execute(params![
                        s.id.as_bytes(),
                        s.head.to_string(),
                        s.seq as i64,
                        s.time
                    ])
                    .map_err(sql("saving sync progress"))?;
            }
            let mut state = tx
                .prepare_cached(
                    "INSERT INTO state (key, value) VALUES (?1, ?2)
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                )
                .map_err(sql("saving sync progress"))?;
            for (key, value) in cursors {
                state
                    .execute(params![key, value])
                    .map_err(sql("saving sync progress"))?;
            }
            let mut ack = tx
                .prepare_cached(
                    "INSERT INTO pending_acks (patient, head, page_cursor, page_token)
                     VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (patient) DO UPDATE SET
                        head = excluded.head, page_cursor = excluded.page_cursor,
                        page_token = excluded.page_token",
                )
                .map_err(sql("saving sync progress"))?;
            for a in acks {
                let page = a.page.map(|c| i64::try_from(c).unwrap_or(i64::MAX));
                // Central gives out tokens from 1 to i64::MAX; any other is
                // not kept (the page is then acknowledged by its ids).
                let token = a.token.and_then(|t| i64::try_from(t).ok());
                ack.execute(params![a.id.as_bytes(), a.head.to_string(), page, token])
                    .map_err(sql("saving sync progress"))?;
            }
        }
        tx.commit().map_err(sql("saving sync progress"))
    }

    /// Acknowledgements not yet delivered to central, at most `limit`: a
    /// record of each page known by its token first (at most
    /// [`MAX_ACK_PAGES`], as many as a request acknowledges; a page
    /// acknowledged by its token is acknowledged whole, so those pages go
    /// in one request, however many records each holds), then the rest by
    /// record.
    pub fn pending_acks(&self, limit: usize) -> Result<Vec<PendingAck>, DbError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT patient, head, page_cursor, page_token, part FROM (
                    SELECT patient, head, page_cursor, page_token, 0 AS part FROM pending_acks
                     WHERE patient IN (SELECT MIN(patient) FROM pending_acks
                                        WHERE page_token IS NOT NULL
                                        GROUP BY page_token ORDER BY page_token LIMIT ?2)
                    UNION ALL
                    SELECT * FROM (SELECT patient, head, page_cursor, page_token, 1 FROM pending_acks
                                    ORDER BY patient LIMIT ?1))
                  ORDER BY part, patient",
            )
            .map_err(sql("reading pending acknowledgements"))?;
        let rows = stmt
            .query_map(params![limit as i64, MAX_ACK_PAGES as i64], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<i64>>(2)?,
                    r.get::<_, Option<i64>>(3)?,
                    r.get::<_, i64>(4)?,
                ))
            })
            .map_err(sql("reading pending acknowledgements"))?;
        let mut out = Vec::new();
        // How many came first, one of each page.
        let mut firsts = 0;
        for row in rows {
            let (id, head, page, token, part) =
                row.map_err(sql("reading pending acknowledgements"))?;
            let head = head_from(Some(head))?.ok_or(DbError::Damaged("pending_acks.head"))?;
            let page = page
                .map(u64::try_from)
                .transpose()
                .map_err(|_| DbError::Damaged("pending_acks.page_cursor"))?;
            let token = token
                .map(u64::try_from)
                .transpose()
                .map_err(|_| DbError::Damaged("pending_acks.page_token"))?;
            let id = id_from(id)?;
            if part != 0 && out[..firsts].iter().any(|a: &PendingAck| a.id == id) {
                // It came first already.
                continue;
            }
            if out.len() >= limit {
                break;
            }
            out.push(PendingAck {
                id,
                head,
                page,
                token,
            });
            if part == 0 {
                firsts += 1;
            }
        }
        Ok(out)
    }

    /// Forgets delivered acknowledgements (those still at the head
    /// delivered) but those of pages central did not know by their token
    /// (`forgotten`: acknowledged by their ids next time). With `by_token`
    /// (central took pages by token: protocol 6), also the rest of each
    /// page acknowledged by token (central took the whole page).
    pub fn clear_acks(
        &self,
        delivered: &[PendingAck],
        forgotten: &[u64],
        by_token: bool,
    ) -> Result<(), DbError> {
        const CTX: &str = "clearing acknowledgements";
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(sql(CTX))?;
        {
            let forgot = |a: &PendingAck| a.token.is_some_and(|t| forgotten.contains(&t));
            let mut stmt = tx
                .prepare_cached("DELETE FROM pending_acks WHERE patient = ?1 AND head = ?2")
                .map_err(sql(CTX))?;
            for a in delivered.iter().filter(|a| !forgot(a)) {
                stmt.execute(params![a.id.as_bytes(), a.head.to_string()])
                    .map_err(sql(CTX))?;
            }
            let mut taken: Vec<i64> = delivered
                .iter()
                .filter(|a| by_token && !forgot(a))
                .filter_map(|a| a.token.and_then(|t| i64::try_from(t).ok()))
                .collect();
            taken.sort_unstable();
            taken.dedup();
            let mut stmt = tx
                .prepare_cached("DELETE FROM pending_acks WHERE page_token = ?1")
                .map_err(sql(CTX))?;
            for t in taken {
                stmt.execute([t]).map_err(sql(CTX))?;
            }
            let mut stmt = tx
                .prepare_cached("UPDATE pending_acks SET page_token = NULL WHERE page_token = ?1")
                .map_err(sql(CTX))?;
            for t in forgotten.iter().filter_map(|&t| i64::try_from(t).ok()) {
                stmt.execute([t]).map_err(sql(CTX))?;
            }
        }
        tx.commit().map_err(sql(CTX))
    }

    /// Sets one state value.
    pub fn set_state(&self, key: &str, value: i64) -> Result<(), DbError> {
        self.commit_sync(&[], &[(key, value)], &[], super::NO_ASIDE)
    }
}

impl Db {
    /// After central was restored from a backup: forget what central had
    /// acknowledged, mark every record changed, reset the cursors, and
    /// acknowledge pending records by head rather than by page, in one
    /// transaction. Returns how many records will be pushed again.
    pub fn forget_central(&self) -> Result<u64, DbError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(sql("resetting sync state"))?;
        let n = tx
            .execute(
                "UPDATE records SET central_head = NULL, central_seq = NULL, dirty = 1,
                    changes = changes + 1, refused = NULL, refused_head = NULL",
                [],
            )
            .map_err(sql("resetting sync state"))?;
        tx.execute(
            "DELETE FROM state WHERE key IN ('pull_cursor', 'fetch_cursor', 'fetch_epoch')",
            [],
        )
        .map_err(sql("resetting sync state"))?;
        // A page's cursor may be past what the restored central numbered
        // (it would refuse the acknowledgement): acknowledge by head.
        tx.execute(
            "UPDATE pending_acks SET page_cursor = NULL, page_token = NULL",
            [],
        )
        .map_err(sql("resetting sync state"))?;
        tx.commit().map_err(sql("resetting sync state"))?;
        Ok(n as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_acknowledgements_keep_their_page_across_a_restart() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("s.sqlite");
        let (a, b) = (PatientId::random(), PatientId::random());
        {
            let db = Db::open(&path).expect("db");
            let acks = [
                PendingAck {
                    id: a,
                    head: CommitId([1; 20]),
                    page: Some(42),
                    token: Some(7),
                },
                PendingAck::by_head((b, CommitId([2; 20]))),
            ];
            db.commit_sync(&[], &[("fetch_cursor", 42)], &acks, super::super::NO_ASIDE)
                .expect("sync");
        }
        // As after a crash: what was committed is there, page and all.
        let db = Db::open(&path).expect("db");
        let mut pending = db.pending_acks(10).expect("pending");
        pending.sort_by_key(|p| p.page);
        assert_eq!(pending.len(), 2);
        assert_eq!(pending[0], PendingAck::by_head((b, CommitId([2; 20]))));
        assert_eq!(
            pending[1],
            PendingAck {
                id: a,
                head: CommitId([1; 20]),
                page: Some(42),
                token: Some(7),
            }
        );
        // A newer acknowledgement of the same record replaces it, page
        // and all; clearing the delivered (older) one leaves it.
        let newer = PendingAck::by_head((a, CommitId([3; 20])));
        db.commit_sync(&[], &[], &[newer], super::super::NO_ASIDE)
            .expect("sync");
        db.clear_acks(&pending, &[], true).expect("clear");
        assert_eq!(db.pending_acks(10).expect("pending"), vec![newer]);
        // After central was restored from a backup, by head only.
        let paged = PendingAck {
            id: b,
            head: CommitId([4; 20]),
            page: Some(9),
            token: Some(11),
        };
        db.commit_sync(&[], &[], &[paged], super::super::NO_ASIDE)
            .expect("sync");
        db.forget_central().expect("forget");
        assert!(
            db.pending_acks(10)
                .expect("pending")
                .iter()
                .all(|a| a.page.is_none() && a.token.is_none())
        );
    }

    /// A record of page `token` (its cursor 40 + `token`), acknowledged by
    /// the page.
    fn paged(token: u64) -> PendingAck {
        PendingAck {
            id: PatientId::random(),
            head: CommitId([token as u8; 20]),
            page: Some(40 + token),
            token: Some(token),
        }
    }

    #[test]
    fn pages_central_forgot_stay_pending_by_ids_and_pages_taken_go_whole() {
        let dir = tempfile::tempdir().expect("dir");
        let db = Db::open(&dir.path().join("s.sqlite")).expect("db");
        let ack = paged;
        // Pages 1 and 2, three records each; a record by head.
        let acks: Vec<PendingAck> = [1, 1, 1, 2, 2, 2].into_iter().map(ack).collect();
        let alone = PendingAck::by_head((PatientId::random(), CommitId([9; 20])));
        let mut all = acks.clone();
        all.push(alone);
        db.commit_sync(&[], &[], &all, super::super::NO_ASIDE)
            .expect("sync");
        // Delivered: one record of page 1 (the others did not fit), all of
        // page 2, the one by head; central forgot page 2.
        let delivered = [acks[0], acks[3], acks[4], acks[5], alone];
        db.clear_acks(&delivered, &[2], true).expect("clear");
        let mut left = db.pending_acks(10).expect("pending");
        left.sort_by_key(|a| a.page);
        // Page 1 went whole (central took it by its token); page 2 stays,
        // to be acknowledged by its ids.
        assert_eq!(left.len(), 3, "{left:?}");
        for a in &left {
            assert_eq!((a.page, a.token), (Some(42), None));
        }
        // Without tokens (an older central took the ids it was sent): only
        // what was delivered goes.
        let more: Vec<PendingAck> = [5, 5].into_iter().map(ack).collect();
        db.commit_sync(&[], &[], &more, super::super::NO_ASIDE)
            .expect("sync");
        db.clear_acks(&more[..1], &[], false).expect("clear");
        let left = db.pending_acks(10).expect("pending");
        assert!(left.contains(&more[1]) && !left.contains(&more[0]));
    }

    #[test]
    fn a_limited_read_of_acknowledgements_holds_every_page_acknowledged_by_token() {
        let dir = tempfile::tempdir().expect("dir");
        let db = Db::open(&dir.path().join("s.sqlite")).expect("db");
        let ack = paged;
        // Three pages of five records, and three records by head.
        let mut all: Vec<PendingAck> = [1, 2, 3]
            .into_iter()
            .flat_map(|t| std::iter::repeat_n(t, 5))
            .map(ack)
            .collect();
        for n in 0..3 {
            all.push(PendingAck::by_head((
                PatientId::random(),
                CommitId([9 + n; 20]),
            )));
        }
        db.commit_sync(&[], &[], &all, super::super::NO_ASIDE)
            .expect("sync");
        // Four fit: a record of each page first, then one more.
        let read = db.pending_acks(4).expect("pending");
        assert_eq!(read.len(), 4);
        let mut tokens: Vec<Option<u64>> = read[..3].iter().map(|a| a.token).collect();
        tokens.sort_unstable();
        assert_eq!(tokens, vec![Some(1), Some(2), Some(3)], "{read:?}");
        // Delivered by token, the three pages go whole; what is left is
        // the records by head that were not read.
        db.clear_acks(&read, &[], true).expect("clear");
        let mut left = db.pending_acks(10).expect("pending");
        let mut want: Vec<PendingAck> = all[15..]
            .iter()
            .filter(|a| !read.contains(a))
            .copied()
            .collect();
        left.sort_by_key(|a| a.id);
        want.sort_by_key(|a| a.id);
        assert_eq!(left, want);
    }
}

#[cfg(test)]
mod upgrade_tests {
    use super::*;
    use rusqlite::Connection;

    /// Opens a database migrated only up to `version`.
    fn open_at(path: &std::path::Path, version: u32) -> Connection {
        let mut conn = Connection::open(path).expect("open");
        let older: Vec<_> = super::super::MIGRATIONS
            .iter()
            .filter(|m| m.version <= version)
            .copied()
            .collect();
        chartsync_common::sqlite::migrate(&mut conn, &older).expect("migrate");
        conn
    }

    #[test]
    fn a_satellite_upgraded_with_records_looks_at_every_record_of_its_next_pull_once() {
        let dir = tempfile::tempdir().expect("dir");
        let (held, empty) = (
            dir.path().join("held.sqlite"),
            dir.path().join("empty.sqlite"),
        );
        open_at(&held, 5)
            .execute(
                "INSERT INTO records (patient, dirty) VALUES (?1, 0)",
                params![&PatientId::random().as_bytes()[..]],
            )
            .expect("record");
        drop(open_at(&empty, 5));
        assert_eq!(
            Db::open(&held)
                .expect("db")
                .state("pull_checks_all")
                .expect("state"),
            1
        );
        // A new satellite, or one that held nothing, never does.
        assert_eq!(
            Db::open(&empty)
                .expect("db")
                .state("pull_checks_all")
                .expect("state"),
            0
        );
        let fresh = dir.path().join("fresh.sqlite");
        assert_eq!(
            Db::open(&fresh)
                .expect("db")
                .state("pull_checks_all")
                .expect("state"),
            0
        );
    }
}
