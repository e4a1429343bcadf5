//! The server's own secrets (admin token, join tokens, worker sessions) are minted and hashed
//! like API tokens: `hodei_` + 32 base62 characters from the OS's CSPRNG, stored as SHA-256.

pub use hodei_api::auth::{matches_hash, new_secret as random_token, secret_hash as hash};
