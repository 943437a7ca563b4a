//! Password hashing: Argon2id PHC strings, computed on blocking threads with
//! a cap on how many run at once (each takes ~19 MiB and tens of ms).

use std::sync::Arc;
use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

/// Argon2id with OWASP's first recommended setting: m=19 MiB, t=2, p=1.
fn argon2() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).expect("static Argon2 parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hash a password into a PHC string with a fresh random salt.
pub fn hash(password: &str) -> String {
    let mut salt = [0u8; 16];
    crate::crypto::random_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).expect("16 bytes is a valid salt");
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .expect("Argon2 hashing of an in-memory password cannot fail")
        .to_string()
}

/// Check `password` against a PHC string (constant time inside argon2).
pub fn verify(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => argon2()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// A PHC string no password matches, verified for unknown users so that a
/// wrong user name costs the same as a wrong password.
fn decoy() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash(&crate::crypto::new_secret("")))
}

/// The hasher: at most `max` verifications at once; callers wait up to
/// `max_wait` for a slot and are told to come back otherwise.
#[derive(Clone)]
pub struct Hasher {
    slots: Arc<Semaphore>,
    max_wait: Duration,
    verified: Arc<std::sync::atomic::AtomicU64>,
}

/// The hasher was busy for longer than the caller may wait.
#[derive(Debug)]
pub struct Busy;

impl Hasher {
    pub fn new(max: usize, max_wait: Duration) -> Hasher {
        Hasher {
            slots: Arc::new(Semaphore::new(max.max(1))),
            max_wait,
            verified: Default::default(),
        }
    }

    /// Verify `password` against `phc` (or against a decoy when the user is
    /// unknown) on a blocking thread.
    pub async fn verify(&self, password: String, phc: Option<String>) -> Result<bool, Busy> {
        let permit = tokio::time::timeout(self.max_wait, self.slots.clone().acquire_owned())
            .await
            .map_err(|_| Busy)?
            .map_err(|_| Busy)?;
        self.verified
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            match phc {
                Some(phc) => verify(&password, &phc),
                None => {
                    verify(&password, decoy());
                    false
                }
            }
        })
        .await
        .map_err(|_| Busy)
    }

    /// How many verifications have run (for the throttling benchmark).
    pub fn count(&self) -> u64 {
        self.verified.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phc_round_trip() {
        let phc = hash("correct horse");
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify("correct horse", &phc));
        assert!(!verify("correct horsf", &phc));
        assert!(!verify("x", "not a phc"));
        assert_ne!(phc, hash("correct horse"), "fresh salt each time");
    }

    #[tokio::test]
    async fn unknown_users_are_refused_after_the_same_work() {
        let h = Hasher::new(1, Duration::from_secs(5));
        assert!(!h.verify("pw".into(), None).await.unwrap());
        assert!(h.verify("pw".into(), Some(hash("pw"))).await.unwrap());
        assert_eq!(h.count(), 2);
    }
}
