//! Robustness: random bytes and random mutations of the real-world samples
//! never panic and always return. A fixed seed and a fixed number of inputs
//! keep it reproducible; how fast parsing is belongs to benchmarks.

use super::parse;
use super::tests::SAMPLES;

use fastrand::Rng;

/// A byte, half the time one that means something in a SIP head.
fn byte(rng: &mut Rng) -> u8 {
    const SPECIAL: &[u8] = b";,\"<>:\r\n \t\\=*@?";
    if rng.bool() { SPECIAL[rng.usize(..SPECIAL.len())] } else { rng.u8(..) }
}

fn check(input: &[u8]) {
    if let Ok(head) = &parse(input) {
        let has_empty_line = input.windows(2).any(|w| w == b"\n\n") || input.windows(3).any(|w| w == b"\n\r\n");
        assert!(head.truncated || has_empty_line, "{input:?}");
        for c in &head.contacts {
            assert!(!c.uri.is_empty() && !c.uri.contains([' ', '\t', '\r', '\n']));
        }
    }
}

fn mutate(rng: &mut Rng, input: &mut Vec<u8>) {
    for _ in 0..1 + rng.usize(..8) {
        let at = rng.usize(..input.len() + 1);
        match rng.usize(..5) {
            0 if at < input.len() => input[at] ^= 1 << rng.u8(..8),
            1 => input.truncate(at),
            2 => input.insert(at, byte(rng)),
            3 => {
                let end = (at + rng.usize(..32)).min(input.len());
                input.drain(at..end);
            }
            _ => {
                let end = (at + rng.usize(..64)).min(input.len());
                let copy = input[at..end].to_vec();
                if input.len() + copy.len() <= 4096 {
                    input.splice(at..at, copy);
                }
            }
        }
    }
}

#[test]
fn every_prefix_of_every_sample_parses_without_panic() {
    for sample in SAMPLES {
        for end in 0..=sample.len() {
            check(&sample[..end]);
        }
    }
}

#[test]
fn random_bytes_and_mutations_never_panic() {
    let mut rng = Rng::with_seed(0x5eed_f10f_0000_5626);
    let mut runs = 0u64;
    while runs < 100_000 {
        let input = if runs & 3 == 0 {
            (0..rng.usize(..1200)).map(|_| byte(&mut rng)).collect()
        } else {
            let mut input = SAMPLES[rng.usize(..SAMPLES.len())].to_vec();
            mutate(&mut rng, &mut input);
            input
        };
        check(&input);
        runs += 1;
    }
}

#[test]
fn pathological_inputs_return() {
    let repeated = |prefix: &[u8], unit: &[u8]| {
        let mut input = prefix.to_vec();
        while input.len() < 64 * 1024 {
            input.extend_from_slice(unit);
        }
        input
    };
    let start = b"SIP/2.0 200 OK\r\n";
    for unit in [&b"\""[..], b"<", b";", b",", b"\\\"", b"\r\n ", b"\n\t;a=\"b\"", b"\"a\",<sip:a@b>;x=1,"] {
        check(&repeated(&[&start[..], b"Contact: "].concat(), unit));
        check(&repeated(&[&start[..], b"Path: "].concat(), unit));
        check(&repeated(start, unit));
    }
    check(&repeated(b"", b"\r\n"));
    check(&repeated(b"", b"x"));
}
