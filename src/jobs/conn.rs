//! The server's end of its connection to a supervisor (a spare, then the
//! job it was handed): JSON lines both ways, watched for reading only.
//!
//! Watched for writing too, as a `tokio::net::UnixStream` is, the server
//! would be woken each time the supervisor reads from the connection (the
//! kernel reports the freed buffer space): when it reads a job's spec, that
//! is while the job starts, on the way to the agent's answer. The lines the
//! server writes are small and go out at once; one that does not fit the
//! socket's buffer is finished on a blocking thread.

use std::io::{self, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use rustix::net::{RecvFlags, SendFlags};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// Longest line a supervisor sends (an `Exit` with its reason and report
/// is well under a kilobyte).
const MAX_LINE: usize = 1 << 20;

/// How long a write the socket cannot take at once may wait for the
/// supervisor to read.
const SLOW_WRITE: Duration = Duration::from_secs(10);

pub struct Conn {
    fd: AsyncFd<UnixStream>,
    /// Bytes received past the last line returned.
    pending: Vec<u8>,
}

impl Conn {
    /// Take over `stream` (its mode is set here: blocking, for the rare
    /// write finished on a blocking thread; reads never wait).
    pub fn new(stream: UnixStream) -> io::Result<Conn> {
        stream.set_nonblocking(false)?;
        // SAFETY: the AsyncFd owns the stream, whose descriptor stays open
        // and the same until `into_inner` gives the stream back.
        #[allow(unsafe_code)]
        let fd = unsafe { AsyncFd::register_with_interest(stream, Interest::READABLE) }?;
        Ok(Conn {
            fd,
            pending: Vec::new(),
        })
    }

    /// Take over a connection accepted by the runtime.
    pub fn from_tokio(stream: tokio::net::UnixStream) -> io::Result<Conn> {
        Conn::new(stream.into_std()?)
    }

    /// The next line, without its newline; `None` at EOF.
    pub async fn read_line(&mut self) -> io::Result<Option<Vec<u8>>> {
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = self.pending.drain(..=end).collect();
                line.pop();
                return Ok(Some(line));
            }
            if self.pending.len() > MAX_LINE {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "a supervisor sent a line longer than 1 MiB",
                ));
            }
            let mut ready = self.fd.readable().await?;
            match ready
                .try_io(|s| Ok(rustix::net::recv(s.get_ref(), &mut chunk, RecvFlags::DONTWAIT)?.0))
            {
                Ok(Ok(0)) => return Ok(None),
                Ok(Ok(n)) => self.pending.extend_from_slice(&chunk[..n]),
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => {}
            }
        }
    }

    /// Write all of `data`.
    pub async fn write_all(&self, data: &[u8]) -> io::Result<()> {
        let mut sent = 0;
        while sent < data.len() {
            match rustix::net::send(
                self.fd.get_ref(),
                &data[sent..],
                SendFlags::DONTWAIT | SendFlags::NOSIGNAL,
            ) {
                Ok(n) => sent += n,
                Err(rustix::io::Errno::INTR) => {}
                Err(rustix::io::Errno::AGAIN) => {
                    let stream = self.fd.get_ref().try_clone()?;
                    let rest = data[sent..].to_vec();
                    return match tokio::task::spawn_blocking(move || {
                        stream.set_write_timeout(Some(SLOW_WRITE))?;
                        (&stream).write_all(&rest)
                    })
                    .await
                    {
                        Ok(result) => result,
                        Err(e) => Err(io::Error::other(e)),
                    };
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// True when nothing was received past the last line.
    pub fn drained(&self) -> bool {
        self.pending.is_empty()
    }

    /// The connection as a runtime stream (for a terminal session's host,
    /// which talks on it from then on); fails if bytes were read ahead.
    pub fn into_tokio(self) -> io::Result<tokio::net::UnixStream> {
        if !self.drained() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "unexpected bytes from a spare supervisor",
            ));
        }
        let stream = self.fd.into_inner();
        stream.set_nonblocking(true)?;
        tokio::net::UnixStream::from_std(stream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read};

    /// Lines split across reads and several lines in one read come back
    /// one by one, and EOF after the last is `None`.
    #[tokio::test]
    async fn lines_come_back_whole_however_they_arrive() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let mut conn = Conn::new(ours).unwrap();
        let writer = std::thread::spawn(move || {
            theirs.write_all(b"{\"a\":").unwrap();
            std::thread::sleep(Duration::from_millis(20));
            theirs.write_all(b"1}\nsecond\nthird\n").unwrap();
        });
        assert_eq!(conn.read_line().await.unwrap().unwrap(), b"{\"a\":1}");
        assert_eq!(conn.read_line().await.unwrap().unwrap(), b"second");
        assert_eq!(conn.read_line().await.unwrap().unwrap(), b"third");
        writer.join().unwrap();
        assert!(conn.read_line().await.unwrap().is_none());
        assert!(conn.drained());
    }

    /// A line far larger than the socket's buffer arrives whole, after
    /// the small one written before it, while the peer reads slowly.
    #[tokio::test]
    async fn a_line_larger_than_the_socket_buffer_is_written_whole() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let conn = Conn::new(ours).unwrap();
        let big: Vec<u8> = (0..8 << 20).map(|i| b'a' + (i % 26) as u8).collect();
        let expected = big.clone();
        let reader = std::thread::spawn(move || {
            let mut r = BufReader::new(theirs);
            let mut first = String::new();
            r.read_line(&mut first).unwrap();
            std::thread::sleep(Duration::from_millis(50));
            let mut rest = Vec::new();
            r.read_to_end(&mut rest).unwrap();
            (first, rest)
        });
        conn.write_all(b"small\n").await.unwrap();
        conn.write_all(&big).await.unwrap();
        drop(conn);
        let (first, rest) = reader.join().unwrap();
        assert_eq!(first, "small\n");
        assert_eq!(rest.len(), expected.len());
        assert!(rest == expected, "the large write arrived altered");
    }

    /// A line over the limit is an error, not an unbounded buffer.
    #[tokio::test]
    async fn an_endless_line_is_refused() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let mut conn = Conn::new(ours).unwrap();
        std::thread::spawn(move || {
            let block = vec![b'x'; 64 * 1024];
            while theirs.write_all(&block).is_ok() {}
        });
        let err = conn.read_line().await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
