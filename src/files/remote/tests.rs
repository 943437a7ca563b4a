//! The remote engine against real things: OpenSSH's `sftp-server` as a
//! child process (its stdin and stdout are the SFTP stream, as under sshd)
//! and commands run the way sshd runs an exec request (`sh -c` with the
//! string `ssh::cmdline::argv` builds). Most checks hold the remote answer
//! to the local engine's answer for the same files, so the two cannot drift.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::io::AsyncReadExt;

use super::*;
use crate::files::read::ReadRange;
use crate::files::{Scope, read as local_read};

/// Runs an argv as sshd runs an exec request: `sh -c EXEC_STRING`. With
/// `path`, the command's `PATH` is that (to take programs away).
pub(super) struct ShellExec {
    path: Option<String>,
    /// Every argv run, for checks on what was asked.
    pub(super) calls: Mutex<Vec<Vec<String>>>,
}

impl ShellExec {
    pub(super) fn new(path: Option<String>) -> Arc<ShellExec> {
        Arc::new(ShellExec {
            path,
            calls: Mutex::new(Vec::new()),
        })
    }
}

impl Exec for ShellExec {
    fn run<'a>(
        &'a self,
        argv: &'a [String],
        limit: usize,
    ) -> BoxFuture<'a, io::Result<ExecOutput>> {
        Box::pin(async move {
            self.calls.lock().unwrap().push(argv.to_vec());
            let line = crate::ssh::cmdline::argv(argv)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            let mut cmd = tokio::process::Command::new("/bin/sh");
            cmd.arg("-c")
                .arg(line)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .kill_on_drop(true);
            if let Some(p) = &self.path {
                cmd.env("PATH", p);
            }
            let mut child = cmd.spawn()?;
            let (out, err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
            let ((stdout, stdout_truncated), (stderr, stderr_truncated)) =
                tokio::try_join!(capped(out, limit), capped(err, limit))?;
            let status = child.wait().await?;
            Ok(ExecOutput {
                code: status.code(),
                stdout,
                stderr,
                stdout_truncated,
                stderr_truncated,
            })
        })
    }
}

/// The first `limit` bytes of a stream, read to its end.
async fn capped(
    mut r: impl tokio::io::AsyncRead + Unpin,
    limit: usize,
) -> io::Result<(Vec<u8>, bool)> {
    let mut kept = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut truncated = false;
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return Ok((kept, truncated));
        }
        let room = limit - kept.len();
        kept.extend_from_slice(&buf[..n.min(room)]);
        truncated |= n > room;
    }
}

/// A temp tree, the remote engine over a local `sftp-server` started in it,
/// and the local engine over the same tree.
pub(super) struct Fixture {
    pub(super) _t: tempfile::TempDir,
    pub(super) root: PathBuf,
    pub(super) remote: RemoteFiles,
    pub(super) local: Scope,
    pub(super) exec: Arc<ShellExec>,
    _server: tokio::process::Child,
}

pub(super) async fn fixture() -> Fixture {
    fixture_with(ShellExec::new(None)).await
}

pub(super) async fn fixture_with(exec: Arc<ShellExec>) -> Fixture {
    let t = tempfile::tempdir().unwrap();
    let root = fs::canonicalize(t.path()).unwrap();
    let server = crate::ssh::sftp::tests::local_sftp_in(&root).await;
    let remote = RemoteFiles::new(server.sftp, exec.clone()).await.unwrap();
    Fixture {
        _t: t,
        local: Scope::unconfined(root.clone()),
        root,
        remote,
        exec,
        _server: server.server,
    }
}

pub(super) fn put(root: &Path, files: &[(&str, &[u8])]) {
    for (path, body) in files {
        let p = root.join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, body).unwrap();
    }
}

fn lines(n: u64) -> ReadRange {
    ReadRange::Lines {
        offset: n,
        limit: 1000,
    }
}

/// The remote and local answers to the same read, as JSON; `ix` holds the
/// local engine's line indexes (the remote engine keeps its own).
async fn both_read(
    f: &Fixture,
    ix: &local_read::LineIndexes,
    path: &Path,
    range: &ReadRange,
    budget: usize,
) -> (String, String) {
    let remote = f.remote.read(path, range, budget).await.map(|r| json(&r));
    let local = local_read::read(&f.local, ix, path, range, budget).map(|r| json(&r));
    (
        remote.unwrap_or_else(|e| format!("error: {e}")),
        local.unwrap_or_else(|e| format!("error: {e}")),
    )
}

pub(super) fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap()
}

#[tokio::test]
async fn reads_page_like_the_local_engine() {
    let f = fixture().await;
    let text: String = (1..=20_000)
        .map(|i| format!("line {i} {}\n", "x".repeat(i % 37)))
        .collect();
    let mut long = b"short\n".to_vec();
    long.extend(std::iter::repeat_n(b'y', 100_000));
    long.extend(b"\nafter\n");
    put(
        &f.root,
        &[
            ("big", text.as_bytes()),
            ("no-newline", b"a\nb\nc"),
            ("long", &long),
            ("empty", b""),
            ("utf8", "é\u{2603}\nzwei\n".as_bytes()),
            ("not-utf8", b"\xff\xfe bad\nnext\nlast\n"),
            ("bin", &[b'a', 0, b'b']),
        ],
    );
    let big = f.root.join("big");
    let ix = local_read::LineIndexes::default();
    // Every page, in order, as the local engine pages.
    let mut offset = 1;
    loop {
        let (remote, local) = both_read(&f, &ix, &big, &lines(offset), 8192).await;
        assert_eq!(remote, local, "offset {offset}");
        let r: serde_json::Value = serde_json::from_str(&remote).unwrap();
        match r["next_offset"].as_u64() {
            Some(n) => offset = n,
            None => break,
        }
    }
    assert!(offset > 19_000);
    for (name, range, budget) in [
        ("big", lines(12_345), 8192),
        ("big", lines(19_999), 8192),
        ("big", lines(30_000), 8192),
        ("big", lines(4097), 100),
        ("no-newline", lines(1), 4096),
        ("no-newline", lines(9), 4096),
        ("long", lines(2), 1000),
        ("long", lines(3), 1000),
        ("long", lines(1), 100_000),
        ("empty", lines(1), 4096),
        ("utf8", lines(1), 4096),
        ("not-utf8", lines(1), 4096),
        ("not-utf8", lines(1), 12),
        ("bin", lines(1), 4096),
        ("missing", lines(1), 4096),
        ("", lines(1), 4096),
        (
            "big",
            ReadRange::Bytes {
                offset: 5,
                length: Some(100),
            },
            4096,
        ),
        (
            "big",
            ReadRange::Bytes {
                offset: 100,
                length: None,
            },
            4096,
        ),
        (
            "bin",
            ReadRange::Bytes {
                offset: 0,
                length: None,
            },
            4096,
        ),
        (
            "bin",
            ReadRange::Bytes {
                offset: 99,
                length: None,
            },
            4096,
        ),
    ] {
        let path = f.root.join(name);
        let (remote, local) = both_read(&f, &ix, &path, &range, budget).await;
        assert_eq!(remote, local, "{name} {range:?} {budget}");
    }
}

#[tokio::test]
async fn binary_needs_base64_and_byte_ranges_reassemble() {
    use base64::Engine as _;
    let f = fixture().await;
    let content: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    put(&f.root, &[("bin", &content)]);
    let p = f.root.join("bin");
    let err = f.remote.read(&p, &lines(1), 4096).await.unwrap_err();
    assert!(err.to_string().contains("encoding=base64"), "{err}");
    let (mut got, mut offset) = (Vec::new(), 0);
    loop {
        let range = ReadRange::Bytes {
            offset,
            length: None,
        };
        let r = f.remote.read(&p, &range, 65536).await.unwrap();
        assert!(r.content.len() <= 65536);
        got.extend(
            base64::engine::general_purpose::STANDARD
                .decode(&r.content)
                .unwrap(),
        );
        match r.next_byte_offset {
            Some(n) => offset = n,
            None => break,
        }
    }
    assert_eq!(got, content);
}

#[tokio::test]
async fn devices_fifos_and_directories_are_refused_without_opening() {
    let f = fixture().await;
    let fifo = f.root.join("fifo");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    for p in [Path::new("/dev/zero"), &fifo, &f.root] {
        let started = std::time::Instant::now();
        let err = f.remote.read(p, &lines(1), 4096).await.unwrap_err();
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        assert!(
            matches!(err, FileError::Invalid(_)),
            "{}: {err}",
            p.display()
        );
    }
    // The session still works: nothing blocked the server.
    assert_eq!(f.remote.stat(&fifo, false).await.unwrap().kind, "fifo");
}

#[tokio::test]
async fn a_file_changed_within_the_same_second_is_reindexed() {
    let f = fixture().await;
    let p = f.root.join("f");
    fs::write(&p, "x\n".repeat(10_000)).unwrap();
    let mtime = fs::metadata(&p).unwrap().modified().unwrap();
    let r = f.remote.read(&p, &lines(9_000), 4096).await.unwrap();
    assert_eq!(r.start_line, Some(9_000));
    // Same size, same mtime, lines of another length.
    let mut new = "ab\n".repeat(6_666);
    new.push_str("cd");
    assert_eq!(new.len(), 20_000);
    fs::write(&p, &new).unwrap();
    fs::File::options()
        .write(true)
        .open(&p)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let r = f.remote.read(&p, &lines(5_000), 4096).await.unwrap();
    assert_eq!(r.start_line, Some(5_000));
    assert!(
        r.content.starts_with("  5000\tab\n"),
        "{}",
        &r.content[..40]
    );
}

#[tokio::test]
async fn write_is_atomic_keeps_mode_and_honours_if_hash() {
    let f = fixture().await;
    let p = f.root.join("a/b/f.txt");
    let w = f.remote.write(&p, b"one\n", None, true).await.unwrap();
    assert!(w.created);
    assert_eq!(
        w.sha256.as_deref(),
        Some(crate::crypto::sha256_hex(b"one\n").as_str())
    );
    // A new file gets the usual mode: 0666 less the umask.
    let umask = rustix::process::umask(rustix::fs::Mode::empty());
    rustix::process::umask(umask);
    assert_eq!(
        fs::metadata(&p).unwrap().permissions().mode() & 0o777,
        0o666 & !umask.bits()
    );
    fs::set_permissions(&p, fs::Permissions::from_mode(0o751)).unwrap();
    let err = f
        .remote
        .write(&p, b"two\n", Some("00"), true)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains(w.sha256.as_deref().unwrap()),
        "{err}"
    );
    assert_eq!(fs::read(&p).unwrap(), b"one\n");
    let w2 = f
        .remote
        .write(&p, b"two\n", w.sha256.as_deref(), true)
        .await
        .unwrap();
    assert!(!w2.created);
    assert_eq!(fs::read(&p).unwrap(), b"two\n");
    assert_eq!(
        fs::metadata(&p).unwrap().permissions().mode() & 0o7777,
        0o751
    );
    // No temp file is left behind.
    let names: Vec<_> = fs::read_dir(p.parent().unwrap())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names, [std::ffi::OsString::from("f.txt")]);
    // if_hash on a missing file, and a big content in many requests.
    let err = f
        .remote
        .write(&f.root.join("nope"), b"x", Some("00"), false)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("drop if_hash"), "{err}");
    let big: Vec<u8> = (0..5_000_000u32).map(|i| (i % 7) as u8).collect();
    f.remote.write(&p, &big, None, false).await.unwrap();
    assert_eq!(fs::read(&p).unwrap(), big);
}

#[tokio::test]
async fn writes_refuse_directories_and_symlinks_and_missing_parents() {
    let f = fixture().await;
    fs::create_dir(f.root.join("d")).unwrap();
    symlink("/etc/passwd", f.root.join("l")).unwrap();
    let err = f
        .remote
        .write(&f.root.join("d"), b"x", None, false)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("is a dir"), "{err}");
    for err in [
        f.remote
            .write(&f.root.join("l"), b"x", None, false)
            .await
            .unwrap_err(),
        f.remote
            .append(&f.root.join("l"), b"x", false)
            .await
            .unwrap_err(),
    ] {
        assert!(
            err.to_string().contains("is a symlink (to /etc/passwd)"),
            "{err}"
        );
    }
    let err = f
        .remote
        .write(&f.root.join("no/such/f"), b"x", None, false)
        .await
        .unwrap_err();
    assert!(matches!(err, FileError::NotFound(_)), "{err}");
}

#[tokio::test]
async fn append_adds_and_creates() {
    let f = fixture().await;
    let p = f.root.join("logs/log");
    assert!(f.remote.append(&p, b"a\n", true).await.unwrap().created);
    let w = f.remote.append(&p, b"b\n", false).await.unwrap();
    assert_eq!((w.created, w.bytes), (false, 4));
    assert_eq!(fs::read(&p).unwrap(), b"a\nb\n");
}

#[tokio::test]
async fn edits_apply_all_or_nothing_with_the_local_messages() {
    let f = fixture().await;
    let p = f.root.join("f.rs");
    let orig = "fn a() {}\nfn b() {}\nlet x = 1;\nlet x = 1;\n";
    fs::write(&p, orig).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
    let ed = |old: &str, new: &str, count| Edit {
        old: old.into(),
        new: new.into(),
        count,
    };
    for edits in [
        vec![ed("let x = 1;", "let x = 2;", None)],
        vec![
            ed("fn a() {}", "fn a2() {}", None),
            ed("missing", "x", None),
        ],
        vec![ed("fn  a() {}", "x", None)],
        vec![ed("fn c() {}", "x", None)],
        vec![ed("let x = 1;", "y", Some(3))],
        vec![],
    ] {
        let remote = f
            .remote
            .edit(&p, &edits, None)
            .await
            .unwrap_err()
            .to_string();
        let local = crate::files::write::edit(&f.local, &p, &edits, None)
            .unwrap_err()
            .to_string();
        assert_eq!(remote, local);
        assert_eq!(fs::read_to_string(&p).unwrap(), orig);
    }
    let err = f
        .remote
        .edit(&p, &[ed("fn c() {}", "x", None)], None)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("closest text is at line 1"),
        "{err}"
    );
    let err = f
        .remote
        .edit(&p, &[ed("fn a() {}", "x", None)], Some("00"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("nothing was written"), "{err}");
    let w = f
        .remote
        .edit(
            &p,
            &[
                ed("fn a() {}", "fn a2() {}", None),
                ed("let x = 1;", "let x = 2;", Some(2)),
            ],
            Some(&crate::crypto::sha256_hex(orig.as_bytes())),
        )
        .await
        .unwrap();
    assert_eq!(w.replacements, Some(3));
    assert_eq!(
        fs::read_to_string(&p).unwrap(),
        "fn a2() {}\nfn b() {}\nlet x = 2;\nlet x = 2;\n"
    );
    assert_eq!(
        fs::metadata(&p).unwrap().permissions().mode() & 0o7777,
        0o640
    );
    let err = f
        .remote
        .edit(&f.root.join("missing"), &[ed("a", "b", None)], None)
        .await;
    assert!(matches!(err, Err(FileError::NotFound(_))));
}
