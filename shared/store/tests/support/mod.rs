//! Helpers shared by the received-object tests: stores, hand-made objects,
//! and `git fsck` on the result.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use chartsync_git::{Kind, Object};
use chartsync_protocol::{CommitId, Files, PatientId};
use chartsync_store::{Change, CommitMeta, Condition, RecordStore, StoreOptions};
use git2::Oid;

pub const AUTHOR: &str = "author Ada Obi <ada@clinic.example> 1700000000 +0100";
pub const COMMITTER: &str = "committer chartsync <chartsync@north> 1700000000 +0000";

pub fn store(dir: &Path, name: &str) -> RecordStore {
    RecordStore::open(StoreOptions::new(dir.join(name), name)).expect("open store")
}

/// Creates the record with one file; returns its head.
pub fn create(s: &RecordStore, id: &PatientId) -> CommitId {
    let mut files = Files::new();
    files.insert("patient.yaml".into(), "name: A\n".into());
    s.write(
        id,
        Condition::MustCreate,
        Change::Replace(files),
        &CommitMeta::new("Dr. Ada Obi", "ada@clinic.example", "create"),
    )
    .expect("create")
}

/// Objects made by hand, each id once, in the order made.
#[derive(Default)]
pub struct Craft {
    pub objects: Vec<Object>,
}

impl Craft {
    pub fn add(&mut self, object: Object) -> Oid {
        let id = object.id;
        if !self.objects.iter().any(|o| o.id == id) {
            self.objects.push(object);
        }
        id
    }

    pub fn blob(&mut self, text: &str) -> Oid {
        self.add(Object::new(Kind::Blob, text.as_bytes().to_vec()))
    }

    /// A tree of (mode text, name, id) entries, written in the given order.
    pub fn tree(&mut self, entries: &[(&str, &str, Oid)]) -> Oid {
        let raw: Vec<(&str, &[u8], Oid)> = entries
            .iter()
            .map(|(m, n, id)| (*m, n.as_bytes(), *id))
            .collect();
        self.tree_raw(&raw)
    }

    /// Like [`Craft::tree`], with names as bytes.
    pub fn tree_raw(&mut self, entries: &[(&str, &[u8], Oid)]) -> Oid {
        let mut data = Vec::new();
        for (mode, name, id) in entries {
            data.extend_from_slice(mode.as_bytes());
            data.push(b' ');
            data.extend_from_slice(name);
            data.push(0);
            data.extend_from_slice(id.as_bytes());
        }
        self.add(Object::new(Kind::Tree, data))
    }

    /// The trees and blobs of a record holding `files`; returns the root.
    pub fn record(&mut self, files: &[(&str, &str)]) -> Oid {
        let map: BTreeMap<String, Vec<u8>> = files
            .iter()
            .map(|(p, c)| (p.to_string(), c.as_bytes().to_vec()))
            .collect();
        let (root, objects) = chartsync_git::build_tree(&map).expect("valid files");
        for object in objects {
            self.add(object);
        }
        root
    }

    pub fn commit(&mut self, tree: Oid, parents: &[Oid]) -> Oid {
        self.commit_with(tree, parents, &[])
    }

    /// A commit with `extra` header lines after the committer.
    pub fn commit_with(&mut self, tree: Oid, parents: &[Oid], extra: &[&str]) -> Oid {
        let mut text = format!("tree {tree}\n");
        for p in parents {
            text.push_str(&format!("parent {p}\n"));
        }
        text.push_str(AUTHOR);
        text.push('\n');
        text.push_str(COMMITTER);
        text.push('\n');
        for line in extra {
            text.push_str(line);
            text.push('\n');
        }
        text.push_str("\nA visit\n");
        self.add(Object::new(Kind::Commit, text.into_bytes()))
    }
}

/// Runs `git fsck --strict` on a bare repository; returns its complaints
/// (lines other than notices) and whether it exited 0.
pub fn fsck(repo: &Path) -> (bool, Vec<String>) {
    let out = Command::new("git")
        .arg("--git-dir")
        .arg(repo)
        .args([
            "fsck",
            "--strict",
            "--full",
            "--no-dangling",
            "--no-progress",
        ])
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .expect("run git fsck");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let complaints = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("notice:"))
        .map(str::to_owned)
        .collect();
    (out.status.success(), complaints)
}

/// `git fsck --strict` finds nothing to say about the repository.
pub fn fsck_clean(repo: &Path) {
    let (ok, complaints) = fsck(repo);
    assert!(ok && complaints.is_empty(), "git fsck: {complaints:#?}");
}
