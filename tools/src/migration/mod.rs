//! The live migrations the tools drive over vhost-user, named by what migrates where:
//!
//! * [`serve_pair`]: `vhca migrate`: starts a source and a destination `vhca serve` and moves
//!   both VFs of a connected RC pair, as QEMU drives a VM's migration.
//! * [`attached`]: `vhca migrate-attached`: moves one VF between `vhca serve` processes that
//!   already run (other namespaces or hosts), its RC peer a VF of a third.
//! * [`vf_mid_run`]: `vhca pingpong/perf --vf --migrate-to`: moves the VF under a running
//!   interop program, as the program's hook.
//! * [`hook_command`]: the shell command run between the source's save and the
//!   destination's load (`--hook`, `--migrate-hook`).

pub mod attached;
pub mod hook_command;
pub mod serve_pair;
pub mod vf_mid_run;
