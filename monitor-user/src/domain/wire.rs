//! What a connection's first bytes say about the API it talks to: the server name, ALPN list
//! and TLS version of a TLS ClientHello, or the method, `Host` and path of a plaintext HTTP/1.x
//! request.
//!
//! Pure parsing, no I/O. The kernel hands the daemon at most `monitor_common::WIRE_CAP` bytes
//! of a holder's first packet (`probes::wire`); [`parse`] takes the named fields out of them and
//! nothing else: no header value but `Host`, no body, no query string or fragment, and never the
//! bytes themselves, which the caller drops. Malformed input gives no fields; a ClientHello cut
//! by the capture keeps what whole extensions before the cut said (a long ClientHello spans
//! several packets, and the server name comes early); an HTTP request line or `Host` line cut
//! before its end gives nothing of it. Every field is checked against the characters it may
//! have (a name's letters, a path's visible ASCII), so odd bytes never reach an output.

use serde::Deserialize;

/// Longest path kept; a longer one is not kept at all.
pub const MAX_PATH: usize = 256;
/// ALPN protocols kept at most.
const MAX_ALPN: usize = 8;

/// The fields a connection's first bytes gave (each `None` when unknown).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct WireFields {
    /// TLS: the server name (SNI), lowercased.
    #[serde(default)]
    pub sni: Option<String>,
    /// TLS: the application protocols offered (ALPN), in the client's order.
    #[serde(default)]
    pub alpn: Option<Vec<String>>,
    /// TLS: the highest version offered (`1.3`, `1.2`, ...).
    #[serde(default)]
    pub tls_version: Option<String>,
    /// HTTP/1.x: the request method.
    #[serde(default)]
    pub http_method: Option<String>,
    /// HTTP/1.x: the `Host` header (or a `CONNECT` request's authority), lowercased, port
    /// included when sent.
    #[serde(default)]
    pub http_host: Option<String>,
    /// HTTP/1.x: the request's path, without its query string or fragment.
    #[serde(default)]
    pub http_path: Option<String>,
}

impl WireFields {
    /// Whether no field is known.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// The name of the server the request is for: the TLS server name, else the HTTP `Host`
    /// without its port; `None` when neither was sent or it is an address, not a name.
    pub fn server_name(&self) -> Option<&str> {
        let name = match (&self.sni, &self.http_host) {
            (Some(s), _) => s.as_str(),
            (None, Some(h)) => strip_port(h),
            (None, None) => return None,
        };
        // `api.test.` is `api.test`, as DNS names are compared.
        let name = name.strip_suffix('.').unwrap_or(name);
        (!name.is_empty() && name.parse::<std::net::IpAddr>().is_err()).then_some(name)
    }

    /// The fields present, as `,"key":value` pieces of an event's JSON line.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        use crate::domain::event::json;
        json::opt_str(out, b",\"sni\":", self.sni.as_deref());
        if let Some(alpn) = &self.alpn {
            out.extend_from_slice(b",\"alpn\":");
            json::strs(out, alpn);
        }
        json::opt_str(out, b",\"tls_version\":", self.tls_version.as_deref());
        json::opt_str(out, b",\"http_method\":", self.http_method.as_deref());
        json::opt_str(out, b",\"http_host\":", self.http_host.as_deref());
        json::opt_str(out, b",\"http_path\":", self.http_path.as_deref());
    }
}

/// `host` without a trailing `:port` (an IPv6 literal keeps its brackets off).
fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// The fields of a connection's first bytes: a TLS ClientHello or an HTTP/1.x request.
pub fn parse(bytes: &[u8]) -> WireFields {
    match bytes.first() {
        Some(0x16) => client_hello(bytes).unwrap_or_default(),
        Some(b'A'..=b'Z') => http_request(bytes).unwrap_or_default(),
        _ => WireFields::default(),
    }
}

/// A cursor over bytes that fails (`None`) instead of reading past their end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    /// A vector with a `len`-byte length prefix.
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(usize::from(n))
    }

    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }
}

/// A ClientHello in a TLS handshake record. `None` when the bytes are not one, or are cut
/// before its extensions start.
fn client_hello(bytes: &[u8]) -> Option<WireFields> {
    let mut r = Reader(bytes);
    // Record: type 22 (handshake), version 3.x, length.
    if r.u8()? != 0x16 || r.u8()? != 3 {
        return None;
    }
    r.take(3)?;
    // Handshake: type 1 (ClientHello), 24-bit length.
    if r.u8()? != 1 {
        return None;
    }
    r.take(3)?;
    let legacy = r.u16()?;
    if legacy >> 8 != 3 {
        return None;
    }
    r.take(32)?; // random
    let session = r.vec8()?;
    if session.len() > 32 {
        return None;
    }
    let suites = r.vec16()?;
    if suites.is_empty() || suites.len() % 2 != 0 {
        return None;
    }
    if r.vec8()?.is_empty() {
        return None; // compression methods: at least `null`
    }
    let mut f = WireFields {
        tls_version: tls_version(legacy),
        ..WireFields::default()
    };
    // Extensions: whatever fits before the end of the capture; a cut one ends the walk.
    let Some(declared) = r.u16() else {
        return Some(f);
    };
    let mut ext = Reader(&r.0[..usize::from(declared).min(r.0.len())]);
    let mut seen_sni = false;
    while let (Some(kind), Some(data)) = (ext.u16(), ext.vec16()) {
        match kind {
            0 if !seen_sni => {
                seen_sni = true;
                f.sni = server_name_ext(data);
            }
            16 if f.alpn.is_none() => f.alpn = alpn_ext(data),
            43 => {
                if let Some(v) = supported_versions(data) {
                    f.tls_version = Some(v);
                }
            }
            _ => {}
        }
    }
    Some(f)
}

/// `server_name`: the first `host_name` entry, when it is a valid DNS name.
fn server_name_ext(data: &[u8]) -> Option<String> {
    let mut r = Reader(data);
    let mut list = Reader(r.vec16()?);
    while let Some(kind) = list.u8() {
        let name = list.vec16()?;
        if kind == 0 {
            return dns_name(name);
        }
    }
    None
}

/// A DNS name (letters, digits, `-`, `_`, dots between non-empty labels), lowercased.
fn dns_name(b: &[u8]) -> Option<String> {
    let b = b.strip_suffix(b".").unwrap_or(b);
    let ok = (1..=253).contains(&b.len())
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b.split(|&c| c == b'.').all(|l| (1..=63).contains(&l.len()));
    ok.then(|| String::from_utf8_lossy(b).to_ascii_lowercase())
}

/// `application_layer_protocol_negotiation`: the protocol names, each printable ASCII.
fn alpn_ext(data: &[u8]) -> Option<Vec<String>> {
    let mut r = Reader(data);
    let mut list = Reader(r.vec16()?);
    let mut out = Vec::new();
    while !list.0.is_empty() {
        let p = list.vec8()?;
        if p.is_empty() || p.len() > 32 || !p.iter().all(|c| c.is_ascii_graphic()) {
            return None;
        }
        if out.len() < MAX_ALPN {
            out.push(String::from_utf8_lossy(p).into_owned());
        }
    }
    (!out.is_empty()).then_some(out)
}

/// `supported_versions`: the highest version offered (GREASE values are skipped).
fn supported_versions(data: &[u8]) -> Option<String> {
    let mut r = Reader(data);
    let mut list = Reader(r.vec8()?);
    let mut best = None;
    while let Some(v) = list.u16() {
        if v >> 8 == 3 && v & 0xff <= 4 && best.is_none_or(|b| v > b) {
            best = Some(v);
        }
    }
    best.and_then(tls_version)
}

fn tls_version(v: u16) -> Option<String> {
    Some(
        match v {
            0x0300 => "ssl3",
            0x0301 => "1.0",
            0x0302 => "1.1",
            0x0303 => "1.2",
            0x0304 => "1.3",
            _ => return None,
        }
        .to_owned(),
    )
}

/// An HTTP/1.x request: its request line, and its `Host` header when a whole `Host` line is in
/// the bytes. `None` when the request line is not one or is cut.
fn http_request(bytes: &[u8]) -> Option<WireFields> {
    let end = bytes.windows(2).position(|w| w == b"\r\n")?;
    let line = &bytes[..end];
    let mut parts = line.split(|&c| c == b' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some()
        || !(1..=16).contains(&method.len())
        || !method.iter().all(u8::is_ascii_uppercase)
        || !matches!(version, b"HTTP/1.0" | b"HTTP/1.1")
        || target.is_empty()
        || !target.iter().all(u8::is_ascii_graphic)
    {
        return None;
    }
    let mut f = WireFields {
        http_method: Some(String::from_utf8_lossy(method).into_owned()),
        ..WireFields::default()
    };
    if method == b"CONNECT" {
        // authority-form: the host and port a tunnel is asked for.
        f.http_host = host_value(target);
    } else {
        f.http_path = request_path(target);
    }
    // Header lines, up to the blank line or the end of the capture: only `Host` is read.
    let mut rest = &bytes[end + 2..];
    while let Some(n) = rest.windows(2).position(|w| w == b"\r\n") {
        let header = &rest[..n];
        if header.is_empty() {
            break;
        }
        if let Some(colon) = header.iter().position(|&c| c == b':') {
            if header[..colon].eq_ignore_ascii_case(b"host") && f.http_host.is_none() {
                f.http_host = host_value(header[colon + 1..].trim_ascii());
            }
        }
        rest = &rest[n + 2..];
    }
    Some(f)
}

/// The path of a request target (origin-form `/a/b?q`, absolute-form `http://h/a/b?q`,
/// asterisk-form `*`), without its query string or fragment.
fn request_path(target: &[u8]) -> Option<String> {
    let path = if target == b"*" || target.starts_with(b"/") {
        target
    } else {
        // absolute-form: the path starts at the first `/` after `scheme://`.
        let at = target.windows(3).position(|w| w == b"://")? + 3;
        let after = &target[at..];
        match after.iter().position(|&c| matches!(c, b'/' | b'?' | b'#')) {
            Some(i) if after[i] == b'/' => &after[i..],
            _ => b"/",
        }
    };
    let end = path
        .iter()
        .position(|&c| matches!(c, b'?' | b'#'))
        .unwrap_or(path.len());
    let path = &path[..end];
    (!path.is_empty() && path.len() <= MAX_PATH).then(|| String::from_utf8_lossy(path).into_owned())
}

/// A `Host` value: a name or address, with an optional port, lowercased.
fn host_value(v: &[u8]) -> Option<String> {
    let ok = (1..=260).contains(&v.len())
        && v.iter().all(|&c| {
            c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b':' | b'[' | b']')
        });
    ok.then(|| String::from_utf8_lossy(v).to_ascii_lowercase())
}

#[cfg(test)]
mod tests;
