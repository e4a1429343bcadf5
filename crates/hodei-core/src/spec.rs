//! The job spec (SPEC §2.7) and its validation. Bad input is data: a list of [`FieldError`]s.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::ids::{JobId, PoolId};
use crate::job::{Condition, Priority, SlaLevel};
use crate::units::{CpuMillis, Gpus, MemoryMb, Resources};

/// A validated job spec.
#[derive(Clone, Debug, PartialEq)]
pub struct JobSpec {
    pub name: String,
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub working_dir: Option<String>,
    pub image: Option<String>,
    pub resources: Resources,
    pub timeout: Duration,
    pub expected_duration: Option<Duration>,
    pub max_retries: u32,
    pub retry_backoff: Option<Duration>,
    pub priority: Priority,
    pub sla: SlaLevel,
    pub preemptible: bool,
    pub hold: bool,
    pub labels: BTreeMap<String, String>,
    pub pool_selector: Option<PoolId>,
    /// `pool_selector.labels`: only workers carrying every one of these labels (their own and
    /// their pool's) run the job.
    pub pool_labels: BTreeMap<String, String>,
    /// Set on the jobs of an array job: the whole array's range (shared by its jobs).
    pub array: Option<ArraySpec>,
    /// The principal whose token submitted it (set by the API, not by the submitter).
    pub submitted_by: Option<crate::ids::PrincipalId>,
    /// Jobs of the same tenant it waits for, and on what (SPEC §2.2 `depends_on`).
    pub depends_on: Vec<Dependency>,
}

/// A job this one waits for: `after_ok` until it succeeded, `after_any` until it ended,
/// `after_not_ok` until it ended otherwise than succeeded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dependency {
    pub job: JobId,
    pub condition: Condition,
}

/// The most dependencies one job may have.
pub const MAX_DEPENDENCIES: usize = 100;

/// `array` of a spec (SPEC §2.7): one job per index `start, start + step, …, ≤ end`, at most
/// `max_parallel` of them scheduled or running at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArraySpec {
    pub start: u32,
    pub end: u32,
    pub step: u32,
    pub max_parallel: Option<u32>,
}

impl ArraySpec {
    /// The indices, in order.
    pub fn indices(&self) -> impl Iterator<Item = u32> + use<> {
        (self.start..=self.end).step_by(self.step.max(1) as usize)
    }

    pub fn count(&self) -> u32 {
        (self.end - self.start) / self.step.max(1) + 1
    }
}

/// Unvalidated `array`.
#[derive(Clone, Copy, Debug, Default)]
pub struct ArrayInput {
    pub start: Option<i64>,
    pub end: Option<i64>,
    pub step: Option<i64>,
    pub max_parallel: Option<i64>,
}

/// Unvalidated spec fields, as the API or CLI received them.
#[derive(Clone, Debug, Default)]
pub struct JobSpecInput {
    pub name: Option<String>,
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub working_dir: Option<String>,
    pub image: Option<String>,
    pub cpu_m: Option<i64>,
    pub memory_mb: Option<i64>,
    pub gpu: Option<i64>,
    pub timeout_ms: Option<i64>,
    pub expected_duration_ms: Option<i64>,
    pub max_retries: Option<i64>,
    pub retry_backoff_ms: Option<i64>,
    pub priority: Option<String>,
    pub sla: Option<String>,
    pub preemptible: Option<bool>,
    pub hold: Option<bool>,
    pub labels: BTreeMap<String, String>,
    pub pool: Option<String>,
    pub pool_labels: BTreeMap<String, String>,
    pub array: Option<ArrayInput>,
    /// `(job_id, condition)` pairs (the API turns a batch's `index` into the job id).
    pub depends_on: Vec<(String, String)>,
}

/// A Kubernetes label key: an optional DNS-subdomain prefix and `/`, then a name of 1–63
/// characters `[A-Za-z0-9]([-_.A-Za-z0-9]*[A-Za-z0-9])?`.
pub fn is_label_key(k: &str) -> bool {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    let alnum = |c: u8| c.is_ascii_alphanumeric();
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|c| alnum(c) || matches!(c, b'-' | b'_' | b'.'))
        && name.bytes().next().is_some_and(alnum)
        && name.bytes().last().is_some_and(alnum);
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|l| {
                let b = l.as_bytes();
                !b.is_empty()
                    && b.len() <= 63
                    && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
                    && b[0] != b'-'
                    && b[b.len() - 1] != b'-'
            })
    });
    name_ok && prefix_ok
}

/// Limits and defaults that come from configuration (`jobs.*`, `limits.*`).
#[derive(Clone, Debug)]
pub struct SpecLimits {
    pub default_resources: Resources,
    pub default_timeout: Duration,
    pub max_timeout: Duration,
    pub default_priority: Priority,
    pub max_retries: u32,
    pub max_argv_env_bytes: usize,
    pub max_labels: usize,
    /// `jobs.max_array_size`: most jobs one array may have.
    pub max_array_size: u32,
}

impl Default for SpecLimits {
    fn default() -> Self {
        SpecLimits {
            default_resources: Resources::new(250, 256, 0),
            default_timeout: Duration::from_millis(3_600_000),
            max_timeout: Duration::from_millis(604_800_000),
            default_priority: Priority::Normal,
            max_retries: 10,
            max_argv_env_bytes: 131_072,
            max_labels: 32,
            max_array_size: 100_000,
        }
    }
}

/// One problem with one field. `field` is a JSON pointer into the request body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
    pub expected: String,
    pub value: Option<String>,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>, expected: impl Into<String>, value: Option<String>) -> Self {
        FieldError { field: field.into(), message: message.into(), expected: expected.into(), value }
    }
}

fn valid_name(s: &str) -> bool {
    (1..=128).contains(&s.len()) && s.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

fn valid_env_key(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_') && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// The job name when none is given: the basename of argv[0], cleaned to the name alphabet.
fn default_name(argv0: &str) -> String {
    let base = argv0.rsplit('/').next().unwrap_or(argv0);
    let cleaned: String = base.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' }).take(128).collect();
    if cleaned.is_empty() { "job".to_owned() } else { cleaned }
}

struct Checker {
    prefix: String,
    errors: Vec<FieldError>,
}

impl Checker {
    fn err(&mut self, field: &str, message: impl Into<String>, expected: impl Into<String>, value: Option<String>) {
        self.errors.push(FieldError::new(format!("{}/{}", self.prefix, field), message, expected, value));
    }

    fn int_in(&mut self, field: &str, v: Option<i64>, min: i64, max: i64, what: &str) -> Option<i64> {
        let v = v?;
        if v < min || v > max {
            self.err(field, format!("{field} is out of range"), format!("{what} between {min} and {max}"), Some(v.to_string()));
            None
        } else {
            Some(v)
        }
    }
}

impl Checker {
    /// A label map at `field`: at most `max` entries, Kubernetes keys, values ≤ 256 characters.
    fn labels(&mut self, field: &str, labels: &BTreeMap<String, String>, max: usize) {
        if labels.len() > max {
            self.err(field, "too many labels", format!("at most {max} labels"), Some(labels.len().to_string()));
        }
        for (k, v) in labels {
            // The key in a JSON pointer: `~` and `/` escaped (RFC 6901).
            let at = format!("{field}/{}", k.replace('~', "~0").replace('/', "~1"));
            if !is_label_key(k) {
                self.err(&at, "not a label key", "[prefix/]name: a name of 1 to 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit; a prefix of lowercase DNS labels, at most 253 characters", Some(k.clone()));
            }
            if v.len() > 256 {
                self.err(&at, "label value is too long", "a value of at most 256 characters", Some(v.len().to_string()));
            }
        }
    }

    fn array(&mut self, a: ArrayInput, max_size: u32) -> Option<ArraySpec> {
        let top = i64::from(u32::MAX);
        let Some(start) = a.start else {
            self.err("array/start", "array.start is missing", "the first index, an integer ≥ 0", None);
            return None;
        };
        let Some(end) = a.end else {
            self.err("array/end", "array.end is missing", "the last index, an integer ≥ start", None);
            return None;
        };
        let start = self.int_in("array/start", Some(start), 0, top, "an index")?;
        let end = self.int_in("array/end", Some(end), start, top, "an index ≥ start")?;
        let step = self.int_in("array/step", Some(a.step.unwrap_or(1)), 1, top, "a step")?;
        let max_parallel = match a.max_parallel {
            Some(p) => Some(self.int_in("array/max_parallel", Some(p), 1, top, "a job count")? as u32),
            None => None,
        };
        let spec = ArraySpec { start: start as u32, end: end as u32, step: step as u32, max_parallel };
        if spec.count() > max_size {
            self.err("array", "array has too many jobs", format!("at most {max_size} jobs (jobs.max_array_size)"), Some(format!("{} jobs", spec.count())));
            return None;
        }
        Some(spec)
    }
}

impl JobSpecInput {
    /// Validates every field, reporting all problems at once. `prefix` is the JSON pointer of the
    /// spec in its request ("" for a single job, "/jobs/3" in a batch).
    pub fn validate(self, limits: &SpecLimits, prefix: &str) -> Result<JobSpec, Vec<FieldError>> {
        let mut c = Checker { prefix: prefix.to_owned(), errors: Vec::new() };

        if self.command.is_empty() {
            c.err("command", "command must not be empty", "an array of at least one string (argv)", None);
        }
        for (i, a) in self.command.iter().enumerate() {
            if a.contains('\0') {
                c.err(&format!("command/{i}"), "argument contains a NUL byte", "a string without NUL bytes", None);
            }
        }
        let name = match self.name {
            Some(n) if valid_name(&n) => n,
            Some(n) => {
                c.err("name", "invalid job name", "1 to 128 characters of [A-Za-z0-9._-]", Some(n));
                String::new()
            }
            None => self.command.first().map(|a| default_name(a)).unwrap_or_default(),
        };
        let mut size: usize = self.command.iter().map(|a| a.len() + 1).sum();
        for (k, v) in &self.env {
            size += k.len() + v.len() + 2;
            if !valid_env_key(k) {
                c.err(&format!("env/{k}"), "invalid environment variable name", "a name matching ^[A-Za-z_][A-Za-z0-9_]*$", Some(k.clone()));
            } else if k.starts_with("HODEI_") {
                c.err(&format!("env/{k}"), "HODEI_ variables are reserved", "a name not starting with HODEI_", Some(k.clone()));
            }
        }
        if size > limits.max_argv_env_bytes {
            c.err(
                "command",
                "command and env are too large",
                format!("at most {} bytes of argv and env together", limits.max_argv_env_bytes),
                Some(size.to_string()),
            );
        }
        c.labels("labels", &self.labels, limits.max_labels);
        c.labels("pool_selector/labels", &self.pool_labels, limits.max_labels);

        let d = limits.default_resources;
        let cpu = c.int_in("resources/cpu_m", self.cpu_m, 1, i64::from(u32::MAX), "millicores").map_or(d.cpu_m, |v| CpuMillis(v as u32));
        let mem = c.int_in("resources/memory_mb", self.memory_mb, 1, i64::from(u32::MAX), "MiB").map_or(d.memory_mb, |v| MemoryMb(v as u32));
        let gpu = c.int_in("resources/gpu", self.gpu, 0, 1024, "a GPU count").map_or(d.gpu, |v| Gpus(v as u32));

        let max_timeout = i64::try_from(limits.max_timeout.as_millis()).unwrap_or(i64::MAX);
        let timeout =
            c.int_in("timeout_ms", self.timeout_ms, 1, max_timeout, "milliseconds").map_or(limits.default_timeout, |v| Duration::from_millis(v as u64));
        let expected = c.int_in("expected_duration_ms", self.expected_duration_ms, 1, max_timeout, "milliseconds").map(|v| Duration::from_millis(v as u64));
        let max_retries = c.int_in("max_retries", self.max_retries, 0, i64::from(limits.max_retries), "a retry count").map_or(0, |v| v as u32);
        let retry_backoff = c.int_in("retry_backoff_ms", self.retry_backoff_ms, 0, max_timeout, "milliseconds").map(|v| Duration::from_millis(v as u64));

        let priority = match self.priority.as_deref() {
            None => limits.default_priority,
            Some(p) => p.parse().unwrap_or_else(|()| {
                c.err("priority", "unknown priority", Priority::expected(), Some(p.to_owned()));
                limits.default_priority
            }),
        };
        let sla = match self.sla.as_deref() {
            None => priority.default_sla(),
            Some(s) => s.parse().unwrap_or_else(|()| {
                c.err("sla", "unknown SLA level", SlaLevel::expected(), Some(s.to_owned()));
                priority.default_sla()
            }),
        };
        let pool_selector = match self.pool.as_deref() {
            None => None,
            Some(p) => match PoolId::parse(p) {
                Ok(p) => Some(p),
                Err(e) => {
                    c.err("pool_selector/pool", e.to_string(), "a pool id (slug)", Some(p.to_owned()));
                    None
                }
            },
        };
        if let Some(w) = &self.working_dir
            && (w.is_empty() || w.contains('\0'))
        {
            c.err("working_dir", "invalid working directory", "a non-empty path", Some(w.clone()));
        }

        let array = self.array.and_then(|a| c.array(a, limits.max_array_size));
        let mut depends_on = Vec::new();
        if self.depends_on.len() > MAX_DEPENDENCIES {
            c.err("depends_on", "too many dependencies", format!("at most {MAX_DEPENDENCIES}"), Some(self.depends_on.len().to_string()));
        }
        for (i, (job, condition)) in self.depends_on.iter().enumerate() {
            let job = job.parse::<JobId>().map_err(|_| c.err(&format!("depends_on/{i}/job_id"), "not a job id", "the id of a job (a UUID)", Some(job.clone())));
            let condition = condition
                .parse::<Condition>()
                .map_err(|()| c.err(&format!("depends_on/{i}/condition"), "unknown condition", Condition::expected(), Some(condition.clone())));
            if let (Ok(job), Ok(condition)) = (job, condition) {
                depends_on.push(Dependency { job, condition });
            }
        }
        if !self.depends_on.is_empty() && self.hold == Some(true) {
            c.err("hold", "a job with depends_on is held for its dependencies", "hold left out (hold the job once it is pending)", Some("true".into()));
        }

        if !c.errors.is_empty() {
            return Err(c.errors);
        }
        Ok(JobSpec {
            name,
            command: self.command,
            env: self.env,
            working_dir: self.working_dir,
            image: self.image,
            resources: Resources { cpu_m: cpu, memory_mb: mem, gpu },
            timeout,
            expected_duration: expected,
            max_retries,
            retry_backoff,
            priority,
            sla,
            preemptible: self.preemptible.unwrap_or_else(|| priority.default_preemptible()),
            hold: self.hold.unwrap_or(false),
            labels: self.labels,
            pool_selector,
            pool_labels: self.pool_labels,
            array,
            submitted_by: None,
            depends_on,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(argv: &[&str]) -> JobSpecInput {
        JobSpecInput { command: argv.iter().map(|s| s.to_string()).collect(), ..Default::default() }
    }

    #[test]
    fn label_keys_follow_the_kubernetes_syntax() {
        for ok in ["team", "Team_A.1", "example.com/team", "a.b-c/x", "a"] {
            assert!(is_label_key(ok), "{ok}");
        }
        for bad in ["", "has space", "$(id)", "nul\0", "-lead", "trail-", "Upper.com/x", "/x", "x/", &"n".repeat(64), "a..b/x"] {
            assert!(!is_label_key(bad), "{bad:?}");
        }
        let mut i = input(&["true"]);
        i.labels.insert("example.com/$(id)".into(), "v".into());
        let errs = i.validate(&SpecLimits::default(), "").unwrap_err();
        assert_eq!(errs[0].field, "/labels/example.com~1$(id)", "the key is escaped in the pointer");
    }

    #[test]
    fn defaults_fill_what_is_missing() {
        let spec = input(&["/bin/echo", "hi"]).validate(&SpecLimits::default(), "").unwrap();
        assert_eq!(spec.name, "echo");
        assert_eq!(spec.resources, Resources::new(250, 256, 0));
        assert_eq!(spec.priority, Priority::Normal);
        assert_eq!(spec.sla, SlaLevel::Medium);
        assert!(!spec.preemptible);
        assert_eq!(spec.timeout, Duration::from_secs(3600));
    }

    #[test]
    fn batch_priority_defaults_to_best_effort_and_preemptible() {
        let mut i = input(&["true"]);
        i.priority = Some("batch".into());
        let spec = i.validate(&SpecLimits::default(), "").unwrap();
        assert_eq!(spec.sla, SlaLevel::BestEffort);
        assert!(spec.preemptible);
    }

    #[test]
    fn every_bad_field_is_reported_with_its_pointer() {
        let mut i = input(&[]);
        i.cpu_m = Some(0);
        i.priority = Some("urgent".into());
        i.env.insert("HODEI_X".into(), "1".into());
        i.env.insert("1BAD".into(), "1".into());
        i.max_retries = Some(11);
        let errs = i.validate(&SpecLimits::default(), "/jobs/2").unwrap_err();
        let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            ["/jobs/2/command", "/jobs/2/env/1BAD", "/jobs/2/env/HODEI_X", "/jobs/2/resources/cpu_m", "/jobs/2/max_retries", "/jobs/2/priority"]
        );
        assert_eq!(errs[5].expected, "critical|high|normal|low|batch");
    }

    #[test]
    fn argv_and_env_size_is_capped() {
        let limits = SpecLimits { max_argv_env_bytes: 10, ..Default::default() };
        let errs = input(&["echo", "0123456789"]).validate(&limits, "").unwrap_err();
        assert_eq!(errs[0].field, "/command");
    }

    #[test]
    fn timeout_above_the_maximum_is_refused() {
        let mut i = input(&["true"]);
        i.timeout_ms = Some(604_800_001);
        assert_eq!(i.validate(&SpecLimits::default(), "").unwrap_err()[0].field, "/timeout_ms");
    }
}
