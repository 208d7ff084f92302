//! Who is on the other end of a socket. A leaf: it knows nothing of the gateway.

/// An IPv4 peer seen on a dual-stack socket arrives as `::ffff:a.b.c.d`.
#[must_use]
pub fn canonical_ip(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
        v4 => v4,
    }
}
