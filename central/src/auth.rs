//! Bearer tokens: HQ's admin token, and one token per instance, stored only
//! as a SHA-256 hash. Tokens are 256 random bits.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, header};
use chartsync_http::ApiError;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::db::{CentralDb, DbError, Instance, NewInstance};

/// Who is calling.
#[derive(Debug, Clone)]
pub enum Caller {
    /// An HQ client with the admin token: every record.
    Admin,
    /// A satellite: its scope only.
    Instance(Instance),
}

impl Caller {
    /// The instance id, if an instance.
    pub fn instance_id(&self) -> Option<u32> {
        match self {
            Caller::Admin => None,
            Caller::Instance(i) => Some(i.id),
        }
    }
}

/// Why an instance could not be registered.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// No randomness for its token.
    #[error("cannot make a random token")]
    Token(#[from] getrandom::Error),
    /// The database refused it (a taken id, say).
    #[error(transparent)]
    Db(#[from] DbError),
}

/// Registers an instance with a new token. Returns the instance and its
/// token, which is stored only as a hash: this is the one time it is seen.
pub async fn register_instance<D: CentralDb>(
    db: &D,
    id: Option<u32>,
    name: String,
    catchments: Vec<String>,
) -> Result<(Instance, String), RegisterError> {
    let token = new_token()?;
    let instance = db
        .add_instance(NewInstance {
            id,
            name,
            catchments,
            token_hash: hash_token(&token),
        })
        .await?;
    Ok((instance, token))
}

/// A new random token (`cst_` and 64 hex digits).
pub fn new_token() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    let mut out = String::with_capacity(68);
    out.push_str("cst_");
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
    Ok(out)
}

/// The stored form of a token.
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// How long a token lookup is remembered (revocations take effect within it).
const CACHE_TTL: Duration = Duration::from_secs(30);

/// A token lookup and when it was made.
type CachedLookup = (Option<Instance>, Instant);

/// Authenticates requests, remembering recent token lookups.
#[derive(Debug)]
pub struct Authenticator {
    admin_hash: Option<[u8; 32]>,
    cache: Mutex<HashMap<[u8; 32], CachedLookup>>,
}

impl Authenticator {
    /// With the admin token (none: no admin access).
    pub fn new(admin_token: Option<&str>) -> Authenticator {
        Authenticator {
            admin_hash: admin_token.map(hash_token),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The caller of a request: 401 without a valid bearer token.
    pub async fn caller<D: CentralDb>(
        &self,
        db: &D,
        headers: &HeaderMap,
    ) -> Result<Caller, ApiError> {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ApiError::unauthorized(
                    "send Authorization: Bearer <token> (an instance token, or HQ's admin token)",
                )
            })?;
        let hash = hash_token(token);
        if let Some(admin) = &self.admin_hash
            && bool::from(admin.ct_eq(&hash))
        {
            return Ok(Caller::Admin);
        }
        let cached = {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            cache
                .get(&hash)
                .filter(|(_, at)| at.elapsed() < CACHE_TTL)
                .map(|(i, _)| i.clone())
        };
        let instance = match cached {
            Some(found) => found,
            None => {
                let found = db
                    .instance_by_token(hash)
                    .await
                    .map_err(|e| ApiError::internal(&e))?;
                let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
                if cache.len() > 10_000 {
                    cache.clear();
                }
                cache.insert(hash, (found.clone(), Instant::now()));
                found
            }
        };
        instance
            .map(Caller::Instance)
            .ok_or_else(|| ApiError::unauthorized("the token is not valid (unknown or revoked)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_hash_stably() {
        let a = new_token().expect("token");
        let b = new_token().expect("token");
        assert_ne!(a, b);
        assert_eq!(a.len(), 68);
        assert_eq!(hash_token(&a), hash_token(&a));
        assert_ne!(hash_token(&a), hash_token(&b));
    }
}
