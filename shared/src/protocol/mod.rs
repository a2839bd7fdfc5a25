//! What satellites, central and HTTP clients say to each other.
//!
//! Types only: no git, no database, no HTTP machinery. The record API speaks
//! JSON ([`api`]); the sync endpoints speak versioned, compressed binary
//! batches ([`sync`], [`envelope`]).

pub mod api;
pub mod envelope;
pub mod sync;
pub mod wire_pack;

mod commit_id;

pub use commit_id::{CommitId, CommitIdError};

/// A record's files: relative path to UTF-8 content.
pub type Files = std::collections::BTreeMap<String, String>;
