//! Fuzz target: see `nhiscope_fuzz::store_config` for the input and the properties checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| nhiscope_fuzz::store_config::check(data));
