//! End-to-end tests, in one binary (one link, one run): real centrals and
//! satellites on 127.0.0.1, real HTTP clients, the `chartsync` binary. One
//! module per area; what they share is in `tests/support`.

#[path = "../support/mod.rs"]
mod support;

mod browser;
mod central_api;
mod central_cancelled;
mod central_crash;
mod central_locks;
mod daemon;
mod disk_full;
mod duplicates;
mod faults;
mod hostile;
mod pages;
mod poison;
mod postgres;
mod reports;
mod retire;
mod satellite_api;
mod security;
mod slow_link;
mod sync;
