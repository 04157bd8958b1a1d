//! nhiscope's userspace: the domain core (registry, patterns, attribution, verdicts) and the
//! adapters around it (probes, outputs).

pub mod app;
pub mod domain;
pub mod publish;
pub mod sense;
pub mod view;

#[cfg(test)]
mod canary_tests;
