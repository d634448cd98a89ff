//! The ledger: one JSON line per handler or sub-handler execution, appended to a file.
//!
//! Each line is written with one `write` on a file opened in append mode, so lines from
//! concurrent calls (or processes) never interleave and a killed process leaves no torn line.
//! The file is opened for every line, so a test may remove it between phases.

use std::{
    fs::OpenOptions,
    io::{self, Write},
    path::PathBuf,
    time::{SystemTime, UNIX_EPOCH},
};

use serde_json::{Value, json};

/// The identity of the handled object, as found in its body.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ObjectIdentity {
    /// `metadata.uid`, or null.
    pub uid: Value,
    /// `metadata.namespace`, or null (cluster-scoped objects).
    pub namespace: Value,
    /// `metadata.name`, or null.
    pub name: Value,
    /// `metadata.generation`, or null.
    pub generation: Value,
}

impl ObjectIdentity {
    /// Reads the identity from an object's body; missing fields become null.
    pub fn from_body(body: &Value) -> Self {
        let field = |key: &str| {
            body.get("metadata")
                .and_then(|metadata| metadata.get(key))
                .cloned()
                .unwrap_or(Value::Null)
        };
        Self {
            uid: field("uid"),
            namespace: field("namespace"),
            name: field("name"),
            generation: field("generation"),
        }
    }
}

/// One execution, without its outcome and time.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Execution {
    /// The handler id, or `<handler id>/<sub>` for a sub-handler.
    pub handler: String,
    /// The object.
    pub object: ObjectIdentity,
    /// `create`, `update`, `delete` or `resume` (`unspecified` for event handlers).
    pub reason: &'static str,
    /// The attempts made before this one.
    pub retry: u32,
    /// The raw watch event type, for event handlers.
    pub event_type: String,
    /// The core's id of this attempt, if it sent one.
    pub attempt_id: String,
}

/// The ledger line (with its newline) for an execution that ended with `outcome` at `ts`
/// (Unix seconds).
pub fn line(execution: &Execution, outcome: &str, ts: f64) -> String {
    let mut line = json!({
        "ts": ts,
        "handler": execution.handler,
        "uid": execution.object.uid,
        "namespace": execution.object.namespace,
        "name": execution.object.name,
        "generation": execution.object.generation,
        "reason": execution.reason,
        "retry": execution.retry,
        "outcome": outcome,
    });
    if let Value::Object(fields) = &mut line {
        if !execution.event_type.is_empty() {
            fields.insert("event_type".into(), execution.event_type.clone().into());
        }
        if !execution.attempt_id.is_empty() {
            fields.insert("attempt_id".into(), execution.attempt_id.clone().into());
        }
    }
    let mut text = line.to_string();
    text.push('\n');
    text
}

/// The current time in Unix seconds.
pub fn now_ts() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs_f64())
        .unwrap_or_default()
}

/// Where the lines go; without a path, nowhere.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    path: Option<std::sync::Arc<std::path::Path>>,
}

impl Ledger {
    /// A ledger appending to `path`, or a silent one.
    pub fn new(path: Option<PathBuf>) -> Self {
        Self {
            path: path.map(std::sync::Arc::from),
        }
    }

    /// Appends the line for an execution that ended now with `outcome`.
    pub fn record(&self, execution: &Execution, outcome: &str) -> io::Result<()> {
        self.append(&line(execution, outcome, now_ts()))
    }

    /// Appends one line (with its newline).
    fn append(&self, text: &str) -> io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let mut file = OpenOptions::new().create(true).append(true).open(path)?;
        // One write of the whole line; O_APPEND makes it land at the end atomically.
        file.write_all(text.as_bytes())?;
        file.flush()
    }

    /// Starts an execution: if the returned guard is dropped before [`Pending::finish`] (the
    /// call was cancelled, e.g. by its deadline), it records the outcome `cancelled`. The line
    /// also tells when the execution started (`started`, Unix seconds).
    pub fn start(&self, execution: Execution) -> Pending {
        Pending {
            ledger: self.clone(),
            execution: Some(execution),
            started: now_ts(),
        }
    }

    /// Appends the line of a task event now (see [`task_line`]).
    pub fn record_task(&self, event: &TaskEvent<'_>) -> io::Result<()> {
        self.append(&task_line(event, now_ts()))
    }
}

/// One event of a task run: `started` (with `resume_from`), `step_started` and `step_done`
/// (with `step`), `succeeded`, `failed`, `error`, and `cancelled` (with the `step` it was in,
/// if any) when the core cancelled the call.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskEvent<'a> {
    /// The registration id.
    pub task_id: &'a str,
    /// The task object.
    pub task: &'a ObjectIdentity,
    /// The parent's name.
    pub parent: &'a str,
    /// What happened.
    pub outcome: &'a str,
    /// The step it happened in.
    pub step: Option<u32>,
    /// The first step of this run (on `started`).
    pub resume_from: Option<u32>,
}

/// The ledger line of a task event at `ts`: the fields of [`line()`] (`handler` is the task id,
/// `reason` is `task`), plus `parent`, and `step` and `resume_from` when set.
pub fn task_line(event: &TaskEvent<'_>, ts: f64) -> String {
    let execution = Execution {
        handler: event.task_id.to_owned(),
        object: event.task.clone(),
        reason: "task",
        ..Execution::default()
    };
    let mut value: Value =
        serde_json::from_str(&line(&execution, event.outcome, ts)).unwrap_or_else(|_| json!({}));
    if let Value::Object(fields) = &mut value {
        fields.insert("parent".into(), event.parent.into());
        if let Some(step) = event.step {
            fields.insert("step".into(), step.into());
        }
        if let Some(from) = event.resume_from {
            fields.insert("resume_from".into(), from.into());
        }
    }
    let mut text = value.to_string();
    text.push('\n');
    text
}

/// [`line`], with the time the execution started.
fn line_started(execution: &Execution, outcome: &str, ts: f64, started: f64) -> String {
    let mut text = line(execution, outcome, ts);
    // `line` ends with `}\n`: insert the field before the brace.
    text.truncate(text.len() - 2);
    text.push_str(&format!(",\"started\":{}}}\n", json!(started)));
    text
}

/// An execution in progress; see [`Ledger::start`].
#[derive(Debug)]
pub struct Pending {
    ledger: Ledger,
    execution: Option<Execution>,
    started: f64,
}

impl Pending {
    /// Records the execution's outcome.
    pub fn finish(mut self, outcome: &str) -> io::Result<()> {
        match self.execution.take() {
            Some(execution) => {
                self.ledger
                    .append(&line_started(&execution, outcome, now_ts(), self.started))
            }
            None => Ok(()),
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(execution) = self.execution.take()
            && let Err(error) = self.ledger.append(&line_started(
                &execution,
                "cancelled",
                now_ts(),
                self.started,
            ))
        {
            eprintln!("cannot write the ledger: {error}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn execution() -> Execution {
        Execution {
            handler: "create_fn/a".into(),
            object: ObjectIdentity::from_body(&json!({"metadata": {
                "uid": "u-1", "namespace": "ns", "name": "obj", "generation": 3
            }})),
            reason: "create",
            retry: 2,
            event_type: String::new(),
            attempt_id: String::new(),
        }
    }

    #[test]
    fn identity_from_body() {
        let identity = ObjectIdentity::from_body(&json!({"metadata": {"name": "n"}}));
        assert_eq!(identity.name, json!("n"));
        assert_eq!(identity.uid, Value::Null);
        assert_eq!(identity.generation, Value::Null);
    }

    #[test]
    fn line_format() {
        let text = line(&execution(), "temporary", 1.5);
        assert_eq!(
            text,
            concat!(
                r#"{"ts":1.5,"handler":"create_fn/a","uid":"u-1","namespace":"ns","name":"obj","#,
                r#""generation":3,"reason":"create","retry":2,"outcome":"temporary"}"#,
                "\n"
            )
        );
        let with_extras = Execution {
            event_type: "ADDED".into(),
            attempt_id: "a-1".into(),
            ..execution()
        };
        let value: Value = serde_json::from_str(&line(&with_extras, "success", 2.0)).unwrap();
        assert_eq!(value["event_type"], "ADDED");
        assert_eq!(value["attempt_id"], "a-1");
    }

    #[test]
    fn appends_and_records_cancellations() {
        let dir = std::env::temp_dir().join(format!("operon-ledger-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ledger.jsonl");
        let _ = std::fs::remove_file(&path);
        let ledger = Ledger::new(Some(path.clone()));
        ledger.record(&execution(), "success").unwrap();
        ledger.start(execution()).finish("permanent").unwrap();
        drop(ledger.start(execution()));
        let text = std::fs::read_to_string(&path).unwrap();
        let outcomes: Vec<String> = text
            .lines()
            .map(|line| {
                let value: Value = serde_json::from_str(line).unwrap();
                value["outcome"].as_str().unwrap().to_owned()
            })
            .collect();
        assert_eq!(outcomes, ["success", "permanent", "cancelled"]);
        let started: Vec<bool> = text
            .lines()
            .map(|line| serde_json::from_str::<Value>(line).unwrap()["started"].is_number())
            .collect();
        assert_eq!(started, [false, true, true]);
        ledger
            .record_task(&TaskEvent {
                task_id: "t",
                task: &execution().object,
                parent: "p",
                outcome: "step_done",
                step: Some(2),
                resume_from: None,
            })
            .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let last: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
        assert_eq!(
            (
                &last["handler"],
                &last["reason"],
                &last["parent"],
                &last["step"]
            ),
            (&json!("t"), &json!("task"), &json!("p"), &json!(2))
        );
        assert!(last.get("resume_from").is_none());
        std::fs::remove_dir_all(&dir).unwrap();
        Ledger::new(None).record(&execution(), "success").unwrap();
    }
}
