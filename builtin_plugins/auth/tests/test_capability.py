"""Capability tokens: minting, verification, key rotation, tampering and garbage."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import types
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from noa.builtin_plugins.auth.capability import (
    TOKEN_PREFIX,
    CapabilityScheme,
    check_keys,
    mint,
    verify,
)
from noa.builtin_plugins.auth.config import AuthConfig, CapabilityKey
from noa.plugin_sdk import Secret
from noa.plugin_sdk.errors import ConfigError, Conflict, Unauthorized, Unprocessable

OLD = CapabilityKey(id="k-2025", secret=Secret("old-secret-" + "o" * 32))
NEW = CapabilityKey(id="k-2026", secret=Secret("new-secret-" + "n" * 32))
MAX_TTL = 86_400
NOW = 1_800_000_000.0


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def parts(token: str) -> tuple[dict[str, Any], str]:
    _, payload, signature = token.split(".")
    return json.loads(unb64(payload)), signature


def signed_with(key: CapabilityKey, payload: dict[str, Any]) -> str:
    """A token over ``payload`` signed correctly with ``key``: the attacker knows a key."""
    text = TOKEN_PREFIX + b64(json.dumps(payload).encode())
    digest = hmac.new(key.secret.reveal().encode(), text.encode(), hashlib.sha256).digest()
    return f"{text}.{b64(digest)}"


def check(token: str, keys: tuple[CapabilityKey, ...] = (NEW, OLD), now: float = NOW) -> Any:
    return verify(keys, token, max_ttl_s=MAX_TTL, now=now)


def minted(**kwargs: Any) -> str:
    args: dict[str, Any] = {
        "resource": "model:demo",
        "actions": ["inference:invoke"],
        "ttl_s": 600,
        "max_ttl_s": MAX_TTL,
        "now": NOW,
    }
    args.update(kwargs)
    keys = args.pop("keys", (NEW, OLD))
    return mint(keys, args.pop("resource"), args.pop("actions"), args.pop("ttl_s"), **args)


def test_mint_and_verify_roundtrip() -> None:
    token = minted(subject="partner-1", actions=["inference:invoke", "retrieval:search"])
    assert token.startswith(TOKEN_PREFIX)
    claims = check(token)
    assert claims.kid == NEW.id  # the first key signs
    assert claims.res == "model:demo"
    assert claims.act == ["inference:invoke", "retrieval:search"]
    assert (claims.iat, claims.exp) == (int(NOW), int(NOW) + 600)
    assert claims.sub == "partner-1"
    assert len(claims.jti) >= 16
    assert check(minted()).jti != claims.jti
    # Without a subject the payload carries no "sub" at all.
    assert "sub" not in parts(minted())[0]


def test_a_tampered_payload_with_the_old_signature_is_refused() -> None:
    token = minted()
    payload, signature = parts(token)
    for change in ({"res": "model:other"}, {"act": ["*"]}, {"exp": payload["exp"] + 10**6}):
        forged = TOKEN_PREFIX + b64(json.dumps({**payload, **change}).encode()) + "." + signature
        with pytest.raises(Unauthorized, match="signature invalid"):
            check(forged)


def test_a_signature_by_another_key_is_refused() -> None:
    payload, _ = parts(minted())  # kid names NEW ...
    forged = signed_with(OLD, payload)  # ... but OLD signed it
    with pytest.raises(Unauthorized, match="signature invalid"):
        check(forged)
    stranger = CapabilityKey(id=NEW.id, secret=Secret("s" * 40))
    with pytest.raises(Unauthorized, match="signature invalid"):
        check(signed_with(stranger, payload))


def test_an_unknown_kid_is_refused() -> None:
    rogue = CapabilityKey(id="rogue", secret=Secret("r" * 40))
    token = minted(keys=(rogue,))
    with pytest.raises(Unauthorized, match="unknown key"):
        check(token)


def test_expiry_with_a_small_leeway() -> None:
    token = minted(ttl_s=60)
    check(token, now=NOW + 60)  # within the leeway
    with pytest.raises(Unauthorized, match="expired"):
        check(token, now=NOW + 66)
    with pytest.raises(Unauthorized, match="issued in the future"):
        check(token, now=NOW - 60)


def test_a_lifetime_over_the_maximum_is_refused_at_mint_and_at_verify() -> None:
    with pytest.raises(Unprocessable) as caught:
        minted(ttl_s=MAX_TTL + 1)
    assert caught.value.param == "ttl_s"
    # A token minted under a larger maximum is refused once the maximum is lowered.
    token = minted(ttl_s=7200)
    with pytest.raises(Unauthorized, match="lifetime"):
        verify((NEW,), token, max_ttl_s=3600, now=NOW)
    payload, _ = parts(minted())
    for exp in (payload["iat"], payload["iat"] - 1):
        with pytest.raises(Unauthorized, match="lifetime"):
            check(signed_with(NEW, {**payload, "exp": exp}))


def test_rotation_old_tokens_verify_while_the_old_key_is_listed() -> None:
    before = minted(keys=(OLD,))
    assert check(before, keys=(OLD,)).kid == OLD.id
    # Rotation: the new key goes first, the old one stays listed.
    after = minted(keys=(NEW, OLD))
    assert parts(after)[0]["kid"] == NEW.id
    assert check(before, keys=(NEW, OLD)).kid == OLD.id
    assert check(after, keys=(NEW, OLD)).kid == NEW.id
    # Once the old key is removed, its tokens stop working; new ones still do.
    with pytest.raises(Unauthorized, match="unknown key"):
        check(before, keys=(NEW,))
    assert check(after, keys=(NEW,)).kid == NEW.id


MALFORMED = [
    "",
    "noacap1.",
    "noacap1..",
    "noacap1.e30.",
    "noacap1.e30",
    "noacap1.a.b.c",
    "noacap1.!!!.abc",
    "noacap1.e30.AAAA",  # {} : every field missing
    "noacap1." + "A" * 5000,
    "noacap1.é.é",
    "noacap2." + "x.y",
]


@pytest.mark.parametrize("token", MALFORMED)
def test_malformed_tokens_are_refused(token: str) -> None:
    with pytest.raises(Unauthorized):
        check(token)


def test_payloads_with_missing_wrong_or_extra_fields_are_malformed() -> None:
    payload, _ = parts(minted())
    bad = [
        {k: v for k, v in payload.items() if k != "exp"},
        {k: v for k, v in payload.items() if k != "kid"},
        {**payload, "act": "inference:invoke"},
        {**payload, "act": []},
        {**payload, "exp": "tomorrow"},
        {**payload, "res": ""},
        {**payload, "admin": True},
        [payload],
    ]
    for body in bad:
        with pytest.raises(Unauthorized, match="malformed"):
            check(signed_with(NEW, body))  # type: ignore[arg-type]
    # Not JSON at all, correctly signed.
    text = TOKEN_PREFIX + b64(b"\xff\xfenot json")
    digest = hmac.new(NEW.secret.reveal().encode(), text.encode(), hashlib.sha256).digest()
    with pytest.raises(Unauthorized, match="malformed"):
        check(f"{text}.{b64(digest)}")


def test_a_non_canonical_signature_spelling_is_refused() -> None:
    token = minted()
    head, signature = token.rsplit(".", 1)
    # 32 bytes = 43 characters; the last one carries 2 unused bits. Setting them changes
    # the text but not the bytes: only the canonical spelling is accepted.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(signature[-1])
    variant = signature[:-1] + alphabet[last ^ 1]
    assert unb64(variant) == unb64(signature)
    with pytest.raises(Unauthorized, match="malformed"):
        check(f"{head}.{variant}")
    with pytest.raises(Unauthorized, match="malformed"):
        check(f"{head}.{signature}==")


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=300) | st.binary(max_size=300).map(lambda b: b.decode("latin-1")))
def test_any_string_with_the_prefix_is_a_401_or_valid(tail: str) -> None:
    for token in (tail, TOKEN_PREFIX + tail):
        try:
            check(token)
        except Unauthorized:
            continue
        raise AssertionError(f"garbage verified: {token!r}")


_B64CHARS = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.", max_size=200
)


@settings(max_examples=500, deadline=None)
@given(_B64CHARS)
def test_base64_shaped_garbage_is_a_401(tail: str) -> None:
    with pytest.raises(Unauthorized):
        check(TOKEN_PREFIX + tail)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["kid", "jti", "res", "act", "iat", "exp", "sub", "x"]),
        st.none() | st.integers() | st.text(max_size=5) | st.lists(st.text(max_size=5), max_size=2),
    )
)
def test_signed_payloads_of_any_shape_are_a_401_or_valid(payload: dict[str, Any]) -> None:
    try:
        claims = check(signed_with(NEW, payload))
    except Unauthorized:
        return
    assert claims.kid == NEW.id and claims.exp > claims.iat


def test_mint_validates_its_arguments() -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"resource": ""}, "resource"),
        ({"resource": "model:a b"}, "resource"),
        ({"resource": "model:\x00"}, "resource"),
        ({"resource": "m" * 257}, "resource"),
        ({"actions": []}, "actions"),
        ({"actions": ["not a scope"]}, "actions"),
        ({"actions": ["a:b:c"]}, "actions"),
        ({"ttl_s": 0}, "ttl_s"),
        ({"ttl_s": -5}, "ttl_s"),
        ({"ttl_s": True}, "ttl_s"),
        ({"subject": ""}, "subject"),
        ({"subject": "two words"}, "subject"),
    ]
    for kwargs, param in cases:
        with pytest.raises(Unprocessable) as caught:
            minted(**kwargs)
        assert caught.value.param == param, kwargs
    with pytest.raises(Conflict, match=r"auth\.capability_keys"):
        minted(keys=())


def test_check_keys_refuses_weak_or_duplicate_keys() -> None:
    check_keys((NEW, OLD))
    with pytest.raises(ValueError, match="at least 32"):
        check_keys((CapabilityKey(id="k", secret=Secret("short")),))
    with pytest.raises(ValueError, match="listed twice"):
        check_keys((NEW, NEW))
    with pytest.raises(ValueError, match="id"):
        check_keys((CapabilityKey(id="", secret=Secret("s" * 40)),))


async def test_the_scheme_gives_a_principal_limited_to_the_one_resource() -> None:
    config = AuthConfig(capability_keys=(NEW, OLD))
    scheme = CapabilityScheme(config)
    host = types.SimpleNamespace(effective_config=lambda: {"sources": {}})
    await scheme.start(host)
    token = mint(
        config.capability_keys,
        "model:demo",
        ["inference:invoke"],
        60,
        max_ttl_s=config.capability_max_ttl_s,
    )
    assert scheme.recognises(token)
    assert not scheme.recognises("noa_sk_0123456789ab_" + "a" * 43)
    principal = await scheme.authenticate(token)
    assert principal.subject == f"cap:{parts(token)[0]['jti']}"
    assert principal.scheme == "capability"
    assert principal.scopes == frozenset({"inference:invoke"})
    assert principal.resource == "model:demo"
    assert principal.allows("inference:invoke", "model:demo")
    assert not principal.allows("inference:invoke", "model:other")
    assert not principal.allows("inference:invoke", None)
    assert not principal.allows("inference:admin", "model:demo")
    assert not principal.allows("auth:admin", "model:demo")
    await scheme.close()
    await scheme.close()
    # An expired token is a 401 through the scheme too.
    stale = mint(
        config.capability_keys,
        "model:demo",
        ["inference:invoke"],
        60,
        max_ttl_s=MAX_TTL,
        now=time.time() - 3600,
    )
    with pytest.raises(Unauthorized, match="expired"):
        await scheme.authenticate(stale)


async def test_the_scheme_refuses_to_start_with_weak_keys() -> None:
    weak = AuthConfig(capability_keys=(CapabilityKey(id="k", secret=Secret("short")),))
    host = types.SimpleNamespace(
        effective_config=lambda: {"sources": {"auth.capability_keys": "environment"}}
    )
    with pytest.raises(ConfigError) as caught:
        await CapabilityScheme(weak).start(host)
    assert caught.value.key == "auth.capability_keys"
    assert "short" not in str(caught.value)
    assert "environment" in str(caught.value)
