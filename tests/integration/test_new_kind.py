"""A kind added as the README shows (one module, one entry in the table) runs on the engine unchanged: the
real Firestore adapter and the Gemini emulator; the test plays the deliveries Cloud Tasks would make."""

from __future__ import annotations

import dataclasses
import json
from typing import Any, ClassVar

from pydantic import BaseModel, Field, TypeAdapter

from shared import runtime
from shared.app import platform
from shared.emulator_config import EmulatorConfig
from shared.kinds.base import ItemContext, Kind, KindRequest, Plan, Ports
from shared.kinds.registry import KINDS
from shared.models.auth import Principal, Role
from shared.models.batch import WorkMessage
from shared.ports import ModelCall
from shared.services import batches, status
from shared.services.engine import Engine
from shared.services.finalizer import finalize
from shared.services.worker import process_chunk
from tests.integration.engine_harness import RecordingQueue


# --- the README's example kind, as a newcomer writes it --------------------------------------------------
class TranslateRequest(KindRequest):
    texts: list[str] = Field(min_length=1)
    target: str


class Line(BaseModel):
    text: str


class Translate(Kind[TranslateRequest, Line]):
    name: ClassVar[str] = "translate"
    request_model: ClassVar[type[KindRequest]] = TranslateRequest
    item_adapter: ClassVar[TypeAdapter[Any]] = TypeAdapter(list[Line])

    async def plan(
        self, request: TranslateRequest, *, tenant: str, batch_id: str, ports: Ports
    ) -> Plan[Line]:
        return Plan(
            items=[Line(text=t) for t in request.texts],
            custom_ids=[None] * len(request.texts),
            params={"target": request.target},
        )

    async def run(self, item: Line, ctx: ItemContext) -> dict[str, Any]:
        reply = await ctx.generate(
            ModelCall(
                model="gemini-2.5-flash",
                prompt=item.text,
                system_instruction=f"Translate to {ctx.params['target']}.",
                temperature=None,
                max_tokens=None,
                timeout_s=ctx.timeout_s,
            )
        )
        return {"translation": reply.text}


# ---------------------------------------------------------------------------------------------------------


def test_a_kind_of_one_module_runs_on_the_engine(local_cloud: EmulatorConfig, unique: str) -> None:
    engine: Engine = dataclasses.replace(
        platform().engine,
        kinds={**KINDS, "translate": Translate()},
        queue=RecordingQueue(),  # type: ignore[arg-type]
    )
    principal = Principal(tenant=f"newkind-{unique}", role=Role.USER)
    body = json.dumps(
        {"texts": ["hello", "EMULATOR_FAIL_400 no"], "target": "German", "options": {"wait": False}}
    )

    accepted, code = runtime.run(
        batches.submit(
            engine=engine,
            principal=principal,
            kind_name="translate",
            body=body.encode(),
            idempotency_key=None,
            caller=batches.CallerInfo(remote_addr="127.0.0.1", user_agent="test"),
        )
    )
    runtime.run(
        process_chunk(engine=engine, message=WorkMessage(batch_id=accepted.batch_id, chunk=0), retry_count=0)
    )
    # The end of the lane fanned the batch in itself; a finalize task delivered later changes nothing.
    assert runtime.run(finalize(engine=engine, batch_id=accepted.batch_id)) == {"outcome": "already final"}
    final = runtime.run(
        status.status(engine=engine, principal=principal, batch_id=accepted.batch_id, offset=0, limit=10)
    )

    assert code == 202 and (final.kind, final.status.value) == ("translate", "completed")
    ok, failed = final.results
    assert ok["success"] and ok["translation"] and ok["tokensUsed"] > 0
    assert (failed["success"], failed["error"]["code"], failed["error"]["status"]) == (
        False,
        "model_error",
        400,
    )
    assert final.summary is not None and (final.summary["successful"], final.summary["failed"]) == (1, 1)
