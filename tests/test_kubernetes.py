"""--stop-app and the application side of app_connect, with the real kubernetes client against a stand-in API."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import Sample, SuiteRun
from tests.k8s_standin import Cluster, Deployment, StandIn

NS = "production"
APP_PARTS = {"pods_ready", "no_restarts", "logs_clean", "health"}


@pytest.fixture
def cluster() -> Iterator[tuple[Cluster, StandIn]]:
    state = Cluster(NS, {"ecommerce-backend": Deployment(replicas=4), "payments-worker": Deployment(replicas=2)})
    with StandIn(state) as standin:
        yield state, standin


def _targets(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "targets.toml"
    path.write_text(
        '[targets.local-with-app]\nkind = "embedded"\n'
        f'[targets.local-with-app.app]\nnamespace = "{NS}"\ndeployments = ["ecommerce-backend"]\n'
        'health_path = "/healthz"\nobserve_seconds = 1\ntimeout_seconds = 20\n'
        f'failure_patterns = ["could not connect to server", "FATAL: .*database"]\n{extra}')
    return path


def _run(run_suite: Callable[..., SuiteRun], standin: StandIn, tmp_path: Path, *args: str) -> SuiteRun:
    env = {"KUBECONFIG": str(standin.kubeconfig(tmp_path / "kubeconfig"))}
    return run_suite(f"--targets-file={_targets(tmp_path)}", "--target=local-with-app", "--stop-app", *args, env=env)


def _scale_calls(state: Cluster) -> list[tuple[float, str]]:
    return [(t, p.split("/")[-2]) for t, m, p in state.calls if m == "PATCH"]


def test_app_is_stopped_during_the_restore_brought_back_and_observed(
    cluster: tuple[Cluster, StandIn], sample: Sample, tmp_path: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    state, standin = cluster
    run = _run(run_suite, standin, tmp_path, *sample.restore_args())
    assert run.returncode == 0, run.explain()
    assert run.result["checklist"]["app_connect"] == "passed", run.explain()
    parts = {s["nodeid"].split("[")[-1].rstrip("]") for s in run.result.get("skips", [])}
    assert not parts & APP_PARTS  # every part ran
    assert state.deployments["ecommerce-backend"].replicas == 4  # back to the recorded count
    patches = _scale_calls(state)
    assert [name for _, name in patches] == ["ecommerce-backend", "ecommerce-backend"]
    restore_log = run.run_dir / "restore.log"
    # Scaled to 0 before the restore began writing its log, and back only after it was done.
    assert patches[0][0] <= restore_log.stat().st_ctime
    assert patches[1][0] >= restore_log.stat().st_mtime


def test_the_replica_count_comes_back_when_the_restore_fails(
    cluster: tuple[Cluster, StandIn], sample: Sample, tmp_path: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    state, standin = cluster
    broken = tmp_path / "broken.dump"
    broken.write_bytes(sample.dump.read_bytes()[:5000])
    run = _run(run_suite, standin, tmp_path, f"--backup={broken}", f"--expectations={sample.expectations}")
    assert "restore_succeeded" in run.failed_items()
    assert state.deployments["ecommerce-backend"].replicas == 4


def test_a_crash_looping_pod_fails_app_connect(
    cluster: tuple[Cluster, StandIn], sample: Sample, tmp_path: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    state, standin = cluster
    state.deployments["ecommerce-backend"].crashloop = True
    run = _run(run_suite, standin, tmp_path, *sample.restore_args())
    # A deployment that never becomes ready fails app_connect (the database checks still run and pass).
    assert run.failed_items() == {"app_connect"}, run.explain()
    assert "to be ready with 4 replica(s): not done after" in run.result["checklist_reasons"]["app_connect"]
    assert state.deployments["ecommerce-backend"].replicas == 4


def test_a_failure_pattern_in_the_logs_fails_app_connect(
    cluster: tuple[Cluster, StandIn], sample: Sample, tmp_path: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    state, standin = cluster
    state.deployments["ecommerce-backend"].log = "booting\nFATAL: could not reach database ecommerce\n"
    run = _run(run_suite, standin, tmp_path, *sample.restore_args())
    assert run.failed_items() == {"app_connect"}, run.explain()
    failures = [f for f in run.result["failures"] if "logs_clean" in f["nodeid"]]
    assert failures
    assert "FATAL: could not reach database" in failures[0]["message"]


def test_only_the_named_deployment_is_ever_touched(
    cluster: tuple[Cluster, StandIn], sample: Sample, tmp_path: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    state, standin = cluster
    _run(run_suite, standin, tmp_path, *sample.restore_args())
    touched = {path for _, method, path in state.calls if "payments-worker" in path}
    assert touched == set()
    assert state.deployments["payments-worker"].replicas == 2


def test_stop_app_without_an_app_config_is_a_usage_error(
    sample: Sample, tmp_path: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    run = run_suite("--stop-app", *sample.restore_args(), expect_result=False)
    assert run.returncode == 4
    assert "--stop-app needs [targets.local.app]" in run.output


def test_health_command_runs_through_the_exec_stream(cluster: tuple[Cluster, StandIn], tmp_path: Path) -> None:
    """exec is tested at the boundary of the client's stream call (the stand-in speaks no websocket)."""
    _, standin = cluster
    os.environ["KUBECONFIG"] = str(standin.kubeconfig(tmp_path / "kubeconfig"))
    try:
        from restore.targets.kube import AppConfig, AppController

        config = AppConfig(NS, ("ecommerce-backend",), health_command=("/app/healthcheck", "--db"), observe_s=0)
        controller = AppController(config)
        seen: list[list[str]] = []

        def fake_stream(func: object, name: str, namespace: str, **kwargs: object) -> str:
            seen.append(list(kwargs["command"]))  # type: ignore[call-overload]
            return "db: could not connect"

        problems = controller.observe(exec_stream=fake_stream)
    finally:
        del os.environ["KUBECONFIG"]
    assert seen == [["/app/healthcheck", "--db"]]
    assert problems["health"][0].startswith("health command /app/healthcheck --db in ecommerce-backend-0")
    assert problems["pods_ready"] == []


def test_a_missing_deployment_is_an_error_of_the_verifier_naming_it_not_an_internal_error(
    cluster: tuple[Cluster, StandIn], sample: Sample, tmp_path: Path, run_suite: Callable[..., SuiteRun]
) -> None:
    state, standin = cluster
    env = {"KUBECONFIG": str(standin.kubeconfig(tmp_path / "kubeconfig"))}
    targets = tmp_path / "targets.toml"
    targets.write_text('[targets.local-with-app]\nkind = "embedded"\n'
                       f'[targets.local-with-app.app]\nnamespace = "{NS}"\ndeployments = ["no-such-backend"]\n'
                       "timeout_seconds = 20\n")
    run = run_suite(f"--targets-file={targets}", "--target=local-with-app", "--stop-app", *sample.restore_args(),
                    env=env)
    assert "INTERNALERROR" not in run.output
    # The targets file names a deployment that is not there: the verifier's configuration, not the backup.
    assert run.returncode == 7, run.explain()
    assert run.result["outcome"] == "error", run.explain()
    assert not run.failed_items(), run.explain()
    refused = run.result["restore"]["refused"]
    assert "deployment 'no-such-backend' in namespace 'production' does not exist" in refused, refused
    assert state.deployments["ecommerce-backend"].replicas == 4  # nothing that was not named was touched
