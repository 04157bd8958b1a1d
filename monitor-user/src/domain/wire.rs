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
        // Brackets hold an IPv6 address; around anything else they make no name a server has.
        let inner = rest.split(']').next().unwrap_or(rest);
        return if inner.parse::<std::net::Ipv6Addr>().is_ok() {
            inner
        } else {
            host
        };
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// What kind of first bytes a connection sent, as far as they could be read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Readout {
    /// A TLS ClientHello, read to its end: inside TLS, no method or path can be seen.
    Tls,
    /// An HTTP/1.x request head, read to its blank line or at least through a single `Host`.
    Http,
    /// Neither: another protocol (SSH, a database's), or nothing sent.
    #[default]
    Other,
    /// The start of a ClientHello or of an HTTP request that could not be read whole: cut by
    /// the capture before the fields that matter, malformed, fragmented beyond what is joined,
    /// a request with two `Host` lines, or a packet whose TCP segment was not found. A sender
    /// can make its bytes so on purpose; an endpoint that declares what its requests may name
    /// does not take them.
    Unreadable,
}

impl Readout {
    /// The word a sentence uses for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tls => "tls",
            Self::Http => "http",
            Self::Other => "other",
            Self::Unreadable => "unreadable",
        }
    }
}

/// An event's [`WireFields`]: only request events have any, so they are kept out of line, and
/// an event without them carries one word, not six strings. Reads as the fields (none when
/// empty); writing a field makes room for them.
#[derive(Clone, Debug, Default)]
pub struct Wire(Option<Box<WireFields>>);

/// Equal when the fields are (an emptied box is no fields).
impl PartialEq for Wire {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for Wire {}

impl std::ops::Deref for Wire {
    type Target = WireFields;
    fn deref(&self) -> &WireFields {
        static NONE: WireFields = WireFields {
            sni: None,
            alpn: None,
            tls_version: None,
            http_method: None,
            http_host: None,
            http_path: None,
        };
        self.0.as_deref().unwrap_or(&NONE)
    }
}

impl std::ops::DerefMut for Wire {
    fn deref_mut(&mut self) -> &mut WireFields {
        self.0.get_or_insert_with(Box::default)
    }
}

impl From<WireFields> for Wire {
    fn from(f: WireFields) -> Self {
        Self((!f.is_empty()).then(|| Box::new(f)))
    }
}

impl<'de> Deserialize<'de> for Wire {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        WireFields::deserialize(d).map(Self::from)
    }
}

/// What a connection's first bytes said: the fields, and how they were read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reading {
    pub fields: WireFields,
    pub readout: Readout,
}

/// The fields of a connection's first bytes, all of them there are: a TLS ClientHello or an
/// HTTP/1.x request (a prefix that would need more bytes is `Readout::Unreadable`).
pub fn parse(bytes: &[u8]) -> WireFields {
    read_whole(bytes).fields
}

/// [`read`], when no more bytes will come: what still needed more is unreadable.
pub fn read_whole(bytes: &[u8]) -> Reading {
    match read(bytes) {
        Read::Done(r) | Read::More(r) => r,
    }
}

/// What the first bytes so far say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Read {
    /// Nothing more the connection sends can change it.
    Done(Reading),
    /// A ClientHello or request head not yet whole: what it says if no more comes (see
    /// [`read_whole`]): a ClientHello not whole is unreadable, an HTTP head cut after a single
    /// `Host` line is read as far as it goes.
    More(Reading),
}

/// The first bytes a connection has sent so far (joined from its packets in order).
pub fn read(bytes: &[u8]) -> Read {
    match bytes.first() {
        None => Read::More(Reading::default()),
        Some(0x16) => client_hello(bytes),
        Some(b'A'..=b'Z' | b'a'..=b'z') => http_request(bytes),
        // Empty lines before a request line, which servers skip.
        Some(b'\r' | b'\n') => Read::Done(Reading {
            fields: WireFields::default(),
            readout: Readout::Unreadable,
        }),
        Some(_) => Read::Done(Reading::default()),
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

/// A ClientHello in TLS handshake records (joined when it spans several). `More` while the
/// message is not whole; a whole one that is not a ClientHello is unreadable.
fn client_hello(bytes: &[u8]) -> Read {
    let (hello, whole) = match handshake(bytes) {
        Ok(h) => h,
        Err(()) => {
            return Read::Done(Reading {
                fields: WireFields::default(),
                readout: Readout::Unreadable,
            })
        }
    };
    let parsed = hello_fields(&hello);
    if !whole {
        return Read::More(Reading {
            fields: parsed.map(|(f, _)| f).unwrap_or_default(),
            readout: Readout::Unreadable,
        });
    }
    match parsed {
        // A server name extension there is but cannot be read names no server one may judge.
        Some((fields, true)) => Read::Done(Reading {
            fields,
            readout: Readout::Tls,
        }),
        Some((fields, false)) => Read::Done(Reading {
            fields,
            readout: Readout::Unreadable,
        }),
        // A whole message its fields could not be read from is no ClientHello.
        None => Read::Done(Reading {
            fields: WireFields::default(),
            readout: Readout::Unreadable,
        }),
    }
}

/// The first handshake message of TLS records, joined across records (`true`: whole), or
/// `Err` when the records are not handshake records of TLS 1.x.
fn handshake(bytes: &[u8]) -> Result<(Vec<u8>, bool), ()> {
    let mut r = Reader(bytes);
    let mut msg = Vec::new();
    loop {
        let Some(head) = r.take(5) else {
            return Ok((msg, false));
        };
        if head[0] != 0x16 || head[1] != 3 {
            return Err(());
        }
        let len = usize::from(u16::from_be_bytes([head[3], head[4]]));
        if len == 0 || len > 1 << 14 {
            return Err(());
        }
        let body = &r.0[..len.min(r.0.len())];
        msg.extend_from_slice(body);
        if msg.len() >= 4 {
            let need = 4 + usize::from_be_bytes([0, 0, 0, 0, 0, msg[1], msg[2], msg[3]]);
            if msg.len() >= need {
                msg.truncate(need);
                return Ok((msg, true));
            }
        }
        if r.take(len).is_none() {
            return Ok((msg, false));
        }
    }
}

/// The fields of a ClientHello message (handshake header included), read up to its end or to
/// the end of `msg`: whatever whole extensions are there; and whether its server name, if it
/// has the extension, could be read (`false`: a name of characters no DNS name has).
fn hello_fields(msg: &[u8]) -> Option<(WireFields, bool)> {
    let mut r = Reader(msg);
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
    // Extensions: whatever fits before the end of the bytes; a cut one ends the walk.
    let Some(declared) = r.u16() else {
        return Some((f, true));
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
    let name_read = !seen_sni || f.sni.is_some();
    Some((f, name_read))
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

/// An HTTP/1.x request head: its request line, and its `Host` (the authority of an
/// absolute-form target, which a server takes over any `Host` line, else the one `Host` line).
/// Lines end with CRLF or a bare LF, as servers accept them. `Done` at the blank line that ends
/// the head, or as soon as a second `Host` line makes the server the request is for
/// ambiguous; `More` before, with `Readout::Http` when one `Host` was read already (a head cut
/// by the capture after it still names its server) and `Readout::Unreadable` otherwise.
fn http_request(bytes: &[u8]) -> Read {
    let Some(end) = bytes.iter().position(|&c| c == b'\n') else {
        // A request line still to be finished, if what there is can start one.
        return if bytes.iter().all(|&c| request_byte(c)) {
            Read::More(Reading {
                fields: WireFields::default(),
                readout: Readout::Unreadable,
            })
        } else {
            Read::Done(Reading::default())
        };
    };
    let Some((method, target)) = request_line(line_of(&bytes[..end])) else {
        let line = line_of(&bytes[..end]);
        let readout = if looks_http(line) && line.iter().all(|&c| request_byte(c)) {
            Readout::Unreadable
        } else {
            Readout::Other
        };
        return Read::Done(Reading {
            fields: WireFields::default(),
            readout,
        });
    };
    let mut f = WireFields {
        http_method: Some(String::from_utf8_lossy(method).into_owned()),
        ..WireFields::default()
    };
    let authority = if method == b"CONNECT" {
        // authority-form: the host and port a tunnel is asked for.
        Some(host_value(target))
    } else {
        let (path, authority) = target_parts(target);
        f.http_path = path;
        authority
    };
    // Header lines, up to the blank line or the end of the bytes: only `Host` is read.
    let mut hosts = 0;
    let mut host = None;
    let mut ended = false;
    let mut rest = &bytes[end + 1..];
    while let Some(n) = rest.iter().position(|&c| c == b'\n') {
        let header = line_of(&rest[..n]);
        if header.is_empty() {
            ended = true;
            break;
        }
        if let Some(colon) = header.iter().position(|&c| c == b':') {
            if header[..colon].eq_ignore_ascii_case(b"host") {
                hosts += 1;
                host = host_value(header[colon + 1..].trim_ascii());
            }
        }
        rest = &rest[n + 1..];
    }
    match authority {
        Some(a) => f.http_host = a,
        None if hosts == 1 => f.http_host = host,
        None => {}
    }
    let named = f.http_host.is_some();
    // Two `Host` lines, or one whose value is no host: which server is asked is not known.
    if hosts > 1 || (hosts == 1 && f.http_host.is_none()) {
        f.http_host = None;
        return Read::Done(Reading {
            fields: f,
            readout: Readout::Unreadable,
        });
    }
    if ended {
        return Read::Done(Reading {
            fields: f,
            readout: Readout::Http,
        });
    }
    Read::More(Reading {
        fields: f,
        readout: if named {
            Readout::Http
        } else {
            Readout::Unreadable
        },
    })
}

/// A line without its CR.
fn line_of(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Whether `c` may be in a request line a server accepts: a line with another byte is no
/// request, whatever it names (and is decided as soon as that byte comes).
fn request_byte(c: u8) -> bool {
    c.is_ascii_graphic() || c == b' ' || c == b'\r'
}

/// Whether a first line that is no request line nhiscope reads may still be one a server
/// accepts (another version, a lowercase method, spaces doubled): it names HTTP.
fn looks_http(line: &[u8]) -> bool {
    line.windows(6).any(|w| w == b" HTTP/")
}

/// Whether `m` is an HTTP method as nhiscope reads and declares them: 1 to 16 capital letters
/// (the wire, `methods:` in a registry, the methods `scope suggest` writes).
pub fn is_method(m: &[u8]) -> bool {
    (1..=16).contains(&m.len()) && m.iter().all(u8::is_ascii_uppercase)
}

/// A request line's method and target, when it is one of HTTP/1.0 or 1.1.
fn request_line(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut parts = line.split(|&c| c == b' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    let ok = parts.next().is_none()
        && is_method(method)
        && matches!(version, b"HTTP/1.0" | b"HTTP/1.1")
        && !target.is_empty()
        && target.iter().all(u8::is_ascii_graphic);
    ok.then_some((method, target))
}

/// A request target's path (origin-form `/a/b?q`, absolute-form `http://h/a/b?q`,
/// asterisk-form `*`), made as a server reads it (see [`normal_path`]), and an absolute-form
/// target's authority (`Some(None)`: there is one, but it is no host).
fn target_parts(target: &[u8]) -> (Option<String>, Option<Option<String>>) {
    if target == b"*" {
        return (Some("*".to_owned()), None);
    }
    if target.starts_with(b"/") {
        return (normal_path(target), None);
    }
    // absolute-form: `scheme://authority[/path][?query]`; the authority without userinfo.
    let Some(at) = target.windows(3).position(|w| w == b"://") else {
        return (None, None);
    };
    let after = &target[at + 3..];
    let end = after
        .iter()
        .position(|&c| matches!(c, b'/' | b'?' | b'#'))
        .unwrap_or(after.len());
    let authority = &after[..end];
    let authority = match authority.iter().rposition(|&c| c == b'@') {
        Some(i) => &authority[i + 1..],
        None => authority,
    };
    let path = match after.get(end) {
        Some(b'/') => normal_path(&after[end..]),
        _ => Some("/".to_owned()),
    };
    (path, Some(host_value(authority)))
}

/// A path as a server reads it, so that a spelling cannot make one path pass for another:
/// without its query string, fragment and `;` parameters; `%XX` escapes of unreserved
/// characters decoded (others kept, in capitals); `.` and `..` segments resolved. A segment
/// that looks like a secret (a token in the path, as some APIs take it) is written `***`.
/// `None` when it is longer than [`MAX_PATH`] or has a broken escape.
pub fn normal_path(raw: &[u8]) -> Option<String> {
    let end = raw
        .iter()
        .position(|&c| matches!(c, b'?' | b'#'))
        .unwrap_or(raw.len());
    let raw = raw.get(1..end)?;
    // An escaped slash or backslash is a separator to some servers and not to others.
    if raw.windows(3).any(|w| {
        w[0] == b'%' && (w[1..].eq_ignore_ascii_case(b"2f") || w[1..].eq_ignore_ascii_case(b"5c"))
    }) {
        return None;
    }
    let mut segments: Vec<String> = Vec::new();
    let mut dir = false;
    for seg in raw.split(|&c| c == b'/') {
        let (seg, params) = match seg.iter().position(|&c| c == b';') {
            Some(i) => (&seg[..i], true),
            None => (seg, false),
        };
        let seg = unescape(seg)?;
        // `..;` is `..` to a server that drops parameters first and a plain name to one that
        // does not: which directory is asked for is not known.
        if params && matches!(seg.as_str(), "." | "..") {
            return None;
        }
        // Empty segments are merged, as nginx does (`//` is `/`).
        dir = matches!(seg.as_str(), "" | "." | "..");
        match seg.as_str() {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            _ => segments.push(seg),
        }
    }
    let mut out = String::with_capacity(raw.len() + 1);
    for seg in &segments {
        out.push('/');
        if secret_segment(seg) {
            out.push_str(crate::domain::redact::MASK);
        } else {
            out.push_str(seg);
        }
    }
    if out.is_empty() || (dir && !out.ends_with('/')) {
        out.push('/');
    }
    (out.len() <= MAX_PATH).then_some(out)
}

/// A path segment with the escapes of unreserved characters decoded and the others written in
/// capitals; `None` for a `%` not followed by two hex digits.
fn unescape(seg: &[u8]) -> Option<String> {
    let mut out = String::with_capacity(seg.len());
    let mut i = 0;
    while i < seg.len() {
        let c = seg[i];
        if c != b'%' {
            out.push(char::from(c));
            i += 1;
            continue;
        }
        let hex = seg.get(i + 1..i + 3)?;
        let v = u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
        if v.is_ascii_alphanumeric() || matches!(v, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(v));
        } else {
            out.push('%');
            out.push_str(
                &hex.to_ascii_uppercase()
                    .iter()
                    .map(|&b| char::from(b))
                    .collect::<String>(),
            );
        }
        i += 3;
    }
    Some(out)
}

/// Whether a path segment looks like a secret: it, or a word of it (between `:`, `.`, `,`,
/// `@`, `=` and escapes), looks random or has a known token prefix.
fn secret_segment(seg: &str) -> bool {
    use crate::domain::redact::looks_random;
    looks_random(seg)
        || seg
            .split([':', '.', ',', '@', '=', '%', '!', '$', '*', '+'])
            .any(looks_random)
}

/// A `Host` value: a name or address, with an optional port, lowercased.
fn host_value(v: &[u8]) -> Option<String> {
    let ok = (1..=260).contains(&v.len())
        && v.iter().all(|&c| {
            c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b':' | b'[' | b']')
        });
    ok.then(|| String::from_utf8_lossy(v).to_ascii_lowercase())
}

pub mod join;

#[cfg(test)]
mod tests;
