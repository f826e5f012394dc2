//! The doorbellq's buffers into port doorbells: the VF's own thread drains its doorbellq on a
//! kick, and any thread drains every VF's before it moves packets (`Shared::sweep_doorbells`).
//! Kept apart from the backend so the process's shared state can do that without it.

use crate::memory::GuestMem;
use crate::pf::PfState;
use crate::protocol::doorbell::{Doorbell, DOORBELL_SIZE};
use crate::vring::{self, other, Vring};
use std::io::{self, Read};
use vhost_user_backend::VringT;
use virtio_queue::QueueOwnedT;
use vm_memory::GuestAddressSpace;

/// Most doorbell records one buffer may carry.
pub const MAX_DOORBELLS: usize = 1024;

/// Takes every doorbell buffer the driver of VF `vf` has published and applies its records,
/// under the process lock. Any thread may call it for any VF: before packets move, every VF's
/// published doorbells are applied, so a receive a driver posted before its peer's send is on
/// the queue when the datagram arrives (as with a hardware HCA, whose doorbell record is in
/// memory it reads when a packet arrives).
/// Returns whether it took any buffer.
pub fn drain(mem: &GuestMem, vf: usize, st: &mut PfState, vring: &Vring) -> io::Result<bool> {
    if !vring::ready(vring) {
        return Ok(false);
    }
    let mem = mem.memory();
    let chains: Vec<_> = vring
        .get_mut()
        .get_queue_mut()
        .iter(mem.clone())
        .map_err(other)?
        .collect();
    if chains.is_empty() {
        return Ok(false);
    }
    let port = &mut st.ports[vf];
    for chain in chains {
        let head = chain.head_index();
        let records = if !vring::chain_is_whole(&chain) {
            None
        } else {
            match chain.reader(&mem) {
                Ok(mut r) if r.available_bytes() <= MAX_DOORBELLS * DOORBELL_SIZE => {
                    let mut b = vec![0u8; r.available_bytes()];
                    r.read_exact(&mut b)
                        .ok()
                        .and_then(|_| Doorbell::decode_all(&b).ok())
                }
                _ => None,
            }
        };
        match records {
            Some(dbs) => {
                for db in dbs {
                    port.doorbell(db);
                }
            }
            None => port.counters.bad_buffers += 1,
        }
        vring.add_used(head, 0).map_err(other)?;
    }
    vring::signal(vring)?;
    Ok(true)
}
