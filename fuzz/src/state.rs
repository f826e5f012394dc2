//! Saved device state a destination loads: VF checkpoints (device/src/checkpoint.rs, binary
//! postcard and JSON) and vhost-user device-state blobs (vhost/src/migration.rs).
//!
//! The first byte picks how the rest is used: as a whole blob, or as a payload the harness
//! wraps in a header with the right length and checksum, so the fuzzer spends itself on the
//! deserializer and `validate`/`restore` behind the checksum instead of on the checksum.
//!
//! Properties: no blob panics decoding, validation, restoring, or running the restored VF
//! (its timers, its transmit queue); a state that loads saves to a blob that loads again,
//! and saving that one gives the same bytes.

use vhca_device::checkpoint::{self, Codec};
use vhca_device::{Nanos, VecMemory, VfIdentity, VfLimits};
use vhca_vhost::device_state;
use vhca_vhost::port::VfPort;

/// Guest memory of a restored VF (small: nothing in a blob may size an allocation).
const MEM: usize = 64 * 1024;
const NOW: Nanos = Nanos(5_000_000_000);
/// Packets taken from a restored VF at most.
const MAX_TX: usize = 256;

/// A checkpoint header around `payload` (what `checkpoint::encode` writes).
pub fn checkpoint_blob(payload: &[u8], codec: Codec) -> Vec<u8> {
    let mut out = checkpoint::MAGIC.to_vec();
    out.extend_from_slice(&checkpoint::CURRENT_VERSION.to_le_bytes());
    out.push(match codec {
        Codec::Binary => 0,
        Codec::Json => 1,
    });
    out.push(0);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// The FNV-1a-64 of migration.rs's wrapper.
fn fnv(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325, |h, &x| {
        (h ^ u64::from(x)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A device-state header around `payload` (what `device_state::encode` writes).
pub fn device_state_blob(payload: &[u8]) -> Vec<u8> {
    let mut out = device_state::MAGIC.to_vec();
    out.extend_from_slice(&device_state::VERSION.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&fnv(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

pub fn check_checkpoint(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let blob = match mode % 3 {
        0 => rest.to_vec(),
        1 => checkpoint_blob(rest, Codec::Binary),
        _ => checkpoint_blob(rest, Codec::Json),
    };
    let _ = checkpoint::header(&blob);
    let Ok((h, state)) = checkpoint::decode(&blob) else {
        return;
    };
    // The destination's own checks are a restore: validate and restore agree, error for error.
    let dest = VfLimits::default();
    let verdict = checkpoint::validate(&state, &dest);
    let restored = checkpoint::restore(state, VecMemory::shared(MEM), NOW, &dest);
    assert_eq!(verdict.as_ref().err(), restored.as_ref().err());
    let Ok(mut vf) = restored else {
        return;
    };
    let saved = checkpoint::save(&vf, NOW, h.codec);
    let vf2 = checkpoint::load(&saved, VecMemory::shared(MEM), NOW)
        .expect("a checkpoint of a restored VF loads");
    assert_eq!(
        checkpoint::save(&vf2, NOW, h.codec),
        saved,
        "save(load(save(x))) == save(x)"
    );
    run(&mut vf);
}

/// Lets a restored VF's timers fire and drains what it sends.
fn run(vf: &mut vhca_device::Vf) {
    let mut now = NOW;
    for _ in 0..4 {
        if let Some(t) = vf.poll_timeout() {
            now = Nanos(t.0.max(now.0));
            vf.handle_timeout(now);
        }
        let mut n = 0;
        while n < MAX_TX && vf.poll_transmit(now).is_some() {
            n += 1;
        }
        while vf.poll_async_event().is_some() {}
        while vf.poll_cq_event().is_some() {}
    }
}

pub fn check_device_state(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let blob = match mode % 2 {
        0 => rest.to_vec(),
        _ => device_state_blob(rest),
    };
    let Ok(s) = device_state::decode(&blob) else {
        return;
    };
    let Ok(mut port) = VfPort::load_state(s.port.clone(), VecMemory::shared(MEM), NOW, admit)
    else {
        return;
    };
    let again = device_state::encode(&device_state::DeviceStateV1 {
        port: port.save_state(NOW),
        ..s
    });
    let s2 = device_state::decode(&again).expect("an encoded device state decodes");
    let port2 = VfPort::load_state(s2.port, VecMemory::shared(MEM), NOW, admit)
        .expect("the state of a loaded port loads");
    assert_eq!(
        device_state::encode(&device_state::DeviceStateV1 {
            port: port2.save_state(NOW),
            ..s2
        }),
        again
    );
    port.drain_completions();
    while port.pop_event().is_some() {}
    run(&mut port.vf);
}

/// A slot that admits any identity with the default limits (the identity policy has its own
/// tests; here the state's decoding and bounds are under test).
fn admit(_: &VfIdentity) -> Result<VfLimits, checkpoint::CheckpointError> {
    Ok(VfLimits::default())
}
