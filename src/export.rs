//! `chartsync central export ID --config F --to DIR`: one record as a plain
//! git repository (branch `main` at the head central acknowledged, files
//! checked out), from either backend.

use std::path::Path;

use anyhow::{Context, bail};
use chartsync_central::db::CentralDb;
use chartsync_central::db::any::AnyDb;
use chartsync_protocol::{CommitId, PatientId};
use chartsync_store::{Flush, Received, RecordStore, StoreOptions};

/// Writes record `id` to `to` (which must not exist or be empty); returns
/// its head.
pub async fn export(
    config: &chartsync_central::CentralConfig,
    db: &AnyDb,
    id: &str,
    to: &Path,
) -> anyhow::Result<CommitId> {
    let id: PatientId = id
        .parse()
        .map_err(|_| anyhow::anyhow!("{id:?} is not a patient id (a UUID)"))?;
    if to.exists()
        && std::fs::read_dir(to)
            .with_context(|| format!("cannot read {}", to.display()))?
            .next()
            .is_some()
    {
        bail!(
            "{} exists and is not empty; choose a new folder",
            to.display()
        );
    }
    let Some(row) = db.records(&[id]).await?.into_iter().next().flatten() else {
        bail!("central has no patient record {id}");
    };
    // Where the database keeps the history, the record is rebuilt from it
    // in a scratch store; on SQLite, the repository in data_dir is read.
    let scratch = tempfile::tempdir().context("cannot make a scratch folder")?;
    let store_root = if db.keeps_history() {
        scratch.path().to_path_buf()
    } else {
        config.data_dir.clone()
    };
    let store = RecordStore::open_keep_tmp(StoreOptions::new(
        store_root,
        chartsync_central::auth::HQ_NAME,
    ))
    .context("cannot open the record store")?;
    if db.keeps_history() {
        for (at, pack) in db.history_after(&id, None).await? {
            if store.exists(&id) {
                store.ingest(&id, at, &pack, Flush::Deferred)?;
            } else if let Received::Ready(prepared) =
                store.prepare_received(&id, None, at, &pack, Flush::Deferred)?
            {
                store.publish(prepared, Flush::Deferred)?;
            }
        }
    }
    if !store.has_commit(&id, row.head)? {
        bail!(
            "the history of patient record {id} up to its head {} is not in central's storage",
            row.head
        );
    }
    let source = store.layout().repo(&id);
    let repo = git2::build::RepoBuilder::new()
        .bare(false)
        .clone(
            source
                .to_str()
                .context("the data folder's path is not UTF-8")?,
            to,
        )
        .with_context(|| format!("cannot write a git repository in {}", to.display()))?;
    let head = git2::Oid::from_bytes(row.head.as_bytes())?;
    repo.reference("refs/heads/main", head, true, "central export")?;
    repo.set_head("refs/heads/main")?;
    repo.checkout_head(Some(git2::build::CheckoutBuilder::new().force()))?;
    repo.remote_delete("origin")?;
    Ok(row.head)
}
