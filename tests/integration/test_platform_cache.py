"""The composition root builds one platform per loop, however the call is spelled: a rebuild from inside the
API loop (the analytics stream's snapshot) would block that loop for good."""

from __future__ import annotations

from shared import runtime
from shared.app import platform
from shared.emulator_config import EmulatorConfig


def test_one_platform_per_loop_whatever_the_form_of_the_call(local_cloud: EmulatorConfig) -> None:
    first = platform()

    for _ in range(2):  # more distinct call forms than the old cache had slots
        platform(runtime.WORK_LOOP)
        platform(runtime.API_LOOP)
        platform(loop_name=runtime.API_LOOP)

    assert platform() is first
    assert platform(runtime.API_LOOP) is first
    assert platform(loop_name=runtime.API_LOOP) is first
    assert platform(runtime.WORK_LOOP) is not first


async def _from_inside_the_loop() -> bool:
    return platform() is platform(runtime.API_LOOP)


def test_a_call_from_inside_the_api_loop_finds_the_built_platform(local_cloud: EmulatorConfig) -> None:
    platform(runtime.WORK_LOOP)
    platform(runtime.API_LOOP)

    assert runtime.run(_from_inside_the_loop(), timeout=10) is True
