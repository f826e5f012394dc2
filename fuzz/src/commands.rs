//! Control-queue commands as the device decodes them, and what the driver decodes back.
//!
//! Properties: no request panics `Command::decode` or a fresh port's `execute`; a request that
//! decodes re-encodes to bytes that decode to the same command; responses, the config space and
//! the response bodies decode without panicking and round-trip.

use vhca_device::{Mac, VecMemory, VfIdentity};
use vhca_vhost::port::VfPort;
use vhca_vhost::protocol::command::{body, Command, Response};
use vhca_vhost::protocol::config::RdmaConfig;

/// Guest memory of the port a request runs against: small, so nothing the request names
/// can make the harness allocate much.
const MEM: usize = 64 * 1024;

pub fn check(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 4 {
        0 | 1 => check_command(rest),
        2 => check_response(rest),
        _ => check_config(rest),
    }
}

fn check_command(b: &[u8]) {
    if let Ok(cmd) = Command::decode(b) {
        let again = cmd.encode();
        assert_eq!(
            Command::decode(&again).expect("a re-encoded command decodes"),
            cmd
        );
        assert_eq!(cmd.opcode(), u16::from_le_bytes([again[0], again[1]]));
    }
    let id = VfIdentity::new(Mac([2, 0, 0, 0, 0, 1]), [10, 0, 0, 1]);
    let mut port = VfPort::new(id, VecMemory::shared(MEM));
    let r = port.execute(b);
    let enc = r.encode();
    assert_eq!(Response::decode(&enc).expect("a response decodes"), r);
    port.drain_completions();
}

fn check_response(b: &[u8]) {
    if let Ok(r) = Response::decode(b) {
        assert_eq!(Response::decode(&r.encode()).expect("re-decode"), r);
    }
    let _ = body::read_u32(b);
    if let Ok((q, sq, rq)) = body::read_create_qp(b) {
        assert_eq!(
            body::read_create_qp(&body::create_qp(q, sq, rq)).ok(),
            Some((q, sq, rq))
        );
    }
    if let Ok((s, ring)) = body::read_create_srq(b) {
        assert_eq!(
            body::read_create_srq(&body::create_srq(s, ring)).ok(),
            Some((s, ring))
        );
    }
    if let Ok(a) = body::read_qp_attr(b) {
        assert_eq!(body::read_qp_attr(&body::qp_attr(&a)).ok(), Some(a));
    }
}

fn check_config(b: &[u8]) {
    if let Ok(c) = RdmaConfig::decode(b) {
        assert_eq!(RdmaConfig::decode(&c.encode()).expect("re-decode"), c);
    }
}
