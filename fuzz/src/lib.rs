//! The checks behind nhiscope's fuzz targets, one module per parser; each target in
//! `fuzz_targets/` hands its input to one of them.
//!
//! A check does what the program does with such input (parse it, then use what was accepted the
//! way the daemon or the dashboard would) and asserts the properties that must hold for any
//! input: a panic or a failed assertion is a crash for libFuzzer. They live in a library so that
//! the seed maker (`examples/seeds.rs`) and the tests below share them with the targets.

pub mod daemon_config;
pub mod decode;
pub mod dns;
pub mod live_protocol;
pub mod registry;
pub mod store_config;
pub mod wire;

#[cfg(test)]
mod tests {
    use std::{fs, path::Path};

    /// Every committed seed passes its check: a seed that crashes would stop the fuzzer at its
    /// first input, before it finds anything new.
    #[test]
    fn seeds_pass_their_checks() {
        type Check = fn(&[u8]);
        let targets: [(&str, Check); 7] = [
            ("registry", crate::registry::check),
            ("store_config", crate::store_config::check),
            ("daemon_config", crate::daemon_config::check),
            ("dns", crate::dns::check),
            ("decode", crate::decode::check),
            ("live_protocol", crate::live_protocol::check),
            ("wire", crate::wire::check),
        ];
        let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
        for (target, check) in targets {
            let mut n = 0;
            for entry in fs::read_dir(seeds.join(target)).expect("a seed directory") {
                let path = entry.expect("a seed").path();
                check(&fs::read(&path).expect("readable seed"));
                n += 1;
            }
            assert!(n > 0, "no seeds for {target}");
        }
    }
}
