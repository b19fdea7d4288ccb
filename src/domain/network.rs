//! IP allowlists: single addresses and CIDRs, v4 and v6.

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is neither an IP address nor a CIDR")]
pub struct InvalidNetwork(pub String);

/// Parsed once when a token is written or loaded, never per Check.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct IpAllowlist(Vec<IpNet>);

impl IpAllowlist {
    /// Parses IPs and CIDRs, reporting the index of the first invalid entry.
    pub fn parse(entries: &[String]) -> Result<Self, (usize, InvalidNetwork)> {
        let mut networks = Vec::with_capacity(entries.len());
        for (index, entry) in entries.iter().enumerate() {
            networks.push(parse_network(entry.trim()).map_err(|e| (index, e))?);
        }
        networks.sort();
        networks.dedup();
        Ok(Self(networks))
    }

    /// An empty list allows any address.
    pub fn allows(&self, client: Option<IpAddr>) -> bool {
        if self.0.is_empty() {
            return true;
        }
        let Some(client) = client else {
            return false;
        };
        // An IPv4 client seen through an IPv6 socket arrives as ::ffff:a.b.c.d.
        let client = client.to_canonical();
        self.0.iter().any(|network| network.contains(&client))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many networks the list holds.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Canonical text of each entry: a bare address for host networks, CIDR otherwise.
    pub fn to_strings(&self) -> Vec<String> {
        self.0
            .iter()
            .map(|network| {
                if network.prefix_len() == network.max_prefix_len() {
                    network.addr().to_string()
                } else {
                    network.to_string()
                }
            })
            .collect()
    }
}

/// The client address in an `x-forwarded-for` header written by `trusted_hops` proxies that
/// each append the address they received the request from: the entry `trusted_hops` from the
/// right (1 = the rightmost). Entries further left were written by the client or by proxies
/// nobody vouches for, so the leftmost is never taken unless it is that entry.
///
/// None when `trusted_hops` is 0, when the header has fewer entries (a trusted proxy was
/// bypassed), or when that entry is not an address: callers must not fall back to an address a
/// client could choose.
pub fn forwarded_client(header: &str, trusted_hops: usize) -> Option<IpAddr> {
    let position_from_right = trusted_hops.checked_sub(1)?;
    let entry = header.rsplit(',').nth(position_from_right)?.trim();
    parse_forwarded_entry(entry).map(|address| address.to_canonical())
}

/// A bare address, or one with a port (`192.0.2.1:443`, `[2001:db8::1]:443`) as some proxies
/// write it.
fn parse_forwarded_entry(entry: &str) -> Option<IpAddr> {
    entry.parse::<IpAddr>().ok().or_else(|| {
        entry
            .parse::<std::net::SocketAddr>()
            .ok()
            .map(|socket| socket.ip())
    })
}

fn parse_network(entry: &str) -> Result<IpNet, InvalidNetwork> {
    if let Ok(address) = entry.parse::<IpAddr>() {
        return Ok(IpNet::from(address.to_canonical()));
    }
    entry
        .parse::<IpNet>()
        // 10.1.2.3/8 means 10.0.0.0/8: store what the operator meant.
        .map(|network| canonical_network(network.trunc()))
        .map_err(|_| InvalidNetwork(entry.to_owned()))
}

/// Clients are compared in canonical form (an IPv4-mapped IPv6 address as IPv4), so a network
/// inside `::ffff:0:0/96` is kept as the IPv4 network it names: as IPv6 it could match no client.
fn canonical_network(network: IpNet) -> IpNet {
    let IpNet::V6(v6) = network else {
        return network;
    };
    match (v6.addr().to_ipv4_mapped(), v6.prefix_len().checked_sub(96)) {
        (Some(v4), Some(len)) => Ipv4Net::new(v4, len).map_or(network, IpNet::V4),
        _ => network,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> IpAllowlist {
        let owned: Vec<String> = entries.iter().map(|s| (*s).to_owned()).collect();
        IpAllowlist::parse(&owned).expect("valid list")
    }

    fn ip(raw: &str) -> Option<IpAddr> {
        Some(raw.parse().expect("valid ip"))
    }

    #[test]
    fn an_empty_allowlist_allows_any_client_even_an_unknown_one() {
        assert!(list(&[]).allows(ip("203.0.113.9")));
        assert!(list(&[]).allows(None));
    }

    #[test]
    fn a_cidr_allows_addresses_inside_it_only() {
        let allow = list(&["10.0.0.0/8", "2001:db8::/32"]);
        assert!(allow.allows(ip("10.20.30.40")));
        assert!(allow.allows(ip("2001:db8::1")));
        assert!(!allow.allows(ip("11.0.0.1")));
        assert!(!allow.allows(ip("2001:db9::1")));
    }

    #[test]
    fn a_single_address_allows_exactly_that_address() {
        let allow = list(&["192.0.2.7"]);
        assert!(allow.allows(ip("192.0.2.7")));
        assert!(!allow.allows(ip("192.0.2.8")));
    }

    #[test]
    fn an_ipv4_mapped_ipv6_client_matches_its_ipv4_network() {
        assert!(list(&["192.0.2.0/24"]).allows(ip("::ffff:192.0.2.1")));
    }

    #[test]
    fn an_ipv4_mapped_ipv6_network_allows_the_ipv4_clients_it_names() {
        let allow = list(&["::ffff:192.0.2.0/120", "::ffff:198.51.100.7/128"]);
        assert!(allow.allows(ip("192.0.2.1")));
        assert!(allow.allows(ip("::ffff:192.0.2.255")));
        assert!(allow.allows(ip("198.51.100.7")));
        assert!(!allow.allows(ip("192.0.3.1")));
        assert_eq!(allow.to_strings(), vec!["192.0.2.0/24", "198.51.100.7"]);
        // Wider than the mapped range, the network stays IPv6.
        assert_eq!(list(&["::ffff:0:0/95"]).to_strings(), vec!["::fffe:0:0/95"]);
    }

    #[test]
    fn a_non_empty_allowlist_denies_a_client_without_an_address() {
        assert!(!list(&["192.0.2.0/24"]).allows(None));
    }

    #[test]
    fn host_bits_in_a_cidr_are_cleared_and_single_hosts_print_bare() {
        assert_eq!(
            list(&["10.1.2.3/8", "192.0.2.7"]).to_strings(),
            vec!["10.0.0.0/8", "192.0.2.7"]
        );
    }

    #[test]
    fn the_forwarded_client_is_the_entry_as_many_hops_from_the_right_as_are_trusted() {
        let header = "198.51.100.7, 203.0.113.9, 10.0.0.2";
        assert_eq!(forwarded_client(header, 1), ip("10.0.0.2"));
        assert_eq!(forwarded_client(header, 2), ip("203.0.113.9"));
        assert_eq!(forwarded_client(header, 3), ip("198.51.100.7"));
    }

    #[test]
    fn a_client_forged_leftmost_entry_is_never_taken_when_fewer_hops_are_trusted() {
        let forged = "1.2.3.4, 203.0.113.9";
        assert_eq!(forwarded_client(forged, 1), ip("203.0.113.9"));
    }

    #[test]
    fn no_forwarded_client_without_trusted_hops_or_with_too_few_entries() {
        assert_eq!(forwarded_client("203.0.113.9", 0), None);
        assert_eq!(forwarded_client("203.0.113.9", 2), None);
        assert_eq!(forwarded_client("", 1), None);
    }

    #[test]
    fn a_forwarded_entry_that_is_not_an_address_gives_no_client() {
        assert_eq!(forwarded_client("unknown, 203.0.113.9", 2), None);
        assert_eq!(forwarded_client("203.0.113.9, _hidden", 1), None);
    }

    #[test]
    fn forwarded_entries_may_carry_ports_and_ipv6_and_are_canonical() {
        assert_eq!(forwarded_client("192.0.2.1:443", 1), ip("192.0.2.1"));
        assert_eq!(forwarded_client("[2001:db8::1]:443", 1), ip("2001:db8::1"));
        assert_eq!(forwarded_client(" ::ffff:192.0.2.1 ", 1), ip("192.0.2.1"));
    }

    #[test]
    fn an_invalid_entry_is_reported_with_its_index() {
        let entries = vec!["10.0.0.0/8".to_owned(), "10.0.0.0/33".to_owned()];
        assert_eq!(
            IpAllowlist::parse(&entries),
            Err((1, InvalidNetwork("10.0.0.0/33".to_owned())))
        );
    }
}
