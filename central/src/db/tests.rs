//! Conformance tests every backend passes.
//!
//! Each `suite_*` function takes a fresh, empty database of any backend;
//! the `sqlite` module below runs them all against [`SqliteDb`] in a
//! temporary folder (a PostgreSQL backend adds the same wrappers). Tests
//! that need SQLite itself (raw SQL, query plans) are in
//! `sqlite/tests.rs`.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chartsync_protocol::{CommitId, PatientId};

use super::*;

/// A new, unique commit id.
pub(crate) fn new_commit() -> CommitId {
    let mut bytes = [0u8; 20];
    bytes[..16].copy_from_slice(PatientId::random().as_bytes());
    CommitId(bytes)
}

/// A token hash unique to `n`.
pub(crate) fn token(n: u32) -> [u8; 32] {
    let mut hash = [0u8; 32];
    hash[..4].copy_from_slice(&n.to_be_bytes());
    hash
}

pub(crate) fn new_instance(
    id: Option<u32>,
    name: &str,
    catchments: &[&str],
    token_n: u32,
) -> NewInstance {
    NewInstance {
        id,
        name: name.to_owned(),
        catchments: catchments.iter().map(|c| (*c).to_owned()).collect(),
        token_hash: token(token_n),
    }
}

/// A change creating `id`.
pub(crate) fn create(
    id: PatientId,
    head: CommitId,
    catchment: Option<&str>,
    by: Option<u32>,
) -> HeadChange {
    HeadChange {
        id,
        old: None,
        new: head,
        catchment: catchment.map(str::to_owned),
        by,
        staging: Some(format!("staging/{id}")),
    }
}

/// A change moving `id` from `old` to `new`.
pub(crate) fn update(
    id: PatientId,
    old: CommitId,
    new: CommitId,
    catchment: Option<&str>,
    by: Option<u32>,
) -> HeadChange {
    HeadChange {
        id,
        old: Some(old),
        new,
        catchment: catchment.map(str::to_owned),
        by,
        staging: None,
    }
}

/// The sequence number of an accepted change.
pub(crate) fn seq_of(applied: &Applied) -> Seq {
    match applied {
        Applied::Ok { seq, .. } => *seq,
        Applied::Stale { current } => {
            panic!("expected the change accepted, it was stale at {current:?}")
        }
    }
}

async fn apply_one<D: CentralDb>(db: &D, change: HeadChange) -> Applied {
    let mut out = db.apply(&[change]).await.expect("apply");
    assert_eq!(out.len(), 1);
    out.remove(0)
}

async fn row<D: CentralDb>(db: &D, id: PatientId) -> RecordRow {
    db.records(&[id])
        .await
        .expect("records")
        .remove(0)
        .expect("the record exists")
}

/// Instance registration: unique ids, the lowest free one, token look-up.
pub(crate) async fn suite_instances<D: CentralDb>(db: &D) {
    let one = db
        .add_instance(new_instance(Some(1), "one", &["north", "east"], 1))
        .await
        .expect("add 1");
    assert_eq!(one.id, 1);
    assert_eq!(one.catchments, vec!["north", "east"]);
    assert!(!one.revoked);
    let mut ids = Vec::new();
    for n in 2..=4 {
        ids.push(
            db.add_instance(new_instance(None, &format!("auto-{n}"), &["south"], n))
                .await
                .expect("add")
                .id,
        );
    }
    assert_eq!(ids, vec![0, 2, 3], "the lowest free ids, in turn");
    assert!(matches!(
        db.add_instance(new_instance(Some(2), "again", &[], 10))
            .await,
        Err(DbError::IdTaken(2))
    ));
    assert_eq!(
        db.add_instance(new_instance(Some(6), "six", &[], 11))
            .await
            .expect("add 6")
            .id,
        6
    );
    assert_eq!(
        db.add_instance(new_instance(None, "four", &[], 12))
            .await
            .expect("add")
            .id,
        4
    );
    assert_eq!(
        db.add_instance(new_instance(None, "five", &[], 13))
            .await
            .expect("add")
            .id,
        5
    );
    assert_eq!(
        db.add_instance(new_instance(None, "seven", &[], 14))
            .await
            .expect("add")
            .id,
        7
    );
    for id in [1023, MAX_INSTANCE_ID] {
        assert_eq!(
            db.add_instance(new_instance(Some(id), &format!("high-{id}"), &[], id))
                .await
                .expect("high")
                .id,
            id
        );
    }
    assert!(matches!(
        db.add_instance(new_instance(Some(MAX_INSTANCE_ID + 1), "too high", &[], 20)).await,
        Err(DbError::IdOutOfRange(id)) if id == MAX_INSTANCE_ID + 1
    ));
    // The same token hash twice is refused.
    assert!(
        db.add_instance(new_instance(None, "copy", &[], 1))
            .await
            .is_err()
    );

    let found = db
        .instance_by_token(token(1))
        .await
        .expect("lookup")
        .expect("found");
    assert_eq!(found, one);
    assert!(
        db.instance_by_token(token(999))
            .await
            .expect("lookup")
            .is_none()
    );

    let all = db.instances().await.expect("instances");
    let all_ids: Vec<u32> = all.iter().map(|i| i.id).collect();
    assert_eq!(all_ids, vec![0, 1, 2, 3, 4, 5, 6, 7, 1023, MAX_INSTANCE_ID]);
    assert_eq!(all[1], one);
    assert_eq!(all[0].catchments, vec!["south"]);
    assert!(all.iter().all(|i| !i.revoked && i.scope_epoch >= 1));
    assert!(all.iter().all(|i| i.last_seen.is_none()));
    // Names are unique: the instance that has one is named in the error.
    assert!(matches!(
        db.add_instance(new_instance(None, "one", &[], 30)).await,
        Err(DbError::NameTaken { name, id: 1 }) if name == "one"
    ));
}

/// Revoking, new tokens, last seen, and the version servers poll.
pub(crate) async fn suite_instance_admin<D: CentralDb>(db: &D) {
    let v0 = db.instances_version().await.expect("version");
    let north = db
        .add_instance(new_instance(None, "north", &["north"], 1))
        .await
        .expect("add north");
    let south = db
        .add_instance(new_instance(None, "south", &["south"], 2))
        .await
        .expect("add south");
    let v1 = db.instances_version().await.expect("version");
    assert_ne!(v1, v0, "adding moves the version");

    // Last seen: stored, never moved backwards, not a version change.
    db.touch_instance(north.id, 1_700_000_100)
        .await
        .expect("touch");
    db.touch_instance(north.id, 1_700_000_000)
        .await
        .expect("touch older");
    db.touch_instance(60_000, 1_700_000_000)
        .await
        .expect("unknown ids are ignored");
    let seen = db
        .instances()
        .await
        .expect("instances")
        .into_iter()
        .find(|i| i.id == north.id)
        .expect("north");
    assert_eq!(seen.last_seen, Some(1_700_000_100));
    assert_eq!(db.instances_version().await.expect("version"), v1);

    // A new token: the old one finds nothing, the new one finds it.
    let rotated = db.rotate_token(north.id, token(11)).await.expect("rotate");
    assert_eq!(rotated.id, north.id);
    assert!(db.instance_by_token(token(1)).await.expect("old").is_none());
    assert_eq!(
        db.instance_by_token(token(11))
            .await
            .expect("new")
            .expect("found")
            .id,
        north.id
    );
    let v2 = db.instances_version().await.expect("version");
    assert_ne!(v2, v1, "a new token moves the version");

    // Revoked: the token finds nothing, it stays listed, its name stays
    // taken, a second revocation changes nothing, and it gets no new token.
    let revoked = db.revoke_instance(south.id).await.expect("revoke");
    assert!(revoked.revoked);
    assert!(
        db.instance_by_token(token(2))
            .await
            .expect("lookup")
            .is_none()
    );
    let v3 = db.instances_version().await.expect("version");
    assert_ne!(v3, v2, "revoking moves the version");
    assert!(db.revoke_instance(south.id).await.expect("again").revoked);
    assert_eq!(db.instances_version().await.expect("version"), v3);
    assert!(matches!(
        db.rotate_token(south.id, token(12)).await,
        Err(DbError::Revoked { id }) if id == south.id
    ));
    assert!(
        db.instance_by_token(token(12))
            .await
            .expect("lookup")
            .is_none()
    );
    assert!(matches!(
        db.add_instance(new_instance(None, "south", &[], 13)).await,
        Err(DbError::NameTaken { id, .. }) if id == south.id
    ));
    let listed = db.instances().await.expect("instances");
    assert!(listed.iter().any(|i| i.id == south.id && i.revoked));
    assert!(listed.iter().any(|i| i.id == north.id && !i.revoked));

    // Unknown ids.
    assert!(matches!(
        db.revoke_instance(999).await,
        Err(DbError::NoSuchInstance { id: 999 })
    ));
    assert!(matches!(
        db.rotate_token(999, token(14)).await,
        Err(DbError::NoSuchInstance { id: 999 })
    ));
}

/// Leases: exclusive, renewable by their holder, freed by expiry or unlock.
pub(crate) async fn suite_locks<D: CentralDb>(db: &D) {
    let long = Duration::from_secs(30);
    let [p1, p2, p3, p4] = [(); 4].map(|_| PatientId::random());
    assert!(db.try_lock(&[], "a", long).await.expect("empty").is_empty());
    assert_eq!(
        db.try_lock(&[p1, p2], "a", long).await.expect("lock"),
        vec![true, true]
    );
    assert_eq!(
        db.try_lock(&[p1], "b", long).await.expect("lock"),
        vec![false]
    );
    // Re-entrant: the holder renews its lease.
    assert_eq!(
        db.try_lock(&[p1, p1], "a", long).await.expect("renew"),
        vec![true, true]
    );
    // Unlocking releases only one's own leases.
    db.unlock(&[p1, p2], "b").await.expect("unlock");
    assert_eq!(
        db.try_lock(&[p1], "b", long).await.expect("lock"),
        vec![false]
    );
    db.unlock(&[p1], "a").await.expect("unlock");
    assert_eq!(
        db.try_lock(&[p1], "b", long).await.expect("lock"),
        vec![true]
    );
    // A dead holder's leases go all at once, others' stay.
    let mut holders = db.lease_holders().await.expect("holders");
    holders.sort();
    assert_eq!(holders, vec!["a".to_string(), "b".to_string()]);
    db.try_lock(&[p4], "dead", long).await.expect("lock");
    assert_eq!(db.release_leases_of("dead").await.expect("release"), 1);
    assert_eq!(
        db.try_lock(&[p4], "b", long).await.expect("lock"),
        vec![true]
    );
    db.unlock(&[p4], "b").await.expect("unlock");
    // Mixed: p1 is b's, p2 is a's, p3 is free.
    assert_eq!(
        db.try_lock(&[p1, p2, p3], "a", long).await.expect("lock"),
        vec![false, true, true]
    );
    assert_eq!(
        db.try_lock(&[p3, p1, p2], "b", long).await.expect("lock"),
        vec![false, true, false]
    );
    // Expiry frees a lease.
    assert_eq!(
        db.try_lock(&[p4], "c", Duration::from_millis(200))
            .await
            .expect("lock"),
        vec![true]
    );
    assert_eq!(
        db.try_lock(&[p4], "d", long).await.expect("lock"),
        vec![false]
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        db.try_lock(&[p4], "d", long).await.expect("lock"),
        vec![true]
    );
    assert_eq!(
        db.try_lock(&[p4], "c", long).await.expect("lock"),
        vec![false]
    );
    db.unlock(&[p4], "d").await.expect("unlock");
    assert_eq!(
        db.try_lock(&[p4], "c", long).await.expect("lock"),
        vec![true]
    );
}

/// Accepting heads: create, compare-and-swap, stale changes, sequence
/// numbers, the change log, holders and grants.
pub(crate) async fn suite_apply<D: CentralDb>(db: &D) {
    for (id, name) in [(1, "one"), (2, "two")] {
        db.add_instance(new_instance(Some(id), name, &["north"], id))
            .await
            .expect("add");
    }
    let before = chrono::Utc::now().timestamp();
    let p = PatientId::random();
    let unknown = PatientId::random();
    let (h1, h2, h3, h4, h5) = (
        new_commit(),
        new_commit(),
        new_commit(),
        new_commit(),
        new_commit(),
    );
    let mut seqs = Vec::new();

    let created = apply_one(db, create(p, h1, Some("north"), Some(1))).await;
    let Applied::Ok { seq: s1, time } = created else {
        panic!("creation refused: {created:?}")
    };
    assert!(time >= before && time <= chrono::Utc::now().timestamp());
    seqs.push(s1);
    let rows = db.records(&[p, unknown]).await.expect("records");
    let r = rows[0].clone().expect("created");
    assert!(rows[1].is_none());
    assert_eq!((r.id, r.head, r.seq), (p, h1, s1));
    assert_eq!(r.catchment.as_deref(), Some("north"));
    assert_eq!(r.created_by, Some(1));
    assert_eq!(r.holders.iter().collect::<Vec<_>>(), vec![1]);
    assert_eq!(r.updated_at, time);
    assert!(
        db.has_grant(1, &p).await.expect("grant"),
        "a creator gets a grant"
    );
    assert!(!db.has_grant(2, &p).await.expect("grant"));

    // Compare-and-swap update by another instance: it becomes a holder.
    let s2 = seq_of(&apply_one(db, update(p, h1, h2, Some("north"), Some(2))).await);
    seqs.push(s2);
    let r = row(db, p).await;
    assert_eq!((r.head, r.seq, r.created_by), (h2, s2, Some(1)));
    assert_eq!(r.holders.iter().collect::<Vec<_>>(), vec![1, 2]);
    assert!(
        !db.has_grant(2, &p).await.expect("grant"),
        "same catchment: no grant"
    );

    // Stale: reported with the current head, no sequence number used.
    let seq_before = db.counts().await.expect("counts").seq;
    assert_eq!(
        apply_one(db, update(p, h1, h3, Some("north"), Some(1))).await,
        Applied::Stale { current: Some(h2) }
    );
    assert_eq!(
        apply_one(db, create(p, h3, Some("north"), Some(1))).await,
        Applied::Stale { current: Some(h2) },
        "creating an existing record is stale"
    );
    assert_eq!(
        apply_one(db, update(unknown, h1, h3, None, None)).await,
        Applied::Stale { current: None }
    );
    assert_eq!(db.counts().await.expect("counts").seq, seq_before);
    assert_eq!(row(db, p).await.head, h2);

    // A batch: the stale one is skipped, the rest numbered in order, and a
    // change may build on the one before it in the same batch.
    let q = PatientId::random();
    let out = db
        .apply(&[
            create(q, h1, None, None),
            update(p, h1, h5, None, None),
            update(p, h2, h3, Some("north"), None),
            update(p, h3, h4, Some("north"), Some(1)),
        ])
        .await
        .expect("batch");
    assert_eq!(out[1], Applied::Stale { current: Some(h2) });
    let (sq, s3, s4) = (seq_of(&out[0]), seq_of(&out[2]), seq_of(&out[3]));
    seqs.extend([sq, s3, s4]);
    let r = row(db, q).await;
    assert_eq!(
        (r.created_by, r.holders.iter().count()),
        (None, 0),
        "HQ holds nothing"
    );

    // Sequence numbers: gap-free and increasing across calls.
    for pair in seqs.windows(2) {
        assert_eq!(pair[1], pair[0] + 1, "gap-free: {seqs:?}");
    }
    assert_eq!(db.counts().await.expect("counts").seq, s4);

    // The change log gives past heads.
    assert_eq!(db.head_at(&p, s1 - 1).await.expect("head_at"), None);
    assert_eq!(db.head_at(&p, s1).await.expect("head_at"), Some(h1));
    assert_eq!(db.head_at(&p, s2).await.expect("head_at"), Some(h2));
    assert_eq!(db.head_at(&p, sq).await.expect("head_at"), Some(h2));
    assert_eq!(db.head_at(&p, s3).await.expect("head_at"), Some(h3));
    assert_eq!(db.head_at(&p, Seq::MAX).await.expect("head_at"), Some(h4));
    assert_eq!(db.head_at(&unknown, Seq::MAX).await.expect("head_at"), None);
    assert_eq!(
        db.heads_at(&[p, unknown, p], s2).await.expect("heads_at"),
        vec![Some(h2), None, Some(h2)]
    );
    assert_eq!(db.first_head(&p).await.expect("first_head"), Some(h1));
    assert_eq!(db.first_head(&unknown).await.expect("first_head"), None);
    assert_eq!(
        db.first_heads(&[p, unknown, p]).await.expect("first_heads"),
        vec![Some(h1), None, Some(h1)]
    );

    // A catchment change grants the record to every holder.
    let s5 = seq_of(&apply_one(db, update(p, h4, h5, Some("south"), None)).await);
    assert_eq!(s5, s4 + 1);
    assert!(db.has_grant(1, &p).await.expect("grant"));
    assert!(
        db.has_grant(2, &p).await.expect("grant"),
        "held when its catchment moved"
    );
    let r = row(db, p).await;
    assert_eq!(r.catchment.as_deref(), Some("south"));
    assert_eq!(r.holders.iter().collect::<Vec<_>>(), vec![1, 2]);
}

/// Pending refs: one per record at its latest head; cleared only at that
/// head; a record still in staging keeps its staging folder.
/// History in the database (PostgreSQL) or none (SQLite): each accepted
/// change's pack after its predecessor's, and the whole pack of a record
/// whose history is its creation alone.
pub(crate) async fn suite_history<D: CentralDb>(db: &D) {
    let (fresh, edited, unknown) = (
        PatientId::random(),
        PatientId::random(),
        PatientId::random(),
    );
    let (h1, h2, h3) = (new_commit(), new_commit(), new_commit());
    let accepted = db
        .apply_with_history(
            &[
                create(fresh, h1, Some("north"), None),
                create(edited, h2, Some("north"), None),
            ],
            &[b"pack one".to_vec(), b"pack two".to_vec()],
        )
        .await
        .expect("create");
    assert!(accepted.iter().all(|a| matches!(a, Applied::Ok { .. })));
    let moved = db
        .apply_with_history(
            &[update(edited, h2, h3, Some("north"), None)],
            &[b"pack three".to_vec()],
        )
        .await
        .expect("edit");
    assert!(matches!(moved[0], Applied::Ok { .. }));
    let whole = db
        .whole_packs(&[fresh, edited, unknown])
        .await
        .expect("whole packs");
    assert_eq!(whole.len(), 3);
    if db.keeps_history() {
        assert_eq!(whole[0], Some((h1, b"pack one".to_vec())));
        assert_eq!(whole[1], None, "two changes: not one whole pack");
        assert_eq!(whole[2], None);
        assert_eq!(
            db.history_after(&edited, None).await.expect("history"),
            [(h2, b"pack two".to_vec()), (h3, b"pack three".to_vec())]
        );
        assert_eq!(
            db.history_after(&edited, Some(h2)).await.expect("history"),
            [(h3, b"pack three".to_vec())]
        );
    } else {
        assert!(whole.iter().all(Option::is_none));
        assert!(
            db.history_after(&edited, None)
                .await
                .expect("history")
                .is_empty()
        );
    }
    assert!(db.whole_packs(&[]).await.expect("none asked").is_empty());
}

pub(crate) async fn suite_ref_pending<D: CentralDb>(db: &D) {
    let (p, q) = (PatientId::random(), PatientId::random());
    let (h1, h2, h3) = (new_commit(), new_commit(), new_commit());
    db.apply(&[create(p, h1, None, None), create(q, h1, None, None)])
        .await
        .expect("create");
    let pending = |list: Vec<RefPending>| -> HashMap<PatientId, (CommitId, Option<String>)> {
        list.into_iter()
            .map(|r| (r.id, (r.head, r.staging)))
            .collect()
    };
    let now = pending(db.ref_pending().await.expect("pending"));
    assert_eq!(now.len(), 2);
    assert_eq!(now[&p], (h1, Some(format!("staging/{p}"))));

    seq_of(&apply_one(db, update(p, h1, h2, None, None)).await);
    let now = pending(db.ref_pending().await.expect("pending"));
    assert_eq!(
        now[&p],
        (h2, Some(format!("staging/{p}"))),
        "latest head, staging kept"
    );

    // Clearing at an older head keeps the newer pending head.
    db.clear_ref_pending(&[(p, h1), (q, h3)])
        .await
        .expect("clear");
    assert_eq!(pending(db.ref_pending().await.expect("pending")).len(), 2);
    db.clear_ref_pending(&[(p, h2)]).await.expect("clear");
    let now = pending(db.ref_pending().await.expect("pending"));
    assert_eq!(now.keys().collect::<Vec<_>>(), vec![&q]);
    db.clear_ref_pending(&[(q, h1)]).await.expect("clear");
    assert!(db.ref_pending().await.expect("pending").is_empty());
    // A later change is pending again, without a staging folder.
    seq_of(&apply_one(db, update(p, h2, h3, None, None)).await);
    assert_eq!(
        db.ref_pending().await.expect("pending"),
        vec![RefPending {
            id: p,
            head: h3,
            staging: None
        }]
    );
}

/// Grants: idempotent, per instance.
pub(crate) async fn suite_grants<D: CentralDb>(db: &D) {
    let p = PatientId::random();
    db.apply(&[create(p, new_commit(), None, None)])
        .await
        .expect("create");
    assert!(!db.has_grant(3, &p).await.expect("has"));
    db.grant(3, &p, "fetched").await.expect("grant");
    db.grant(3, &p, "held").await.expect("grant again");
    assert!(db.has_grant(3, &p).await.expect("has"));
    assert!(!db.has_grant(4, &p).await.expect("has"));
    assert!(!db.has_grant(3, &PatientId::random()).await.expect("has"));
}

/// Holders: set per instance, idempotent, unknown records ignored.
pub(crate) async fn suite_add_holder<D: CentralDb>(db: &D) {
    let p = PatientId::random();
    let head = new_commit();
    db.apply(&[create(p, head, None, Some(2))])
        .await
        .expect("create");
    let seq = row(db, p).await.seq;
    db.add_holder(5, &[p, PatientId::random()])
        .await
        .expect("holder");
    let r = row(db, p).await;
    assert_eq!(r.holders.iter().collect::<Vec<_>>(), vec![2, 5]);
    assert_eq!(
        r.holders.to_bytes(),
        vec![0b0010_0100],
        "one byte, bits 2 and 5"
    );
    db.add_holder(5, &[p]).await.expect("again");
    db.add_holder(1023, &[p]).await.expect("high");
    db.add_holder(9, &[p]).await.expect("within the bytes");
    let r = row(db, p).await;
    assert_eq!(r.holders.iter().collect::<Vec<_>>(), vec![2, 5, 9, 1023]);
    // Stored compactly: the bytes read back are exactly the trimmed ones
    // (a trailing zero byte would make a longer bit string).
    let mut expected = Holders::default();
    for i in [2, 5, 9, 1023] {
        expected.insert(i);
    }
    assert_eq!(r.holders, Holders::from_bytes(&expected.to_bytes()));
    assert_eq!((r.head, r.seq), (head, seq), "holding is not a change");
    assert!(db.add_holder(MAX_INSTANCE_ID + 1, &[p]).await.is_err());
}

/// Fetch-new pages kept for acknowledgement by token: per instance, the
/// ids in order, a token replaced when recorded again, dropped when
/// acknowledged, forgotten by age; tokens never given out are unknown.
pub(crate) async fn suite_fetch_pages<D: CentralDb>(db: &D) {
    let ids: Vec<PatientId> = (0..1000).map(|_| PatientId::random()).collect();
    let (t1, t2) = (crate::db::pages::new_token(), crate::db::pages::new_token());
    db.record_page(3, t1, 40, &ids, 1_000)
        .await
        .expect("record");
    db.record_page(3, t2, 41, &ids[..2], 2_000)
        .await
        .expect("record");
    db.record_page(4, t2, 99, &ids[5..6], 2_000)
        .await
        .expect("another instance");
    let got = db
        .offered_pages(3, &[t2, t1, t1 ^ 1, 0, u64::MAX])
        .await
        .expect("offered");
    assert_eq!(got.len(), 5);
    assert_eq!(got[0], Some((41, ids[..2].to_vec())));
    assert_eq!(got[1], Some((40, ids.clone())), "1,000 ids, in order");
    assert_eq!(got[2..], [None, None, None], "tokens never given out");
    assert_eq!(
        db.offered_pages(4, &[t1, t2]).await.expect("offered"),
        vec![None, Some((99, ids[5..6].to_vec()))],
        "an instance sees only its own pages"
    );
    // Recorded again under the same token: replaced.
    db.record_page(3, t2, 45, &ids[7..8], 2_500)
        .await
        .expect("again");
    assert_eq!(
        db.offered_pages(3, &[t2]).await.expect("offered"),
        vec![Some((45, ids[7..8].to_vec()))]
    );
    // Acknowledged: dropped (the other instance's page stays).
    db.drop_pages(3, &[t2, u64::MAX]).await.expect("drop");
    assert_eq!(
        db.offered_pages(3, &[t2]).await.expect("offered"),
        vec![None]
    );
    assert!(db.offered_pages(4, &[t2]).await.expect("offered")[0].is_some());
    // By age: only those offered before the time given.
    assert_eq!(db.forget_pages(1_500).await.expect("forget"), 1);
    assert_eq!(
        db.offered_pages(3, &[t1]).await.expect("offered"),
        vec![None]
    );
    assert!(db.offered_pages(4, &[t2]).await.expect("offered")[0].is_some());
    assert!(
        db.record_page(3, 0, 1, &ids[..1], 1).await.is_err(),
        "token 0"
    );
    assert!(
        db.record_page(MAX_INSTANCE_ID + 1, t1, 1, &ids[..1], 1)
            .await
            .is_err()
    );
}

/// Totals.
pub(crate) async fn suite_counts<D: CentralDb>(db: &D) {
    assert_eq!(db.counts().await.expect("counts"), Counts::default());
    db.add_instance(new_instance(None, "a", &[], 1))
        .await
        .expect("add");
    db.add_instance(new_instance(None, "b", &[], 2))
        .await
        .expect("add");
    let p = PatientId::random();
    let h = new_commit();
    db.apply(&[
        create(p, h, None, None),
        create(PatientId::random(), h, None, None),
        create(p, h, None, None),
        update(p, h, new_commit(), None, None),
    ])
    .await
    .expect("apply");
    let counts = db.counts().await.expect("counts");
    assert_eq!(
        counts,
        Counts {
            records: 2,
            instances: 2,
            seq: 3
        }
    );
}

/// Scope: catchments and grants, once each, by sequence number, nothing
/// outside it.
pub(crate) async fn suite_scope<D: CentralDb>(db: &D) {
    let a = db
        .add_instance(new_instance(None, "a", &["north", "east"], 1))
        .await
        .expect("a");
    let b = db
        .add_instance(new_instance(None, "b", &["south"], 2))
        .await
        .expect("b");
    let [north, east, south, west, granted, mine, nowhere] = [(); 7].map(|_| PatientId::random());
    let h = new_commit();
    let out = db
        .apply(&[
            create(north, h, Some("north"), None),
            create(east, h, Some("east"), None),
            create(south, h, Some("south"), None),
            create(west, h, Some("west"), None),
            create(granted, h, Some("west"), None),
            create(mine, h, Some("north"), Some(a.id)),
            create(nowhere, h, None, None),
        ])
        .await
        .expect("apply");
    db.grant(a.id, &granted, "fetched").await.expect("grant");
    let ids = |rows: &[RecordRow]| rows.iter().map(|r| r.id).collect::<Vec<_>>();

    let seen = db.scope_changes(&a, 0, 100).await.expect("scope");
    assert_eq!(
        ids(&seen),
        vec![north, east, granted, mine],
        "by seq, each once"
    );
    assert!(seen.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(seen[3], row(db, mine).await);
    assert_eq!(
        ids(&db.scope_changes(&b, 0, 100).await.expect("scope")),
        vec![south]
    );
    assert_eq!(
        ids(&db.scope_changes(&a, 0, 2).await.expect("limit")),
        vec![north, east]
    );
    assert!(db.scope_changes(&a, 0, 0).await.expect("zero").is_empty());
    let last = seq_of(&out[6]);
    assert!(
        db.scope_changes(&a, last, 100)
            .await
            .expect("after")
            .is_empty()
    );
    assert!(
        db.scope_changes(&a, Seq::MAX, 100)
            .await
            .expect("far")
            .is_empty()
    );

    // Changes move records to the end; out-of-scope ones never show.
    let h2 = new_commit();
    db.apply(&[
        update(west, h, h2, Some("west"), None),
        update(east, h, h2, Some("east"), None),
        update(granted, h, h2, Some("west"), None),
        update(nowhere, h, h2, None, None),
    ])
    .await
    .expect("apply");
    assert_eq!(
        ids(&db.scope_changes(&a, last, 100).await.expect("after")),
        vec![east, granted]
    );
    assert_eq!(
        ids(&db.scope_changes(&a, 0, 100).await.expect("all")),
        vec![north, mine, east, granted]
    );
    // A catchment listed twice changes nothing.
    let twice = Instance {
        catchments: vec!["north".into(), "north".into()],
        ..a.clone()
    };
    assert_eq!(
        ids(&db.scope_changes(&twice, 0, 100).await.expect("twice")),
        vec![north, mine, granted]
    );
}

/// Paging with a cursor visits every in-scope record exactly once.
pub(crate) async fn suite_scope_paging<D: CentralDb>(db: &D) {
    let a = db
        .add_instance(new_instance(None, "a", &["c0", "c1"], 1))
        .await
        .expect("a");
    let catchments = ["c0", "c1", "c2", "c3", "c4"];
    let mut heads = HashMap::new();
    let mut in_scope = BTreeSet::new();
    let mut changes = Vec::new();
    for n in 0..300 {
        let id = PatientId::random();
        let c = catchments[n % catchments.len()];
        let by = (n % 11 == 0).then_some(a.id);
        if n % 5 < 2 || by.is_some() || n % 7 == 0 {
            in_scope.insert(id);
        }
        let h = new_commit();
        heads.insert(id, h);
        changes.push(create(id, h, Some(c), by));
    }
    db.apply(&changes).await.expect("create");
    for (n, change) in changes.iter().enumerate() {
        if n % 7 == 0 {
            db.grant(a.id, &change.id, "fetched").await.expect("grant");
        }
    }

    async fn pages<D: CentralDb>(
        db: &D,
        a: &Instance,
        mut cursor: Seq,
        limit: usize,
    ) -> (Vec<PatientId>, Seq) {
        let mut seen = Vec::new();
        loop {
            let page = db.scope_changes(a, cursor, limit).await.expect("page");
            assert!(page.len() <= limit);
            for r in &page {
                assert!(r.seq > cursor, "ordered by seq");
                cursor = r.seq;
                seen.push(r.id);
            }
            if page.len() < limit {
                return (seen, cursor);
            }
        }
    }
    async fn page_all<D: CentralDb>(db: &D, a: &Instance, cursor: Seq) -> (Vec<PatientId>, Seq) {
        pages(db, a, cursor, 17).await
    }
    let (seen, cursor) = page_all(db, &a, 0).await;
    assert_eq!(seen.len(), in_scope.len(), "each once");
    assert_eq!(seen.iter().copied().collect::<BTreeSet<_>>(), in_scope);
    // Small pages and large ones (a backend may read the grants from the
    // grants or from the changes, by what the page size makes cheaper)
    // give the same walk.
    for limit in [1, 3, 1000] {
        assert_eq!(
            pages(db, &a, 0, limit).await,
            (seen.clone(), cursor),
            "pages of {limit}"
        );
    }

    // Update every third record: the next pages bring exactly the
    // updated in-scope ones.
    let mut updated = HashSet::new();
    let mut batch = Vec::new();
    for change in changes.iter().step_by(3) {
        let h = new_commit();
        batch.push(update(
            change.id,
            heads[&change.id],
            h,
            change.catchment.as_deref(),
            None,
        ));
        if in_scope.contains(&change.id) {
            updated.insert(change.id);
        }
    }
    db.apply(&batch).await.expect("update");
    let (seen, _) = page_all(db, &a, cursor).await;
    assert_eq!(seen.len(), updated.len());
    assert_eq!(seen.into_iter().collect::<HashSet<_>>(), updated);
}

/// Several handles (processes) applying at once: every change accepted
/// exactly once, with unique, gap-free sequence numbers, and every accepted
/// head kept in the change log.
pub(crate) async fn suite_concurrent_apply<D: CentralDb>(handles: Vec<Arc<D>>) {
    const TASKS_PER_HANDLE: usize = 4;
    const ROUNDS: usize = 15;
    let shared = PatientId::random();
    let first = new_commit();
    handles[0]
        .apply(&[create(shared, first, None, None)])
        .await
        .expect("create shared");

    let mut tasks = Vec::new();
    for (n, db) in handles.iter().enumerate() {
        for t in 0..TASKS_PER_HANDLE {
            let db = Arc::clone(db);
            tasks.push(tokio::spawn(async move {
                let by = Some((n * TASKS_PER_HANDLE + t) as u32);
                let mut accepted: Vec<(PatientId, CommitId, Seq)> = Vec::new();
                let mut own: Vec<(PatientId, CommitId)> = Vec::new();
                for _ in 0..ROUNDS {
                    // A batch of its own records: creations and updates.
                    let mut batch: Vec<HeadChange> = own
                        .iter()
                        .map(|(id, old)| update(*id, *old, new_commit(), None, by))
                        .collect();
                    batch.extend(
                        (0..3).map(|_| create(PatientId::random(), new_commit(), None, by)),
                    );
                    let out = db.apply(&batch).await.expect("apply");
                    own.clear();
                    for (change, applied) in batch.iter().zip(&out) {
                        let seq = seq_of(applied);
                        accepted.push((change.id, change.new, seq));
                        if own.len() < 5 {
                            own.push((change.id, change.new));
                        }
                    }
                    // A race on the shared record: retry until accepted.
                    loop {
                        let current = db.records(&[shared]).await.expect("read")[0]
                            .clone()
                            .expect("shared exists")
                            .head;
                        let new = new_commit();
                        match db
                            .apply(&[update(shared, current, new, None, by)])
                            .await
                            .expect("cas")[0]
                        {
                            Applied::Ok { seq, .. } => {
                                accepted.push((shared, new, seq));
                                break;
                            }
                            Applied::Stale { .. } => tokio::task::yield_now().await,
                        }
                    }
                }
                accepted
            }));
        }
    }
    let mut accepted = Vec::new();
    for task in tasks {
        accepted.extend(task.await.expect("task"));
    }
    let db = &handles[0];
    let mut seqs: Vec<Seq> = accepted.iter().map(|(_, _, s)| *s).collect();
    seqs.push(1);
    seqs.sort_unstable();
    let expected: Vec<Seq> = (1..=seqs.len() as Seq).collect();
    assert_eq!(seqs, expected, "unique and gap-free");
    assert_eq!(db.counts().await.expect("counts").seq, seqs.len() as Seq);
    for (id, head, seq) in &accepted {
        assert_eq!(
            db.head_at(id, *seq).await.expect("head_at").as_ref(),
            Some(head),
            "kept"
        );
    }
    let shared_edits = accepted.iter().filter(|(id, ..)| *id == shared).count();
    assert_eq!(shared_edits, handles.len() * TASKS_PER_HANDLE * ROUNDS);
    let last_shared = accepted
        .iter()
        .filter(|(id, ..)| *id == shared)
        .max_by_key(|(_, _, s)| *s);
    assert_eq!(
        Some(row(db.as_ref(), shared).await.head),
        last_shared.map(|(_, h, _)| *h)
    );
}

/// Batches of 1000: apply, try_lock and records stay fast.
pub(crate) async fn suite_batches_of_1000<D: CentralDb>(db: &D) {
    let ids: Vec<PatientId> = (0..1000).map(|_| PatientId::random()).collect();
    let heads: Vec<CommitId> = ids.iter().map(|_| new_commit()).collect();
    let creations: Vec<HeadChange> = ids
        .iter()
        .zip(&heads)
        .map(|(id, h)| create(*id, *h, Some("north"), Some(1)))
        .collect();
    let timed = Instant::now();
    let out = db.apply(&creations).await.expect("create");
    let create_time = timed.elapsed();
    assert!(out.iter().all(|a| matches!(a, Applied::Ok { .. })));
    let updates: Vec<HeadChange> = ids
        .iter()
        .zip(&heads)
        .map(|(id, h)| update(*id, *h, new_commit(), Some("south"), Some(2)))
        .collect();
    let timed = Instant::now();
    let out = db.apply(&updates).await.expect("update");
    let update_time = timed.elapsed();
    assert!(out.iter().all(|a| matches!(a, Applied::Ok { .. })));
    let timed = Instant::now();
    let locked = db
        .try_lock(&ids, "worker", Duration::from_secs(30))
        .await
        .expect("lock");
    let lock_time = timed.elapsed();
    assert!(locked.iter().all(|l| *l));
    let timed = Instant::now();
    let rows = db.records(&ids).await.expect("records");
    let read_time = timed.elapsed();
    assert!(
        rows.iter()
            .zip(&ids)
            .all(|(r, id)| r.as_ref().is_some_and(|r| r.id == *id))
    );
    let timed = Instant::now();
    db.unlock(&ids, "worker").await.expect("unlock");
    let unlock_time = timed.elapsed();
    println!(
        "1000 ids: apply create {create_time:?}, apply update (catchment move) {update_time:?}, \
         try_lock {lock_time:?}, records {read_time:?}, unlock {unlock_time:?}"
    );
    // Loose bounds (debug builds on busy machines): catch a per-row
    // transaction or a full scan, not a few milliseconds.
    for t in [create_time, update_time, lock_time, read_time, unlock_time] {
        assert!(t < Duration::from_secs(3), "a batch of 1000 took {t:?}");
    }
}

/// 100,000 records in 100 catchments, applied in batches of 1000; a
/// one-catchment instance then pulls quickly after a recent cursor.
/// Returns that instance.
pub(crate) async fn suite_scale<D: CentralDb>(db: &D) -> Instance {
    const BATCHES: usize = 100;
    const CATCHMENTS: usize = 100;
    let inst = db
        .add_instance(new_instance(None, "one-catchment", &["c42"], 1))
        .await
        .expect("add");
    let started = Instant::now();
    let mut granted = Vec::new();
    let mut batch_times = Vec::new();
    for b in 0..BATCHES {
        let batch: Vec<HeadChange> = (0..1000)
            .map(|n| {
                let c = format!("c{}", (b * 1000 + n) % CATCHMENTS);
                create(PatientId::random(), new_commit(), Some(&c), None)
            })
            .collect();
        let timed = Instant::now();
        let out = db.apply(&batch).await.expect("apply");
        let took = timed.elapsed();
        println!("batch {b:3}: 1000 creations in {took:?}");
        batch_times.push(took);
        assert!(out.iter().all(|a| matches!(a, Applied::Ok { .. })));
        if b % 10 == 0 {
            granted.push(batch[1].id);
        }
    }
    let total = started.elapsed();
    batch_times.sort();
    println!(
        "100,000 records in {total:?}; per batch of 1000: median {:?}, max {:?}",
        batch_times[BATCHES / 2],
        batch_times[BATCHES - 1]
    );
    for id in &granted {
        db.grant(inst.id, id, "fetched").await.expect("grant");
    }
    let counts = db.counts().await.expect("counts");
    assert_eq!(counts.records, 100_000);

    // A recent cursor: the last 5000 changes hold 50 of this catchment.
    let cursor = counts.seq - 5000;
    let timed = Instant::now();
    let page = db.scope_changes(&inst, cursor, 1000).await.expect("scope");
    let recent = timed.elapsed();
    assert_eq!(page.len(), 50);
    assert!(
        page.iter()
            .all(|r| r.catchment.as_deref() == Some("c42") && r.seq > cursor)
    );
    // From the start: its 1000 records and the 10 granted, in pages.
    let timed = Instant::now();
    let mut cursor = 0;
    let mut seen = 0;
    loop {
        let page = db.scope_changes(&inst, cursor, 1000).await.expect("scope");
        seen += page.len();
        match page.last() {
            Some(last) => cursor = last.seq,
            None => break,
        }
    }
    let full = timed.elapsed();
    assert_eq!(seen, 1000 + granted.len());
    println!(
        "scope_changes: 50 recent of 100,000 in {recent:?}; all 1010 in pages of 1000 in {full:?}"
    );
    assert!(
        recent < Duration::from_millis(500),
        "a recent pull took {recent:?}"
    );
    inst
}

/// Reports: the latest per instance and an hourly series pruned after
/// 15 days.
pub(crate) async fn suite_reports<D: CentralDb>(db: &D) {
    let report = |at: i64, pending: u64| SavedReport {
        instance: 7,
        at,
        report: format!("{{\"pending\":{pending}}}"),
        lag: pending * 2,
        pending,
        calls: 1,
        conflicts: 1,
    };
    let start = 1_800_000_000 / 3600 * 3600;
    db.save_report(report(start, 1)).await.expect("save");
    db.save_report(report(start + 60, 2)).await.expect("save");
    let rows = db.activity(0).await.expect("activity");
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].calls, rows[0].pending, rows[0].lag), (2, 2, 4));
    db.save_report(report(start + 20 * 86_400, 3))
        .await
        .expect("save");
    let rows = db.activity(0).await.expect("activity");
    assert_eq!(rows.len(), 1, "the hour 20 days back is pruned: {rows:?}");
    assert_eq!(rows[0].hour, (start + 20 * 86_400) / 3600);
    let latest = db.reports().await.expect("reports");
    assert_eq!(latest.len(), 1);
    assert_eq!(latest[0].report, "{\"pending\":3}");
    assert_eq!(
        (latest[0].lag, latest[0].pending, latest[0].conflicts),
        (6, 3, 1)
    );
}

/// The duplicate index: blocks at every level as ranges of the stored
/// keys, pairs by score, dismissals that stick, re-indexing that replaces,
/// the cursor.
pub(crate) async fn suite_duplicates<D: CentralDb>(db: &D) {
    let (a, b, c) = (
        PatientId::random(),
        PatientId::random(),
        PatientId::random(),
    );
    // Keys as chartsync_dedup makes them: a finer level is the coarser
    // one, a space, and more; a record is stored under its finest.
    let entry = |name: &str, keys: &[&str]| DuplicateEntry {
        person: chartsync_dedup::Person {
            given_name: Some(name.to_owned()),
            ..chartsync_dedup::Person::default()
        }
        .to_row(),
        keys: keys.iter().map(|k| (*k).to_owned()).collect(),
    };
    let pair = |x: PatientId, y: PatientId, score: f64| DuplicatePair {
        a: x,
        b: y,
        score,
        fields: "[]".to_owned(),
    };
    let key = |coarse: &str| DuplicateKey {
        coarse: coarse.to_owned(),
        fine: None,
        finest: None,
    };
    let key3 = |coarse: &str, fine: &str, finest: &str| DuplicateKey {
        coarse: coarse.to_owned(),
        fine: Some(format!("{coarse} {fine}")),
        finest: Some(format!("{coarse} {fine} {finest}")),
    };
    let ids = |found: &[(PatientId, String)]| found.iter().map(|(id, _)| *id).collect::<Vec<_>>();
    assert_eq!(db.duplicates_cursor().await.expect("cursor"), 0);
    db.index_duplicates(vec![
        DuplicateUpdate {
            id: a,
            seq: 3,
            entry: Some(entry("ann", &["n:ann a p", "p:1"])),
            pairs: vec![],
        },
        DuplicateUpdate {
            id: b,
            seq: 5,
            entry: Some(entry("anne", &["n:ann a q", "p:1"])),
            pairs: vec![pair(b, a, 0.9)],
        },
        DuplicateUpdate {
            id: c,
            seq: 4,
            // Starts like "n:ann" but is another block.
            entry: Some(entry("cy", &["n:anna b q", "n:ann!", "p:12"])),
            pairs: vec![pair(c, a, 0.5)],
        },
    ])
    .await
    .expect("index");
    assert_eq!(
        db.duplicates_cursor().await.expect("cursor"),
        5,
        "never backwards"
    );
    let found = db
        .duplicate_candidates(vec![key3("n:ann", "a", "q")], 10)
        .await
        .expect("candidates");
    assert_eq!(
        ids(&found).into_iter().collect::<BTreeSet<_>>(),
        BTreeSet::from([a, b])
    );
    let person = chartsync_dedup::Person::from_row(&found[0].1).expect("stored fields");
    assert!(matches!(person.given_name.as_deref(), Some("ann" | "anne")));
    // Each record once, whatever the number of blocks it shares.
    let found = db
        .duplicate_candidates(vec![key3("n:ann", "a", "q"), key("p:1")], 10)
        .await
        .expect("two blocks");
    assert_eq!(found.len(), 2);
    // The coarse block over the limit: its fine one is read instead; it
    // is over the limit too: the finest is read.
    let found = db
        .duplicate_candidates(vec![key3("n:ann", "a", "q")], 1)
        .await
        .expect("finest");
    assert_eq!(ids(&found), vec![b]);
    // A block over the limit is not searched, even when some of its
    // records were found through another key.
    let found = db
        .duplicate_candidates(vec![key3("n:ann", "a", "q"), key("p:1")], 1)
        .await
        .expect("over the limit");
    assert_eq!(ids(&found), vec![b]);
    // An empty block ends the search (every finer block is part of it).
    let found = db
        .duplicate_candidates(vec![key3("n:ann", "z", "q")], 1)
        .await
        .expect("empty fine");
    assert!(found.is_empty());
    let found = db
        .duplicate_candidates(vec![key("p:2"), key("n:an")], 10)
        .await
        .expect("nothing");
    assert!(found.is_empty());
    // Several records at once (enough to be shared among readers): each
    // as when asked alone, in order, also when a level found too large
    // for one record is met again.
    let plans: Vec<Vec<DuplicateKey>> = (0..6)
        .flat_map(|_| {
            [
                vec![key3("n:ann", "a", "q")],
                vec![key3("n:ann", "a", "q"), key("p:1")],
                vec![key("p:2"), key("n:an")],
                vec![],
            ]
        })
        .collect();
    for max_block in [1, 10] {
        let many = db
            .duplicate_candidates_many(plans.clone(), max_block)
            .await
            .expect("many");
        assert_eq!(many.len(), plans.len());
        for (keys, got) in plans.iter().zip(&many) {
            let alone = db
                .duplicate_candidates(keys.clone(), max_block)
                .await
                .expect("alone");
            let got: Vec<(PatientId, String)> =
                got.iter().map(|(id, f)| (id, f.to_owned())).collect();
            assert_eq!(got, alone, "{keys:?} at {max_block}");
        }
    }
    let pairs = db.duplicate_pairs(0.0, 0, 10).await.expect("pairs");
    assert_eq!(
        pairs.iter().map(|p| p.score).collect::<Vec<_>>(),
        vec![0.9, 0.5]
    );
    assert_eq!(
        db.duplicate_pairs(0.6, 0, 10).await.expect("pairs").len(),
        1
    );
    assert_eq!(
        db.duplicate_pairs(0.0, 1, 10).await.expect("offset").len(),
        1
    );
    // Dismissed: gone, and not stored again by re-indexing.
    db.dismiss_duplicate(&a, &b, 1).await.expect("dismiss");
    db.dismiss_duplicate(&b, &a, 2).await.expect("again");
    db.index_duplicates(vec![DuplicateUpdate {
        id: b,
        seq: 6,
        entry: Some(entry("anne", &["n:ann a q"])),
        pairs: vec![pair(a, b, 0.95)],
    }])
    .await
    .expect("reindex");
    let pairs = db.duplicate_pairs(0.0, 0, 10).await.expect("pairs");
    assert_eq!(pairs.len(), 1);
    assert!(pairs[0].a == c || pairs[0].b == c);
    // Re-indexing replaces the keys: b left the block "p:1".
    let found = db
        .duplicate_candidates(vec![key("p:1")], 10)
        .await
        .expect("gone");
    assert_eq!(ids(&found), vec![a]);
    // Blocks follow re-indexing: b leaves "n:ann", whose block is then
    // small enough to search.
    db.index_duplicates(vec![DuplicateUpdate {
        id: b,
        seq: 6,
        entry: Some(entry("anne", &["n:anne a q"])),
        pairs: vec![],
    }])
    .await
    .expect("reindex");
    let found = db
        .duplicate_candidates(vec![key3("n:ann", "a", "p")], 1)
        .await
        .expect("shrunk");
    assert_eq!(ids(&found), vec![a]);
    // Nothing identifying: out of every block and pair.
    db.index_duplicates(vec![DuplicateUpdate {
        id: c,
        seq: 7,
        entry: None,
        pairs: vec![],
    }])
    .await
    .expect("empty");
    assert!(
        db.duplicate_pairs(0.0, 0, 10)
            .await
            .expect("pairs")
            .is_empty()
    );
    let found = db
        .duplicate_candidates(vec![key("p:12"), key("n:anna")], 10)
        .await
        .expect("c gone");
    assert!(found.is_empty());
    assert_eq!(db.duplicates_cursor().await.expect("cursor"), 7);
}

/// A block found too large to search is read again once members left it
/// (a search may remember which blocks were too large), whichever handle
/// `write` took them out through (`search` and `write` may be one).
pub(crate) async fn suite_duplicate_blocks_shrink<D: CentralDb, E: CentralDb>(
    search: &D,
    write: &E,
) {
    let ids: Vec<PatientId> = (0..3).map(|_| PatientId::random()).collect();
    let update = |i: usize, seq: Seq, keys: Option<&[&str]>| DuplicateUpdate {
        id: ids[i],
        seq,
        entry: keys.map(|keys| DuplicateEntry {
            person: chartsync_dedup::Person {
                given_name: Some("ann".to_owned()),
                ..chartsync_dedup::Person::default()
            }
            .to_row(),
            keys: keys.iter().map(|k| (*k).to_owned()).collect(),
        }),
        pairs: vec![],
    };
    let plans = &vec![vec![DuplicateKey {
        coarse: "n:ann".to_owned(),
        fine: Some("n:ann b".to_owned()),
        finest: Some("n:ann b q".to_owned()),
    }]];
    let found = move || async move {
        let many = search
            .duplicate_candidates_many(plans.clone(), 2)
            .await
            .expect("candidates");
        many[0].iter().map(|(id, _)| id).collect::<BTreeSet<_>>()
    };
    write
        .index_duplicates(vec![
            update(0, 1, Some(&["n:ann a q"])),
            update(1, 2, Some(&["n:ann b q"])),
            update(2, 3, Some(&["n:ann b r"])),
        ])
        .await
        .expect("index");
    // "n:ann" holds three: its finer block is searched, twice.
    for _ in 0..2 {
        assert_eq!(found().await, BTreeSet::from([ids[1], ids[2]]));
    }
    // Indexed again with the same keys: the same.
    write
        .index_duplicates(vec![update(1, 4, Some(&["n:ann b q"]))])
        .await
        .expect("again");
    assert_eq!(found().await, BTreeSet::from([ids[1], ids[2]]));
    // One leaves: "n:ann" holds two and is searched whole.
    write
        .index_duplicates(vec![update(2, 5, Some(&["p:9"]))])
        .await
        .expect("leaves");
    assert_eq!(found().await, BTreeSet::from([ids[0], ids[1]]));
    // Back, then out for having nothing identifying.
    write
        .index_duplicates(vec![update(2, 6, Some(&["n:ann b r"]))])
        .await
        .expect("back");
    assert_eq!(found().await, BTreeSet::from([ids[1], ids[2]]));
    write
        .index_duplicates(vec![update(0, 7, None)])
        .await
        .expect("empty");
    assert_eq!(found().await, BTreeSet::from([ids[1], ids[2]]));
    write
        .index_duplicates(vec![update(2, 8, None)])
        .await
        .expect("empty");
    assert_eq!(found().await, BTreeSet::from([ids[1]]));
}

/// A dump loaded into another (empty) database reads back the same;
/// loading into a database that is not empty is refused.
pub(crate) async fn suite_dump_load<D: CentralDb, E: CentralDb>(from: &D, to: &E) {
    let inst = from
        .add_instance(new_instance(Some(3), "north", &["north", "hills"], 3))
        .await
        .expect("add");
    from.revoke_instance(3).await.expect("revoke");
    from.add_instance(new_instance(None, "south", &["south"], 4))
        .await
        .expect("add");
    let p = PatientId::random();
    let (h1, h2) = (new_commit(), new_commit());
    from.apply(&[create(p, h1, Some("north"), Some(inst.id))])
        .await
        .expect("create");
    from.apply(&[update(p, h1, h2, Some("south"), Some(0))])
        .await
        .expect("move");
    from.grant(0, &PatientId::random(), "fetched")
        .await
        .expect("grant");
    let dump = from.dump().await.expect("dump");
    assert_eq!(
        (
            dump.instances.len(),
            dump.records.len(),
            dump.changes.len(),
            dump.seq
        ),
        (2, 1, 2, 2)
    );
    to.load(&dump).await.expect("load");
    assert_eq!(to.dump().await.expect("dump again"), dump);
    assert_eq!(
        to.instance_by_token(token(4))
            .await
            .expect("token")
            .map(|i| i.name),
        Some("south".to_owned())
    );
    assert_eq!(
        to.instance_by_token(token(3)).await.expect("token"),
        None,
        "still revoked"
    );
    assert_eq!(
        to.instances_version().await.expect("v"),
        from.instances_version().await.expect("v")
    );
    // The sequence goes on from the copy's.
    let q = PatientId::random();
    let out = to
        .apply(&[create(q, new_commit(), None, None)])
        .await
        .expect("next");
    assert_eq!(seq_of(&out[0]), 3);
    let err = to.load(&dump).await.expect_err("not empty");
    assert!(err.to_string().contains("loading a copy"), "{err}");
}

/// The suites against SQLite, each in a fresh file.
mod sqlite {
    use super::*;
    use crate::db::sqlite::SqliteDb;

    pub(crate) fn fresh() -> (tempfile::TempDir, SqliteDb) {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = SqliteDb::open(&dir.path().join("central.sqlite")).expect("open");
        (dir, db)
    }

    macro_rules! on_sqlite {
        ($($suite:ident),* $(,)?) => {$(
            #[tokio::test]
            async fn $suite() {
                let (_dir, db) = fresh();
                super::$suite(&db).await;
            }
        )*};
    }

    on_sqlite!(
        suite_instances,
        suite_instance_admin,
        suite_locks,
        suite_apply,
        suite_history,
        suite_ref_pending,
        suite_grants,
        suite_add_holder,
        suite_counts,
        suite_scope,
        suite_scope_paging,
        suite_batches_of_1000,
        suite_reports,
        suite_duplicates,
        suite_fetch_pages,
    );

    #[tokio::test]
    async fn suite_duplicate_blocks_shrink() {
        let (_dir, db) = fresh();
        super::suite_duplicate_blocks_shrink(&db, &db).await;
    }

    /// Another handle (as another process) takes members out.
    #[tokio::test]
    async fn suite_duplicate_blocks_shrink_two_handles() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("central.sqlite");
        let one = SqliteDb::open(&path).expect("open one");
        let two = SqliteDb::open(&path).expect("open two");
        super::suite_duplicate_blocks_shrink(&one, &two).await;
    }

    #[tokio::test]
    async fn suite_dump_load_sqlite_to_sqlite() {
        let ((_a, one), (_b, two)) = (fresh(), fresh());
        super::suite_dump_load(&one, &two).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn suite_concurrent_apply_two_handles() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("central.sqlite");
        let one = SqliteDb::open(&path).expect("open one");
        let two = SqliteDb::open(&path).expect("open two");
        super::suite_concurrent_apply(vec![Arc::new(one), Arc::new(two)]).await;
    }
}

/// The suites against PostgreSQL, each in a database of its own.
mod postgres {
    use super::*;
    use crate::db::postgres::tests::TestDb;

    macro_rules! on_postgres {
        ($($suite:ident),* $(,)?) => {$(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $suite() {
                let test = TestDb::new().await;
                let db = test.open().await;
                super::$suite(&db).await;
            }
        )*};
    }

    on_postgres!(
        suite_instances,
        suite_instance_admin,
        suite_locks,
        suite_apply,
        suite_history,
        suite_ref_pending,
        suite_grants,
        suite_add_holder,
        suite_counts,
        suite_scope,
        suite_scope_paging,
        suite_batches_of_1000,
        suite_reports,
        suite_duplicates,
        suite_fetch_pages,
    );

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn suite_duplicate_blocks_shrink() {
        let test = TestDb::new().await;
        let db = test.open().await;
        super::suite_duplicate_blocks_shrink(&db, &db).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn suite_dump_load_sqlite_to_postgres_and_back() {
        let test = TestDb::new().await;
        let pg = test.open().await;
        let (_a, one) = super::sqlite::fresh();
        super::suite_dump_load(&one, &pg).await;
        let (_b, two) = super::sqlite::fresh();
        let test2 = TestDb::new().await;
        let pg2 = test2.open().await;
        super::suite_dump_load(&pg2, &two).await;
    }

    /// Three processes' handles on one database.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn suite_concurrent_apply_three_handles() {
        let test = TestDb::new().await;
        let mut handles = Vec::new();
        for _ in 0..3 {
            handles.push(Arc::new(test.open().await));
        }
        super::suite_concurrent_apply(handles).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn suite_scale() {
        let test = TestDb::new().await;
        let db = test.open().await;
        super::suite_scale(&db).await;
    }
}
