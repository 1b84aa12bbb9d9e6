//! Creates and upgrades the schema with refinery: the numbered SQL files in
//! `migrations/` (`V{n}__{name}.sql`), embedded at compile time and applied
//! in order, each version once, recorded in `cloud_sync_schema_history`.
//!
//! Collectors that start together take turns through an advisory lock held
//! per schema, so exactly one of them applies a new version. A database
//! already migrated by a newer collector is refused rather than used.
//!
//! To change the schema, add `V{n+1}__what.sql` (never edit an applied file:
//! refinery refuses a database whose applied migration differs) and bump
//! [`SCHEMA_VERSION`]. Touch this file too: the macro embeds the files that
//! exist when it runs, and cargo only notices edits to those.

use tokio_postgres::Client;

use super::store::backend;
use crate::store::StoreError;

mod embedded {
    refinery::embed_migrations!("src/store/postgres/migrations");
}

/// The newest schema version this collector knows (the highest `V{n}`).
pub const SCHEMA_VERSION: u32 = 1;

/// Where refinery records applied versions, in the collector's schema.
const HISTORY_TABLE: &str = "cloud_sync_schema_history";

/// Applies every migration the database lacks, one collector at a time.
pub async fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let schema: Option<String> = client
        .query_one("SELECT current_schema()", &[])
        .await
        .map_err(backend)?
        .get(0);
    let Some(schema) = schema else {
        return Err(StoreError::Backend(
            "no schema to create tables in: the search_path names no existing schema".into(),
        ));
    };
    let lock_key = format!("cloud-sync migrate {schema}");
    client
        .execute(
            "SELECT pg_advisory_lock(hashtextextended($1, 0))",
            &[&lock_key],
        )
        .await
        .map_err(backend)?;
    let result = apply(client, &schema).await;
    // Closing the connection would release the lock too; the error is moot.
    let _ = client
        .execute(
            "SELECT pg_advisory_unlock(hashtextextended($1, 0))",
            &[&lock_key],
        )
        .await;
    result
}

async fn apply(client: &mut Client, schema: &str) -> Result<(), StoreError> {
    if let Some(found) = applied_version(client).await? {
        if found > SCHEMA_VERSION {
            return Err(StoreError::Schema {
                found,
                expected: SCHEMA_VERSION,
            });
        }
    }
    let mut runner = embedded::migrations::runner().set_grouped(true);
    runner.set_migration_table_name(HISTORY_TABLE);
    let report = runner.run_async(client).await.map_err(|err| {
        let why = super::store::with_causes(&err);
        StoreError::Backend(format!("schema migration failed: {why}").into())
    })?;
    for migration in report.applied_migrations() {
        tracing::info!(schema, migration = %migration, "applied schema migration");
    }
    Ok(())
}

/// The newest version recorded in the history table, `None` in a fresh schema.
async fn applied_version(client: &Client) -> Result<Option<u32>, StoreError> {
    let exists: Option<String> = client
        .query_one("SELECT to_regclass($1)::text", &[&HISTORY_TABLE])
        .await
        .map_err(backend)?
        .get(0);
    if exists.is_none() {
        return Ok(None);
    }
    let newest: Option<i32> = client
        .query_one(&format!("SELECT max(version) FROM {HISTORY_TABLE}"), &[])
        .await
        .map_err(backend)?
        .get(0);
    Ok(newest.map(|v| u32::try_from(v).unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_version_is_the_newest_migration() {
        let runner = embedded::migrations::runner();
        let newest = runner
            .get_migrations()
            .iter()
            .map(|m| m.version())
            .max()
            .unwrap();
        assert_eq!(u32::try_from(newest).unwrap(), SCHEMA_VERSION);
    }
}
