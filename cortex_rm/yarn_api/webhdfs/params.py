"""WebHDFS's query parameters, parsed and checked once (names and messages as HDFS's ``web.resources``)."""

from __future__ import annotations

from urllib.parse import unquote

from cortex_rm.fs.errors import IllegalArgument
from cortex_rm.fs.model import User
from cortex_rm.fs.paths import FsPath, parse_path
from cortex_rm.fs.permissions import parse_octal_permission

ANONYMOUS_USER = "dr.who"  # HDFS's user for requests without user.name (security off)
PREFIX = b"/webhdfs/v1"
MAX_QUERY_VALUE = 16 * 1024


class Query:
    """A request's query string: the first value of each parameter, decoded as UTF-8."""

    def __init__(self, args: dict[bytes, list[bytes]], user: User | None = None) -> None:
        """``user``: who the request authenticated as (the NameNode checks its ``delegation``);
        without it ``user.name`` is taken at its word (tests of the namespace operations)."""
        self._user = user
        self._values: dict[str, str] = {}
        for key, values in args.items():
            try:
                name, value = key.decode("utf-8"), values[0].decode("utf-8") if values else ""
            except UnicodeDecodeError:
                raise IllegalArgument("the query string is not valid UTF-8") from None
            if len(value) > MAX_QUERY_VALUE:
                raise IllegalArgument(f'the value of webhdfs parameter "{name}" is too long')
            self._values[name] = value

    def text(self, name: str, default: str = "") -> str:
        return self._values.get(name, default)

    def has(self, name: str) -> bool:
        return name in self._values

    def op(self) -> str:
        op = self._values.get("op", "")
        if not op:
            raise IllegalArgument('the webhdfs parameter "op" is missing')
        return op.upper()

    def user(self) -> User:
        if self._user is not None:
            return self._user
        name = self._values.get("user.name", "").strip() or ANONYMOUS_USER
        if len(name) > 256 or any(c in name for c in "/:\0"):
            raise IllegalArgument(f'Invalid value for webhdfs parameter "user.name": "{name[:64]}"')
        return User(name, frozenset({name}))

    def excluded_nodes(self) -> frozenset[str]:
        """``excludedatanodes``: the ``host:port`` of nodes the client failed to reach (it retries)."""
        return frozenset(n.strip() for n in self._values.get("excludedatanodes", "").split(",") if n.strip())

    def boolean(self, name: str, default: bool) -> bool:
        value = self._values.get(name)
        if value is None or value == "":
            return default
        if value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise IllegalArgument(f'Invalid value for webhdfs parameter "{name}": "{value}" is not true or false')

    def integer(self, name: str, default: int | None, low: int = 0, high: int = 2**63 - 1) -> int | None:
        value = self._values.get(name)
        if value is None or value == "" or value.lower() == "null":
            return default
        try:
            number = int(value, 10)
        except ValueError:
            raise IllegalArgument(f'Invalid value for webhdfs parameter "{name}": "{value}" is not a number') from None
        if not low <= number <= high:
            raise IllegalArgument(f'Invalid value for webhdfs parameter "{name}": {number} is not in [{low}, {high}]')
        return number

    def permission(self, default: int) -> int:
        value = self._values.get("permission")
        if value is None or value == "" or value.lower() == "null":
            return default
        return parse_octal_permission(value)


def request_path(raw: bytes) -> FsPath:
    """The file system path of a ``/webhdfs/v1/...`` request path (percent-decoded, then normalised)."""
    if not raw.startswith(PREFIX):
        raise IllegalArgument("WebHDFS paths start with /webhdfs/v1")
    rest = raw[len(PREFIX) :] or b"/"
    try:
        text = unquote(rest.decode("ascii"), encoding="utf-8", errors="strict")
    except UnicodeError:
        raise IllegalArgument("the path is not valid percent-encoded UTF-8") from None
    return parse_path(text)
