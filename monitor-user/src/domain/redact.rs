//! Command lines without their secrets.
//!
//! Every event carries the command line of its process, and command lines are where careless
//! scripts put secrets: `curl -H "Authorization: Bearer $TOKEN"`, `mysql -pHunter2`,
//! `TOKEN=... ./deploy`, `git clone https://user:pw@host/...`. A monitor of secrets must not
//! become their copy machine, so a command line is cut down here, once, where it enters the
//! process table ([`crate::domain::proctable`]); the JSON file, the live feed, the spool, ClickHouse and
//! the logs only ever see what this module kept.
//!
//! The rules look at each argument, and at each word of an argument that holds several (a
//! `sh -c` script, a header): values of options whose name speaks of a secret (`--password x`,
//! `--token=x`, `-H 'Authorization: ...'` and the short options of the usual clients),
//! `NAME=value` pairs whose name does (`API_KEY=...`), the password of a URL's userinfo and the
//! secret parameters of its query, the credential after `Bearer`/`Basic`, and long words that
//! look random. What is removed becomes [`MASK`]; what an analyst needs (program, paths, hosts,
//! option names) stays. The rules err on the side of removing: a commit hash may go too.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::domain::event::SharedArgs;

/// What replaces a secret.
pub const MASK: &str = "***";

/// How much of a command line is kept (the daemon's `--cmdline`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum CmdlineMode {
    /// Every argument, with secret-looking values replaced by `***`.
    #[default]
    Redacted,
    /// Only the program (argv[0], itself redacted: programs may write a title there).
    Argv0,
    /// Every argument as the process gave it, secrets included. For debugging on test hosts.
    Full,
}

impl CmdlineMode {
    /// The command line as this mode keeps it.
    pub fn keep(self, argv: Vec<String>) -> Vec<String> {
        match self {
            Self::Full => argv,
            Self::Redacted => redact(&argv),
            Self::Argv0 => redact(&argv[..argv.len().min(1)]),
        }
    }

    /// The command line as this mode keeps it, from a borrowed one.
    fn keep_ref(self, argv: &[String]) -> Vec<String> {
        match self {
            Self::Full => argv.to_vec(),
            Self::Redacted => redact(argv),
            Self::Argv0 => redact(&argv[..argv.len().min(1)]),
        }
    }
}

/// How many command lines [`Kept`] remembers before it starts afresh.
const KEPT_CAP: usize = 512;

/// Command lines as a mode keeps them, remembered by the arguments given: a host runs the same
/// few command lines over and over (`sh -c true`, a service's workers), and redacting one is
/// far costlier than finding it again. Bounded: cleared when full.
#[derive(Debug, Default)]
pub struct Kept {
    mode: CmdlineMode,
    lines: HashMap<Vec<String>, SharedArgs, foldhash::fast::RandomState>,
    /// The same, by the bytes of an exec record's arguments (their count first, then the
    /// NUL-separated arguments): a command line seen before is not even turned into text.
    raw: HashMap<Box<[u8]>, SharedArgs, foldhash::fast::RandomState>,
    /// The key of the last [`Kept::keep_raw`], made in place.
    key: Vec<u8>,
}

impl Kept {
    /// `argv` as `mode` keeps it ([`CmdlineMode::keep`]), shared with every other process that
    /// ran the same command line.
    pub fn keep(&mut self, mode: CmdlineMode, argv: Vec<String>) -> SharedArgs {
        if mode != self.mode {
            self.mode = mode;
            self.lines.clear();
            self.raw.clear();
        }
        if let Some(kept) = self.lines.get(argv.as_slice()) {
            return kept.clone();
        }
        if self.lines.len() >= KEPT_CAP {
            self.lines.clear();
        }
        let kept = SharedArgs::from(match mode {
            CmdlineMode::Full => argv.clone(),
            _ => mode.keep_ref(&argv),
        });
        self.lines.insert(argv, kept.clone());
        kept
    }

    /// The arguments of an exec record as `mode` keeps them: `argc` of them in `raw`
    /// (NUL-separated, as the kernel copied them), turned into text by `argv` only when these
    /// bytes were not seen before.
    pub fn keep_raw(
        &mut self,
        mode: CmdlineMode,
        argc: u32,
        raw: &[u8],
        argv: impl FnOnce() -> Vec<String>,
    ) -> SharedArgs {
        self.key.clear();
        self.key.extend_from_slice(&argc.to_le_bytes());
        self.key.extend_from_slice(raw);
        if mode == self.mode {
            if let Some(kept) = self.raw.get(self.key.as_slice()) {
                return kept.clone();
            }
        }
        let kept = self.keep(mode, argv());
        if self.raw.len() >= KEPT_CAP {
            self.raw.clear();
        }
        self.raw.insert(self.key.as_slice().into(), kept.clone());
        kept
    }
}

/// What the argument after an option is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Next {
    /// A secret as a whole (`--password x`).
    Secret,
    /// A header, `Name: value` (`-H`, `--header`): the name stays.
    Header,
    /// `user:password` (curl's `-u`): the user stays.
    UserPass,
    /// The credential after an authorization header's name: an optional scheme word
    /// (`Bearer`), then the secret.
    AfterAuthName,
}

/// Clients whose short options carry secrets; each is recognised by its program's name, at
/// argv[0] or later (`sudo -u x mysql -p...`, `env A=b curl ...`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tool {
    Other,
    /// curl: `-H` header, `-u`/`-U` user:password.
    Curl,
    /// mysql and its siblings: `-pPASSWORD` (attached; a lone `-p` prompts).
    Mysql,
    /// sshpass, mongo*: `-p PASSWORD` or `-pPASSWORD`.
    DashP,
    /// redis-cli: `-a PASSWORD`.
    RedisCli,
}

impl Tool {
    fn of(arg: &str) -> Option<Self> {
        let base = arg.rsplit('/').next().unwrap_or(arg);
        Some(match base {
            "curl" | "curlie" => Self::Curl,
            "mysql" | "mysqldump" | "mysqladmin" | "mysqlimport" | "mysqlcheck" | "mysqlshow"
            | "mysqlpump" | "mysqlbinlog" | "mysqlslap" | "mariadb" | "mariadb-dump"
            | "mariadb-admin" | "mariadb-import" | "mariadb-check" => Self::Mysql,
            "sshpass" | "mongo" | "mongosh" | "mongodump" | "mongorestore" | "mongoexport"
            | "mongoimport" | "mongostat" | "mongotop" => Self::DashP,
            "redis-cli" | "valkey-cli" => Self::RedisCli,
            _ => return None,
        })
    }
}

/// The command line with every secret-looking value replaced by [`MASK`].
pub fn redact(argv: &[String]) -> Vec<String> {
    let mut tool = argv
        .first()
        .and_then(|a| Tool::of(a))
        .unwrap_or(Tool::Other);
    let mut next = None;
    let mut out = Vec::with_capacity(argv.len());
    for (i, arg) in argv.iter().enumerate() {
        if i > 0 && next.is_none() {
            if let Some(t) = Tool::of(arg) {
                tool = t;
            }
        }
        let (kept, after) = if arg.chars().any(char::is_whitespace) {
            (phrase(arg, next.take(), tool), None)
        } else {
            word(arg, next.take(), tool)
        };
        out.push(kept);
        next = after;
    }
    out
}

/// An argument of several words: a header given whole (`Authorization: Bearer x`), a script
/// (`sh -c '...'`). Its words go through the same rules as arguments; the spacing stays.
fn phrase(arg: &str, first: Option<Next>, tool: Tool) -> String {
    if let Some(Next::Secret) = first {
        return MASK.to_owned();
    }
    if let Some(Next::Header) = first {
        return header(arg);
    }
    if let Some((name, _)) = header_parts(arg) {
        if sensitive(name) {
            return header(arg);
        }
    }
    let mut out = String::with_capacity(arg.len());
    let mut next = first;
    let mut tool = tool;
    let mut rest = arg;
    while !rest.is_empty() {
        let space = rest.len() - rest.trim_start().len();
        out.push_str(&rest[..space]);
        rest = &rest[space..];
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let w = &rest[..end];
        rest = &rest[end..];
        if w.is_empty() {
            continue;
        }
        if next.is_none() {
            if let Some(t) = Tool::of(unquote(w)) {
                tool = t;
            }
        }
        // In a phrase the header's name may be a word of its own (`-H 'Authorization: x'`):
        // its value is then the words after it.
        let (kept, after) = match next.take() {
            Some(Next::Header) if unquote(w).ends_with(':') => {
                (w.to_owned(), Some(Next::AfterAuthName))
            }
            n => word(w, n, tool),
        };
        out.push_str(&kept);
        next = after;
    }
    out
}

/// A header `Name: value` with its value masked (the name says what it was).
fn header(arg: &str) -> String {
    match header_parts(arg) {
        Some((name, _)) => format!("{name}: {MASK}"),
        None => MASK.to_owned(),
    }
}

/// `Name: value` or `Name:value`, when `Name` could be a header name.
fn header_parts(arg: &str) -> Option<(&str, &str)> {
    let trimmed = unquote(arg.trim());
    let (name, value) = trimmed.split_once(':')?;
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    ok.then_some((name, value))
}

/// A word without the quotes a script put around it.
fn unquote(w: &str) -> &str {
    w.trim_matches(|c| c == '\'' || c == '"')
}

/// One word, given what the word before said it is; returns what is kept and what the next
/// word is.
fn word(w: &str, is: Option<Next>, tool: Tool) -> (String, Option<Next>) {
    match is {
        Some(Next::Secret) => return (MASK.to_owned(), None),
        Some(Next::Header) => return (header(w), None),
        Some(Next::UserPass) => return (user_pass(w), None),
        Some(Next::AfterAuthName) => {
            return if is_scheme(unquote(w)) {
                (w.to_owned(), Some(Next::Secret))
            } else {
                (MASK.to_owned(), None)
            };
        }
        None => {}
    }
    let bare = unquote(w);
    if is_scheme(bare) {
        return (w.to_owned(), Some(Next::Secret));
    }
    if let Some(kept) = url(bare) {
        return (kept, None);
    }
    if let Some(r) = option(bare, tool) {
        return r;
    }
    if let Some((name, v)) = bare.split_once('=') {
        if is_name(name) {
            if sensitive(name) {
                return (format!("{name}={MASK}"), None);
            }
            if let Some(kept) = kept_value(v) {
                return (format!("{name}={kept}"), None);
            }
        }
    }
    if let Some((name, value)) = header_parts(bare) {
        if sensitive(name) {
            // `Authorization:` alone: the value is the next word.
            return if value.is_empty() {
                (w.to_owned(), Some(Next::AfterAuthName))
            } else {
                (format!("{name}:{MASK}"), None)
            };
        }
    }
    if looks_random(bare) {
        return (MASK.to_owned(), None);
    }
    (w.to_owned(), None)
}

/// An option (`-x`, `--name`, `--name=value`, `-name`): what is kept of it and what its next
/// argument is, or `None` when the word is not an option.
fn option(w: &str, tool: Tool) -> Option<(String, Option<Next>)> {
    let body = w.strip_prefix('-')?;
    if body.is_empty() || body == "-" {
        return None;
    }
    let long = body.starts_with('-');
    let name_and_value = body.trim_start_matches('-');
    let (name, value) = match name_and_value.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (name_and_value, None),
    };
    let prefix = &w[..w.len() - name_and_value.len()];
    // Short options of the known clients, with their value attached or apart (a password may
    // hold any character).
    if !long {
        let mut chars = body.chars();
        let (flag, attached) = match chars.next() {
            Some(c) => (c, chars.as_str()),
            None => return None,
        };
        let short = match (tool, flag) {
            (Tool::Curl, 'H') => Some(Next::Header),
            (Tool::Curl, 'u' | 'U') => Some(Next::UserPass),
            (Tool::Mysql, 'p') if !attached.is_empty() => {
                return Some((format!("-p{MASK}"), None));
            }
            (Tool::DashP, 'p') => Some(Next::Secret),
            (Tool::RedisCli, 'a') => Some(Next::Secret),
            _ => None,
        };
        if let Some(kind) = short {
            if attached.is_empty() {
                return Some((w.to_owned(), Some(kind)));
            }
            let attached = attached.strip_prefix('=').unwrap_or(attached);
            let kept = match kind {
                Next::Header => header(attached),
                Next::UserPass => user_pass(attached),
                _ => MASK.to_owned(),
            };
            return Some((format!("-{flag}{kept}"), None));
        }
        if !is_name(name) {
            return None;
        }
        if name.chars().count() == 1 {
            return Some((w.to_owned(), None));
        }
    }
    let lower = name.to_ascii_lowercase();
    let kind = if lower == "header" || lower == "proxy-header" {
        Some(Next::Header)
    } else if tool == Tool::Curl && (lower == "user" || lower == "proxy-user") {
        Some(Next::UserPass)
    } else if sensitive(name) {
        Some(Next::Secret)
    } else {
        None
    };
    Some(match (value, kind) {
        // mysql's `--password` without a value prompts: the next word is not its password.
        (None, Some(Next::Secret)) if tool == Tool::Mysql && lower == "password" => {
            (w.to_owned(), None)
        }
        (None, kind) => (w.to_owned(), kind),
        // `--header=Authorization: Bearer x` in a script: the value is in the next words.
        (Some(v), Some(Next::Header)) if header_parts(v).is_some_and(|(_, v)| v.is_empty()) => {
            (w.to_owned(), Some(Next::AfterAuthName))
        }
        (Some(v), Some(Next::Header)) => (format!("{prefix}{name}={}", header(v)), None),
        (Some(v), Some(Next::UserPass)) => (format!("{prefix}{name}={}", user_pass(v)), None),
        (Some(_), Some(_)) => (format!("{prefix}{name}={MASK}"), None),
        (Some(v), None) => match kept_value(v) {
            Some(kept) => (format!("{prefix}{name}={kept}"), None),
            None => (w.to_owned(), None),
        },
    })
}

/// What is kept of an option's or variable's value when the value itself gives a secret away
/// (a URL with a password, a random word), or `None` when it stays as it is.
fn kept_value(v: &str) -> Option<String> {
    if let Some(kept) = url(v) {
        return (kept != v).then_some(kept);
    }
    looks_random(v).then(|| MASK.to_owned())
}

/// `user:password` with the password masked; a lone user stays.
fn user_pass(w: &str) -> String {
    match w.split_once(':') {
        Some((user, _)) => format!("{user}:{MASK}"),
        None => w.to_owned(),
    }
}

/// A URL with its userinfo's password and its query's secret parameters masked, or `None` when
/// `w` is not a URL.
fn url(w: &str) -> Option<String> {
    let at = w.find("://")?;
    let scheme = &w[..at];
    if scheme.is_empty()
        || !scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
    {
        return None;
    }
    let rest = &w[at + 3..];
    let auth_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..auth_end];
    let mut out = String::with_capacity(w.len());
    out.push_str(&w[..at + 3]);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            out.push_str(&user_pass(userinfo));
            out.push('@');
            out.push_str(host);
        }
        None => out.push_str(authority),
    }
    let tail = &rest[auth_end..];
    match tail.split_once('?') {
        Some((path, query)) => {
            out.push_str(path);
            out.push('?');
            let (query, fragment) = match query.split_once('#') {
                Some((q, f)) => (q, Some(f)),
                None => (query, None),
            };
            let params: Vec<String> = query
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some((k, v)) if sensitive(k) || looks_random(v) => format!("{k}={MASK}"),
                    _ => p.to_owned(),
                })
                .collect();
            out.push_str(&params.join("&"));
            if let Some(f) = fragment {
                out.push('#');
                out.push_str(f);
            }
        }
        None => out.push_str(tail),
    }
    Some(out)
}

/// An authorization scheme word, after which the credential comes.
fn is_scheme(w: &str) -> bool {
    w.eq_ignore_ascii_case("bearer") || w.eq_ignore_ascii_case("basic")
}

/// Whether `s` can be the name of an option or variable.
fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// Whether a name (option, variable, header, query parameter) says its value is a secret:
/// it speaks of a key, token, secret, password, credential, authorization or cookie. A name
/// for where a secret is (`--password-file`, `AWS_SHARED_CREDENTIALS_FILE`) is not a secret.
pub fn sensitive(name: &str) -> bool {
    let up = name.to_ascii_uppercase();
    let parts: Vec<&str> = up
        .split(['-', '_', '.'])
        .filter(|p| !p.is_empty())
        .collect();
    if parts
        .last()
        .is_some_and(|p| matches!(*p, "FILE" | "PATH" | "DIR" | "FD"))
    {
        return false;
    }
    if parts.iter().any(|p| {
        matches!(
            *p,
            "PASS" | "PASSIN" | "PASSOUT" | "PW" | "PASSPHRASE" | "SIG"
        )
    }) {
        return true;
    }
    // AUTHOR (git's GIT_AUTHOR_NAME, --author) is a person, AUTHORIZATION a credential.
    let auth = up.contains("AUTH") && (!up.contains("AUTHOR") || up.contains("AUTHORIZ"));
    auth || [
        "KEY",
        "TOKEN",
        "SECRET",
        "PASSWORD",
        "PASSWD",
        "CREDENTIAL",
        "COOKIE",
        "BEARER",
    ]
    .iter()
    .any(|w| up.contains(w))
}

/// Shortest word taken for a random secret by its look alone.
const RANDOM_MIN_LEN: usize = 24;

/// Whether a word looks like a random secret: long, from a base64/hex-like alphabet, mixing
/// letters and digits. Paths (with slashes at their start or between short parts) and words
/// with dots (host and file names) are not.
pub fn looks_random(w: &str) -> bool {
    let w = unquote(w);
    if known_prefix(w) {
        return true;
    }
    if w.len() < RANDOM_MIN_LEN {
        return false;
    }
    if !w
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'_' | b'-'))
    {
        return false;
    }
    // A path is words between slashes; base64 may have a slash, rarely at the start.
    if w.starts_with('/') || w.starts_with('-') {
        return false;
    }
    if w.contains('/') && w.split('/').any(|part| part.len() < 4) {
        return false;
    }
    let (mut lower, mut upper, mut digit) = (0usize, 0usize, 0usize);
    for b in w.bytes() {
        match b {
            b'a'..=b'z' => lower += 1,
            b'A'..=b'Z' => upper += 1,
            b'0'..=b'9' => digit += 1,
            _ => {}
        }
    }
    let letters = lower + upper;
    if digit == 0 || letters == 0 {
        return false;
    }
    // Words made for people (`my-long-option-name-2`) have few digits and long runs of
    // lowercase; random text mixes classes all along. A hex digest is random as well.
    let hex = w.bytes().all(|b| b.is_ascii_hexdigit());
    let classes = [lower, upper, digit].iter().filter(|&&n| n > 0).count();
    let mixed = transitions(w) * 4 >= w.len();
    (hex && w.len() >= 32)
        || (classes == 3 && mixed)
        || (classes == 2 && digit * 5 >= w.len() && mixed)
}

/// How often the character class changes from one character to the next.
fn transitions(w: &str) -> usize {
    let class = |b: u8| match b {
        b'a'..=b'z' => 0,
        b'A'..=b'Z' => 1,
        b'0'..=b'9' => 2,
        _ => 3,
    };
    w.as_bytes()
        .windows(2)
        .filter(|p| class(p[0]) != class(p[1]))
        .count()
}

/// Prefixes of well-known token formats (GitHub, GitLab, Slack, AWS access key ids, OpenAI-like
/// `sk-`): such a word is a secret at any length past its prefix.
fn known_prefix(w: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "ghp_",
        "gho_",
        "ghu_",
        "ghs_",
        "ghr_",
        "github_pat_",
        "glpat-",
        "xoxb-",
        "xoxp-",
        "xoxa-",
        "xoxs-",
        "AKIA",
        "ASIA",
        "sk-",
        "sk_live_",
        "rk_live_",
        "hf_",
        "npm_",
    ];
    PREFIXES.iter().any(|p| {
        w.strip_prefix(p).is_some_and(|rest| {
            rest.len() >= 12
                && rest.bytes().any(|b| b.is_ascii_digit())
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(args: &[&str]) -> Vec<String> {
        redact(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    const TOKEN: &str = "s3cr3tCanary";

    /// Nothing of the secret is left, and the command line keeps its shape.
    fn gone(args: &[&str], secret: &str) -> Vec<String> {
        let out = r(args);
        assert_eq!(out.len(), args.len(), "{out:?}");
        assert!(
            out.iter().all(|a| !a.contains(secret)),
            "{secret} left in {out:?}"
        );
        out
    }

    #[test]
    fn curl_headers_and_users() {
        let out = gone(
            &[
                "curl",
                "-H",
                "Authorization: Bearer s3cr3tCanary",
                "https://api.example.com/v1",
            ],
            TOKEN,
        );
        assert_eq!(out[2], "Authorization: ***");
        assert_eq!(out[3], "https://api.example.com/v1");
        let out = gone(&["curl", "--header", "X-Api-Key: s3cr3tCanary", "x"], TOKEN);
        assert_eq!(out[2], "X-Api-Key: ***");
        gone(&["curl", "--header=Authorization: s3cr3tCanary"], TOKEN);
        gone(&["curl", "-HAuthorization: token s3cr3tCanary"], TOKEN);
        let out = gone(&["curl", "-u", "deploy:s3cr3tCanary", "https://h"], TOKEN);
        assert_eq!(out[2], "deploy:***");
        gone(&["curl", "-udeploy:s3cr3tCanary"], TOKEN);
        gone(&["curl", "--user", "deploy:s3cr3tCanary"], TOKEN);
        gone(&["/usr/bin/curl", "--oauth2-bearer", "s3cr3tCanary"], TOKEN);
        // Through a wrapper, the client is still known.
        gone(
            &["sudo", "-u", "app", "curl", "-u", "a:s3cr3tCanary"],
            TOKEN,
        );
        // `-u` of other programs is not a password.
        assert_eq!(
            r(&["sudo", "-u", "app", "id"]),
            vec!["sudo", "-u", "app", "id"]
        );
    }

    #[test]
    fn password_token_and_key_options() {
        for args in [
            &["app", "--password=s3cr3tCanary"][..],
            &["app", "--password", "s3cr3tCanary"],
            &["app", "--token", "s3cr3tCanary"],
            &["app", "--api-key", "s3cr3tCanary"],
            &["app", "--api-key=s3cr3tCanary"],
            &["app", "--secret", "s3cr3tCanary"],
            &["app", "--client-secret=s3cr3tCanary"],
            &["app", "--auth-token", "s3cr3tCanary"],
            &["openssl", "enc", "-pass", "s3cr3tCanary"],
            &["java", "-Ddb.password=s3cr3tCanary", "-jar", "x.jar"],
            &["vault", "login", "-token=s3cr3tCanary"],
        ] {
            gone(args, TOKEN);
        }
        assert_eq!(
            r(&["app", "--password", "x"]),
            vec!["app", "--password", "***"]
        );
        assert_eq!(r(&["app", "--token=x"]), vec!["app", "--token=***"]);
        // Where a secret is kept is not a secret: the path stays.
        assert_eq!(
            r(&["app", "--password-file", "/run/secrets/db"]),
            vec!["app", "--password-file", "/run/secrets/db"]
        );
        assert_eq!(
            r(&["app", "--key-file=/etc/app/key.pem"]),
            vec!["app", "--key-file=/etc/app/key.pem"]
        );
    }

    #[test]
    fn client_short_options() {
        assert_eq!(
            r(&["mysql", "-u", "root", "-pHunter2", "db"]),
            vec!["mysql", "-u", "root", "-p***", "db"]
        );
        // A lone `-p` prompts: the next word is the database.
        assert_eq!(r(&["mysql", "-p", "db"]), vec!["mysql", "-p", "db"]);
        gone(&["mysqldump", "--password=s3cr3tCanary", "db"], TOKEN);
        gone(&["sshpass", "-p", "s3cr3tCanary", "ssh", "host"], TOKEN);
        gone(&["redis-cli", "-a", "s3cr3tCanary", "ping"], TOKEN);
        gone(&["mongosh", "-u", "x", "-p", "s3cr3tCanary"], TOKEN);
        // `-p` of other programs is a port.
        assert_eq!(
            r(&["ssh", "-p", "2222", "h"]),
            vec!["ssh", "-p", "2222", "h"]
        );
    }

    #[test]
    fn name_value_pairs() {
        for args in [
            &["env", "API_KEY=s3cr3tCanary", "./run"][..],
            &["GITHUB_TOKEN=s3cr3tCanary"],
            &["x", "aws_secret_access_key=s3cr3tCanary"],
            &["x", "DB_PASSWD=s3cr3tCanary"],
            &["x", "Credentials=s3cr3tCanary"],
            &["x", "BASIC_AUTH=s3cr3tCanary"],
            &["x", "session_cookie=s3cr3tCanary"],
        ] {
            gone(args, TOKEN);
        }
        assert_eq!(
            r(&["env", "TOKEN=x", "run"]),
            vec!["env", "TOKEN=***", "run"]
        );
        for keep in [
            "PATH=/usr/bin:/bin",
            "LANG=C.UTF-8",
            "GIT_AUTHOR_NAME=Ann",
            "AWS_SHARED_CREDENTIALS_FILE=/srv/aws/credentials",
            "PWD=/home/ann",
        ] {
            assert_eq!(r(&["env", keep]), vec!["env", keep]);
        }
    }

    #[test]
    fn urls_lose_their_password_and_secret_parameters() {
        assert_eq!(
            r(&[
                "git",
                "clone",
                "https://bot:s3cr3tCanary@git.example.com/team/repo.git"
            ]),
            vec![
                "git",
                "clone",
                "https://bot:***@git.example.com/team/repo.git"
            ]
        );
        assert_eq!(
            r(&[
                "psql",
                "postgres://app:s3cr3tCanary@db:5432/app?sslmode=require"
            ]),
            vec!["psql", "postgres://app:***@db:5432/app?sslmode=require"]
        );
        assert_eq!(
            r(&["curl", "https://h/x?access_token=s3cr3tCanary&page=2#top"]),
            vec!["curl", "https://h/x?access_token=***&page=2#top"]
        );
        // A user without a password, and a URL without userinfo, stay.
        let plain = ["git", "clone", "ssh://git@github.com/org/repo.git"];
        assert_eq!(r(&plain), plain.to_vec());
        gone(&["curl", "--url=https://u:s3cr3tCanary@h/"], TOKEN);
    }

    #[test]
    fn bearer_and_basic_anywhere() {
        gone(
            &["http", "GET", "h", "Authorization:Bearer s3cr3tCanary"],
            TOKEN,
        );
        gone(
            &["wget", "--header=Authorization: Basic s3cr3tCanary", "h"],
            TOKEN,
        );
        gone(&["x", "Bearer", "s3cr3tCanary"], TOKEN);
        gone(&["x", "the header is Bearer s3cr3tCanary ok"], TOKEN);
        gone(&["http", "h", "X-Auth-Token:s3cr3tCanary"], TOKEN);
    }

    #[test]
    fn scripts_are_redacted_word_by_word() {
        let out = gone(
            &[
                "sh",
                "-c",
                "curl -sf -H 'Authorization: Bearer s3cr3tCanary' https://h/x && echo done",
            ],
            TOKEN,
        );
        assert!(
            out[2].starts_with("curl -sf -H 'Authorization:"),
            "{}",
            out[2]
        );
        assert!(out[2].ends_with("https://h/x && echo done"), "{}", out[2]);
        gone(
            &["bash", "-c", "TOKEN=s3cr3tCanary ./deploy.sh --fast"],
            TOKEN,
        );
        gone(
            &["sh", "-c", "mysql -uroot -ps3cr3tCanary db < dump.sql"],
            TOKEN,
        );
        gone(
            &["sh", "-c", "git push https://x:s3cr3tCanary@h/r.git main"],
            TOKEN,
        );
    }

    #[test]
    fn random_looking_words() {
        for secret in [
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "ghp_16C7e42F292c6912E7710c838347Ae178B4a",
            "AKIAIOSFODNN7EXAMPLE",
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            "dGhpcyBpcyBhIHNlY3JldCB0b2tlbjEyMw==",
            "xoxb-123456789012-abcdefABCDEF",
        ] {
            assert!(looks_random(secret), "{secret}");
            assert_eq!(r(&["x", secret]), vec!["x", "***"], "{secret}");
            assert_eq!(
                r(&["x", &format!("--data={secret}")]),
                vec!["x", "--data=***"]
            );
        }
        for ordinary in [
            "/home/ann/projects/nhiscope/target/release/deps/libfoo-0123456789abcdef.rlib",
            "/usr/lib/x86_64-linux-gnu/libssl.so.3",
            "very-long-option-value-for-people",
            "--disable-background-timer-throttling",
            "some_config_file_name_2024.yaml",
            "ThisIsAVeryLongCamelCaseIdentifier",
            "api.eu-west-1.amazonaws.com",
            "2026-01-01T00:00:00Z",
            "x86_64-unknown-linux-gnu",
            "org/team/some-repository-name",
        ] {
            assert!(!looks_random(ordinary), "{ordinary}");
            assert_eq!(r(&["x", ordinary]), vec!["x", ordinary], "{ordinary}");
        }
    }

    #[test]
    fn modes() {
        let argv: Vec<String> = ["curl", "-u", "a:b", "https://h"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(CmdlineMode::default(), CmdlineMode::Redacted);
        assert_eq!(
            CmdlineMode::Redacted.keep(argv.clone()),
            vec!["curl", "-u", "a:***", "https://h"]
        );
        assert_eq!(CmdlineMode::Argv0.keep(argv.clone()), vec!["curl"]);
        assert_eq!(CmdlineMode::Full.keep(argv.clone()), argv);
        assert!(CmdlineMode::Argv0.keep(Vec::new()).is_empty());
        // A title a program wrote into argv[0] is redacted too.
        assert_eq!(
            CmdlineMode::Argv0.keep(vec!["worker TOKEN=abc".into(), "x".into()]),
            vec!["worker TOKEN=***"]
        );
    }

    #[test]
    fn an_exec_record_s_arguments_are_remembered_by_their_bytes_and_count() {
        let mut kept = Kept::default();
        let split = |raw: &[u8], argc: u32| -> Vec<String> {
            raw.split(|&b| b == 0)
                .take(argc as usize)
                .map(crate::domain::text::lossy)
                .collect()
        };
        let mut made = 0;
        let raw = b"curl\0-u\0a:hunter2\0https://h\0";
        for mode in [
            CmdlineMode::Redacted,
            CmdlineMode::Full,
            CmdlineMode::Redacted,
        ] {
            for argc in [4, 2, 5, 4] {
                let got = kept.keep_raw(mode, argc, raw, || {
                    made += 1;
                    split(raw, argc)
                });
                assert_eq!(got, mode.keep(split(raw, argc)), "{mode:?} {argc}");
            }
        }
        // Each (mode, count) is turned into text once; a mode change forgets them.
        assert_eq!(made, 9);
        let redacted = kept.keep_raw(CmdlineMode::Redacted, 4, raw, || unreachable!());
        assert_eq!(redacted, vec!["curl", "-u", "a:***", "https://h"]);
        // Five of "a\0b\0" are three arguments, the last empty; two are two.
        assert_ne!(
            kept.keep_raw(CmdlineMode::Full, 5, b"a\0b\0", || split(b"a\0b\0", 5)),
            kept.keep_raw(CmdlineMode::Full, 2, b"a\0b\0", || split(b"a\0b\0", 2))
        );
    }

    #[test]
    fn remembered_lines_are_those_the_mode_keeps() {
        let mut kept = Kept::default();
        let lines: Vec<Vec<String>> = [
            &["curl", "-u", "a:b", "https://h"][..],
            &["sh", "-c", "true"],
            &["mysql", "-pHunter2", "db"],
            &[],
        ]
        .iter()
        .map(|a| a.iter().map(|s| s.to_string()).collect())
        .collect();
        for round in 0..3 {
            for mode in [CmdlineMode::Redacted, CmdlineMode::Argv0, CmdlineMode::Full] {
                for argv in &lines {
                    let got = kept.keep(mode, argv.clone());
                    assert_eq!(
                        got,
                        mode.keep(argv.clone()),
                        "{mode:?} {argv:?} round {round}"
                    );
                }
            }
        }
        // Past its bound it starts afresh, and still answers right.
        for i in 0..KEPT_CAP * 2 + 3 {
            let argv = vec!["app".to_string(), format!("--password=p{i}")];
            assert_eq!(
                kept.keep(CmdlineMode::Redacted, argv),
                vec!["app", "--password=***"]
            );
            assert!(kept.lines.len() <= KEPT_CAP);
        }
    }

    #[test]
    fn redaction_is_stable() {
        // Redacting what was redacted changes nothing (the /proc fallback may pass twice).
        for args in [
            &[
                "curl",
                "-H",
                "Authorization: Bearer x",
                "-u",
                "a:b",
                "https://u:p@h/?token=t",
            ][..],
            &["mysql", "-pX", "API_KEY=y"],
        ] {
            let once = r(args);
            let twice = redact(&once);
            assert_eq!(once, twice);
        }
    }

    #[test]
    fn odd_input_never_panics() {
        for args in [
            &[][..],
            &[""],
            &["-"],
            &["--"],
            &["--="],
            &["="],
            &["://"],
            &["a://@"],
            &["x://u:@h?"],
            &["é=ü", "-é", "--ü=é", "Bearer"],
            &["curl", "-H"],
            &["curl", "-u"],
            &["  ", "\t"],
            &["sh", "-c", "Authorization: "],
        ] {
            let _ = r(args);
        }
    }
}
