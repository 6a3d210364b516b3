//! The Contact header (RFC 3261 §20.10) with the RFC 5626 parameters:
//! `+sip.instance` and `reg-id` (§4.1, §4.2, grammar in §10) and the `ob` URI
//! parameter (§2.1, §4.3, §5.3.2).

use super::lex::{read_quoted, trim_wsp};
use super::name_addr::split_addr;
use super::params::{find, parse_digits, parse_params, uri_has_param};

/// One contact of a Contact header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    /// The URI, without display name, angle brackets or header parameters,
    /// as written.
    pub uri: String,
    /// `reg-id` (RFC 5626 §4.2): absent, or not a u32, is `None`. The
    /// grammar's range 1..2**31-1 (§10) is not enforced.
    pub reg_id: Option<u32>,
    /// `+sip.instance` (RFC 5626 §4.1, RFC 5627), its double quotes removed,
    /// e.g. `<urn:uuid:00000000-0000-1000-8000-000A95A0E128>`.
    pub instance: Option<String>,
    /// The `expires` header parameter (RFC 3261 §20.10): absent, or not a
    /// u32, is `None`. (RFC 3261 asks a registrar to treat a malformed value
    /// as 3600; that is left to the reader.)
    pub expires: Option<u32>,
    /// The URI carries the `ob` parameter (RFC 5626 §2.1, §5.3.2), inside the angle
    /// brackets. An `;ob` after an unbracketed URI is a header parameter and
    /// does not count (RFC 3261 §20).
    pub ob: bool,
}

/// What one Contact header held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ContactValue {
    /// `Contact: *` (RFC 3261 §10.2.2: remove every binding).
    Star,
    List(Vec<Contact>),
}

/// Parses a Contact header value: `"*"` or `contact-param *(COMMA
/// contact-param)`. Empty list elements are skipped (the #rule of RFC 2616
/// §2.1, which RFC 3261 §7.3.1 follows). `None`, and nothing recorded, if
/// any element is malformed: a `*` among other contacts included.
pub(crate) fn parse_contact_header(value: &str) -> Option<ContactValue> {
    let value = trim_wsp(value);
    if value == "*" {
        return Some(ContactValue::Star);
    }
    let contacts = split_commas(value)
        .into_iter()
        .map(trim_wsp)
        .filter(|e| !e.is_empty())
        .map(parse_contact)
        .collect::<Option<Vec<_>>>()?;
    (!contacts.is_empty()).then_some(ContactValue::List(contacts))
}

fn parse_contact(element: &str) -> Option<Contact> {
    let addr = split_addr(element)?;
    let params = parse_params(addr.params)?;
    let number = |name| find(&params, name).and_then(|p| p.value.as_deref()).and_then(parse_digits);
    let instance = find(&params, "+sip.instance").and_then(|p| p.value.clone()).filter(|v| !v.is_empty());
    Some(Contact {
        uri: addr.uri.to_string(),
        reg_id: number("reg-id"),
        instance,
        expires: number("expires"),
        ob: addr.bracketed && uri_has_param(addr.uri, "ob"),
    })
}

/// Splits a list at the commas that separate its elements: not those inside
/// a quoted-string (with its `\` escapes) nor inside `<...>`. An unclosed
/// quote or bracket runs to the end, leaving a malformed last element.
pub(crate) fn split_commas(value: &str) -> Vec<&str> {
    let mut elements = Vec::new();
    let mut start = 0;
    let mut rest = value;
    let mut offset = 0;
    while let Some(i) = rest.find([',', '"', '<']) {
        let at = offset + i;
        let skip_to = match rest.as_bytes()[i] {
            b',' => {
                elements.push(&value[start..at]);
                start = at + 1;
                at + 1
            }
            b'"' => match read_quoted(&rest[i..]) {
                Some((_, after)) => value.len() - after.len(),
                None => value.len(),
            },
            _ => rest[i..].find('>').map_or(value.len(), |gt| at + gt + 1),
        };
        offset = skip_to;
        rest = &value[skip_to..];
    }
    elements.push(&value[start..]);
    elements
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contact(uri: &str) -> Contact {
        Contact { uri: uri.into(), reg_id: None, instance: None, expires: None, ob: false }
    }

    #[test]
    fn commas_split_outside_quotes_and_brackets() {
        assert_eq!(split_commas("a, b,c"), vec!["a", " b", "c"]);
        assert_eq!(
            split_commas(r#""x, \"y," <sip:a,b>;p="1,2", <sip:c>"#),
            vec![r#""x, \"y," <sip:a,b>;p="1,2""#, " <sip:c>"]
        );
        assert_eq!(split_commas(""), vec![""]);
        assert_eq!(split_commas(",,"), vec!["", "", ""]);
        assert_eq!(split_commas("\"open, a"), vec!["\"open, a"]);
        assert_eq!(split_commas("<open, a"), vec!["<open, a"]);
        assert_eq!(split_commas("é, ü"), vec!["é", " ü"]);
    }

    #[test]
    fn outbound_contact() {
        let value = r#"<sip:bob@192.0.2.2;transport=tcp;ob>;reg-id=1;+sip.instance="<urn:uuid:00000000-0000-1000-8000-000A95A0E128>";expires=600"#;
        assert_eq!(
            parse_contact_header(value),
            Some(ContactValue::List(vec![Contact {
                uri: "sip:bob@192.0.2.2;transport=tcp;ob".into(),
                reg_id: Some(1),
                instance: Some("<urn:uuid:00000000-0000-1000-8000-000A95A0E128>".into()),
                expires: Some(600),
                ob: true,
            }]))
        );
    }

    #[test]
    fn star_and_lists() {
        assert_eq!(parse_contact_header(" * "), Some(ContactValue::Star));
        assert_eq!(parse_contact_header("*, <sip:a@b>"), None);
        assert_eq!(parse_contact_header(""), None);
        assert_eq!(
            parse_contact_header("sip:a@b, ,<sip:c@d>,"),
            Some(ContactValue::List(vec![contact("sip:a@b"), contact("sip:c@d")]))
        );
        assert_eq!(parse_contact_header("<sip:a@b>, garbage"), None);
    }

    #[test]
    fn bad_numbers_and_unbracketed_ob_are_dropped_not_fatal() {
        assert_eq!(
            parse_contact_header("sip:a@b;ob;reg-id=x;expires=99999999999;+sip.instance=\"\""),
            Some(ContactValue::List(vec![contact("sip:a@b")]))
        );
    }
}
