//! Password hashing: argon2id at OWASP's recommended minimum (19 MiB, 2 passes, 1 lane), in
//! the standard PHC string format (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`).
//!
//! Each hash needs a 19 MiB block of memory. Allocated and freed per hash, glibc raises its
//! mmap threshold past that size after the first free and keeps every later block in its
//! arenas, so a few seconds of logins left the service at 300–500 MiB for good (BENCHMARKS.md).
//! A [`PasswordArena`] keeps one block per hashing thread and reuses it: memory is bounded by
//! the number of hasher threads, and no hash pays for page faults on fresh memory.

use argon2::password_hash::{rand_core::OsRng, Output, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};

use crate::error::AppError;

/// Stored hashes asking for more memory than this are refused rather than computed: a
/// tampered row must not make a login allocate gigabytes.
const MAX_MEMORY_KIB: u32 = 256 * 1024;

fn params() -> Params {
    Params::new(19 * 1024, 2, 1, None).expect("valid argon2 params")
}

/// Reusable argon2 working memory for one thread.
#[derive(Default)]
pub struct PasswordArena {
    blocks: Vec<Block>,
}

impl PasswordArena {
    fn blocks_for(&mut self, params: &Params) -> &mut [Block] {
        let needed = params.block_count();
        if self.blocks.len() < needed {
            self.blocks.resize(needed, Block::default());
        }
        &mut self.blocks[..needed]
    }

    /// Hashes a new password with a fresh random salt.
    pub fn hash(&mut self, password: &str) -> Result<String, AppError> {
        let params = params();
        let salt = SaltString::generate(&mut OsRng);
        let mut salt_bytes = [0u8; 64];
        let salt_bytes = salt
            .decode_b64(&mut salt_bytes)
            .map_err(AppError::internal)?;
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
        let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
        argon2
            .hash_password_into_with_memory(
                password.as_bytes(),
                salt_bytes,
                &mut out,
                self.blocks_for(&params),
            )
            .map_err(AppError::internal)?;
        let phc = PasswordHash {
            algorithm: Algorithm::Argon2id.ident(),
            version: Some(Version::V0x13.into()),
            params: (&params).try_into().map_err(AppError::internal)?,
            salt: Some(salt.as_salt()),
            hash: Some(Output::new(&out).map_err(AppError::internal)?),
        };
        Ok(phc.to_string())
    }

    /// True when `password` matches the stored PHC string `hash`, computed with the parameters
    /// the hash names (so hashes made with older parameters keep working).
    pub fn verify(&mut self, password: &str, hash: &str) -> bool {
        self.try_verify(password, hash).unwrap_or(false)
    }

    fn try_verify(&mut self, password: &str, hash: &str) -> Option<bool> {
        let parsed = PasswordHash::new(hash).ok()?;
        let algorithm = Algorithm::try_from(parsed.algorithm).ok()?;
        let version = parsed
            .version
            .map_or(Some(Version::V0x13), |v| Version::try_from(v).ok())?;
        let params = Params::try_from(&parsed).ok()?;
        if params.m_cost() > MAX_MEMORY_KIB {
            tracing::warn!(
                m_cost = params.m_cost(),
                "stored password hash asks for too much memory; refused"
            );
            return None;
        }
        let mut salt = [0u8; 64];
        let salt = parsed.salt?.decode_b64(&mut salt).ok()?;
        let expected = parsed.hash?;
        let mut out = vec![0u8; expected.len()];
        Argon2::new(algorithm, version, params.clone())
            .hash_password_into_with_memory(
                password.as_bytes(),
                salt,
                &mut out,
                self.blocks_for(&params),
            )
            .ok()?;
        // `Output`'s equality is constant-time: the comparison leaks nothing about the hash.
        Some(Output::new(&out).ok()? == expected)
    }
}

/// Hashes one password with memory of its own, for one-off callers (seeding, tests).
pub fn hash_password(password: &str) -> Result<String, AppError> {
    PasswordArena::default().hash(password)
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::PasswordVerifier;

    #[test]
    fn hashes_verify_and_are_salted() {
        let mut arena = PasswordArena::default();
        let a = arena.hash("correct horse").unwrap();
        let b = arena.hash("correct horse").unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{a}");
        assert!(arena.verify("correct horse", &a));
        assert!(!arena.verify("wrong horse", &a));
        assert!(!arena.verify("x", "not a hash"));
    }

    #[test]
    fn hashes_interoperate_with_the_argon2_crate() {
        // Ours verify with the crate's own verifier...
        let ours = hash_password("pässword").unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(Argon2::default()
            .verify_password("pässword".as_bytes(), &parsed)
            .is_ok());
        // ...and hashes the crate made with other parameters (older rows) verify with ours.
        use argon2::PasswordHasher as _;
        let salt = SaltString::generate(&mut OsRng);
        let older = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(8 * 1024, 3, 1, None).unwrap(),
        )
        .hash_password(b"legacy", &salt)
        .unwrap()
        .to_string();
        let mut arena = PasswordArena::default();
        assert!(arena.verify("legacy", &older));
        assert!(!arena.verify("legacy!", &older));
        // The arena grew for the larger hash and still serves the smaller one.
        assert!(arena.verify("pässword", &ours));
    }

    #[test]
    fn absurd_memory_parameters_are_refused() {
        let hash = "$argon2id$v=19$m=4194304,t=1,p=1$c29tZXNhbHRzb21lc2FsdA$\
                    AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        assert!(!PasswordArena::default().verify("x", hash));
    }
}
