//! The tests' one random generator: xorshift64* (Vigna), small, no crate
//! needed, and reproducible when seeded (a fuzz failure names its seed).

pub struct Rng(u64);

impl Rng {
    /// A fixed sequence: the same inputs on every run.
    pub fn seeded(seed: u64) -> Self {
        Self(seed | 1)
    }

    /// Seeded from the clock and the process id: AORs and ports that differ per run.
    pub fn new() -> Self {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        Self::seeded(nanos as u64 ^ (u64::from(std::process::id()) << 32))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `range`.
    pub fn within(&mut self, range: std::ops::Range<u64>) -> u64 {
        range.start + self.next_u64() % (range.end - range.start)
    }

    /// An index below `n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// `n` bytes that look like nothing in particular (the high bits: the best of xorshift*).
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| (self.next_u64() >> 56) as u8).collect()
    }
}

impl Default for Rng {
    fn default() -> Self {
        Self::new()
    }
}
