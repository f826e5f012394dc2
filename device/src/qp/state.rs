//! The IBTA QP state machine: which transitions exist and which attributes each requires or
//! allows (IBTA 11.2.4.2 / the kernel's `ib_modify_qp_is_ok` table), for RC, UC and UD.

use crate::error::{VerbsError, VerbsResult};
use crate::verbs::{QpAttrMask as M, QpState as S, QpType};

/// Required and optional attributes of one transition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    pub required: M,
    pub optional: M,
}

fn t(required: M, optional: M) -> Option<Transition> {
    Some(Transition { required, optional })
}

/// The transition `cur → next` for `ty`, or `None` when IBTA does not define it.
pub fn transition(ty: QpType, cur: S, next: S) -> Option<Transition> {
    let rc = ty == QpType::Rc;
    let uc = ty == QpType::Uc;
    let none = M::empty();
    match (cur, next) {
        (_, S::Reset) | (_, S::Err) => t(none, none),
        // UC: connected like RC, without anything that belongs to acknowledgements, retries
        // or READ/atomic resources (the kernel's table, IB_QPT_UC columns).
        (S::Reset, S::Init) | (S::Init, S::Init) if uc => {
            let a = M::PKEY_INDEX | M::PORT | M::ACCESS_FLAGS;
            if cur == S::Reset {
                t(a, none)
            } else {
                t(none, a)
            }
        }
        (S::Init, S::Rtr) if uc => t(
            M::AV | M::PATH_MTU | M::DEST_QPN | M::RQ_PSN,
            M::ALT_PATH | M::ACCESS_FLAGS | M::PKEY_INDEX,
        ),
        (S::Rtr, S::Rts) if uc => t(
            M::SQ_PSN,
            M::CUR_STATE | M::ALT_PATH | M::ACCESS_FLAGS | M::PATH_MIG_STATE,
        ),
        (S::Rts, S::Rts) | (S::Sqd, S::Rts) if uc => t(
            none,
            M::CUR_STATE | M::ACCESS_FLAGS | M::ALT_PATH | M::PATH_MIG_STATE,
        ),
        (S::Sqd, S::Sqd) if uc => t(
            none,
            M::PKEY_INDEX | M::AV | M::ALT_PATH | M::ACCESS_FLAGS | M::PATH_MIG_STATE,
        ),
        (S::Sqe, S::Rts) if uc => t(none, M::CUR_STATE | M::ACCESS_FLAGS),
        // The GSI QP has one port and needs none named (the kernel's IB_QPT_GSI column).
        (S::Reset, S::Init) if ty == QpType::Gsi => t(M::PKEY_INDEX | M::QKEY, M::PORT),
        (S::Reset, S::Init) => {
            if rc {
                t(M::PKEY_INDEX | M::PORT | M::ACCESS_FLAGS, none)
            } else {
                t(M::PKEY_INDEX | M::PORT | M::QKEY, none)
            }
        }
        (S::Init, S::Init) => {
            if rc {
                t(none, M::PKEY_INDEX | M::PORT | M::ACCESS_FLAGS)
            } else {
                t(none, M::PKEY_INDEX | M::PORT | M::QKEY)
            }
        }
        (S::Init, S::Rtr) => {
            if rc {
                t(
                    M::AV
                        | M::PATH_MTU
                        | M::DEST_QPN
                        | M::RQ_PSN
                        | M::MAX_DEST_RD_ATOMIC
                        | M::MIN_RNR_TIMER,
                    M::ALT_PATH | M::ACCESS_FLAGS | M::PKEY_INDEX,
                )
            } else {
                t(none, M::PKEY_INDEX | M::QKEY)
            }
        }
        (S::Rtr, S::Rts) => {
            if rc {
                t(
                    M::SQ_PSN | M::TIMEOUT | M::RETRY_CNT | M::RNR_RETRY | M::MAX_QP_RD_ATOMIC,
                    M::CUR_STATE
                        | M::ALT_PATH
                        | M::ACCESS_FLAGS
                        | M::MIN_RNR_TIMER
                        | M::PATH_MIG_STATE,
                )
            } else {
                t(M::SQ_PSN, M::CUR_STATE | M::QKEY)
            }
        }
        (S::Rts, S::Rts) | (S::Sqd, S::Rts) => {
            if rc {
                t(
                    none,
                    M::CUR_STATE
                        | M::ACCESS_FLAGS
                        | M::ALT_PATH
                        | M::PATH_MIG_STATE
                        | M::MIN_RNR_TIMER,
                )
            } else {
                t(none, M::CUR_STATE | M::QKEY)
            }
        }
        (S::Rts, S::Sqd) => t(none, M::EN_SQD_ASYNC_NOTIFY),
        (S::Sqd, S::Sqd) => {
            if rc {
                t(
                    none,
                    M::PKEY_INDEX
                        | M::PORT
                        | M::AV
                        | M::ALT_PATH
                        | M::ACCESS_FLAGS
                        | M::MIN_RNR_TIMER
                        | M::MAX_QP_RD_ATOMIC
                        | M::MAX_DEST_RD_ATOMIC
                        | M::PATH_MIG_STATE
                        | M::TIMEOUT
                        | M::RETRY_CNT
                        | M::RNR_RETRY,
                )
            } else {
                t(none, M::PKEY_INDEX | M::QKEY)
            }
        }
        (S::Sqe, S::Rts) if !rc => t(none, M::CUR_STATE | M::QKEY),
        _ => None,
    }
}

/// Validates a modify request's mask for the transition it asks for and returns the target
/// state. `requested` is `attr.qp_state` when the mask has `STATE`.
pub fn check_modify(ty: QpType, cur: S, requested: Option<S>, mask: M) -> VerbsResult<S> {
    let next = requested.unwrap_or(cur);
    let tr =
        transition(ty, cur, next).ok_or(VerbsError::BadState("no such QP state transition"))?;
    let given = mask - M::STATE;
    if !given.contains(tr.required) {
        return Err(VerbsError::Invalid(
            "a required QP attribute is missing from the mask",
        ));
    }
    if !(tr.required | tr.optional).contains(given) {
        return Err(VerbsError::Invalid(
            "the mask names an attribute this transition does not take",
        ));
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [S; 7] = [S::Reset, S::Init, S::Rtr, S::Rts, S::Sqd, S::Sqe, S::Err];

    fn rc_rtr() -> M {
        M::AV | M::PATH_MTU | M::DEST_QPN | M::RQ_PSN | M::MAX_DEST_RD_ATOMIC | M::MIN_RNR_TIMER
    }

    #[test]
    fn rc_happy_path_is_accepted() {
        let ty = QpType::Rc;
        assert_eq!(
            check_modify(
                ty,
                S::Reset,
                Some(S::Init),
                M::STATE | M::PKEY_INDEX | M::PORT | M::ACCESS_FLAGS
            ),
            Ok(S::Init)
        );
        assert_eq!(
            check_modify(ty, S::Init, Some(S::Rtr), M::STATE | rc_rtr()),
            Ok(S::Rtr)
        );
        let rts =
            M::STATE | M::SQ_PSN | M::TIMEOUT | M::RETRY_CNT | M::RNR_RETRY | M::MAX_QP_RD_ATOMIC;
        assert_eq!(check_modify(ty, S::Rtr, Some(S::Rts), rts), Ok(S::Rts));
        assert_eq!(check_modify(ty, S::Rts, Some(S::Sqd), M::STATE), Ok(S::Sqd));
        assert_eq!(check_modify(ty, S::Sqd, Some(S::Rts), M::STATE), Ok(S::Rts));
    }

    #[test]
    fn missing_required_or_extra_attributes_are_refused() {
        let ty = QpType::Rc;
        assert!(check_modify(
            ty,
            S::Reset,
            Some(S::Init),
            M::STATE | M::PKEY_INDEX | M::PORT
        )
        .is_err());
        assert!(
            check_modify(ty, S::Init, Some(S::Rtr), M::STATE | (rc_rtr() - M::RQ_PSN)).is_err()
        );
        assert!(check_modify(ty, S::Init, Some(S::Rtr), M::STATE | rc_rtr() | M::SQ_PSN).is_err());
        assert!(check_modify(
            ty,
            S::Reset,
            Some(S::Init),
            M::STATE | M::PKEY_INDEX | M::PORT | M::ACCESS_FLAGS | M::QKEY
        )
        .is_err());
        // UD wants a Q_Key, not access flags.
        assert!(check_modify(
            QpType::Ud,
            S::Reset,
            Some(S::Init),
            M::STATE | M::PKEY_INDEX | M::PORT | M::QKEY
        )
        .is_ok());
        assert!(check_modify(
            QpType::Ud,
            S::Reset,
            Some(S::Init),
            M::STATE | M::PKEY_INDEX | M::PORT | M::ACCESS_FLAGS
        )
        .is_err());
    }

    #[test]
    fn undefined_transitions_are_refused() {
        for ty in [QpType::Rc, QpType::Ud, QpType::Uc] {
            for cur in ALL {
                for next in ALL {
                    let ok = transition(ty, cur, next).is_some();
                    let expected = matches!(
                        (cur, next),
                        (_, S::Reset)
                            | (_, S::Err)
                            | (S::Reset, S::Init)
                            | (S::Init, S::Init)
                            | (S::Init, S::Rtr)
                            | (S::Rtr, S::Rts)
                            | (S::Rts, S::Rts)
                            | (S::Rts, S::Sqd)
                            | (S::Sqd, S::Rts)
                            | (S::Sqd, S::Sqd)
                    ) || (ty != QpType::Rc && cur == S::Sqe && next == S::Rts);
                    assert_eq!(ok, expected, "{ty:?} {cur:?} -> {next:?}");
                }
            }
        }
        assert!(check_modify(QpType::Rc, S::Reset, Some(S::Rts), M::STATE).is_err());
        assert!(check_modify(QpType::Rc, S::Sqe, Some(S::Rts), M::STATE).is_err());
    }

    #[test]
    fn uc_takes_the_connected_attributes_without_the_reliable_ones() {
        let ty = QpType::Uc;
        let init = M::STATE | M::PKEY_INDEX | M::PORT | M::ACCESS_FLAGS;
        assert_eq!(check_modify(ty, S::Reset, Some(S::Init), init), Ok(S::Init));
        let rtr = M::STATE | M::AV | M::PATH_MTU | M::DEST_QPN | M::RQ_PSN;
        assert_eq!(check_modify(ty, S::Init, Some(S::Rtr), rtr), Ok(S::Rtr));
        assert!(check_modify(ty, S::Init, Some(S::Rtr), rtr - M::DEST_QPN).is_err());
        assert!(check_modify(ty, S::Init, Some(S::Rtr), rtr | M::MIN_RNR_TIMER).is_err());
        assert!(check_modify(ty, S::Init, Some(S::Rtr), rtr | M::MAX_DEST_RD_ATOMIC).is_err());
        assert_eq!(
            check_modify(ty, S::Rtr, Some(S::Rts), M::STATE | M::SQ_PSN),
            Ok(S::Rts)
        );
        for extra in [M::TIMEOUT, M::RETRY_CNT, M::RNR_RETRY, M::MAX_QP_RD_ATOMIC] {
            assert!(
                check_modify(ty, S::Rtr, Some(S::Rts), M::STATE | M::SQ_PSN | extra).is_err(),
                "{extra:?}"
            );
        }
        assert!(check_modify(ty, S::Rts, None, M::MIN_RNR_TIMER).is_err());
        assert_eq!(check_modify(ty, S::Rts, None, M::ACCESS_FLAGS), Ok(S::Rts));
    }

    #[test]
    fn no_state_bit_means_same_state_modify() {
        assert_eq!(
            check_modify(QpType::Rc, S::Rts, None, M::MIN_RNR_TIMER),
            Ok(S::Rts)
        );
        assert!(
            check_modify(QpType::Rc, S::Rtr, None, M::empty()).is_err(),
            "RTR->RTR is not a transition"
        );
    }
}
