"""The answer contract: a real answer of a route is validated against the model its route table declares for
that status, strictly (no coercion: `"1"` is not an integer nor `1.5` one; keys by their wire names only; a
closed model refuses any other key). The e2e tests hold every route's real answers to it; the unit tests show
it refuses an extra key, a missing key and a wrong type."""

from __future__ import annotations

from pydantic import BaseModel, ValidationError

from shared.api import JSON, Reply, Route


class AnswerMismatch(AssertionError):
    """An answer that is not what its route's document says."""


def reply_for(route: Route, status: int) -> Reply:
    for reply in route.replies:
        if reply.status == status:
            return reply
    documented = [reply.status for reply in route.replies]
    raise AnswerMismatch(f"{route.method} {route.path} answered {status}, documented {documented}")


def shapes(reply: Reply) -> list[type[BaseModel]]:
    """The models an answer may have: the reply's model and its alternatives (anyOf)."""
    return ([reply.model] if reply.model is not None else []) + list(reply.alternatives)


def check_answer(route: Route, *, status: int, media_type: str, body: bytes) -> BaseModel | None:
    """The answer as its model (None for a reply without a JSON body); AnswerMismatch otherwise."""
    reply = reply_for(route, status)
    models = shapes(reply)
    if not models and reply.schema is None:
        return None  # no body (a redirect)
    if not media_type.startswith(reply.media_type):
        raise AnswerMismatch(f"{route.method} {route.path}: {media_type}, documented {reply.media_type}")
    if reply.media_type != JSON:
        return None
    problems: list[str] = []
    for model in models:
        try:
            return model.model_validate_json(body, strict=True, by_alias=True, by_name=False)
        except ValidationError as exc:
            problems.append(f"{model.__name__}: {exc}")
    raise AnswerMismatch(f"{route.method} {route.path} {status}:\n" + "\n".join(problems))
