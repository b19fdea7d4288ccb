//! A TCP proxy between Tessera and its database that a test controls, to make the network fail
//! the ways it does in production: connections reset (`cut`), a partition where packets vanish
//! and nothing is ever answered (`blackhole`), a slow link (`delay`), and recovery (`restore`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Pass,
    Delay(Duration),
    Blackhole,
    Cut,
}

pub struct FaultProxy {
    pub address: SocketAddr,
    mode: watch::Sender<Mode>,
    accepted: Arc<AtomicUsize>,
    /// Set by `lose_the_reply_to_the_next_commit`; the connection that next sends a COMMIT
    /// clears it and drops the database's answer.
    lose_commit_reply: Arc<AtomicBool>,
    accept_loop: JoinHandle<()>,
}

impl FaultProxy {
    /// A proxy on a port of its own, forwarding to `target` until told otherwise.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let address = listener.local_addr().expect("proxy address");
        let (mode, _) = watch::channel(Mode::Pass);
        let accepted = Arc::new(AtomicUsize::new(0));
        let lose_commit_reply = Arc::new(AtomicBool::new(false));
        let accept_loop = tokio::spawn(accept(
            listener,
            target,
            mode.clone(),
            accepted.clone(),
            lose_commit_reply.clone(),
        ));
        Self {
            address,
            mode,
            accepted,
            lose_commit_reply,
            accept_loop,
        }
    }

    /// The next `COMMIT` (Postgres' simple-query text) reaches the database, which commits, but
    /// its answer never reaches the client: that connection is closed instead. The client
    /// cannot tell whether its transaction was committed, as after a reset right after a
    /// commit in production.
    pub fn lose_the_reply_to_the_next_commit(&self) {
        self.lose_commit_reply.store(true, Ordering::SeqCst);
    }

    /// Closes every open connection and refuses new ones, as a database restart or a reset
    /// link does.
    pub fn cut(&self) {
        self.mode.send_replace(Mode::Cut);
    }

    /// Keeps connections open but carries nothing either way, and new connections never reach
    /// the database: a partition, where the client only learns of trouble from its own timers.
    pub fn blackhole(&self) {
        self.mode.send_replace(Mode::Blackhole);
    }

    /// Holds every chunk of bytes, in both directions, for `by` before passing it on.
    pub fn delay(&self, by: Duration) {
        self.mode.send_replace(Mode::Delay(by));
    }

    /// Back to forwarding. Connections that survived a blackhole carry on with what was held.
    pub fn restore(&self) {
        self.mode.send_replace(Mode::Pass);
    }

    /// Connections accepted so far: a new one after a cut shows that the client reconnected.
    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// `url` (a database URL) pointing at this proxy instead of the database itself.
    pub fn url_for(&self, url: &str) -> String {
        let mut url = url::Url::parse(url).expect("database url");
        url.set_ip_host(self.address.ip()).expect("ip host");
        url.set_port(Some(self.address.port())).expect("port");
        url.to_string()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.mode.send_replace(Mode::Cut);
        self.accept_loop.abort();
    }
}

/// Where a database URL's server listens.
pub fn server_address(url: &str) -> SocketAddr {
    let url = url::Url::parse(url).expect("database url");
    let host = url.host_str().expect("host");
    let port = url.port().unwrap_or(5432);
    format!("{host}:{port}")
        .parse()
        .unwrap_or_else(|_| panic!("the test database must be given by IP address, not {host}"))
}

async fn accept(
    listener: TcpListener,
    target: SocketAddr,
    mode: watch::Sender<Mode>,
    accepted: Arc<AtomicUsize>,
    lose_commit_reply: Arc<AtomicBool>,
) {
    while let Ok((inbound, _)) = listener.accept().await {
        if *mode.borrow() == Mode::Cut {
            drop(inbound);
            continue;
        }
        accepted.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(connect(
            inbound,
            target,
            mode.subscribe(),
            lose_commit_reply.clone(),
        ));
    }
}

/// One connection's side of `lose_the_reply_to_the_next_commit`.
#[derive(Clone)]
struct CommitReply {
    /// The proxy's request, taken by the first connection to send a COMMIT.
    armed: Arc<AtomicBool>,
    /// This connection sent that COMMIT: drop what the database answers.
    lost: Arc<AtomicBool>,
}

async fn connect(
    inbound: TcpStream,
    target: SocketAddr,
    mut mode: watch::Receiver<Mode>,
    lose_commit_reply: Arc<AtomicBool>,
) {
    // A connection made during a partition reaches the database only once it is over.
    let Ok(current) = mode
        .wait_for(|mode| *mode != Mode::Blackhole)
        .await
        .map(|mode| *mode)
    else {
        return;
    };
    if current == Mode::Cut {
        return;
    }
    let Ok(outbound) = TcpStream::connect(target).await else {
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let (inbound_read, inbound_write) = inbound.into_split();
    let (outbound_read, outbound_write) = outbound.into_split();
    let commit_reply = CommitReply {
        armed: lose_commit_reply,
        lost: Arc::new(AtomicBool::new(false)),
    };
    let upstream = tokio::spawn(pump(
        inbound_read,
        outbound_write,
        mode.clone(),
        Direction::ToDatabase(commit_reply.clone()),
    ));
    pump(
        outbound_read,
        inbound_write,
        mode,
        Direction::ToClient(commit_reply),
    )
    .await;
    // Either side ending ends the connection, as a proxy's would.
    upstream.abort();
}

enum Direction {
    ToDatabase(CommitReply),
    ToClient(CommitReply),
}

async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
    direction: Direction,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let read = tokio::select! {
            read = from.read(&mut buffer) => read,
            _ = mode.wait_for(|mode| *mode == Mode::Cut) => return,
        };
        let length = match read {
            Ok(0) | Err(_) => return,
            Ok(length) => length,
        };
        loop {
            let current = *mode.borrow_and_update();
            match current {
                Mode::Pass => break,
                Mode::Delay(by) => {
                    tokio::select! {
                        () = tokio::time::sleep(by) => break,
                        _ = mode.wait_for(|mode| *mode == Mode::Cut) => return,
                    }
                }
                Mode::Blackhole => {
                    if mode.changed().await.is_err() {
                        return;
                    }
                }
                Mode::Cut => return,
            }
        }
        match &direction {
            Direction::ToDatabase(reply) => {
                // Scanned only while armed, so other traffic passes untouched.
                let commit = reply.armed.load(Ordering::SeqCst)
                    && buffer[..length]
                        .windows(6)
                        .any(|window| window == b"COMMIT");
                if commit && reply.armed.swap(false, Ordering::SeqCst) {
                    // Marked before the COMMIT leaves, so its answer cannot slip through.
                    reply.lost.store(true, Ordering::SeqCst);
                }
            }
            // Ends this direction, and with it the connection.
            Direction::ToClient(reply) if reply.lost.load(Ordering::SeqCst) => return,
            Direction::ToClient(_) => {}
        }
        if to.write_all(&buffer[..length]).await.is_err() {
            return;
        }
    }
}
