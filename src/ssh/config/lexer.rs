//! Reading an ssh config the way OpenSSH's `readconf.c` does: one directive a
//! line, keywords case-insensitive, `key value` or `key=value`, arguments
//! split with quotes and backslash escapes, `#` comments; `Include` followed
//! (relative paths under `~/.ssh`, globs, depth 16, missing files fine,
//! group- or world-writable files refused). The result is the flattened list
//! of directives; which of them apply to a host is for the caller to decide.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::ConfigError;
use super::expand::tilde;

/// OpenSSH's `READCONF_MAX_DEPTH`.
const MAX_INCLUDE_DEPTH: usize = 16;
/// Largest config file read; a bigger one is refused.
const MAX_FILE_BYTES: u64 = 1 << 20;
/// Most directives over all files, so an include cycle of globs stays bounded.
const MAX_DIRECTIVES: usize = 100_000;

/// One directive.
#[derive(Debug, Clone)]
pub(crate) struct Directive {
    pub(crate) file: Arc<Path>,
    pub(crate) line: usize,
    /// Lower-case keyword.
    pub(crate) keyword: String,
    /// The arguments, unquoted, up to a comment.
    pub(crate) args: Vec<String>,
    /// The text after the keyword as written (ProxyJump and the command
    /// keywords take it whole, as OpenSSH does).
    pub(crate) raw: String,
}

impl Directive {
    pub(crate) fn error(&self, message: impl Into<String>) -> ConfigError {
        ConfigError::Syntax {
            path: self.file.to_path_buf(),
            line: self.line,
            message: message.into(),
        }
    }
}

/// A config file, flattened: `Enter` and `Leave` surround each included file
/// (OpenSSH restores the enclosing block's state after each one).
#[derive(Debug, Clone)]
pub(crate) enum Item {
    Directive(Directive),
    Enter,
    Leave,
}

/// Reads `path` and its includes. A missing file reads as empty.
pub(crate) fn read(path: &Path, home: &Path) -> Result<Vec<Item>, ConfigError> {
    let mut items = Vec::new();
    read_file(path, home, 0, false, &mut items)?;
    Ok(items)
}

fn read_file(
    path: &Path,
    home: &Path,
    depth: usize,
    included: bool,
    items: &mut Vec<Item>,
) -> Result<(), ConfigError> {
    let io = |source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(e)),
    };
    if meta.is_dir() {
        return Ok(());
    }
    let uid = rustix::process::getuid().as_raw();
    if included && ((meta.uid() != 0 && meta.uid() != uid) || meta.mode() & 0o022 != 0) {
        return Err(ConfigError::Syntax {
            path: path.to_path_buf(),
            line: 0,
            message: "bad owner or permissions: an included file must be yours (or root's) \
                      and not writable by group or others (ssh refuses it too)"
                .into(),
        });
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(io(std::io::Error::other("larger than 1 MiB")));
    }
    let bytes = std::fs::read(path).map_err(io)?;
    let text = String::from_utf8_lossy(&bytes);
    let file: Arc<Path> = Arc::from(path);
    for (n, line) in text.split('\n').enumerate() {
        let Some(d) = split_line(line, &file, n + 1)? else {
            continue;
        };
        if items.len() >= MAX_DIRECTIVES {
            return Err(d.error("too many directives (includes nest or repeat too much)"));
        }
        if d.keyword != "include" {
            items.push(Item::Directive(d));
            continue;
        }
        if depth >= MAX_INCLUDE_DEPTH {
            return Err(d.error("too many recursive configuration includes"));
        }
        for arg in &d.args {
            let anchored = if arg.starts_with('~') {
                tilde(arg, home).map_err(|e| d.error(e))?
            } else if Path::new(arg).is_absolute() {
                arg.clone()
            } else {
                format!("{}/.ssh/{arg}", home.display())
            };
            for found in glob(Path::new(&anchored)) {
                items.push(Item::Enter);
                read_file(&found, home, depth + 1, true, items)?;
                items.push(Item::Leave);
            }
        }
    }
    Ok(())
}

/// Splits one line into keyword and arguments; `None` for blank and comment
/// lines.
fn split_line(line: &str, file: &Arc<Path>, n: usize) -> Result<Option<Directive>, ConfigError> {
    let line = line.trim_end_matches([' ', '\t', '\r', '\n', '\x0c']);
    let line = line.trim_start_matches([' ', '\t', '\r', '\n']);
    let end = line.find([' ', '\t', '=']).unwrap_or(line.len());
    let keyword = &line[..end];
    if keyword.is_empty() || keyword.starts_with('#') {
        return Ok(None);
    }
    let mut rest = line[end..].trim_start_matches([' ', '\t']);
    if let Some(r) = rest.strip_prefix('=') {
        rest = r.trim_start_matches([' ', '\t']);
    }
    let error = |message: String| ConfigError::Syntax {
        path: file.to_path_buf(),
        line: n,
        message,
    };
    let keyword = keyword.to_ascii_lowercase();
    if rest.is_empty() {
        return Err(error(format!("no argument after keyword {keyword:?}")));
    }
    let args = split_args(rest).ok_or_else(|| error("invalid quotes".into()))?;
    Ok(Some(Directive {
        file: file.clone(),
        line: n,
        keyword,
        args,
        raw: rest.to_owned(),
    }))
}

/// OpenSSH's `argv_split` (with comments): blanks separate arguments, `"`
/// and `'` quote, backslash escapes a quote, a backslash or (unquoted) a
/// space, and a `#` that starts an argument ends the line. `None` on an
/// unterminated quote.
pub(crate) fn split_args(s: &str) -> Option<Vec<String>> {
    let mut args = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| matches!(c, ' ' | '\t')).is_some() {}
        match chars.peek() {
            None | Some('#') => return Some(args),
            Some(_) => {}
        }
        let mut arg = String::new();
        let mut quote: Option<char> = None;
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.peek() {
                    Some(&n)
                        if n == '\'' || n == '"' || n == '\\' || (n == ' ' && quote.is_none()) =>
                    {
                        arg.push(n);
                        chars.next();
                    }
                    _ => arg.push('\\'),
                },
                ' ' | '\t' if quote.is_none() => break,
                '"' | '\'' if quote.is_none() => quote = Some(c),
                c if Some(c) == quote => quote = None,
                c => arg.push(c),
            }
        }
        if quote.is_some() {
            return None;
        }
        args.push(arg);
    }
}

/// The files a pattern names, sorted, as `glob(3)` lists them: `*`, `?` and
/// `[...]` in any component; hidden names only when the pattern component
/// starts with `.`. Nothing matched is an empty list.
fn glob(pattern: &Path) -> Vec<PathBuf> {
    let mut found = vec![PathBuf::from("/")];
    for part in pattern.components().skip(1) {
        let part = part.as_os_str().to_string_lossy();
        if !part.contains(['*', '?', '[']) {
            found = found.into_iter().map(|p| p.join(&*part)).collect();
            continue;
        }
        let Ok(matcher) = globset::GlobBuilder::new(&part)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .map(|g| g.compile_matcher())
        else {
            return Vec::new();
        };
        let mut next = Vec::new();
        for dir in found {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                let hidden = name.to_string_lossy().starts_with('.');
                if matcher.is_match(&name) && (!hidden || part.starts_with('.')) {
                    next.push(dir.join(name));
                }
            }
        }
        found = next;
    }
    found.retain(|p| p.exists());
    found.sort();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_split_like_openssh() {
        let check = |s: &str, want: Option<&[&str]>| {
            let got = split_args(s);
            let want = want.map(|w| w.iter().map(|a| a.to_string()).collect::<Vec<_>>());
            assert_eq!(got, want, "{s:?}");
        };
        check("a b\tc", Some(&["a", "b", "c"]));
        check("\"a b\" c", Some(&["a b", "c"]));
        check("'a \"b' c", Some(&["a \"b", "c"]));
        check("a\\ b c", Some(&["a b", "c"]));
        check("a\\x", Some(&["a\\x"]));
        check("a # comment", Some(&["a"]));
        check("a#b", Some(&["a#b"]));
        check("x\"y z\"w", Some(&["xy zw"]));
        check("\"unterminated", None);
    }

    #[test]
    fn lines_split_keyword_and_value() {
        let file: Arc<Path> = Arc::from(Path::new("/c"));
        let check = |line: &str, want: Option<(&str, &[&str])>| {
            let got = split_line(line, &file, 1)
                .unwrap()
                .map(|d| (d.keyword, d.args));
            let want = want.map(|(k, a)| (k.to_owned(), a.iter().map(|s| s.to_string()).collect()));
            assert_eq!(got, want, "{line:?}");
        };
        check(
            "  HostName example.com  ",
            Some(("hostname", &["example.com"])),
        );
        check("User=deploy", Some(("user", &["deploy"])));
        check("User = deploy", Some(("user", &["deploy"])));
        check("PORT\t2222", Some(("port", &["2222"])));
        check("# a comment", None);
        check("   ", None);
        assert!(split_line("User", &file, 1).is_err());
        assert!(split_line("User \"x", &file, 1).is_err());
    }
}
