//! Reads from a client's socket into the connection's buffer, sized by what the client sends:
//! large reads for a busy client, none held for a quiet one.

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Smallest and largest read a connection asks the socket for.
pub(super) const READ_MIN: usize = 2 * 1024;
const READ_MAX: usize = 64 * 1024;
/// What a quiet connection reads into while it holds no read buffer (part of its task).
const READ_QUIET: usize = 256;

/// Reads what is there into `buf`, asking for `want` bytes, which adapts: doubled (up to
/// 64 KiB) while reads fill it, halved (down to 2 KiB) while they are small, so a busy client
/// costs few system calls. A quiet node, as most are between readings, holds no read buffer
/// while it waits: with `buf` empty and `want` at its least, the read goes into 256 bytes
/// inside the connection's task, and `buf` is allocated once bytes came. 20,000 idle
/// connections so hold no read buffers (40 MiB at 2 KiB each, 1.3 GiB at 64 KiB).
pub(super) async fn read_some<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut BytesMut,
    want: &mut usize,
) -> std::io::Result<usize> {
    if buf.is_empty() && *want == READ_MIN {
        *buf = BytesMut::new();
        let mut quiet = [0u8; READ_QUIET];
        let n = reader.read(&mut quiet).await?;
        if n > 0 {
            buf.reserve(READ_MIN);
            buf.extend_from_slice(&quiet[..n]);
        }
        if n == READ_QUIET {
            *want = READ_MIN * 2;
        }
        return Ok(n);
    }
    if buf.is_empty() && buf.capacity() > 4 * *want {
        *buf = BytesMut::new();
    }
    buf.reserve(*want);
    let spare = buf.capacity() - buf.len();
    let n = reader.read_buf(buf).await?;
    *want = if n >= spare {
        (*want * 2).min(READ_MAX)
    } else if n < *want / 4 {
        (*want / 2).max(READ_MIN)
    } else {
        *want
    };
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_quiet_connection_holds_no_buffer_until_bytes_come() {
        let mut buf = BytesMut::with_capacity(READ_MIN);
        let mut want = READ_MIN;
        let mut eof: &[u8] = &[];
        assert_eq!(read_some(&mut eof, &mut buf, &mut want).await.unwrap(), 0);
        assert_eq!(buf.capacity(), 0, "an idle wait gives the buffer back");
        let mut one_packet: &[u8] = &[0x30; 100];
        assert_eq!(
            read_some(&mut one_packet, &mut buf, &mut want)
                .await
                .unwrap(),
            100
        );
        assert_eq!(&buf[..], &[0x30; 100]);
        assert_eq!(want, READ_MIN, "a small read keeps the connection quiet");
    }

    #[tokio::test]
    async fn a_client_that_keeps_sending_gets_ever_larger_reads_and_back() {
        let data = vec![7u8; 300 * 1024];
        let mut reader: &[u8] = &data;
        let mut buf = BytesMut::new();
        let mut want = READ_MIN;
        assert_eq!(
            read_some(&mut reader, &mut buf, &mut want).await.unwrap(),
            READ_QUIET
        );
        assert_eq!(want, 2 * READ_MIN, "a full quiet read: the client has more");
        let mut reads = 1;
        while want < READ_MAX {
            let before = buf.len();
            let n = read_some(&mut reader, &mut buf, &mut want).await.unwrap();
            assert_eq!(buf.len(), before + n);
            buf.clear();
            reads += 1;
            assert!(reads < 20);
        }
        let mut small: &[u8] = &[1, 2, 3];
        while want > READ_MIN {
            read_some(&mut small, &mut buf, &mut want).await.unwrap();
            buf.clear();
            small = &[1, 2, 3];
        }
        assert_eq!(want, READ_MIN);
    }
}
