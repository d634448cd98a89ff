"""
kopf.adopt & its parts on what operators pass them: dicts, pykube-ng objects and the official
`kubernetes` client's models (as its `create_*`/`read_*` return them), one, many or mixed.
"""
import decimal
from typing import Any
from unittest.mock import Mock

import kubernetes.client as k8s
import pykube
import pytest

import kopf

from conftest import OBJ, invoke, make_request, which

OWNER = {
    'apiVersion': 'example.com/v1', 'kind': 'Tenant',
    'metadata': {'name': 'acme', 'namespace': 'tenants', 'uid': 'uid-acme', 'labels': {'tenant': 'acme'}},
}


def owner_reference(**overrides: Any) -> Any:
    fields = dict(api_version='example.com/v1', kind='Tenant', name='acme', uid='uid-acme',
                  controller=True, block_owner_deletion=True)
    return k8s.V1OwnerReference(**{**fields, **overrides})


def test_a_kubernetes_model_is_adopted():
    quota = k8s.V1ResourceQuota(spec=k8s.V1ResourceQuotaSpec(hard={'pods': '10'}))
    kopf.adopt(quota, owner=OWNER)
    assert isinstance(quota.metadata, k8s.V1ObjectMeta)
    assert quota.metadata.owner_references == [owner_reference()]
    assert isinstance(quota.metadata.owner_references[0], k8s.V1OwnerReference)
    assert quota.metadata.generate_name == 'acme-' and quota.metadata.name is None
    assert quota.metadata.namespace == 'tenants'
    assert quota.metadata.labels == {'tenant': 'acme'}
    assert quota.spec.hard == {'pods': '10'}


def test_models_in_lists_and_mixed_with_dicts_and_pykube_objects():
    namespace = k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name='acme-space', labels={'own': 'label'}))
    quota = k8s.V1ResourceQuota(metadata=k8s.V1ObjectMeta(name='acme-quota', namespace='elsewhere'))
    secret: dict[str, Any] = {'apiVersion': 'v1', 'kind': 'Secret'}
    pod = pykube.Pod(Mock(), {'apiVersion': 'v1', 'kind': 'Pod', 'metadata': {}})
    kopf.adopt([namespace, (quota, secret), pod], owner=OWNER)

    assert namespace.metadata.name == 'acme-space' and namespace.metadata.generate_name is None
    assert namespace.metadata.labels == {'own': 'label', 'tenant': 'acme'}
    assert namespace.metadata.owner_references == [owner_reference()]
    assert quota.metadata.name == 'acme-quota' and quota.metadata.namespace == 'elsewhere'
    assert quota.metadata.owner_references == [owner_reference()]
    for meta in (secret['metadata'], pod.obj['metadata']):
        assert meta['generateName'] == 'acme-' and meta['namespace'] == 'tenants'
        assert meta['labels'] == {'tenant': 'acme'}
        assert meta['ownerReferences'] == [{'controller': True, 'blockOwnerDeletion': True,
                                            'apiVersion': 'example.com/v1', 'kind': 'Tenant',
                                            'name': 'acme', 'uid': 'uid-acme'}]


def test_owner_references_of_models_are_added_once_and_removed():
    other = owner_reference(name='other', uid='uid-other')
    config = k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(owner_references=[other]))
    kopf.append_owner_reference(config, owner=OWNER)
    kopf.append_owner_reference([config], owner=OWNER, controller=False, block_owner_deletion=None)
    assert config.metadata.owner_references == [other, owner_reference()]
    kopf.remove_owner_reference(config, owner=OWNER)
    assert config.metadata.owner_references == [other]

    fresh = k8s.V1ConfigMap()
    kopf.append_owner_reference(fresh, owner=OWNER, controller=False, block_owner_deletion=None)
    assert fresh.metadata.owner_references == [owner_reference(controller=False, block_owner_deletion=None)]
    kopf.remove_owner_reference(k8s.V1ConfigMap(), owner=OWNER)  # nothing to remove: no error


@pytest.mark.parametrize('kwargs, name, generate_name', [
    (dict(), None, 'acme-'),
    (dict(strict=True), 'acme', None),
])
def test_naming_of_unnamed_models(kwargs, name, generate_name):
    config = k8s.V1ConfigMap()
    kopf.harmonize_naming(config, 'acme', **kwargs)
    assert (config.metadata.name, config.metadata.generate_name) == (name, generate_name)


@pytest.mark.parametrize('kwargs, name, generate_name', [
    (dict(), 'own', None),
    (dict(forced=True), None, 'acme-'),
    (dict(forced=True, strict=True), 'acme', None),
])
def test_naming_of_named_models(kwargs, name, generate_name):
    config = k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(name='own'))
    kopf.harmonize_naming(config, 'acme', **kwargs)
    assert (config.metadata.name, config.metadata.generate_name) == (name, generate_name)


def test_namespaces_of_models():
    unset, kept, forced = (k8s.V1ConfigMap(), k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(namespace='own')),
                           k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(namespace='own')))
    kopf.adjust_namespace([unset, kept], 'tenants')
    kopf.adjust_namespace(forced, 'tenants', forced=True)
    assert [m.metadata.namespace for m in (unset, kept, forced)] == ['tenants', 'own', 'tenants']


@pytest.mark.parametrize('forced, top', [(False, 'old'), (True, 'new')])
def test_labels_of_models_and_their_nested_templates(forced, top):
    deployment = k8s.V1Deployment(
        metadata=k8s.V1ObjectMeta(labels={'app': 'old'}),
        spec=k8s.V1DeploymentSpec(selector=k8s.V1LabelSelector(), template=k8s.V1PodTemplateSpec()))
    kopf.label(deployment, {'app': 'new', 'tier': 'web'}, forced=forced, nested=['spec.template', 'spec.absent'])
    assert deployment.metadata.labels == {'app': top, 'tier': 'web'}
    assert isinstance(deployment.spec.template.metadata, k8s.V1ObjectMeta)
    assert deployment.spec.template.metadata.labels == {'app': 'new', 'tier': 'web'}


def test_nested_templates_are_found_by_their_api_names():
    cronjob = k8s.V1CronJob(spec=k8s.V1CronJobSpec(schedule='* * * * *', job_template=k8s.V1JobTemplateSpec()))
    kopf.label(cronjob, {'app': 'x'}, nested='spec.jobTemplate')
    assert cronjob.spec.job_template.metadata.labels == {'app': 'x'}


def test_nested_templates_of_dicts_are_labelled_only_if_present():
    obj: dict[str, Any] = {'spec': {'template': {}}}
    kopf.label(obj, {'app': 'x'}, nested=('spec.template', ('spec', 'absent')))
    assert obj == {'metadata': {'labels': {'app': 'x'}},
                   'spec': {'template': {'metadata': {'labels': {'app': 'x'}}}}}


def test_adopting_models_in_a_handler_takes_the_handled_object_as_the_owner(registry, backend):
    children: list[Any] = []

    @kopf.on.create('kopfexamples')
    def fn(**_: Any) -> None:
        child = k8s.V1Service()
        kopf.adopt(child)
        children.append(child)

    assert which(invoke(backend, make_request(fn.__qualname__)).outcome) == 'success'
    meta = children[0].metadata
    assert meta.namespace == 'default' and meta.generate_name == 'kopf-example-1-'
    assert meta.labels == OBJ['metadata']['labels']
    assert meta.owner_references == [k8s.V1OwnerReference(
        api_version='kopf.dev/v1', kind='KopfExample', name='kopf-example-1', uid='uid-1',
        controller=True, block_owner_deletion=True)]


def test_none_is_nothing_to_adopt():
    kopf.adopt(None, owner=OWNER)
    kopf.adopt([None, []], owner=OWNER)


@pytest.mark.parametrize('fn, args', [
    (kopf.adopt, (OWNER,)), (kopf.append_owner_reference, (OWNER,)), (kopf.remove_owner_reference, (OWNER,)),
    (kopf.harmonize_naming, ('x',)), (kopf.adjust_namespace, ('x',)), (kopf.label, ({},)),
])
def test_unsupported_objects_are_named_in_the_error(fn, args):
    with pytest.raises(TypeError, match=r"K8s object class is not supported: .*Decimal"):
        fn([{}, decimal.Decimal(1)], *args)
