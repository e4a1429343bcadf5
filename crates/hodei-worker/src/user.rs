//! The user jobs run as. A worker running as root never runs a job as root unless told to:
//! it switches to `--run-as` (default `nobody`) before the job's program starts, so a job
//! cannot read the agent's spool, the server's data dir or anything else only root may read.

use std::ffi::{CStr, CString};
use std::path::PathBuf;

use anyhow::{Context, bail};

/// A user to run jobs as: ids from the password database, and the home a job gets as `HOME`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

/// The default user of a worker running as root.
pub const DEFAULT_RUN_AS: &str = "nobody";

impl JobUser {
    /// Looks `spec` up: a user name, or a numeric `uid[:gid]` (which need not exist in the
    /// password database; its gid defaults to the uid's primary group, else the uid itself).
    pub fn resolve(spec: &str) -> anyhow::Result<JobUser> {
        let (user, gid) = match spec.split_once(':') {
            Some((u, g)) => (u, Some(g.parse::<u32>().with_context(|| format!("{spec:?}: the group after ':' must be a numeric gid"))?)),
            None => (spec, None),
        };
        if user.is_empty() {
            bail!("an empty user name");
        }
        let entry = match user.parse::<u32>() {
            Ok(uid) => lookup(|pwd, buf, out| unsafe { libc::getpwuid_r(uid, pwd, buf.as_mut_ptr(), buf.len(), out) }).unwrap_or(JobUser {
                name: uid.to_string(),
                uid,
                gid: uid,
                home: "/".into(),
            }),
            Err(_) => {
                let c = CString::new(user).context("a user name with a NUL byte")?;
                lookup(|pwd, buf, out| unsafe { libc::getpwnam_r(c.as_ptr(), pwd, buf.as_mut_ptr(), buf.len(), out) })
                    .with_context(|| format!("no user {user:?} on this machine"))?
            }
        };
        Ok(JobUser { gid: gid.unwrap_or(entry.gid), ..entry })
    }

    /// The user jobs of a worker with effective uid `euid` run as, given `--run-as`.
    /// Root defaults to [`DEFAULT_RUN_AS`]; any other user runs jobs as itself (`None`) and
    /// cannot name someone else, which would need root.
    pub fn for_worker(run_as: Option<&str>, euid: u32) -> anyhow::Result<Option<JobUser>> {
        match (run_as, euid) {
            (None, 0) => Ok(Some(JobUser::resolve(DEFAULT_RUN_AS)?)),
            (None, _) => Ok(None),
            (Some(spec), 0) => Ok(Some(JobUser::resolve(spec)?)),
            (Some(spec), me) => {
                let u = JobUser::resolve(spec)?;
                if u.uid != me {
                    bail!("running jobs as {spec:?} needs a worker running as root (this one runs as uid {me})");
                }
                Ok(None)
            }
        }
    }
}

/// Runs a `getpw*_r` call, growing its buffer while it says ERANGE.
fn lookup(call: impl Fn(*mut libc::passwd, &mut Vec<libc::c_char>, *mut *mut libc::passwd) -> libc::c_int) -> Option<JobUser> {
    let mut buf: Vec<libc::c_char> = vec![0; 4096];
    loop {
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut out: *mut libc::passwd = std::ptr::null_mut();
        match call(&mut pwd, &mut buf, &mut out) {
            libc::ERANGE if buf.len() < 1 << 20 => buf.resize(buf.len() * 2, 0),
            0 if !out.is_null() => {
                let text = |p: *const libc::c_char| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned();
                return Some(JobUser { name: text(pwd.pw_name), uid: pwd.pw_uid, gid: pwd.pw_gid, home: text(pwd.pw_dir).into() });
            }
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers_resolve_through_the_password_database() {
        let root = JobUser::resolve("root").unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
        assert_eq!(JobUser::resolve("0").unwrap(), root);
        let odd = JobUser::resolve("4242:4343").unwrap();
        assert_eq!((odd.uid, odd.gid), (4242, 4343));
        assert!(JobUser::resolve("no-such-user-here").unwrap_err().to_string().contains("no user"));
        assert!(JobUser::resolve("1:x").is_err());
        assert!(JobUser::resolve("").is_err());
    }

    #[test]
    fn only_root_switches_users_and_root_defaults_to_nobody() {
        assert_eq!(JobUser::for_worker(None, 0).unwrap().unwrap().name, DEFAULT_RUN_AS);
        assert_eq!(JobUser::for_worker(None, 1000).unwrap(), None);
        assert_eq!(JobUser::for_worker(Some("4242"), 0).unwrap().unwrap().uid, 4242);
        assert_eq!(JobUser::for_worker(Some("4242"), 4242).unwrap(), None);
        assert!(JobUser::for_worker(Some("4242"), 1000).unwrap_err().to_string().contains("needs a worker running as root"));
    }
}
