"""CPU facts in the record, portable mode's pins, and reproduce's pre-check: pure tables."""

from __future__ import annotations

from typing import Any

import pytest

from gha_mlops.errors import ConfigError
from gha_mlops.pipeline.environment import parse_cpuinfo
from gha_mlops.pipeline.reproduce import expected_aten, kernel_mismatch
from gha_mlops.train._portable import portable_environment, torch_libraries

X86_INFO = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 167
model name\t: Intel(R) Xeon(R) Processor
stepping\t: 1
flags\t\t: fpu sse sse2 sse4_1 sse4_2 avx avx2 fma avx512f avx512dq avx512bw avx512vl \
avx512_vnni avx512_bf16 amx_tile rdrand hypervisor

processor\t: 1
vendor_id\t: AuthenticAMD
flags\t\t: sse4_2
"""

ARM_INFO = """processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm aes pmull sha1 crc32 atomics fphp asimdhp asimddp sve sve2 bf16
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x1
CPU part\t: 0xd40
CPU revision\t: 1
"""


@pytest.mark.parametrize(("text", "expected"), [
    (X86_INFO, {"model": "Intel(R) Xeon(R) Processor", "vendor": "GenuineIntel",
                "family": "6", "model_id": "167", "stepping": "1",
                "flags": ["amx_tile", "avx", "avx2", "avx512_bf16", "avx512_vnni", "avx512bw",
                          "avx512dq", "avx512f", "avx512vl", "fma", "sse4_1", "sse4_2"]}),
    (ARM_INFO, {"model": None, "vendor": "0x41", "family": "8", "model_id": "0xd40",
                "stepping": "0x1/1",
                "flags": ["asimd", "asimddp", "asimdhp", "bf16", "fphp", "sve", "sve2"]}),
    ("", {"model": None, "vendor": None, "family": None, "model_id": None,
          "stepping": None, "flags": []}),
], ids=["x86-first-processor-only", "aarch64", "no-cpuinfo"])
def test_parse_cpuinfo(text: str, expected: dict[str, Any]) -> None:
    assert parse_cpuinfo(text) == expected


AVX512 = ["avx", "avx2", "avx512bw", "avx512dq", "avx512f", "avx512vl", "fma", "sse4_2"]
AVX2 = ["avx", "avx2", "fma", "sse4_2"]


@pytest.mark.parametrize(("cpu", "environ", "level"), [
    ({"machine": "x86_64", "flags": AVX512}, {}, "AVX512"),
    ({"machine": "x86_64", "flags": AVX2}, {}, "AVX2"),
    ({"machine": "x86_64", "flags": ["avx2", "sse4_2"]}, {}, "DEFAULT"),  # avx2 without fma
    ({"machine": "x86_64", "flags": AVX512}, {"ATEN_CPU_CAPABILITY": "avx2"}, "AVX2"),
    ({"machine": "x86_64", "flags": AVX512}, {"ATEN_CPU_CAPABILITY": "default"}, "DEFAULT"),
    ({"machine": "x86_64", "flags": AVX512}, {"ATEN_CPU_CAPABILITY": "bogus"}, "AVX512"),
    ({"machine": "x86_64"}, {}, None),  # an old record: no flags
    ({"machine": "aarch64", "flags": ["asimd"]}, {}, "DEFAULT"),
    ({"machine": "aarch64", "flags": ["asimd", "sve"]}, {}, None),  # vector length decides
])
def test_expected_aten(cpu: dict[str, Any], environ: dict[str, str], level: str | None) -> None:
    assert expected_aten(cpu, environ) == level


def _record(*, portable: bool = False, machine: str = "x86_64", vendor: str = "GenuineIntel",
            flags: list[str] | None = None, aten: str = "AVX512",
            variables: dict[str, str] | None = None) -> dict[str, Any]:
    dispatch = {"portable": portable, "aten_capability": aten, "variables": variables or {}}
    return {
        "id": "20260101-000000-abcdef",
        "env": {"cpu": {"machine": machine, "vendor": vendor, "family": "6", "model_id": "167",
                        "stepping": "1", "flags": AVX512 if flags is None else flags}},
        "stages": [{"name": "prepare"}, {"name": "train", "runtime": {"cpu_dispatch": dispatch}}],
    }


def _here(*, machine: str = "x86_64", vendor: str = "GenuineIntel",
          flags: list[str] | None = None) -> dict[str, Any]:
    return {"machine": machine, "vendor": vendor, "flags": AVX512 if flags is None else flags}


PORTABLE_VARS = {"OPENBLAS_CORETYPE": "Nehalem"}


@pytest.mark.parametrize(("record", "here", "environ", "factor", "says"), [
    # Nothing recorded about the dispatch (a pipeline without torch, an old record).
    ({"id": "x", "env": {"cpu": {"machine": "x86_64"}}, "stages": []},
     _here(machine="aarch64"), {}, None, None),
    (_record(), _here(), {}, None, None),
    # Portable mode: only the architecture matters.
    (_record(portable=True, aten="DEFAULT", variables=PORTABLE_VARS),
     _here(vendor="AuthenticAMD", flags=AVX2), {}, None, None),
    (_record(portable=True, aten="DEFAULT"), _here(machine="aarch64", flags=["asimd"]), {},
     "architecture", "this machine is aarch64, run 20260101-000000-abcdef ran on x86_64 and "
     "portable mode was on"),
    (_record(portable=True, aten="DEFAULT", variables={"OPENBLAS_CORETYPE": "Haswell"}),
     _here(), {}, "OpenBLAS core", "runs numpy's OpenBLAS as Nehalem"),
    (_record(portable=True, aten="DEFAULT", variables={"OPENBLAS_CORETYPE": "Haswell"}),
     _here(), {"OPENBLAS_CORETYPE": "Haswell"}, None, None),
    # Without it: the architecture, vendor, instruction sets, ATen level and variables.
    (_record(), _here(machine="arm64", flags=["asimd"]), {}, "architecture",
     "portable mode was off"),
    (_record(aten="AVX2"), _here(), {}, "torch kernels",
     "this machine dispatches AVX512 torch kernels, run 20260101-000000-abcdef used AVX2 and "
     "portable mode was off: the model bytes will differ"),
    (_record(aten="AVX2"), _here(), {"ATEN_CPU_CAPABILITY": "avx2"}, None, None),
    (_record(flags=AVX2, aten="AVX2"), _here(), {}, "instruction sets",
     "this machine's CPU has avx512bw avx512dq avx512f avx512vl compared with run"),
    (_record(), _here(flags=AVX2), {}, "instruction sets", "lacks avx512bw"),
    (_record(), _here(vendor="AuthenticAMD"), {}, "CPU vendor",
     "this machine's CPU is AuthenticAMD, run 20260101-000000-abcdef's was GenuineIntel"),
    (_record(variables={"ONEDNN_MAX_CPU_ISA": "AVX2"}), _here(), {}, "dispatch variables",
     "ran with ONEDNN_MAX_CPU_ISA=AVX2, this environment has (unset)"),
    (_record(variables={"GHA_MLOPS_DETERMINISM": "native"}), _here(), {},
     "dispatch variables", "GHA_MLOPS_DETERMINISM=native"),
    # Thread variables are left to the scripts, which commonly pin threads themselves.
    (_record(variables={"OMP_NUM_THREADS": "1"}), _here(), {}, None, None),
], ids=["no-dispatch-recorded", "same-machine", "portable-other-cpu", "portable-other-arch",
        "portable-kept-openblas-core", "portable-same-openblas-core", "native-other-arch",
        "native-other-aten", "native-aten-pinned-by-env", "native-more-isa", "native-less-isa",
        "native-other-vendor", "native-other-onednn-var", "native-opt-out-var",
        "thread-vars-ignored"])
def test_kernel_mismatch(record: dict[str, Any], here: dict[str, Any], environ: dict[str, str],
                         factor: str | None, says: str | None) -> None:
    found = kernel_mismatch(record, here, environ)
    if factor is None:
        assert found is None
        return
    assert found is not None
    assert found.factor == factor
    assert says is not None and says in found.message
    assert "\n" not in found.message
    assert "--allow-env-drift" in found.hint


def test_a_stage_without_portable_mode_makes_the_run_native() -> None:
    record = _record(portable=True, aten="DEFAULT")
    record["stages"][0]["runtime"] = {"cpu_dispatch": {"portable": False,
                                                       "aten_capability": "AVX2"}}
    found = kernel_mismatch(record, _here(), {})
    assert found is not None and "portable mode was off" in found.message
    assert "train with portable mode on" in found.hint


def test_native_hint_names_every_factor_and_the_way_out() -> None:
    found = kernel_mismatch(_record(flags=AVX2, aten="AVX2"), _here(vendor="AuthenticAMD"), {})
    assert found is not None and found.factor == "CPU vendor"
    assert [n.split(":")[0] for n in found.notes] == ["CPU vendor", "instruction sets",
                                                      "torch kernels"]
    assert "GenuineIntel family 6 model 167 stepping 1" in found.hint
    assert "docs/reproduce.md" in found.hint


def test_recorded_values_are_printed_bounded_and_printable() -> None:
    # A record comes from a file (an artifact, a pull request): it must not write escapes.
    record = _record(aten="\x1b[31mAVX2" + "x" * 500)
    found = kernel_mismatch(record, _here(), {})
    assert found is not None
    assert "\x1b" not in found.message and len(found.message) < 400


@pytest.mark.parametrize("record", [
    {"id": "x", "env": ["not", "a", "mapping"], "stages": [
        {"runtime": {"cpu_dispatch": {"portable": True, "variables": ["x"]}}}]},
    {"id": "x", "env": {"cpu": "x86"}, "stages": {"train": {}}},
    {"id": "x", "env": {"cpu": {"flags": "avx2"}}, "stages": [
        "train", {"runtime": {"cpu_dispatch": {"aten_capability": 7, "variables": 3}}}]},
], ids=["env-not-a-mapping", "stages-not-a-list", "fields-of-the-wrong-type"])
def test_a_malformed_record_is_judged_without_crashing(record: dict[str, Any]) -> None:
    # Records are files: one edited by hand or from an artifact must give an answer, not a
    # traceback.
    found = kernel_mismatch(record, _here(), {})
    assert found is None or "--allow-env-drift" in found.hint


def _environ_diff(before: dict[str, str], after: dict[str, str]) -> dict[str, str | None]:
    keys = set(before) | set(after)
    return {k: after.get(k) for k in sorted(keys) if before.get(k) != after.get(k)}


@pytest.mark.parametrize(("environ", "machine", "threads", "changes"), [
    ({"PATH": "/bin"}, "x86_64", 1, {
        "ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41",
        "MKL_CBWR": "COMPATIBLE", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
        "NPY_ENABLE_CPU_FEATURES": "X86_V2", "OPENBLAS_CORETYPE": "Nehalem",
        "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
        "GHA_MLOPS_DETERMINISM": "portable"}),
    ({"ATEN_CPU_CAPABILITY": "avx512", "NPY_DISABLE_CPU_FEATURES": "AVX512F",
      "OPENBLAS_CORETYPE": "Haswell"}, "AMD64", 4, {
        "ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41",
        "MKL_CBWR": "COMPATIBLE", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
        "NPY_ENABLE_CPU_FEATURES": "X86_V2", "NPY_DISABLE_CPU_FEATURES": None,
        "OMP_NUM_THREADS": "4", "MKL_NUM_THREADS": "4", "OPENBLAS_NUM_THREADS": "4",
        "GHA_MLOPS_DETERMINISM": "portable"}),  # the machine's own OpenBLAS core is kept
    ({}, "aarch64", 2, {
        "ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "ADVANCED_SIMD",
        "NPY_ENABLE_CPU_FEATURES": "ASIMD", "OPENBLAS_CORETYPE": "ARMV8",
        "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "2",
        "GHA_MLOPS_DETERMINISM": "portable"}),
], ids=["x86_64", "x86_64-overrides-and-keeps-openblas-core", "aarch64"])
def test_portable_environment(environ: dict[str, str], machine: str, threads: int,
                              changes: dict[str, str | None]) -> None:
    after = portable_environment(environ, machine=machine, threads=threads)
    assert _environ_diff(environ, after) == changes


def test_portable_environment_refuses_an_unknown_architecture_and_bad_threads() -> None:
    with pytest.raises(ConfigError, match="no baseline for the riscv64"):
        portable_environment({}, machine="riscv64")
    for bad in (0, -1, True):
        with pytest.raises(ValueError, match="positive integer"):
            portable_environment({}, machine="x86_64", threads=bad)


def test_torch_libraries_reads_the_builds_torch_names() -> None:
    show = """PyTorch built with:
  - GCC 13.3
  - Intel(R) oneAPI Math Kernel Library Version 2024.2-Product Build 20240605 for Intel(R) 64
  - Intel(R) MKL-DNN v3.12.0 (Git Hash 80afa71049cd69a3df32adcccb623b12cd7baa22)
  - OpenMP 201511 (a.k.a. OpenMP 4.5)
  - Build settings: BLAS_INFO=mkl, BUILD_TYPE=Release, LAPACK_INFO=mkl
"""
    assert torch_libraries(show) == {"mkl": "2024.2", "onednn": "v3.12.0",
                                     "openmp": "OpenMP 201511", "blas": "mkl"}
    assert torch_libraries("") == {}
