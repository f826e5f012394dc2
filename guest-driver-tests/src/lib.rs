//! vhca-guest: the guest side. For now the verbs programs every end-to-end test shares; the
//! vhost-user guest driver that runs them on a real VF socket comes with its issue.

pub mod programs;
