"""How the project reaches Ray: ship the code, check the cluster once, explain auth failures.

A Ray cluster shares nothing with the driver but the network. So, when connecting to one:

* **Code.** ``quant_meta_assets`` and the top-level package (or single-file module) of every
  plug-in strategy named ``package.module:function`` in the registry go to the workers as
  ``runtime_env["py_modules"]``. Each is shipped from a staged copy without its ``.gitignore``
  and ``.rayignore`` files (Ray leaves out what they list, e.g. a package's ``data/``), without
  ``__pycache__``: everything a package needs ships. A user runtime_env (``pip``, ``env_vars``, ``container``, …)
  read from the JSON/YAML file named by ``$QUANT_META_RAY_RUNTIME_ENV`` is merged in.
* **Preflight.** Before any sleeve, one small task per CPU node of the cluster reports its
  Python, Ray and worker-side package versions, imports every plug-in strategy module and
  hashes the content of each shipped package as the worker sees it (compared with the driver's:
  a missing or different file is named). Any problem raises ONE :class:`ClusterPreflightError`
  naming each missing or mismatched package and how to fix it, instead of N sleeve failures.
  A node that joins later (an autoscaler) is checked the same way by its first sleeve task
  (``check_late_node``, cached per node) and fails with the same text.
* **Auth.** Ray's token auth is honoured as Ray reads it (``RAY_AUTH_MODE=token`` plus
  ``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``); a refused connection
  becomes :class:`RayAuthError` saying what to set.
* **Local Ray.** Started with token auth on and no dashboard (see :func:`local_init_options`).

Results travel back to the driver through Ray's object store and the driver writes every
bundle, so the cluster never needs the storage root.

Only the standard library is imported at module level: the preflight probe runs on workers that
may lack pandas or numpy, and must still report that they lack them. ``ray`` is imported inside
functions. No dagster import.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from quant_meta_assets import settings
from quant_meta_assets.errors import QuantMetaError

__all__ = [
    "WORKER_PACKAGES",
    "ClusterConfigError",
    "ClusterPreflightError",
    "RayAuthError",
    "cluster_init_options",
    "cluster_runtime_env",
    "explain_connect_error",
    "local_init_options",
    "preflight",
    "shipped_paths",
    "stage_for_shipping",
    "tree_files",
]

# (distribution name, import name): what a sleeve imports on a worker. pyarrow because pandas 3
# backs its string dtype with it (a frame with string labels cannot be unpickled without it);
# PyYAML because the registry module (imported by the sleeve engine) reads YAML.
WORKER_PACKAGES: tuple[tuple[str, str], ...] = (
    ("numpy", "numpy"),
    ("pandas", "pandas"),
    ("pyarrow", "pyarrow"),
    ("scipy", "scipy"),
    ("scikit-learn", "sklearn"),
    ("PyYAML", "yaml"),
)
PROJECT_PACKAGE = "quant_meta_assets"
PREFLIGHT_TIMEOUT_S = 300.0  # covers a runtime_env with `pip:` being built on first use


class ClusterConfigError(QuantMetaError, ValueError):
    """The runtime_env file or a plug-in strategy module cannot be turned into a runtime_env."""


class ClusterPreflightError(QuantMetaError, RuntimeError):
    """The cluster cannot run the sleeves: names every missing or mismatched package and the fix."""


class RayAuthError(QuantMetaError, ConnectionError):
    """The cluster refused the connection (token auth): says which variables to set."""


# --------------------------------------------------------------------------- runtime_env


def plugin_modules(strategies: Iterable[str]) -> list[str]:
    """Module names of the ``package.module:function`` strategies, in order, without repeats."""
    seen: dict[str, None] = {}
    for spec in strategies:
        if isinstance(spec, str) and ":" in spec:
            seen.setdefault(spec.partition(":")[0].strip(), None)
    return [m for m in seen if m]


def _top_level_source(module_name: str) -> Path:
    """The directory of a module's top-level package, or the file of a top-level module."""
    top = module_name.split(".", 1)[0]
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError) as exc:
        spec, cause = None, f"{type(exc).__name__}: {exc}"
    else:
        cause = "not found on the driver's sys.path"
    if spec is None:
        raise ClusterConfigError(f"plug-in strategy module {module_name!r}: cannot ship {top!r} to Ray ({cause})")
    if spec.submodule_search_locations:
        locations = list(spec.submodule_search_locations)
        if len(locations) != 1:
            raise ClusterConfigError(
                f"plug-in strategy module {module_name!r}: {top!r} is a namespace package spread over "
                f"{locations}; make it a regular package (add __init__.py) so it can be shipped"
            )
        return Path(locations[0])
    if spec.origin and spec.origin.endswith(".py"):
        return Path(spec.origin)
    raise ClusterConfigError(
        f"plug-in strategy module {module_name!r}: {top!r} is not Python source ({spec.origin!r}); "
        "install it in the cluster image or add it to the runtime_env file instead"
    )


def shipped_paths(strategies: Iterable[str] = ()) -> list[str]:
    """Local paths that ``py_modules`` uploads: this package, then each plug-in's top level.

    A plug-in that lives inside ``quant_meta_assets`` or in one of :data:`WORKER_PACKAGES`
    (already on the cluster) is not shipped twice.
    """
    paths = [str(_top_level_source(PROJECT_PACKAGE))]
    skip = {PROJECT_PACKAGE} | {imp for _, imp in WORKER_PACKAGES}
    for module in plugin_modules(strategies):
        if module.split(".", 1)[0] in skip:
            continue
        path = str(_top_level_source(module))
        if path not in paths:
            paths.append(path)
    return paths


SHIP_SKIPPED_DIRS = frozenset({"__pycache__", ".git"})
SHIP_SKIPPED_FILES = frozenset({".gitignore", ".rayignore"})
SHIP_SKIPPED_SUFFIXES = (".pyc", ".pyo")


def _files_to_ship(path: Path) -> list[tuple[str, Path]]:
    """(relative path, file) of everything shipped from ``path``, sorted: every file but
    ``__pycache__``/``.git`` contents, compiled files and the ignore files themselves."""
    if path.is_file():
        return [(path.name, path)]
    out = []
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if d not in SHIP_SKIPPED_DIRS)
        for name in sorted(files):
            if name in SHIP_SKIPPED_FILES or name.endswith(SHIP_SKIPPED_SUFFIXES):
                continue
            file = Path(root) / name
            out.append((file.relative_to(path).as_posix(), file))
    return out


def tree_files(path: str | os.PathLike[str]) -> dict[str, str]:
    """Relative path -> sha256 of each file shipped from ``path`` (a package directory or a module file)."""
    return {rel: hashlib.sha256(file.read_bytes()).hexdigest() for rel, file in _files_to_ship(Path(path))}


def tree_digest(files: Mapping[str, str]) -> str:
    """One content hash of a shipped tree (paths and contents)."""
    return hashlib.sha256("".join(f"{rel}\0{sha}\n" for rel, sha in sorted(files.items())).encode()).hexdigest()


def _module_name(path: str | os.PathLike[str]) -> str:
    """The import name of a shipped path: the package directory's name or the module file's stem."""
    p = Path(path)
    return p.stem if p.is_file() else p.name


def stage_for_shipping(path: str | os.PathLike[str]) -> str:
    """A copy of ``path`` holding exactly what :func:`tree_files` lists (no ``.gitignore`` /
    ``.rayignore``, which would make Ray drop the files they name), under a content-addressed
    directory of the temp dir: the same content is staged once and uploaded once."""
    source = Path(path)
    files = _files_to_ship(source)
    digest = tree_digest({rel: hashlib.sha256(f.read_bytes()).hexdigest() for rel, f in files})
    base = Path(tempfile.gettempdir()) / "quant_meta_ship"
    root = base / digest[:20]
    target = root / source.name
    if target.exists():
        return str(target)
    base.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=base))
    try:
        if source.is_file():
            shutil.copy2(source, staging / source.name)
        else:
            for rel, file in files:
                dest = staging / source.name / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(file, dest)
            (staging / source.name).mkdir(exist_ok=True)  # an empty package still ships
        try:
            os.rename(staging, root)
        except OSError:  # another driver staged the same content first
            if not target.exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return str(target)


def read_runtime_env_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A runtime_env mapping from a ``.json`` or YAML file (``yaml.safe_load``)."""
    file = Path(path)
    try:
        text = file.read_text()
    except OSError as exc:
        raise ClusterConfigError(
            f"{settings.RAY_RUNTIME_ENV_ENV}={str(path)!r}: cannot read the runtime_env file ({exc})"
        ) from exc
    try:
        if file.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:  # json.JSONDecodeError / yaml.YAMLError: name the file and the cause
        raise ClusterConfigError(
            f"{settings.RAY_RUNTIME_ENV_ENV}={str(path)!r}: not valid JSON/YAML: {exc}"
        ) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ClusterConfigError(
            f"{settings.RAY_RUNTIME_ENV_ENV}={str(path)!r}: a runtime_env must be a mapping "
            f"(pip, env_vars, py_modules, container, ...), got {type(data).__name__}"
        )
    return data


def merge_runtime_env(base: Mapping[str, Any], user: Mapping[str, Any]) -> dict[str, Any]:
    """``user`` over ``base``: ``py_modules`` are concatenated, ``env_vars`` merged (user wins),
    every other key (``pip``, ``working_dir``, ``container``, …) is the user's."""
    merged = dict(base)
    for key, value in user.items():
        if key == "py_modules":
            if not isinstance(value, list):
                raise ClusterConfigError(f"runtime_env 'py_modules' must be a list, got {type(value).__name__}")
            merged[key] = list(base.get(key, [])) + [v for v in value if v not in base.get(key, [])]
        elif key == "env_vars":
            if not isinstance(value, dict):
                raise ClusterConfigError(f"runtime_env 'env_vars' must be a mapping, got {type(value).__name__}")
            merged[key] = {**base.get(key, {}), **{str(k): str(v) for k, v in value.items()}}
        else:
            merged[key] = value
    return merged


def cluster_runtime_env(strategies: Iterable[str] = ()) -> dict[str, Any]:
    """The runtime_env of a cluster connection: the shipped code (staged copies, see
    :func:`stage_for_shipping`) plus the user's file, if any."""
    base: dict[str, Any] = {"py_modules": [stage_for_shipping(p) for p in shipped_paths(strategies)]}
    path = settings.ray_runtime_env_file()
    return merge_runtime_env(base, read_runtime_env_file(path)) if path else base


def cluster_init_options(address: str, strategies: Iterable[str] = ()) -> dict[str, Any]:
    """``ray.init`` keyword arguments for an existing cluster (``host:port`` or ``ray://``)."""
    return {"address": address, "runtime_env": cluster_runtime_env(strategies), "log_to_driver": True}


RAY_CLIENT_SETUP_S = 90.0


def client_setup_allowance_s(address: str) -> float:
    """Extra connect time for Ray Client (``ray://``): its ``ray.init`` only returns once the
    head has started a server process for this driver inside the runtime_env and received the
    uploaded ``py_modules`` (measured 15-40 s on a loaded 2-core machine)."""
    return RAY_CLIENT_SETUP_S if address.startswith("ray://") else 0.0


def local_init_options(num_cpus: int | None = None) -> dict[str, Any]:
    """``ray.init`` keyword arguments for the local Ray the project starts.

    No dashboard (its HTTP server is the only Ray server with a bind-address option, and it is
    not needed). Token auth stays on: Ray enables it for a new local cluster unless
    ``RAY_AUTH_MODE=disabled`` is set, and we never set that. Ray 2.60 binds the GCS and raylet
    on every interface whatever ``_node_ip_address`` says (it maps 127.0.0.1 to the node's
    address), so the token is what keeps other machines out.
    """
    options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True}
    if num_cpus is not None:
        options["num_cpus"] = num_cpus
    return options


# --------------------------------------------------------------------------- auth


def auth_settings() -> str:
    """A one-line description of the auth variables this process has (never the token itself)."""
    mode = os.environ.get("RAY_AUTH_MODE")
    if os.environ.get("RAY_AUTH_TOKEN"):
        source = "RAY_AUTH_TOKEN is set"
    elif os.environ.get("RAY_AUTH_TOKEN_PATH"):
        source = f"RAY_AUTH_TOKEN_PATH={os.environ['RAY_AUTH_TOKEN_PATH']!r}"
    elif (Path.home() / ".ray" / "auth_token").is_file():
        source = "token file ~/.ray/auth_token"
    else:
        source = "no token (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH and ~/.ray/auth_token are all absent)"
    return f"RAY_AUTH_MODE={mode!r}, {source}"


_AUTH_HELP = (
    "set RAY_AUTH_MODE=token and the cluster's token, either RAY_AUTH_TOKEN=<token> or "
    "RAY_AUTH_TOKEN_PATH=<file holding it> (default ~/.ray/auth_token); `ray get-auth-token` on "
    "the head node prints it"
)


def explain_connect_error(address: str, exc: BaseException) -> QuantMetaError | None:
    """A :class:`RayAuthError` when ``exc`` from ``ray.init(address)`` is (or may be) an auth
    refusal, else ``None``.

    Ray reports a missing token as ``AuthenticationError``, but a wrong token, or a token
    without ``RAY_AUTH_MODE=token``, only as ``ConnectionError: Failed to connect to Ray cluster``
    after the TCP probe already found a listener: that is named as a likely auth problem.
    """
    name = type(exc).__name__
    text = str(exc)
    if name == "AuthenticationError" or "InvalidAuthToken" in text or "UNAUTHENTICATED" in text.upper():
        return RayAuthError(
            f"Ray at {address!r} refused the connection: token authentication failed ({auth_settings()}); "
            f"{_AUTH_HELP}. Ray said: {text.splitlines()[0] if text else name}"
        )
    if isinstance(exc, ConnectionError) and "Failed to connect to Ray cluster" in text:
        if os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
            hint = "RAY_AUTH_MODE is not 'token', so no token was sent"
        else:
            hint = "the token sent may not be the cluster's"
        return RayAuthError(
            f"Ray at {address!r} did not accept the connection ({hint}; {auth_settings()}). "
            f"Ray clusters use token auth by default: {_AUTH_HELP}. Ray said: {text.splitlines()[0]}"
        )
    return None


# --------------------------------------------------------------------------- preflight


def _major_minor(version: str | None) -> tuple[str, ...]:
    return tuple((version or "").split("+")[0].split(".")[:2])


def driver_facts(strategies: Iterable[str] = ()) -> dict[str, Any]:
    """What the driver runs: the reference the cluster is compared with (with the content of
    every shipped package, ``trees``: import name -> {relative path: sha256})."""
    strategies = list(strategies)
    facts = _facts(list(plugin_modules(strategies)), probe_imports=False)
    try:
        paths = shipped_paths(strategies)
    except ClusterConfigError:  # a plug-in the driver cannot find: the import check names it
        paths = shipped_paths(())
    facts["trees"] = {_module_name(p): tree_files(p) for p in paths}
    return facts


def _worker_trees(names: Sequence[str]) -> dict[str, dict[str, str] | None]:
    """The content of each shipped package as this worker imports it (None: not found)."""
    trees: dict[str, dict[str, str] | None] = {}
    for name in names:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        if spec is None:
            trees[name] = None
        elif spec.submodule_search_locations:
            trees[name] = tree_files(list(spec.submodule_search_locations)[0])
        else:
            trees[name] = tree_files(spec.origin) if spec.origin else None
    return trees


def _facts(modules: Sequence[str], probe_imports: bool) -> dict[str, Any]:
    packages: dict[str, dict[str, str | None]] = {}
    for dist, import_name in WORKER_PACKAGES:
        entry: dict[str, str | None] = {"version": None, "error": None}
        try:
            entry["version"] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            entry["error"] = f"distribution {dist!r} is not installed"
        if probe_imports and entry["error"] is None:
            try:
                importlib.import_module(import_name)
            except BaseException as exc:  # an installed but broken package: report, don't crash
                entry["error"] = f"import {import_name} failed: {type(exc).__name__}: {exc}"
        packages[dist] = entry
    try:
        import ray

        ray_version: str | None = ray.__version__
    except ImportError:
        ray_version = None
    imports: dict[str, str | None] = {}
    if probe_imports:
        for module in [f"{PROJECT_PACKAGE}.sleeves.engine", *modules]:
            try:
                importlib.import_module(module)
                imports[module] = None
            except BaseException as exc:
                imports[module] = f"{type(exc).__name__}: {exc}"
    return {
        "node": socket.gethostname(),
        "python": platform.python_version(),
        "executable": sys.executable,
        "ray": ray_version,
        "packages": packages,
        "imports": imports,
    }


def _probe(modules: list[str], trees: Sequence[str] = ()) -> dict[str, Any]:
    """Runs on a worker: the same facts, with every import actually tried and the content of
    each shipped package in ``trees`` (import names) hashed as the worker sees it."""
    facts = _facts(modules, probe_imports=True)
    facts["trees"] = _worker_trees(trees)
    try:
        import ray

        node_id = ray.get_runtime_context().get_node_id()
        facts["node_id"] = node_id
        facts["node"] = node_id[:12] + f" ({facts['node']})"
    except Exception:  # pragma: no cover - outside a Ray worker
        pass
    return facts


def _tree_problem(name: str, want: Mapping[str, str], got: Mapping[str, str] | None) -> str | None:
    if got is None:
        return f"package {name!r} is not on the cluster (it was shipped as py_modules)"
    if tree_digest(want) == tree_digest(got):
        return None
    missing = sorted(set(want) - set(got))
    different = sorted(rel for rel in set(want) & set(got) if want[rel] != got[rel])
    extra = sorted(set(got) - set(want))
    parts = [f"{label} {items[:5]}{' ...' if len(items) > 5 else ''}"
             for label, items in (("missing", missing), ("different", different), ("extra", extra)) if items]
    return (f"package {name!r} on the cluster is not the driver's (content hash "
            f"{tree_digest(got)[:12]} vs {tree_digest(want)[:12]}): {', '.join(parts)}")


def compare(driver: Mapping[str, Any], workers: Sequence[Mapping[str, Any]]) -> list[str]:
    """One line per problem (deduplicated across nodes, each naming its nodes); empty = fine.

    Rules: Python major.minor and the exact Ray version must match the driver (Ray's pickles
    and protocol); each worker package must be importable with the driver's major.minor (frames
    are pickled across the wire); every plug-in strategy module must import on the workers.
    """
    problems: dict[str, list[str]] = {}

    def add(line: str, node: str) -> None:
        problems.setdefault(line, []).append(node)

    for facts in workers:
        node = str(facts.get("node"))
        if _major_minor(facts.get("python")) != _major_minor(driver["python"]):
            add(f"Python {facts.get('python')} on the cluster, driver has {driver['python']} "
                "(major.minor must match)", node)
        if facts.get("ray") != driver["ray"]:
            add(f"ray {facts.get('ray')} on the cluster, driver has {driver['ray']} (must be equal): "
                f"pip install 'ray=={driver['ray']}'", node)
        for dist, entry in facts.get("packages", {}).items():
            want = driver["packages"].get(dist, {}).get("version")
            pin = f"'{dist}=={want}'" if want else f"'{dist}'"
            if entry.get("error"):
                add(f"{dist}: missing ({entry['error']}); driver has {want}: pip install {pin}", node)
            elif want and _major_minor(entry.get("version")) != _major_minor(want):
                add(f"{dist}: {entry.get('version')} on the cluster, driver has {want} "
                    f"(major.minor must match): pip install {pin}", node)
        for module, error in facts.get("imports", {}).items():
            if error:
                add(f"module {module!r} does not import on the cluster: {error}", node)
        for name, want in (driver.get("trees") or {}).items():
            if name in (facts.get("trees") or {}):
                problem = _tree_problem(name, want, facts["trees"][name])
                if problem:
                    add(problem, node)
    n = len(workers)
    return [f"{line} [{len(nodes)} of {n} node(s)]" for line, nodes in problems.items()]


def pins_to_install(driver: Mapping[str, Any], workers: Sequence[Mapping[str, Any]]) -> list[str]:
    """``dist==driver version`` for every worker package missing or at another major.minor."""
    pins = set()
    for facts in workers:
        for dist, entry in facts.get("packages", {}).items():
            want = driver["packages"].get(dist, {}).get("version")
            if want and (entry.get("error") or _major_minor(entry.get("version")) != _major_minor(want)):
                pins.add(f"{dist}=={want}")
    return sorted(pins)


def preflight(address: str, strategies: Iterable[str] = (), timeout_s: float = PREFLIGHT_TIMEOUT_S) -> list[dict]:
    """Probe every alive node with CPUs (one zero-CPU task pinned to each), compare with the
    driver, raise one ClusterPreflightError listing every problem. Returns the nodes' facts."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    modules = plugin_modules(strategies)
    driver = driver_facts(strategies)
    nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) > 0]
    if not nodes:
        raise ClusterPreflightError(f"the Ray cluster at {address!r} has no alive node with CPUs to run sleeves")
    remote = ray.remote(num_cpus=0, max_retries=0)(_probe)
    refs = [
        remote.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(
            modules, sorted(driver["trees"]))
        for n in nodes
    ]
    fix = (
        "Fix it in the cluster image (the same versions as requirements.lock), or per job with a "
        f"runtime_env file named by {settings.RAY_RUNTIME_ENV_ENV} (e.g. `pip: [\"scikit-learn==<version>\"]`)."
    )
    try:
        ready, pending = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
        if pending:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise ClusterPreflightError(
                f"preflight on the Ray cluster at {address!r}: {len(pending)} of {len(refs)} node(s) did not "
                f"answer within {timeout_s:g} s (runtime_env still being built, or no free worker); no sleeve was started"
            )
        workers = ray.get(refs)
    except ClusterPreflightError:
        raise
    except Exception as exc:  # RuntimeEnvSetupError, RayTaskError (quant_meta_assets not importable), ...
        first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise ClusterPreflightError(
            f"preflight on the Ray cluster at {address!r} failed before it could report "
            f"({type(exc).__name__}: {first}); no sleeve was started. The runtime_env shipped "
            f"{cluster_runtime_env(strategies).get('py_modules')} as py_modules. {fix}"
        ) from exc
    message = preflight_message(address, driver, workers)
    if message:
        raise ClusterPreflightError(message)
    return workers


def preflight_message(address: str, driver: Mapping[str, Any], workers: Sequence[Mapping[str, Any]]) -> str | None:
    """The ClusterPreflightError text for these nodes' facts, or None when they can run the sleeves."""
    problems = compare(driver, workers)
    if not problems:
        return None
    pins = pins_to_install(driver, workers)
    if pins:
        fix = (
            f"Fix it in the cluster image (pip install {' '.join(repr(p) for p in pins)}), or per job with a "
            f"runtime_env file named by {settings.RAY_RUNTIME_ENV_ENV} containing `pip: {json.dumps(pins)}`."
        )
    else:
        fix = (
            "Fix it in the cluster image (the same versions as requirements.lock), or per job with a "
            f"runtime_env file named by {settings.RAY_RUNTIME_ENV_ENV} (e.g. `pip: [\"scikit-learn==<version>\"]`)."
        )
    return (
        f"the Ray cluster at {address!r} cannot run the sleeves ({len(problems)} problem(s), found by "
        f"the preflight on {len(workers)} node(s); no sleeve was started):\n"
        + "\n".join(f"- {p}" for p in problems)
        + f"\n{fix}"
    )


def node_check(address: str, strategies: Iterable[str], workers: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """What a sleeve task needs to check a node that joined after the preflight (``check_late_node``)."""
    strategies = list(strategies)
    driver = driver_facts(strategies)
    return {
        "address": address,
        "driver": driver,
        "modules": plugin_modules(strategies),
        "trees": sorted(driver["trees"]),
        "checked": sorted({str(w["node_id"]) for w in workers if w.get("node_id")}),
    }


# (node id, check digest) -> ClusterPreflightError text (None: fine); per worker process, and Ray
# starts worker processes per job, so each node is probed once per driver job and worker
_LATE_NODES: dict[tuple[str, str], str | None] = {}


def check_late_node(check: Mapping[str, Any] | None) -> None:
    """Runs first in every sleeve task on a cluster: a node the preflight did not see (it joined
    later) is probed like the preflight does, once (cached), and refused with the same
    ClusterPreflightError text."""
    if not check:
        return
    import ray

    node_id = ray.get_runtime_context().get_node_id()
    if node_id in check["checked"]:
        return
    key = (node_id, hashlib.sha256(json.dumps(check, sort_keys=True, default=str).encode()).hexdigest())
    if key not in _LATE_NODES:
        facts = _probe(list(check["modules"]), list(check["trees"]))
        _LATE_NODES[key] = preflight_message(check["address"], check["driver"], [facts])
    if _LATE_NODES[key]:
        raise ClusterPreflightError(_LATE_NODES[key])
