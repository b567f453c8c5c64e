"""`sepflow operators` gives every parameter of every operator its own sentence: each field of
each shipped operator's config dataclass has a description, and no two fields of one operator
share one (issue 18: paired entries such as ``max_iter, tol : ...`` copied one text onto both)."""
from __future__ import annotations

import dataclasses
import json

import pytest

from pipelines.cli import main
from pipelines.cli_operators import parameter_docs
from sepops import list_operators
from sepops.registry import operator_class

SHIPPED = [name for name in list_operators() if operator_class(name).__module__.startswith("sepops.")]


def test_the_shipped_operators_are_all_checked():
    assert {"hpss", "ica", "nmf", "repet", "repet_sim", "unet", "ibm", "irm", "ensemble"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_field_has_its_own_description(name):
    config = operator_class(name).Config
    docs = parameter_docs(config)
    fields = [f.name for f in dataclasses.fields(config)]
    assert [f for f in fields if not docs.get(f)] == []
    by_text: dict[str, list[str]] = {}
    for f in fields:
        by_text.setdefault(docs[f], []).append(f)
    assert {text: names for text, names in by_text.items() if len(names) > 1} == {}


@pytest.mark.parametrize(
    ("operator", "param", "needle"),
    [("ica", "alpha", "tanh(alpha * u)"), ("ica", "fun", "logcosh"), ("ica", "max_iter", "iterations"),
     ("ica", "tol", "converged"), ("nmf", "n_fft", "window"), ("nmf", "hop_length", "hop"),
     ("nmf", "n_iter", "iterations"), ("nmf", "tol", "stop"), ("nmf", "mask", "binary"),
     ("nmf", "power", "exponent"), ("unet", "segment_frames", "multiple of 64"),
     ("unet", "overlap_frames", "cross-faded"), ("repet", "min_period_s", "shortest"),
     ("repet", "max_period_s", "longest")],
)
def test_the_paired_parameters_say_what_each_one_is(operator, param, needle, capsys):
    assert main(["operators", operator, "--json"]) == 0
    (described,) = json.loads(capsys.readouterr().out)
    helps = {p["name"]: p["help"] for p in described["params"]}
    assert needle in helps[param], helps[param]
