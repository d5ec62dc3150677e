"""`karma api-key create|list|revoke`: the HTTP API's keys (stored only as hashes)."""

from __future__ import annotations

import argparse
import json

from karma.api.keys import KeyNotFoundError, KeyStore, Scope
from karma.settings import get_settings

EXIT_NOT_FOUND = 2


async def create(args: argparse.Namespace) -> int:
    store = KeyStore.of(get_settings())
    token, key = store.create([Scope(s) for s in args.scope], name=args.name, tenant=args.tenant)
    if args.json:
        print(json.dumps({"key": token, **key.model_dump(mode="json", exclude={"sha256"})}))
    else:
        print(token)
        print(
            f"id {key.id}, scopes {','.join(key.scopes)}"
            + (f", tenant {key.tenant}" if key.tenant else ", every tenant")
            + " — shown once: only its hash is kept",
            flush=True,
        )
    return 0


async def list_keys(args: argparse.Namespace) -> int:
    keys = KeyStore.of(get_settings()).listed()
    if args.json:
        for key in keys:
            print(json.dumps(key.model_dump(mode="json", exclude={"sha256"})))
        return 0
    print(f"{'ID':<14} {'NAME':<20} {'SCOPES':<28} {'TENANT':<16} {'CREATED':<20} REVOKED")
    for key in keys:
        print(
            f"{key.id:<14} {key.name[:20]:<20} {','.join(key.scopes):<28} "
            f"{(key.tenant or '*')[:16]:<16} {key.created_at[:19]:<20} "
            f"{(key.revoked_at or '')[:19]}"
        )
    return 0


async def revoke(args: argparse.Namespace) -> int:
    try:
        key = KeyStore.of(get_settings()).revoke(args.key_id)
    except KeyNotFoundError as exc:
        print(f"karma: {exc.args[0]}")
        return EXIT_NOT_FOUND
    print(f"revoked {key.id} at {key.revoked_at}")
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = sub.add_parser(
        "api-key",
        help="create, list and revoke the HTTP API's keys",
        description="A key is shown once, when it is created; only its hash is stored (in "
        "KARMA_API__KEYS_FILE, default <data_dir>/api-keys.json). Scopes: read (actions, "
        "streams, registry, ledger, DLQ), request (request, cancel, callbacks), decide "
        "(approve, reject), admin (everything, DLQ replay). A key bound to a tenant requests "
        "and sees only that tenant's actions. A revoked key stops working at once.",
    )
    keys_sub = keys.add_subparsers(dest="key_command", required=True, metavar="SUBCOMMAND")
    new = keys_sub.add_parser("create", help="create a key and print it (once)")
    new.add_argument(
        "--scope",
        action="append",
        required=True,
        choices=[s.value for s in Scope],
        help="repeat for several",
    )
    new.add_argument("--tenant", default="", help="bind the key to this tenant")
    new.add_argument("--name", default="", help="who or what holds it")
    new.add_argument("--json", action="store_true", help="print one JSON object")
    new.set_defaults(run=create)
    listing = keys_sub.add_parser("list", help="the keys (ids, scopes, tenants; never the keys)")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.set_defaults(run=list_keys)
    gone = keys_sub.add_parser("revoke", help="revoke a key by its id")
    gone.add_argument("key_id")
    gone.set_defaults(run=revoke)
