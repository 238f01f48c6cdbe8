"""Hostile ``SpeechDeployment`` specs (hypothesis): the shipped examples with values replaced by
random JSON, keys deleted or added, and random names. Validation either accepts the spec or names
what to fix (the ``InvalidSpec`` condition), never raises; an accepted spec plans and renders on any
cluster shape without an exception, and every rendered object is named."""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from hypothesis import given
from hypothesis import strategies as st

from oyez_operator.planning import NodeFacts, make_plan, resource_problems
from oyez_operator.reconcile import gpu_node_terms, validate
from oyez_operator.render import render_all
from oyez_operator.render_common import RenderContext
from oyez_operator.settings import OperatorSettings
from tests.fuzzing import fuzz_settings

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NODES = {
    "no nodes": [],
    "cpu only": [NodeFacts("cpu-1", {"kubernetes.io/os": "linux"}, 0)],
    "two tiers": [
        NodeFacts("t4", {"nvidia.com/gpu.product": "Tesla-T4"}, 1),
        NodeFacts("a100", {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-40GB"}, 8),
    ],
    "cordoned L4": [NodeFacts("l4", {"cloud.google.com/gke-accelerator": "nvidia-l4"}, 1, schedulable=False)],
}
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
    | st.sampled_from(["", "0", "-1", "1e309", "auto", "none", "T4", "500m", "16Gi", "x" * 300]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=3),
    max_leaves=8,
)


@cache
def example_specs() -> list[dict[str, Any]]:
    specs = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if isinstance(document, dict) and document.get("kind") == "SpeechDeployment":
                specs.append(document["spec"])
    assert len(specs) >= 5
    return specs


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, inner in value.items():
            found += _paths(inner, (*prefix, key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            found += _paths(inner, (*prefix, index))
    return found


@st.composite
def hostile_specs(draw: st.DrawFn) -> Any:
    spec: Any = copy.deepcopy(draw(st.sampled_from(example_specs())))
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(_paths(spec)))
        if not path:
            if draw(st.integers(0, 9)) == 0:
                spec = draw(JSON_VALUES)  # the whole spec is not even an object
            continue
        *parent_path, last = path
        parent = spec
        for step in parent_path:
            parent = parent[step]
        action = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
        if action == "replace":
            parent[last] = draw(JSON_VALUES)
        elif action == "delete":
            del parent[last]
        elif isinstance(parent, dict):
            parent[draw(st.text(max_size=12))] = draw(JSON_VALUES)
        if not isinstance(spec, dict):
            break
    return spec


def check_spec(name: str, spec: Any, nodes: list[NodeFacts], keda: bool) -> None:
    typed, problem = validate(name, spec)
    if typed is None:
        assert isinstance(problem, str) and problem.strip(), "an InvalidSpec condition names the problem"
        return
    assert problem is None
    settings = OperatorSettings()
    plan = make_plan(
        typed, nodes, keda_installed=keda, label_map=settings.gpu_labels, capacity=settings.capacity
    )
    if resource_problems(plan.resources):
        return  # reported as InvalidSpec by the reconciler
    ctx = RenderContext(
        name=name,
        namespace="speech",
        uid="0000",
        spec=typed,
        plan=plan,
        gpu_node_terms=gpu_node_terms(nodes, plan.tier.tier, settings.gpu_labels),
    )
    for desired in render_all(ctx):
        api_version, kind, object_name = desired.key
        assert api_version and kind and object_name.startswith(name)


def test_a_spec_that_is_not_an_object_is_named() -> None:
    for spec in ([1, 2], "plan: minimum", 5, [("plan", "minimum")]):
        typed, problem = validate("oyez", spec)
        assert typed is None and problem is not None and "spec: must be an object of fields" in problem


def test_every_example_renders() -> None:
    for spec in example_specs():
        typed, problem = validate("oyez", spec)
        assert typed is not None, problem
        check_spec("oyez", spec, NODES["two tiers"], keda=False)


@fuzz_settings(300)
@given(hostile_specs(), st.sampled_from(sorted(NODES)), st.booleans())
def test_hostile_specs_are_a_condition_or_a_render_never_a_crash(spec: Any, nodes: str, keda: bool) -> None:
    check_spec("oyez", spec, NODES[nodes], keda)


@fuzz_settings(150)
@given(st.text(max_size=80), st.sampled_from(range(6)))
def test_hostile_names_are_a_condition_or_a_render(name: str, example: int) -> None:
    check_spec(name, example_specs()[example % len(example_specs())], NODES["two tiers"], keda=True)
