"""Kopf's ``kopf._cogs.configs.configuration``: the settings, as :mod:`kopf._cogs.settings` has them."""
from kopf._cogs.settings import (
    AdmissionSettings, BackgroundSettings, ExecutionSettings, NetworkingSettings, OperatorSettings,
    PeeringSettings, PersistenceSettings, PostingSettings, ProcessSettings, QueueingSettings,
    ScanningSettings, WatchingSettings,
)

__all__ = ['OperatorSettings', 'ProcessSettings', 'PostingSettings', 'PeeringSettings',
           'WatchingSettings', 'QueueingSettings', 'ScanningSettings', 'AdmissionSettings',
           'ExecutionSettings', 'BackgroundSettings', 'NetworkingSettings', 'PersistenceSettings']
