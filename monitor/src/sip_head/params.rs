//! Parameters: the header parameters after a name-addr or addr-spec
//! (`*( SEMI generic-param )`, RFC 3261 §25.1) and the parameters inside a
//! SIP URI (RFC 3261 §19.1.1), plus the number parsers they need.

use super::lex::{is_token_char, is_wsp, read_quoted, trim_wsp_start};

/// One `name [= value]`. The name is as written (compare it ignoring ASCII
/// case, RFC 3261 §7.3.1); a quoted value has its quotes and escapes removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Param {
    pub name: String,
    pub value: Option<String>,
}

/// Parses `*( SEMI generic-param )` where generic-param = token [ EQUAL
/// gen-value ] and gen-value = token / host / quoted-string, with white space
/// allowed around `;` and `=`. An unquoted value runs to the next white space,
/// `;` or `,`. Empty parameters (`;;`, a trailing `;`) are skipped: the
/// grammar has none, but RFC 5626's own examples (§3.2, §9) write
/// `reg-id=1;` and fold the next line as `;+sip.instance=...`. `None` if
/// anything else is found.
pub(crate) fn parse_params(s: &str) -> Option<Vec<Param>> {
    let mut params = Vec::new();
    let mut rest = trim_wsp_start(s);
    while !rest.is_empty() {
        rest = trim_wsp_start(rest.strip_prefix(';')?);
        if rest.is_empty() || rest.starts_with(';') {
            continue;
        }
        let name_len = rest.bytes().take_while(|&b| is_token_char(b)).count();
        if name_len == 0 {
            return None;
        }
        let name = rest[..name_len].to_string();
        rest = trim_wsp_start(&rest[name_len..]);
        let value = match rest.strip_prefix('=') {
            None => None,
            Some(after) => {
                let after = trim_wsp_start(after);
                let (value, after) = gen_value(after)?;
                rest = after;
                Some(value)
            }
        };
        rest = trim_wsp_start(rest);
        params.push(Param { name, value });
    }
    Some(params)
}

fn gen_value(s: &str) -> Option<(String, &str)> {
    if s.starts_with('"') {
        return read_quoted(s);
    }
    let len =
        s.bytes().take_while(|&b| !is_wsp(b) && !matches!(b, b';' | b',' | b'"') && b >= 0x20 && b != 0x7f).count();
    (len > 0).then(|| (s[..len].to_string(), &s[len..]))
}

/// The first parameter called `name`, ignoring ASCII case.
pub(crate) fn find<'a>(params: &'a [Param], name: &str) -> Option<&'a Param> {
    params.iter().find(|p| p.name.eq_ignore_ascii_case(name))
}

/// Does the URI carry the URI parameter `name` (with or without a value)?
/// URI parameters follow the host part: the user part of a SIP URI may itself
/// hold `;` (RFC 3261 §25.1 user-unreserved), so they are looked for after the
/// `@` when there is one, and before any `?` headers.
pub(crate) fn uri_has_param(uri: &str, name: &str) -> bool {
    let after_scheme = uri.split_once(':').map_or(uri, |(_, rest)| rest);
    let host_part = after_scheme.split_once('@').map_or(after_scheme, |(_, host)| host);
    let before_headers = host_part.split_once('?').map_or(host_part, |(p, _)| p);
    before_headers.split(';').skip(1).any(|p| p.split_once('=').map_or(p, |(n, _)| n).eq_ignore_ascii_case(name))
}

/// delta-seconds and the like: 1*DIGIT that fits `T` (for u32, RFC 3261
/// §20.19 bounds Expires to 0..2**32-1). No sign, no white space; overflow is
/// `None`.
pub(crate) fn parse_digits<T: std::str::FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(name: &str, value: Option<&str>) -> Param {
        Param { name: name.into(), value: value.map(Into::into) }
    }

    #[test]
    fn params_with_spaces_quotes_and_flags() {
        assert_eq!(parse_params(""), Some(vec![]));
        assert_eq!(parse_params("  "), Some(vec![]));
        assert_eq!(
            parse_params(r#" ; reg-id = 1 ;+sip.instance="<urn:uuid:1;2,3>";ob ; expires=0"#),
            Some(vec![
                p("reg-id", Some("1")),
                p("+sip.instance", Some("<urn:uuid:1;2,3>")),
                p("ob", None),
                p("expires", Some("0")),
            ])
        );
        assert_eq!(
            parse_params(";received=[2001:db8::1];x=\"a\\\"b\""),
            Some(vec![p("received", Some("[2001:db8::1]")), p("x", Some("a\"b"))])
        );
    }

    #[test]
    fn empty_params_are_skipped() {
        assert_eq!(parse_params(";"), Some(vec![]));
        assert_eq!(parse_params("; reg-id=1; ;+x ;; "), Some(vec![p("reg-id", Some("1")), p("+x", None)]));
    }

    #[test]
    fn malformed_params() {
        assert_eq!(parse_params("reg-id=1"), None);
        assert_eq!(parse_params(";=1"), None);
        assert_eq!(parse_params(";a="), None);
        assert_eq!(parse_params(";a=;b"), None);
        assert_eq!(parse_params(";a=\"open"), None);
        assert_eq!(parse_params(";a=1 junk"), None);
        assert_eq!(parse_params(";a=1,"), None);
        assert_eq!(parse_params(";a b"), None);
    }

    #[test]
    fn find_ignores_case() {
        let params = parse_params(";Reg-ID=2;reg-id=3").unwrap();
        assert_eq!(find(&params, "reg-id"), Some(&p("Reg-ID", Some("2"))));
        assert_eq!(find(&params, "expires"), None);
    }

    #[test]
    fn uri_params_are_after_the_host() {
        assert!(uri_has_param("sip:bob@192.0.2.2;transport=tcp;ob", "ob"));
        assert!(uri_has_param("sip:192.0.2.2;OB", "ob"));
        assert!(uri_has_param("sip:192.0.2.2;ob=1?x=y", "ob"));
        assert!(!uri_has_param("sip:bob;ob@192.0.2.2", "ob"));
        assert!(!uri_has_param("sip:bob@192.0.2.2;lr", "ob"));
        assert!(!uri_has_param("sip:bob@192.0.2.2?x=y;ob", "ob"));
        assert!(!uri_has_param("sip:bob@192.0.2.2;obx", "ob"));
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_digits::<u32>("0"), Some(0));
        assert_eq!(parse_digits::<u32>("007"), Some(7));
        assert_eq!(parse_digits::<u32>("4294967295"), Some(u32::MAX));
        assert_eq!(parse_digits::<u32>("4294967296"), None);
        assert_eq!(parse_digits::<u32>("99999999999999999999999"), None);
        assert_eq!(parse_digits::<u32>(""), None);
        assert_eq!(parse_digits::<u32>("+1"), None);
        assert_eq!(parse_digits::<u32>("1 "), None);
        assert_eq!(parse_digits::<u32>("-1"), None);
    }
}
