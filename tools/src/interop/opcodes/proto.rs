//! The side channel's messages: a 4-byte big-endian length, then one JSON object, at most
//! [`MAX_MSG`] bytes. Everything that comes from the peer is checked before use (bounded
//! length, known fields only, values in range): a peer is another process on another machine.
//!
//! | step | from | message |
//! | --- | --- | --- |
//! | 1 | client | [`Hello`]: its QPs and GID, the run's size, iterations, window and MTU |
//! | 2 | server | [`Welcome`]: its QPs and GID, the R_Key and addresses the client targets, the path MTU |
//! | 3 | client | [`Summary`] after its last iteration |
//! | 4 | server | its [`Summary`] |
//!
//! Either side may send [`Msg::Abort`] at any point instead: it failed, and says why.

use super::report::Summary;
use super::{OpcodesError, MAX_ITERS, MAX_SIZE, MAX_WINDOW};
use crate::interop::endpoint::Endpoint;
use crate::interop::side_channel::{read_into, Chan};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::time::{Duration, Instant};
use vhca_device::Mtu;

/// Names the protocol and its version; a peer that says anything else is refused.
pub const PROTOCOL: &str = "vhca-opcodes/1";

/// The largest message either side accepts (a [`Summary`] is a few hundred bytes).
pub const MAX_MSG: usize = 64 << 10;

/// The longest reason an [`Msg::Abort`] carries that a side prints.
const MAX_REASON: usize = 2000;

/// The client's first message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hello {
    pub protocol: String,
    pub gid: [u8; 16],
    pub rc_qpn: u32,
    pub rc_psn: u32,
    pub ud_qpn: u32,
    /// Bytes of every RC message.
    pub size: u32,
    pub iters: u64,
    /// Iterations in flight at once.
    pub window: u32,
    /// The client's largest path MTU, bytes.
    pub mtu: u32,
}

/// The server's answer, sent once its QPs are ready (RC connected, receives posted).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Welcome {
    pub protocol: String,
    pub gid: [u8; 16],
    pub rc_qpn: u32,
    pub rc_psn: u32,
    pub ud_qpn: u32,
    /// The R_Key of the server's buffer.
    pub rkey: u32,
    /// `window` slots of `size` bytes each: the targets of RDMA_WRITE, of
    /// RDMA_WRITE_WITH_IMM, and the source of RDMA_READ (iteration i uses slot i % window).
    pub write_addr: u64,
    pub write_imm_addr: u64,
    pub read_addr: u64,
    /// Two 8-byte counters: CMP_AND_SWP's, then FETCH_AND_ADD's.
    pub atomic_addr: u64,
    /// The path MTU both use: the smaller of the two sides', bytes.
    pub mtu: u32,
}

/// A side-channel message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "msg", rename_all = "snake_case", deny_unknown_fields)]
pub enum Msg {
    Hello(Hello),
    Welcome(Welcome),
    Summary(Summary),
    /// The sender failed; the reason is for the peer's error message.
    Abort {
        reason: String,
    },
}

impl Msg {
    /// The message's name, for an error about a message out of place (its content is the
    /// peer's, and may be long).
    pub fn kind(&self) -> &'static str {
        match self {
            Msg::Hello(_) => "a hello",
            Msg::Welcome(_) => "a welcome",
            Msg::Summary(_) => "a summary",
            Msg::Abort { .. } => "an abort",
        }
    }
}

fn bad(what: &str, text: impl std::fmt::Display) -> OpcodesError {
    OpcodesError::Protocol(format!("{what}: {text}"))
}

fn check_qp(what: &str, qpn: u32, psn: u32) -> Result<(), OpcodesError> {
    if qpn > 0xff_ffff || psn > 0xff_ffff {
        return Err(bad(
            what,
            format!("QPN 0x{qpn:x} or PSN 0x{psn:x} is not 24-bit"),
        ));
    }
    Ok(())
}

fn check_protocol(what: &str, p: &str) -> Result<(), OpcodesError> {
    if p != PROTOCOL {
        return Err(bad(
            what,
            format!("protocol {p:?}, this side speaks {PROTOCOL:?}"),
        ));
    }
    Ok(())
}

impl Hello {
    /// Checks what the server relies on; `max_size` and `max_window` are what the server
    /// allocated for.
    pub fn check(&self, max_size: u32, max_window: u32) -> Result<Mtu, OpcodesError> {
        let what = "the client's hello";
        check_protocol(what, &self.protocol)?;
        check_qp(what, self.rc_qpn, self.rc_psn)?;
        check_qp(what, self.ud_qpn, 0)?;
        let mtu =
            Mtu::from_bytes(self.mtu).ok_or_else(|| bad(what, format!("MTU {}", self.mtu)))?;
        if self.size == 0 || self.size > MAX_SIZE {
            return Err(bad(
                what,
                format!("size {} (1 B .. {MAX_SIZE} B)", self.size),
            ));
        }
        if self.size > max_size {
            return Err(OpcodesError::Options(format!(
                "the client's size {} B is larger than this server's -s {max_size}",
                self.size
            )));
        }
        if !(1..=MAX_ITERS).contains(&self.iters) {
            return Err(bad(what, format!("{} iterations", self.iters)));
        }
        if !(1..=MAX_WINDOW).contains(&self.window) {
            return Err(bad(what, format!("window {}", self.window)));
        }
        if self.window > max_window {
            return Err(OpcodesError::Options(format!(
                "the client's window {} is larger than this server's {max_window}",
                self.window
            )));
        }
        Ok(mtu)
    }
}

impl Welcome {
    /// Checks what the client relies on: `mtu` is the client's own, which the server's
    /// answer may lower but not raise; the slots must not wrap around the address space.
    pub fn check(&self, mtu: Mtu, size: u32, window: u32) -> Result<Mtu, OpcodesError> {
        let what = "the server's welcome";
        check_protocol(what, &self.protocol)?;
        check_qp(what, self.rc_qpn, self.rc_psn)?;
        check_qp(what, self.ud_qpn, 0)?;
        let m = Mtu::from_bytes(self.mtu)
            .filter(|m| m.bytes() <= mtu.bytes())
            .ok_or_else(|| {
                bad(
                    what,
                    format!("MTU {} (this side's is {})", self.mtu, mtu.bytes()),
                )
            })?;
        let span = size as u64 * window as u64;
        for (name, a, len) in [
            ("write_addr", self.write_addr, span),
            ("write_imm_addr", self.write_imm_addr, span),
            ("read_addr", self.read_addr, span),
            ("atomic_addr", self.atomic_addr, 16),
        ] {
            if a.checked_add(len).is_none() {
                return Err(bad(what, format!("{name} 0x{a:x} + {len} wraps")));
            }
        }
        if self.atomic_addr % 8 != 0 {
            return Err(bad(what, "atomic_addr is not 8-byte aligned"));
        }
        Ok(m)
    }
}

/// The peer's reason, shortened and with control characters escaped, for an error message.
pub fn reason(r: &str) -> String {
    let mut s = String::new();
    for c in r.chars().take(MAX_REASON) {
        if c.is_control() {
            s.extend(c.escape_default());
        } else {
            s.push(c);
        }
    }
    if r.chars().nth(MAX_REASON).is_some() {
        s.push('…');
    }
    s
}

/// Encodes a message with its length.
pub fn encode(m: &Msg) -> Result<Vec<u8>, OpcodesError> {
    let body = serde_json::to_vec(m).map_err(|e| OpcodesError::Protocol(e.to_string()))?;
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    Ok(out)
}

/// Bytes received and not yet taken as a message.
#[derive(Default)]
pub struct Inbox {
    buf: Vec<u8>,
}

impl Inbox {
    /// How many bytes to read at most: the rest of the message being received (or its
    /// length), so nothing beyond one message is buffered.
    fn want(&self) -> usize {
        match self.declared() {
            Some(n) => 4 + n.min(MAX_MSG),
            None => 4,
        }
    }

    fn declared(&self) -> Option<usize> {
        let len: [u8; 4] = self.buf.get(..4)?.try_into().ok()?;
        Some(u32::from_be_bytes(len) as usize)
    }

    /// Takes the message received so far, if whole.
    pub fn take(&mut self) -> Result<Option<Msg>, OpcodesError> {
        let Some(n) = self.declared() else {
            return Ok(None);
        };
        if n > MAX_MSG {
            return Err(bad(
                "a message from the peer",
                format!("{n} bytes (at most {MAX_MSG})"),
            ));
        }
        if self.buf.len() < 4 + n {
            return Ok(None);
        }
        let m = serde_json::from_slice(&self.buf[4..4 + n])
            .map_err(|e| bad("a message from the peer", e))?;
        self.buf.drain(..4 + n);
        Ok(Some(m))
    }

    /// Reads what has arrived without waiting; a whole message if there is one now.
    /// `Ok((msg, progress))`.
    pub fn poll(
        &mut self,
        chan: &mut Chan,
        what: &'static str,
    ) -> Result<(Option<Msg>, bool), OpcodesError> {
        let mut any = false;
        loop {
            let want = self.want();
            let got = chan.read_available(&mut self.buf, want, what)?;
            any |= got;
            if let Some(m) = self.take()? {
                return Ok((Some(m), any));
            }
            // Stop when nothing more came or the length said the message is longer.
            if !got || self.buf.len() < want {
                return Ok((None, any));
            }
        }
    }

    /// Waits (pumping the node) for the next message; an [`Msg::Abort`] becomes the peer's
    /// failure.
    pub fn recv<V: Endpoint>(
        &mut self,
        chan: &mut Chan,
        node: &mut V,
        what: &'static str,
    ) -> Result<Msg, OpcodesError> {
        let mut got = None;
        chan.pumping(node, what, None, |s| loop {
            let want = self.want();
            let before = self.buf.len();
            read_into(s, &mut self.buf, want, what)?;
            let progress = self.buf.len() > before;
            if let Some(m) = self.take()? {
                got = Some(m);
                return Ok::<_, OpcodesError>((true, true));
            }
            if !progress || self.buf.len() < want {
                return Ok((false, progress));
            }
        })?;
        match got {
            Some(Msg::Abort { reason: r }) => Err(OpcodesError::PeerFailed(reason(&r))),
            Some(m) => Ok(m),
            None => Err(bad(what, "no message")),
        }
    }
}

/// Sends a message, pumping the node while the socket is full.
pub fn send<V: Endpoint>(
    chan: &mut Chan,
    node: &mut V,
    m: &Msg,
    what: &'static str,
) -> Result<(), OpcodesError> {
    Ok(chan.write_blob(node, &encode(m)?, what)?)
}

/// Tells the peer why this side fails, as far as the socket takes it within a moment: the
/// peer then fails with the reason instead of timing out. Errors are ignored: this side is
/// failing already, with its own error.
pub fn abort(chan: &mut Chan, why: &OpcodesError) {
    let Ok(b) = encode(&Msg::Abort {
        reason: why.to_string(),
    }) else {
        return;
    };
    let deadline = Instant::now() + Duration::from_millis(500);
    let mut off = 0;
    while off < b.len() && Instant::now() < deadline {
        match chan.sock.write(&b[off..]) {
            Ok(0) => return,
            Ok(n) => off += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(1))
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vhca_device::Gid;

    fn hello() -> Hello {
        Hello {
            protocol: PROTOCOL.into(),
            gid: Gid::from_ipv4([127, 0, 0, 1]).0,
            rc_qpn: 0x11,
            rc_psn: 0x123456,
            ud_qpn: 0x12,
            size: 4096,
            iters: 1000,
            window: 4,
            mtu: 1024,
        }
    }

    #[test]
    fn messages_round_trip_through_the_framing() {
        let m = Msg::Hello(hello());
        let b = encode(&m).unwrap();
        let mut inbox = Inbox::default();
        // Byte by byte: nothing until the last.
        for (i, x) in b.iter().enumerate() {
            inbox.buf.push(*x);
            let got = inbox.take().unwrap();
            assert_eq!(got.is_some(), i == b.len() - 1);
            if let Some(g) = got {
                assert_eq!(g, m);
            }
        }
        assert!(inbox.buf.is_empty());
    }

    #[test]
    fn hostile_messages_are_refused_with_a_reason() {
        let mut inbox = Inbox::default();
        inbox.buf.extend_from_slice(&u32::MAX.to_be_bytes());
        let e = inbox.take().unwrap_err().to_string();
        assert!(e.contains("at most"), "{e}");
        let mut inbox = Inbox::default();
        let junk = br#"{"msg":"hello","protocol":"x","extra":1}"#;
        inbox
            .buf
            .extend_from_slice(&(junk.len() as u32).to_be_bytes());
        inbox.buf.extend_from_slice(junk);
        assert!(inbox.take().is_err());

        let h = hello();
        assert_eq!(h.check(4096, 4).unwrap(), Mtu::Mtu1024);
        assert!(matches!(h.check(1024, 4), Err(OpcodesError::Options(_))));
        for f in [
            |h: &mut Hello| h.protocol = "vhca-opcodes/0".into(),
            |h: &mut Hello| h.rc_qpn = 1 << 24,
            |h: &mut Hello| h.size = 0,
            |h: &mut Hello| h.iters = 0,
            |h: &mut Hello| h.window = 0,
            |h: &mut Hello| h.mtu = 1500,
        ] {
            let mut b = hello();
            f(&mut b);
            assert!(
                matches!(b.check(4096, 4), Err(OpcodesError::Protocol(_))),
                "{b:?}"
            );
        }
        assert_eq!(reason("a\nb"), "a\\nb");
        assert!(reason(&"x".repeat(5000)).len() < 2100);
    }

    #[test]
    fn a_welcome_may_lower_the_mtu_but_not_wrap() {
        let w = Welcome {
            protocol: PROTOCOL.into(),
            gid: [0; 16],
            rc_qpn: 1,
            rc_psn: 2,
            ud_qpn: 3,
            rkey: 4,
            write_addr: 0x1000,
            write_imm_addr: 0x2000,
            read_addr: 0x3000,
            atomic_addr: 0x4000,
            mtu: 1024,
        };
        assert_eq!(w.check(Mtu::Mtu4096, 4096, 4).unwrap(), Mtu::Mtu1024);
        assert!(w.check(Mtu::Mtu512, 4096, 4).is_err());
        let far = Welcome {
            read_addr: u64::MAX - 10,
            ..w.clone()
        };
        assert!(far.check(Mtu::Mtu4096, 4096, 4).is_err());
        let odd = Welcome {
            atomic_addr: 0x4004,
            ..w
        };
        assert!(odd.check(Mtu::Mtu4096, 4096, 4).is_err());
    }
}
