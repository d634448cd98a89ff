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
    /// The `traceparent` the call carried, if any.
    pub traceparent: Option<String>,
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
        if let Some(traceparent) = &execution.traceparent {
            fields.insert("traceparent".into(), traceparent.clone().into());
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
    path: Option<PathBuf>,
}

impl Ledger {
    /// A ledger appending to `path`, or a silent one.
    pub fn new(path: Option<PathBuf>) -> Self {
        Self { path }
    }

    /// Appends the line for an execution that ended now with `outcome`.
    pub fn record(&self, execution: &Execution, outcome: &str) -> io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let text = line(execution, outcome, now_ts());
        let mut file = OpenOptions::new().create(true).append(true).open(path)?;
        // One write of the whole line; O_APPEND makes it land at the end atomically.
        file.write_all(text.as_bytes())?;
        file.flush()
    }

    /// Starts an execution: if the returned guard is dropped before [`Pending::finish`] (the
    /// call was cancelled, e.g. by its deadline), it records the outcome `cancelled`.
    pub fn start(&self, execution: Execution) -> Pending {
        Pending {
            ledger: self.clone(),
            execution: Some(execution),
        }
    }
}

/// An execution in progress; see [`Ledger::start`].
#[derive(Debug)]
pub struct Pending {
    ledger: Ledger,
    execution: Option<Execution>,
}

impl Pending {
    /// Records the execution's outcome.
    pub fn finish(mut self, outcome: &str) -> io::Result<()> {
        match self.execution.take() {
            Some(execution) => self.ledger.record(&execution, outcome),
            None => Ok(()),
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(execution) = self.execution.take()
            && let Err(error) = self.ledger.record(&execution, "cancelled")
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
            traceparent: None,
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
            traceparent: Some("00-abc-def-01".into()),
            ..execution()
        };
        let value: Value = serde_json::from_str(&line(&with_extras, "success", 2.0)).unwrap();
        assert_eq!(value["event_type"], "ADDED");
        assert_eq!(value["traceparent"], "00-abc-def-01");
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
        std::fs::remove_dir_all(&dir).unwrap();
        Ledger::new(None).record(&execution(), "success").unwrap();
    }
}
