//! Kubernetes names on events, without the API server: the pod a process runs in comes from its
//! cgroup path, and the pod's and container's names from what the kubelet leaves on the node.
//!
//! * The kubelet puts every pod in a cgroup named after the pod's UID:
//!   `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<UID>.slice/...` with the
//!   systemd cgroup driver (the UID's dashes written as underscores), or
//!   `/kubepods/burstable/pod<UID>/...` with the cgroupfs driver; each container of the pod has a
//!   cgroup below it named after the container's id (see [`crate::domain::proctable::container_id`]).
//! * The kubelet keeps each pod's logs in `/var/log/pods/<namespace>_<pod>_<UID>/<container>/`
//!   and links every container's log as
//!   `/var/log/containers/<pod>_<namespace>_<container>-<container id>.log`. Namespaces, pod
//!   names and container names are DNS names (no `_`), so these names split unambiguously.
//!
//! Listing those two directories (the daemon's `--pods-log-dir` and `--containers-log-dir`) maps
//! pod UIDs to pod names and namespaces, and container ids to container names. The maps are
//! cached and listed again only when a lookup misses, at most once per [`RESCAN`]: an event never
//! costs I/O of its own, and a host without Kubernetes never lists anything (no cgroup path gives
//! a pod UID there).

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use crate::domain::host::Host;

/// Where the kubelet keeps pod logs (one directory per pod).
pub const DEFAULT_PODS_LOG_DIR: &str = "/var/log/pods";
/// Where the kubelet links container logs (one link per container).
pub const DEFAULT_CONTAINERS_LOG_DIR: &str = "/var/log/containers";

/// How often, at most, the directories are listed again when a lookup misses.
const RESCAN: Duration = Duration::from_secs(1);
/// Entries read from one directory at most (a node runs a few hundred pods).
const MAX_ENTRIES: usize = 65_536;

/// The UID of the Kubernetes pod whose cgroup `path` is in (or below), lowercase with dashes.
/// `None` for a path outside the kubelet's `kubepods` hierarchy, and for any path under a user's
/// own part of the tree (`user.slice`, `user@UID.service`): systemd delegates that part to the
/// user, who may make a `kubepods/pod<UID>` cgroup there and move a process into it to pass for
/// another pod.
pub fn pod_uid(path: &str) -> Option<String> {
    if path
        .split('/')
        .any(|seg| seg == "user.slice" || seg.starts_with("user@"))
    {
        return None;
    }
    let mut in_kubepods = false;
    let mut found = None;
    for seg in path.split('/') {
        if seg.starts_with("kubepods") {
            in_kubepods = true;
        }
        if !in_kubepods {
            continue;
        }
        // cgroupfs driver: `pod<UID>`; systemd driver: `kubepods[-<qos>]-pod<UID_>.slice`, which
        // a nested runtime may suffix with `:<runtime>:<container id>`.
        let seg = seg.split(':').next().unwrap_or(seg);
        let uid = if let Some(u) = seg.strip_prefix("pod") {
            Some(u)
        } else {
            seg.strip_suffix(".slice")
                .and_then(|s| s.rfind("-pod").map(|i| &s[i + 4..]))
        };
        if let Some(uid) = uid.and_then(normalize_uid) {
            found = Some(uid);
        }
    }
    found
}

/// A pod UID as the API gives it: a UUID (`8d0f...-...`), or for a static pod the 32 hex digits
/// of its config hash. Underscores (the systemd driver's spelling) become dashes.
fn normalize_uid(u: &str) -> Option<String> {
    let ok = matches!(u.len(), 32 | 36)
        && u.bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b'-' || b == b'_');
    ok.then(|| u.replace('_', "-").to_ascii_lowercase())
}

/// A pod's name and namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodName {
    pub namespace: Arc<str>,
    pub name: Arc<str>,
}

/// Pod and container names from the kubelet's log directories, cached.
#[derive(Debug)]
pub struct KubeNames {
    pods_dir: PathBuf,
    containers_dir: PathBuf,
    /// Pod UID -> name and namespace.
    pods: HashMap<Arc<str>, PodName>,
    /// Container id -> container name.
    containers: HashMap<Arc<str>, Arc<str>>,
    last_scan: Option<Instant>,
}

impl Default for KubeNames {
    fn default() -> Self {
        Self::new(DEFAULT_PODS_LOG_DIR, DEFAULT_CONTAINERS_LOG_DIR)
    }
}

impl KubeNames {
    pub fn new(pods_dir: impl Into<PathBuf>, containers_dir: impl Into<PathBuf>) -> Self {
        Self {
            pods_dir: pods_dir.into(),
            containers_dir: containers_dir.into(),
            pods: HashMap::new(),
            containers: HashMap::new(),
            last_scan: None,
        }
    }

    /// The pod whose UID is `uid`.
    pub fn pod(&mut self, uid: &str, host: &impl Host) -> Option<PodName> {
        if !self.pods.contains_key(uid) {
            self.rescan(host);
        }
        self.pods.get(uid).cloned()
    }

    /// The name of the container whose id is `id` (64 hex digits).
    pub fn container(&mut self, id: &str, host: &impl Host) -> Option<Arc<str>> {
        if !self.containers.contains_key(id) {
            self.rescan(host);
        }
        self.containers.get(id).cloned()
    }

    /// Lists both directories again, unless that was done less than [`RESCAN`] ago.
    fn rescan(&mut self, host: &impl Host) {
        let now = host.now();
        if self
            .last_scan
            .is_some_and(|t| now.saturating_duration_since(t) < RESCAN)
        {
            return;
        }
        self.last_scan = Some(now);
        self.pods = host
            .list_dir(&self.pods_dir, MAX_ENTRIES)
            .into_iter()
            .filter_map(|n| {
                let (namespace, name, uid) = parse_pod_dir(&n)?;
                Some((
                    Arc::from(uid),
                    PodName {
                        namespace: Arc::from(namespace),
                        name: Arc::from(name),
                    },
                ))
            })
            .collect();
        self.containers = host
            .list_dir(&self.containers_dir, MAX_ENTRIES)
            .into_iter()
            .filter_map(|n| {
                let (_, _, container, id) = parse_container_link(&n)?;
                Some((Arc::from(id), Arc::from(container)))
            })
            .collect();
    }
}

/// `(namespace, pod, uid)` of a `/var/log/pods` entry `<namespace>_<pod>_<uid>`.
pub fn parse_pod_dir(name: &str) -> Option<(&str, &str, String)> {
    let mut parts = name.splitn(3, '_');
    let (namespace, pod, uid) = (parts.next()?, parts.next()?, parts.next()?);
    if namespace.is_empty() || pod.is_empty() {
        return None;
    }
    Some((namespace, pod, normalize_uid(uid)?))
}

/// `(pod, namespace, container, container id)` of a `/var/log/containers` entry
/// `<pod>_<namespace>_<container>-<64 hex digits>.log`.
pub fn parse_container_link(name: &str) -> Option<(&str, &str, &str, String)> {
    let stem = name.strip_suffix(".log")?;
    let mut parts = stem.splitn(3, '_');
    let (pod, namespace, rest) = (parts.next()?, parts.next()?, parts.next()?);
    let (container, id) = rest.rsplit_once('-')?;
    let id_ok = id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit());
    if pod.is_empty() || namespace.is_empty() || container.is_empty() || !id_ok {
        return None;
    }
    Some((pod, namespace, container, id.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "0f2a4c1e-6b7d-4e8f-9a0b-1c2d3e4f5a6b";
    const ID: &str = "4d7c9e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5";

    #[test]
    fn pod_uids_come_from_both_cgroup_drivers() {
        let under = UID.replace('-', "_");
        for path in [
            format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{under}.slice/\
                 cri-containerd-{ID}.scope"
            ),
            format!("/kubepods.slice/kubepods-pod{under}.slice/crio-{ID}.scope"),
            format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{under}.slice"),
            format!("/kubepods/burstable/pod{UID}/{ID}"),
            format!("/kubepods/pod{UID}/{ID}"),
            // A node inside a container (kind, k3d): the host's path comes first.
            format!("/docker/{ID}/kubepods/besteffort/pod{UID}/{ID}"),
            format!(
                "/system.slice/containerd.service/kubepods-burstable-pod{under}.slice:cri-containerd:{ID}"
            ),
        ] {
            assert_eq!(pod_uid(&path).as_deref(), Some(UID), "{path}");
        }
        // A static pod's UID is its config hash.
        let hash = "6b7c0d1e2f3a4b5c6d7e8f9a0b1c2d3e";
        assert_eq!(
            pod_uid(&format!("/kubepods/burstable/pod{hash}/{ID}")).as_deref(),
            Some(hash)
        );
        for path in [
            "/system.slice/docker-abc.scope".to_owned(),
            "/user.slice/user-0.slice/session-1.scope".to_owned(),
            // Looks like a pod, but not under kubepods.
            format!("/system.slice/pod{UID}"),
            // A pod's path made by a user in the subtree systemd delegates to them.
            format!(
                "/user.slice/user-1000.slice/user@1000.service/kubepods/besteffort/pod{UID}/{ID}"
            ),
            format!(
                "/user.slice/user-1000.slice/user@1000.service/app.slice/kubepods-pod{under}.slice"
            ),
            "/kubepods.slice/kubepods-burstable.slice".to_owned(),
            "/kubepods/burstable/podnot-a-uid".to_owned(),
            "/".to_owned(),
            String::new(),
        ] {
            assert_eq!(pod_uid(&path), None, "{path}");
        }
    }

    #[test]
    fn log_directory_names_split_into_names() {
        assert_eq!(
            parse_pod_dir(&format!("payments_api-7d9f8-x2x_{UID}")),
            Some(("payments", "api-7d9f8-x2x", UID.to_owned()))
        );
        assert_eq!(
            parse_container_link(&format!("api-7d9f8-x2x_payments_uploader-sidecar-{ID}.log")),
            Some((
                "api-7d9f8-x2x",
                "payments",
                "uploader-sidecar",
                ID.to_owned()
            ))
        );
        for bad in [
            "payments_api",
            "payments_api_not-a-uid",
            &format!("_api_{UID}"),
            "lost+found",
        ] {
            assert_eq!(parse_pod_dir(bad), None, "{bad}");
        }
        for bad in [
            format!("api_payments_uploader-{ID}"),
            "api_payments_uploader-123.log".to_owned(),
            format!("api_payments_-{ID}.log"),
            format!("api_payments{ID}.log"),
        ] {
            assert_eq!(parse_container_link(&bad), None, "{bad}");
        }
    }

    #[test]
    fn names_are_listed_again_only_on_a_miss_and_not_more_than_once_a_second() {
        let root = std::env::temp_dir().join(format!("nhiscope-kube-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let (pods, containers) = (root.join("pods"), root.join("containers"));
        std::fs::create_dir_all(pods.join(format!("payments_api-1_{UID}/uploader"))).expect("pods");
        std::fs::create_dir_all(&containers).expect("containers");
        std::fs::write(
            containers.join(format!("api-1_payments_uploader-{ID}.log")),
            "",
        )
        .expect("link");
        let host = crate::sense::proc_host::ProcHost::with_cgroup_root("/nonexistent", None);
        let mut k = KubeNames::new(&pods, &containers);
        let want = PodName {
            namespace: Arc::from("payments"),
            name: Arc::from("api-1"),
        };
        assert_eq!(k.pod(UID, &host), Some(want.clone()));
        assert_eq!(k.container(ID, &host).as_deref(), Some("uploader"));
        // A pod that appears now is not seen until a second has passed since the last listing.
        let other = "11111111-2222-3333-4444-555555555555";
        std::fs::create_dir_all(pods.join(format!("kube-system_dns_{other}"))).expect("pod");
        assert_eq!(k.pod(other, &host), None);
        k.last_scan = Some(Instant::now() - RESCAN);
        assert_eq!(k.pod(other, &host).map(|p| p.name), Some(Arc::from("dns")));
        // Hits cost no listing: the cache answers even once the directory is gone.
        std::fs::remove_dir_all(&root).expect("cleanup");
        k.last_scan = Some(Instant::now() - RESCAN);
        assert_eq!(k.pod(UID, &host), Some(want));
        // No directories at all (a host without Kubernetes): nothing, no error.
        let mut none = KubeNames::new(root.join("nope"), root.join("nope2"));
        assert_eq!(none.pod(UID, &host), None);
        assert_eq!(none.container(ID, &host), None);
    }
}
