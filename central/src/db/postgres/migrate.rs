//! Central's PostgreSQL migrations (`migrations/central/postgres/`,
//! numbered like the SQLite ones): applied in one transaction, under an
//! advisory lock so that central processes starting together migrate one
//! at a time.

use chartsync_common::sqlite::{MigrateError, Migration};

use super::R;
use crate::db::DbError;

/// The migrations, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sql: include_str!("../../../../migrations/central/postgres/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "instance_admin",
        sql: include_str!("../../../../migrations/central/postgres/0002_instance_admin.sql"),
    },
    Migration {
        version: 3,
        name: "duplicates",
        sql: include_str!("../../../../migrations/central/postgres/0003_duplicates.sql"),
    },
    Migration {
        version: 4,
        name: "instance_reports",
        sql: include_str!("../../../../migrations/central/postgres/0004_instance_reports.sql"),
    },
    Migration {
        version: 5,
        name: "record_history",
        sql: include_str!("../../../../migrations/central/postgres/0005_record_history.sql"),
    },
    Migration {
        version: 6,
        name: "lease_owner",
        sql: include_str!("../../../../migrations/central/postgres/0006_lease_owner.sql"),
    },
    Migration {
        version: 7,
        name: "duplicate_blocks",
        sql: include_str!("../../../../migrations/central/postgres/0007_duplicate_blocks.sql"),
    },
    Migration {
        version: 8,
        name: "duplicate_members",
        sql: include_str!("../../../../migrations/central/postgres/0008_duplicate_members.sql"),
    },
    Migration {
        version: 9,
        name: "fetch_pages",
        sql: include_str!("../../../../migrations/central/postgres/0009_fetch_pages.sql"),
    },
];

/// The schema version this build migrates to.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// The advisory lock migrations run under ("chartsync" in ASCII, 8 bytes).
const LOCK: i64 = 0x6368_6172_7473_796e;

/// Applies the migrations not applied yet; returns the schema version.
pub(super) async fn run(client: &mut deadpool_postgres::Client) -> R<u32> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version    BIGINT PRIMARY KEY,
            name       TEXT NOT NULL,
            applied_at BIGINT NOT NULL
        )",
    )
    .await?;
    let found: i64 = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM schema_migrations",
            &[],
        )
        .await?
        .get(0);
    let found = u32::try_from(found).map_err(|_| DbError::Damaged("schema_migrations.version"))?;
    if found > SCHEMA_VERSION {
        return Err(DbError::Migrate(MigrateError::TooNew {
            found,
            known: SCHEMA_VERSION,
        })
        .into());
    }
    for migration in MIGRATIONS.iter().filter(|m| m.version > found) {
        tracing::info!(
            version = migration.version,
            name = migration.name,
            "migrating the PostgreSQL database"
        );
        tx.batch_execute(migration.sql).await?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
            &[
                &i64::from(migration.version),
                &migration.name,
                &chrono::Utc::now().timestamp(),
            ],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(SCHEMA_VERSION)
}
