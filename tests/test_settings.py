"""One validation for every setting, from the environment or from the launchpad's run config.

A bad value is an error naming the variable or the resource field and the value, raised where
the value is loaded: the code location's load, a command, or the run's start, before any op
opens a job.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import largest_scope
from dagster import DagsterEventType

from precompute_assets.cli.main import main
from precompute_assets.core.schema import jobs
from precompute_assets.core.settings import (
    GROUPS,
    README_GROUPS,
    ExecutorSettings,
    RefreshSettings,
    Settings,
    SettingsError,
    with_settings_tables,
)
from precompute_assets.orchestration.definitions import build_definitions
from precompute_assets.orchestration.resources import PrecomputeResource

BAD_ENVIRONMENT = [
    ("PRECOMPUTE_BATCH_SIZE", "0", "greater than 0"),
    ("PRECOMPUTE_BATCH_SIZE", "-5", "greater than 0"),
    ("PRECOMPUTE_MAX_SHARDS", "0", "greater than 0"),
    ("PRECOMPUTE_REFRESH_THRESHOLD", "nan", "finite number"),
    ("PRECOMPUTE_REFRESH_MAX_AGE_DAYS", "inf", "finite number"),
    ("PRECOMPUTE_REFRESH_BUDGET", "many", "valid integer"),
    ("PRECOMPUTE_MAX_RUNTIME_S", "0", "greater than 0"),
    ("PRECOMPUTE_CACHE_URL", "ftp://cache:pw@host", "redis://host:port/db"),
    ("PRECOMPUTE_STORE_URL", "not a url", "not an SQLAlchemy database URL"),
]


@pytest.mark.parametrize(("variable", "value", "problem"), BAD_ENVIRONMENT)
def test_a_bad_environment_value_fails_the_load_naming_it(
    tools, monkeypatch, variable, value, problem
):
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as raised:
        build_definitions(tools)
    message = str(raised.value)
    assert message.startswith(f"{variable}: ") and problem in message
    assert "pw@" not in message, "a URL's password is masked"


@pytest.mark.parametrize(("variable", "value", "problem"), BAD_ENVIRONMENT[:4])
def test_a_command_names_the_bad_variable_in_one_line(
    monkeypatch, capsys, variable, value, problem
):
    monkeypatch.setenv(variable, value)
    assert main(["status", "unused_fields"]) == 1
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"precompute: error: {variable}: ") and problem in line


def test_good_values_are_parsed_once_for_every_group():
    env = {
        "PRECOMPUTE_BATCH_SIZE": "250",
        "PRECOMPUTE_REFRESH_THRESHOLD": "0.5",
        "PRECOMPUTE_SENSOR_INTERVAL_S": "15",
        "PRECOMPUTE_MAX_RUNTIME_S": "600",
    }
    assert Settings.from_env(env).batch_size == 250
    refresh = RefreshSettings.from_env(env)
    assert (refresh.threshold, refresh.sensor_interval_s) == (0.5, 15)
    assert ExecutorSettings.from_env(env).max_runtime_s == 600
    assert math.isclose(refresh.max_age_s, 7 * 86_400)


@pytest.mark.parametrize(
    ("field", "value"), [("batch_size", 0), ("max_shards", 0), ("batch_size", -5)]
)
def test_launchpad_config_is_validated_as_the_run_starts_before_any_job_opens(
    defs, precompute, instance, field, value
):
    scope = largest_scope(precompute)
    instance.add_dynamic_partitions("unused_fields_scopes", [scope])
    result = defs.resolve_job_def("unused_fields_job").execute_in_process(
        partition_key=scope,
        instance=instance,
        run_config={"resources": {"precompute": {"config": {field: value}}}},
        raise_on_error=False,
    )
    assert not result.success
    failures = [
        event
        for event in result.all_events
        if event.event_type == DagsterEventType.RESOURCE_INIT_FAILURE
    ]
    assert failures, "the run failed as its resources started"
    assert f"resource field precompute.{field}: Input should be greater than 0" in str(
        failures[0].event_specific_data.error.to_string()
    )
    assert not [e for e in result.all_events if e.event_type == DagsterEventType.STEP_START]
    store = precompute.store().engine
    if sa.inspect(store).has_table(jobs.name):
        with store.connect() as connection:
            assert connection.execute(jobs.select()).all() == [], "no job was opened"


def test_the_resource_has_a_field_for_every_setting_described_as_it():
    fields = PrecomputeResource.model_fields
    for group in GROUPS:
        for name, field in group.model_fields.items():
            assert name in fields, f"the launchpad cannot set {name}"
            assert fields[name].description.startswith(field.description)


def test_the_readme_tables_are_generated_from_the_settings():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert readme == with_settings_tables(readme), (
        "README.md's settings tables are out of date: run "
        "`python -m precompute_assets.core.settings README.md`"
    )
    for group in README_GROUPS:
        assert f"<!-- settings:{group.__name__} -->" in readme
