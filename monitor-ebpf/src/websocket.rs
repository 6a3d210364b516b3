//! WebSocket framing (RFC 6455 §5.2) as SIP uses it (RFC 7118 §5: one SIP
//! message per text or binary frame; client frames are masked). The frame
//! head is read from the start of a payload window, and a masked payload is
//! unmasked in the window before the SIP classifier reads it.
//!
//! ```text
//!  0               1               2               3
//!  0 1 2 3 4 5 6 7 0 1 2 3 4 5 6 7 0 1 2 3 4 5 6 7 0 1 2 3 4 5 6 7
//! +-+-+-+-+-------+-+-------------+-------------------------------+
//! |F|R|R|R| opcode|M| Payload len |    Extended payload length    |
//! |I|S|S|S|  (4)  |A|     (7)     |             (16/64)           |
//! |N|V|V|V|       |S|             |   (if payload len==126/127)   |
//! +-+-+-+-+-------+-+-------------+ - - - - - - - - - - - - - - - +
//! |     Extended payload length continued, if payload len == 127  |
//! + - - - - - - - - - - - - - - - +-------------------------------+
//! |                               | Masking-key, if MASK set to 1 |
//! +-------------------------------+-------------------------------+
//! ```

use crate::frame::{WINDOW, Window};

const RSV_BITS: u8 = 0x70;
const OPCODE_BITS: u8 = 0x0f;
const MASK_BIT: u8 = 0x80;
const LENGTH_BITS: u8 = 0x7f;
/// Payload length values that say a longer length follows.
const LENGTH_16: u8 = 126;
const LENGTH_64: u8 = 127;
const MASK_KEY_LEN: usize = 4;
/// The longest frame head: 2 bytes, a 64-bit length, a masking key.
pub const MAX_HEAD_LEN: usize = 2 + 8 + MASK_KEY_LEN;

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Opcode {
    Continuation = 0,
    Text = 1,
    Binary = 2,
    Close = 8,
    Ping = 9,
    Pong = 10,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct FrameHead {
    pub opcode: Opcode,
    /// The masking key; all zeroes for an unmasked frame (a server's), which
    /// unmasks to itself.
    pub mask: [u8; MASK_KEY_LEN],
    /// Bytes of the head: the payload starts here.
    pub head_len: usize,
    pub payload_len: u64,
}

/// The frame head at the window's start, or `None` when the bytes are no
/// frame head sipflow reads: reserved bits set (an extension such as
/// permessage-deflate, whose payload would be compressed), a reserved
/// opcode, or a head longer than the bytes loaded. Text never parses as a
/// head: every ASCII letter has the bit 0x40, a reserved bit here, and CR and
/// LF are reserved opcodes; so the HTTP upgrade is not taken for a frame.
#[inline(always)]
pub fn frame_head(window: &Window, loaded: usize) -> Option<FrameHead> {
    if loaded < 2 {
        return None;
    }
    let (first, second) = (window[0], window[1]);
    if first & RSV_BITS != 0 {
        return None;
    }
    let opcode = match first & OPCODE_BITS {
        0 => Opcode::Continuation,
        1 => Opcode::Text,
        2 => Opcode::Binary,
        8 => Opcode::Close,
        9 => Opcode::Ping,
        10 => Opcode::Pong,
        _ => return None,
    };
    let (length_len, payload_len) = match second & LENGTH_BITS {
        LENGTH_16 => {
            if loaded < 4 {
                return None;
            }
            (2, u64::from(u16::from_be_bytes([window[2], window[3]])))
        }
        LENGTH_64 => {
            if loaded < 10 {
                return None;
            }
            let mut length = 0u64;
            let mut i = 0;
            while i < 8 {
                length = length << 8 | u64::from(window[2 + i]);
                i += 1;
            }
            (8, length)
        }
        short => (0, u64::from(short)),
    };
    let mut mask = [0u8; MASK_KEY_LEN];
    let mut head_len = 2 + length_len;
    if second & MASK_BIT != 0 {
        if loaded < head_len + MASK_KEY_LEN {
            return None;
        }
        let mut i = 0;
        while i < MASK_KEY_LEN {
            mask[i] = window[(head_len + i) & (WINDOW - 1)];
            i += 1;
        }
        head_len += MASK_KEY_LEN;
    }
    Some(FrameHead { opcode, mask, head_len, payload_len })
}

/// Unmasks the first `loaded` bytes of a window that starts at the payload's
/// first byte (RFC 6455 §5.3: byte i is XORed with key byte i mod 4).
#[inline(always)]
pub fn unmask(window: &mut Window, loaded: usize, mask: [u8; MASK_KEY_LEN]) {
    // The key as one number, its bytes taken by shifts: the verifier refuses
    // the arithmetic the compiler makes of indexing a stack array by `i & 3`.
    let key = u32::from_le_bytes(mask);
    let mut i = 0;
    while i < WINDOW && i < loaded {
        window[i] ^= (key >> ((i & (MASK_KEY_LEN - 1)) * 8)) as u8;
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(bytes: &[u8]) -> (Window, usize) {
        let mut w = [0u8; WINDOW];
        let n = bytes.len().min(WINDOW);
        w[..n].copy_from_slice(&bytes[..n]);
        (w, n)
    }

    fn masked_frame(opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut frame = vec![0x80 | opcode];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
        }
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        frame
    }

    #[test]
    fn a_masked_client_text_frame_unmasks_to_its_sip() {
        let sip = b"REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/WS x\r\n\r\n";
        let frame = masked_frame(1, sip, [0x12, 0x34, 0x56, 0x78]);
        let (w, n) = window(&frame);
        let head = frame_head(&w, n).unwrap();
        assert_eq!((head.opcode, head.head_len, head.payload_len), (Opcode::Text, 6, sip.len() as u64));
        let (mut payload, loaded) = window(&frame[head.head_len..]);
        unmask(&mut payload, loaded, head.mask);
        assert_eq!(&payload[..sip.len()], sip);
    }

    #[test]
    fn lengths_of_16_and_64_bits() {
        let long = vec![b'x'; 300];
        let frame = masked_frame(2, &long, [1, 2, 3, 4]);
        let (w, n) = window(&frame);
        assert_eq!(frame_head(&w, n).map(|h| (h.head_len, h.payload_len)), Some((8, 300)));
        let mut server = vec![0x81, 127];
        server.extend_from_slice(&70_000u64.to_be_bytes());
        let (w, n) = window(&server);
        let head = frame_head(&w, n).unwrap();
        assert_eq!((head.head_len, head.payload_len, head.mask), (10, 70_000, [0; 4]));
    }

    #[test]
    fn pings_pongs_and_text_that_is_no_frame() {
        let (w, n) = window(&[0x89, 0x80, 1, 2, 3, 4]);
        assert_eq!(frame_head(&w, n).map(|h| h.opcode), Some(Opcode::Ping));
        let (w, n) = window(&[0x8a, 0x00]);
        assert_eq!(frame_head(&w, n).map(|h| h.opcode), Some(Opcode::Pong));
        for text in
            [&b"GET / HTTP/1.1\r\n"[..], b"HTTP/1.1 101 Switching Protocols\r\n", b"SIP/2.0 200 OK\r\n", b"\r\n\r\n"]
        {
            let (w, n) = window(text);
            assert_eq!(frame_head(&w, n), None, "{text:?}");
        }
        // Cut short: the mask key is not all there.
        let (w, n) = window(&[0x81, 0x85, 1, 2]);
        assert_eq!(frame_head(&w, n), None);
        // permessage-deflate's RSV1.
        let (w, n) = window(&[0xc1, 0x05]);
        assert_eq!(frame_head(&w, n), None);
    }
}
