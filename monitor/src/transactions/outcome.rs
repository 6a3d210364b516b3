//! What became of an INVITE, in the classes RFC 6076 §4.5 and §4.6 count
//! (Session Establishment Ratio and Session Establishment Effectiveness
//! Ratio; the ASR and NER of ITU-T E.411 that operators know).

/// The outcome of one INVITE transaction, from its first final response.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum InviteOutcome {
    /// 2xx: the session was set up.
    Answered,
    /// 3xx: left out of both ratios' denominators (RFC 6076 §4.5, §4.6).
    Redirected,
    /// 401, 402, 407: a challenge the caller answers with a new INVITE, which
    /// RFC 6076 (§4.4) counts as no failure; left out of both ratios too.
    Challenged,
    /// 486 Busy Here, 600 Busy Everywhere: a user outcome.
    UserBusy,
    /// 480 Temporarily Unavailable: a user outcome.
    NoAnswer,
    /// 603 Decline: a user outcome.
    Rejected,
    /// 487 Request Terminated: the caller gave up (a CANCEL). RFC 6076 counts
    /// it as neither success nor user outcome; it is kept apart so that an
    /// operator can see it.
    Cancelled,
    /// Every other final response: the network failed to reach the user.
    Failed,
    /// No final response within the transaction's lifetime (Timer B, or
    /// Timer C once something rang).
    TimedOut,
}

impl InviteOutcome {
    pub const ALL: [Self; 9] = [
        Self::Answered,
        Self::Redirected,
        Self::Challenged,
        Self::UserBusy,
        Self::NoAnswer,
        Self::Rejected,
        Self::Cancelled,
        Self::Failed,
        Self::TimedOut,
    ];

    /// The outcome a final response (200 to 699) gives.
    pub const fn of_final(code: u16) -> Self {
        match code {
            200..=299 => Self::Answered,
            300..=399 => Self::Redirected,
            401 | 402 | 407 => Self::Challenged,
            486 | 600 => Self::UserBusy,
            480 => Self::NoAnswer,
            603 => Self::Rejected,
            487 => Self::Cancelled,
            _ => Self::Failed,
        }
    }

    pub const fn label(self) -> &'static str {
        match self {
            Self::Answered => "answered",
            Self::Redirected => "redirected",
            Self::Challenged => "challenged",
            Self::UserBusy => "user_busy",
            Self::NoAnswer => "no_answer",
            Self::Rejected => "rejected",
            Self::Cancelled => "cancelled",
            Self::Failed => "failed",
            Self::TimedOut => "timed_out",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_user_outcomes_are_the_ones_rfc_6076_names() {
        // SEER's numerator (RFC 6076 §4.6): 200, 480, 486, 600, 603.
        let user = [480, 486, 600, 603].map(InviteOutcome::of_final);
        assert!(
            user.iter()
                .all(|o| matches!(o, InviteOutcome::UserBusy | InviteOutcome::NoAnswer | InviteOutcome::Rejected))
        );
        assert_eq!(InviteOutcome::of_final(200), InviteOutcome::Answered);
        assert_eq!(InviteOutcome::of_final(302), InviteOutcome::Redirected);
        for code in [404, 408, 481, 500, 503, 504, 604] {
            assert_eq!(InviteOutcome::of_final(code), InviteOutcome::Failed, "{code}");
        }
        assert_eq!(InviteOutcome::of_final(487), InviteOutcome::Cancelled);
        for code in [401, 402, 407] {
            assert_eq!(InviteOutcome::of_final(code), InviteOutcome::Challenged, "{code}");
        }
    }
}
