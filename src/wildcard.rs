//! `*`/`?` wildcards, as OpenSSH's `match_pattern` and shell globs without
//! classes use them: `*` matches any run of bytes, `?` exactly one; nothing
//! else is special. Iterative with backtracking to the last `*`, so linear
//! space and no recursion on hostile patterns. A leaf module.

/// Whether `s` matches `pattern` (byte-wise, case-sensitive).
pub fn matches(s: &[u8], pattern: &[u8]) -> bool {
    let (mut si, mut pi) = (0, 0);
    // The last `*` seen and the position in `s` it is currently matched up to.
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < pattern.len() && (pattern[pi] == b'?' || pattern[pi] == s[si]) {
            si += 1;
            pi += 1;
        } else if pi < pattern.len() && pattern[pi] == b'*' {
            star = Some((pi, si));
            pi += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    pattern[pi..].iter().all(|&b| b == b'*')
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn stars_and_question_marks() {
        for (s, p, want) in [
            ("web-1", "web-*", true),
            ("web-1", "web-?", true),
            ("web-10", "web-?", false),
            ("aXXbYYc", "a*b*c", true),
            ("aXXbYY", "a*b*c", false),
            ("", "*", true),
            ("", "?", false),
            ("abc", "abc", true),
            ("abc", "ab", false),
            ("a*c", "a\\*c", false),
            (
                "aaaaaaaaaaaaaaaaaaaaaaaaaaaaab",
                "*a*a*a*a*a*a*a*a*c",
                false,
            ),
        ] {
            assert_eq!(matches(s.as_bytes(), p.as_bytes()), want, "{s:?} ~ {p:?}");
        }
    }
}
