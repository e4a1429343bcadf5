//! `hodei bench`: a load generator against a running server.

use clap::Args;

#[derive(Args)]
pub struct BenchArgs {}

pub async fn run(_a: BenchArgs) -> anyhow::Result<i32> {
    Ok(0)
}
