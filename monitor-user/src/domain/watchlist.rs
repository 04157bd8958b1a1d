//! The built-in watch list: where credentials commonly live on a Linux host.
//!
//! Every pattern here is watched even when no NHI claims it, so that opening such a file gives an
//! `unregistered` verdict and surfaces NHIs nobody has registered yet. The registry's `watch` list
//! adds to it. Each entry may name exceptions: files that match the pattern but hold no secret
//! (public keys, `.env.example`), so they are not reported.
//!
//! Every pattern must be filterable in the kernel (a test compiles the whole list); `~/` means
//! the home of any user (`/root` and `/home/*`).

use std::sync::OnceLock;

use crate::domain::pattern::Glob;

/// One built-in credential location.
#[derive(Clone, Copy, Debug)]
pub struct WatchEntry {
    /// The path glob.
    pub pattern: &'static str,
    /// Globs of files that match `pattern` but are not credentials.
    pub except: &'static [&'static str],
    /// What the file is, for people reading `--explain` output and reports.
    pub what: &'static str,
}

const fn entry(pattern: &'static str, what: &'static str) -> WatchEntry {
    WatchEntry {
        pattern,
        except: &[],
        what,
    }
}

/// The built-in list, grouped by ecosystem.
pub const ENTRIES: &[WatchEntry] = &[
    // Cloud providers.
    entry(
        "~/.aws/credentials",
        "AWS shared credentials file (access keys of CLI and SDK profiles)",
    ),
    entry(
        "~/.aws/config",
        "AWS CLI configuration: profiles, SSO settings, `credential_process`, sometimes keys",
    ),
    entry(
        "~/.aws/sso/cache/*.json",
        "AWS IAM Identity Center (SSO) cached access tokens",
    ),
    entry(
        "~/.aws/cli/cache/*.json",
        "AWS CLI cached temporary credentials of assumed roles",
    ),
    entry(
        "~/.config/gcloud/application_default_credentials.json",
        "Google Cloud application default credentials",
    ),
    entry(
        "~/.config/gcloud/credentials.db",
        "gcloud CLI stored user and service-account credentials",
    ),
    entry(
        "~/.config/gcloud/access_tokens.db",
        "gcloud CLI cached OAuth access tokens",
    ),
    entry(
        "~/.config/gcloud/legacy_credentials/*/adc.json",
        "gcloud per-account credentials in the legacy layout",
    ),
    entry(
        "~/.boto",
        "boto/gsutil configuration with cloud storage keys",
    ),
    entry(
        "~/.azure/accessTokens.json",
        "Azure CLI access tokens (CLI before 2.30)",
    ),
    entry(
        "~/.azure/msal_token_cache.json",
        "Azure CLI MSAL token cache",
    ),
    entry(
        "~/.azure/service_principal_entries.json",
        "Azure CLI service principal secrets",
    ),
    entry(
        "~/.oci/config",
        "Oracle Cloud CLI configuration naming API signing keys",
    ),
    entry(
        "~/.config/doctl/config.yaml",
        "DigitalOcean CLI configuration with the API token",
    ),
    entry("~/.s3cfg", "s3cmd configuration with S3 access keys"),
    entry(
        "~/.config/rclone/rclone.conf",
        "rclone remotes with their storage credentials",
    ),
    // Kubernetes and containers.
    entry(
        "~/.kube/config",
        "kubeconfig: cluster credentials of kubectl and its clients",
    ),
    entry(
        "/etc/kubernetes/*.conf",
        "kubeadm kubeconfigs: admin.conf, super-admin.conf, kubelet.conf, ...",
    ),
    entry(
        "/etc/kubernetes/pki/*.key",
        "Kubernetes control-plane private keys (CA, API server, service accounts)",
    ),
    entry(
        "/etc/kubernetes/pki/etcd/*.key",
        "etcd private keys of a kubeadm cluster",
    ),
    entry(
        "/var/lib/kubelet/pki/kubelet-client-current.pem",
        "kubelet client certificate and key",
    ),
    entry(
        "/var/run/secrets/kubernetes.io/serviceaccount/token",
        "Kubernetes service-account token mounted in a pod",
    ),
    entry(
        "/run/secrets/kubernetes.io/serviceaccount/token",
        "Kubernetes service-account token (the `/run` path)",
    ),
    entry(
        "/var/run/secrets/eks.amazonaws.com/serviceaccount/token",
        "EKS IRSA web identity token",
    ),
    entry("~/.docker/config.json", "Docker registry credentials"),
    entry(
        "~/.config/containers/auth.json",
        "Podman/Buildah registry credentials",
    ),
    entry(
        "/run/**/containers/auth.json",
        "Podman registry credentials under the runtime directory",
    ),
    // Source hosting, package registries and CI tools.
    entry(
        "~/.git-credentials",
        "git `store` credential helper: tokens in clear text",
    ),
    entry(
        "~/.config/git/credentials",
        "git `store` credential helper (XDG location)",
    ),
    entry(
        "~/.netrc",
        "netrc: logins used by curl, git, ftp and many tools",
    ),
    entry("~/.config/gh/hosts.yml", "GitHub CLI OAuth tokens"),
    entry("~/.config/hub", "hub (GitHub) CLI OAuth token"),
    entry("~/.config/glab-cli/config.yml", "GitLab CLI tokens"),
    entry("~/.npmrc", "npm registry auth tokens"),
    entry("~/.yarnrc.yml", "Yarn registry auth tokens"),
    entry("~/.pypirc", "PyPI upload credentials"),
    entry("~/.cargo/credentials.toml", "crates.io API token"),
    entry(
        "~/.cargo/credentials",
        "crates.io API token (file name before Cargo 1.46)",
    ),
    entry("~/.gem/credentials", "RubyGems API key"),
    entry(
        "~/.m2/settings.xml",
        "Maven settings with repository server passwords",
    ),
    entry(
        "~/.gradle/gradle.properties",
        "Gradle properties, often holding repository and signing secrets",
    ),
    // Secret managers and infrastructure tools.
    entry("~/.vault-token", "HashiCorp Vault token of the CLI"),
    entry(
        "~/.terraform.d/credentials.tfrc.json",
        "Terraform Cloud / Enterprise API tokens",
    ),
    entry(
        "~/.config/sops/age/keys.txt",
        "age private keys used by SOPS",
    ),
    entry("~/.gnupg/private-keys-v1.d/*.key", "GnuPG private keys"),
    // SSH.
    WatchEntry {
        pattern: "~/.ssh/id_*",
        except: &["~/.ssh/id_*.pub", "~/.ssh/id_*-cert.pub"],
        what: "SSH private keys (deploy keys, automation keys)",
    },
    entry("/etc/ssh/ssh_host_*_key", "SSH host private keys"),
    // Databases.
    entry("~/.pgpass", "PostgreSQL passwords of libpq clients"),
    entry("~/.my.cnf", "MySQL client options, often with a password"),
    // AI agents and assistants.
    entry(
        "~/.claude/.credentials.json",
        "Claude Code OAuth credentials",
    ),
    entry("~/.codex/auth.json", "OpenAI Codex CLI API key or tokens"),
    entry("~/.gemini/oauth_creds.json", "Gemini CLI OAuth credentials"),
    entry(
        "~/.config/github-copilot/hosts.json",
        "GitHub Copilot OAuth token",
    ),
    entry(
        "~/.config/github-copilot/apps.json",
        "GitHub Copilot OAuth token (newer clients)",
    ),
    // Application secrets anywhere.
    entry(
        "/**/.env",
        "dotenv file: application secrets as environment variables",
    ),
    WatchEntry {
        pattern: "/**/.env.*",
        except: &[
            "/**/.env.example",
            "/**/.env.sample",
            "/**/.env.template",
            "/**/.env.dist",
        ],
        what: "dotenv file for one environment (`.env.production`, `.env.local`, ...)",
    },
];

/// An [`WatchEntry`] with its patterns parsed.
#[derive(Debug)]
struct Parsed {
    pattern: Glob,
    except: Vec<Glob>,
}

fn parsed() -> &'static [Parsed] {
    static PARSED: OnceLock<Vec<Parsed>> = OnceLock::new();
    PARSED.get_or_init(|| {
        // The list is constant and a test parses every entry, so a failure here is a bug in
        // this file; such an entry is skipped rather than taking the daemon down.
        ENTRIES
            .iter()
            .filter_map(|e| {
                Some(Parsed {
                    pattern: Glob::parse(e.pattern).ok()?,
                    except: e
                        .except
                        .iter()
                        .filter_map(|x| Glob::parse(x).ok())
                        .collect(),
                })
            })
            .collect()
    })
}

/// The built-in patterns, parsed once.
pub fn builtin() -> &'static [Glob] {
    static GLOBS: OnceLock<Vec<Glob>> = OnceLock::new();
    GLOBS.get_or_init(|| parsed().iter().map(|p| p.pattern.clone()).collect())
}

/// Entries by the literal file name their pattern ends in; the others (a wildcard or `**` at
/// the end) apart, each with the literal start and end its file name must have. The daemon asks
/// [`lookup`] for every open no NHI owns: this keeps it to the few entries that can match
/// instead of the whole list, and most names are turned down by comparing a few bytes.
struct Index {
    by_name: std::collections::HashMap<String, Vec<usize>, foldhash::fast::RandomState>,
    wild: Vec<Wild>,
}

/// An entry whose pattern does not end in a literal name.
struct Wild {
    entry: usize,
    /// The bytes before the first and after the last wildcard of the name pattern (both empty
    /// when the pattern ends in `**`): a name that lacks either cannot match.
    prefix: String,
    suffix: String,
}

impl Wild {
    fn new(entry: usize, last: Option<&crate::domain::pattern::Component>) -> Self {
        let (prefix, suffix) = match last {
            Some(crate::domain::pattern::Component::Wild(pat)) => {
                let first = pat.find(['*', '?']).unwrap_or(pat.len());
                let after = pat.rfind(['*', '?']).map_or(pat.len(), |i| i + 1);
                (pat[..first].to_owned(), pat[after..].to_owned())
            }
            _ => (String::new(), String::new()),
        };
        Self {
            entry,
            prefix,
            suffix,
        }
    }

    fn may_name(&self, name: &str) -> bool {
        let (n, p, s) = (
            name.as_bytes(),
            self.prefix.as_bytes(),
            self.suffix.as_bytes(),
        );
        // The first and last bytes turn most names down without a call to compare the rest.
        n.len() >= p.len() + s.len()
            && p.first().is_none_or(|c| n.first() == Some(c))
            && s.last().is_none_or(|c| n.last() == Some(c))
            && n.starts_with(p)
            && n.ends_with(s)
    }
}

fn index() -> &'static Index {
    static INDEX: OnceLock<Index> = OnceLock::new();
    INDEX.get_or_init(|| {
        let mut ix = Index {
            by_name: Default::default(),
            wild: Vec::new(),
        };
        for (i, p) in parsed().iter().enumerate() {
            match p.pattern.components().last() {
                Some(crate::domain::pattern::Component::Literal(name)) => {
                    ix.by_name.entry(name.clone()).or_default().push(i)
                }
                last => ix.wild.push(Wild::new(i, last)),
            }
        }
        ix
    })
}

/// The first built-in entry that watches `path` (absolute, normalized), exceptions applied.
pub fn lookup(path: &str) -> Option<&'static WatchEntry> {
    let ix = index();
    // The last `/` found byte by byte (a `char` search is many times slower on short names).
    let name = match path.as_bytes().iter().rposition(|&b| b == b'/') {
        // An ASCII byte: a char boundary.
        Some(slash) => &path[slash + 1..],
        None => path,
    };
    let parsed = parsed();
    // Both lists are in list order: the first entry that watches `path` is the earlier of the
    // first of each (no list is merged or copied for a lookup).
    // The name first: most paths are not named like any entry, and a glob's last component
    // is cheaper to try on the name than the glob on the whole path.
    let watches = |&i: &usize| {
        let p = &parsed[i];
        p.pattern.may_match_name(name)
            && p.pattern.matches(path)
            && !p.except.iter().any(|x| x.matches(path))
    };
    let named = ix
        .by_name
        .get(name)
        .and_then(|named| named.iter().copied().find(watches));
    // Only the wildcard entries before the named one found can come first.
    let before = named.unwrap_or(usize::MAX);
    ix.wild
        .iter()
        .take_while(|w| w.entry < before)
        .filter(|w| w.may_name(name))
        .map(|w| w.entry)
        .find(watches)
        .or(named)
        .and_then(|i| ENTRIES.get(i))
}

/// Whether the built-in list watches `path`.
pub fn is_watched(path: &str) -> bool {
    lookup(path).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entry_parses_and_is_described() {
        for e in ENTRIES {
            let g = Glob::parse(e.pattern).unwrap();
            assert!(!e.what.is_empty(), "{}", e.pattern);
            for x in e.except {
                Glob::parse(x).unwrap();
            }
            assert_eq!(g.as_str(), e.pattern);
        }
        assert_eq!(builtin().len(), ENTRIES.len());
        let mut seen = std::collections::HashSet::new();
        assert!(
            ENTRIES.iter().all(|e| seen.insert(e.pattern)),
            "duplicate entry"
        );
    }

    #[test]
    fn common_credentials_are_watched() {
        for p in [
            "/root/.aws/credentials",
            "/home/ann/.aws/config",
            "/home/ann/.aws/sso/cache/0a1b2c.json",
            "/home/ci/.config/gcloud/application_default_credentials.json",
            "/home/ann/.kube/config",
            "/etc/kubernetes/admin.conf",
            "/etc/kubernetes/pki/sa.key",
            "/var/run/secrets/kubernetes.io/serviceaccount/token",
            "/run/secrets/kubernetes.io/serviceaccount/token",
            "/run/user/1000/containers/auth.json",
            "/home/ann/.docker/config.json",
            "/root/.netrc",
            "/home/bob/.git-credentials",
            "/home/bob/.ssh/id_ed25519",
            "/home/bob/.ssh/id_rsa",
            "/etc/ssh/ssh_host_ed25519_key",
            "/srv/app/.env",
            "/.env",
            "/home/ann/src/web/.env.production",
            "/home/ann/.claude/.credentials.json",
        ] {
            assert!(is_watched(p), "{p}");
        }
        assert_eq!(
            lookup("/root/.vault-token").map(|e| e.pattern),
            Some("~/.vault-token")
        );
    }

    #[test]
    fn exceptions_and_lookalikes_are_not_watched() {
        for p in [
            "/home/bob/.ssh/id_ed25519.pub",
            "/home/bob/.ssh/id_rsa-cert.pub",
            "/home/bob/.ssh/known_hosts",
            "/etc/ssh/ssh_host_ed25519_key.pub",
            "/etc/ssh/sshd_config",
            "/srv/app/.env.example",
            "/srv/app/.envrc",
            "/home/ann/.aws/credentials.bak",
            "/home/ann/project/src/main.rs",
            "/etc/passwd",
        ] {
            assert!(!is_watched(p), "{p}");
        }
    }
}
