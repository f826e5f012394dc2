//! Saved device state a destination loads: VF checkpoints (device/src/checkpoint/, v1 and v2,
//! every codec, full and delta) and vhost-user device-state blobs (vhost/src/migration.rs).
//!
//! The first byte picks how the rest is used: as a whole blob, as a v1 payload the harness
//! wraps in a header with the right length and checksum, or as v2 sections the harness
//! assembles with the right table and checksums, so the fuzzer spends itself on the
//! deserializers, the section rules, deltas and `validate`/`restore` behind the checksums
//! instead of on the checksums.
//!
//! Properties: no blob panics decoding, validation, restoring, or running the restored VF
//! (its timers, its transmit queue); a state that loads saves to a blob that loads again,
//! and saving that one gives the same bytes.

use vhca_device::checkpoint::container::{assemble, SectionKind};
use vhca_device::checkpoint::{self, codec, CheckpointV2, Codec};
use vhca_device::{Nanos, VecMemory, VfIdentity, VfLimits};
use vhca_vhost::device_state;
use vhca_vhost::port::VfPort;

/// Guest memory of a restored VF (small: nothing in a blob may size an allocation).
const MEM: usize = 64 * 1024;
const NOW: Nanos = Nanos(5_000_000_000);
/// Packets taken from a restored VF at most.
const MAX_TX: usize = 256;

/// A v1 checkpoint header around `payload`.
pub fn checkpoint_blob(payload: &[u8], codec: &dyn Codec) -> Vec<u8> {
    let mut out = checkpoint::MAGIC.to_vec();
    out.extend_from_slice(&1u16.to_le_bytes());
    out.push(codec.id());
    out.push(0);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// A v2 blob from `data`: a byte choosing the codec (bit 7: a delta), then sections as
/// `kind (u8), items (u8), length (u16 LE), payload`, table and checksums made to match.
pub fn sections_blob(data: &[u8]) -> Vec<u8> {
    let Some((&first, mut rest)) = data.split_first() else {
        return Vec::new();
    };
    let all = codec::all();
    let c = all[(first & 0x7f) as usize % all.len()];
    let mut parts: Vec<(SectionKind, u32, &[u8])> = Vec::new();
    while rest.len() >= 4 {
        let kind = SectionKind::ALL[rest[0] as usize % SectionKind::ALL.len()];
        let items = u32::from(rest[1]);
        let len = (u16::from_le_bytes([rest[2], rest[3]]) as usize).min(rest.len() - 4);
        parts.push((kind, items, &rest[4..4 + len]));
        rest = &rest[4 + len..];
    }
    assemble(c, first & 0x80 != 0, &parts)
}

/// The base the fuzzer's deltas are applied to: the golden v1 fixture, upgraded.
fn base() -> checkpoint::VfStateV2 {
    let blob = include_bytes!("../../device/tests/fixtures/checkpoint-v1.bin");
    checkpoint::decode(blob)
        .expect("the golden fixture decodes")
        .1
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
    let blob = match mode % 4 {
        0 => rest.to_vec(),
        1 => checkpoint_blob(rest, codec::BINARY),
        2 => checkpoint_blob(rest, codec::JSON),
        _ => sections_blob(rest),
    };
    let _ = checkpoint::header(&blob);
    let Ok((h, c)) = checkpoint::decode_any(&blob) else {
        return;
    };
    let state = match c {
        CheckpointV2::Full(s) => s,
        // A delta against the fuzzer's base: applied only when it names that base (which a
        // fuzzer finds only by re-encoding one), refused otherwise.
        CheckpointV2::Delta(d) => match checkpoint::apply(&base(), d) {
            Ok(s) => s,
            Err(_) => return,
        },
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
