//! The HTTP client for a ClickHouse, and its failures in words a user acts on: what the sink,
//! the migrations and the readers share.

use clickhouse::Client;

use super::config::{Compression, StoreConfig};

/// A client for `config`, without a database (DDL names every table in full).
pub fn admin_client(config: &StoreConfig) -> Client {
    let mut c = config
        .http_client()
        .with_url(&config.url)
        .with_validation(false)
        .with_compression(match config.compression {
            Compression::None => clickhouse::Compression::None,
            Compression::Lz4 => clickhouse::Compression::Lz4,
        });
    if let Some(user) = &config.user {
        c = c.with_user(user);
    }
    if let Some(password) = &config.password {
        // A password alone is `default`'s: the client would otherwise send an empty user name,
        // which the server does not know.
        if config.user.is_none() {
            c = c.with_user("default");
        }
        c = c.with_password(password.expose());
    }
    c
}

/// Why an insert or a query failed, in words for the log.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SinkError {
    pub message: String,
    /// The request may have been applied (so a retry must check first).
    pub uncertain: bool,
    /// The server refused the data itself (a parse or type error, an HTTP 4xx other than
    /// authentication): sending the same batch again will fail again.
    pub rejected: bool,
}

/// ClickHouse error codes that say the inserted data is at fault, not the server or the
/// connection: CANNOT_PARSE_TEXT (6), CANNOT_PARSE_QUOTED_STRING (26),
/// CANNOT_PARSE_INPUT_ASSERTION_FAILED (27), ATTEMPT_TO_READ_AFTER_EOF (32),
/// CANNOT_READ_ALL_DATA (33), BAD_ARGUMENTS (36, e.g. an unknown enum value),
/// CANNOT_PARSE_DATE (38), CANNOT_PARSE_DATETIME (41), TYPE_MISMATCH (53),
/// ARGUMENT_OUT_OF_BOUND (69), CANNOT_CONVERT_TYPE (70), CANNOT_PARSE_NUMBER (72),
/// INCORRECT_DATA (117), TOO_LARGE_STRING_SIZE (131).
const BAD_DATA_CODES: &[u32] = &[6, 26, 27, 32, 33, 36, 38, 41, 53, 69, 70, 72, 117, 131];

/// Whether a refusal (not one about authentication) blames the data: a bad-data error code, or
/// a bare HTTP 4xx status.
fn is_rejection(message: &str) -> bool {
    let code = message.split_once("Code: ").and_then(|(_, rest)| {
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse::<u32>().ok()
    });
    match code {
        Some(c) => BAD_DATA_CODES.contains(&c),
        None => {
            let status = message.split_whitespace().next().unwrap_or_default();
            status.len() == 3 && status.starts_with('4') && status.parse::<u16>().is_ok()
        }
    }
}

impl SinkError {
    pub(super) fn new(message: impl Into<String>, uncertain: bool) -> Self {
        Self {
            message: message.into(),
            uncertain,
            rejected: false,
        }
    }

    /// Describes a `clickhouse` crate error in the terms a user acts on.
    pub fn from_clickhouse(e: &clickhouse::error::Error, user: Option<&str>) -> Self {
        use clickhouse::error::Error as E;
        match e {
            E::Network(_) if is_connect_error(e) => Self::new(
                format!("cannot connect ({})", innermost(e)),
                // The request never left: nothing can have been stored.
                false,
            ),
            E::Network(_) => Self::new(format!("connection failed ({})", innermost(e)), true),
            E::TimedOut => Self::new("no answer in time", true),
            E::BadResponse(msg) => {
                let m = msg.trim();
                let auth = [
                    "Code: 516",
                    "Code: 192",
                    "Code: 193",
                    "Authentication failed",
                ];
                if auth.iter().any(|a| m.contains(a)) {
                    Self::new(
                        format!(
                            "authentication failed for user `{}`: check `user:`/`password_file:` \
                             or NHISCOPE_CLICKHOUSE_USER/_PASSWORD (server said: {})",
                            user.unwrap_or("default"),
                            first_line(m)
                        ),
                        false,
                    )
                } else {
                    let mut e = Self::new(format!("the server refused: {}", first_line(m)), true);
                    e.rejected = is_rejection(m);
                    e
                }
            }
            other => Self::new(other.to_string(), true),
        }
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

/// Whether the error is a failure to connect (the request was never sent).
fn is_connect_error(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as K;
            if matches!(
                io.kind(),
                K::ConnectionRefused
                    | K::AddrNotAvailable
                    | K::HostUnreachable
                    | K::NetworkUnreachable
            ) {
                return true;
            }
        }
        // hyper-util's legacy client error for a failed connect displays as this.
        if err.to_string() == "client error (Connect)" {
            return true;
        }
        cur = err.source();
    }
    false
}

/// `e`'s message, followed by its deepest cause when that says more (a TLS failure is only
/// `client error (Connect)` at the top, and `invalid peer certificate: UnknownIssuer` below).
pub(crate) fn with_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let top = e.to_string();
    let inner = innermost(e);
    if top.contains(&inner) {
        top
    } else {
        format!("{top} ({inner})")
    }
}

/// The message of the deepest cause, which is the one that says what happened.
fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}
