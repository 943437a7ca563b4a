//! known_hosts checking against keys and hashed names made by the real
//! `ssh-keygen`, so the semantics are OpenSSH's, not our reading of them.

use super::*;
use std::process::Command;

/// A real key made by ssh-keygen, so parsing and hashing meet OpenSSH's
/// own output.
struct Key {
    key_type: String,
    blob: Vec<u8>,
    pub_path: PathBuf,
}

impl Key {
    /// `type base64`, as it goes on a known_hosts line.
    fn line(&self) -> String {
        format!("{} {}", self.key_type, STANDARD.encode(&self.blob))
    }
}

/// Two distinct ed25519 keys, `k1` and `k2`.
fn two_keys(dir: &Path) -> (Key, Key) {
    (keygen(dir, "k1", "ed25519"), keygen(dir, "k2", "ed25519"))
}

fn keygen(dir: &Path, name: &str, kind: &str) -> Key {
    let path = dir.join(name);
    let mut cmd = Command::new("ssh-keygen");
    cmd.args(["-q", "-t", kind, "-N", "", "-C", name, "-f"])
        .arg(&path);
    if kind == "rsa" {
        cmd.args(["-b", "2048"]);
    }
    let out = cmd.output().expect("ssh-keygen runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pub_path = dir.join(format!("{name}.pub"));
    let text = std::fs::read_to_string(&pub_path).unwrap();
    let mut fields = text.split_whitespace();
    let key_type = fields.next().unwrap().to_string();
    let blob = STANDARD.decode(fields.next().unwrap()).unwrap();
    Key {
        key_type,
        blob,
        pub_path,
    }
}

fn write(dir: &Path, name: &str, lines: &[String]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

fn load(files: &[&PathBuf]) -> KnownHosts {
    KnownHosts::load(files).unwrap()
}

fn at(file: &Path, line: usize) -> String {
    format!("{}:{line}", file.file_name().unwrap().to_string_lossy())
}

/// A verdict in a few words: `trusted kh:3`, `changed kh:1,kh:2`, ...
fn outcome(v: &Verdict) -> String {
    match v {
        Verdict::Trusted { file, line, .. } => format!("trusted {}", at(file, *line)),
        Verdict::Revoked { file, line, .. } => format!("revoked {}", at(file, *line)),
        Verdict::Changed { expected, .. } => {
            let lines: Vec<String> = expected.iter().map(|e| at(&e.file, e.line)).collect();
            format!("changed {}", lines.join(","))
        }
        Verdict::Unknown { .. } => "unknown".to_string(),
    }
}

fn expect(known: &KnownHosts, cases: &[(&str, u16, &Key, &str)]) {
    for (host, port, key, want) in cases {
        let verdict = known.check(host, *port, &key.key_type, &key.blob);
        assert_eq!(outcome(&verdict), *want, "{host} port {port}");
    }
}

#[test]
fn fingerprint_is_what_ssh_keygen_prints() {
    let dir = tempfile::tempdir().unwrap();
    for kind in ["ed25519", "rsa", "ecdsa"] {
        let key = keygen(dir.path(), kind, kind);
        let out = Command::new("ssh-keygen")
            .args(["-E", "sha256", "-lf"])
            .arg(&key.pub_path)
            .output()
            .unwrap();
        let stdout = String::from_utf8(out.stdout).unwrap();
        let printed = stdout.split_whitespace().nth(1).unwrap();
        assert_eq!(fingerprint(&key.blob), printed, "{kind}");
    }
}

#[test]
fn plain_names_and_ports() {
    let dir = tempfile::tempdir().unwrap();
    let (k1, k2) = two_keys(dir.path());
    let kh = write(
        dir.path(),
        "kh",
        &[
            format!("web-1 {}", k1.line()),
            format!("[web-1]:2222 {}", k2.line()),
            format!("[db]:22 {}", k1.line()),
        ],
    );
    expect(
        &load(&[&kh]),
        &[
            ("web-1", 22, &k1, "trusted kh:1"),
            ("web-1", 2222, &k2, "trusted kh:2"),
            ("web-1", 2222, &k1, "changed kh:2"),
            ("web-1", 2200, &k1, "unknown"),
            // ssh looks up port 22 as the bare name, never `[db]:22`.
            ("db", 22, &k1, "unknown"),
            ("web-10", 22, &k1, "unknown"),
        ],
    );
}

#[test]
fn wildcards_and_negation() {
    let dir = tempfile::tempdir().unwrap();
    let (k1, k2) = two_keys(dir.path());
    let kh = write(
        dir.path(),
        "kh",
        &[
            format!("*.example.com,!bad.example.com {}", k1.line()),
            format!("!*.internal.example.org,*.example.org {}", k1.line()),
            format!("web-? {}", k2.line()),
        ],
    );
    expect(
        &load(&[&kh]),
        &[
            ("a.example.com", 22, &k1, "trusted kh:1"),
            ("bad.example.com", 22, &k1, "unknown"),
            ("example.com", 22, &k1, "unknown"),
            ("x.example.org", 22, &k1, "trusted kh:2"),
            ("a.internal.example.org", 22, &k1, "unknown"),
            ("web-7", 22, &k2, "trusted kh:3"),
            ("web-10", 22, &k2, "unknown"),
            ("web-", 22, &k2, "unknown"),
        ],
    );
}

#[test]
fn pattern_lists_match_as_openssh_does() {
    fn check(name: &str, list: &str, want: bool) {
        assert_eq!(
            match_pattern_list(name, list),
            want,
            "{name} against {list}"
        );
    }
    check("web", "web", true);
    check("web", "we", false);
    check("web", "w*", true);
    check("web", "*", true);
    check("web", "w?b", true);
    check("web", "w?", false);
    check("a.b.c", "*.c", true);
    check("a.b.c", "a*c*", true);
    check("aXbXc", "*b*c", true);
    check("web", "x,web", true);
    check("web", "web,!web", false);
    check("web", "!web,web", false);
    check("web", "!x", false);
    check("web", "", false);
    check("web", "x,,web", true);
    check("[web]:2222", "[web]:2222", true);
    check("[web]:2222", "[web]:*", true);
    check("[web]:2222", "web", false);
    let long = format!("{}*", "a".repeat(MAX_SUBPATTERN));
    check("a", &format!("a,{long}"), false);
}

#[test]
fn hashed_entries_from_ssh_keygen() {
    let dir = tempfile::tempdir().unwrap();
    let (k1, k2) = two_keys(dir.path());
    let kh = write(
        dir.path(),
        "kh",
        &[
            format!("web-1 {}", k1.line()),
            format!("[web-1]:2222 {}", k2.line()),
        ],
    );
    let out = Command::new("ssh-keygen")
        .arg("-H")
        .arg("-f")
        .arg(&kh)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&kh).unwrap();
    assert!(text.lines().all(|l| l.starts_with("|1|")), "{text}");

    let known = load(&[&kh]);
    assert_eq!(known.problems(), &[]);
    expect(
        &known,
        &[
            ("web-1", 22, &k1, "trusted kh:1"),
            ("WEB-1", 2222, &k2, "trusted kh:2"),
            ("web-1", 2222, &k1, "changed kh:2"),
            ("web-2", 22, &k1, "unknown"),
        ],
    );
}

#[test]
fn revoked_wins_whatever_host_the_line_names() {
    let dir = tempfile::tempdir().unwrap();
    let [k1, k2, k3] = ["k1", "k2", "k3"].map(|n| keygen(dir.path(), n, "ed25519"));
    let kh = write(
        dir.path(),
        "kh",
        &[
            format!("web-1 {}", k1.line()),
            format!("@revoked other.example.org {}", k1.line()),
            format!("@revoked * {}", k3.line()),
            format!("web-2 {}", k3.line()),
        ],
    );
    expect(
        &load(&[&kh]),
        &[
            ("web-1", 22, &k1, "revoked kh:2"),
            ("web-2", 22, &k3, "revoked kh:3"),
            ("web-1", 22, &k2, "changed kh:1"),
        ],
    );
}

#[test]
fn cert_authorities_follow_host_patterns_and_skip_revoked_keys() {
    let dir = tempfile::tempdir().unwrap();
    let [ca1, ca2, ca3] = ["ca1", "ca2", "ca3"].map(|n| keygen(dir.path(), n, "ed25519"));
    let kh = write(
        dir.path(),
        "kh",
        &[
            format!("@cert-authority *.example.com {}", ca1.line()),
            format!("@cert-authority other.org {}", ca2.line()),
            format!("@cert-authority *.example.com {}", ca3.line()),
            format!("@revoked * {}", ca3.line()),
        ],
    );
    let known = load(&[&kh]);
    let lines = |host: &str| -> Vec<usize> {
        known
            .cert_authorities(host, 22)
            .iter()
            .map(|k| k.line)
            .collect()
    };
    assert_eq!(lines("web.example.com"), [1]);
    assert_eq!(lines("other.org"), [2]);
    assert_eq!(lines("example.org"), Vec::<usize>::new());
    assert_eq!(
        known.cert_authorities("web.example.com", 22)[0].blob,
        ca1.blob
    );
    // A CA line does not trust the CA key as a plain host key.
    expect(&known, &[("web.example.com", 22, &ca1, "unknown")]);
}

#[test]
fn a_stale_line_before_the_valid_one_is_not_a_change() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (
        keygen(dir.path(), "old", "ed25519"),
        keygen(dir.path(), "new", "ed25519"),
    );
    let rsa = keygen(dir.path(), "rsa", "rsa");
    let kh = write(
        dir.path(),
        "kh",
        &[
            format!("web-1 {}", old.line()),
            format!("web-1 {}", rsa.line()),
            format!("web-1 {}", new.line()),
        ],
    );
    expect(&load(&[&kh]), &[("web-1", 22, &new, "trusted kh:3")]);
}

#[test]
fn a_different_key_of_the_same_type_is_a_change() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (
        keygen(dir.path(), "old", "ed25519"),
        keygen(dir.path(), "new", "ed25519"),
    );
    let kh = write(dir.path(), "kh", &[format!("web-1 {}", old.line())]);
    let verdict = load(&[&kh]).check("web-1", 22, &new.key_type, &new.blob);
    assert_eq!(outcome(&verdict), "changed kh:1");
    let Verdict::Changed { expected, .. } = &verdict else {
        unreachable!()
    };
    assert_eq!(expected[0].key_type, "ssh-ed25519");
    assert_eq!(expected[0].fingerprint(), fingerprint(&old.blob));

    let msg = verdict.message("web-1");
    for part in [
        "REFUSED: the host key of web-1 changed",
        "different key of this type",
        &format!("now {}", fingerprint(&new.blob)),
        &format!(
            "expected {} from {}:1",
            fingerprint(&old.blob),
            kh.display()
        ),
        "this may be an attack",
        "`mcpsh hosts trust web-1`",
    ] {
        assert!(msg.contains(part), "{part:?} not in {msg}");
    }
    assert!(
        !msg.contains("StrictHostKeyChecking") && !msg.contains("disable"),
        "{msg}"
    );
}

#[test]
fn a_signature_algorithm_as_key_type_still_compares_by_the_keys_type() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (
        keygen(dir.path(), "old", "rsa"),
        keygen(dir.path(), "new", "rsa"),
    );
    let kh = write(dir.path(), "kh", &[format!("web-1 {}", old.line())]);
    let verdict = load(&[&kh]).check("web-1", 22, "rsa-sha2-512", &new.blob);
    assert_eq!(verdict.presented().key_type, "ssh-rsa");
    let msg = verdict.message("web-1");
    assert!(msg.contains("different key of this type"), "{msg}");
}

#[test]
fn only_other_key_types_known_is_refused_with_its_own_message() {
    let dir = tempfile::tempdir().unwrap();
    let (rsa, ed) = (
        keygen(dir.path(), "rsa", "rsa"),
        keygen(dir.path(), "ed", "ed25519"),
    );
    let kh = write(dir.path(), "kh", &[format!("web-1 {}", rsa.line())]);
    let verdict = load(&[&kh]).check("web-1", 22, &ed.key_type, &ed.blob);
    assert_eq!(outcome(&verdict), "changed kh:1");
    let msg = verdict.message("web-1");
    for part in [
        "known with other key types only",
        &format!("ssh-rsa {} from {}:1", fingerprint(&rsa.blob), kh.display()),
        &format!("({}, ssh-ed25519)", fingerprint(&ed.blob)),
        "`mcpsh hosts trust web-1`",
    ] {
        assert!(msg.contains(part), "{part:?} not in {msg}");
    }
    assert!(!msg.contains("different key of this type"), "{msg}");
}

#[test]
fn unknown_host_says_who_must_do_what() {
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path(), "k", "ed25519");
    let kh = write(dir.path(), "kh", &[format!("web-1 {}", key.line())]);
    let known = load(&[&kh]);
    let verdict = known.check("web-3", 22, &key.key_type, &key.blob);
    assert_eq!(
        verdict.message("web-3"),
        format!(
            "REFUSED: the host key of web-3 ({}, ssh-ed25519) is not in known_hosts; a human \
             must verify it and add it with `mcpsh hosts trust web-3`",
            fingerprint(&key.blob)
        )
    );
    let verdict = known.check("10.0.0.3", 2222, &key.key_type, &key.blob);
    assert!(
        verdict
            .message("prod")
            .starts_with("REFUSED: the host key of prod ([10.0.0.3]:2222)")
    );
}

#[test]
fn several_files_are_read_in_order_and_missing_ones_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path(), "k", "ed25519");
    let user = write(dir.path(), "user", &[format!("other {}", key.line())]);
    let global = write(dir.path(), "global", &[format!("web-1 {}", key.line())]);
    let missing = dir.path().join("missing");
    let under_a_file = user.join("known_hosts");
    let known = load(&[&missing, &under_a_file, &user, &global]);
    expect(&known, &[("web-1", 22, &key, "trusted global:1")]);
}

#[test]
fn host_names_match_case_insensitively() {
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path(), "k", "ed25519");
    let kh = write(
        dir.path(),
        "kh",
        &[format!("Web-1.Example.COM,*.CORP {}", key.line())],
    );
    expect(
        &load(&[&kh]),
        &[
            ("WEB-1.example.com", 22, &key, "trusted kh:1"),
            ("db.corp", 22, &key, "trusted kh:1"),
            ("DB.Corp", 22, &key, "trusted kh:1"),
        ],
    );
}

#[test]
fn malformed_lines_are_reported_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path(), "k", "ed25519");
    let encoded = STANDARD.encode(&key.blob);
    let kh = write(
        dir.path(),
        "kh",
        &[
            "garbage".to_string(),
            format!("@bogus web-1 {}", key.line()),
            "web-1 ssh-ed25519 !!!notbase64".to_string(),
            format!("web-1 ssh-rsa {encoded}"),
            format!("|1|bad|hash {}", key.line()),
            "# a comment".to_string(),
            String::new(),
            format!("  web-1\t{} a comment\r", key.line()),
            format!("web-1 {} {}", key.line(), "x".repeat(MAX_LINE)),
            "web-1 1024 35 12345".to_string(),
            "web-1 ssh-ed25519".to_string(),
        ],
    );
    let known = load(&[&kh]);
    let lines: Vec<usize> = known.problems().iter().map(|p| p.line).collect();
    assert_eq!(lines, [1, 2, 3, 4, 5, 9, 10, 11]);
    assert_eq!(
        known.problems()[3].to_string(),
        format!(
            "{}:4: the line says ssh-rsa but the key is ssh-ed25519; line ignored",
            kh.display()
        )
    );
    expect(&known, &[("web-1", 22, &key, "trusted kh:8")]);
}

#[test]
fn oversized_and_unreadable_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big");
    std::fs::write(&big, vec![b'#'; MAX_FILE as usize + 1]).unwrap();
    assert!(matches!(
        KnownHosts::load(&[&big]),
        Err(KnownHostsError::TooLarge { .. })
    ));
    let a_dir = dir.path().to_path_buf();
    assert!(matches!(
        KnownHosts::load(&[&a_dir]),
        Err(KnownHostsError::Read { .. })
    ));
}

#[test]
fn append_trusted_round_trips_through_ssh_keygen() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let (k1, k2) = (
        keygen(dir.path(), "k1", "ed25519"),
        keygen(dir.path(), "k2", "ecdsa"),
    );
    let path = dir.path().join("home/.ssh/known_hosts");
    append_trusted(&path, "Web-1", 22, &k1.key_type, &k1.blob).unwrap();
    append_trusted(&path, "web-2", 2222, &k2.key_type, &k2.blob).unwrap();

    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(path.parent().unwrap()), 0o700);
    for (name, key) in [("web-1", &k1), ("[web-2]:2222", &k2)] {
        let out = Command::new("ssh-keygen")
            .args(["-F", name, "-f"])
            .arg(&path)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains(&key.line()),
            "{name}: {stdout}"
        );
    }
    expect(
        &load(&[&path]),
        &[
            ("web-1", 22, &k1, "trusted known_hosts:1"),
            ("web-2", 2222, &k2, "trusted known_hosts:2"),
        ],
    );
}

#[test]
fn append_trusted_starts_a_new_line_after_an_unterminated_one() {
    let dir = tempfile::tempdir().unwrap();
    let (k1, k2) = two_keys(dir.path());
    let path = dir.path().join("kh");
    std::fs::write(&path, format!("other {}", k1.line())).unwrap();
    append_trusted(&path, "web-1", 22, &k2.key_type, &k2.blob).unwrap();
    let known = load(&[&path]);
    assert_eq!(known.problems(), &[]);
    expect(
        &known,
        &[
            ("other", 22, &k1, "trusted kh:1"),
            ("web-1", 22, &k2, "trusted kh:2"),
        ],
    );
}

#[test]
fn append_trusted_refuses_names_and_keys_that_would_read_as_something_else() {
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path(), "k", "ed25519");
    let path = dir.path().join("kh");
    for host in [
        "",
        "a b",
        "a\tb",
        "a\nb",
        "a,b",
        "-oProxyCommand=x",
        "*.x",
        "web-?",
        "!web",
        "|1|x",
        "@revoked",
        "#web",
        "[a]:22",
    ] {
        let err = append_trusted(&path, host, 22, &key.key_type, &key.blob).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{host:?}");
    }
    let err = append_trusted(&path, "web-1", 22, "ssh-rsa", &key.blob).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert!(!path.exists());
}
