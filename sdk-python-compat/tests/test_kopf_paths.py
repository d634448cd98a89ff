"""Kopf's internal module paths that code outside Kopf imports (Kopf's own test fixtures do)."""
import asyncio
import importlib
import logging

import pytest

import kopf


@pytest.mark.parametrize('module, names', [
    ('kopf._cogs.clients.auth', ['APIContext', 'vault_var']),
    ('kopf._cogs.configs.configuration', ['OperatorSettings']),
    ('kopf._cogs.structs.credentials', ['ConnectionInfo', 'Vault', 'VaultKey']),
    ('kopf._cogs.structs.references', ['Resource', 'Selector']),
    ('kopf._core.actions.loggers', ['ObjectPrefixingTextFormatter', 'configure']),
    ('kopf._core.engines.posting', ['settings_var']),
    ('kopf._core.intents.registries', ['OperatorRegistry', 'SmartOperatorRegistry']),
    ('kopf._core.reactor.inventory', ['ResourceMemories']),
])
def test_the_names_kopfs_conftest_imports(module, names):
    imported = importlib.import_module(module)
    assert all(hasattr(imported, name) for name in names)


def test_they_are_the_public_objects():
    from kopf._cogs.configs.configuration import OperatorSettings
    from kopf._cogs.structs.references import Resource
    from kopf._core.intents.registries import OperatorRegistry
    assert OperatorSettings is kopf.OperatorSettings
    assert Resource is kopf.Resource
    assert OperatorRegistry is kopf.OperatorRegistry


def test_the_prefixing_formatter_prefixes_object_records():
    from kopf._core.actions.loggers import ObjectPrefixingTextFormatter
    formatter = ObjectPrefixingTextFormatter('prefix %(message)s')
    record = logging.LogRecord('kopf.objects', logging.INFO, __file__, 1, 'hello', (), None)
    record.k8s_ref = {'namespace': 'ns', 'name': 'n'}
    assert formatter.format(record) == 'prefix [ns/n] hello'


def test_the_vault_selects_the_highest_priority():
    from kopf._cogs.structs.credentials import Vault
    low, high = kopf.ConnectionInfo(server='https://a', priority=1), kopf.ConnectionInfo(server='https://b', priority=9)

    async def scenario() -> None:
        vault = Vault({'low': low, 'high': high})
        key, item = vault.select()
        assert key == 'high' and item.info is high
        assert [k async for k, _ in vault] == ['low', 'high']
        await vault.close()
        with pytest.raises(kopf.LoginError):
            vault.select()

    asyncio.run(scenario())


def test_the_api_context_is_not_usable_on_operon():
    from kopf._cogs.clients.auth import APIContext
    context = APIContext(kopf.ConnectionInfo(server='https://a'))
    with pytest.raises(NotImplementedError):
        context.session
