from cortex_rm.yarn_api.proto import yarn_service_protos_pb2 as _yarn_service_protos_pb2
from cortex_rm.yarn_api.proto import Security_pb2 as _Security_pb2
from google.protobuf import descriptor as _descriptor
from typing import ClassVar as _ClassVar

DESCRIPTOR: _descriptor.FileDescriptor
