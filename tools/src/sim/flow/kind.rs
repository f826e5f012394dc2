//! The RC workload's operation kinds: what a side may post, in the order they are drawn.
//! Separate from `rc.rs` because the order is part of the frozen v1 samples' workload.

use vhca_device::WcOpcode;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Send,
    SendImm,
    SendInv,
    Write,
    WriteImm,
    Read,
    CmpSwap,
    FetchAdd,
    LocalInv,
    AtomicWrite,
    Flush,
    /// A fast-register MR of this side: REG_MR with a new key byte when it is invalid,
    /// LOCAL_INV when it is valid (the model in `End::fast_reg` says which).
    FastReg,
    /// A type 2 window of this side: BIND_MW with a new key byte when it is free, LOCAL_INV
    /// when it is bound (`End::window`).
    Window,
}

impl Kind {
    pub(super) fn name(self) -> &'static str {
        match self {
            Kind::Send => "SEND",
            Kind::SendImm => "SEND_WITH_IMM",
            Kind::SendInv => "SEND_WITH_INV",
            Kind::Write => "RDMA_WRITE",
            Kind::WriteImm => "RDMA_WRITE_WITH_IMM",
            Kind::Read => "RDMA_READ",
            Kind::CmpSwap => "ATOMIC_CMP_AND_SWP",
            Kind::FetchAdd => "ATOMIC_FETCH_AND_ADD",
            Kind::LocalInv => "LOCAL_INV",
            Kind::AtomicWrite => "ATOMIC_WRITE",
            Kind::Flush => "FLUSH",
            Kind::FastReg => "REG_MR/LOCAL_INV (fast-register MR)",
            Kind::Window => "BIND_MW/LOCAL_INV (type 2 window)",
        }
    }
}

/// Every kind: the classic ones first, then IBTA 1.5's (`RcPlan::all_ops`), then this side's
/// own keys (`RcPlan::local_keys`).
pub(super) const KINDS: [Kind; 13] = [
    Kind::Send,
    Kind::SendImm,
    Kind::SendInv,
    Kind::Write,
    Kind::WriteImm,
    Kind::Read,
    Kind::CmpSwap,
    Kind::FetchAdd,
    Kind::LocalInv,
    Kind::AtomicWrite,
    Kind::Flush,
    Kind::FastReg,
    Kind::Window,
];

pub(super) fn expected_wc_opcode(k: Kind) -> WcOpcode {
    match k {
        Kind::Send | Kind::SendImm | Kind::SendInv => WcOpcode::Send,
        Kind::Write | Kind::WriteImm => WcOpcode::RdmaWrite,
        Kind::Read => WcOpcode::RdmaRead,
        Kind::CmpSwap => WcOpcode::CmpSwap,
        Kind::FetchAdd => WcOpcode::FetchAdd,
        Kind::LocalInv => WcOpcode::LocalInv,
        Kind::AtomicWrite => WcOpcode::AtomicWrite,
        Kind::Flush => WcOpcode::Flush,
        // Either, by the model's state at post time (`Posted::local`).
        Kind::FastReg => WcOpcode::RegMr,
        Kind::Window => WcOpcode::BindMw,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The opcodes of the v1 checkpoint samples' day (see `RcPlan::all_ops`): the first nine of
    /// [`KINDS`], in the same order, so a plan without the newer ones draws exactly as it did.
    const CLASSIC_KINDS: [Kind; 9] = [
        Kind::Send,
        Kind::SendImm,
        Kind::SendInv,
        Kind::Write,
        Kind::WriteImm,
        Kind::Read,
        Kind::CmpSwap,
        Kind::FetchAdd,
        Kind::LocalInv,
    ];

    #[test]
    fn the_classic_kinds_are_the_first_of_all_kinds() {
        // A plan without the newer opcodes must draw exactly as before they existed.
        assert_eq!(&KINDS[..CLASSIC_KINDS.len()], &CLASSIC_KINDS[..]);
    }
}
