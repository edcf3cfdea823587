from collections.abc import Sequence
from typing import Any

def sha256_docs(n: int, fields: Sequence[tuple[bytes, int, Any, Any, Any, int, int] | None], tail: bytes, /) -> bytes: ...
