use super::*;

fn g(s: &str) -> Glob {
    Glob::parse(s).unwrap()
}

/// Splits the first component off a path remainder: `a/b/c` -> (`a`, `b/c`), `a` -> (`a`, none).
fn split_first(rest: &str) -> (&str, Option<&str>) {
    match rest.split_once('/') {
        Some((head, tail)) => (head, Some(tail)),
        None => (rest, None),
    }
}

/// The obvious recursive matcher, exponential in the number of `**`: the oracle of the tests.
fn reference(parts: &[Component], rest: Option<&str>) -> bool {
    let Some((first, tail)) = parts.split_first() else {
        return rest.is_none();
    };
    if *first == Component::DoubleStar {
        if tail.is_empty() {
            // A trailing `**` matches everything below, not the directory itself.
            return rest.is_some();
        }
        let mut rest = rest;
        loop {
            if reference(tail, rest) {
                return true;
            }
            match rest {
                Some(r) => rest = split_first(r).1,
                None => return false,
            }
        }
    }
    let Some(r) = rest else { return false };
    let (head, next) = split_first(r);
    if head.is_empty() {
        return false;
    }
    match first {
        Component::Literal(name) => name == head && reference(tail, next),
        Component::Wild(pat) => {
            wild_match(pat.as_bytes(), head.as_bytes(), true, false) && reference(tail, next)
        }
        Component::HomeDirs => match head {
            "root" => reference(tail, next),
            "home" => match next.map(split_first) {
                Some((user, after)) if !user.is_empty() => reference(tail, after),
                _ => false,
            },
            _ => false,
        },
        Component::DoubleStar => false, // handled above
    }
}

#[test]
fn linear_matcher_agrees_with_the_reference() {
    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = |n: usize| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % n as u64) as usize
    };
    const PARTS: [&str; 7] = ["a", "b", "*", "a*", "?", "**", "**"];
    const NAMES: [&str; 4] = ["a", "b", "ab", "ba"];
    for _ in 0..3000 {
        let n = 1 + next(5);
        let mut pat: Vec<&str> = (0..n).map(|_| PARTS[next(PARTS.len())]).collect();
        let home = next(4) == 0;
        if home {
            pat.insert(0, "~");
        }
        let pat = if home {
            pat.join("/")
        } else {
            format!("/{}", pat.join("/"))
        };
        let glob = g(&pat);
        for _ in 0..20 {
            let mut path: Vec<&str> = (0..1 + next(6)).map(|_| NAMES[next(NAMES.len())]).collect();
            match next(4) {
                0 => path.insert(0, "root"),
                1 => path.splice(0..0, ["home", "ann"]).for_each(drop),
                _ => {}
            }
            let path = format!("/{}", path.join("/"));
            let want = reference(glob.components(), path.strip_prefix('/'));
            assert_eq!(glob.matches(&path), want, "{pat} on {path}");
        }
    }
}

#[test]
fn matching_is_not_exponential_in_double_stars() {
    let p = g("/**/a/**/a/**/a/**/a/**/a/**/b");
    let deep = format!("/{}c", "a/".repeat(2000));
    let t = std::time::Instant::now();
    assert!(!p.matches(&deep));
    assert!(t.elapsed() < std::time::Duration::from_secs(2));
    assert!(p.matches(&format!("/{}b", "a/".repeat(2000))));
}

#[test]
fn literal_and_single_wildcards() {
    let p = g("/etc/billing/aws-credentials");
    assert!(p.is_literal());
    assert!(p.matches("/etc/billing/aws-credentials"));
    assert!(!p.matches("/etc/billing/aws-credentials2"));
    assert!(!p.matches("/etc/billing"));
    assert!(!p.matches("etc/billing/aws-credentials"));
    // A literal glob is matched by comparing the text: no other spelling may match, as none
    // does by components.
    for path in [
        "/etc/billing/aws-credentials/",
        "/etc//billing/aws-credentials",
        "/etc/billing/./aws-credentials",
        "//etc/billing/aws-credentials",
        "/etc/billing/aws-credentials/.",
        "/",
        "",
    ] {
        let want = reference(p.components(), path.strip_prefix('/'));
        assert!(!want && !p.matches(path), "{path}");
    }
    assert!(!g("/a/*").is_literal() && !g("~/.netrc").is_literal() && !g("/**").is_literal());
    let p = g("/usr/bin/python3*");
    assert!(p.matches("/usr/bin/python3") && p.matches("/usr/bin/python3.12"));
    assert!(!p.matches("/usr/bin/python2") && !p.matches("/usr/bin/python3/x"));
    let p = g("/a/*/c");
    assert!(p.matches("/a/b/c") && !p.matches("/a/c") && !p.matches("/a/b/b/c"));
    let p = g("/a/?.key");
    assert!(p.matches("/a/x.key") && !p.matches("/a/.key") && !p.matches("/a/xy.key"));
    let p = g("/s/*a*b*");
    assert!(p.matches("/s/ab") && p.matches("/s/xaxxbx") && !p.matches("/s/ba"));
    assert!(g("/x/*").matches("/x/y") && !g("/x/*").matches("/x/"));
}

#[test]
fn double_star() {
    let p = g("/a/**/b");
    for ok in ["/a/b", "/a/x/b", "/a/x/y/b", "/a/b/b"] {
        assert!(p.matches(ok), "{ok}");
    }
    for no in ["/a", "/b", "/a/b/c", "/x/a/b", "/a/bb"] {
        assert!(!p.matches(no), "{no}");
    }
    let p = g("/srv/**");
    assert!(p.matches("/srv/a") && p.matches("/srv/a/b/c"));
    assert!(!p.matches("/srv") && !p.matches("/srvx/a"));
    let p = g("/**/.env");
    assert!(p.matches("/.env") && p.matches("/home/ann/app/.env") && !p.matches("/app/.envrc"));
    let p = g("/srv/**/secrets/*.json");
    assert!(p.matches("/srv/secrets/a.json") && p.matches("/srv/x/y/secrets/db.json"));
    assert!(!p.matches("/srv/secrets/x/a.json"));
    let p = g("/a/**/**/b/**/c");
    assert_eq!(p.components().len(), 5);
    assert!(p.matches("/a/b/c") && p.matches("/a/1/2/b/3/c") && !p.matches("/a/c"));
}

#[test]
fn home_dirs() {
    let p = g("~/.aws/credentials");
    assert_eq!(p.components()[0], Component::HomeDirs);
    assert!(p.matches("/root/.aws/credentials"));
    assert!(p.matches("/home/ann/.aws/credentials"));
    assert!(!p.matches("/home/.aws/credentials"));
    assert!(!p.matches("/home/ann/x/.aws/credentials"));
    assert!(!p.matches("/srv/ann/.aws/credentials"));
    assert!(!p.matches("/rootx/.aws/credentials"));
    assert!(g("~/**/.env").matches("/home/bob/src/app/.env"));
    assert!(g("/tmp/~x").matches("/tmp/~x"));
}

#[test]
fn parse_errors_say_what_is_wrong() {
    let cases = [
        ("etc/x", "is not absolute"),
        ("", "is not absolute"),
        ("/", "empty path component"),
        ("/etc//x", "empty path component"),
        ("/etc/x/", "empty path component"),
        ("~/", "empty path component"),
        ("/etc/../x", "`.` or `..`"),
        ("/a/b**/c", "whole path component"),
        ("~ann/.aws/credentials", "leading `~/`"),
        ("/etc/[ab]", "character classes"),
        ("/etc/{a,b}", "alternatives (`{a,b}`)"),
        ("/etc/a\0", "NUL"),
    ];
    for (text, want) in cases {
        let e = Glob::parse(text).unwrap_err().to_string();
        assert!(e.contains(want), "{text:?}: {e}");
    }
}

#[test]
fn display_equality_and_serde() {
    let p = g("/a/**/**/b");
    assert_eq!(p.to_string(), "/a/**/**/b");
    assert_eq!(p, g("/a/**/b"));
    let v: Vec<Glob> = serde_norway::from_str("[/a/b, '~/.netrc']").unwrap();
    assert_eq!(v[1].as_str(), "~/.netrc");
    assert_eq!(serde_norway::to_string(&v[0]).unwrap().trim(), "/a/b");
    let e = serde_norway::from_str::<Vec<Glob>>("- /a\n- b\n").unwrap_err();
    assert_eq!(e.location().map(|l| (l.line(), l.column())), Some((2, 3)));
}

#[test]
fn host_globs() {
    let h = HostGlob::parse("*.s3.eu-west-1.amazonaws.com").unwrap();
    assert!(h.matches("bucket.s3.eu-west-1.amazonaws.com"));
    assert!(h.matches("a.b.S3.EU-WEST-1.amazonaws.com."));
    assert!(!h.matches("s3.eu-west-1.amazonaws.com"));
    assert!(!h.matches("bucket.s3.eu-west-1.amazonaws.com.evil.net"));
    let h = HostGlob::parse("API.Example.com.").unwrap();
    assert_eq!(h.as_str(), "api.example.com");
    assert!(h.matches("api.example.com") && !h.matches("xapi.example.com"));
    assert!(HostGlob::parse("*").unwrap().matches("anything.at.all"));
    assert!(HostGlob::parse("a b.com")
        .unwrap_err()
        .to_string()
        .contains("` ` is not allowed"));
    assert!(HostGlob::parse("a..com")
        .unwrap_err()
        .to_string()
        .contains("empty label"));
    assert!(HostGlob::parse("").is_err() && HostGlob::parse(".x.com").is_err());
    assert!(HostGlob::parse("x?.com").is_err());
}

#[test]
fn cidr_blocks() {
    let c = Cidr::parse("10.20.0.0/16").unwrap();
    assert!(c.contains("10.20.5.6".parse().unwrap()));
    assert!(c.contains("::ffff:10.20.0.1".parse().unwrap()));
    assert!(!c.contains("10.21.0.1".parse().unwrap()));
    assert!(!c.contains("::1".parse().unwrap()));
    let c = Cidr::parse("2001:db8::/32").unwrap();
    assert!(c.contains("2001:db8:1::5".parse().unwrap()));
    assert!(!c.contains("2001:db9::".parse().unwrap()) && !c.contains("10.0.0.1".parse().unwrap()));
    let one = Cidr::parse("192.0.2.7").unwrap();
    assert_eq!(one.to_string(), "192.0.2.7/32");
    assert!(
        one.contains("192.0.2.7".parse().unwrap()) && !one.contains("192.0.2.8".parse().unwrap())
    );
    let any = Cidr::parse("0.0.0.0/0").unwrap();
    assert!(any.contains("203.0.113.9".parse().unwrap()) && !any.contains("::2".parse().unwrap()));
    assert!(Cidr::parse("::/0")
        .unwrap()
        .contains("fe80::1".parse().unwrap()));
    let mapped = Cidr::parse("::ffff:10.0.0.0/104").unwrap();
    assert_eq!(mapped.to_string(), "10.0.0.0/8");
    assert!(mapped.contains("10.9.9.9".parse().unwrap()));
    let e = Cidr::parse("10.20.1.0/16").unwrap_err().to_string();
    assert!(e.contains("did you mean `10.20.0.0/16`"), "{e}");
    assert!(Cidr::parse("10.0.0.0/33")
        .unwrap_err()
        .to_string()
        .contains("longer than"));
    for bad in [
        "10.0.0/8",
        "10.0.0.0/",
        "10.0.0.0/+8",
        "host/8",
        "",
        "::/129x",
    ] {
        assert!(Cidr::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn wild_match_edges() {
    assert!(wild_match(b"", b"", true, false));
    assert!(wild_match(b"*", b"", true, false));
    assert!(!wild_match(b"?", b"", true, false));
    assert!(wild_match(b"**a", b"bba", true, false));
    assert!(wild_match(b"a*b*c", b"aXbYbZc", true, false));
    assert!(!wild_match(b"a*b*c", b"aXbYbZ", true, false));
    assert!(!wild_match(b"a?", b"ab", false, false));
    assert!(wild_match(b"AB", b"ab", false, true) && !wild_match(b"AB", b"ab", false, false));
}

#[test]
fn a_glob_that_matches_a_path_may_match_its_name() {
    let globs = [
        "/srv/app/token",
        "~/.ssh/id_*",
        "/**/.env.*",
        "/run/**/containers/auth.json",
        "/etc/kubernetes/*.conf",
        "/var/lib/**",
        "~/.aws/sso/cache/*.json",
    ];
    let paths = [
        "/srv/app/token",
        "/home/ann/.ssh/id_rsa",
        "/root/.ssh/id_ed25519.pub",
        "/a/b/.env.production",
        "/.env.x",
        "/run/user/1000/containers/auth.json",
        "/etc/kubernetes/admin.conf",
        "/var/lib/x/y",
        "/root/.aws/sso/cache/a.json",
        "/etc/passwd",
    ];
    let mut matched = 0;
    for gl in globs.map(g) {
        for p in paths {
            let name = p.rsplit('/').next().unwrap();
            if gl.matches(p) {
                matched += 1;
                assert!(gl.may_match_name(name), "{gl} {p}");
            }
        }
    }
    assert!(matched >= 9, "{matched}");
    assert!(!g("~/.ssh/id_*").may_match_name("known_hosts"));
    assert!(!g("/etc/kubernetes/*.conf").may_match_name("admin.yaml"));
    assert!(!g("/srv/app/token").may_match_name("token2"));
    assert!(g("/var/lib/**").may_match_name("anything"));
}

#[test]
fn url_path_patterns_match_segments_and_the_root() {
    let g = |t: &str| PathGlob::parse(t).unwrap_or_else(|e| panic!("{e}"));
    assert!(g("/").matches("/"));
    assert!(!g("/").matches("/v1"));
    assert!(g("/v1/").matches("/v1/") && !g("/v1/").matches("/v1"));
    assert!(g("/repos/*/pulls").matches("/repos/nhiscope/pulls"));
    assert!(!g("/repos/*/pulls").matches("/repos/a/b/pulls"));
    assert!(g("/repos/**/pulls").matches("/repos/a/b/pulls"));
    assert!(g("/v1/**").matches("/v1/charges/ch_1") && !g("/v1/**").matches("/v2/x"));
    assert!(g("/v1/*").matches("/v1/") && !g("/v1/*").matches("/v1/a/b"));
    assert!(g("/a*b*c").matches("/aXbYc") && !g("/a*b*c").matches("/aXbY/c"));
    for bad in ["v1/x", "", "/a b", "/\u{e9}"] {
        assert!(
            matches!(PathGlob::parse(bad), Err(PatternError::UrlPath(_))),
            "{bad}"
        );
    }
    // Quadratic at worst, whatever the path: many stars against a long path.
    let long = format!("/{}", "a".repeat(4000));
    assert!(!g("/*a*a*a*a*a*a*a*a*b").matches(&long));
}
