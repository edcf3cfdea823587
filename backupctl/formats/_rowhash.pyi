from collections.abc import Sequence
from typing import Any

def sha256_docs(n: int, fields: Sequence[tuple[bytes, Any, Any, Any, int, bool]], tail: bytes, /) -> bytes: ...
