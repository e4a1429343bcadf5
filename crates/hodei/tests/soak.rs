//! The endurance script's short mode (`bench/soak.sh`) against this build's binary: three minutes
//! of trivial jobs from 1 000 tenants with a 20-second retention, so deletion runs during it. The
//! script fails when resident memory or open descriptors move more than 10 % after the warm-up,
//! the data dir keeps growing, or a submitted job did not succeed exactly once.

use std::process::Command;

#[test]
fn a_short_soak_stays_flat_and_accounts_for_every_job() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../bench/soak.sh");
    let out = Command::new("bash")
        .arg(script)
        .args(["--minutes", "3", "--rate", "50", "--tenants", "1000", "--retention-s", "20"])
        .env("HODEI_BIN", env!("CARGO_BIN_EXE_hodei"))
        .output()
        .expect("run bench/soak.sh");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "bench/soak.sh failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("submitted ") && stdout.contains("resident memory"), "no summary:\n{stdout}");
}
