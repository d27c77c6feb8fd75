"""A running job's page in a real browser: its state, and its log growing as the replica
prints."""

from __future__ import annotations

import sys

from playwright.sync_api import expect

from corral.spec.job import JobSpec
from support.cluster import Cluster
from support.console import LogIn

# A numbered line every 0.3 s for about 18 s, then quiet but running (the cluster's teardown
# ends it): the checks on its running state never race its end on a loaded machine.
COUNTER = (
    "import time\nfor i in range(60): print('line', i, flush=True); time.sleep(0.3)\n"
    "time.sleep(600)"
)


def test_a_running_jobs_log_grows_on_its_page(cluster: Cluster, log_in: LogIn) -> None:
    cluster.agent("node-a", "--fake-gpus", "H100:1")
    cluster.wait_node_ready("node-a")
    with cluster.client() as client:
        spec = JobSpec(
            name="counter",
            command=f'{sys.executable} -c "{COUNTER}"',
            resources={"gpus": "H100:1"},
        )
        client.submit_job(spec)
    page = log_in(start="/ui/jobs/default/counter")
    expect(page.get_by_test_id("job-name")).to_have_text("counter")
    log = page.get_by_test_id("log")
    expect(log).to_contain_text("line 3")
    expect(page.get_by_test_id("state")).to_contain_text("running")  # the polled summary
    expect(log).to_contain_text("line 10")
    # Appended once each, in order: the stream went on from where it was.
    text = log.text_content() or ""
    assert text.count("line 1\n") == 1
    assert text.index("line 3\n") < text.index("line 10\n")
    expect(page.get_by_test_id("replicas")).to_contain_text("node-a")
    expect(page.get_by_test_id("attempt-1")).to_contain_text("running")
