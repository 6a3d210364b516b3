//! Where a SIP message ends on a stream (RFC 3261 §18.3): its head ends at the
//! first empty line (CRLF CRLF), and its body is Content-Length bytes long.
//! Content-Length is mandatory on streams, so a head without one has no body.
//!
//! The head is scanned one byte at a time with a few registers of state, so
//! that a scan can stop at the end of one window and go on in the next: a
//! head is rarely shorter than the 256-byte window.

/// The empty line that ends a head, as the last four bytes read.
const HEAD_END: u32 = u32::from_be_bytes(*b"\r\n\r\n");
/// "\ncontent-length" ends these 16 bytes (lower-cased, RFC 3261 §7.3.1:
/// header names are case-insensitive), of which the first byte is free.
const LONG_NAME_HIGH: u64 = u64::from_be_bytes(*b"\0\nconten");
const LONG_NAME_HIGH_MASK: u64 = 0x00ff_ffff_ffff_ffff;
const LONG_NAME_LOW: u64 = u64::from_be_bytes(*b"t-length");
/// "\nl": the compact form (RFC 3261 §7.3.3).
const COMPACT_NAME: u64 = u16::from_be_bytes(*b"\nl") as u64;
/// Larger values are not a message we could follow within one segment anyway.
pub const MAX_CONTENT_LENGTH: u32 = 1 << 20;

/// How far the scan has got in reading the Content-Length header.
const LENGTH_NONE: u32 = 0;
/// The name was read; blanks and the colon come next.
const LENGTH_NAME: u32 = 1;
const LENGTH_DIGITS: u32 = 2;
const LENGTH_DONE: u32 = 3;

/// The state of a head scan between bytes (and between windows).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct HeadScan {
    /// The last 16 bytes read, lower-cased, oldest first: `high` then `low`.
    high: u64,
    low: u64,
    /// The last four bytes as they are.
    tail: u32,
    length_state: u32,
    /// The Content-Length value read so far (0 until one is seen).
    pub content_length: u32,
}

impl HeadScan {
    /// Takes the next byte; true when it ends the head.
    ///
    /// The state is read and written back through volatile accesses: in the
    /// kernel it lives in map memory, whose contents the verifier does not
    /// track, so each pass of the scan loop starts from the same unknown state
    /// and the loop is verified in one pass per byte, not one per combination
    /// of values the state could hold.
    #[inline(always)]
    pub fn step(&mut self, byte: u8) -> bool {
        // SAFETY: a read of this value itself.
        let mut scan = unsafe { core::ptr::read_volatile(self) };
        let is_blank = byte == b' ' || byte == b'\t';
        let is_digit = byte.is_ascii_digit();
        let state = scan.length_state;
        if state == LENGTH_NONE {
            // The name is complete when a blank or the colon follows it.
            if (is_blank || byte == b':') && scan.name_is_content_length() {
                scan.length_state = LENGTH_NAME;
            }
        } else if state == LENGTH_NAME {
            if is_digit {
                scan.length_state = LENGTH_DIGITS;
                scan.content_length = (byte - b'0') as u32;
            } else if !is_blank && byte != b':' {
                scan.length_state = LENGTH_NONE;
            }
        } else if state == LENGTH_DIGITS {
            if is_digit {
                let value = scan.content_length * 10 + (byte - b'0') as u32;
                scan.content_length = if value > MAX_CONTENT_LENGTH { MAX_CONTENT_LENGTH } else { value };
            } else {
                scan.length_state = LENGTH_DONE;
            }
        }
        let folded = if byte.is_ascii_uppercase() { byte | 0x20 } else { byte };
        scan.high = scan.high << 8 | scan.low >> 56;
        scan.low = scan.low << 8 | folded as u64;
        scan.tail = scan.tail << 8 | byte as u32;
        // SAFETY: a write of this value itself.
        unsafe { core::ptr::write_volatile(self, scan) };
        scan.tail == HEAD_END
    }

    #[inline(always)]
    fn name_is_content_length(&self) -> bool {
        (self.low & 0xffff) == COMPACT_NAME
            || (self.low == LONG_NAME_LOW && (self.high & LONG_NAME_HIGH_MASK) == LONG_NAME_HIGH)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes up to and including the head's end, and the Content-Length seen.
    fn scan(bytes: &[u8]) -> Option<(usize, u32)> {
        let mut scan = HeadScan::default();
        bytes.iter().position(|b| scan.step(*b)).map(|at| (at + 1, scan.content_length))
    }

    #[test]
    fn finds_the_end_of_the_head_and_the_length() {
        let message = b"INVITE sip:a@b SIP/2.0\r\nVia: x\r\nContent-Length: 12\r\n\r\nhello world!";
        assert_eq!(scan(message), Some((message.len() - 12, 12)));
    }

    #[test]
    fn names_are_case_insensitive_and_compact() {
        for head in [
            &b"SIP/2.0 200 OK\r\ncontent-length:7\r\n\r\n"[..],
            b"SIP/2.0 200 OK\r\nCONTENT-LENGTH :  7\r\n\r\n",
            b"SIP/2.0 200 OK\r\nl: 7\r\n\r\n",
            b"SIP/2.0 200 OK\r\nL:7\r\n\r\n",
        ] {
            assert_eq!(scan(head), Some((head.len(), 7)), "{}", String::from_utf8_lossy(head));
        }
    }

    #[test]
    fn other_headers_are_not_taken_for_it() {
        for head in [
            &b"SIP/2.0 200 OK\r\nX-Content-Length: 7\r\n\r\n"[..],
            b"SIP/2.0 200 OK\r\nLocation: 7\r\n\r\n",
            b"SIP/2.0 200 OK\r\nSubject: Content-Length: 7\r\n\r\n",
        ] {
            assert_eq!(scan(head), Some((head.len(), 0)), "{}", String::from_utf8_lossy(head));
        }
    }

    #[test]
    fn a_head_without_its_empty_line_does_not_end() {
        assert_eq!(scan(b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n"), None);
    }

    #[test]
    fn huge_lengths_are_capped() {
        assert_eq!(scan(b"SIP/2.0 200 OK\r\nl: 99999999999\r\n\r\n").map(|s| s.1), Some(MAX_CONTENT_LENGTH));
    }
}
