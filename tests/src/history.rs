//! Every version of every object of a watched collection, as observed by the test itself.
//!
//! A [`History`] watches (kube-runtime's watcher: list, watch, relist on errors) in a task of
//! its own and keeps each distinct `(uid, resourceVersion)` with the wall-clock time it was
//! seen, and deletions. Tests use it to check states that exist only for a moment (a progress
//! record while a handler retries), and to know when something was first persisted. Stops when
//! dropped.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use futures_util::StreamExt;
use kube::api::DynamicObject;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use tokio::task::JoinHandle;

/// One observed version of an object.
#[derive(Debug, Clone)]
pub struct Observed {
    /// When the test saw it (after the API server stored it).
    pub at: SystemTime,
    /// The object.
    pub object: DynamicObject,
    /// Whether this is the object's deletion (a `DELETED` event, or its absence in a relist).
    pub deleted: bool,
}

/// The recorded versions; see the module docs.
#[derive(Debug)]
pub struct History {
    seen: Arc<Mutex<Vec<Observed>>>,
    task: JoinHandle<()>,
}

impl History {
    /// Starts watching `api` (all objects it covers).
    pub fn start(api: Api<DynamicObject>) -> Self {
        let seen: Arc<Mutex<Vec<Observed>>> = Arc::default();
        let sink = seen.clone();
        let task = tokio::spawn(async move {
            let mut stream = watcher(api, watcher::Config::default())
                .default_backoff()
                .boxed();
            while let Some(event) = stream.next().await {
                let (object, deleted) = match event {
                    Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => (o, false),
                    Ok(watcher::Event::Delete(o)) => (o, true),
                    Ok(watcher::Event::Init | watcher::Event::InitDone) => continue,
                    Err(err) => {
                        eprintln!("[e2e] history watch error (it retries): {err}");
                        continue;
                    }
                };
                let mut seen = sink.lock().unwrap_or_else(|p| p.into_inner());
                let duplicate = seen.iter().any(|o| {
                    o.deleted == deleted
                        && o.object.uid() == object.uid()
                        && o.object.resource_version() == object.resource_version()
                });
                if !duplicate {
                    seen.push(Observed {
                        at: SystemTime::now(),
                        object,
                        deleted,
                    });
                }
            }
        });
        Self { seen, task }
    }

    /// Everything seen so far, in order.
    pub fn all(&self) -> Vec<Observed> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The versions of the object named `name`, in order.
    pub fn versions(&self, name: &str) -> Vec<Observed> {
        self.all()
            .into_iter()
            .filter(|o| o.object.name_any() == name)
            .collect()
    }
}

impl Drop for History {
    fn drop(&mut self) {
        self.task.abort();
    }
}
