//! The ClickHouse config file (`--clickhouse-config`, `StoreConfig::from_text`): any text is an
//! error or a configuration that validates, and the password never shows, whatever the file
//! says around it.

use std::path::Path;

use nhiscope::publish::store::config::{check_url, StoreConfig};

/// What the password file holds here: it must appear in no message and no `Debug` output.
const CANARY: &str = "fuzz-canary-pw-7f3a";

pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The first line alone, as a `--clickhouse URL` flag.
    if let Some(url) = text.lines().next() {
        if let Ok(checked) = check_url(url) {
            assert_eq!(
                check_url(&checked).ok().as_deref(),
                Some(checked.as_str()),
                "a checked URL does not check again to itself"
            );
        }
    }
    // Text that holds the canary itself may well be echoed in an error.
    let planted = text.contains(CANARY);
    let no_env = |_: &str| None;
    let password = |_: &Path| Ok(format!("{CANARY}\n"));
    let loaded = StoreConfig::from_text(
        Some((Path::new("fuzz.yaml"), text)),
        None,
        None,
        &no_env,
        &password,
    );
    match loaded {
        Ok(Some(config)) => {
            if let Err(e) = config.validate() {
                panic!("a loaded configuration does not validate: {e}");
            }
            assert_eq!(
                check_url(&config.url).ok().as_deref(),
                Some(config.url.as_str()),
                "the loaded URL does not check again to itself"
            );
            assert!(
                planted || !format!("{config:?}").contains(CANARY),
                "Debug shows the password"
            );
            if let Some(pw) = &config.password {
                assert_eq!(
                    pw.expose(),
                    CANARY,
                    "the password file's text is not the password"
                );
            }
        }
        Ok(None) => panic!("a config file without a URL gave no error"),
        Err(e) => assert!(
            planted || !e.to_string().contains(CANARY),
            "an error shows the password"
        ),
    }
}
