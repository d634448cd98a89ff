//! The manifest that `Describe` answers.

use operon_proto::v1::{
    Filters, Handler, Manifest, ResourceSelector, TaskRegistration, ValueFilter, value_filter,
};

use crate::config::{Config, ResourceSpec};

fn selector(resource: &ResourceSpec) -> ResourceSelector {
    ResourceSelector {
        group: resource.group.clone(),
        version: resource.version.clone(),
        name: resource.plural.clone(),
        ..Default::default()
    }
}

/// The service's name in the manifest.
pub const SERVICE_NAME: &str = "operon-example-handler";

/// The contract revision this service was written against.
pub const CONTRACT_REVISION: u32 = 1;

/// The manifest of a service with this configuration: one handler per `--handler`, in order.
pub fn manifest(config: &Config) -> Manifest {
    let resource = selector(&config.resource);
    let handlers = config
        .handlers
        .iter()
        .map(|spec| Handler {
            id: spec.id.clone(),
            kind: spec.kind.into(),
            resource: Some(resource.clone()),
            filters: (spec.field.is_some() || !spec.labels.is_empty()).then(|| Filters {
                field: spec.field.clone().unwrap_or_default(),
                labels: spec
                    .labels
                    .iter()
                    .map(|(key, value)| {
                        let equals = serde_json::Value::String(value.clone()).to_string();
                        (
                            key.clone(),
                            ValueFilter {
                                test: Some(value_filter::Test::EqualsJson(equals.into_bytes())),
                            },
                        )
                    })
                    .collect(),
                ..Filters::default()
            }),
            options: Some(spec.options.clone()),
        })
        .collect();
    Manifest {
        service_name: SERVICE_NAME.into(),
        contract_revision: CONTRACT_REVISION,
        handlers,
        tasks: config
            .tasks
            .iter()
            .map(|task| TaskRegistration {
                id: task.id.clone(),
                task: Some(selector(&task.task)),
                parent: Some(selector(&task.parent)),
                parent_field: task.parent_field.clone(),
                mode: task.mode.into(),
                priority: task.priority,
                retention: task.retention,
                timeout: task.timeout,
            })
            .collect(),
        ..Manifest::default()
    }
}

#[cfg(test)]
mod tests {
    use operon_proto::v1::HandlerKind;

    use super::*;
    use crate::config::{parse_handler, parse_resource};

    #[test]
    fn one_handler_per_declaration() {
        let config = Config::new(
            parse_resource("kopf.dev/v1/kopfexamples").unwrap(),
            vec![
                parse_handler("create:c1,retries=3").unwrap(),
                parse_handler("field:f1=spec.field").unwrap(),
                parse_handler("delete:d1").unwrap(),
            ],
            true,
        )
        .unwrap();
        let manifest = manifest(&config);
        assert_eq!(manifest.service_name, "operon-example-handler");
        assert_eq!(manifest.contract_revision, 1);
        let ids: Vec<&str> = manifest.handlers.iter().map(|h| h.id.as_str()).collect();
        assert_eq!(ids, ["c1", "f1", "d1"]);
        let [create, field, delete] = &manifest.handlers[..] else {
            unreachable!()
        };
        assert_eq!(create.kind(), HandlerKind::Create);
        assert_eq!(create.options.clone().unwrap().retries, Some(3));
        assert!(create.filters.is_none());
        let resource = create.resource.as_ref().unwrap();
        assert_eq!(
            (
                resource.group.as_str(),
                resource.version.as_str(),
                resource.name.as_str()
            ),
            ("kopf.dev", "v1", "kopfexamples")
        );
        assert_eq!(field.kind(), HandlerKind::Field);
        assert_eq!(field.filters.as_ref().unwrap().field, "spec.field");
        assert!(delete.options.clone().unwrap().optional);
        assert!(manifest.tasks.is_empty());
        let with_task = config
            .with_tasks(vec![
                crate::config::parse_task("t:g/v1/ts:g/v1/ps:spec.p:sequential,priority=2")
                    .unwrap(),
            ])
            .unwrap();
        let tasks = super::manifest(&with_task).tasks;
        assert_eq!(tasks.len(), 1);
        assert_eq!(tasks[0].mode(), operon_proto::v1::TaskMode::Sequential);
        assert_eq!(tasks[0].parent.as_ref().unwrap().name, "ps");
        assert_eq!(tasks[0].priority, 2);
    }
}
