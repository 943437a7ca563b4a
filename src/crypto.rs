//! Small cryptographic helpers shared by jobs, files and auth (a leaf): the
//! kernel CSPRNG, hex, SHA-256 and constant-time comparison.

use sha2::Digest;

/// Fill `buf` from the kernel's CSPRNG.
pub fn random_bytes(buf: &mut [u8]) {
    let mut filled = 0;
    while filled < buf.len() {
        match rustix::rand::getrandom(&mut buf[filled..], rustix::rand::GetRandomFlags::empty()) {
            Ok(n) => filled += n,
            Err(rustix::io::Errno::INTR) => {}
            // getrandom(2) only fails on kernels older than 3.17; nothing sane to do.
            Err(e) => panic!("getrandom failed: {e}"),
        }
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// SHA-256 of `data` as lower-case hex.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&sha2::Sha256::digest(data))
}

/// Compare two secrets (or their hashes) without leaking where they differ.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// A fresh random secret: `prefix` then 32 random bytes in base64url.
pub fn new_secret(prefix: &str) -> String {
    use base64::Engine;
    let mut raw = [0u8; 32];
    random_bytes(&mut raw);
    format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    )
}

/// A short random id (hex) for public handles such as token ids.
pub fn short_id(prefix: &str) -> String {
    let mut raw = [0u8; 5];
    random_bytes(&mut raw);
    format!("{prefix}{}", hex(&raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers() {
        assert_eq!(hex(&[0, 0xab, 0xff]), "00abff");
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(ct_eq(b"same", b"same"));
        assert!(!ct_eq(b"same", b"samf"));
        assert!(!ct_eq(b"same", b"sam"));
        let (a, b) = (new_secret("x_"), new_secret("x_"));
        assert_ne!(a, b);
        assert!(a.starts_with("x_") && a.len() == 2 + 43, "{a}");
        assert_eq!(short_id("t").len(), 11);
    }
}
