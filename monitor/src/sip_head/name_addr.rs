//! `( name-addr / addr-spec ) *( SEMI param )`: the shape of To, From,
//! Contact and Path values (RFC 3261 §20.10, §20.39, §25.1; RFC 3327 §4).

use super::lex::{is_uri, read_quoted, trim_wsp, trim_wsp_end, trim_wsp_start};

/// A URI and the header parameters that follow it (still unparsed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Addr<'a> {
    /// Without angle brackets or display name, as written.
    pub uri: &'a str,
    /// Everything after the URI (after `>` for a name-addr): `;` params.
    pub params: &'a str,
    /// Written as a name-addr, in angle brackets.
    pub bracketed: bool,
}

/// Splits one value (one element of a comma-separated list) into its URI and
/// its header parameters. `None` if it is neither a name-addr nor an
/// addr-spec with a plausible URI.
///
/// - `"Display, Name" <uri;uri-params>;params`: the display name is a
///   quoted-string (it may hold `,`, `;`, `<`);
/// - `Display Name <uri>;params`: an unquoted display name, taken up to the
///   `<` (RFC 3261 wants tokens; anything without `"`, `>` or controls is let
///   through);
/// - `uri;params`: an addr-spec. RFC 3261 §20: without angle brackets every
///   `;` starts a header parameter, so the URI ends at the first `;`.
pub(crate) fn split_addr(value: &str) -> Option<Addr<'_>> {
    let s = trim_wsp(value);
    let first_lt = s.find('<');
    let first_semi = s.find(';');
    let (uri, params, bracketed) = if s.starts_with('"') {
        let (_display, after) = read_quoted(s)?;
        let (uri, params) = bracketed_uri(trim_wsp_start(after))?;
        (uri, params, true)
    } else if let Some(lt) = first_lt.filter(|&lt| first_semi.is_none_or(|semi| lt < semi)) {
        if !unquoted_display_name_ok(&s[..lt]) {
            return None;
        }
        let (uri, params) = bracketed_uri(&s[lt..])?;
        (uri, params, true)
    } else {
        let end = first_semi.unwrap_or(s.len());
        (trim_wsp_end(&s[..end]), &s[end..], false)
    };
    is_uri(uri).then_some(Addr { uri, params, bracketed })
}

/// `"<" addr-spec ">"` at the start of `s`: the URI and what follows `>`.
fn bracketed_uri(s: &str) -> Option<(&str, &str)> {
    let inner = s.strip_prefix('<')?;
    let gt = inner.find('>')?;
    Some((&inner[..gt], &inner[gt + 1..]))
}

fn unquoted_display_name_ok(name: &str) -> bool {
    name.bytes().all(|b| (b >= 0x20 || b == b'\t') && b != 0x7f && !matches!(b, b'"' | b'>'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr<'a>(uri: &'a str, params: &'a str, bracketed: bool) -> Option<Addr<'a>> {
        Some(Addr { uri, params, bracketed })
    }

    #[test]
    fn name_addr_forms() {
        assert_eq!(
            split_addr("<sip:bob@192.0.2.2;transport=tcp>;reg-id=1"),
            addr("sip:bob@192.0.2.2;transport=tcp", ";reg-id=1", true)
        );
        assert_eq!(
            split_addr(r#" "Bob, \"the\" <boss>; x" <sip:bob@example.com>"#),
            addr("sip:bob@example.com", "", true)
        );
        assert_eq!(
            split_addr("Bob Smith <sip:bob@example.com> ; tag=1"),
            addr("sip:bob@example.com", " ; tag=1", true)
        );
        assert_eq!(split_addr("\"\"<sip:bob@example.com>"), addr("sip:bob@example.com", "", true));
    }

    #[test]
    fn addr_spec_forms() {
        assert_eq!(split_addr("sip:bob@example.com;tag=1"), addr("sip:bob@example.com", ";tag=1", false));
        assert_eq!(split_addr("sip:bob@example.com ;expires=0"), addr("sip:bob@example.com", ";expires=0", false));
        // The `<` is in a (malformed, unquoted) parameter, not a name-addr.
        assert_eq!(
            split_addr("sip:bob@example.com;+sip.instance=<urn:x>"),
            addr("sip:bob@example.com", ";+sip.instance=<urn:x>", false)
        );
    }

    #[test]
    fn malformed() {
        assert_eq!(split_addr(""), None);
        assert_eq!(split_addr("*"), None);
        assert_eq!(split_addr("<sip:bob@example.com"), None);
        assert_eq!(split_addr("<>"), None);
        assert_eq!(split_addr("<bob>"), None);
        assert_eq!(split_addr("\"Bob <sip:bob@example.com>"), None);
        assert_eq!(split_addr("\"Bob\" sip:bob@example.com"), None);
        assert_eq!(split_addr("Bob\" <sip:bob@example.com>"), None);
        assert_eq!(split_addr("sip:bob @example.com"), None);
        assert_eq!(split_addr("<sip:bob @example.com>"), None);
        assert_eq!(split_addr("bob@example.com"), None);
    }
}
