//! The inventory, selection, names and the built-in parser, on a temporary
//! home with a realistic ssh config. `tests_ssh.rs` checks the same config
//! against the real `ssh -G`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

/// The ssh config every test here uses. `TMP` becomes the fixture directory.
pub(super) const CONFIG: &str = r#"# mcpsh test config
Include conf.d/*.conf
Include nothing-here.conf

Host web-1 web-2
    HostName %h.internal.example
    User deploy

Host web-1
    Port 2201
    User second-value-loses

Host db
    HostName 10.0.0.5
    Port=2222
    IdentityFile "~/.ssh/id db %h"
    IdentityFile %d/.ssh/id_%r_%p
    IdentitiesOnly yes
    ProxyJump bastion
    HostKeyAlias db-key
    ConnectTimeout 1m5s
    StrictHostKeyChecking no

Host bastion
    HostName bastion.example
    User jump
    ProxyJump none

Host deep
    HostName deep.example
    ProxyJump alice@bastion:2200,ssh://bob@relay:2022,gate

Host relay
    HostName relay.example

Host gate
    HostName gate.example
    ProxyJump relay

Host via-gate
    ProxyJump gate

Host loop-a
    ProxyJump loop-b
Host loop-b
    ProxyJump loop-a

Host legacy
    ProxyCommand nc %h %p

Host quirky
    HostName = Quirky.Example
    user "quoted-user"
    LocalCommand echo hi
    PermitLocalCommand yes
    ForwardAgent yes
    LocalForward 8080 localhost:80

Host !web-2 web-*
    ServerAliveCountMax 9

Match host *.internal.example
    ServerAliveCountMax 7

Match originalhost relay,gate
    User relayer

Host *
    User fallback
    ServerAliveInterval 30
    UserKnownHostsFile TMP/known_hosts TMP/known_hosts_%h_%p
"#;

pub(super) const HOSTS_TOML: &str = r#"
[[host]]
name = "db"
user = "dbadmin"
tags = ["prod", "data"]

[[host]]
name = "web-1"
tags = ["prod", "web"]

[[host]]
name = "web-2"
tags = ["web"]

[[host]]
name = "toml-only"
address = "192.0.2.7"
port = 2200
key = "~/.ssh/id_toml_%h"
tags = ["lab"]
"#;

/// A temporary directory with a home (`home/.ssh`) and files written into it.
pub(super) struct Fixture {
    pub(super) dir: tempfile::TempDir,
    pub(super) local: LocalUser,
}

impl Fixture {
    pub(super) fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let me = LocalUser::current().unwrap();
        let home = dir.path().join("home");
        std::fs::create_dir_all(home.join(".ssh")).unwrap();
        Fixture {
            local: LocalUser { home, ..me },
            dir,
        }
    }

    /// The standard config: `CONFIG`, its includes, and `HOSTS_TOML`.
    pub(super) fn standard() -> Fixture {
        let f = Fixture::new();
        f.write("ssh_config", CONFIG);
        f.write(
            "home/.ssh/conf.d/10-app.conf",
            "Host app\n    HostName app.example\n    Port 2022\nHost cache\n",
        );
        f.write(
            "home/.ssh/conf.d/20-cache.conf",
            "Host cache\n    HostName=cache.example\n    user = cacheuser\n",
        );
        f.write("home/.ssh/conf.d/.hidden.conf", "Host hidden-host\n");
        f.write("home/.ssh/conf.d/notes.txt", "Host not-a-conf\n");
        f.write("hosts.toml", HOSTS_TOML);
        f
    }

    pub(super) fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Writes `text` (with `TMP` replaced by the fixture directory).
    pub(super) fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let tmp = self.dir.path().to_str().unwrap();
        std::fs::write(&p, text.replace("TMP", tmp)).unwrap();
        p
    }

    pub(super) fn inventory(&self) -> Inventory {
        let toml = self.path("hosts.toml");
        let toml = toml.exists().then_some(toml.as_path());
        Inventory::load_as(&self.path("ssh_config"), toml, self.local.clone()).unwrap()
    }

    /// A context on the standard files, built-in parser or `ssh`.
    /// A context on the standard files, built-in parser or `ssh`; usable
    /// even when the files do not load as an inventory.
    pub(super) fn ctx(&self, ssh: Option<PathBuf>) -> ResolveCtx {
        let toml = self.path("hosts.toml");
        let toml = toml.exists().then_some(toml.as_path());
        let overrides = Inventory::load_as(&self.path("ssh_config"), toml, self.local.clone())
            .map(|inv| ResolveCtx::new(&inv).overrides)
            .unwrap_or_default();
        ResolveCtx {
            ssh_config: self.path("ssh_config"),
            local: self.local.clone(),
            force_builtin: ssh.is_none(),
            ssh_program: ssh,
            overrides,
        }
    }

    pub(super) fn home(&self) -> &Path {
        &self.local.home
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn inventory_lists_concrete_aliases_in_order_then_hosts_toml() {
    let f = Fixture::standard();
    let inv = f.inventory();
    let names: Vec<&str> = inv.hosts().iter().map(|h| h.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "app",
            "cache",
            "web-1",
            "web-2",
            "db",
            "bastion",
            "deep",
            "relay",
            "gate",
            "via-gate",
            "loop-a",
            "loop-b",
            "legacy",
            "quirky",
            "toml-only"
        ]
    );
    let db = inv.get("db").unwrap();
    assert!(db.in_ssh_config && db.in_hosts_toml);
    assert_eq!(db.tags, strings(&["prod", "data"]));
    assert_eq!(db.overrides.user.as_deref(), Some("dbadmin"));
    let only = inv.get("toml-only").unwrap();
    assert!(!only.in_ssh_config && only.in_hosts_toml);
    assert_eq!(only.overrides.port, Some(2200));
}

#[test]
fn selection_by_name_glob_and_tag() {
    let f = Fixture::standard();
    let inv = f.inventory();
    let check = |sel: &[&str], want: Result<&[&str], SelectError>| {
        let got = inv.select(&strings(sel));
        assert_eq!(got, want.map(strings), "{sel:?}");
    };
    check(&["web-*"], Ok(&["web-1", "web-2"]));
    check(&["tag:prod"], Ok(&["web-1", "db"]));
    check(
        &["db", "tag:prod", "web-1", "web-?"],
        Ok(&["web-1", "web-2", "db"]),
    );
    check(
        &["loop-*", "toml-only"],
        Ok(&["loop-a", "loop-b", "toml-only"]),
    );
    check(&[], Err(SelectError::Empty));
    check(&[" "], Err(SelectError::Empty));
    check(
        &["tag:nope"],
        Err(SelectError::UnknownTag {
            tag: "nope".into(),
            known: strings(&["data", "lab", "prod", "web"]),
        }),
    );
    assert!(matches!(
        inv.select(&strings(&["zz-*"])),
        Err(SelectError::NoMatch { .. })
    ));
    assert!(matches!(
        inv.select(&strings(&["a;b"])),
        Err(SelectError::Bad { .. })
    ));
    assert!(matches!(
        inv.select(&strings(&["tag:a b"])),
        Err(SelectError::Bad { .. })
    ));
}

#[test]
fn an_unknown_name_suggests_close_ones() {
    let f = Fixture::standard();
    let inv = f.inventory();
    let err = inv.select(&strings(&["web-l"])).unwrap_err();
    let SelectError::UnknownHost { suggestions, .. } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(suggestions, &strings(&["web-1", "web-2"]));
    assert!(
        err.to_string().contains("did you mean web-1, web-2?"),
        "{err}"
    );
    let err = inv.select(&strings(&["bastoin"])).unwrap_err();
    assert!(err.to_string().contains("did you mean bastion?"), "{err}");
    let err = inv.select(&strings(&["completely-different"])).unwrap_err();
    assert!(!err.to_string().contains("did you mean"), "{err}");
}

#[test]
fn hosts_toml_is_checked_with_the_line_named() {
    let check = |toml: &str, want: &[&str]| {
        let f = Fixture::new();
        f.write("hosts.toml", toml);
        let err = Inventory::load_as(
            &f.path("ssh_config"),
            Some(&f.path("hosts.toml")),
            f.local.clone(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("hosts.toml"), "{err}");
        for w in want {
            assert!(err.contains(w), "{toml:?}: {err:?} lacks {w:?}");
        }
    };
    check(
        "[[host]]\nname = \"a\"\nadress = \"x\"\n",
        &["line 3", "adress"],
    );
    check("[[hosts]]\nname = \"a\"\n", &["hosts"]);
    check(
        "[[host]]\nname = \"ok\"\n\n[[host]]\nname = \"-oProxyCommand=x\"\n",
        &["line 4", "ssh option"],
    );
    check("[[host]]\nname = \"a\"\nuser = \"$(id)\"\n", &["user"]);
    check(
        "[[host]]\nname = \"a\"\n[[host]]\nname = \"a\"\n",
        &["listed twice"],
    );
    check("[[host]]\nname = \"a\"\nport = 0\n", &["port"]);
    check("[[host]]\nname = \"a\"\nport = 70000\n", &["port"]);
    check(
        "[[host]]\nname = \"a\"\naddress = \"a b\"\n",
        &["address", "whitespace"],
    );
    check("[[host]]\nname = \"local\"\n", &["reserved"]);
    check("[[host]]\nname = \"a\"\ntags = [\"x y\"]\n", &["tag"]);
}

#[test]
fn host_names_are_checked() {
    for ok in [
        "web-1",
        "db.example.com",
        "10.0.0.1",
        "[2001:db8::1]",
        "a_b",
        "x",
        "example.com.",
    ] {
        assert_eq!(check_host_name(ok), Ok(()), "{ok}");
    }
    let msg = |n: &str| check_host_name(n).unwrap_err();
    assert!(msg("-oProxyCommand=x").contains("would be read as an ssh option"));
    assert!(msg("a b").contains("whitespace"));
    assert!(msg("a\u{1}b").contains("control"));
    assert!(msg("u@h").contains("give the user separately"));
    assert!(msg("h:22").contains("IPv6"));
    assert!(msg("a;b").contains("';'"));
    assert!(msg("wéb").contains("ASCII"));
    assert!(msg(&"a".repeat(254)).contains("253"));
    assert!(msg("[::g]").contains("IPv6"));
}

#[test]
fn proxy_jump_specs_parse() {
    use names::parse_jumps;
    let hops =
        parse_jumps("alice@bastion:2200,ssh://bob@relay:2022/,[2001:db8::1]:23,gate # c").unwrap();
    let got: Vec<(Option<&str>, &str, Option<u16>)> = hops
        .iter()
        .map(|h| (h.user.as_deref(), h.host.as_str(), h.port))
        .collect();
    assert_eq!(
        got,
        [
            (Some("alice"), "bastion", Some(2200)),
            (Some("bob"), "relay", Some(2022)),
            (None, "[2001:db8::1]", Some(23)),
            (None, "gate", None),
        ]
    );
    assert_eq!(parse_jumps("none").unwrap(), []);
    for bad in [
        "a,,b",
        "a, b",
        "h:0",
        "h:port",
        "::1",
        "ssh://h/path",
        "-oProxyCommand=x",
        "$(id)@h",
        "u@h;x",
    ] {
        assert!(parse_jumps(bad).is_err(), "{bad}");
    }
}

fn builtin(f: &Fixture, alias: &str) -> Result<HostConfig, ConfigError> {
    resolve(alias, &f.ctx(None))
}

#[test]
fn first_value_wins_and_host_star_gives_defaults() {
    let f = Fixture::standard();
    let c = builtin(&f, "web-1").unwrap();
    let tmp = f.dir.path().display();
    assert_eq!(c.host_name, "web-1.internal.example");
    assert_eq!(c.user, "deploy");
    assert_eq!(c.port, 2201);
    assert_eq!(c.server_alive_interval, Some(Duration::from_secs(30)));
    assert_eq!(c.server_alive_count_max, 9);
    assert_eq!(
        c.user_known_hosts_files,
        [
            PathBuf::from(format!("{tmp}/known_hosts")),
            PathBuf::from(format!("{tmp}/known_hosts_web-1.internal.example_2201")),
        ]
    );
    let ids: Vec<PathBuf> = ["id_rsa", "id_ecdsa", "id_ed25519"]
        .iter()
        .map(|k| f.home().join(".ssh").join(k))
        .collect();
    assert_eq!(c.identity_files, ids);
    assert_eq!(builtin(&f, "web-2").unwrap().server_alive_count_max, 7);
    let unknown = builtin(&f, "nowhere").unwrap();
    assert_eq!(
        (
            unknown.host_name.as_str(),
            unknown.user.as_str(),
            unknown.port
        ),
        ("nowhere", "fallback", 22)
    );
}

#[test]
fn tokens_quotes_and_key_value_syntax() {
    let f = Fixture::standard();
    let db = builtin(&f, "db").unwrap();
    assert_eq!(
        (db.host_name.as_str(), db.port, db.user.as_str()),
        ("10.0.0.5", 2222, "dbadmin")
    );
    assert_eq!(
        db.identity_files,
        [
            f.home().join(".ssh/id db 10.0.0.5"),
            f.home().join(".ssh/id_dbadmin_2222")
        ]
    );
    assert!(db.identities_only);
    assert_eq!(db.hostkey_alias.as_deref(), Some("db-key"));
    assert_eq!(db.connect_timeout, Some(Duration::from_secs(65)));
    assert_eq!(db.strict_host_key_checking, "no");
    assert!(
        db.ignored
            .iter()
            .any(|n| n.contains("StrictHostKeyChecking no is ignored"))
    );
    let q = builtin(&f, "quirky").unwrap();
    assert_eq!(
        (q.host_name.as_str(), q.user.as_str()),
        ("quirky.example", "quoted-user")
    );
    assert_eq!(q.ignored.len(), 4, "{:?}", q.ignored);
    let cache = builtin(&f, "cache").unwrap();
    assert_eq!(
        (cache.host_name.as_str(), cache.user.as_str()),
        ("cache.example", "cacheuser")
    );
    let app = builtin(&f, "app").unwrap();
    assert_eq!((app.host_name.as_str(), app.port), ("app.example", 2022));
    let only = builtin(&f, "toml-only").unwrap();
    assert_eq!(
        (only.host_name.as_str(), only.port, only.user.as_str()),
        ("192.0.2.7", 2200, "fallback")
    );
    assert_eq!(
        only.identity_files,
        [f.home().join(".ssh/id_toml_192.0.2.7")]
    );
}

#[test]
fn proxy_jump_chains_resolve_hop_by_hop() {
    let f = Fixture::standard();
    let hops = |alias: &str| -> Vec<(String, String, String, u16)> {
        builtin(&f, alias)
            .unwrap()
            .proxy_jump
            .into_iter()
            .map(|h| {
                assert!(h.config.proxy_jump.is_empty());
                (h.spec, h.config.host_name, h.config.user, h.config.port)
            })
            .collect()
    };
    let row = |s: &str, h: &str, u: &str, p: u16| (s.to_owned(), h.to_owned(), u.to_owned(), p);
    assert_eq!(hops("db"), [row("bastion", "bastion.example", "jump", 22)]);
    assert_eq!(
        hops("deep"),
        [
            row("alice@bastion:2200", "bastion.example", "alice", 2200),
            row("ssh://bob@relay:2022", "relay.example", "bob", 2022),
            row("gate", "gate.example", "relayer", 22),
        ]
    );
    assert_eq!(
        hops("via-gate"),
        [
            row("relay", "relay.example", "relayer", 22),
            row("gate", "gate.example", "relayer", 22)
        ]
    );
    let err = builtin(&f, "loop-a").unwrap_err();
    assert!(
        matches!(&err, ConfigError::JumpLoop { chain } if chain == &strings(&["loop-a", "loop-b", "loop-a"])),
        "{err:?}"
    );
    assert!(err.to_string().contains("ProxyJump none"), "{err}");
    let err = builtin(&f, "legacy").unwrap_err();
    assert!(matches!(err, ConfigError::ProxyCommand { .. }), "{err:?}");
}

#[test]
fn an_empty_config_gives_openssh_defaults() {
    let f = Fixture::new();
    let ctx = ResolveCtx::new(&f.inventory());
    let c = resolve(
        "plain",
        &ResolveCtx {
            force_builtin: true,
            ..ctx
        },
    )
    .unwrap();
    let ssh = f.home().join(".ssh");
    assert_eq!(c.user, f.local.name);
    assert_eq!(c.port, 22);
    assert_eq!(
        c.identity_files,
        [
            ssh.join("id_rsa"),
            ssh.join("id_ecdsa"),
            ssh.join("id_ed25519")
        ]
    );
    assert_eq!(
        c.user_known_hosts_files,
        [ssh.join("known_hosts"), ssh.join("known_hosts2")]
    );
    assert_eq!(
        c.global_known_hosts_files,
        [
            PathBuf::from("/etc/ssh/ssh_known_hosts"),
            PathBuf::from("/etc/ssh/ssh_known_hosts2")
        ]
    );
    assert_eq!(
        (
            c.strict_host_key_checking.as_str(),
            c.server_alive_count_max
        ),
        ("ask", 3)
    );
    assert_eq!((c.server_alive_interval, c.connect_timeout), (None, None));
    assert!(!c.identities_only && c.proxy_jump.is_empty() && c.ignored.is_empty());
}

#[test]
fn unsupported_match_criteria_skip_the_block_and_run_nothing() {
    let f = Fixture::new();
    let marker = f.path("marker");
    f.write(
        "ssh_config",
        &format!(
            "Match exec \"touch {}\"\n  User execd\nMatch canonical all\n  Port 1\nMatch all\n  Port 2\n",
            marker.display()
        ),
    );
    let c = resolve("h", &f.ctx(None)).unwrap();
    assert_eq!((c.user.as_str(), c.port), (f.local.name.as_str(), 2));
    assert!(!marker.exists());
}

#[test]
fn config_errors_name_file_and_line() {
    let check = |config: &str, want: &str| {
        let f = Fixture::new();
        f.write("ssh_config", config);
        let err = resolve("h", &f.ctx(None)).unwrap_err().to_string();
        assert!(err.contains(want), "{config:?}: {err}");
    };
    check("Host h\n  Port abc\n", "ssh_config line 2");
    check("Host other\n  Port 0\n", "line 2");
    check("User\n", "no argument");
    check("User \"a\n", "invalid quotes");
    check("User a b\n", "extra arguments");
    check("Host h\n  ProxyJump a,,b\n", "ProxyJump");
    check("Host h\n  HostName a;b\n", "HostName");
    check("Host h\n  User $(id)\n", "User");
    check("Host h\n  IdentityFile ~/%C\n", "IdentityFile");
}

#[test]
fn includes_are_bounded_and_must_not_be_writable_by_others() {
    use std::os::unix::fs::PermissionsExt;
    let f = Fixture::new();
    f.write("ssh_config", "Include loop.conf\n");
    f.write("home/.ssh/loop.conf", "Include loop.conf\n");
    let err = resolve("h", &f.ctx(None)).unwrap_err().to_string();
    assert!(
        err.contains("too many recursive configuration includes"),
        "{err}"
    );

    let f = Fixture::new();
    f.write("ssh_config", "Include open.conf\n");
    let open = f.write("home/.ssh/open.conf", "Host h\n  Port 2\n");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o666)).unwrap();
    let err = Inventory::load_as(&f.path("ssh_config"), None, f.local.clone()).unwrap_err();
    assert!(
        err.to_string().contains("bad owner or permissions"),
        "{err}"
    );
}

#[test]
fn include_inside_a_host_block_applies_only_to_that_host() {
    let f = Fixture::new();
    f.write(
        "ssh_config",
        "Host a\n  Include sub.conf\nHost *\n  Port 3\n",
    );
    f.write("home/.ssh/sub.conf", "Port 1\nHost b\n  Port 2\n");
    let port = |alias: &str| resolve(alias, &f.ctx(None)).unwrap().port;
    assert_eq!((port("a"), port("b"), port("c")), (1, 3, 3));
}
