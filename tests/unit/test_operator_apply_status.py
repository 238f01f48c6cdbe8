"""oyez_operator.apply's pure half (drift comparison, merge patches, quantities) and
oyez_operator.status_model (conditions, phase, transition times, Job state)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from oyez_operator.apply import matches, owned_by, patch_for, quantity_value, strip_nones
from oyez_operator.render import Desired
from oyez_operator.status_model import (
    CONDITION_TYPES,
    PHASES,
    Condition,
    JobState,
    Observed,
    Rollout,
    derive_conditions,
    derive_phase,
    invalid_spec_status,
    merge_conditions,
)

# --- matches -------------------------------------------------------------------------------------


def test_matches_ignores_fields_the_server_adds() -> None:
    desired = {"spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "a", "image": "x:1"}]}}}}
    live: dict[str, Any] = {
        "metadata": {"uid": "u", "resourceVersion": "7", "generation": 3},
        "spec": {
            "replicas": 2,
            "progressDeadlineSeconds": 600,
            "template": {
                "spec": {
                    "containers": [{"name": "a", "image": "x:1", "imagePullPolicy": "IfNotPresent"}],
                    "dnsPolicy": "ClusterFirst",
                }
            },
        },
        "status": {"readyReplicas": 1},
    }
    assert matches(desired, live)
    live["spec"]["template"]["spec"]["containers"][0]["image"] = "x:2"
    assert not matches(desired, live)


def test_matches_none_means_absent() -> None:
    assert matches({"nodeSelector": None}, {})
    assert matches({"nodeSelector": None}, {"nodeSelector": None})
    assert matches({"nodeSelector": None}, {"nodeSelector": {}})
    assert matches({"tolerations": None}, {"tolerations": []})
    assert not matches({"nodeSelector": None}, {"nodeSelector": {"pool": "gpu"}})
    assert not matches({"annotations": None}, {"annotations": {"a": "b"}})
    assert not matches({"priorityClassName": None}, {"priorityClassName": "high"})


def test_matches_empty_lists_and_maps_the_server_omits() -> None:
    # The API server drops empty lists/maps (omitempty): a deny-all NetworkPolicy comes back without
    # `ingress`; that must not read as drift, or every reconcile would patch it again.
    assert matches(
        {"spec": {"policyTypes": ["Ingress"], "ingress": []}}, {"spec": {"policyTypes": ["Ingress"]}}
    )
    assert matches({"emptyDir": {}}, {})
    assert not matches({"ingress": []}, {"ingress": [{"ports": [{"port": 80}]}]})
    assert not matches({"emptyDir": {}}, {"emptyDir": "x"})


def test_matches_missing_desired_values() -> None:
    assert not matches({"replicas": 2}, {})
    assert not matches({"spec": {"replicas": 2}}, {"spec": None})
    assert not matches({"spec": {"replicas": 2}}, {"spec": []})
    assert not matches({"a": "b"}, None)


def test_matches_lists_compare_by_position_and_length() -> None:
    assert matches([{"name": "a"}, {"name": "b"}], [{"name": "a", "x": 1}, {"name": "b"}])
    assert not matches([{"name": "a"}], [{"name": "a"}, {"name": "b"}])  # an extra live item is drift
    assert not matches([{"name": "a"}, {"name": "b"}], [{"name": "a"}])
    assert not matches([{"name": "a"}, {"name": "b"}], [{"name": "b"}, {"name": "a"}])
    assert not matches(["a"], "a")
    assert matches([], [])


@pytest.mark.parametrize(
    ("desired", "live"),
    [
        ("1Gi", "1024Mi"),
        ("500m", "0.5"),
        (2, "2"),
        ("2", 2),
        ("1k", "1000"),
        ("0.5Gi", "512Mi"),
        ("1e3", "1k"),
    ],
)
def test_matches_equivalent_quantities(desired: Any, live: Any) -> None:
    assert matches(
        {"resources": {"limits": {"memory": desired}}}, {"resources": {"limits": {"memory": live}}}
    )


@pytest.mark.parametrize(
    ("desired", "live"),
    [("1Gi", "1G"), ("500m", "5"), (2, "3"), ("1Mi", "1M"), ("2", "two"), ("json", "text"), (True, "true")],
)
def test_matches_different_quantities_and_strings(desired: Any, live: Any) -> None:
    assert not matches({"value": desired}, {"value": live})


def test_matches_scalars() -> None:
    assert matches(True, True)
    assert not matches(True, False)
    assert matches("ClusterIP", "ClusterIP")
    assert not matches("ClusterIP", "LoadBalancer")
    assert not matches(7100, None)


# --- quantities ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1Gi", Decimal(2**30)),
        ("1024Mi", Decimal(2**30)),
        ("500m", Decimal("0.5")),
        ("0.5", Decimal("0.5")),
        (2, Decimal(2)),
        ("16Gi", Decimal(16 * 2**30)),
        ("1k", Decimal(1000)),
        ("1M", Decimal(10**6)),
        ("100n", Decimal("1e-7")),
        ("1e3", Decimal(1000)),
        (" 3 ", Decimal(3)),
        ("-1", Decimal(-1)),
    ],
)
def test_quantity_value(text: Any, value: Decimal) -> None:
    assert quantity_value(text) == value


@pytest.mark.parametrize("junk", ["", "abc", "1Xi", "Gi", "1.2.3", ".", "1 Gi", "1gi", "1e", "--1", "1/2"])
def test_quantity_value_on_junk_is_none(junk: str) -> None:
    assert quantity_value(junk) is None


# --- strip_nones, patch_for ----------------------------------------------------------------------


def test_strip_nones_recurses_through_dicts_and_lists() -> None:
    body: dict[str, Any] = {
        "a": None,
        "b": {"c": None, "d": 1, "e": [{"f": None, "g": False}, None, 0]},
        "h": "",
        "i": [],
    }
    assert strip_nones(body) == {"b": {"d": 1, "e": [{"g": False}, None, 0]}, "h": "", "i": []}
    assert body["a"] is None  # the input is left alone


def deployment(**meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "demo-asr-worker",
            "namespace": "speech",
            "labels": {"app": "asr-worker"},
            "ownerReferences": [{"uid": "u", "controller": True}],
            **meta,
        },
        "spec": {"replicas": 3, "template": {"spec": {"nodeSelector": None}}},
    }


def test_patch_for_limits_metadata_and_drops_type_fields() -> None:
    body = deployment(annotations={"a": "b"}, resourceVersion="5", uid="x", finalizers=["f"])
    patch = patch_for(Desired(body))
    assert patch == {
        "metadata": {
            "labels": {"app": "asr-worker"},
            "annotations": {"a": "b"},
            "ownerReferences": [{"uid": "u", "controller": True}],
        },
        "spec": {"replicas": 3, "template": {"spec": {"nodeSelector": None}}},  # None: remove it
    }
    assert body["apiVersion"] == "apps/v1" and body["metadata"]["name"] == "demo-asr-worker"  # not mutated


def test_patch_for_keeps_none_annotations_so_they_are_removed() -> None:
    patch = patch_for(Desired(deployment(annotations=None)))
    assert patch["metadata"]["annotations"] is None
    assert "annotations" not in patch_for(Desired(deployment()))["metadata"]


def test_patch_for_drops_create_only_paths() -> None:
    body = deployment()
    patch = patch_for(Desired(body, (("spec", "replicas"),)))
    assert patch["spec"] == {"template": {"spec": {"nodeSelector": None}}}
    assert body["spec"]["replicas"] == 3
    whole = patch_for(Desired(body, (("spec",),)))
    assert set(whole) == {"metadata"}
    missing = patch_for(Desired(body, (("spec", "strategy", "rollingUpdate"), ("status",))))
    assert missing["spec"]["replicas"] == 3


def test_a_patch_matches_the_object_it_produces() -> None:
    body = deployment(annotations={"a": "b"})
    live = strip_nones({**body, "status": {"readyReplicas": 3}})
    live["metadata"]["uid"] = "x"
    live["spec"]["replicas"] = 7  # the autoscaler's count: create-only, so no drift
    assert matches(patch_for(Desired(body, (("spec", "replicas"),))), live)
    assert not matches(patch_for(Desired(body)), live)


def test_owned_by_needs_the_controller_reference_with_our_uid() -> None:
    assert owned_by({"metadata": {"ownerReferences": [{"uid": "u", "controller": True}]}}, "u")
    assert not owned_by({"metadata": {"ownerReferences": [{"uid": "u"}]}}, "u")
    assert not owned_by({"metadata": {"ownerReferences": [{"uid": "v", "controller": True}]}}, "u")
    assert not owned_by({"metadata": {}}, "u")


# --- status: rollouts and jobs -------------------------------------------------------------------


def test_rollout_of_a_workload() -> None:
    assert Rollout.of(None) is None
    assert Rollout.of({"spec": {"replicas": 3}, "status": {"readyReplicas": 2}}) == Rollout(2, 3)
    assert Rollout.of({"spec": {"replicas": 2}}) == Rollout(0, 2)
    assert Rollout.of({"spec": {}, "status": None}) == Rollout(0, 1)  # replicas defaults to 1
    assert Rollout.of({"spec": {"replicas": 0}, "status": {}}) == Rollout(0, 0)
    assert Rollout(2, 3).text() == "2/3"
    assert Rollout(3, 3).complete and not Rollout(2, 3).complete


def job(*conditions: dict[str, str], **status: Any) -> dict[str, Any]:
    return {"status": {"conditions": list(conditions), **status}}


def test_job_state() -> None:
    assert JobState.of(None) is None
    assert JobState.of({}) == JobState(False, False)
    assert JobState.of(job({"type": "Complete", "status": "True"})) == JobState(True, False)
    assert JobState.of(
        job({"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"})
    ) == JobState(False, True, "BackoffLimitExceeded")
    failed = job({"type": "Failed", "status": "True", "reason": "DeadlineExceeded", "message": "too slow"})
    assert JobState.of(failed) == JobState(False, True, "too slow")
    assert JobState.of(job({"type": "Failed", "status": "True"})) == JobState(False, True, "failed")
    # conditions that are not True do not count
    assert JobState.of(job({"type": "Failed", "status": "False"}, active=1)) == JobState(False, False)
    assert JobState.of(job({"type": "Complete", "status": "False"})) == JobState(False, False)
    # a success count without the condition yet
    assert JobState.of(job(succeeded=1)) == JobState(True, False)
    assert JobState.of(job(active=1)) == JobState(False, False)


# --- status: conditions --------------------------------------------------------------------------

ALL_UP = Observed(
    license_problem=None,
    model_job=JobState(True, False),
    redis=Rollout(1, 1),
    redis_external=False,
    workers=Rollout(2, 2),
    api=Rollout(1, 1),
    license_proxy=Rollout(1, 1),
)


def observe(**changes: Any) -> Observed:
    fields = {name: getattr(ALL_UP, name) for name in ALL_UP.__dataclass_fields__}
    return Observed(**{**fields, **changes})


def by_type(observed: Observed) -> dict[str, Condition]:
    conditions = derive_conditions(observed)
    assert [c.type for c in conditions] == list(CONDITION_TYPES)
    return {c.type: c for c in conditions}


def summary(condition: Condition) -> tuple[str, str]:
    return condition.status, condition.reason


def test_all_ready() -> None:
    conditions = by_type(ALL_UP)
    assert all(c.status == "True" for c in conditions.values())
    assert summary(conditions["Ready"]) == ("True", "AllComponentsReady")
    assert summary(conditions["LicenseValid"]) == ("True", "ProxyValidated")
    assert summary(conditions["ModelReady"]) == ("True", "Prefetched")
    assert conditions["WorkersReady"].message == "2/2 ASR worker pods ready"


@pytest.mark.parametrize(
    ("changes", "kind", "status", "reason"),
    [
        ({"license_problem": "license Secret 'lic' not found"}, "LicenseValid", "False", "SecretNotUsable"),
        ({"license_proxy": Rollout(0, 1)}, "LicenseValid", "Unknown", "ProxyNotReady"),
        ({"license_proxy": None}, "LicenseValid", "Unknown", "ProxyNotReady"),
        ({"model_job": None}, "ModelReady", "False", "NotStarted"),
        ({"model_job": JobState(False, False)}, "ModelReady", "False", "Downloading"),
        ({"model_job": JobState(False, True, "boom")}, "ModelReady", "False", "PrefetchFailed"),
        ({"redis": None}, "RedisReady", "False", "NotCreated"),
        ({"redis": Rollout(0, 1)}, "RedisReady", "False", "NoneReady"),
        ({"redis": None, "redis_external": True}, "RedisReady", "True", "External"),
        ({"workers": None}, "WorkersReady", "False", "NotCreated"),
        ({"workers": Rollout(0, 3)}, "WorkersReady", "False", "NoneReady"),
        ({"workers": Rollout(1, 3)}, "WorkersReady", "False", "PartiallyReady"),
        ({"workers": Rollout(0, 0)}, "WorkersReady", "True", "ScaledToZero"),
        ({"workers": Rollout(4, 3)}, "WorkersReady", "True", "AllReady"),  # surge during a rollout
        ({"api": None}, "ApiReady", "False", "NotCreated"),
        ({"api": Rollout(1, 2)}, "ApiReady", "False", "PartiallyReady"),
    ],
)
def test_component_conditions(changes: dict[str, Any], kind: str, status: str, reason: str) -> None:
    conditions = by_type(observe(**changes))
    assert summary(conditions[kind]) == (status, reason)
    others_ready = all(c.status == "True" for t, c in conditions.items() if t not in (kind, "Ready"))
    assert others_ready
    if status == "True":
        assert summary(conditions["Ready"]) == ("True", "AllComponentsReady")
    else:  # Ready names the blocker: its type + reason, with its message
        assert summary(conditions["Ready"]) == ("False", kind + reason)
        assert conditions["Ready"].message == conditions[kind].message


def test_condition_messages_say_what_is_wrong() -> None:
    conditions = by_type(
        observe(model_job=JobState(False, True, "BackoffLimitExceeded"), workers=Rollout(1, 3))
    )
    assert conditions["ModelReady"].message == "the model prefetch failed: BackoffLimitExceeded"
    assert conditions["WorkersReady"].message == "1/3 ASR worker pods ready"
    assert by_type(observe(api=Rollout(0, 2)))["ApiReady"].message == "0/2 API server pods ready"
    problem = "license Secret 'lic' has no non-empty key 'license-key'"
    assert by_type(observe(license_problem=problem))["LicenseValid"].message == problem


def test_ready_names_the_first_blocker_in_condition_order() -> None:
    conditions = by_type(observe(model_job=JobState(False, False), workers=None, api=Rollout(0, 1)))
    assert summary(conditions["Ready"]) == ("False", "ModelReadyDownloading")
    conditions = by_type(observe(workers=None, api=Rollout(0, 1)))
    assert summary(conditions["Ready"]) == ("False", "WorkersReadyNotCreated")
    assert conditions["Ready"].message == "the ASR worker is not created yet"


# --- status: phase -------------------------------------------------------------------------------

NOTHING_YET = observe(
    model_job=None, redis=None, workers=None, api=None, license_proxy=None, redis_external=False
)


def phase(observed: Observed, previous: str | None = None) -> str:
    result = derive_phase(derive_conditions(observed), previous)
    assert result in PHASES
    return result


def test_phases() -> None:
    assert phase(NOTHING_YET) == "Pending"
    assert phase(observe(workers=None, model_job=JobState(False, False))) == "Progressing"  # the API exists
    assert phase(observe(workers=Rollout(0, 1))) == "Progressing"
    assert phase(ALL_UP) == "Ready"
    assert phase(ALL_UP, "Progressing") == "Ready"
    assert phase(ALL_UP, "Degraded") == "Ready"


def test_losing_a_component_after_ready_is_degraded_not_progressing() -> None:
    assert phase(observe(workers=Rollout(1, 2)), "Ready") == "Degraded"
    assert phase(observe(workers=Rollout(1, 2)), "Degraded") == "Degraded"
    assert phase(observe(workers=Rollout(1, 2)), "Progressing") == "Progressing"
    assert phase(observe(workers=Rollout(1, 2)), None) == "Progressing"
    assert phase(NOTHING_YET, "Failed") == "Pending"


def test_a_missing_secret_or_a_failed_prefetch_is_failed() -> None:
    missing = observe(license_problem="license Secret 'lic' not found", workers=None, api=None)
    assert phase(missing) == "Failed"
    assert phase(missing, "Ready") == "Failed"
    failed_job = observe(model_job=JobState(False, True, "BackoffLimitExceeded"))
    assert phase(failed_job) == "Failed"
    assert phase(failed_job, "Ready") == "Failed"
    # a proxy that is merely not ready yet is not a failure
    assert phase(observe(license_proxy=Rollout(0, 1))) == "Progressing"


# --- status: merge_conditions, invalid_spec_status -----------------------------------------------

T0, T1 = "2026-01-01T00:00:00Z", "2026-01-01T00:05:00Z"


def test_merge_conditions_keeps_the_transition_time_while_the_status_holds() -> None:
    first = merge_conditions(derive_conditions(observe(workers=Rollout(1, 2))), [], T0, 1)
    assert all(c["lastTransitionTime"] == T0 for c in first)
    assert all(c["observedGeneration"] == 1 for c in first)
    # same statuses, another reason and message (1/2 -> 0/2): the time stays
    second = merge_conditions(derive_conditions(observe(workers=Rollout(0, 2))), first, T1, 2)
    workers = next(c for c in second if c["type"] == "WorkersReady")
    assert (workers["status"], workers["reason"], workers["lastTransitionTime"]) == ("False", "NoneReady", T0)
    assert workers["message"] == "0/2 ASR worker pods ready"
    assert all(c["observedGeneration"] == 2 for c in second)
    # the status flips: the time moves, for those conditions only
    third = merge_conditions(derive_conditions(ALL_UP), second, T1, 2)
    times = {c["type"]: c["lastTransitionTime"] for c in third}
    assert times == {
        "LicenseValid": T0,
        "ModelReady": T0,
        "RedisReady": T0,
        "WorkersReady": T1,
        "ApiReady": T0,
        "Ready": T1,
    }


def test_merge_conditions_new_or_timeless_conditions_get_now() -> None:
    previous = [
        {"type": "Ready", "status": "False"},
        {"type": "Other", "status": "True", "lastTransitionTime": T0},
    ]
    merged = merge_conditions([Condition("Ready", "False", "X", "y")], previous, T1, 4)
    assert merged == [
        {
            "type": "Ready",
            "status": "False",
            "reason": "X",
            "message": "y",
            "lastTransitionTime": T1,
            "observedGeneration": 4,
        }
    ]


def test_invalid_spec_status() -> None:
    previous = merge_conditions(derive_conditions(ALL_UP), [], T0, 1)
    message = "spec.asr.replicas: Input should be greater than or equal to 0"
    status = invalid_spec_status(message, previous, T1, 2)
    assert status["phase"] == "Failed"
    assert status["observedGeneration"] == 2
    assert status["message"] == message
    ready = [c for c in status["conditions"] if c["type"] == "Ready"]
    assert len(ready) == 1
    assert ready[0] == {
        "type": "Ready",
        "status": "False",
        "reason": "InvalidSpec",
        "message": message,
        "lastTransitionTime": T1,  # it was True
        "observedGeneration": 2,
    }
    kept = [c for c in status["conditions"] if c["type"] != "Ready"]
    assert kept == [c for c in previous if c["type"] != "Ready"]  # the last observations stay
    # still invalid on the next round: the transition time stays
    again = invalid_spec_status(message, status["conditions"], "2026-01-01T01:00:00Z", 3)
    assert next(c for c in again["conditions"] if c["type"] == "Ready")["lastTransitionTime"] == T1


def test_invalid_spec_status_without_history() -> None:
    status = invalid_spec_status("metadata.name: too long", [], T0, 1)
    assert [(c["type"], c["status"], c["reason"]) for c in status["conditions"]] == [
        ("Ready", "False", "InvalidSpec")
    ]
