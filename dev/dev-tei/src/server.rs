//! The sockets of one simulated GPU: its listener, accept loop and HTTP/1 connections, and its
//! up/down life.
//!
//! This module owns the endpoint's lifecycle: while up, a listener on `127.0.0.1:port` accepts
//! connections, each served by hyper's `serve_connection`, raced against a per-connection kill
//! signal (a dropped-connection fault) and the endpoint's `alive` signal. Going down drops the
//! listener and the `alive` sender, so new connections are refused and open ones are closed
//! without an answer, like a dead container; coming back binds the same port again. It never
//! decides what a request answers (see `routes`).

use std::convert::Infallible;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use super::api::Resp;
use super::routes::{self, Outcome};
use super::state::GpuState;

/// One GPU's endpoint.
pub(crate) struct Endpoint {
    pub state: Arc<GpuState>,
    pub port: u16,
    running: Mutex<Option<Running>>,
    /// Serializes `set_down` calls, so two of them never race on the port.
    updown: tokio::sync::Mutex<()>,
    closed: AtomicBool,
}

/// An up period: dropping `alive` ends the accept loop and every connection of the period.
struct Running {
    alive: watch::Sender<()>,
    accept: JoinHandle<()>,
}

impl Endpoint {
    /// Binds `port` (0: an ephemeral one) and starts serving.
    pub fn start(state: Arc<GpuState>, port: u16) -> io::Result<Arc<Self>> {
        let listener = listen(port)?;
        let port = listener.local_addr()?.port();
        let endpoint = Arc::new(Self {
            state,
            port,
            running: Mutex::new(None),
            updown: tokio::sync::Mutex::new(()),
            closed: AtomicBool::new(false),
        });
        endpoint.serve(listener);
        Ok(endpoint)
    }

    fn serve(&self, listener: TcpListener) {
        let (alive, alive_rx) = watch::channel(());
        let accept = tokio::spawn(accept_loop(listener, self.state.clone(), alive_rx));
        *self.running.lock() = Some(Running { alive, accept });
    }

    pub fn is_down(&self) -> bool {
        self.running.lock().is_none()
    }

    /// Down: returns once the listener is closed and open connections are told to close.
    /// Up: returns once the same port listens again (an error if it cannot be bound, or the
    /// simulator was shut down).
    pub async fn set_down(&self, down: bool) -> io::Result<()> {
        let _serial = self.updown.lock().await;
        if down {
            let running = self.running.lock().take();
            if let Some(running) = running {
                drop(running.alive);
                // The accept loop drops the listener as it returns.
                let _ = running.accept.await;
            }
            return Ok(());
        }
        if self.closed.load(Ordering::SeqCst) {
            return Err(io::Error::other("the simulator was shut down"));
        }
        if !self.is_down() {
            return Ok(());
        }
        self.serve(listen(self.port)?);
        Ok(())
    }

    /// Stops serving for good, without waiting (for `Drop`).
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        if let Some(running) = self.running.lock().take() {
            running.accept.abort();
        }
    }

    /// Stops serving for good and waits for the listener to close.
    pub async fn shutdown(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let _ = self.set_down(true).await;
    }
}

/// A listener on loopback with SO_REUSEADDR, so a port freed by an outage can be bound again at
/// once despite connections in TIME_WAIT.
fn listen(port: u16) -> io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))?;
    socket.listen(1024)
}

async fn accept_loop(listener: TcpListener, state: Arc<GpuState>, mut alive: watch::Receiver<()>) {
    loop {
        let stream = tokio::select! {
            _ = alive.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::debug!(%err, "dev-tei accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve_connection(stream, state.clone(), alive.clone()));
    }
}

async fn serve_connection(stream: TcpStream, state: Arc<GpuState>, mut alive: watch::Receiver<()>) {
    let kill = Arc::new(Notify::new());
    let service_kill = kill.clone();
    let service = service_fn(move |req| {
        let state = state.clone();
        let kill = service_kill.clone();
        async move {
            match routes::handle(&state, req).await {
                Outcome::Respond(resp) => Ok::<Resp, Infallible>(resp),
                Outcome::Drop => {
                    // Never answer: the kill branch below drops the connection first.
                    kill.notify_one();
                    std::future::pending().await
                }
            }
        }
    });
    let conn = http1::Builder::new().timer(TokioTimer::new()).serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        _ = conn => {}
        _ = kill.notified() => {}
        _ = alive.changed() => {}
    }
}
