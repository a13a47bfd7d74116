//! A WebSocket's socket, split in two. tungstenite reads and decodes the client's frames
//! from the read half; the server writes its own frames on the write half. A server frame
//! is unmasked, so it is a 2–10 byte header before the payload: writing it ourselves
//! costs one small copy into the connection's write buffer, and frees the write path
//! from the lock a shared tungstenite stream needs between its reader and its writer.
//!
//! What tungstenite would write on the read half (its automatic pong and close replies)
//! is dropped: the transport answers pings and sends its close frame itself.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream, tcp, unix};

use super::{Frame, Outgoing};

/// Opcode of a text frame.
pub(crate) const OP_TEXT: u8 = 0x1;
/// Opcode of a binary frame.
pub(crate) const OP_BINARY: u8 = 0x2;
/// Opcode of a close frame.
pub(crate) const OP_CLOSE: u8 = 0x8;
/// Opcode of a pong frame.
pub(crate) const OP_PONG: u8 = 0xA;

/// The connection under a WebSocket: a TCP connection, or the Unix socket a sibling
/// worker forwards a connection through.
pub(crate) enum WsSocket {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl WsSocket {
    /// The read half (for tungstenite) and the write half (for our frames).
    pub(crate) fn split(self) -> (ReadSide, WriteSide) {
        match self {
            WsSocket::Tcp(s) => {
                let (r, w) = s.into_split();
                (ReadSide::Tcp(r), WriteSide::Tcp(w))
            }
            WsSocket::Unix(s) => {
                let (r, w) = s.into_split();
                (ReadSide::Unix(r), WriteSide::Unix(w))
            }
        }
    }
}

/// The read half, as the byte stream tungstenite decodes. Writes on it succeed and go
/// nowhere (see the module documentation).
pub(crate) enum ReadSide {
    Tcp(tcp::OwnedReadHalf),
    Unix(unix::OwnedReadHalf),
}

impl AsyncRead for ReadSide {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ReadSide::Tcp(r) => Pin::new(r).poll_read(cx, buf),
            ReadSide::Unix(r) => Pin::new(r).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ReadSide {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// The write half. Every method takes `&self`: whoever holds the connection's output
/// writes, without waiting on the reader. Dropping it shuts the sending direction down.
pub(crate) enum WriteSide {
    Tcp(tcp::OwnedWriteHalf),
    Unix(unix::OwnedWriteHalf),
}

impl WriteSide {
    /// Write what the socket takes now; `WouldBlock` when it takes nothing. (One buffer:
    /// `send(2)` costs less than `writev(2)`, which locks the file position.)
    pub(crate) fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        match self {
            WriteSide::Tcp(w) => w.try_write(buf),
            WriteSide::Unix(w) => w.try_write(buf),
        }
    }

    /// Wait until the socket may take more.
    pub(crate) async fn writable(&self) -> io::Result<()> {
        match self {
            WriteSide::Tcp(w) => w.writable().await,
            WriteSide::Unix(w) => w.writable().await,
        }
    }

    /// Write all of `buf`, waiting for room as needed.
    pub(crate) async fn write_all(&self, buf: &[u8]) -> io::Result<()> {
        let mut at = 0;
        while at < buf.len() {
            match self.try_write(&buf[at..]) {
                Ok(n) => at += n,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => self.writable().await?,
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }
}

/// Append one final (unfragmented), unmasked server frame to `buf`.
pub(crate) fn put_frame(buf: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    buf.push(0x80 | opcode);
    let len = payload.len();
    if len < 126 {
        buf.push(len as u8);
    } else if let Ok(len) = u16::try_from(len) {
        buf.push(126);
        buf.extend_from_slice(&len.to_be_bytes());
    } else {
        buf.push(127);
        buf.extend_from_slice(&(len as u64).to_be_bytes());
    }
    buf.extend_from_slice(payload);
}

/// Append a close frame with `code` and no reason.
pub(crate) fn put_close(buf: &mut Vec<u8>, code: u16) {
    put_frame(buf, OP_CLOSE, &code.to_be_bytes());
}

/// Bytes an item takes on the wire (its frames' headers included).
pub(crate) fn wire_len(item: &Outgoing) -> usize {
    match item {
        Outgoing::Pong(data) => data.len() + 2,
        _ => item.frames().iter().map(|f| f.len() + 10).sum(),
    }
}

/// Append an item's WebSocket frames to `buf`.
pub(crate) fn put_item(buf: &mut Vec<u8>, item: &Outgoing) {
    if let Outgoing::Pong(data) = item {
        put_frame(buf, OP_PONG, data);
        return;
    }
    for frame in item.frames() {
        put_packet(buf, frame);
    }
}

/// Append one Engine.IO packet as a WebSocket frame.
pub(crate) fn put_packet(buf: &mut Vec<u8>, frame: &Frame) {
    match frame {
        Frame::Text(t) => put_frame(buf, OP_TEXT, t.as_bytes()),
        Frame::Binary(b) => put_frame(buf, OP_BINARY, b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use tokio_tungstenite::WebSocketStream;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::Role;

    /// Frames of every length class decode, as a client decodes them, to what was put.
    #[tokio::test]
    async fn frames_decode_as_a_client_reads_them() {
        let lengths = [0usize, 1, 125, 126, 127, 65_535, 65_536, 70_000];
        let mut wire = Vec::new();
        for &n in &lengths {
            put_frame(&mut wire, OP_TEXT, "x".repeat(n).as_bytes());
            put_frame(&mut wire, OP_BINARY, &vec![7u8; n]);
        }
        put_frame(&mut wire, OP_PONG, b"hi");
        put_close(&mut wire, 1000);
        let (mut client, server) = tokio::io::duplex(1 << 20);
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let _ = client.write_all(&wire).await;
            // Keep the pipe open until the reader is done.
            let mut sink = Vec::new();
            let _ = tokio::io::AsyncReadExt::read_to_end(&mut client, &mut sink).await;
        });
        let mut ws = WebSocketStream::from_raw_socket(server, Role::Client, None).await;
        for &n in &lengths {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => assert_eq!(t.len(), n),
                other => panic!("text of {n}: {other:?}"),
            }
            match ws.next().await {
                Some(Ok(Message::Binary(b))) => assert!(b.len() == n && b.iter().all(|&x| x == 7)),
                other => panic!("binary of {n}: {other:?}"),
            }
        }
        assert!(matches!(ws.next().await, Some(Ok(Message::Pong(p))) if &p[..] == b"hi"));
        match ws.next().await {
            Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1000),
            other => panic!("close: {other:?}"),
        }
    }
}
