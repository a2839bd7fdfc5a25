//! What satellites, central and HTTP clients say to each other.
//!
//! Types only: no database, no HTTP machinery (the one tie to git is
//! [`wire_pack`], which turns packs into their objects and back). The record API speaks
//! JSON ([`api`]); the sync endpoints speak versioned, compressed binary
//! batches ([`sync`], [`envelope`]).

#![forbid(unsafe_code)]

pub mod api;
pub mod envelope;
pub mod id;
pub mod link;
pub mod sync;
pub mod wire_pack;

mod commit_id;

pub use commit_id::{CommitId, CommitIdError};
pub use id::PatientId;

/// A record's files: relative path to UTF-8 content.
pub type Files = std::collections::BTreeMap<String, String>;
