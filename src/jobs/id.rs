//! Short readable job ids: `<title or command word>-<4 random chars>`, e.g. `build-7kq2`.

const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyz23456789";
/// The longest slug a word makes.
const WORD_MAX: usize = 16;
/// The longest id: a slug, a dash and four random characters.
pub const MAX_LEN: usize = WORD_MAX + 5;

/// Build an id from a title or, failing that, the command's first word.
pub fn new_id(title: Option<&str>, cmd: &str) -> String {
    let word = title
        .map(slug)
        .filter(|s| !s.is_empty())
        .or_else(|| first_word(cmd))
        .unwrap_or_else(|| "job".to_owned());
    let mut rnd = [0u8; 4];
    crate::crypto::random_bytes(&mut rnd);
    let suffix: String = rnd
        .iter()
        .map(|b| ALPHABET[(*b as usize) % ALPHABET.len()] as char)
        .collect();
    format!("{word}-{suffix}")
}

fn first_word(cmd: &str) -> Option<String> {
    cmd.split_whitespace()
        .find(|w| !w.contains('=') && !matches!(*w, "sudo" | "env" | "time" | "nohup" | "exec"))
        .map(|w| w.rsplit('/').next().unwrap_or(w))
        .map(slug)
        .filter(|s| !s.is_empty())
}

fn slug(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if out.len() >= WORD_MAX {
            break;
        }
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if (c == '-' || c == '_' || c == ' ' || c == '.')
            && !out.is_empty()
            && !out.ends_with('-')
        {
            out.push('-');
        }
    }
    out.trim_end_matches('-').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn word(title: Option<&str>, cmd: &str) -> String {
        let id = new_id(title, cmd);
        let (w, suffix) = id.rsplit_once('-').unwrap();
        assert_eq!(suffix.len(), 4);
        w.to_owned()
    }

    #[test]
    fn ids_read_well() {
        for (title, cmd, expected) in [
            (None, "echo hi", "echo"),
            (None, "  /usr/bin/make -j4", "make"),
            (None, "FOO=1 sudo ./deploy.sh", "deploy-sh"),
            (Some("Nightly Build!"), "x", "nightly-build"),
            (None, "", "job"),
            (None, "$(rm -rf /)", "rm"),
            (Some("***"), "cargo test", "cargo"),
        ] {
            assert_eq!(word(title, cmd), expected, "{title:?} {cmd:?}");
        }
    }
}
