"""`dex up --distributed --replicas SERVICE=N`: N is 1 to 20 in ASCII digits, else refused."""

from __future__ import annotations

import click
import pytest

from dex.app.launch import parse_replicas


def test_replica_counts_from_1_to_20_are_taken() -> None:
    counts = parse_replicas(("matching-engine=2", "risk-engine=20", "gateway=1"))
    assert (counts["matching-engine"], counts["risk-engine"], counts["gateway"]) == (2, 20, 1)
    assert counts["persistence"] == 1  # unnamed services run once


@pytest.mark.parametrize(
    "spec",
    [
        "gateway=\u0663",  # Arabic-Indic 3
        "gateway=\u00b2",  # superscript 2
        "gateway=\uff12",  # fullwidth 2
        "gateway=0",
        "gateway=21",
        "gateway=02",
        "gateway= 2",
        "gateway=2\n",
        "gateway=+2",
        "gateway=",
        "gateway",
        "nope=2",
    ],
)
def test_anything_else_is_refused_naming_the_option(spec: str) -> None:
    with pytest.raises(click.BadParameter) as refused:
        parse_replicas((spec,))
    assert refused.value.param_hint == "--replicas"
