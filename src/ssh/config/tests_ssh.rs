//! The built-in parser against the real `ssh -G` on the same files, field by
//! field (the main proof the parser is right), and hostile names that must
//! never reach ssh. Skipped, with a note, where no `ssh` client is installed.

use std::path::PathBuf;

use super::tests::Fixture;
use super::*;

fn real_ssh() -> Option<PathBuf> {
    let ssh = find_ssh();
    if ssh.is_none() {
        eprintln!("note: no ssh client on PATH; the ssh -G cases are skipped");
    }
    ssh
}

/// Errors compare by kind (ssh and the built-in parser word some apart).
fn kind(r: &Result<HostConfig, ConfigError>) -> String {
    match r {
        Ok(c) => format!("{c:#?}"),
        Err(e) => format!("error {:?}", std::mem::discriminant(e)),
    }
}

#[test]
fn builtin_parser_matches_ssh_dash_g_for_every_host() {
    let Some(ssh) = real_ssh() else { return };
    let f = Fixture::standard();
    let inv = f.inventory();
    let with_ssh = f.ctx(Some(ssh));
    let builtin = f.ctx(None);
    let mut aliases: Vec<String> = inv.hosts().iter().map(|h| h.name.clone()).collect();
    aliases.extend(["nowhere".into(), "WEB-1".into(), "[2001:db8::7]".into()]);
    let mut compared = 0;
    for alias in &aliases {
        let a = resolve(alias, &with_ssh);
        let b = resolve(alias, &builtin);
        assert_eq!(
            kind(&a),
            kind(&b),
            "{alias}: ssh -G (left) vs built-in (right)"
        );
        if let (Err(ConfigError::Ssh { message, .. }), _) = (&a, &b) {
            panic!("{alias}: ssh -G failed: {message}");
        }
        compared += usize::from(a.is_ok());
    }
    assert!(compared >= 15, "only {compared} hosts resolved");
}

#[test]
fn ssh_dash_g_results_are_the_expected_ones() {
    let Some(ssh) = real_ssh() else { return };
    let f = Fixture::standard();
    let ctx = f.ctx(Some(ssh));
    let deep = resolve("deep", &ctx).unwrap();
    let hops: Vec<(&str, &str, u16)> = deep
        .proxy_jump
        .iter()
        .map(|h| {
            (
                h.config.host_name.as_str(),
                h.config.user.as_str(),
                h.config.port,
            )
        })
        .collect();
    assert_eq!(
        hops,
        [
            ("bastion.example", "alice", 2200),
            ("relay.example", "bob", 2022),
            ("gate.example", "relayer", 22)
        ]
    );
    let db = resolve("db", &ctx).unwrap();
    assert_eq!((db.user.as_str(), db.port), ("dbadmin", 2222));
    assert_eq!(db.identity_files[0], f.home().join(".ssh/id db 10.0.0.5"));
    let app = resolve("app", &ctx).unwrap();
    assert_eq!((app.host_name.as_str(), app.port), ("app.example", 2022));
    assert!(matches!(
        resolve("loop-b", &ctx),
        Err(ConfigError::JumpLoop { .. })
    ));
    assert!(matches!(
        resolve("legacy", &ctx),
        Err(ConfigError::ProxyCommand { .. })
    ));
}

#[test]
fn match_include_and_pattern_semantics_agree_with_ssh() {
    let Some(ssh) = real_ssh() else { return };
    let f = Fixture::new();
    let me = f.local.name.clone();
    f.write(
        "ssh_config",
        &format!(
            "Host m1 m3\n  User deploy\n\
             Match originalhost m1 user deploy\n  Port 2301\n\
             Match user deploy\n  ServerAliveInterval 1m\n\
             Match !host m*.example,x* localuser {me}\n  ConnectTimeout 7\n\
             Match canonical all\n  Port 1\n\
             Host m2\n  HostName M2.Example\n  Include sub/*.conf\n\
             Host x? !x9\n  StrictHostKeyChecking yes\n\
             Host m4\n  HostName pre-%h.example\n  IdentityFile ~/.ssh/k%%%h\n\
             Match all\n  IdentitiesOnly yes\n\
             Host *\n  UserKnownHostsFile TMP/kh\n"
        ),
    );
    f.write("home/.ssh/sub/a.conf", "Port 2302\nHost m3\n  Port 2303\n");
    let with_ssh = f.ctx(Some(ssh));
    let builtin = f.ctx(None);
    for alias in ["m1", "m2", "m3", "m4", "x1", "x9", "xx", "M1", "other"] {
        let a = resolve(alias, &with_ssh);
        let b = resolve(alias, &builtin);
        assert_eq!(
            kind(&a),
            kind(&b),
            "{alias}: ssh -G (left) vs built-in (right)"
        );
        assert!(a.is_ok(), "{alias}: {a:?}");
    }
    let port = |alias: &str| resolve(alias, &builtin).unwrap().port;
    assert_eq!([port("m1"), port("m2"), port("m3")], [2301, 2302, 22]);
    let m4 = resolve("m4", &builtin).unwrap();
    assert_eq!(m4.host_name, "pre-m4.example");
    assert_eq!(m4.identity_files, [f.home().join(".ssh/k%pre-m4.example")]);
}

/// Names an agent might send to get a command run or an option set.
fn hostile(marker: &str) -> Vec<String> {
    let mut names: Vec<String> = [
        "-oProxyCommand=touch MARK",
        "-oProxyCommand=touch${IFS}MARK",
        "-oLocalCommand=touch MARK",
        "-F/etc/passwd",
        "-G",
        "-",
        "a;touch MARK",
        "a|touch MARK",
        "a&&touch MARK",
        "$(touch MARK)",
        "`touch MARK`",
        "a>MARK",
        "a<b",
        "host name",
        "a\nb",
        "a\tb",
        "a\0b",
        "\u{7f}x",
        "..",
        ".hidden",
        "a/../b",
        "~root",
        "a'b",
        "a\"b",
        "a\\b",
        "{a,b}",
        "(a)",
        "*",
        "web?",
        "!web",
        "#web",
        "user@host",
        "a:22",
        "[::1",
        "[not-v6]",
        "%h",
        "a=b",
        "a,b",
        "wéb",
        "",
    ]
    .iter()
    .map(|n| n.replace("MARK", marker))
    .collect();
    names.push("a".repeat(254));
    names
}

#[test]
fn hostile_names_are_refused_before_any_ssh_runs() {
    let f = Fixture::standard();
    let marker = f.path("pwned");
    let log = f.path("spy.log");
    let spy = f.write(
        "spy-ssh",
        &format!("#!/bin/sh\necho \"$@\" >> {}\n", log.display()),
    );
    std::fs::set_permissions(&spy, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let names = hostile(marker.to_str().unwrap());
    assert!(names.len() >= 20);
    let mut ctxs = vec![f.ctx(Some(spy.clone())), f.ctx(None)];
    ctxs.extend(real_ssh().map(|ssh| f.ctx(Some(ssh))));
    for name in &names {
        assert!(check_host_name(name).is_err(), "{name:?} accepted");
        for ctx in &ctxs {
            let err = resolve(name, ctx).unwrap_err();
            assert!(
                matches!(err, ConfigError::BadName { .. }),
                "{name:?}: {err:?}"
            );
        }
        if !name.contains(['*', '?']) {
            assert!(
                f.inventory().select(std::slice::from_ref(name)).is_err(),
                "{name:?}"
            );
        }
    }
    assert!(
        !log.exists(),
        "the spy ssh ran: {:?}",
        std::fs::read_to_string(&log)
    );
    assert!(!marker.exists());
    // The spy does run for a good name, so its silence above means something.
    assert!(resolve("web-1", &ctxs[0]).is_err());
    let argv = std::fs::read_to_string(&log).unwrap();
    assert!(argv.ends_with("-- web-1\n"), "{argv}");
}

#[test]
fn hostile_values_in_config_files_never_run() {
    let f = Fixture::new();
    let marker = f.path("pwned");
    let m = marker.display();
    let refused = [
        format!("ProxyJump -oProxyCommand=touch{m}"),
        format!("ProxyJump -oProxyCommand=touch{m}@gw"),
        format!("ProxyJump $(touch{m})"),
        format!("ProxyJump gw,-oProxyCommand=touch{m}"),
        format!("HostName `touch{m}`"),
        format!("HostName -oProxyCommand=touch{m}"),
        format!("User -oProxyCommand=touch{m}"),
        format!("ProxyCommand touch {m}"),
    ];
    let noted = [
        format!("PermitLocalCommand yes\n  LocalCommand touch {m}"),
        format!("KnownHostsCommand /bin/sh -c 'touch {m}'"),
    ];
    let ssh = real_ssh();
    for (setting, ok) in refused
        .iter()
        .map(|s| (s, false))
        .chain(noted.iter().map(|s| (s, true)))
    {
        f.write("ssh_config", &format!("Host h\n  {setting}\n"));
        for ctx in [Some(f.ctx(None)), ssh.clone().map(|s| f.ctx(Some(s)))]
            .into_iter()
            .flatten()
        {
            match resolve("h", &ctx) {
                Ok(c) => assert!(ok && !c.ignored.is_empty(), "{setting}: {c:?}"),
                Err(e) => assert!(!ok, "{setting}: {e}"),
            }
        }
    }
    assert!(!marker.exists());
}
