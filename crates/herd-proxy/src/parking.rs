//! Released client connections (`[gateway] idle_release`), parked without a task.
//!
//! A keep-alive connection that hyper has let go of is nothing but a socket and what must
//! outlive its task (the peer address, its `max_connections` permit, its `max_conn_per_ip`
//! count). Each one would otherwise keep a task, a reactor registration and a timer for as long
//! as it idles, which together weigh more than nginx's whole idle connection. So the task ends:
//! the socket leaves tokio's reactor and is watched, with every other parked socket of the
//! same gateway thread (shard), by one readiness queue of its own (epoll or kqueue through
//! `mio`), whose descriptor one task per shard waits on. The first byte (or the client's close) takes the connection
//! out and hands it back, as a fresh tokio socket, to start a new connection task. The same task
//! closes parked connections at their `idle_timeout` (swept once a second, so at most a second
//! late) and all of them at shutdown.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use mio::unix::SourceFd;
use slab::Slab;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use herd_core::ConnectionStats;

/// Events taken from the readiness queue per call.
const EVENTS: usize = 256;

/// Parked connections of one gateway; `K` is what each keeps besides its socket.
pub(crate) struct Parking<K> {
    epoch: Instant,
    registry: mio::Registry,
    /// The readiness queue, until `run` takes it.
    poll: Mutex<Option<mio::Poll>>,
    lot: Mutex<Lot<K>>,
    /// `parked` is kept equal to the number of parked connections.
    stats: Arc<ConnectionStats>,
}

struct Lot<K> {
    parked: Slab<Entry<K>>,
    /// Tells a reused slot from the connection an older event was about.
    generation: u32,
    closed: bool,
}

struct Entry<K> {
    stream: std::net::TcpStream,
    keep: K,
    /// Milliseconds since `epoch`.
    deadline: u64,
    generation: u32,
}

impl<K> std::fmt::Debug for Parking<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parking")
            .field("parked", &self.lot().parked.len())
            .finish_non_exhaustive()
    }
}

fn token(key: usize, generation: u32) -> mio::Token {
    // Slab keys stay far below 2^32 (one per open file); the high half carries the generation.
    mio::Token((key & 0xffff_ffff) | (usize::try_from(generation).unwrap_or(0) << 32))
}

fn untoken(token: mio::Token) -> (usize, u32) {
    (
        token.0 & 0xffff_ffff,
        u32::try_from(token.0 >> 32).unwrap_or(u32::MAX),
    )
}

/// Registers the readiness queue's own descriptor with tokio's reactor.
#[allow(unsafe_code)]
fn watch_queue(poll: mio::Poll) -> io::Result<AsyncFd<mio::Poll>> {
    // SAFETY: `mio::Poll` owns its epoll/kqueue descriptor, keeps it open until it is dropped
    // and always returns the same one from `as_raw_fd`; the `AsyncFd` owns the `Poll`, so the
    // descriptor outlives the registration (tokio's one requirement).
    unsafe { AsyncFd::register_with_interest(poll, Interest::READABLE) }.map_err(io::Error::from)
}

impl<K> Parking<K> {
    fn lot(&self) -> MutexGuard<'_, Lot<K>> {
        self.lot.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<K: Send + 'static> Parking<K> {
    /// # Errors
    /// When the operating system refuses a new readiness queue (out of file descriptors).
    pub(crate) fn new(stats: Arc<ConnectionStats>) -> io::Result<Arc<Self>> {
        const {
            assert!(usize::BITS >= 64, "parking tokens need 64-bit usize");
        }
        let poll = mio::Poll::new()?;
        let registry = poll.registry().try_clone()?;
        Ok(Arc::new(Parking {
            epoch: Instant::now(),
            registry,
            poll: Mutex::new(Some(poll)),
            lot: Mutex::new(Lot {
                parked: Slab::new(),
                generation: 0,
                closed: false,
            }),
            stats,
        }))
    }

    fn millis(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// Parks a connection until its next byte, or closes it at `deadline`. Refused (the
    /// connection is closed) at shutdown or when the socket cannot be moved.
    pub(crate) fn park(&self, stream: tokio::net::TcpStream, keep: K, deadline: Instant) {
        let stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "could not park a released connection; closing it");
                return;
            }
        };
        let deadline = self.millis(deadline);
        let mut lot = self.lot();
        if lot.closed {
            return;
        }
        lot.generation = lot.generation.wrapping_add(1);
        let generation = lot.generation;
        let entry = lot.parked.vacant_entry();
        let fd = stream.as_raw_fd();
        let registered = self.registry.register(
            &mut SourceFd(&fd),
            token(entry.key(), generation),
            mio::Interest::READABLE,
        );
        match registered {
            Ok(()) => {
                entry.insert(Entry {
                    stream,
                    keep,
                    deadline,
                    generation,
                });
                self.stats.parked.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::debug!(error = %e, "could not park a released connection; closing it");
            }
        }
    }

    /// Takes the connection an event was about out of the queue.
    fn take(&self, token: mio::Token) -> Option<(std::net::TcpStream, K)> {
        let (key, generation) = untoken(token);
        let mut lot = self.lot();
        if lot.closed || lot.parked.get(key)?.generation != generation {
            return None;
        }
        let entry = lot.parked.remove(key);
        self.stats.parked.fetch_sub(1, Ordering::Relaxed);
        drop(lot);
        let _ = self
            .registry
            .deregister(&mut SourceFd(&entry.stream.as_raw_fd()));
        Some((entry.stream, entry.keep))
    }

    /// Closes the parked connections whose deadline has passed; returns how many.
    fn sweep(&self, now: Instant) -> usize {
        let now = self.millis(now);
        let mut lot = self.lot();
        let before = lot.parked.len();
        lot.parked.retain(|_, e| {
            let keep = e.deadline > now;
            if !keep {
                self.forget(&e.stream);
            }
            keep
        });
        let closed = before - lot.parked.len();
        self.stats
            .parked
            .fetch_sub(closed as u64, Ordering::Relaxed);
        // After a burst, give back most of the room it took (occupied slots never move).
        if lot.parked.len() < lot.parked.capacity() / 4 {
            lot.parked.shrink_to_fit();
        }
        closed
    }

    /// Takes a socket out of the readiness queue before it is closed (closing alone would
    /// leave it there while another process still shares the socket).
    fn forget(&self, stream: &std::net::TcpStream) {
        let _ = self.registry.deregister(&mut SourceFd(&stream.as_raw_fd()));
    }

    /// Shutdown (or the watcher's end): closes every parked connection now and refuses any
    /// parked later.
    fn close(&self) -> usize {
        let mut lot = self.lot();
        lot.closed = true;
        let n = lot.parked.len();
        for e in lot.parked.drain() {
            self.forget(&e.stream);
        }
        lot.parked.shrink_to_fit();
        self.stats.parked.fetch_sub(n as u64, Ordering::Relaxed);
        n
    }

    /// How many connections are parked.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lot().parked.len()
    }

    /// Watches the parked connections until `shutdown`, handing each that has input (or was
    /// closed by its client) to `resume`, and closing those past their deadline. However it
    /// ends (a panic in `resume` too), every parked connection is closed and no more are taken.
    pub(crate) async fn run(
        self: Arc<Self>,
        shutdown: CancellationToken,
        resume: impl Fn(tokio::net::TcpStream, K),
    ) {
        let _closing = Closing(&self);
        let poll = self
            .poll
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let mut queue = match poll.map(watch_queue) {
            Some(Ok(q)) => Some(q),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "cannot watch released connections; they are closed instead");
                self.close();
                None
            }
            None => None,
        };
        let mut events = mio::Events::with_capacity(EVENTS);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let ready = async {
                match queue.as_mut() {
                    Some(q) => q.readable_mut().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                // Shutdown first: no connection is resumed once it has begun.
                biased;
                () = shutdown.cancelled() => {
                    let closed = self.close();
                    tracing::debug!(closed, "closed released client connections at shutdown");
                    return;
                }
                _ = tick.tick() => {
                    let closed = self.sweep(Instant::now());
                    if closed > 0 {
                        tracing::debug!(closed, "closed idle released client connections");
                    }
                }
                guard = ready => {
                    let drained = match guard {
                        Ok(mut guard) => self.drain(&mut guard, &mut events, &resume),
                        Err(e) => Err(e),
                    };
                    if let Err(e) = drained {
                        // Not expected; rather than spin on a broken queue, close what it
                        // holds and stop parking (released connections are then closed).
                        tracing::warn!(error = %e, "the released connections' readiness queue failed; closing them");
                        self.close();
                        queue = None;
                    }
                }
            }
        }
    }

    /// Resumes every connection the queue reports ready, until it has nothing more.
    fn drain(
        &self,
        guard: &mut tokio::io::unix::AsyncFdReadyMutGuard<'_, mio::Poll>,
        events: &mut mio::Events,
        resume: &impl Fn(tokio::net::TcpStream, K),
    ) -> io::Result<()> {
        loop {
            match guard.get_inner_mut().poll(events, Some(Duration::ZERO)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            let mut seen = 0;
            for event in events.iter() {
                seen += 1;
                let Some((stream, keep)) = self.take(event.token()) else {
                    continue;
                };
                match tokio::net::TcpStream::from_std(stream) {
                    Ok(stream) => resume(stream, keep),
                    Err(e) => tracing::debug!(error = %e, "could not resume a released connection"),
                }
            }
            // Drained: wait for the queue's next edge. (A full batch may have more.)
            if seen < EVENTS {
                guard.clear_ready();
                return Ok(());
            }
        }
    }
}

/// Closes the parking when its watcher ends, whichever way.
struct Closing<'a, K: Send + 'static>(&'a Parking<K>);

impl<K: Send + 'static> Drop for Closing<'_, K> {
    fn drop(&mut self) {
        self.0.close();
    }
}

impl<K> Drop for Parking<K> {
    fn drop(&mut self) {
        let n = self.lot().parked.len();
        self.stats.parked.fetch_sub(n as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn pair() -> (tokio::net::TcpStream, tokio::net::TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(l.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = l.accept().await.unwrap();
        (client, server)
    }

    #[test]
    fn tokens_carry_key_and_generation() {
        for (key, generation) in [(0, 0), (1, 1), (70_000, u32::MAX), (0xffff_ffff, 7)] {
            assert_eq!(untoken(token(key, generation)), (key, generation));
        }
    }

    #[tokio::test]
    async fn a_byte_resumes_a_parked_socket_and_the_deadline_closes_another() {
        let stats = Arc::new(ConnectionStats::default());
        let parking = Parking::<u32>::new(Arc::clone(&stats)).unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let runner = tokio::spawn(Arc::clone(&parking).run(stop.clone(), move |s, k| {
            let _ = tx.send((s, k));
        }));
        let (mut c1, s1) = pair().await;
        let (mut c2, s2) = pair().await;
        let far = Instant::now() + Duration::from_secs(60);
        parking.park(s1, 1, far);
        parking.park(s2, 2, Instant::now());
        assert_eq!(parking.len(), 2);
        assert_eq!(stats.parked.load(Ordering::Relaxed), 2);
        c1.write_all(b"x").await.unwrap();
        let (mut s1, k) = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(k, 1);
        let mut b = [0u8; 1];
        s1.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"x");
        // The other one is closed by the sweep (within about a second), never resumed.
        let mut buf = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(5), c2.read_to_end(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n, 0);
        assert_eq!(parking.len(), 0);
        assert_eq!(stats.parked.load(Ordering::Relaxed), 0);
        assert!(rx.try_recv().is_err());
        stop.cancel();
        runner.await.unwrap();
    }

    async fn read_eof(c: &mut tokio::net::TcpStream) -> usize {
        let mut buf = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut buf))
            .await
            .expect("closed within 5 s")
            .unwrap()
    }

    #[tokio::test]
    async fn shutdown_closes_parked_sockets_and_refuses_new_ones() {
        let stats = Arc::new(ConnectionStats::default());
        let parking = Parking::<()>::new(Arc::clone(&stats)).unwrap();
        let stop = CancellationToken::new();
        let runner = tokio::spawn(Arc::clone(&parking).run(stop.clone(), |_, ()| {}));
        let (mut c1, s1) = pair().await;
        parking.park(s1, (), Instant::now() + Duration::from_secs(60));
        assert_eq!(stats.parked.load(Ordering::Relaxed), 1);
        stop.cancel();
        runner.await.unwrap();
        assert_eq!(read_eof(&mut c1).await, 0);
        assert_eq!(stats.parked.load(Ordering::Relaxed), 0);
        let (mut c2, s2) = pair().await;
        parking.park(s2, (), Instant::now() + Duration::from_secs(60));
        assert_eq!(parking.len(), 0);
        assert_eq!(read_eof(&mut c2).await, 0);
    }

    #[tokio::test]
    async fn a_panicking_watcher_closes_what_it_watched() {
        let stats = Arc::new(ConnectionStats::default());
        let parking = Parking::<()>::new(Arc::clone(&stats)).unwrap();
        let runner = tokio::spawn(
            Arc::clone(&parking).run(CancellationToken::new(), |_, ()| panic!("resume failed")),
        );
        let (mut c1, s1) = pair().await;
        let (mut c2, s2) = pair().await;
        let far = Instant::now() + Duration::from_secs(60);
        parking.park(s1, (), far);
        parking.park(s2, (), far);
        c1.write_all(b"x").await.unwrap();
        assert!(runner.await.is_err(), "the watcher panicked");
        // The other parked socket is closed, not left unwatched, and nothing parks any more.
        assert_eq!(read_eof(&mut c2).await, 0);
        assert_eq!(stats.parked.load(Ordering::Relaxed), 0);
        let (mut c3, s3) = pair().await;
        parking.park(s3, (), far);
        assert_eq!(read_eof(&mut c3).await, 0);
    }

    #[tokio::test]
    async fn sockets_with_input_before_parking_resume_in_full_batches() {
        // Input already waiting when a socket is parked is reported at once; more sockets
        // than one batch of events, all ready together, all resume exactly once.
        let parking = Parking::<usize>::new(Arc::default()).unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut pairs = Vec::new();
        for _ in 0..(EVENTS + 10) {
            let (mut c, s) = pair().await;
            c.write_all(b"y").await.unwrap();
            pairs.push((c, s));
        }
        let far = Instant::now() + Duration::from_secs(60);
        let mut clients = Vec::new();
        for (k, (c, s)) in pairs.into_iter().enumerate() {
            parking.park(s, k, far);
            clients.push(c);
        }
        let stop = CancellationToken::new();
        let runner = tokio::spawn(Arc::clone(&parking).run(stop.clone(), move |_, k| {
            let _ = tx.send(k);
        }));
        let mut got = std::collections::HashSet::new();
        while got.len() < clients.len() {
            let k = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .unwrap()
                .unwrap();
            assert!(got.insert(k), "resumed twice: {k}");
        }
        assert_eq!(parking.len(), 0);
        stop.cancel();
        runner.await.unwrap();
    }
}
