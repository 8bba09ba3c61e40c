"""Encryption at rest for shop tokens (Fernet, key from TOKEN_ENCRYPTION_KEY)."""
from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken


class TokenCipher:
    """Encrypts and decrypts secrets with one Fernet key (url-safe base64 of 32 bytes)."""

    def __init__(self, key: str):
        if not key:
            raise ValueError("TOKEN_ENCRYPTION_KEY is not set")
        try:
            self._fernet = Fernet(key.encode() if isinstance(key, str) else key)
        except (ValueError, TypeError) as exc:
            raise ValueError(
                "TOKEN_ENCRYPTION_KEY must be url-safe base64 of 32 bytes "
                "(python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')"
            ) from exc

    def encrypt(self, plaintext: str | None) -> str | None:
        """Encrypt a string; None stays None."""
        if plaintext is None:
            return None
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, ciphertext: str | None) -> str | None:
        """Decrypt a string made by `encrypt`; raises ValueError when the key does not match."""
        if ciphertext is None:
            return None
        try:
            return self._fernet.decrypt(ciphertext.encode()).decode()
        except InvalidToken as exc:
            raise ValueError("token cannot be decrypted with this TOKEN_ENCRYPTION_KEY") from exc
