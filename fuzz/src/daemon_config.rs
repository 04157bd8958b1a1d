//! The daemon's config file (`nhiscope daemon --config`, `nhiscope config check`,
//! `nhiscope::app::config::parse`): any text is a set of errors, each placed inside the text, or
//! settings the daemon can run with, whose values passed their flags' checks; the ClickHouse
//! password never shows, whatever the file says around it.

use std::path::Path;

use nhiscope::app::config::{self, ClickHouse, Flags, Settings, KEYS};

/// What every password file holds here: it must appear in no message and no `Debug` output.
const CANARY: &str = "fuzz-canary-pw-5d21";

pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let planted = text.contains(CANARY);
    let path = Path::new("/etc/nhiscope/fuzz.yaml");
    // libyaml places an error at the end of the input on the line after the last; the config
    // module moves it back inside.
    let lines = text.split('\n').count();
    let placed = |problems: &[config::Problem]| {
        assert!(!problems.is_empty(), "an error without a problem");
        for p in problems {
            let shown = p.to_string();
            assert!(!p.message.is_empty(), "an empty message: {shown}");
            if let Some((line, column)) = p.at {
                assert!(
                    line >= 1 && line <= lines && column >= 1,
                    "{shown}: outside the text's {lines} lines"
                );
            }
            assert!(
                planted || !shown.contains(CANARY),
                "an error shows the password"
            );
        }
    };
    for key in KEYS {
        for keys in [&[*key][..], &["clickhouse", key][..]] {
            if let Some((line, _)) = config::locate(text, keys) {
                assert!(line >= 1 && line <= lines, "{keys:?} located past the end");
            }
        }
    }
    let file = match config::parse(text, path) {
        Ok(f) => f,
        Err(problems) => return placed(&problems),
    };
    // A registry from the command line, so that every file can resolve.
    let flags = Flags {
        registry: Some("/etc/nhiscope/registry.yaml".into()),
        ..Flags::default()
    };
    let s = match Settings::resolve(Some(&file), &flags) {
        Ok(s) => s,
        Err(problems) => return placed(&problems),
    };
    if let Some(n) = s.ringbuf_size {
        assert!(n >= 4096 && n.is_power_of_two(), "ring size {n} accepted");
    }
    if let Some(r) = s.json_rotation {
        assert!(r.max_bytes > 0 && (1..=10_000).contains(&r.keep), "{r:?}");
        assert!(
            s.json.as_deref().is_some_and(|j| j != "-"),
            "rotation without a file"
        );
    }
    assert!(
        nhiscope::app::logging::parse_level(&s.log_level).is_ok(),
        "log level `{}` accepted",
        s.log_level
    );
    // A reload of the same file changes nothing.
    #[expect(clippy::expect_used, reason = "a failed check is the fuzzer's finding")]
    let again = Settings::resolve(Some(&file), &flags).expect("resolves twice");
    assert_eq!(config::changes(&s, &again), config::Changes::default());
    if let ClickHouse::Section { .. } = &s.clickhouse {
        let no_env = |_: &str| None;
        let password = |_: &Path| Ok(format!("{CANARY}\n"));
        match s.clickhouse.store_config_with(&no_env, &password) {
            Ok(Some(c)) => {
                if let Err(e) = c.validate() {
                    panic!("a loaded configuration does not validate: {e}");
                }
                assert!(
                    planted || !format!("{c:?}").contains(CANARY),
                    "Debug shows the password"
                );
            }
            Ok(None) => panic!("a clickhouse: section gave no store"),
            Err(problems) => placed(&problems),
        }
    }
}
