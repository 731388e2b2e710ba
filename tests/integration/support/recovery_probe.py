"""A Faust worker that mirrors a source topic into a RocksDB table and serves the table as JSON.

Used by test_table_recovery.py: argv = app_id source_topic; settings from the CDR_* environment
(built with the project's own app factory, so the transport under test is the real one, unless
PROBE_PLAIN_TRANSPORT=1 asks for Faust's stock transport to show the defect).
"""

import os
import sys

from aiohttp import web

from cdr_mediation.agents.worker import prepare_topics, run_worker
from cdr_mediation.runtime import start_process
from cdr_mediation.topology.app import create_app
from cdr_mediation.topology.topics import TableSpec

app_id, source_name = sys.argv[1], sys.argv[2]
process = start_process("recovery-probe", worker=True, metrics=False)
settings = process.settings
app = create_app(settings, app_id=app_id)
if os.environ.get("PROBE_PLAIN_TRANSPORT") == "1":
    app.conf.broker = f"kafka://{settings.kafka_bootstrap}"

table_spec = TableSpec("probe-last", key="probe key", value="last value")
# Only this probe's own changelog: the source topic is the test's, the pipeline's are not ours.
prepare_topics(settings, (table_spec.changelog(app_id),))
source = app.topic(source_name, key_type=str, value_type=int, key_serializer="json",
                   value_serializer="json", partitions=settings.partitions)
table = app.Table(table_spec.name, default=int, partitions=settings.partitions)


@app.agent(source)
async def mirror(stream):
    async for key, value in stream.items():
        table[key] = value


@app.page("/probe/table")
async def show(web_view, request):
    recovered = app.tables.recovery.completed.is_set()
    values = dict(table.items()) if recovered else {}
    return web_view.json({"recovered": recovered, "values": values})


run_worker(app, settings)
