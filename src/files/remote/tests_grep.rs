//! `grep` on a "remote" host (a local `sftp-server`, commands run as sshd
//! runs them): with ripgrep, and with only grep on the `PATH`. Pages are held
//! to the local engine's pages; hostile patterns and names must stay data.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use super::tests::{Fixture, ShellExec, fixture, fixture_with, json, put};
use crate::files::grep::{self as local_grep, Case, GrepMatch, GrepOptions, GrepResult};

fn opts(pattern: &str) -> GrepOptions {
    GrepOptions {
        limit: 10_000,
        ..GrepOptions::new(pattern)
    }
}

/// A `PATH` holding only `sh` and `grep`: a host without ripgrep.
fn without_rg() -> (tempfile::TempDir, String) {
    let t = tempfile::tempdir().unwrap();
    for prog in ["sh", "grep"] {
        let real = ["/usr/bin", "/bin"]
            .iter()
            .map(|d| Path::new(d).join(prog))
            .find(|p| p.exists())
            .unwrap();
        symlink(real, t.path().join(prog)).unwrap();
    }
    let path = t.path().to_str().unwrap().to_owned();
    (t, path)
}

/// The two hosts: one with ripgrep (as this machine has), one without.
async fn hosts() -> Vec<(Fixture, Option<tempfile::TempDir>)> {
    assert!(
        Path::new("/usr/bin/rg").exists() || Path::new("/bin/rg").exists(),
        "ripgrep is needed for these tests (Debian: apt-get install ripgrep)"
    );
    let (t, path) = without_rg();
    vec![
        (fixture().await, None),
        (fixture_with(ShellExec::new(Some(path))).await, Some(t)),
    ]
}

/// What must agree between the hosts and the local engine.
fn essence(r: &GrepResult) -> String {
    let mut r = r.clone();
    (r.files_searched, r.skipped, r.note) = (0, 0, None);
    json(&r)
}

async fn both(
    f: &Fixture,
    path: &Path,
    o: &GrepOptions,
    budget: usize,
) -> (GrepResult, GrepResult) {
    let remote = f.remote.grep(path, o, budget).await.unwrap();
    let local = local_grep::grep(&f.local, path, o, budget).unwrap();
    (remote, local)
}

fn hits(r: &GrepResult) -> Vec<String> {
    r.matches
        .iter()
        .map(|m| format!("{}:{}:{}", m.path, m.line, m.text))
        .collect()
}

#[tokio::test]
async fn searches_like_the_local_engine_with_and_without_ripgrep() {
    for (f, no_rg) in hosts().await {
        let rg = no_rg.is_none();
        put(
            &f.root,
            &[
                (".gitignore", b"target/\n"),
                (".ignore", b"*.gen.rs\n"),
                ("src/a.rs", b"fn foo() -> u8 {}\nFOO\nFoo bar\nfoobar\n"),
                ("src/b.gen.rs", b"foo\n"),
                ("src/c.txt", b"foo\na.c\nabc\n"),
                ("target/d.rs", b"foo\n"),
                (".hidden/e.rs", b"foo\n"),
                ("a b/new\nline", b"foo in a strange name\n"),
                ("-delete", b"foo\n"),
            ],
        );
        let g = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        #[rustfmt::skip]
        let cases: Vec<GrepOptions> = vec![
            opts("foo"),
            GrepOptions { case: Case::Sensitive, ..opts("foo") },
            GrepOptions { case: Case::Insensitive, ..opts("FOO") },
            opts("Foo"),
            GrepOptions { word: true, ..opts("foo") },
            opts("a.c"),
            GrepOptions { fixed: true, ..opts("a.c") },
            GrepOptions { fixed: true, ..opts("(") },
            GrepOptions { gitignore: false, ..opts("foo") },
            GrepOptions { hidden: true, ..opts("foo") },
            GrepOptions { globs: g(&["*.rs"]), ..opts("foo") },
            GrepOptions { globs: g(&["*.rs"]), gitignore: false, ..opts("foo") },
            GrepOptions { globs: g(&["*.rs"]), hidden: true, ..opts("foo") },
            GrepOptions { globs: g(&["*.rs", "!target/**"]), gitignore: false, ..opts("foo") },
            GrepOptions { globs: g(&["!*.txt"]), ..opts("foo") },
            GrepOptions { context: 2, ..opts("^Foo") },
            opts("nothing matches this"),
        ];
        for o in &cases {
            let (remote, local) = both(&f, &f.root, o, usize::MAX).await;
            assert_eq!(essence(&remote), essence(&local), "rg {rg}: {o:?}");
            assert_eq!(remote.note.is_some(), !rg);
        }
        // A file named like an option, searched by itself.
        let (remote, local) = both(&f, &f.root.join("-delete"), &opts("."), 100).await;
        assert_eq!(essence(&remote), essence(&local));
        assert_eq!(hits(&remote), ["-delete:1:foo"]);
        let err = f.remote.grep(&f.root, &opts("f("), 100).await.unwrap_err();
        let local = local_grep::grep(&f.local, &f.root, &opts("f("), 100).unwrap_err();
        assert_eq!(err.to_string(), local.to_string());
        // Which program ran, and that the pattern came right after `-e`.
        let calls = f.exec.calls.lock().unwrap().clone();
        assert_eq!(calls[0], ["sh", "-c", "command -v rg"]);
        for c in &calls[1..] {
            let c = match c[2] == super::grep::SPLIT {
                true => &c[5..],
                false => &c[..],
            };
            assert_eq!(c[0], if rg { "rg" } else { "grep" });
            let e = c.iter().position(|a| a == "-e").unwrap();
            assert_eq!(c[e + 2], "--", "{c:?}");
        }
    }
}

#[tokio::test]
async fn hostile_patterns_and_names_stay_data() {
    for (f, no_rg) in hosts().await {
        let mark = f.root.join("pwned");
        let m = mark.display();
        put(
            &f.root,
            &[
                (
                    "notes",
                    format!("-rf\n--pre=sh\n$(touch {m})\n`touch {m}`\n;touch {m}\n--files\n-e\n")
                        .as_bytes(),
                ),
                ("run.sh", format!("touch {m}\n").as_bytes()),
                ("--pre=sh", b"-rf here\n"),
                ("-rf/x", b"--files\n"),
            ],
        );
        let patterns = [
            "-rf".to_owned(),
            "--pre=sh".to_owned(),
            "--pre=touch".to_owned(),
            format!("$(touch {m})"),
            format!("`touch {m}`"),
            format!(";touch {m}"),
            "--files".to_owned(),
            "-e".to_owned(),
            "--".to_owned(),
        ];
        for p in &patterns {
            for fixed in [true, false] {
                let o = GrepOptions { fixed, ..opts(p) };
                if local_grep::grep(&f.local, &f.root, &o, 100).is_err() {
                    // Not a valid regex: refused before anything runs.
                    assert!(f.remote.grep(&f.root, &o, 100).await.is_err());
                    continue;
                }
                let (remote, local) = both(&f, &f.root, &o, usize::MAX).await;
                assert_eq!(
                    essence(&remote),
                    essence(&local),
                    "no_rg {}: {p:?}",
                    no_rg.is_some()
                );
                let (remote, local) = both(&f, &f.root.join("--pre=sh"), &o, usize::MAX).await;
                assert_eq!(essence(&remote), essence(&local), "{p:?} in --pre=sh");
            }
        }
        let o = GrepOptions {
            fixed: true,
            ..opts("-rf")
        };
        let (r, _) = both(&f, &f.root, &o, usize::MAX).await;
        assert_eq!(hits(&r), ["--pre=sh:1:-rf here", "notes:1:-rf"]);
        assert!(!mark.exists(), "a pattern or name ran as a command");
    }
}

/// A tree with many matches per file, as in the local engine's tests.
fn many(root: &Path) {
    for (d, n) in [("a", 3), ("a/b", 5), ("a.b", 2), ("c", 40)] {
        for f in 0..n {
            let rel = format!("{d}/f{f:02}");
            let mut body = String::new();
            for line in 1..=(f % 7 + 3) {
                if (line + f) % 3 == 0 {
                    body.push_str("other\n");
                } else {
                    body.push_str(&format!("hit {rel} {line}\n"));
                }
            }
            put(root, &[(&rel, body.as_bytes())]);
        }
    }
}

/// Every page of `o` from `path`.
async fn all_pages(f: &Fixture, path: &Path, o: &GrepOptions, budget: usize) -> Vec<GrepMatch> {
    let mut o = o.clone();
    let mut out = Vec::new();
    loop {
        let r = f.remote.grep(path, &o, budget).await.unwrap();
        out.extend(r.matches.iter().cloned());
        match r.next_offset {
            Some(next) => {
                assert_eq!(next, o.offset + r.matches.len());
                o.offset = next;
            }
            None => return out,
        }
    }
}

#[tokio::test]
async fn pages_and_budgets_match_the_local_engine() {
    for (f, _) in hosts().await {
        many(&f.root);
        let full = local_grep::grep(
            &f.local,
            &f.root,
            &GrepOptions {
                context: 1,
                ..opts("^hit")
            },
            usize::MAX,
        )
        .unwrap()
        .matches;
        // Every page costs two commands on the host: a few page sizes for
        // reassembly, more for the first page alone.
        for (limit, budget) in [(7, usize::MAX), (40, 1000)] {
            let o = GrepOptions {
                limit,
                context: 1,
                ..opts("^hit")
            };
            assert_eq!(
                all_pages(&f, &f.root, &o, budget).await,
                full,
                "{limit} {budget}"
            );
        }
        for (limit, budget) in [(1, usize::MAX), (40, 300), (40, 5000), (1000, 0)] {
            let o = GrepOptions {
                limit,
                context: 1,
                ..opts("^hit")
            };
            let (remote, local) = both(&f, &f.root, &o, budget).await;
            assert_eq!(essence(&remote), essence(&local), "{limit} {budget}");
        }
        for offset in [0, 10, 150, 10_000] {
            let o = GrepOptions {
                offset,
                limit: 5,
                ..opts("^hit")
            };
            let (remote, local) = both(&f, &f.root, &o, usize::MAX).await;
            assert_eq!(essence(&remote), essence(&local), "offset {offset}");
        }
        // Deep into one file.
        let body: String = (1..=5000).map(|i| format!("hit {i}\n")).collect();
        put(&f.root, &[("one/file", body.as_bytes())]);
        let o = GrepOptions {
            offset: 4990,
            limit: 20,
            context: 3,
            ..opts("hit")
        };
        for path in [f.root.join("one"), f.root.join("one/file")] {
            let (remote, local) = both(&f, &path, &o, usize::MAX).await;
            assert_eq!(essence(&remote), essence(&local), "{}", path.display());
            assert_eq!(remote.matches.len(), 10);
        }
    }
}

#[tokio::test]
async fn binary_files_are_skipped() {
    for (f, _) in hosts().await {
        put(&f.root, &[("text", b"needle\n"), ("bin", b"needle\0\n")]);
        let (remote, local) = both(&f, &f.root, &opts("needle"), 100).await;
        assert_eq!(essence(&remote), essence(&local));
        assert_eq!(hits(&remote), ["text:1:needle"]);
        let r = f
            .remote
            .grep(&f.root.join("bin"), &opts("needle"), 100)
            .await
            .unwrap();
        assert_eq!((r.matches.len(), r.total_matches, r.skipped), (0, 0, 1));
        let err = f
            .remote
            .grep(&PathBuf::from("/dev/null"), &opts("x"), 100)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("neither a regular file"), "{err}");
    }
}

#[tokio::test]
async fn a_missing_path_is_not_found() {
    let f = fixture().await;
    let err = f
        .remote
        .grep(&f.root.join("missing"), &opts("x"), 100)
        .await
        .unwrap_err();
    assert!(matches!(err, crate::files::FileError::NotFound(_)), "{err}");
    fs::create_dir(f.root.join("empty")).unwrap();
    let r = f
        .remote
        .grep(&f.root.join("empty"), &opts("x"), 100)
        .await
        .unwrap();
    assert_eq!((r.total_matches, r.next_offset), (0, None));
}

#[tokio::test]
async fn many_files_take_several_commands_and_long_patterns_are_refused() {
    for (f, no_rg) in hosts().await {
        for i in 0..2500 {
            let name = format!("d/{i:04}-{}", "x-".repeat(45));
            put(&f.root, &[(&name, b"hit\n")]);
        }
        let (remote, local) = both(&f, &f.root, &opts("hit"), usize::MAX).await;
        assert_eq!(essence(&remote), essence(&local));
        assert_eq!(remote.total_matches, 2500);
        let calls = f.exec.calls.lock().unwrap().clone();
        let searches = calls.iter().filter(|c| c[2] != "command -v rg").count();
        // ripgrep counts the tree in one command; grep gets the files in
        // batches. Either way the page's files take several commands.
        assert!(
            searches >= if no_rg.is_some() { 4 } else { 3 },
            "{searches}"
        );
        let long = "é".repeat(20_000);
        let err = f.remote.grep(&f.root, &opts(&long), 100).await.unwrap_err();
        assert!(err.to_string().contains("too long"), "{err}");
    }
}
