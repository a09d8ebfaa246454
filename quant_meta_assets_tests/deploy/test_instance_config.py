"""The production instance file (deploy/dagster.yaml) is valid and its `postgres_db` block,
as pasted from Dagster's docs (no `scheme`), reaches PostgreSQL through psycopg2."""

from __future__ import annotations

import sqlalchemy
import yaml
from dagster._core.instance.config import dagster_instance_config
from dagster_postgres.utils import pg_url_from_config

from quant_meta_assets_tests.conftest import REPO_ROOT

PG_ENV = {
    "DAGSTER_PG_USERNAME": "dagster",
    "DAGSTER_PG_PASSWORD": "p@ss word",
    "DAGSTER_PG_HOST": "127.0.0.1",
    "DAGSTER_PG_DB": "dagster",
    "DAGSTER_PG_PORT": "55432",
}


def test_deploy_instance_yaml_is_a_valid_postgres_instance(tmp_path, monkeypatch):
    for name, value in PG_ENV.items():
        monkeypatch.setenv(name, value)
    (tmp_path / "dagster.yaml").write_text((REPO_ROOT / "deploy" / "dagster.yaml").read_text())
    config, _ = dagster_instance_config(str(tmp_path))
    postgres = config["storage"]["postgres"]
    assert "scheme" not in postgres["postgres_db"]


def test_docs_postgres_db_block_without_scheme_uses_psycopg2():
    raw = yaml.safe_load((REPO_ROOT / "deploy" / "dagster.yaml").read_text())["storage"]["postgres"]
    block = {key: PG_ENV[value["env"]] for key, value in raw["postgres_db"].items()}
    url = pg_url_from_config({"postgres_db": block})
    assert url.startswith("postgresql://")  # what dagster-postgres builds when `scheme` is left out
    engine = sqlalchemy.create_engine(url)  # no connection is made
    assert engine.dialect.driver == "psycopg2"  # SQLAlchemy 2.1 would pick psycopg 3 here
    assert engine.url.password == "p@ss word"  # the password is quoted into the URL and back


def test_run_monitoring_frees_a_dead_runs_slots_and_meta_full_has_a_max_runtime(tmp_path, monkeypatch):
    """deploy/dagster.yaml turns run monitoring on (Dagster leaves it off), with the timeouts that
    end stuck runs and the delay after which an ended run's pool slots are freed."""
    from quant_meta_assets.dagster_defs.definitions import defs

    for name, value in PG_ENV.items():
        monkeypatch.setenv(name, value)
    (tmp_path / "dagster.yaml").write_text((REPO_ROOT / "deploy" / "dagster.yaml").read_text())
    config, _ = dagster_instance_config(str(tmp_path))
    monitoring = config["run_monitoring"]
    assert monitoring["enabled"] is True
    assert monitoring["start_timeout_seconds"] > 0 and monitoring["cancel_timeout_seconds"] > 0
    assert monitoring["free_slots_after_run_end_seconds"] > 0
    assert monitoring["max_resume_run_attempts"] == 0  # the default run launcher cannot resume a run
    tags = defs.resolve_job_def("meta_full").tags
    assert float(tags["dagster/max_runtime"]) == 4 * 3600
