//! The control socket's event loop: many clients at once, none able to hold up another.
//!
//! One thread, one epoll set: the listener, the stop eventfd and every open client. Sockets
//! are non-blocking; a client's request is collected as it arrives, answered as soon as its
//! line is complete, and its reply written as the socket takes it. Every client has one
//! deadline for the whole exchange, so an idle or slow client costs only its own slot, and
//! the number of slots is fixed, so nothing grows with the number of clients over time.

use nix::errno::Errno;
use nix::sys::socket::{recv, MsgFlags};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

/// Clients served at once; one more is told the server is busy and closed.
pub const MAX_CLIENTS: usize = 64;
/// The longest request line accepted (the protocol's requests are a few dozen bytes).
pub const MAX_REQUEST: usize = 64 * 1024;
/// How long one client may take for its whole exchange: request in, reply out.
pub const CLIENT_DEADLINE: Duration = Duration::from_secs(5);

const LISTENER: u64 = 0;
const STOP: u64 = 1;
const FIRST_CLIENT: u64 = 2;

/// One open client connection.
struct Client {
    stream: UnixStream,
    request: Vec<u8>,
    reply: Vec<u8>,
    written: usize,
    deadline: Instant,
}

/// What a client needs next.
enum Next {
    Read,
    Write,
    Close,
}

/// Runs the loop until `stop_fd` becomes readable and `stopping()` says so. `answer` turns
/// one request line (possibly malformed: any bytes without the newline) into one reply line
/// (without the newline).
pub fn run(
    listener: &UnixListener,
    stop_fd: RawFd,
    stopping: impl Fn() -> bool,
    mut answer: impl FnMut(&[u8]) -> String,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let epoll = Epoll::new()?;
    epoll.ctl(
        ControlOperation::Add,
        listener.as_raw_fd(),
        EpollEvent::new(EventSet::IN, LISTENER),
    )?;
    epoll.ctl(
        ControlOperation::Add,
        stop_fd,
        EpollEvent::new(EventSet::IN, STOP),
    )?;
    let mut clients: Vec<Option<Client>> = (0..MAX_CLIENTS).map(|_| None).collect();
    let mut events = [EpollEvent::default(); 16];
    loop {
        let timeout = next_timeout(&clients);
        let n = match epoll.wait(timeout, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if stopping() {
            return Ok(());
        }
        for ev in &events[..n] {
            match ev.data() {
                LISTENER => accept_all(listener, &epoll, &mut clients),
                STOP => {}
                token => {
                    let slot = (token - FIRST_CLIENT) as usize;
                    let Some(c) = clients.get_mut(slot).and_then(Option::as_mut) else {
                        continue;
                    };
                    match progress(c, &mut answer) {
                        Next::Read => {}
                        Next::Write => {
                            let _ = epoll.ctl(
                                ControlOperation::Modify,
                                c.stream.as_raw_fd(),
                                EpollEvent::new(EventSet::OUT, token),
                            );
                        }
                        Next::Close => close(&epoll, &mut clients[slot]),
                    }
                }
            }
        }
        let now = Instant::now();
        for slot in clients.iter_mut() {
            if slot.as_ref().is_some_and(|c| c.deadline <= now) {
                tracing::debug!("control client took longer than its deadline; closed");
                close(&epoll, slot);
            }
        }
    }
}

/// Milliseconds until the earliest client deadline, or -1 (wait forever) with no client.
fn next_timeout(clients: &[Option<Client>]) -> i32 {
    let Some(first) = clients.iter().flatten().map(|c| c.deadline).min() else {
        return -1;
    };
    let left = first.saturating_duration_since(Instant::now());
    // Round up so a wake-up never comes a hair before the deadline and spins.
    (left.as_millis() as i32).saturating_add(1)
}

fn accept_all(listener: &UnixListener, epoll: &Epoll, clients: &mut [Option<Client>]) {
    loop {
        let stream = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                // EMFILE and friends: leave the rest in the backlog for the next wake-up.
                tracing::warn!(error = %e, "control socket accept failed");
                return;
            }
        };
        if stream.set_nonblocking(true).is_err() {
            continue;
        }
        let free = clients.iter().position(Option::is_none);
        let Some(slot) = free.or_else(|| reap_departed(epoll, clients)) else {
            // Best effort: a short line fits any socket buffer, and a full one drops it.
            let _ = (&stream).write(busy_reply().as_bytes());
            continue;
        };
        let token = FIRST_CLIENT + slot as u64;
        if epoll
            .ctl(
                ControlOperation::Add,
                stream.as_raw_fd(),
                EpollEvent::new(EventSet::IN, token),
            )
            .is_err()
        {
            continue;
        }
        clients[slot] = Some(Client {
            stream,
            request: Vec::new(),
            reply: Vec::new(),
            written: 0,
            deadline: Instant::now() + CLIENT_DEADLINE,
        });
    }
}

/// Frees the slots of clients that left without a word and whose departure the loop has
/// not seen yet (a burst of connect-and-close fills every slot before their events come).
fn reap_departed(epoll: &Epoll, clients: &mut [Option<Client>]) -> Option<usize> {
    let mut freed = None;
    for (i, slot) in clients.iter_mut().enumerate() {
        let departed = slot.as_ref().is_some_and(|c| {
            c.request.is_empty() && c.reply.is_empty() && {
                let mut b = [0u8; 1];
                let flags = MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT;
                match recv(c.stream.as_raw_fd(), &mut b, flags) {
                    Ok(0) => true,
                    Ok(_) => false,
                    Err(e) => e != Errno::EAGAIN && e != Errno::EINTR,
                }
            }
        });
        if departed {
            close(epoll, slot);
            freed.get_or_insert(i);
        }
    }
    freed
}

fn busy_reply() -> String {
    let mut s = error_line(&format!(
        "the control socket is serving {MAX_CLIENTS} clients; try again"
    ));
    s.push('\n');
    s
}

/// Moves one client forward as far as its socket allows.
fn progress(c: &mut Client, answer: &mut impl FnMut(&[u8]) -> String) -> Next {
    if c.reply.is_empty() {
        let reply = match read_request(c) {
            Request::Line(line) => answer(&line),
            Request::TooLong => error_line(&format!(
                "bad request: no newline within {MAX_REQUEST} bytes"
            )),
            Request::Pending => return Next::Read,
            Request::Gone => return Next::Close,
        };
        c.reply = reply.into_bytes();
        c.reply.push(b'\n');
    }
    loop {
        match (&c.stream).write(&c.reply[c.written..]) {
            Ok(0) => return Next::Close,
            Ok(n) => {
                c.written += n;
                if c.written == c.reply.len() {
                    return Next::Close;
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Next::Write,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return Next::Close,
        }
    }
}

/// A reply line refusing a request.
pub fn error_line(msg: &str) -> String {
    serde_json::json!({"ok": false, "error": msg}).to_string()
}

/// Where a client's request stands after reading what its socket has.
enum Request {
    /// The line is complete (a newline came, or the client finished writing after some bytes).
    Line(Vec<u8>),
    /// More bytes may come.
    Pending,
    /// Over [`MAX_REQUEST`] bytes without a newline.
    TooLong,
    /// The client left (or failed) before sending anything.
    Gone,
}

fn read_request(c: &mut Client) -> Request {
    let mut buf = [0u8; 4096];
    loop {
        match (&c.stream).read(&mut buf) {
            Ok(0) if c.request.is_empty() => return Request::Gone,
            Ok(0) => return Request::Line(std::mem::take(&mut c.request)),
            Ok(n) => {
                let chunk = &buf[..n];
                let (part, complete) = match chunk.iter().position(|&b| b == b'\n') {
                    Some(nl) => (&chunk[..nl], true),
                    None => (chunk, false),
                };
                if c.request.len() + part.len() > MAX_REQUEST {
                    return Request::TooLong;
                }
                c.request.extend_from_slice(part);
                if complete {
                    return Request::Line(std::mem::take(&mut c.request));
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Request::Pending,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return Request::Gone,
        }
    }
}

fn close(epoll: &Epoll, slot: &mut Option<Client>) {
    if let Some(c) = slot.take() {
        let _ = epoll.ctl(
            ControlOperation::Delete,
            c.stream.as_raw_fd(),
            EpollEvent::default(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

    /// A server on a fresh socket whose answer echoes the request's length and bytes.
    struct Server {
        path: PathBuf,
        stop: Arc<EventFd>,
        stopping: Arc<AtomicBool>,
        thread: Option<std::thread::JoinHandle<std::io::Result<()>>>,
    }

    impl Server {
        fn start(name: &str) -> Server {
            let path =
                std::env::temp_dir().join(format!("vhca-ctl-{name}-{}.sock", std::process::id()));
            let _ = std::fs::remove_file(&path);
            let listener = UnixListener::bind(&path).unwrap();
            let stop = Arc::new(EventFd::new(EFD_NONBLOCK).unwrap());
            let stopping = Arc::new(AtomicBool::new(false));
            let (st, sg) = (stop.clone(), stopping.clone());
            let thread = std::thread::spawn(move || {
                run(
                    &listener,
                    st.as_raw_fd(),
                    || sg.load(Ordering::Acquire),
                    |line| match std::str::from_utf8(line) {
                        Ok(s) => format!("echo {} {s}", line.len()),
                        Err(_) => error_line("not UTF-8"),
                    },
                )
            });
            Server {
                path,
                stop,
                stopping,
                thread: Some(thread),
            }
        }

        fn connect(&self) -> UnixStream {
            let s = UnixStream::connect(&self.path).unwrap();
            // A bound on a broken server, not a synchronisation: the answers below come at
            // once, while the old one-at-a-time loop made them wait 5 s per idle client.
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            s
        }

        fn ask(&self, req: &[u8]) -> String {
            let mut s = self.connect();
            s.write_all(req).unwrap();
            let mut line = String::new();
            std::io::BufReader::new(s).read_line(&mut line).unwrap();
            line
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.stopping.store(true, Ordering::Release);
            self.stop.write(1).unwrap();
            let r = self.thread.take().unwrap().join().unwrap();
            let _ = std::fs::remove_file(&self.path);
            if !std::thread::panicking() {
                r.unwrap();
            }
        }
    }

    fn still_open(s: &UnixStream) -> bool {
        s.set_nonblocking(true).unwrap();
        let mut b = [0u8; 1];
        let open = matches!((&*s).read(&mut b), Err(e) if e.kind() == ErrorKind::WouldBlock);
        s.set_nonblocking(false).unwrap();
        open
    }

    #[test]
    fn idle_clients_do_not_delay_a_request() {
        let srv = Server::start("idle");
        // Twenty clients that connect and say nothing (the old loop served them one by one,
        // each until its 5 s timeout) ...
        let idle: Vec<UnixStream> = (0..20).map(|_| srv.connect()).collect();
        // ... and one half-written request in front of the real one.
        let mut partial = srv.connect();
        partial.write_all(b"{\"cmd\":").unwrap();
        assert_eq!(srv.ask(b"vfs\n"), "echo 3 vfs\n");
        // The answer came while every idle client was still connected and waiting.
        assert!(idle.iter().all(still_open));
        assert!(still_open(&partial));
        partial.write_all(b"\"x\"}\n").unwrap();
        let mut line = String::new();
        std::io::BufReader::new(&partial)
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line, "echo 11 {\"cmd\":\"x\"}\n");
    }

    #[test]
    fn invalid_utf8_gets_a_reply() {
        let srv = Server::start("utf8");
        let line = srv.ask(b"\xff\xfe\x80 garbage\n");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["ok"], false);
        assert_eq!(v["error"], "not UTF-8");
    }

    #[test]
    fn a_request_without_newline_is_answered_at_end_of_writing() {
        let srv = Server::start("eof");
        let mut s = srv.connect();
        s.write_all(b"counters").unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut line = String::new();
        std::io::BufReader::new(s).read_line(&mut line).unwrap();
        assert_eq!(line, "echo 8 counters\n");
    }

    #[test]
    fn an_endless_line_is_refused_not_buffered() {
        let srv = Server::start("long");
        let mut s = srv.connect();
        let chunk = vec![b'a'; 8192];
        // Write until the server answers and closes; it must not keep reading forever.
        let mut sent = 0;
        while sent <= MAX_REQUEST + chunk.len() {
            match s.write(&chunk) {
                Ok(n) => sent += n,
                Err(_) => break,
            }
        }
        let mut line = String::new();
        std::io::BufReader::new(s).read_line(&mut line).unwrap();
        assert!(line.contains("no newline within"), "{line}");
    }

    #[test]
    fn clients_beyond_the_limit_are_told_busy_and_served_after() {
        let srv = Server::start("busy");
        let full: Vec<UnixStream> = (0..MAX_CLIENTS).map(|_| srv.connect()).collect();
        // Every slot is taken once the server has accepted them all: a request that gets an
        // answer proves they are (the server accepts in order).
        let extra = srv.ask(b"x\n");
        assert!(extra.contains("try again"), "{extra}");
        drop(full);
        // The slots come back: poll until one is free (each attempt is answered at once).
        let mut answer = srv.ask(b"x\n");
        for _ in 0..1000 {
            if answer == "echo 1 x\n" {
                break;
            }
            answer = srv.ask(b"x\n");
        }
        assert_eq!(answer, "echo 1 x\n");
    }

    #[test]
    fn a_client_that_leaves_at_once_costs_nothing() {
        let srv = Server::start("leave");
        for _ in 0..(MAX_CLIENTS * 4) {
            drop(srv.connect());
        }
        assert_eq!(srv.ask(b"vfs\n"), "echo 3 vfs\n");
    }
}
