//! What the device reads out of guest rings: send and receive WQEs, doorbell records, ring
//! geometry; and what the driver reads back: CQEs and event records.
//!
//! Properties: no bytes panic a decoder; a WQE, CQE, doorbell or event that decodes
//! re-encodes (into a slot of the stride its QP's capacities give) to bytes that decode to the
//! same value; a WQE never holds more SGEs or inline bytes than the capacities allow.

use vhca_vhost::protocol::doorbell::{Doorbell, Event, DOORBELL_SIZE};
use vhca_vhost::protocol::ring::{self, Ring};

/// Control bytes in front of the entry: capacities, ring index and geometry.
const CTL: usize = 8;

pub fn check(data: &[u8]) {
    if data.len() < CTL {
        return;
    }
    let (c, b) = data.split_at(CTL);
    let max_sge = u32::from(c[1] % 33);
    let max_inline = u32::from(u16::from_le_bytes([c[2], c[3]]) % 1025);
    let index = u32::from_le_bytes([c[4], c[5], c[6], c[7]]);
    match c[0] % 6 {
        0 => send(b, max_sge, max_inline, c[1] & 0x80 != 0),
        1 => recv(b, max_sge),
        2 => cqe(b, index, 1 << (c[2] % 21)),
        3 => doorbells(b),
        4 => event(b),
        _ => geometry(b),
    }
}

fn send(b: &[u8], max_sge: u32, max_inline: u32, is_ud: bool) {
    let Ok(wr) = ring::decode_send(b, max_sge, max_inline, is_ud) else {
        return;
    };
    assert!(
        wr.sgl.len() as u32 <= max_sge,
        "more SGEs than the QP holds"
    );
    assert!(
        wr.inline_data.len() as u32 <= max_inline,
        "more inline data than the QP holds"
    );
    assert_eq!(wr.ud.is_some(), is_ud);
    let stride = ring::send_stride(max_sge, max_inline);
    let again = ring::encode_send(&wr, stride);
    assert_eq!(
        again.len(),
        stride as usize,
        "a send WQE fills its slot exactly"
    );
    let wr2 = ring::decode_send(&again, max_sge, max_inline, is_ud).expect("re-decode");
    assert_eq!(wr2, wr);
}

fn recv(b: &[u8], max_sge: u32) {
    let Ok(wr) = ring::decode_recv(b, max_sge) else {
        return;
    };
    assert!(
        wr.sgl.len() as u32 <= max_sge,
        "more SGEs than the QP holds"
    );
    let stride = ring::recv_stride(max_sge);
    let again = ring::encode_recv(&wr, stride);
    assert_eq!(
        again.len(),
        stride as usize,
        "a receive WQE fills its slot exactly"
    );
    assert_eq!(ring::decode_recv(&again, max_sge).expect("re-decode"), wr);
}

fn cqe(b: &[u8], i: u32, depth: u32) {
    let Ok(Some(wc)) = ring::decode_cqe(b, i, depth) else {
        return;
    };
    let again = ring::encode_cqe(&wc, i, depth);
    assert_eq!(
        ring::decode_cqe(&again, i, depth).expect("re-decode"),
        Some(wc)
    );
    // The next pass over the ring flips the owner bit: the same bytes are stale there.
    let next = i.wrapping_add(depth);
    if next / depth % 2 != i / depth % 2 {
        assert_eq!(ring::decode_cqe(&again, next, depth).ok(), Some(None));
    }
}

fn doorbells(b: &[u8]) {
    if let Ok(d) = Doorbell::decode(b) {
        assert_eq!(Doorbell::decode(&d.encode()).expect("re-decode"), d);
    }
    if let Ok(all) = Doorbell::decode_all(b) {
        assert_eq!(all.len(), b.len() / DOORBELL_SIZE);
    }
}

fn event(b: &[u8]) {
    if let Ok(e) = Event::decode(b) {
        assert_eq!(Event::decode(&e.encode()).expect("re-decode"), e);
    }
}

fn geometry(b: &[u8]) {
    if b.len() < 16 {
        return;
    }
    let gpa = u64::from_le_bytes(b[..8].try_into().unwrap_or_default());
    let depth = u32::from_le_bytes(b[8..12].try_into().unwrap_or_default());
    let stride = u32::from_le_bytes(b[12..16].try_into().unwrap_or_default());
    if let Ok(r) = Ring::new(gpa, depth, stride) {
        // Every slot lies inside the ring, and the ring does not wrap the address space.
        let last = r.slot(u32::MAX);
        assert!(last >= r.gpa && last + u64::from(r.stride) <= r.gpa + r.bytes());
    }
}
