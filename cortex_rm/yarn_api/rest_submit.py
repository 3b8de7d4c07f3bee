"""The JSON body of ``POST /ws/v1/cluster/apps`` as an ``ApplicationSubmissionContextProto``.

The body is Hadoop's ``ApplicationSubmissionContextInfo`` (JSON names such as
``application-id``, ``am-container-spec``, ``max-app-attempts``).  Its maps use
JAXB's form ``{"entry": [{"key": ..., "value": ...}]}`` and its lists
``{"tag": [...]}``/``{"command": ...}``; Jersey writes a one-element list as a bare
object or string, so both forms are read.  Like JAXB, numbers and booleans may
come as strings ("2", "false") and unknown keys are ignored; anything else of the
wrong type is a ``BadRequestException`` naming the field.

What RMWebServices builds we build the same way, so the NodeManager launches the
AM from exactly what YARN would have stored:

* local-resource URLs become ``URLProto`` as ``URL.fromURI`` makes them (scheme,
  host, port -1 when absent, decoded path; query and fragment dropped);
* ``credentials`` become the ``tokens`` bytes of ``Credentials.writeTokenStorageToStream``
  (the "HDTS" Writable format), always written, empty when nothing is given;
* ``service-data`` and secrets are base64 (URL-safe or standard, padding optional).
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any, Final
from urllib.parse import unquote, urlsplit

from cortex_rm.yarn.errors import MalformedId
from cortex_rm.yarn.ids import ApplicationId
from cortex_rm.yarn.resources import Resource
from cortex_rm.yarn_api import records
from cortex_rm.yarn_api.proto import yarn_protos_pb2 as yp
from cortex_rm.yarn_api.rest_errors import bad_request
from cortex_rm.yarn_api.writable import read_vlong, token_storage

INT32: Final = (-(2**31), 2**31 - 1)
INT64: Final = (-(2**63), 2**63 - 1)
MAX_TAGS: Final = 10  # YarnConfiguration.APPLICATION_MAX_TAGS
MAX_TAG_LENGTH: Final = 100  # YarnConfiguration.APPLICATION_MAX_TAG_LENGTH

_LOCAL_RESOURCE_TYPES: Final = {"ARCHIVE": yp.ARCHIVE, "FILE": yp.FILE, "PATTERN": yp.PATTERN}
_VISIBILITIES: Final = {"PUBLIC": yp.PUBLIC, "PRIVATE": yp.PRIVATE, "APPLICATION": yp.APPLICATION}
_ACL_TYPES: Final = {"VIEW_APP": yp.APPACCESS_VIEW_APP, "MODIFY_APP": yp.APPACCESS_MODIFY_APP}
_LOG_AGGREGATION_FIELDS: Final = {
    "log-include-pattern": "include_pattern",
    "log-exclude-pattern": "exclude_pattern",
    "rolled-log-include-pattern": "rolled_logs_include_pattern",
    "rolled-log-exclude-pattern": "rolled_logs_exclude_pattern",
    "log-aggregation-policy-class-name": "log_aggregation_policy_class_name",
    "log-aggregation-policy-parameters": "log_aggregation_policy_parameters",
}
# ASCII digits, bounded: int() refuses over 4300 digits (a 500), and "$" would let a trailing newline in.
_RESERVATION_RE: Final = re.compile(r"reservation_([0-9]{1,32})_([0-9]{1,32})")
_INT_RE: Final = re.compile(r"^[+-]?\d{1,20}$")

# ------------------------------------------------------------------ readers


def _object(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise bad_request(f"{path} must be a JSON object, not {_kind(value)}")
    return value


def _kind(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )


def _str(value: Any, path: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise bad_request(f"{path} must be a string, not {_kind(value)}")
    text = str(value)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise bad_request(f"{path} is not valid Unicode text") from None
    return text


def _int(value: Any, path: str, bounds: tuple[int, int] = INT32) -> int:
    if isinstance(value, bool):
        raise bad_request(f"{path} must be an integer, not a boolean")
    if isinstance(value, str) and _INT_RE.match(value.strip()):
        value = int(value.strip())
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int):
        raise bad_request(f"{path} must be an integer, not {_kind(value)}")
    low, high = bounds
    if not low <= value <= high:
        raise bad_request(f"{path} = {value} is out of range [{low}, {high}]")
    return value


def _bool(value: Any, path: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise bad_request(f"{path} must be true or false, not {_kind(value)}")


def _present(doc: dict[str, Any], key: str) -> bool:
    return doc.get(key) is not None


def _entries(value: Any, path: str) -> dict[str, Any]:
    """A JAXB map ``{"entry": [{"key": k, "value": v}, ...]}``; a later key replaces an earlier one."""
    if value is None:
        return {}
    entries = _object(value, path).get("entry")
    if entries is None:
        return {}
    if isinstance(entries, dict):
        entries = [entries]
    if not isinstance(entries, list):
        raise bad_request(f"{path}.entry must be an array of {{key, value}} objects, not {_kind(entries)}")
    result: dict[str, Any] = {}
    for i, entry in enumerate(entries):
        entry = _object(entry, f"{path}.entry[{i}]")
        if entry.get("key") is None:
            raise bad_request(f"{path}.entry[{i}] has no key")
        result[_str(entry["key"], f"{path}.entry[{i}].key")] = entry.get("value")
    return result


def _list(value: Any, item: str, path: str) -> list[str]:
    """A JAXB list ``{"tag": [...]}`` (or one bare string); a plain array is read too."""
    if value is None:
        return []
    if isinstance(value, dict):
        value = value.get(item)
        path = f"{path}.{item}"
        if value is None:
            return []
    if not isinstance(value, list):
        value = [value]
    return [_str(v, f"{path}[{i}]") for i, v in enumerate(value)]


def _base64(value: Any, path: str) -> bytes:
    """Decode like commons-codec's lenient Base64: either alphabet, padding optional."""
    text = "".join(_str(value, path).split())
    text = text.replace("-", "+").replace("_", "/").rstrip("=")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise bad_request(f"{path} is not valid base64") from None


def _check_token(raw: bytes, path: str) -> None:
    """A ``Token`` Writable: identifier, password (length-prefixed bytes), kind, service (Text)."""
    try:
        pos = 0
        for _ in range(4):
            length, pos = read_vlong(raw, pos)
            if length < 0 or pos + length > len(raw):
                raise IndexError("field runs past the end")
            pos += length
    except IndexError:
        raise bad_request(f"{path} is not an encoded Hadoop token (Token.encodeToUrlString)") from None
    if pos != len(raw):
        raise bad_request(f"{path} has {len(raw) - pos} bytes after the encoded Hadoop token")


# ---------------------------------------------------------------------- URL


def url_from_string(text: str, path: str) -> yp.URLProto:
    """``URL.fromURI(new URI(text))``: scheme, userInfo, host, port (-1 if none), path."""
    try:
        parts = urlsplit(text)
    except ValueError as e:
        raise bad_request(f"{path}: {text!r} is not a URL: {e}") from None
    if not parts.scheme:
        raise bad_request(f"{path}: {text!r} is not an absolute URL (it needs a scheme such as hdfs: or file:)")
    url = yp.URLProto(scheme=parts.scheme, port=-1, file=unquote(parts.path))
    user_info, at, host_port = parts.netloc.rpartition("@")
    if at:
        url.userInfo = unquote(user_info)
    if host_port.startswith("["):  # an IPv6 literal keeps its brackets, as java.net.URI's getHost does
        host, _, rest = host_port.partition("]")
        host, port = host + "]", rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = host_port.partition(":")
    if host:
        url.host = host
    if port:
        # isdigit() alone admits "²" and other digits int() refuses: ASCII digits only.
        if not (port.isascii() and port.isdigit()) or int(port) > 65535:
            raise bad_request(f"{path}: {text!r} has an invalid port {port!r}")
        url.port = int(port)
    return url


# -------------------------------------------------------- the launch context


def _local_resource(value: Any, path: str, out: yp.LocalResourceProto) -> None:
    doc = _object(value, path)
    if not _present(doc, "resource"):
        raise bad_request(f"{path}.resource (the URL to localize) is required")
    out.resource.CopyFrom(url_from_string(_str(doc["resource"], f"{path}.resource"), f"{path}.resource"))
    kind = _str(doc.get("type", "FILE"), f"{path}.type").upper()
    if kind not in _LOCAL_RESOURCE_TYPES:
        raise bad_request(f"{path}.type {kind!r} is not one of {', '.join(_LOCAL_RESOURCE_TYPES)}")
    visibility = _str(doc.get("visibility", "APPLICATION"), f"{path}.visibility").upper()
    if visibility not in _VISIBILITIES:
        raise bad_request(f"{path}.visibility {visibility!r} is not one of {', '.join(_VISIBILITIES)}")
    out.type = _LOCAL_RESOURCE_TYPES[kind]
    out.visibility = _VISIBILITIES[visibility]
    out.size = _int(doc.get("size", 0), f"{path}.size", INT64)
    out.timestamp = _int(doc.get("timestamp", 0), f"{path}.timestamp", INT64)
    if _present(doc, "pattern"):
        out.pattern = _str(doc["pattern"], f"{path}.pattern")


def _credentials(value: Any, path: str) -> bytes:
    doc = _object(value, path) if value is not None else {}
    tokens: dict[str, bytes] = {}
    for alias, encoded in _entries(doc.get("tokens"), f"{path}.tokens").items():
        raw = _base64(encoded, f"{path}.tokens[{alias}]")
        _check_token(raw, f"{path}.tokens[{alias}]")
        tokens[alias] = raw
    secrets = {
        alias: _base64(encoded, f"{path}.secrets[{alias}]")
        for alias, encoded in _entries(doc.get("secrets"), f"{path}.secrets").items()
    }
    return token_storage(tokens, secrets)


def launch_context_from_json(value: Any, out: yp.ContainerLaunchContextProto, path: str = "am-container-spec") -> None:
    """``am-container-spec`` -> ``ContainerLaunchContextProto``."""
    doc = _object(value, path) if value is not None else {}
    for key, resource in _entries(doc.get("local-resources"), f"{path}.local-resources").items():
        entry = out.localResources.add(key=key)
        _local_resource(resource, f"{path}.local-resources[{key}]", entry.value)
    for key, env_value in _entries(doc.get("environment"), f"{path}.environment").items():
        text = "" if env_value is None else _str(env_value, f"{path}.environment[{key}]")
        out.environment.add(key=key, value=text)
    out.command.extend(_list(doc.get("commands"), "command", f"{path}.commands"))
    for key, data in _entries(doc.get("service-data"), f"{path}.service-data").items():
        if data is not None and _str(data, f"{path}.service-data[{key}]"):  # RMWebServices skips empty values
            out.service_data.add(key=key, value=_base64(data, f"{path}.service-data[{key}]"))
    out.tokens = _credentials(doc.get("credentials"), f"{path}.credentials")
    for key, acl in _entries(doc.get("application-acls"), f"{path}.application-acls").items():
        if key not in _ACL_TYPES:
            raise bad_request(f"{path}.application-acls key {key!r} is not one of {', '.join(_ACL_TYPES)}")
        acl_text = "" if acl is None else _str(acl, f"{path}.application-acls[{key}]")
        out.application_ACLs.add(accessType=_ACL_TYPES[key], acl=acl_text)


# ------------------------------------------------------ the submission context


def _resource(value: Any, maximum: Resource) -> Resource:
    doc = _object(value, "resource")
    memory = _int(doc.get("memory", 0), "resource.memory", INT64)
    vcores = _int(doc.get("vCores", 0), "resource.vCores")
    if memory < 0 or vcores < 0:
        raise bad_request(f"resource {Resource(memory, vcores)} has a negative component")
    # RMWebServices.createAppSubmissionContextResource refuses these before submitting.
    if vcores > maximum.vcores:
        raise bad_request(f"Requested more cores than configured max ({vcores} > {maximum.vcores})")
    if memory > maximum.memory_mb:
        raise bad_request(f"Requested more memory than configured max ({memory} > {maximum.memory_mb} MB)")
    return Resource(memory, vcores)


def _tags(value: Any) -> list[str]:
    tags = _list(value, "tag", "application-tags")
    if len(set(tags)) > MAX_TAGS:
        raise bad_request(f"Too many applicationTags, a maximum of only {MAX_TAGS} are allowed!")
    for tag in tags:
        if len(tag) > MAX_TAG_LENGTH:
            raise bad_request(f"Tag {tag} is too long, maximum allowed length of a tag is {MAX_TAG_LENGTH}")
        if not tag.isascii():
            raise bad_request(f"A tag can only have ASCII characters! Invalid tag - {tag}")
    return tags


def submission_context_from_json(body: Any, maximum: Resource) -> yp.ApplicationSubmissionContextProto:
    """The decoded request body -> the context the IPC ``submitApplication`` would carry.

    ``maximum`` is the largest container (``yarn.scheduler.maximum-allocation-*``): a
    larger AM is refused here with 400, as RMWebServices does.  Raises ``RestError``.
    """
    doc = _object(body, "the request body")
    ctx = yp.ApplicationSubmissionContextProto()
    if not _present(doc, "application-id"):
        raise bad_request("application-id is required; get one from POST /ws/v1/cluster/apps/new-application")
    app_id_text = _str(doc["application-id"], "application-id")
    try:
        app_id = ApplicationId.parse(app_id_text)
    except MalformedId:
        raise bad_request(f"Could not parse application id {app_id_text}") from None
    if app_id.cluster_timestamp > INT64[1] or app_id.id > INT32[1]:  # ApplicationIdProto: int64, int32
        raise bad_request(f"Could not parse application id {app_id_text}: a number is out of range")
    records.app_id_to_proto(app_id, ctx.application_id)
    if _present(doc, "application-name"):
        ctx.application_name = _str(doc["application-name"], "application-name")
    if _present(doc, "queue"):
        ctx.queue = _str(doc["queue"], "queue")
    if _present(doc, "application-type"):
        ctx.applicationType = _str(doc["application-type"], "application-type")
    if _present(doc, "priority"):
        ctx.priority.priority = _int(doc["priority"], "priority")
    if _present(doc, "max-app-attempts"):
        ctx.maxAppAttempts = _int(doc["max-app-attempts"], "max-app-attempts")
    if _present(doc, "unmanaged-AM"):
        ctx.unmanaged_am = _bool(doc["unmanaged-AM"], "unmanaged-AM")
    if _present(doc, "cancel-tokens-when-complete"):
        ctx.cancel_tokens_when_complete = _bool(doc["cancel-tokens-when-complete"], "cancel-tokens-when-complete")
    keep = "keep-containers-across-application-attempts"
    if _present(doc, keep):
        ctx.keep_containers_across_application_attempts = _bool(doc[keep], keep)
    resource = _resource(doc["resource"], maximum) if _present(doc, "resource") else None
    if resource is not None:
        records.resource_to_proto(resource, ctx.resource)
    ctx.applicationTags.extend(_tags(doc.get("application-tags")))
    if _present(doc, "app-node-label-expression"):
        ctx.node_label_expression = _str(doc["app-node-label-expression"], "app-node-label-expression")
    if _present(doc, "am-container-node-label-expression"):
        # ApplicationSubmissionContext.newInstance turns it into the AM's ResourceRequest.
        request = ctx.am_container_resource_request.add(resource_name="*", num_containers=1)
        request.priority.priority = 0
        records.resource_to_proto(resource or Resource(1024, 1), request.capability)
        request.node_label_expression = _str(
            doc["am-container-node-label-expression"], "am-container-node-label-expression"
        )
    if _present(doc, "attempt-failures-validity-interval"):
        ctx.attempt_failures_validity_interval = _int(
            doc["attempt-failures-validity-interval"], "attempt-failures-validity-interval", INT64
        )
    if _present(doc, "log-aggregation-context"):
        logs = _object(doc["log-aggregation-context"], "log-aggregation-context")
        for name, field in _LOG_AGGREGATION_FIELDS.items():
            if _present(logs, name):
                setattr(ctx.log_aggregation_context, field, _str(logs[name], f"log-aggregation-context.{name}"))
    if _present(doc, "reservation-id"):
        text = _str(doc["reservation-id"], "reservation-id")
        match = _RESERVATION_RE.fullmatch(text)
        if match is None or max(int(match.group(1)), int(match.group(2))) > INT64[1]:
            raise bad_request(f"reservation-id {text!r} is not of the form reservation_<clusterTimestamp>_<id>")
        ctx.reservation_id.cluster_timestamp, ctx.reservation_id.id = int(match.group(1)), int(match.group(2))
    if _present(doc, "am-black-listing-requests"):
        _object(doc["am-black-listing-requests"], "am-black-listing-requests")  # AM blacklisting: not used
    launch_context_from_json(doc.get("am-container-spec"), ctx.am_container_spec)
    return ctx

