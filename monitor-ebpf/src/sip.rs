//! SIP start lines (RFC 3261 §7.1, §7.2, §25.1), read from a payload window.
//!
//! Request-Line = Method SP Request-URI SP SIP-Version CRLF
//! Status-Line  = SIP-Version SP Status-Code SP Reason-Phrase CRLF

use monitor_common::counters::{MAX_STANDARD_METHOD_LEN, Method};

use crate::frame::{WINDOW, Window};

pub const VERSION: &[u8; 7] = b"SIP/2.0";
/// "SIP/2.0 NNN " : version, SP, three digits, SP.
pub const STATUS_LINE_MIN: usize = 12;
const STATUS_CODE_OFFSET: usize = 8;
/// Longer tokens than this are not taken for a method (the longest standard one has 9).
pub const MAX_METHOD_LEN: usize = 48;

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum StartLine {
    Request(Method),
    Response(u16),
    NotSip,
}

/// Classifies the start line at the window's first byte; `len` bytes are valid.
///
/// Shaped for the verifier: every scan loop yields a yes or no, never a
/// position, so the code after a loop is verified once rather than once per
/// place the loop could have stopped.
#[inline(always)]
pub fn start_line(window: &Window, len: usize) -> StartLine {
    if let Some(code) = status_line(window, len) {
        return StartLine::Response(code);
    }
    if !ends_with_version(window, len) {
        return StartLine::NotSip;
    }
    match standard_method(window, len) {
        Some(method) => StartLine::Request(method),
        None if extension_method(window, len) => StartLine::Request(Method::Other),
        None => StartLine::NotSip,
    }
}

#[inline(always)]
fn status_line(window: &Window, len: usize) -> Option<u16> {
    if len < STATUS_LINE_MIN {
        return None;
    }
    let mut i = 0;
    while i < VERSION.len() {
        if window[i] != VERSION[i] {
            return None;
        }
        i += 1;
    }
    if window[VERSION.len()] != b' ' || window[STATUS_LINE_MIN - 1] != b' ' {
        return None;
    }
    let digits = [window[STATUS_CODE_OFFSET], window[STATUS_CODE_OFFSET + 1], window[STATUS_CODE_OFFSET + 2]];
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let code = digits.iter().fold(0u16, |code, d| code * 10 + (d - b'0') as u16);
    if (100..=699).contains(&code) { Some(code) } else { None }
}

/// " SIP/2.0" followed by CR ends the first line, after a non-empty Request-URI.
/// A line longer than the window gets the benefit of the doubt.
#[inline(always)]
fn ends_with_version(window: &Window, len: usize) -> bool {
    /// The shortest request line: "A b SIP/2.0".
    const MIN_LINE: usize = 11;
    let mut i = 0;
    while i < WINDOW {
        if i >= len {
            return len == WINDOW;
        }
        let b = window[i];
        if b == b'\n' {
            return false;
        }
        if b == b'\r' {
            if i < MIN_LINE {
                return false;
            }
            // SP, then the version, then this CR; the URI's last byte is no SP.
            let v = i - VERSION.len();
            let mut k = 0;
            while k < VERSION.len() {
                if window[(v + k) & (WINDOW - 1)] != VERSION[k] {
                    return false;
                }
                k += 1;
            }
            return window[(v - 1) & (WINDOW - 1)] == b' ' && window[(v - 2) & (WINDOW - 1)] != b' ';
        }
        i += 1;
    }
    len == WINDOW
}

/// One of the 14 standard methods, followed by SP (methods are case-sensitive).
#[inline(always)]
fn standard_method(window: &Window, len: usize) -> Option<Method> {
    let mut m = 0;
    while m < Method::TOKENS.len() {
        let token = &Method::TOKENS[m];
        if len > token.len && window[token.len & (WINDOW - 1)] == b' ' {
            let mut i = 0;
            while i < MAX_STANDARD_METHOD_LEN && i < token.len && window[i] == token.bytes[i] {
                i += 1;
            }
            if i == token.len {
                return Some(token.method);
            }
        }
        m += 1;
    }
    None
}

/// Any other RFC 3261 token of up to MAX_METHOD_LEN characters, followed by SP.
#[inline(always)]
fn extension_method(window: &Window, len: usize) -> bool {
    let mut i = 0;
    while i <= MAX_METHOD_LEN {
        let Some(&b) = window.get(i).filter(|_| i < len) else {
            return false;
        };
        if b == b' ' {
            return i > 0;
        }
        if !is_token(b) {
            return false;
        }
        i += 1;
    }
    false
}

/// RFC 3261 §25.1 token characters.
#[inline(always)]
const fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classify(text: &[u8]) -> StartLine {
        let mut window = [0u8; WINDOW];
        let len = text.len().min(WINDOW);
        window[..len].copy_from_slice(&text[..len]);
        start_line(&window, len)
    }

    #[test]
    fn requests_by_method() {
        for (method, token) in Method::STANDARD {
            let mut line = token.to_vec();
            line.extend_from_slice(b" sip:alice@example.com SIP/2.0\r\nVia: x\r\n");
            assert_eq!(classify(&line), StartLine::Request(method), "{line:?}");
        }
        assert_eq!(classify(b"FOO sip:a@b SIP/2.0\r\n"), StartLine::Request(Method::Other));
    }

    #[test]
    fn methods_are_case_sensitive() {
        assert_eq!(classify(b"invite sip:a@b SIP/2.0\r\n"), StartLine::Request(Method::Other));
    }

    #[test]
    fn responses_by_code() {
        assert_eq!(classify(b"SIP/2.0 300 Multiple Choices\r\n"), StartLine::Response(300));
        assert_eq!(classify(b"SIP/2.0 430 Flow Failed\r\n"), StartLine::Response(430));
        assert_eq!(classify(b"SIP/2.0 200 \r\n"), StartLine::Response(200));
    }

    #[test]
    fn not_sip() {
        for text in [
            &b""[..],
            b"GET / HTTP/1.1\r\n",
            b"SIP/2.0 099 Low\r\n",
            b"SIP/2.0 700 High\r\n",
            b"SIP/2.0 20 Short\r\n",
            b"INVITE  SIP/2.0\r\n",
            b"INVITE sip:a@b\r\n",
            b" INVITE sip:a@b SIP/2.0\r\n",
            b"INVITE sip:a@b SIP/2.0",
            b"\x00\x01\x00\x00",
        ] {
            assert_eq!(classify(text), StartLine::NotSip, "{text:?}");
        }
    }

    #[test]
    fn long_uri_is_judged_by_its_method() {
        let mut line = b"INVITE sip:".to_vec();
        line.extend(std::iter::repeat_n(b'a', 400));
        line.extend_from_slice(b"@b SIP/2.0\r\n");
        assert_eq!(classify(&line), StartLine::Request(Method::Invite));
    }
}
