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


class Answer(ApiModel):
    """An answer of a closed shape: camelCase on the wire and no other field (`additionalProperties: false`),
    so the contract tests refuse a handler that adds, drops or retypes a field."""

    model_config = ConfigDict(extra="forbid")


class SeedAnswer(BaseModel):
    """A closed answer in a seed's own key names (Spanish, snake_case, the seed's few camelCase keys)."""

    model_config = ConfigDict(extra="forbid")
