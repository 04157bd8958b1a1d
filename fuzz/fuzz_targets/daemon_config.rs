//! Fuzz target: see `nhiscope_fuzz::daemon_config` for the input and the properties checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| nhiscope_fuzz::daemon_config::check(data));
