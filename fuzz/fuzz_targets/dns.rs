//! Fuzz target: see `nhiscope_fuzz::dns` for the input and the properties checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| nhiscope_fuzz::dns::check(data));
