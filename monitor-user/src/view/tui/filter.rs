//! The `/` filter: words that must all match, each anywhere or in one field.
//!
//! `billing` matches an NHI id or owner, an executable, a host or a verdict; `nhi:billing`,
//! `exe:python`, `host:web-1` (the machine, or a connection's destination and its DNS names) and
//! `verdict:drift` (also `ok`, `unregistered`, or a drift kind such as `verdict:endpoint`) match
//! one field. Case is ignored.

use crate::{
    domain::event::{Event, Verdict},
    view::tui::model::{NhiRow, Status, Subject},
};

/// Which field a word is matched against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    Any,
    Nhi,
    Exe,
    Host,
    Verdict,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Term {
    field: Field,
    /// Lower case.
    needle: String,
}

/// A parsed filter; the empty one matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    text: String,
    terms: Vec<Term>,
}

impl Filter {
    pub fn parse(text: &str) -> Self {
        let terms = text
            .split_whitespace()
            .map(|w| {
                let (field, needle) = match w.split_once(':') {
                    Some(("nhi", v)) => (Field::Nhi, v),
                    Some(("exe", v)) => (Field::Exe, v),
                    Some(("host", v)) => (Field::Host, v),
                    Some(("verdict", v)) => (Field::Verdict, v),
                    _ => (Field::Any, w),
                };
                Term {
                    field,
                    needle: needle.to_lowercase(),
                }
            })
            .filter(|t| !t.needle.is_empty())
            .collect();
        Self {
            text: text.to_owned(),
            terms,
        }
    }

    /// The text as typed.
    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    pub fn matches_event(&self, e: &Event) -> bool {
        self.terms.iter().all(|t| {
            let has = |s: &str| contains(s, &t.needle);
            let nhi = || match &e.nhi {
                Some(id) => has(id),
                None => e.verdict == Verdict::Unregistered && has("unregistered"),
            };
            let exe = || has(&e.exe) || has(&e.comm);
            let host = || {
                has(&e.host)
                    || e.daddr.is_some_and(|a| has(&a.to_string()))
                    || e.dns_names.iter().flatten().any(|n| has(n))
            };
            let verdict = || {
                e.verdict.as_str().starts_with(&t.needle) || e.drift.iter().any(|k| has(k.as_str()))
            };
            match t.field {
                Field::Nhi => nhi(),
                Field::Exe => exe(),
                Field::Host => host(),
                Field::Verdict => verdict(),
                Field::Any => {
                    nhi() || exe() || host() || verdict() || e.path.as_deref().is_some_and(has)
                }
            }
        })
    }

    pub fn matches_row(&self, r: &NhiRow<'_>) -> bool {
        self.terms.iter().all(|t| {
            let has = |s: &str| contains(s, &t.needle);
            let nhi = || match &r.subject {
                Subject::Nhi(id) => has(id),
                Subject::Unregistered => has("unregistered"),
            };
            let exe = || {
                r.stats
                    .is_some_and(|s| s.processes.keys().any(|exe| has(exe)))
            };
            let host = || {
                r.stats.is_some_and(|s| {
                    s.hosts.iter().any(|h| has(h))
                        || s.endpoints
                            .iter()
                            .any(|(d, seen)| has(d) || seen.names.iter().any(|n| has(n)))
                })
            };
            let verdict = || {
                let status = r.status();
                status.text().to_lowercase().starts_with(&t.needle)
                    || (status == Status::Unregistered && "unregistered".starts_with(&t.needle))
                    || r.stats
                        .is_some_and(|s| s.drift_kinds.keys().any(|k| has(k.as_str())))
            };
            match t.field {
                Field::Nhi => nhi(),
                Field::Exe => exe(),
                Field::Host => host(),
                Field::Verdict => verdict(),
                Field::Any => nhi() || r.owner().is_some_and(has) || exe() || host() || verdict(),
            }
        })
    }
}

/// Case-insensitive substring; `needle` is lower case already.
fn contains(hay: &str, needle: &str) -> bool {
    hay.to_lowercase().contains(needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event::{DriftKind, Kind};

    fn event() -> Event {
        let mut e = Event::bare(Kind::Connect, Verdict::Drift);
        e.nhi = Some("billing-s3".into());
        e.exe = "/usr/bin/python3".into();
        e.comm = "python3".into();
        e.host = "web-1".into();
        e.daddr = Some("127.0.0.9".parse().unwrap());
        e.dns_names = Some(vec!["evil.example".into()]);
        e.drift = vec![DriftKind::EndpointOutOfScope];
        e
    }

    #[test]
    fn words_match_anywhere_and_fields_only_their_field() {
        let e = event();
        for yes in [
            "",
            "billing",
            "BILLING python",
            "nhi:bill",
            "exe:python3",
            "host:web",
            "host:evil",
            "verdict:drift",
            "verdict:d",
            "verdict:endpoint",
            "127.0.0",
        ] {
            assert!(Filter::parse(yes).matches_event(&e), "{yes:?} should match");
        }
        for no in [
            "nhi:python",
            "exe:billing",
            "verdict:ok",
            "host:web-2",
            "billing cat",
        ] {
            assert!(
                !Filter::parse(no).matches_event(&e),
                "{no:?} should not match"
            );
        }
    }

    #[test]
    fn unregistered_events_are_found_by_name() {
        let mut e = Event::bare(Kind::Open, Verdict::Unregistered);
        e.path = Some("/root/.aws/credentials".into());
        assert!(Filter::parse("nhi:unreg").matches_event(&e));
        assert!(Filter::parse("verdict:unregistered").matches_event(&e));
        assert!(Filter::parse(".aws").matches_event(&e));
        assert!(!Filter::parse("verdict:drift").matches_event(&e));
    }

    #[test]
    fn an_empty_field_is_ignored() {
        assert!(Filter::parse("nhi:").matches_event(&event()));
        assert_eq!(Filter::parse("nhi:").text(), "nhi:");
    }
}
