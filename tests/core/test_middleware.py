from __future__ import annotations

import pytest

from conveyor import App, ConfigurationError
from conveyor.core.middleware import Chain, Middleware, ServerMiddleware


class A(Middleware): ...


class B(Middleware): ...


class C(Middleware): ...


def test_chain_ordered_insertion() -> None:
    chain: Chain[Middleware] = Chain()
    chain.add(A())
    chain.add(C())
    chain.insert_before(C, B())
    assert [type(m) for m in chain] == [A, B, C]
    chain.insert_after(C, A())  # re-adding moves it
    assert [type(m) for m in chain] == [B, C, A]
    chain.prepend(C())
    assert [type(m) for m in chain] == [C, B, A]
    chain.remove(B)
    assert [type(m) for m in chain] == [C, A]
    with pytest.raises(ConfigurationError, match="B is not in the chain"):
        chain.insert_after(B, A())


def test_middleware_declared_options_become_known(app: App) -> None:
    class Limits(ServerMiddleware):
        options = frozenset({"limit"})

    with pytest.raises(ConfigurationError, match="unknown job option"):
        app.job(limit=3)(lambda: None)
    app.server_middleware.add(Limits())

    @app.job(limit=3)
    def limited() -> None: ...

    assert limited.conveyor_options["limit"] == 3
