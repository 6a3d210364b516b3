//! Records what each known header says into a [`SipHead`]. A header whose
//! value does not parse records nothing; of a header that should appear once
//! (Call-ID, `CSeq`, To, Expires, Flow-Timer, Content-Length) the first
//! well-formed one wins.

use super::contact::{ContactValue, parse_contact_header, split_commas};
use super::lex::{is_token, trim_wsp};
use super::lines::Header;
use super::name_addr::split_addr;
use super::params::{parse_digits, parse_params};
use super::{CSeq, SipHead};

pub(crate) fn record(head: &mut SipHead, header: &Header) {
    let value = header.value.as_str();
    let is = |name: &str| header.name.eq_ignore_ascii_case(name);
    if is("Call-ID") {
        set_once(&mut head.call_id, call_id(value));
    } else if is("Via") {
        if !head.via_seen {
            head.via_seen = true;
            head.top_via_branch = top_via_branch(value);
        }
    } else if is("CSeq") {
        set_once(&mut head.cseq, cseq(value));
    } else if is("To") {
        if head.to_aor.is_none() {
            head.to_tagged = tagged(value);
        }
        set_once(&mut head.to_aor, aor(value));
    } else if is("Contact") {
        match parse_contact_header(value) {
            Some(ContactValue::Star) => head.contact_star = true,
            Some(ContactValue::List(contacts)) => head.contacts.extend(contacts),
            None => {}
        }
    } else if is("Expires") {
        set_once(&mut head.expires, parse_digits(value));
    } else if is("Flow-Timer") {
        set_once(&mut head.flow_timer, parse_digits(value));
    } else if is("Supported") {
        head.supported.extend(option_tags(value).unwrap_or_default());
    } else if is("Require") {
        head.require.extend(option_tags(value).unwrap_or_default());
    } else if is("Content-Length") {
        set_once(&mut head.content_length, parse_digits(value));
    } else if is("Path") {
        head.has_path |= path(value);
    }
}

fn set_once<T>(slot: &mut Option<T>, value: Option<T>) {
    if slot.is_none() {
        *slot = value;
    }
}

/// `callid = word [ "@" word ]` (RFC 3261 §25.1): kept as written; anything
/// without white space or controls is accepted.
fn call_id(value: &str) -> Option<String> {
    let ok = !value.is_empty() && value.bytes().all(|b| b > 0x20 && b != 0x7f);
    ok.then(|| value.to_string())
}

/// The branch of the first via-parm (RFC 3261 §20.42): `sent-protocol LWS
/// sent-by *( SEMI via-params )`; its parameters must parse.
fn top_via_branch(value: &str) -> Option<String> {
    let first = *split_commas(value).first()?;
    let params = parse_params(&first[first.find(';')?..])?;
    let branch = params.into_iter().find(|p| p.name.eq_ignore_ascii_case("branch"))?.value?;
    (!branch.is_empty()).then_some(branch)
}

/// `CSeq = 1*DIGIT LWS Method` (RFC 3261 §20.16).
fn cseq(value: &str) -> Option<CSeq> {
    let mut parts = value.split([' ', '\t']).filter(|p| !p.is_empty());
    let (number, method) = (parts.next()?, parts.next()?);
    if parts.next().is_some() || !is_token(method) {
        return None;
    }
    Some(CSeq { number: parse_digits(number)?, method: method.to_string() })
}

/// The address of record: the To URI, without display name, brackets or
/// header parameters (RFC 3261 §10.2, §20.39). The parameters must parse.
fn aor(value: &str) -> Option<String> {
    let addr = split_addr(value)?;
    parse_params(addr.params)?;
    Some(addr.uri.to_string())
}

/// A name-addr or addr-spec with a `tag` header parameter (RFC 3261 §20.39).
fn tagged(value: &str) -> bool {
    split_addr(value)
        .and_then(|addr| parse_params(addr.params))
        .is_some_and(|params| params.iter().any(|p| p.name.eq_ignore_ascii_case("tag")))
}

/// `option-tag *(COMMA option-tag)` (RFC 3261 §20.32, §20.37), each a token;
/// empty elements are skipped. `None` if any element is not a token.
fn option_tags(value: &str) -> Option<Vec<String>> {
    value.split(',').map(trim_wsp).filter(|t| !t.is_empty()).map(|t| is_token(t).then(|| t.to_string())).collect()
}

/// `Path = path-value *( COMMA path-value )`, path-value = name-addr *( SEMI
/// rr-param ) (RFC 3327 §4): true if at least one, and all, are well-formed.
fn path(value: &str) -> bool {
    let mut elements = split_commas(value).into_iter().map(trim_wsp).filter(|e| !e.is_empty()).peekable();
    elements.peek().is_some()
        && elements.all(|e| split_addr(e).is_some_and(|a| a.bracketed && parse_params(a.params).is_some()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cseq_values() {
        let c = |n, m: &str| Some(CSeq { number: n, method: m.into() });
        assert_eq!(cseq("1 REGISTER"), c(1, "REGISTER"));
        assert_eq!(cseq("4711 \t INVITE"), c(4711, "INVITE"));
        assert_eq!(cseq("1REGISTER"), None);
        assert_eq!(cseq("REGISTER 1"), None);
        assert_eq!(cseq("1"), None);
        assert_eq!(cseq("1 REGISTER x"), None);
        assert_eq!(cseq("4294967296 REGISTER"), None);
    }

    #[test]
    fn top_via_branches() {
        let b = |v: &str| top_via_branch(v);
        assert_eq!(b("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds;rport"), Some("z9hG4bK776asdhds".into()));
        assert_eq!(b("SIP/2.0/TCP [2001:db8::1]:5060 ; rport ; BRANCH = z9hG4bK1"), Some("z9hG4bK1".into()));
        assert_eq!(
            b("SIP/2.0/UDP a.example;branch=z9hG4bKa, SIP/2.0/UDP b.example;branch=z9hG4bKb"),
            Some("z9hG4bKa".into()),
            "the first via-parm is the top Via"
        );
        assert_eq!(b("SIP/2.0/UDP a.example;received=192.0.2.9"), None);
        assert_eq!(b("SIP/2.0/UDP a.example"), None);
        assert_eq!(b("SIP/2.0/UDP a.example;branch="), None);
        assert_eq!(b("SIP/2.0/UDP a.example;branch=x y"), None);
    }

    #[test]
    fn call_ids() {
        assert_eq!(call_id("a84b4c76e66710@pc33.atlanta.com"), Some("a84b4c76e66710@pc33.atlanta.com".into()));
        assert_eq!(call_id(""), None);
        assert_eq!(call_id("a b"), None);
    }

    #[test]
    fn aors() {
        assert_eq!(aor("Bob <sip:bob@Example.COM>;tag=1"), Some("sip:bob@Example.COM".into()));
        assert_eq!(aor("sip:bob@example.com;tag=1"), Some("sip:bob@example.com".into()));
        assert_eq!(aor("\"B, ob\" <sips:bob@example.com;user=phone>"), Some("sips:bob@example.com;user=phone".into()));
        assert_eq!(aor("<sip:bob@example.com> junk"), None);
        assert_eq!(aor("bob"), None);
    }

    #[test]
    fn to_tags() {
        assert!(tagged("Bob <sip:bob@example.com>;tag=a6c85cf"));
        assert!(tagged("sip:bob@example.com;TAG=1"));
        assert!(!tagged("Bob <sip:bob@example.com;tag=in-the-uri>"));
        assert!(!tagged("<sip:bob@example.com>"));
    }

    #[test]
    fn option_tag_lists() {
        assert_eq!(option_tags("path, outbound,gruu"), Some(vec!["path".into(), "outbound".into(), "gruu".into()]));
        assert_eq!(option_tags(""), Some(vec![]));
        assert_eq!(option_tags("outbound,"), Some(vec!["outbound".into()]));
        assert_eq!(option_tags("outbound, a b"), None);
        assert_eq!(option_tags("outbound;x"), None);
    }

    #[test]
    fn paths() {
        assert!(path("<sip:VskztcQ/S8p4WPbOnHbuyh5iJvJIW3ib@192.0.2.15;lr;ob>"));
        assert!(path("<sip:a@b;lr>, <sip:c@d;lr>;x=1"));
        assert!(!path(""));
        assert!(!path("sip:a@b;lr"));
        assert!(!path("<sip:a@b;lr>, junk"));
    }
}
