//! Applying the schema: `nhiscope db migrate`, and the store at every start.
//!
//! Creates the database and `schema_migrations`, reads which versions are applied and in which
//! dialect, applies the missing [`MIGRATIONS`] in order, records each, then applies retention:
//! a TTL on current servers (changed with `ALTER ... MODIFY TTL` when the configured number of
//! days changes), and on servers without TTL, dropping the partitions wholly older than it.

use clickhouse::Client;

use super::{
    config::StoreConfig,
    schema::{latest_version, Dialect, Schema, Table, MIGRATIONS},
};

/// What a migration did.
#[derive(Clone, Debug)]
pub struct Report {
    /// `version()` of the server.
    pub server_version: String,
    /// The schema in use (its dialect is the database's, which may be older than the server's).
    pub schema: Schema,
    /// Versions applied now.
    pub applied: Vec<u32>,
    /// The version the database is at.
    pub version: u32,
}

/// Why the schema could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// A request failed.
    #[error("{during}: {}", super::client::with_cause(.source))]
    ClickHouse {
        during: String,
        #[source]
        source: clickhouse::error::Error,
    },
    /// The database was made by a newer nhiscope or in an unknown dialect.
    #[error("{0}")]
    Incompatible(String),
}

fn ch(during: impl Into<String>) -> impl FnOnce(clickhouse::error::Error) -> MigrateError {
    let during = during.into();
    move |source| MigrateError::ClickHouse { during, source }
}

/// Migrates the database named in `config` through `admin` (a client without a database).
pub async fn migrate(admin: &Client, config: &StoreConfig) -> Result<Report, MigrateError> {
    let server_version: String = admin
        .query("SELECT version()")
        .fetch_one()
        .await
        .map_err(ch("asking the server's version"))?;
    let mut schema = Schema {
        database: config.database.clone(),
        cluster: config.cluster.clone(),
        retention_days: config.retention_days,
        dialect: Dialect::for_server(&server_version),
    };
    run(admin, &schema.create_database()).await?;
    run(admin, &schema.create_migrations_table()).await?;
    let applied: Vec<(u32, String)> = admin
        .query_raw(&format!(
            "SELECT version, dialect FROM {} ORDER BY version",
            schema.migrations_table()
        ))
        .fetch_all()
        .await
        .map_err(ch("reading schema_migrations"))?;
    if let Some((_, d)) = applied.first() {
        schema.dialect = Dialect::parse(d).ok_or_else(|| {
            MigrateError::Incompatible(format!(
                "database `{}` has tables in dialect `{d}`, unknown to this nhiscope",
                schema.database
            ))
        })?;
    }
    let current = applied.iter().map(|(v, _)| *v).max().unwrap_or(0);
    if current > latest_version() {
        return Err(MigrateError::Incompatible(format!(
            "database `{}` is at schema version {current}, newer than this nhiscope's {}: \
             upgrade nhiscope",
            schema.database,
            latest_version()
        )));
    }
    let mut done = Vec::new();
    for m in MIGRATIONS.iter().filter(|m| m.version > current) {
        for stmt in (m.statements)(&schema) {
            run(admin, &stmt).await?;
        }
        admin
            .query(&format!(
                "INSERT INTO {} (version, name, dialect, applied_at) VALUES (?, ?, ?, now())",
                schema.migrations_table()
            ))
            .bind(m.version)
            .bind(m.name)
            .bind(schema.dialect.as_str())
            .execute()
            .await
            .map_err(ch(format!("recording migration {}", m.version)))?;
        log::info!(
            "schema: applied migration {} ({}) to `{}` ({} dialect)",
            m.version,
            m.name,
            schema.database,
            schema.dialect.as_str()
        );
        done.push(m.version);
    }
    apply_retention(admin, &schema).await?;
    Ok(Report {
        server_version,
        schema,
        applied: done,
        version: latest_version().max(current),
    })
}

async fn run(admin: &Client, sql: &str) -> Result<(), MigrateError> {
    let head: String = sql
        .lines()
        .next()
        .unwrap_or(sql)
        .chars()
        .take(100)
        .collect();
    match admin.query_raw(sql).execute().await {
        Ok(()) => Ok(()),
        // 18.16 has no `ADD COLUMN IF NOT EXISTS`: a step interrupted after adding a column
        // (or run on a cluster, where a replica may have it already) meets it again; the column
        // being there is what the statement was for. 15: DUPLICATE_COLUMN, 44: ILLEGAL_COLUMN
        // ("column with this name already exists").
        Err(e)
            if sql.contains("ADD COLUMN")
                && (e.to_string().contains("Code: 15,")
                    || e.to_string().contains("already exists")) =>
        {
            log::debug!("schema: `{head}`: the column is already there");
            Ok(())
        }
        Err(e) => Err(ch(format!("applying `{head}`"))(e)),
    }
}

/// Makes the tables keep rows `schema.retention_days` days: TTL where the server has it, else
/// drops whole partitions older than that.
pub async fn apply_retention(client: &Client, schema: &Schema) -> Result<(), MigrateError> {
    match schema.dialect {
        Dialect::Modern => modern_retention(client, schema).await,
        Dialect::Legacy => match schema.retention_days {
            Some(days) => drop_old_partitions(client, schema, days).await,
            None => Ok(()),
        },
    }
}

async fn modern_retention(client: &Client, schema: &Schema) -> Result<(), MigrateError> {
    for t in Table::ALL {
        let storage = schema.storage_table(t);
        let name = storage.rsplit('.').next().unwrap_or(&storage).to_owned();
        let engine: String = client
            .query("SELECT engine_full FROM system.tables WHERE database = ? AND name = ?")
            .bind(&schema.database)
            .bind(&name)
            .fetch_one()
            .await
            .map_err(ch(format!("reading the definition of {storage}")))?;
        if let Some(sql) = retention_statement(schema, t, &engine) {
            log::info!("retention: {sql}");
            run(client, &sql).await?;
        }
    }
    Ok(())
}

/// The `ALTER TABLE` that gives table `t`, whose `engine_full` (from `system.tables`) is
/// `engine`, the TTL the schema asks for; `None` when it has it already.
pub fn retention_statement(schema: &Schema, t: Table, engine: &str) -> Option<String> {
    let storage = schema.storage_table(t);
    let on_cluster = schema
        .cluster
        .as_ref()
        .map(|c| format!(" ON CLUSTER {c}"))
        .unwrap_or_default();
    match schema.ttl(t) {
        Some(ttl) if !engine.contains(&ttl) => Some(format!(
            "ALTER TABLE {storage}{on_cluster} MODIFY TTL {ttl}"
        )),
        None if engine.contains(" TTL ") => {
            Some(format!("ALTER TABLE {storage}{on_cluster} REMOVE TTL"))
        }
        _ => None,
    }
}

async fn drop_old_partitions(
    client: &Client,
    schema: &Schema,
    days: u32,
) -> Result<(), MigrateError> {
    let today = super::row::Ts::now().secs / 86_400;
    let cutoff = civil_from_days(today.saturating_sub(u64::from(days)));
    let on_cluster = schema
        .cluster
        .as_ref()
        .map(|c| format!(" ON CLUSTER {c}"))
        .unwrap_or_default();
    for t in Table::ALL {
        let storage = schema.storage_table(t);
        let name = storage.rsplit('.').next().unwrap_or(&storage).to_owned();
        let partitions: Vec<String> = client
            .query(
                "SELECT DISTINCT partition FROM system.parts \
                 WHERE database = ? AND table = ? AND active",
            )
            .bind(&schema.database)
            .bind(&name)
            .fetch_all()
            .await
            .map_err(ch(format!("listing the partitions of {storage}")))?;
        for p in partitions {
            if partition_expired(&p, cutoff) {
                let sql = format!("ALTER TABLE {storage}{on_cluster} DROP PARTITION {p}");
                log::info!("retention ({days} days): {sql}");
                run(client, &sql).await?;
            }
        }
    }
    Ok(())
}

/// Whether a `toYYYYMMDD` or `toYYYYMM` partition lies wholly before the day `cutoff`
/// (`(year, month, day)`).
pub fn partition_expired(partition: &str, cutoff: (u32, u32, u32)) -> bool {
    let p = partition.trim_matches('\'');
    if !p.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let Ok(n) = p.parse::<u32>() else {
        return false;
    };
    let (y, m, d) = cutoff;
    match p.len() {
        8 => n < y * 10_000 + m * 100 + d,
        6 => n < y * 100 + m,
        _ => false,
    }
}

/// `(year, month, day)` of a day counted from 1970-01-01.
pub fn civil_from_days(days: u64) -> (u32, u32, u32) {
    let (y, m, d) = crate::domain::event::civil(days);
    (u32::try_from(y).unwrap_or(u32::MAX), m as u32, d as u32)
}

/// The schema of an existing database, for readers (the dashboard, queries): its dialect as
/// recorded in `schema_migrations`. Creates nothing.
pub async fn read_schema(admin: &Client, config: &StoreConfig) -> Result<Schema, MigrateError> {
    let mut schema = Schema {
        database: config.database.clone(),
        cluster: config.cluster.clone(),
        retention_days: config.retention_days,
        dialect: Dialect::Legacy,
    };
    let exists: u8 = admin
        .query("SELECT toUInt8(count() > 0) FROM system.tables WHERE database = ? AND name = ?")
        .bind(schema.database.as_str())
        .bind("schema_migrations")
        .fetch_one()
        .await
        .map_err(ch("looking for schema_migrations"))?;
    if exists == 0 {
        return Err(MigrateError::Incompatible(format!(
            "database `{}` has no nhiscope tables yet: start the daemon with --clickhouse, or \
             run `nhiscope db migrate`",
            schema.database
        )));
    }
    let dialects: Vec<String> = admin
        .query_raw(&format!(
            "SELECT dialect FROM {} ORDER BY version LIMIT 1",
            schema.migrations_table()
        ))
        .fetch_all()
        .await
        .map_err(ch("reading schema_migrations"))?;
    let d = dialects.first().ok_or_else(|| {
        MigrateError::Incompatible(format!(
            "database `{}` has no applied migration yet",
            schema.database
        ))
    })?;
    schema.dialect = Dialect::parse(d).ok_or_else(|| {
        MigrateError::Incompatible(format!(
            "database `{}` has tables in dialect `{d}`, unknown to this nhiscope",
            schema.database
        ))
    })?;
    Ok(schema)
}
