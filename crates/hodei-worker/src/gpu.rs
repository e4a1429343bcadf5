//! GPU use per process through the vendor's tool (SPEC §8.7: "GPU via the vendor tool"):
//! `nvidia-smi pmon -c 1 -s um` lists each process on a GPU with its streaming-multiprocessor
//! utilisation (`sm`, %) and its frame-buffer memory (`fb`, MiB). The columns are found by the
//! names in its header, which differ between driver versions. Without `nvidia-smi` on the
//! agent's PATH nothing is measured, and samples say so.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Longest a query may take: a wedged driver must not stall the memory watch.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// `nvidia-smi` on the PATH, if any.
pub fn tool() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join("nvidia-smi")).find(|p| p.is_file())
}

/// GPU use of each process on a GPU now: pid → (sm %, memory MiB), summed over its GPUs.
/// `None` when the tool failed (or took too long): nothing is known this round.
pub fn per_process(tool: &std::path::Path) -> Option<HashMap<i32, (u32, u32)>> {
    let mut child = Command::new(tool).args(["pmon", "-c", "1", "-s", "um"]).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().ok()?;
    let deadline = std::time::Instant::now() + QUERY_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => break,
            Ok(Some(_)) | Err(_) => return None,
            Ok(None) if std::time::Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take()?, &mut out).ok()?;
    Some(parse_pmon(&out))
}

/// The table `nvidia-smi pmon` prints: a `# gpu pid type sm mem … fb … command` header, a
/// units line, then one line per process and GPU (`-` where a value is not known).
fn parse_pmon(text: &str) -> HashMap<i32, (u32, u32)> {
    let mut cols: Option<(usize, Option<usize>, Option<usize>)> = None;
    let mut out: HashMap<i32, (u32, u32)> = HashMap::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(header) = line.strip_prefix('#') {
            let names: Vec<&str> = header.split_whitespace().collect();
            if let Some(pid) = names.iter().position(|n| *n == "pid") {
                cols = Some((pid, names.iter().position(|n| *n == "sm"), names.iter().position(|n| *n == "fb")));
            }
            continue;
        }
        let (Some((pid_at, sm_at, fb_at)), false) = (cols, line.is_empty()) else { continue };
        let fields: Vec<&str> = line.split_whitespace().collect();
        let Some(pid) = fields.get(pid_at).and_then(|p| p.parse::<i32>().ok()) else { continue };
        let num = |at: Option<usize>| at.and_then(|i| fields.get(i)).and_then(|v| v.parse::<u32>().ok()).unwrap_or(0);
        let e = out.entry(pid).or_default();
        e.0 = e.0.saturating_add(num(sm_at));
        e.1 = e.1.saturating_add(num(fb_at));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pmon_tables_are_read_by_their_header() {
        let text = "# gpu         pid   type     sm    mem    enc    dec    jpg    ofa     fb   command\n\
                    # Idx           #    C/G      %      %      %      %      %      %     MB   name\n\
                    \x20   0      41234     C     37     12      -      -      -      -    811   python\n\
                    \x20   1      41234     C      5      1      -      -      -      -    300   python\n\
                    \x20   0          -     -      -      -      -      -      -      -      -   -\n\
                    \x20   1      50000     G      -      -      -      -      -      -     20   Xorg\n";
        let got = parse_pmon(text);
        assert_eq!(got.get(&41234), Some(&(42, 1111)), "both GPUs of the process summed");
        assert_eq!(got.get(&50000), Some(&(0, 20)));
        assert_eq!(got.len(), 2, "idle GPUs' placeholder lines are no process");
        // An older driver without `fb`: memory unknown, utilisation still read.
        let old = "# gpu        pid  type    sm   mem   enc   dec   command\n# Idx          #   C/G     %     %     %     %   name\n    0       777     C    90    40     0     0   train\n";
        assert_eq!(parse_pmon(old).get(&777), Some(&(90, 0)));
    }
}
