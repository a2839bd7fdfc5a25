//! A fault-injecting TCP proxy on 127.0.0.1:0, in front of central.
//!
//! Each accepted connection takes the next queued fault ([`Proxy::next`]),
//! or else the standing one ([`Proxy::set`]). The proxy follows the HTTP/1.1
//! messages on a connection (by `Content-Length`), so a fault can aim at one
//! request or reply of a run (the satellite's client mostly keeps one
//! connection for all the round trips of a run) and at a byte counted from either end
//! of that message, however the message's size varies between runs:
//!
//! - [`Fault::Pass`]: bytes flow both ways untouched;
//! - [`Fault::CutRequest`]: after that byte of that request, both sides are
//!   closed (central never sees the whole request; at [`At::End`]`(0)` it
//!   does, and the client is gone while central works on it);
//! - [`Fault::CutReply`]: after that byte of that reply, both sides are
//!   closed (central processed the request);
//! - [`Fault::DropReply`]: that reply is read whole and held back, then both
//!   sides are closed: central applied the request, the client never heard;
//! - [`Fault::Delay`]: sleeps before forwarding the first byte of each
//!   direction;
//! - [`Fault::HangUp`]: the client hangs up a while after a whole request,
//!   having heard nothing (central may be in the middle of it);
//! - [`Fault::Pace`]: a slow link: each direction carries at most that many
//!   bytes per second.
//!
//! Bytes forwarded each way and the messages seen are counted per
//! connection, for assertions.
//!
//! A job may also spread its round trips over more than one connection (a
//! request sent ahead while the connection of the one before is still on
//! its way back to the client's pool). [`Proxy::arm`] aims a fault at a
//! message of the run instead: requests are numbered across the run's
//! connections in the order they begin, a reply takes its request's number,
//! and every connection carries the armed fault.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

/// A byte of a message: the stream is closed once the bytes before it were
/// forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    /// `n` bytes from the message's start (0: nothing of it).
    Start(u64),
    /// `n` bytes before its end, counted in the body (0: all of it).
    End(u64),
}

/// What the proxy does to one connection. `msg` counts the requests or
/// replies of the connection from 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    /// Forward everything.
    #[default]
    Pass,
    /// Close both sides at that byte of request `msg`.
    CutRequest { msg: usize, at: At },
    /// Close both sides at that byte of reply `msg`.
    CutReply { msg: usize, at: At },
    /// Forward the replies before `msg`; read reply `msg` whole, then close
    /// both sides without sending any of it.
    DropReply { msg: usize },
    /// Sleep before the first byte of each direction.
    Delay(Duration),
    /// Forward request `msg` whole, hold its reply back, and close both
    /// sides `after` the request's last byte (the client gave up while
    /// central works on it).
    HangUp { msg: usize, after: Duration },
    /// Bytes flow both ways at most this many bytes per second each.
    Pace(u64),
}

/// The size of one HTTP message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Msg {
    /// Header bytes (with the blank line).
    pub head: u64,
    /// All bytes.
    pub len: u64,
}

/// What happened on one connection.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnStats {
    /// The fault it was given.
    pub fault: Fault,
    /// Request bytes forwarded to central.
    pub up: u64,
    /// Reply bytes forwarded to the client.
    pub down: u64,
    /// Reply bytes read from central and not forwarded.
    pub held_back: u64,
    /// Whole requests seen.
    pub requests: Vec<Msg>,
    /// Whole replies seen.
    pub replies: Vec<Msg>,
    /// Whether the proxy closed it on purpose (the fault fired).
    pub faulted: bool,
}

#[derive(Debug)]
struct State {
    standing: Fault,
    queue: VecDeque<Fault>,
    /// Every connection (indices stay valid while they run).
    conns: Vec<ConnStats>,
    /// How many [`Proxy::take_connections`] already returned.
    taken: usize,
    /// The fault aimed at the run's messages, and whether the message
    /// after it meets it too ([`Proxy::arm`]).
    armed: Option<(Fault, bool)>,
    /// Every request by its number (sizes once whole), counted over all
    /// runs; a run's are those from `run_from`.
    run_requests: Vec<Option<Msg>>,
    /// Their replies, by the same numbers.
    run_replies: Vec<Option<Msg>>,
    /// The numbers of each connection's requests (counted over all runs).
    numbers: Vec<Vec<usize>>,
    /// The number of the run's first request.
    run_from: usize,
}

/// The messages of a run, numbered across its connections.
#[derive(Debug, Clone, Default)]
pub struct Run {
    /// Its connections, in order of arrival.
    pub conns: Vec<ConnStats>,
    /// Whole requests, in the order they began.
    pub requests: Vec<Msg>,
    /// Whole replies, by their request's number.
    pub replies: Vec<Msg>,
}

/// The proxy; stops accepting when dropped.
#[derive(Debug)]
pub struct Proxy {
    /// `http://127.0.0.1:<port>`, for the satellite's `[central] url`.
    pub url: String,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Starts a proxy to `target` (`http://host:port`), passing everything.
    pub async fn start(target: &str) -> Proxy {
        let target: SocketAddr = target
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .expect("target address");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let url = format!("http://{}", listener.local_addr().expect("proxy addr"));
        let state = Arc::new(Mutex::new(State {
            standing: Fault::Pass,
            queue: VecDeque::new(),
            conns: Vec::new(),
            taken: 0,
            armed: None,
            run_requests: Vec::new(),
            run_replies: Vec::new(),
            numbers: Vec::new(),
            run_from: 0,
        }));
        let shared = Arc::clone(&state);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (index, fault, armed) = {
                    let mut s = lock(&shared);
                    let (fault, armed) = match s.armed {
                        Some((fault, retried)) => (fault, Some(retried)),
                        None => (s.queue.pop_front().unwrap_or(s.standing), None),
                    };
                    s.conns.push(ConnStats {
                        fault,
                        ..ConnStats::default()
                    });
                    s.numbers.push(Vec::new());
                    (s.conns.len() - 1, fault, armed)
                };
                let conn = Conn {
                    state: Arc::clone(&shared),
                    index,
                    armed,
                };
                tokio::spawn(conn.run(client, target, fault));
            }
        });
        Proxy { url, state, task }
    }

    /// The fault of every following connection (after the queued ones).
    pub fn set(&self, fault: Fault) {
        lock(&self.state).standing = fault;
    }

    /// The fault of the next `n` connections (then the standing one again).
    pub fn next(&self, n: usize, fault: Fault) {
        lock(&self.state)
            .queue
            .extend(std::iter::repeat_n(fault, n));
    }

    /// Forgets the queued faults not yet taken by a connection.
    pub fn clear_queue(&self) {
        lock(&self.state).queue.clear();
    }

    /// The connections since the last [`Proxy::take_connections`], in
    /// order of arrival.
    pub fn connections(&self) -> Vec<ConnStats> {
        let s = lock(&self.state);
        s.conns[s.taken..].to_vec()
    }

    /// The connections since the last call, in order of arrival; a new
    /// run begins (its messages are numbered from 0).
    pub fn take_connections(&self) -> Vec<ConnStats> {
        self.take_run().conns
    }

    /// The run since the last [`Proxy::take_connections`] or
    /// [`Proxy::take_run`]; a new one begins.
    pub fn take_run(&self) -> Run {
        let mut s = lock(&self.state);
        let (from, to) = (s.taken, s.conns.len());
        s.taken = to;
        let next = s.run_requests.len();
        let first = std::mem::replace(&mut s.run_from, next);
        let whole = |m: &[Option<Msg>]| m[first..].iter().flatten().copied().collect();
        Run {
            conns: s.conns[from..].to_vec(),
            requests: whole(&s.run_requests),
            replies: whole(&s.run_replies),
        }
    }

    /// Aims `fault` at the run's messages on every following connection:
    /// its `msg` is a number in the run ([`Run`]); with `retried`, the
    /// message after it (a request sent once more after the fault) meets
    /// the same fault. Queued and standing faults wait until
    /// [`Proxy::disarm`].
    pub fn arm(&self, fault: Fault, retried: bool) {
        lock(&self.state).armed = Some((fault, retried));
    }

    /// Ends [`Proxy::arm`].
    pub fn disarm(&self) {
        lock(&self.state).armed = None;
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// How a direction ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// The sender closed (or an I/O error): the close is passed on.
    Closed,
    /// The fault fired: close both sides now.
    Fault,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    Up,
    Down,
}

/// What one direction does to message `msg`.
#[derive(Debug, Clone, Copy)]
enum Rule {
    None,
    Cut {
        msg: usize,
        at: At,
    },
    /// Hold reply `msg` back; close once it is whole if `close`.
    Hold {
        msg: usize,
        close: bool,
    },
    /// Close `after` request `msg` was forwarded whole.
    HangUp {
        msg: usize,
        after: Duration,
    },
}

struct Conn {
    state: Arc<Mutex<State>>,
    index: usize,
    /// Rules match run numbers: the fault's, and the one after it if
    /// `Some(true)` ([`Proxy::arm`]).
    armed: Option<bool>,
}

impl Conn {
    async fn run(self, client: TcpStream, target: SocketAddr, fault: Fault) {
        let Ok(server) = TcpStream::connect(target).await else {
            return;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let (client_read, client_write) = client.into_split();
        let (server_read, server_write) = server.into_split();
        let pace = match fault {
            Fault::Pace(rate) => Some(rate.max(1)),
            _ => None,
        };
        let (up_rule, down_rule, delay) = match fault {
            Fault::Pass | Fault::Pace(_) => (Rule::None, Rule::None, None),
            Fault::CutRequest { msg, at } => (Rule::Cut { msg, at }, Rule::None, None),
            Fault::CutReply { msg, at } => (Rule::None, Rule::Cut { msg, at }, None),
            Fault::DropReply { msg } => (Rule::None, Rule::Hold { msg, close: true }, None),
            Fault::Delay(d) => (Rule::None, Rule::None, Some(d)),
            Fault::HangUp { msg, after } => (
                Rule::HangUp { msg, after },
                Rule::Hold { msg, close: false },
                None,
            ),
        };
        let up = self.pump(Dir::Up, client_read, server_write, up_rule, delay, pace);
        let down = self.pump(Dir::Down, server_read, client_write, down_rule, delay, pace);
        tokio::pin!(up, down);
        // A fault closes both sides at once (every half is dropped); a plain
        // close of one direction lets the other finish.
        tokio::select! {
            end = &mut up => if end == End::Closed { down.await; },
            end = &mut down => if end == End::Closed { up.await; },
        }
    }

    /// Copies `from` to `to`, applying `rule`, after `delay` before the
    /// first byte, at most `pace` bytes per second.
    async fn pump(
        &self,
        dir: Dir,
        mut from: OwnedReadHalf,
        mut to: OwnedWriteHalf,
        rule: Rule,
        mut delay: Option<Duration>,
        pace: Option<u64>,
    ) -> End {
        // Paced, bytes go in small pieces, each followed by the time the
        // link takes to carry it, so a message's first bytes (its header)
        // arrive first, as on a real link.
        let mut buf = vec![0u8; if pace.is_some() { 2048 } else { 16 * 1024 }];
        let mut framer = Framer::default();
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => {
                    let _ = to.shutdown().await;
                    return End::Closed;
                }
                Ok(n) => n,
            };
            if let Some(d) = delay.take() {
                tokio::time::sleep(d).await;
            }
            let mut rest = &buf[..n];
            while !rest.is_empty() {
                if !framer.started {
                    framer.start(self.number(dir, framer.index));
                }
                // The bytes of the current message in this chunk.
                let span = framer.span(rest);
                let (send, fire) = match rule {
                    Rule::Cut { msg, at } if self.hit(msg, framer.key) => {
                        let point = match (at, framer.len) {
                            (At::Start(n), _) => n,
                            (At::End(n), Some(len)) => len.saturating_sub(n).max(framer.head),
                            // Still in the header: the point is beyond it.
                            (At::End(_), None) => u64::MAX,
                        };
                        let send = span.min(point.saturating_sub(framer.pos) as usize);
                        (send, framer.pos + send as u64 == point)
                    }
                    Rule::Hold { msg, close } if self.hit(msg, framer.key) => {
                        self.count(dir, 0, span as u64);
                        let done = framer.advance(span, &self.state, self.index, dir);
                        if close && done.is_some() {
                            return self.fault();
                        }
                        rest = &rest[span..];
                        continue;
                    }
                    _ => (span, false),
                };
                // Counted first, so the stats are complete when the client
                // has the bytes.
                self.count(dir, send as u64, 0);
                let done = framer.advance(send, &self.state, self.index, dir);
                if to.write_all(&rest[..send]).await.is_err() {
                    return End::Closed;
                }
                if fire {
                    return self.fault();
                }
                if let Rule::HangUp { msg, after } = rule
                    && done.is_some_and(|key| self.hit(msg, key))
                {
                    tokio::time::sleep(after).await;
                    return self.fault();
                }
                rest = &rest[span..];
            }
            if let Some(rate) = pace {
                tokio::time::sleep(Duration::from_secs_f64(n as f64 / rate as f64)).await;
            }
        }
    }

    fn count(&self, dir: Dir, forwarded: u64, held: u64) {
        let mut s = lock(&self.state);
        let c = &mut s.conns[self.index];
        match dir {
            Dir::Up => c.up += forwarded,
            Dir::Down => c.down += forwarded,
        }
        c.held_back += held;
    }

    /// Whether a rule aimed at `msg` applies to the message numbered `key`.
    fn hit(&self, msg: usize, key: usize) -> bool {
        key == msg || (self.armed == Some(true) && key == msg + 1)
    }

    /// The number rules compare with for message `index` of this
    /// connection in `dir`: `index` itself, or its number in the run when
    /// armed. A request takes the run's next number; a reply its request's.
    fn number(&self, dir: Dir, index: usize) -> (usize, usize) {
        let mut s = lock(&self.state);
        let number = match dir {
            Dir::Up => {
                let key = s.run_requests.len();
                s.run_requests.push(None);
                s.run_replies.push(None);
                s.numbers[self.index].push(key);
                key
            }
            Dir::Down => s.numbers[self.index]
                .get(index)
                .copied()
                .unwrap_or(usize::MAX),
        };
        // A message of an earlier run matches no armed rule.
        let key = number.checked_sub(s.run_from).unwrap_or(usize::MAX);
        (if self.armed.is_some() { key } else { index }, number)
    }

    fn fault(&self) -> End {
        lock(&self.state).conns[self.index].faulted = true;
        End::Fault
    }
}

/// Follows the HTTP/1.1 messages of one direction.
#[derive(Debug, Default)]
struct Framer {
    /// Which message (from 0).
    index: usize,
    /// Bytes of it seen.
    pos: u64,
    /// Its header length, once known.
    head: u64,
    /// Its whole length, once its header is in.
    len: Option<u64>,
    /// Its header so far.
    header: Vec<u8>,
    /// Whether its first byte came ([`Framer::start`]).
    started: bool,
    /// The number rules compare with ([`Conn::number`]).
    key: usize,
    /// Its number over all runs (whatever rules compare with).
    run: usize,
}

impl Framer {
    /// How many bytes of `rest` belong to the current message (learning its
    /// length from the header when it is in).
    fn span(&mut self, rest: &[u8]) -> usize {
        if self.len.is_none() {
            self.header.extend_from_slice(rest);
            if let Some(end) = self.header.windows(4).position(|w| w == b"\r\n\r\n") {
                let text = String::from_utf8_lossy(&self.header[..end]).to_ascii_lowercase();
                let body = text
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<u64>().ok());
                self.head = end as u64 + 4;
                // No length: chunked (not followed; the message never ends)
                // or no body.
                self.len = Some(match body {
                    Some(b) => self.head + b,
                    None if text.contains("transfer-encoding") => u64::MAX,
                    None => self.head,
                });
            } else {
                return rest.len();
            }
        }
        let left = self.len.map_or(u64::MAX, |l| l - self.pos);
        rest.len().min(usize::try_from(left).unwrap_or(usize::MAX))
    }

    /// A message begins; rules compare with `key`.
    fn start(&mut self, (key, run): (usize, usize)) {
        self.started = true;
        self.key = key;
        self.run = run;
    }

    /// Moves past `n` bytes; a finished message is counted, and its key
    /// returned.
    fn advance(&mut self, n: usize, state: &Mutex<State>, conn: usize, dir: Dir) -> Option<usize> {
        self.pos += n as u64;
        if Some(self.pos) != self.len {
            return None;
        }
        let msg = Msg {
            head: self.head,
            len: self.pos,
        };
        let mut s = lock(state);
        let (list, run) = match dir {
            Dir::Up => {
                s.conns[conn].requests.push(msg);
                (&mut s.run_requests, self.run)
            }
            Dir::Down => {
                s.conns[conn].replies.push(msg);
                (&mut s.run_replies, self.run)
            }
        };
        if let Some(slot) = list.get_mut(run) {
            *slot = Some(msg);
        }
        let key = self.key;
        *self = Framer {
            index: self.index + 1,
            ..Framer::default()
        };
        Some(key)
    }
}
