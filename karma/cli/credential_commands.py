"""`karma credentials set|list|delete|rotate`: the credentials executors ask for.

A value (or an OAuth client's secret) is read from stdin only, never from the command
line, where `ps` and shell history would keep it: typed at a prompt that does not echo it,
or piped (`vault read -field=token … | karma credentials set jobs-api --scope jobs`).
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys

from pydantic import ValidationError as PydanticValidationError

from karma.credentials import (
    ANY_SCOPE,
    CredentialKind,
    CredentialNotFoundError,
    CredentialStore,
    OAuth2ClientCredentials,
    StaticSecret,
    check_names,
    credentials_path,
)
from karma.errors import field_errors
from karma.settings import get_settings

EXIT_BAD_INPUT = 2
EXIT_NOT_FOUND = 2
KINDS = {"static": CredentialKind.STATIC, "oauth2": CredentialKind.OAUTH2_CLIENT_CREDENTIALS}


def _read_secret(prompt: str) -> str:
    """From a prompt without echo on a terminal, else all of stdin (one trailing newline
    dropped, as `echo` and here-strings add it)."""
    if sys.stdin.isatty():
        return getpass.getpass(prompt)
    text = sys.stdin.read()
    return text[:-2] if text.endswith("\r\n") else text.removesuffix("\n")


def _refuse(message: str) -> int:
    print(f"karma: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


async def set_credential(args: argparse.Namespace) -> int:
    kind = KINDS[args.kind]
    try:
        check_names(args.credential_id, args.scope)
    except ValueError as exc:
        return _refuse(str(exc))
    if kind is CredentialKind.OAUTH2_CLIENT_CREDENTIALS and not (args.client_id and args.token_url):
        return _refuse("--kind oauth2 needs --client-id and --token-url")
    secret = _read_secret("client secret: " if args.client_id else "value: ")
    if not secret:
        return _refuse("no value on stdin (pipe it in, or type it at the prompt)")
    try:
        material = (
            StaticSecret(value=secret)
            if kind is CredentialKind.STATIC
            else OAuth2ClientCredentials(
                client_id=args.client_id,
                client_secret=secret,
                token_url=args.token_url,
                scope=args.oauth_scope,
                audience=args.audience,
            )
        )
    except PydanticValidationError as exc:  # field names and reasons only, never inputs
        return _refuse("; ".join(str(e) for e in field_errors(exc)))
    info = CredentialStore.of(get_settings()).put(args.credential_id, material, args.scope)
    print(f"stored credential {info.id} (scope {info.scope}, {info.kind.value})")
    return 0


async def list_credentials(args: argparse.Namespace) -> int:
    listed = CredentialStore.of(get_settings()).listed()
    if args.json:
        for info in listed:
            print(json.dumps(info.model_dump(mode="json")))
        return 0
    print(f"{'ID':<28} {'SCOPE':<28} {'KIND':<26} {'CREATED':<20} UPDATED")
    for info in listed:
        print(
            f"{info.id[:28]:<28} {info.scope[:28]:<28} {info.kind.value:<26} "
            f"{info.created_at[:19]:<20} {info.updated_at[:19]}"
        )
    return 0


async def delete_credential(args: argparse.Namespace) -> int:
    try:
        info = CredentialStore.of(get_settings()).delete(args.credential_id, args.scope)
    except CredentialNotFoundError as exc:
        print(f"karma: {exc}", file=sys.stderr)
        return EXIT_NOT_FOUND
    print(f"deleted credential {info.id} (scope {info.scope})")
    return 0


async def rotate(args: argparse.Namespace) -> int:
    settings = get_settings()
    count = CredentialStore.of(settings).reseal()
    print(f"re-sealed {count} credential(s) in {credentials_path(settings)} under the primary key")
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    creds = sub.add_parser(
        "credentials",
        help="store, list and delete the credentials executors ask for",
        description="Executors ask for a credential by id and scope (`ctx.credential(id, "
        "scope)`; `http_request`'s `credential` param uses the URL's host as the scope). "
        "Values are encrypted (AES-256-GCM) in KARMA_CREDENTIALS__FILE (default "
        "<data_dir>/credentials.json) under the first key of KARMA_CODEC__KEYS, or "
        "<data_dir>/credentials.key without one. Values are read from stdin only.",
    )
    creds_sub = creds.add_subparsers(dest="credential_command", required=True, metavar="SUBCOMMAND")
    put = creds_sub.add_parser(
        "set",
        help="store a credential (its value, or the client secret, from stdin)",
        description="The value is read from stdin (a prompt without echo on a terminal); "
        "it is never taken from the command line.",
    )
    put.add_argument("credential_id", metavar="ID")
    put.add_argument("--scope", default=ANY_SCOPE, help="a service or host name; default '*'")
    put.add_argument("--kind", choices=sorted(KINDS), default="static")
    put.add_argument("--client-id", default="", help="oauth2: the client id")
    put.add_argument("--token-url", default="", help="oauth2: the token endpoint (https)")
    put.add_argument("--oauth-scope", default="", help="oauth2: the scope to ask for")
    put.add_argument("--audience", default="", help="oauth2: the audience to ask for")
    put.set_defaults(run=set_credential)
    listing = creds_sub.add_parser("list", help="ids, scopes, kinds and times (never values)")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.set_defaults(run=list_credentials)
    gone = creds_sub.add_parser("delete", help="delete a credential (exit 2 when not found)")
    gone.add_argument("credential_id", metavar="ID")
    gone.add_argument("--scope", default=ANY_SCOPE)
    gone.set_defaults(run=delete_credential)
    again = creds_sub.add_parser(
        "rotate",
        help="re-seal every credential under the primary key (after adding a key first in "
        "KARMA_CODEC__KEYS)",
    )
    again.set_defaults(run=rotate)
