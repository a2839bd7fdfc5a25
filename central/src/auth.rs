//! Bearer tokens: HQ's admin token, and one token per instance, stored only
//! as a SHA-256 hash. Tokens are 256 random bits.
//!
//! Token lookups are cached, and every cached lookup is dropped as soon as
//! the database's instances version moves (an instance added, revoked or
//! given a new token, by this process or by `chartsync central instance`
//! in another): it is polled at most every [`VERSION_POLL`], so a revoked
//! or replaced token stops working within about a second.

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

/// The instance name of HQ's writes (through the record API with the admin
/// token) in commits' `Chartsync-Instance` trailer. No instance may have it.
pub const HQ_NAME: &str = "hq";

/// Names no instance may be registered with: HQ's, and the one central
/// wrote in its commits before HQ had a name of its own.
const RESERVED_NAMES: [&str; 2] = [HQ_NAME, "central"];

impl Caller {
    /// The instance id, if an instance.
    pub fn instance_id(&self) -> Option<u32> {
        match self {
            Caller::Admin => None,
            Caller::Instance(i) => Some(i.id),
        }
    }

    /// The name written into commits this caller makes through central's
    /// record API: the instance's registered name, or [`HQ_NAME`].
    pub fn commit_name(&self) -> &str {
        match self {
            Caller::Admin => HQ_NAME,
            Caller::Instance(i) => &i.name,
        }
    }
}

/// The names a commit pushed by `instance` may carry in its
/// `Chartsync-Instance` trailer: the name it was registered with, and
/// `satellite-<id>`, the name a satellite whose configuration sets no
/// `name` writes. Registration keeps both unambiguous: names are unique,
/// and `satellite-<n>` is only allowed as the name of instance n.
pub fn commit_names(instance: &Instance) -> Vec<String> {
    let default = default_satellite_name(instance.id);
    if instance.name == default {
        vec![default]
    } else {
        vec![instance.name.clone(), default]
    }
}

/// The name a satellite without a configured `name` writes into commits.
pub fn default_satellite_name(id: u32) -> String {
    format!("satellite-{id}")
}

/// Why a name cannot be an instance's name, if it cannot.
fn name_problem(name: &str, id: Option<u32>) -> Option<String> {
    if name.trim() != name || name.is_empty() {
        return Some("it must not be empty or start or end with spaces".into());
    }
    if name.chars().count() > 100 {
        return Some("it must be at most 100 characters".into());
    }
    if name
        .chars()
        .any(|c| c.is_control() || matches!(c, '<' | '>'))
    {
        return Some("it must not contain control characters, '<' or '>'".into());
    }
    if RESERVED_NAMES.iter().any(|r| r.eq_ignore_ascii_case(name)) {
        return Some(format!(
            "{name:?} is the name of HQ's own writes; choose another"
        ));
    }
    if let Some(n) = name
        .strip_prefix("satellite-")
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        && n.parse::<u32>().ok() != id
    {
        return Some(format!(
            "{name:?} is the default name of satellite {n}'s commits; choose another (or register it with --id {n})"
        ));
    }
    None
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
    /// The name cannot name an instance in commits.
    #[error("cannot use {name:?} as an instance name: {reason}")]
    BadName {
        /// The name asked for.
        name: String,
        /// Why not.
        reason: String,
    },
}

/// Registers an instance with a new token. Returns the instance and its
/// token, which is stored only as a hash: this is the one time it is seen.
/// The name is written into the commits the instance makes through
/// central's record API, and it is the name its satellite's commits must
/// carry (see [`commit_names`]).
pub async fn register_instance<D: CentralDb>(
    db: &D,
    id: Option<u32>,
    name: String,
    catchments: Vec<String>,
) -> Result<(Instance, String), RegisterError> {
    if let Some(reason) = name_problem(&name, id) {
        return Err(RegisterError::BadName { name, reason });
    }
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

/// Gives an instance a new token; the old one stops working (in a running
/// central within about a second). Returns the instance and its new token,
/// shown only this once.
pub async fn rotate_token<D: CentralDb>(
    db: &D,
    id: u32,
) -> Result<(Instance, String), RegisterError> {
    let token = new_token()?;
    let instance = db.rotate_token(id, hash_token(&token)).await?;
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

/// How long a token lookup is remembered at most.
const CACHE_TTL: Duration = Duration::from_secs(30);

/// How often the instances version is read, at most: a revoked or replaced
/// token stops working within about this long.
pub const VERSION_POLL: Duration = Duration::from_secs(1);

/// A token lookup and when it was made.
type CachedLookup = (Option<Instance>, Instant);

/// The instances version last read, and when.
#[derive(Debug, Default)]
struct VersionSeen {
    version: Option<u64>,
    read_at: Option<Instant>,
}

/// Authenticates requests, remembering recent token lookups.
#[derive(Debug)]
pub struct Authenticator {
    admin_hash: Option<[u8; 32]>,
    cache: Mutex<HashMap<[u8; 32], CachedLookup>>,
    version: Mutex<VersionSeen>,
}

impl Authenticator {
    /// With the admin token (none: no admin access).
    pub fn new(admin_token: Option<&str>) -> Authenticator {
        Authenticator {
            admin_hash: admin_token.map(hash_token),
            cache: Mutex::new(HashMap::new()),
            version: Mutex::new(VersionSeen::default()),
        }
    }

    /// Drops every cached lookup if the instances version moved since it
    /// was last read (read at most every [`VERSION_POLL`]).
    async fn forget_if_changed<D: CentralDb>(&self, db: &D) -> Result<(), DbError> {
        {
            let seen = self.version.lock().unwrap_or_else(|p| p.into_inner());
            if seen.read_at.is_some_and(|at| at.elapsed() < VERSION_POLL) {
                return Ok(());
            }
        }
        let now = db.instances_version().await?;
        let changed = {
            let mut seen = self.version.lock().unwrap_or_else(|p| p.into_inner());
            let changed = seen.version != Some(now);
            seen.version = Some(now);
            seen.read_at = Some(Instant::now());
            changed
        };
        if changed {
            self.cache.lock().unwrap_or_else(|p| p.into_inner()).clear();
        }
        Ok(())
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
        self.forget_if_changed(db)
            .await
            .map_err(|e| ApiError::internal(&e))?;
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

    #[test]
    fn instance_names_that_could_mislead_are_refused() {
        for good in ["clinic-north", "Clinic North", "satellite-north", "x"] {
            assert_eq!(name_problem(good, None), None, "{good}");
        }
        assert_eq!(name_problem("satellite-3", Some(3)), None);
        for bad in [
            "",
            " padded",
            "hq",
            "HQ",
            "central",
            "a<b>",
            "two\nlines",
            "satellite-3",
            "satellite-03",
        ] {
            assert!(name_problem(bad, Some(4)).is_some(), "{bad:?} accepted");
        }
        assert!(name_problem(&"n".repeat(101), None).is_some());
    }

    #[test]
    fn commits_may_name_the_registered_name_or_the_default_one() {
        let instance = Instance {
            id: 7,
            name: "clinic-north".into(),
            catchments: vec![],
            scope_epoch: 1,
            revoked: false,
            last_seen: None,
        };
        assert_eq!(commit_names(&instance), vec!["clinic-north", "satellite-7"]);
        let unnamed = Instance {
            name: "satellite-7".into(),
            ..instance
        };
        assert_eq!(commit_names(&unnamed), vec!["satellite-7"]);
    }
}
