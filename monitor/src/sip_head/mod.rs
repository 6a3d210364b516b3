//! The head of a SIP message, as the kernel hands it to the agent: the first
//! 1024 bytes or fewer of every request but ACK and of every response.
//! [`parse`] reads what pairs a response with its request (Call-ID, `CSeq`,
//! the top Via's branch, RFC 3261 §17.1.3) and what the flow table needs
//! from it: who registered (To, RFC 3261 §10.2), over which contacts with
//! which RFC 5626 identity (`+sip.instance` and `reg-id`, §4.1, §4.2; the
//! `ob` URI parameter, §2.1, §5.3.2), for how long (Expires, RFC 3261
//! §10.2.1.1), at what keepalive pace (Flow-Timer, RFC 5626 §4.4, §5.4, §6,
//! §11.1) and whether outbound was offered or required (Supported/Require,
//! RFC 5626 §4.2.1, §6, §11.4).
//!
//! Reading rules (RFC 3261 §7): header names ignore case and have compact
//! forms (§7.3.3); folded lines are unfolded (§7.3.1); white space is
//! allowed around `:`, `,`, `;` and `=`; CRLFs before the start line are
//! skipped (§7.5); the head ends at the first empty line; bare LF line ends
//! are accepted. Only an unusable start line fails the parse ([`HeadError`]);
//! a header whose value does not parse is skipped and records nothing.
//!
//! A head cut short (no empty line) says [`SipHead::truncated`]; its cut-off
//! last line is dropped, and so is the header above it when the cut-off line
//! is a continuation of it, or when the cut falls right after a line end
//! (a continuation may have followed): a recorded header is never a
//! prefix of the one sent.

mod contact;
mod error;
mod headers;
mod lex;
mod lines;
mod name_addr;
mod params;
mod start_line;

#[cfg(test)]
pub(crate) mod fuzz;
#[cfg(test)]
mod tests;

pub use contact::Contact;
pub use error::HeadError;
pub use start_line::StartLine;

/// `CSeq: 1 REGISTER` (RFC 3261 §20.16).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    pub number: u32,
    /// As written; methods are case-sensitive (RFC 3261 §7.1).
    pub method: String,
}

/// What a SIP message head says, as far as flows and registrations go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipHead {
    pub start: StartLine,
    /// Call-ID (`i`), as written.
    pub call_id: Option<String>,
    /// The branch parameter of the top Via (`v`), the first value of the
    /// first Via header (RFC 3261 §8.1.1.7, §17.1.3), as written.
    pub top_via_branch: Option<String>,
    /// A Via header was read: only the first names the top Via.
    pub via_seen: bool,
    pub cseq: Option<CSeq>,
    /// The To URI (`t`), as written: no display name, angle brackets or
    /// header parameters (the URI's own parameters stay).
    pub to_aor: Option<String>,
    /// The To header has a tag: the request is inside a dialog (RFC 3261 §12.2.1.1).
    pub to_tagged: bool,
    /// Every contact of every Contact header (`m`), in order.
    pub contacts: Vec<Contact>,
    /// A `Contact: *` was seen (RFC 3261 §10.2.2, with `Expires: 0`).
    pub contact_star: bool,
    /// The Expires header, in seconds.
    pub expires: Option<u32>,
    /// Flow-Timer (RFC 5626 §4.4, §11.1), in seconds.
    pub flow_timer: Option<u32>,
    /// Option tags of every Supported header (`k`), as written.
    pub supported: Vec<String>,
    /// Option tags of every Require header, as written.
    pub require: Vec<String>,
    /// Content-Length (`l`).
    pub content_length: Option<usize>,
    /// A well-formed Path header (RFC 3327) is present.
    pub has_path: bool,
    /// The head stopped before the empty line that ends it.
    pub truncated: bool,
}

/// Parses a message head. Never panics; linear in the length of `head`.
///
/// # Errors
///
/// [`HeadError`] when there is no usable start line: the head is empty, is
/// cut inside its first line, or that line is neither a SIP/2.0 request
/// line nor a SIP/2.0 status line.
pub fn parse(head: &[u8]) -> Result<SipHead, HeadError> {
    let split = lines::split(head)?;
    let mut parsed = SipHead {
        start: start_line::parse(split.start)?,
        call_id: None,
        top_via_branch: None,
        via_seen: false,
        cseq: None,
        to_aor: None,
        to_tagged: false,
        contacts: Vec::new(),
        contact_star: false,
        expires: None,
        flow_timer: None,
        supported: Vec::new(),
        require: Vec::new(),
        content_length: None,
        has_path: false,
        truncated: split.truncated,
    };
    for header in &split.headers {
        headers::record(&mut parsed, header);
    }
    Ok(parsed)
}

impl SipHead {
    /// A REGISTER request (the method is case-sensitive, RFC 3261 §7.1).
    pub fn is_register_request(&self) -> bool {
        matches!(&self.start, StartLine::Request { method, .. } if method == "REGISTER")
    }

    /// A response whose `CSeq` method is REGISTER (RFC 3261 §17.1.3 matches
    /// a response to its request by branch and `CSeq` method).
    pub fn is_response_to_register(&self) -> bool {
        matches!(self.start, StartLine::Response { .. }) && self.cseq.as_ref().is_some_and(|c| c.method == "REGISTER")
    }

    /// The status code of a response.
    pub fn status_code(&self) -> Option<u16> {
        match self.start {
            StartLine::Response { code, .. } => Some(code),
            StartLine::Request { .. } => None,
        }
    }

    /// `Supported: outbound` (RFC 5626 §4.2.1, §11). Option tags are tokens,
    /// compared ignoring case (RFC 3261 §7.3.1).
    pub fn supports_outbound(&self) -> bool {
        has_tag(&self.supported, "outbound")
    }

    /// `Require: outbound`, as a registrar answers an outbound REGISTER
    /// (RFC 5626 §4.2.1, §6).
    pub fn requires_outbound(&self) -> bool {
        has_tag(&self.require, "outbound")
    }
}

fn has_tag(tags: &[String], tag: &str) -> bool {
    tags.iter().any(|t| t.eq_ignore_ascii_case(tag))
}
