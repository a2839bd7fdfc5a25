//! chartsync's shared crate: patient ids, the protocol both sides speak, the
//! YAML merge, and the git record store.

#[cfg(feature = "config")]
pub mod config;
pub mod git;
#[cfg(feature = "http")]
pub mod http;
pub mod id;
pub mod merge;
pub mod metrics;
pub mod path;
pub mod protocol;
#[cfg(feature = "sqlite")]
pub mod sqlite;
pub mod store;
pub mod validate;

pub use id::PatientId;
pub use protocol::{CommitId, Files};
