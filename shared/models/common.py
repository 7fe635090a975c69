"""Building blocks shared by the models."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class ClientModel(BaseModel):
    """Anything a client sends: unknown fields are rejected, so server-owned fields can never be set."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, alias_generator=to_camel, frozen=True)


class ApiModel(BaseModel):
    """Anything the API returns: camelCase on the wire."""

    model_config = ConfigDict(populate_by_name=True, alias_generator=to_camel, serialize_by_alias=True)
