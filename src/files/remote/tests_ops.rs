//! `stat`, `delete`, `move`, `copy` and `list` on a "remote" host (a local
//! `sftp-server`), held to the local engine's answers for the same tree.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;

use super::list;
use super::tests::{fixture, json, put};
use crate::files::FileError;
use crate::files::{list as local_list, ops as local_ops};

/// The tree of the local `ops` tests, plus awkward names.
fn ops_tree(root: &Path) {
    put(
        root,
        &[
            ("d/e/f", b"deep"),
            ("d/g", b"gee"),
            ("-delete", b"dash"),
            ("a b", b"space"),
            ("new\nline", b"newline"),
            ("--help", b"help"),
        ],
    );
    symlink("d/g", root.join("link")).unwrap();
}

#[tokio::test]
async fn stat_matches_the_local_engine_but_for_ctime() {
    let f = fixture().await;
    ops_tree(&f.root);
    for (name, sha) in [
        ("link", false),
        ("d/g", true),
        ("d", false),
        ("new\nline", true),
        ("-delete", true),
        ("missing", false),
    ] {
        let p = f.root.join(name);
        // Hashing a file or reading a link moves its atime (the first read
        // after a write does, under relatime), so one engine may see the
        // other's read: atime is checked to be there, not to be equal.
        let settle = |s: &mut local_ops::StatResult| {
            assert!(s.atime > 0, "{name}: no atime");
            s.ctime = None;
            s.atime = 0;
        };
        let remote = f.remote.stat(&p, sha).await.map(|mut s| {
            assert_eq!(s.ctime, None);
            settle(&mut s);
            json(&s)
        });
        let local = local_ops::stat(&f.local, &p, sha).map(|mut s| {
            settle(&mut s);
            json(&s)
        });
        match (remote, local) {
            (Ok(r), Ok(l)) => assert_eq!(r, l, "{name}"),
            (Err(r), Err(l)) => assert_eq!(r.to_string(), l.to_string(), "{name}"),
            (r, l) => panic!("{name}: {r:?} / {l:?}"),
        }
    }
    let err = f.remote.stat(&f.root.join("d"), true).await.unwrap_err();
    assert!(
        err.to_string().contains("sha256 is for regular files"),
        "{err}"
    );
}

#[tokio::test]
async fn delete_needs_recursive_and_takes_any_name_as_a_name() {
    let f = fixture().await;
    ops_tree(&f.root);
    let r = &f.root;
    let err = f.remote.delete(&r.join("d"), false).await.unwrap_err();
    assert!(err.to_string().contains("recursive=true"), "{err}");
    assert!(r.join("d/e/f").exists());
    assert_eq!(
        f.remote.delete(&r.join("d"), true).await.unwrap().entries,
        4
    );
    assert!(!r.join("d").exists());
    for name in ["-delete", "a b", "new\nline", "--help"] {
        f.remote.delete(&r.join(name), false).await.unwrap();
        assert!(!r.join(name).exists(), "{name}");
    }
    // A symlink is removed, not what it points to.
    fs::write(r.join("target"), "t").unwrap();
    symlink("target", r.join("l2")).unwrap();
    f.remote.delete(&r.join("l2"), false).await.unwrap();
    assert!(r.join("target").exists());
    let err = f
        .remote
        .delete(&r.join("missing"), false)
        .await
        .unwrap_err();
    assert!(matches!(err, FileError::NotFound(_)));
    // A wide tree, more than one directory read.
    for i in 0..300 {
        put(r, &[(&format!("wide/{i}/x"), b"x")]);
    }
    assert_eq!(
        f.remote
            .delete(&r.join("wide"), true)
            .await
            .unwrap()
            .entries,
        601
    );
}

#[tokio::test]
async fn move_and_copy_never_overwrite_unless_asked() {
    let f = fixture().await;
    ops_tree(&f.root);
    let (r, fs_) = (&f.root, &f.remote);
    let read = |p: &str| fs::read_to_string(r.join(p)).unwrap();
    let err = fs_
        .rename(&r.join("-delete"), &r.join("d/g"), false)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");
    assert_eq!(read("d/g"), "gee");
    let err = fs_
        .copy(&r.join("-delete"), &r.join("d/g"), false, false)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");
    assert_eq!(read("d/g"), "gee");

    fs::set_permissions(r.join("-delete"), fs::Permissions::from_mode(0o604)).unwrap();
    let c = fs_
        .copy(&r.join("-delete"), &r.join("d/g"), true, false)
        .await
        .unwrap();
    assert!(c.replaced);
    assert_eq!((c.entries, c.bytes), (1, Some(4)));
    assert_eq!(read("d/g"), "dash");
    assert_eq!(
        fs::metadata(r.join("d/g")).unwrap().permissions().mode() & 0o777,
        0o604
    );
    let m = fs_
        .rename(&r.join("-delete"), &r.join("moved"), false)
        .await
        .unwrap();
    assert!(!m.replaced);
    assert!(!r.join("-delete").exists());
    assert_eq!(read("moved"), "dash");
    let m = fs_
        .rename(&r.join("a b"), &r.join("moved"), true)
        .await
        .unwrap();
    assert!(m.replaced);
    assert_eq!(read("moved"), "space");

    let err = fs_
        .copy(&r.join("d"), &r.join("d2"), false, false)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("recursive=true"), "{err}");
    let c = fs_
        .copy(&r.join("d"), &r.join("d2"), false, true)
        .await
        .unwrap();
    assert_eq!(c.entries, 4);
    assert_eq!(read("d2/e/f"), "deep");
    let err = fs_
        .copy(&r.join("d"), &r.join("d2"), true, true)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("never merges"), "{err}");
    let c = fs_
        .copy(&r.join("link"), &r.join("link2"), false, false)
        .await
        .unwrap();
    assert_eq!(c.entries, 1);
    assert_eq!(fs::read_link(r.join("link2")).unwrap(), Path::new("d/g"));
    // Directories move too, and never onto an existing one unless asked.
    let err = fs_
        .rename(&r.join("d2"), &r.join("d"), false)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");
    fs_.rename(&r.join("d2"), &r.join("new\nline dir"), false)
        .await
        .unwrap();
    assert_eq!(read("new\nline dir/e/f"), "deep");
    // A directory never replaces one that is not empty, as locally.
    put(r, &[("x/inner", b"1"), ("y/inner2", b"2")]);
    let remote = fs_
        .rename(&r.join("x"), &r.join("y"), true)
        .await
        .unwrap_err();
    let local = local_ops::rename(&f.local, &r.join("x"), &r.join("y"), true).unwrap_err();
    assert_eq!(remote.to_string(), local.to_string());
    // A big file copies whole (on the server when it can, else streamed).
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 13) as u8).collect();
    fs::write(r.join("big"), &big).unwrap();
    let c = fs_
        .copy(&r.join("big"), &r.join("big2"), false, false)
        .await
        .unwrap();
    assert_eq!(c.bytes, Some(3_000_000));
    assert_eq!(fs::read(r.join("big2")).unwrap(), big);
}

#[tokio::test]
async fn lists_like_the_local_engine() {
    let f = fixture().await;
    put(
        &f.root,
        &[
            ("Cargo.toml", b"[package]\n"),
            ("-delete", b"not an option\n"),
            (".env", b"SECRET=1\n"),
            (".gitignore", b"target/\n*.log\n!keep.log\n"),
            ("build.log", b"log\n"),
            ("keep.log", b"log\n"),
            ("src/main.rs", b"fn main() {}\n"),
            ("src/lib/mod.rs", b"\n"),
            ("src/lib/notes.txt", b"\n"),
            ("src/lib/.ignore", b"*.txt\n"),
            ("target/debug/out", b"bin\n"),
            (".hidden/inner.rs", b"\n"),
            ("sub/.gitignore", b"!*.log\n"),
            ("sub/x.log", b"\n"),
            ("a b/new\nline", b"\n"),
        ],
    );
    symlink("src", f.root.join("link")).unwrap();
    fs::set_permissions(f.root.join("Cargo.toml"), fs::Permissions::from_mode(0o640)).unwrap();
    let o = |depth, glob: Option<&str>, hidden, gitignore| local_list::ListOptions {
        depth,
        glob: glob.map(String::from),
        hidden,
        gitignore,
        offset: 0,
        limit: 1000,
    };
    let cases = [
        o(1, None, false, false),
        o(1, None, true, false),
        o(1, None, false, true),
        o(2, None, false, false),
        o(0, None, false, true),
        o(0, None, true, true),
        o(0, Some("*.rs"), false, false),
        o(0, Some("**/*.rs"), true, false),
        o(2, Some("*.rs"), false, false),
        o(0, Some("src/*.rs"), false, false),
        o(0, Some("src"), false, false),
        o(0, Some("!*.txt"), false, true),
        o(2, Some("!src"), false, false),
        o(0, Some("*.log"), false, true),
        o(0, Some("-delete"), false, false),
    ];
    for opts in &cases {
        for budget in [usize::MAX, 100] {
            let remote = f.remote.list(&f.root, opts, budget).await.unwrap();
            let local = local_list::list(&f.local, &f.root, opts, budget).unwrap();
            assert_eq!(json(&remote), json(&local), "{opts:?} {budget}");
        }
    }
    // Paging reassembles the full listing.
    let full = f
        .remote
        .list(&f.root, &o(0, None, true, false), usize::MAX)
        .await
        .unwrap();
    let mut paged = Vec::new();
    let mut opts = local_list::ListOptions {
        limit: 3,
        ..o(0, None, true, false)
    };
    loop {
        let l = f.remote.list(&f.root, &opts, usize::MAX).await.unwrap();
        paged.extend(l.entries.into_iter().map(|e| e.path));
        match l.next_offset {
            Some(n) => opts.offset = n,
            None => break,
        }
    }
    let all: Vec<String> = full.entries.into_iter().map(|e| e.path).collect();
    assert_eq!(paged, all);
    assert!(all.contains(&"a b/new\nline".to_owned()));
}

#[tokio::test]
async fn gitignore_of_parent_directories_counts_as_locally() {
    let f = fixture().await;
    put(
        &f.root,
        &[
            (".gitignore", b"*.tmp\nproj/build/\n"),
            ("proj/a.tmp", b"\n"),
            ("proj/a.rs", b"\n"),
            ("proj/build/x", b"\n"),
            ("repo/.git/info/exclude", b"*.excluded\n"),
            ("repo/b.tmp", b"\n"),
            ("repo/c.excluded", b"\n"),
            ("repo/d.rs", b"\n"),
        ],
    );
    for dir in ["proj", "repo"] {
        let opts = local_list::ListOptions {
            depth: 0,
            glob: None,
            hidden: false,
            gitignore: true,
            offset: 0,
            limit: 100,
        };
        let dir = f.root.join(dir);
        let remote = f.remote.list(&dir, &opts, usize::MAX).await.unwrap();
        let local = local_list::list(&f.local, &dir, &opts, usize::MAX).unwrap();
        assert_eq!(json(&remote), json(&local), "{}", dir.display());
    }
}

#[tokio::test]
async fn listing_refusals_and_bounds() {
    let f = fixture().await;
    put(&f.root, &[("file", b"x"), (".hidden/inner", b"x")]);
    for p in ["file", "missing"] {
        let opts = local_list::ListOptions {
            depth: 1,
            glob: None,
            hidden: false,
            gitignore: false,
            offset: 0,
            limit: 10,
        };
        let remote = f
            .remote
            .list(&f.root.join(p), &opts, 100)
            .await
            .unwrap_err();
        let local = local_list::list(&f.local, &f.root.join(p), &opts, 100).unwrap_err();
        assert_eq!(remote.to_string(), local.to_string());
    }
    for d in ["a", "b", "c"] {
        for i in 0..7 {
            put(&f.root, &[(&format!("{d}/f{i}"), b"")]);
        }
    }
    let opts = local_list::ListOptions {
        depth: 0,
        glob: Some("c/*".into()),
        hidden: false,
        gitignore: false,
        offset: 0,
        limit: 100,
    };
    let l = list::list_scanning(&f.remote, &f.root, &opts, usize::MAX, 10)
        .await
        .unwrap();
    assert!(l.scanned_limit_hit);
    let l = list::list_scanning(&f.remote, &f.root, &opts, usize::MAX, 100)
        .await
        .unwrap();
    assert!(!l.scanned_limit_hit);
    assert_eq!(l.entries.len(), 7);
}

#[tokio::test]
async fn relative_paths_start_at_the_login_directory() {
    let f = fixture().await;
    assert_eq!(f.remote.home(), f.root);
    let p = f.remote.absolute("sub/./rel file").unwrap();
    assert_eq!(p, f.root.join("sub/rel file"));
    f.remote.write(&p, b"here", None, true).await.unwrap();
    assert_eq!(fs::read(f.root.join("sub/rel file")).unwrap(), b"here");
    for bad in ["", "a\0b"] {
        assert!(matches!(f.remote.absolute(bad), Err(FileError::Invalid(_))));
    }
}
