//! Unusual-activity detection: the pure parts — networks of addresses, the actions a rule
//! can take, and counting events in a time window.

use std::net::IpAddr;

/// What a rule does when it fires; each action includes the ones before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    /// An `activity_detected` event in the audit trail.
    Log,
    /// And a notification on the `pg_session_auth_activity` channel.
    Notify,
    /// And the session's next access tokens carry `"reauth_required": true`.
    StepUp,
    /// And the session ends at once.
    Revoke,
}

impl Action {
    pub fn from_name(name: &str) -> Option<Action> {
        Some(match name {
            "log" => Action::Log,
            "notify" => Action::Notify,
            "step_up" => Action::StepUp,
            "revoke" => Action::Revoke,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Action::Log => "log",
            Action::Notify => "notify",
            Action::StepUp => "step_up",
            Action::Revoke => "revoke",
        }
    }

    pub fn notifies(self) -> bool {
        self >= Action::Notify
    }
}

/// Parses an address as PostgreSQL's `inet` prints it (`192.0.2.7`, `2001:db8::1`,
/// `10.1.0.0/16`: the address part); an IPv4-mapped IPv6 address is its IPv4 address.
pub fn parse_address(text: &str) -> Option<IpAddr> {
    let address = text.split('/').next()?.trim();
    let address = address
        .strip_prefix('[')
        .and_then(|a| a.strip_suffix(']'))
        .unwrap_or(address);
    match address.parse::<IpAddr>().ok()? {
        IpAddr::V6(v6) => Some(v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)),
        v4 => Some(v4),
    }
}

/// The network of `address`: its first `ipv4_prefix` (IPv4) or `ipv6_prefix` (IPv6) bits, as
/// CIDR text (`203.0.113.0/24`, `2001:db8:1::/48`). Prefixes beyond the address's length are
/// cut to it.
pub fn network_of(address: IpAddr, ipv4_prefix: u8, ipv6_prefix: u8) -> String {
    match address {
        IpAddr::V4(v4) => {
            let prefix = ipv4_prefix.min(32);
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            let network = std::net::Ipv4Addr::from(u32::from(v4) & mask);
            format!("{network}/{prefix}")
        }
        IpAddr::V6(v6) => {
            let prefix = ipv6_prefix.min(128);
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            let network = std::net::Ipv6Addr::from(u128::from(v6) & mask);
            format!("{network}/{prefix}")
        }
    }
}

/// The last address of a comma-separated header such as `X-Forwarded-For` (the one the
/// proxy in front of the server appended), if it is an address.
pub fn last_forwarded_address(header: &str) -> Option<IpAddr> {
    let last = header.rsplit(',').next()?.trim();
    // `Forwarded`-style quoting and a port (`"[2001:db8::1]:443"`, `192.0.2.1:80`) are not
    // parsed: such a header is not an address list.
    last.parse::<IpAddr>().ok().map(|address| match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    })
}

/// A 64-bit SipHash-1-3 of `parts` (each length-prefixed) under the key `seed`.
pub fn keyed_hash(seed: [u64; 2], parts: &[&[u8]]) -> u64 {
    use siphasher::sip::SipHasher13;
    use std::hash::Hasher;
    let mut hasher = SipHasher13::new_with_keys(seed[0], seed[1]);
    for part in parts {
        hasher.write_usize(part.len());
        hasher.write(part);
    }
    hasher.finish()
}

/// Events counted in a window of time: how many since it started, and whether the rule
/// already fired in it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Window {
    pub started_at: i64,
    pub count: u64,
    pub fired: bool,
}

impl Window {
    /// Counts one event at `now` (µs); a window older than `period` starts again. True when
    /// this event makes the count reach `threshold` — once per window.
    pub fn count(&mut self, now: i64, period: i64, threshold: u64) -> bool {
        if self.count == 0 || now.saturating_sub(self.started_at) >= period || now < self.started_at
        {
            *self = Window {
                started_at: now,
                count: 0,
                fired: false,
            };
        }
        self.count = self.count.saturating_add(1);
        if self.count >= threshold.max(1) && !self.fired {
            self.fired = true;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_are_ordered_and_named() {
        for action in [Action::Log, Action::Notify, Action::StepUp, Action::Revoke] {
            assert_eq!(Action::from_name(action.name()), Some(action));
        }
        assert!(Action::Log < Action::Notify && Action::StepUp < Action::Revoke);
        assert!(!Action::Log.notifies() && Action::Revoke.notifies());
        assert_eq!(Action::from_name("block"), None);
    }

    #[test]
    fn networks() {
        let v4 = parse_address("203.0.113.77").unwrap();
        assert_eq!(network_of(v4, 24, 48), "203.0.113.0/24");
        assert_eq!(network_of(v4, 16, 48), "203.0.0.0/16");
        assert_eq!(network_of(v4, 32, 48), "203.0.113.77/32");
        assert_eq!(network_of(v4, 0, 48), "0.0.0.0/0");
        assert_eq!(network_of(v4, 99, 48), "203.0.113.77/32");
        let v6 = parse_address("2001:db8:1:2::5").unwrap();
        assert_eq!(network_of(v6, 24, 48), "2001:db8:1::/48");
        assert_eq!(network_of(v6, 24, 64), "2001:db8:1:2::/64");
        let mapped = parse_address("::ffff:198.51.100.9").unwrap();
        assert_eq!(network_of(mapped, 24, 48), "198.51.100.0/24");
        assert_eq!(parse_address("10.1.0.0/16"), parse_address("10.1.0.0"));
        assert_eq!(parse_address("not an address"), None);
    }

    #[test]
    fn forwarded_for_takes_the_last_entry() {
        let last = last_forwarded_address("203.0.113.9, 198.51.100.7").unwrap();
        assert_eq!(last.to_string(), "198.51.100.7");
        assert_eq!(
            last_forwarded_address(" 2001:db8::1 ").unwrap().to_string(),
            "2001:db8::1"
        );
        assert_eq!(last_forwarded_address("203.0.113.9, unknown"), None);
        assert_eq!(last_forwarded_address(""), None);
    }

    #[test]
    fn a_window_fires_once_when_the_threshold_is_reached() {
        let mut window = Window::default();
        let fired: Vec<bool> = (0..5)
            .map(|i| window.count(1_000 + i, 1_000_000, 3))
            .collect();
        assert_eq!(fired, [false, false, true, false, false]);
        // A new window starts once the period has passed; it can fire again.
        assert!(!window.count(2_000_000, 1_000_000, 3));
        assert_eq!(window.count, 1);
        assert!(!window.count(2_000_001, 1_000_000, 3));
        assert!(window.count(2_000_002, 1_000_000, 3));
        // A clock that went back starts a new window rather than counting into the future.
        assert!(!window.count(5, 1_000_000, 3));
        assert_eq!(window.count, 1);
    }

    #[test]
    fn a_threshold_of_one_fires_at_once() {
        let mut window = Window::default();
        assert!(window.count(10, 100, 1));
        assert!(!window.count(11, 100, 1));
        assert!(window.count(200, 100, 1));
    }
}
