//! STUN (RFC 8489 §5) as RFC 5626 §4.4.2 uses it: Binding keepalives on the SIP UDP flow.

use crate::frame::Window;

pub const HEADER_LEN: usize = 20;
pub const MAGIC_COOKIE: u32 = 0x2112_a442;
const MAGIC_COOKIE_OFFSET: usize = 4;
const LENGTH_OFFSET: usize = 2;
/// The two most significant bits of every STUN message are zero.
const TOP_BITS: u8 = 0xc0;

pub const BINDING_REQUEST: u16 = 0x0001;
pub const BINDING_SUCCESS: u16 = 0x0101;
pub const BINDING_ERROR: u16 = 0x0111;

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Stun {
    Request = 0,
    Success = 1,
    Error = 2,
    /// A STUN message of another type (an indication, another method).
    Other = 3,
}

/// `None` when the payload is not a STUN message; `payload_len` is the whole datagram's payload.
#[inline(always)]
pub fn classify(window: &Window, loaded: usize, payload_len: usize) -> Option<Stun> {
    if loaded < HEADER_LEN || window[0] & TOP_BITS != 0 {
        return None;
    }
    let cookie = u32::from_be_bytes([
        window[MAGIC_COOKIE_OFFSET],
        window[MAGIC_COOKIE_OFFSET + 1],
        window[MAGIC_COOKIE_OFFSET + 2],
        window[MAGIC_COOKIE_OFFSET + 3],
    ]);
    if cookie != MAGIC_COOKIE {
        return None;
    }
    let body = u16::from_be_bytes([window[LENGTH_OFFSET], window[LENGTH_OFFSET + 1]]) as usize;
    if !body.is_multiple_of(4) || HEADER_LEN + body != payload_len {
        return None;
    }
    Some(match u16::from_be_bytes([window[0], window[1]]) {
        BINDING_REQUEST => Stun::Request,
        BINDING_SUCCESS => Stun::Success,
        BINDING_ERROR => Stun::Error,
        _ => Stun::Other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::WINDOW;

    fn window(bytes: &[u8]) -> Window {
        let mut w = [0u8; WINDOW];
        w[..bytes.len()].copy_from_slice(bytes);
        w
    }

    fn message(kind: u16, body: u16) -> Vec<u8> {
        let mut m = kind.to_be_bytes().to_vec();
        m.extend_from_slice(&body.to_be_bytes());
        m.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        m.extend_from_slice(&[7; 12]);
        m.extend(std::iter::repeat_n(0, body as usize));
        m
    }

    #[test]
    fn binding_types() {
        for (kind, want) in [
            (BINDING_REQUEST, Stun::Request),
            (BINDING_SUCCESS, Stun::Success),
            (BINDING_ERROR, Stun::Error),
            (0x0011, Stun::Other),
        ] {
            let m = message(kind, 8);
            assert_eq!(classify(&window(&m), m.len(), m.len()), Some(want));
        }
    }

    #[test]
    fn not_stun() {
        let mut m = message(BINDING_REQUEST, 0);
        m[4] = 0;
        assert_eq!(classify(&window(&m), m.len(), m.len()), None, "cookie");
        let m = message(BINDING_REQUEST, 4);
        assert_eq!(classify(&window(&m), m.len(), m.len() + 1), None, "length");
        let mut m = message(BINDING_REQUEST, 0);
        m[0] = 0x41;
        assert_eq!(classify(&window(&m), m.len(), m.len()), None, "top bits");
        assert_eq!(classify(&window(b"INVITE"), 6, 6), None);
    }
}
