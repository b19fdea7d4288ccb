//! IP allowlists: single addresses and CIDRs, v4 and v6.

use std::net::IpAddr;

use ipnet::IpNet;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is neither an IP address nor a CIDR")]
pub struct InvalidNetwork(pub String);

/// Parsed once when a token is written or loaded, never per Check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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

fn parse_network(entry: &str) -> Result<IpNet, InvalidNetwork> {
    if let Ok(address) = entry.parse::<IpAddr>() {
        return Ok(IpNet::from(address.to_canonical()));
    }
    entry
        .parse::<IpNet>()
        // 10.1.2.3/8 means 10.0.0.0/8: store what the operator meant.
        .map(|network| network.trunc())
        .map_err(|_| InvalidNetwork(entry.to_owned()))
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
    fn an_invalid_entry_is_reported_with_its_index() {
        let entries = vec!["10.0.0.0/8".to_owned(), "10.0.0.0/33".to_owned()];
        assert_eq!(
            IpAllowlist::parse(&entries),
            Err((1, InvalidNetwork("10.0.0.0/33".to_owned())))
        );
    }
}
