//! Batch scripts, as sbatch reads them: `#HODEI` directive lines at the top of a script are
//! flags of `hodei submit` (the command line overrides them), the script is sent with the job
//! (editing it afterwards changes nothing), and `--output` / `--error` name files the job's
//! output goes to where it runs, `%j` standing for the job id and `%a` for the array index.

use std::path::Path;

use anyhow::Context;

/// The largest script sent with a job (it travels in the job's command).
const MAX_SCRIPT_BYTES: usize = 64 * 1024;

/// A script to send with the job: its text and its directives.
pub struct Script {
    pub text: String,
    /// The flags of its `#HODEI` lines, in order.
    pub directives: Vec<String>,
}

/// `path` as a batch script: a text file starting with `#!` or holding `#HODEI` lines. `None`
/// for anything else (a program, a directory, no such file): it is run as it is.
pub fn read(path: &str) -> anyhow::Result<Option<Script>> {
    let p = Path::new(path);
    if !p.is_file() {
        return Ok(None);
    }
    let bytes = std::fs::read(p).with_context(|| format!("reading {path}"))?;
    let Ok(text) = String::from_utf8(bytes) else { return Ok(None) };
    let directives = directives(&text).with_context(|| format!("{path}: #HODEI"))?;
    if !text.starts_with("#!") && directives.is_empty() {
        return Ok(None);
    }
    anyhow::ensure!(text.len() <= MAX_SCRIPT_BYTES, "{path} is {} bytes; a batch script may hold at most {MAX_SCRIPT_BYTES}", text.len());
    Ok(Some(Script { text, directives }))
}

/// The flags of the `#HODEI` lines at the top of a script: after the `#!` line, among
/// comments and blank lines, up to the first command (as sbatch stops at the first command).
/// Each line holds flags as on the command line: `#HODEI --cpu-m 500 --name nightly`.
pub fn directives(text: &str) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("#HODEI") {
            anyhow::ensure!(rest.is_empty() || rest.starts_with(char::is_whitespace), "line {}: expected `#HODEI --flag value`", n + 1);
            // sbatch's spellings of the output files (`-o` and `--output` are the output format
            // on the command line).
            out.extend(words(rest).with_context(|| format!("line {}", n + 1))?.into_iter().map(|w| match w.as_str() {
                "--output" => "--output-file".to_owned(),
                "--error" => "--error-file".to_owned(),
                _ => match (w.strip_prefix("--output="), w.strip_prefix("--error=")) {
                    (Some(v), _) => format!("--output-file={v}"),
                    (_, Some(v)) => format!("--error-file={v}"),
                    _ => w,
                },
            }));
        } else if !line.is_empty() && !line.starts_with('#') {
            break;
        }
    }
    Ok(out)
}

/// Splits a directive line like a shell: whitespace apart, `'…'` and `"…"` quote.
fn words(line: &str) -> anyhow::Result<Vec<String>> {
    let (mut out, mut cur, mut quote, mut any) = (Vec::new(), String::new(), None, false);
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                any = true;
            }
            (None, c) if c.is_whitespace() => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                any = false;
            }
            (None, c) => cur.push(c),
        }
    }
    anyhow::ensure!(quote.is_none(), "an unclosed quote");
    if any || !cur.is_empty() {
        out.push(cur);
    }
    Ok(out)
}

/// `text` as one shell word.
fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// A file name pattern as a shell word: `%j` the job id, `%a` the array index, `%%` a `%`.
fn pattern(p: &str) -> anyhow::Result<String> {
    let mut out = String::new();
    let mut lit = String::new();
    let mut chars = p.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            lit.push(c);
            continue;
        }
        let var = match chars.next() {
            Some('j') => "${HODEI_JOB_ID}",
            Some('a') => "${HODEI_ARRAY_INDEX:-0}",
            Some('%') => {
                lit.push('%');
                continue;
            }
            other => anyhow::bail!("{p:?}: %{} is not a pattern (%j job id, %a array index, %% a %)", other.map(String::from).unwrap_or_default()),
        };
        if !lit.is_empty() {
            out.push_str(&quoted(&std::mem::take(&mut lit)));
        }
        out.push('"');
        out.push_str(var);
        out.push('"');
    }
    if !lit.is_empty() || out.is_empty() {
        out.push_str(&quoted(&lit));
    }
    Ok(out)
}

/// The command that runs `argv` (or `script`, `argv` being its path and arguments) with
/// stdout/stderr sent to the `output`/`error` files: `sh -c LAUNCHER NAME [SCRIPT] ARGS…`.
/// The script travels as an argument and is written to a private temporary file where the job
/// runs. `None`: run `argv` as it is.
pub fn wrap(argv: &[String], script: Option<&Script>, output: Option<&str>, error: Option<&str>) -> anyhow::Result<Option<Vec<String>>> {
    if script.is_none() && output.is_none() && error.is_none() {
        return Ok(None);
    }
    let mut sh = String::new();
    match (output, error) {
        (Some(o), Some(e)) => sh.push_str(&format!("exec >{} 2>{} || exit 127\n", pattern(o)?, pattern(e)?)),
        // Like sbatch: without --error, stderr goes where stdout goes.
        (Some(o), None) => sh.push_str(&format!("exec >{} 2>&1 || exit 127\n", pattern(o)?)),
        (None, Some(e)) => sh.push_str(&format!("exec 2>{} || exit 127\n", pattern(e)?)),
        (None, None) => {}
    }
    match script {
        Some(_) => sh.push_str(
            "f=$(mktemp \"${TMPDIR:-/tmp}/hodei-script.XXXXXX\") || exit 127\n\
             printf '%s' \"$1\" >\"$f\" && chmod 700 \"$f\" || exit 127\n\
             shift\n\
             \"$f\" \"$@\"; rc=$?; rm -f \"$f\"; exit $rc\n",
        ),
        None => sh.push_str("exec \"$@\"\n"),
    }
    let name = argv.first().map(|a| Path::new(a).file_name().map_or(a.clone(), |n| n.to_string_lossy().into_owned())).unwrap_or_default();
    let mut cmd = vec!["/bin/sh".to_owned(), "-c".to_owned(), sh, name];
    match script {
        Some(s) => {
            cmd.push(s.text.clone());
            cmd.extend(argv.iter().skip(1).cloned());
        }
        None => cmd.extend(argv.iter().cloned()),
    }
    Ok(Some(cmd))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directives_are_read_at_the_top_until_the_first_command() {
        let text = "#!/bin/sh\n#HODEI --cpu-m 500 --name 'my job'\n\n# a comment\n#HODEI --timeout 10m\necho hi\n#HODEI --memory-mb 1\n";
        assert_eq!(directives(text).unwrap(), ["--cpu-m", "500", "--name", "my job", "--timeout", "10m"]);
        assert_eq!(directives("#HODEI --output o-%j --error=e-%j\n").unwrap(), ["--output-file", "o-%j", "--error-file=e-%j"]);
        assert!(directives("#HODEI --name \"open\n").is_err());
        assert!(directives("#HODEIX\n").is_err());
    }

    #[test]
    fn file_patterns_become_shell_words() {
        assert_eq!(pattern("out-%j.log").unwrap(), "'out-'\"${HODEI_JOB_ID}\"'.log'");
        assert_eq!(pattern("%a").unwrap(), "\"${HODEI_ARRAY_INDEX:-0}\"");
        assert_eq!(pattern("100%%-it's").unwrap(), "'100%-it'\\''s'");
        assert!(pattern("bad-%x").is_err());
    }
}
