//! What follows a decision: outcomes, alerts and their resolutions, and API key scopes.
//!
//! The rules here decide when an attempted event joins the customer's history and when an alert
//! opens, so that an attacker's refused attempts never make its address familiar:
//!
//! | decision  | stored in the history                      | alert                   |
//! |-----------|--------------------------------------------|-------------------------|
//! | allow     | at once                                    | —                       |
//! | challenge | when the challenge is passed (or completed)| when it fails           |
//! | hold      | when staff let it complete                 | at once                 |
//! | block     | never                                      | at once                 |
//!
//! A failed challenge on a login is stored as a `login_failed` (the failed logins across many
//! accounts that credential stuffing leaves).

use crate::assess::Decision;
use crate::event::{Kind, code_enum};

code_enum!(
    /// What happened after an assessment.
    Outcome {
        ChallengePassed = 1 => "challenge_passed",
        ChallengeFailed = 2 => "challenge_failed",
        Completed = 3 => "completed",
        Abandoned = 4 => "abandoned",
    }
);

code_enum!(
    /// Why an alert opened.
    Trigger {
        Hold = 1 => "hold",
        Block = 2 => "block",
        ChallengeFailed = 3 => "challenge_failed",
        CustomerReport = 4 => "customer_report",
    }
);

code_enum!(
    /// How staff resolved an alert.
    Resolution {
        ConfirmedFraud = 1 => "confirmed_fraud",
        Legitimate = 2 => "legitimate",
    }
);

code_enum!(
    /// What an API key may do (`auth`: customers' authentication, i.e. passwords, second
    /// factors, step-up).
    Scope {
        Ingest = 1 => "ingest",
        Assess = 2 => "assess",
        Read = 3 => "read",
        Admin = 4 => "admin",
        Auth = 5 => "auth",
    }
);

code_enum!(
    /// Where an alert stands.
    AlertStatus {
        Open = 1 => "open",
        Resolved = 2 => "resolved",
    }
);

/// What an assessment does at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OnDecision {
    /// Store the attempted event in the history now.
    pub store_event: bool,
    pub alert: Option<Trigger>,
}

/// The consequences of a decision.
pub fn on_decision(d: Decision) -> OnDecision {
    match d {
        Decision::Allow => OnDecision {
            store_event: true,
            alert: None,
        },
        Decision::Challenge => OnDecision {
            store_event: false,
            alert: None,
        },
        Decision::Hold => OnDecision {
            store_event: false,
            alert: Some(Trigger::Hold),
        },
        Decision::Block => OnDecision {
            store_event: false,
            alert: Some(Trigger::Block),
        },
    }
}

/// What an outcome does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OnOutcome {
    /// Store the attempted event, as this kind (a failed login challenge is a `login_failed`).
    pub store_as: Option<Kind>,
    pub alert: Option<Trigger>,
}

/// Why an outcome cannot follow a decision.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutcomeError {
    #[error("the assessment already has the outcome {0}")]
    AlreadySet(Outcome),
    #[error("{outcome} cannot follow the decision {decision}")]
    Impossible {
        decision: Decision,
        outcome: Outcome,
    },
}

/// The consequences of `outcome` after `decision` on an attempt of `kind`, given the outcome
/// already recorded. Challenge outcomes only follow a challenge; `completed` follows anything but
/// a block; `abandoned` follows anything. `completed` after `challenge_passed` is accepted (the
/// operation went through) and stores nothing more.
pub fn on_outcome(
    decision: Decision,
    kind: Kind,
    previous: Option<Outcome>,
    outcome: Outcome,
) -> Result<OnOutcome, OutcomeError> {
    let impossible = || OutcomeError::Impossible { decision, outcome };
    let nothing = OnOutcome {
        store_as: None,
        alert: None,
    };
    match previous {
        Some(Outcome::ChallengePassed) if outcome == Outcome::Completed => return Ok(nothing),
        Some(Outcome::ChallengePassed) if outcome == Outcome::Abandoned => return Ok(nothing),
        Some(p) => return Err(OutcomeError::AlreadySet(p)),
        None => {}
    }
    Ok(match (decision, outcome) {
        (Decision::Challenge, Outcome::ChallengePassed) => OnOutcome {
            store_as: Some(kind),
            alert: None,
        },
        (Decision::Challenge, Outcome::ChallengeFailed) => OnOutcome {
            store_as: (kind == Kind::Login).then_some(Kind::LoginFailed),
            alert: Some(Trigger::ChallengeFailed),
        },
        (_, Outcome::ChallengePassed | Outcome::ChallengeFailed) => return Err(impossible()),
        (Decision::Block, Outcome::Completed) => return Err(impossible()),
        (Decision::Allow, Outcome::Completed) => nothing,
        (Decision::Challenge | Decision::Hold, Outcome::Completed) => OnOutcome {
            store_as: Some(kind),
            alert: None,
        },
        (_, Outcome::Abandoned) => nothing,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_attempts_never_join_the_history() {
        assert!(on_decision(Decision::Allow).store_event);
        for d in [Decision::Challenge, Decision::Hold, Decision::Block] {
            assert!(!on_decision(d).store_event, "{d}");
        }
        assert_eq!(on_decision(Decision::Block).alert, Some(Trigger::Block));
        assert_eq!(on_decision(Decision::Hold).alert, Some(Trigger::Hold));
        let w = Kind::Withdrawal;
        let failed = on_outcome(Decision::Challenge, w, None, Outcome::ChallengeFailed).unwrap();
        assert_eq!(
            failed,
            OnOutcome {
                store_as: None,
                alert: Some(Trigger::ChallengeFailed)
            }
        );
        let login = on_outcome(
            Decision::Challenge,
            Kind::Login,
            None,
            Outcome::ChallengeFailed,
        )
        .unwrap();
        assert_eq!(login.store_as, Some(Kind::LoginFailed));
        let passed = on_outcome(Decision::Challenge, w, None, Outcome::ChallengePassed).unwrap();
        assert_eq!(passed.store_as, Some(w));
        assert_eq!(
            on_outcome(Decision::Hold, w, None, Outcome::Completed)
                .unwrap()
                .store_as,
            Some(w)
        );
        assert!(on_outcome(Decision::Block, w, None, Outcome::Completed).is_err());
        assert!(on_outcome(Decision::Allow, w, None, Outcome::ChallengeFailed).is_err());
        // Once set, an outcome stays; completion after a passed challenge adds nothing.
        assert_eq!(
            on_outcome(
                Decision::Challenge,
                w,
                Some(Outcome::ChallengePassed),
                Outcome::Completed
            )
            .unwrap(),
            OnOutcome {
                store_as: None,
                alert: None
            }
        );
        assert_eq!(
            on_outcome(
                Decision::Challenge,
                w,
                Some(Outcome::ChallengeFailed),
                Outcome::ChallengePassed
            ),
            Err(OutcomeError::AlreadySet(Outcome::ChallengeFailed))
        );
    }

    #[test]
    fn texts_round_trip() {
        for s in Scope::ALL {
            assert_eq!(s.as_str().parse::<Scope>(), Ok(*s));
        }
        assert!(
            "confirmed"
                .parse::<Resolution>()
                .unwrap_err()
                .contains("confirmed_fraud")
        );
    }
}
