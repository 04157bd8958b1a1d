//! The ClickHouse schema nhiscope owns: versioned DDL in two dialects.
//!
//! * [`Dialect::Legacy`] is for servers older than 22.3, such as Debian's 18.16: no `DateTime64`
//!   (time is `DateTime` plus a nanoseconds column), no `IPv6` type (addresses are text), no TTL
//!   (retention drops old daily partitions instead, see [`super::migrate`]), no `Map`, and
//!   `LowCardinality` only behind an experimental setting (so plain `String`).
//! * [`Dialect::Modern`] is for current servers (24.x to 26.x): `DateTime64(9)`, `IPv6`,
//!   `LowCardinality`, `Map`, TTL retention set by the user, and the per-table deduplication
//!   window that makes `insert_deduplication_token` work on non-replicated tables.
//!
//! A database keeps the dialect it was created with (it is recorded in `schema_migrations`), so
//! an upgraded server goes on receiving the rows its tables were made for.
//!
//! Every table is a `ReplacingMergeTree` whose sorting key ends with the row's identity
//! `(run_id, seq)`: two copies of one row, however they came to be inserted, have the same key
//! and collapse into one (see the module docs of [`super`] for the whole deduplication story).
//! `events` is sorted by `(nhi, verdict, host, ts)` first: what responders ask is "what did this
//! NHI do", "what drifted", "what happened on this host", always over a time range; the first
//! three have few distinct values, so the primary index also prunes for a condition on any one
//! of them alone, and daily partitions prune the time range.
//!
//! With `--cluster NAME`, tables are `Replicated*` `ON CLUSTER` under the name `<table>_local`,
//! with a `Distributed` table named `<table>` over them, sharded by host (so a host's duplicates
//! meet on one shard and collapse there).

use std::fmt::Write as _;

use super::row::{kind_code, verdict_code};
use crate::domain::event::{Kind, Verdict};

/// The SQL dialect of a server, as far as nhiscope's schema is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// ClickHouse before 22.3 (Debian's 18.16).
    Legacy,
    /// ClickHouse 22.3 and later.
    Modern,
}

impl Dialect {
    /// The dialect for a server whose `version()` is `version` (`18.16.1`, `26.9.2.1`).
    pub fn for_server(version: &str) -> Dialect {
        let mut parts = version.trim().split('.').map(|p| p.parse::<u32>().ok());
        match (parts.next().flatten(), parts.next().flatten()) {
            (Some(major), Some(minor)) if (major, minor) >= (22, 3) => Dialect::Modern,
            (Some(_), _) => Dialect::Legacy,
            // A version we cannot read is a newer server's format rather than an older one's.
            (None, _) => Dialect::Modern,
        }
    }

    /// The name recorded in `schema_migrations`.
    pub fn as_str(self) -> &'static str {
        match self {
            Dialect::Legacy => "legacy",
            Dialect::Modern => "modern",
        }
    }

    pub fn parse(s: &str) -> Option<Dialect> {
        match s {
            "legacy" => Some(Dialect::Legacy),
            "modern" => Some(Dialect::Modern),
            _ => None,
        }
    }
}

/// The tables rows go to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Table {
    Events,
    Losses,
    Agents,
}

impl Table {
    pub const ALL: [Table; 3] = [Table::Events, Table::Losses, Table::Agents];

    pub fn name(self) -> &'static str {
        match self {
            Table::Events => "events",
            Table::Losses => "losses",
            Table::Agents => "agents",
        }
    }

    /// The column that says when a row happened: partitions, retention and the idempotency
    /// check of [`super::sink`] go by it.
    pub fn time_column(self) -> &'static str {
        match self {
            Table::Events | Table::Agents => "ts",
            Table::Losses => "end_ts",
        }
    }
}

/// Where and how the schema lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schema {
    /// Database name: letters, digits and `_` (checked by the config).
    pub database: String,
    /// Cluster name for `ON CLUSTER` and replicated tables.
    pub cluster: Option<String>,
    /// Days to keep rows; `None` keeps them forever.
    pub retention_days: Option<u32>,
    pub dialect: Dialect,
}

/// One step of the schema's history. Statements are idempotent (`IF NOT EXISTS`), so a step
/// interrupted half-way, or run by two daemons at once, is simply run again.
pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    pub statements: fn(&Schema) -> Vec<String>,
}

/// Every migration, in order. Append; never edit a released one.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "events, losses and agents",
        statements: v1,
    },
    Migration {
        version: 2,
        name: "events: script and proto",
        statements: v2,
    },
    Migration {
        version: 3,
        name: "events: Kubernetes pod and container names",
        statements: v3,
    },
    Migration {
        version: 4,
        name: "events: connections open before a credential was read",
        statements: v4,
    },
    Migration {
        version: 5,
        name: "events: request kind, server names and HTTP request lines",
        statements: v5,
    },
];

/// The version a fully migrated database is at.
pub fn latest_version() -> u32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

fn v1(s: &Schema) -> Vec<String> {
    let mut out = Vec::new();
    for t in Table::ALL {
        out.extend(s.create_table_at(t, 1));
    }
    out
}

/// `events` gains the script an interpreter ran and the connection's protocol.
fn v2(s: &Schema) -> Vec<String> {
    s.add_columns(Table::Events, 2)
}

/// `events` gains the Kubernetes pod (UID, name, namespace) and container name.
fn v3(s: &Schema) -> Vec<String> {
    s.add_columns(Table::Events, 3)
}

/// `events` gains `established_before_use` (1: a connection the process already had when it
/// read the credential, judged at that read).
fn v4(s: &Schema) -> Vec<String> {
    s.add_columns(Table::Events, 4)
}

/// `events` gains the `request` kind and what a connection's first bytes said: `sni`, `alpn`,
/// `tls_version`, `http_method`, `http_host`, `http_path`. Adding a value to an `Enum8` changes
/// only the table's metadata (18.16 too); the statement is the same when run again.
fn v5(s: &Schema) -> Vec<String> {
    let mut out = vec![format!(
        "ALTER TABLE {}{} MODIFY COLUMN kind {}",
        s.storage_table(Table::Events),
        s.on_cluster(),
        kind_enum_at(5)
    )];
    // On a cluster this ends by making the `Distributed` table again, over the altered kind too.
    out.extend(s.add_columns(Table::Events, 5));
    out
}

impl Schema {
    /// The table inserts and queries use: `db.events` (the `Distributed` one on a cluster).
    pub fn table(&self, t: Table) -> String {
        format!("{}.{}", self.database, t.name())
    }

    /// The table that stores the rows: `db.events`, or `db.events_local` on a cluster.
    pub fn storage_table(&self, t: Table) -> String {
        match self.cluster {
            Some(_) => format!("{}.{}_local", self.database, t.name()),
            None => self.table(t),
        }
    }

    pub fn migrations_table(&self) -> String {
        format!("{}.schema_migrations", self.database)
    }

    fn on_cluster(&self) -> String {
        match &self.cluster {
            Some(c) => format!(" ON CLUSTER {c}"),
            None => String::new(),
        }
    }

    /// `MergeTree`-family engine `family`, replicated on a cluster.
    fn engine(&self, family: &str, table: &str) -> String {
        match self.cluster {
            Some(_) => format!(
                "Replicated{family}('/clickhouse/tables/{{shard}}/{}/{table}', '{{replica}}')",
                self.database
            ),
            None => family.to_owned(),
        }
    }

    pub fn create_database(&self) -> String {
        format!(
            "CREATE DATABASE IF NOT EXISTS {}{}",
            self.database,
            self.on_cluster()
        )
    }

    pub fn create_migrations_table(&self) -> String {
        format!(
            "CREATE TABLE IF NOT EXISTS {}{} (version UInt32, name String, dialect String, \
             applied_at DateTime) ENGINE = {} ORDER BY version",
            self.migrations_table(),
            self.on_cluster(),
            self.engine("MergeTree", "schema_migrations"),
        )
    }

    /// `CREATE TABLE` for `t` as it is at the latest version.
    pub fn create_table(&self, t: Table) -> Vec<String> {
        self.create_table_at(t, latest_version())
    }

    /// `ALTER TABLE ... ADD COLUMN` for the columns `t` gained at `version` (on the local tables
    /// and, on a cluster, on the `Distributed` table over them).
    fn add_columns(&self, t: Table, version: u32) -> Vec<String> {
        // 18.16 knows no `IF NOT EXISTS` here: one column per statement, and the migration
        // runner takes "already there" (code 15) as done.
        let if_not_exists = match self.dialect {
            Dialect::Modern => "IF NOT EXISTS ",
            Dialect::Legacy => "",
        };
        let mut out = Vec::new();
        for (_, name, ty) in self
            .versioned_columns(t)
            .into_iter()
            .filter(|(v, _, _)| *v == version)
        {
            out.push(format!(
                "ALTER TABLE {}{} ADD COLUMN {if_not_exists}{name} {ty}",
                self.storage_table(t),
                self.on_cluster()
            ));
        }
        if let (Some(cluster), false) = (&self.cluster, out.is_empty()) {
            // A `Distributed` table cannot be altered ON CLUSTER where shards are replicated
            // (18.16 refuses); it holds no rows (inserts are synchronous), so it is made again
            // over the altered local tables.
            out.push(format!(
                "DROP TABLE IF EXISTS {}{}",
                self.table(t),
                self.on_cluster()
            ));
            out.push(self.distributed(t, cluster));
        }
        out
    }

    /// `CREATE TABLE` for `t` (and its `Distributed` table on a cluster) with the columns it
    /// had at `version`.
    fn create_table_at(&self, t: Table, version: u32) -> Vec<String> {
        let local_name = match self.cluster {
            Some(_) => format!("{}_local", t.name()),
            None => t.name().to_owned(),
        };
        let mut sql = format!(
            "CREATE TABLE IF NOT EXISTS {}{} (\n{}\n) ENGINE = {}\n{}",
            self.storage_table(t),
            self.on_cluster(),
            self.columns(t, version),
            self.engine("ReplacingMergeTree", &local_name),
            self.layout(t),
        );
        if let Some(ttl) = self.ttl(t) {
            let _ = write!(sql, "\nTTL {ttl}");
        }
        let mut settings = vec!["index_granularity = 8192"];
        if self.dialect == Dialect::Modern {
            if self.cluster.is_none() {
                // Without it a non-replicated table ignores insert_deduplication_token.
                settings.push("non_replicated_deduplication_window = 1000");
            }
            if self.retention_days.is_some() {
                settings.push("ttl_only_drop_parts = 1");
            }
        }
        let _ = write!(sql, "\nSETTINGS {}", settings.join(", "));
        let mut out = vec![sql];
        if let Some(cluster) = &self.cluster {
            out.push(self.distributed(t, cluster));
        }
        out
    }

    /// The `Distributed` table over `t`'s local tables on `cluster`.
    fn distributed(&self, t: Table, cluster: &str) -> String {
        format!(
            "CREATE TABLE IF NOT EXISTS {}{} AS {} ENGINE = Distributed({cluster}, {}, \
             {}_local, cityHash64(host))",
            self.table(t),
            self.on_cluster(),
            self.storage_table(t),
            self.database,
            t.name(),
        )
    }

    /// The TTL expression of `t`, when retention is set and the server has TTL.
    pub fn ttl(&self, t: Table) -> Option<String> {
        let days = self.retention_days?;
        (self.dialect == Dialect::Modern)
            .then(|| format!("toDateTime({}) + toIntervalDay({days})", t.time_column()))
    }

    fn layout(&self, t: Table) -> &'static str {
        match t {
            Table::Events => {
                "PARTITION BY toYYYYMMDD(ts)\n\
                 ORDER BY (nhi, verdict, host, ts, run_id, seq)\n\
                 PRIMARY KEY (nhi, verdict, host, ts)"
            }
            Table::Losses => {
                "PARTITION BY toYYYYMM(end_ts)\n\
                 ORDER BY (host, end_ts, run_id, seq)"
            }
            Table::Agents => {
                "PARTITION BY toYYYYMM(ts)\n\
                 ORDER BY (host, ts, run_id, seq)"
            }
        }
    }

    /// Column definitions of `t` at `version`, in the field order of the wire rows of
    /// [`super::row`].
    fn columns(&self, t: Table, version: u32) -> String {
        let cols: Vec<(String, String)> = self
            .versioned_columns(t)
            .into_iter()
            .filter(|(v, _, _)| *v <= version)
            // The kind column's `Enum8` grew with the kinds (see [`kind_enum_at`]).
            .map(|(_, n, ty)| match n.as_str() {
                "kind" => (n, kind_enum_at(version)),
                _ => (n, ty),
            })
            .collect();
        let mut out = String::new();
        for (i, (name, ty)) in cols.iter().enumerate() {
            let sep = if i + 1 == cols.len() { "" } else { "," };
            let _ = writeln!(out, "    {name} {ty}{sep}");
        }
        out.trim_end().to_owned()
    }

    /// `(name, type)` of every column of `t` at the latest version, in order (columns added by
    /// later migrations come last, where `ALTER TABLE ... ADD COLUMN` puts them).
    pub fn column_types(&self, t: Table) -> Vec<(String, String)> {
        self.versioned_columns(t)
            .into_iter()
            .map(|(_, n, ty)| (n, ty))
            .collect()
    }

    /// `(version added, name, type)` of every column of `t`, in order.
    fn versioned_columns(&self, t: Table) -> Vec<(u32, String, String)> {
        let lc = if self.dialect == Dialect::Modern {
            "LowCardinality(String)"
        } else {
            "String"
        };
        let mut out: Vec<(u32, String, String)> = self
            .v1_column_types(t)
            .into_iter()
            .map(|(n, ty)| (1, n, ty))
            .collect();
        if t == Table::Events {
            out.push((2, "script".into(), "String".into()));
            out.push((2, "proto".into(), lc.into()));
            for name in ["pod_uid", "pod", "pod_namespace", "container_name"] {
                out.push((3, name.into(), lc.into()));
            }
            out.push((4, "established_before_use".into(), "UInt8".into()));
            out.push((5, "sni".into(), lc.into()));
            out.push((5, "alpn".into(), format!("Array({lc})")));
            for name in ["tls_version", "http_method", "http_host"] {
                out.push((5, name.into(), lc.into()));
            }
            out.push((5, "http_path".into(), "String".into()));
        }
        out
    }

    /// `(name, type)` of every column `t` was created with (version 1).
    fn v1_column_types(&self, t: Table) -> Vec<(String, String)> {
        let modern = self.dialect == Dialect::Modern;
        // Repeated, low-cardinality text: dictionary-encoded where the server has it.
        let lc = if modern {
            "LowCardinality(String)"
        } else {
            "String"
        };
        let time = if modern {
            "DateTime64(9, 'UTC')"
        } else {
            "DateTime('UTC')"
        };
        let addr = if modern { "Nullable(IPv6)" } else { "String" };
        let cols: Vec<String> = match t {
            Table::Events => {
                let mut c = vec![format!("ts {time}")];
                if !modern {
                    c.push("ts_ns UInt32".into());
                }
                c.extend([
                    format!("host {lc}"),
                    "run_id UInt64".into(),
                    "seq UInt64".into(),
                    format!("kind {}", kind_enum()),
                    "pid UInt32".into(),
                    "tid UInt32".into(),
                    "ppid UInt32".into(),
                    "uid UInt32".into(),
                    "gid UInt32".into(),
                    format!("exe {lc}"),
                    format!("comm {lc}"),
                    "cmdline Array(String)".into(),
                    "cgroup_id UInt64".into(),
                    format!("container {lc}"),
                    format!("syscall {lc}"),
                    "path String".into(),
                    "path_arg String".into(),
                    "target String".into(),
                    "flags Nullable(UInt32)".into(),
                    "result Nullable(Int64)".into(),
                    format!("error {lc}"),
                    format!("daddr {addr}"),
                    "dport Nullable(UInt16)".into(),
                    format!("saddr {addr}"),
                    "sport Nullable(UInt16)".into(),
                    "dns_names Array(String)".into(),
                    "count Nullable(UInt64)".into(),
                    format!("cause {lc}"),
                    format!("nhi {lc}"),
                    format!("verdict {}", verdict_enum()),
                    format!("drift Array({lc})"),
                    "reason String".into(),
                ]);
                c
            }
            Table::Losses => {
                let mut c = vec![
                    format!("host {lc}"),
                    "run_id UInt64".into(),
                    "seq UInt64".into(),
                    format!("start_ts {time}"),
                ];
                if !modern {
                    c.push("start_ns UInt32".into());
                }
                c.push(format!("end_ts {time}"));
                if !modern {
                    c.push("end_ns UInt32".into());
                }
                c.extend([
                    "count UInt64".into(),
                    format!("cause {lc}"),
                    "reason String".into(),
                ]);
                c
            }
            Table::Agents => {
                let mut c = vec![
                    format!("host {lc}"),
                    "run_id UInt64".into(),
                    "seq UInt64".into(),
                    format!("ts {time}"),
                ];
                if modern {
                    c.extend([
                        format!("started {time}"),
                        format!("version {lc}"),
                        "counters Map(LowCardinality(String), UInt64)".into(),
                    ]);
                } else {
                    c.extend([
                        "ts_ns UInt32".into(),
                        format!("started {time}"),
                        "version String".into(),
                        "counter_names Array(String)".into(),
                        "counter_values Array(UInt64)".into(),
                    ]);
                }
                c
            }
        };
        cols.iter()
            .map(|c| match c.split_once(' ') {
                Some((n, t)) => (n.to_owned(), t.to_owned()),
                None => (c.clone(), String::new()),
            })
            .collect()
    }
}

/// `Enum8(...)` of the `kind` column at the latest version, from the codes the rows use.
pub fn kind_enum() -> String {
    kind_enum_at(latest_version())
}

/// `Enum8(...)` of the `kind` column as it was at schema `version`: `request` came with 5.
pub fn kind_enum_at(version: u32) -> String {
    let kinds = [
        (Kind::Open, 1),
        (Kind::Connect, 1),
        (Kind::Exec, 1),
        (Kind::Exit, 1),
        (Kind::Dns, 1),
        (Kind::Loss, 1),
        (Kind::Request, 5),
    ];
    enum8(
        kinds
            .iter()
            .filter(|(_, since)| *since <= version)
            .map(|(k, _)| (k.as_str(), kind_code(*k))),
    )
}

/// `Enum8(...)` of the `verdict` column.
pub fn verdict_enum() -> String {
    let verdicts = [
        (Verdict::Ok, "ok"),
        (Verdict::Drift, "drift"),
        (Verdict::Unregistered, "unregistered"),
    ];
    enum8(verdicts.iter().map(|(v, n)| (*n, verdict_code(*v))))
}

fn enum8<'a>(values: impl Iterator<Item = (&'a str, i8)>) -> String {
    let values: Vec<String> = values.map(|(n, c)| format!("'{n}' = {c}")).collect();
    format!("Enum8({})", values.join(", "))
}
