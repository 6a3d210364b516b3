//! Lexical building blocks of RFC 3261 §25.1: tokens, white space, quoted
//! strings, and the URIs that name-addr and addr-spec carry.

/// `token` characters: alphanumerics and ``- . ! % * _ + ` ' ~``.
pub(crate) fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~')
}

pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_token_char)
}

/// SP or HTAB: what is left of linear white space once lines are unfolded.
pub(crate) fn is_wsp(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

pub(crate) fn trim_wsp(s: &str) -> &str {
    s.trim_matches([' ', '\t'])
}

pub(crate) fn trim_wsp_start(s: &str) -> &str {
    s.trim_start_matches([' ', '\t'])
}

pub(crate) fn trim_wsp_end(s: &str) -> &str {
    s.trim_end_matches([' ', '\t'])
}

/// Reads the quoted-string at the start of `s`: its contents with every
/// quoted-pair (`\x`) reduced to `x`, and what follows the closing quote.
/// `None` when `s` does not start with a quote or the quote is never closed.
pub(crate) fn read_quoted(s: &str) -> Option<(String, &str)> {
    let inner = s.strip_prefix('"')?;
    let mut out = String::new();
    let mut chars = inner.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, &inner[i + 1..])),
            '\\' => out.push(chars.next()?.1),
            c => out.push(c),
        }
    }
    None
}

/// Is `s` plausibly an absolute URI: `scheme ":" rest` (RFC 3261 §25.1,
/// RFC 3986 §3.1) with no white space, controls, `<`, `>` or `"`? Bytes above
/// 0x7F are let through: real user agents put raw UTF-8 in user parts.
pub(crate) fn is_uri(s: &str) -> bool {
    let Some((scheme, rest)) = s.split_once(':') else {
        return false;
    };
    let mut scheme_bytes = scheme.bytes();
    let scheme_ok = scheme_bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && scheme_bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    scheme_ok && !rest.is_empty() && s.bytes().all(|b| b > 0x20 && b != 0x7f && !matches!(b, b'<' | b'>' | b'"'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_strings_unescape_and_stop_at_the_closing_quote() {
        assert_eq!(read_quoted(r#""a \"b\", c" rest"#), Some((r#"a "b", c"#.to_string(), " rest")));
        assert_eq!(read_quoted(r#""""#), Some((String::new(), "")));
        assert_eq!(read_quoted(r#""open"#), None);
        assert_eq!(read_quoted(r#""ends in \"#), None);
        assert_eq!(read_quoted("plain"), None);
    }

    #[test]
    fn uris_need_a_scheme_and_no_spaces() {
        assert!(is_uri("sip:alice@example.com;transport=tcp"));
        assert!(is_uri("sips:[2001:db8::1]:5061"));
        assert!(is_uri("urn:uuid:00000000-0000-1000-8000-000A95A0E128"));
        assert!(!is_uri("alice@example.com"));
        assert!(!is_uri("sip:"));
        assert!(!is_uri(":x"));
        assert!(!is_uri("1sip:x"));
        assert!(!is_uri("sip:al ice@example.com"));
        assert!(!is_uri("sip:a<b"));
    }

    #[test]
    fn tokens() {
        assert!(is_token("+sip.instance"));
        assert!(is_token("reg-id"));
        assert!(!is_token(""));
        assert!(!is_token("a b"));
        assert!(!is_token("a;b"));
    }
}
