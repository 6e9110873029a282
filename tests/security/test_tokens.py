"""Bootstrap and API tokens on real etcd: one use, expiry, forgery, races, nothing secret at rest."""
from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from meshd.security.errors import (
    InvalidIdentity,
    InvalidTtl,
    TokenExpired,
    TokenForged,
    TokenScopeMismatch,
    TokenUsed,
    Unauthenticated,
)
from meshd.security.tokens import Tokens

from .helpers import real_now

pytestmark = [pytest.mark.identity, pytest.mark.etcd]


@pytest.fixture
def tokens(store):
    return Tokens(store)


def test_a_token_works_once(tokens):
    issued = tokens.create_token(timedelta(hours=1), "join", created_by="admin")
    got = tokens.redeem(issued.token, redeemed_by="host-a")
    assert got.token_id == issued.token_id and got.scope == "join" and got.used_at is not None
    with pytest.raises(TokenUsed) as err:
        tokens.redeem(issued.token)
    assert err.value.token_id == issued.token_id and err.value.used_at == got.used_at


def test_expired_token_is_refused(tokens):
    now = real_now()
    issued = tokens.create_token(timedelta(minutes=5), now=now)
    with pytest.raises(TokenExpired) as err:
        tokens.redeem(issued.token, now=now + timedelta(minutes=5))
    assert err.value.expired_at == now + timedelta(minutes=5)
    # Refusing it did not consume it: it still fails as expired, not as used.
    with pytest.raises(TokenExpired):
        tokens.redeem(issued.token, now=now + timedelta(minutes=6))
    assert tokens.redeem(issued.token, now=now + timedelta(minutes=4)).token_id == issued.token_id


@pytest.mark.parametrize("how", ["secret", "id", "kind", "shape", "empty", "api-as-bootstrap"])
def test_forged_tokens_are_refused(tokens, how):
    issued = tokens.create_token(timedelta(hours=1))
    kind, token_id, secret = issued.token.split(".")
    forged = {
        "secret": f"{kind}.{token_id}.{secret[:-1]}{'A' if secret[-1] != 'A' else 'B'}",
        "id": f"{kind}.{'0' * 16}.{secret}",
        "kind": f"mat1.{token_id}.{secret}",
        "shape": issued.token + ".x",
        "empty": "",
        "api-as-bootstrap": tokens.create_api_token("ci").token.replace("mat1", "mbt1"),
    }[how]
    with pytest.raises(TokenForged):
        tokens.redeem(forged)
    # The real token is untouched by the attempts.
    assert tokens.redeem(issued.token).token_id == issued.token_id


def test_forgery_reveals_nothing_about_used_or_expired_tokens(tokens):
    """Without the secret, a used or expired token answers exactly like an unknown one."""
    now = real_now()
    used = tokens.create_token(timedelta(hours=1), now=now)
    tokens.redeem(used.token, now=now)
    expired = tokens.create_token(timedelta(seconds=1), now=now - timedelta(hours=1))
    for t in (used, expired):
        kind, token_id, secret = t.token.split(".")
        with pytest.raises(TokenForged):
            tokens.redeem(f"{kind}.{token_id}.{'x' * 43}", now=now)


def test_concurrent_redeem_has_exactly_one_winner(store):
    issued = Tokens(store).create_token(timedelta(hours=1))
    n = 8
    barrier = threading.Barrier(n)
    results: list[object] = [None] * n

    def redeem(i):
        t = Tokens(store)  # each "meshd" with its own handle on the same etcd
        barrier.wait()
        try:
            results[i] = t.redeem(issued.token, redeemed_by=f"host-{i}")
        except TokenUsed as err:
            results[i] = err

    threads = [threading.Thread(target=redeem, args=(i,)) for i in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=30)
    winners = [r for r in results if not isinstance(r, TokenUsed)]
    assert len(winners) == 1, results
    assert all(isinstance(r, TokenUsed) for r in results if r is not winners[0])
    stored = Tokens(store).list_tokens()[0]
    assert stored.used_at == winners[0].used_at


def test_scope_is_checked_before_the_token_is_spent(tokens):
    issued = tokens.create_token(timedelta(hours=1), "join")
    with pytest.raises(TokenScopeMismatch) as err:
        tokens.redeem(issued.token, scope="admin")
    assert (err.value.scope, err.value.wanted) == ("join", "admin")
    assert tokens.redeem(issued.token, scope="join").scope == "join"


def test_token_errors_are_authentication_failures(tokens):
    for cls in (TokenForged, TokenExpired, TokenUsed, TokenScopeMismatch):
        assert issubclass(cls, Unauthenticated)


def test_ttl_bounds(tokens):
    with pytest.raises(InvalidTtl):
        tokens.create_token(timedelta(0))
    with pytest.raises(InvalidTtl):
        tokens.create_token(timedelta(days=30))


def test_secret_is_not_stored(tokens, store):
    issued = tokens.create_token(timedelta(hours=1))
    api = tokens.create_api_token("deploy-bot")
    for t, path in ((issued, f"tokens/bootstrap/{issued.token_id}"), (api, f"tokens/api/{api.token_id}")):
        raw = store.get(path).value
        secret = t.token.split(".")[2]
        assert secret.encode() not in raw and t.token.encode() not in raw


def test_bootstrap_record_is_garbage_collected_by_lease(tokens, store):
    issued = tokens.create_token(timedelta(hours=1))
    assert store.get(f"tokens/bootstrap/{issued.token_id}").lease != 0


def test_revoked_bootstrap_token_is_refused(tokens):
    issued = tokens.create_token(timedelta(hours=1))
    assert tokens.revoke_token(issued.token_id)
    with pytest.raises(TokenForged):
        tokens.redeem(issued.token)


# -- API tokens -------------------------------------------------------------------------
def test_api_token_maps_to_its_principal_until_revoked(tokens):
    a = tokens.create_api_token("deploy-bot", created_by="alice")
    b = tokens.create_api_token("ci")
    assert tokens.verify_api_token(a.token) == "deploy-bot"
    assert tokens.verify_api_token(a.token) == "deploy-bot"  # reusable, unlike bootstrap tokens
    assert tokens.verify_api_token(b.token) == "ci"
    assert {(t.token_id, t.scope) for t in tokens.list_api_tokens()} == {(a.token_id, "deploy-bot"), (b.token_id, "ci")}
    assert tokens.revoke_api_token(a.token_id)
    with pytest.raises(TokenForged):
        tokens.verify_api_token(a.token)
    assert tokens.verify_api_token(b.token) == "ci"


def test_api_token_expiry_and_forgery(tokens):
    now = real_now()
    t = tokens.create_api_token("nightly", ttl=timedelta(hours=1), now=now)
    assert tokens.verify_api_token(t.token, now=now + timedelta(minutes=59)) == "nightly"
    with pytest.raises(TokenExpired):
        tokens.verify_api_token(t.token, now=now + timedelta(hours=1))
    with pytest.raises(TokenForged):
        tokens.verify_api_token(t.token[:-2] + "zz")
    with pytest.raises(TokenForged):  # a bootstrap token is not an API token
        tokens.verify_api_token(tokens.create_token(timedelta(hours=1)).token)


def test_principal_names_cannot_pose_as_spiffe_ids(tokens):
    with pytest.raises(InvalidIdentity):
        tokens.create_api_token("spiffe://meshd.local/host/h1")
