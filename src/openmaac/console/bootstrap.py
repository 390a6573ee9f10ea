"""First run of ``openmaac serve``: a first console administrator for the default organisation,
so the console can be signed in to at once (``make run``)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from openmaac.config import Settings

DEFAULT_ADMIN_EMAIL = "admin@localhost"


def admin_file(settings: Settings) -> Path:
    return settings.data_dir / "console-admin.txt"


def admin_email() -> str:
    return (os.environ.get("OPENMAAC_CONSOLE_ADMIN_EMAIL") or DEFAULT_ADMIN_EMAIL).strip().lower()


def _read(path: Path) -> dict[str, str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return {}
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


def ensure_first_admin(settings: Settings) -> tuple[str, str | None] | None:
    """On a database without console users, an ``admin`` of the organisation ``default`` with a
    generated password, kept in ``data/console-admin.txt`` (mode 0600). Returns (e-mail, the
    password while the file still holds the valid one, else None), or None when the console's
    users were made by someone (``openmaac user create``) or there is no default organisation."""
    from sqlalchemy import select

    from openmaac.auth.models import Organization
    from openmaac.bootstrap import DEFAULT_ORG
    from openmaac.console import users
    from openmaac.console.passwords import verify_password
    from openmaac.db.engine import get_database

    path = admin_file(settings)
    database = get_database(settings.database_url)
    with database.write() as session:
        if users.count_users(session) == 0:
            org = session.scalar(select(Organization).where(Organization.name == DEFAULT_ORG))
            if org is None:
                return None
            email, password = admin_email(), secrets.token_urlsafe(12)
            user = users.create_user(session, email, password)
            users.set_membership(session, user, org.id, "admin")
            email = user.email
        else:
            saved = _read(path)
            email, password = saved.get("email", ""), saved.get("password", "")
            existing = users.get_user(session, email) if email else None
            if existing is None:
                return None
            # the administrator changed the generated password: it is not shown any more
            return email, password if password and verify_password(password, existing.password_hash) else None
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        os.chmod(path, 0o600)
        handle.write("# openmaac console: the first administrator; change the password at /console/account\n"
                     f"email={email}\npassword={password}\n")
    return email, password


def banner_lines(settings: Settings, base: str, at_terminal: bool) -> list[str]:
    """The start banner's console line: where it is and how to sign in."""
    first = ensure_first_admin(settings)
    address = f"{base}/console/"
    if first is None:
        return [f"  Console          : {address}  (users: `openmaac user list`, `openmaac user create`)"]
    email, password = first
    if password is None:
        return [f"  Console          : {address}  (sign in as {email})"]
    if at_terminal:
        return [f"  Console          : {address}  (sign in as {email}, password [bold]{password}[/], "
                f"kept in {admin_file(settings)})"]
    return [f"  Console          : {address}  (sign in as {email}, password in {admin_file(settings)})"]
