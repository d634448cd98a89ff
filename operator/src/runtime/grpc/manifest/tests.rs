//! The manifest's parts, validated (moved here with the conversions from `convert.rs`,
//! `admission.rs`, `sync.rs` and `tasks.rs`; they assert what they asserted there).

use super::*;
use crate::core::model::{ErrorsMode, ValueFilter};
use crate::runtime::grpc::convert::to_duration;

fn manifest_of(handlers: Vec<pb::Handler>) -> pb::Manifest {
    pb::Manifest {
        handlers,
        ..Default::default()
    }
}

#[test]
fn manifests_reject_duplicates_and_missing_resources() {
    let h = |id: &str| pb::Handler {
        id: id.into(),
        kind: pb::HandlerKind::Create as i32,
        resource: Some(pb::ResourceSelector {
            group: "g".into(),
            version: "v1".into(),
            name: "things".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let m = manifest_of(vec![h("a"), h("a")]);
    assert!(matches!(handlers(&m), Err(Error::DuplicateId(_))));
    // The same id under another kind is one function with two decorators.
    let mut resume = h("a");
    resume.kind = pb::HandlerKind::Resume as i32;
    let m = manifest_of(vec![h("a"), resume]);
    assert_eq!(handlers(&m).unwrap().handlers.len(), 2);
    // The same id and kind for another resource: handlers registered in a loop.
    let mut other = h("a");
    if let Some(r) = other.resource.as_mut() {
        r.name = "others".into();
    }
    let m = manifest_of(vec![h("a"), other]);
    assert_eq!(handlers(&m).unwrap().handlers.len(), 2);
    let mut bad = h("b");
    bad.resource = None;
    let m = manifest_of(vec![bad]);
    assert!(matches!(handlers(&m), Err(Error::NoResource(_))));
}

#[test]
fn filters_and_options_convert() {
    let mut h = pb::Handler {
        id: "f".into(),
        kind: pb::HandlerKind::Field as i32,
        resource: Some(pb::ResourceSelector {
            group: String::new(),
            version: "v1".into(),
            name: "pods".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut filters = pb::Filters {
        field: "spec.field".into(),
        ..Default::default()
    };
    filters.labels.insert(
        "app".into(),
        pb::ValueFilter {
            test: Some(pb::value_filter::Test::EqualsJson(b"\"web\"".to_vec())),
        },
    );
    h.filters = Some(filters);
    h.options = Some(pb::Options {
        retries: Some(3),
        backoff: Some(to_duration(Duration::from_secs(1))),
        errors: pb::ErrorsMode::Permanent as i32,
        ..Default::default()
    });
    let regs = handlers(&manifest_of(vec![h])).unwrap();
    let handler = &regs.handlers[0].handler;
    assert_eq!(handler.kind, HandlerKind::Field);
    assert_eq!(
        handler.filters.field,
        Some(vec!["spec".to_owned(), "field".to_owned()])
    );
    assert_eq!(
        handler.filters.labels["app"],
        ValueFilter::Equals(serde_json::json!("web"))
    );
    assert_eq!(handler.options.retries, Some(3));
    assert_eq!(handler.options.errors, ErrorsMode::Permanent);
}

#[test]
fn manifests_give_admission_handlers_with_kopfs_options() {
    let manifest = manifest_of(vec![
        pb::Handler {
            id: "create".into(),
            kind: pb::HandlerKind::Create as i32,
            resource: Some(pb::ResourceSelector {
                name: "kex".into(),
                ..Default::default()
            }),
            ..Default::default()
        },
        pb::Handler {
            id: "validate1".into(),
            kind: pb::HandlerKind::Validate as i32,
            resource: Some(pb::ResourceSelector {
                group: "kopf.dev".into(),
                name: "kex".into(),
                ..Default::default()
            }),
            options: Some(pb::Options {
                operations: vec!["CREATE".into(), "update".into()],
                subresource: Some("*".into()),
                ignore_failures: true,
                call_timeout: Some(to_duration(Duration::from_secs(99))),
                ..Default::default()
            }),
            ..Default::default()
        },
        pb::Handler {
            id: "mutate1".into(),
            kind: pb::HandlerKind::Mutate as i32,
            resource: Some(pb::ResourceSelector {
                name: "kex".into(),
                ..Default::default()
            }),
            ..Default::default()
        },
    ]);
    let regs = admission(&manifest).unwrap();
    assert_eq!(regs.len(), 2);
    assert!(super::manifest(&manifest).declares_admission());
    let (selector, v) = &regs[0];
    assert_eq!(selector.group, "kopf.dev");
    assert_eq!(v.kind, WebhookKind::Validating);
    assert_eq!(v.operations, [Operation::Create, Operation::Update]);
    assert_eq!(v.subresource, Subresource::Any);
    assert!(v.ignore_failures);
    assert_eq!(v.timeout, MAX_TIMEOUT, "at most 30 seconds");
    let m = &regs[1].1;
    assert_eq!(m.kind, WebhookKind::Mutating);
    assert!(m.operations.is_empty());
    assert_eq!(m.subresource, Subresource::Main);
    // The change handlers' conversion leaves them out without complaint.
    let others = handlers(&manifest).unwrap();
    assert_eq!(others.handlers.len(), 1);
    assert!(others.unsupported.is_empty());

    let mut bad = manifest;
    bad.handlers[1].options.as_mut().unwrap().operations = vec!["PATCH".into()];
    assert!(matches!(
        admission(&bad),
        Err(AdmissionRegistrationError::Operation { .. })
    ));
}

#[test]
fn sync_registrations_are_validated() {
    let sel = |n: &str| pb::ResourceSelector {
        group: String::new(),
        version: "v1".into(),
        name: n.into(),
        ..Default::default()
    };
    let m = pb::Manifest {
        syncs: vec![pb::SyncRegistration {
            id: "s".into(),
            parent: Some(sel("things")),
            children: vec![pb::ChildType {
                resource: Some(sel("configmaps")),
                update_strategy: pb::UpdateStrategy::RollingInPlace as i32,
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    let regs = syncs(&m).unwrap();
    assert_eq!(regs[0].children[0].1, Strategy::RollingInPlace);
    let mut bad = m.clone();
    bad.syncs[0].children[0].update_strategy = 99;
    assert!(matches!(
        syncs(&bad),
        Err(SyncRegistrationError::Strategy { .. })
    ));
    let mut twice = m.clone();
    twice.syncs.push(m.syncs[0].clone());
    assert!(matches!(
        syncs(&twice),
        Err(SyncRegistrationError::DuplicateId(_))
    ));
}

#[test]
fn shutdown_hooks_are_validated_and_imply_the_finalizer() {
    let with = |h: pb::ShutdownHook| pb::Manifest {
        syncs: vec![pb::SyncRegistration {
            id: "s".into(),
            parent: Some(pb::ResourceSelector {
                group: "example.com".into(),
                version: "v1".into(),
                name: "dbs".into(),
                ..Default::default()
            }),
            shutdown_hook: Some(h),
            ..Default::default()
        }],
        ..Default::default()
    };
    let regs = syncs(&with(pb::ShutdownHook {
        url_template: "http://app/{name}".into(),
        retries: 2,
        failure_strategy: pb::ShutdownFailureStrategy::Delete as i32,
        ..Default::default()
    }))
    .unwrap();
    assert!(regs[0].finalize, "a hook implies the finalizer");
    let hook = regs[0].shutdown.clone().unwrap();
    assert_eq!(hook.grace, crate::core::shutdown::DEFAULT_GRACE);
    assert_eq!((hook.retries, hook.failure), (2, FailureStrategy::Delete));
    let service = syncs(&with(pb::ShutdownHook {
        service: "{name}-stop".into(),
        port: 8080,
        grace_period: Some(prost_types::Duration {
            seconds: 5,
            nanos: 0,
        }),
        ..Default::default()
    }))
    .unwrap();
    let hook = service[0].shutdown.clone().unwrap();
    assert_eq!(hook.grace, Duration::from_secs(5));
    assert_eq!(hook.failure, FailureStrategy::GiveUp);
    for bad in [
        pb::ShutdownHook::default(),
        pb::ShutdownHook {
            service: "s".into(),
            url_template: "http://x".into(),
            port: 1,
            ..Default::default()
        },
        pb::ShutdownHook {
            service: "s".into(),
            ..Default::default()
        },
        pb::ShutdownHook {
            url_template: "ftp://x".into(),
            ..Default::default()
        },
        pb::ShutdownHook {
            url_template: "http://x".into(),
            failure_strategy: 7,
            ..Default::default()
        },
    ] {
        assert!(
            matches!(
                syncs(&with(bad.clone())),
                Err(SyncRegistrationError::Hook { .. })
            ),
            "{bad:?}"
        );
    }
}

fn sel(name: &str) -> Option<pb::ResourceSelector> {
    Some(pb::ResourceSelector {
        group: "example.com".into(),
        version: "v1".into(),
        name: name.into(),
        ..Default::default()
    })
}

fn task_manifest() -> pb::Manifest {
    pb::Manifest {
        tasks: vec![pb::TaskRegistration {
            id: "repair".into(),
            task: sel("repairs"),
            parent: sel("clusters"),
            parent_field: "spec.cluster".into(),
            mode: pb::TaskMode::Sequential as i32,
            priority: 5,
            retention: Some(prost_types::Duration {
                seconds: 30,
                nanos: 0,
            }),
            timeout: None,
        }],
        ..Default::default()
    }
}

#[test]
fn task_registrations_are_read() {
    let regs = tasks(&task_manifest()).unwrap();
    assert_eq!(regs.len(), 1);
    let r = &regs[0];
    assert_eq!(r.mode, Mode::Sequential);
    assert_eq!(r.priority, 5);
    assert_eq!(r.retention, Some(Duration::from_secs(30)));
    assert_eq!(r.timeout, None);
    assert_eq!(r.parent_field, "spec.cluster");
    let mut unspecified = task_manifest();
    unspecified.tasks[0].mode = 0;
    assert_eq!(tasks(&unspecified).unwrap()[0].mode, Mode::Parallel);
}

#[test]
fn task_registrations_are_validated() {
    use TaskRegistrationError as E;
    let broken = |edit: fn(&mut pb::TaskRegistration)| {
        let mut m = task_manifest();
        edit(&mut m.tasks[0]);
        tasks(&m).unwrap_err()
    };
    assert!(matches!(broken(|t| t.id.clear()), E::EmptyId));
    assert!(matches!(broken(|t| t.task = None), E::NoResource(_)));
    assert!(matches!(broken(|t| t.parent = sel("")), E::NoResource(_)));
    assert!(matches!(
        broken(|t| t.parent_field = " ".into()),
        E::NoParentField(_)
    ));
    assert!(matches!(broken(|t| t.mode = 7), E::Mode { .. }));
    assert!(matches!(
        broken(|t| t.timeout = Some(prost_types::Duration {
            seconds: -1,
            nanos: 0
        })),
        E::Duration { .. }
    ));
    let mut twice = task_manifest();
    twice.tasks.push(twice.tasks[0].clone());
    assert!(matches!(tasks(&twice), Err(E::DuplicateId(_))));
    twice.tasks[1].id = "other".into();
    let err = tasks(&twice).unwrap_err();
    assert!(matches!(err, E::SameTaskResource(..)));
    assert!(err.to_string().contains("the same task resource"));
}

#[test]
fn each_part_is_validated_on_its_own() {
    let mut m = task_manifest();
    m.tasks[0].mode = 7;
    m.service_name = "svc".into();
    let read = manifest(&m);
    assert_eq!(read.service_name, "svc");
    assert!(read.tasks.is_err());
    assert!(read.handlers.is_ok() && read.syncs.is_ok() && read.admission.is_ok());
    assert_ne!(read, manifest(&task_manifest()));
    assert_eq!(manifest(&task_manifest()), manifest(&task_manifest()));
}
