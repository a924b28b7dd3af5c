//! Which addresses a delivery may connect to.
//!
//! Endpoint URLs come from customers, so without a guard a webhook is a way to make the
//! server call its own network: cloud metadata at 169.254.169.254, an admin port on
//! loopback, a database on 10.x. The guard refuses every address that is not plainly
//! public unicast, judged on the address the connection will actually use (after DNS, so a
//! name that resolves to 127.0.0.1 is refused too). Operators open holes with an allow-list
//! of [`Cidr`]s, e.g. `127.0.0.0/8` for local development.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use crate::Error;

/// A block of IP addresses: a network address and a prefix length, as `10.0.0.0/8` or
/// `fc00::/7`. A bare address (`127.0.0.1`) is the block of that one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// The block of `prefix` leading bits of `network`. The bits after the prefix must be
    /// zero, so that a typo such as `10.0.0.1/8` is caught rather than silently widened.
    pub fn new(network: IpAddr, prefix: u8) -> Result<Self, Error> {
        let invalid = |reason| Error::InvalidCidr {
            input: format!("{network}/{prefix}"),
            reason,
        };
        if prefix > max_prefix(network) {
            return Err(invalid("the prefix length is longer than the address"));
        }
        let cidr = Cidr { network, prefix };
        let truncated = cidr.truncated();
        if truncated != network {
            return Err(Error::CidrHostBits {
                input: format!("{network}/{prefix}"),
                network: Cidr {
                    network: truncated,
                    prefix,
                },
            });
        }
        Ok(cidr)
    }

    /// The first address of the block.
    pub fn network(&self) -> IpAddr {
        self.network
    }

    /// How many leading bits every address of the block shares with [`Cidr::network`].
    pub fn prefix_len(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` lies in the block. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`)
    /// counts as its IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => in_block_v4(ip, net.to_bits(), self.prefix),
            (IpAddr::V6(net), IpAddr::V6(ip)) => in_block_v6(ip, net.to_bits(), self.prefix),
            _ => false,
        }
    }

    fn truncated(&self) -> IpAddr {
        match self.network {
            IpAddr::V4(net) => Ipv4Addr::from_bits(net.to_bits() & mask_v4(self.prefix)).into(),
            IpAddr::V6(net) => Ipv6Addr::from_bits(net.to_bits() & mask_v6(self.prefix)).into(),
        }
    }
}

impl FromStr for Cidr {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.trim();
        let invalid = |reason| Error::InvalidCidr {
            input: s.to_owned(),
            reason,
        };
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = address
            .parse()
            .map_err(|_| invalid("expected an IP address such as 10.0.0.0 or fc00::"))?;
        let prefix = match prefix {
            None => max_prefix(network),
            Some(digits) if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => {
                digits
                    .parse()
                    .map_err(|_| invalid("the prefix length is longer than the address"))?
            }
            Some(_) => return Err(invalid("the prefix length must be a number, as in /8")),
        };
        Cidr::new(network, prefix)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl serde::Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// An address the guard will not connect to, and why.
///
/// For a host name, the text names the host, never the addresses it resolved to: those
/// belong to the operator's network, and the text is shown to whoever owns the endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refused {
    pub ip: IpAddr,
    pub reason: &'static str,
    /// The host name that resolved to `ip`; `None` for an IP literal.
    pub host: Option<String>,
}

impl Refused {
    /// The same refusal, for an address `host` resolved to.
    pub fn resolved_from(self, host: &str) -> Refused {
        Refused {
            host: Some(host.to_owned()),
            ..self
        }
    }
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let reason = self.reason;
        match &self.host {
            Some(host) => write!(
                f,
                "refused to connect to {host}: it resolves to a {reason} address (not in allowed_subnets)"
            ),
            None => write!(
                f,
                "refused to connect to {}: {reason} address (not in allowed_subnets)",
                self.ip
            ),
        }
    }
}

impl std::error::Error for Refused {}

/// Decides which addresses deliveries may reach: public unicast addresses, plus whatever
/// the allow-list opens.
#[derive(Debug, Clone, Default)]
pub(crate) struct Guard {
    allowed: Vec<Cidr>,
}

impl Guard {
    pub fn new(allowed: Vec<Cidr>) -> Self {
        Guard { allowed }
    }

    /// Allows `ip` if it is in the allow-list or is not special-purpose.
    pub fn check(&self, ip: IpAddr) -> Result<(), Refused> {
        let ip = ip.to_canonical();
        if self.allowed.iter().any(|cidr| cidr.contains(ip)) {
            return Ok(());
        }
        match special_purpose(ip) {
            Some(reason) => Err(Refused {
                ip,
                reason,
                host: None,
            }),
            None => Ok(()),
        }
    }
}

/// Why `ip` is not a public unicast address, or `None` if it is one. Follows the IANA
/// special-purpose registries; for IPv6, anything outside global unicast (`2000::/3`) is
/// refused as well, and addresses that embed an IPv4 address are judged by it.
pub(crate) fn special_purpose(ip: IpAddr) -> Option<&'static str> {
    match ip.to_canonical() {
        IpAddr::V4(ip) => special_v4(ip),
        IpAddr::V6(ip) => special_v6(ip),
    }
}

const fn v4(a: u8, b: u8, c: u8, d: u8) -> u32 {
    u32::from_be_bytes([a, b, c, d])
}

const fn v6(segments: [u16; 8]) -> u128 {
    let [a, b, c, d, e, f, g, h] = segments;
    Ipv6Addr::new(a, b, c, d, e, f, g, h).to_bits()
}

/// IPv4 blocks that are not public unicast, most specific first.
const SPECIAL_V4: &[(u32, u8, &str)] = &[
    (v4(0, 0, 0, 0), 32, "unspecified"),
    (v4(255, 255, 255, 255), 32, "broadcast"),
    (v4(0, 0, 0, 0), 8, "\"this network\""),
    (v4(10, 0, 0, 0), 8, "private"),
    (v4(100, 64, 0, 0), 10, "shared (CGNAT)"),
    (v4(127, 0, 0, 0), 8, "loopback"),
    (v4(169, 254, 0, 0), 16, "link-local"),
    (v4(172, 16, 0, 0), 12, "private"),
    (v4(192, 0, 0, 0), 24, "IETF protocol assignment"),
    (v4(192, 0, 2, 0), 24, "documentation"),
    (v4(192, 88, 99, 0), 24, "6to4 relay anycast"),
    (v4(192, 168, 0, 0), 16, "private"),
    (v4(198, 18, 0, 0), 15, "benchmarking"),
    (v4(198, 51, 100, 0), 24, "documentation"),
    (v4(203, 0, 113, 0), 24, "documentation"),
    (v4(224, 0, 0, 0), 4, "multicast"),
    (v4(240, 0, 0, 0), 4, "reserved"),
];

/// IPv6 blocks that are not public unicast, most specific first. IPv4-mapped addresses
/// never get here: they are judged as IPv4.
const SPECIAL_V6: &[(u128, u8, &str)] = &[
    (v6([0, 0, 0, 0, 0, 0, 0, 0]), 128, "unspecified"),
    (v6([0, 0, 0, 0, 0, 0, 0, 1]), 128, "loopback"),
    (
        v6([0, 0, 0, 0, 0, 0, 0, 0]),
        96,
        "IPv4-compatible (deprecated)",
    ),
    (v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0]), 48, "local-use NAT64"),
    (v6([0x100, 0, 0, 0, 0, 0, 0, 0]), 64, "discard-only"),
    (v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0]), 32, "documentation"),
    (
        v6([0x2001, 0, 0, 0, 0, 0, 0, 0]),
        23,
        "IETF protocol assignment",
    ),
    (v6([0x2002, 0, 0, 0, 0, 0, 0, 0]), 16, "6to4 (deprecated)"),
    (v6([0x3fff, 0, 0, 0, 0, 0, 0, 0]), 20, "documentation"),
    (v6([0xfc00, 0, 0, 0, 0, 0, 0, 0]), 7, "unique local"),
    (v6([0xfe80, 0, 0, 0, 0, 0, 0, 0]), 10, "link-local"),
    (
        v6([0xfec0, 0, 0, 0, 0, 0, 0, 0]),
        10,
        "site-local (deprecated)",
    ),
    (v6([0xff00, 0, 0, 0, 0, 0, 0, 0]), 8, "multicast"),
];

/// The well-known NAT64 prefix: the last 32 bits are an IPv4 address.
const NAT64: u128 = v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0]);

fn special_v4(ip: Ipv4Addr) -> Option<&'static str> {
    SPECIAL_V4
        .iter()
        .find(|&&(net, prefix, _)| in_block_v4(ip, net, prefix))
        .map(|&(_, _, reason)| reason)
}

fn special_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if let Some(&(_, _, reason)) = SPECIAL_V6
        .iter()
        .find(|&&(net, prefix, _)| in_block_v6(ip, net, prefix))
    {
        return Some(reason);
    }
    if in_block_v6(ip, NAT64, 96) {
        // Translated to IPv4 by a NAT64 gateway: as safe as the address it reaches.
        let embedded = Ipv4Addr::from_bits(ip.to_bits() as u32);
        return special_v4(embedded).map(|_| "NAT64 of a non-public IPv4");
    }
    if !in_block_v6(ip, v6([0x2000, 0, 0, 0, 0, 0, 0, 0]), 3) {
        return Some("reserved (outside global unicast)");
    }
    None
}

fn max_prefix(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

fn mask_v4(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn mask_v6(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

fn in_block_v4(ip: Ipv4Addr, net: u32, prefix: u8) -> bool {
    ip.to_bits() & mask_v4(prefix) == net
}

fn in_block_v6(ip: Ipv6Addr, net: u128, prefix: u8) -> bool {
    ip.to_bits() & mask_v6(prefix) == net
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect(text)
    }

    #[test]
    fn refuses_every_special_purpose_ipv4_range() {
        let refused = [
            ("0.0.0.0", "unspecified"),
            ("0.1.2.3", "\"this network\""),
            ("10.0.0.1", "private"),
            ("10.255.255.255", "private"),
            ("100.64.0.1", "shared (CGNAT)"),
            ("100.127.255.254", "shared (CGNAT)"),
            ("127.0.0.1", "loopback"),
            ("127.8.9.10", "loopback"),
            ("169.254.169.254", "link-local"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.0.0.8", "IETF protocol assignment"),
            ("192.0.2.33", "documentation"),
            ("192.88.99.1", "6to4 relay anycast"),
            ("192.168.1.1", "private"),
            ("198.18.0.1", "benchmarking"),
            ("198.19.255.255", "benchmarking"),
            ("198.51.100.7", "documentation"),
            ("203.0.113.9", "documentation"),
            ("224.0.0.251", "multicast"),
            ("239.255.255.250", "multicast"),
            ("240.0.0.1", "reserved"),
            ("255.255.255.255", "broadcast"),
        ];
        for (address, reason) in refused {
            assert_eq!(special_purpose(ip(address)), Some(reason), "{address}");
        }
    }

    #[test]
    fn allows_public_ipv4_including_neighbours_of_special_ranges() {
        for address in [
            "1.1.1.1",
            "8.8.8.8",
            "9.255.255.255",
            "11.0.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "126.255.255.255",
            "128.0.0.0",
            "169.253.255.255",
            "172.15.255.255",
            "172.32.0.0",
            "192.0.1.1",
            "192.167.255.255",
            "192.169.0.0",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
        ] {
            assert_eq!(special_purpose(ip(address)), None, "{address}");
        }
    }

    #[test]
    fn refuses_special_purpose_ipv6_and_judges_embedded_ipv4() {
        let refused = [
            ("::", "unspecified"),
            ("::1", "loopback"),
            ("::7f00:1", "IPv4-compatible (deprecated)"),
            ("fc00::1", "unique local"),
            ("fd12:3456::1", "unique local"),
            ("fe80::1", "link-local"),
            ("febf::1", "link-local"),
            ("fec0::1", "site-local (deprecated)"),
            ("ff02::1", "multicast"),
            ("2001:db8::1", "documentation"),
            ("3fff::1", "documentation"),
            ("2001::1", "IETF protocol assignment"),
            ("2002:7f00:1::1", "6to4 (deprecated)"),
            ("100::1", "discard-only"),
            ("64:ff9b:1::1", "local-use NAT64"),
            ("64:ff9b::a00:1", "NAT64 of a non-public IPv4"),
            ("64:ff9b::a9fe:a9fe", "NAT64 of a non-public IPv4"),
            ("4000::1", "reserved (outside global unicast)"),
            ("1::1", "reserved (outside global unicast)"),
            // IPv4-mapped addresses are judged as the IPv4 address they carry.
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:10.1.2.3", "private"),
            ("::ffff:169.254.169.254", "link-local"),
            ("::ffff:0.0.0.0", "unspecified"),
        ];
        for (address, reason) in refused {
            assert_eq!(special_purpose(ip(address)), Some(reason), "{address}");
        }
        for address in [
            "2606:4700:4700::1111",
            "2a00:1450:4001::200e",
            "2001:4860:4860::8888",
            "64:ff9b::808:808",
            "::ffff:8.8.8.8",
        ] {
            assert_eq!(special_purpose(ip(address)), None, "{address}");
        }
    }

    #[test]
    fn the_allow_list_opens_holes() {
        let guard = Guard::new(vec![
            "127.0.0.0/8".parse().unwrap(),
            "fd00::/8".parse().unwrap(),
        ]);
        assert_eq!(guard.check(ip("127.0.0.1")), Ok(()));
        assert_eq!(
            guard.check(ip("::ffff:127.0.0.1")),
            Ok(()),
            "mapped counts as v4"
        );
        assert_eq!(guard.check(ip("fd00::5")), Ok(()));
        assert_eq!(guard.check(ip("93.184.215.14")), Ok(()));
        let refused = guard.check(ip("::1")).unwrap_err();
        assert_eq!(refused.reason, "loopback");
        assert_eq!(
            refused.to_string(),
            "refused to connect to ::1: loopback address (not in allowed_subnets)"
        );
        assert_eq!(
            guard.check(ip("10.0.0.1")).unwrap_err().reason,
            "private",
            "only what is listed opens"
        );
        assert!(Guard::default().check(ip("127.0.0.1")).is_err());
    }

    #[test]
    fn cidr_parses_and_contains() {
        let private: Cidr = "10.0.0.0/8".parse().unwrap();
        assert_eq!(private.network(), ip("10.0.0.0"));
        assert_eq!(private.prefix_len(), 8);
        assert_eq!(private.to_string(), "10.0.0.0/8");
        assert!(private.contains(ip("10.200.0.1")));
        assert!(private.contains(ip("::ffff:10.0.0.1")));
        assert!(!private.contains(ip("11.0.0.0")));
        assert!(!private.contains(ip("::a00:1")), "v6 is not in a v4 block");

        let host: Cidr = "::1/128".parse().unwrap();
        assert!(host.contains(ip("::1")));
        assert!(!host.contains(ip("::2")));
        assert_eq!(
            " 127.0.0.1 ".parse::<Cidr>().unwrap().to_string(),
            "127.0.0.1/32"
        );
        assert_eq!("::1".parse::<Cidr>().unwrap(), host);

        let everything: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(everything.contains(ip("8.8.8.8")));
        let ula: Cidr = "fc00::/7".parse().unwrap();
        assert!(ula.contains(ip("fdff::1")) && !ula.contains(ip("fe00::1")));
    }

    #[test]
    fn cidr_parse_errors_say_what_is_wrong() {
        let message = |text: &str| text.parse::<Cidr>().unwrap_err().to_string();
        assert_eq!(
            message("10.0.0.1/8"),
            "invalid CIDR \"10.0.0.1/8\": bits are set after the prefix; did you mean 10.0.0.0/8?"
        );
        assert_eq!(
            message("fd00::1/8"),
            "invalid CIDR \"fd00::1/8\": bits are set after the prefix; did you mean fd00::/8?"
        );
        assert!(message("10.0.0.0/33").contains("longer than the address"));
        assert!(message("::/129").contains("longer than the address"));
        assert!(message("10.0.0.0/999").contains("longer than the address"));
        for not_a_number in [
            "10.0.0.0/",
            "10.0.0.0/+8",
            "10.0.0.0/-1",
            "10.0.0.0/8/8",
            "::/x",
        ] {
            assert!(
                message(not_a_number).contains("must be a number"),
                "{not_a_number}"
            );
        }
        for not_an_address in [
            "",
            "/8",
            "10.0.0/8",
            "localhost/32",
            "10.0.0.0.0/8",
            "[::1]/128",
        ] {
            assert!(
                message(not_an_address).contains("expected an IP address"),
                "{not_an_address}"
            );
        }
    }

    #[test]
    fn cidr_round_trips_through_serde() {
        let cidr: Cidr = serde_json::from_str("\"192.168.0.0/16\"").unwrap();
        assert_eq!(serde_json::to_string(&cidr).unwrap(), "\"192.168.0.0/16\"");
        let error = serde_json::from_str::<Cidr>("\"192.168.0.0/99\"").unwrap_err();
        assert!(
            error.to_string().contains("longer than the address"),
            "{error}"
        );
    }
}
