"""Cluster descriptions: the --gpus shorthand and YAML files with readable errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.sim.cluster import gpus_cluster, load_cluster, parse_cluster
from corral.spec.errors import SpecError

YAML = """\
providers:
  - name: aws
    regions:
      - name: us-east-1
        zones:
          - name: a
            racks:
              - name: nvl
                count: 2
                nodes: 18
                gpus: 4
                gpu_model: GB200
                gpu_memory: 186Gi
                cpus: 144
                memory: 864Gi
                price_per_gpu_hour: 6.0
  - name: lab
    regions:
      - name: home
        zones:
          - name: z
            racks:
              - {name: r, nodes: 2, gpus: 8, labels: {tier: dev}}
quotas:
  team-a: {GB200: 64}
"""


def test_gpus_shorthand() -> None:
    c = gpus_cluster(512)
    assert (len(c.nodes), c.total_gpus, c.max_gpus_per_node) == (64, 512, 8)
    assert c.nodes[5].topology == ("sim", "region-1", "zone-a", "rack-001", "node-0005")
    assert [n.gpus for n in gpus_cluster(20).nodes] == [8, 8, 4]


def test_yaml_cluster(tmp_path: Path) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text(YAML)
    c = load_cluster(path)
    assert len(c.nodes) == 38 and c.total_gpus == 2 * 18 * 4 + 16
    first = c.nodes[0]
    assert first.topology == ("aws", "us-east-1", "a", "nvl-0", "aws-us-east-1-a-nvl-0-n0")
    assert (first.gpu_memory_mb, first.memory_mb, first.price_per_gpu_hour) == (
        186 * 1024,
        864 * 1024,
        6.0,
    )
    assert c.nodes[-1].labels == {"tier": "dev"}
    assert c.quotas == {"team-a": {"GB200": 64}}


def test_yaml_errors_name_the_field() -> None:
    bad = {
        "providers": [
            {
                "name": "x",
                "regions": [
                    {
                        "name": "r",
                        "zones": [
                            {
                                "name": "z",
                                "racks": [{"name": "k", "nodes": 0, "gpus": 8, "colour": "red"}],
                            }
                        ],
                    }
                ],
            }
        ]
    }
    with pytest.raises(SpecError) as info:
        parse_cluster(bad, "c.yaml")
    paths = {e.path for e in info.value.errors}
    assert paths == {
        "providers[0].regions[0].zones[0].racks[0].nodes",
        "providers[0].regions[0].zones[0].racks[0].colour",
    }
    with pytest.raises(SpecError, match="expected a mapping"):
        parse_cluster([1, 2], "c.yaml")
