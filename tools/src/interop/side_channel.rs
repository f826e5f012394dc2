//! The TCP side channel the programs exchange QP addresses and reports over (`vhca perf`'s
//! perftest blobs, `vhca opcodes`' framed messages), non-blocking, so that a side waiting for
//! its peer keeps its device making progress: an in-process [`Node`](vhca_fabric::node::Node)
//! only moves packets when its program pumps it, and a write_bw server must keep answering
//! RDMA while it waits for the client's "finished" message.

use crate::interop::endpoint::{Endpoint, Hook, HookError, Progress, IDLE_TICK};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use thiserror::Error;
use vhca_fabric::node::MAX_WAIT;

/// Why a side-channel step failed.
#[derive(Debug, Error)]
pub enum ChanError {
    #[error("network: {0}")]
    Io(#[from] io::Error),
    #[error("the peer closed the side channel during {0}")]
    Closed(&'static str),
    #[error("no progress for {0:?} while {1}")]
    Stalled(Duration, &'static str),
    #[error("hook: {0}")]
    Hook(#[source] HookError),
}

/// The TCP side channel. Non-blocking: while a side waits for the peer it keeps its node
/// pumping.
pub struct Chan {
    pub sock: TcpStream,
    /// The client writes first in [`Chan::xchg`], the server reads first.
    pub client: bool,
    /// How long a wait may go without progress (a packet, a side-channel byte).
    pub timeout: Duration,
}

impl Chan {
    pub fn new(sock: TcpStream, client: bool, timeout: Duration) -> io::Result<Chan> {
        // Every blob goes out in one segment: perftest reads each with a single read().
        sock.set_nodelay(true)?;
        sock.set_nonblocking(true)?;
        Ok(Chan {
            sock,
            client,
            timeout,
        })
    }

    /// [`pump`] with `step` on this channel's socket and its timeout.
    pub fn pumping<V: Endpoint, E: From<ChanError>>(
        &mut self,
        node: &mut V,
        what: &'static str,
        tick: Option<(Hook<'_, V>, u64)>,
        mut step: impl FnMut(&mut TcpStream) -> Result<(bool, bool), E>,
    ) -> Result<(), E> {
        let sock = &mut self.sock;
        pump(node, self.timeout, what, tick, |_| step(sock))
    }

    pub fn write_blob<V: Endpoint>(
        &mut self,
        node: &mut V,
        b: &[u8],
        what: &'static str,
    ) -> Result<(), ChanError> {
        let mut off = 0;
        self.pumping(node, what, None, |s| {
            while off < b.len() {
                match s.write(&b[off..]) {
                    Ok(0) => return Err(ChanError::Closed(what)),
                    Ok(n) => off += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok((false, false)),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Ok((true, true))
        })
    }

    pub fn read_blob<V: Endpoint>(
        &mut self,
        node: &mut V,
        n: usize,
        what: &'static str,
        tick: Option<(Hook<'_, V>, u64)>,
    ) -> Result<Vec<u8>, ChanError> {
        let mut buf = vec![0u8; n];
        let mut got = 0;
        self.pumping(node, what, tick, |s| {
            let before = got;
            while got < n {
                match s.read(&mut buf[got..]) {
                    Ok(0) => return Err(ChanError::Closed(what)),
                    Ok(k) => got += k,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        return Ok((false, got > before))
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Ok((true, true))
        })?;
        Ok(buf)
    }

    /// One step: the client writes then reads, the server reads then writes.
    pub fn xchg<V: Endpoint>(
        &mut self,
        node: &mut V,
        mine: &[u8],
        what: &'static str,
    ) -> Result<Vec<u8>, ChanError> {
        self.xchg_ticking(node, mine, what, None)
    }

    /// [`Chan::xchg`], calling `tick`'s hook while it waits for the peer's blob.
    pub fn xchg_ticking<V: Endpoint>(
        &mut self,
        node: &mut V,
        mine: &[u8],
        what: &'static str,
        tick: Option<(Hook<'_, V>, u64)>,
    ) -> Result<Vec<u8>, ChanError> {
        if self.client {
            self.write_blob(node, mine, what)?;
            self.read_blob(node, mine.len(), what, tick)
        } else {
            let theirs = self.read_blob(node, mine.len(), what, tick)?;
            self.write_blob(node, mine, what)?;
            Ok(theirs)
        }
    }

    /// [`read_into`] on this channel.
    pub fn read_available(
        &mut self,
        buf: &mut Vec<u8>,
        limit: usize,
        what: &'static str,
    ) -> Result<bool, ChanError> {
        read_into(&mut self.sock, buf, limit, what)
    }
}

/// Runs `step` (which returns `Ok((done, progress))`) pumping the node in between; fails
/// after `timeout` without a packet or progress. With `tick`, calls its hook about every
/// [`IDLE_TICK`] (a side that waits out its peer's data phase). Every side channel waits this
/// way: the TCP one above and `vhca perf -R`'s rdma_cm QP.
pub fn pump<V: Endpoint, E: From<ChanError>>(
    node: &mut V,
    timeout: Duration,
    what: &'static str,
    mut tick: Option<(Hook<'_, V>, u64)>,
    mut step: impl FnMut(&mut V) -> Result<(bool, bool), E>,
) -> Result<(), E> {
    let mut last = Instant::now();
    let mut last_tick = Instant::now();
    let mut rx = node.rx_packets();
    loop {
        let (done, progress) = step(node)?;
        if done {
            return Ok(());
        }
        node.idle(MAX_WAIT).map_err(ChanError::Io)?;
        if let Some((hook, total)) = tick.as_mut() {
            if last_tick.elapsed() >= IDLE_TICK {
                let p = Progress {
                    done: None,
                    total: *total,
                };
                let t = Instant::now();
                hook(node, p).map_err(ChanError::Hook)?;
                last_tick = Instant::now();
                // Time the hook took (a migration's blackout) is not the peer stalling; the
                // hook being called is no progress either.
                last += t.elapsed();
            }
        }
        if progress || node.rx_packets() != rx {
            rx = node.rx_packets();
            last = Instant::now();
        } else if last.elapsed() > timeout {
            return Err(ChanError::Stalled(timeout, what).into());
        }
    }
}

/// Moves what the peer has sent into `buf`, without waiting, until `buf` holds `limit`
/// bytes: how a data phase watches the channel between polls of its CQ (a peer that failed
/// says why at once instead of leaving this side to time out). The limit keeps a peer that
/// floods the channel from growing `buf` without bound. `Ok(true)` when bytes arrived.
pub fn read_into(
    sock: &mut TcpStream,
    buf: &mut Vec<u8>,
    limit: usize,
    what: &'static str,
) -> Result<bool, ChanError> {
    let mut chunk = [0u8; 4096];
    let mut any = false;
    while buf.len() < limit {
        let room = (limit - buf.len()).min(chunk.len());
        match sock.read(&mut chunk[..room]) {
            Ok(0) => return Err(ChanError::Closed(what)),
            Ok(k) => {
                buf.extend_from_slice(&chunk[..k]);
                any = true;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(any),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(any)
}
