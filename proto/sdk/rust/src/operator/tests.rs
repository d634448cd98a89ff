//! The registrations and the manifest built from them.

use serde_json::{Value, json};

use super::*;
use crate::{Filter, Finalized, UpdateStrategy};

async fn create_widget(_: Ctx<Value>) -> HandlerResult {
    Ok(None)
}

async fn resize(_: Ctx<Value>) -> HandlerResult {
    Ok(None)
}

async fn monitor(_: DaemonCtx<Value>) -> Result<(), HandlerError> {
    Ok(())
}

async fn sync_site(_: SyncCtx<Value>) -> Result<Desired, HandlerError> {
    Ok(Desired::new())
}

async fn release(_: SyncCtx<Value>) -> Result<Finalized, HandlerError> {
    Ok(Finalized::done())
}

async fn backup(_: TaskCtx<Value, Value>) -> Result<String, HandlerError> {
    Ok(String::new())
}

fn handler<'a>(manifest: &'a pb::Manifest, id: &str) -> &'a pb::Handler {
    manifest
        .handlers
        .iter()
        .find(|h| h.id == id)
        .unwrap_or_else(|| panic!("no handler {id} in {manifest:#?}"))
}

#[test]
fn manifest_from_registrations() {
    let manifest = Operator::new("widgets-operator")
        .on_create("widgets.example.com", create_widget)
        .on_update_field("widgets.example.com", "spec.size", resize)
        .on_delete_with(
            "widgets.example.com",
            HandlerOptions::new().id("cleanup").optional(),
            create_widget,
        )
        .timer_with(
            "widgets.example.com",
            Duration::from_secs(60),
            HandlerOptions::new()
                .id("check")
                .idle(Duration::from_secs(5))
                .label("app", "web")
                .when(|call: &Call<Value>| call.name().is_some()),
            create_widget,
        )
        .daemon("widgets.example.com", monitor)
        .sync_with(
            "sites.example.com",
            SyncOptions::new()
                .owns("v1/configmaps")
                .owns_with("services", UpdateStrategy::Recreate)
                .finalizer(release),
            sync_site,
        )
        .task(
            "backups.example.com",
            "sites.example.com",
            "spec.site",
            backup,
        )
        .manifest()
        .unwrap();
    assert_eq!(manifest.service_name, "widgets-operator");
    assert_eq!(manifest.contract_revision, registry::CONTRACT_REVISION);

    let create = handler(&manifest, "create_widget");
    assert_eq!(create.kind, pb::HandlerKind::Create as i32);
    let resource = create.resource.as_ref().unwrap();
    assert_eq!(
        (resource.group.as_str(), resource.name.as_str()),
        ("example.com", "widgets")
    );

    let field = handler(&manifest, "resize/spec.size");
    assert_eq!(field.kind, pb::HandlerKind::Update as i32);
    assert_eq!(field.filters.as_ref().unwrap().field, "spec.size");

    assert!(
        handler(&manifest, "cleanup")
            .options
            .as_ref()
            .unwrap()
            .optional
    );

    let timer = handler(&manifest, "check");
    let options = timer.options.as_ref().unwrap();
    assert_eq!(options.interval.unwrap().seconds, 60);
    assert_eq!(options.idle.unwrap().seconds, 5);
    let filters = timer.filters.as_ref().unwrap();
    assert!(filters.has_callback_filters);
    assert!(filters.labels.contains_key("app"));

    assert_eq!(
        handler(&manifest, "monitor").kind,
        pb::HandlerKind::Daemon as i32
    );

    let sync = &manifest.syncs[0];
    assert_eq!(sync.id, "sync_site");
    assert!(sync.finalize);
    assert_eq!(sync.children.len(), 2);
    assert_eq!(manifest.tasks[0].id, "backup");
    assert_eq!(manifest.tasks[0].parent_field, "spec.site");
}

#[test]
fn refuses_what_cannot_work() {
    let problems = Operator::new("x")
        .on_create("widgets.example.com", |_: Ctx<Value>| async { Ok(None) })
        .on_create("widgets.example.com", create_widget)
        // One function for create and update shares its id (the reason tells them apart)…
        .on_update("widgets.example.com", create_widget)
        // …but an event handler cannot share it.
        .on_event("widgets.example.com", create_widget)
        .on_create_with(
            "widgets.example.com",
            HandlerOptions::new()
                .id("a")
                .optional()
                .value(Filter::Present),
            create_widget,
        )
        .on_event_with(
            "widgets.example.com",
            HandlerOptions::new().id("e").retries(3),
            create_widget,
        )
        .on_resume_with("", HandlerOptions::new().id("r"), create_widget)
        .timer_with(
            "widgets.example.com",
            Duration::ZERO,
            HandlerOptions::new().id("t"),
            create_widget,
        )
        .manifest()
        .unwrap_err();
    let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
    assert!(
        matches!(
            problems[0],
            RegistrationError::MissingId { kind: "create", .. }
        ),
        "{text:?}"
    );
    assert!(problems.contains(&RegistrationError::DuplicateId {
        what: "handler",
        id: "create_widget".into()
    }));
    assert!(problems.contains(&RegistrationError::NotApplicable {
        id: "a".into(),
        option: "optional",
        kind: "create"
    }));
    assert!(problems.contains(&RegistrationError::FilterWithoutField {
        id: "a".into(),
        filter: "value"
    }));
    assert!(problems.contains(&RegistrationError::NotApplicable {
        id: "e".into(),
        option: "retries",
        kind: "event"
    }));
    assert!(
        problems
            .iter()
            .any(|p| matches!(p, RegistrationError::BadResource { id, .. } if id == "r"))
    );
    assert!(
        problems
            .iter()
            .any(|p| matches!(p, RegistrationError::BadOption { id, .. } if id == "t"))
    );
    assert_eq!(problems.len(), 7, "{text:#?}");
}

#[test]
fn closures_with_ids_and_typed_filters() {
    let manifest = Operator::new("x")
        .on_update_with(
            "widgets.example.com",
            HandlerOptions::new()
                .id("grow")
                .field("spec.size")
                .old_value(Filter::Present)
                .new_value(json!(3)),
            |_: Ctx<Value>| async { Ok(None) },
        )
        .manifest()
        .unwrap();
    let grow = handler(&manifest, "grow/spec.size");
    assert!(grow.filters.as_ref().unwrap().new.is_some());
    assert!(!grow.filters.as_ref().unwrap().has_callback_filters);
}

async fn check_widget(_: Ctx<Value>) -> HandlerResult {
    Ok(None)
}

async fn default_size(_: Ctx<Value>) -> HandlerResult {
    Ok(None)
}

#[test]
fn admission_handlers_in_the_manifest() {
    use crate::Operation;
    let manifest = Operator::new("webhooks")
        .on_validate("widgets.example.com", check_widget)
        .on_mutate_with(
            "widgets.example.com",
            HandlerOptions::new()
                .operations([Operation::Create, Operation::Update])
                // Kopf's names work too; each operation is declared once.
                .operations(["CREATE", "delete"])
                .subresource("status")
                .ignore_failures()
                .side_effects()
                .persistent()
                .call_timeout(Duration::from_secs(5))
                .label("app", "web")
                .when(|call: &Call<Value>| call.admission().is_some()),
            default_size,
        )
        .manifest()
        .unwrap();
    let validate = handler(&manifest, "check_widget");
    assert_eq!(validate.kind, pb::HandlerKind::Validate as i32);
    assert_eq!(
        validate.options.as_ref().unwrap(),
        &pb::Options::default(),
        "no admission options given: all operations, the main resource, failurePolicy Fail, \
         sideEffects None, timeout 30 s"
    );
    let mutate = handler(&manifest, "default_size");
    assert_eq!(mutate.kind, pb::HandlerKind::Mutate as i32);
    let options = mutate.options.as_ref().unwrap();
    assert_eq!(options.operations, ["CREATE", "UPDATE", "DELETE"]);
    assert_eq!(options.subresource.as_deref(), Some("status"));
    assert!(options.ignore_failures && options.side_effects && options.persistent);
    assert_eq!(options.call_timeout.unwrap().seconds, 5);
    assert_eq!(options.retries, None);
    let filters = mutate.filters.as_ref().unwrap();
    assert!(filters.has_callback_filters);
    assert!(filters.labels.contains_key("app"));
}

#[test]
fn admission_options_only_where_they_apply() {
    use crate::Operation;
    let problems = Operator::new("x")
        // Admission handlers are not retried and store nothing.
        .on_validate_with(
            "widgets.example.com",
            HandlerOptions::new()
                .id("v")
                .retries(3)
                .errors(crate::ErrorsMode::Permanent),
            check_widget,
        )
        // Admission options on a change handler.
        .on_create_with(
            "widgets.example.com",
            HandlerOptions::new()
                .id("c")
                .operations([Operation::Create])
                .ignore_failures(),
            create_widget,
        )
        // Values that cannot be a webhook.
        .on_mutate_with(
            "widgets.example.com",
            HandlerOptions::new()
                .id("m")
                .operations(Vec::<Operation>::new())
                .subresource("")
                .call_timeout(Duration::from_secs(60)),
            default_size,
        )
        .on_mutate_with(
            "widgets.example.com",
            HandlerOptions::new()
                .id("n")
                .operations(["CREATE", "PATCH"]),
            default_size,
        )
        .on_mutate("widgets.example.com", |_: Ctx<Value>| async { Ok(None) })
        .manifest()
        .unwrap_err();
    let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
    let not_applicable =
        |id: &str, option: &'static str, kind: &'static str| RegistrationError::NotApplicable {
            id: id.into(),
            option,
            kind,
        };
    assert_eq!(
        problems[..4],
        [
            not_applicable("v", "retries", "validate"),
            not_applicable("v", "errors", "validate"),
            not_applicable("c", "operations", "create"),
            not_applicable("c", "ignore_failures", "create"),
        ],
        "{text:#?}"
    );
    assert!(
        text.contains(&"v: the option `retries` does not apply to validate handlers".to_owned()),
        "{text:#?}"
    );
    let bad: Vec<&str> = problems
        .iter()
        .filter_map(|p| match p {
            RegistrationError::BadOption { id, problem } if id == "m" => Some(*problem),
            _ => None,
        })
        .collect();
    assert_eq!(bad.len(), 3, "{text:#?}");
    assert!(bad[0].contains("operations is empty"));
    assert!(bad[1].contains("subresource is empty"));
    assert!(bad[2].contains("from 1 to 30 seconds"));
    assert!(problems.contains(&RegistrationError::UnknownOperation {
        id: "n".into(),
        operation: "PATCH".into()
    }));
    assert!(
        text.contains(
            &"n: unknown operation \"PATCH\" in `operations` (CREATE, UPDATE, DELETE or CONNECT)"
                .to_owned()
        ),
        "{text:#?}"
    );
    assert!(matches!(
        problems.last(),
        Some(RegistrationError::MissingId { kind: "mutate", .. })
    ));
    assert_eq!(problems.len(), 9, "{text:#?}");
}
