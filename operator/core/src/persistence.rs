//! What is stored on the objects, byte-compatible with Kopf (1.45): annotation keys, the diff-base
//! essence, diffs, and per-handler progress records.
//!
//! Everything here is pure: values in, values and [`MergePatch`] entries out; no I/O and no clock
//! (times are parameters). Start at [`DiffBaseStorage`] (what was last handled, and what changed:
//! [`diff()`]) and [`ProgressStorage`] (where each handler is in the current cycle). [`keys`] forms
//! the annotation keys both use; [`time`] and [`pyjson`] reproduce Kopf's (Python's) text forms of
//! timestamps and JSON, so that an object can move between Kopf and Operon mid-cycle.
//!
//! Where Kopf crashes on a malformed stored value (it stops the resource's watcher), the readers
//! here return an error and leave the decision to the caller.

pub mod diff;
pub mod essence;
pub mod keys;
pub mod progress;
pub mod pyjson;
pub mod spec;
pub mod time;

pub use crate::patch::MergePatch;
pub use diff::{DiffItem, DiffOp, DiffScope, FieldPath, diff, parse_field, reduce, resolve};
pub use essence::{DiffBaseLayer, DiffBaseStorage};
pub use keys::KeyConvention;
pub use progress::{ProgressLayer, ProgressRecord, ProgressStorage, RecordLocation, StoredRecord};
