//! Peer addresses as the gateway compares them. A leaf.

use std::net::IpAddr;

/// An IPv4 peer seen on a dual-stack socket arrives as `::ffff:a.b.c.d`.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}
