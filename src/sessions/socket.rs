//! A session's control socket: the server side (one request per connection,
//! or an attach stream) and the client side used by the server and the CLI.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use super::proto::{Request, Response};
use super::term::Term;

/// Longest request or answer line: every field in them is bounded well below.
const MAX_LINE: u64 = 4 << 20;

/// Serve `term` on `listener` until the task is dropped.
pub async fn serve(listener: UnixListener, term: Arc<Term>) {
    let conns = tokio_util::task::TaskTracker::new();
    while let Ok((stream, _)) = listener.accept().await {
        conns.spawn(connection(term.clone(), stream));
    }
}

async fn connection(term: Arc<Term>, stream: UnixStream) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut line = String::new();
    let got = tokio::time::timeout(
        Duration::from_secs(5),
        (&mut reader).take(MAX_LINE).read_line(&mut line),
    )
    .await;
    if !matches!(got, Ok(Ok(n)) if n > 0) {
        return;
    }
    let req = match serde_json::from_str::<Request>(&line) {
        Ok(r) => r,
        Err(e) => {
            let _ = write_line(
                &mut write,
                &Response::Error {
                    message: format!("bad request: {e}"),
                },
            )
            .await;
            return;
        }
    };
    if let Request::Attach { rw } = req {
        attach(term, reader, write, rw).await;
        return;
    }
    let resp = term.handle(req).await;
    let _ = write_line(&mut write, &resp).await;
}

async fn write_line(w: &mut (impl AsyncWriteExt + Unpin), resp: &Response) -> io::Result<()> {
    let mut l = serde_json::to_vec(resp).map_err(io::Error::other)?;
    l.push(b'\n');
    w.write_all(&l).await
}

/// Stream the screen and then raw output; with `rw`, type what comes back.
async fn attach(
    term: Arc<Term>,
    mut reader: BufReader<tokio::net::unix::OwnedReadHalf>,
    mut write: tokio::net::unix::OwnedWriteHalf,
    rw: bool,
) {
    let (screen, mut rx) = term.subscribe();
    if write.write_all(&screen).await.is_err() {
        return;
    }
    let mut buf = vec![0u8; 4096];
    loop {
        tokio::select! {
            out = rx.recv() => match out {
                Ok(bytes) => {
                    if write.write_all(&bytes).await.is_err() {
                        return;
                    }
                }
                // A slow viewer skips ahead rather than holding the session back.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    let (screen, _) = term.subscribe();
                    if write.write_all(&screen).await.is_err() {
                        return;
                    }
                }
                Err(_) => return,
            },
            n = reader.read(&mut buf) => match n {
                Ok(n) if n > 0 => {
                    if rw && term.type_bytes(buf[..n].to_vec()).await.is_err() {
                        return;
                    }
                }
                _ => return,
            },
        }
        if term.exited().is_some() && rx.is_empty() {
            return;
        }
    }
}

/// Send one request to the session behind `socket` and read its answer.
pub async fn call(socket: &Path, req: &Request, timeout: Duration) -> io::Result<Response> {
    let mut stream = UnixStream::connect(socket).await?;
    let mut line = serde_json::to_vec(req).map_err(io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line).await?;
    let mut reader = BufReader::new(stream).take(MAX_LINE);
    let mut answer = String::new();
    match tokio::time::timeout(timeout, reader.read_line(&mut answer)).await {
        Ok(Ok(n)) if n > 0 => serde_json::from_str(&answer).map_err(io::Error::other),
        Ok(Ok(_)) => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the session closed the connection without answering",
        )),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the session did not answer in time",
        )),
    }
}
