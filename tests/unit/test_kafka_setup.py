"""The broker's set-up values."""

from __future__ import annotations

import base64
import re

from tinysaga.infra import kafka


def test_cluster_ids_are_kafka_uuids_that_the_storage_tool_cannot_take_for_an_option() -> None:
    ids = {kafka._cluster_id() for _ in range(3000)}  # about 1 in 64 random ids starts with '-'
    assert len(ids) == 3000
    for cid in ids:
        assert re.fullmatch(r"[A-Za-z0-9_-]{22}", cid) and not cid.startswith("-")
        assert len(base64.urlsafe_b64decode(cid + "==")) == 16
