//! IP allowlists as an admin writes them, and the `x-forwarded-for` header as a client and its
//! proxies write it.
//!
//! Input: lines. The first line is the allowlist, entries separated by `,`; every later line is
//! tried as a client address, and as an `x-forwarded-for` header with 1 to 3 trusted hops.
//! Asserts that an accepted list re-parses from its canonical text to the same list, that an
//! error names the first bad entry, and that `allows` agrees with a bitwise reference over the
//! entries as ipnet parses them.
#![no_main]

use std::net::IpAddr;

use ipnet::IpNet;
use libfuzzer_sys::fuzz_target;
use tessera::domain::network::{IpAllowlist, forwarded_client};

const MAX_LINES: usize = 16;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.lines();
    let entries: Vec<String> = lines
        .next()
        .unwrap_or_default()
        .split(',')
        .filter(|entry| !entry.is_empty())
        .take(MAX_LINES)
        .map(str::to_owned)
        .collect();
    let rest: Vec<&str> = lines.take(MAX_LINES).collect();

    for header in &rest {
        forwarded_headers_pick_the_trusted_entry(header);
    }

    let list = match IpAllowlist::parse(&entries) {
        Ok(list) => list,
        Err((index, _)) => {
            assert!(
                reference_entry(&entries[index]).is_none(),
                "{:?}",
                entries[index]
            );
            assert!(
                entries[..index]
                    .iter()
                    .all(|e| reference_entry(e).is_some())
            );
            return;
        }
    };
    let reference: Vec<(IpAddr, u8)> = entries
        .iter()
        .map(|entry| reference_entry(entry).expect("an accepted entry parses"))
        .collect();

    let shown = list.to_strings();
    assert!(shown.len() <= entries.len());
    assert_eq!(IpAllowlist::parse(&shown).as_ref(), Ok(&list), "{shown:?}");
    assert_eq!(list.is_empty(), entries.is_empty());
    assert_eq!(list.allows(None), entries.is_empty());

    let mut clients: Vec<IpAddr> = rest.iter().filter_map(|l| l.trim().parse().ok()).collect();
    // Addresses at and just past the edges of each entry, where off-by-one errors live.
    for &(network, len) in &reference {
        clients.extend(edges(network, len));
    }
    for client in clients {
        let expected = reference.is_empty()
            || reference
                .iter()
                .any(|&(network, len)| within(client.to_canonical(), network, len));
        assert_eq!(
            list.allows(Some(client)),
            expected,
            "{client} against {entries:?}"
        );
    }
});

/// An entry as ipnet reads it (a bare address is a host network), in canonical form: an
/// IPv4-mapped IPv6 network of at least 96 bits is the IPv4 network it names, since clients are
/// compared as IPv4 then.
fn reference_entry(entry: &str) -> Option<(IpAddr, u8)> {
    let entry = entry.trim();
    let network = match entry.parse::<IpAddr>() {
        Ok(address) => IpNet::from(address),
        Err(_) => entry.parse::<IpNet>().ok()?,
    };
    let (address, len) = (network.addr(), network.prefix_len());
    Some(match address {
        IpAddr::V6(v6) if len >= 96 => match v6.to_ipv4_mapped() {
            Some(v4) => (IpAddr::V4(v4), len - 96),
            None => (address, len),
        },
        _ => (address, len),
    })
}

/// An address as a number and its width in bits.
fn bits_of(address: IpAddr) -> (u128, u32) {
    match address {
        IpAddr::V4(v4) => (u128::from(u32::from(v4)), 32),
        IpAddr::V6(v6) => (u128::from(v6), 128),
    }
}

/// The host bits of a network of `len` bits in an address `width` bits wide.
fn host_mask(width: u32, len: u8) -> u128 {
    (u128::MAX >> (128 - width))
        .checked_shr(u32::from(len))
        .unwrap_or(0)
}

/// Whether the first `len` bits of `client` and `network` agree, in the same family.
fn within(client: IpAddr, network: IpAddr, len: u8) -> bool {
    let ((client, client_width), (network, width)) = (bits_of(client), bits_of(network));
    let mask = !host_mask(width, len);
    client_width == width && client & mask == network & mask
}

/// The first and last address of the network and their outside neighbours, plus the network's
/// IPv4 addresses as IPv4-mapped IPv6 (how a dual-stack socket reports them).
fn edges(network: IpAddr, len: u8) -> Vec<IpAddr> {
    let (bits, width) = bits_of(network);
    let host_bits = host_mask(width, len);
    let first = bits & !host_bits;
    let last = first | host_bits;
    let beyond = last
        .checked_add(1)
        .filter(|&next| next <= u128::MAX >> (128 - width));
    [Some(first), Some(last), first.checked_sub(1), beyond]
        .into_iter()
        .flatten()
        .flat_map(|value| match u32::try_from(value) {
            Ok(v4) if width == 32 => {
                let v4 = std::net::Ipv4Addr::from(v4);
                vec![IpAddr::V4(v4), IpAddr::V6(v4.to_ipv6_mapped())]
            }
            _ => vec![IpAddr::V6(value.into())],
        })
        .collect()
}

/// The entry `hops` from the right, trimmed, as an address (a port allowed), canonical; never
/// another entry, and nothing when hops is 0 or the header is shorter.
fn forwarded_headers_pick_the_trusted_entry(header: &str) {
    assert_eq!(forwarded_client(header, 0), None);
    let entries: Vec<&str> = header.split(',').collect();
    for hops in 1..=3 {
        let picked = forwarded_client(header, hops);
        let Some(entry) = entries.len().checked_sub(hops).map(|i| entries[i].trim()) else {
            assert_eq!(picked, None, "{header:?} has fewer than {hops} entries");
            continue;
        };
        let expected = entry
            .parse::<IpAddr>()
            .ok()
            .or_else(|| entry.parse::<std::net::SocketAddr>().ok().map(|s| s.ip()))
            .map(|address| address.to_canonical());
        assert_eq!(picked, expected, "{header:?} with {hops} hops");
    }
}
