//! The server's own secrets (admin token, join tokens, worker sessions) are minted and hashed
//! like API tokens: `hodei_` + 32 base62 characters from the OS's CSPRNG, stored as SHA-256.

use std::collections::HashSet;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hodei_api::error::{ApiError, ErrorCode};
use hodei_core::{Pool, PoolId};
use hodei_store::Store;

pub use hodei_api::auth::{matches_hash, new_secret as random_token, secret_hash as hash};

/// Where the server keeps the join token of a pool the configuration file does not give one.
pub fn join_token_path(data_dir: &Path, pool: &PoolId) -> PathBuf {
    data_dir.join(format!("pool-{pool}.token"))
}

/// Writes `secret` to `path` (mode 0600) through a temporary file and a rename, so a reader
/// sees the old secret or the new one, never half of either.
pub fn write_secret(path: &Path, secret: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("token.new");
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    f.write_all(format!("{secret}\n").as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Join-token rotation for `POST /pools/{id}/join-token`.
pub struct PoolTokens {
    pub store: Arc<dyn Store>,
    pub data_dir: PathBuf,
    /// Pools whose token the configuration file sets: rotating those is the file's job.
    pub configured: HashSet<PoolId>,
}

#[async_trait::async_trait]
impl hodei_api::JoinTokens for PoolTokens {
    async fn keep(&self, pool: &Pool, token: &str) -> Result<(), ApiError> {
        write_secret(&join_token_path(&self.data_dir, &pool.id), token).map_err(|e| {
            tracing::error!(error = %e, pool = %pool.id, "cannot write the join token of a new local pool");
            ApiError::new(ErrorCode::Internal, format!("pool {} was created but its join token could not be saved for its workers: rotate it", pool.id))
        })
    }

    async fn rotate(&self, pool: &Pool) -> Result<String, ApiError> {
        if self.configured.contains(&pool.id) {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!("pool {}'s join token is set in the configuration file (resource_pools.pools[].join_token); change it there", pool.id),
            ));
        }
        let internal = |e: std::io::Error| {
            tracing::error!(error = %e, pool = %pool.id, "cannot write the rotated join token");
            ApiError::new(ErrorCode::Internal, "the new join token could not be saved; the old one still holds")
        };
        let token = random_token().map_err(|e| internal(std::io::Error::other(e.to_string())))?;
        let path = join_token_path(&self.data_dir, &pool.id);
        // The file first: if the store then fails, the file holds a token nobody accepts yet
        // and the next start (or rotation) makes it right; the other order would leave the
        // pool's local workers without the only token that registers.
        let old = std::fs::read_to_string(&path).ok();
        write_secret(&path, &token).map_err(internal)?;
        match self.store.set_pool_join_token(&pool.id, &hash(&token)).await {
            Ok(true) => Ok(token),
            Ok(false) => Err(ApiError::not_found(format!("pool {}", pool.id))),
            Err(e) => {
                if let Some(old) = old {
                    let _ = write_secret(&path, old.trim());
                }
                Err(e.into())
            }
        }
    }
}
