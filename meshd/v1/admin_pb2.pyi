import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from meshd.v1 import spec_pb2 as _spec_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ResourceMetadata(_message.Message):
    __slots__ = ("arn", "created_at", "last_updated_at", "mesh_owner", "resource_owner", "uid", "version")
    ARN_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    MESH_OWNER_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_OWNER_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    arn: str
    created_at: _timestamp_pb2.Timestamp
    last_updated_at: _timestamp_pb2.Timestamp
    mesh_owner: str
    resource_owner: str
    uid: str
    version: int
    def __init__(self, arn: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., mesh_owner: _Optional[str] = ..., resource_owner: _Optional[str] = ..., uid: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class TagRef(_message.Message):
    __slots__ = ("key", "value")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: str
    def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class MeshData(_message.Message):
    __slots__ = ("mesh_name", "metadata", "spec", "status")
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    mesh_name: str
    metadata: ResourceMetadata
    spec: _spec_pb2.MeshSpec
    status: _spec_pb2.MeshStatus
    def __init__(self, mesh_name: _Optional[str] = ..., metadata: _Optional[_Union[ResourceMetadata, _Mapping]] = ..., spec: _Optional[_Union[_spec_pb2.MeshSpec, _Mapping]] = ..., status: _Optional[_Union[_spec_pb2.MeshStatus, _Mapping]] = ...) -> None: ...

class MeshRef(_message.Message):
    __slots__ = ("mesh_name", "arn", "created_at", "last_updated_at", "mesh_owner", "resource_owner", "version")
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    ARN_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    MESH_OWNER_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_OWNER_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    mesh_name: str
    arn: str
    created_at: _timestamp_pb2.Timestamp
    last_updated_at: _timestamp_pb2.Timestamp
    mesh_owner: str
    resource_owner: str
    version: int
    def __init__(self, mesh_name: _Optional[str] = ..., arn: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., mesh_owner: _Optional[str] = ..., resource_owner: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class CreateMeshRequest(_message.Message):
    __slots__ = ("mesh_name", "spec", "tags", "client_token")
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    CLIENT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    mesh_name: str
    spec: _spec_pb2.MeshSpec
    tags: _containers.RepeatedCompositeFieldContainer[TagRef]
    client_token: str
    def __init__(self, mesh_name: _Optional[str] = ..., spec: _Optional[_Union[_spec_pb2.MeshSpec, _Mapping]] = ..., tags: _Optional[_Iterable[_Union[TagRef, _Mapping]]] = ..., client_token: _Optional[str] = ...) -> None: ...

class CreateMeshResponse(_message.Message):
    __slots__ = ("mesh",)
    MESH_FIELD_NUMBER: _ClassVar[int]
    mesh: MeshData
    def __init__(self, mesh: _Optional[_Union[MeshData, _Mapping]] = ...) -> None: ...

class DescribeMeshRequest(_message.Message):
    __slots__ = ("mesh_name", "mesh_owner")
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    MESH_OWNER_FIELD_NUMBER: _ClassVar[int]
    mesh_name: str
    mesh_owner: str
    def __init__(self, mesh_name: _Optional[str] = ..., mesh_owner: _Optional[str] = ...) -> None: ...

class DescribeMeshResponse(_message.Message):
    __slots__ = ("mesh",)
    MESH_FIELD_NUMBER: _ClassVar[int]
    mesh: MeshData
    def __init__(self, mesh: _Optional[_Union[MeshData, _Mapping]] = ...) -> None: ...

class UpdateMeshRequest(_message.Message):
    __slots__ = ("mesh_name", "spec", "client_token", "expected_version")
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    CLIENT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    mesh_name: str
    spec: _spec_pb2.MeshSpec
    client_token: str
    expected_version: int
    def __init__(self, mesh_name: _Optional[str] = ..., spec: _Optional[_Union[_spec_pb2.MeshSpec, _Mapping]] = ..., client_token: _Optional[str] = ..., expected_version: _Optional[int] = ...) -> None: ...

class UpdateMeshResponse(_message.Message):
    __slots__ = ("mesh",)
    MESH_FIELD_NUMBER: _ClassVar[int]
    mesh: MeshData
    def __init__(self, mesh: _Optional[_Union[MeshData, _Mapping]] = ...) -> None: ...

class DeleteMeshRequest(_message.Message):
    __slots__ = ("mesh_name", "expected_version")
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    mesh_name: str
    expected_version: int
    def __init__(self, mesh_name: _Optional[str] = ..., expected_version: _Optional[int] = ...) -> None: ...

class DeleteMeshResponse(_message.Message):
    __slots__ = ("mesh",)
    MESH_FIELD_NUMBER: _ClassVar[int]
    mesh: MeshData
    def __init__(self, mesh: _Optional[_Union[MeshData, _Mapping]] = ...) -> None: ...

class ListMeshesRequest(_message.Message):
    __slots__ = ("limit", "next_token")
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    NEXT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    limit: int
    next_token: str
    def __init__(self, limit: _Optional[int] = ..., next_token: _Optional[str] = ...) -> None: ...

class ListMeshesResponse(_message.Message):
    __slots__ = ("meshes", "next_token")
    MESHES_FIELD_NUMBER: _ClassVar[int]
    NEXT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    meshes: _containers.RepeatedCompositeFieldContainer[MeshRef]
    next_token: str
    def __init__(self, meshes: _Optional[_Iterable[_Union[MeshRef, _Mapping]]] = ..., next_token: _Optional[str] = ...) -> None: ...

class VirtualNodeData(_message.Message):
    __slots__ = ("mesh_name", "virtual_node_name", "metadata", "spec", "status")
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    VIRTUAL_NODE_NAME_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    mesh_name: str
    virtual_node_name: str
    metadata: ResourceMetadata
    spec: _spec_pb2.VirtualNodeSpec
    status: _spec_pb2.VirtualNodeStatus
    def __init__(self, mesh_name: _Optional[str] = ..., virtual_node_name: _Optional[str] = ..., metadata: _Optional[_Union[ResourceMetadata, _Mapping]] = ..., spec: _Optional[_Union[_spec_pb2.VirtualNodeSpec, _Mapping]] = ..., status: _Optional[_Union[_spec_pb2.VirtualNodeStatus, _Mapping]] = ...) -> None: ...

class VirtualNodeRef(_message.Message):
    __slots__ = ("mesh_name", "virtual_node_name", "arn", "created_at", "last_updated_at", "mesh_owner", "resource_owner", "version")
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    VIRTUAL_NODE_NAME_FIELD_NUMBER: _ClassVar[int]
    ARN_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    MESH_OWNER_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_OWNER_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    mesh_name: str
    virtual_node_name: str
    arn: str
    created_at: _timestamp_pb2.Timestamp
    last_updated_at: _timestamp_pb2.Timestamp
    mesh_owner: str
    resource_owner: str
    version: int
    def __init__(self, mesh_name: _Optional[str] = ..., virtual_node_name: _Optional[str] = ..., arn: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., mesh_owner: _Optional[str] = ..., resource_owner: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class CreateVirtualNodeRequest(_message.Message):
    __slots__ = ("mesh_name", "virtual_node_name", "spec", "tags", "client_token", "mesh_owner")
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    VIRTUAL_NODE_NAME_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    CLIENT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    MESH_OWNER_FIELD_NUMBER: _ClassVar[int]
    mesh_name: str
    virtual_node_name: str
    spec: _spec_pb2.VirtualNodeSpec
    tags: _containers.RepeatedCompositeFieldContainer[TagRef]
    client_token: str
    mesh_owner: str
    def __init__(self, mesh_name: _Optional[str] = ..., virtual_node_name: _Optional[str] = ..., spec: _Optional[_Union[_spec_pb2.VirtualNodeSpec, _Mapping]] = ..., tags: _Optional[_Iterable[_Union[TagRef, _Mapping]]] = ..., client_token: _Optional[str] = ..., mesh_owner: _Optional[str] = ...) -> None: ...

class CreateVirtualNodeResponse(_message.Message):
    __slots__ = ("virtual_node",)
    VIRTUAL_NODE_FIELD_NUMBER: _ClassVar[int]
    virtual_node: VirtualNodeData
    def __init__(self, virtual_node: _Optional[_Union[VirtualNodeData, _Mapping]] = ...) -> None: ...

class DescribeVirtualNodeRequest(_message.Message):
    __slots__ = ("mesh_name", "virtual_node_name", "mesh_owner")
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    VIRTUAL_NODE_NAME_FIELD_NUMBER: _ClassVar[int]
    MESH_OWNER_FIELD_NUMBER: _ClassVar[int]
    mesh_name: str
    virtual_node_name: str
    mesh_owner: str
    def __init__(self, mesh_name: _Optional[str] = ..., virtual_node_name: _Optional[str] = ..., mesh_owner: _Optional[str] = ...) -> None: ...

class DescribeVirtualNodeResponse(_message.Message):
    __slots__ = ("virtual_node",)
    VIRTUAL_NODE_FIELD_NUMBER: _ClassVar[int]
    virtual_node: VirtualNodeData
    def __init__(self, virtual_node: _Optional[_Union[VirtualNodeData, _Mapping]] = ...) -> None: ...

class UpdateVirtualNodeRequest(_message.Message):
    __slots__ = ("mesh_name", "virtual_node_name", "spec", "client_token", "mesh_owner", "expected_version")
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    VIRTUAL_NODE_NAME_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    CLIENT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    MESH_OWNER_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    mesh_name: str
    virtual_node_name: str
    spec: _spec_pb2.VirtualNodeSpec
    client_token: str
    mesh_owner: str
    expected_version: int
    def __init__(self, mesh_name: _Optional[str] = ..., virtual_node_name: _Optional[str] = ..., spec: _Optional[_Union[_spec_pb2.VirtualNodeSpec, _Mapping]] = ..., client_token: _Optional[str] = ..., mesh_owner: _Optional[str] = ..., expected_version: _Optional[int] = ...) -> None: ...

class UpdateVirtualNodeResponse(_message.Message):
    __slots__ = ("virtual_node",)
    VIRTUAL_NODE_FIELD_NUMBER: _ClassVar[int]
    virtual_node: VirtualNodeData
    def __init__(self, virtual_node: _Optional[_Union[VirtualNodeData, _Mapping]] = ...) -> None: ...

class DeleteVirtualNodeRequest(_message.Message):
    __slots__ = ("mesh_name", "virtual_node_name", "mesh_owner", "expected_version")
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    VIRTUAL_NODE_NAME_FIELD_NUMBER: _ClassVar[int]
    MESH_OWNER_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    mesh_name: str
    virtual_node_name: str
    mesh_owner: str
    expected_version: int
    def __init__(self, mesh_name: _Optional[str] = ..., virtual_node_name: _Optional[str] = ..., mesh_owner: _Optional[str] = ..., expected_version: _Optional[int] = ...) -> None: ...

class DeleteVirtualNodeResponse(_message.Message):
    __slots__ = ("virtual_node",)
    VIRTUAL_NODE_FIELD_NUMBER: _ClassVar[int]
    virtual_node: VirtualNodeData
    def __init__(self, virtual_node: _Optional[_Union[VirtualNodeData, _Mapping]] = ...) -> None: ...

class ListVirtualNodesRequest(_message.Message):
    __slots__ = ("mesh_name", "limit", "next_token", "mesh_owner")
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    NEXT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    MESH_OWNER_FIELD_NUMBER: _ClassVar[int]
    mesh_name: str
    limit: int
    next_token: str
    mesh_owner: str
    def __init__(self, mesh_name: _Optional[str] = ..., limit: _Optional[int] = ..., next_token: _Optional[str] = ..., mesh_owner: _Optional[str] = ...) -> None: ...

class ListVirtualNodesResponse(_message.Message):
    __slots__ = ("virtual_nodes", "next_token")
    VIRTUAL_NODES_FIELD_NUMBER: _ClassVar[int]
    NEXT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    virtual_nodes: _containers.RepeatedCompositeFieldContainer[VirtualNodeRef]
    next_token: str
    def __init__(self, virtual_nodes: _Optional[_Iterable[_Union[VirtualNodeRef, _Mapping]]] = ..., next_token: _Optional[str] = ...) -> None: ...

class VirtualServiceData(_message.Message):
    __slots__ = ("mesh_name", "virtual_service_name", "metadata", "spec", "status")
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    VIRTUAL_SERVICE_NAME_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    mesh_name: str
    virtual_service_name: str
    metadata: ResourceMetadata
    spec: _spec_pb2.VirtualServiceSpec
    status: _spec_pb2.VirtualServiceStatus
    def __init__(self, mesh_name: _Optional[str] = ..., virtual_service_name: _Optional[str] = ..., metadata: _Optional[_Union[ResourceMetadata, _Mapping]] = ..., spec: _Optional[_Union[_spec_pb2.VirtualServiceSpec, _Mapping]] = ..., status: _Optional[_Union[_spec_pb2.VirtualServiceStatus, _Mapping]] = ...) -> None: ...

class VirtualServiceRef(_message.Message):
    __slots__ = ("mesh_name", "virtual_service_name", "arn", "created_at", "last_updated_at", "mesh_owner", "resource_owner", "version")
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    VIRTUAL_SERVICE_NAME_FIELD_NUMBER: _ClassVar[int]
    ARN_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    MESH_OWNER_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_OWNER_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    mesh_name: str
    virtual_service_name: str
    arn: str
    created_at: _timestamp_pb2.Timestamp
    last_updated_at: _timestamp_pb2.Timestamp
    mesh_owner: str
    resource_owner: str
    version: int
    def __init__(self, mesh_name: _Optional[str] = ..., virtual_service_name: _Optional[str] = ..., arn: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., mesh_owner: _Optional[str] = ..., resource_owner: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class CreateVirtualServiceRequest(_message.Message):
    __slots__ = ("mesh_name", "virtual_service_name", "spec", "tags", "client_token", "mesh_owner")
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    VIRTUAL_SERVICE_NAME_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    CLIENT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    MESH_OWNER_FIELD_NUMBER: _ClassVar[int]
    mesh_name: str
    virtual_service_name: str
    spec: _spec_pb2.VirtualServiceSpec
    tags: _containers.RepeatedCompositeFieldContainer[TagRef]
    client_token: str
    mesh_owner: str
    def __init__(self, mesh_name: _Optional[str] = ..., virtual_service_name: _Optional[str] = ..., spec: _Optional[_Union[_spec_pb2.VirtualServiceSpec, _Mapping]] = ..., tags: _Optional[_Iterable[_Union[TagRef, _Mapping]]] = ..., client_token: _Optional[str] = ..., mesh_owner: _Optional[str] = ...) -> None: ...

class CreateVirtualServiceResponse(_message.Message):
    __slots__ = ("virtual_service",)
    VIRTUAL_SERVICE_FIELD_NUMBER: _ClassVar[int]
    virtual_service: VirtualServiceData
    def __init__(self, virtual_service: _Optional[_Union[VirtualServiceData, _Mapping]] = ...) -> None: ...

class DescribeVirtualServiceRequest(_message.Message):
    __slots__ = ("mesh_name", "virtual_service_name", "mesh_owner")
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    VIRTUAL_SERVICE_NAME_FIELD_NUMBER: _ClassVar[int]
    MESH_OWNER_FIELD_NUMBER: _ClassVar[int]
    mesh_name: str
    virtual_service_name: str
    mesh_owner: str
    def __init__(self, mesh_name: _Optional[str] = ..., virtual_service_name: _Optional[str] = ..., mesh_owner: _Optional[str] = ...) -> None: ...

class DescribeVirtualServiceResponse(_message.Message):
    __slots__ = ("virtual_service",)
    VIRTUAL_SERVICE_FIELD_NUMBER: _ClassVar[int]
    virtual_service: VirtualServiceData
    def __init__(self, virtual_service: _Optional[_Union[VirtualServiceData, _Mapping]] = ...) -> None: ...

class UpdateVirtualServiceRequest(_message.Message):
    __slots__ = ("mesh_name", "virtual_service_name", "spec", "client_token", "mesh_owner", "expected_version")
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    VIRTUAL_SERVICE_NAME_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    CLIENT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    MESH_OWNER_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    mesh_name: str
    virtual_service_name: str
    spec: _spec_pb2.VirtualServiceSpec
    client_token: str
    mesh_owner: str
    expected_version: int
    def __init__(self, mesh_name: _Optional[str] = ..., virtual_service_name: _Optional[str] = ..., spec: _Optional[_Union[_spec_pb2.VirtualServiceSpec, _Mapping]] = ..., client_token: _Optional[str] = ..., mesh_owner: _Optional[str] = ..., expected_version: _Optional[int] = ...) -> None: ...

class UpdateVirtualServiceResponse(_message.Message):
    __slots__ = ("virtual_service",)
    VIRTUAL_SERVICE_FIELD_NUMBER: _ClassVar[int]
    virtual_service: VirtualServiceData
    def __init__(self, virtual_service: _Optional[_Union[VirtualServiceData, _Mapping]] = ...) -> None: ...

class DeleteVirtualServiceRequest(_message.Message):
    __slots__ = ("mesh_name", "virtual_service_name", "mesh_owner", "expected_version")
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    VIRTUAL_SERVICE_NAME_FIELD_NUMBER: _ClassVar[int]
    MESH_OWNER_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    mesh_name: str
    virtual_service_name: str
    mesh_owner: str
    expected_version: int
    def __init__(self, mesh_name: _Optional[str] = ..., virtual_service_name: _Optional[str] = ..., mesh_owner: _Optional[str] = ..., expected_version: _Optional[int] = ...) -> None: ...

class DeleteVirtualServiceResponse(_message.Message):
    __slots__ = ("virtual_service",)
    VIRTUAL_SERVICE_FIELD_NUMBER: _ClassVar[int]
    virtual_service: VirtualServiceData
    def __init__(self, virtual_service: _Optional[_Union[VirtualServiceData, _Mapping]] = ...) -> None: ...

class ListVirtualServicesRequest(_message.Message):
    __slots__ = ("mesh_name", "limit", "next_token", "mesh_owner")
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    NEXT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    MESH_OWNER_FIELD_NUMBER: _ClassVar[int]
    mesh_name: str
    limit: int
    next_token: str
    mesh_owner: str
    def __init__(self, mesh_name: _Optional[str] = ..., limit: _Optional[int] = ..., next_token: _Optional[str] = ..., mesh_owner: _Optional[str] = ...) -> None: ...

class ListVirtualServicesResponse(_message.Message):
    __slots__ = ("virtual_services", "next_token")
    VIRTUAL_SERVICES_FIELD_NUMBER: _ClassVar[int]
    NEXT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    virtual_services: _containers.RepeatedCompositeFieldContainer[VirtualServiceRef]
    next_token: str
    def __init__(self, virtual_services: _Optional[_Iterable[_Union[VirtualServiceRef, _Mapping]]] = ..., next_token: _Optional[str] = ...) -> None: ...

class VirtualRouterData(_message.Message):
    __slots__ = ("mesh_name", "virtual_router_name", "metadata", "spec", "status")
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    VIRTUAL_ROUTER_NAME_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    mesh_name: str
    virtual_router_name: str
    metadata: ResourceMetadata
    spec: _spec_pb2.VirtualRouterSpec
    status: _spec_pb2.VirtualRouterStatus
    def __init__(self, mesh_name: _Optional[str] = ..., virtual_router_name: _Optional[str] = ..., metadata: _Optional[_Union[ResourceMetadata, _Mapping]] = ..., spec: _Optional[_Union[_spec_pb2.VirtualRouterSpec, _Mapping]] = ..., status: _Optional[_Union[_spec_pb2.VirtualRouterStatus, _Mapping]] = ...) -> None: ...

class VirtualRouterRef(_message.Message):
    __slots__ = ("mesh_name", "virtual_router_name", "arn", "created_at", "last_updated_at", "mesh_owner", "resource_owner", "version")
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    VIRTUAL_ROUTER_NAME_FIELD_NUMBER: _ClassVar[int]
    ARN_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    MESH_OWNER_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_OWNER_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    mesh_name: str
    virtual_router_name: str
    arn: str
    created_at: _timestamp_pb2.Timestamp
    last_updated_at: _timestamp_pb2.Timestamp
    mesh_owner: str
    resource_owner: str
    version: int
    def __init__(self, mesh_name: _Optional[str] = ..., virtual_router_name: _Optional[str] = ..., arn: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., mesh_owner: _Optional[str] = ..., resource_owner: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class CreateVirtualRouterRequest(_message.Message):
    __slots__ = ("mesh_name", "virtual_router_name", "spec", "tags", "client_token", "mesh_owner")
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    VIRTUAL_ROUTER_NAME_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    CLIENT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    MESH_OWNER_FIELD_NUMBER: _ClassVar[int]
    mesh_name: str
    virtual_router_name: str
    spec: _spec_pb2.VirtualRouterSpec
    tags: _containers.RepeatedCompositeFieldContainer[TagRef]
    client_token: str
    mesh_owner: str
    def __init__(self, mesh_name: _Optional[str] = ..., virtual_router_name: _Optional[str] = ..., spec: _Optional[_Union[_spec_pb2.VirtualRouterSpec, _Mapping]] = ..., tags: _Optional[_Iterable[_Union[TagRef, _Mapping]]] = ..., client_token: _Optional[str] = ..., mesh_owner: _Optional[str] = ...) -> None: ...

class CreateVirtualRouterResponse(_message.Message):
    __slots__ = ("virtual_router",)
    VIRTUAL_ROUTER_FIELD_NUMBER: _ClassVar[int]
    virtual_router: VirtualRouterData
    def __init__(self, virtual_router: _Optional[_Union[VirtualRouterData, _Mapping]] = ...) -> None: ...

class DescribeVirtualRouterRequest(_message.Message):
    __slots__ = ("mesh_name", "virtual_router_name", "mesh_owner")
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    VIRTUAL_ROUTER_NAME_FIELD_NUMBER: _ClassVar[int]
    MESH_OWNER_FIELD_NUMBER: _ClassVar[int]
    mesh_name: str
    virtual_router_name: str
    mesh_owner: str
    def __init__(self, mesh_name: _Optional[str] = ..., virtual_router_name: _Optional[str] = ..., mesh_owner: _Optional[str] = ...) -> None: ...

class DescribeVirtualRouterResponse(_message.Message):
    __slots__ = ("virtual_router",)
    VIRTUAL_ROUTER_FIELD_NUMBER: _ClassVar[int]
    virtual_router: VirtualRouterData
    def __init__(self, virtual_router: _Optional[_Union[VirtualRouterData, _Mapping]] = ...) -> None: ...

class UpdateVirtualRouterRequest(_message.Message):
    __slots__ = ("mesh_name", "virtual_router_name", "spec", "client_token", "mesh_owner", "expected_version")
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    VIRTUAL_ROUTER_NAME_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    CLIENT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    MESH_OWNER_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    mesh_name: str
    virtual_router_name: str
    spec: _spec_pb2.VirtualRouterSpec
    client_token: str
    mesh_owner: str
    expected_version: int
    def __init__(self, mesh_name: _Optional[str] = ..., virtual_router_name: _Optional[str] = ..., spec: _Optional[_Union[_spec_pb2.VirtualRouterSpec, _Mapping]] = ..., client_token: _Optional[str] = ..., mesh_owner: _Optional[str] = ..., expected_version: _Optional[int] = ...) -> None: ...

class UpdateVirtualRouterResponse(_message.Message):
    __slots__ = ("virtual_router",)
    VIRTUAL_ROUTER_FIELD_NUMBER: _ClassVar[int]
    virtual_router: VirtualRouterData
    def __init__(self, virtual_router: _Optional[_Union[VirtualRouterData, _Mapping]] = ...) -> None: ...

class DeleteVirtualRouterRequest(_message.Message):
    __slots__ = ("mesh_name", "virtual_router_name", "mesh_owner", "expected_version")
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    VIRTUAL_ROUTER_NAME_FIELD_NUMBER: _ClassVar[int]
    MESH_OWNER_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    mesh_name: str
    virtual_router_name: str
    mesh_owner: str
    expected_version: int
    def __init__(self, mesh_name: _Optional[str] = ..., virtual_router_name: _Optional[str] = ..., mesh_owner: _Optional[str] = ..., expected_version: _Optional[int] = ...) -> None: ...

class DeleteVirtualRouterResponse(_message.Message):
    __slots__ = ("virtual_router",)
    VIRTUAL_ROUTER_FIELD_NUMBER: _ClassVar[int]
    virtual_router: VirtualRouterData
    def __init__(self, virtual_router: _Optional[_Union[VirtualRouterData, _Mapping]] = ...) -> None: ...

class ListVirtualRoutersRequest(_message.Message):
    __slots__ = ("mesh_name", "limit", "next_token", "mesh_owner")
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    NEXT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    MESH_OWNER_FIELD_NUMBER: _ClassVar[int]
    mesh_name: str
    limit: int
    next_token: str
    mesh_owner: str
    def __init__(self, mesh_name: _Optional[str] = ..., limit: _Optional[int] = ..., next_token: _Optional[str] = ..., mesh_owner: _Optional[str] = ...) -> None: ...

class ListVirtualRoutersResponse(_message.Message):
    __slots__ = ("virtual_routers", "next_token")
    VIRTUAL_ROUTERS_FIELD_NUMBER: _ClassVar[int]
    NEXT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    virtual_routers: _containers.RepeatedCompositeFieldContainer[VirtualRouterRef]
    next_token: str
    def __init__(self, virtual_routers: _Optional[_Iterable[_Union[VirtualRouterRef, _Mapping]]] = ..., next_token: _Optional[str] = ...) -> None: ...

class RouteData(_message.Message):
    __slots__ = ("mesh_name", "virtual_router_name", "route_name", "metadata", "spec", "status")
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    VIRTUAL_ROUTER_NAME_FIELD_NUMBER: _ClassVar[int]
    ROUTE_NAME_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    mesh_name: str
    virtual_router_name: str
    route_name: str
    metadata: ResourceMetadata
    spec: _spec_pb2.RouteSpec
    status: _spec_pb2.RouteStatus
    def __init__(self, mesh_name: _Optional[str] = ..., virtual_router_name: _Optional[str] = ..., route_name: _Optional[str] = ..., metadata: _Optional[_Union[ResourceMetadata, _Mapping]] = ..., spec: _Optional[_Union[_spec_pb2.RouteSpec, _Mapping]] = ..., status: _Optional[_Union[_spec_pb2.RouteStatus, _Mapping]] = ...) -> None: ...

class RouteRef(_message.Message):
    __slots__ = ("mesh_name", "virtual_router_name", "route_name", "arn", "created_at", "last_updated_at", "mesh_owner", "resource_owner", "version")
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    VIRTUAL_ROUTER_NAME_FIELD_NUMBER: _ClassVar[int]
    ROUTE_NAME_FIELD_NUMBER: _ClassVar[int]
    ARN_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    MESH_OWNER_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_OWNER_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    mesh_name: str
    virtual_router_name: str
    route_name: str
    arn: str
    created_at: _timestamp_pb2.Timestamp
    last_updated_at: _timestamp_pb2.Timestamp
    mesh_owner: str
    resource_owner: str
    version: int
    def __init__(self, mesh_name: _Optional[str] = ..., virtual_router_name: _Optional[str] = ..., route_name: _Optional[str] = ..., arn: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., mesh_owner: _Optional[str] = ..., resource_owner: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class CreateRouteRequest(_message.Message):
    __slots__ = ("mesh_name", "virtual_router_name", "route_name", "spec", "tags", "client_token", "mesh_owner")
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    VIRTUAL_ROUTER_NAME_FIELD_NUMBER: _ClassVar[int]
    ROUTE_NAME_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    CLIENT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    MESH_OWNER_FIELD_NUMBER: _ClassVar[int]
    mesh_name: str
    virtual_router_name: str
    route_name: str
    spec: _spec_pb2.RouteSpec
    tags: _containers.RepeatedCompositeFieldContainer[TagRef]
    client_token: str
    mesh_owner: str
    def __init__(self, mesh_name: _Optional[str] = ..., virtual_router_name: _Optional[str] = ..., route_name: _Optional[str] = ..., spec: _Optional[_Union[_spec_pb2.RouteSpec, _Mapping]] = ..., tags: _Optional[_Iterable[_Union[TagRef, _Mapping]]] = ..., client_token: _Optional[str] = ..., mesh_owner: _Optional[str] = ...) -> None: ...

class CreateRouteResponse(_message.Message):
    __slots__ = ("route",)
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    route: RouteData
    def __init__(self, route: _Optional[_Union[RouteData, _Mapping]] = ...) -> None: ...

class DescribeRouteRequest(_message.Message):
    __slots__ = ("mesh_name", "virtual_router_name", "route_name", "mesh_owner")
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    VIRTUAL_ROUTER_NAME_FIELD_NUMBER: _ClassVar[int]
    ROUTE_NAME_FIELD_NUMBER: _ClassVar[int]
    MESH_OWNER_FIELD_NUMBER: _ClassVar[int]
    mesh_name: str
    virtual_router_name: str
    route_name: str
    mesh_owner: str
    def __init__(self, mesh_name: _Optional[str] = ..., virtual_router_name: _Optional[str] = ..., route_name: _Optional[str] = ..., mesh_owner: _Optional[str] = ...) -> None: ...

class DescribeRouteResponse(_message.Message):
    __slots__ = ("route",)
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    route: RouteData
    def __init__(self, route: _Optional[_Union[RouteData, _Mapping]] = ...) -> None: ...

class UpdateRouteRequest(_message.Message):
    __slots__ = ("mesh_name", "virtual_router_name", "route_name", "spec", "client_token", "mesh_owner", "expected_version")
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    VIRTUAL_ROUTER_NAME_FIELD_NUMBER: _ClassVar[int]
    ROUTE_NAME_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    CLIENT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    MESH_OWNER_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    mesh_name: str
    virtual_router_name: str
    route_name: str
    spec: _spec_pb2.RouteSpec
    client_token: str
    mesh_owner: str
    expected_version: int
    def __init__(self, mesh_name: _Optional[str] = ..., virtual_router_name: _Optional[str] = ..., route_name: _Optional[str] = ..., spec: _Optional[_Union[_spec_pb2.RouteSpec, _Mapping]] = ..., client_token: _Optional[str] = ..., mesh_owner: _Optional[str] = ..., expected_version: _Optional[int] = ...) -> None: ...

class UpdateRouteResponse(_message.Message):
    __slots__ = ("route",)
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    route: RouteData
    def __init__(self, route: _Optional[_Union[RouteData, _Mapping]] = ...) -> None: ...

class DeleteRouteRequest(_message.Message):
    __slots__ = ("mesh_name", "virtual_router_name", "route_name", "mesh_owner", "expected_version")
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    VIRTUAL_ROUTER_NAME_FIELD_NUMBER: _ClassVar[int]
    ROUTE_NAME_FIELD_NUMBER: _ClassVar[int]
    MESH_OWNER_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    mesh_name: str
    virtual_router_name: str
    route_name: str
    mesh_owner: str
    expected_version: int
    def __init__(self, mesh_name: _Optional[str] = ..., virtual_router_name: _Optional[str] = ..., route_name: _Optional[str] = ..., mesh_owner: _Optional[str] = ..., expected_version: _Optional[int] = ...) -> None: ...

class DeleteRouteResponse(_message.Message):
    __slots__ = ("route",)
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    route: RouteData
    def __init__(self, route: _Optional[_Union[RouteData, _Mapping]] = ...) -> None: ...

class ListRoutesRequest(_message.Message):
    __slots__ = ("mesh_name", "virtual_router_name", "limit", "next_token", "mesh_owner")
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    VIRTUAL_ROUTER_NAME_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    NEXT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    MESH_OWNER_FIELD_NUMBER: _ClassVar[int]
    mesh_name: str
    virtual_router_name: str
    limit: int
    next_token: str
    mesh_owner: str
    def __init__(self, mesh_name: _Optional[str] = ..., virtual_router_name: _Optional[str] = ..., limit: _Optional[int] = ..., next_token: _Optional[str] = ..., mesh_owner: _Optional[str] = ...) -> None: ...

class ListRoutesResponse(_message.Message):
    __slots__ = ("routes", "next_token")
    ROUTES_FIELD_NUMBER: _ClassVar[int]
    NEXT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    routes: _containers.RepeatedCompositeFieldContainer[RouteRef]
    next_token: str
    def __init__(self, routes: _Optional[_Iterable[_Union[RouteRef, _Mapping]]] = ..., next_token: _Optional[str] = ...) -> None: ...

class VirtualGatewayData(_message.Message):
    __slots__ = ("mesh_name", "virtual_gateway_name", "metadata", "spec", "status")
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    VIRTUAL_GATEWAY_NAME_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    mesh_name: str
    virtual_gateway_name: str
    metadata: ResourceMetadata
    spec: _spec_pb2.VirtualGatewaySpec
    status: _spec_pb2.VirtualGatewayStatus
    def __init__(self, mesh_name: _Optional[str] = ..., virtual_gateway_name: _Optional[str] = ..., metadata: _Optional[_Union[ResourceMetadata, _Mapping]] = ..., spec: _Optional[_Union[_spec_pb2.VirtualGatewaySpec, _Mapping]] = ..., status: _Optional[_Union[_spec_pb2.VirtualGatewayStatus, _Mapping]] = ...) -> None: ...

class VirtualGatewayRef(_message.Message):
    __slots__ = ("mesh_name", "virtual_gateway_name", "arn", "created_at", "last_updated_at", "mesh_owner", "resource_owner", "version")
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    VIRTUAL_GATEWAY_NAME_FIELD_NUMBER: _ClassVar[int]
    ARN_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    MESH_OWNER_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_OWNER_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    mesh_name: str
    virtual_gateway_name: str
    arn: str
    created_at: _timestamp_pb2.Timestamp
    last_updated_at: _timestamp_pb2.Timestamp
    mesh_owner: str
    resource_owner: str
    version: int
    def __init__(self, mesh_name: _Optional[str] = ..., virtual_gateway_name: _Optional[str] = ..., arn: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., mesh_owner: _Optional[str] = ..., resource_owner: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class CreateVirtualGatewayRequest(_message.Message):
    __slots__ = ("mesh_name", "virtual_gateway_name", "spec", "tags", "client_token", "mesh_owner")
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    VIRTUAL_GATEWAY_NAME_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    CLIENT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    MESH_OWNER_FIELD_NUMBER: _ClassVar[int]
    mesh_name: str
    virtual_gateway_name: str
    spec: _spec_pb2.VirtualGatewaySpec
    tags: _containers.RepeatedCompositeFieldContainer[TagRef]
    client_token: str
    mesh_owner: str
    def __init__(self, mesh_name: _Optional[str] = ..., virtual_gateway_name: _Optional[str] = ..., spec: _Optional[_Union[_spec_pb2.VirtualGatewaySpec, _Mapping]] = ..., tags: _Optional[_Iterable[_Union[TagRef, _Mapping]]] = ..., client_token: _Optional[str] = ..., mesh_owner: _Optional[str] = ...) -> None: ...

class CreateVirtualGatewayResponse(_message.Message):
    __slots__ = ("virtual_gateway",)
    VIRTUAL_GATEWAY_FIELD_NUMBER: _ClassVar[int]
    virtual_gateway: VirtualGatewayData
    def __init__(self, virtual_gateway: _Optional[_Union[VirtualGatewayData, _Mapping]] = ...) -> None: ...

class DescribeVirtualGatewayRequest(_message.Message):
    __slots__ = ("mesh_name", "virtual_gateway_name", "mesh_owner")
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    VIRTUAL_GATEWAY_NAME_FIELD_NUMBER: _ClassVar[int]
    MESH_OWNER_FIELD_NUMBER: _ClassVar[int]
    mesh_name: str
    virtual_gateway_name: str
    mesh_owner: str
    def __init__(self, mesh_name: _Optional[str] = ..., virtual_gateway_name: _Optional[str] = ..., mesh_owner: _Optional[str] = ...) -> None: ...

class DescribeVirtualGatewayResponse(_message.Message):
    __slots__ = ("virtual_gateway",)
    VIRTUAL_GATEWAY_FIELD_NUMBER: _ClassVar[int]
    virtual_gateway: VirtualGatewayData
    def __init__(self, virtual_gateway: _Optional[_Union[VirtualGatewayData, _Mapping]] = ...) -> None: ...

class UpdateVirtualGatewayRequest(_message.Message):
    __slots__ = ("mesh_name", "virtual_gateway_name", "spec", "client_token", "mesh_owner", "expected_version")
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    VIRTUAL_GATEWAY_NAME_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    CLIENT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    MESH_OWNER_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    mesh_name: str
    virtual_gateway_name: str
    spec: _spec_pb2.VirtualGatewaySpec
    client_token: str
    mesh_owner: str
    expected_version: int
    def __init__(self, mesh_name: _Optional[str] = ..., virtual_gateway_name: _Optional[str] = ..., spec: _Optional[_Union[_spec_pb2.VirtualGatewaySpec, _Mapping]] = ..., client_token: _Optional[str] = ..., mesh_owner: _Optional[str] = ..., expected_version: _Optional[int] = ...) -> None: ...

class UpdateVirtualGatewayResponse(_message.Message):
    __slots__ = ("virtual_gateway",)
    VIRTUAL_GATEWAY_FIELD_NUMBER: _ClassVar[int]
    virtual_gateway: VirtualGatewayData
    def __init__(self, virtual_gateway: _Optional[_Union[VirtualGatewayData, _Mapping]] = ...) -> None: ...

class DeleteVirtualGatewayRequest(_message.Message):
    __slots__ = ("mesh_name", "virtual_gateway_name", "mesh_owner", "expected_version")
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    VIRTUAL_GATEWAY_NAME_FIELD_NUMBER: _ClassVar[int]
    MESH_OWNER_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    mesh_name: str
    virtual_gateway_name: str
    mesh_owner: str
    expected_version: int
    def __init__(self, mesh_name: _Optional[str] = ..., virtual_gateway_name: _Optional[str] = ..., mesh_owner: _Optional[str] = ..., expected_version: _Optional[int] = ...) -> None: ...

class DeleteVirtualGatewayResponse(_message.Message):
    __slots__ = ("virtual_gateway",)
    VIRTUAL_GATEWAY_FIELD_NUMBER: _ClassVar[int]
    virtual_gateway: VirtualGatewayData
    def __init__(self, virtual_gateway: _Optional[_Union[VirtualGatewayData, _Mapping]] = ...) -> None: ...

class ListVirtualGatewaysRequest(_message.Message):
    __slots__ = ("mesh_name", "limit", "next_token", "mesh_owner")
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    NEXT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    MESH_OWNER_FIELD_NUMBER: _ClassVar[int]
    mesh_name: str
    limit: int
    next_token: str
    mesh_owner: str
    def __init__(self, mesh_name: _Optional[str] = ..., limit: _Optional[int] = ..., next_token: _Optional[str] = ..., mesh_owner: _Optional[str] = ...) -> None: ...

class ListVirtualGatewaysResponse(_message.Message):
    __slots__ = ("virtual_gateways", "next_token")
    VIRTUAL_GATEWAYS_FIELD_NUMBER: _ClassVar[int]
    NEXT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    virtual_gateways: _containers.RepeatedCompositeFieldContainer[VirtualGatewayRef]
    next_token: str
    def __init__(self, virtual_gateways: _Optional[_Iterable[_Union[VirtualGatewayRef, _Mapping]]] = ..., next_token: _Optional[str] = ...) -> None: ...

class GatewayRouteData(_message.Message):
    __slots__ = ("mesh_name", "virtual_gateway_name", "gateway_route_name", "metadata", "spec", "status")
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    VIRTUAL_GATEWAY_NAME_FIELD_NUMBER: _ClassVar[int]
    GATEWAY_ROUTE_NAME_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    mesh_name: str
    virtual_gateway_name: str
    gateway_route_name: str
    metadata: ResourceMetadata
    spec: _spec_pb2.GatewayRouteSpec
    status: _spec_pb2.GatewayRouteStatus
    def __init__(self, mesh_name: _Optional[str] = ..., virtual_gateway_name: _Optional[str] = ..., gateway_route_name: _Optional[str] = ..., metadata: _Optional[_Union[ResourceMetadata, _Mapping]] = ..., spec: _Optional[_Union[_spec_pb2.GatewayRouteSpec, _Mapping]] = ..., status: _Optional[_Union[_spec_pb2.GatewayRouteStatus, _Mapping]] = ...) -> None: ...

class GatewayRouteRef(_message.Message):
    __slots__ = ("mesh_name", "virtual_gateway_name", "gateway_route_name", "arn", "created_at", "last_updated_at", "mesh_owner", "resource_owner", "version")
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    VIRTUAL_GATEWAY_NAME_FIELD_NUMBER: _ClassVar[int]
    GATEWAY_ROUTE_NAME_FIELD_NUMBER: _ClassVar[int]
    ARN_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    MESH_OWNER_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_OWNER_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    mesh_name: str
    virtual_gateway_name: str
    gateway_route_name: str
    arn: str
    created_at: _timestamp_pb2.Timestamp
    last_updated_at: _timestamp_pb2.Timestamp
    mesh_owner: str
    resource_owner: str
    version: int
    def __init__(self, mesh_name: _Optional[str] = ..., virtual_gateway_name: _Optional[str] = ..., gateway_route_name: _Optional[str] = ..., arn: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., mesh_owner: _Optional[str] = ..., resource_owner: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class CreateGatewayRouteRequest(_message.Message):
    __slots__ = ("mesh_name", "virtual_gateway_name", "gateway_route_name", "spec", "tags", "client_token", "mesh_owner")
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    VIRTUAL_GATEWAY_NAME_FIELD_NUMBER: _ClassVar[int]
    GATEWAY_ROUTE_NAME_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    CLIENT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    MESH_OWNER_FIELD_NUMBER: _ClassVar[int]
    mesh_name: str
    virtual_gateway_name: str
    gateway_route_name: str
    spec: _spec_pb2.GatewayRouteSpec
    tags: _containers.RepeatedCompositeFieldContainer[TagRef]
    client_token: str
    mesh_owner: str
    def __init__(self, mesh_name: _Optional[str] = ..., virtual_gateway_name: _Optional[str] = ..., gateway_route_name: _Optional[str] = ..., spec: _Optional[_Union[_spec_pb2.GatewayRouteSpec, _Mapping]] = ..., tags: _Optional[_Iterable[_Union[TagRef, _Mapping]]] = ..., client_token: _Optional[str] = ..., mesh_owner: _Optional[str] = ...) -> None: ...

class CreateGatewayRouteResponse(_message.Message):
    __slots__ = ("gateway_route",)
    GATEWAY_ROUTE_FIELD_NUMBER: _ClassVar[int]
    gateway_route: GatewayRouteData
    def __init__(self, gateway_route: _Optional[_Union[GatewayRouteData, _Mapping]] = ...) -> None: ...

class DescribeGatewayRouteRequest(_message.Message):
    __slots__ = ("mesh_name", "virtual_gateway_name", "gateway_route_name", "mesh_owner")
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    VIRTUAL_GATEWAY_NAME_FIELD_NUMBER: _ClassVar[int]
    GATEWAY_ROUTE_NAME_FIELD_NUMBER: _ClassVar[int]
    MESH_OWNER_FIELD_NUMBER: _ClassVar[int]
    mesh_name: str
    virtual_gateway_name: str
    gateway_route_name: str
    mesh_owner: str
    def __init__(self, mesh_name: _Optional[str] = ..., virtual_gateway_name: _Optional[str] = ..., gateway_route_name: _Optional[str] = ..., mesh_owner: _Optional[str] = ...) -> None: ...

class DescribeGatewayRouteResponse(_message.Message):
    __slots__ = ("gateway_route",)
    GATEWAY_ROUTE_FIELD_NUMBER: _ClassVar[int]
    gateway_route: GatewayRouteData
    def __init__(self, gateway_route: _Optional[_Union[GatewayRouteData, _Mapping]] = ...) -> None: ...

class UpdateGatewayRouteRequest(_message.Message):
    __slots__ = ("mesh_name", "virtual_gateway_name", "gateway_route_name", "spec", "client_token", "mesh_owner", "expected_version")
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    VIRTUAL_GATEWAY_NAME_FIELD_NUMBER: _ClassVar[int]
    GATEWAY_ROUTE_NAME_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    CLIENT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    MESH_OWNER_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    mesh_name: str
    virtual_gateway_name: str
    gateway_route_name: str
    spec: _spec_pb2.GatewayRouteSpec
    client_token: str
    mesh_owner: str
    expected_version: int
    def __init__(self, mesh_name: _Optional[str] = ..., virtual_gateway_name: _Optional[str] = ..., gateway_route_name: _Optional[str] = ..., spec: _Optional[_Union[_spec_pb2.GatewayRouteSpec, _Mapping]] = ..., client_token: _Optional[str] = ..., mesh_owner: _Optional[str] = ..., expected_version: _Optional[int] = ...) -> None: ...

class UpdateGatewayRouteResponse(_message.Message):
    __slots__ = ("gateway_route",)
    GATEWAY_ROUTE_FIELD_NUMBER: _ClassVar[int]
    gateway_route: GatewayRouteData
    def __init__(self, gateway_route: _Optional[_Union[GatewayRouteData, _Mapping]] = ...) -> None: ...

class DeleteGatewayRouteRequest(_message.Message):
    __slots__ = ("mesh_name", "virtual_gateway_name", "gateway_route_name", "mesh_owner", "expected_version")
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    VIRTUAL_GATEWAY_NAME_FIELD_NUMBER: _ClassVar[int]
    GATEWAY_ROUTE_NAME_FIELD_NUMBER: _ClassVar[int]
    MESH_OWNER_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    mesh_name: str
    virtual_gateway_name: str
    gateway_route_name: str
    mesh_owner: str
    expected_version: int
    def __init__(self, mesh_name: _Optional[str] = ..., virtual_gateway_name: _Optional[str] = ..., gateway_route_name: _Optional[str] = ..., mesh_owner: _Optional[str] = ..., expected_version: _Optional[int] = ...) -> None: ...

class DeleteGatewayRouteResponse(_message.Message):
    __slots__ = ("gateway_route",)
    GATEWAY_ROUTE_FIELD_NUMBER: _ClassVar[int]
    gateway_route: GatewayRouteData
    def __init__(self, gateway_route: _Optional[_Union[GatewayRouteData, _Mapping]] = ...) -> None: ...

class ListGatewayRoutesRequest(_message.Message):
    __slots__ = ("mesh_name", "virtual_gateway_name", "limit", "next_token", "mesh_owner")
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    VIRTUAL_GATEWAY_NAME_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    NEXT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    MESH_OWNER_FIELD_NUMBER: _ClassVar[int]
    mesh_name: str
    virtual_gateway_name: str
    limit: int
    next_token: str
    mesh_owner: str
    def __init__(self, mesh_name: _Optional[str] = ..., virtual_gateway_name: _Optional[str] = ..., limit: _Optional[int] = ..., next_token: _Optional[str] = ..., mesh_owner: _Optional[str] = ...) -> None: ...

class ListGatewayRoutesResponse(_message.Message):
    __slots__ = ("gateway_routes", "next_token")
    GATEWAY_ROUTES_FIELD_NUMBER: _ClassVar[int]
    NEXT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    gateway_routes: _containers.RepeatedCompositeFieldContainer[GatewayRouteRef]
    next_token: str
    def __init__(self, gateway_routes: _Optional[_Iterable[_Union[GatewayRouteRef, _Mapping]]] = ..., next_token: _Optional[str] = ...) -> None: ...

class TagResourceRequest(_message.Message):
    __slots__ = ("resource_arn", "tags")
    RESOURCE_ARN_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    resource_arn: str
    tags: _containers.RepeatedCompositeFieldContainer[TagRef]
    def __init__(self, resource_arn: _Optional[str] = ..., tags: _Optional[_Iterable[_Union[TagRef, _Mapping]]] = ...) -> None: ...

class TagResourceResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class UntagResourceRequest(_message.Message):
    __slots__ = ("resource_arn", "tag_keys")
    RESOURCE_ARN_FIELD_NUMBER: _ClassVar[int]
    TAG_KEYS_FIELD_NUMBER: _ClassVar[int]
    resource_arn: str
    tag_keys: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, resource_arn: _Optional[str] = ..., tag_keys: _Optional[_Iterable[str]] = ...) -> None: ...

class UntagResourceResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListTagsForResourceRequest(_message.Message):
    __slots__ = ("resource_arn", "limit", "next_token")
    RESOURCE_ARN_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    NEXT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    resource_arn: str
    limit: int
    next_token: str
    def __init__(self, resource_arn: _Optional[str] = ..., limit: _Optional[int] = ..., next_token: _Optional[str] = ...) -> None: ...

class ListTagsForResourceResponse(_message.Message):
    __slots__ = ("tags", "next_token")
    TAGS_FIELD_NUMBER: _ClassVar[int]
    NEXT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    tags: _containers.RepeatedCompositeFieldContainer[TagRef]
    next_token: str
    def __init__(self, tags: _Optional[_Iterable[_Union[TagRef, _Mapping]]] = ..., next_token: _Optional[str] = ...) -> None: ...

class TagList(_message.Message):
    __slots__ = ("tags",)
    TAGS_FIELD_NUMBER: _ClassVar[int]
    tags: _containers.RepeatedCompositeFieldContainer[TagRef]
    def __init__(self, tags: _Optional[_Iterable[_Union[TagRef, _Mapping]]] = ...) -> None: ...

class Locality(_message.Message):
    __slots__ = ("region", "zone", "sub_zone")
    REGION_FIELD_NUMBER: _ClassVar[int]
    ZONE_FIELD_NUMBER: _ClassVar[int]
    SUB_ZONE_FIELD_NUMBER: _ClassVar[int]
    region: str
    zone: str
    sub_zone: str
    def __init__(self, region: _Optional[str] = ..., zone: _Optional[str] = ..., sub_zone: _Optional[str] = ...) -> None: ...

class Instance(_message.Message):
    __slots__ = ("mesh_name", "virtual_node_name", "instance_id", "address", "port", "host", "health", "attributes", "lease_id", "ttl_seconds", "registered_at", "locality")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    VIRTUAL_NODE_NAME_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_AT_FIELD_NUMBER: _ClassVar[int]
    LOCALITY_FIELD_NUMBER: _ClassVar[int]
    mesh_name: str
    virtual_node_name: str
    instance_id: str
    address: str
    port: int
    host: str
    health: str
    attributes: _containers.ScalarMap[str, str]
    lease_id: int
    ttl_seconds: int
    registered_at: _timestamp_pb2.Timestamp
    locality: Locality
    def __init__(self, mesh_name: _Optional[str] = ..., virtual_node_name: _Optional[str] = ..., instance_id: _Optional[str] = ..., address: _Optional[str] = ..., port: _Optional[int] = ..., host: _Optional[str] = ..., health: _Optional[str] = ..., attributes: _Optional[_Mapping[str, str]] = ..., lease_id: _Optional[int] = ..., ttl_seconds: _Optional[int] = ..., registered_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., locality: _Optional[_Union[Locality, _Mapping]] = ...) -> None: ...

class RegisterInstanceRequest(_message.Message):
    __slots__ = ("mesh_name", "virtual_node_name", "instance_id", "address", "port", "attributes", "ttl_seconds", "health", "locality")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    VIRTUAL_NODE_NAME_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    LOCALITY_FIELD_NUMBER: _ClassVar[int]
    mesh_name: str
    virtual_node_name: str
    instance_id: str
    address: str
    port: int
    attributes: _containers.ScalarMap[str, str]
    ttl_seconds: int
    health: str
    locality: Locality
    def __init__(self, mesh_name: _Optional[str] = ..., virtual_node_name: _Optional[str] = ..., instance_id: _Optional[str] = ..., address: _Optional[str] = ..., port: _Optional[int] = ..., attributes: _Optional[_Mapping[str, str]] = ..., ttl_seconds: _Optional[int] = ..., health: _Optional[str] = ..., locality: _Optional[_Union[Locality, _Mapping]] = ...) -> None: ...

class RegisterInstanceResponse(_message.Message):
    __slots__ = ("instance",)
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    instance: Instance
    def __init__(self, instance: _Optional[_Union[Instance, _Mapping]] = ...) -> None: ...

class DeregisterInstanceRequest(_message.Message):
    __slots__ = ("mesh_name", "virtual_node_name", "instance_id")
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    VIRTUAL_NODE_NAME_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    mesh_name: str
    virtual_node_name: str
    instance_id: str
    def __init__(self, mesh_name: _Optional[str] = ..., virtual_node_name: _Optional[str] = ..., instance_id: _Optional[str] = ...) -> None: ...

class DeregisterInstanceResponse(_message.Message):
    __slots__ = ("instance",)
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    instance: Instance
    def __init__(self, instance: _Optional[_Union[Instance, _Mapping]] = ...) -> None: ...

class ListInstancesRequest(_message.Message):
    __slots__ = ("mesh_name", "virtual_node_name", "limit", "next_token")
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    VIRTUAL_NODE_NAME_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    NEXT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    mesh_name: str
    virtual_node_name: str
    limit: int
    next_token: str
    def __init__(self, mesh_name: _Optional[str] = ..., virtual_node_name: _Optional[str] = ..., limit: _Optional[int] = ..., next_token: _Optional[str] = ...) -> None: ...

class ListInstancesResponse(_message.Message):
    __slots__ = ("instances", "next_token")
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    NEXT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    instances: _containers.RepeatedCompositeFieldContainer[Instance]
    next_token: str
    def __init__(self, instances: _Optional[_Iterable[_Union[Instance, _Mapping]]] = ..., next_token: _Optional[str] = ...) -> None: ...

class Host(_message.Message):
    __slots__ = ("host_name", "version", "admin_address", "metrics_address", "started_at", "applied_revision", "config_generation", "lease_id", "updated_at", "data_plane")
    HOST_NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ADMIN_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    METRICS_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    APPLIED_REVISION_FIELD_NUMBER: _ClassVar[int]
    CONFIG_GENERATION_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    DATA_PLANE_FIELD_NUMBER: _ClassVar[int]
    host_name: str
    version: str
    admin_address: str
    metrics_address: str
    started_at: _timestamp_pb2.Timestamp
    applied_revision: int
    config_generation: int
    lease_id: int
    updated_at: _timestamp_pb2.Timestamp
    data_plane: bool
    def __init__(self, host_name: _Optional[str] = ..., version: _Optional[str] = ..., admin_address: _Optional[str] = ..., metrics_address: _Optional[str] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., applied_revision: _Optional[int] = ..., config_generation: _Optional[int] = ..., lease_id: _Optional[int] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., data_plane: _Optional[bool] = ...) -> None: ...

class ListHostsRequest(_message.Message):
    __slots__ = ("limit", "next_token")
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    NEXT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    limit: int
    next_token: str
    def __init__(self, limit: _Optional[int] = ..., next_token: _Optional[str] = ...) -> None: ...

class ListHostsResponse(_message.Message):
    __slots__ = ("hosts", "next_token", "revision", "config_revision")
    HOSTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    CONFIG_REVISION_FIELD_NUMBER: _ClassVar[int]
    hosts: _containers.RepeatedCompositeFieldContainer[Host]
    next_token: str
    revision: int
    config_revision: int
    def __init__(self, hosts: _Optional[_Iterable[_Union[Host, _Mapping]]] = ..., next_token: _Optional[str] = ..., revision: _Optional[int] = ..., config_revision: _Optional[int] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("mesh_name", "resume_revision")
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    RESUME_REVISION_FIELD_NUMBER: _ClassVar[int]
    mesh_name: str
    resume_revision: int
    def __init__(self, mesh_name: _Optional[str] = ..., resume_revision: _Optional[int] = ...) -> None: ...

class Resource(_message.Message):
    __slots__ = ("mesh", "virtual_node", "virtual_service", "virtual_router", "route", "virtual_gateway", "gateway_route", "instance", "route_policy", "node_policy", "rollout")
    MESH_FIELD_NUMBER: _ClassVar[int]
    VIRTUAL_NODE_FIELD_NUMBER: _ClassVar[int]
    VIRTUAL_SERVICE_FIELD_NUMBER: _ClassVar[int]
    VIRTUAL_ROUTER_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    VIRTUAL_GATEWAY_FIELD_NUMBER: _ClassVar[int]
    GATEWAY_ROUTE_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    ROUTE_POLICY_FIELD_NUMBER: _ClassVar[int]
    NODE_POLICY_FIELD_NUMBER: _ClassVar[int]
    ROLLOUT_FIELD_NUMBER: _ClassVar[int]
    mesh: MeshData
    virtual_node: VirtualNodeData
    virtual_service: VirtualServiceData
    virtual_router: VirtualRouterData
    route: RouteData
    virtual_gateway: VirtualGatewayData
    gateway_route: GatewayRouteData
    instance: Instance
    route_policy: RoutePolicyData
    node_policy: NodePolicyData
    rollout: RolloutData
    def __init__(self, mesh: _Optional[_Union[MeshData, _Mapping]] = ..., virtual_node: _Optional[_Union[VirtualNodeData, _Mapping]] = ..., virtual_service: _Optional[_Union[VirtualServiceData, _Mapping]] = ..., virtual_router: _Optional[_Union[VirtualRouterData, _Mapping]] = ..., route: _Optional[_Union[RouteData, _Mapping]] = ..., virtual_gateway: _Optional[_Union[VirtualGatewayData, _Mapping]] = ..., gateway_route: _Optional[_Union[GatewayRouteData, _Mapping]] = ..., instance: _Optional[_Union[Instance, _Mapping]] = ..., route_policy: _Optional[_Union[RoutePolicyData, _Mapping]] = ..., node_policy: _Optional[_Union[NodePolicyData, _Mapping]] = ..., rollout: _Optional[_Union[RolloutData, _Mapping]] = ...) -> None: ...

class ResourceEvent(_message.Message):
    __slots__ = ("type", "kind", "path", "resource", "revision")
    class Type(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        TYPE_UNSPECIFIED: _ClassVar[ResourceEvent.Type]
        PUT: _ClassVar[ResourceEvent.Type]
        DELETE: _ClassVar[ResourceEvent.Type]
    TYPE_UNSPECIFIED: ResourceEvent.Type
    PUT: ResourceEvent.Type
    DELETE: ResourceEvent.Type
    TYPE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    type: ResourceEvent.Type
    kind: str
    path: str
    resource: Resource
    revision: int
    def __init__(self, type: _Optional[_Union[ResourceEvent.Type, str]] = ..., kind: _Optional[str] = ..., path: _Optional[str] = ..., resource: _Optional[_Union[Resource, _Mapping]] = ..., revision: _Optional[int] = ...) -> None: ...

class WatchResponse(_message.Message):
    __slots__ = ("revision", "events", "reset", "snapshot_done", "compacted_revision")
    REVISION_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    RESET_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_DONE_FIELD_NUMBER: _ClassVar[int]
    COMPACTED_REVISION_FIELD_NUMBER: _ClassVar[int]
    revision: int
    events: _containers.RepeatedCompositeFieldContainer[ResourceEvent]
    reset: bool
    snapshot_done: bool
    compacted_revision: int
    def __init__(self, revision: _Optional[int] = ..., events: _Optional[_Iterable[_Union[ResourceEvent, _Mapping]]] = ..., reset: _Optional[bool] = ..., snapshot_done: _Optional[bool] = ..., compacted_revision: _Optional[int] = ...) -> None: ...

class RoutePolicyData(_message.Message):
    __slots__ = ("mesh_name", "route_policy_name", "metadata", "spec", "status")
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    ROUTE_POLICY_NAME_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    mesh_name: str
    route_policy_name: str
    metadata: ResourceMetadata
    spec: _spec_pb2.RoutePolicySpec
    status: _spec_pb2.RoutePolicyStatus
    def __init__(self, mesh_name: _Optional[str] = ..., route_policy_name: _Optional[str] = ..., metadata: _Optional[_Union[ResourceMetadata, _Mapping]] = ..., spec: _Optional[_Union[_spec_pb2.RoutePolicySpec, _Mapping]] = ..., status: _Optional[_Union[_spec_pb2.RoutePolicyStatus, _Mapping]] = ...) -> None: ...

class RoutePolicyRef(_message.Message):
    __slots__ = ("mesh_name", "route_policy_name", "arn", "created_at", "last_updated_at", "mesh_owner", "resource_owner", "version")
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    ROUTE_POLICY_NAME_FIELD_NUMBER: _ClassVar[int]
    ARN_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    MESH_OWNER_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_OWNER_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    mesh_name: str
    route_policy_name: str
    arn: str
    created_at: _timestamp_pb2.Timestamp
    last_updated_at: _timestamp_pb2.Timestamp
    mesh_owner: str
    resource_owner: str
    version: int
    def __init__(self, mesh_name: _Optional[str] = ..., route_policy_name: _Optional[str] = ..., arn: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., mesh_owner: _Optional[str] = ..., resource_owner: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class CreateRoutePolicyRequest(_message.Message):
    __slots__ = ("mesh_name", "route_policy_name", "spec", "tags", "client_token", "mesh_owner")
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    ROUTE_POLICY_NAME_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    CLIENT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    MESH_OWNER_FIELD_NUMBER: _ClassVar[int]
    mesh_name: str
    route_policy_name: str
    spec: _spec_pb2.RoutePolicySpec
    tags: _containers.RepeatedCompositeFieldContainer[TagRef]
    client_token: str
    mesh_owner: str
    def __init__(self, mesh_name: _Optional[str] = ..., route_policy_name: _Optional[str] = ..., spec: _Optional[_Union[_spec_pb2.RoutePolicySpec, _Mapping]] = ..., tags: _Optional[_Iterable[_Union[TagRef, _Mapping]]] = ..., client_token: _Optional[str] = ..., mesh_owner: _Optional[str] = ...) -> None: ...

class CreateRoutePolicyResponse(_message.Message):
    __slots__ = ("route_policy",)
    ROUTE_POLICY_FIELD_NUMBER: _ClassVar[int]
    route_policy: RoutePolicyData
    def __init__(self, route_policy: _Optional[_Union[RoutePolicyData, _Mapping]] = ...) -> None: ...

class DescribeRoutePolicyRequest(_message.Message):
    __slots__ = ("mesh_name", "route_policy_name", "mesh_owner")
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    ROUTE_POLICY_NAME_FIELD_NUMBER: _ClassVar[int]
    MESH_OWNER_FIELD_NUMBER: _ClassVar[int]
    mesh_name: str
    route_policy_name: str
    mesh_owner: str
    def __init__(self, mesh_name: _Optional[str] = ..., route_policy_name: _Optional[str] = ..., mesh_owner: _Optional[str] = ...) -> None: ...

class DescribeRoutePolicyResponse(_message.Message):
    __slots__ = ("route_policy",)
    ROUTE_POLICY_FIELD_NUMBER: _ClassVar[int]
    route_policy: RoutePolicyData
    def __init__(self, route_policy: _Optional[_Union[RoutePolicyData, _Mapping]] = ...) -> None: ...

class UpdateRoutePolicyRequest(_message.Message):
    __slots__ = ("mesh_name", "route_policy_name", "spec", "client_token", "mesh_owner", "expected_version")
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    ROUTE_POLICY_NAME_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    CLIENT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    MESH_OWNER_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    mesh_name: str
    route_policy_name: str
    spec: _spec_pb2.RoutePolicySpec
    client_token: str
    mesh_owner: str
    expected_version: int
    def __init__(self, mesh_name: _Optional[str] = ..., route_policy_name: _Optional[str] = ..., spec: _Optional[_Union[_spec_pb2.RoutePolicySpec, _Mapping]] = ..., client_token: _Optional[str] = ..., mesh_owner: _Optional[str] = ..., expected_version: _Optional[int] = ...) -> None: ...

class UpdateRoutePolicyResponse(_message.Message):
    __slots__ = ("route_policy",)
    ROUTE_POLICY_FIELD_NUMBER: _ClassVar[int]
    route_policy: RoutePolicyData
    def __init__(self, route_policy: _Optional[_Union[RoutePolicyData, _Mapping]] = ...) -> None: ...

class DeleteRoutePolicyRequest(_message.Message):
    __slots__ = ("mesh_name", "route_policy_name", "mesh_owner", "expected_version")
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    ROUTE_POLICY_NAME_FIELD_NUMBER: _ClassVar[int]
    MESH_OWNER_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    mesh_name: str
    route_policy_name: str
    mesh_owner: str
    expected_version: int
    def __init__(self, mesh_name: _Optional[str] = ..., route_policy_name: _Optional[str] = ..., mesh_owner: _Optional[str] = ..., expected_version: _Optional[int] = ...) -> None: ...

class DeleteRoutePolicyResponse(_message.Message):
    __slots__ = ("route_policy",)
    ROUTE_POLICY_FIELD_NUMBER: _ClassVar[int]
    route_policy: RoutePolicyData
    def __init__(self, route_policy: _Optional[_Union[RoutePolicyData, _Mapping]] = ...) -> None: ...

class ListRoutePolicysRequest(_message.Message):
    __slots__ = ("mesh_name", "limit", "next_token", "mesh_owner")
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    NEXT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    MESH_OWNER_FIELD_NUMBER: _ClassVar[int]
    mesh_name: str
    limit: int
    next_token: str
    mesh_owner: str
    def __init__(self, mesh_name: _Optional[str] = ..., limit: _Optional[int] = ..., next_token: _Optional[str] = ..., mesh_owner: _Optional[str] = ...) -> None: ...

class ListRoutePolicysResponse(_message.Message):
    __slots__ = ("route_policys", "next_token")
    ROUTE_POLICYS_FIELD_NUMBER: _ClassVar[int]
    NEXT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    route_policys: _containers.RepeatedCompositeFieldContainer[RoutePolicyRef]
    next_token: str
    def __init__(self, route_policys: _Optional[_Iterable[_Union[RoutePolicyRef, _Mapping]]] = ..., next_token: _Optional[str] = ...) -> None: ...

class NodePolicyData(_message.Message):
    __slots__ = ("mesh_name", "node_policy_name", "metadata", "spec", "status")
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    NODE_POLICY_NAME_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    mesh_name: str
    node_policy_name: str
    metadata: ResourceMetadata
    spec: _spec_pb2.NodePolicySpec
    status: _spec_pb2.NodePolicyStatus
    def __init__(self, mesh_name: _Optional[str] = ..., node_policy_name: _Optional[str] = ..., metadata: _Optional[_Union[ResourceMetadata, _Mapping]] = ..., spec: _Optional[_Union[_spec_pb2.NodePolicySpec, _Mapping]] = ..., status: _Optional[_Union[_spec_pb2.NodePolicyStatus, _Mapping]] = ...) -> None: ...

class NodePolicyRef(_message.Message):
    __slots__ = ("mesh_name", "node_policy_name", "arn", "created_at", "last_updated_at", "mesh_owner", "resource_owner", "version")
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    NODE_POLICY_NAME_FIELD_NUMBER: _ClassVar[int]
    ARN_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    MESH_OWNER_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_OWNER_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    mesh_name: str
    node_policy_name: str
    arn: str
    created_at: _timestamp_pb2.Timestamp
    last_updated_at: _timestamp_pb2.Timestamp
    mesh_owner: str
    resource_owner: str
    version: int
    def __init__(self, mesh_name: _Optional[str] = ..., node_policy_name: _Optional[str] = ..., arn: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., mesh_owner: _Optional[str] = ..., resource_owner: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class CreateNodePolicyRequest(_message.Message):
    __slots__ = ("mesh_name", "node_policy_name", "spec", "tags", "client_token", "mesh_owner")
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    NODE_POLICY_NAME_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    CLIENT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    MESH_OWNER_FIELD_NUMBER: _ClassVar[int]
    mesh_name: str
    node_policy_name: str
    spec: _spec_pb2.NodePolicySpec
    tags: _containers.RepeatedCompositeFieldContainer[TagRef]
    client_token: str
    mesh_owner: str
    def __init__(self, mesh_name: _Optional[str] = ..., node_policy_name: _Optional[str] = ..., spec: _Optional[_Union[_spec_pb2.NodePolicySpec, _Mapping]] = ..., tags: _Optional[_Iterable[_Union[TagRef, _Mapping]]] = ..., client_token: _Optional[str] = ..., mesh_owner: _Optional[str] = ...) -> None: ...

class CreateNodePolicyResponse(_message.Message):
    __slots__ = ("node_policy",)
    NODE_POLICY_FIELD_NUMBER: _ClassVar[int]
    node_policy: NodePolicyData
    def __init__(self, node_policy: _Optional[_Union[NodePolicyData, _Mapping]] = ...) -> None: ...

class DescribeNodePolicyRequest(_message.Message):
    __slots__ = ("mesh_name", "node_policy_name", "mesh_owner")
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    NODE_POLICY_NAME_FIELD_NUMBER: _ClassVar[int]
    MESH_OWNER_FIELD_NUMBER: _ClassVar[int]
    mesh_name: str
    node_policy_name: str
    mesh_owner: str
    def __init__(self, mesh_name: _Optional[str] = ..., node_policy_name: _Optional[str] = ..., mesh_owner: _Optional[str] = ...) -> None: ...

class DescribeNodePolicyResponse(_message.Message):
    __slots__ = ("node_policy",)
    NODE_POLICY_FIELD_NUMBER: _ClassVar[int]
    node_policy: NodePolicyData
    def __init__(self, node_policy: _Optional[_Union[NodePolicyData, _Mapping]] = ...) -> None: ...

class UpdateNodePolicyRequest(_message.Message):
    __slots__ = ("mesh_name", "node_policy_name", "spec", "client_token", "mesh_owner", "expected_version")
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    NODE_POLICY_NAME_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    CLIENT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    MESH_OWNER_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    mesh_name: str
    node_policy_name: str
    spec: _spec_pb2.NodePolicySpec
    client_token: str
    mesh_owner: str
    expected_version: int
    def __init__(self, mesh_name: _Optional[str] = ..., node_policy_name: _Optional[str] = ..., spec: _Optional[_Union[_spec_pb2.NodePolicySpec, _Mapping]] = ..., client_token: _Optional[str] = ..., mesh_owner: _Optional[str] = ..., expected_version: _Optional[int] = ...) -> None: ...

class UpdateNodePolicyResponse(_message.Message):
    __slots__ = ("node_policy",)
    NODE_POLICY_FIELD_NUMBER: _ClassVar[int]
    node_policy: NodePolicyData
    def __init__(self, node_policy: _Optional[_Union[NodePolicyData, _Mapping]] = ...) -> None: ...

class DeleteNodePolicyRequest(_message.Message):
    __slots__ = ("mesh_name", "node_policy_name", "mesh_owner", "expected_version")
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    NODE_POLICY_NAME_FIELD_NUMBER: _ClassVar[int]
    MESH_OWNER_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    mesh_name: str
    node_policy_name: str
    mesh_owner: str
    expected_version: int
    def __init__(self, mesh_name: _Optional[str] = ..., node_policy_name: _Optional[str] = ..., mesh_owner: _Optional[str] = ..., expected_version: _Optional[int] = ...) -> None: ...

class DeleteNodePolicyResponse(_message.Message):
    __slots__ = ("node_policy",)
    NODE_POLICY_FIELD_NUMBER: _ClassVar[int]
    node_policy: NodePolicyData
    def __init__(self, node_policy: _Optional[_Union[NodePolicyData, _Mapping]] = ...) -> None: ...

class ListNodePolicysRequest(_message.Message):
    __slots__ = ("mesh_name", "limit", "next_token", "mesh_owner")
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    NEXT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    MESH_OWNER_FIELD_NUMBER: _ClassVar[int]
    mesh_name: str
    limit: int
    next_token: str
    mesh_owner: str
    def __init__(self, mesh_name: _Optional[str] = ..., limit: _Optional[int] = ..., next_token: _Optional[str] = ..., mesh_owner: _Optional[str] = ...) -> None: ...

class ListNodePolicysResponse(_message.Message):
    __slots__ = ("node_policys", "next_token")
    NODE_POLICYS_FIELD_NUMBER: _ClassVar[int]
    NEXT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    node_policys: _containers.RepeatedCompositeFieldContainer[NodePolicyRef]
    next_token: str
    def __init__(self, node_policys: _Optional[_Iterable[_Union[NodePolicyRef, _Mapping]]] = ..., next_token: _Optional[str] = ...) -> None: ...

class RolloutData(_message.Message):
    __slots__ = ("mesh_name", "rollout_name", "metadata", "spec", "status")
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    ROLLOUT_NAME_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    mesh_name: str
    rollout_name: str
    metadata: ResourceMetadata
    spec: _spec_pb2.RolloutSpec
    status: _spec_pb2.RolloutStatus
    def __init__(self, mesh_name: _Optional[str] = ..., rollout_name: _Optional[str] = ..., metadata: _Optional[_Union[ResourceMetadata, _Mapping]] = ..., spec: _Optional[_Union[_spec_pb2.RolloutSpec, _Mapping]] = ..., status: _Optional[_Union[_spec_pb2.RolloutStatus, _Mapping]] = ...) -> None: ...

class RolloutRef(_message.Message):
    __slots__ = ("mesh_name", "rollout_name", "arn", "created_at", "last_updated_at", "mesh_owner", "resource_owner", "version")
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    ROLLOUT_NAME_FIELD_NUMBER: _ClassVar[int]
    ARN_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    MESH_OWNER_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_OWNER_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    mesh_name: str
    rollout_name: str
    arn: str
    created_at: _timestamp_pb2.Timestamp
    last_updated_at: _timestamp_pb2.Timestamp
    mesh_owner: str
    resource_owner: str
    version: int
    def __init__(self, mesh_name: _Optional[str] = ..., rollout_name: _Optional[str] = ..., arn: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., mesh_owner: _Optional[str] = ..., resource_owner: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class CreateRolloutRequest(_message.Message):
    __slots__ = ("mesh_name", "rollout_name", "spec", "tags", "client_token", "mesh_owner")
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    ROLLOUT_NAME_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    CLIENT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    MESH_OWNER_FIELD_NUMBER: _ClassVar[int]
    mesh_name: str
    rollout_name: str
    spec: _spec_pb2.RolloutSpec
    tags: _containers.RepeatedCompositeFieldContainer[TagRef]
    client_token: str
    mesh_owner: str
    def __init__(self, mesh_name: _Optional[str] = ..., rollout_name: _Optional[str] = ..., spec: _Optional[_Union[_spec_pb2.RolloutSpec, _Mapping]] = ..., tags: _Optional[_Iterable[_Union[TagRef, _Mapping]]] = ..., client_token: _Optional[str] = ..., mesh_owner: _Optional[str] = ...) -> None: ...

class CreateRolloutResponse(_message.Message):
    __slots__ = ("rollout",)
    ROLLOUT_FIELD_NUMBER: _ClassVar[int]
    rollout: RolloutData
    def __init__(self, rollout: _Optional[_Union[RolloutData, _Mapping]] = ...) -> None: ...

class DescribeRolloutRequest(_message.Message):
    __slots__ = ("mesh_name", "rollout_name", "mesh_owner")
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    ROLLOUT_NAME_FIELD_NUMBER: _ClassVar[int]
    MESH_OWNER_FIELD_NUMBER: _ClassVar[int]
    mesh_name: str
    rollout_name: str
    mesh_owner: str
    def __init__(self, mesh_name: _Optional[str] = ..., rollout_name: _Optional[str] = ..., mesh_owner: _Optional[str] = ...) -> None: ...

class DescribeRolloutResponse(_message.Message):
    __slots__ = ("rollout",)
    ROLLOUT_FIELD_NUMBER: _ClassVar[int]
    rollout: RolloutData
    def __init__(self, rollout: _Optional[_Union[RolloutData, _Mapping]] = ...) -> None: ...

class UpdateRolloutRequest(_message.Message):
    __slots__ = ("mesh_name", "rollout_name", "spec", "client_token", "mesh_owner", "expected_version")
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    ROLLOUT_NAME_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    CLIENT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    MESH_OWNER_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    mesh_name: str
    rollout_name: str
    spec: _spec_pb2.RolloutSpec
    client_token: str
    mesh_owner: str
    expected_version: int
    def __init__(self, mesh_name: _Optional[str] = ..., rollout_name: _Optional[str] = ..., spec: _Optional[_Union[_spec_pb2.RolloutSpec, _Mapping]] = ..., client_token: _Optional[str] = ..., mesh_owner: _Optional[str] = ..., expected_version: _Optional[int] = ...) -> None: ...

class UpdateRolloutResponse(_message.Message):
    __slots__ = ("rollout",)
    ROLLOUT_FIELD_NUMBER: _ClassVar[int]
    rollout: RolloutData
    def __init__(self, rollout: _Optional[_Union[RolloutData, _Mapping]] = ...) -> None: ...

class DeleteRolloutRequest(_message.Message):
    __slots__ = ("mesh_name", "rollout_name", "mesh_owner", "expected_version")
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    ROLLOUT_NAME_FIELD_NUMBER: _ClassVar[int]
    MESH_OWNER_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    mesh_name: str
    rollout_name: str
    mesh_owner: str
    expected_version: int
    def __init__(self, mesh_name: _Optional[str] = ..., rollout_name: _Optional[str] = ..., mesh_owner: _Optional[str] = ..., expected_version: _Optional[int] = ...) -> None: ...

class DeleteRolloutResponse(_message.Message):
    __slots__ = ("rollout",)
    ROLLOUT_FIELD_NUMBER: _ClassVar[int]
    rollout: RolloutData
    def __init__(self, rollout: _Optional[_Union[RolloutData, _Mapping]] = ...) -> None: ...

class ListRolloutsRequest(_message.Message):
    __slots__ = ("mesh_name", "limit", "next_token", "mesh_owner")
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    NEXT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    MESH_OWNER_FIELD_NUMBER: _ClassVar[int]
    mesh_name: str
    limit: int
    next_token: str
    mesh_owner: str
    def __init__(self, mesh_name: _Optional[str] = ..., limit: _Optional[int] = ..., next_token: _Optional[str] = ..., mesh_owner: _Optional[str] = ...) -> None: ...

class ListRolloutsResponse(_message.Message):
    __slots__ = ("rollouts", "next_token")
    ROLLOUTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    rollouts: _containers.RepeatedCompositeFieldContainer[RolloutRef]
    next_token: str
    def __init__(self, rollouts: _Optional[_Iterable[_Union[RolloutRef, _Mapping]]] = ..., next_token: _Optional[str] = ...) -> None: ...
