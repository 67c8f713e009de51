//! A server-side TLS stream over rustls's unbuffered API that holds no buffer while its
//! connection waits.
//!
//! rustls's buffered `ServerConnection` (what tokio-rustls wraps) keeps a 4 KiB receive buffer
//! for the life of every connection: it is resized to 4 KiB before each read and never below.
//! A server of alert-based nodes holds most connections waiting, so that buffer was most of
//! what a waiting TLS node cost (`BENCHMARKS.md`, "Ingest at the machine's limits"). Here the
//! stream owns its buffers and keeps them only while bytes are in them:
//!
//! - `incoming`: TLS bytes read from the socket, not yet processed. The socket is read only
//!   once it is readable (readiness first, then the read), so a waiting connection holds no
//!   receive buffer; once its records are processed the buffer is given back, unless the last
//!   read filled it (a client that keeps sending keeps its buffer).
//! - `plaintext`: decrypted application data the reader's buffer could not take yet.
//! - `outgoing`: encoded and encrypted bytes not yet written to the socket. Nothing new is
//!   encrypted while any are left (a writer waits: backpressure), and it is given back once
//!   written.
//!
//! Invariants: every state rustls reports is handled before `process_tls_records` is called
//! again, and its `discard` applied first; `TransmitTlsData::done` is called only once
//! `outgoing` is written in full; decrypted data is never dropped (what the caller's buffer
//! cannot take waits in `plaintext`). The reading and writing halves (`tokio::io::split`) are
//! polled from one task; when the writer's processing finds data for the reader, it wakes the
//! task.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use rustls::ServerConfig;
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedStatus};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// What one read from the socket asks for: a record of a quiet client fits; one that fills it
/// reads [`READ_BUSY`] next time.
const READ_QUIET: usize = 4 * 1024;
/// A busy client's read: a full record (16 KiB and its framing) and more.
const READ_BUSY: usize = 32 * 1024;
/// Most TLS bytes held unprocessed: a 64 KiB handshake message (rustls's own limit) and its
/// framing. A peer that sends more without completing a record is refused.
const INCOMING_MAX: usize = 80 * 1024;
/// Most plaintext encrypted in one `poll_write`, so that `outgoing` stays bounded.
const WRITE_MAX: usize = 64 * 1024;

/// A TLS connection to a client, handshake done.
pub struct TlsStream {
    tcp: TcpStream,
    tls: UnbufferedServerConnection,
    incoming: Vec<u8>,
    /// The last read filled the receive buffer: the client has more.
    busy: bool,
    plaintext: Vec<u8>,
    /// How much of `plaintext` the reader has taken.
    taken: usize,
    outgoing: Vec<u8>,
    /// How much of `outgoing` is written.
    sent: usize,
    /// The peer sent close_notify, or closed the socket: reads end.
    peer_closed: bool,
    close_notify_sent: bool,
}

/// What `advance` should do with a `WriteTraffic` state.
#[derive(Clone, Copy)]
enum Want<'a> {
    Nothing,
    Encrypt(&'a [u8]),
    CloseNotify,
}

/// Where `advance` left the connection.
enum Step {
    /// Progress was made inside; ask again.
    Again,
    /// `outgoing` must be written before anything else.
    Flush,
    /// The handshake needs more bytes from the peer.
    Read,
    /// The handshake is done and nothing is pending: read for data, or write.
    Open,
    /// `Want::Encrypt`'s bytes (or the close_notify, 0) are in `outgoing`.
    Encrypted(usize),
    /// Both sides sent close_notify.
    Closed,
}

/// Why a handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("{0}")]
    Io(#[from] io::Error),
}

impl TlsStream {
    fn new(tcp: TcpStream, config: Arc<ServerConfig>) -> Result<Self, rustls::Error> {
        Ok(Self {
            tcp,
            tls: UnbufferedServerConnection::new(config)?,
            incoming: Vec::new(),
            busy: false,
            plaintext: Vec::new(),
            taken: 0,
            outgoing: Vec::new(),
            sent: 0,
            peer_closed: false,
            close_notify_sent: false,
        })
    }

    /// Runs the server side of the handshake on `tcp`. On failure, the alert rustls has for
    /// the peer is sent (best effort) before the error is returned.
    pub async fn accept(tcp: TcpStream, config: Arc<ServerConfig>) -> Result<Self, HandshakeError> {
        let mut stream = Self::new(tcp, config)?;
        match std::future::poll_fn(|cx| stream.poll_handshake(cx)).await {
            Ok(()) => Ok(stream),
            Err(e) => {
                stream.send_alert().await;
                Err(e)
            }
        }
    }

    /// The client's certificate chain, when it sent one (and it was verified).
    pub fn peer_certificates(&self) -> Option<&[rustls::pki_types::CertificateDer<'static>]> {
        self.tls.peer_certificates()
    }

    /// Bytes held in buffers (receive, plaintext, send): none while the connection waits.
    #[cfg(test)]
    pub(crate) fn buffered_capacity(&self) -> usize {
        self.incoming.capacity() + self.plaintext.capacity() + self.outgoing.capacity()
    }

    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), HandshakeError>> {
        loop {
            if !self.tls.is_handshaking() && self.sent == self.outgoing.len() {
                return Poll::Ready(Ok(()));
            }
            match self.advance(Want::Nothing, None)? {
                Step::Again | Step::Encrypted(_) => {}
                Step::Flush => ready!(self.poll_flush_outgoing(cx))?,
                Step::Read => {
                    if ready!(self.poll_fill(cx))? == 0 {
                        return Poll::Ready(Err(closed_in_handshake()));
                    }
                }
                // A TLS 1.3 server may send before the client's Finished came: still waiting.
                Step::Open if self.tls.is_handshaking() => {
                    if ready!(self.poll_fill(cx))? == 0 {
                        return Poll::Ready(Err(closed_in_handshake()));
                    }
                }
                Step::Open => {}
                Step::Closed => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "peer closed the TLS session during the handshake",
                    )
                    .into()));
                }
            }
        }
    }

    /// After a failed handshake: what rustls queued for the peer (a fatal alert), written
    /// within a second if the socket takes it.
    async fn send_alert(&mut self) {
        self.outgoing.clear();
        self.sent = 0;
        for _ in 0..4 {
            let UnbufferedStatus { state, .. } = self.tls.process_tls_records(&mut []);
            match state {
                Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                    let encoded = append_with(&mut self.outgoing, 64, |out| {
                        encode.encode(out).map_err(encode_retry)
                    });
                    if encoded.is_err() {
                        break;
                    }
                }
                Ok(ConnectionState::TransmitTlsData(transmit)) => {
                    transmit.done();
                    break;
                }
                _ => break,
            }
        }
        if !self.outgoing.is_empty() {
            let flush = std::future::poll_fn(|cx| self.poll_flush_outgoing(cx));
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), flush).await;
        }
    }

    /// Handles the state rustls is in, given what is in `incoming`. Decrypted records go to
    /// `sink` while it has room, the rest to `plaintext`.
    fn advance(&mut self, want: Want<'_>, mut sink: Option<&mut ReadBuf<'_>>) -> io::Result<Step> {
        let UnbufferedStatus { discard, state } = self.tls.process_tls_records(&mut self.incoming);
        let step = match state.map_err(tls_error)? {
            ConnectionState::ReadTraffic(mut traffic) => {
                while let Some(record) = traffic.next_record() {
                    let mut payload = record.map_err(tls_error)?.payload;
                    if let Some(out) = sink.as_deref_mut() {
                        let n = payload.len().min(out.remaining());
                        out.put_slice(&payload[..n]);
                        payload = &payload[n..];
                    }
                    self.plaintext.extend_from_slice(payload);
                }
                Step::Again
            }
            ConnectionState::EncodeTlsData(mut encode) => {
                append_with(&mut self.outgoing, 4096, |out| {
                    encode.encode(out).map_err(encode_retry)
                })?;
                Step::Again
            }
            ConnectionState::TransmitTlsData(transmit) => {
                if self.sent < self.outgoing.len() {
                    Step::Flush
                } else {
                    transmit.done();
                    Step::Again
                }
            }
            ConnectionState::BlockedHandshake => Step::Read,
            ConnectionState::WriteTraffic(mut traffic) => match want {
                Want::Nothing => Step::Open,
                Want::Encrypt(data) => {
                    // Each record adds at most 5 bytes of header, 16 of tag and 1 of type
                    // (TLS 1.3) or 8 of explicit nonce (TLS 1.2).
                    let guess = data.len() + (data.len() / 16_384 + 1) * 32;
                    append_with(&mut self.outgoing, guess, |out| {
                        traffic.encrypt(data, out).map_err(encrypt_retry)
                    })?;
                    Step::Encrypted(data.len())
                }
                Want::CloseNotify => {
                    append_with(&mut self.outgoing, 64, |out| {
                        traffic.queue_close_notify(out).map_err(encrypt_retry)
                    })?;
                    Step::Encrypted(0)
                }
            },
            ConnectionState::PeerClosed => {
                self.peer_closed = true;
                Step::Again
            }
            ConnectionState::Closed => {
                self.peer_closed = true;
                Step::Closed
            }
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "TLS: early data, which this server does not accept",
                ));
            }
        };
        self.incoming.drain(..discard);
        if self.incoming.is_empty() && !self.busy {
            self.incoming = Vec::new();
        }
        Ok(step)
    }

    /// Reads what the socket has into `incoming`, waiting for readiness without a buffer.
    /// `Ok(0)`: the peer closed the socket.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.incoming.len() >= INCOMING_MAX {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "TLS: more than 80 KiB without a complete record",
            )));
        }
        loop {
            ready!(self.tcp.poll_read_ready(cx))?;
            self.incoming
                .reserve(if self.busy { READ_BUSY } else { READ_QUIET });
            let spare = self.incoming.capacity() - self.incoming.len();
            match self.tcp.try_read_buf(&mut self.incoming) {
                Ok(n) => {
                    self.busy = n == spare;
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if self.incoming.is_empty() {
                        self.incoming = Vec::new();
                    }
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// Writes `outgoing` in full, then gives it back.
    fn poll_flush_outgoing(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.outgoing.len() {
            let n = ready!(Pin::new(&mut self.tcp).poll_write(cx, &self.outgoing[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.outgoing = Vec::new();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }

    /// Encrypts `want` once the connection can take it. `Ready(Ok(n))`: `n` bytes are in
    /// `outgoing` (written, or being written).
    fn poll_encrypt(&mut self, cx: &mut Context<'_>, want: Want<'_>) -> Poll<io::Result<usize>> {
        ready!(self.poll_flush_outgoing(cx))?;
        loop {
            let had_plaintext = self.plaintext.len() > self.taken;
            let was_closed = self.peer_closed;
            let step = self.advance(want, None)?;
            if (!had_plaintext && self.plaintext.len() > self.taken)
                || (!was_closed && self.peer_closed)
            {
                // Found while writing: the reader, polled from the same task, must look again.
                cx.waker().wake_by_ref();
            }
            match step {
                Step::Again => {}
                Step::Flush => ready!(self.poll_flush_outgoing(cx))?,
                Step::Encrypted(n) => {
                    if let Poll::Ready(Err(e)) = self.poll_flush_outgoing(cx) {
                        return Poll::Ready(Err(e));
                    }
                    return Poll::Ready(Ok(n));
                }
                Step::Read | Step::Open => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::NotConnected,
                        "TLS handshake not complete",
                    )));
                }
                Step::Closed => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
            }
        }
    }
}

impl AsyncRead for TlsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let filled = buf.filled().len();
        loop {
            if this.taken < this.plaintext.len() {
                let n = (this.plaintext.len() - this.taken).min(buf.remaining());
                buf.put_slice(&this.plaintext[this.taken..this.taken + n]);
                this.taken += n;
                if this.taken == this.plaintext.len() {
                    this.plaintext = Vec::new();
                    this.taken = 0;
                }
            }
            if buf.filled().len() > filled || buf.remaining() == 0 || this.peer_closed {
                return Poll::Ready(Ok(()));
            }
            match this.advance(Want::Nothing, Some(&mut *buf))? {
                Step::Again | Step::Encrypted(_) => {}
                Step::Flush => ready!(this.poll_flush_outgoing(cx))?,
                Step::Read | Step::Open => {
                    if ready!(this.poll_fill(cx))? == 0 {
                        this.peer_closed = true;
                    }
                }
                Step::Closed => this.peer_closed = true,
            }
        }
    }
}

impl AsyncWrite for TlsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if this.close_notify_sent {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let data = &data[..data.len().min(WRITE_MAX)];
        this.poll_encrypt(cx, Want::Encrypt(data))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_flush_outgoing(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.close_notify_sent {
            ready!(this.poll_encrypt(cx, Want::CloseNotify))?;
            this.close_notify_sent = true;
        }
        ready!(this.poll_flush_outgoing(cx))?;
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}

/// Appends what `write` puts into a slice of `out`: first `guess` bytes of room, then as many
/// as it says it needs (`Err(Some(n))`). `Err(None)`: it cannot.
fn append_with(
    out: &mut Vec<u8>,
    guess: usize,
    mut write: impl FnMut(&mut [u8]) -> Result<usize, Option<usize>>,
) -> io::Result<()> {
    let start = out.len();
    let mut room = guess;
    loop {
        out.resize(start + room, 0);
        match write(&mut out[start..]) {
            Ok(n) => {
                out.truncate(start + n);
                return Ok(());
            }
            Err(Some(needed)) if needed > room => room = needed,
            Err(_) => {
                out.truncate(start);
                return Err(io::Error::other("TLS: cannot encode a record"));
            }
        }
    }
}

fn closed_in_handshake() -> HandshakeError {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "peer closed the connection during the TLS handshake",
    )
    .into()
}

/// For [`append_with`]: the room an encoding asked for, or `None` when more room won't help.
fn encode_retry(e: EncodeError) -> Option<usize> {
    match e {
        EncodeError::InsufficientSize(s) => Some(s.required_size),
        EncodeError::AlreadyEncoded => None,
    }
}

/// For [`append_with`]: as [`encode_retry`], for encryption.
fn encrypt_retry(e: EncryptError) -> Option<usize> {
    match e {
        EncryptError::InsufficientSize(s) => Some(s.required_size),
        EncryptError::EncryptExhausted => None,
    }
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

#[cfg(test)]
mod tests;
