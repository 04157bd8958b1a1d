//! What stores and publishes decided events: the ClickHouse store with its disk spool (`store`),
//! the live feed on a unix socket (`live`), the JSON events file (`events_file`) and the
//! Prometheus metrics (`metrics`), and the daemon's own files, made so that no other local user
//! can read, replace or share them (`files`). Each takes the events the core made; none decides anything.
//! See docs/ARCHITECTURE.md.

pub mod events_file;
pub mod files;
pub mod live;
pub mod metrics;
pub mod store;
