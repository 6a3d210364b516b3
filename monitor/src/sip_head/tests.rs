//! Whole heads of the shapes the agent meets: RFC 5626 outbound
//! registrations and their 2xx, compact and folded headers, redirects, 430s,
//! heads cut at 1024 bytes, and garbage.

use super::*;

pub(super) const OUTBOUND_REGISTER: &[u8] = b"REGISTER sip:example.com SIP/2.0\r\n\
Via: SIP/2.0/TCP 192.0.2.2;branch=z9hG4bKnashds7\r\n\
Max-Forwards: 70\r\n\
From: Bob <sip:bob@example.com>;tag=7F94778B653B\r\n\
To: Bob <sip:bob@example.com>\r\n\
Call-ID: 16CB75F21C70\r\n\
CSeq: 1 REGISTER\r\n\
Supported: path, outbound\r\n\
Contact: <sip:bob@192.0.2.2;transport=tcp;ob>;reg-id=1\r\n\
\x20;+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>\"\r\n\
Content-Length: 0\r\n\
\r\n";

pub(super) const OUTBOUND_200: &[u8] = b"SIP/2.0 200 OK\r\n\
Via: SIP/2.0/TCP 192.0.2.2;branch=z9hG4bKnashds7;received=192.0.2.2\r\n\
From: Bob <sip:bob@example.com>;tag=7F94778B653B\r\n\
To: Bob <sip:bob@example.com>;tag=6AF99445E44A\r\n\
Call-ID: 16CB75F21C70\r\n\
CSeq: 1 REGISTER\r\n\
Supported: outbound\r\n\
Require: outbound\r\n\
Flow-Timer: 120\r\n\
Path: <sip:VskztcQ/S8p4WPbOnHbuyh5iJvJIW3ib@192.0.2.15;lr;ob>\r\n\
Contact: <sip:bob@192.0.2.2;transport=tcp;ob>;reg-id=1;expires=3600;+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>\"\r\n\
Contact: <sip:bob@198.51.100.7;transport=tcp;ob>;reg-id=2;expires=1800;+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>\", <sip:bob@203.0.113.9:5060>;expires=120\r\n\
Content-Length: 0\r\n\
\r\n";

pub(super) const COMPACT_REGISTER: &[u8] = b"REGISTER sip:example.com SIP/2.0\r\n\
v: SIP/2.0/UDP 192.0.2.4:5060;branch=z9hG4bK776asdhds\r\n\
f: <sip:carol@example.com>;tag=1928301774\r\n\
t: <sip:carol@example.com>\r\n\
i: a84b4c76e66710@192.0.2.4\r\n\
CSeq: 7 REGISTER\r\n\
k: outbound\r\n\
m: <sip:carol@192.0.2.4:5060;ob>;+sip.instance=\"<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>\";reg-id=2\r\n\
l: 0\r\n\
\r\n";

pub(super) const MIXED_CASE_FOLDED: &[u8] = b"REGISTER sip:example.com SIP/2.0\r\n\
CALL-ID: xyz\r\n\
cseq: 2 REGISTER\r\n\
TO: \"Dave\" <sip:dave@example.com>\r\n\
CONTACT: <sip:dave@192.0.2.5>;expires=60,\r\n\
\t<sip:dave@192.0.2.6>\r\n  ;expires=30\r\n\
contact: <sip:dave@192.0.2.7>\r\n\
EXPIRES:\r\n 300\r\n\
SUPPORTED: path\r\n\
supported: Outbound\r\n\
\r\n";

pub(super) const DISPLAY_NAMES: &[u8] = b"REGISTER sip:example.com SIP/2.0\r\n\
To: \"Smith, John; Jr.\" <sip:john@example.com>\r\n\
Contact: \"Smith, John; Jr.\" <sip:john@192.0.2.8>;expires=100, Mr Watson <sip:watson@192.0.2.9;transport=udp> ; q=0.7 , \"A \\\"quoted\\\" <name>, x\" <sip:a@192.0.2.10>\r\n\
CSeq: 3 REGISTER\r\n\
\r\n";

pub(super) const STAR: &[u8] = b"REGISTER sip:example.com SIP/2.0\r\n\
To: <sip:bob@example.com>\r\n\
Call-ID: star-1\r\n\
CSeq: 9 REGISTER\r\n\
Contact: *\r\n\
Expires: 0\r\n\
Content-Length: 0\r\n\
\r\n";

pub(super) const FLOW_FAILED: &[u8] = b"SIP/2.0 430 Flow Failed\r\n\
Via: SIP/2.0/TCP 192.0.2.20;branch=z9hG4bK87asdks7\r\n\
From: Alice <sip:alice@example.com>;tag=1\r\n\
To: Bob <sip:bob@example.com>;tag=2\r\n\
Call-ID: inv-1@192.0.2.20\r\n\
CSeq: 314159 INVITE\r\n\
Content-Length: 0\r\n\
\r\n";

pub(super) const MULTIPLE_CHOICES: &[u8] = b"SIP/2.0 300 Multiple Choices\r\n\
Via: SIP/2.0/UDP 192.0.2.21;branch=z9hG4bKredir\r\n\
To: <sip:bob@example.com>;tag=3\r\n\
Call-ID: redirect-1\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:bob@192.0.2.30>;q=0.9, <sip:bob@192.0.2.31>;q=0.5\r\n\
Contact: sip:bob@192.0.2.32;q=0.1\r\n\
Content-Length: 0\r\n\
\r\n";

/// RFC 5626 §3.2, as printed: note the empty parameter that `reg-id=1;` and
/// the folded `;+sip.instance` make.
pub(super) const RFC5626_AS_PRINTED: &[u8] = b"REGISTER sip:example.com SIP/2.0\r\n\
Via: SIP/2.0/TCP 192.0.2.2;branch=z9hG4bK-bad0ce-11-1036\r\n\
Max-Forwards: 70\r\n\
From: Bob <sip:bob@example.com>;tag=d879h76\r\n\
To: Bob <sip:bob@example.com>\r\n\
Call-ID: 8921348ju72je840.204\r\n\
CSeq: 1 REGISTER\r\n\
Supported: path, outbound\r\n\
Contact: <sip:line1@192.0.2.2;transport=tcp>; reg-id=1;\r\n\
\x20;+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>\"\r\n\
Content-Length: 0\r\n\
\r\n";

/// Every sample, for the robustness test to mutate.
pub(super) const SAMPLES: &[&[u8]] = &[
    OUTBOUND_REGISTER,
    OUTBOUND_200,
    COMPACT_REGISTER,
    MIXED_CASE_FOLDED,
    DISPLAY_NAMES,
    STAR,
    FLOW_FAILED,
    MULTIPLE_CHOICES,
    RFC5626_AS_PRINTED,
];

const INSTANCE: &str = "<urn:uuid:00000000-0000-1000-8000-000A95A0E128>";

fn contact(uri: &str) -> Contact {
    Contact { uri: uri.into(), reg_id: None, instance: None, expires: None, ob: false }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn rfc5626_outbound_register() {
    let head = parse(OUTBOUND_REGISTER).unwrap();
    assert_eq!(
        head,
        SipHead {
            start: StartLine::Request { method: "REGISTER".into(), uri: "sip:example.com".into() },
            call_id: Some("16CB75F21C70".into()),
            top_via_branch: Some("z9hG4bKnashds7".into()),
            via_seen: true,
            cseq: Some(CSeq { number: 1, method: "REGISTER".into() }),
            to_aor: Some("sip:bob@example.com".into()),
            to_tagged: false,
            contacts: vec![Contact {
                uri: "sip:bob@192.0.2.2;transport=tcp;ob".into(),
                reg_id: Some(1),
                instance: Some(INSTANCE.into()),
                expires: None,
                ob: true,
            }],
            contact_star: false,
            expires: None,
            flow_timer: None,
            supported: strings(&["path", "outbound"]),
            require: vec![],
            content_length: Some(0),
            has_path: false,
            truncated: false,
        }
    );
    assert!(head.is_register_request());
    assert!(!head.is_response_to_register());
    assert!(head.supports_outbound());
    assert!(!head.requires_outbound());
    assert_eq!(head.status_code(), None);
}

#[test]
fn rfc5626_example_as_printed_with_its_empty_parameter() {
    let head = parse(RFC5626_AS_PRINTED).unwrap();
    assert_eq!(
        head.contacts,
        vec![Contact {
            reg_id: Some(1),
            instance: Some(INSTANCE.into()),
            ..contact("sip:line1@192.0.2.2;transport=tcp")
        }]
    );
    assert_eq!(head.call_id.as_deref(), Some("8921348ju72je840.204"));
    assert!(head.is_register_request() && head.supports_outbound());
}

#[test]
fn rfc5626_outbound_200_with_flow_timer_and_several_contacts() {
    let head = parse(OUTBOUND_200).unwrap();
    assert_eq!(head.start, StartLine::Response { code: 200, reason: "OK".into() });
    assert!(head.is_response_to_register());
    assert!(!head.is_register_request());
    assert!(head.requires_outbound());
    assert!(head.supports_outbound());
    assert_eq!(head.status_code(), Some(200));
    assert_eq!(head.flow_timer, Some(120));
    assert!(head.has_path);
    assert_eq!(head.to_aor.as_deref(), Some("sip:bob@example.com"));
    assert_eq!(
        head.contacts,
        vec![
            Contact {
                uri: "sip:bob@192.0.2.2;transport=tcp;ob".into(),
                reg_id: Some(1),
                instance: Some(INSTANCE.into()),
                expires: Some(3600),
                ob: true,
            },
            Contact {
                uri: "sip:bob@198.51.100.7;transport=tcp;ob".into(),
                reg_id: Some(2),
                instance: Some(INSTANCE.into()),
                expires: Some(1800),
                ob: true,
            },
            Contact { expires: Some(120), ..contact("sip:bob@203.0.113.9:5060") },
        ]
    );
    assert!(!head.truncated);
}

#[test]
fn compact_forms() {
    let head = parse(COMPACT_REGISTER).unwrap();
    assert_eq!(head.call_id.as_deref(), Some("a84b4c76e66710@192.0.2.4"));
    assert_eq!(head.to_aor.as_deref(), Some("sip:carol@example.com"));
    assert_eq!(head.supported, strings(&["outbound"]));
    assert_eq!(head.content_length, Some(0));
    assert_eq!(
        head.contacts,
        vec![Contact {
            uri: "sip:carol@192.0.2.4:5060;ob".into(),
            reg_id: Some(2),
            instance: Some("<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>".into()),
            expires: None,
            ob: true,
        }]
    );
}

#[test]
fn mixed_case_names_folding_and_repeated_headers() {
    let head = parse(MIXED_CASE_FOLDED).unwrap();
    assert_eq!(head.call_id.as_deref(), Some("xyz"));
    assert_eq!(head.cseq.as_ref().map(|c| c.number), Some(2));
    assert_eq!(head.to_aor.as_deref(), Some("sip:dave@example.com"));
    assert_eq!(head.expires, Some(300));
    assert_eq!(
        head.contacts,
        vec![
            Contact { expires: Some(60), ..contact("sip:dave@192.0.2.5") },
            Contact { expires: Some(30), ..contact("sip:dave@192.0.2.6") },
            contact("sip:dave@192.0.2.7"),
        ]
    );
    assert_eq!(head.supported, strings(&["path", "Outbound"]));
    assert!(head.supports_outbound());
}

#[test]
fn quoted_display_names_hold_commas_semicolons_and_brackets() {
    let head = parse(DISPLAY_NAMES).unwrap();
    assert_eq!(head.to_aor.as_deref(), Some("sip:john@example.com"));
    assert_eq!(
        head.contacts,
        vec![
            Contact { expires: Some(100), ..contact("sip:john@192.0.2.8") },
            contact("sip:watson@192.0.2.9;transport=udp"),
            contact("sip:a@192.0.2.10"),
        ]
    );
}

#[test]
fn contact_star_with_expires_zero() {
    let head = parse(STAR).unwrap();
    assert!(head.contact_star);
    assert!(head.contacts.is_empty());
    assert_eq!(head.expires, Some(0));
    assert!(head.is_register_request());
}

#[test]
fn flow_failed_430() {
    let head = parse(FLOW_FAILED).unwrap();
    assert_eq!(head.start, StartLine::Response { code: 430, reason: "Flow Failed".into() });
    assert_eq!(head.cseq, Some(CSeq { number: 314159, method: "INVITE".into() }));
    assert!(!head.is_response_to_register());
    assert!(head.contacts.is_empty());
}

#[test]
fn multiple_choices_300_with_three_contacts() {
    let head = parse(MULTIPLE_CHOICES).unwrap();
    assert_eq!(head.status_code(), Some(300));
    let uris: Vec<&str> = head.contacts.iter().map(|c| c.uri.as_str()).collect();
    assert_eq!(uris, ["sip:bob@192.0.2.30", "sip:bob@192.0.2.31", "sip:bob@192.0.2.32"]);
}

#[test]
fn head_cut_in_the_middle_of_a_header() {
    let cut = OUTBOUND_200.windows(8).position(|w| w == b"reg-id=2").unwrap();
    let head = parse(&OUTBOUND_200[..cut]).unwrap();
    assert!(head.truncated);
    assert_eq!(head.contacts.len(), 1);
    assert_eq!(head.contacts[0].reg_id, Some(1));
    assert_eq!(head.content_length, None);
    assert_eq!(head.flow_timer, Some(120));
}

#[test]
fn head_cut_inside_a_folded_contact_drops_that_contact() {
    let cut = OUTBOUND_REGISTER.windows(13).position(|w| w == b"+sip.instance").unwrap();
    let head = parse(&OUTBOUND_REGISTER[..cut]).unwrap();
    assert!(head.truncated);
    assert!(head.contacts.is_empty());
    assert!(head.supports_outbound());
}

#[test]
fn long_register_cut_at_1024_bytes() {
    let mut message = b"REGISTER sip:example.com SIP/2.0\r\nCSeq: 5 REGISTER\r\n".to_vec();
    for i in 0..40 {
        message.extend_from_slice(format!("Contact: <sip:u@192.0.2.{i};ob>;reg-id={i};expires=60\r\n").as_bytes());
    }
    message.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    let head = parse(&message[..1024]).unwrap();
    assert!(head.truncated);
    assert!(!head.contacts.is_empty() && head.contacts.len() < 40);
    for (i, c) in head.contacts.iter().enumerate() {
        assert_eq!(c.uri, format!("sip:u@192.0.2.{i};ob"));
        assert_eq!(c.reg_id, Some(i as u32));
        assert_eq!(c.expires, Some(60));
    }
    assert_eq!(parse(&message).unwrap().contacts.len(), 40);
}

#[test]
fn bare_lf_line_ends_read_the_same() {
    for sample in SAMPLES {
        let lf: Vec<u8> = String::from_utf8_lossy(sample).replace("\r\n", "\n").into_bytes();
        assert_eq!(parse(&lf), parse(sample));
    }
}

#[test]
fn the_body_is_not_read() {
    let head = parse(b"SIP/2.0 200 OK\r\nCSeq: 1 REGISTER\r\n\r\nContact: <sip:x@y>\r\n").unwrap();
    assert!(head.contacts.is_empty());
    assert!(!head.truncated);
}

#[test]
fn white_space_around_separators() {
    let head = parse(
        b"SIP/2.0 200 OK\r\nContact \t:  <sip:a@b;ob> ; reg-id = 7 ;\t+sip.instance = \"<urn:x>\" , <sip:c@d>\r\nFlow-Timer :\t 30 \r\nRequire :  outbound ,  gruu \r\n\r\n",
    )
    .unwrap();
    assert_eq!(
        head.contacts,
        vec![
            Contact { reg_id: Some(7), instance: Some("<urn:x>".into()), ob: true, ..contact("sip:a@b;ob") },
            contact("sip:c@d"),
        ]
    );
    assert_eq!(head.flow_timer, Some(30));
    assert_eq!(head.require, strings(&["outbound", "gruu"]));
}

#[test]
fn malformed_values_record_nothing_and_the_first_good_one_wins() {
    let head = parse(
        b"SIP/2.0 200 OK\r\n\
Call-ID: has space\r\n\
Call-ID: good@x\r\n\
CSeq: one REGISTER\r\n\
To: bob\r\n\
Expires: soon\r\n\
Expires: 60\r\n\
Expires: 30\r\n\
Flow-Timer: -1\r\n\
Content-Length: 4294967296000000000000\r\n\
Content-Length: 12\r\n\
Contact: <sip:a@b>, <sip:unclosed\r\n\
Contact: <sip:c@d>;reg-id=x\r\n\
Contact: *, <sip:e@f>\r\n\
Supported: outbound, not a tag\r\n\
Require: ;\r\n\
Path: junk\r\n\
\r\n",
    )
    .unwrap();
    assert_eq!(head.call_id.as_deref(), Some("good@x"));
    assert_eq!(head.cseq, None);
    assert_eq!(head.to_aor, None);
    assert_eq!(head.expires, Some(60));
    assert_eq!(head.flow_timer, None);
    assert_eq!(head.content_length, Some(12));
    assert_eq!(head.contacts, vec![contact("sip:c@d")]);
    assert!(!head.contact_star);
    assert!(head.supported.is_empty() && head.require.is_empty());
    assert!(!head.has_path);
}

#[test]
fn ob_counts_only_inside_the_angle_brackets() {
    let head = parse(b"REGISTER sip:x SIP/2.0\r\nm: sip:a@b;ob, <sip:c@d>;ob, <sip:e;ob@f>\r\n\r\n").unwrap();
    assert!(head.contacts.iter().all(|c| !c.ob));
    assert_eq!(head.contacts.len(), 3);
}

#[test]
fn garbage_start_lines() {
    use HeadError::*;
    assert_eq!(parse(b""), Err(Empty));
    assert_eq!(parse(b"\r\n\r\n"), Err(Empty));
    assert_eq!(parse(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"), Err(TruncatedStartLine));
    assert_eq!(parse(b"\x16\x03\x01\x02\x00\n\x01\x00"), Err(MalformedStartLine));
    assert_eq!(parse(b"HELLO\r\n\r\n"), Err(MalformedStartLine));
    assert_eq!(parse(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"), Err(BadRequestUri));
    assert_eq!(parse(b"HTTP/1.1 200 OK\r\n\r\n"), Err(BadMethod));
    assert_eq!(parse(b"SIP/2.0 2OO OK\r\n\r\n"), Err(BadStatusCode));
    assert_eq!(parse(b"SIP/2.1 200 OK\r\n\r\n"), Err(BadVersion));
    assert_eq!(parse(b"REGISTER sip:x SIP/2.0"), Err(TruncatedStartLine));
    // Leading line ends (RFC 3261 §7.5) are fine.
    assert!(parse(b"\r\n\r\nREGISTER sip:x SIP/2.0\r\n\r\n").is_ok());
}
