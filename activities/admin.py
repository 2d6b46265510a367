"""Server set-up a workflow needs before it can use it: the portfolio's search attributes.

Registered by an activity (once per worker process) rather than only at worker start, so a
worker created on any server — a cluster, the embedded dev server, a test suite's time-skipping
server — never runs a workflow whose first upsert fails for want of an attribute.
"""

from __future__ import annotations

from temporalio import activity
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client
from temporalio.common import SearchAttributeIndexedValueType
from temporalio.service import RPCError, RPCStatusCode

from infra import search_attributes

_INDEXED = {
    SearchAttributeIndexedValueType.KEYWORD: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
    SearchAttributeIndexedValueType.INT: IndexedValueType.INDEXED_VALUE_TYPE_INT,
}


async def ensure_search_attributes(client: Client) -> bool:
    """Register each attribute unless the server has it already (idempotent, one request per
    attribute: a request naming an existing one fails whole). False if the server cannot
    register attributes at all, in which case the workflows do without them."""
    for key in search_attributes.ALL:
        request = AddSearchAttributesRequest(
            namespace=client.namespace, search_attributes={key.name: _INDEXED[key.indexed_value_type]}
        )
        try:
            await client.operator_service.add_search_attributes(request)
        except RPCError as exc:
            if exc.status == RPCStatusCode.UNIMPLEMENTED:
                return False
            if exc.status != RPCStatusCode.ALREADY_EXISTS:
                raise
    return True


class AdminActivities:
    def __init__(self, client: Client) -> None:
        self._client = client
        self._available: bool | None = None

    @activity.defn
    async def ensure_search_attributes(self) -> bool:
        """Make sure the portfolio's search attributes exist on this worker's server (checked
        once per worker process); False if the server cannot have them."""
        if self._available is None:
            self._available = await ensure_search_attributes(self._client)
        return self._available
