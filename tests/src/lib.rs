//! The end-to-end harness: every test of Operon against the real control plane uses it.
//!
//! - [`plane`] connects to the local plane of `tests/cluster/up.sh`, starting it when needed.
//! - [`with_temp_ns`] gives a test a fresh namespace and deletes it afterwards, even on failure;
//!   [`with_widget_ns`] adds the test resource `widgets.e2e.operon.dev` and the plane lock.
//! - [`apply_yaml`] applies multi-document YAML; [`install_crds`] installs test CRDs (once per
//!   process); [`wait_for`] polls a condition with a deadline and fails with what it last saw.
//! - [`binaries`] builds `operon` and `operon-example-handler` once per test process;
//!   [`HandlerProcess`] and [`CoreProcess`] run them (logs in `<target>/e2e-logs/`), and
//!   [`Stack`] is one of each serving one namespace. [`Ledger`] reads what the handler service
//!   executed.
//! - [`kopf`] reads Kopf's persistence format on objects and asks real Kopf (PyPI) what it would
//!   write; [`History`] records every version of the watched objects.
//! - [`jaeger`] starts a real Jaeger (tests/cluster/jaeger-up.sh) and reads its query API;
//!   [`PythonHandler`] serves a Python SDK handler file (`kopf serve`).
//! - [`cluster`] disturbs the plane on purpose (API server restarts, etcd compaction).
//! - [`shutdown_app`] stands in for an application's shutdown micro-service (the shutdown hook).
//! - [`takeover`] is what the tests of more than one core share (Lease timings, handler calls
//!   judged across takeovers and handovers).

mod apply;
mod binaries;
pub mod cluster;
pub mod command;
mod crds;
mod history;
mod http;
pub mod jaeger;
pub mod kopf;
mod ledger;
mod namespace;
pub mod pki;
mod plane;
mod process;
mod python;
pub mod shutdown_app;
mod stack;
pub mod takeover;
mod wait;
mod widgets;

pub use apply::{apply_yaml, delete_yaml};
pub use binaries::go_website;
pub use binaries::{Binaries, binaries, go_example, target_dir};
pub use crds::{SITES, WIDGET_TASKS, crd_yaml, install_crds};
pub use history::{History, Observed};
pub use http::{HttpResponse, Metrics, Sample, http_get, http_request};
pub use ledger::{Entries, Entry, Ledger};
pub use namespace::with_temp_ns;
pub use plane::{Plane, plane};
pub use process::{CoreProcess, HandlerProcess, free_port, log_dir, strip_ansi, tail};
pub use python::{FLAKY_PY, PythonHandler, sdk_python};
pub use stack::{Stack, describe_event};
pub use wait::wait_for;
pub use widgets::{
    CRD_YAML, GROUP, KIND, PLURAL, RESOURCE_ARG, VERSION, WidgetExt, install_widget_crd,
    release_finalizers, widget, widget_resource, widgets, with_widget_ns, with_widget_ns_exclusive,
};
