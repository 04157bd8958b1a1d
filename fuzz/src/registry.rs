//! The registry parser (`nhiscope::domain::registry::parse`): whatever it accepts, the daemon must be
//! able to run with. The daemon once exited 101 at start on a registry `registry check`
//! accepted (an `expires` whose offset carried it past year 9999, which humantime cannot
//! format), so everything the daemon does with a fresh registry is done here too.

use nhiscope::{domain::filter, domain::registry, publish::live::RegistrySummary};

/// Hash keys to build the kernel filter with: the daemon draws one at random at start.
const KEYS: [u64; 2] = [0, 0x9e37_79b9_7f4a_7c15];

pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(reg) = registry::parse(text, "fuzz.yaml") else {
        return;
    };
    for key in KEYS {
        // Loading checked every pattern against the filter's rules, so compiling cannot fail.
        let plan = match filter::compile(key, reg.all_patterns()) {
            Ok(plan) => plan,
            Err(e) => panic!("an accepted registry has a pattern the filter refuses: {e}"),
        };
        // A credential the filter drops is one the daemon never sees opened.
        for glob in reg.all_patterns().into_iter().filter(|g| g.is_literal()) {
            let path = glob.as_str();
            assert!(
                plan.may_match(path.as_bytes()),
                "the kernel filter drops opens of `{path}`, a watched path"
            );
            assert!(reg.is_watched(path), "`{path}` is listed but not watched");
        }
    }
    for nhi in &reg.nhis {
        for cred in nhi.credentials.iter().filter(|g| g.is_literal()) {
            assert!(
                reg.owner_of(cred.as_str()).is_some(),
                "credential `{cred}` of NHI {} has no owner",
                nhi.id
            );
        }
        // The daemon writes `expires` in drift reasons and in the live feed's registry.
        if let Some(expires) = nhi.expires {
            let written = humantime::format_rfc3339_seconds(expires).to_string();
            let again = registry::parse(
                &format!("nhis:\n  - id: x\n    holders: {{uid: [0]}}\n    expires: '{written}'\n"),
                "again.yaml",
            );
            let read_back = again
                .ok()
                .and_then(|r| r.nhis.first().and_then(|n| n.expires));
            let whole_seconds = |t: std::time::SystemTime| {
                t.duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .ok()
            };
            assert_eq!(
                read_back.and_then(whole_seconds),
                whole_seconds(expires),
                "`expires` written as `{written}` does not read back"
            );
        }
        if let Some(max_age) = nhi.max_age {
            let _ = humantime::format_duration(max_age).to_string();
        }
    }
    // What the live feed sends in `hello` and on every reload.
    let summary = RegistrySummary::from(&reg);
    if let Err(e) = serde_json::to_string(&summary) {
        panic!("the registry summary does not serialise: {e}");
    }
}
