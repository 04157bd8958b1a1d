//! The live feed's wire format: newline-delimited JSON, one message per line, each an object
//! whose `type` says what it is.
//!
//! ```text
//! {"type":"hello","version":1,"host":"web-1","pid":812,"registry":{"nhis":[...]},"health":{...}}
//! {"type":"event","event":{"ts":"...","kind":"connect","verdict":"drift",...}}
//! {"type":"health","health":{"uptime_secs":63,"events_per_sec":12.0,"kernel_drops":0,...}}
//! {"type":"registry","registry":{"nhis":[...]}}
//! {"type":"error","message":"..."}
//! ```
//! A client gets `hello` first (the registry in force and the daemon's health), then every event
//! as the daemon writes it (the same object as a JSON line of `--json`, made by
//! [`Event::write_json`]; a client reads it back into an [`Event`]), a `health` message about
//! once a second, and a `registry` message when the registry is reloaded. `error` comes only just
//! before the daemon closes the connection (a refused peer). Fields may be added to any message;
//! a client ignores those it does not know.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{
    domain::event::Event,
    domain::registry::{Endpoint, Interactive, Nhi, Principals, Registry},
};

/// The version in `hello`; raised when a message changes in a way old clients misread.
pub const PROTOCOL_VERSION: u32 = 1;

/// What the server writes, but events ([`event_line`]).
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub(crate) enum Outgoing<'a> {
    Hello {
        version: u32,
        host: &'a str,
        pid: u32,
        registry: &'a RegistrySummary,
        health: &'a Health,
    },
    Health {
        health: &'a Health,
    },
    Registry {
        registry: &'a RegistrySummary,
    },
    Error {
        message: &'a str,
    },
}

impl Outgoing<'_> {
    /// The message as one line, newline included.
    pub(crate) fn line(&self) -> serde_json::Result<Vec<u8>> {
        let mut v = serde_json::to_vec(self)?;
        v.push(b'\n');
        Ok(v)
    }
}

/// The `event` message of an event whose JSON line is `json`, newline included.
pub(crate) fn event_line(json: &[u8]) -> Vec<u8> {
    const HEAD: &[u8] = b"{\"type\":\"event\",\"event\":";
    let mut v = Vec::with_capacity(HEAD.len() + json.len() + 2);
    v.extend_from_slice(HEAD);
    v.extend_from_slice(json);
    v.extend_from_slice(b"}\n");
    v
}

/// What a client reads.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Message {
    /// The first message on every connection.
    Hello(Box<Hello>),
    /// An event, as the daemon decided it.
    Event { event: Box<Event> },
    /// The daemon's health, about once a second.
    Health { health: Box<Health> },
    /// The registry was reloaded.
    Registry { registry: RegistrySummary },
    /// The daemon is about to close the connection, and why.
    Error { message: String },
}

/// The first message: who the daemon is and what it watches.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct Hello {
    /// [`PROTOCOL_VERSION`] of the daemon.
    pub version: u32,
    /// The host name written on events.
    pub host: String,
    /// The daemon's process id.
    pub pid: u32,
    pub registry: RegistrySummary,
    pub health: Health,
}

/// The daemon's health. The daemon fills the kernel and ClickHouse fields; the live server fills
/// uptime, event counts and its own client counters when it sends the message.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Health {
    /// Seconds since the live feed started listening (the daemon's `ready`).
    pub uptime_secs: u64,
    /// Events published since then.
    pub events_total: u64,
    /// Events per second since the previous health message.
    pub events_per_sec: f64,
    /// Kernel records lost so far (ring buffer full, pending map full).
    pub kernel_drops: u64,
    /// The same, by cause (`ringbuf_full_open`, `pending_map_full`, ...); causes with no loss
    /// may be left out.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub kernel_drops_by_cause: BTreeMap<String, u64>,
    /// How full the kernel ring buffer was at its fullest since the previous health message,
    /// 0 to 1 (read from the buffer's producer and consumer positions at each wakeup).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ringbuf_fill: Option<f64>,
    /// The kernel ring buffer's size in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ringbuf_bytes: Option<u64>,
    /// The ClickHouse sink, when the daemon writes to ClickHouse.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clickhouse: Option<ClickHouseHealth>,
    /// Clients connected to the live feed.
    pub live_clients: u32,
    /// Clients dropped because they read too slowly.
    pub live_clients_dropped: u64,
    /// Connections refused by the peer check.
    pub live_clients_refused: u64,
    /// DNS answers not believed since start: responses to no query seen leaving the host (or
    /// to another question), and answer records off their question's CNAME chain. Forged
    /// answers land here; a few may also be late answers to queries that timed out.
    pub dns_rejected: u64,
    /// What this host lets processes do that the probes do not see (found at start, see
    /// `coverage`), one sentence each.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unseen: Vec<String>,
}

/// The ClickHouse sink's state; every field is optional but `connected`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClickHouseHealth {
    /// The last insert succeeded.
    pub connected: bool,
    /// Age of the oldest event not yet stored, in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lag_secs: Option<f64>,
    /// Bytes waiting in the on-disk spool.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spool_bytes: Option<u64>,
    /// Rows waiting in the on-disk spool.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spool_rows: Option<u64>,
    /// Why the last insert failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// The registry in force, as text a person reads: each pattern as written in the registry.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RegistrySummary {
    pub nhis: Vec<NhiSummary>,
}

/// One NHI and its declared scope.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NhiSummary {
    pub id: String,
    pub owner: Option<String>,
    /// Credential paths and globs.
    pub credentials: Vec<String>,
    /// Who may read the credentials; `None`: anyone.
    pub readers: Option<PrincipalsSummary>,
    /// Processes that carry the NHI without reading a file.
    pub holders: Option<PrincipalsSummary>,
    /// Where holders may connect (`*.s3.amazonaws.com port 443`, `10.0.0.0/8 ports 5432,6432`,
    /// `127.0.0.1/32 any port`); `None`: connections are not checked.
    pub endpoints: Option<Vec<String>>,
    /// The APIs each entry of `endpoints` declares, in its order (`sni *.api.test`,
    /// `methods GET, POST`, `paths /v1/*`); empty lists for entries that declare none. Absent
    /// (older daemons): none declared.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub endpoint_apis: Vec<Vec<String>>,
    /// RFC 3339.
    pub expires: Option<String>,
    /// `24h`, `7days`.
    pub max_age: Option<String>,
    /// `deny` or `allow`.
    pub interactive: String,
}

/// A set of processes, as in the registry.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PrincipalsSummary {
    pub exe: Vec<String>,
    pub uid: Vec<u32>,
}

impl From<&Registry> for RegistrySummary {
    fn from(r: &Registry) -> Self {
        Self {
            nhis: r.nhis.iter().map(NhiSummary::from).collect(),
        }
    }
}

impl From<&Nhi> for NhiSummary {
    fn from(n: &Nhi) -> Self {
        Self {
            id: n.id.clone(),
            owner: n.owner.clone(),
            credentials: n.credentials.iter().map(|g| g.to_string()).collect(),
            readers: n.readers.as_ref().map(PrincipalsSummary::from),
            holders: n.holders.as_ref().map(PrincipalsSummary::from),
            endpoints: n
                .endpoints
                .as_ref()
                .map(|eps| eps.iter().map(endpoint_text).collect()),
            endpoint_apis: match &n.endpoints {
                Some(eps) if eps.iter().any(declares_api) => eps.iter().map(api_text).collect(),
                _ => Vec::new(),
            },
            expires: n
                .expires
                .map(|t| humantime::format_rfc3339_seconds(t).to_string()),
            max_age: n.max_age.map(|d| humantime::format_duration(d).to_string()),
            interactive: match n.interactive {
                Interactive::Deny => "deny",
                Interactive::Allow => "allow",
            }
            .to_owned(),
        }
    }
}

impl From<&Principals> for PrincipalsSummary {
    fn from(p: &Principals) -> Self {
        Self {
            exe: p.exe.iter().map(|g| g.to_string()).collect(),
            uid: p.uid.clone(),
        }
    }
}

fn declares_api(e: &Endpoint) -> bool {
    !(e.sni.is_empty() && e.methods.is_empty() && e.paths.is_empty())
}

/// `sni *.api.test, api.test`, `methods GET, POST`, `paths /v1/*`: those the endpoint declares.
fn api_text(e: &Endpoint) -> Vec<String> {
    let mut out = Vec::new();
    let join = |v: Vec<String>| v.join(", ");
    if !e.sni.is_empty() {
        out.push(format!(
            "sni {}",
            join(e.sni.iter().map(|g| g.as_str().to_owned()).collect())
        ));
    }
    if !e.methods.is_empty() {
        out.push(format!("methods {}", e.methods.join(", ")));
    }
    if !e.paths.is_empty() {
        out.push(format!(
            "paths {}",
            join(e.paths.iter().map(|g| g.as_str().to_owned()).collect())
        ));
    }
    out
}

/// `*.s3.amazonaws.com port 443`, `10.0.0.0/8 ports 5432,6432`, `::1/128 any port`.
fn endpoint_text(e: &Endpoint) -> String {
    let place = match (&e.host, &e.cidr) {
        (Some(h), _) => h.to_string(),
        (None, Some(c)) => c.to_string(),
        (None, None) => "?".to_owned(),
    };
    let ports = match (e.port, e.ports.as_slice()) {
        (Some(p), _) => format!("port {p}"),
        (None, []) => "any port".to_owned(),
        (None, [p]) => format!("port {p}"),
        (None, ps) => format!(
            "ports {}",
            ps.iter().map(u16::to_string).collect::<Vec<_>>().join(",")
        ),
    };
    format!("{place} {ports}")
}
