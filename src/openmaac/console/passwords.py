"""Password hashing: Argon2id with pwdlib's recommended parameters (64 MiB, 3 passes)."""

from __future__ import annotations

from functools import lru_cache

from pwdlib import PasswordHash

MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 256


@lru_cache(maxsize=1)
def _hasher() -> PasswordHash:
    return PasswordHash.recommended()


def hash_password(password: str) -> str:
    return _hasher().hash(password)


def verify_password(password: str, password_hash: str) -> bool:
    return bool(_hasher().verify(password, password_hash))


@lru_cache(maxsize=1)
def dummy_hash() -> str:
    """Verified against when the e-mail address is unknown, so a wrong address takes as long as
    a wrong password and the answer's timing does not tell which addresses have accounts."""
    return hash_password("not the password of anyone")


def password_problem(password: str) -> str | None:
    """Why ``password`` cannot be a console password, in English (translated by the caller)."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return "Use at least 10 characters."
    if len(password) > MAX_PASSWORD_LENGTH:
        return "Use at most 256 characters."
    return None
