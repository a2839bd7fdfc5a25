//! chartsync central: the HQ server. It serialises writes per patient,
//! refuses stale writes, keeps every instance to its scope, and numbers every
//! accepted change in one global sequence.

pub mod db;
