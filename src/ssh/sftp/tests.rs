//! [`Sftp`] against OpenSSH's real `sftp-server`, run as a child process
//! whose stdin and stdout are the SFTP stream (what sshd's `sftp` subsystem
//! does). Also the helper other tests use to get a session.

use super::*;
use std::path::Path;

/// An SFTP session to a local `sftp-server`; the server ends with it.
pub(crate) struct LocalSftp {
    pub(crate) sftp: Sftp,
    pub(crate) server: tokio::process::Child,
}

/// Where Debian, Fedora, Arch and Alpine put OpenSSH's `sftp-server`.
const SERVER_PATHS: [&str; 4] = [
    "/usr/lib/openssh/sftp-server",
    "/usr/libexec/openssh/sftp-server",
    "/usr/lib/ssh/sftp-server",
    "/usr/libexec/sftp-server",
];

pub(crate) async fn local_sftp() -> LocalSftp {
    local_sftp_in(Path::new(".")).await
}

/// A local `sftp-server` whose working directory (the login directory of a
/// real session) is `dir`.
pub(crate) async fn local_sftp_in(dir: &Path) -> LocalSftp {
    let path = SERVER_PATHS
        .iter()
        .find(|p| Path::new(p).exists())
        .expect("OpenSSH's sftp-server is needed (Debian: apt-get install openssh-sftp-server)");
    let mut server = tokio::process::Command::new(path)
        .current_dir(dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start sftp-server");
    let stream = tokio::io::join(
        server.stdout.take().expect("piped stdout"),
        server.stdin.take().expect("piped stdin"),
    );
    let sftp = Sftp::new(stream).await.expect("SFTP handshake");
    LocalSftp { sftp, server }
}

fn tmp() -> (tempfile::TempDir, String) {
    let t = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(t.path())
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    (t, root)
}

#[tokio::test]
async fn openssh_offers_the_extensions_the_engine_uses() {
    let s = local_sftp().await;
    let ext = s.sftp.extensions();
    assert!(ext.posix_rename && ext.fsync && ext.statvfs, "{ext:?}");
    let home = s.sftp.realpath(".").await.unwrap();
    assert!(home.starts_with('/'), "{home}");
}

#[tokio::test]
async fn errors_keep_their_kind() {
    let s = local_sftp().await;
    let (_t, root) = tmp();
    let missing = format!("{root}/missing");
    for e in [
        s.sftp.stat(&missing).await.unwrap_err(),
        s.sftp.lstat(&missing).await.unwrap_err(),
        s.sftp
            .open(&missing, OpenOptions::read())
            .await
            .err()
            .unwrap(),
        s.sftp.read_dir(&missing, 10).await.unwrap_err(),
        s.sftp.remove(&missing).await.unwrap_err(),
    ] {
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
    }
    std::fs::create_dir(format!("{root}/locked")).unwrap();
    std::fs::write(format!("{root}/locked/f"), "x").unwrap();
    std::fs::set_permissions(
        format!("{root}/locked"),
        std::os::unix::fs::PermissionsExt::from_mode(0o000),
    )
    .unwrap();
    let denied = s.sftp.stat(&format!("{root}/locked/f")).await;
    std::fs::set_permissions(
        format!("{root}/locked"),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    // Root reads through any mode; everyone else is refused.
    if !rustix::process::geteuid().is_root() {
        assert_eq!(denied.unwrap_err().kind(), io::ErrorKind::PermissionDenied);
    }
}

#[tokio::test]
async fn reads_and_writes_at_offsets_across_many_requests() {
    let s = local_sftp().await;
    let (_t, root) = tmp();
    let path = format!("{root}/big");
    let content: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    let f = s
        .sftp
        .open(
            &path,
            OpenOptions {
                write: true,
                create: true,
                exclusive: true,
                mode: Some(0o640),
                ..OpenOptions::default()
            },
        )
        .await
        .unwrap();
    f.write_at(0, &content).await.unwrap();
    assert!(f.fsync().await.unwrap());
    f.close().await.unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), content);

    let f = s.sftp.open(&path, OpenOptions::read()).await.unwrap();
    for (offset, len) in [
        (0, 10),
        (5, 2_500_000),
        (2_999_990, 100),
        (3_000_000, 5),
        (4_000_000, 5),
    ] {
        let got = f.read_at(offset, len).await.unwrap();
        let from = (offset as usize).min(content.len());
        let to = (from + len).min(content.len());
        assert_eq!(got, content[from..to], "{offset}+{len}");
    }
    assert_eq!(f.fstat().await.unwrap().size, 3_000_000);
    f.close().await.unwrap();
    let a = s.sftp.stat(&path).await.unwrap();
    assert!(a.is_file() && !a.is_dir() && !a.is_symlink());
}

#[tokio::test]
async fn directories_symlinks_and_renames() {
    let s = local_sftp().await;
    let (_t, root) = tmp();
    s.sftp.mkdir(&format!("{root}/d"), 0o755).await.unwrap();
    for i in 0..250 {
        std::fs::write(format!("{root}/d/f{i:03}"), "").unwrap();
    }
    let all = s.sftp.read_dir(&format!("{root}/d"), 1000).await.unwrap();
    assert!(all.complete);
    assert_eq!(all.entries.len(), 250);
    let some = s.sftp.read_dir(&format!("{root}/d"), 100).await.unwrap();
    assert!(!some.complete);
    assert_eq!(some.entries.len(), 100);

    // The target comes first, as with ln -s.
    s.sftp
        .symlink("d/f001", &format!("{root}/link"))
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_link(format!("{root}/link")).unwrap(),
        Path::new("d/f001")
    );
    assert!(
        s.sftp
            .lstat(&format!("{root}/link"))
            .await
            .unwrap()
            .is_symlink()
    );
    assert_eq!(
        s.sftp.read_link(&format!("{root}/link")).await.unwrap(),
        "d/f001"
    );

    std::fs::write(format!("{root}/a"), "a").unwrap();
    std::fs::write(format!("{root}/b"), "b").unwrap();
    // The plain rename never replaces; posix-rename does, atomically.
    assert!(
        s.sftp
            .rename(&format!("{root}/a"), &format!("{root}/b"))
            .await
            .is_err()
    );
    assert_eq!(std::fs::read_to_string(format!("{root}/b")).unwrap(), "b");
    s.sftp
        .rename_replacing(&format!("{root}/a"), &format!("{root}/b"))
        .await
        .unwrap();
    assert_eq!(std::fs::read_to_string(format!("{root}/b")).unwrap(), "a");
    assert!(!Path::new(&format!("{root}/a")).exists());

    let fs = s.sftp.fs_id(&root).await.unwrap();
    assert_eq!(fs, s.sftp.fs_id(&format!("{root}/d")).await.unwrap());
}

#[tokio::test]
async fn owner_names_and_server_side_copy() {
    let s = local_sftp().await;
    let (_t, root) = tmp();
    if s.sftp.extensions().users_groups {
        let (user, group) = s.sftp.names(0, 0).await.unwrap();
        assert_eq!(user.as_deref(), Some("root"));
        assert!(group.is_some());
        let (user, _) = s.sftp.names(4_000_000_000, 0).await.unwrap();
        assert_eq!(user, None);
    }
    let content = vec![7u8; 300_000];
    std::fs::write(format!("{root}/src"), &content).unwrap();
    let from = s
        .sftp
        .open(&format!("{root}/src"), OpenOptions::read())
        .await
        .unwrap();
    let to = s
        .sftp
        .open(
            &format!("{root}/dst"),
            OpenOptions {
                write: true,
                create: true,
                ..OpenOptions::default()
            },
        )
        .await
        .unwrap();
    let copied = s.sftp.copy_data(&from, &to).await.unwrap();
    assert_eq!(copied, s.sftp.extensions().copy_data);
    // A handle dropped unclosed is closed in the background.
    drop(from);
    to.close().await.unwrap();
    if copied {
        assert_eq!(std::fs::read(format!("{root}/dst")).unwrap(), content);
    }
    s.sftp.close().await;
}
