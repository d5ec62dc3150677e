"""Credentials: sealed at rest, rotated, managed from the CLI (stdin only), OAuth 2.0 tokens
cached and refreshed against a real local token endpoint, and no secret in any message."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import stat
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from pydantic import ValidationError as PydanticValidationError

from karma.cli.main import run
from karma.codec import new_key
from karma.credentials import (
    KEY_FILE,
    CredentialManager,
    CredentialNotFoundError,
    CredentialStore,
    OAuth2ClientCredentials,
    StaticSecret,
)
from karma.errors import PermanentError, TransientError
from karma.executor import ActionContext
from karma.reference_oauth import TokenIssuer
from karma.saga import CompensationContext
from karma.settings import CodecSettings, Settings, get_settings

VALUE = "s3cr3t-static-VALUE-7f1e"
CLIENT_SECRET = "p@ss:w/rd+%&=-CLIENT-SECRET"  # needs form-encoding in HTTP Basic
CLIENT_ID = "svc:reports a"


def _store(tmp_path: Path, keys: list[tuple[str, bytes]] | None = None) -> CredentialStore:
    return CredentialStore(
        tmp_path / "credentials.json", keys=keys or (), key_file=tmp_path / KEY_FILE
    )


def _key() -> bytes:
    return base64.b64decode(new_key())


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- at rest ---------------------------------------------------------------------------------


def test_values_are_sealed_at_rest_in_private_files(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.put("jobs-api", StaticSecret(value=SecretStr(VALUE)), "jobs")
    client = OAuth2ClientCredentials(
        client_id=CLIENT_ID,
        client_secret=SecretStr(CLIENT_SECRET),
        token_url="https://idp.example.com/token",
    )
    store.put("reports", client)
    raw = (tmp_path / "credentials.json").read_bytes()
    for secret in (VALUE, CLIENT_SECRET):
        assert secret.encode() not in raw
        assert base64.b64encode(secret.encode()) not in raw
    assert b"jobs-api" in raw and b"oauth2_client_credentials" in raw  # it is the store
    assert _mode(tmp_path / "credentials.json") == 0o600
    assert _mode(tmp_path / KEY_FILE) == 0o600
    assert len(base64.b64decode((tmp_path / KEY_FILE).read_text())) == 32
    again = _store(tmp_path)  # another process: the same key file
    opened = again.open("jobs-api", "jobs")
    assert isinstance(opened, StaticSecret) and opened.value.get_secret_value() == VALUE
    oauth = again.open("reports")
    assert isinstance(oauth, OAuth2ClientCredentials)
    assert oauth.client_secret.get_secret_value() == CLIENT_SECRET
    assert [(c.id, c.scope, c.kind.value) for c in again.listed()] == [
        ("jobs-api", "jobs", "static"),
        ("reports", "*", "oauth2_client_credentials"),
    ]
    for shown in (repr(opened), str(opened), repr(oauth), str(oauth), repr(again.listed())):
        assert VALUE not in shown and CLIENT_SECRET not in shown


def test_a_value_does_not_open_under_another_key_or_in_another_entry(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.put("a", StaticSecret(value=SecretStr(VALUE)), "jobs")
    store.put("b", StaticSecret(value=SecretStr("other-value")), "jobs")
    (tmp_path / "other").mkdir()
    stranger = CredentialStore(
        tmp_path / "credentials.json", key_file=tmp_path / "other" / KEY_FILE
    )
    with pytest.raises(PermanentError, match="does not open under key") as caught:
        stranger.open("a", "jobs")
    assert VALUE not in str(caught.value)
    # Move a's ciphertext into b, and a to another scope: neither opens.
    path = tmp_path / "credentials.json"
    document = json.loads(path.read_text())
    entries = {c["id"]: c for c in document["credentials"]}
    entries["b"]["sealed"] = entries["a"]["sealed"]
    entries["a"]["scope"] = "billing"
    path.write_text(json.dumps(document))
    for credential_id, scope in (("b", "jobs"), ("a", "billing")):
        with pytest.raises(PermanentError, match="altered or moved") as caught:
            store.open(credential_id, scope)
        assert VALUE not in str(caught.value)


def test_a_credential_is_found_by_its_exact_id_and_scope(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.put("jobs-api", StaticSecret(value=SecretStr(VALUE)), "*")
    with pytest.raises(CredentialNotFoundError) as caught:
        store.open("jobs-api", "evil.example.com")  # '*' is not handed to every host
    assert str(caught.value) == "no credential 'jobs-api' for scope 'evil.example.com'"
    assert isinstance(caught.value, PermanentError) and VALUE not in str(caught.value)
    with pytest.raises(ValueError, match="credential id"):
        store.put("bad id", StaticSecret(value=SecretStr(VALUE)))


def test_rotation_keeps_old_values_readable_and_reseals_them(tmp_path: Path) -> None:
    old, new = ("k1", _key()), ("k2", _key())
    _store(tmp_path, [old]).put("jobs-api", StaticSecret(value=SecretStr(VALUE)), "jobs")
    rotated = _store(tmp_path, [new, old])
    opened = rotated.open("jobs-api", "jobs")
    assert isinstance(opened, StaticSecret) and opened.value.get_secret_value() == VALUE
    rotated.put("fresh", StaticSecret(value=SecretStr("v2")))
    ids = {c["id"]: c["key_id"] for c in json.loads(rotated.path.read_text())["credentials"]}
    assert ids == {"jobs-api": "k1", "fresh": "k2"}
    assert rotated.reseal() == 1
    document = json.loads(rotated.path.read_text())
    assert {c["key_id"] for c in document["credentials"]} == {"k2"}
    assert not (tmp_path / KEY_FILE).exists()  # a keyring: no key made in the data dir
    only_new = _store(tmp_path, [new]).open("jobs-api", "jobs")
    assert isinstance(only_new, StaticSecret) and only_new.value.get_secret_value() == VALUE
    with pytest.raises(PermanentError, match="which this keyring does not hold"):
        _store(tmp_path, [("k3", _key())]).open("jobs-api", "jobs")


def test_the_payload_keyring_from_settings_seals_credentials(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, codec=CodecSettings(keys=SecretStr(f"main:{new_key()}")))
    store = CredentialStore.of(settings)
    store.put("jobs-api", StaticSecret(value=SecretStr(VALUE)))
    assert store.path == tmp_path / "credentials.json"
    [entry] = json.loads(store.path.read_text())["credentials"]
    assert entry["key_id"] == "main" and not (tmp_path / KEY_FILE).exists()


def test_an_oauth_token_url_must_not_send_the_secret_in_clear() -> None:
    with pytest.raises(PydanticValidationError, match="https"):
        OAuth2ClientCredentials(
            client_id="c", client_secret=SecretStr("s"), token_url="http://idp.example.com/t"
        )


# -- CLI -------------------------------------------------------------------------------------


@pytest.fixture
def cli_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("KARMA_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def _stdin(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(text))


def test_cli_sets_lists_and_deletes_with_values_from_stdin_only(
    cli_data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _stdin(monkeypatch, VALUE + "\n")
    assert run(["credentials", "set", "jobs-api", "--scope", "jobs"]) == 0
    _stdin(monkeypatch, CLIENT_SECRET)
    argv = ["credentials", "set", "reports", "--kind", "oauth2", "--client-id", CLIENT_ID]
    assert run([*argv, "--token-url", "https://idp.example.com/token"]) == 0
    store = CredentialStore.of(get_settings())
    opened = store.open("jobs-api", "jobs")
    assert isinstance(opened, StaticSecret) and opened.value.get_secret_value() == VALUE
    oauth = store.open("reports")
    assert isinstance(oauth, OAuth2ClientCredentials)
    assert (oauth.client_id, oauth.client_secret.get_secret_value()) == (CLIENT_ID, CLIENT_SECRET)
    capsys.readouterr()
    assert run(["credentials", "list", "--json"]) == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(c["id"], c["scope"], c["kind"]) for c in listed] == [
        ("jobs-api", "jobs", "static"),
        ("reports", "*", "oauth2_client_credentials"),
    ]
    assert set(listed[0]) == {"id", "scope", "kind", "created_at", "updated_at"}
    assert run(["credentials", "list"]) == 0
    assert "jobs-api" in capsys.readouterr().out
    assert run(["credentials", "delete", "jobs-api", "--scope", "jobs"]) == 0
    assert run(["credentials", "delete", "jobs-api", "--scope", "jobs"]) == 2
    assert "no credential 'jobs-api' for scope 'jobs'" in capsys.readouterr().err
    assert [c.id for c in store.listed()] == ["reports"]
    everything = capsys.readouterr()
    assert VALUE not in everything.out + everything.err
    assert CLIENT_SECRET not in (cli_data_dir / "credentials.json").read_text()


@pytest.mark.parametrize(
    ("argv", "stdin", "message"),
    [
        (["jobs-api"], "", "no value on stdin"),
        (["jobs-api", "--kind", "oauth2"], "x", "needs --client-id and --token-url"),
        (["bad id"], "x", "credential id 'bad id'"),
        (
            ["r", "--kind", "oauth2", "--client-id", "c", "--token-url", "http://idp.example/t"],
            CLIENT_SECRET,
            "token_url: Value error, must be an https URL",
        ),
    ],
)
def test_cli_refuses_bad_input_with_exit_2_and_no_secret(
    argv: list[str],
    stdin: str,
    message: str,
    cli_data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _stdin(monkeypatch, stdin)
    assert run(["credentials", "set", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and CLIENT_SECRET not in err
    assert not (cli_data_dir / "credentials.json").exists()


def test_cli_writes_where_the_settings_say(
    tmp_path: Path, cli_data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "vault" / "creds.json"
    monkeypatch.setenv("KARMA_CREDENTIALS__FILE", str(elsewhere))
    get_settings.cache_clear()
    _stdin(monkeypatch, VALUE)
    assert run(["credentials", "set", "jobs-api"]) == 0
    assert elsewhere.exists() and _mode(elsewhere) == 0o600
    assert not (cli_data_dir / "credentials.json").exists()


# -- the manager and OAuth 2.0 ---------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class TokenEndpoint:
    """A real HTTP server around the reference service's token issuer; `/fail` answers 500."""

    def __init__(self, issuer: TokenIssuer) -> None:
        self.issuer = issuer
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path == "/fail":
                    self._reply(500, {"error": "server_error"})
                else:
                    auth = self.headers.get("Authorization")
                    self._reply(*endpoint.issuer.token(auth, body))

            def _reply(self, status: int, body: dict[str, Any]) -> None:
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def endpoint(clock: FakeClock) -> Iterator[TokenEndpoint]:
    issuer = TokenIssuer({CLIENT_ID: CLIENT_SECRET}, lifetime_s=100, clock=clock)
    served = TokenEndpoint(issuer)
    thread = threading.Thread(target=served.server.serve_forever, daemon=True)
    thread.start()
    yield served
    served.server.shutdown()
    served.server.server_close()
    thread.join()


def _oauth(url: str, secret: str = CLIENT_SECRET) -> OAuth2ClientCredentials:
    return OAuth2ClientCredentials(
        client_id=CLIENT_ID, client_secret=SecretStr(secret), token_url=url
    )


async def test_tokens_are_cached_shared_and_refreshed_before_they_expire(
    tmp_path: Path, endpoint: TokenEndpoint, clock: FakeClock
) -> None:
    store = _store(tmp_path)
    store.put("reports", _oauth(endpoint.url + "/oauth/token"), "reports.internal")
    manager = CredentialManager(store, clock=clock)
    ctx = ActionContext(
        action_id="act_1", action_type="t", params={}, attempt=1, credentials=manager
    )
    tokens = await asyncio.gather(
        *(ctx.credential("reports", "reports.internal") for _ in range(5))
    )
    issued = endpoint.issuer.issued[CLIENT_ID]
    assert len(issued) == 1 and set(tokens) == {issued[0]}  # one request for five attempts
    assert endpoint.issuer.protected(f"Bearer {tokens[0]}") == (200, {"ok": True})
    clock.now += 89  # lifetime 100: the margin is 10 s (a tenth, under 30 s)
    assert await manager.get("reports", "reports.internal") == issued[0]
    clock.now += 2
    fresh = await manager.get("reports", "reports.internal")
    assert fresh != tokens[0] and endpoint.issuer.issued[CLIENT_ID] == [tokens[0], fresh]
    assert endpoint.issuer.protected(f"Bearer {fresh}")[0] == 200
    clock.now += 10  # the first token has expired on the server: it is refused there
    assert endpoint.issuer.protected(f"Bearer {tokens[0]}")[0] == 401


async def test_static_values_and_missing_credentials(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.put("jobs-api", StaticSecret(value=SecretStr(VALUE)), "jobs")
    manager = CredentialManager(store)
    assert await manager.get("jobs-api", "jobs") == VALUE
    with pytest.raises(CredentialNotFoundError, match="'jobs-api' for scope 'billing'"):
        await manager.get("jobs-api", "billing")
    bare = ActionContext(action_id="a", action_type="t", params={}, attempt=1)
    with pytest.raises(PermanentError, match=r"'jobs-api' \(scope 'jobs'\): this worker has no"):
        await bare.credential("jobs-api", "jobs")
    # A compensation authenticates as the step it undoes did.
    undo = CompensationContext(
        action_id="a", action_type="t", params={}, step="s", compensation={}, attempt=1,
        credentials=manager,
    )  # fmt: skip
    assert await undo.credential("jobs-api", "jobs") == VALUE
    bare_undo = CompensationContext(
        action_id="a", action_type="t", params={}, step="s", compensation={}, attempt=1
    )
    with pytest.raises(PermanentError, match="this worker has no credential manager"):
        await bare_undo.credential("jobs-api", "jobs")


async def test_token_endpoint_failures_are_classified_without_secrets(
    tmp_path: Path, endpoint: TokenEndpoint, clock: FakeClock
) -> None:
    store = _store(tmp_path)
    # A port nothing listens on: the endpoint's server, closed.
    closed = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    unreachable = f"http://127.0.0.1:{closed.server_address[1]}/oauth/token"
    closed.server_close()
    cases: list[tuple[str, OAuth2ClientCredentials, type[Exception], str]] = [
        (
            "wrong",
            _oauth(endpoint.url + "/token", "not-the-secret"),
            PermanentError,
            "answered 401 (invalid_client)",
        ),
        ("down", _oauth(endpoint.url + "/fail"), TransientError, "answered 500"),
        ("gone", _oauth(unreachable), TransientError, "unreachable (ConnectError)"),
    ]
    manager = CredentialManager(store, clock=clock, token_timeout_s=5)
    for credential_id, client, error, message in cases:
        store.put(credential_id, client)
        with pytest.raises(error) as caught:
            await manager.get(credential_id)
        text = str(caught.value)
        assert message in text and f"credential {credential_id!r} (scope '*')" in text
        assert caught.value.__cause__ is None  # no chained exception carrying a request
        for secret in (CLIENT_SECRET, "not-the-secret", *endpoint.issuer.issued.get(CLIENT_ID, [])):
            assert secret not in text and secret not in repr(caught.value)
