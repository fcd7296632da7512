//! Which address the network rules and the session's record see.
//!
//! `auth.refresh_session()` is called by `anon`, which can pass any `ip`. A deployment that
//! knows better names its source in `pg_session_auth.client_ip_source`: `connection` (the
//! address the server sees, for apps that connect from the user's network, or through a
//! proxy that preserves it), or `header` (the header `pg_session_auth.client_ip_header` of
//! PostgREST's `request.headers`, written by a proxy the deployment trusts to set it: for a
//! list such as `X-Forwarded-For`, its last entry, the one that proxy appended). Either one
//! replaces the argument.

use std::net::IpAddr;

use pg_session_auth_core::activity::{last_forwarded_address, parse_address};

use crate::gucs::{self, ClientIpSource};
use crate::pg::settings;

/// The address to record and judge: from the configured source, else `argument`.
pub fn trusted(argument: Option<&pgrx::Inet>) -> Option<IpAddr> {
    match gucs::client_ip_source() {
        ClientIpSource::Argument => argument.and_then(|inet| parse_address(&inet.0)),
        ClientIpSource::Connection => connection_address(),
        ClientIpSource::Header => header_address(),
    }
}

/// The address a rejection is recorded with: the configured source's, else the connection's.
pub fn of_request() -> Option<IpAddr> {
    match gucs::client_ip_source() {
        ClientIpSource::Header => header_address(),
        _ => connection_address(),
    }
}

/// As an `inet` value.
pub fn as_inet(address: Option<IpAddr>) -> Option<pgrx::Inet> {
    address.map(|address| pgrx::Inet(address.to_string()))
}

fn connection_address() -> Option<IpAddr> {
    crate::pg::locks::client_address().and_then(|text| parse_address(&text))
}

fn header_address() -> Option<IpAddr> {
    let headers = settings::value(c"request.headers")?;
    let headers: serde_json::Value = serde_json::from_slice(&headers).ok()?;
    let name = gucs::client_ip_header().to_ascii_lowercase();
    let value = headers
        .as_object()?
        .iter()
        .find_map(|(key, value)| (key.to_ascii_lowercase() == name).then_some(value))?;
    last_forwarded_address(value.as_str()?)
}
