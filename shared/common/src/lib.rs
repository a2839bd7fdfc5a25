//! Small helpers that central and the satellite share and that belong to no
//! layer of the record: reading configuration files (with secrets from
//! files and clear TOML errors), numbered SQLite migrations applied in one
//! transaction, and Prometheus text exposition for a few counters and
//! gauges, the free space of a data folder, folders and files private to
//! their owner, and work spread over the cores.

#![forbid(unsafe_code)]

pub mod config;
pub mod disk;
pub mod metrics;
pub mod private;
pub mod report;
pub mod spread;
pub mod sqlite;
