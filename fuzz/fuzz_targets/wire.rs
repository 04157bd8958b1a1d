//! Fuzz target: see `nhiscope_fuzz::wire` for the input and the properties checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| nhiscope_fuzz::wire::check(data));
