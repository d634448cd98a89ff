//! The example handler service's ledger: one JSON line per handler or sub-handler execution
//! (see proto/examples/rust/README.md), read back and queried.
//!
//! ```
//! # fn main() -> anyhow::Result<()> {
//! # let path = std::env::temp_dir().join(format!("ledger-doc-{}.jsonl", std::process::id()));
//! # let line = |retry: u32, outcome: &str| format!(
//! #     "{{\"ts\":1.0,\"handler\":\"h1\",\"uid\":\"u\",\"namespace\":\"ns\",\"name\":\"w1\",\
//! #      \"generation\":1,\"reason\":\"create\",\"retry\":{retry},\"outcome\":\"{outcome}\"}}\n");
//! # std::fs::write(&path, [line(0, "temporary"), line(1, "temporary"), line(2, "success")].concat())?;
//! let ledger = operon_e2e::Ledger::new(&path);
//! let entries = ledger.read()?;
//! let h1 = entries.object("w1").handler("h1");
//! assert_eq!(h1.retries(), [0, 1, 2]);
//! assert_eq!(h1.outcomes(), ["temporary", "temporary", "success"]);
//! # std::fs::remove_file(&path)?;
//! # Ok(()) }
//! ```

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

/// One execution of a handler or sub-handler.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Entry {
    /// When the execution ended (Unix seconds).
    pub ts: f64,
    /// The handler id, or `<handler id>/<sub>` for a sub-handler.
    pub handler: String,
    /// The object's uid.
    pub uid: Option<String>,
    /// The object's namespace.
    pub namespace: Option<String>,
    /// The object's name.
    pub name: Option<String>,
    /// The object's `metadata.generation` as the handler saw it.
    pub generation: Option<i64>,
    /// `create`, `update`, `delete`, `resume` (`unspecified` for event handlers).
    pub reason: String,
    /// The attempts made before this one (0 on the first).
    pub retry: u32,
    /// `success`, `temporary`, `permanent`, `arbitrary`, `not_matched`, `subhandlers_pending`,
    /// `no_outcome` or `cancelled`.
    pub outcome: String,
    /// The core's id of the attempt, if it sent one.
    #[serde(default)]
    pub attempt_id: Option<String>,
    /// The raw watch event type, for event handlers.
    #[serde(default)]
    pub event_type: Option<String>,
    /// When the execution started (Unix seconds), for handler executions.
    #[serde(default)]
    pub started: Option<f64>,
    /// Task lines: the parent's name.
    #[serde(default)]
    pub parent: Option<String>,
    /// Task lines: the step (`step_started`, `step_done`, `cancelled`).
    #[serde(default)]
    pub step: Option<u32>,
    /// Task lines: the first step of the run (`started`).
    #[serde(default)]
    pub resume_from: Option<u32>,
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:.3} {}/{} gen={} {} {} retry={} -> {}",
            self.ts,
            self.namespace.as_deref().unwrap_or("-"),
            self.name.as_deref().unwrap_or("-"),
            self.generation.unwrap_or(-1),
            self.handler,
            self.reason,
            self.retry,
            self.outcome
        )
    }
}

/// The ledger file of one handler service.
#[derive(Debug, Clone)]
pub struct Ledger {
    path: PathBuf,
}

impl Ledger {
    /// The ledger at `path` (it need not exist yet).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// Where the ledger is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every entry so far; a missing file has none.
    ///
    /// # Errors
    /// When the file cannot be read or a line is not a ledger entry.
    pub fn read(&self) -> anyhow::Result<Entries> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(err) => {
                return Err(err).with_context(|| format!("reading {}", self.path.display()));
            }
        };
        let entries = text
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| {
                serde_json::from_str(line).with_context(|| format!("a bad ledger line: {line}"))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Entries(entries))
    }

    /// Like [`Ledger::read`], panicking on errors (for tests).
    ///
    /// # Panics
    /// When the ledger cannot be read.
    pub fn entries(&self) -> Entries {
        self.read()
            .unwrap_or_else(|err| panic!("cannot read the ledger: {err:#}"))
    }
}

/// A selection of ledger entries, in file order; every filter returns a narrower selection.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Entries(pub Vec<Entry>);

impl Entries {
    fn filter(&self, keep: impl Fn(&Entry) -> bool) -> Self {
        Self(self.0.iter().filter(|e| keep(e)).cloned().collect())
    }

    /// The entries of the object named `name`.
    pub fn object(&self, name: &str) -> Self {
        self.filter(|e| e.name.as_deref() == Some(name))
    }

    /// The entries of the object with this uid.
    pub fn uid(&self, uid: &str) -> Self {
        self.filter(|e| e.uid.as_deref() == Some(uid))
    }

    /// The entries of handler (or sub-handler) `id`, exactly.
    pub fn handler(&self, id: &str) -> Self {
        self.filter(|e| e.handler == id)
    }

    /// The entries with this outcome.
    pub fn outcome(&self, outcome: &str) -> Self {
        self.filter(|e| e.outcome == outcome)
    }

    /// The entries with this reason.
    pub fn reason(&self, reason: &str) -> Self {
        self.filter(|e| e.reason == reason)
    }

    /// The task lines (`reason` `task`) of tasks of the parent named `parent`.
    pub fn parent(&self, parent: &str) -> Self {
        self.filter(|e| e.reason == "task" && e.parent.as_deref() == Some(parent))
    }

    /// The task lines of step `step`.
    pub fn step(&self, step: u32) -> Self {
        self.filter(|e| e.step == Some(step))
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The entries.
    pub fn iter(&self) -> std::slice::Iter<'_, Entry> {
        self.0.iter()
    }

    /// The `retry` of each entry, in order.
    pub fn retries(&self) -> Vec<u32> {
        self.0.iter().map(|e| e.retry).collect()
    }

    /// The `outcome` of each entry, in order.
    pub fn outcomes(&self) -> Vec<&str> {
        self.0.iter().map(|e| e.outcome.as_str()).collect()
    }

    /// The `ts` of each entry, in order.
    pub fn times(&self) -> Vec<f64> {
        self.0.iter().map(|e| e.ts).collect()
    }
}

impl fmt::Display for Entries {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return write!(f, "(no ledger entries)");
        }
        for entry in &self.0 {
            writeln!(f, "  {entry}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_queries() {
        let dir = std::env::temp_dir().join(format!("operon-e2e-ledger-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ledger.jsonl");
        std::fs::write(
            &path,
            concat!(
                r#"{"ts":1.0,"handler":"h1","uid":"u","namespace":"ns","name":"a","generation":1,"reason":"create","retry":0,"outcome":"temporary"}"#,
                "\n",
                r#"{"ts":2.0,"handler":"h1","uid":"u","namespace":"ns","name":"a","generation":1,"reason":"create","retry":1,"outcome":"success","attempt_id":"x"}"#,
                "\n",
                r#"{"ts":3.0,"handler":"h1/s","uid":"v","namespace":"ns","name":"b","generation":1,"reason":"create","retry":0,"outcome":"success"}"#,
                "\n"
            ),
        )
        .unwrap();
        let ledger = Ledger::new(&path);
        let entries = ledger.read().unwrap();
        assert_eq!(entries.len(), 3);
        let a = entries.object("a").handler("h1");
        assert_eq!(a.retries(), [0, 1]);
        assert_eq!(a.outcomes(), ["temporary", "success"]);
        assert_eq!(entries.outcome("success").len(), 2);
        assert_eq!(entries.uid("v").handler("h1/s").len(), 1);
        assert!(Ledger::new(dir.join("missing")).read().unwrap().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
