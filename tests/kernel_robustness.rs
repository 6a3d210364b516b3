//! Bad input against the XDP program: the RFC 4475 torture messages, and
//! 100 000 random and mutated frames. Every frame passes, nothing stalls, and
//! every frame lands in exactly one class (a first fragment in two: its own
//! and `fragment`).

use std::path::Path;

use monitor_common::counters::{
    Direction, KernelStat, Method, PacketClass, packet_index, request_index, response_index,
};
use sipflow_tests::{
    kernel::{LoadedXdp, XDP_PASS},
    packets::*,
};

struct Torture {
    name: String,
    kind: String,
    detail: String,
    start_line_ok: bool,
    bytes: Vec<u8>,
}

fn torture_messages() -> Vec<Torture> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/rfc4475");
    let index = std::fs::read_to_string(dir.join("index.tsv")).expect("index.tsv");
    index
        .lines()
        .skip(1)
        .map(|line| {
            let cols: Vec<&str> = line.split('\t').collect();
            Torture {
                name: cols[0].into(),
                kind: cols[2].into(),
                detail: cols[3].into(),
                start_line_ok: cols[5] == "yes",
                bytes: std::fs::read(dir.join(format!("{}.dat", cols[0]))).expect("message file"),
            }
        })
        .collect()
}

/// Start lines the kernel takes for requests although RFC 3261's grammar does
/// not: it checks a request line's shape (token SP ... SP "SIP/2.0" CR) without
/// counting its SPs or checking the URI's characters, because carrying any state
/// through that loop multiplies the verifier's work past its limit.
const SHAPE_ONLY: [(&str, Method); 2] = [("ltgtruri", Method::Invite), ("lwsruri", Method::Invite)];

/// Larger UDP messages arrive as IP fragments: the first one carries the start line.
const MTU: usize = 1500;

/// The message as a UDP datagram, or as the first fragment of one when it exceeds the MTU.
fn as_received(message: &[u8]) -> (Vec<u8>, bool) {
    let frame = udp4(CLIENT_PORT, SIP_PORT, message);
    if frame.len() <= 14 + MTU {
        return (frame, false);
    }
    let mut first = as_ipv4_fragment(&frame[..14 + MTU], 0, true);
    first[IPV4_OFFSET + 2..IPV4_OFFSET + 4].copy_from_slice(&(MTU as u16).to_be_bytes());
    (first, true)
}

/// The kernel classifies by the start line alone: a message whose start line is
/// well formed counts by its method or code (header damage is the agent's to
/// judge), one whose start line is not counts as `other`.
#[test]
fn rfc4475_torture_messages() {
    sipflow_tests::root_or_skip!();
    let messages = torture_messages();
    assert_eq!(messages.len(), 49);
    let xdp = LoadedXdp::load();
    let mut failures = Vec::new();
    for m in &messages {
        let before = xdp.counters();
        let (frame, fragmented) = as_received(&m.bytes);
        assert_eq!(xdp.run(&frame), XDP_PASS, "{}", m.name);
        let after = xdp.counters();
        let grew = |class| {
            let i = packet_index(Direction::Ingress, class) as usize;
            after.packets[i] - before.packets[i]
        };
        let shape_only = SHAPE_ONLY.iter().any(|(name, _)| *name == m.name);
        let expected = match (m.start_line_ok || shape_only, m.kind.as_str()) {
            (true, "request") => {
                let method = Method::STANDARD
                    .iter()
                    .find(|(_, token)| *token == m.detail.as_bytes())
                    .map_or(Method::Other, |(method, _)| *method);
                let i = request_index(Direction::Ingress, method) as usize;
                if after.requests[i] != before.requests[i] + 1 {
                    failures.push(format!("{}: not counted as {method:?}", m.name));
                }
                PacketClass::SipRequest
            }
            (true, "response") => {
                let i = response_index(Direction::Ingress, m.detail.parse().unwrap()).unwrap() as usize;
                if after.responses[i] != before.responses[i] + 1 {
                    failures.push(format!("{}: not counted as {}", m.name, m.detail));
                }
                PacketClass::SipResponse
            }
            _ => PacketClass::Other,
        };
        if grew(expected) != 1 {
            failures.push(format!("{}: not counted as {}", m.name, expected.label()));
        }
        let total: u64 = after.packets.iter().sum::<u64>() - before.packets.iter().sum::<u64>();
        if total != 1 + u64::from(fragmented) {
            failures.push(format!("{}: counted {total} times", m.name));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn seeds() -> Vec<Vec<u8>> {
    let mut seeds = vec![
        udp4(CLIENT_PORT, SIP_PORT, INVITE),
        udp4(SIP_PORT, CLIENT_PORT, FLOW_FAILED),
        udp6(CLIENT_PORT, SIP_PORT, REGISTER),
        udp6_vlan(&[10, 20], CLIENT_PORT, SIP_PORT, INVITE),
        udp4_vlan(&[5], CLIENT_PORT, SIP_PORT, MULTIPLE_CHOICES),
        tcp4(CLIENT_PORT, SIP_PORT, Flags::default(), REGISTER),
        tcp4(CLIENT_PORT, SIP_PORT, Flags::default(), b"\r\n\r\n"),
        tcp4(CLIENT_PORT, SIP_PORT, Flags { syn: true, ..Flags::default() }, b""),
        udp4(CLIENT_PORT, SIP_PORT, &stun(0x0001)),
        with_ipv4_options(&udp4(CLIENT_PORT, SIP_PORT, INVITE), &[1, 1, 1, 0]),
        with_ipv6_destination_options(&udp6(CLIENT_PORT, SIP_PORT, INVITE)),
        as_ipv4_fragment(&udp4(CLIENT_PORT, SIP_PORT, INVITE), 0, true),
        as_ipv6_fragment(&udp6(CLIENT_PORT, SIP_PORT, INVITE), 0, true),
        with_ipv6_destination_options(&tcp6(CLIENT_PORT, SIP_PORT, REGISTER)),
        // Several messages in one segment: the walk through them is fuzzed too.
        tcp4(CLIENT_PORT, SIP_PORT, Flags::default(), &[REGISTER, INVITE, b"\r\n\r\n", REGISTER_OK].concat()),
        tcp4_from_server(SIP_PORT, CLIENT_PORT, Flags::default(), &[RINGING, REGISTER_OK, FLOW_FAILED].concat()),
    ];
    seeds.extend(torture_messages().into_iter().take(10).map(|m| udp4(CLIENT_PORT, SIP_PORT, &m.bytes)));
    seeds
}

fn mutate(rng: &mut fastrand::Rng, seed: &[u8]) -> Vec<u8> {
    let mut frame = seed.to_vec();
    for _ in 0..1 + rng.usize(..4) {
        match rng.usize(..6) {
            // Flip bytes anywhere, headers included.
            0 | 1 => {
                let i = rng.usize(..frame.len());
                frame[i] = rng.u8(..);
            }
            // Interesting values where lengths and offsets live.
            2 => {
                let i = rng.usize(..frame.len().min(80));
                frame[i] = [0x00, 0xff, 0x45, 0x4f, 0x40, 0x0d, 0x0a, 0x20][rng.usize(..8)];
            }
            3 => frame.truncate(14 + rng.usize(..frame.len() - 13)),
            4 => {
                let at = rng.usize(..frame.len());
                let junk: Vec<u8> = (0..rng.usize(..64)).map(|_| rng.u8(..)).collect();
                frame.splice(at..at, junk);
            }
            _ => frame.extend((0..rng.usize(..32)).map(|_| b"\r\n SIP/2.0"[rng.usize(..10)])),
        }
    }
    if frame.len() < 14 {
        frame.resize(14, 0);
    }
    frame
}

#[test]
fn random_and_mutated_frames_always_pass_and_count_once() {
    sipflow_tests::root_or_skip!();
    const FRAMES: usize = 1_000_000;
    /// Counters are read after every batch: reading them costs more than running a frame.
    const BATCH: usize = 1000;
    let xdp = LoadedXdp::load();
    let seeds = seeds();
    let mut rng = fastrand::Rng::with_seed(0x5eed_cafe_f00d_0001);
    let mut before = xdp.counters();
    for batch in 0..FRAMES / BATCH {
        for n in 0..BATCH {
            let frame: Vec<u8> = if n % 4 == 0 {
                (0..14 + rng.usize(..600)).map(|_| rng.u8(..)).collect()
            } else {
                let seed = &seeds[rng.usize(..seeds.len())];
                mutate(&mut rng, seed)
            };
            assert_eq!(xdp.run(&frame), XDP_PASS, "batch {batch} frame {n}: {frame:02x?}");
        }
        let after = xdp.counters();
        let counted: u64 = after.packets.iter().sum::<u64>() - before.packets.iter().sum::<u64>();
        let first_fragments = after.stat(KernelStat::FirstFragments) - before.stat(KernelStat::FirstFragments);
        assert_eq!(counted, BATCH as u64 + first_fragments, "batch {batch}: every frame counted once");
        before = after;
    }
}
