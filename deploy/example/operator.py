"""
The example Python operator of Operon: Kopf's API, served by the SDK (``kopf run`` / ``kopf serve``).

It handles the example resource ``kopfexamples.kopf.dev`` (deploy/local/crd.yaml) as a Kopf
operator would, and is what ``deploy/local/up.sh`` runs and the Python handler image ships.
The handler ids differ from those of the Rust example handler (``create_fn``…), so that both
can serve the same objects side by side through one core.
"""
import kopf


@kopf.on.create('kopf.dev', 'v1', 'kopfexamples')
def greet(spec, name, logger, **_):
    """ Succeeds at once; the returned value lands in ``status.greet``. """
    logger.info(f"Greeting {name}.")
    return {'message': f"hello from Python, {name}", 'items': len(spec.get('items', []))}


@kopf.on.create('kopf.dev', 'v1', 'kopfexamples')
def check_field(spec, retry, **_):
    """ Retries while the object asks to (``spec.pythonRetries``), then succeeds. """
    wanted = int(spec.get('pythonRetries', 0))
    if retry < wanted:
        raise kopf.TemporaryError(f"not yet: attempt {retry + 1} of {wanted + 1}", delay=3)
    return {'field': spec.get('field')}


@kopf.on.update('kopf.dev', 'v1', 'kopfexamples', field='spec.field')
def field_changed(old, new, logger, **_):
    """ Runs when ``spec.field`` changes. """
    logger.info(f"spec.field changed from {old!r} to {new!r}.")
    return {'from': old, 'to': new}


@kopf.on.delete('kopf.dev', 'v1', 'kopfexamples', optional=True)
def goodbye(name, logger, **_):
    """ Runs on deletion; optional, so it holds no finalizer of its own. """
    logger.info(f"Goodbye, {name}.")
