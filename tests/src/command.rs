//! Running the command-line tools the deploy and node tests drive (kubectl, helm, openssl, the
//! cluster scripts), with their output in every failure.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The repository's root (the tests crate lives one level below it).
#[must_use]
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives one level below the repository root")
        .to_owned()
}

/// Runs `program args` with `env` added, feeding `stdin`: stdout, or (when it fails) the
/// command, its exit status and both outputs.
///
/// # Panics
/// When the program cannot be started.
pub fn try_run(
    program: &Path,
    args: &[&str],
    env: &[(&str, &Path)],
    stdin: &str,
) -> Result<String, String> {
    use std::io::Write as _;
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", program.display()));
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin.as_bytes()).expect("writing stdin");
    drop(input);
    let output = child.wait_with_output().expect("waiting for the process");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        return Ok(stdout);
    }
    Err(format!(
        "{} {} failed ({}):\n{stdout}\n{}",
        program.display(),
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    ))
}

/// [`try_run`], panicking with its failure.
///
/// # Panics
/// When the program cannot be started or fails.
pub fn run(program: &Path, args: &[&str], env: &[(&str, &Path)], stdin: &str) -> String {
    try_run(program, args, env, stdin).unwrap_or_else(|failure| panic!("{failure}"))
}

/// The Helm CLI, built once and cached under ~/.cache/operon (tests/cluster/build-helm.sh).
///
/// # Panics
/// When the script fails.
#[must_use]
pub fn helm_bin() -> PathBuf {
    let script = repo_root().join("tests/cluster/build-helm.sh");
    PathBuf::from(run(&script, &[], &[], "").trim())
}
