"""What is public is exactly what is meant to be (everything else lives in _modules)."""

import pathlib

import xypipe

PACKAGE = pathlib.Path(xypipe.__file__).parent


def test_public_modules_are_exactly_the_documented_ones():
    public = sorted(
        p.stem for p in PACKAGE.iterdir()
        if not p.name.startswith("_") and (p.suffix == ".py" or p.is_dir())
    )
    assert public == ["abc", "client", "contracts", "testing"]


def test_every_exported_name_exists_and_nothing_private_is_exported():
    for name in xypipe.__all__:
        assert hasattr(xypipe, name), name
        assert not name.startswith("_") or name == "__version__"
    assert sorted(xypipe.__all__) == xypipe.__all__


def test_the_package_is_typed():
    assert (PACKAGE / "py.typed").exists()


def test_the_client_module_exports_what_it_documents():
    import xypipe.client

    for name in xypipe.client.__all__:
        assert hasattr(xypipe.client, name), name
    assert sorted(xypipe.client.__all__) == xypipe.client.__all__
    # Its errors are the project's: one tree under XyError.
    assert issubclass(xypipe.client.ClientError, xypipe.XyError)
    assert issubclass(xypipe.client.GatewayAuthError, xypipe.AuthError)
