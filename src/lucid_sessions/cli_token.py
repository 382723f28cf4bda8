"""``lucid-sessions token``: mint bearer tokens for operators, and revoke them.

A cluster normally trusts tokens from an external auth service. Without one, ``token
create`` signs with the data directory's own secret (or the configured HS256 secret, or
``--private-key``), so a single machine can hand out tokens per person and role. The token
is printed on stdout and nowhere else; its id (jti) and expiry go to stderr, since the id
is what ``token revoke`` takes.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import click

from lucid_sessions.cli import data_dir_option, main, run_async
from lucid_sessions.errors import InvalidConfigError
from lucid_sessions.security.roles import ROLES
from lucid_sessions.security.tokens import MAX_TTL_S, load_signing_key, mint_token, parse_duration
from lucid_sessions.storage.datadir import DataDir

__all__ = ["token"]

config_option = click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    default=None,
    help="TOML configuration file (its [auth] and [redis] sections).",
)


def _iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@main.group("token")
def token() -> None:
    """Mint and revoke API bearer tokens."""


@token.command("create")
@click.option("--role", required=True, type=click.Choice(ROLES), help="The token's role.")
@click.option(
    "--subject", required=True, help="Who the token is for; the audit log names them by it."
)
@click.option(
    "--ttl",
    default="1h",
    show_default=True,
    help="Lifetime: seconds, or a number with s, m, h, d or w (at most 366 days).",
)
@click.option(
    "--private-key",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Sign with this PEM private key (RS256 for RSA, EdDSA for Ed25519) instead of "
    "the HS256 secret.",
)
@click.option("--kid", default=None, help="Key id to put in the token header.")
@config_option
@data_dir_option
@run_async
async def token_create(
    role: str,
    subject: str,
    ttl: str,
    private_key: Path | None,
    kid: str | None,
    config_file: Path | None,
    data_dir: Path | None,
) -> None:
    """Print a new bearer token for SUBJECT with ROLE."""
    from lucid_sessions.cluster.config import load_config
    from lucid_sessions.security.settings import signing_key

    config = load_config(file=config_file, data_dir=data_dir)
    ttl_s = parse_duration(ttl)
    if private_key is not None:
        key = load_signing_key(private_key, kid)
    else:
        # The secret lives in the data directory: make sure it is one (as `serve` would).
        await DataDir.open(config.data_dir, create=True).close()
        key = signing_key(config.security, config.data_dir)
        if kid is not None:
            raise InvalidConfigError("--kid applies only with --private-key")
    text, claims = mint_token(
        key,
        subject=subject,
        role=role,
        ttl_s=ttl_s,
        settings=config.security.token_settings,
    )
    click.echo(text)
    click.echo(
        f"token id {claims.jti} for {subject} ({role}), valid until {_iso(claims.expires_at)}",
        err=True,
    )


@token.command("revoke")
@click.argument("jti")
@click.option(
    "--expires-at",
    type=int,
    default=None,
    help="The token's expiry (unix seconds), after which the revocation may be forgotten; "
    "default: the longest possible lifetime from now.",
)
@click.option("--reason", default="revoked by operator", show_default=True)
@click.option("--subject", default="", help="Whose token it is, for the record.")
@config_option
@data_dir_option
@run_async
async def token_revoke(
    jti: str,
    expires_at: int | None,
    reason: str,
    subject: str,
    config_file: Path | None,
    data_dir: Path | None,
) -> None:
    """Refuse the token with id JTI from now on (in Redis when configured, else in the
    metadata store)."""
    from lucid_sessions.cluster.config import load_config
    from lucid_sessions.security.revocation import open_revocations

    if not 0 < len(jti) <= 128:
        raise InvalidConfigError("a token id (jti) is 1-128 characters")
    config = load_config(file=config_file, data_dir=data_dir)
    until = expires_at if expires_at is not None else int(time.time()) + MAX_TTL_S
    async with open_revocations(config) as revocations:
        await revocations.revoke(jti, expires_at=until, subject=subject, reason=reason)
    click.echo(f"revoked token {jti} (kept until {_iso(until)})", err=True)
