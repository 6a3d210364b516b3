//! The start line: RFC 3261 §7.1 Request-Line and §7.2 Status-Line.

use super::HeadError;
use super::lex::{is_token, is_uri, is_wsp, trim_wsp, trim_wsp_start};

/// The first line of a SIP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    /// `Method SP Request-URI SP SIP-Version`. The method is kept as written:
    /// methods are case-sensitive (RFC 3261 §7.1).
    Request { method: String, uri: String },
    /// `SIP-Version SP Status-Code SP Reason-Phrase`. The reason phrase may
    /// be empty.
    Response { code: u16, reason: String },
}

/// The only version this parser (and the kernel's classifier) accepts. The
/// version string is case-insensitive on receipt (RFC 3261 §7.1).
const VERSION: &str = "SIP/2.0";

/// Parses one start line, its line end already removed. Runs of SP or HTAB
/// are accepted where the grammar has one SP.
pub(crate) fn parse(line: &[u8]) -> Result<StartLine, HeadError> {
    let line = String::from_utf8_lossy(line);
    let line = trim_wsp(&line);
    let first_end = line.bytes().position(is_wsp).unwrap_or(line.len());
    let first = &line[..first_end];
    let rest = &line[first_end..];
    let looks_like_version = first.as_bytes().get(..4).is_some_and(|p| p.eq_ignore_ascii_case(b"SIP/"));
    if looks_like_version {
        if !first.eq_ignore_ascii_case(VERSION) {
            return Err(HeadError::BadVersion);
        }
        return status_line(rest);
    }
    request_line(line)
}

fn status_line(after_version: &str) -> Result<StartLine, HeadError> {
    let rest = trim_wsp_start(after_version);
    let digits = rest.as_bytes().get(..3).ok_or(HeadError::BadStatusCode)?;
    let three_digits = digits.iter().all(u8::is_ascii_digit);
    let ends_there = rest.as_bytes().get(3).is_none_or(|&b| is_wsp(b));
    if !three_digits || !ends_there {
        return Err(HeadError::BadStatusCode);
    }
    let code = digits.iter().fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    if !(100..=699).contains(&code) {
        return Err(HeadError::BadStatusCode);
    }
    Ok(StartLine::Response { code, reason: trim_wsp(&rest[3..]).to_string() })
}

fn request_line(line: &str) -> Result<StartLine, HeadError> {
    let parts: Vec<&str> = line.split([' ', '\t']).filter(|p| !p.is_empty()).collect();
    let [method, uri, version] = parts[..] else {
        return Err(HeadError::MalformedStartLine);
    };
    if !is_token(method) {
        return Err(HeadError::BadMethod);
    }
    if !is_uri(uri) {
        return Err(HeadError::BadRequestUri);
    }
    if !version.eq_ignore_ascii_case(VERSION) {
        return Err(HeadError::BadVersion);
    }
    Ok(StartLine::Request { method: method.to_string(), uri: uri.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, uri: &str) -> Result<StartLine, HeadError> {
        Ok(StartLine::Request { method: method.into(), uri: uri.into() })
    }

    fn response(code: u16, reason: &str) -> Result<StartLine, HeadError> {
        Ok(StartLine::Response { code, reason: reason.into() })
    }

    #[test]
    fn requests() {
        assert_eq!(parse(b"REGISTER sip:example.com SIP/2.0"), request("REGISTER", "sip:example.com"));
        assert_eq!(parse(b"REGISTER  sip:example.com\tsip/2.0 "), request("REGISTER", "sip:example.com"));
        // Methods are case-sensitive: this is an extension method, kept as is.
        assert_eq!(parse(b"register sip:example.com SIP/2.0"), request("register", "sip:example.com"));
    }

    #[test]
    fn responses() {
        assert_eq!(parse(b"SIP/2.0 200 OK"), response(200, "OK"));
        assert_eq!(parse(b"SIP/2.0 430 Flow Failed"), response(430, "Flow Failed"));
        assert_eq!(parse(b"sip/2.0 300  Multiple Choices "), response(300, "Multiple Choices"));
        assert_eq!(parse(b"SIP/2.0 200"), response(200, ""));
        assert_eq!(parse(b"SIP/2.0 200 "), response(200, ""));
        assert_eq!(parse(b"SIP/2.0 699 \xff"), response(699, "\u{fffd}"));
    }

    #[test]
    fn garbage() {
        use HeadError::*;
        assert_eq!(parse(b""), Err(MalformedStartLine));
        assert_eq!(parse(b"   "), Err(MalformedStartLine));
        assert_eq!(parse(b"SIP/2.0"), Err(BadStatusCode));
        assert_eq!(parse(b"SIP/2.0 20 OK"), Err(BadStatusCode));
        assert_eq!(parse(b"SIP/2.0 2000 OK"), Err(BadStatusCode));
        assert_eq!(parse(b"SIP/2.0 099 Low"), Err(BadStatusCode));
        assert_eq!(parse(b"SIP/2.0 700 High"), Err(BadStatusCode));
        assert_eq!(parse(b"SIP/2.0 2x0 OK"), Err(BadStatusCode));
        assert_eq!(parse(b"SIP/3.0 200 OK"), Err(BadVersion));
        assert_eq!(parse(b"SIP/ 200 OK"), Err(BadVersion));
        assert_eq!(parse(b"REGISTER sip:example.com SIP/3.0"), Err(BadVersion));
        assert_eq!(parse(b"REGISTER sip:example.com HTTP/1.1"), Err(BadVersion));
        assert_eq!(parse(b"GET / HTTP/1.1"), Err(BadRequestUri));
        assert_eq!(parse(b"HTTP/1.1 200 OK"), Err(BadMethod));
        assert_eq!(parse(b"REG;ISTER sip:x SIP/2.0"), Err(BadMethod));
        assert_eq!(parse(b"\xc3\xa9 sip:x SIP/2.0"), Err(BadMethod));
        assert_eq!(parse(b"REGISTER sip:x"), Err(MalformedStartLine));
        assert_eq!(parse(b"REGISTER sip:x SIP/2.0 more"), Err(MalformedStartLine));
        assert_eq!(parse(b"\x00\x01\x02"), Err(MalformedStartLine));
        // Found by the robustness test: a multi-byte character across byte 4.
        assert_eq!(parse(b"*>\xe2\x82\xac?"), Err(MalformedStartLine));
    }
}
