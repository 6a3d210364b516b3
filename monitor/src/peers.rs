//! Peers: the operator's names for the networks clients come from
//! (`--peer carrier-a=192.0.2.0/24,2001:db8::/32`), so that the figures say
//! which trunk or access network is failing while their labels stay bounded:
//! at most [`MAX_PEERS`] names, and [`OTHER`] for an address in none.
//!
//! A flow's peer is its client's: the side that is not on a SIP port.

use std::{collections::HashMap, net::IpAddr};

use ipnet::IpNet;
use monitor_common::{flow::FlowKey, maps::MAX_PEER_NETWORKS};

use crate::cli::OptionError;

/// Names a run may give: each is a label value on several series, per interface.
pub const MAX_PEERS: usize = 64;
/// The peer of an address in no named network.
pub const OTHER: &str = "other";
/// A peer name's longest spelling.
const MAX_NAME_LEN: usize = 32;

/// One `--peer NAME=CIDR[,CIDR...]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerArg {
    pub name: String,
    pub networks: Vec<IpNet>,
}

/// Reads `--peer`: a name of letters, digits, `_`, `-` or `.`, then `=`, then
/// networks in CIDR notation separated by commas. A bare address is its own
/// network (/32 or /128).
pub fn peer_arg(text: &str) -> Result<PeerArg, OptionError> {
    let (name, networks) = text.split_once('=').ok_or_else(|| OptionError::Peer(text.into()))?;
    let name = name.trim();
    let valid = (1..=MAX_NAME_LEN).contains(&name.len())
        && name != OTHER
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
    if !valid {
        return Err(OptionError::PeerName(name.into()));
    }
    let networks = networks
        .split(',')
        .map(str::trim)
        .map(|cidr| {
            cidr.parse::<IpNet>()
                .or_else(|_| cidr.parse::<IpAddr>().map(IpNet::from))
                .map(|net| net.trunc())
                .map_err(|_| OptionError::Network(cidr.into()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(PeerArg { name: name.to_string(), networks })
}

/// Why a set of `--peer` options cannot be used together.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PeersError {
    #[error("--peer names {given} peers; at most {MAX_PEERS} can be named, so that metric labels stay bounded")]
    TooMany { given: usize },
    #[error("--peer names {given} networks; the kernel's table holds at most {MAX_PEER_NETWORKS}")]
    TooManyNetworks { given: usize },
    #[error("--peer gives the network {network} to both `{first}` and `{second}`; give each network to one peer")]
    Twice { network: IpNet, first: String, second: String },
}

/// The peers of a run, numbered in the order first named from 1: 0 is [`OTHER`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Peers {
    names: Vec<String>,
    /// Every network with its peer's number, IPv4 ones as IPv4.
    networks: Vec<(IpNet, u8)>,
    /// The same networks as an address's peer is looked up in, per family.
    v4: PrefixTable<32>,
    v6: PrefixTable<128>,
}

/// Networks of one family by prefix length, longest first, each length a
/// map from network address to peer number: a lookup costs a hash per
/// length given (33 at most for IPv4, 129 for IPv6), however many networks
/// there are. Peers are looked up for every head and binding: with
/// thousands of networks a walk of them all per head was the agent's cost.
/// `BITS` is the address width: 32 or 128.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct PrefixTable<const BITS: u32> {
    by_len: Vec<(u8, HashMap<u128, u8>)>,
}

impl<const BITS: u32> PrefixTable<BITS> {
    fn insert(&mut self, network: u128, prefix_len: u8, id: u8) {
        let at = match self.by_len.binary_search_by(|(len, _)| prefix_len.cmp(len)) {
            Ok(at) => at,
            Err(at) => {
                self.by_len.insert(at, (prefix_len, HashMap::new()));
                at
            }
        };
        let network = self.masked(network, prefix_len);
        self.by_len[at].1.insert(network, id);
    }

    /// The peer of the longest network holding `addr`.
    fn lookup(&self, addr: u128) -> Option<u8> {
        self.by_len.iter().find_map(|(len, networks)| networks.get(&self.masked(addr, *len)).copied())
    }

    /// `addr` with all but its first `prefix_len` bits cleared.
    fn masked(&self, addr: u128, prefix_len: u8) -> u128 {
        let host_bits = BITS - u32::from(prefix_len);
        addr & u128::MAX.checked_shl(host_bits).unwrap_or(0)
    }
}

impl Peers {
    /// A name given twice adds its networks to the first.
    pub fn new(args: &[PeerArg]) -> Result<Self, PeersError> {
        let mut peers = Self::default();
        let mut given: HashMap<IpNet, u8> = HashMap::new();
        for arg in args {
            let id = match peers.names.iter().position(|n| *n == arg.name) {
                Some(i) => i + 1,
                None => {
                    peers.names.push(arg.name.clone());
                    peers.names.len()
                }
            };
            let id = id.min(usize::from(u8::MAX)) as u8;
            for network in &arg.networks {
                if let Some(other) = given.get(network) {
                    let first = peers.name(*other).to_string();
                    if first != arg.name {
                        return Err(PeersError::Twice { network: *network, first, second: arg.name.clone() });
                    }
                    continue;
                }
                given.insert(*network, id);
                peers.networks.push((*network, id));
                match network {
                    IpNet::V4(v4) => peers.v4.insert(u32::from(v4.network()).into(), v4.prefix_len(), id),
                    IpNet::V6(v6) => peers.v6.insert(u128::from(v6.network()), v6.prefix_len(), id),
                }
            }
        }
        if peers.names.len() > MAX_PEERS {
            return Err(PeersError::TooMany { given: peers.names.len() });
        }
        if peers.networks.len() > MAX_PEER_NETWORKS as usize {
            return Err(PeersError::TooManyNetworks { given: peers.networks.len() });
        }
        Ok(peers)
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Peers named.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Which table this is, for the kernel (`PEER_TABLE`) and the pinned
    /// per-peer counters: 0 when no peer is named, else the same number for
    /// the same names and networks in the same order.
    pub fn table_id(&self) -> u32 {
        use std::hash::{Hash, Hasher};
        if self.is_empty() {
            return 0;
        }
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (&self.names, &self.networks).hash(&mut hasher);
        (hasher.finish() as u32).max(1)
    }

    /// The number of the peer `addr` belongs to: its longest matching network's.
    pub fn id_of(&self, addr: IpAddr) -> u8 {
        let addr = match addr {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
            v4 => v4,
        };
        let found = match addr {
            IpAddr::V4(v4) => self.v4.lookup(u32::from(v4).into()),
            IpAddr::V6(v6) => self.v6.lookup(u128::from(v6)),
        };
        found.unwrap_or(0)
    }

    /// The number of the peer a flow's client belongs to.
    pub fn id_of_client(&self, key: &FlowKey) -> u8 {
        if self.is_empty() {
            return 0;
        }
        let address = if key.family == 4 {
            let [a, b, c, d, ..] = key.client_addr;
            IpAddr::from([a, b, c, d])
        } else {
            IpAddr::from(key.client_addr)
        };
        self.id_of(address)
    }

    /// The name of the peer a flow's client belongs to.
    pub fn of_client(&self, key: &FlowKey) -> &str {
        self.name(self.id_of_client(key))
    }

    /// The name of peer number `id`; [`OTHER`] for 0 or a number not given.
    pub fn name(&self, id: u8) -> &str {
        usize::from(id).checked_sub(1).and_then(|i| self.names.get(i)).map_or(OTHER, String::as_str)
    }

    /// The name of the peer `addr` belongs to.
    pub fn of(&self, addr: IpAddr) -> &str {
        self.name(self.id_of(addr))
    }

    /// Every name a label can take: the given ones, then [`OTHER`].
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(String::as_str).chain([OTHER])
    }

    /// The networks as the kernel's LPM trie holds them: a prefix length over
    /// 128 bits, the address as IPv6 (IPv4 mapped, ::ffff:a.b.c.d, /96 + n)
    /// and the peer's number.
    pub fn trie_entries(&self) -> impl Iterator<Item = (u32, [u8; 16], u8)> + '_ {
        self.networks.iter().map(|(network, id)| match network {
            IpNet::V4(v4) => (96 + u32::from(v4.prefix_len()), v4.network().to_ipv6_mapped().octets(), *id),
            IpNet::V6(v6) => (u32::from(v6.prefix_len()), v6.network().octets(), *id),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peers(args: &[&str]) -> Peers {
        let args: Vec<PeerArg> = args.iter().map(|a| peer_arg(a).unwrap()).collect();
        Peers::new(&args).unwrap()
    }

    #[test]
    fn the_longest_network_names_the_peer() {
        let p = peers(&["carrier=192.0.2.0/24, 2001:db8::/32", "pbx=192.0.2.7", "carrier=198.51.100.0/24"]);
        assert_eq!(p.of("192.0.2.9".parse().unwrap()), "carrier");
        assert_eq!(p.of("192.0.2.7".parse().unwrap()), "pbx");
        assert_eq!(p.of("198.51.100.1".parse().unwrap()), "carrier");
        assert_eq!(p.of("2001:db8::1".parse().unwrap()), "carrier");
        assert_eq!(p.of("::ffff:192.0.2.7".parse().unwrap()), "pbx", "IPv4-mapped is IPv4");
        assert_eq!(p.of("203.0.113.1".parse().unwrap()), OTHER);
        assert_eq!(p.names().collect::<Vec<_>>(), ["carrier", "pbx", "other"]);
        assert_eq!((p.id_of("192.0.2.9".parse().unwrap()), p.name(9)), (1, OTHER));
    }

    /// The answer by definition: of the networks holding `addr`, the longest's peer.
    fn linear_id_of(peers: &Peers, addr: IpAddr) -> u8 {
        let addr = match addr {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
            v4 => v4,
        };
        peers
            .networks
            .iter()
            .filter(|(network, _)| network.contains(&addr))
            .max_by_key(|(network, _)| network.prefix_len())
            .map_or(0, |(_, id)| *id)
    }

    fn random_addr(rng: &mut fastrand::Rng, v4: bool) -> IpAddr {
        if v4 { IpAddr::from(rng.u32(..).to_be_bytes()) } else { IpAddr::from(rng.u128(..).to_be_bytes()) }
    }

    #[test]
    fn the_indexed_lookup_agrees_with_the_walk_of_every_network() {
        let mut rng = fastrand::Rng::with_seed(5626);
        for round in 0..20 {
            // Few prefix lengths in some rounds, so networks nest; all of them in others.
            let lengths: Vec<u8> = if round % 2 == 0 { vec![0, 8, 16, 24, 32] } else { (0..=32).collect() };
            let mut seen = std::collections::HashSet::new();
            let mut args: Vec<PeerArg> = Vec::new();
            let mut nets = Vec::new();
            for _ in 0..rng.usize(1..300) {
                let v4 = rng.bool();
                let len = if v4 { *rng.choice(&lengths).unwrap() } else { rng.u8(0..=128) };
                // Near an earlier network, or anywhere.
                let near = (!nets.is_empty() && rng.bool()).then(|| nets[rng.usize(..nets.len())]);
                let addr = match near {
                    Some(IpNet::V4(n)) if v4 => IpAddr::V4(n.network()),
                    Some(IpNet::V6(n)) if !v4 => IpAddr::V6(n.network()),
                    _ => random_addr(&mut rng, v4),
                };
                let net = IpNet::new(addr, len).unwrap().trunc();
                if seen.insert(net) {
                    nets.push(net);
                    args.push(PeerArg { name: format!("p{}", rng.usize(0..MAX_PEERS)), networks: vec![net] });
                }
            }
            let peers = Peers::new(&args).unwrap();
            let lengths = |by_len: &[(u8, HashMap<u128, u8>)]| by_len.iter().map(|(len, _)| *len).collect::<Vec<_>>();
            let v4_lengths = lengths(&peers.v4.by_len);
            assert!(
                v4_lengths.len() <= 33 && v4_lengths.is_sorted_by(|a, b| a > b),
                "a probe per length: {v4_lengths:?}"
            );
            assert!(lengths(&peers.v6.by_len).is_sorted_by(|a, b| a > b));
            for _ in 0..2000 {
                // Inside a network given (its host bits random), or anywhere, or IPv4-mapped.
                let addr = match rng.usize(0..3) {
                    0 => {
                        let net = nets[rng.usize(..nets.len())];
                        let host = random_addr(&mut rng, net.addr().is_ipv4());
                        match (net, host) {
                            (IpNet::V4(n), IpAddr::V4(h)) => {
                                IpAddr::V4((u32::from(n.network()) | (u32::from(h) & u32::from(n.hostmask()))).into())
                            }
                            (IpNet::V6(n), IpAddr::V6(h)) => IpAddr::V6(
                                (u128::from(n.network()) | (u128::from(h) & u128::from(n.hostmask()))).into(),
                            ),
                            _ => unreachable!("the same family"),
                        }
                    }
                    1 => {
                        let v4 = rng.bool();
                        random_addr(&mut rng, v4)
                    }
                    _ => match random_addr(&mut rng, true) {
                        IpAddr::V4(v4) => IpAddr::V6(v4.to_ipv6_mapped()),
                        v6 => v6,
                    },
                };
                assert_eq!(peers.id_of(addr), linear_id_of(&peers, addr), "{addr} among {nets:?}");
            }
        }
    }

    #[test]
    fn the_kernel_gets_ipv4_as_mapped_ipv6() {
        let p = peers(&["a=10.1.2.3/16", "b=2001:db8::/48"]);
        let entries: Vec<_> = p.trie_entries().collect();
        let mut mapped = [0u8; 16];
        mapped[10..12].copy_from_slice(&[0xff, 0xff]);
        mapped[12..].copy_from_slice(&[10, 1, 0, 0]);
        assert_eq!(entries[0], (112, mapped, 1), "host bits cleared, 96 + 16");
        assert_eq!(entries[1].0, 48);
    }

    #[test]
    fn bad_values_are_refused() {
        for bad in ["carrier", "=10.0.0.0/8", "other=10.0.0.0/8", "a b=10.0.0.0/8", "a=10.0.0.0/33", "a=", "a=x"] {
            assert!(peer_arg(bad).is_err(), "{bad}");
        }
        let twice = [peer_arg("a=10.0.0.0/8").unwrap(), peer_arg("b=10.0.0.0/8").unwrap()];
        assert!(matches!(Peers::new(&twice), Err(PeersError::Twice { .. })));
        let many: Vec<PeerArg> = (0..65).map(|i| peer_arg(&format!("p{i}=10.0.{i}.0/24")).unwrap()).collect();
        assert_eq!(Peers::new(&many), Err(PeersError::TooMany { given: 65 }));
        assert!(Peers::new(&many[..64]).is_ok());
        let wide = (0..=MAX_PEER_NETWORKS).map(|i| format!("10.{}.{}.0/24", i / 256, i % 256)).collect::<Vec<_>>();
        let wide = peer_arg(&format!("wide={}", wide.join(","))).unwrap();
        assert_eq!(Peers::new(&[wide]), Err(PeersError::TooManyNetworks { given: 4097 }), "past the kernel's trie");
    }
}
