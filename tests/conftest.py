"""Shared fixtures: where the reference data in ../shared lives, skipping when it is absent."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
H200_PROFILE = SHARED / "profiles" / "h200-llama3.1-8b-fp8-tp1"
AZURE_TRACE = SHARED / "traces" / "azure-llm-2023-conv.csv"
MOONCAKE_TRACE = SHARED / "traces" / "mooncake-conversation.jsonl"


@pytest.fixture
def h200_profile_dir() -> Path:
    if not (H200_PROFILE / "prefill_raw_data.npz").exists():
        pytest.skip(f"reference profile not found at {H200_PROFILE} (../shared is absent)")
    return H200_PROFILE


@pytest.fixture
def azure_trace() -> Path:
    if not AZURE_TRACE.exists():
        pytest.skip(f"reference trace not found at {AZURE_TRACE} (../shared is absent)")
    return AZURE_TRACE


@pytest.fixture
def mooncake_trace() -> Path:
    if not MOONCAKE_TRACE.exists():
        pytest.skip(f"reference trace not found at {MOONCAKE_TRACE} (../shared is absent)")
    return MOONCAKE_TRACE
