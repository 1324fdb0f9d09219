//! Lingering close, as nginx's `lingering_close`: a server that answers before it has read
//! the whole request (a `413` for a body over the limit) and then closes the socket with the
//! client's bytes still unread makes the kernel send a reset. The client, still uploading,
//! sees "broken pipe" or "connection reset" instead of the answer (Node's `fetch` and Python's
//! `urllib` do; curl, which waits for `100 Continue`, does not). [`Lingering`] closes such a
//! socket the way nginx does: it ends its own side, then reads and discards what the client
//! still sends, for a bounded time, so the answer is read before the connection goes.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::TcpStream;

/// nginx's `lingering_time`: the longest a closed connection goes on being read.
pub const LINGERING_TIME: Duration = Duration::from_secs(30);
/// nginx's `lingering_timeout`: the longest wait for the client's next bytes.
pub const LINGERING_TIMEOUT: Duration = Duration::from_secs(5);
/// The most bytes discarded from one connection.
pub const LINGERING_BYTES: u64 = 256 << 20;

/// A TCP stream that closes with a lingering close when the peer's bytes are left unread.
#[derive(Debug)]
pub struct Lingering {
    stream: Option<TcpStream>,
}

impl Lingering {
    #[must_use]
    pub fn new(stream: TcpStream) -> Self {
        Lingering {
            stream: Some(stream),
        }
    }

    /// The stream, for calls the wrapper does not pass on (`peek`).
    #[must_use]
    pub fn get_ref(&self) -> &TcpStream {
        self.stream
            .as_ref()
            .unwrap_or_else(|| unreachable!("taken only on drop"))
    }

    /// The stream back, without the lingering close (a connection handed on, not closed).
    #[must_use]
    pub fn into_inner(mut self) -> TcpStream {
        self.stream
            .take()
            .unwrap_or_else(|| unreachable!("taken only on drop"))
    }

    fn get(&mut self) -> &mut TcpStream {
        self.stream
            .as_mut()
            .unwrap_or_else(|| unreachable!("taken only on drop"))
    }
}

/// Whether the peer has sent bytes nobody read (without reading them).
fn unread(stream: &TcpStream) -> bool {
    let mut byte = [std::mem::MaybeUninit::<u8>::uninit()];
    // The socket is non-blocking: no data is `WouldBlock`, the peer's end is `Ok(0)`.
    matches!(socket2::SockRef::from(stream).peek(&mut byte), Ok(n) if n > 0)
}

/// Ends the write side, then reads and discards until the peer closes, goes quiet for
/// [`LINGERING_TIMEOUT`], or [`LINGERING_TIME`] or [`LINGERING_BYTES`] is reached.
pub async fn linger(mut stream: TcpStream) {
    let _ = stream.shutdown().await;
    let mut buf = vec![0u8; 16 * 1024];
    let mut left = LINGERING_BYTES;
    let drain = async {
        while left > 0 {
            match tokio::time::timeout(LINGERING_TIMEOUT, stream.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => left = left.saturating_sub(n as u64),
                _ => return,
            }
        }
    };
    let _ = tokio::time::timeout(LINGERING_TIME, drain).await;
}

impl Drop for Lingering {
    fn drop(&mut self) {
        let Some(stream) = self.stream.take() else {
            return;
        };
        if !unread(&stream) {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(linger(stream));
        }
    }
}

impl AsyncRead for Lingering {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(self.get()).poll_read(cx, buf)
    }
}

impl AsyncWrite for Lingering {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.get()).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.get()).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get()).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get()).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A server that answers after reading only the head, then drops the stream, while the
    /// client keeps uploading: with a lingering close the client finishes and reads the answer.
    #[tokio::test]
    async fn an_early_answer_reaches_a_client_still_uploading() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut s = Lingering::new(stream);
            let mut head = [0u8; 64];
            s.read_exact(&mut head).await.unwrap();
            s.write_all(
                b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            )
            .await
            .unwrap();
            s.flush().await.unwrap();
            // Dropped here with megabytes still coming.
        });
        let mut client = TcpStream::connect(addr).await.unwrap();
        let body = vec![b'x'; 8 << 20];
        client
            .write_all(&body)
            .await
            .expect("the upload is not cut off");
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        assert!(
            answer.starts_with(b"HTTP/1.1 413"),
            "{:?}",
            String::from_utf8_lossy(&answer)
        );
        server.await.unwrap();
    }
}
