"""spec.queueName: a Kueue LocalQueue name that is also a label value, checked by the schema."""

from __future__ import annotations

import pytest

from kubetune.manifest.validate import Manifest
from tests.unit.manifest.test_reader import BASE, edited, refusal

SPEC = "spec:\n"


def test_a_queue_name_is_accepted():
    Manifest(edited(SPEC, SPEC + "  queueName: team-a.gpus\n"), "exp.yaml").validate()
    Manifest(BASE, "exp.yaml").validate()  # and it is optional


@pytest.mark.parametrize("name", ["Team-A", "a_b", "-a", "a-", "''", "q" * 64, "a b"])
def test_a_bad_queue_name_is_refused_naming_the_field(name):
    message = refusal(edited(SPEC, SPEC + f"  queueName: {name}\n"))
    assert "spec.queueName" in message, message
