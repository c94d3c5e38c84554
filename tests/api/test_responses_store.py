"""Stored responses live in the database (migration 5's `responses` table): they survive a server
restart, and a conversation continues from one after it; migration 5 adds the table to an older
database."""

from __future__ import annotations

import pytest

from tests.support.servers import LiveServer

GREEDY = dict(model="openft-tiny", temperature=0)


@pytest.mark.slow  # two server starts
def test_stored_response_survives_a_restart(tmp_path, model_cache):
    server = LiveServer(tmp_path / "data", model_cache).start()
    try:
        first = server.client().responses.create(input="My name is Ada.", max_output_tokens=3, **GREEDY)
    finally:
        server.stop()
    server = LiveServer(tmp_path / "data", model_cache).start()
    try:
        api = server.client()
        assert api.responses.retrieve(first.id).model_dump() == first.model_dump()
        second = api.responses.create(input="Who am I?", previous_response_id=first.id, max_output_tokens=3, **GREEDY)
        texts = [i.content[0].text for i in api.responses.input_items.list(second.id, order="asc").data]
        assert texts == ["My name is Ada.", first.output_text, "Who am I?"]
    finally:
        server.stop()


def test_migration_5_adds_the_responses_table_to_an_old_database(v1_database):
    import sqlalchemy as sa

    from openft.store import db as dbmod

    engine, old = v1_database
    assert "responses" not in old
    assert 5 in dbmod.migrate(engine)
    columns = {c["name"] for c in sa.inspect(engine).get_columns("responses")}
    assert {"id", "project_id", "seq", "input_items", "body", "previous_response_id"} <= columns
    assert dbmod.migrate(engine) == []  # recorded: not applied twice
