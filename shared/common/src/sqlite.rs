//! Numbered SQL migrations for the SQLite databases (central's default
//! backend and every satellite's sync state).
//!
//! Each migration is applied once, inside one transaction with the row that
//! records it, so a crash never leaves half a migration.

use rusqlite::{Connection, OptionalExtension, params};

/// One migration: its number, name and SQL.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Applied in increasing order.
    pub version: u32,
    /// For the log.
    pub name: &'static str,
    /// The SQL (several statements).
    pub sql: &'static str,
}

/// Why migrating failed.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The database was migrated by a newer build.
    #[error(
        "the database is at schema version {found}, newer than this build knows ({known}); run a newer chartsync"
    )]
    TooNew {
        /// The database's version.
        found: u32,
        /// Ours.
        known: u32,
    },
    /// SQL failed.
    #[error("migration {version} ({name}) failed")]
    Sql {
        /// The migration.
        version: u32,
        /// Its name.
        name: &'static str,
        /// The cause.
        #[source]
        source: rusqlite::Error,
    },
}

/// Applies the migrations not yet applied; returns how many were.
pub fn migrate(conn: &mut Connection, migrations: &[Migration]) -> Result<usize, MigrateError> {
    let sql_err = |m: &Migration| {
        let (version, name) = (m.version, m.name);
        move |source| MigrateError::Sql {
            version,
            name,
            source,
        }
    };
    let bootstrap = Migration {
        version: 0,
        name: "schema_migrations",
        sql: "",
    };
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            applied_at INTEGER NOT NULL
        )",
    )
    .map_err(sql_err(&bootstrap))?;
    let current: u32 = conn
        .query_row("SELECT max(version) FROM schema_migrations", [], |r| {
            r.get::<_, Option<u32>>(0)
        })
        .optional()
        .map_err(sql_err(&bootstrap))?
        .flatten()
        .unwrap_or(0);
    let known = migrations.iter().map(|m| m.version).max().unwrap_or(0);
    if current > known {
        return Err(MigrateError::TooNew {
            found: current,
            known,
        });
    }
    let mut applied = 0;
    for m in migrations.iter().filter(|m| m.version > current) {
        // IMMEDIATE: take the write lock first, then re-read the version, so
        // two processes opening a new database at once cannot both apply it.
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(sql_err(m))?;
        let now: u32 = tx
            .query_row(
                "SELECT coalesce(max(version), 0) FROM schema_migrations",
                [],
                |r| r.get(0),
            )
            .map_err(sql_err(m))?;
        if now >= m.version {
            continue;
        }
        tx.execute_batch(m.sql).map_err(sql_err(m))?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, strftime('%s','now'))",
            params![m.version, m.name],
        )
        .map_err(sql_err(m))?;
        tx.commit().map_err(sql_err(m))?;
        tracing::info!(
            version = m.version,
            name = m.name,
            "applied database migration"
        );
        applied += 1;
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIGRATIONS: &[Migration] = &[
        Migration {
            version: 1,
            name: "one",
            sql: "CREATE TABLE a (x INTEGER);",
        },
        Migration {
            version: 2,
            name: "two",
            sql: "CREATE TABLE b (y INTEGER); INSERT INTO b VALUES (1);",
        },
    ];

    #[test]
    fn applies_once_and_refuses_newer_databases() {
        let mut conn = Connection::open_in_memory().expect("open");
        assert_eq!(migrate(&mut conn, MIGRATIONS).expect("first"), 2);
        assert_eq!(migrate(&mut conn, MIGRATIONS).expect("second"), 0);
        assert!(matches!(
            migrate(&mut conn, &MIGRATIONS[..1]),
            Err(MigrateError::TooNew { found: 2, known: 1 })
        ));
    }

    #[test]
    fn a_failing_migration_leaves_nothing() {
        let mut conn = Connection::open_in_memory().expect("open");
        let bad = [Migration {
            version: 1,
            name: "bad",
            sql: "CREATE TABLE a (x INTEGER); THIS IS NOT SQL;",
        }];
        assert!(migrate(&mut conn, &bad).is_err());
        let tables: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'a'",
                [],
                |r| r.get(0),
            )
            .expect("query");
        assert_eq!(tables, 0);
    }
}
