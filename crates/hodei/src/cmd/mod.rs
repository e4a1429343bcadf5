//! The commands, one module per group: each with its arguments next to its handler.

pub(crate) mod costs;
pub(crate) mod jobs;
pub(crate) mod pools;
pub(crate) mod server;
pub(crate) mod submit;
pub(crate) mod tenants;
