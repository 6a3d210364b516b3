//! Splits a head into its start line and unfolded header lines.
//!
//! RFC 3261 §7.3.1: a line that starts with SP or HTAB continues the header
//! above it, and the line break plus the white space count as one SP.
//! §7.5: CRLFs before the start line are ignored. The head ends at the first
//! empty line. Lines end in CRLF; a bare LF is accepted too.

use super::HeadError;
use super::lex::{is_token, is_wsp};

/// One header after unfolding, with a compact name expanded to its full name
/// (RFC 3261 §7.3.3). Names are otherwise kept as written: compare them
/// ignoring ASCII case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Header {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Split<'a> {
    pub start: &'a [u8],
    pub headers: Vec<Header>,
    /// The empty line that ends the head was not reached.
    pub truncated: bool,
}

/// The compact forms of RFC 3261 §7.3.3 and §20, and of the extensions that
/// registered one (RFC 3265, 3515, 3892, 3841, 4028, 4474), mapped to full names.
const COMPACT: &[(u8, &str)] = &[
    (b'a', "Accept-Contact"),
    (b'b', "Referred-By"),
    (b'c', "Content-Type"),
    (b'd', "Request-Disposition"),
    (b'e', "Content-Encoding"),
    (b'f', "From"),
    (b'i', "Call-ID"),
    (b'j', "Reject-Contact"),
    (b'k', "Supported"),
    (b'l', "Content-Length"),
    (b'm', "Contact"),
    (b'n', "Identity-Info"),
    (b'o', "Event"),
    (b'r', "Refer-To"),
    (b's', "Subject"),
    (b't', "To"),
    (b'u', "Allow-Events"),
    (b'v', "Via"),
    (b'x', "Session-Expires"),
    (b'y', "Identity"),
];

/// The full name of a header, given the name as written.
pub(crate) fn expand_compact(name: &str) -> &str {
    match name.as_bytes() {
        [c] => COMPACT.iter().find(|(short, _)| *short == c.to_ascii_lowercase()).map_or(name, |(_, full)| full),
        _ => name,
    }
}

pub(crate) fn split(head: &[u8]) -> Result<Split<'_>, HeadError> {
    let mut rest = head;
    while let Some(after) = rest.strip_prefix(b"\r\n").or_else(|| rest.strip_prefix(b"\n")) {
        rest = after;
    }
    if rest.is_empty() {
        return Err(HeadError::Empty);
    }
    let (start, mut rest) = next_line(rest).ok_or(HeadError::TruncatedStartLine)?;

    let mut logical: Vec<Vec<u8>> = Vec::new();
    let mut truncated = true;
    while let Some((line, after)) = next_line(rest) {
        rest = after;
        match line.first() {
            None => {
                truncated = false;
                break;
            }
            // A continuation with nothing above it (right after the start
            // line, RFC 3261 §7.3.1 gives it no meaning) is dropped.
            Some(&b) if is_wsp(b) => {
                if let Some(last) = logical.last_mut() {
                    last.push(b' ');
                    last.extend(line.iter().skip_while(|&&b| is_wsp(b)));
                }
            }
            Some(_) => logical.push(line.to_vec()),
        }
    }
    if truncated {
        // `rest` is the cut-off last line, dropped. The header above it is
        // kept only when that line visibly starts a new header; if it is
        // empty or a continuation, the header above may be missing its end.
        let next_starts_a_header = rest.first().is_some_and(|&b| !is_wsp(b));
        if !next_starts_a_header {
            logical.pop();
        }
    }
    Ok(Split { start, headers: logical.iter().filter_map(|l| header(l)).collect(), truncated })
}

/// The next line without its line end, and what follows; `None` if no line
/// end is left.
fn next_line(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let lf = buf.iter().position(|&b| b == b'\n')?;
    let line = &buf[..lf];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    Some((line, &buf[lf + 1..]))
}

/// `field-name HCOLON field-value`, HCOLON = *( SP / HTAB ) ":" SWS. A line
/// without a colon or whose name is not a token is not a header: `None`.
fn header(line: &[u8]) -> Option<Header> {
    let colon = line.iter().position(|&b| b == b':')?;
    let name = std::str::from_utf8(&line[..colon]).ok()?;
    let name = name.trim_end_matches([' ', '\t']);
    if !is_token(name) {
        return None;
    }
    let value = String::from_utf8_lossy(&line[colon + 1..]);
    Some(Header { name: expand_compact(name).to_string(), value: value.trim_matches([' ', '\t']).to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(name: &str, value: &str) -> Header {
        Header { name: name.into(), value: value.into() }
    }

    #[test]
    fn compact_names_expand_and_long_names_stay() {
        assert_eq!(expand_compact("m"), "Contact");
        assert_eq!(expand_compact("M"), "Contact");
        assert_eq!(expand_compact("i"), "Call-ID");
        assert_eq!(expand_compact("k"), "Supported");
        assert_eq!(expand_compact("l"), "Content-Length");
        assert_eq!(expand_compact("t"), "To");
        assert_eq!(expand_compact("f"), "From");
        assert_eq!(expand_compact("v"), "Via");
        assert_eq!(expand_compact("e"), "Content-Encoding");
        assert_eq!(expand_compact("c"), "Content-Type");
        assert_eq!(expand_compact("s"), "Subject");
        assert_eq!(expand_compact("q"), "q");
        assert_eq!(expand_compact("CONTACT"), "CONTACT");
    }

    #[test]
    fn unfolds_continuations_into_one_space() {
        let s = split(b"SIP/2.0 200 OK\r\nContact: <sip:a>;reg-id=1\r\n \t ;ob=1\r\n\tx\r\nTo : <sip:b>\r\n\r\nbody")
            .unwrap();
        assert_eq!(s.start, b"SIP/2.0 200 OK");
        assert_eq!(s.headers, vec![h("Contact", "<sip:a>;reg-id=1 ;ob=1 x"), h("To", "<sip:b>")]);
        assert!(!s.truncated);
    }

    #[test]
    fn leading_line_ends_and_bare_lf() {
        let s = split(b"\r\n\n\r\nSIP/2.0 200 OK\nm:<sip:a>\n\n").unwrap();
        assert_eq!(s.start, b"SIP/2.0 200 OK");
        assert_eq!(s.headers, vec![h("Contact", "<sip:a>")]);
        assert!(!s.truncated);
    }

    #[test]
    fn lines_that_are_not_headers_are_skipped() {
        let s = split(b"SIP/2.0 200 OK\r\n folded start\r\nno colon\r\nbad name: x\r\n: x\r\nOK:\r\n\r\n").unwrap();
        assert_eq!(s.headers, vec![h("OK", "")]);
    }

    #[test]
    fn a_cut_off_last_line_is_dropped() {
        let s = split(b"SIP/2.0 200 OK\r\nTo: <sip:b>\r\nContact: <sip:a").unwrap();
        assert_eq!(s.headers, vec![h("To", "<sip:b>")]);
        assert!(s.truncated);
    }

    #[test]
    fn a_header_whose_continuation_is_cut_off_is_dropped_too() {
        let s = split(b"SIP/2.0 200 OK\r\nTo: <sip:b>\r\nContact: <sip:a>\r\n ;+sip.ins").unwrap();
        assert_eq!(s.headers, vec![h("To", "<sip:b>")]);
        assert!(s.truncated);
        // Cut right after a line end: the next line could have continued it.
        let s = split(b"SIP/2.0 200 OK\r\nTo: <sip:b>\r\nContact: <sip:a>\r\n").unwrap();
        assert_eq!(s.headers, vec![h("To", "<sip:b>")]);
        assert!(s.truncated);
    }

    #[test]
    fn start_line_problems() {
        assert_eq!(split(b""), Err(HeadError::Empty));
        assert_eq!(split(b"\r\n\r\n\n"), Err(HeadError::Empty));
        assert_eq!(split(b"SIP/2.0 200 O"), Err(HeadError::TruncatedStartLine));
        let s = split(b"SIP/2.0 200 OK\r\n").unwrap();
        assert!(s.headers.is_empty());
        assert!(s.truncated);
    }
}
