//! I/O on file descriptors a frontend gave us (call and kick eventfds, device-state pipes).
//!
//! The frontend shares the open file description of each: it may clear `O_NONBLOCK` at any
//! time, fill an eventfd's counter, or never write to (or read from) a pipe. So every read and
//! write here asks the kernel not to wait for this call only (`RWF_NOWAIT`, which the frontend
//! cannot turn off), and where the kernel does not support that for the file, sets
//! `O_NONBLOCK` right before the call. A frontend that races to clear the flag in between can
//! at worst stall the one thread doing the I/O: the callers never hold a lock another VF needs
//! while they do it (docs/serve.md, "Threads").

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

/// `preadv2`/`pwritev2` with `RWF_NOWAIT` at the current file position; `None` when the file
/// does not support per-call non-blocking I/O.
fn nowait(fd: RawFd, buf: *mut u8, len: usize, write: bool) -> Option<io::Result<usize>> {
    let iov = libc::iovec {
        iov_base: buf.cast(),
        iov_len: len,
    };
    // SAFETY: `iov` describes `len` bytes at `buf`, which the callers borrow (mutably for a
    // read) for the whole call; offset -1 means the current position; `fd` is open (the
    // callers hold the `File`).
    let n = unsafe {
        if write {
            libc::pwritev2(fd, &iov, 1, -1, libc::RWF_NOWAIT)
        } else {
            libc::preadv2(fd, &iov, 1, -1, libc::RWF_NOWAIT)
        }
    };
    if n >= 0 {
        return Some(Ok(n as usize));
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EOPNOTSUPP) | Some(libc::EINVAL) | Some(libc::ESPIPE) => None,
        _ => Some(Err(e)),
    }
}

/// Sets `O_NONBLOCK` on the open file description if it is not set.
pub fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_GETFL/F_SETFL on an open descriptor touch no memory of ours.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 {
            return Err(io::Error::last_os_error());
        }
        if flags & libc::O_NONBLOCK == 0
            && libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Reads what is there now (`WouldBlock` when nothing is).
pub fn read_nowait(f: &File, buf: &mut [u8]) -> io::Result<usize> {
    let fd = f.as_raw_fd();
    if let Some(r) = nowait(fd, buf.as_mut_ptr(), buf.len(), false) {
        return r;
    }
    set_nonblocking(fd)?;
    io::Read::read(&mut &*f, buf)
}

/// Writes what fits now (`WouldBlock` when nothing does).
pub fn write_nowait(f: &File, buf: &[u8]) -> io::Result<usize> {
    let fd = f.as_raw_fd();
    // The kernel only reads from `buf` for a write.
    if let Some(r) = nowait(fd, buf.as_ptr().cast_mut(), buf.len(), true) {
        return r;
    }
    set_nonblocking(fd)?;
    io::Write::write(&mut &*f, buf)
}

/// Why [`wait_ready`] returned without the descriptor being ready.
#[derive(Debug, PartialEq, Eq)]
pub enum NotReady {
    /// The deadline passed.
    TimedOut,
    /// `stop` became readable (the process is stopping).
    Stopped,
}

/// Waits until `fd` is readable (`write == false`) or writable, hung up or in error, until
/// `deadline`, or until `stop` is readable.
pub fn wait_ready(
    fd: RawFd,
    write: bool,
    stop: RawFd,
    deadline: Instant,
) -> io::Result<Result<(), NotReady>> {
    let events = if write { libc::POLLOUT } else { libc::POLLIN };
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(Err(NotReady::TimedOut));
        }
        let mut fds = [
            libc::pollfd {
                fd,
                events,
                revents: 0,
            },
            libc::pollfd {
                fd: stop,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // Round up: a deadline 0.5 ms away must not turn into a busy loop of 0 ms polls.
        let ms = left.as_millis().max(1).min(i32::MAX as u128) as i32;
        // SAFETY: `fds` is a valid array of two pollfd for the whole call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if fds[1].revents != 0 {
            return Ok(Err(NotReady::Stopped));
        }
        if fds[0].revents != 0 {
            return Ok(Ok(()));
        }
    }
}

/// The default deadline of a device-state transfer (`vhca serve --state-transfer-timeout-ms`).
pub const DEFAULT_TRANSFER_TIMEOUT: Duration = Duration::from_secs(30);

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::FromRawFd;

    fn pipe() -> (File, File) {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe(2) writes.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: pipe(2) just opened both; nobody else owns them.
        unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) }
    }

    #[test]
    fn a_blocking_pipe_is_read_and_written_without_waiting() {
        let (r, mut w) = pipe();
        let mut b = [0u8; 8];
        // Blocking descriptors (nobody set O_NONBLOCK): still no wait.
        assert_eq!(
            read_nowait(&r, &mut b).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        w.write_all(b"abc").unwrap();
        assert_eq!(read_nowait(&r, &mut b).unwrap(), 3);
        let chunk = vec![0u8; 1 << 16];
        let mut total = 0;
        loop {
            match write_nowait(&w, &chunk) {
                Ok(n) => total += n,
                Err(e) => {
                    assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
                    break;
                }
            }
            assert!(total < 64 << 20, "the pipe never filled");
        }
    }

    #[test]
    fn a_full_blocking_eventfd_is_not_waited_for() {
        // SAFETY: eventfd(2) returns a new descriptor we own.
        let fd = unsafe { libc::eventfd(0, 0) };
        assert!(fd >= 0);
        // SAFETY: just opened, owned by nobody else.
        let f = unsafe { File::from_raw_fd(fd) };
        write_nowait(&f, &(u64::MAX - 1).to_ne_bytes()).unwrap();
        assert_eq!(
            write_nowait(&f, &1u64.to_ne_bytes()).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
    }

    #[test]
    fn waiting_ends_at_the_deadline_or_the_stop() {
        let (r, _w) = pipe();
        let (stop_r, mut stop_w) = pipe();
        let t = Instant::now();
        let deadline = t + Duration::from_millis(20);
        assert_eq!(
            wait_ready(r.as_raw_fd(), false, stop_r.as_raw_fd(), deadline).unwrap(),
            Err(NotReady::TimedOut)
        );
        assert!(Instant::now() >= deadline);
        stop_w.write_all(b"x").unwrap();
        assert_eq!(
            wait_ready(
                r.as_raw_fd(),
                false,
                stop_r.as_raw_fd(),
                Instant::now() + Duration::from_secs(60)
            )
            .unwrap(),
            Err(NotReady::Stopped)
        );
    }
}
