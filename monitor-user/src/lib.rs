//! nhiscope's userspace: the domain core (registry, patterns, attribution, verdicts) and the
//! adapters around it (probes, outputs).

pub mod assets;
pub mod btf;
#[cfg(test)]
mod canary_tests;
pub mod cgroups;
pub mod cli;
pub mod config;
pub mod coverage;
pub mod daemon;
pub mod decode;
pub mod dns;
pub mod engine;
pub mod event;
pub mod events_file;
pub mod files;
pub mod filter;
pub mod host;
pub mod kubernetes;
pub mod live;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod pattern;
pub mod privileges;
pub mod probes;
pub mod proctable;
pub mod query;
pub mod redact;
pub mod registry;
pub mod resolve;
pub mod scope;
pub mod store;
pub mod tui;
pub mod verdict;
pub mod watchlist;
