//! Bounds-checked access to packet memory: every read goes through [`read`].

/// Bytes of payload copied out for classification. A SIP start line longer
/// than this is judged on its method token alone.
pub const WINDOW: usize = 256;
pub type Window = [u8; WINDOW];

/// No header we read lies further into the frame than this (two VLAN tags,
/// IPv6 with eight extension headers, TCP with options). Checking it first
/// gives the verifier an upper bound for every variable offset.
pub const MAX_HEADER_OFFSET: usize = 1024;

/// No IP datagram carries a larger payload; nor is more plaintext read of one call.
pub const MAX_PAYLOAD: usize = 65535;

/// Packet memory as a program type exposes it: XDP, TC, or a slice in tests.
pub trait Frame {
    /// Address of the first byte of the frame.
    fn start(&self) -> usize;
    /// Address one past the last byte readable in place.
    fn end(&self) -> usize;
    /// The frame's whole length. Beyond `end()` for a socket buffer whose
    /// payload sits in pages: those bytes are reached with `load_bytes`.
    #[inline(always)]
    fn total_len(&self) -> usize {
        self.end() - self.start()
    }
    /// Copies `len` bytes (1..=N) starting at `offset` into `dst`.
    fn load_bytes<const N: usize>(&self, offset: usize, len: usize, dst: &mut [u8; N]) -> bool;
}

/// Reads a `T` at `offset`, or `None` when it would pass the end of the frame.
#[inline(always)]
pub fn read<T: Copy>(frame: &impl Frame, offset: usize) -> Option<T> {
    if offset > MAX_HEADER_OFFSET {
        return None;
    }
    let at = frame.start() + offset;
    if at + core::mem::size_of::<T>() > frame.end() {
        return None;
    }
    // SAFETY: [at, at + size_of::<T>()) lies inside the frame, checked above.
    Some(unsafe { (at as *const T).read_unaligned() })
}

#[inline(always)]
pub fn read_u8(frame: &impl Frame, offset: usize) -> Option<u8> {
    read::<u8>(frame, offset)
}

/// A network-order u16.
#[inline(always)]
pub fn read_be16(frame: &impl Frame, offset: usize) -> Option<u16> {
    read::<[u8; 2]>(frame, offset).map(u16::from_be_bytes)
}

/// A network-order u16 at `at` of a header already read out of the frame.
#[inline(always)]
pub fn be16<const N: usize>(header: &[u8; N], at: usize) -> u16 {
    u16::from_be_bytes([header[at], header[at + 1]])
}

/// `len` unchanged for 1..=N, in a form whose range the verifier can see.
///
/// The compiler may merge a caller's checks on `len` into arithmetic the
/// verifier cannot follow (it then believes a helper's size may be 0).
/// Re-reading the value opaquely stops the compiler from using what it knew,
/// and the mask shows the verifier a size within [1, N].
#[inline(always)]
pub fn verifier_size<const N: usize>(len: usize) -> usize {
    const { assert!(N.is_power_of_two()) };
    // SAFETY: a read of a local.
    let len = unsafe { core::ptr::read_volatile(&len) };
    ((len - 1) & (N - 1)) + 1
}

/// Frame length in bytes, paged parts included.
#[inline(always)]
pub fn len(frame: &impl Frame) -> usize {
    frame.total_len()
}

/// A byte slice seen as a frame, for host tests.
#[cfg(test)]
pub struct SliceFrame<'a>(pub &'a [u8]);

#[cfg(test)]
impl Frame for SliceFrame<'_> {
    fn start(&self) -> usize {
        self.0.as_ptr() as usize
    }
    fn end(&self) -> usize {
        self.0.as_ptr() as usize + self.0.len()
    }
    fn load_bytes<const N: usize>(&self, offset: usize, len: usize, dst: &mut [u8; N]) -> bool {
        match self.0.get(offset..offset + len) {
            Some(bytes) if len <= N => {
                dst[..len].copy_from_slice(bytes);
                true
            }
            _ => false,
        }
    }
}
