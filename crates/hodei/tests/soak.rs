//! The endurance script's short mode (`bench/soak.sh`) against this build's binary: three minutes
//! of trivial jobs from 1 000 tenants with a 20-second retention, so deletion runs during it. It
//! fails when the data dir keeps growing (retention not keeping up), a submitted job did not
//! succeed exactly once, or memory or descriptors move more than 20 % after the warm-up. Three
//! minutes of a debug build cannot tell a slow leak from the allocator settling (a few MiB of
//! ~50): the 10 % figure is for the full run, `bench/soak.sh --minutes 60`.

use std::process::Command;

#[test]
fn a_short_soak_stays_flat_and_accounts_for_every_job() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../bench/soak.sh");
    let out = Command::new("bash")
        .arg(script)
        .args(["--minutes", "3", "--rate", "50", "--tenants", "1000", "--retention-s", "20", "--memory-slack", "20"])
        .env("HODEI_BIN", env!("CARGO_BIN_EXE_hodei"))
        .output()
        .expect("run bench/soak.sh");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "bench/soak.sh failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("submitted ") && stdout.contains("resident memory"), "no summary:\n{stdout}");
}
